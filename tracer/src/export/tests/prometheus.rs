//! /metrics scraped over HTTP and parsed with a real Prometheus text parser.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use super::otlp::{runtime, sample_spans};
use crate::{
    export::{
        prometheus::{
            route_of, PrometheusExporter, BUCKETS, DB_BUCKETS, MAX_OPERATIONS_PER_SERVICE,
            MAX_ROUTES_PER_SERVICE,
        },
        queue::{DropReason, ExportCounters},
        testutil::{process, span, span_of},
        Exporter,
    },
    span::{SpanKind, SpanRecord, SpanSummary},
    stats::Stats,
};

pub fn scrape(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    accept: Option<&str>,
) -> (u16, String, String) {
    crate::export::otlp::install_crypto_provider();
    rt.block_on(async {
        let mut req = reqwest::Client::new().get(format!("http://{addr}/metrics"));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let ctype = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ctype, r.text().await.unwrap())
    })
}

/// The samples of a scrape as parsed by Prometheus's own Python client library (a strict,
/// reference parser of the text format): (name, labels, value).
pub struct Scrape(Vec<(String, HashMap<String, String>, f64)>);

const PARSER: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
json.dump(out, sys.stdout)
"#;

pub fn parse(text: &str) -> Scrape {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args(["-c", PARSER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed to parse /metrics");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "parsing /metrics with python's prometheus_client failed (missing? `pip install prometheus-client`, done by `cargo xtask setup --peers`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Scrape(serde_json::from_slice(&out.stdout).unwrap())
}

impl Scrape {
    pub fn series(
        &self,
        metric: &str,
        labels: &[(&str, &str)],
    ) -> Vec<(&HashMap<String, String>, f64)> {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == metric
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, l, v)| (l, *v))
            .collect()
    }
}

pub fn scalar(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match s.series(metric, labels).as_slice() {
        [(_, v)] => *v,
        other => panic!("{metric} {labels:?}: {other:?}"),
    }
}

/// (le, cumulative count) of a histogram series.
pub fn buckets(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let mut b: Vec<(f64, f64)> = s
        .series(&format!("{metric}_bucket"), labels)
        .into_iter()
        .map(|(l, v)| (l["le"].parse::<f64>().unwrap(), v))
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    assert!(!b.is_empty(), "no buckets for {metric} {labels:?}");
    b
}

fn with_duration(mut s: SpanRecord, ms: u64) -> Arc<SpanRecord> {
    s.end_unix_ns = s.start_unix_ns + ms * 1_000_000;
    Arc::new(s)
}

#[test]
fn routes_are_low_cardinality() {
    assert_eq!(route_of("/users/42"), "/users/{id}");
    assert_eq!(
        route_of("/orders/123e4567-e89b-12d3-a456-426614174000/items/deadbeefdeadbeef12"),
        "/orders/{id}/items/{id}"
    );
    assert_eq!(route_of("/api/v1/items?page=2"), "/api/v1/items");
    assert_eq!(route_of(""), "/");
    assert_eq!(route_of("/a/b/c/d/e/f/g/h/i/j"), "/a/b/c/d/e/f/g/h/{rest}");
    assert_eq!(route_of("/static/app.js"), "/static/app.js");
}

