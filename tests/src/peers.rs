//! The real programs the tests trace: python3 http.server, a small python HTTP/1.1 server script,
//! nginx, curl. Each listens on an ephemeral loopback port and is stopped (its process group
//! killed) when dropped.

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    netns::Namespaces,
    process::{line_channel, Gated, Output, Proc},
    span::Peer,
    util::{children_of, exe_of, free_port, poll, which, TempDir},
};

/// How long a peer may take to start.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The python interpreter: `$PYTHON` or `python3` from PATH.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn no_proxy(cmd: &mut Command) -> &mut Command {
    for v in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(v);
    }
    cmd
}

/// Executable name and path of a running process, as the agent should report them.
pub struct ExeInfo {
    pub name: String,
    pub path: String,
}

pub fn exe_info(pid: u32) -> ExeInfo {
    let p = exe_of(pid);
    ExeInfo {
        name: p.file_name().unwrap().to_string_lossy().into_owned(),
        path: p.display().to_string(),
    }
}

/// Start a python process that prints a line containing `marker` followed by its port, and
/// return it with that port.
pub fn start_python(name: &str, cmd: &mut Command, marker: &str, log: &Path) -> (Proc, u16) {
    let log_file = std::fs::File::create(log).unwrap();
    no_proxy(cmd)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file);
    let mut proc = Proc::spawn(name, cmd);
    let lines = line_channel(proc.child_mut().stdout.take().unwrap());
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => {
                if let Some(rest) = l.split(marker).nth(1) {
                    let port: u16 = rest
                        .split(|c: char| !c.is_ascii_digit())
                        .find(|s| !s.is_empty())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("{name}: no port in {l:?}"));
                    // Keep draining its stdout in the background (the channel's thread does).
                    return (proc, port);
                }
            }
            Err(_) => {
                if let Some(s) = proc.try_wait() {
                    panic!(
                        "{name} exited ({s}) before listening:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
                if Instant::now() >= deadline {
                    panic!(
                        "{name} did not print its port within {START_TIMEOUT:?}:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
        }
    }
}

/// `python3 -m http.server 0 --bind 127.0.0.1 --directory DIR --protocol HTTP/1.1`.
pub struct PyHttpServer {
    proc: Proc,
    pub port: u16,
    pub exe: ExeInfo,
    /// Host part of its URLs: the bound address (127.0.0.1 when bound to `::`).
    pub host: String,
    _logdir: TempDir,
}

impl PyHttpServer {
    /// Serve `dir` over HTTP/1.1 (keep-alive) on 127.0.0.1.
    pub fn start(dir: &Path) -> Self {
        Self::start_on(dir, "127.0.0.1")
    }

    /// Serve `dir` over HTTP/1.1 on address `bind` (`::1`, or `::`: dual stack).
    pub fn start_on(dir: &Path, bind: &str) -> Self {
        let logdir = TempDir::new("pyhttp-log");
        let mut cmd = Command::new(python());
        cmd.args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            bind,
            "--protocol",
            "HTTP/1.1",
            "--directory",
        ])
        .arg(dir)
        .current_dir(dir);
        let (proc, port) = start_python(
            "python3 -m http.server",
            &mut cmd,
            " port ",
            &logdir.join("stderr.log"),
        );
        let exe = exe_info(proc.pid);
        let host = match bind {
            "::" => "127.0.0.1".to_string(),
            b if b.contains(':') => format!("[{b}]"),
            b => b.to_string(),
        };
        PyHttpServer {
            proc,
            port,
            exe,
            host,
            _logdir: logdir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }

    pub fn peer(&self) -> Peer {
        Peer::new(self.pid(), &self.exe.name, Some(&self.exe.path))
    }
}

/// The python HTTP/1.1 server of `PyScript`: BaseHTTPRequestHandler, one thread per connection.
///
/// - `GET /chunked`: 200, `Transfer-Encoding: chunked`, the chunks of `CHUNKS` (each its own
///   write, 20 ms apart), payload `CHUNKED_PAYLOAD` bytes.
/// - `POST /upload`: reads `Content-Length` bytes (answering `100 Continue` when asked), answers
///   200 with the body `received N bytes\n`.
/// - `GET /hang`: reads the request and never answers.
/// - `GET /close-delimited`: 200, `Connection: close`, no length: 1500 bytes then close.
/// - `GET /nocontent`: 204.
/// - `GET /split`: 200, the head in 9-byte writes, a 10-byte body.
/// - anything else: 200 with the body `echo\n` (Content-Length).
/// - `PROPFIND`, `PURGE`, `REPORT`, `QUERY` (methods outside the usual nine): reads
///   `Content-Length` bytes, answers `PROPFIND` with 207 and the others with 200, the body
///   `METHOD N\n` (N: request body bytes).
pub const SCRIPT: &str = r#"
import http.server, sys, time

CHUNKS = [100, 1000, 7, 2000, 1]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        if self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i, size in enumerate(CHUNKS):
                data = bytes([97 + i]) * size
                self.wfile.write(b"%x\r\n" % size + data + b"\r\n")
                self.wfile.flush()
                time.sleep(0.02)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        elif self.path.startswith("/hang"):
            time.sleep(120)
            self.close_connection = True
        elif self.path.startswith("/close-delimited"):
            # No Content-Length, not chunked: the body ends when the connection closes.
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(3):
                self.wfile.write(bytes([65 + i]) * 500)
                time.sleep(0.02)
            self.close_connection = True
        elif self.path.startswith("/nocontent"):
            self.send_response(204)
            self.end_headers()
        elif self.path.startswith("/split"):
            # The response head in many small writes, then the body.
            head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Pad: " + b"p" * 300
                    + b"\r\nContent-Length: 10\r\n\r\n")
            for i in range(0, len(head), 9):
                self.wfile.write(head[i:i + 9])
                time.sleep(0.002)
            self.wfile.write(b"0123456789")
        else:
            body = b"echo\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        got = 0
        while got < n:
            data = self.rfile.read(min(65536, n - got))
            if not data:
                break
            got += len(data)
        body = b"received %d bytes\n" % got
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def answer_other_method(self):
        n = int(self.headers.get("Content-Length", "0"))
        got = len(self.rfile.read(n)) if n else 0
        body = b"%s %d\n" % (self.command.encode(), got)
        self.send_response(207 if self.command == "PROPFIND" else 200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PROPFIND = do_PURGE = do_REPORT = do_QUERY = answer_other_method

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print("LISTENING port %d" % server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A python client that sends `GET PATH` (with a 200-byte header) to 127.0.0.1:PORT: the first
/// FIRST bytes in one write, the rest in 7-byte writes 2 ms apart; reads a Content-Length
/// response and prints `status S len N local P`. Arguments: PORT PATH FIRST.
pub const SPLIT_CLIENT: &str = r#"
import socket, sys, time
port, path, first = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: split-client/1.0\r\nX-Pad: %s\r\n\r\n"
       % (path, port, "p" * 200)).encode()
s.sendall(req[:first])
for i in range(first, len(req), 7):
    time.sleep(0.002)
    s.sendall(req[i:i + 7])
data = b""
while b"\r\n\r\n" not in data:
    data += s.recv(65536)
head, body = data.split(b"\r\n\r\n", 1)
n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
while len(body) < n:
    body += s.recv(65536)
print("status %s len %d local %d" % (head.split()[1].decode(), len(body), s.getsockname()[1]), flush=True)
s.close()
"#;

/// A python client on a raw socket to 127.0.0.1:PORT that runs STEPS (JSON, argument 2): each
/// step sends its `send` strings, one `sendall` each (pipelining when a step sends several
/// requests), then reads `read` responses (Content-Length bodies) and prints `status S len N`
/// for each; at the end it prints `local P`. Arguments: PORT STEPS [RECV] (bytes asked of each
/// `recv`, 65536 by default).
pub const RAW_CLIENT: &str = r#"
import json, socket, sys
port, steps = int(sys.argv[1]), json.loads(sys.argv[2])
recv_size = int(sys.argv[3]) if len(sys.argv) > 3 else 65536
s = socket.create_connection(("127.0.0.1", port))
buf = b""
def fill():
    global buf
    data = s.recv(recv_size)
    if not data:
        sys.exit("connection closed; got so far: %r" % buf)
    buf += data
for step in steps:
    for text in step["send"]:
        s.sendall(text.encode("latin-1"))
    for _ in range(step["read"]):
        while b"\r\n\r\n" not in buf:
            fill()
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        n = [int(l.split(b":")[1]) for l in lines if l.lower().startswith(b"content-length:")][0]
        while len(rest) < n:
            fill()
            head, rest = buf.split(b"\r\n\r\n", 1)
        buf = rest[n:]
        print("status %s len %d" % (lines[0].split()[1].decode(), n), flush=True)
print("local %d" % s.getsockname()[1], flush=True)
s.close()
"#;

/// Sizes of the chunks `GET /chunked` sends, and their total.
pub const CHUNKS: [u64; 5] = [100, 1000, 7, 2000, 1];
pub const CHUNKED_PAYLOAD: u64 = 100 + 1000 + 7 + 2000 + 1;

/// The body `POST /upload` answers for `n` bytes received.
pub fn upload_answer_len(n: u64) -> u64 {
    format!("received {n} bytes\n").len() as u64
}

pub struct PyScript {
    proc: Proc,
    pub port: u16,
    pub exe: ExeInfo,
    _dir: TempDir,
}

impl PyScript {
    pub fn start() -> Self {
        Self::start_with_env(&[])
    }

    /// Started with these extra environment variables (e.g. `OTEL_SERVICE_NAME`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("pyscript");
        let script = dir.write("server.py", SCRIPT.as_bytes());
        let mut cmd = Command::new(python());
        cmd.arg("-u").arg(&script).current_dir(dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (proc, port) = start_python(
            "python3 server.py",
            &mut cmd,
            "LISTENING port ",
            &dir.join("stderr.log"),
        );
        let exe = exe_info(proc.pid);
        PyScript {
            proc,
            port,
            exe,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn peer(&self) -> Peer {
        Peer::new(self.pid(), &self.exe.name, Some(&self.exe.path))
    }
}

/// nginx (the Debian package) with a config of its own in a temp dir: a master and one worker,
/// `daemon off`, static files from `www`, and `location /proxy/` proxied to an upstream (HTTP/1.1)
/// when given.
pub struct Nginx {
    proc: Proc,
    pub port: u16,
    /// The address it listens on.
    pub addr: IpAddr,
    pub worker: u32,
    pub exe: ExeInfo,
    dir: TempDir,
}

/// Port nginx listens on inside a network namespace of the test (private: no conflicts).
const NETNS_PORT: u16 = 8080;

impl Nginx {
    /// On 127.0.0.1 (a free port), proxying to 127.0.0.1:`upstream` when given.
    pub fn start(www: &Path, upstream: Option<u16>) -> Self {
        Self::start_with(www, upstream, "")
    }

    /// `start`, with `http_conf` added to its `http` block (e.g. larger header buffers).
    pub fn start_with(www: &Path, upstream: Option<u16>, http_conf: &str) -> Self {
        let up = upstream.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
        Self::launch(www, up, None, http_conf)
    }

    /// Inside network namespace `label` of `ns`, listening on `addr`:8080, proxying to `upstream`.
    pub fn start_in(
        ns: &Namespaces,
        label: &str,
        addr: IpAddr,
        www: &Path,
        upstream: SocketAddr,
    ) -> Self {
        Self::launch(www, Some(upstream), Some((ns, label, addr)), "")
    }

    fn launch(
        www: &Path,
        upstream: Option<SocketAddr>,
        netns: Option<(&Namespaces, &str, IpAddr)>,
        http_conf: &str,
    ) -> Self {
        let bin = which("nginx");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let dir = TempDir::new("nginx");
            for d in [
                "tmp/body",
                "tmp/proxy",
                "tmp/fastcgi",
                "tmp/uwsgi",
                "tmp/scgi",
                "logs",
            ] {
                std::fs::create_dir_all(dir.join(d)).unwrap();
            }
            let (addr, port) = match netns {
                Some((_, _, addr)) => (addr, NETNS_PORT),
                None => (IpAddr::from([127, 0, 0, 1]), free_port()),
            };
            let d = dir.path().display();
            let proxy = upstream.map_or(String::new(), |up| {
                format!(
                    "        location /proxy/ {{\n            proxy_pass http://{up}/;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n        }}\n"
                )
            });
            let conf = format!(
                r#"daemon off;
master_process on;
worker_processes 1;
user root;
error_log {d}/logs/error.log notice;
pid {d}/nginx.pid;
events {{ worker_connections 128; }}
http {{
    access_log off;
    {http_conf}
    default_type application/octet-stream;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen {listen};
        server_name localhost;
        root {www};
{proxy}    }}
}}
"#,
                www = www.display(),
                listen = SocketAddr::new(addr, port)
            );
            let conf_path = dir.write("nginx.conf", conf.as_bytes());
            let mut cmd = match netns {
                Some((ns, label, _)) => {
                    let mut c = Command::new(which("ip"));
                    c.args(ns.exec_args(label)).arg(&bin);
                    c
                }
                None => Command::new(&bin),
            };
            cmd.arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.join("logs/error.log"));
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("logs/stderr.log")).unwrap());
            let mut proc = Proc::spawn("nginx", &mut cmd);
            let log = |dir: &TempDir| {
                format!(
                    "{}{}",
                    std::fs::read_to_string(dir.join("logs/stderr.log")).unwrap_or_default(),
                    std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default()
                )
            };
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if proc.try_wait().is_some() {
                    break;
                }
                // Listening, and its worker forked.
                let listening = match netns {
                    Some((ns, label, _)) => ns.wait_listening(
                        label,
                        SocketAddr::new(addr, port),
                        Duration::from_millis(50),
                    ),
                    None => TcpStream::connect(("127.0.0.1", port)).is_ok(),
                };
                if listening {
                    let master = proc.pid;
                    let workers = poll(START_TIMEOUT, || {
                        let c = children_of(master);
                        (!c.is_empty()).then_some(c)
                    })
                    .unwrap_or_else(|| panic!("nginx has no worker process\n{}", log(&dir)));
                    assert_eq!(
                        workers.len(),
                        1,
                        "nginx: one worker expected, got {workers:?}"
                    );
                    let exe = exe_info(master);
                    return Nginx {
                        proc,
                        port,
                        addr,
                        worker: workers[0],
                        exe,
                        dir,
                    };
                }
                if Instant::now() >= deadline {
                    panic!(
                        "nginx did not listen on {addr}:{port} within {START_TIMEOUT:?}\n{}",
                        log(&dir)
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last_log = log(&dir);
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("nginx did not start:\n{last_log}");
    }

    pub fn master(&self) -> u32 {
        self.proc.pid
    }

    /// Master and worker: the pids to trace.
    pub fn pids(&self) -> Vec<u32> {
        vec![self.proc.pid, self.worker]
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", SocketAddr::new(self.addr, self.port))
    }

    /// The worker, which serves and proxies.
    pub fn peer(&self) -> Peer {
        Peer::new(self.worker, &self.exe.name, Some(&self.exe.path))
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// One transfer as curl reports it with `-w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub local_port: u16,
    pub code: u16,
    pub size_download: u64,
    pub size_upload: u64,
}

/// A curl invocation held at a gate until released (so the agent can be started with its pid).
pub struct Curl {
    gated: Gated,
    urls: usize,
}

/// What `Curl` asks curl to print after each transfer (see [`parse_transfers`]).
pub const CURL_WRITE_OUT: &str =
    "transfer: %{local_port} %{http_code} %{size_download} %{size_upload}\n";

/// `curl -sS --noproxy * --max-time 30 -w WRITE_OUT OPTS...`, the program path first: the
/// harness's curl, whose `-w` line `parse_transfers` reads.
pub fn curl_command(opts: &[&str]) -> Vec<String> {
    let mut args = vec![
        which("curl").display().to_string(),
        "-sS".into(),
        "--noproxy".into(),
        "*".into(),
        "--max-time".into(),
        "30".into(),
        "-w".into(),
        CURL_WRITE_OUT.into(),
    ];
    args.extend(opts.iter().map(|s| s.to_string()));
    args
}

impl Curl {
    /// `curl -sS OPTS... -o /dev/null URL...` (every body discarded), with `-w` reporting each
    /// transfer's local port, status and sizes.
    pub fn new(opts: &[&str], urls: &[String]) -> Curl {
        Self::new_with_env(opts, urls, &[])
    }

    /// `new`, curl getting these extra environment variables (e.g. `OTEL_SERVICE_NAME`).
    pub fn new_with_env(opts: &[&str], urls: &[String], env: &[(&str, &str)]) -> Curl {
        let mut args = curl_command(opts);
        let curl = args.remove(0);
        for u in urls {
            args.push("-o".into());
            args.push("/dev/null".into());
            args.push(u.clone());
        }
        let gated = Gated::spawn_with_env("curl", &curl, &args, env);
        Curl {
            gated,
            urls: urls.len(),
        }
    }

    pub fn get(url: String) -> Curl {
        Self::new(&[], &[url])
    }

    pub fn pid(&self) -> u32 {
        self.gated.pid()
    }

    /// Let it run in the background.
    pub fn release(&mut self) {
        self.gated.release();
    }

    /// Run it (if not released yet) to the end; it must exit 0. Its transfers, in URL order.
    pub fn run(self) -> Vec<Transfer> {
        let urls = self.urls;
        let out = self.gated.finish(Duration::from_secs(40));
        assert_eq!(out.code(), Some(0), "curl failed\n{}", out.describe());
        let t = parse_transfers(&out);
        assert_eq!(
            t.len(),
            urls,
            "curl: one -w line per URL expected\n{}",
            out.describe()
        );
        t
    }

    /// Run it to the end whatever its exit status.
    pub fn output(self) -> Output {
        self.gated.finish(Duration::from_secs(40))
    }

    pub fn gated_mut(&mut self) -> &mut Gated {
        &mut self.gated
    }
}

pub fn parse_transfers(out: &Output) -> Vec<Transfer> {
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("transfer: "))
        .map(|l| {
            let f: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            Transfer {
                local_port: f[0] as u16,
                code: f[1] as u16,
                size_download: f[2],
                size_upload: f[3],
            }
        })
        .collect()
}

/// The canonical path of an installed program (what `/proc/PID/exe` shows when it runs).
pub fn installed(program: &str) -> PathBuf {
    std::fs::canonicalize(which(program)).unwrap()
}
