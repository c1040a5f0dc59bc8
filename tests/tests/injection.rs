//! Context injection (`--inject-context`) across four hosts made of network namespaces, joined by
//! veth pairs (one /30 per link):
//!
//! ```text
//!  A: curl ── B: nginx (reverse proxy) ── C: python backend ── D: python service
//!  .1    10.202.0.0/30    .2  .5    10.202.0.4/30   .6  .9   10.202.0.8/30   .10
//! ```
//!
//! With injection on, every outgoing request carries a `traceparent` the kernel inserted: curl's
//! starts the trace, nginx's and the backend's continue the request their thread serves. The
//! applications themselves receive it: the backend logs a traceparent whose span id is nginx's
//! client span's, the service one whose span id is the backend's client span's. Each server span
//! says `injected` (its parent named by a header this tracer inserted), each client span behind a
//! server span `thread`, and the six spans form one chain. Warm-up requests first let the kernel
//! see nginx and the backend answer each request on the thread that read it.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tracer_common::inject::PROVEN_ANSWERS;
use tracer_tests::{
    netns::Namespaces,
    peers::{parse_transfers, CURL_WRITE_OUT},
    pyapp::{PyApp, RELAY},
    trace::{assert_chain, describe, TraceIds},
    util::which,
    Agent, Expect, Gated, Nginx, Peer, TempDir,
};

const A: &str = "10.202.0.1";
const B_FRONT: &str = "10.202.0.2";
const B_BACK: &str = "10.202.0.5";
const C_FRONT: &str = "10.202.0.6";
const C_BACK: &str = "10.202.0.9";
const D: &str = "10.202.0.10";

fn ip(a: &str) -> IpAddr {
    a.parse().unwrap()
}

/// A server span of `peer` for `GET path` on `addr:port`, from a client at `client`.
fn server(peer: &Peer, path: &str, addr: &str, port: u16, client: &str) -> Expect {
    Expect::server(
        format!("server span of pid {} GET {path}", peer.pid),
        peer.pid,
    )
    .exe(peer.exe.as_deref().unwrap_or(""))
    .get(path)
    .server_addr(addr, port)
    .attr("client.address", client)
    .attr("network.peer.address", client)
    .status(200)
}

/// The traceparent `app` logged for a request to `path`.
fn received_traceparent(app: &PyApp, path: &str) -> String {
    let log = app.log();
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("TRACEPARENT {path} ")))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no request for {path} logged:\n{log}"))
}

#[test]
fn injected_context_reaches_each_application() {
    // Declared first: dropped last, after every process inside the namespaces is killed.
    let ns = Namespaces::create(&["a", "b", "c", "d"]);
    ns.link("a", &format!("{A}/30"), "b", &format!("{B_FRONT}/30"));
    ns.link("b", &format!("{B_BACK}/30"), "c", &format!("{C_FRONT}/30"));
    ns.link("c", &format!("{C_BACK}/30"), "d", &format!("{D}/30"));

    let service = PyApp::start_in(
        Some(ns.exec_args("d")),
        "service (d)",
        RELAY,
        &["--bind", D, "--log-context"],
    );
    let svc = format!("{D}:{}", service.port);
    let backend = PyApp::start_in(
        Some(ns.exec_args("c")),
        "backend (c)",
        RELAY,
        &[
            "--bind",
            C_FRONT,
            "--downstream",
            &svc,
            "--prefix",
            "/svc",
            "--log-context",
        ],
    );
    let www = TempDir::new("nginx-www");
    let nginx = Nginx::start_in(
        &ns,
        "b",
        ip(B_FRONT),
        www.path(),
        SocketAddr::new(ip(C_FRONT), backend.port),
    );
    let mut args = ns.exec_args("a");
    args.extend(
        [
            which("curl").display().to_string().as_str(),
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "30",
            "-w",
            CURL_WRITE_OUT,
            "-o",
            "/dev/null",
        ]
        .map(String::from),
    );
    args.push(nginx.url("/proxy/api"));
    let curl = Gated::spawn("curl (a)", &which("ip").display().to_string(), &args);
    let curl_pid = curl.pid();

    let mut pids = nginx.pids();
    pids.extend([curl_pid, backend.pid(), service.pid()]);
    let agent = Agent::json(&pids, &["--inject-context"]);
    // The kernel lets a process's requests carry the context of the request a thread serves only
    // once it has seen the process answer `PROVEN_ANSWERS` requests on their reading threads.
    for _ in 0..PROVEN_ANSWERS {
        let mut warm = ns.exec_args("a");
        warm.extend(
            [
                which("curl").display().to_string().as_str(),
                "-sS",
                "--noproxy",
                "*",
                "--max-time",
                "30",
                "-o",
                "/dev/null",
            ]
            .map(String::from),
        );
        warm.push(nginx.url("/proxy/warm"));
        let st = std::process::Command::new(which("ip"))
            .args(&warm)
            .status()
            .expect("running curl");
        assert!(st.success(), "warm-up request failed: {st}");
    }
    let out = curl.finish(Duration::from_secs(40));
    let t = parse_transfers(&out);
    assert_eq!(
        (out.code(), t.first().map(|t| (t.code, t.size_download))),
        (Some(0), Some((200, "leaf /svc/api\n".len() as u64))),
        "{}\n--- nginx ---\n{}\n--- backend ---\n{}\n--- service ---\n{}",
        out.describe(),
        nginx.error_log(),
        backend.log(),
        service.log()
    );

    let nginx_port = nginx.port;
    let mut expected = vec![
        Peer::curl(curl_pid)
            .client_at(B_FRONT, "GET", "/proxy/api", nginx_port)
            .status(200)
            .top("tracer.link", "root"),
        server(&nginx.peer(), "/proxy/api", B_FRONT, nginx_port, A)
            .attr("client.port", t[0].local_port)
            .top("tracer.link", "injected"),
        nginx
            .peer()
            .client_at(C_FRONT, "GET", "/api", backend.port)
            .status(200)
            .top("tracer.link", "thread"),
        server(&backend.peer(), "/api", C_FRONT, backend.port, B_BACK)
            .top("tracer.link", "injected"),
        backend
            .peer()
            .client_at(D, "GET", "/svc/api", service.port)
            .status(200)
            .top("tracer.link", "thread"),
        server(&service.peer(), "/svc/api", D, service.port, C_BACK).top("tracer.link", "injected"),
    ];
    for _ in 0..PROVEN_ANSWERS {
        expected.extend([
            server(&nginx.peer(), "/proxy/warm", B_FRONT, nginx_port, A),
            nginx
                .peer()
                .client_at(C_FRONT, "GET", "/warm", backend.port)
                .status(200),
            server(&backend.peer(), "/warm", C_FRONT, backend.port, B_BACK),
            backend
                .peer()
                .client_at(D, "GET", "/svc/warm", service.port)
                .status(200),
            server(&service.peer(), "/svc/warm", D, service.port, C_BACK),
        ]);
    }
    let spans = agent.expect_exact(&expected);
    let spans = &spans[..6];
    assert_chain(spans);

    // What the applications received is what the spans say.
    let ctx = describe(spans);
    for (app, path, client) in [
        (&backend, "/api", &spans[2]),
        (&service, "/svc/api", &spans[4]),
    ] {
        let tp = received_traceparent(app, path);
        assert_eq!(
            tp,
            format!("00-{}-{}-01", client.trace_id(), client.span_id()),
            "{path}: the traceparent received is not the client span's\n{ctx}"
        );
    }
}
