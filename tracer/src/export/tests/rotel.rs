//! A third-party OTLP collector in the path: exporter -> rotel (a Rust OTLP collector, from PyPI's
//! `rotel`) -> the in-test receiver, with synthetic spans of two processes. Spans must come out of
//! rotel intact: per-process resources, kinds, ids, times, attributes. Fails (does not skip) when
//! rotel is missing. The same path with the real agent and real traffic is
//! `tests/tests/otlp_export.rs`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tracer_tests::{otlp::Receiver, rotel::Rotel};

use super::otlp::{check_delivery, config, otlp, runtime, sample_spans};
use crate::{
    export::{config::build_from_config, otlp::Protocol},
    stats::Stats,
};

#[test]
fn through_rotel() {
    let rx = Receiver::start(0, 0);
    let rotel = Rotel::start(&format!("http://{}", rx.grpc));
    let rt = runtime();
    let stats = Arc::new(Stats::default());
    let spans = sample_spans();
    // The shop spans over gRPC, the billing spans over HTTP: both of rotel's receivers.
    for (protocol, endpoint, part) in [
        (Protocol::Grpc, rotel.grpc_url(), &spans[..3]),
        (
            Protocol::HttpProtobuf,
            format!("{}/v1/traces", rotel.http_url()),
            &spans[3..],
        ),
    ] {
        let (mut exporters, _) = build_from_config(
            &config(Some(otlp(endpoint, protocol, true))),
            &stats,
            rt.handle(),
        )
        .unwrap();
        exporters[0].export(part);
        let summary = exporters[0].shutdown().unwrap();
        assert!(
            summary.contains(&format!("{} spans exported", part.len())),
            "{summary}\nrotel: {}",
            rotel.log()
        );
    }
    let start = Instant::now();
    while rx.span_count() < spans.len() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{} of {} spans came out of rotel: {}",
            rx.span_count(),
            spans.len(),
            rotel.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    check_delivery(&rx.received(), &spans);
    // rotel itself saw both requests (--debug-log traces), with the process resources.
    let log = rotel.log();
    assert!(
        log.contains("service.name: Str(shop)") && log.contains("service.name: Str(billing)"),
        "{log}"
    );
}
