//! What the scenarios (`scenario.sh`) must produce: the spans of each agent run, and the checks
//! the script made itself.

use serde::Deserialize;

/// A span as `tracer --output json` prints it (the fields checked here).
#[derive(Debug, Deserialize)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub kind: String,
    pub name: String,
    #[serde(rename = "tracer.link")]
    pub link: String,
    pub attributes: Attributes,
    pub resource: Resource,
}

#[derive(Debug, Deserialize)]
pub struct Attributes {
    #[serde(rename = "http.request.method")]
    pub method: Option<String>,
    #[serde(rename = "url.path")]
    pub path: Option<String>,
    #[serde(rename = "http.response.status_code")]
    pub status: Option<u64>,
    #[serde(rename = "http.response.body.size")]
    pub response_size: Option<u64>,
    #[serde(rename = "network.peer.address")]
    pub peer_address: Option<String>,
    #[serde(rename = "network.peer.port")]
    pub peer_port: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct Resource {
    #[serde(rename = "process.executable.name")]
    pub exe: Option<String>,
}

/// Port nginx listens on in the scenarios.
pub const PORT: u64 = 8080;

/// One HTTP exchange between a busybox client (nc or wget) and nginx: a client span and a
/// server span, the server's the child of the client's.
pub struct Exchange {
    pub path: &'static str,
    pub status: u64,
    /// Response body size, when the scenario fixes it.
    pub size: Option<u64>,
    /// The server's address as the client used it (the client's address as the server sees it).
    pub addr: &'static str,
    /// How the agent links the server span to the client span (`tracer.link`); `root` when it
    /// does not (both spans are roots).
    pub link: &'static str,
}

const fn get(path: &'static str, size: u64, addr: &'static str, link: &'static str) -> Exchange {
    Exchange {
        path,
        status: 200,
        size: Some(size),
        addr,
        link,
    }
}

/// An agent run of the scenario script and the exchanges it must report, nothing else.
pub struct Run {
    pub name: &'static str,
    pub exchanges: &'static [Exchange],
    /// What the agent says when the kernel cannot run part of this run, and how the server
    /// spans are linked then.
    pub degraded: Option<Degraded>,
}

pub struct Degraded {
    pub says: &'static str,
    pub link: &'static str,
}

pub const RUNS: &[Run] = &[
    Run {
        name: "plain",
        exchanges: &[
            // /pre/before.txt went on the connection before the agent started: no span. The
            // agent saw neither end open, so it does not link the two.
            get("/pre/after.txt", 2222, "127.0.0.1", "root"),
            get("/pre/again.txt", 33, "127.0.0.1", "root"),
            get("/keep/1.txt", 100, "127.0.0.1", "connection"),
            get("/keep/2.txt", 4000, "127.0.0.1", "connection"),
            get("/pipe/1.txt", 300, "127.0.0.1", "connection"),
            get("/pipe/2.txt", 5000, "127.0.0.1", "connection"),
            get("/wget/v4.txt", 444, "127.0.0.1", "connection"),
            get("/wget/v6.txt", 666, "::1", "connection"),
            Exchange {
                path: "/wget/missing.txt",
                status: 404,
                size: None,
                addr: "127.0.0.1",
                link: "connection",
            },
        ],
        degraded: None,
    },
    Run {
        name: "inject",
        exchanges: &[get("/inject/a.txt", 77, "127.0.0.1", "injected")],
        // A kernel that refuses an injection program: the agent traces without injection.
        degraded: Some(Degraded {
            says: "context injection is not available on this kernel",
            link: "connection",
        }),
    },
];

/// Differences between span `s` and what side `kind` of exchange `x` must look like.
fn side(s: &Span, x: &Exchange, kind: &str) -> Vec<String> {
    let mut e = Vec::new();
    let a = &s.attributes;
    let mut want = |what: &str, ok: bool, got: String| {
        if !ok {
            e.push(format!("{kind} {what}: got {got}"));
        }
    };
    want(
        "method GET",
        a.method.as_deref() == Some("GET"),
        format!("{:?}", a.method),
    );
    want(
        &format!("name \"GET {}\"", x.path),
        s.name == format!("GET {}", x.path),
        format!("{:?}", s.name),
    );
    want(
        &format!("status {}", x.status),
        a.status == Some(x.status),
        format!("{:?}", a.status),
    );
    if let Some(size) = x.size {
        want(
            &format!("response size {size}"),
            a.response_size == Some(size),
            format!("{:?}", a.response_size),
        );
    }
    want(
        &format!("peer address {}", x.addr),
        a.peer_address.as_deref() == Some(x.addr),
        format!("{:?}", a.peer_address),
    );
    // A client gone before the agent looked it up is known by its process name (the applet's).
    let exes: &[&str] = if kind == "server" {
        &["nginx"]
    } else {
        &["busybox", "nc", "wget"]
    };
    want(
        &format!("executable {}", exes.join(" or ")),
        s.resource.exe.as_deref().is_some_and(|e| exes.contains(&e)),
        format!("{:?}", s.resource.exe),
    );
    // The client's peer is nginx's port; the server's peer is the client's ephemeral port.
    let port_ok = match (kind, a.peer_port) {
        ("client", Some(p)) => p == PORT,
        (_, Some(p)) => p != PORT && p != 0,
        _ => false,
    };
    want(
        if kind == "client" {
            "peer port 8080"
        } else {
            "peer port (ephemeral)"
        },
        port_ok,
        format!("{:?}", a.peer_port),
    );
    e
}

/// Check exchange `x` among `spans`: one client and one server span, linked by `link`.
pub fn exchange(spans: &[Span], x: &Exchange, link: &str) -> Result<(), String> {
    let of = |kind: &str| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.kind == kind && s.attributes.path.as_deref() == Some(x.path))
            .collect()
    };
    let (clients, servers) = (of("client"), of("server"));
    let (client, server) = match (clients.as_slice(), servers.as_slice()) {
        ([c], [s]) => (*c, *s),
        (c, s) => {
            return Err(format!(
                "want one client and one server span, got {} and {}",
                c.len(),
                s.len()
            ))
        }
    };
    let mut e = side(client, x, "client");
    e.extend(side(server, x, "server"));
    if link == "root" {
        if server.parent_span_id.is_some() || client.parent_span_id.is_some() {
            e.push("want two unlinked spans, one has a parent".into());
        }
    } else if server.trace_id != client.trace_id
        || server.parent_span_id.as_deref() != Some(client.span_id.as_str())
    {
        e.push(format!(
            "the server span (trace {}, parent {:?}) is not the client span's child (trace {}, span {})",
            server.trace_id, server.parent_span_id, client.trace_id, client.span_id
        ));
    }
    if server.link != link {
        e.push(format!(
            "server span linked by {:?}, want {link:?}",
            server.link
        ));
    }
    if e.is_empty() {
        Ok(())
    } else {
        Err(e.join("; "))
    }
}

