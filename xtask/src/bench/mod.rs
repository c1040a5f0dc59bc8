//! `cargo xtask bench`: what tracing costs, measured side by side in one run (see BENCHMARKS.md).
//!
//! Every comparison is interleaved: each repetition runs every variant once, in a new random
//! order, and the report gives medians and ranges over repetitions (ratios are taken per
//! repetition, between runs minutes apart at most). Every peer (nginx, redis-server, bpftrace,
//! Flask, the OTLP sink, the agent builds) is started here on loopback ephemeral ports and
//! stopped by its pid.

mod load;
mod peers;
mod procs;
mod report;
mod scenarios;
mod sink;

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::{cargo, run, setup};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Short smoke run: one repetition, short runs, fewer requests.
    #[arg(long)]
    pub quick: bool,
    /// Repetitions of each main interleaved comparison: scenario 1's throughput and latency at
    /// 50% of (a)'s maximum, scenario 6 (default 5, quick 1; the others run 3, or this if fewer).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Seconds per load run (default 5, quick 3).
    #[arg(long)]
    pub secs: Option<u64>,
    /// Run only these scenarios (1-6; repeatable). 2 needs 1's calibration and runs with it.
    #[arg(long = "only", value_name = "N")]
    pub only: Vec<u32>,
    /// Where the JSON results go (a markdown table is written next to it).
    #[arg(long, default_value = "target/bench/results.json")]
    pub out: PathBuf,
    /// Do not build (use the existing target/release/tracer and target/bench/tracer-noop).
    #[arg(long)]
    pub no_build: bool,
    /// Internal: run the OTLP/HTTP sink (used by the benchmark itself).
    #[arg(long, hide = true)]
    pub otlp_sink: bool,
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub quick: bool,
    pub reps: usize,
    /// Repetitions of the secondary comparisons (latency at 50% of (b)'s maximum, scenario 5).
    pub reps_minor: usize,
    pub secs: u64,
    /// wrk threads and connections for maximum throughput; fixed-rate generator connections.
    pub wrk_threads: u32,
    pub wrk_conns: u32,
    pub lat_conns: usize,
    pub idle_conns: usize,
    /// Cumulative request counts at which scenario 4 reads RSS: the first steps warm the agent up
    /// to its steady state (tables filled, allocator pages in use); the last shows growth.
    pub mem_requests: [u64; 3],
    pub span_rates: &'static [f64],
    pub py_rate: f64,
    pub py_conns: usize,
}

impl Plan {
    fn new(a: &BenchArgs) -> Self {
        let quick = a.quick;
        let reps = a.reps.unwrap_or(if quick { 1 } else { 5 }).max(1);
        Self {
            quick,
            reps,
            reps_minor: reps.min(3),
            secs: a.secs.unwrap_or(if quick { 3 } else { 5 }).max(1),
            wrk_threads: 1,
            wrk_conns: 32,
            lat_conns: 32,
            idle_conns: 10_000,
            mem_requests: if quick {
                [100_000, 200_000, 400_000]
            } else {
                [100_000, 500_000, 1_500_000]
            },
            span_rates: if quick {
                &[10_000.0, 25_000.0]
            } else {
                &[10_000.0, 20_000.0, 25_000.0, 30_000.0, 40_000.0]
            },
            py_rate: 200.0,
            py_conns: 8,
        }
    }
}

/// Everything the scenarios share.
pub struct Ctx {
    pub plan: Plan,
    pub root: PathBuf,
    pub dir: PathBuf,
    pub tracer: PathBuf,
    pub noop: PathBuf,
    /// Agent arguments for variant (b): capture everything, export to the sink (or --quiet).
    pub agent_args: Vec<String>,
    /// How (b) exports, for the report.
    pub export_mode: String,
    pub otlp_url: String,
}