#[test]
fn metrics_endpoint() {
    let rt = runtime();
    let stats = Arc::new(Stats::default());
    stats.events_data.add(5);
    stats.spans.add(9);
    stats.kernel[tracer_common::stats::RINGBUF_DROPS_DATA as usize].set(7);
    let counters = Arc::new(ExportCounters::default());
    counters.exported.add(3);
    counters.dropped(DropReason::QueueFull).add(2);
    counters.queue_depth.set(4);
    let mut p = PrometheusExporter::serve(
        "127.0.0.1:0".parse().unwrap(),
        stats,
        vec![("otlp", counters)],
        rt.handle(),
    )
    .unwrap();
    let addr = p.local_addr();
    assert_ne!(addr.port(), 0);

    // shop: 4 GET /users/{n} of 3 ms, 30 ms, 300 ms, 3 s.
    let spans: Vec<Arc<SpanRecord>> = [3, 30, 300, 3000]
        .iter()
        .zip(1..)
        .map(|(ms, n)| with_duration(span(n), *ms))
        .collect();
    p.export(&spans);
    // billing: 2 client POST /charge without status (errors), see sample_spans.
    p.export(&sample_spans()[3..]);
    // A crawler hitting more distinct routes than allowed.
    let crawler = process(7, "crawler");
    let many: Vec<Arc<SpanRecord>> = (0..MAX_ROUTES_PER_SERVICE as u32 + 50)
        .map(|i| {
            let mut s = span_of(crawler.clone(), i);
            s.summary = SpanSummary::Http {
                method: "FOO".into(),
                path: format!("/page-x{i}y").into(),
                status_code: None,
            };
            Arc::new(s)
        })
        .collect();
    p.export(&many);
    // Database server spans are not measured (the database metric is the client's).
    let mut odd = span(99);
    odd.summary = SpanSummary::Db {
        system: "redis",
        operation: "GET".into(),
        error_type: None,
    };
    p.export(&[Arc::new(odd)]);
    // Database client operations: 2 GETs (2 ms, 20 ms), a failed LPUSH, and more operations than
    // the cap.
    let db = |n: u32, op: &str, ms: u64, err: Option<&str>| {
        let mut s = span_of(process(8, "cart"), n);
        s.kind = SpanKind::Client;
        s.summary = SpanSummary::Db {
            system: "redis",
            operation: op.into(),
            error_type: err.map(str::to_string),
        };
        with_duration(s, ms)
    };
    p.export(&[
        db(1, "GET", 2, None),
        db(2, "GET", 20, None),
        db(3, "LPUSH", 1, Some("WRONGTYPE")),
    ]);
    let ops: Vec<Arc<SpanRecord>> = (0..MAX_OPERATIONS_PER_SERVICE as u32 + 5)
        .map(|i| db(100 + i, &format!("OP{i}"), 1, None))
        .collect();
    p.export(&ops);

    let (status, ctype, text) = scrape(&rt, addr, None);
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let s = parse(&text);

    let shop = [
        ("service", "shop"),
        ("http_request_method", "GET"),
        ("http_response_status_code", "200"),
        ("http_route", "/users/{id}"),
    ];
    let b = buckets(&s, "http_server_request_duration_seconds", &shop);
    let les: Vec<f64> = b
        .iter()
        .map(|(le, _)| *le)
        .filter(|le| le.is_finite())
        .collect();
    assert_eq!(les, BUCKETS.to_vec(), "semantic-convention boundaries");
    let at = |le: f64| b.iter().find(|(l, _)| *l == le).unwrap().1;
    assert_eq!(
        (
            at(0.005),
            at(0.025),
            at(0.05),
            at(0.25),
            at(0.5),
            at(2.5),
            at(5.0),
            at(10.0),
            at(f64::INFINITY)
        ),
        (1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 4.0)
    );
    assert_eq!(
        scalar(&s, "http_server_request_duration_seconds_count", &shop),
        4.0
    );
    assert!((scalar(&s, "http_server_request_duration_seconds_sum", &shop) - 3.333).abs() < 1e-9);

    let billing = [
        ("service", "billing"),
        ("http_request_method", "POST"),
        ("http_route", "/charge"),
    ];
    assert_eq!(
        scalar(&s, "http_client_request_duration_seconds_count", &billing),
        2.0
    );
    assert!(s
        .series("http_server_request_duration_seconds_count", &billing[..1])
        .is_empty());
    assert_eq!(
        scalar(
            &s,
            "http_client_request_duration_seconds_count",
            &[("http_response_status_code", "")]
        ),
        2.0
    );

    let crawler_series = s.series(
        "http_server_request_duration_seconds_count",
        &[("service", "crawler")],
    );
    assert_eq!(
        crawler_series.len(),
        MAX_ROUTES_PER_SERVICE + 1,
        "capped routes plus /{{other}}"
    );
    assert!(crawler_series
        .iter()
        .all(|(l, _)| l["http_request_method"] == "_OTHER"));
    assert_eq!(
        scalar(
            &s,
            "http_server_request_duration_seconds_count",
            &[("service", "crawler"), ("http_route", "/{other}")]
        ),
        50.0
    );

    let get = [
        ("service", "cart"),
        ("db_system_name", "redis"),
        ("db_operation_name", "GET"),
        ("error_type", ""),
    ];
    let b = buckets(&s, "db_client_operation_duration_seconds", &get);
    let les: Vec<f64> = b
        .iter()
        .map(|(le, _)| *le)
        .filter(|le| le.is_finite())
        .collect();
    assert_eq!(
        les,
        DB_BUCKETS.to_vec(),
        "database semantic-convention boundaries"
    );
    let at = |le: f64| b.iter().find(|(l, _)| *l == le).unwrap().1;
    assert_eq!((at(0.001), at(0.005), at(0.05)), (0.0, 1.0, 2.0));
    assert_eq!(
        scalar(
            &s,
            "db_client_operation_duration_seconds_count",
            &[("db_operation_name", "LPUSH"), ("error_type", "WRONGTYPE")]
        ),
        1.0
    );
    assert_eq!(
        s.series(
            "db_client_operation_duration_seconds_count",
            &[("service", "cart")]
        )
        .len(),
        MAX_OPERATIONS_PER_SERVICE + 1,
        "capped operations plus _OTHER"
    );
    assert!(
        s.series(
            "db_client_operation_duration_seconds_count",
            &[("service", "shop")]
        )
        .is_empty(),
        "a database server span is not a client operation"
    );

    // The agent's own counters.
    assert_eq!(scalar(&s, "tracer_events_total", &[("kind", "data")]), 5.0);
    assert_eq!(scalar(&s, "tracer_spans_total", &[]), 9.0);
    assert_eq!(
        scalar(&s, "tracer_drops_total", &[("reason", "ringbuf_data")]),
        7.0
    );
    assert_eq!(
        scalar(
            &s,
            "tracer_kernel_total",
            &[("counter", "ringbuf_drops_data")]
        ),
        7.0
    );
    assert_eq!(
        scalar(&s, "tracer_export_spans_total", &[("exporter", "otlp")]),
        3.0
    );
    assert_eq!(
        scalar(
            &s,
            "tracer_export_dropped_spans_total",
            &[("exporter", "otlp"), ("reason", "queue_full")]
        ),
        2.0
    );
    assert_eq!(
        scalar(
            &s,
            "tracer_export_dropped_spans_total",
            &[("exporter", "otlp"), ("reason", "export_failed")]
        ),
        0.0
    );
    assert_eq!(
        scalar(&s, "tracer_export_queue_depth", &[("exporter", "otlp")]),
        4.0
    );
    for e in crate::protocol::ParseError::ALL {
        assert_eq!(
            scalar(&s, "tracer_parse_errors_total", &[("error", e.as_str())]),
            0.0
        );
    }

    // OpenMetrics on request; 404 elsewhere.
    let (status, ctype, text) = scrape(
        &rt,
        addr,
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(text.trim_end().ends_with("# EOF"));
    let missing = rt.block_on(async {
        reqwest::get(format!("http://{addr}/nope"))
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(missing, 404);

    assert_eq!(p.shutdown(), None);
}

#[test]
fn metrics_addr_in_use_is_a_clear_error() {
    let rt = runtime();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = crate::export::config::ExportConfig {
        metrics_addr: Some(taken.local_addr().unwrap()),
        ..super::otlp::config(None)
    };
    let e =
        crate::export::config::build_from_config(&cfg, &Arc::new(Stats::default()), rt.handle())
            .err()
            .unwrap()
            .to_string();
    assert!(
        e.contains("cannot serve metrics on 127.0.0.1:") && e.contains("--metrics-addr"),
        "{e}"
    );
}

/// OTLP, Zipkin and Prometheus at once, fed the same spans: each gets them, and /metrics shows
/// the other exporters' counters.
#[test]
fn several_exporters_at_once() {
    let rx = tracer_tests::otlp::Receiver::start(0, 0);
    let zipkin = tracer_tests::capture::Capture::start(202);
    let rt = runtime();
    let mut cfg = super::otlp::config(Some(super::otlp::otlp(
        format!("http://{}", rx.grpc),
        crate::export::otlp::Protocol::Grpc,
        false,
    )));
    cfg.zipkin = Some(crate::export::zipkin::ZipkinConfig {
        url: format!("http://{}/api/v2/spans", zipkin.addr),
        timeout: std::time::Duration::from_secs(5),
    });
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let stats = Arc::new(Stats::default());
    let (mut exporters, metrics) =
        crate::export::config::build_from_config(&cfg, &stats, rt.handle()).unwrap();
    let names: Vec<&str> = exporters.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["otlp", "zipkin", "prometheus"]);
    let spans = sample_spans();
    for e in exporters.iter_mut() {
        e.export(&spans);
    }
    let lines: Vec<String> = exporters[..2]
        .iter_mut()
        .filter_map(|e| e.shutdown())
        .collect();
    assert!(
        lines[0].starts_with("otlp: 5 spans exported")
            && lines[1].starts_with("zipkin: 5 spans exported"),
        "{lines:?}"
    );
    super::otlp::check_delivery(&rx.received(), &spans);
    assert_eq!(zipkin.requests().len(), 1);

    let (_, _, text) = scrape(&rt, metrics.unwrap(), None);
    let s = parse(&text);
    for e in ["otlp", "zipkin"] {
        assert_eq!(
            scalar(&s, "tracer_export_spans_total", &[("exporter", e)]),
            5.0
        );
        assert_eq!(
            scalar(&s, "tracer_export_queue_depth", &[("exporter", e)]),
            0.0
        );
    }
    assert_eq!(
        scalar(
            &s,
            "http_server_request_duration_seconds_count",
            &[("service", "shop")]
        ),
        3.0
    );
    assert_eq!(exporters[2].shutdown(), None);
}
