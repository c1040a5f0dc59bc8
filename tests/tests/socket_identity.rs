//! A connection is its socket, whichever process and fd move its bytes: servers that answer from
//! a forked child (inetd style), on a `dup`ed fd, give the same spans as any other.

use std::{process::Command, time::Duration};

use rstest::rstest;

use tracer_tests::{
    free_port,
    peers::{exe_info, python, start_python},
    Agent, Curl, Expect, Peer, Proc, TempDir,
};

/// busybox httpd in the foreground: it accepts each connection, forks, and the child moves the
/// socket to fd 0, dups it to fd 1, reads the request on 0 and answers on 1 (`--pid` names only
/// the parent: its children are traced too).
#[test]
fn busybox_httpd_answers_from_a_forked_child() {
    let www = TempDir::new("www");
    www.file_of_size("a.txt", 123);
    www.file_of_size("b.txt", 4567);
    let busybox = tracer_tests::peers::installed("busybox");
    let (mut server, port) = (0..5)
        .find_map(|_| {
            let port = free_port();
            let mut cmd = Command::new(&busybox);
            cmd.args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
                .arg(www.path());
            let mut p = Proc::spawn("busybox httpd", &mut cmd);
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some((p, port));
                }
                if p.try_wait().is_some() {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        })
        .expect("busybox httpd did not start");
    let urls = [
        format!("http://127.0.0.1:{port}/a.txt"),
        format!("http://127.0.0.1:{port}/b.txt"),
    ];
    let curl = Curl::new(&[], &urls);
    let curl_pid = curl.pid();
    let agent = Agent::json(&[server.pid, curl_pid], &[]);
    let transfers = curl.run();
    let mut expected = Vec::new();
    for (t, (path, size)) in transfers.iter().zip([("/a.txt", 123u64), ("/b.txt", 4567)]) {
        assert_eq!((t.code, t.size_download), (200, size));
        expected.push(
            Peer::curl(curl_pid)
                .client("GET", path, port)
                .status(200)
                .req_body(0)
                .resp_body(size),
        );
        expected.push(
            Expect::server_in_child_of(
                format!("server span of a busybox child GET {path}"),
                server.pid,
            )
            .get(path)
            .status(200)
            .req_body(0)
            .resp_body(size)
            .exe("busybox")
            .peer("127.0.0.1", t.local_port)
            .server_addr("127.0.0.1", port),
        );
    }
    agent.expect_exact(&expected);
    server.kill();
}

