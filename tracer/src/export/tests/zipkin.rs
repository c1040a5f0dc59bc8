//! Zipkin v2 JSON posted to a test server, checked field by field against the v2 model.

use std::{sync::Arc, time::Duration};

use serde_json::Value as Json;

use tracer_tests::capture::Capture;

use super::otlp::{config, runtime, sample_spans};
use crate::{
    export::{config::build_from_config, zipkin::ZipkinConfig},
    span::{hex, SpanKind},
    stats::Stats,
};

/// Fields of a Zipkin v2 span (zipkin2-api.yaml, definitions/Span).
const SPAN_FIELDS: &[&str] = &[
    "traceId",
    "name",
    "parentId",
    "id",
    "kind",
    "timestamp",
    "duration",
    "debug",
    "shared",
    "localEndpoint",
    "remoteEndpoint",
    "annotations",
    "tags",
];
const ENDPOINT_FIELDS: &[&str] = &["serviceName", "ipv4", "ipv6", "port"];

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_endpoint(e: &Json) {
    let o = e.as_object().unwrap();
    assert!(
        o.keys().all(|k| ENDPOINT_FIELDS.contains(&k.as_str())),
        "{e}"
    );
    if let Some(ip) = o.get("ipv4") {
        ip.as_str().unwrap().parse::<std::net::Ipv4Addr>().unwrap();
    }
    if let Some(p) = o.get("port") {
        assert!(p.as_u64().unwrap() <= 65535);
    }
}

#[test]
fn zipkin_v2_json() {
    let server = Capture::start(202);
    let rt = runtime();
    let mut cfg = config(None);
    cfg.zipkin = Some(ZipkinConfig {
        url: format!("http://{}/api/v2/spans", server.addr),
        timeout: Duration::from_secs(5),
    });
    let (mut exporters, _) =
        build_from_config(&cfg, &Arc::new(Stats::default()), rt.handle()).unwrap();
    let sent = sample_spans();
    exporters[0].export(&sent);
    let summary = exporters[0].shutdown().unwrap();
    assert!(summary.starts_with("zipkin: 5 spans exported"), "{summary}");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "one batch");
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/api/v2/spans")
    );
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/json"));
    let body: Json = serde_json::from_slice(&r.body).unwrap();
    let spans = body.as_array().unwrap();
    assert_eq!(spans.len(), sent.len());
    for (z, orig) in spans.iter().zip(&sent) {
        let o = z.as_object().unwrap();
        assert!(
            o.keys().all(|k| SPAN_FIELDS.contains(&k.as_str())),
            "unknown field in {z}"
        );
        assert!(is_lower_hex(o["traceId"].as_str().unwrap(), 32));
        assert!(is_lower_hex(o["id"].as_str().unwrap(), 16));
        assert_eq!(o["traceId"], hex(&orig.trace_id));
        assert_eq!(o["id"], hex(&orig.span_id));
        assert_eq!(
            o.get("parentId").map(|p| p.as_str().unwrap().to_string()),
            orig.parent_span_id.map(|p| hex(&p))
        );
        assert_eq!(o["name"], orig.name.as_str());
        assert_eq!(
            o["kind"],
            if orig.kind == SpanKind::Server {
                "SERVER"
            } else {
                "CLIENT"
            }
        );
        assert_eq!(o["timestamp"].as_u64().unwrap(), orig.start_unix_ns / 1000);
        assert_eq!(o["duration"].as_u64().unwrap(), 1000, "1 ms in µs");
        check_endpoint(&o["localEndpoint"]);
        check_endpoint(&o["remoteEndpoint"]);
        assert_eq!(
            o["localEndpoint"]["serviceName"],
            orig.process.service_name.as_str()
        );
        assert_eq!(o["localEndpoint"]["ipv4"], "127.0.0.1");
        assert_eq!(o["localEndpoint"]["port"], 8080);
        assert_eq!(o["remoteEndpoint"]["ipv4"], "127.0.0.2");
        assert_eq!(o["remoteEndpoint"]["port"], 50000);
        let tags = o["tags"].as_object().unwrap();
        assert!(tags.values().all(Json::is_string), "tags are strings: {z}");
        assert_eq!(
            tags["http.request.method"],
            if orig.kind == SpanKind::Server {
                "GET"
            } else {
                "POST"
            }
        );
        assert_eq!(tags["thread.id"], "77");
        assert_eq!(tags["tracer.link"], orig.link.as_str());
        if orig.kind == SpanKind::Server {
            assert_eq!(tags["http.response.status_code"], "200");
            assert!(!tags.contains_key("error"));
        } else {
            assert_eq!(tags["error"], "connection reset");
        }
    }
}

#[test]
fn zipkin_refusal_is_counted() {
    // A 400 is not retryable: one attempt, the batch counted as failed.
    let server = Capture::start(400);
    let rt = runtime();
    let mut cfg = config(None);
    cfg.zipkin = Some(ZipkinConfig {
        url: format!("http://{}/api/v2/spans", server.addr),
        timeout: Duration::from_secs(5),
    });
    let (mut exporters, _) =
        build_from_config(&cfg, &Arc::new(Stats::default()), rt.handle()).unwrap();
    exporters[0].export(&sample_spans());
    let summary = exporters[0].shutdown().unwrap();
    assert_eq!(server.requests().len(), 1);
    assert!(
        summary.contains("0 spans exported, 1 failed exports")
            && summary.contains("export_failed=5"),
        "{summary}"
    );
}

#[test]
fn zipkin_retries_server_errors() {
    let server = Capture::start(503);
    let rt = runtime();
    let mut cfg = config(None);
    cfg.zipkin = Some(ZipkinConfig {
        url: format!("http://{}/api/v2/spans", server.addr),
        timeout: Duration::from_secs(5),
    });
    let (mut exporters, _) =
        build_from_config(&cfg, &Arc::new(Stats::default()), rt.handle()).unwrap();
    exporters[0].export(&sample_spans()[..1]);
    let summary = exporters[0].shutdown().unwrap();
    assert_eq!(server.requests().len(), 4, "bounded retries");
    assert!(summary.contains("export_failed=1"), "{summary}");
}
