//! curl against a small python HTTP/1.1 server (BaseHTTPRequestHandler): a chunked response,
//! POSTs with bodies (Content-Length, large, `Expect: 100-continue`), a request never answered.

use std::time::{Duration, Instant};

use tracer_tests::{
    peers::{upload_answer_len, CHUNKED_PAYLOAD},
    Agent, Curl, Peer, PyScript, TempDir, SPAN_TIMEOUT,
};

/// A chunked response (five chunks, each its own write): the response body size is the payload
/// size on both spans.
#[test]
fn chunked_response() {
    let py = PyScript::start();
    let curl = Curl::get(py.url("/chunked"));
    let curl_pid = curl.pid();
    let agent = Agent::json(&[py.pid(), curl_pid], &[]);
    let t = curl.run()[0];
    assert_eq!((t.code, t.size_download), (200, CHUNKED_PAYLOAD));
    agent.expect_exact(&[
        Peer::curl(curl_pid)
            .client("GET", "/chunked", py.port)
            .status(200)
            .req_body(0)
            .resp_body(CHUNKED_PAYLOAD),
        py.peer()
            .server("GET", "/chunked", py.port, Some(t.local_port))
            .status(200)
            .req_body(0)
            .resp_body(CHUNKED_PAYLOAD),
    ]);
}

/// POSTs with `--data-binary @file`: small, large (300 kB: far more than captured), and one with
/// `Expect: 100-continue` (a 1xx before the final response). The request body size is on both
/// spans; the server runs with `OTEL_SERVICE_NAME`, which becomes its service name.
#[test]
fn post_with_body() {
    let dir = TempDir::new("post");
    let py = PyScript::start_with_env(&[("OTEL_SERVICE_NAME", "upload-svc")]);
    let cases = [
        ("small", 1234u64, false),
        ("large", 300_000, false),
        ("continue", 5000, true),
    ];
    let mut curls = Vec::new();
    for (name, size, expect_continue) in cases {
        let file = dir.file_of_size(&format!("{name}.bin"), size as usize);
        let data = format!("@{}", file.display());
        let mut opts = vec![
            "--data-binary",
            data.as_str(),
            "-H",
            "Content-Type: application/octet-stream",
        ];
        if expect_continue {
            opts.extend(["-H", "Expect: 100-continue"]);
        }
        curls.push(Curl::new(&opts, &[py.url(&format!("/upload?name={name}"))]));
    }
    let mut pids: Vec<u32> = curls.iter().map(Curl::pid).collect();
    pids.push(py.pid());
    let agent = Agent::json(&pids, &[]);

    let server = py.peer().with_service("upload-svc");
    let mut expected = Vec::new();
    for ((_, size, _), curl) in cases.into_iter().zip(curls) {
        let pid = curl.pid();
        let t = curl.run()[0];
        let answer = upload_answer_len(size);
        assert_eq!(
            (t.code, t.size_upload, t.size_download),
            (200, size, answer)
        );
        expected.push(
            Peer::curl(pid)
                .client("POST", "/upload", py.port)
                .status(200)
                .req_body(size)
                .resp_body(answer)
                .attr("url.query", "name=REDACTED"),
        );
        expected.push(
            server
                .server("POST", "/upload", py.port, Some(t.local_port))
                .status(200)
                .req_body(size)
                .resp_body(answer),
        );
    }
    agent.expect_exact(&expected);
}

/// A request the server reads and never answers: with `--request-timeout 2` both spans come out
/// (while curl is still waiting) with an error status and no status code.
#[test]
fn request_without_response() {
    let py = PyScript::start();
    let mut curl = Curl::get(py.url("/hang"));
    let curl_pid = curl.pid();
    let agent = Agent::json(&[py.pid(), curl_pid], &["--request-timeout", "2"]);
    let sent = Instant::now();
    curl.release();
    let got = agent.try_wait_for(2, SPAN_TIMEOUT, |_| true);
    let waited = sent.elapsed();
    let curl_running = curl.gated_mut().proc_mut().is_running();
    drop(curl);
    if let Err(e) = got {
        panic!("no spans for the unanswered request within {SPAN_TIMEOUT:?} (--request-timeout 2): {e}");
    }
    assert!(
        curl_running,
        "curl ended before the spans came out: they must come from the timeout, not the close"
    );
    assert!(
        waited >= Duration::from_millis(1500),
        "spans came out after {waited:?}, before the 2 s request timeout"
    );
    agent.expect_exact(&[
        Peer::curl(curl_pid)
            .client("GET", "/hang", py.port)
            .no_response()
            .req_body(0),
        py.peer()
            .server("GET", "/hang", py.port, None)
            .no_response()
            .req_body(0),
    ]);
}

