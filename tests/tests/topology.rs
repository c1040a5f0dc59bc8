//! Four hosts made of network namespaces, joined by veth pairs (one /30 per link):
//!
//! ```text
//!  A: curl ── B: nginx (reverse proxy) ── C: python backend ── D: python service
//!  .1    10.201.0.0/30    .2  .5    10.201.0.4/30   .6  .9   10.201.0.8/30   .10
//! ```
//!
//! The backend calls the service while serving. The agent, in the root namespace, sees all four
//! and must put the six spans in one trace: curl's client span the root, each server span the
//! child of the client span at the other end of its connection (`connection`: both ends are
//! traced on this kernel, their addresses mirror each other across the namespaces), each client
//! span the child of the server span its thread was serving (`thread`).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tracer_tests::{
    netns::Namespaces,
    peers::{parse_transfers, CURL_WRITE_OUT},
    pyapp::{PyApp, RELAY},
    trace::assert_chain,
    util::which,
    Agent, Expect, Gated, Nginx, Peer, TempDir,
};

const A: &str = "10.201.0.1";
const B_FRONT: &str = "10.201.0.2";
const B_BACK: &str = "10.201.0.5";
const C_FRONT: &str = "10.201.0.6";
const C_BACK: &str = "10.201.0.9";
const D: &str = "10.201.0.10";

fn ip(a: &str) -> IpAddr {
    a.parse().unwrap()
}

/// A server span of `peer` for `GET path` on `addr:port`, from a client at `client`.
fn server(peer: &Peer, path: &str, addr: &str, port: u16, client: &str) -> Expect {
    Expect::server(
        format!("server span of pid {} GET {path}", peer.pid),
        peer.pid,
    )
    .exe(peer.exe.as_deref().unwrap_or(""))
    .get(path)
    .server_addr(addr, port)
    .attr("client.address", client)
    .attr("network.peer.address", client)
    .status(200)
}

#[test]
fn curl_nginx_backend_service_across_namespaces() {
    // Declared first: dropped last, after every process inside the namespaces is killed.
    let ns = Namespaces::create(&["a", "b", "c", "d"]);
    ns.link("a", &format!("{A}/30"), "b", &format!("{B_FRONT}/30"));
    ns.link("b", &format!("{B_BACK}/30"), "c", &format!("{C_FRONT}/30"));
    ns.link("c", &format!("{C_BACK}/30"), "d", &format!("{D}/30"));

    let service = PyApp::start_in(
        Some(ns.exec_args("d")),
        "service (d)",
        RELAY,
        &["--bind", D],
    );
    let svc = format!("{D}:{}", service.port);
    let backend = PyApp::start_in(
        Some(ns.exec_args("c")),
        "backend (c)",
        RELAY,
        &["--bind", C_FRONT, "--downstream", &svc, "--prefix", "/svc"],
    );
    let www = TempDir::new("nginx-www");
    let nginx = Nginx::start_in(
        &ns,
        "b",
        ip(B_FRONT),
        www.path(),
        SocketAddr::new(ip(C_FRONT), backend.port),
    );
    let mut args = ns.exec_args("a");
    args.extend(
        [
            which("curl").display().to_string().as_str(),
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "30",
            "-w",
            CURL_WRITE_OUT,
            "-o",
            "/dev/null",
        ]
        .map(String::from),
    );
    args.push(nginx.url("/proxy/api"));
    let curl = Gated::spawn("curl (a)", &which("ip").display().to_string(), &args);
    let curl_pid = curl.pid();

    let mut pids = nginx.pids();
    pids.extend([curl_pid, backend.pid(), service.pid()]);
    let agent = Agent::json(&pids, &[]);
    let out = curl.finish(Duration::from_secs(40));
    let t = parse_transfers(&out);
    assert_eq!(
        (out.code(), t.first().map(|t| (t.code, t.size_download))),
        (Some(0), Some((200, "leaf /svc/api\n".len() as u64))),
        "{}\n--- nginx ---\n{}\n--- backend ---\n{}\n--- service ---\n{}",
        out.describe(),
        nginx.error_log(),
        backend.log(),
        service.log()
    );

    let nginx_port = nginx.port;
    let spans = agent.expect_exact(&[
        Peer::curl(curl_pid)
            .client_at(B_FRONT, "GET", "/proxy/api", nginx_port)
            .status(200)
            .top("tracer.link", "root"),
        server(&nginx.peer(), "/proxy/api", B_FRONT, nginx_port, A)
            .attr("client.port", t[0].local_port)
            .top("tracer.link", "connection"),
        nginx
            .peer()
            .client_at(C_FRONT, "GET", "/api", backend.port)
            .status(200)
            .top("tracer.link", "thread"),
        server(&backend.peer(), "/api", C_FRONT, backend.port, B_BACK)
            .top("tracer.link", "connection"),
        backend
            .peer()
            .client_at(D, "GET", "/svc/api", service.port)
            .status(200)
            .top("tracer.link", "thread"),
        server(&service.peer(), "/svc/api", D, service.port, C_BACK)
            .top("tracer.link", "connection"),
    ]);
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
        args.extend(
            [
                which("curl").display().to_string().as_str(),
                "-sS",
                "--noproxy",
                "*",
                "--max-time",
                "30",
                "--local-port",
                "40000",
                "-w",
                CURL_WRITE_OUT,
                "-o",
                "/dev/null",
            ]
            .map(String::from),
        );
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
        server(&server_x.peer(), "/x", lo, 8080, lo)
            .attr("client.port", 40000)
            .top("tracer.link", "connection"),
        Peer::curl(py)
            .client("GET", "/y", 8080)
            .status(200)
            .top("tracer.link", "root"),
        server(&server_y.peer(), "/y", lo, 8080, lo)
            .attr("client.port", 40000)
            .top("tracer.link", "connection"),
    ]);
    assert_chain(&spans[..2]);
    assert_chain(&spans[2..]);
}
