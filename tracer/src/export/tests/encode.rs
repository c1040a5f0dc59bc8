//! The OTLP encoder's requests, decoded with the official protobufs (and their OTLP/JSON
//! mapping), must hold exactly the spans and resources they were made from.

use std::sync::Arc;

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{
        span::SpanKind as ProtoKind, status::StatusCode, ResourceSpans, ScopeSpans, Span, Status,
    },
};
use prost::Message as _;
use rstest::rstest;

use crate::{
    export::{
        otlp::{
            encode::{Encoder, Format},
            resource_attributes, ResourceBase,
        },
        testutil::{process, span_of},
    },
    process::ProcessInfo,
    span::{KeyValue as Kv, LinkKind, SpanKind, SpanRecord, SpanStatus, Value},
};

fn base() -> ResourceBase {
    ResourceBase {
        host_name: "node-1".into(),
        extra: vec![("deployment.environment".into(), "agent".into())],
    }
}

fn decode(format: Format, bytes: &[u8]) -> ExportTraceServiceRequest {
    match format {
        Format::Protobuf => ExportTraceServiceRequest::decode(bytes).unwrap(),
        Format::Json => serde_json::from_slice(bytes)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes))),
    }
}

fn any(v: &Value) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(match v {
            Value::Str(s) => any_value::Value::StringValue(s.to_string()),
            Value::Int(i) => any_value::Value::IntValue(*i),
            Value::Bool(b) => any_value::Value::BoolValue(*b),
        }),
    })
}

fn kv(k: &str, v: &Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: any(v),
        ..Default::default()
    }
}

/// The span as opentelemetry-proto holds it; `remote`: whether its parent is another process's.
fn expected_span(s: &SpanRecord, remote: bool) -> Span {
    let mut attributes: Vec<KeyValue> = s.attributes.iter().map(|a| kv(a.key, &a.value)).collect();
    attributes.push(kv("tracer.link", &s.link.as_str().into()));
    attributes.push(kv("thread.id", &Value::Int(i64::from(s.tid))));
    let (code, message) = match &s.status {
        SpanStatus::Unset => (StatusCode::Unset, String::new()),
        SpanStatus::Error { message } => (StatusCode::Error, message.clone()),
    };
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: String::new(),
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        // Sampled, and whether the parent is remote is known (0x100) and set (0x200).
        flags: 0x101 | if remote { 0x200 } else { 0 },
        name: s.name.clone(),
        kind: match s.kind {
            SpanKind::Server => ProtoKind::Server,
            SpanKind::Client => ProtoKind::Client,
        } as i32,
        start_time_unix_nano: s.start_unix_ns,
        end_time_unix_nano: s.end_unix_ns,
        attributes,
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Some(Status {
            message,
            code: code as i32,
        }),
    }
}

fn expected_resource_spans(p: &ProcessInfo, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: resource_attributes(p, &base())
                .iter()
                .map(|(k, v)| kv(k, v))
                .collect(),
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "tracer".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                attributes: Vec::new(),
                dropped_attributes_count: 0,
            }),
            spans,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// Attribute values at the edges of their encodings (varint sizes, negative ints, escapes).
fn edge_attributes() -> Vec<Kv> {
    vec![
        Kv::new("http.request.method", "GET"),
        Kv::new("url.path", "/a\"b\\c\n\t\u{1}/é/ü/中"),
        Kv::new("url.query", ""),
        Kv::new("zero", 0i64),
        Kv::new("minus.one", -1i64),
        Kv::new("min", i64::MIN),
        Kv::new("max", i64::MAX),
        Kv::new("one.byte", 127i64),
        Kv::new("two.bytes", 128i64),
        Kv::new("three.bytes", 16384i64),
        Kv::new("s127", "x".repeat(127)),
        Kv::new("s128", "y".repeat(128)),
        Kv::new("big", "z".repeat(20_000)),
        Kv::new("yes", true),
        Kv::new("no", false),
    ]
}