pub fn main(args: BenchArgs) -> Result<()> {
    if args.otlp_sink {
        return sink::serve();
    }
    if cfg!(debug_assertions) {
        // The load generator and the sink must not be an unoptimised build: re-run this
        // command from a release build of xtask.
        eprintln!("bench: building xtask with optimisations for the load generator");
        let argv: Vec<String> = std::env::args().skip(1).collect();
        return run(cargo()
            .args(["run", "--quiet", "--release", "-p", "xtask", "--"])
            .args(argv));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask bench loads eBPF programs and sets sysctls: run it as root");
    }
    let plan = Plan::new(&args);
    let root = std::env::current_dir()?;
    let t0 = Instant::now();
    eprintln!("bench: load average {:.2} at start (2-core machine: compare the ratios, not the absolutes)", procs::loadavg());
    setup::toolchain()?;
    setup::peers(&setup::BENCH_PEERS)?;
    let setup_secs = t0.elapsed().as_secs_f64();
    let noop = root.join("target/bench/tracer-noop");
    if !args.no_build {
        build(&root, &noop)?;
    }
    let build_secs = t0.elapsed().as_secs_f64() - setup_secs;
    eprintln!("bench: set-up took {setup_secs:.0} s, builds {build_secs:.0} s");
    let nofile = procs::raise_nofile(65_536)?;
    if nofile < 12_000 {
        bail!("the open-file limit is {nofile} and cannot be raised: scenario 4 needs 10,000 connections (+ margin)");
    }
    let dir = root.join("target/bench/run");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    let tracer = root.join("target/release/tracer");
    let help = Command::new(&tracer)
        .arg("--help")
        .output()
        .context("running tracer --help")?;
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let (sink_proc, sink_port) = peers::sink()?;
    let otlp_url = format!("http://127.0.0.1:{sink_port}");
    let mut agent_args = vec!["--quiet".to_string()];
    let export_mode = if help.contains("--otlp-endpoint") {
        agent_args.extend(["--otlp-endpoint".to_string(), otlp_url.clone()]);
        if help.contains("--otlp-protocol") {
            agent_args.extend(["--otlp-protocol".to_string(), "http/protobuf".to_string()]);
        }
        format!(
            "OTLP/HTTP protobuf to a local sink ({})",
            agent_args.join(" ")
        )
    } else {
        "none: this build has no --otlp-endpoint, spans are built and dropped (--quiet)".to_string()
    };
    eprintln!("bench: variant (b) exports {export_mode}");
    let ctx = Ctx {
        plan,
        root: root.clone(),
        dir,
        tracer,
        noop,
        agent_args,
        export_mode,
        otlp_url,
    };

    let want = |n: u32| args.only.is_empty() || args.only.contains(&n);
    let mut results = serde_json::Map::new();
    let mut tables: Vec<report::Table> = Vec::new();
    let mut timings = serde_json::Map::new();
    results.insert(
        "run".into(),
        json!({
            "plan": format!("{:?}", ctx.plan),
            "export": ctx.export_mode,
            "load_average_start": procs::loadavg(),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "git": Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default(),
            "git_dirty": Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]).output().map(|o| !o.stdout.is_empty()).unwrap_or(false),
        }),
    );
    // Runs one scenario, timing it; a failed scenario is reported and the others still run.
    let mut record = |name: &str, scenario: &dyn Fn() -> Result<(Value, Vec<report::Table>)>| {
        let started = Instant::now();
        let r = scenario();
        let secs = started.elapsed().as_secs_f64();
        eprintln!("bench: scenario {name} took {secs:.0} s");
        timings.insert(name.to_string(), json!(secs));
        match r {
            Ok((v, t)) => {
                for t in &t {
                    println!("\n{}", t.markdown());
                }
                results.insert(name.into(), v);
                tables.extend(t);
            }
            Err(e) => {
                eprintln!("bench: scenario {name} failed: {e:#}");
                results.insert(name.into(), json!({"error": format!("{e:#}")}));
            }
        }
    };
    if want(1) || want(2) {
        record("1_nginx", &|| scenarios::nginx(&ctx, want(2)));
    }
    if want(3) {
        record("3_pipeline", &|| scenarios::pipeline(&ctx));
    }
    if want(4) {
        record("4_memory", &|| scenarios::memory(&ctx));
    }
    if want(5) {
        record("5_python", &|| scenarios::python(&ctx));
    }
    if want(6) {
        record("6_redis", &|| scenarios::redis(&ctx));
    }
    let mut sink_proc = sink_proc;
    let sink_lines = sink_proc.stop();
    let elapsed = t0.elapsed().as_secs_f64();
    if let Some(Value::Object(run)) = results.get_mut("run") {
        run.insert(
            "otlp_sink".into(),
            json!(sink_lines
                .iter()
                .find(|l| l.contains("requests"))
                .cloned()
                .unwrap_or_default()),
        );
        run.insert("elapsed_secs".into(), json!(elapsed));
        run.insert("scenario_secs".into(), Value::Object(timings));
        run.insert("setup_secs".into(), json!(setup_secs));
        run.insert("build_secs".into(), json!(build_secs));
        run.insert("load_average_end".into(), json!(procs::loadavg()));
    }
    let targets = scenarios::targets(&results);
    println!("\n{}", targets.markdown());
    tables.push(targets);
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    procs::write(
        &out,
        &serde_json::to_string_pretty(&Value::Object(results))?,
    )?;
    let md: String = tables.iter().map(|t| t.markdown() + "\n").collect();
    procs::write(&out.with_extension("md"), &md)?;
    eprintln!(
        "bench: done in {:.0} s; results in {} and {}",
        elapsed,
        out.display(),
        out.with_extension("md").display()
    );
    Ok(())
}

/// The agent, its no-op floor (copied to `noop`) and the criterion benchmark. Both agent builds
/// name the same targets in one target directory, so they resolve the same dependency features
/// and share every compiled dependency: only `tracer` itself and its kernel programs are built
/// twice.
fn build(root: &std::path::Path, noop: &std::path::Path) -> Result<()> {
    let targets = ["--bin", "tracer", "--bench", "pipeline"];
    run(cargo()
        .args([
            "build",
            "--release",
            "-p",
            "tracer",
            "--features",
            "noop-probes",
        ])
        .args(targets))?;
    if let Some(dir) = noop.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(root.join("target/release/tracer"), noop)
        .with_context(|| format!("copying the no-op build to {}", noop.display()))?;
    run(cargo()
        .args(["build", "--release", "-p", "tracer"])
        .args(targets))
}

/// Temporary directory of one peer.
pub fn subdir(ctx: &Ctx, name: &str) -> Result<PathBuf> {
    let d = ctx.dir.join(name);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
