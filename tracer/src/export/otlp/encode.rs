//! OTLP export requests (`ExportTraceServiceRequest`) written straight from span records into one
//! reused buffer, in protobuf (the field numbers of opentelemetry-proto's collector/trace/v1,
//! trace/v1, common/v1 and resource/v1) or in the OTLP/JSON mapping. A request holds one
//! `ResourceSpans` per traced process, each with one scope (`tracer`).
//!
//! Protobuf prefixes nested messages with their length, so the size of every span is computed
//! first (arithmetic only), then the request is written in one pass. Nothing is allocated per
//! span: the buffers are the encoder's and keep their capacity from batch to batch, and each
//! process's resource is encoded once and cached.

use std::{borrow::Borrow, io::Write as _, num::NonZeroUsize, sync::Arc};

use lru::LruCache;

use super::{resource_attributes, ResourceBase};
use crate::{
    hash::FastMap,
    process::ProcessInfo,
    span::{LinkKind, SpanKind, SpanRecord, SpanStatus, Value},
};

/// How a request is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

/// Processes whose encoded resource is kept.
const RESOURCE_CACHE: usize = 1024;
/// A buffer grown beyond this by an unusually large batch is released before the next one.
const KEEP_CAPACITY: usize = 4 << 20;

/// An attribute value, borrowed.
#[derive(Debug, Clone, Copy)]
enum AnyValue<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

impl<'a> From<&'a Value> for AnyValue<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Str(s) => Self::Str(s.as_str()),
            Value::Int(i) => Self::Int(*i),
            Value::Bool(b) => Self::Bool(*b),
        }
    }
}

/// The attributes every span gets besides its own.
fn extra_attributes(s: &SpanRecord) -> [(&'static str, AnyValue<'static>); 2] {
    [
        ("tracer.link", AnyValue::Str(s.link.as_str())),
        ("thread.id", AnyValue::Int(i64::from(s.tid))),
    ]
}

fn attributes(s: &SpanRecord) -> impl Iterator<Item = (&str, AnyValue<'_>)> {
    s.attributes
        .iter()
        .map(|kv| (kv.key, AnyValue::from(&kv.value)))
        .chain(extra_attributes(s))
}

/// trace/v1 `SpanFlags`: the W3C trace flags (always sampled) in the low byte, and whether the
/// parent is remote, which is known.
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

fn flags(s: &SpanRecord) -> u32 {
    // Parents from headers or from the peer's client span live in another process.
    let remote = matches!(
        s.link,
        LinkKind::Header | LinkKind::Injected | LinkKind::Connection
    );
    FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | if remote { FLAG_IS_REMOTE } else { 0 }
}

/// trace/v1 `Span.SpanKind`.
fn kind(k: SpanKind) -> u8 {
    match k {
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    }
}

/// trace/v1 `Status.StatusCode` ERROR.
const STATUS_ERROR: u8 = 2;

/// Spans of one process in a batch.
struct Group {
    key: (u32, u64),
    /// The encoded resource (protobuf: `Resource`'s fields; JSON: its `attributes` array).
    resource: Arc<[u8]>,
    /// Protobuf: the spans' encoded size as fields of `ScopeSpans`.
    spans_len: usize,
    /// Where the group's span indices start in `order`, and how many there are.
    start: usize,
    count: usize,
}

