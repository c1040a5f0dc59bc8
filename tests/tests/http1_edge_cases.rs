//! HTTP/1 shapes real peers produce that the parser must not get wrong: heads larger than the
//! capture (big cookies through nginx), 100 pipelined requests on one connection, methods
//! outside the usual nine, and an empty line before a request.

use std::{process::Command, time::Duration};

use rstest::rstest;
use serde_json::{json, Value};
use tracer_tests::{
    peers::{curl_command, parse_transfers, python, CURL_WRITE_OUT, RAW_CLIENT},
    Agent, Expect, Gated, Nginx, Output, Peer, PyScript, TempDir, SPAN_TIMEOUT,
};

/// The python interpreter as the agent reports a process running it (`/proc/PID/exe`: the real
/// interpreter, not a wrapper or link named `python3`).
fn python_peer(pid: u32) -> Peer {
    let out = Command::new(python())
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("running python");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let name = path.rsplit('/').next().unwrap_or_default().to_string();
    Peer::new(pid, &name, Some(&path))
}

/// `RAW_CLIENT` against 127.0.0.1:`port` running `steps`, reading with `recv(recv_size)`,
/// held at its gate.
fn raw_client(port: u16, steps: &Value, recv_size: usize) -> Gated {
    let args = vec![
        "-c".to_string(),
        RAW_CLIENT.to_string(),
        port.to_string(),
        steps.to_string(),
        recv_size.to_string(),
    ];
    Gated::spawn("python raw client", &python(), &args)
}

/// The `(status, body length)` of each response `RAW_CLIENT` read, and its local port.
fn raw_results(out: &Output) -> (Vec<(u16, u64)>, u16) {
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let mut responses = Vec::new();
    let mut local = 0;
    for line in out.stdout.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["status", s, "len", n] => responses.push((s.parse().unwrap(), n.parse().unwrap())),
            ["local", p] => local = p.parse().unwrap(),
            _ => panic!("unexpected client output {line:?}\n{}", out.describe()),
        }
    }
    (responses, local)
}

/// `GET path` with a Host header for `port`.
fn get(path: &str, port: u16) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
}

/// Wait for the expected spans, stop the agent, check them and its exit; returns its stderr.
fn expect_exact_with_summary(agent: Agent, expected: &[Expect]) -> String {
    let done =
        |spans: &[tracer_tests::Span]| expected.iter().all(|e| spans.iter().any(|s| e.matches(s)));
    if !agent.wait_until(SPAN_TIMEOUT, done) {
        eprintln!("note: waited {SPAN_TIMEOUT:?} for the expected spans");
    }
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    stopped.assert_exact(expected);
    stopped.stderr
}

/// curl sends one GET with a `Cookie` header of `cookie` bytes (more than the 4096 bytes the
/// agent captures per syscall), then a plain GET on the same connection. nginx (with header
/// buffers large enough) answers both. Both ends' spans of the first are marked truncated with
/// the right path and status; the second pairs as usual.
#[rstest]
#[case::cookie_6k(6_000)]
#[case::cookie_20k(20_000)]
fn big_cookie_through_nginx(#[case] cookie: usize) {
    let www = TempDir::new("www");
    www.file_of_size("index.html", 777);
    www.file_of_size("small.txt", 12);
    let nginx = Nginx::start_with(www.path(), None, "large_client_header_buffers 4 64k;");
    let header = format!("Cookie: session={}", "c".repeat(cookie));
    let mut args = curl_command(&["-H", &header, "-o", "/dev/null", &nginx.url("/index.html")]);
    args.extend(
        [
            "--next",
            "-sS",
            "--noproxy",
            "*",
            "-w",
            CURL_WRITE_OUT,
            "-o",
            "/dev/null",
            &nginx.url("/small.txt"),
        ]
        .map(String::from),
    );
    let curl_bin = args.remove(0);
    let curl = Gated::spawn("curl", &curl_bin, &args);
    let curl_pid = curl.pid();
    let mut pids = nginx.pids();
    pids.push(curl_pid);
    let agent = Agent::json(&pids, &[]);
    let out = curl.finish(Duration::from_secs(40));
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let t = parse_transfers(&out);
    assert_eq!(
        t.iter()
            .map(|t| (t.code, t.size_download))
            .collect::<Vec<_>>(),
        [(200, 777), (200, 12)],
        "{}\nnginx error log:\n{}",
        out.describe(),
        nginx.error_log()
    );
    assert_eq!(
        t[0].local_port, t[1].local_port,
        "curl reused its connection"
    );
    let client = Peer::curl(curl_pid);
    let server = nginx.peer();
    let stderr = expect_exact_with_summary(
        agent,
        &[
            client
                .client("GET", "/index.html", nginx.port)
                .status(200)
                .resp_body(777)
                .attr("tracer.truncated", true),
            server
                .server("GET", "/index.html", nginx.port, Some(t[0].local_port))
                .status(200)
                .resp_body(777)
                .attr("tracer.truncated", true),
            client
                .client("GET", "/small.txt", nginx.port)
                .status(200)
                .resp_body(12)
                .no_attr("tracer.truncated"),
            server
                .server("GET", "/small.txt", nginx.port, Some(t[1].local_port))
                .status(200)
                .resp_body(12)
                .no_attr("tracer.truncated"),
        ],
    );
    assert!(
        stderr.contains("parse errors: none;")
            && stderr.contains("exchanges with a truncated head: 2;"),
        "exit summary:\n{stderr}"
    );
}

