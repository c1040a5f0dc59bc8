//! Thread linking under concurrency, for three server models: a thread pool (python
//! ThreadingHTTPServer: one thread per connection), an event loop (python asyncio: one thread for
//! every connection) and a task pool (requests read and handled by tasks on shared threads, as
//! Go, tokio or .NET schedule them). Eight keep-alive clients send requests at once; the middle
//! server calls a leaf server (50 ms per answer) while serving each one, carrying the request's
//! unique token in the downstream path (`/req/c3-4` -> `/leaf/req/c3-4`), so the test knows which
//! server span caused which client span.
//!
//! Per token: the client's span is a root, the middle server span its child by `connection`, the
//! leaf server span the child of the middle client span by `connection`. The middle client span
//! is the child of the middle server span of the same token by `thread`: always on the thread
//! pool; on the event loop and the task pool only when the thread served that request alone, else
//! a root. Never the child of another token's span.

use std::time::Duration;

use tracer_tests::{
    pyapp::{gated_client, PyApp, ASYNC_RELAY, LOAD_CLIENT, POOL_RELAY, RELAY},
    trace::{describe, TraceIds},
    Agent, Expect, Span, TempDir, SPAN_TIMEOUT,
};

/// One round of requests: `clients` keep-alive clients at once, `per_client` requests each,
/// tokens `/req/{prefix}T-I`.
struct Round {
    prefix: &'static str,
    clients: usize,
    per_client: usize,
    /// Every downstream call must be linked by thread (else: by thread or a root).
    all_linked: bool,
}

/// Eight clients at once, six requests each.
const CONCURRENT: Round = Round {
    prefix: "c",
    clients: 8,
    per_client: 6,
    all_linked: false,
};

/// One client alone, four requests: a server then serves one request at a time.
const ALONE: Round = Round {
    prefix: "s",
    clients: 1,
    per_client: 4,
    all_linked: true,
};

/// How the middle server's client spans may be linked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Model {
    /// Always to the server span their thread serves.
    ThreadPool,
    /// To that server span, or not at all (a root) when its thread served other requests
    /// meanwhile.
    Shared,
}

/// Whether the agent inserts `traceparent` into outgoing requests (`--inject-context`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Inject {
    Off,
    On,
}