/// Responses without a length: ended by the close (`Connection: close`, no Content-Length), a 204
/// (no body), and a response head written in many small writes.
#[test]
fn close_delimited_204_and_split_response_head() {
    let py = PyScript::start();
    let cases = [
        ("/close-delimited", 200u16, 1500u64),
        ("/nocontent", 204, 0),
        ("/split", 200, 10),
    ];
    let curls: Vec<Curl> = cases
        .iter()
        .map(|(path, _, _)| Curl::get(py.url(path)))
        .collect();
    let mut pids: Vec<u32> = curls.iter().map(Curl::pid).collect();
    pids.push(py.pid());
    let agent = Agent::json(&pids, &[]);
    let mut expected = Vec::new();
    for ((path, code, size), curl) in cases.into_iter().zip(curls) {
        let pid = curl.pid();
        let t = curl.run()[0];
        assert_eq!((t.code, t.size_download), (code, size), "{path}");
        expected.push(
            Peer::curl(pid)
                .client("GET", path, py.port)
                .status(code)
                .req_body(0)
                .resp_body(size),
        );
        expected.push(
            py.peer()
                .server("GET", path, py.port, Some(t.local_port))
                .status(code)
                .req_body(0)
                .resp_body(size),
        );
    }
    agent.expect_exact(&expected);
}

/// A request head written in many small writes by a python client: the first `first` bytes in
/// one write, the rest 7 bytes at a time, 2 ms apart.
fn split_request_head(first: usize) {
    let py = PyScript::start();
    let args: Vec<String> = vec![
        "-c".into(),
        tracer_tests::peers::SPLIT_CLIENT.into(),
        py.port.to_string(),
        "/echo?x=1".into(),
        first.to_string(),
    ];
    let client =
        tracer_tests::Gated::spawn("python split client", &tracer_tests::peers::python(), &args);
    let client_pid = client.pid();
    let agent = Agent::json(&[py.pid(), client_pid], &[]);
    let out = client.finish(Duration::from_secs(30));
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let f: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(&f[..4], ["status", "200", "len", "5"], "{}", out.describe());
    let local: u16 = f[5].parse().unwrap();
    let client = Peer::new(client_pid, &py.exe.name, Some(&py.exe.path));
    agent.expect_exact(&[
        client
            .client("GET", "/echo", py.port)
            .status(200)
            .req_body(0)
            .resp_body(5)
            .attr("user_agent.original", "split-client/1.0")
            .attr("url.query", "x=REDACTED"),
        py.peer()
            .server("GET", "/echo", py.port, Some(local))
            .status(200)
            .req_body(0)
            .resp_body(5)
            .attr("user_agent.original", "split-client/1.0"),
    ]);
}

/// The request line whole in the first write, the headers after it in 7-byte writes.
#[test]
fn request_headers_in_small_writes() {
    split_request_head("GET /echo?x=1 HTTP/1.1\r\n".len());
}

/// The whole request head in 7-byte writes from its first byte ("GET /ec", "ho?x=1 ", ...).
#[test]
fn request_head_in_small_writes_from_the_first_byte() {
    split_request_head(7);
}

/// A first write of one byte ("G"): the connection is still recognised, from its next bytes.
#[test]
fn first_write_of_one_byte() {
    split_request_head(1);
}

/// A first write of the method without its space ("GET").
#[test]
fn first_write_of_the_method_alone() {
    split_request_head(3);
}
