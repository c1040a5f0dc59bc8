//! Four hosts made of network namespaces, joined by veth pairs (one /30 per link), for the tests
//! of trace linking across hosts:
//!
//! ```text
//!  a: curl ── b: nginx (reverse proxy) ── c: python backend ── d: python service
//!  .1    P.0/30    .2  .5    P.4/30   .6  .9   P.8/30   .10
//! ```
//!
//! The backend (`relay.py`) calls the service while serving `GET /x` (as `GET /svc/x`); nginx
//! proxies `/proxy/x` to the backend's `/x`.

use std::net::{IpAddr, SocketAddr};

use crate::{
    netns::Namespaces,
    peers::{curl_command, parse_transfers},
    process::Output,
    pyapp::{PyApp, RELAY},
    span::{Expect, Peer},
    Nginx, TempDir,
};

/// The hosts' addresses.
#[derive(Debug, Clone)]
pub struct Addrs {
    pub a: String,
    pub b_front: String,
    pub b_back: String,
    pub c_front: String,
    pub c_back: String,
    pub d: String,
}

/// The four hosts and their servers. Fields drop in order: the servers, then the namespaces.
pub struct Chain {
    pub nginx: Nginx,
    pub backend: PyApp,
    pub service: PyApp,
    _www: TempDir,
    pub addrs: Addrs,
    pub ns: Namespaces,
}

fn ip(a: &str) -> IpAddr {
    a.parse().unwrap()
}

impl Chain {
    /// The hosts on the /24 `prefix` (e.g. `10.201.0`), the python apps with `app_args` added.
    pub fn start(prefix: &str, app_args: &[&str]) -> Chain {
        let at = |n: u8| format!("{prefix}.{n}");
        let addrs = Addrs {
            a: at(1),
            b_front: at(2),
            b_back: at(5),
            c_front: at(6),
            c_back: at(9),
            d: at(10),
        };
        let ns = Namespaces::create(&["a", "b", "c", "d"]);
        ns.link(
            "a",
            &format!("{}/30", addrs.a),
            "b",
            &format!("{}/30", addrs.b_front),
        );
        ns.link(
            "b",
            &format!("{}/30", addrs.b_back),
            "c",
            &format!("{}/30", addrs.c_front),
        );
        ns.link(
            "c",
            &format!("{}/30", addrs.c_back),
            "d",
            &format!("{}/30", addrs.d),
        );

        let mut args = vec!["--bind", addrs.d.as_str()];
        args.extend(app_args);
        let service = PyApp::start_in(Some(ns.exec_args("d")), "service (d)", RELAY, &args);
        let svc = format!("{}:{}", addrs.d, service.port);
        let mut args = vec![
            "--bind",
            addrs.c_front.as_str(),
            "--downstream",
            &svc,
            "--prefix",
            "/svc",
        ];
        args.extend(app_args);
        let backend = PyApp::start_in(Some(ns.exec_args("c")), "backend (c)", RELAY, &args);
        let www = TempDir::new("nginx-www");
        let nginx = Nginx::start_in(
            &ns,
            "b",
            ip(&addrs.b_front),
            www.path(),
            SocketAddr::new(ip(&addrs.c_front), backend.port),
        );
        Chain {
            nginx,
            backend,
            service,
            _www: www,
            addrs,
            ns,
        }
    }

    /// The command line (for `ip`) of curl in `a` getting nginx's `path`, printing the harness's
    /// transfer line.
    pub fn curl_args(&self, path: &str) -> Vec<String> {
        let mut args = self.ns.exec_args("a");
        args.extend(curl_command(&["-o", "/dev/null"]));
        args.push(self.nginx.url(path));
        args
    }

    /// Every traced server process, and `more`.
    pub fn pids(&self, more: &[u32]) -> Vec<u32> {
        let mut pids = self.nginx.pids();
        pids.extend([self.backend.pid(), self.service.pid()]);
        pids.extend(more);
        pids
    }

    /// Check curl's `GET /proxy/{x}` went through (the service's answer came back), and give
    /// the expected spans of the whole chain: curl's (a root) and the five behind it, linked as
    /// `links` says (nginx server, nginx client, backend server, backend client, service server).
    pub fn expect_request(
        &self,
        out: &Output,
        curl_pid: u32,
        x: &str,
        links: [&str; 5],
    ) -> Vec<Expect> {
        let t = parse_transfers(out);
        assert_eq!(
            (out.code(), t.first().map(|t| (t.code, t.size_download))),
            (
                Some(0),
                Some((200, format!("leaf /svc/{x}\n").len() as u64))
            ),
            "{}\n--- nginx ---\n{}\n--- backend ---\n{}\n--- service ---\n{}",
            out.describe(),
            self.nginx.error_log(),
            self.backend.log(),
            self.service.log()
        );
        let mut expected = vec![Peer::curl(curl_pid)
            .client_at(
                &self.addrs.b_front,
                "GET",
                &format!("/proxy/{x}"),
                self.nginx.port,
            )
            .status(200)
            .top("tracer.link", "root")];
        for (k, (e, link)) in self.spans_behind(x).into_iter().zip(links).enumerate() {
            let e = e.top("tracer.link", link);
            expected.push(if k == 0 {
                e.attr("client.port", t[0].local_port)
            } else {
                e
            });
        }
        expected
    }

    /// The server span of `peer` for `GET path` on `addr:port`, from a client at `client`.
    pub fn server(peer: &Peer, path: &str, addr: &str, port: u16, client: &str) -> Expect {
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

    /// The five spans behind curl's `GET /proxy/{x}` (nginx server and client, backend server and
    /// client, service server), without `tracer.link`.
    pub fn spans_behind(&self, x: &str) -> Vec<Expect> {
        let a = &self.addrs;
        let (nginx, backend, service) =
            (self.nginx.peer(), self.backend.peer(), self.service.peer());
        vec![
            Self::server(
                &nginx,
                &format!("/proxy/{x}"),
                &a.b_front,
                self.nginx.port,
                &a.a,
            ),
            nginx
                .client_at(&a.c_front, "GET", &format!("/{x}"), self.backend.port)
                .status(200),
            Self::server(
                &backend,
                &format!("/{x}"),
                &a.c_front,
                self.backend.port,
                &a.b_back,
            ),
            backend
                .client_at(&a.d, "GET", &format!("/svc/{x}"), self.service.port)
                .status(200),
            Self::server(
                &service,
                &format!("/svc/{x}"),
                &a.d,
                self.service.port,
                &a.c_back,
            ),
        ]
    }
}