/// Writes export requests; keeps its buffers and resource cache between batches.
pub struct Encoder {
    format: Format,
    base: ResourceBase,
    resources: LruCache<(u32, u64), Arc<[u8]>>,
    /// The encoded `InstrumentationScope` (protobuf: its fields; JSON: the object).
    scope: Vec<u8>,
    groups: Vec<Group>,
    group_index: FastMap<(u32, u64), usize>,
    /// Per span of the batch: its group, and (protobuf) its encoded size.
    group_of: Vec<usize>,
    sizes: Vec<usize>,
    /// Span indices, grouped by process, in first-seen order within each group.
    order: Vec<usize>,
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new(format: Format, base: ResourceBase) -> Self {
        let mut scope = Vec::new();
        let (name, version) = ("tracer", env!("CARGO_PKG_VERSION"));
        match format {
            Format::Protobuf => {
                put_bytes(&mut scope, tag(1, LEN), name.as_bytes());
                put_bytes(&mut scope, tag(2, LEN), version.as_bytes());
            }
            Format::Json => {
                scope.extend_from_slice(b"{\"name\":");
                json_str(&mut scope, name);
                scope.extend_from_slice(b",\"version\":");
                json_str(&mut scope, version);
                scope.push(b'}');
            }
        }
        Self {
            format,
            base,
            resources: LruCache::new(
                NonZeroUsize::new(RESOURCE_CACHE).unwrap_or(NonZeroUsize::MIN),
            ),
            scope,
            groups: Vec::new(),
            group_index: FastMap::default(),
            group_of: Vec::new(),
            sizes: Vec::new(),
            order: Vec::new(),
            buf: Vec::new(),
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// One request holding `spans`.
    pub fn encode<S: Borrow<SpanRecord>>(&mut self, spans: &[S]) -> &[u8] {
        self.plan(spans);
        self.buf.clear();
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
        match self.format {
            Format::Protobuf => self.write_protobuf(spans),
            Format::Json => self.write_json(spans),
        }
        &self.buf
    }

    /// Groups the spans by process and (protobuf) sizes them.
    fn plan<S: Borrow<SpanRecord>>(&mut self, spans: &[S]) {
        self.groups.clear();
        self.group_index.clear();
        self.group_of.clear();
        self.sizes.clear();
        let mut last = usize::MAX;
        for s in spans {
            let s = s.borrow();
            let key = (s.process.pid, s.process.start_ticks);
            // Consecutive spans are mostly of one process: skip the hash then.
            let g = match self.groups.get(last) {
                Some(g) if g.key == key => last,
                _ => match self.group_index.get(&key) {
                    Some(&g) => g,
                    None => {
                        let resource = self.resource(&s.process);
                        self.groups.push(Group {
                            key,
                            resource,
                            spans_len: 0,
                            start: 0,
                            count: 0,
                        });
                        self.group_index.insert(key, self.groups.len() - 1);
                        self.groups.len() - 1
                    }
                },
            };
            last = g;
            self.group_of.push(g);
            let group = &mut self.groups[g];
            group.count += 1;
            if self.format == Format::Protobuf {
                let n = span_len(s);
                self.sizes.push(n);
                group.spans_len += field_len(n);
            }
        }
        // Counting sort of the span indices by group.
        let mut at = 0;
        for g in &mut self.groups {
            g.start = at;
            at += g.count;
            g.count = 0;
        }
        self.order.clear();
        self.order.resize(spans.len(), 0);
        for (i, &g) in self.group_of.iter().enumerate() {
            let group = &mut self.groups[g];
            self.order[group.start + group.count] = i;
            group.count += 1;
        }
    }

    fn resource(&mut self, p: &ProcessInfo) -> Arc<[u8]> {
        let key = (p.pid, p.start_ticks);
        if let Some(r) = self.resources.get(&key) {
            return r.clone();
        }
        let attrs = resource_attributes(p, &self.base);
        let attrs = attrs.iter().map(|(k, v)| (k.as_str(), AnyValue::from(v)));
        let mut b = Vec::new();
        match self.format {
            Format::Protobuf => {
                for (k, v) in attrs {
                    put_key_value(&mut b, tag(1, LEN), k, v);
                }
            }
            Format::Json => json_attributes(&mut b, attrs),
        }
        let r: Arc<[u8]> = b.into();
        self.resources.put(key, r.clone());
        r
    }

    fn write_protobuf<S: Borrow<SpanRecord>>(&mut self, spans: &[S]) {
        let lens = |g: &Group, scope: usize| {
            let scope_spans = field_len(scope) + g.spans_len;
            (
                field_len(g.resource.len()) + field_len(scope_spans),
                scope_spans,
            )
        };
        let total: usize = self
            .groups
            .iter()
            .map(|g| field_len(lens(g, self.scope.len()).0))
            .sum();
        self.buf.reserve(total);
        let b = &mut self.buf;
        for g in &self.groups {
            let (resource_spans, scope_spans) = lens(g, self.scope.len());
            // ExportTraceServiceRequest.resource_spans
            put_len(b, tag(1, LEN), resource_spans);
            // ResourceSpans.resource, .scope_spans
            put_bytes(b, tag(1, LEN), &g.resource);
            put_len(b, tag(2, LEN), scope_spans);
            // ScopeSpans.scope, .spans
            put_bytes(b, tag(1, LEN), &self.scope);
            for &i in &self.order[g.start..g.start + g.count] {
                put_len(b, tag(2, LEN), self.sizes[i]);
                put_span(b, spans[i].borrow());
            }
        }
        debug_assert_eq!(self.buf.len(), total, "protobuf sizes computed wrong");
    }

    fn write_json<S: Borrow<SpanRecord>>(&mut self, spans: &[S]) {
        let b = &mut self.buf;
        b.extend_from_slice(b"{\"resourceSpans\":[");
        for (n, g) in self.groups.iter().enumerate() {
            if n > 0 {
                b.push(b',');
            }
            b.extend_from_slice(b"{\"resource\":{\"attributes\":");
            b.extend_from_slice(&g.resource);
            b.extend_from_slice(b"},\"scopeSpans\":[{\"scope\":");
            b.extend_from_slice(&self.scope);
            b.extend_from_slice(b",\"spans\":[");
            for (k, &i) in self.order[g.start..g.start + g.count].iter().enumerate() {
                if k > 0 {
                    b.push(b',');
                }
                json_span(b, spans[i].borrow());
            }
            b.extend_from_slice(b"]}]}");
        }
        b.extend_from_slice(b"]}");
    }
}

// --- protobuf ---

/// Wire types.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;

/// The one-byte key of field `field` (1..=15).
const fn tag(field: u8, wire: u8) -> u8 {
    field << 3 | wire
}

/// `Span.flags` is field 16 (fixed32): a two-byte key.
const FLAGS_KEY: [u8; 2] = [(16 << 3 | 5) as u8 | 0x80, 1];

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

/// Size of a length-delimited field (one-byte key) of `n` bytes.
fn field_len(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

fn put_len(b: &mut Vec<u8>, key: u8, n: usize) {
    b.push(key);
    put_varint(b, n as u64);
}

fn put_bytes(b: &mut Vec<u8>, key: u8, data: &[u8]) {
    put_len(b, key, data.len());
    b.extend_from_slice(data);
}

/// common/v1 `AnyValue`.
fn any_value_len(v: AnyValue<'_>) -> usize {
    match v {
        AnyValue::Str(s) => field_len(s.len()),
        AnyValue::Int(i) => 1 + varint_len(i as u64),
        AnyValue::Bool(_) => 2,
    }
}

fn put_any_value(b: &mut Vec<u8>, v: AnyValue<'_>) {
    match v {
        AnyValue::Str(s) => put_bytes(b, tag(1, LEN), s.as_bytes()),
        AnyValue::Bool(x) => b.extend_from_slice(&[tag(2, VARINT), u8::from(x)]),
        AnyValue::Int(i) => {
            b.push(tag(3, VARINT));
            // int64: two's complement, 10 bytes when negative.
            put_varint(b, i as u64);
        }
    }
}

/// common/v1 `KeyValue`.
fn key_value_len(k: &str, v: AnyValue<'_>) -> usize {
    field_len(k.len()) + field_len(any_value_len(v))
}

fn put_key_value(b: &mut Vec<u8>, key: u8, k: &str, v: AnyValue<'_>) {
    put_len(b, key, key_value_len(k, v));
    put_bytes(b, tag(1, LEN), k.as_bytes());
    put_len(b, tag(2, LEN), any_value_len(v));
    put_any_value(b, v);
}

/// trace/v1 `Status`.
fn status_len(s: &SpanStatus) -> usize {
    match s {
        SpanStatus::Unset => 0,
        SpanStatus::Error { message } if message.is_empty() => 2,
        SpanStatus::Error { message } => field_len(message.len()) + 2,
    }
}

/// Size of a trace/v1 `Span`.
fn span_len(s: &SpanRecord) -> usize {
    // trace_id, span_id, kind, start and end times, flags.
    let mut n = 18 + 10 + 2 + 9 + 9 + 6;
    if s.parent_span_id.is_some() {
        n += 10;
    }
    if !s.name.is_empty() {
        n += field_len(s.name.len());
    }
    for (k, v) in attributes(s) {
        n += field_len(key_value_len(k, v));
    }
    n + field_len(status_len(&s.status))
}

fn put_span(b: &mut Vec<u8>, s: &SpanRecord) {
    put_bytes(b, tag(1, LEN), &s.trace_id);
    put_bytes(b, tag(2, LEN), &s.span_id);
    if let Some(p) = &s.parent_span_id {
        put_bytes(b, tag(4, LEN), p);
    }
    if !s.name.is_empty() {
        put_bytes(b, tag(5, LEN), s.name.as_bytes());
    }
    b.extend_from_slice(&[tag(6, VARINT), kind(s.kind)]);
    b.push(tag(7, I64));
    b.extend_from_slice(&s.start_unix_ns.to_le_bytes());
    b.push(tag(8, I64));
    b.extend_from_slice(&s.end_unix_ns.max(s.start_unix_ns).to_le_bytes());
    for (k, v) in attributes(s) {
        put_key_value(b, tag(9, LEN), k, v);
    }
    // An unset status is sent as an empty message (code UNSET), as the SDK did.
    put_len(b, tag(15, LEN), status_len(&s.status));
    if let SpanStatus::Error { message } = &s.status {
        if !message.is_empty() {
            put_bytes(b, tag(2, LEN), message.as_bytes());
        }
        b.extend_from_slice(&[tag(3, VARINT), STATUS_ERROR]);
    }
    b.extend_from_slice(&FLAGS_KEY);
    b.extend_from_slice(&flags(s).to_le_bytes());
}

// --- OTLP/JSON: ids in hex, enums as numbers, 64-bit integers as strings ---

fn json_str(b: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    b.push(b'"');
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ],
            _ => continue,
        };
        b.extend_from_slice(&bytes[from..i]);
        b.extend_from_slice(esc);
        from = i + 1;
    }
    b.extend_from_slice(&bytes[from..]);
    b.push(b'"');
}