/// Reads each request in the process that accepted it, then forks: the child answers on a
/// `dup` of the socket and exits; the parent closes its fd right after the fork (the socket lives
/// on in the child).
const FORK_SERVER: &str = r#"
import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print("LISTENING port %d" % s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    path = data.split(b" ")[1] if data else b"/"
    body = b"forked answer for " + path + b"\n"
    pid = os.fork()
    if pid == 0:
        s.close()
        fd = os.dup(c.fileno())
        c.close()
        os.write(fd, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        os.close(fd)
        os._exit(0)
    c.close()
    os.waitpid(pid, 0)
"#;

/// Before each accept, reads a file and closes it: the accepted socket gets the fd number the
/// file just had, which the kernel's fd cache knew as a plain file.
const FILE_THEN_SOCKET_SERVER: &str = r#"
import os, socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print("LISTENING port %d" % s.getsockname()[1], flush=True)
while True:
    fd = os.open(__file__, os.O_RDONLY)
    while os.read(fd, 4096):
        pass
    os.close(fd)
    c, _ = s.accept()
    assert c.fileno() == fd, (c.fileno(), fd)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    path = data.split(b" ")[1] if data else b"/"
    body = b"answer for " + path + b"\n"
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    c.close()
"#;

/// A python server (`script`) answers GET /one and GET /two, each with `answer` and its path:
/// curl's client spans and the server process's server spans, whichever fd moved the bytes (the
/// request is read by the process that accepted it, so its connection is announced as that
/// process's).
#[rstest]
#[case::forked_child_answers_on_a_duped_fd(FORK_SERVER, "forked answer for ")]
#[case::socket_on_the_fd_number_of_a_file_just_read(FILE_THEN_SOCKET_SERVER, "answer for ")]
fn python_server_answers_each_get_once(#[case] script: &str, #[case] answer: &str) {
    let dir = TempDir::new("pysrv");
    let script = dir.write("server.py", script.as_bytes());
    let mut cmd = Command::new(python());
    cmd.arg("-u").arg(&script);
    let (server, port) = start_python(
        "python server",
        &mut cmd,
        "LISTENING port ",
        &dir.join("stderr.log"),
    );
    let exe = exe_info(server.pid);
    let urls = [
        format!("http://127.0.0.1:{port}/one"),
        format!("http://127.0.0.1:{port}/two"),
    ];
    let curl = Curl::new(&[], &urls);
    let curl_pid = curl.pid();
    let agent = Agent::json(&[server.pid, curl_pid], &[]);
    let transfers = curl.run();
    let mut expected = Vec::new();
    for (t, path) in transfers.iter().zip(["/one", "/two"]) {
        let size = format!("{answer}{path}\n").len() as u64;
        assert_eq!((t.code, t.size_download), (200, size));
        expected.push(
            Peer::curl(curl_pid)
                .client("GET", path, port)
                .status(200)
                .req_body(0)
                .resp_body(size),
        );
        expected.push(
            Peer::new(server.pid, &exe.name, Some(&exe.path))
                .server("GET", path, port, Some(t.local_port))
                .status(200)
                .req_body(0)
                .resp_body(size),
        );
    }
    agent.expect_exact(&expected);
}

/// Accepts connections and hands each over a UNIX socket (`SCM_RIGHTS`) to a worker process,
/// which answers it. Before each hand-over the worker reads a file, on the fd number the socket
/// then gets.
const PASSING_SERVER: &str = r#"
import os, socket, sys
here, there = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
if os.fork() == 0:
    here.close()
    s.close()
    while True:
        f = os.open(sys.argv[0] if sys.argv[0] != "-c" else "/etc/hostname", os.O_RDONLY)
        os.read(f, 100)
        os.close(f)
        _, fds, _, _ = socket.recv_fds(there, 16, 1)
        if not fds:
            os._exit(0)
        c = socket.socket(fileno=fds[0])
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        body = b"worker answer\n"
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        c.close()
there.close()
print("LISTENING port %d" % s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    socket.send_fds(here, [b"x"], [c.fileno()])
    c.close()
"#;

#[test]
fn connections_handed_over_scm_rights() {
    let dir = TempDir::new("passsrv");
    let script = dir.write("server.py", PASSING_SERVER.as_bytes());
    let mut cmd = Command::new(python());
    cmd.arg("-u").arg(&script);
    let (server, port) = start_python(
        "python fd-passing server",
        &mut cmd,
        "LISTENING port ",
        &dir.join("stderr.log"),
    );
    let workers = tracer_tests::util::children_of(server.pid);
    assert_eq!(workers.len(), 1, "the worker process");
    let exe = exe_info(server.pid);
    let urls = [
        format!("http://127.0.0.1:{port}/first"),
        format!("http://127.0.0.1:{port}/second"),
    ];
    let curl = Curl::new(&[], &urls);
    let curl_pid = curl.pid();
    let agent = Agent::json(&[server.pid, workers[0], curl_pid], &[]);
    let transfers = curl.run();
    let mut expected = Vec::new();
    for (t, path) in transfers.iter().zip(["/first", "/second"]) {
        assert_eq!((t.code, t.size_download), (200, 14));
        expected.push(
            Peer::curl(curl_pid)
                .client("GET", path, port)
                .status(200)
                .req_body(0)
                .resp_body(14),
        );
        expected.push(
            Peer::new(workers[0], &exe.name, Some(&exe.path))
                .server("GET", path, port, Some(t.local_port))
                .status(200)
                .req_body(0)
                .resp_body(14),
        );
    }
    agent.expect_exact(&expected);
}
