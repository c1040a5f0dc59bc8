//! Spans as the agent prints them with `--output json`, and exact-set assertions on them.

use std::fmt;

use serde_json::Value;

/// One span: one JSON object of `tracer --output json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Span(pub Value);

static NULL: Value = Value::Null;

impl Span {
    pub fn get(&self, key: &str) -> &Value {
        self.0.get(key).unwrap_or(&NULL)
    }
    pub fn name(&self) -> &str {
        self.get("name").as_str().unwrap_or("")
    }
    pub fn kind(&self) -> &str {
        self.get("kind").as_str().unwrap_or("")
    }
    pub fn is_server(&self) -> bool {
        self.kind() == "server"
    }
    pub fn is_client(&self) -> bool {
        self.kind() == "client"
    }
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.get("attributes").get(key)
    }
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(Value::as_str)
    }
    pub fn attr_u64(&self, key: &str) -> Option<u64> {
        self.attr(key).and_then(Value::as_u64)
    }
    pub fn resource(&self, key: &str) -> Option<&Value> {
        self.get("resource").get(key)
    }
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        self.resource(key).and_then(Value::as_str)
    }
    pub fn pid(&self) -> Option<u32> {
        self.resource("process.pid")
            .and_then(Value::as_u64)
            .map(|p| p as u32)
    }
    pub fn tid(&self) -> Option<u64> {
        self.get("thread.id").as_u64()
    }
    pub fn method(&self) -> Option<&str> {
        self.attr_str("http.request.method")
    }
    pub fn path(&self) -> Option<&str> {
        self.attr_str("url.path")
    }
    pub fn status_code(&self) -> Option<u64> {
        self.attr_u64("http.response.status_code")
    }
    pub fn peer_port(&self) -> Option<u16> {
        self.attr_u64("network.peer.port").map(|p| p as u16)
    }
    pub fn peer_address(&self) -> Option<&str> {
        self.attr_str("network.peer.address")
    }
    /// `"unset"` or `"error"` (the OpenTelemetry span status code).
    pub fn status(&self) -> &str {
        self.get("status")
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn status_message(&self) -> Option<&str> {
        self.get("status").get("message").and_then(Value::as_str)
    }
    pub fn start_ns(&self) -> u64 {
        self.get("start_time_unix_nano").as_u64().unwrap_or(0)
    }
    pub fn end_ns(&self) -> u64 {
        self.get("end_time_unix_nano").as_u64().unwrap_or(0)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

/// What every span must satisfy whatever the test: ids, kind, name, times within `window`
/// (unix ns, the test's own start and end, with some slack), status, the attributes every HTTP
/// exchange or database operation has, and the process resource.
pub fn well_formed(s: &Span, window: (u64, u64)) -> Vec<String> {
    let mut e = Vec::new();
    let trace = s.get("trace_id").as_str().unwrap_or("");
    if !is_hex(trace, 32) {
        e.push(format!("trace_id {trace:?} is not 32 hex digits"));
    }
    let span = s.get("span_id").as_str().unwrap_or("");
    if !is_hex(span, 16) {
        e.push(format!("span_id {span:?} is not 16 hex digits"));
    }
    if !s.is_server() && !s.is_client() {
        e.push(format!(
            "kind {:?} is neither server nor client",
            s.get("kind")
        ));
    }
    if s.attr_str("db.system.name").is_some() {
        db_well_formed(s, &mut e);
    } else {
        http_well_formed(s, &mut e);
    }
    let (start, end) = (s.start_ns(), s.end_ns());
    if start == 0 || end < start {
        e.push(format!("start {start} / end {end} out of order"));
    }
    if s.get("duration_ns").as_u64() != Some(end.saturating_sub(start)) {
        e.push(format!(
            "duration_ns {:?} is not end - start = {}",
            s.get("duration_ns"),
            end.saturating_sub(start)
        ));
    }
    if start < window.0 || end > window.1 {
        e.push(format!(
            "times [{start}, {end}] are outside the test's run [{}, {}]",
            window.0, window.1
        ));
    }
    match s.status() {
        "unset" => {}
        "error" => {
            if s.status_message().is_none_or(str::is_empty) {
                e.push("error status without a message".into());
            }
            if s.attr_str("error.type").is_none_or(str::is_empty) {
                e.push("error status without error.type".into());
            }
        }
        other => e.push(format!("status code {other:?} is neither unset nor error")),
    }
    if s.tid().is_none() {
        e.push("no thread.id".into());
    }
    if s.peer_address().is_none() || s.peer_port().is_none_or(|p| p == 0) {
        e.push("no network.peer.address / network.peer.port".into());
    }
    if s.attr_u64("server.port").is_none_or(|p| p == 0) || s.attr_str("server.address").is_none() {
        e.push("no server.address / server.port".into());
    }
    if s.pid().is_none() {
        e.push("no resource process.pid".into());
    }
    for k in ["service.name", "process.executable.name"] {
        if s.resource_str(k).is_none_or(str::is_empty) {
            e.push(format!("no resource {k}"));
        }
    }
    e
}

/// A database span: named after its operation, with the query text.
fn db_well_formed(s: &Span, e: &mut Vec<String>) {
    match s.attr_str("db.operation.name") {
        Some(op) if !op.is_empty() => {
            if s.name() != op {
                e.push(format!(
                    "name {:?} is not db.operation.name {op:?}",
                    s.name()
                ));
            }
            if !s
                .attr_str("db.query.text")
                .is_some_and(|q| q.starts_with(op))
            {
                e.push(format!(
                    "db.query.text {:?} does not start with {op:?}",
                    s.attr("db.query.text")
                ));
            }
        }
        _ => e.push("no db.operation.name".into()),
    }
    if s.attr("http.request.method").is_some() {
        e.push("a database span with HTTP attributes".into());
    }
}

/// An HTTP span: named `METHOD path`, with its protocol version and body sizes.
fn http_well_formed(s: &Span, e: &mut Vec<String>) {
    match (s.method(), s.path()) {
        (Some(m), Some(p)) => {
            if s.name() != format!("{m} {p}") {
                e.push(format!("name {:?} is not \"{m} {p}\"", s.name()));
            }
            if !p.starts_with('/') {
                e.push(format!("url.path {p:?} does not start with /"));
            }
        }
        _ => e.push("no http.request.method or url.path".into()),
    }
    match s.attr_str("network.protocol.version") {
        Some("1.0" | "1.1") => {}
        v => e.push(format!("network.protocol.version {v:?} is not 1.0 or 1.1")),
    }
    if s.attr_u64("http.request.body.size").is_none() {
        e.push("no http.request.body.size".into());
    }
    if s.status_code().is_some() && s.attr_u64("http.response.body.size").is_none() {
        e.push("a response but no http.response.body.size".into());
    }
}

type Check = Box<dyn Fn(&Span) -> Result<(), String> + Send + Sync>;

/// The description of one span a test expects; each builder call adds a check.
pub struct Expect {
    pub label: String,
    checks: Vec<Check>,
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_string(), |v| v.to_string())
}

impl Expect {
    fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            checks: Vec::new(),
        }
    }

    /// A server span of process `pid`.
    pub fn server(label: impl Into<String>, pid: u32) -> Self {
        Self::new(label).top("kind", "server").pid(pid)
    }

    /// A server span of a process forked by `parent` (its pid unknown to the test).
    pub fn server_in_child_of(label: impl Into<String>, parent: u32) -> Self {
        Self::new(label)
            .top("kind", "server")
            .check(move |s| match s.pid() {
                Some(p) if p != parent => Ok(()),
                p => Err(format!("process.pid: want a child of {parent}, got {p:?}")),
            })
    }

    /// A client span of process `pid`.
    pub fn client(label: impl Into<String>, pid: u32) -> Self {
        Self::new(label).top("kind", "client").pid(pid)
    }

    pub fn check(
        mut self,
        f: impl Fn(&Span) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.checks.push(Box::new(f));
        self
    }

    /// A top-level field equals `v`.
    pub fn top(self, key: &'static str, v: impl Into<Value>) -> Self {
        let v = v.into();
        self.check(move |s| {
            if s.0.get(key) == Some(&v) {
                Ok(())
            } else {
                Err(format!("{key}: want {v}, got {}", show(s.0.get(key))))
            }
        })
    }

    /// An attribute equals `v`.
    pub fn attr(self, key: &'static str, v: impl Into<Value>) -> Self {
        let v = v.into();
        self.check(move |s| {
            if s.attr(key) == Some(&v) {
                Ok(())
            } else {
                Err(format!("{key}: want {v}, got {}", show(s.attr(key))))
            }
        })
    }

    /// An attribute is absent.
    pub fn no_attr(self, key: &'static str) -> Self {
        self.check(move |s| match s.attr(key) {
            None => Ok(()),
            Some(v) => Err(format!("{key}: want absent, got {v}")),
        })
    }

    /// A resource attribute equals `v`.
    pub fn resource(self, key: &'static str, v: impl Into<Value>) -> Self {
        let v = v.into();
        self.check(move |s| {
            if s.resource(key) == Some(&v) {
                Ok(())
            } else {
                Err(format!(
                    "resource {key}: want {v}, got {}",
                    show(s.resource(key))
                ))
            }
        })
    }

    pub fn pid(self, pid: u32) -> Self {
        self.resource("process.pid", pid)
    }

    pub fn tid(self, tid: u64) -> Self {
        self.top("thread.id", tid)
    }

    /// Method, path and the span name `METHOD /path`.
    pub fn request(self, method: &str, path: &str) -> Self {
        self.attr("http.request.method", method)
            .attr("url.path", path)
            .top("name", format!("{method} {path}"))
    }

    pub fn get(self, path: &str) -> Self {
        self.request("GET", path)
    }

    /// The response status, and the span status that follows from it: error for 5xx on a server
    /// span and for 4xx/5xx on a client span, else unset.
    pub fn status(self, code: u16) -> Self {
        self.attr("http.response.status_code", code)
            .check(move |s| {
                let want = if code >= 500 || (s.is_client() && code >= 400) {
                    "error"
                } else {
                    "unset"
                };
                if s.status() == want {
                    Ok(())
                } else {
                    Err(format!(
                        "status: want {want} for HTTP {code} on a {} span, got {}",
                        s.kind(),
                        s.get("status")
                    ))
                }
            })
    }

    /// No response: error status, no status code, no response size.
    pub fn no_response(self) -> Self {
        self.no_attr("http.response.status_code")
            .no_attr("http.response.body.size")
            .check(|s| {
                if s.status() == "error" {
                    Ok(())
                } else {
                    Err(format!(
                        "status: want error (no response), got {}",
                        s.get("status")
                    ))
                }
            })
    }

    pub fn req_body(self, n: u64) -> Self {
        self.attr("http.request.body.size", n)
    }

    pub fn resp_body(self, n: u64) -> Self {
        self.attr("http.response.body.size", n)
    }

    pub fn peer(self, addr: &str, port: u16) -> Self {
        self.attr("network.peer.address", addr)
            .attr("network.peer.port", port)
    }

    pub fn peer_port(self, port: u16) -> Self {
        self.attr("network.peer.port", port)
    }

    /// The peer port is none of `ports` (e.g. an ephemeral port the test cannot know).
    pub fn peer_port_not(self, ports: Vec<u16>) -> Self {
        self.check(move |s| match s.peer_port() {
            Some(p) if !ports.contains(&p) => Ok(()),
            p => Err(format!(
                "network.peer.port: want an ephemeral port (not one of {ports:?}), got {p:?}"
            )),
        })
    }

    pub fn server_addr(self, addr: &str, port: u16) -> Self {
        self.attr("server.address", addr).attr("server.port", port)
    }

    pub fn client_addr(self, addr: &str, port: u16) -> Self {
        self.attr("client.address", addr).attr("client.port", port)
    }

    pub fn version(self, v: &str) -> Self {
        self.attr("network.protocol.version", v)
    }

    /// Executable name and, unless set otherwise with `service`, the same service name.
    pub fn exe(self, name: &str) -> Self {
        self.resource("process.executable.name", name)
    }

    pub fn exe_path(self, path: &str) -> Self {
        self.resource("process.executable.path", path)
    }

    pub fn service(self, name: &str) -> Self {
        self.resource("service.name", name)
    }

    /// `user_agent.original` starts with `prefix`.
    pub fn user_agent(self, prefix: &'static str) -> Self {
        self.check(move |s| match s.attr_str("user_agent.original") {
            Some(ua) if ua.starts_with(prefix) => Ok(()),
            ua => Err(format!("user_agent.original: want {prefix}..., got {ua:?}")),
        })
    }

    /// A Redis command: name and operation `op`, query text `text`, database `db`.
    pub fn redis(self, op: &str, text: &str, db: &str) -> Self {
        self.top("name", op)
            .attr("db.system.name", "redis")
            .attr("db.operation.name", op)
            .attr("db.query.text", text)
            .attr("db.namespace", db)
    }

    /// A successful operation: no error status, no `error.type`.
    pub fn ok(self) -> Self {
        self.no_attr("error.type").check(|s| {
            if s.status() == "unset" {
                Ok(())
            } else {
                Err(format!("status: want unset, got {}", s.get("status")))
            }
        })
    }

    /// A failed operation with this `error.type`.
    pub fn error_type(self, t: &str) -> Self {
        self.attr("error.type", t).check(|s| {
            if s.status() == "error" {
                Ok(())
            } else {
                Err(format!("status: want error, got {}", s.get("status")))
            }
        })
    }

    /// At least `ms` milliseconds long.
    pub fn lasts_at_least_ms(self, ms: u64) -> Self {
        self.check(move |s| {
            let d = s.end_ns().saturating_sub(s.start_ns());
            if d >= ms * 1_000_000 {
                Ok(())
            } else {
                Err(format!("duration {d} ns is shorter than {ms} ms"))
            }
        })
    }

    pub fn mismatches(&self, s: &Span) -> Vec<String> {
        self.checks.iter().filter_map(|c| c(s).err()).collect()
    }

    pub fn matches(&self, s: &Span) -> bool {
        self.checks.iter().all(|c| c(s).is_ok())
    }
}

