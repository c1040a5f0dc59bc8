//! The programs the benchmark drives: nginx, redis-server, the agent variants, bpftrace, a Flask
//! service, the OTLP sink. Each is started here on a loopback ephemeral port and stopped by its
//! own pid.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::procs::{cpu_secs, free_port, wait_port, write, Proc};

pub const BODY: &str = "<html><body>hello from the tracer benchmark</body></html>\n";

/// nginx with one process (`master_process off`), static small file, keep-alive without limits.
pub fn nginx(dir: &Path) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let www = dir.join("www");
    write(&www.join("index.html"), BODY)?;
    for d in [
        "tmp/body",
        "tmp/proxy",
        "tmp/fastcgi",
        "tmp/uwsgi",
        "tmp/scgi",
        "logs",
    ] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let conf = format!(
        r#"daemon off;
master_process off;
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 15000; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type text/html;
    server {{
        listen 127.0.0.1:{port};
        location / {{ root {www}; }}
    }}
}}
"#,
        d = dir.display(),
        www = www.display()
    );
    let conf_path = dir.join("nginx.conf");
    write(&conf_path, &conf)?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(&conf_path).arg("-p").arg(dir);
    let p = Proc::start("nginx", &mut cmd, false)?;
    wait_port(port, Duration::from_secs(10))?;
    Ok((p, port))
}

/// redis-server on loopback, nothing persisted (no RDB snapshots, no AOF), files in `dir`.
pub fn redis(dir: &Path) -> Result<(Proc, u16)> {
    let port = free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir);
    let p = Proc::start("redis-server", &mut cmd, false)?;
    wait_port(port, Duration::from_secs(10))?;
    Ok((p, port))
}

/// The OTLP/HTTP sink (this program in `--otlp-sink` mode).
pub fn sink() -> Result<(Proc, u16)> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["bench", "--otlp-sink"]);
    let mut p = Proc::start("otlp-sink", &mut cmd, true)?;
    let line = p.wait_line("port ", Duration::from_secs(10))?;
    let port = line.trim_start_matches("port ").trim().parse()?;
    Ok((p, port))
}

/// What the agent reported about one run.
#[derive(Debug, Clone, Default)]
pub struct AgentReport {
    /// CPU seconds between "ready" and the stop request.
    pub cpu: f64,
    pub spans: u64,
    pub ring_drops: u64,
    /// Spans dropped before export (export queue overflow, OTLP queue full or failed).
    pub export_drops: u64,
    /// Connections the agent stopped capturing for overload, and their records it discarded.
    pub conns_shed: u64,
    pub records_shed: u64,
    pub summary: Vec<String>,
}

/// A running agent (variant b or c).
pub struct Agent {
    pub proc: Proc,
    cpu0: f64,
}

impl Agent {
    pub fn start(bin: &Path, args: &[String]) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(args).env("TRACER_LOG", "error");
        let mut proc = Proc::start("tracer", &mut cmd, false)?;
        proc.wait_line("tracer: ready", Duration::from_secs(60))?;
        let cpu0 = cpu_secs(proc.pid())?;
        Ok(Self { proc, cpu0 })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// CPU seconds since ready.
    pub fn cpu(&self) -> f64 {
        cpu_secs(self.pid())
            .map(|c| c - self.cpu0)
            .unwrap_or(f64::NAN)
    }

