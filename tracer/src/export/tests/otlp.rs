//! OTLP export to the in-test receiver, over gRPC, HTTP protobuf and HTTP JSON.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tracer_tests::otlp::{
    attrs,
    proto::trace::v1::{span::SpanKind, status::StatusCode, Span},
    received_spans, Received, Receiver,
};

use crate::{
    export::{
        config::{build_from_config, ExportConfig},
        otlp::{OtlpConfig, Protocol},
        queue::Overflow,
        sampler::Sampler,
        testutil::{process, span_of},
    },
    process::ProcessInfo,
    span::{KeyValue as Kv, LinkKind, SpanKind as Kind, SpanRecord, SpanStatus, SpanSummary},
    stats::Stats,
};

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn config(otlp: Option<OtlpConfig>) -> ExportConfig {
    ExportConfig {
        otlp,
        zipkin: None,
        metrics_addr: None,
        sampler: Sampler::default(),
        queue_capacity: 4096,
        overflow: Overflow::DropNewest,
    }
}

pub fn otlp(endpoint: String, protocol: Protocol, gzip: bool) -> OtlpConfig {
    OtlpConfig {
        endpoint,
        protocol,
        headers: vec![("x-tenant".into(), "t1".into())],
        timeout: Duration::from_secs(5),
        gzip,
        ca_pem: None,
        resource_attributes: vec![
            ("deployment.environment".into(), "agent-default".into()),
            ("k8s.node.name".into(), "node1".into()),
            // Per-process identity: the agent-wide list may not set it.
            ("service.name".into(), "agent".into()),
        ],
    }
}

/// 3 server spans of "shop" (pid 4242) and 2 client spans of "billing" (pid 99).
pub fn sample_spans() -> Vec<Arc<SpanRecord>> {
    let shop = process(4242, "shop");
    let billing = Arc::new(ProcessInfo {
        pid: 99,
        exe_name: "python3".into(),
        exe_path: "/usr/bin/python3".into(),
        command_line: "python3 billing.py".into(),
        service_name: "billing".into(),
        resource_attributes: vec![
            ("service.name".into(), "from-attributes".into()),
            ("team".into(), "payments".into()),
            ("host.name".into(), "override-host".into()),
        ],
        start_ticks: 5,
    });
    let mut spans = Vec::new();
    for n in 1..=3 {
        spans.push(Arc::new(span_of(shop.clone(), n)));
    }
    for n in 10..=11 {
        let mut s = span_of(billing.clone(), n);
        s.kind = Kind::Client;
        s.name = "POST".into();
        s.parent_span_id = Some([0xee, 0, 0, 0, 0, 0, 0, n as u8]);
        s.link = LinkKind::Thread;
        s.status = SpanStatus::Error {
            message: "connection reset".into(),
        };
        s.attributes = vec![
            Kv::new("http.request.method", "POST"),
            Kv::new("url.path", "/charge"),
        ];
        s.summary = SpanSummary::Http {
            method: "POST".into(),
            path: "/charge".into(),
            status_code: None,
        };
        spans.push(Arc::new(s));
    }
    spans
}

/// All spans received, with their resource's attributes.
pub fn spans_by_id(
    received: &[Received],
) -> HashMap<Vec<u8>, (HashMap<String, String>, Span, String)> {
    received_spans(received)
        .into_iter()
        .map(|r| (r.span.span_id.clone(), (r.resource, r.span, r.scope)))
        .collect()
}