fn json_hex(b: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    b.push(b'"');
    for &x in bytes {
        b.extend_from_slice(&[HEX[usize::from(x >> 4)], HEX[usize::from(x & 15)]]);
    }
    b.push(b'"');
}

/// A number; writing into a Vec cannot fail.
fn json_num(b: &mut Vec<u8>, n: impl std::fmt::Display) {
    let _ = write!(b, "{n}");
}

fn json_attributes<'a>(b: &mut Vec<u8>, attrs: impl Iterator<Item = (&'a str, AnyValue<'a>)>) {
    b.push(b'[');
    for (n, (k, v)) in attrs.enumerate() {
        if n > 0 {
            b.push(b',');
        }
        b.extend_from_slice(b"{\"key\":");
        json_str(b, k);
        b.extend_from_slice(b",\"value\":{");
        match v {
            AnyValue::Str(s) => {
                b.extend_from_slice(b"\"stringValue\":");
                json_str(b, s);
            }
            AnyValue::Int(i) => {
                b.extend_from_slice(b"\"intValue\":\"");
                json_num(b, i);
                b.push(b'"');
            }
            AnyValue::Bool(x) => {
                b.extend_from_slice(if x {
                    b"\"boolValue\":true"
                } else {
                    b"\"boolValue\":false"
                });
            }
        }
        b.extend_from_slice(b"}}");
    }
    b.push(b']');
}

