//! Redis: a real `redis-server` traced with its clients (`redis-cli`, redis-py). Each command is
//! one client span and one server span named after the command, with the database attributes;
//! pipelines, transactions, pub/sub, blocking commands, errors, `SELECT` and a connection opened
//! before the agent.

use std::time::Duration;

use tracer_tests::{
    pyapp::PyApp,
    redis::{python_peer, redis_cli, redis_py, EarlyClient, RedisServer, REDIS_HTTP},
    trace::{assert_chain, describe, TraceIds},
    Agent, Curl, Expect, Gated, Peer, Span, TempDir, SPAN_TIMEOUT,
};

const RUN: Duration = Duration::from_secs(60);

/// Run a gated client to its end; it must succeed (and print DONE if it is redis-py).
fn finish(client: Gated, py: bool) {
    let out = client.finish(RUN);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    if py {
        assert!(out.stdout.contains("DONE"), "{}", out.describe());
    }
}

/// Run redis-py scenario `script` (its arguments after the port: `args`) against `redis`, both
/// traced by a JSON agent; returns the agent and the client as a peer.
fn traced_redis_py(redis: &RedisServer, script: &str, args: &[&str]) -> (Agent, Peer) {
    let dir = TempDir::new("redis-py");
    let mut argv = vec![script.to_owned(), redis.port.to_string()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let client = redis_py(&dir, &argv);
    let agent = Agent::json(&[redis.pid(), client.pid()], &[]);
    let me = python_peer(client.pid());
    finish(client, true);
    (agent, me)
}

/// Both spans of each command: (operation, redacted query text, database, error type).
fn both_ends(
    client: &Peer,
    server: &Peer,
    port: u16,
    commands: &[(&str, &str, &str, Option<&str>)],
) -> Vec<Expect> {
    let mut v = Vec::new();
    for (op, text, db, err) in commands {
        let with = |e: Expect| match err {
            Some(t) => e.error_type(t),
            None => e.ok(),
        };
        v.push(with(client.redis_client(op, text, db, port)));
        v.push(with(server.redis_server(op, text, db, port)));
    }
    v
}

#[test]
fn redis_cli_commands() {
    let redis = RedisServer::start();
    let mut set = redis_cli(redis.port, &["SET", "city", "Paris"]);
    let mut get = redis_cli(redis.port, &["GET", "city"]);
    let agent = Agent::json(&[redis.pid(), set.pid(), get.pid()], &[]);
    let (set_pid, get_pid) = (set.pid(), get.pid());
    set.release();
    finish(set, false);
    get.release();
    let out = get.finish(RUN);
    assert_eq!(out.stdout.trim(), "Paris", "{}", out.describe());
    let cli = |pid| Peer::new(pid, "redis-cli", None);
    let server = redis.peer();
    let mut expected = both_ends(
        &cli(set_pid),
        &server,
        redis.port,
        &[("SET", "SET ? ?", "0", None)],
    );
    expected.extend(both_ends(
        &cli(get_pid),
        &server,
        redis.port,
        &[("GET", "GET ?", "0", None)],
    ));
    agent.expect_exact(&expected);
}

fn simple(resp: u8) {
    let redis = RedisServer::start();
    let (agent, me) = traced_redis_py(&redis, "simple", &[&resp.to_string()]);
    let mut commands = vec![];
    if resp == 3 {
        commands.push(("HELLO", "HELLO ?", "0", None));
    }
    commands.extend([
        ("SET", "SET ? ?", "0", None),
        ("GET", "GET ?", "0", None),
        ("LPUSH", "LPUSH ? ?", "0", Some("WRONGTYPE")),
        ("CLIENT SETNAME", "CLIENT SETNAME ?", "0", None),
        ("SELECT", "SELECT ?", "0", None),
        ("GET", "GET ?", "3", None),
    ]);
    let spans = agent.expect_exact(&both_ends(&me, &redis.peer(), redis.port, &commands));
    linked_by_connection(&spans);
}

/// Each (client, server) pair of `spans` is one trace: the server span a child of the client
/// span, linked by their connection.
fn linked_by_connection(spans: &[Span]) {
    for pair in spans.chunks(2) {
        assert_chain(pair);
        assert_eq!(pair[1].link(), "connection", "{}", describe(pair));
    }
}

/// Plain commands, an error reply (`error.type` = its prefix) and `SELECT` (`db.namespace`).
#[test]
fn redis_py_resp2_commands_errors_select() {
    simple(2);
}

/// The same over RESP3 (`HELLO 3` first: maps, and other RESP3 types, in replies).
#[test]
fn redis_py_resp3_commands_errors_select() {
    simple(3);
}

/// 2,000 SETs pipelined. redis-py writes them in pieces of about 6 KB, each captured whole with
/// `--capture-bytes 8192`: one client span per command, in order; replies read in one go beyond
/// the capture are marked uncaptured (`tracer.truncated`) but still end their commands.
/// redis-server reads up to 16 KB at a time, so it is only seen in part: its spans are the
/// commands it was seen reading, in order, each with the right command, and what it was not seen
/// reading is counted (desync). (Checked span by span rather than as 4,000 expectations matched
/// one to one.)
#[test]
fn pipeline_of_two_thousand_commands() {
    const N: usize = 2000;
    let redis = RedisServer::start();
    let dir = TempDir::new("redis-py");
    let client = redis_py(
        &dir,
        &["pipeline".into(), redis.port.to_string(), N.to_string()],
    );
    let client_pid = client.pid();
    let agent = Agent::json(
        &[redis.pid(), client_pid],
        &["--capture-bytes", "8192", "--show-query-values"],
    );
    finish(client, true);
    agent.wait_until(SPAN_TIMEOUT, |s| {
        s.iter().filter(|s| s.is_client()).count() >= N
    });
    let stopped = agent.stop();
    stopped.assert_clean_exit();
    stopped.assert_well_formed();
    let want: Vec<String> = (0..N).map(|i| format!("SET k{i} v{i}")).collect();
    let in_order = |kind: &str| {
        let mut mine: Vec<&Span> = stopped.spans.iter().filter(|s| s.kind() == kind).collect();
        mine.sort_by_key(|s| (s.start_ns(), s.end_ns()));
        for w in mine.windows(2) {
            assert!(
                w[0].end_ns() <= w[1].end_ns(),
                "{kind}: ends out of order\n{}\n{}",
                w[0],
                w[1]
            );
        }
        for s in &mine {
            assert_eq!((s.name(), s.status()), ("SET", "unset"), "{s}");
            assert_eq!(s.attr_str("db.namespace"), Some("0"), "{s}");
        }
        mine
    };
    let clients = in_order("client");
    assert!(clients.iter().all(|s| s.pid() == Some(client_pid)));
    let texts: Vec<&str> = clients
        .iter()
        .map(|s| s.attr_str("db.query.text").unwrap_or(""))
        .collect();
    assert_eq!(
        texts, want,
        "client spans, in start order\n{}",
        stopped.stderr
    );
    let servers = in_order("server");
    assert!(servers.iter().all(|s| s.pid() == Some(redis.pid())));
    // A subsequence of the commands: each the right one, none twice, in order.
    let mut next = 0;
    for s in &servers {
        // A value cut by the capture ends in "...".
        let text = s.attr_str("db.query.text").unwrap_or("");
        let at = want[next..]
            .iter()
            .position(|w| w == text || text.strip_suffix("...").is_some_and(|t| w.starts_with(t)))
            .unwrap_or_else(|| panic!("server span out of order or unknown: {s}"));
        next += at + 1;
    }
    eprintln!(
        "{} client spans ({} with their reply uncaptured), {} server spans",
        clients.len(),
        clients
            .iter()
            .filter(|s| s.attr("tracer.truncated").is_some())
            .count(),
        servers.len()
    );
    assert!(
        servers.len() > N / 4,
        "{} server spans\n{}",
        servers.len(),
        stopped.stderr
    );
    if servers.len() < N {
        assert!(
            stopped.stderr.contains("desync="),
            "{} of {N} server spans, and no desync counted\n{}",
            servers.len(),
            stopped.stderr
        );
    }
    assert_eq!(stopped.spans.len(), N + servers.len());
}

/// MULTI/EXEC (one write): the queued commands are answered `QUEUED`, EXEC with their results.
#[test]
fn multi_exec_transaction() {
    let redis = RedisServer::start();
    let (agent, me) = traced_redis_py(&redis, "multi", &[]);
    let spans = agent.expect_exact(&both_ends(
        &me,
        &redis.peer(),
        redis.port,
        &[
            ("MULTI", "MULTI", "0", None),
            ("SET", "SET ? ?", "0", None),
            // redis-py's incr is INCRBY key 1.
            ("INCRBY", "INCRBY ? ?", "0", None),
            ("EXEC", "EXEC", "0", None),
        ],
    ));
    linked_by_connection(&spans);
}

/// An HTTP server reading Redis while serving a curl request: curl's span, the server's span
/// (by connection), its Redis client span (by thread) and redis-server's span (by connection)
/// are one trace.
#[test]
fn linked_by_thread_and_connection() {
    let redis = RedisServer::start();
    let app = PyApp::start("redis_http", REDIS_HTTP, &[&redis.port.to_string()]);
    let curl = Curl::get(format!("http://127.0.0.1:{}/key/nothing", app.port));
    let curl_pid = curl.pid();
    let agent = Agent::json(&[redis.pid(), app.pid(), curl_pid], &[]);
    let t = curl.run()[0];
    assert_eq!(t.code, 404);
    let spans = agent.expect_exact(&[
        Peer::curl(curl_pid)
            .client("GET", "/key/nothing", app.port)
            .status(404),
        app.peer()
            .server("GET", "/key/nothing", app.port, Some(t.local_port))
            .status(404),
        app.peer()
            .redis_client("GET", "GET ?", "0", redis.port)
            .ok(),
        redis
            .peer()
            .redis_server("GET", "GET ?", "0", redis.port)
            .ok(),
    ]);
    assert_chain(&spans);
    let links: Vec<&str> = spans.iter().map(|s| s.link()).collect();
    assert_eq!(
        links,
        ["root", "connection", "thread", "connection"],
        "{}",
        describe(&spans)
    );
}

/// Pub/sub: the messages pushed to the subscriber are never taken for replies (RESP2 arrays,
/// RESP3 pushes): one span per command, PING and UNSUBSCRIBE included.
fn pubsub(resp: u8) {
    let redis = RedisServer::start();
    let (agent, me) = traced_redis_py(&redis, "pubsub", &[&resp.to_string()]);
    let mut commands = vec![];
    // One HELLO per connection (subscriber and publisher).
    if resp == 3 {
        commands.push(("HELLO", "HELLO ?", "0", None));
        commands.push(("HELLO", "HELLO ?", "0", None));
    }
    commands.extend([
        ("SUBSCRIBE", "SUBSCRIBE ?", "0", None),
        ("PUBLISH", "PUBLISH ? ?", "0", None),
        ("PUBLISH", "PUBLISH ? ?", "0", None),
        ("PUBLISH", "PUBLISH ? ?", "0", None),
        ("PING", "PING", "0", None),
        ("UNSUBSCRIBE", "UNSUBSCRIBE ?", "0", None),
    ]);
    agent.expect_exact(&both_ends(&me, &redis.peer(), redis.port, &commands));
}

#[test]
fn pubsub_resp2() {
    pubsub(2);
}

#[test]
fn pubsub_resp3() {
    pubsub(3);
}

/// BLPOP answered 400 ms later by another connection's RPUSH: its spans last that long.
#[test]
fn blocking_command_has_its_true_duration() {
    let redis = RedisServer::start();
    let (agent, me) = traced_redis_py(&redis, "blpop", &["400"]);
    let server = redis.peer();
    let p = redis.port;
    agent.expect_exact(&[
        me.redis_client("DEL", "DEL ?", "0", p).ok(),
        server.redis_server("DEL", "DEL ?", "0", p).ok(),
        me.redis_client("BLPOP", "BLPOP ? ?", "0", p)
            .ok()
            .lasts_at_least_ms(350),
        server
            .redis_server("BLPOP", "BLPOP ? ?", "0", p)
            .ok()
            .lasts_at_least_ms(350),
        me.redis_client("RPUSH", "RPUSH ? ?", "0", p).ok(),
        server.redis_server("RPUSH", "RPUSH ? ?", "0", p).ok(),
    ]);
}

/// A connection opened (and used) before the agent starts: its later commands are spans. Its
/// database is unknown (it may have been `SELECT`ed before): no `db.namespace`.
#[test]
fn connection_opened_before_the_agent() {
    let redis = RedisServer::start();
    let early = EarlyClient::start(redis.port);
    let agent = Agent::json(&[redis.pid(), early.pid()], &[]);
    let me = early.peer();
    early.resume();
    let server = redis.peer();
    let p = redis.port;
    let unknown_db = |e: Expect, op: &str, text: &str| {
        e.top("name", op)
            .attr("db.system.name", "redis")
            .attr("db.operation.name", op)
            .attr("db.query.text", text)
            .no_attr("db.namespace")
            .ok()
    };
    agent.expect_exact(&[
        unknown_db(
            Expect::client("early GET", me.pid).peer("127.0.0.1", p),
            "GET",
            "GET ?",
        ),
        unknown_db(
            Expect::client("early SET", me.pid).peer("127.0.0.1", p),
            "SET",
            "SET ? ?",
        ),
        unknown_db(Expect::server("server GET", server.pid), "GET", "GET ?"),
        unknown_db(Expect::server("server SET", server.pid), "SET", "SET ? ?"),
    ]);
}

/// Overload: redis-benchmark's pipelined load (`-P 16`, 32 connections) under a CPU budget far
/// below what capturing it all takes. The agent sheds whole connections, both ends alike, and
/// loses no ring-buffer record; what it still captures stays whole: every command's server span
/// has its client span as parent, but for the few exchanges in flight when their connection was
/// shed. redis-benchmark itself is unharmed.
#[test]
fn overload_sheds_whole_connections() {
    let redis = RedisServer::start();
    let port = redis.port.to_string();
    let args: Vec<String> = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-P",
        "16",
        "-c",
        "32",
        "-n",
        "400000",
        "-t",
        "set,get",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let bench = Gated::spawn(
        "redis-benchmark",
        &tracer_tests::util::which("redis-benchmark")
            .display()
            .to_string(),
        &args,
    );
    // A ring buffer large enough for the burst a debug agent on a busy machine reads before its
    // first shedding steps take effect: the test is about what shedding does, not how fast.
    let agent = Agent::json(
        &[redis.pid(), bench.pid()],
        &["--cpu-budget", "0.02", "--ring-buffer-mib", "32"],
    );
    finish(bench, false);
    let stopped = agent.stop();
    let summary = |key: &str| -> u64 {
        let at = stopped
            .stderr
            .find(key)
            .unwrap_or_else(|| panic!("no {key:?} in the summary:\n{}", stopped.stderr));
        stopped.stderr[at + key.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count after {key:?}:\n{}", stopped.stderr))
    };
    let shed = summary("connections no longer captured=");
    assert!(shed > 0, "nothing shed:\n{}", stopped.stderr);
    assert!(
        summary("their records discarded=") > 0,
        "{}",
        stopped.stderr
    );
    assert_eq!(summary("ring buffer data="), 0, "{}", stopped.stderr);
    let servers: Vec<&Span> = stopped
        .spans
        .iter()
        .filter(|s| s.is_server() && s.pid() == Some(redis.pid()))
        .collect();
    assert!(!servers.is_empty(), "nothing captured at all");
    let clients = stopped.spans.iter().filter(|s| s.is_client()).count();
    // 32 connections per test, two tests: all but a share shed.
    assert!(
        clients < 2 * 400_000 / 2,
        "{clients} client spans: shedding did not cut the load"
    );
    let unpaired = servers.iter().filter(|s| s.link() != "connection").count();
    // At most the exchanges in flight on each shed connection (16 commands per pipeline).
    assert!(
        unpaired as u64 <= 16 * shed,
        "{unpaired} of {} server spans without their client span ({shed} connections shed)",
        servers.len()
    );
}