/// A python client pipelines 100 requests on one connection (each its own write, all before
/// reading a response), alternating a file nginx has and paths it has not. Every server span
/// pairs its request with its own response (a shift would show as 404s on `/index.html`).
/// Client side: read in `recv`s no larger than the capture, every response is seen and every
/// span pairs; read in 64 KiB `recv`s, the capture misses responses while others wait, so the
/// agent stops pairing that connection (`unpaired`) and no client span is wrongly paired.
#[rstest]
#[case::reads_within_the_capture(4096)]
#[case::reads_beyond_the_capture(65536)]
fn hundred_pipelined_requests(#[case] recv_size: usize) {
    let www = TempDir::new("www");
    www.file_of_size("index.html", 321);
    let nginx = Nginx::start(www.path(), None);
    let paths: Vec<String> = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                "/index.html".to_string()
            } else {
                format!("/missing-{i}")
            }
        })
        .collect();
    let requests: Vec<String> = paths.iter().map(|p| get(p, nginx.port)).collect();
    let client = raw_client(
        nginx.port,
        &json!([{ "send": requests, "read": 100 }]),
        recv_size,
    );
    let client_pid = client.pid();
    let mut pids = nginx.pids();
    pids.push(client_pid);
    let agent = Agent::json(&pids, &[]);
    let (responses, local) = raw_results(&client.finish(Duration::from_secs(30)));
    let statuses: Vec<u16> = responses.iter().map(|r| r.0).collect();
    let want: Vec<u16> = (0..100)
        .map(|i| if i % 2 == 0 { 200 } else { 404 })
        .collect();
    assert_eq!(statuses, want, "nginx's answers");
    let py = python_peer(client_pid);
    let client_spans: Vec<Expect> = paths
        .iter()
        .zip(&responses)
        .map(|(path, (status, len))| {
            py.client("GET", path, nginx.port)
                .status(*status)
                .resp_body(*len)
        })
        .collect();
    let server_spans: Vec<Expect> = paths
        .iter()
        .zip(&responses)
        .map(|(path, (status, len))| {
            nginx
                .peer()
                .server("GET", path, nginx.port, Some(local))
                .status(*status)
                .resp_body(*len)
        })
        .collect();
    if recv_size <= 4096 {
        let expected: Vec<Expect> = client_spans.into_iter().chain(server_spans).collect();
        let stderr = expect_exact_with_summary(agent, &expected);
        assert!(
            stderr.contains("parse errors: none;"),
            "exit summary:\n{stderr}"
        );
        return;
    }
    let servers_done = |spans: &[tracer_tests::Span]| {
        server_spans
            .iter()
            .all(|e| spans.iter().any(|s| e.matches(s)))
    };
    assert!(agent.wait_until(SPAN_TIMEOUT, servers_done), "server spans");
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    let (servers, clients): (Vec<_>, Vec<_>) =
        stopped.spans.iter().cloned().partition(|s| s.is_server());
    assert_eq!(servers.len(), 100, "server spans:\n{servers:?}");
    for s in &clients {
        let path = s.path().unwrap_or_default();
        let want = if path == "/index.html" { 200 } else { 404 };
        assert_eq!(
            s.status_code(),
            Some(want),
            "wrongly paired client span: {s}"
        );
        // A response head cut by the capture may hide its length: only its status is known.
        let truncated = s.attr("tracer.truncated").is_some();
        assert!(
            truncated || client_spans.iter().any(|e| e.matches(s)),
            "unexpected client span: {s}"
        );
    }
    if clients.len() < 100 {
        assert!(
            stopped.stderr.contains("unpaired=1"),
            "{} client spans, and no unpaired connection in the summary:\n{}",
            clients.len(),
            stopped.stderr
        );
    }
}