/// Match `spans` one to one with `expected` (in any order). On success the spans are returned in
/// the order of `expected`; else a report of what is missing, what is extra, and why the closest
/// candidates did not match.
pub fn match_exact(spans: &[Span], expected: &[Expect]) -> Result<Vec<Span>, String> {
    let n = expected.len();
    let ok: Vec<Vec<bool>> = expected
        .iter()
        .map(|e| spans.iter().map(|s| e.matches(s)).collect())
        .collect();
    // Kuhn's augmenting paths: span j is assigned to expectation owner[j].
    let mut owner: Vec<Option<usize>> = vec![None; spans.len()];
    fn augment(i: usize, ok: &[Vec<bool>], seen: &mut [bool], owner: &mut [Option<usize>]) -> bool {
        for j in 0..owner.len() {
            if ok[i][j] && !seen[j] {
                seen[j] = true;
                if owner[j].is_none_or(|k| augment(k, ok, seen, owner)) {
                    owner[j] = Some(i);
                    return true;
                }
            }
        }
        false
    }
    let mut unmatched = Vec::new();
    for i in 0..n {
        let mut seen = vec![false; spans.len()];
        if !augment(i, &ok, &mut seen, &mut owner) {
            unmatched.push(i);
        }
    }
    let extra: Vec<usize> = (0..spans.len()).filter(|j| owner[*j].is_none()).collect();
    if unmatched.is_empty() && extra.is_empty() {
        let mut out = vec![None; n];
        for (j, o) in owner.iter().enumerate() {
            out[o.unwrap()] = Some(spans[j].clone());
        }
        return Ok(out.into_iter().map(Option::unwrap).collect());
    }
    let mut r = format!(
        "expected exactly {n} spans, got {}; {} expectation(s) unmatched, {} extra span(s)\n",
        spans.len(),
        unmatched.len(),
        extra.len()
    );
    for i in &unmatched {
        let e = &expected[*i];
        r += &format!("\nMISSING: {}\n", e.label);
        let mut cands: Vec<(usize, Vec<String>)> = spans
            .iter()
            .enumerate()
            .map(|(j, s)| (j, e.mismatches(s)))
            .collect();
        cands.sort_by_key(|(_, m)| m.len());
        for (j, m) in cands.iter().take(2) {
            r += &format!(
                "  closest span #{j} ({}): {}\n",
                spans[*j].name(),
                m.join("; ")
            );
        }
    }
    for j in &extra {
        r += &format!("\nEXTRA span #{j}: {}\n", spans[*j]);
    }
    r += "\nall spans:\n";
    for (j, s) in spans.iter().enumerate() {
        r += &format!("  #{j}: {s}\n");
    }
    Err(r)
}

