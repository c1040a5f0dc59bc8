//! https endpoints: OTLP over gRPC and HTTP with TLS, trusting a test CA given like
//! OTEL_EXPORTER_OTLP_CERTIFICATE; without it the (system-roots) verification refuses the server.

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use tracer_tests::otlp::{Receiver, Tls};

use super::otlp::{check_delivery, config, otlp, runtime, sample_spans};
use crate::{
    export::{config::build_from_config, otlp::Protocol},
    stats::Stats,
};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) is needed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (ca, server).
fn certificates() -> (Vec<u8>, Tls) {
    let dir = std::env::temp_dir().join(format!("tracer-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=tracer test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &dir,
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let out = (
        read("ca.pem"),
        Tls {
            cert: read("cert.pem"),
            key: read("key.pem"),
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn send(protocol: Protocol, endpoint: String, ca: Option<Vec<u8>>) -> String {
    let rt = runtime();
    let mut o = otlp(endpoint, protocol, false);
    o.ca_pem = ca;
    o.timeout = Duration::from_secs(2);
    let (mut exporters, _) =
        build_from_config(&config(Some(o)), &Arc::new(Stats::default()), rt.handle()).unwrap();
    exporters[0].export(&sample_spans());
    exporters[0].shutdown().unwrap()
}

#[test]
fn https_endpoints() {
    let (ca, server) = certificates();
    let rx = Receiver::start_tls(server);
    let grpc = format!("https://{}", rx.grpc);
    let http = format!("https://{}/v1/traces", rx.http);

    // Untrusted: refused (so TLS and its verification really are on), and counted.
    for (p, e) in [(Protocol::Grpc, &grpc), (Protocol::HttpProtobuf, &http)] {
        let summary = send(p, e.clone(), None);
        assert!(
            summary.contains("0 spans exported") && summary.contains("export_failed=5"),
            "{p:?}: {summary}"
        );
    }
    assert_eq!(rx.span_count(), 0);

    for (p, e) in [(Protocol::Grpc, &grpc), (Protocol::HttpProtobuf, &http)] {
        let before = rx.received().len();
        let summary = send(p, e.clone(), Some(ca.clone()));
        assert!(summary.contains("5 spans exported"), "{p:?}: {summary}");
        check_delivery(&rx.received()[before..], &sample_spans());
    }
}