    /// Stop (SIGINT: flush and summary) and parse the exit summary.
    pub fn finish(mut self) -> Result<AgentReport> {
        let cpu = self.cpu();
        let lines = self.proc.stop_with(libc::SIGINT, Duration::from_secs(60));
        let summary: Vec<String> = lines
            .iter()
            .filter(|l| l.starts_with("tracer:"))
            .cloned()
            .collect();
        let spans = summary
            .iter()
            .find_map(|l| {
                l.strip_prefix("tracer: ")?
                    .split_once(" spans from ")
                    .map(|(n, _)| n.trim().parse::<u64>().ok())
            })
            .flatten()
            .with_context(|| {
                format!(
                    "no span count in the agent's exit summary:\n{}",
                    lines.join("\n")
                )
            })?;
        let num_after = |key: &str| -> u64 {
            summary
                .iter()
                .find_map(|l| {
                    let i = l.find(key)?;
                    l[i + key.len()..]
                        .split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        let ring_drops = num_after("ring buffer data=") + num_after(" conn=");
        let export_drops = num_after("queue_full=") + num_after("export_failed=");
        Ok(AgentReport {
            cpu,
            spans,
            ring_drops,
            export_drops,
            conns_shed: num_after("connections no longer captured="),
            records_shed: num_after("their records discarded="),
            summary,
        })
    }
}

/// bpftrace 0.17 copying the same syscall buffers (variant d).
pub const BPFTRACE_SCRIPT: &str = r#"// Store the user buffer pointer at entry; copy 64 bytes of it at exit into the perf output buffer
// (as `tracer` copies into its ring buffer), for the same socket data syscalls.
tracepoint:syscalls:sys_enter_read, tracepoint:syscalls:sys_enter_write /comm != "bpftrace"/ { @p[tid] = (uint64)args->buf; }
tracepoint:syscalls:sys_enter_recvfrom /comm != "bpftrace"/ { @p[tid] = (uint64)args->ubuf; }
tracepoint:syscalls:sys_enter_sendto /comm != "bpftrace"/ { @p[tid] = (uint64)args->buff; }
tracepoint:syscalls:sys_enter_readv, tracepoint:syscalls:sys_enter_writev /comm != "bpftrace"/ { @p[tid] = *(uint64 *)args->vec; }
tracepoint:syscalls:sys_enter_recvmsg, tracepoint:syscalls:sys_enter_sendmsg /comm != "bpftrace"/ { @p[tid] = *(uint64 *)(*(uint64 *)((uint64)args->msg + 16)); }
tracepoint:syscalls:sys_exit_read, tracepoint:syscalls:sys_exit_write, tracepoint:syscalls:sys_exit_recvfrom,
tracepoint:syscalls:sys_exit_sendto, tracepoint:syscalls:sys_exit_readv, tracepoint:syscalls:sys_exit_writev,
tracepoint:syscalls:sys_exit_recvmsg, tracepoint:syscalls:sys_exit_sendmsg
/@p[tid]/
{
  if (args->ret > 0) { printf("%d %d %r\n", pid, args->ret, buf(@p[tid], 64)); }
  delete(@p[tid]);
}
END { clear(@p); }
"#;

pub struct Bpftrace {
    pub proc: Proc,
}

/// Number of open fds of `pid` whose link target contains `what`.
fn count_fds(pid: u32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains(what))
                })
                .count()
        })
        .unwrap_or(0)
}

impl Bpftrace {
    pub fn start(dir: &Path) -> Result<Self> {
        let script = dir.join("copy.bt");
        write(&script, BPFTRACE_SCRIPT)?;
        let mut cmd = Command::new("bpftrace");
        cmd.arg("-o").arg("/dev/null").arg(&script);
        let proc = Proc::start("bpftrace", &mut cmd, false)?;
        // Ready when its 16 tracepoints are attached (one perf event fd each).
        let deadline = Instant::now() + Duration::from_secs(60);
        while count_fds(proc.pid(), "perf_event") < 16 {
            if Instant::now() > deadline {
                bail!(
                    "bpftrace did not attach within 60 s: {}",
                    proc.lines().join("\n")
                );
            }
            if cpu_secs(proc.pid()).is_err() {
                bail!("bpftrace exited: {}", proc.lines().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { proc })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Stop; returns the number of events bpftrace reported lost.
    pub fn finish(mut self) -> u64 {
        let lines = self.proc.stop_with(libc::SIGINT, Duration::from_secs(20));
        lines
            .iter()
            .filter(|l| l.contains("Lost"))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.parse::<u64>().ok()))
            .sum()
    }
}

/// A Flask service (werkzeug, threaded, HTTP/1.1 keep-alive), optionally instrumented in-process
/// with the OpenTelemetry Python SDK exporting OTLP/HTTP to `otlp_url`.
pub const FLASK_APP: &str = r#"import logging, os, sys
from flask import Flask
from werkzeug.serving import make_server, WSGIRequestHandler

app = Flask(__name__)

@app.route("/")
def index():
    return "hello from the tracer benchmark\n"

if os.environ.get("BENCH_OTEL_SDK") == "1":
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-flask"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=os.environ["BENCH_OTLP_URL"])))
    trace.set_tracer_provider(provider)
    FlaskInstrumentor().instrument_app(app)

logging.getLogger("werkzeug").setLevel(logging.ERROR)
WSGIRequestHandler.protocol_version = "HTTP/1.1"
server = make_server("127.0.0.1", 0, app, threaded=True)
print("port", server.server_port, flush=True)
server.serve_forever()
"#;

pub fn flask(dir: &Path, sdk_otlp_url: Option<&str>) -> Result<(Proc, u16)> {
    let app: PathBuf = dir.join("app.py");
    write(&app, FLASK_APP)?;
    let mut cmd = Command::new("python3");
    cmd.arg(&app);
    if let Some(url) = sdk_otlp_url {
        cmd.env("BENCH_OTEL_SDK", "1")
            .env("BENCH_OTLP_URL", url)
            .env("OTEL_SERVICE_NAME", "bench-flask");
    }
    let mut p = Proc::start("flask", &mut cmd, true)?;
    let line = p.wait_line("port ", Duration::from_secs(60))?;
    let port = line.trim_start_matches("port ").trim().parse()?;
    wait_port(port, Duration::from_secs(10))?;
    Ok((p, port))
}

/// Ids of the eBPF programs a process holds (from /proc/PID/fdinfo).
pub fn prog_ids(pid: u32) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|s| {
                    s.lines().find_map(|l| {
                        l.strip_prefix("prog_id:")
                            .and_then(|v| v.trim().parse().ok())
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    ids.dedup();
    ids
}
