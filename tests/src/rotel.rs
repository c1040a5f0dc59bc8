//! rotel, a third-party OTLP collector (a Rust one, from PyPI's `rotel`), between the agent and the
//! in-test receiver: it listens for OTLP on gRPC and HTTP and forwards over gRPC. Missing rotel
//! fails the test (`cargo xtask setup --peers` installs it).

use std::{
    net::TcpStream,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    process::Proc,
    util::{free_port, TempDir},
};

/// How long rotel may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// `rotel-agent` ships inside the Python package (not on PATH): `$ROTEL_AGENT`, else ask Python
/// where the package is.
pub fn rotel_agent() -> PathBuf {
    if let Some(p) = std::env::var_os("ROTEL_AGENT") {
        return PathBuf::from(p);
    }
    let python = crate::peers::python();
    let out = Command::new(&python)
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output();
    if let Ok(o) = out {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if o.status.success() && p.is_file() {
            return p;
        }
    }
    panic!("rotel is not installed for {python}: `pip install rotel` (done by `cargo xtask setup --peers`), or set ROTEL_AGENT");
}

/// A running `rotel-agent`, killed (its process group) on drop.
pub struct Rotel {
    proc: Proc,
    /// Its OTLP receivers on 127.0.0.1.
    pub grpc_port: u16,
    pub http_port: u16,
    dir: TempDir,
}

impl Rotel {
    /// Receive OTLP on two free loopback ports and forward traces to `forward_to` (an OTLP/gRPC
    /// base URL), in batches of at most 100 ms. rotel cannot listen on port 0: the ports are
    /// taken free from the kernel and handed over, again on a conflict.
    pub fn start(forward_to: &str) -> Rotel {
        let bin = rotel_agent();
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let dir = TempDir::new("rotel");
            let (grpc_port, http_port) = (free_port(), free_port());
            if grpc_port == http_port {
                continue;
            }
            let log = std::fs::File::create(dir.join("rotel.log")).unwrap();
            let mut cmd = Command::new(&bin);
            cmd.args(["start", "--otlp-grpc-endpoint"])
                .arg(format!("127.0.0.1:{grpc_port}"))
                .arg("--otlp-http-endpoint")
                .arg(format!("127.0.0.1:{http_port}"))
                .args(["--exporter", "otlp", "--otlp-exporter-endpoint", forward_to])
                .args(["--batch-timeout", "100ms"])
                // Its own view of what it received, for failure messages.
                .args(["--debug-log", "traces", "--debug-log-verbosity", "detailed"])
                .arg("--pid-file")
                .arg(dir.join("rotel.pid"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // Only the command line configures it: none of a developer's ROTEL_* settings.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("ROTEL_") {
                    cmd.env_remove(k);
                }
            }
            let mut r = Rotel {
                proc: Proc::spawn("rotel-agent", &mut cmd),
                grpc_port,
                http_port,
                dir,
            };
            if r.wait_listening() {
                return r;
            }
            last_log = r.log();
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("rotel-agent did not start:\n{last_log}");
    }

    /// True once both ports accept; false if rotel exited first; panics after `START_TIMEOUT`.
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + START_TIMEOUT;
        for port in [self.grpc_port, self.http_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if self.proc.try_wait().is_some() {
                    return false;
                }
                assert!(
                    Instant::now() < deadline,
                    "rotel-agent does not listen on 127.0.0.1:{port} after {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        true
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    /// Base URL of its OTLP/gRPC receiver.
    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Base URL of its OTLP/HTTP receiver (traces at `/v1/traces`).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Everything it logged so far (`--debug-log traces` shows each span it received).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rotel.log")).unwrap_or_default()
    }
}
