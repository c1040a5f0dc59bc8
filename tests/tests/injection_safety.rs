//! Context injection (`--inject-context`) never corrupts traffic: the same client sends the same
//! mixed HTTP/1.1 traffic to the same server twice, once untraced and once traced by the real
//! agent with injection on, and every request gets the same status and a byte-identical body
//! both times.
//!
//! The traffic (`py/injection_check.py`), over 11,000 requests: keep-alive `http.client`
//! connections sending GETs with short, 64 KiB and hand-chunked answers, POST and PUT bodies from
//! 0 B to 64 KiB with `Content-Length` (head and body in separate writes), chunked request
//! bodies, requests carrying their own `traceparent`, heads longer than the kernel's scan window,
//! HEAD; raw sockets pipelining three GETs in one write, writing head and body in one write, a
//! body over three writes, `Expect: 100-continue`, the end of a body and the next head in one
//! write, a head over two writes. The server answers deterministic bodies (request bodies are
//! answered with their sha256 and length), so a single byte added, lost or changed in a request
//! shows up as another digest, a bad status or a failed request; the client checks each answer
//! against what it expects and writes `kind path status sha256(body)` per request.
//!
//! With injection, the server must also have seen: a well-formed `traceparent`, the first header
//! (right after the request line), on most requests that had none; never two on one request;
//! every request's own `traceparent` unchanged; and as many inserted headers as the agent says
//! it inserted, with no failures. Without the agent it must have seen only the client's own.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{
    pyapp::{gated_client, PyApp, INJECTION_CHECK},
    Agent, TempDir,
};

/// Least share of the requests without a context of their own that must have received one.
/// Every `http.client` connection is edited up to its last request (a chunked body or an
/// over-long head ends it: 8,562 inserted), a pipelined connection only in its first request
/// (60), a raw connection until a write with more than one request or a part of a head (104):
/// 8,726 of 10,280, 0.85.
const MIN_INJECTED_SHARE: f64 = 0.80;
/// Least requests one run of the client sends.
const MIN_REQUESTS: usize = 10_000;
/// Longest a run of the client may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// `METHOD PATH` to the server from the test process itself (never traced), `Connection: close`;
/// the answer's body as JSON.
fn server_call(port: u16, method: &str, path: &str) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .expect("reading the server's answer");
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no response head in {raw:?}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{method} {path}: {head}");
    if path == "/reset" {
        return Value::Null;
    }
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body:?}"))
}

fn count(stats: &Value, key: &str) -> u64 {
    stats[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no count {key} in the server's stats {stats}"))
}

/// One run of the client: its result lines and what the server saw (its counts reset after).
struct Run {
    /// The client's output file, as is.
    text: String,
    lines: Vec<String>,
    failures: u64,
    stats: Value,
    took: Duration,
}

impl Run {
    fn requests(&self) -> usize {
        self.lines.len()
    }
}

/// Run the client to the end against `server`, with `agent_args` an agent started for the
/// client and the server first (`None`: untraced). Returns the run and the agent's stderr.
fn run(server: &PyApp, dir: &TempDir, label: &str, agent_args: Option<&[&str]>) -> (Run, String) {
    let out = dir.join(format!("{label}.txt"));
    let client = gated_client(
        dir,
        &format!("client_{label}"),
        INJECTION_CHECK,
        &[
            "client".into(),
            "127.0.0.1".into(),
            server.port.to_string(),
            out.display().to_string(),
        ],
    );
    // Returns once the agent is attached: every connection of the client is made after that.
    let agent = agent_args.map(|a| Agent::json(&[client.pid(), server.pid()], a));
    let t0 = Instant::now();
    let o = client.finish(CLIENT_TIMEOUT);
    let took = t0.elapsed();
    let agent_stderr = agent.map(|a| {
        let stopped = a.stop();
        stopped.assert_clean_exit();
        stopped.stderr
    });
    let agent_stderr = agent_stderr.unwrap_or_default();
    assert_eq!(
        o.code(),
        Some(0),
        "the client ({label}) broke\n{}\n--- server ---\n{}\n--- agent ---\n{agent_stderr}",
        o.describe(),
        server.log()
    );
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("reading {}: {e}\n{}", out.display(), o.describe()));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let last = lines.pop().unwrap_or_default();
    let failures: u64 = last
        .strip_prefix("failures ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `failures N` line at the end of {}", out.display()));
    let stats = server_call(server.port, "GET", "/stats");
    server_call(server.port, "POST", "/reset");
    eprintln!(
        "{label}: {} requests in {took:.1?}, {failures} failed; server saw {stats}",
        lines.len()
    );
    if failures > 0 {
        eprintln!("--- client ({label}) ---\n{}", o.stderr);
    }
    (
        Run {
            text,
            lines,
            failures,
            stats,
            took,
        },
        agent_stderr,
    )
}