/// A process on one side of an exchange, as its spans should describe it.
#[derive(Clone, Debug)]
pub struct Peer {
    pub pid: u32,
    /// `process.executable.name`; `None`: not checked.
    pub exe: Option<String>,
    /// `process.executable.path`; `None`: not checked.
    pub exe_path: Option<String>,
    /// `service.name`; `None`: not checked.
    pub service: Option<String>,
    /// `thread.id`; `None`: not checked.
    pub tid: Option<u64>,
}

impl Peer {
    /// A process whose service name is its executable name.
    pub fn new(pid: u32, exe: &str, exe_path: Option<&str>) -> Self {
        Peer {
            pid,
            exe: Some(exe.into()),
            exe_path: exe_path.map(Into::into),
            service: Some(exe.into()),
            tid: None,
        }
    }

    /// curl started by the test (`/proc` may be gone by the time the agent looks: only the name
    /// is checked).
    pub fn curl(pid: u32) -> Self {
        Self::new(pid, "curl", None)
    }

    /// The test process itself, from the thread `tid`.
    pub fn me(tid: u64) -> Self {
        Peer {
            pid: std::process::id(),
            exe: None,
            exe_path: None,
            service: None,
            tid: Some(tid),
        }
    }

    pub fn with_service(mut self, s: &str) -> Self {
        self.service = Some(s.into());
        self
    }