/// Spans of `spans` that belong to no exchange of `run`.
pub fn unexpected<'a>(spans: &'a [Span], run: &Run) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| {
            !run.exchanges
                .iter()
                .any(|x| s.attributes.path.as_deref() == Some(x.path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(kind: &str, path: &str, peer_port: u64, span_id: &str, parent: Option<&str>) -> Span {
        let exe = if kind == "server" { "nginx" } else { "busybox" };
        serde_json::from_value(serde_json::json!({
            "trace_id": "t1", "span_id": span_id, "parent_span_id": parent,
            "kind": kind, "name": format!("GET {path}"), "tracer.link": if kind == "server" { "connection" } else { "root" },
            "attributes": {
                "http.request.method": "GET", "url.path": path, "http.response.status_code": 200,
                "http.response.body.size": 100, "network.peer.address": "127.0.0.1",
                "network.peer.port": peer_port,
            },
            "resource": { "process.executable.name": exe },
        }))
        .unwrap()
    }

    const X: Exchange = get("/keep/1.txt", 100, "127.0.0.1", "connection");

    #[test]
    fn a_linked_pair_passes() {
        let spans = [
            span("client", "/keep/1.txt", 8080, "c1", None),
            span("server", "/keep/1.txt", 40000, "s1", Some("c1")),
        ];
        assert_eq!(exchange(&spans, &X, X.link), Ok(()));
    }

    #[test]
    fn wrong_port_link_or_count_fails() {
        let bad_port = [
            span("client", "/keep/1.txt", 8080, "c1", None),
            span("server", "/keep/1.txt", 8080, "s1", Some("c1")),
        ];
        assert!(exchange(&bad_port, &X, X.link)
            .unwrap_err()
            .contains("peer port"));
        let unlinked = [
            span("client", "/keep/1.txt", 8080, "c1", None),
            span("server", "/keep/1.txt", 40000, "s1", None),
        ];
        assert!(exchange(&unlinked, &X, X.link)
            .unwrap_err()
            .contains("child"));
        let missing = [span("client", "/keep/1.txt", 8080, "c1", None)];
        assert!(exchange(&missing, &X, X.link)
            .unwrap_err()
            .contains("got 1 and 0"));
    }
}