/// `KEY=N` in the agent's `tracer: context injection: ...` summary line.
fn summary_count(line: &str, key: &str) -> u64 {
    let at = line
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no `{key}=` in {line:?}"));
    line[at + key.len() + 1..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{key}=` in {line:?}"))
}

/// The first lines where two runs differ, for the failure message.
fn first_differences(a: &[String], b: &[String]) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i), b.get(i));
        if x != y {
            out += &format!("line {}:\n  without: {x:?}\n  with:    {y:?}\n", i + 1);
            shown += 1;
            if shown == 20 {
                break;
            }
        }
    }
    out
}

#[test]
fn injection_changes_nothing_but_the_header() {
    let t0 = Instant::now();
    let server = PyApp::start("injection_check server", INJECTION_CHECK, &["server"]);
    let dir = TempDir::new("injection-safety");

    let (plain, _) = run(&server, &dir, "plain", None);
    let (injected, agent_stderr) = run(&server, &dir, "injected", Some(&["--inject-context"]));
    let total = t0.elapsed();

    // The traffic itself: complete and correct both times.
    assert!(
        plain.requests() >= MIN_REQUESTS,
        "only {} requests",
        plain.requests()
    );
    assert_eq!(plain.failures, 0, "requests failed without the agent");
    assert_eq!(
        count(&plain.stats, "errors"),
        0,
        "the server refused requests without the agent: {}",
        plain.stats
    );
    assert_eq!(
        injected.failures, 0,
        "requests failed with injection (and not without)\n--- agent ---\n{agent_stderr}"
    );
    assert_eq!(
        count(&injected.stats, "errors"),
        0,
        "the server refused requests with injection: {}\n--- agent ---\n{agent_stderr}",
        injected.stats
    );
    assert!(
        plain.text == injected.text,
        "the answers differ with injection ({} vs {} requests):\n{}",
        plain.requests(),
        injected.requests(),
        first_differences(&plain.lines, &injected.lines)
    );
    let requests = plain.requests() as u64;
    for run in [&plain, &injected] {
        assert_eq!(count(&run.stats, "requests"), requests, "{}", run.stats);
    }

    // Without the agent: only the client's own traceparent headers.
    let own = count(&plain.stats, "client_tp");
    assert!(own > 0, "{}", plain.stats);
    assert_eq!(count(&plain.stats, "with_tp"), own, "{}", plain.stats);
    assert_eq!(count(&plain.stats, "other_tp"), 0, "{}", plain.stats);

    // With injection: each request's own header untouched, one header at most, well formed,
    // inserted right after the request line.
    let s = &injected.stats;
    assert_eq!(count(s, "client_tp"), own, "own headers changed: {s}");
    assert_eq!(count(s, "multiple"), 0, "two traceparent headers: {s}");
    assert_eq!(count(s, "malformed"), 0, "malformed traceparent: {s}");
    let inserted = count(s, "other_tp");
    assert_eq!(
        count(s, "other_tp_first"),
        inserted,
        "an inserted traceparent not the first header: {s}"
    );
    let share = inserted as f64 / (requests - own) as f64;
    assert!(
        share >= MIN_INJECTED_SHARE,
        "only {inserted} of {} requests without a context got one ({share:.2}): {s}\n--- agent ---\n{agent_stderr}",
        requests - own
    );

    // The agent's own account agrees with what arrived.
    let line = agent_stderr
        .lines()
        .find(|l| l.starts_with("tracer: context injection:"))
        .unwrap_or_else(|| panic!("no context injection summary\n{agent_stderr}"));
    assert_eq!(summary_count(line, "failures"), 0, "{line}");
    let said = summary_count(line, "traceparent inserted");
    assert!(said > 0, "{line}");
    assert_eq!(
        said, inserted,
        "the agent says it inserted {said} headers, the server received {inserted}: {line}"
    );
    assert_eq!(summary_count(line, "had a context"), own, "{line}");

    eprintln!(
        "{requests} requests per run; without the agent {:.1?}, with injection {:.1?}; \
         traceparent inserted into {inserted} of {} requests without one ({:.1}%); total {total:.1?}\n{line}",
        plain.took,
        injected.took,
        requests - own,
        share * 100.0
    );
}