    fn apply(&self, mut e: Expect) -> Expect {
        if let Some(x) = &self.exe {
            e = e.exe(x);
        }
        if let Some(x) = &self.exe_path {
            e = e.exe_path(x);
        }
        if let Some(x) = &self.service {
            e = e.service(x);
        }
        if let Some(t) = self.tid {
            e = e.tid(t);
        }
        e
    }

    /// A client span of this process for `METHOD path` to a server on 127.0.0.1:`server_port`.
    pub fn client(&self, method: &str, path: &str, server_port: u16) -> Expect {
        self.client_at("127.0.0.1", method, path, server_port)
    }

    /// A client span of this process for `METHOD path` to a server on `addr`:`server_port`.
    pub fn client_at(&self, addr: &str, method: &str, path: &str, server_port: u16) -> Expect {
        let label = format!(
            "client span of pid {} ({}) {method} {path}",
            self.pid,
            self.exe.as_deref().unwrap_or("?")
        );
        self.apply(Expect::client(label, self.pid))
            .request(method, path)
            .peer(addr, server_port)
            .server_addr(addr, server_port)
    }

    /// A client span of this process for Redis command `op` (query text `text`, database `db`)
    /// to a server on 127.0.0.1:`server_port`.
    pub fn redis_client(&self, op: &str, text: &str, db: &str, server_port: u16) -> Expect {
        let label = format!(
            "client span of pid {} ({}) {text}",
            self.pid,
            self.exe.as_deref().unwrap_or("?")
        );
        self.apply(Expect::client(label, self.pid))
            .redis(op, text, db)
            .peer("127.0.0.1", server_port)
            .server_addr("127.0.0.1", server_port)
    }

