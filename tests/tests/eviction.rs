//! More live connections than the agent's table holds (`--max-connections`): a connection pushed
//! out of the table is picked up again at its next request, and its requests all give their spans
//! (none reported as unanswered because the table forgot it).

use std::time::Duration;

use tracer_tests::{peers::python, Agent, Gated, Peer, PyScript};

/// Opens N keep-alive connections, then R rounds of one GET per connection (`/evict/cIrR`),
/// 0.3 s apart; prints the connections' local ports.
const CLIENT: &str = r#"
import socket, sys, time
port, n, rounds = map(int, sys.argv[1:4])
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
def get(s, path):
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (path, port)).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
    while len(body) < n:
        body += s.recv(65536)
    return head.split()[1]
for r in range(rounds):
    for i, s in enumerate(conns):
        assert get(s, "/evict/c%dr%d" % (i, r)) == b"200"
    time.sleep(0.3)
print("ports " + " ".join(str(s.getsockname()[1]) for s in conns), flush=True)
"#;

#[test]
fn connections_pushed_out_of_the_table_are_picked_up_again() {
    const CONNS: usize = 60;
    const ROUNDS: usize = 3;
    let py = PyScript::start();
    let args: Vec<String> = vec![
        "-c".into(),
        CLIENT.into(),
        py.port.to_string(),
        CONNS.to_string(),
        ROUNDS.to_string(),
    ];
    let client = Gated::spawn("python keep-alive client", &python(), &args);
    let client_pid = client.pid();
    // Both ends are traced: 2 * CONNS live connections for a table of 20.
    let agent = Agent::json(&[py.pid(), client_pid], &["--max-connections", "20"]);
    let out = client.finish(Duration::from_secs(60));
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let ports: Vec<u16> = out
        .stdout
        .split_whitespace()
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), CONNS, "{}", out.describe());
    let client = Peer::new(client_pid, &py.exe.name, Some(&py.exe.path));
    let mut expected = Vec::new();
    for r in 0..ROUNDS {
        for (i, &local) in ports.iter().enumerate() {
            let path = format!("/evict/c{i}r{r}");
            expected.push(
                client
                    .client("GET", &path, py.port)
                    .status(200)
                    .req_body(0)
                    .resp_body(5),
            );
            expected.push(
                py.peer()
                    .server("GET", &path, py.port, Some(local))
                    .status(200)
                    .req_body(0)
                    .resp_body(5),
            );
        }
    }
    let stopped = {
        let done = |spans: &[tracer_tests::Span]| spans.len() >= expected.len();
        agent.wait_until(Duration::from_secs(30), done);
        agent.stop()
    };
    stopped.assert_clean_exit();
    stopped.assert_exact(&expected);
    assert!(
        stopped.stderr.contains("requests without response: 0;"),
        "{}",
        stopped.stderr
    );
}
