//! Wiring: privileges, kernel programs, pipeline stages, signals, the exit summary.

use std::{
    os::unix::fs::MetadataExt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use rand::{rngs::StdRng, SeedableRng};
use tokio::sync::{mpsc, watch};

use crate::{
    cli::Cli,
    clock::Clock,
    ebpf::{self, ProbeConfig, Probes},
    export::{self, stdout::StdoutExporter, Exporter},
    pipeline::{self, conns, link::Linker, spans},
    protocol::ParseError,
    stats::Stats,
};

/// The agent's entry point after argument parsing. Errors are one line each.
pub fn run(cli: Cli) -> Result<()> {
    ebpf::check_privileges().map_err(anyhow::Error::msg)?;
    crate::alloc::no_huge_pages();
    let startup_memory = crate::alloc::StartupMemory::purge_now();
    let cgroup_ids = cli
        .cgroups
        .iter()
        .map(|p| {
            std::fs::metadata(p).map(|m| m.ino()).with_context(|| {
                format!(
                    "--cgroup {}: not a readable cgroup v2 directory",
                    p.display()
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        // I/O at the edges only (export, HTTP endpoints, signals): the data path has its own
        // thread.
        .worker_threads(1)
        .enable_all()
        .thread_name("tracer")
        .build()
        .context("starting the async runtime")?;

    let stats = Arc::new(Stats::default());
    let mut exporters: Vec<Box<dyn Exporter>> = Vec::new();
    if !cli.quiet {
        exporters.push(Box::new(StdoutExporter::stdout(cli.output)));
    }
    exporters.extend(export::config::build_exporters(
        &cli.export,
        &stats,
        rt.handle(),
    )?);

    let mut probes = Probes::load(&ProbeConfig {
        capture_bytes: cli.capture_bytes,
        ring_mib: cli.ring_buffer_mib,
        pids: cli.pids.clone(),
        ports: cli.ports.clone(),
        comms: cli.exes.clone(),
        cgroup_ids,
        inject: cli.inject_context,
        cgroup_dirs: cli.cgroups.clone(),
        protocols: captured_protocols(),
    })?;
    let ring = probes.take_events()?;
    let kernel_conns = probes.take_conn_table()?;

    // Build every stage and channel before any runs.
    let (link_to_export_tx, link_to_export_rx) = mpsc::channel(pipeline::LINK_TO_EXPORT);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns_stage = conns::ConnsStage::new(
        conns::ConnsConfig {
            max_connections: cli.max_connections,
            request_timeout_ns: cli.request_timeout().as_nanos() as u64,
            idle_timeout_ns: cli.idle_timeout().as_nanos() as u64,
            cpu_budget: cli.cpu_budget_cores(),
        },
        stats.clone(),
    );
    conns_stage.with_kernel(Box::new(kernel_conns));
    let data_stop = Arc::new(AtomicBool::new(false));
    let data = pipeline::data::DataThread {
        ring,
        ring_bytes: u64::from(cli.ring_buffer_mib) << 20,
        fill: None,
        conns: conns_stage,
        linker: Linker::new(StdRng::from_os_rng(), 65536, cli.link_wait()),
        clock: Clock::new(),
        span_opts: spans::SpanOptions {
            show_query_values: cli.show_query_values,
        },
        link_to_export: link_to_export_tx,
        stats: stats.clone(),
        stop: data_stop.clone(),
    };

    let export_stats = stats.clone();
    let export_stop = stop_tx.clone();
    let limit = cli.count;
    let export_thread = std::thread::Builder::new()
        .name("tracer-export".into())
        .spawn(move || {
            pipeline::export::run(
                link_to_export_rx,
                exporters,
                export_stats,
                limit,
                export_stop,
            )
        })
        .context("starting the export thread")?;
    let data_thread = std::thread::Builder::new()
        .name("tracer-data".into())
        .spawn(move || data.run())
        .context("starting the data thread")?;

    rt.block_on(async {
        // Signal handlers exist before `ready` is announced, so a signal sent on seeing it is
        // never the default (fatal) one.
        let signals = Signals::new();
        startup_memory.release();
        eprintln!("tracer: ready");
        wait_for_stop(&cli, stop_rx, signals, &mut probes, &stats).await;
    });
    let _ = stop_tx.send(true);
    // The data thread drains what the kernel already wrote, then finishes its stages in order.
    data_stop.store(true, Ordering::Release);
    let pending = data_thread.join().unwrap_or(0);
    refresh_kernel_stats(&probes, &stats);
    // Detach before the exporters flush: nothing new is captured from here on.
    probes.detach();
    drop(probes);
    let lines = export_thread.join().unwrap_or_default();
    print_summary(&stats, pending, &lines);
    Ok(())
}

/// The kernel captures the protocols the agent has a parser for (`protocol::PROTOCOLS`).
fn captured_protocols() -> u32 {
    crate::protocol::PROTOCOLS
        .iter()
        .filter_map(|p| {
            tracer_common::classify::Protocol::ALL
                .iter()
                .find(|c| c.name() == p.name())
        })
        .fold(0, |bits, c| bits | c.bit())
}

fn refresh_kernel_stats(probes: &Probes, stats: &Stats) {
    for (slot, v) in stats.kernel.iter().zip(probes.kernel_stats()) {
        slot.set(v);
    }
}

/// SIGINT and SIGTERM streams; a stream that cannot be made leaves that signal's default.
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }
}

async fn recv_or_never(sig: &mut Option<tokio::signal::unix::Signal>) {
    match sig.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Seconds between sweeps of saved syscall arguments left by threads that died in a syscall.
const ARGS_SWEEP_TICKS: u64 = 30;

async fn wait_for_stop(
    cli: &Cli,
    mut stop: watch::Receiver<bool>,
    mut signals: Signals,
    probes: &mut Probes,
    stats: &Stats,
) {
    let deadline = async {
        match cli.duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = recv_or_never(&mut signals.int) => return,
            _ = recv_or_never(&mut signals.term) => return,
            _ = &mut deadline => return,
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
            _ = refresh.tick() => {
                refresh_kernel_stats(probes, stats);
                ticks += 1;
                if ticks.is_multiple_of(ARGS_SWEEP_TICKS) {
                    let n = probes.sweep_args();
                    if n > 0 {
                        tracing::debug!("forgot the saved arguments of {n} exited threads");
                    }
                }
            }
        }
    }
}

fn print_summary(stats: &Stats, pending: u64, export_lines: &[String]) {
    use tracer_common::stats as k;
    let parse: Vec<String> = ParseError::ALL
        .iter()
        .map(|e| (e, stats.parse_error(*e).get()))
        .filter(|(_, n)| *n > 0)
        .map(|(e, n)| format!("{}={n}", e.as_str()))
        .collect();
    eprintln!(
        "tracer: {} spans from {} records (data {}, opened {}, closed {}), {} bytes captured",
        stats.spans.get(),
        stats.events_data.get() + stats.events_conn_open.get() + stats.events_conn_close.get(),
        stats.events_data.get(),
        stats.events_conn_open.get(),
        stats.events_conn_close.get(),
        stats.bytes_captured.get(),
    );
    eprintln!(
        "tracer: drops: ring buffer data={} conn={}, malformed records={}, data without connection={}, connections evicted={} idle={}",
        stats.kernel(k::RINGBUF_DROPS_DATA),
        stats.kernel(k::RINGBUF_DROPS_CONN),
        stats.events_malformed.get(),
        stats.data_unknown_conn.get(),
        stats.conns_evicted_lru.get(),
        stats.conns_expired_idle.get(),
    );
    eprintln!(
        "tracer: connections: protocol recognised={}, left untraced after their first bytes={}, of a protocol not captured={}, first bytes held until decided={}, closed={}, announced again after being dropped={}; requests dropped with their connection={}; processes traced as children of traced ones={}; iovec arrays cut at {} entries={}",
        stats.kernel(k::CONNS_OPENED),
        stats.kernel(k::SNIFF_REJECTED),
        stats.kernel(k::SNIFF_NOT_CAPTURED),
        stats.kernel(k::SNIFF_HELD),
        stats.kernel(k::CONNS_CLOSED),
        stats.kernel(k::CONNS_READOPTED),
        stats.requests_dropped_evicted.get(),
        stats.kernel(k::CHILDREN_TRACED),
        tracer_common::data::MAX_IOV,
        stats.kernel(k::IOV_TRUNCATED),
    );
    eprintln!(
        "tracer: spans released without their expected parent (link wait exceeded): {}",
        stats.link_timeouts.get()
    );
    if stats.conns_shed.get() > 0 {
        eprintln!(
            "tracer: overload (the agent fell behind the kernel or passed its --cpu-budget): connections no longer captured={}, their records discarded={}, their requests dropped while waiting={}",
            stats.conns_shed.get(),
            stats.records_shed.get(),
            stats.requests_shed.get(),
        );
    }
    eprintln!(
        "tracer: parse errors: {}; requests without response: {}; exchanges with a truncated head: {}; still waiting at exit: {}; kernel: table full conns={} args={} (syscall entries kept in the hash, their slot taken: {}), read errors user={} kernel={}, batch syscalls seen (not parsed) sendmmsg={} recvmmsg={}",
        if parse.is_empty() { "none".to_string() } else { parse.join(" ") },
        stats.requests_unanswered.get(),
        stats.exchanges_truncated.get(),
        pending,
        stats.kernel(k::CONN_TABLE_FULL),
        stats.kernel(k::ARGS_TABLE_FULL),
        stats.kernel(k::ARGS_SLOT_TAKEN),
        stats.kernel(k::READ_USER_ERRORS),
        stats.kernel(k::READ_KERNEL_ERRORS),
        stats.kernel(k::SENDMMSG_CALLS),
        stats.kernel(k::RECVMMSG_CALLS),
    );
    if stats.kernel(k::INJECT_SOCKETS) + stats.kernel(k::INJECT_ERRORS) > 0 {
        eprintln!(
            "tracer: context injection: sockets={}, traceparent inserted={}, forwarded traceparent updated={}, left alone: had a context={} thread serving several requests={}; sockets whose request boundaries were lost={}; failures={}",
            stats.kernel(k::INJECT_SOCKETS),
            stats.kernel(k::INJECT_DONE),
            stats.kernel(k::INJECT_FORWARDED),
            stats.kernel(k::INJECT_SKIP_HAS_CONTEXT),
            stats.kernel(k::INJECT_SKIP_THREAD),
            stats.kernel(k::INJECT_SOCK_LOST),
            stats.kernel(k::INJECT_ERRORS),
        );
    }
    for l in export_lines {
        eprintln!("tracer: {l}");
    }
}
