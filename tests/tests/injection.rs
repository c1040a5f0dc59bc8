//! Context injection (`--inject-context`) across four hosts made of network namespaces
//! (`tracer_tests::hosts`): curl, nginx as a reverse proxy, a python backend and the python
//! service it calls.
//!
//! With injection on, every outgoing request carries a `traceparent` the kernel inserted: curl's
//! starts the trace, nginx's and the backend's continue the request their thread serves. The
//! applications themselves receive it: the backend logs a traceparent whose span id is nginx's
//! client span's, the service one whose span id is the backend's client span's. Each server span
//! says `injected` (its parent named by a header this tracer inserted), each client span behind a
//! server span `thread`, and the six spans form one chain. Warm-up requests first let the kernel
//! see nginx and the backend answer each request on the thread that read it.
//!
//! A request head that reaches nginx in two reads, split after a line (as a client-side
//! injection sends it: the inserted header is a segment of its own), sets nginx's context all
//! the same: a traceparent in its second part is forwarded with nginx's client span as parent,
//! and a head without one starts a trace the next hop receives.

use std::{process::Command, time::Duration};

use rstest::rstest;

use tracer_common::inject::PROVEN_ANSWERS;
use tracer_tests::{
    hosts::Chain,
    pyapp::PyApp,
    trace::{assert_chain, assert_linked, describe, TraceIds},
    util::which,
    Agent, Gated,
};

const WARM_UPS: u32 = 2 * PROVEN_ANSWERS;

/// The traceparent `app` logged for a request to `path`.
fn received_traceparent(app: &PyApp, path: &str) -> String {
    let log = app.log();
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("TRACEPARENT {path} ")))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no request for {path} logged:\n{log}"))
}

/// Let the kernel see nginx and the backend answer `WARM_UPS` requests each (curl from host a,
/// not traced), and give the spans those requests make behind curl.
fn warm_up(chain: &Chain, ip: &str) -> Vec<tracer_tests::Expect> {
    let mut behind = Vec::new();
    for _ in 0..WARM_UPS {
        let st = Command::new(ip)
            .args(chain.curl_args("/proxy/warm"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running curl");
        assert!(st.success(), "warm-up request failed: {st}");
        behind.extend(chain.spans_behind("warm"));
    }
    behind
}

#[test]
fn injected_context_reaches_each_application() {
    let chain = Chain::start("10.202.0", &["--log-context"]);
    let ip = which("ip").display().to_string();
    let curl = Gated::spawn("curl (a)", &ip, &chain.curl_args("/proxy/api"));
    let curl_pid = curl.pid();
    let agent = Agent::json(&chain.pids(&[curl_pid]), &["--inject-context"]);
    // The kernel lets a process's requests carry the context of the request a thread serves only
    // once it has seen the process answer `PROVEN_ANSWERS` requests on their reading threads:
    // twice as many warm-ups, so that a response the kernel missed under load does not decide.
    let warm = warm_up(&chain, &ip);
    let out = curl.finish(Duration::from_secs(40));
    let mut expected = chain.expect_request(
        &out,
        curl_pid,
        "api",
        ["injected", "thread", "injected", "thread", "injected"],
    );
    expected.extend(warm);
    let spans = agent.expect_exact(&expected);
    let spans = &spans[..6];
    assert_chain(spans);

    // What the applications received is what the spans say.
    let ctx = describe(spans);
    for (app, path, client) in [
        (&chain.backend, "/api", &spans[2]),
        (&chain.service, "/svc/api", &spans[4]),
    ] {
        let tp = received_traceparent(app, path);
        assert_eq!(
            tp,
            format!("00-{}-{}-01", client.trace_id(), client.span_id()),
            "{path}: the traceparent received is not the client span's\n{ctx}"
        );
    }
}

/// A client (python, from host a, not traced) sends its request head to nginx in two writes:
/// the request line, then 200 ms later the headers, with or without a traceparent. nginx reads
/// them apart. Its outgoing request carries its client span's context all the same: the
/// received trace, forwarded with a new parent, or a trace the kernel started.
#[rstest]
#[case::forwarded("10.203.0", Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")))]
#[case::started("10.204.0", None)]
fn head_split_after_its_request_line(#[case] prefix: &str, #[case] sent: Option<(&str, &str)>) {
    let chain = Chain::start(prefix, &["--log-context"]);
    let ip = which("ip").display().to_string();
    let agent = Agent::json(&chain.pids(&[]), &["--inject-context"]);
    let mut expected = warm_up(&chain, &ip);
    let header = sent.map_or(String::new(), |(t, s)| {
        format!("traceparent: 00-{t}-{s}-01\r\n")
    });
    let client = format!(
        r#"
import socket, sys, time
c = socket.create_connection(("{host}", {port}))
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.sendall(b"GET /proxy/split HTTP/1.1\r\n")
time.sleep(0.2)
c.sendall(b"{header}Host: {host}:{port}\r\nConnection: close\r\n\r\n")
reply = b""
while True:
    b = c.recv(65536)
    if not b:
        break
    reply += b
sys.stdout.write(reply.decode(errors="replace"))
"#,
        host = chain.addrs.b_front,
        port = chain.nginx.port,
        header = header.replace("\r\n", "\\r\\n"),
    );
    let mut args = chain.ns.exec_args("a");
    args.extend(["python3".into(), "-c".into(), client]);
    let out = Command::new(&ip)
        .args(&args)
        .output()
        .expect("running python");
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("leaf /svc/split\n"),
        "the split request failed: {reply}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nginx_server = if sent.is_some() { "header" } else { "root" };
    let behind = chain.spans_behind("split");
    let first = expected.len();
    for (e, link) in
        behind
            .into_iter()
            .zip([nginx_server, "thread", "injected", "thread", "injected"])
    {
        expected.push(e.top("tracer.link", link));
    }
    let spans = agent.expect_exact(&expected);
    let spans = &spans[first..];
    let ctx = describe(spans);
    if let Some((t, s)) = sent {
        assert_eq!(
            (spans[0].trace_id(), spans[0].parent_id()),
            (t, Some(s)),
            "nginx's server span is not in the trace it was sent\n{ctx}"
        );
    }
    assert_linked(spans);
    assert_eq!(
        received_traceparent(&chain.backend, "/split"),
        format!("00-{}-{}-01", spans[1].trace_id(), spans[1].span_id()),
        "the backend did not receive nginx's client span as parent\n{ctx}"
    );
}
