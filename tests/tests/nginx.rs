//! curl against nginx (the Debian package, master + one worker, its own config): a static file,
//! nginx as a reverse proxy to python (four spans), and a chunked response through the proxy.

use tracer_tests::{
    peers::CHUNKED_PAYLOAD, Agent, Curl, Nginx, Peer, PyHttpServer, PyScript, TempDir,
};

fn pids(nginx: &Nginx, more: &[u32]) -> Vec<u32> {
    let mut v = nginx.pids();
    v.extend_from_slice(more);
    v
}

/// A static file: the worker's server span and curl's client span.
#[test]
fn static_file() {
    let www = TempDir::new("www");
    www.file_of_size("index.html", 777);
    let nginx = Nginx::start(www.path(), None);
    let curl = Curl::get(nginx.url("/index.html"));
    let curl_pid = curl.pid();
    let agent = Agent::json(&pids(&nginx, &[curl_pid]), &[]);
    let t = curl.run()[0];
    assert_eq!((t.code, t.size_download), (200, 777));
    agent.expect_exact(&[
        Peer::curl(curl_pid)
            .client("GET", "/index.html", nginx.port)
            .status(200)
            .req_body(0)
            .resp_body(777)
            .user_agent("curl/"),
        nginx
            .peer()
            .server("GET", "/index.html", nginx.port, Some(t.local_port))
            .status(200)
            .req_body(0)
            .resp_body(777)
            .user_agent("curl/"),
    ]);
}

/// curl -> nginx -> python: curl's client span, nginx's server span (`/proxy/data.bin`), nginx's
/// client span and python's server span (`/data.bin`).
#[test]
fn reverse_proxy_to_python() {
    let www = TempDir::new("www");
    www.file_of_size("data.bin", 20_000);
    let py = PyHttpServer::start(www.path());
    let nginx_www = TempDir::new("nginx-www");
    let nginx = Nginx::start(nginx_www.path(), Some(py.port));
    let curl = Curl::get(nginx.url("/proxy/data.bin"));
    let curl_pid = curl.pid();
    let agent = Agent::json(&pids(&nginx, &[curl_pid, py.pid()]), &[]);
    let t = curl.run()[0];
    assert_eq!(
        (t.code, t.size_download),
        (200, 20_000),
        "nginx error log:\n{}",
        nginx.error_log()
    );
    let listening = vec![nginx.port, py.port, t.local_port];
    agent.expect_exact(&[
        Peer::curl(curl_pid)
            .client("GET", "/proxy/data.bin", nginx.port)
            .status(200)
            .req_body(0)
            .resp_body(20_000),
        nginx
            .peer()
            .server("GET", "/proxy/data.bin", nginx.port, Some(t.local_port))
            .status(200)
            .req_body(0)
            .resp_body(20_000),
        nginx
            .peer()
            .client("GET", "/data.bin", py.port)
            .status(200)
            .req_body(0)
            .resp_body(20_000)
            .user_agent("curl/")
            .version("1.1"),
        py.peer()
            .server("GET", "/data.bin", py.port, None)
            .peer_port_not(listening)
            .status(200)
            .req_body(0)
            .resp_body(20_000)
            .user_agent("curl/"),
    ]);
}

/// curl -> nginx -> python, python answering with `Transfer-Encoding: chunked`; nginx, not knowing
/// the length, answers curl chunked too. The payload size is the response body size on all four
/// spans.
#[test]
fn chunked_through_proxy() {
    let py = PyScript::start();
    let nginx_www = TempDir::new("nginx-www");
    let nginx = Nginx::start(nginx_www.path(), Some(py.port));
    let curl = Curl::new(&["-D", "-"], &[nginx.url("/proxy/chunked")]);
    let curl_pid = curl.pid();
    let agent = Agent::json(&pids(&nginx, &[curl_pid, py.pid()]), &[]);
    let out = curl.output();
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let headers = out.stdout.to_ascii_lowercase();
    assert!(
        headers.contains("transfer-encoding: chunked"),
        "nginx did not answer chunked:\n{}",
        out.stdout
    );
    let t = tracer_tests::peers::parse_transfers(&out)[0];
    assert_eq!(
        (t.code, t.size_download),
        (200, CHUNKED_PAYLOAD),
        "{}",
        out.describe()
    );
    agent.expect_exact(&[
        Peer::curl(curl_pid)
            .client("GET", "/proxy/chunked", nginx.port)
            .status(200)
            .resp_body(CHUNKED_PAYLOAD),
        nginx
            .peer()
            .server("GET", "/proxy/chunked", nginx.port, Some(t.local_port))
            .status(200)
            .resp_body(CHUNKED_PAYLOAD),
        nginx
            .peer()
            .client("GET", "/chunked", py.port)
            .status(200)
            .resp_body(CHUNKED_PAYLOAD),
        py.peer()
            .server("GET", "/chunked", py.port, None)
            .status(200)
            .resp_body(CHUNKED_PAYLOAD),
    ]);
}
