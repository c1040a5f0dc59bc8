//! OTLP export requests (`ExportTraceServiceRequest`) written straight from span records into one
//! reused buffer, in protobuf (the field numbers of opentelemetry-proto's collector/trace/v1,
//! trace/v1, common/v1 and resource/v1) or in the OTLP/JSON mapping. A request holds one
//! `ResourceSpans` per traced process, each with one scope (`tracer`).
//!
//! Protobuf prefixes nested messages with their length. The request is written in one pass:
//! attribute and value lengths are plain arithmetic, and a span or group keeps room for its
//! length at the width it most likely takes (a span 2 bytes, a group as wide as its previous
//! batch's spans suggest), written once the message is; the rare message of another width is
//! moved by the difference, so lengths stay canonical (the bytes prost writes). Nothing is
//! allocated per span: the buffer is the encoder's and keeps its capacity from batch to batch,
//! and each process's resource is encoded once and cached.

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
    /// Per span of the batch: its group.
    group_of: Vec<usize>,
    /// Protobuf: encoded bytes per span in the last batch, to guess the width of group lengths
    /// and the buffer's size.
    span_guess: usize,
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
            span_guess: SPAN_GUESS,
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

    /// Groups the spans by process.
    fn plan<S: Borrow<SpanRecord>>(&mut self, spans: &[S]) {
        self.groups.clear();
        self.group_index.clear();
        self.group_of.clear();
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
            self.groups[g].count += 1;
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
        let headers: usize = self
            .groups
            .iter()
            .map(|g| g.resource.len() + self.scope.len() + 16)
            .sum();
        // A batch after one of huge spans must not reserve for many more of them.
        self.buf
            .reserve((spans.len() * self.span_guess + headers).min(KEEP_CAPACITY));
        let b = &mut self.buf;
        let mut spans_bytes = 0;
        for g in &self.groups {
            // The group's likely sizes, for the widths of their lengths.
            let scope_spans = field_len(self.scope.len()) + g.count * self.span_guess;
            let resource_spans = field_len(g.resource.len()) + field_len(scope_spans);
            // ExportTraceServiceRequest.resource_spans
            let rs = Open::new(b, tag(1, LEN), varint_len(resource_spans as u64));
            // ResourceSpans.resource, .scope_spans
            put_bytes(b, tag(1, LEN), &g.resource);
            let ss = Open::new(b, tag(2, LEN), varint_len(scope_spans as u64));
            // ScopeSpans.scope, .spans
            put_bytes(b, tag(1, LEN), &self.scope);
            let from = b.len();
            for &i in &self.order[g.start..g.start + g.count] {
                put_span(b, spans[i].borrow());
            }
            spans_bytes += b.len() - from;
            ss.close(b);
            rs.close(b);
        }
        if !spans.is_empty() {
            self.span_guess = (spans_bytes / spans.len()).max(1);
        }
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
    // ceil(bits / 7) without a division: bits * 9 / 64, rounded up.
    (((v | 1).leading_zeros() ^ 63) as usize * 9 + 73) / 64
}

fn put_varint(b: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        b.push(v as u8);
        return;
    }
    // One append rather than one per byte.
    let mut tmp = [0; 10];
    let n = write_varint(&mut tmp, v);
    b.extend_from_slice(&tmp[..n]);
}

/// Writes `v` at the start of `out` (as long as `varint_len(v)`); returns its length.
fn write_varint(out: &mut [u8], mut v: u64) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = v as u8 | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

/// A length-delimited field being written: its key is out, and `width` bytes are kept for its
/// length, which is known once its body is.
struct Open {
    at: usize,
    width: usize,
}

impl Open {
    fn new(b: &mut Vec<u8>, key: u8, width: usize) -> Self {
        b.push(key);
        let at = b.len();
        b.resize(at + width, 0);
        Self { at, width }
    }

    /// Writes the length of the body written since `new`, canonical: a body whose length
    /// takes another width than was kept moves by the difference.
    fn close(self, b: &mut Vec<u8>) {
        let body = self.at + self.width;
        let n = b.len() - body;
        let width = varint_len(n as u64);
        if width > self.width {
            let grow = width - self.width;
            let end = b.len();
            b.resize(end + grow, 0);
            b.copy_within(body..end, body + grow);
        } else if width < self.width {
            let end = b.len();
            b.copy_within(body..end, body - (self.width - width));
            b.truncate(end - (self.width - width));
        }
        write_varint(&mut b[self.at..self.at + width], n as u64);
    }
}

/// Bytes of a span before its first batch is seen (a server span of a dozen attributes).
const SPAN_GUESS: usize = 400;

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
fn put_key_value(b: &mut Vec<u8>, key: u8, k: &str, v: AnyValue<'_>) {
    // The value's field: key and data (a string's bytes, a number's varint).
    let mut tmp = [0; 10];
    let (value_key, data): (u8, &[u8]) = match v {
        AnyValue::Str(s) => (tag(1, LEN), s.as_bytes()),
        AnyValue::Bool(x) => {
            tmp[0] = u8::from(x);
            (tag(2, VARINT), &tmp[..1])
        }
        // int64: two's complement, 10 bytes when negative.
        AnyValue::Int(i) => {
            let n = write_varint(&mut tmp, i as u64);
            (tag(3, VARINT), &tmp[..n])
        }
    };
    let is_str = matches!(v, AnyValue::Str(_));
    // KeyValue = key field (2 + key) + value field (2 + AnyValue); AnyValue = key + data (and
    // a string's length): key and data under 122 bytes together make a KeyValue under 128
    // bytes, so every length in it is one byte.
    if k.len() + data.len() < 122 {
        let value = 1 + usize::from(is_str) + data.len();
        let n = 4 + k.len() + value;
        b.extend_from_slice(&[key, n as u8, tag(1, LEN), k.len() as u8]);
        b.extend_from_slice(k.as_bytes());
        if is_str {
            b.extend_from_slice(&[tag(2, LEN), value as u8, value_key, data.len() as u8]);
        } else {
            b.extend_from_slice(&[tag(2, LEN), value as u8, value_key]);
        }
        b.extend_from_slice(data);
    } else {
        let value = any_value_len(v);
        put_len(b, key, field_len(k.len()) + field_len(value));
        put_bytes(b, tag(1, LEN), k.as_bytes());
        put_len(b, tag(2, LEN), value);
        put_any_value(b, v);
    }
}

/// trace/v1 `Status`.
fn status_len(s: &SpanStatus) -> usize {
    match s {
        SpanStatus::Unset => 0,
        SpanStatus::Error { message } if message.is_empty() => 2,
        SpanStatus::Error { message } => field_len(message.len()) + 2,
    }
}

/// `ScopeSpans.spans`: one trace/v1 `Span`.
fn put_span(b: &mut Vec<u8>, s: &SpanRecord) {
    // Mostly 128 bytes to 16 KiB long.
    let span = Open::new(b, tag(2, LEN), 2);
    b.extend_from_slice(&[tag(1, LEN), 16]);
    b.extend_from_slice(&s.trace_id);
    b.extend_from_slice(&[tag(2, LEN), 8]);
    b.extend_from_slice(&s.span_id);
    if let Some(p) = &s.parent_span_id {
        b.extend_from_slice(&[tag(4, LEN), 8]);
        b.extend_from_slice(p);
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
    span.close(b);
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
