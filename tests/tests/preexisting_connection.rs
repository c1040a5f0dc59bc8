//! A connection opened (and used) before the agent starts: its next requests are spans like any
//! other. The client is the test process itself (a binary of its own, so no other test's traffic
//! is in it; its spans are also checked to come from this thread).

use tracer_tests::{gettid, Agent, Peer, PyHttpServer, RawClient, TempDir};

#[test]
fn connection_opened_before_the_agent() {
    let www = TempDir::new("www");
    www.file_of_size("before.txt", 11);
    www.file_of_size("after.txt", 2222);
    www.file_of_size("again.txt", 33);
    let py = PyHttpServer::start(www.path());
    let tid = gettid();

    let mut c = RawClient::connect(py.port);
    let local = c.local_port();
    c.send(RawClient::get_request("/before.txt", py.port, false).as_bytes());
    let r = c.read_response();
    assert_eq!((r.status, r.body.len()), (200, 11), "{}", r.head);

    let agent = Agent::json(&[py.pid(), std::process::id()], &[]);
    for (path, size) in [("/after.txt", 2222), ("/again.txt", 33)] {
        c.send(RawClient::get_request(path, py.port, false).as_bytes());
        let r = c.read_response();
        assert_eq!((r.status, r.body.len()), (200, size), "{}", r.head);
    }
    assert_eq!(c.local_port(), local);

    let client = Peer::me(tid);
    let server = py.peer();
    agent.expect_exact(&[
        client
            .client("GET", "/after.txt", py.port)
            .status(200)
            .req_body(0)
            .resp_body(2222),
        server
            .server("GET", "/after.txt", py.port, Some(local))
            .status(200)
            .req_body(0)
            .resp_body(2222),
        client
            .client("GET", "/again.txt", py.port)
            .status(200)
            .req_body(0)
            .resp_body(33),
        server
            .server("GET", "/again.txt", py.port, Some(local))
            .status(200)
            .req_body(0)
            .resp_body(33),
    ]);
    drop(c);
}
