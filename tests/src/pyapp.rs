//! Python programs of the trace-linking tests (sources in `py/`): servers that call a downstream
//! server while serving, an OpenTelemetry-instrumented client, a concurrent load client. A server
//! runs on loopback or inside a network namespace of the test, and is up once it prints
//! `LISTENING port N`.

use std::process::Command;

use crate::{
    peers::{exe_info, python, start_python, ExeInfo},
    process::{Gated, Proc},
    span::Peer,
    util::{which, TempDir},
};

/// Thread-per-connection server calling a downstream server for each request (`py/relay.py`).
pub const RELAY: &str = include_str!("py/relay.py");
/// The same on one asyncio event loop (`py/async_relay.py`).
pub const ASYNC_RELAY: &str = include_str!("py/async_relay.py");
/// The same with requests read and handled by tasks of one shared thread pool
/// (`py/pool_relay.py`).
pub const POOL_RELAY: &str = include_str!("py/pool_relay.py");
/// Concurrent keep-alive clients, one token per request (`py/load_client.py`).
pub const LOAD_CLIENT: &str = include_str!("py/load_client.py");
/// A client instrumented with the OpenTelemetry SDK (`py/otel_client.py`).
pub const OTEL_CLIENT: &str = include_str!("py/otel_client.py");
/// A keep-alive server answering deterministic bodies and counting the `traceparent` headers it
/// receives, and a client sending it mixed traffic whose every answer is digested
/// (`py/injection_check.py`, modes `server` and `client`).
pub const INJECTION_CHECK: &str = include_str!("py/injection_check.py");

/// A python server from `source`, started with `args`.
pub struct PyApp {
    proc: Proc,
    pub port: u16,
    pub exe: ExeInfo,
    dir: TempDir,
}

impl PyApp {
    /// `python3 -u SCRIPT ARGS...` on the host.
    pub fn start(name: &str, source: &str, args: &[&str]) -> PyApp {
        Self::start_in(None, name, source, args)
    }

    /// The same inside a network namespace: `exec` is `ip netns exec NAME` as
    /// [`crate::netns::Namespaces::exec_args`] gives it.
    pub fn start_in(exec: Option<Vec<String>>, name: &str, source: &str, args: &[&str]) -> PyApp {
        let dir = TempDir::new("pyapp");
        let script = dir.write("app.py", source.as_bytes());
        let mut cmd = match exec {
            Some(exec) => {
                let mut c = Command::new(which("ip"));
                c.args(exec).arg(python());
                c
            }
            None => Command::new(python()),
        };
        cmd.arg("-u")
            .arg(&script)
            .args(args)
            .current_dir(dir.path());
        let (proc, port) = start_python(name, &mut cmd, "LISTENING port ", &dir.join("stderr.log"));
        let exe = exe_info(proc.pid);
        PyApp {
            proc,
            port,
            exe,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    pub fn peer(&self) -> Peer {
        Peer::new(self.pid(), &self.exe.name, Some(&self.exe.path))
    }

    /// What it wrote on stderr so far (its request log, tracebacks).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

/// A python client from `source` held at a gate (so the agent can be told its pid first); the
/// script is written to `dir`, which must outlive it.
pub fn gated_client(dir: &TempDir, name: &str, source: &str, args: &[String]) -> Gated {
    let script = dir.write(&format!("{name}.py"), source.as_bytes());
    let mut all = vec!["-u".to_string(), script.display().to_string()];
    all.extend(args.iter().cloned());
    Gated::spawn(name, &python(), &all)
}
