//! Pipelining: the test process itself sends two requests to nginx in one write, before reading
//! either response. The agent traces nginx and the test process (a binary of its own, so no other
//! test's traffic is in it; its spans are also checked to come from this thread).

use tracer_tests::{gettid, Agent, Nginx, Peer, RawClient, TempDir};

#[test]
fn two_requests_in_one_write() {
    let www = TempDir::new("www");
    www.file_of_size("first.txt", 300);
    www.file_of_size("second.txt", 5000);
    let nginx = Nginx::start(www.path(), None);
    let me = std::process::id();
    let tid = gettid();
    let mut pids = nginx.pids();
    pids.push(me);
    let agent = Agent::json(&pids, &[]);

    let mut c = RawClient::connect(nginx.port);
    let local = c.local_port();
    let both = RawClient::get_request("/first.txt", nginx.port, false)
        + &RawClient::get_request("/second.txt", nginx.port, true);
    c.send(both.as_bytes());
    let r1 = c.read_response();
    let r2 = c.read_response();
    assert_eq!((r1.status, r1.body.len()), (200, 300), "{}", r1.head);
    assert_eq!((r2.status, r2.body.len()), (200, 5000), "{}", r2.head);
    drop(c);

    let client = Peer::me(tid);
    let spans = agent.expect_exact(&[
        nginx
            .peer()
            .server("GET", "/first.txt", nginx.port, Some(local))
            .status(200)
            .req_body(0)
            .resp_body(300)
            .no_attr("user_agent.original"),
        nginx
            .peer()
            .server("GET", "/second.txt", nginx.port, Some(local))
            .status(200)
            .req_body(0)
            .resp_body(5000),
        client
            .client("GET", "/first.txt", nginx.port)
            .status(200)
            .req_body(0)
            .resp_body(300),
        client
            .client("GET", "/second.txt", nginx.port)
            .status(200)
            .req_body(0)
            .resp_body(5000),
    ]);
    // Matched in order: the first response ends before the second does, on both sides.
    for (a, b) in [(0, 1), (2, 3)] {
        assert!(
            spans[a].end_ns() <= spans[b].end_ns(),
            "first ends after second:\n{}\n{}",
            spans[a],
            spans[b]
        );
        assert!(
            spans[a].start_ns() <= spans[b].start_ns(),
            "first starts after second:\n{}\n{}",
            spans[a],
            spans[b]
        );
    }
}