#[rstest]
#[case::server_root(SpanKind::Server, None, LinkKind::Root, SpanStatus::Unset, false)]
#[case::server_header_parent(SpanKind::Server, Some([1, 2, 3, 4, 5, 6, 7, 8]), LinkKind::Header, SpanStatus::Unset, true)]
#[case::server_injected_parent(SpanKind::Server, Some([9; 8]), LinkKind::Injected, SpanStatus::Unset, true)]
#[case::server_connection_parent(SpanKind::Server, Some([0xff; 8]), LinkKind::Connection, SpanStatus::Error { message: "HTTP 500".into() }, true)]
#[case::client_thread_parent_error(SpanKind::Client, Some([0xee, 0, 0, 0, 0, 0, 0, 1]), LinkKind::Thread, SpanStatus::Error { message: "connection reset".into() }, false)]
#[case::client_root_error_without_message(SpanKind::Client, None, LinkKind::Root, SpanStatus::Error { message: String::new() }, false)]
fn one_span(
    #[case] kind: SpanKind,
    #[case] parent: Option<[u8; 8]>,
    #[case] link: LinkKind,
    #[case] status: SpanStatus,
    #[case] remote: bool,
    #[values(Format::Protobuf, Format::Json)] format: Format,
    #[values(false, true)] edge_values: bool,
) {
    let p = process(4242, "shop");
    let mut s = span_of(p.clone(), 3);
    (s.kind, s.parent_span_id, s.link, s.status) = (kind, parent, link, status);
    if edge_values {
        s.attributes = edge_attributes();
        s.name = "PROPFIND \"x\"".into();
        s.tid = u32::MAX;
    }
    let mut enc = Encoder::new(format, base());
    let got = decode(format, enc.encode(&[&s]));
    let want = ExportTraceServiceRequest {
        resource_spans: vec![expected_resource_spans(&p, vec![expected_span(&s, remote)])],
    };
    assert_eq!(got, want);
}

/// Spans of several processes, interleaved: one `ResourceSpans` per process, in first-seen
/// order, each with its spans in batch order; the encoder's buffers are reused batch to batch.
#[rstest]
fn several_processes(#[values(Format::Protobuf, Format::Json)] format: Format) {
    let a = process(10, "a");
    let b = Arc::new(ProcessInfo {
        pid: 20,
        exe_name: "python3".into(),
        exe_path: String::new(),
        command_line: String::new(),
        service_name: "b".into(),
        resource_attributes: vec![("team".into(), "payments".into())],
        start_ticks: 7,
    });
    // The same pid again, another start time: another process (a reused pid).
    let a2 = Arc::new(ProcessInfo {
        start_ticks: 99_999,
        ..(*a).clone()
    });
    let order = [(&a, 1), (&b, 2), (&a, 3), (&a2, 4), (&b, 5), (&a, 6)];
    let spans: Vec<Arc<SpanRecord>> = order
        .iter()
        .map(|(p, n)| {
            let mut s = span_of((*p).clone(), *n);
            if *n % 2 == 0 {
                s.kind = SpanKind::Client;
                s.attributes
                    .push(Kv::new("big", "q".repeat(300 * *n as usize)));
            }
            Arc::new(s)
        })
        .collect();
    let want_of = |ns: &[u32]| {
        let group = |p: &Arc<ProcessInfo>, ns: &[u32]| {
            let spans = spans
                .iter()
                .filter(|s| s.process.start_ticks == p.start_ticks && s.process.pid == p.pid)
                .filter(|s| ns.contains(&u32::from_be_bytes(s.span_id[4..].try_into().unwrap())))
                .map(|s| expected_span(s, false))
                .collect::<Vec<_>>();
            (!spans.is_empty()).then(|| expected_resource_spans(p, spans))
        };
        ExportTraceServiceRequest {
            resource_spans: [&a, &b, &a2]
                .into_iter()
                .filter_map(|p| group(p, ns))
                .collect(),
        }
    };
    let mut enc = Encoder::new(format, base());
    let all = decode(format, enc.encode(&spans));
    assert_eq!(all.resource_spans.len(), 3);
    assert_eq!(all, want_of(&[1, 2, 3, 4, 5, 6]));
    // A smaller batch after a larger one, then the first again: nothing left over.
    let part = decode(format, enc.encode(&spans[4..]));
    let mut want = want_of(&[5, 6]);
    // First seen in this batch: b (span 5), then a.
    want.resource_spans.swap(0, 1);
    assert_eq!(part, want);
    assert_eq!(decode(format, enc.encode(&spans)), all);
    assert_eq!(
        decode(format, enc.encode::<SpanRecord>(&[])),
        ExportTraceServiceRequest::default()
    );
}