/// A python client sends GET, then PROPFIND (with a body), PURGE and QUERY on one keep-alive
/// connection to the python server, which answers each: all give spans on both ends.
#[test]
fn methods_outside_the_usual_nine() {
    let py = PyScript::start();
    let propfind = "<?xml version=\"1.0\"?><propfind xmlns=\"DAV:\"><allprop/></propfind>";
    let steps = json!([
        { "send": [get("/first", py.port)], "read": 1 },
        { "send": [format!(
            "PROPFIND /dav/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nDepth: 1\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{propfind}",
            py.port,
            propfind.len()
        )], "read": 1 },
        { "send": [format!("PURGE /cached/page HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n", py.port)], "read": 1 },
        { "send": [format!(
            "QUERY /search?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
            py.port
        )], "read": 1 },
    ]);
    let client = raw_client(py.port, &steps, 65536);
    let client_pid = client.pid();
    let agent = Agent::json(&[py.pid(), client_pid], &[]);
    let (responses, local) = raw_results(&client.finish(Duration::from_secs(30)));
    assert_eq!(
        responses,
        [(200, 5), (207, 12), (200, 8), (200, 8)],
        "the server's answers"
    );
    let cases = [
        ("GET", "/first", 0, 200, 5),
        ("PROPFIND", "/dav/", propfind.len() as u64, 207, 12),
        ("PURGE", "/cached/page", 0, 200, 8),
        ("QUERY", "/search", 5, 200, 8),
    ];
    let client = python_peer(client_pid);
    let mut expected = Vec::new();
    for (method, path, req, status, resp) in cases {
        expected.push(
            client
                .client(method, path, py.port)
                .status(status)
                .req_body(req)
                .resp_body(resp),
        );
        expected.push(
            py.peer()
                .server(method, path, py.port, Some(local))
                .status(status)
                .req_body(req)
                .resp_body(resp),
        );
    }
    let stderr = expect_exact_with_summary(agent, &expected);
    assert!(
        stderr.contains("parse errors: none;"),
        "exit summary:\n{stderr}"
    );
}

/// After a request whose head was larger than the capture (the parser then skips to the next
/// message start; nginx reads it in two reads, the second over 4096 bytes), the next request
/// arrives with an empty line before it (RFC 9112 §2.2: to be
/// ignored); nginx answers both, and both give spans.
#[test]
fn empty_line_before_a_request() {
    let www = TempDir::new("www");
    www.file_of_size("a.txt", 10);
    www.file_of_size("b.txt", 20);
    let nginx = Nginx::start(www.path(), None);
    let big = format!(
        "GET /a.txt HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Pad: {}\r\n\r\n",
        nginx.port,
        "p".repeat(7000)
    );
    let steps = json!([
        { "send": [big], "read": 1 },
        { "send": [format!("\r\n{}", get("/b.txt", nginx.port))], "read": 1 },
    ]);
    let client = raw_client(nginx.port, &steps, 65536);
    let client_pid = client.pid();
    let mut pids = nginx.pids();
    pids.push(client_pid);
    let agent = Agent::json(&pids, &[]);
    let (responses, local) = raw_results(&client.finish(Duration::from_secs(30)));
    assert_eq!(responses, [(200, 10), (200, 20)], "nginx's answers");
    let py = python_peer(client_pid);
    let stderr = expect_exact_with_summary(
        agent,
        &[
            py.client("GET", "/a.txt", nginx.port)
                .status(200)
                .resp_body(10)
                .attr("tracer.truncated", true),
            nginx
                .peer()
                .server("GET", "/a.txt", nginx.port, Some(local))
                .status(200)
                .resp_body(10)
                .attr("tracer.truncated", true),
            py.client("GET", "/b.txt", nginx.port)
                .status(200)
                .resp_body(20)
                .no_attr("tracer.truncated"),
            nginx
                .peer()
                .server("GET", "/b.txt", nginx.port, Some(local))
                .status(200)
                .resp_body(20)
                .no_attr("tracer.truncated"),
        ],
    );
    assert!(
        stderr.contains("parse errors: none;"),
        "exit summary:\n{stderr}"
    );
}