/// What every transport must deliver for [`sample_spans`].
pub fn check_delivery(received: &[Received], sent: &[Arc<SpanRecord>]) {
    // One resource per process: no request mixes two processes under one resource.
    for r in received {
        for rs in &r.request.resource_spans {
            let res = attrs(&rs.resource.as_ref().unwrap().attributes);
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    let orig = sent
                        .iter()
                        .find(|o| o.span_id.as_slice() == s.span_id.as_slice())
                        .unwrap();
                    assert_eq!(res["process.pid"], orig.process.pid.to_string());
                }
            }
        }
    }
    let got = spans_by_id(received);
    assert_eq!(got.len(), sent.len(), "every span once");
    let host = crate::export::otlp::host_name();
    for orig in sent {
        let (res, s, scope) = &got[orig.span_id.as_slice()];
        assert_eq!(scope, "tracer");
        assert_eq!(s.trace_id, orig.trace_id.to_vec());
        assert_eq!(
            s.parent_span_id,
            orig.parent_span_id.map(|p| p.to_vec()).unwrap_or_default()
        );
        assert_eq!(s.name, orig.name);
        assert_eq!(s.start_time_unix_nano, orig.start_unix_ns);
        assert_eq!(s.end_time_unix_nano, orig.end_unix_ns);
        let a = attrs(&s.attributes);
        assert_eq!(a["thread.id"], "77");
        assert_eq!(a["tracer.link"], orig.link.as_str());
        assert_eq!(
            res["service.instance.id"],
            format!("{host}-{}-{}", orig.process.pid, orig.process.start_ticks)
        );
        assert_eq!(res["process.executable.name"], orig.process.exe_name);
        assert_eq!(res["process.executable.path"], orig.process.exe_path);
        assert_eq!(res["process.command_line"], orig.process.command_line);
        assert_eq!(res["os.type"], "linux");
        assert_eq!(res["telemetry.distro.name"], "tracer");
        assert_eq!(res["telemetry.distro.version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(res["k8s.node.name"], "node1");
        match orig.process.pid {
            4242 => {
                assert_eq!(s.kind, SpanKind::Server as i32);
                assert_eq!(a["http.request.method"], "GET");
                assert_eq!(a["http.response.status_code"], "200");
                assert_eq!(a["server.port"], "8080");
                assert_eq!(
                    a["url.path"],
                    format!(
                        "/users/{}",
                        u32::from_be_bytes(orig.span_id[4..].try_into().unwrap())
                    )
                );
                assert_eq!(
                    s.status.as_ref().map_or(0, |st| st.code),
                    StatusCode::Unset as i32
                );
                assert_eq!(res["service.name"], "shop");
                assert_eq!(res["host.name"], host);
                // The process's own OTEL_RESOURCE_ATTRIBUTES win over the agent's.
                assert_eq!(res["deployment.environment"], "test");
            }
            99 => {
                assert_eq!(s.kind, SpanKind::Client as i32);
                let st = s.status.as_ref().unwrap();
                assert_eq!(
                    (st.code, st.message.as_str()),
                    (StatusCode::Error as i32, "connection reset")
                );
                // OTEL_SERVICE_NAME (resolved in ProcessInfo) wins over the attributes' service.name.
                assert_eq!(res["service.name"], "billing");
                assert_eq!(res["team"], "payments");
                assert_eq!(res["host.name"], "override-host");
                assert_eq!(res["deployment.environment"], "agent-default");
            }
            p => panic!("unexpected pid {p}"),
        }
    }
}

fn deliver(protocol: Protocol, gzip: bool) -> (Vec<Received>, String) {
    let rx = Receiver::start(0, 0);
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://{}", rx.grpc),
        _ => format!("http://{}/v1/traces", rx.http),
    };
    let rt = runtime();
    let stats = Arc::new(Stats::default());
    let (mut exporters, _) = build_from_config(
        &config(Some(otlp(endpoint, protocol, gzip))),
        &stats,
        rt.handle(),
    )
    .unwrap();
    assert_eq!(exporters.len(), 1);
    let spans = sample_spans();
    exporters[0].export(&spans[..2]);
    exporters[0].export(&spans[2..]);
    let summary = exporters[0].shutdown().unwrap();
    let received = rx.received();
    check_delivery(&received, &spans);
    for r in &received {
        assert_eq!(r.transport, protocol.as_str());
        assert!(
            r.headers.iter().any(|(k, v)| k == "x-tenant" && v == "t1"),
            "{:?}",
            r.headers
        );
        if gzip {
            let enc = if protocol == Protocol::Grpc {
                "grpc-encoding"
            } else {
                "content-encoding"
            };
            assert!(
                r.headers.iter().any(|(k, v)| k == enc && v == "gzip"),
                "{:?}",
                r.headers
            );
        }
    }
    (received, summary)
}

#[test]
fn otlp_grpc() {
    let (received, summary) = deliver(Protocol::Grpc, false);
    // Both processes fit one batch: one request, with one resource per process.
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].request.resource_spans.len(), 2);
    assert!(
        summary.starts_with("otlp: 5 spans exported, 0 failed exports"),
        "{summary}"
    );
}

#[test]
fn otlp_grpc_gzip() {
    deliver(Protocol::Grpc, true);
}

#[test]
fn otlp_http_protobuf_gzip() {
    let (_, summary) = deliver(Protocol::HttpProtobuf, true);
    assert!(
        summary.contains("dropped: queue_full=0 export_failed=0 shutdown=0"),
        "{summary}"
    );
}

#[test]
fn otlp_http_json() {
    deliver(Protocol::HttpJson, false);
}

#[test]
fn sampler_applies_to_traces() {
    let rx = Receiver::start(0, 0);
    let rt = runtime();
    let mut cfg = config(Some(otlp(
        format!("http://{}", rx.grpc),
        Protocol::Grpc,
        false,
    )));
    cfg.sampler = Sampler::parse("always_off", None).unwrap();
    let (mut exporters, _) =
        build_from_config(&cfg, &Arc::new(Stats::default()), rt.handle()).unwrap();
    exporters[0].export(&sample_spans());
    let summary = exporters[0].shutdown().unwrap();
    assert_eq!(rx.span_count(), 0);
    assert!(summary.contains("5 sampled out"), "{summary}");
}
