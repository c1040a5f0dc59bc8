//! Four hosts made of network namespaces (`tracer_tests::hosts`): curl, nginx as a reverse proxy,
//! a python backend and the python service it calls while serving. The agent, in the root namespace, sees all four
//! and must put the six spans in one trace: curl's client span the root, each server span the
//! child of the client span at the other end of its connection (`connection`: both ends are
//! traced on this kernel, their addresses mirror each other across the namespaces), each client
//! span the child of the server span its thread was serving (`thread`).

use std::time::Duration;

use tracer_tests::{
    hosts::Chain,
    netns::Namespaces,
    peers::{curl_command, parse_transfers},
    pyapp::{PyApp, RELAY},
    trace::assert_chain,
    util::which,
    Agent, Gated, Peer,
};

#[test]
fn curl_nginx_backend_service_across_namespaces() {
    let chain = Chain::start("10.201.0", &[]);
    let curl = Gated::spawn(
        "curl (a)",
        &which("ip").display().to_string(),
        &chain.curl_args("/proxy/api"),
    );
    let curl_pid = curl.pid();
    let agent = Agent::json(&chain.pids(&[curl_pid]), &[]);
    let out = curl.finish(Duration::from_secs(40));
    let expected = chain.expect_request(
        &out,
        curl_pid,
        "api",
        ["connection", "thread", "connection", "thread", "connection"],
    );
    let spans = agent.expect_exact(&expected);
    assert_chain(&spans);
}

/// Two hosts that use the same loopback addresses and ports at the same time: in each of
/// namespaces x and y, curl connects from 127.0.0.1:40000 to a server on 127.0.0.1:8080. The
/// connections have identical ends, but loopback traffic never leaves its namespace, so each
/// server span's parent is the curl of its own namespace, whatever the timing. Here x's server
/// reads its request only after y's curl connected and while y's curl waits for its (slow)
/// answer: pairing by addresses alone would make y's curl the parent of x's server span.
#[test]
fn same_loopback_ends_in_two_namespaces() {
    let ns = Namespaces::create(&["x", "y"]);
    let lo = "127.0.0.1";
    let server_x = PyApp::start_in(
        Some(ns.exec_args("x")),
        "server (x)",
        RELAY,
        &["--bind", lo, "--port", "8080", "--read-delay", "1"],
    );
    let server_y = PyApp::start_in(
        Some(ns.exec_args("y")),
        "server (y)",
        RELAY,
        &["--bind", lo, "--port", "8080", "--delay", "2"],
    );
    let curl = |label: &str, path: &str| {
        let mut args = ns.exec_args(label);
        args.extend(curl_command(&["--local-port", "40000", "-o", "/dev/null"]));
        args.push(format!("http://{lo}:8080{path}"));
        Gated::spawn(
            &format!("curl ({label})"),
            &which("ip").display().to_string(),
            &args,
        )
    };
    let mut curl_x = curl("x", "/x");
    let mut curl_y = curl("y", "/y");
    let (px, py) = (curl_x.pid(), curl_y.pid());
    let agent = Agent::json(&[px, py, server_x.pid(), server_y.pid()], &[]);
    curl_x.release();
    std::thread::sleep(Duration::from_millis(300));
    curl_y.release();
    for (c, server) in [(curl_x, &server_x), (curl_y, &server_y)] {
        let out = c.finish(Duration::from_secs(40));
        let t = parse_transfers(&out);
        assert_eq!(
            (out.code(), t.first().map(|t| (t.code, t.local_port))),
            (Some(0), Some((200, 40000))),
            "{}\n--- server ---\n{}",
            out.describe(),
            server.log()
        );
    }
    let spans = agent.expect_exact(&[
        Peer::curl(px)
            .client("GET", "/x", 8080)
            .status(200)
            .top("tracer.link", "root"),
        Chain::server(&server_x.peer(), "/x", lo, 8080, lo)
            .attr("client.port", 40000)
            .top("tracer.link", "connection"),
        Peer::curl(py)
            .client("GET", "/y", 8080)
            .status(200)
            .top("tracer.link", "root"),
        Chain::server(&server_y.peer(), "/y", lo, 8080, lo)
            .attr("client.port", 40000)
            .top("tracer.link", "connection"),
    ]);
    assert_chain(&spans[..2]);
    assert_chain(&spans[2..]);
}