fn run(model: Model, mid_name: &str, mid_source: &str, rounds: &[Round], inject: Inject) {
    let leaf = PyApp::start("leaf server", RELAY, &["--delay", "0.05"]);
    let down = format!("127.0.0.1:{}", leaf.port);
    let mid = PyApp::start(mid_name, mid_source, &["--downstream", &down]);
    let dir = TempDir::new("load-client");
    let clients: Vec<_> = rounds
        .iter()
        .map(|r| {
            let args = [
                "127.0.0.1".to_string(),
                mid.port.to_string(),
                r.clients.to_string(),
                r.per_client.to_string(),
                r.prefix.to_string(),
            ];
            gated_client(
                &dir,
                &format!("load_client_{}", r.prefix),
                LOAD_CLIENT,
                &args,
            )
        })
        .collect();
    let mut pids: Vec<u32> = clients.iter().map(|c| c.pid()).collect();
    pids.extend([mid.pid(), leaf.pid()]);
    let flags: &[&str] = match inject {
        Inject::Off => &[],
        Inject::On => &["--inject-context"],
    };
    let agent = Agent::json(&pids, flags);
    // One round after the other.
    let mut tokens = Vec::new();
    for (r, client) in rounds.iter().zip(clients) {
        let client_pid = client.pid();
        let out = client.finish(Duration::from_secs(120));
        assert_eq!(
            out.code(),
            Some(0),
            "{}\n--- {mid_name} ---\n{}\n--- leaf ---\n{}",
            out.describe(),
            mid.log(),
            leaf.log()
        );
        for t in 0..r.clients {
            for i in 0..r.per_client {
                tokens.push((format!("{}{t}-{i}", r.prefix), client_pid, r.all_linked));
            }
        }
    }

    let n = tokens.len() * 4;
    if !agent.wait_until(SPAN_TIMEOUT * 2, |s| s.len() >= n) {
        eprintln!("note: fewer than {n} spans within {:?}", SPAN_TIMEOUT * 2);
    }
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    let mut expected = Vec::new();
    for (tok, client_pid, _) in &tokens {
        let path = format!("/req/{tok}");
        let leaf_path = format!("/leaf{path}");
        expected.push(
            Expect::client(format!("client {path}"), *client_pid)
                .get(&path)
                .status(200),
        );
        expected.push(mid.peer().server("GET", &path, mid.port, None).status(200));
        expected.push(mid.peer().client("GET", &leaf_path, leaf.port).status(200));
        expected.push(
            leaf.peer()
                .server("GET", &leaf_path, leaf.port, None)
                .status(200),
        );
    }
    let spans = stopped.assert_exact(&expected);

    // With injection a server span's parent comes from the header the kernel inserted into its
    // client's request (the same span the connection names), or from the connection when the
    // kernel inserted none.
    let server_links: &[&str] = match inject {
        Inject::Off => &["connection"],
        Inject::On => &["injected", "connection"],
    };
    // Which token each trace belongs to: a downstream call must never be in another token's trace
    // (with injection the kernel picks the trace, before the agent links anything).
    let token_of_trace: std::collections::HashMap<&str, &str> = tokens
        .iter()
        .zip(spans.chunks(4))
        .map(|((tok, _, _), s)| (s[1].trace_id(), tok.as_str()))
        .collect();
    let mut thread_linked = 0;
    let mut injected_alone = (0, 0);
    let mut injected = 0;
    for ((tok, _, all_linked), s) in tokens.iter().zip(spans.chunks(4)) {
        let ctx = describe(s);
        let child_of = |child: &Span, parent: &Span, link: &str| {
            assert_eq!(
                (child.parent_id(), child.trace_id(), child.link()),
                (Some(parent.span_id()), parent.trace_id(), link),
                "{tok}: {} {} must be the child of {} {} by {link}\n{ctx}",
                child.kind(),
                child.name(),
                parent.kind(),
                parent.name()
            );
        };
        let (client, mid_server, mid_client, leaf_server) = (&s[0], &s[1], &s[2], &s[3]);
        assert_eq!(
            (client.parent_id(), client.link()),
            (None, "root"),
            "{tok}: the client span must be a root\n{ctx}"
        );
        let by_server_link = |child: &Span, parent: &Span| {
            let link = child.link();
            assert!(
                server_links.contains(&link),
                "{tok}: {} {} linked by {link}, expected one of {server_links:?}\n{ctx}",
                child.kind(),
                child.name()
            );
            child_of(child, parent, link);
        };
        by_server_link(mid_server, client);
        if let Some(other) = token_of_trace.get(mid_client.trace_id()) {
            assert_eq!(
                other, tok,
                "{tok}: the downstream call is in the trace of {other}\n{ctx}"
            );
        }
        let may_be_root = model == Model::Shared && !all_linked;
        match mid_client.link() {
            "thread" => {
                child_of(mid_client, mid_server, "thread");
                thread_linked += 1;
            }
            "root" if may_be_root => assert_eq!(
                mid_client.parent_id(),
                None,
                "{tok}: a root with a parent\n{ctx}"
            ),
            _ => panic!(
                "{tok}: the downstream client span must be linked to its own server span by thread{}\n{ctx}",
                if may_be_root { " or be a root" } else { "" }
            ),
        }
        by_server_link(leaf_server, mid_client);
        if leaf_server.link() == "injected" {
            injected += 1;
        }
        if *all_linked {
            injected_alone.0 += 1;
            if leaf_server.link() == "injected" {
                injected_alone.1 += 1;
            }
        }
    }
    eprintln!(
        "{mid_name}: {injected} of {} downstream calls carried an injected context",
        tokens.len()
    );
    if inject == Inject::On {
        // Once the kernel has seen the server answer on its reading threads, each call of a
        // thread serving one request carries that request's context.
        if model == Model::ThreadPool {
            assert!(
                injected * 2 >= tokens.len(),
                "only {injected} of {} downstream calls carried an injected context",
                tokens.len()
            );
        }
        let summary: Vec<&str> = stopped
            .stderr
            .lines()
            .filter(|l| l.contains("context injection"))
            .collect();
        assert_eq!(
            injected_alone.1,
            injected_alone.0,
            "calls of a server serving one request at a time must all carry a context\n{}",
            summary.join("\n")
        );
    }
    eprintln!(
        "{mid_name}: {thread_linked} of {} downstream calls linked by thread, the others roots",
        tokens.len()
    );
}

/// ThreadingHTTPServer: each connection has its thread, which serves one request at a time; every
/// downstream call is linked to the request it serves.
#[test]
fn thread_pool_server() {
    run(
        Model::ThreadPool,
        "thread-pool relay",
        RELAY,
        &[CONCURRENT],
        Inject::Off,
    );
}

/// The same with context injection: the kernel's per-thread context puts each downstream call in
/// the trace of the request it serves.
#[test]
fn thread_pool_server_injecting() {
    run(
        Model::ThreadPool,
        "thread-pool relay",
        RELAY,
        &[CONCURRENT],
        Inject::On,
    );
}

/// asyncio: one thread serves every connection. Under concurrency it serves other requests while
/// one is in flight, so its downstream calls are left roots, never linked to another request.
/// One client alone afterwards: the loop serves one request at a time, and every downstream call
/// is linked.
#[test]
fn event_loop_server() {
    run(
        Model::Shared,
        "asyncio relay",
        ASYNC_RELAY,
        &[CONCURRENT, ALONE],
        Inject::Off,
    );
}

/// The event loop with context injection: the kernel inserts a context only while the loop
/// serves one request; a call made while several are in flight carries none (or a new trace)
/// and is never put in another request's trace.
#[test]
fn event_loop_server_injecting() {
    run(
        Model::Shared,
        "asyncio relay",
        ASYNC_RELAY,
        &[CONCURRENT, ALONE],
        Inject::On,
    );
}

/// Requests read and handled by tasks on a shared pool of threads (how Go, tokio or .NET
/// schedule): a thread may make a downstream call for one request while another request it read
/// is in flight on it. Such calls must not be linked to that other request.
#[test]
fn task_pool_server() {
    run(
        Model::Shared,
        "task-pool relay",
        POOL_RELAY,
        &[CONCURRENT],
        Inject::Off,
    );
}

/// The task pool with context injection: never another request's trace.
#[test]
fn task_pool_server_injecting() {
    run(
        Model::Shared,
        "task-pool relay",
        POOL_RELAY,
        &[CONCURRENT],
        Inject::On,
    );
}
