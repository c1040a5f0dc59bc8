//! IPv6: curl to python over [::1], and over IPv4 to a dual-stack (`::`) python whose accepted
//! socket is IPv6 with a v4-mapped peer.

use tracer_tests::{Agent, Curl, Expect, Peer, PyHttpServer, TempDir};

#[test]
fn ipv6_loopback() {
    let www = TempDir::new("www");
    www.file_of_size("six.txt", 606);
    let py = PyHttpServer::start_on(www.path(), "::1");
    let curl = Curl::get(py.url("/six.txt"));
    let curl_pid = curl.pid();
    let agent = Agent::json(&[py.pid(), curl_pid], &[]);
    let t = curl.run()[0];
    assert_eq!((t.code, t.size_download), (200, 606));
    agent.expect_exact(&[
        Peer::curl(curl_pid)
            .client_at("::1", "GET", "/six.txt", py.port)
            .status(200)
            .resp_body(606),
        py.peer()
            .server_at("::1", "GET", "/six.txt", py.port, Some(t.local_port))
            .status(200)
            .resp_body(606),
    ]);
}

/// The server's socket is AF_INET6 and its peer `::ffff:127.0.0.1`: the agent may report it as
/// that or as 127.0.0.1, but the port must be curl's.
#[test]
fn ipv4_client_to_dual_stack_server() {
    let www = TempDir::new("www");
    www.file_of_size("mapped.txt", 404);
    let py = PyHttpServer::start_on(www.path(), "::");
    let curl = Curl::get(py.url("/mapped.txt"));
    let curl_pid = curl.pid();
    let agent = Agent::json(&[py.pid(), curl_pid], &[]);
    let t = curl.run()[0];
    assert_eq!((t.code, t.size_download), (200, 404));
    let loopback_v4 = |key: &'static str| {
        move |s: &tracer_tests::Span| match s.attr_str(key) {
            Some("127.0.0.1" | "::ffff:127.0.0.1") => Ok(()),
            v => Err(format!(
                "{key}: want 127.0.0.1 or ::ffff:127.0.0.1, got {v:?}"
            )),
        }
    };
    let server = py.peer();
    let server_span = Expect::server(format!("server span of python {}", server.pid), server.pid)
        .get("/mapped.txt")
        .status(200)
        .resp_body(404)
        .exe(server.exe.as_deref().unwrap())
        .server_addr("127.0.0.1", py.port)
        .peer_port(t.local_port)
        .attr("client.port", t.local_port)
        .check(loopback_v4("network.peer.address"))
        .check(loopback_v4("client.address"));
    agent.expect_exact(&[
        Peer::curl(curl_pid)
            .client("GET", "/mapped.txt", py.port)
            .status(200)
            .resp_body(404),
        server_span,
    ]);
}