/// One process's spans as opentelemetry-proto holds them, in batch order.
fn expected_request(p: &ProcessInfo, spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    let remote = |s: &SpanRecord| {
        matches!(
            s.link,
            LinkKind::Header | LinkKind::Injected | LinkKind::Connection
        )
    };
    ExportTraceServiceRequest {
        resource_spans: vec![expected_resource_spans(
            p,
            spans.iter().map(|s| expected_span(s, remote(s))).collect(),
        )],
    }
}

/// A span of `shape`: attribute lists and values that put the lengths of the span and its
/// nested messages on either side of varint size boundaries.
fn shaped_span(p: &Arc<ProcessInfo>, shape: &str, filler: usize) -> SpanRecord {
    let mut s = span_of(p.clone(), 5);
    s.attributes = match shape {
        "none" => Vec::new(),
        "one" => vec![Kv::new("s", "v".repeat(filler))],
        "many" => edge_attributes(),
        "unicode" => vec![
            Kv::new("url.path", "é".repeat(filler)),
            Kv::new("user_agent.original", "中文 ü 🙂"),
        ],
        "all_values" => vec![
            Kv::new("str", "x".repeat(filler)),
            Kv::new("int", -(filler as i64)),
            Kv::new("int.big", i64::MAX - filler as i64),
            Kv::new("bool", filler.is_multiple_of(2)),
        ],
        _ => unreachable!("unknown shape {shape}"),
    };
    if shape == "none" {
        s.name = "x".repeat(filler);
    }
    s
}

/// The protobuf request is byte for byte what prost writes for the same message (canonical
/// lengths, fields in number order), for every span shape and for lengths on both sides of
/// the 1/2/3-byte varint boundaries of span, attribute and value lengths.
#[rstest]
#[case::no_attributes("none", 0..160)]
#[case::one_attribute_short("one", 0..300)]
#[case::one_attribute_near_16k("one", 16_200..16_420)]
#[case::many_attributes("many", 0..2)]
#[case::unicode("unicode", 0..100)]
#[case::all_values("all_values", 0..300)]
fn protobuf_bytes_match_prost(
    #[case] shape: &str,
    #[case] fillers: std::ops::Range<usize>,
    #[values(
        (LinkKind::Root, SpanStatus::Unset),
        (LinkKind::Header, SpanStatus::Error { message: String::new() }),
        (LinkKind::Thread, SpanStatus::Error { message: "m".repeat(130) }),
    )]
    link_status: (LinkKind, SpanStatus),
) {
    let p = process(31, "svc");
    let mut enc = Encoder::new(Format::Protobuf, base());
    for filler in fillers {
        let mut s = shaped_span(&p, shape, filler);
        (s.link, s.status) = link_status.clone();
        if s.link != LinkKind::Root {
            s.parent_span_id = Some([3; 8]);
        }
        let want = expected_request(&p, std::slice::from_ref(&s));
        let got = enc.encode(&[&s]);
        assert_eq!(got, want.encode_to_vec(), "{shape} {filler}");
        assert_eq!(decode(Format::Protobuf, got), want, "{shape} {filler}");
    }
}

/// Batches of very different sizes through one encoder (group and request lengths of 1 to 4
/// varint bytes, in both orders), each byte for byte what prost writes.
#[rstest]
#[case::growing(&[(1, 0), (3, 10), (100, 100), (40, 60_000), (1, 2_100_000)])]
#[case::shrinking(&[(1, 2_100_000), (40, 60_000), (100, 100), (3, 10), (1, 0)])]
#[case::alternating(&[(512, 50), (1, 0), (512, 50), (2, 70_000), (512, 50)])]
fn protobuf_batches_of_changing_size(#[case] batches: &[(usize, usize)]) {
    let p = process(32, "svc");
    let mut enc = Encoder::new(Format::Protobuf, base());
    for &(count, filler) in batches {
        let spans: Vec<SpanRecord> = (0..count)
            .map(|i| shaped_span(&p, "one", filler + i % 3))
            .collect();
        let want = expected_request(&p, &spans);
        assert_eq!(
            enc.encode(&spans),
            want.encode_to_vec(),
            "{count} x {filler}"
        );
    }
}