fn json_span(b: &mut Vec<u8>, s: &SpanRecord) {
    b.extend_from_slice(b"{\"traceId\":");
    json_hex(b, &s.trace_id);
    b.extend_from_slice(b",\"spanId\":");
    json_hex(b, &s.span_id);
    if let Some(p) = &s.parent_span_id {
        b.extend_from_slice(b",\"parentSpanId\":");
        json_hex(b, p);
    }
    b.extend_from_slice(b",\"flags\":");
    json_num(b, flags(s));
    b.extend_from_slice(b",\"name\":");
    json_str(b, &s.name);
    b.extend_from_slice(b",\"kind\":");
    json_num(b, kind(s.kind));
    b.extend_from_slice(b",\"startTimeUnixNano\":\"");
    json_num(b, s.start_unix_ns);
    b.extend_from_slice(b"\",\"endTimeUnixNano\":\"");
    json_num(b, s.end_unix_ns.max(s.start_unix_ns));
    b.extend_from_slice(b"\",\"attributes\":");
    json_attributes(b, attributes(s));
    b.extend_from_slice(b",\"status\":{");
    if let SpanStatus::Error { message } = &s.status {
        b.extend_from_slice(b"\"message\":");
        json_str(b, message);
        b.extend_from_slice(b",\"code\":");
        json_num(b, STATUS_ERROR);
    }
    b.extend_from_slice(b"}}");
}
