//! curl against `python3 -m http.server` (HTTP/1.1): plain GETs, a 404, HEAD, 304, keep-alive,
//! the text output, `--count`.

use tracer_tests::{Agent, Curl, Peer, PyHttpServer, TempDir, SPAN_TIMEOUT};

/// GET of a file (200, body = file size), a 404, a HEAD (no body) and a conditional GET (304, no
/// body): each one curl, each a server span (python) and a client span (curl).
#[test]
fn get_404_head_304() {
    let www = TempDir::new("www");
    let file = www.file_of_size("hello.txt", 1234);
    let py = PyHttpServer::start(www.path());
    let get = Curl::get(py.url("/hello.txt"));
    let missing = Curl::get(py.url("/missing.txt"));
    let head = Curl::new(&["-I"], &[py.url("/hello.txt")]);
    let cond = Curl::new(&["-z", file.to_str().unwrap()], &[py.url("/hello.txt")]);
    let pids = [py.pid(), get.pid(), missing.pid(), head.pid(), cond.pid()];
    let (get_pid, missing_pid, head_pid, cond_pid) =
        (get.pid(), missing.pid(), head.pid(), cond.pid());

    let agent = Agent::json(&pids, &[]);
    let t_get = get.run()[0];
    let t_missing = missing.run()[0];
    let t_head = head.run()[0];
    let t_cond = cond.run()[0];
    assert_eq!((t_get.code, t_get.size_download), (200, 1234));
    assert_eq!(t_missing.code, 404);
    assert!(
        t_missing.size_download > 0,
        "python sends an HTML body with its 404"
    );
    assert_eq!((t_head.code, t_head.size_download), (200, 0));
    assert_eq!((t_cond.code, t_cond.size_download), (304, 0));

    let srv = py.peer();
    let p = py.port;
    let exchange =
        |pid: u32, t: &tracer_tests::Transfer, method: &str, path: &str, code: u16, body: u64| {
            [
                Peer::curl(pid)
                    .client(method, path, p)
                    .status(code)
                    .req_body(0)
                    .resp_body(body)
                    .user_agent("curl/")
                    .version("1.1"),
                srv.server(method, path, p, Some(t.local_port))
                    .status(code)
                    .req_body(0)
                    .resp_body(body)
                    .user_agent("curl/")
                    .version("1.1"),
            ]
        };
    let mut expected = Vec::new();
    expected.extend(exchange(get_pid, &t_get, "GET", "/hello.txt", 200, 1234));
    expected.extend(exchange(
        missing_pid,
        &t_missing,
        "GET",
        "/missing.txt",
        404,
        t_missing.size_download,
    ));
    expected.extend(exchange(head_pid, &t_head, "HEAD", "/hello.txt", 200, 0));
    expected.extend(exchange(cond_pid, &t_cond, "GET", "/hello.txt", 304, 0));
    agent.expect_exact(&expected);
}

/// One curl with three URLs on one connection (keep-alive): three server spans and three client
/// spans, all on the same client port; the middle body (100 kB) is far larger than what is
/// captured per syscall.
#[test]
fn keep_alive_one_curl_three_urls() {
    let www = TempDir::new("www");
    www.file_of_size("a.txt", 10);
    www.file_of_size("big.bin", 100_000);
    www.file_of_size("c.txt", 4096);
    let py = PyHttpServer::start(www.path());
    let urls = [py.url("/a.txt"), py.url("/big.bin"), py.url("/c.txt")];
    let curl = Curl::new(&[], &urls);
    let curl_pid = curl.pid();

    let agent = Agent::json(&[py.pid(), curl_pid], &[]);
    let t = curl.run();
    let ports: Vec<u16> = t.iter().map(|t| t.local_port).collect();
    assert!(
        ports.iter().all(|p| *p == ports[0]),
        "curl did not reuse its connection: local ports {ports:?}"
    );
    let port = ports[0];

    let srv = py.peer();
    let mut expected = Vec::new();
    for (path, size) in [("/a.txt", 10), ("/big.bin", 100_000), ("/c.txt", 4096)] {
        expected.push(
            Peer::curl(curl_pid)
                .client("GET", path, py.port)
                .status(200)
                .req_body(0)
                .resp_body(size),
        );
        expected.push(
            srv.server("GET", path, py.port, Some(port))
                .status(200)
                .req_body(0)
                .resp_body(size),
        );
    }
    let spans = agent.expect_exact(&expected);
    // In request order on each side.
    for side in 0..2 {
        let starts: Vec<u64> = (0..3).map(|i| spans[2 * i + side].start_ns()).collect();
        assert!(
            starts.windows(2).all(|w| w[0] <= w[1]),
            "spans out of request order: start times {starts:?}"
        );
    }
}

/// `--output text`: one readable line per span with service, pid, kind, method, path, status and
/// peer.
#[test]
fn text_output() {
    let www = TempDir::new("www");
    www.file_of_size("page.html", 321);
    let py = PyHttpServer::start(www.path());
    let curl = Curl::get(py.url("/page.html?user=alice"));
    let curl_pid = curl.pid();
    let agent = Agent::start("text", &[py.pid(), curl_pid], &[]);
    let t = curl.run()[0];
    agent.wait_lines(2, SPAN_TIMEOUT);
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    let lines = &stopped.lines;
    assert_eq!(
        lines.len(),
        2,
        "two lines expected (server and client):\n{}",
        lines.join("\n")
    );
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{}", lines.join("\n")))
    };
    let server = find(&format!("{}[{}]", py.exe.name, py.pid()));
    let client = find(&format!("curl[{curl_pid}]"));
    for (line, kind, peer) in [
        (server, "server", t.local_port),
        (client, "client", py.port),
    ] {
        for needle in ["GET", "/page.html", "200", &format!("127.0.0.1:{peer}")] {
            assert!(
                line.contains(needle),
                "{kind} line lacks {needle:?}: {line}"
            );
        }
        assert!(
            line.to_lowercase().contains(kind),
            "line lacks the kind {kind}: {line}"
        );
        assert!(
            !line.contains("alice"),
            "query values must be redacted by default: {line}"
        );
    }
}

/// `--count 2`: the agent exits by itself, cleanly, after two spans.
#[test]
fn count_stops_the_agent() {
    let www = TempDir::new("www");
    www.file_of_size("x.txt", 5);
    let py = PyHttpServer::start(www.path());
    let curl = Curl::get(py.url("/x.txt"));
    let curl_pid = curl.pid();
    let mut agent = Agent::json(&[py.pid(), curl_pid], &["--count", "2"]);
    curl.run();
    let status = agent.wait_exit(SPAN_TIMEOUT + std::time::Duration::from_secs(5));
    let stopped = agent.stop();
    assert!(
        status.is_some(),
        "the agent did not exit by itself after --count 2 spans\n{}",
        stopped.stderr
    );
    stopped.assert_clean_exit();
    stopped.assert_exact(&[
        Peer::curl(curl_pid)
            .client("GET", "/x.txt", py.port)
            .status(200)
            .resp_body(5),
        py.peer()
            .server("GET", "/x.txt", py.port, None)
            .status(200)
            .resp_body(5),
    ]);
}
