//! A real `redis-server` (Debian's) on a free loopback port, and the Redis clients of the tests:
//! `redis-cli` and redis-py scenarios (`py/redis_client.py`). Redis cannot listen on port 0, so
//! a port is picked free and the start retried on a conflict. Stopped by pid (its process group)
//! when dropped.

use std::{
    io::Write,
    net::TcpStream,
    process::{ChildStdin, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use crate::{
    peers::{exe_info, python, ExeInfo, START_TIMEOUT},
    process::{line_channel, Gated, Proc},
    span::Peer,
    util::{free_port, which, TempDir},
};

/// The redis-py scenarios.
pub const REDIS_CLIENT: &str = include_str!("py/redis_client.py");
/// An HTTP server reading from Redis while it serves (`py/redis_http.py`; a `PyApp`).
pub const REDIS_HTTP: &str = include_str!("py/redis_http.py");

pub struct RedisServer {
    proc: Proc,
    pub port: u16,
    pub exe: ExeInfo,
    dir: TempDir,
}

impl RedisServer {
    /// No persistence, no protection (loopback only), its own directory.
    pub fn start() -> Self {
        let bin = which("redis-server");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let dir = TempDir::new("redis");
            let port = free_port();
            let conf = format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\nsave \"\"\nappendonly no\n\
                 daemonize no\ndir {d}\nlogfile {d}/redis.log\n",
                d = dir.path().display()
            );
            let conf_path = dir.write("redis.conf", conf.as_bytes());
            let mut cmd = Command::new(&bin);
            cmd.arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut proc = Proc::spawn("redis-server", &mut cmd);
            let deadline = Instant::now() + START_TIMEOUT;
            while proc.try_wait().is_none() && Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let exe = exe_info(proc.pid);
                    return RedisServer {
                        proc,
                        port,
                        exe,
                        dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last_log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("redis-server did not start:\n{last_log}");
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    pub fn peer(&self) -> Peer {
        Peer::new(self.pid(), &self.exe.name, Some(&self.exe.path))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }
}

/// The redis-py client of pid `pid` (a gated one: its executable is the python interpreter once
/// released, which may be behind a shim or a symlink), as its spans describe it.
pub fn python_peer(pid: u32) -> Peer {
    static EXE: OnceLock<String> = OnceLock::new();
    let exe = EXE.get_or_init(|| {
        let out = Command::new(python())
            .args([
                "-c",
                "import os, sys; print(os.path.realpath(sys.executable))",
            ])
            .output()
            .expect("asking python for its executable");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    let name = exe.rsplit('/').next().unwrap_or(exe);
    Peer::new(pid, name, Some(exe))
}

/// `redis-cli -p PORT ARGS...` held at a gate.
pub fn redis_cli(port: u16, args: &[&str]) -> Gated {
    let mut all = vec!["-p".to_string(), port.to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    Gated::spawn("redis-cli", &which("redis-cli").display().to_string(), &all)
}

/// A redis-py scenario (see `py/redis_client.py`) held at a gate; the script lives in `dir`.
pub fn redis_py(dir: &TempDir, args: &[String]) -> Gated {
    crate::pyapp::gated_client(dir, "redis_client", REDIS_CLIENT, args)
}

/// The `before` scenario: connected and answered once before the agent starts, it goes on when
/// `resume` is called.
pub struct EarlyClient {
    proc: Proc,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    pub exe: ExeInfo,
    _dir: TempDir,
}

impl EarlyClient {
    /// Started and waited for until it printed READY (its connection is open and was used).
    pub fn start(port: u16) -> Self {
        let dir = TempDir::new("redis-early");
        let script = dir.write("redis_client.py", REDIS_CLIENT.as_bytes());
        let mut cmd = Command::new(python());
        cmd.arg("-u")
            .arg(&script)
            .args(["before", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut proc = Proc::spawn("redis_client", &mut cmd);
        let stdin = proc.child_mut().stdin.take();
        let lines = line_channel(proc.child_mut().stdout.take().unwrap());
        let ready = lines.recv_timeout(START_TIMEOUT);
        assert_eq!(
            ready.as_deref(),
            Ok("READY"),
            "the early client did not get ready"
        );
        let exe = exe_info(proc.pid);
        EarlyClient {
            proc,
            stdin,
            lines,
            exe,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    pub fn peer(&self) -> Peer {
        Peer::new(self.pid(), &self.exe.name, Some(&self.exe.path))
    }

    /// Let it send the rest, and wait for it to finish.
    pub fn resume(mut self) {
        let mut stdin = self.stdin.take().expect("resumed twice");
        stdin.write_all(b"go\n").expect("resuming the early client");
        drop(stdin);
        let done = self.lines.recv_timeout(START_TIMEOUT);
        assert_eq!(
            done.as_deref(),
            Ok("DONE"),
            "the early client did not finish"
        );
        self.proc.wait_timeout(START_TIMEOUT);
    }
}