    /// A server span of this process (listening on 127.0.0.1:`port`) for Redis command `op`.
    pub fn redis_server(&self, op: &str, text: &str, db: &str, port: u16) -> Expect {
        let label = format!(
            "server span of pid {} ({}) {text}",
            self.pid,
            self.exe.as_deref().unwrap_or("?")
        );
        self.apply(Expect::server(label, self.pid))
            .redis(op, text, db)
            .server_addr("127.0.0.1", port)
            .attr("network.peer.address", "127.0.0.1")
            .attr("client.address", "127.0.0.1")
            .peer_port_not(vec![port])
    }

    /// A server span of this process for `METHOD path`, listening on 127.0.0.1:`port`, from a
    /// client on 127.0.0.1:`client_port` (`None`: a port the test cannot know, only checked to be
    /// none of the listening ports).
    pub fn server(&self, method: &str, path: &str, port: u16, client_port: Option<u16>) -> Expect {
        self.server_at("127.0.0.1", method, path, port, client_port)
    }

    /// `server`, on `addr` (both ends: loopback).
    pub fn server_at(
        &self,
        addr: &str,
        method: &str,
        path: &str,
        port: u16,
        client_port: Option<u16>,
    ) -> Expect {
        let label = format!(
            "server span of pid {} ({}) {method} {path}",
            self.pid,
            self.exe.as_deref().unwrap_or("?")
        );
        let e = self
            .apply(Expect::server(label, self.pid))
            .request(method, path)
            .server_addr(addr, port);
        match client_port {
            Some(p) => e.peer(addr, p).client_addr(addr, p),
            None => e
                .attr("network.peer.address", addr)
                .attr("client.address", addr)
                .peer_port_not(vec![port]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn span(kind: &str, pid: u32, path: &str, status: u16) -> Span {
        Span(
            json!({"kind": kind, "name": format!("GET {path}"), "status": {"code": "unset"},
            "attributes": {"http.request.method": "GET", "url.path": path, "http.response.status_code": status},
            "resource": {"process.pid": pid}}),
        )
    }

    #[test]
    fn exact_match_any_order() {
        let spans = vec![span("server", 1, "/a", 200), span("client", 2, "/a", 200)];
        let exp = [
            Expect::client("c", 2).get("/a"),
            Expect::server("s", 1).get("/a").status(200),
        ];
        let got = match_exact(&spans, &exp).unwrap();
        assert_eq!(got[0].kind(), "client");
    }

    #[test]
    fn missing_extra_and_wrong_fields_are_reported() {
        let spans = vec![span("server", 1, "/a", 200), span("server", 1, "/a", 200)];
        let err = match_exact(&spans, &[Expect::server("s", 1).get("/a")]).unwrap_err();
        assert!(err.contains("EXTRA"), "{err}");
        let err =
            match_exact(&spans[..1], &[Expect::server("s", 1).get("/a").status(404)]).unwrap_err();
        assert!(
            err.contains("MISSING: s")
                && err.contains("http.response.status_code: want 404, got 200"),
            "{err}"
        );
        let err = match_exact(
            &spans[..1],
            &[Expect::server("s", 1).get("/a").no_response()],
        )
        .unwrap_err();
        assert!(err.contains("want absent"), "{err}");
    }

    #[test]
    fn assignment_is_not_greedy() {
        // The loose expectation must not take the only span the strict one accepts.
        let spans = vec![span("server", 1, "/a", 200), span("server", 1, "/b", 200)];
        let exp = [
            Expect::server("loose", 1),
            Expect::server("strict", 1).get("/a"),
        ];
        assert!(match_exact(&spans, &exp).is_ok());
    }
}
