//! Trace context in request headers: a server span whose request carries a context joins that
//! trace as a child of the span that sent it (`tracer.link` = `header`), and so does the client
//! span of the request that carries it. From an application instrumented with the OpenTelemetry
//! Python SDK (W3C `traceparent`), and from curl sending each format by hand: W3C, B3 single and
//! multi-header, Jaeger `uber-trace-id`, Datadog. A proxy that forwards the context it received
//! unchanged (nginx) makes its outgoing span a child of its server span, not a sibling.

use std::time::Duration;

use tracer_tests::{
    pyapp::{gated_client, OTEL_CLIENT},
    trace::{describe, TraceIds},
    Agent, Curl, Expect, Nginx, Peer, PyScript, TempDir,
};

/// A span of `GET path` in trace `trace`, child of span `parent` by header.
fn in_trace(e: Expect, path: &str, trace: &str, parent: &str) -> Expect {
    e.get(path)
        .status(200)
        .top("trace_id", trace)
        .top("parent_span_id", parent)
        .top("tracer.link", "header")
}

/// The SDK client span's context, from the app's `SDK trace=T span=S parent=P status=C` line.
fn sdk_line(stdout: &str) -> (String, String) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("SDK "))
        .unwrap_or_else(|| panic!("no SDK line in the app's output:\n{stdout}"));
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
            .to_string()
    };
    assert_eq!(field("status="), "200", "{line}");
    (field("trace="), field("span="))
}

/// An application instrumented with the OpenTelemetry SDK (requests instrumentation) calls a
/// traced python server. The SDK sends its client span's context in `traceparent`: the server
/// span joins the SDK's trace as a child of the SDK client span, and the app's own client span
/// as seen by the agent (the request carries the context) too.
#[test]
fn sdk_instrumented_client() {
    let py = PyScript::start();
    let dir = TempDir::new("otel-app");
    let app = gated_client(&dir, "otel_client", OTEL_CLIENT, &[py.url("/sdk")]);
    let app_pid = app.pid();
    let agent = Agent::json(&[py.pid(), app_pid], &[]);
    let out = app.finish(Duration::from_secs(60));
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let (trace, span) = sdk_line(&out.stdout);
    let spans = agent.expect_exact(&[
        in_trace(
            Expect::client("the app's client span", app_pid),
            "/sdk",
            &trace,
            &span,
        )
        .peer("127.0.0.1", py.port),
        in_trace(
            py.peer().server("GET", "/sdk", py.port, None),
            "/sdk",
            &trace,
            &span,
        ),
    ]);
    assert_ne!(spans[0].span_id(), span, "{}", describe(&spans));
    assert_ne!(spans[1].span_id(), spans[0].span_id());
}

/// curl sending a context by hand in each format: its client span and the server span join that
/// trace, children of the sending span. 64-bit trace ids are left-padded to 128 bits; Datadog's
/// decimal ids are shown in hex.
#[test]
fn headers_sent_by_curl() {
    const T128: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const T64: &str = "463ac35c9f6413ad";
    const S: &str = "00f067aa0ba902b7";
    let padded = format!("{:0>32}", T64);
    // (path, curl -H arguments, trace id, parent span id)
    let cases: Vec<(&str, Vec<String>, String, String)> = vec![
        (
            "/w3c",
            vec![format!("traceparent: 00-{T128}-{S}-01")],
            T128.into(),
            S.into(),
        ),
        (
            "/b3-single",
            vec![format!("b3: {T128}-{S}-1")],
            T128.into(),
            S.into(),
        ),
        (
            "/b3-multi",
            vec![
                format!("X-B3-TraceId: {T64}"),
                format!("X-B3-SpanId: {S}"),
                "X-B3-Sampled: 1".into(),
            ],
            padded.clone(),
            S.into(),
        ),
        (
            "/jaeger",
            vec![format!("uber-trace-id: {T128}:{S}:0:1")],
            T128.into(),
            S.into(),
        ),
        (
            "/datadog",
            vec![
                "x-datadog-trace-id: 1234567890123456789".into(),
                "x-datadog-parent-id: 987654321".into(),
            ],
            format!("{:0>32x}", 1234567890123456789u64),
            format!("{:016x}", 987654321u64),
        ),
    ];
    let py = PyScript::start();
    let curls: Vec<Curl> = cases
        .iter()
        .map(|(path, headers, _, _)| {
            let opts: Vec<&str> = headers.iter().flat_map(|h| ["-H", h.as_str()]).collect();
            Curl::new(&opts, &[py.url(path)])
        })
        .collect();
    let mut pids: Vec<u32> = curls.iter().map(Curl::pid).collect();
    pids.push(py.pid());
    let agent = Agent::json(&pids, &[]);
    let mut expected = Vec::new();
    for ((path, _, trace, parent), curl) in cases.iter().zip(curls) {
        let pid = curl.pid();
        let t = curl.run()[0];
        assert_eq!(t.code, 200, "{path}");
        expected.push(in_trace(
            Peer::curl(pid).client("GET", path, py.port),
            path,
            trace,
            parent,
        ));
        expected.push(in_trace(
            py.peer().server("GET", path, py.port, Some(t.local_port)),
            path,
            trace,
            parent,
        ));
    }
    agent.expect_exact(&expected);
}

/// curl sends a `traceparent` to nginx, which proxies to python and forwards the header as it
/// came (nginx's default). nginx's client span carries exactly the context its server span
/// received, so it is that server span's child (`thread`), in the same trace; the other spans
/// join the trace by header.
#[test]
fn context_forwarded_unchanged_by_nginx() {
    const T: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const S: &str = "00f067aa0ba902b7";
    let py = PyScript::start();
    let www = TempDir::new("nginx-www");
    let nginx = Nginx::start(www.path(), Some(py.port));
    let traceparent = format!("traceparent: 00-{T}-{S}-01");
    let curl = Curl::new(&["-H", &traceparent], &[nginx.url("/proxy/forwarded")]);
    let curl_pid = curl.pid();
    let mut pids = nginx.pids();
    pids.extend([curl_pid, py.pid()]);
    let agent = Agent::json(&pids, &[]);
    let t = curl.run()[0];
    assert_eq!(t.code, 200, "nginx error log:\n{}", nginx.error_log());
    let spans = agent.expect_exact(&[
        in_trace(
            Peer::curl(curl_pid).client("GET", "/proxy/forwarded", nginx.port),
            "/proxy/forwarded",
            T,
            S,
        ),
        in_trace(
            nginx
                .peer()
                .server("GET", "/proxy/forwarded", nginx.port, Some(t.local_port)),
            "/proxy/forwarded",
            T,
            S,
        ),
        nginx
            .peer()
            .client("GET", "/forwarded", py.port)
            .status(200)
            .top("trace_id", T)
            .top("tracer.link", "thread"),
        in_trace(
            py.peer().server("GET", "/forwarded", py.port, None),
            "/forwarded",
            T,
            S,
        ),
    ]);
    assert_eq!(
        spans[2].parent_id(),
        Some(spans[1].span_id()),
        "nginx's client span is a child of its server span\n{}",
        describe(&spans)
    );
}
