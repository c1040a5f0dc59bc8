//! A third-party OTLP collector in the path: tracer -> rotel (a Rust OTLP collector, from PyPI's
//! `rotel`) -> the in-test receiver. Spans must come out of rotel intact: per-process
//! resources, kinds, ids, times, attributes. Fails (does not skip) when rotel is missing.

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    otlp::{check_delivery, config, otlp, runtime, sample_spans},
    receiver::Receiver,
};
use crate::{
    export::{config::build_from_config, otlp::Protocol},
    stats::Stats,
};

/// `rotel-agent` ships inside the Python package (not on PATH): ask Python where.
fn rotel_agent() -> PathBuf {
    if let Some(p) = std::env::var_os("ROTEL_AGENT") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output();
    if let Ok(o) = out {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if o.status.success() && p.is_file() {
            return p;
        }
    }
    panic!("rotel is not installed: `pip install rotel` (done by `cargo xtask setup --peers`), or set ROTEL_AGENT");
}

/// rotel cannot listen on port 0: take a free port from the kernel and hand it over.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Rotel {
    child: Child,
    log: PathBuf,
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Rotel {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn start_rotel(grpc: u16, http: u16, forward_to: &str) -> Rotel {
    let dir = std::env::temp_dir().join(format!("tracer-rotel-{}-{grpc}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("rotel.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(rotel_agent())
        .args([
            "start",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{grpc}"),
        ])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
        .args(["--exporter", "otlp", "--otlp-exporter-endpoint", forward_to])
        .args([
            "--batch-timeout",
            "100ms",
            "--debug-log",
            "traces",
            "--debug-log-verbosity",
            "detailed",
        ])
        .arg("--pid-file")
        .arg(dir.join("rotel.pid"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("starting rotel-agent");
    let mut r = Rotel { child, log };
    let start = Instant::now();
    for port in [grpc, http] {
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("rotel-agent exited ({status}): {}", r.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "rotel-agent does not listen: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    r
}

#[test]
fn through_rotel() {
    let rx = Receiver::start(0, 0);
    let (grpc, http) = (free_port(), free_port());
    let rotel = start_rotel(grpc, http, &format!("http://{}", rx.grpc));
    let rt = runtime();
    let stats = Arc::new(Stats::default());
    let spans = sample_spans();
    // The shop spans over gRPC, the billing spans over HTTP: both of rotel's receivers.
    for (protocol, endpoint, part) in [
        (
            Protocol::Grpc,
            format!("http://127.0.0.1:{grpc}"),
            &spans[..3],
        ),
        (
            Protocol::HttpProtobuf,
            format!("http://127.0.0.1:{http}/v1/traces"),
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
