//! Collector outage: the receiver goes away under traffic, then comes back on the same port.
//! The queue never exceeds its cap, losses are counted by reason, export resumes by itself.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tracer_tests::otlp::Receiver;

use super::otlp::{otlp, runtime, spans_by_id};
use crate::{
    export::{
        otlp::{OtlpSink, Protocol},
        queue::{BatchConfig, DropReason, Overflow, QueueConfig, QueuedExporter},
        sampler::Sampler,
        testutil::span,
        Exporter,
    },
    span::SpanRecord,
};

fn spans(ns: std::ops::Range<u32>) -> Vec<Arc<SpanRecord>> {
    ns.map(|n| Arc::new(span(n))).collect()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn outage(protocol: Protocol) {
    const CAP: usize = 100;
    let mut rx = Receiver::start(0, 0);
    let (grpc_port, http_port) = (rx.grpc.port(), rx.http.port());
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://{}", rx.grpc),
        _ => format!("http://{}/v1/traces", rx.http),
    };
    let rt = runtime();
    let mut cfg = otlp(endpoint, protocol, false);
    cfg.timeout = Duration::from_secs(1);
    let sink = OtlpSink::new(&cfg, rt.handle()).unwrap();
    let q = QueueConfig {
        capacity: CAP,
        overflow: Overflow::DropNewest,
        flush_timeout: Duration::from_secs(5),
    };
    let b = BatchConfig {
        max_batch: 50,
        linger: Duration::from_millis(100),
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
    };
    let mut e = QueuedExporter::spawn("otlp", sink, Sampler::default(), q, b, rt.handle());
    let c = e.counters();

    // Flowing.
    e.export(&spans(0..20));
    rx.wait_spans(20, Duration::from_secs(10));
    let mut pushed = 20u64;

    // Down: far more spans than the queue holds.
    rx.stop();
    for round in 0..30u32 {
        e.export(&spans(1000 + round * 100..1100 + round * 100));
        pushed += 100;
        assert!(e.queue().len() <= CAP, "queue within its cap");
        assert!(c.queue_depth.get() <= CAP as u64);
        std::thread::sleep(Duration::from_millis(30));
    }
    wait_until("a failed export", Duration::from_secs(15), || {
        c.failures.get() > 0
    });
    assert!(c.dropped(DropReason::QueueFull).get() > 0);
    assert!(c.dropped(DropReason::ExportFailed).get() > 0);

    // Back on the same port: new spans arrive without any help.
    let rx2 = Receiver::start(grpc_port, http_port);
    let fresh = spans(9000..9020);
    wait_until(
        "the queue to drain into the new receiver",
        Duration::from_secs(20),
        || {
            e.export(&[]);
            e.queue().is_empty()
        },
    );
    e.export(&fresh);
    wait_until("spans after the outage", Duration::from_secs(20), || {
        let got = spans_by_id(&rx2.received());
        fresh.iter().all(|s| got.contains_key(s.span_id.as_slice()))
    });

    let summary = e.shutdown().unwrap();
    eprintln!("{protocol:?}: {summary}");
    pushed += fresh.len() as u64;
    let drops: u64 = DropReason::ALL.iter().map(|r| c.dropped(*r).get()).sum();
    assert_eq!(
        c.exported.get() + drops,
        pushed,
        "every span exported or counted as dropped: {summary}"
    );
    assert!(c.exported.get() >= 40, "{summary}");
    assert!(summary.contains("queue_full="), "{summary}");
}

#[test]
fn outage_grpc() {
    outage(Protocol::Grpc);
}

#[test]
fn outage_http() {
    outage(Protocol::HttpProtobuf);
}
