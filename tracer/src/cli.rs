//! Command line.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

use crate::export::stdout::Format;

/// Zero-instrumentation distributed tracing: sees the HTTP traffic of every process on this host
/// through eBPF and reports each request as an OpenTelemetry span.
#[derive(Debug, Parser)]
#[command(name = "tracer", version, about)]
pub struct Cli {
    /// Live output: one readable line per span (`text`) or one JSON object per span (`json`).
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: Format,

    /// Do not print spans (useful when exporting only).
    #[arg(long)]
    pub quiet: bool,

    /// Trace only these process ids (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Trace only connections with this local or remote port (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,

    /// Trace only processes with this executable name, as the kernel knows it: at most 15
    /// characters (repeatable).
    #[arg(long = "exe", value_name = "NAME")]
    pub exes: Vec<String>,

    /// Trace only processes in this cgroup v2 directory, e.g. /sys/fs/cgroup/unified/system.slice/x
    /// (repeatable; not recursive).
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,

    /// Stop after this many spans.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Bytes captured per syscall (64 to 8192). Bodies need none: only headers are parsed.
    #[arg(long, value_name = "BYTES", default_value_t = tracer_common::data::DEFAULT_CAPTURE)]
    pub capture_bytes: u32,

    /// Size of the kernel's ring buffer of records, in MiB (a power of two). It counts twice in
    /// the agent's resident memory (the kernel maps it twice, so that a record that wraps reads
    /// whole); a larger one absorbs longer bursts before records are lost.
    #[arg(long, value_name = "MIB", default_value_t = 4)]
    pub ring_buffer_mib: u32,

    /// CPU the agent may use, in cores [default: an eighth of the CPUs available to it, at
    /// least 0.25]. Past it, or when the kernel's records come faster than the agent reads
    /// them, a growing share of connections (chosen by their addresses, both ends alike) stops
    /// being captured; the summary and /metrics count them.
    #[arg(long, value_name = "CORES", value_parser = cpu_budget)]
    pub cpu_budget: Option<f64>,

    /// A request without a response after this many seconds is reported with an error status.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub request_timeout: u64,

    /// Connections with no traffic for this many seconds are forgotten.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub idle_timeout: u64,

    /// Most connections tracked at once (least recently used are dropped beyond).
    #[arg(long, value_name = "N", default_value_t = 65536)]
    pub max_connections: usize,

    /// Longest a span waits for its parent span (which finishes later) before it is reported
    /// unlinked, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub link_wait: u64,

    /// Insert a W3C `traceparent` header into outgoing HTTP/1.x requests of traced processes,
    /// so that servers on other hosts (traced, or instrumented with OpenTelemetry) continue the
    /// trace. Off by default: it changes the bytes applications send (see the README).
    #[arg(long)]
    pub inject_context: bool,

    /// Show query-string values in `url.query` (redacted by default: they often hold secrets).
    #[arg(long)]
    pub show_query_values: bool,

    /// Log level of the agent's own diagnostics on stderr (error, warn, info, debug).
    #[arg(long, value_name = "LEVEL", default_value = "warn", env = "TRACER_LOG")]
    pub log: String,

    #[command(flatten)]
    pub export: crate::export::config::ExportArgs,
}

impl Cli {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout)
    }
    pub fn link_wait(&self) -> Duration {
        Duration::from_millis(self.link_wait)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout)
    }

    /// `--cpu-budget`, or its default: an eighth of the CPUs this process may run on (its
    /// cgroup's quota included), so that the agent's share of a host stays the same on any size
    /// of host; at least a quarter of a core.
    pub fn cpu_budget_cores(&self) -> f64 {
        self.cpu_budget.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cpus as f64 / 8.0).max(0.25)
        })
    }
}

/// `--cpu-budget`: a positive number of cores.
fn cpu_budget(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive number of cores (e.g. 0.5 for half a core)"
        )),
    }
}
