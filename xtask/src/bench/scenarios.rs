//! The six benchmark scenarios (BENCHMARKS.md). Each returns its JSON and its tables.

use std::{collections::BTreeMap, net::SocketAddr, process::Command, time::Duration};

use anyhow::{bail, Context as _, Result};
use rand::seq::SliceRandom;
use serde_json::{json, Value};

use super::{
    load::{self, Mode},
    peers::{self, Agent, AgentReport, Bpftrace},
    procs::{cpu_secs, loadavg, rss_mib},
    report::{pct, spread, summary, Table},
    subdir, Ctx,
};
use crate::run;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum V {
    A,
    B,
    C,
    D,
}

const ALL: [V; 4] = [V::A, V::B, V::C, V::D];

impl V {
    fn key(self) -> &'static str {
        match self {
            V::A => "a_untraced",
            V::B => "b_tracer",
            V::C => "c_noop_probes",
            V::D => "d_bpftrace",
        }
    }
    fn label(self) -> &'static str {
        match self {
            V::A => "(a) no tracer",
            V::B => "(b) tracer",
            V::C => "(c) no-op probes (floor)",
            V::D => "(d) bpftrace 0.17 copy",
        }
    }
}

enum Running {
    None,
    Agent(Agent),
    Bpf(Bpftrace),
}

impl Running {
    fn pid(&self) -> Option<u32> {
        match self {
            Running::None => None,
            Running::Agent(a) => Some(a.pid()),
            Running::Bpf(b) => Some(b.pid()),
        }
    }
    fn cpu(&self) -> f64 {
        match self {
            Running::Agent(a) => a.cpu(),
            _ => f64::NAN,
        }
    }
}

/// What stopping a variant reported.
#[derive(Default)]
struct Stopped {
    agent: Option<AgentReport>,
    bpftrace_lost: Option<u64>,
}

fn start(ctx: &Ctx, v: V, extra: &[String]) -> Result<Running> {
    Ok(match v {
        V::A => Running::None,
        V::B => Running::Agent(Agent::start(
            &ctx.tracer,
            &[ctx.agent_args.clone(), extra.to_vec()].concat(),
        )?),
        V::C => Running::Agent(Agent::start(
            &ctx.noop,
            &[vec!["--quiet".to_string()], extra.to_vec()].concat(),
        )?),
        V::D => Running::Bpf(Bpftrace::start(&subdir(ctx, "bpftrace")?)?),
    })
}

fn stop(r: Running) -> Result<Stopped> {
    Ok(match r {
        Running::None => Stopped::default(),
        Running::Agent(a) => Stopped {
            agent: Some(a.finish()?),
            bpftrace_lost: None,
        },
        Running::Bpf(b) => Stopped {
            agent: None,
            bpftrace_lost: Some(b.finish()),
        },
    })
}

/// The variants of repetition `rep` (of `reps`) in a new random order, announced with the load
/// average on stderr under `what`.
fn rep_order<T: Copy + std::fmt::Debug>(what: &str, rep: usize, reps: usize, v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.shuffle(&mut rand::rng());
    eprintln!(
        "{what} rep {}/{reps} order {v:?} (load {:.2})",
        rep + 1,
        loadavg()
    );
    v
}

fn median(v: &[f64]) -> f64 {
    spread(v).median
}

/// Restores `kernel.bpf_stats_enabled` when dropped.
struct BpfStats {
    old: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let old = std::fs::read_to_string(BPF_STATS)
            .context("reading kernel.bpf_stats_enabled")?
            .trim()
            .to_string();
        std::fs::write(BPF_STATS, "1").context("setting kernel.bpf_stats_enabled=1")?;
        Ok(Self { old })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.old);
    }
}

/// (name, run_cnt, run_time_ns) of the programs with these ids.
fn prog_stats(ids: &[u64]) -> Result<Vec<(String, u64, u64)>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .context("running bpftool")?;
    let all: Value = serde_json::from_slice(&out.stdout).context("parsing bpftool prog show -j")?;
    let mut v = Vec::new();
    for p in all.as_array().cloned().unwrap_or_default() {
        let id = p["id"].as_u64().unwrap_or(0);
        if ids.contains(&id) && p["type"] == "tracepoint" {
            v.push((
                p["name"].as_str().unwrap_or("?").to_string(),
                p["run_cnt"].as_u64().unwrap_or(0),
                p["run_time_ns"].as_u64().unwrap_or(0),
            ));
        }
    }
    v.sort();
    Ok(v)
}

fn ns_per_run(cnt: u64, ns: u64) -> f64 {
    if cnt == 0 {
        f64::NAN
    } else {
        ns as f64 / cnt as f64
    }
}

/// Data-syscall programs: enter_X / exit_data (tracer; older builds: exit_X) or sys_enter_X /
/// sys_exit_X (bpftrace), X one of the byte-moving syscalls.
fn is_data_prog(name: &str) -> bool {
    let n = name.trim_start_matches("sys_");
    if n == "exit_data" {
        return true;
    }
    [
        "read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg", "sendfile",
        "recvms", "sendms", "recvfr",
    ]
    .iter()
    .any(|s| {
        n == format!("enter_{s}")
            || n == format!("exit_{s}")
            || n.starts_with(&format!("exit_{s}"))
            || n.starts_with(&format!("enter_{s}"))
    })
}

/// Scenario 1 (and 2): nginx + wrk / fixed-rate load, variants a-d.
pub fn nginx(ctx: &Ctx, kernel_stats: bool) -> Result<(Value, Vec<Table>)> {
    let p = ctx.plan;
    let (mut nginx, port) = peers::nginx(&subdir(ctx, "nginx")?)?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    // Calibration (untraced): the fixed rate is half of this.
    let _ = load::wrk(port, p.wrk_threads, p.wrk_conns, 1)?;
    let cal: Vec<f64> = (0..if p.quick { 1 } else { 2 })
        .map(|_| load::wrk(port, p.wrk_threads, p.wrk_conns, p.secs).map(|r| r.rps))
        .collect::<Result<_>>()?;
    let max_a = median(&cal);
    let rate = (max_a * 0.5).round();
    eprintln!("bench[1]: untraced max {max_a:.0} req/s; fixed rate for latency {rate:.0} req/s");

    // Throughput: each repetition runs every variant once, in random order.
    let mut rps: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut ratio: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut cpu10k: Vec<f64> = Vec::new();
    let mut nginx_us: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut agent_cores: Vec<f64> = Vec::new();
    let mut drops: BTreeMap<V, u64> = BTreeMap::new();
    let mut spans_per_req: Vec<f64> = Vec::new();
    let mut export_drops = [0u64; 2];
    for rep in 0..p.reps {
        let order = rep_order("bench[1]: throughput", rep, p.reps, &ALL);
        let mut this: BTreeMap<V, f64> = BTreeMap::new();
        for v in order {
            let r = start(ctx, v, &[])?;
            let n0 = cpu_secs(nginx.pid())?;
            let w = load::wrk(port, p.wrk_threads, p.wrk_conns, p.secs)?;
            let n1 = cpu_secs(nginx.pid())?;
            let cores = r.cpu() / p.secs as f64;
            let s = stop(r)?;
            this.insert(v, w.rps);
            rps.entry(v).or_default().push(w.rps);
            nginx_us
                .entry(v)
                .or_default()
                .push((n1 - n0) * 1e6 / w.requests.max(1) as f64);
            if let Some(a) = &s.agent {
                *drops.entry(v).or_default() += a.ring_drops;
                if v == V::B {
                    export_drops[0] += a.export_drops;
                    cpu10k.push(a.cpu / a.spans.max(1) as f64 * 10_000.0);
                    agent_cores.push(cores);
                    spans_per_req.push(a.spans as f64 / w.requests.max(1) as f64);
                }
            }
            if let Some(l) = s.bpftrace_lost {
                *drops.entry(v).or_default() += l;
            }
        }
        for v in ALL {
            ratio.entry(v).or_default().push(this[&v] / this[&V::A]);
        }
    }

    // Latency at a fixed rate of half the untraced maximum.
    let mut p50: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut p99: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut p99_ratio: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut achieved: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut cpu10k_fixed: Vec<f64> = Vec::new();
    for rep in 0..p.reps {
        let order = rep_order("bench[1]: latency", rep, p.reps, &ALL);
        let mut this: BTreeMap<V, f64> = BTreeMap::new();
        for v in order {
            let r = start(ctx, v, &[])?;
            let l = load::generate(
                addr,
                "/",
                p.lat_conns,
                Mode::Rate {
                    per_sec: rate,
                    duration: Duration::from_secs(p.secs),
                },
            )?;
            let s = stop(r)?;
            if let Some(a) = &s.agent {
                if v == V::B {
                    export_drops[1] += a.export_drops;
                    cpu10k_fixed.push(a.cpu / a.spans.max(1) as f64 * 10_000.0);
                }
            }
            p50.entry(v).or_default().push(l.p(0.5));
            p99.entry(v).or_default().push(l.p(0.99));
            achieved.entry(v).or_default().push(l.rate());
            this.insert(v, l.p(0.99));
        }
        for v in ALL {
            p99_ratio.entry(v).or_default().push(this[&v] / this[&V::A]);
        }
    }

    // The fixed rate above can exceed a traced variant's maximum (then it measures a saturated
    // system). Also compare (a) and (b) at half of (b)'s own maximum, where neither saturates.
    let rate_b = (median(rps.get(&V::B).map(Vec::as_slice).unwrap_or(&[])) * 0.5).round();
    let mut lo: BTreeMap<V, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut lo_ratio: Vec<f64> = Vec::new();
    if rate_b.is_finite() && rate_b > 0.0 {
        for rep in 0..p.reps_minor {
            let order = rep_order(
                &format!("bench[1]: latency at {rate_b:.0} req/s"),
                rep,
                p.reps_minor,
                &[V::A, V::B],
            );
            let mut this: BTreeMap<V, f64> = BTreeMap::new();
            for v in order {
                let r = start(ctx, v, &[])?;
                let l = load::generate(
                    addr,
                    "/",
                    p.lat_conns,
                    Mode::Rate {
                        per_sec: rate_b,
                        duration: Duration::from_secs(p.secs),
                    },
                )?;
                stop(r)?;
                let e = lo.entry(v).or_default();
                e.0.push(l.p(0.5));
                e.1.push(l.p(0.99));
                this.insert(v, l.p(0.99));
            }
            lo_ratio.push(this[&V::B] / this[&V::A]);
        }
    }
    let mut t_lo = Table::new(
        &format!("1. latency at {rate_b:.0} req/s = 50% of (b)'s maximum (neither variant saturated), {} reps", p.reps_minor),
        &["variant", "p50 µs", "p99 µs", "p99 vs (a)"],
    );
    for v in [V::A, V::B] {
        let (a, b) = lo.get(&v).cloned().unwrap_or_default();
        t_lo.row(vec![
            v.label().into(),
            spread(&a).fmt(0),
            spread(&b).fmt(0),
            if v == V::A {
                "–".into()
            } else {
                pct(median(&lo_ratio))
            },
        ]);
    }

    let mut t = Table::new(
        &format!(
            "1. nginx, HTTP/1.1 keep-alive, {}-byte responses: wrk -t{} -c{} {} s for throughput; {:.0} req/s (50% of (a)) over {} connections for latency; {} reps",
            peers::BODY.len(),
            p.wrk_threads,
            p.wrk_conns,
            p.secs,
            rate,
            p.lat_conns,
            p.reps
        ),
        &["variant", "max req/s", "ratio vs (a)", "p50 µs", "p99 µs", "p99 vs (a)", "nginx CPU µs/req", "losses"],
    );
    let mut jv = serde_json::Map::new();
    for v in ALL {
        let get = |m: &BTreeMap<V, Vec<f64>>| m.get(&v).cloned().unwrap_or_default();
        t.row(vec![
            v.label().into(),
            spread(&get(&rps)).fmt(0),
            if v == V::A {
                "1".into()
            } else {
                spread(&get(&ratio)).fmt(3)
            },
            spread(&get(&p50)).fmt(0),
            spread(&get(&p99)).fmt(0),
            if v == V::A {
                "–".into()
            } else {
                pct(median(&get(&p99_ratio)))
            },
            spread(&get(&nginx_us)).fmt(1),
            match v {
                V::A => "–".into(),
                _ => drops.get(&v).copied().unwrap_or(0).to_string(),
            },
        ]);
        jv.insert(
            v.key().into(),
            json!({
                "max_rps": summary(&get(&rps)),
                "ratio_vs_a": summary(&get(&ratio)),
                "p50_us": summary(&get(&p50)),
                "p99_us": summary(&get(&p99)),
                "p99_ratio_vs_a": summary(&get(&p99_ratio)),
                "fixed_rate_achieved": summary(&get(&achieved)),
                "nginx_cpu_us_per_req": summary(&get(&nginx_us)),
                "losses": drops.get(&v).copied().unwrap_or(0),
            }),
        );
    }
    let mut t2 = Table::new(
        "1. agent CPU (variant b; user + system from /proc/PID/stat)",
        &[
            "load",
            "CPU s per 10,000 spans",
            "µs per span",
            "agent cores",
            "spans dropped before export (all reps)",
        ],
    );
    t2.row(vec![
        "wrk, max throughput".into(),
        spread(&cpu10k).fmt(3),
        format!("{:.2}", median(&cpu10k) * 100.0),
        spread(&agent_cores).fmt(2),
        export_drops[0].to_string(),
    ]);
    t2.row(vec![
        format!("fixed {rate:.0} req/s"),
        spread(&cpu10k_fixed).fmt(3),
        format!("{:.2}", median(&cpu10k_fixed) * 100.0),
        "".into(),
        export_drops[1].to_string(),
    ]);
    jv.insert(
        "agent".into(),
        json!({
            "cpu_s_per_10k_spans_max_load": summary(&cpu10k),
            "cpu_s_per_10k_spans_fixed_rate": summary(&cpu10k_fixed),
            "agent_cores_max_load": summary(&agent_cores),
            "spans_per_request": summary(&spans_per_req),
            "export_drops_max_load": export_drops[0],
            "export_drops_fixed_rate": export_drops[1],
        }),
    );
    jv.insert(
        "latency_at_half_of_b".into(),
        json!({
            "rate": rate_b,
            "a_p50_us": lo.get(&V::A).map(|x| x.0.clone()), "a_p99_us": lo.get(&V::A).map(|x| x.1.clone()),
            "b_p50_us": lo.get(&V::B).map(|x| x.0.clone()), "b_p99_us": lo.get(&V::B).map(|x| x.1.clone()),
            "p99_ratio": summary(&lo_ratio),
        }),
    );
    jv.insert("calibration_rps".into(), json!(cal));
    jv.insert("fixed_rate".into(), json!(rate));
    let mut tables = vec![t, t_lo, t2];

    if kernel_stats {
        match kernel(ctx, port) {
            Ok((v, tb)) => {
                jv.insert("2_kernel".into(), v);
                tables.extend(tb);
            }
            Err(e) => {
                eprintln!("bench[2]: failed: {e:#}");
                jv.insert("2_kernel".into(), json!({"error": format!("{e:#}")}));
            }
        }
    }
    nginx.stop();
    Ok((Value::Object(jv), tables))
}

/// Scenario 2: ns per program invocation with kernel.bpf_stats_enabled=1 (restored after).
fn kernel(ctx: &Ctx, port: u16) -> Result<(Value, Vec<Table>)> {
    let p = ctx.plan;
    let _guard = BpfStats::enable()?;
    let mut jv = serde_json::Map::new();
    let mut per_prog = Table::new(
        &format!("2. in-kernel cost per program, variant (b) under wrk (kernel.bpf_stats_enabled=1, {} s)", p.secs),
        &["program", "runs", "ns/run"],
    );
    let mut totals = Table::new(
        "2. in-kernel cost: mean ns per traced data syscall (enter + exit programs) and over all programs",
        &["variant", "ns per data syscall (enter+exit)", "ns per program run", "runs"],
    );
    for v in [V::B, V::C, V::D] {
        let r = start(ctx, v, &[])?;
        let ids = peers::prog_ids(r.pid().unwrap());
        let w = load::wrk(port, p.wrk_threads, p.wrk_conns, p.secs)?;
        let stats = prog_stats(&ids)?;
        stop(r)?;
        if stats.is_empty() {
            bail!("no programs found for {} (ids {ids:?})", v.key());
        }
        let (mut cnt, mut ns, mut dcnt, mut dns) = (0u64, 0u64, 0u64, 0u64);
        let mut progs = Vec::new();
        for (name, c, t) in &stats {
            cnt += c;
            ns += t;
            if is_data_prog(name) {
                dcnt += c;
                dns += t;
            }
            if v == V::B && *c > 0 {
                per_prog.row(vec![
                    name.clone(),
                    c.to_string(),
                    format!("{:.0}", ns_per_run(*c, *t)),
                ]);
            }
            progs.push(json!({"name": name, "run_cnt": c, "run_time_ns": t, "ns_per_run": ns_per_run(*c, *t)}));
        }
        // A data syscall runs one enter and one exit program.
        let per_syscall = ns_per_run(dcnt, dns) * 2.0;
        totals.row(vec![
            v.label().into(),
            format!("{per_syscall:.0}"),
            format!("{:.0}", ns_per_run(cnt, ns)),
            cnt.to_string(),
        ]);
        jv.insert(
            v.key().into(),
            json!({"programs": progs, "ns_per_data_syscall": per_syscall, "ns_per_run": ns_per_run(cnt, ns), "rps": w.rps}),
        );
    }
    Ok((Value::Object(jv), vec![per_prog, totals]))
}

/// Criterion estimates under target/criterion/pipeline: function -> median ns per iteration.
fn criterion_estimates(root: &std::path::Path) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let base = root.join("target/criterion/pipeline");
    if let Ok(d) = std::fs::read_dir(&base) {
        for e in d.flatten() {
            let f = e.path().join("new/estimates.json");
            if let Ok(s) = std::fs::read_to_string(&f) {
                if let Ok(v) = serde_json::from_str::<Value>(&s) {
                    if let Some(x) = v["median"]["point_estimate"].as_f64() {
                        // `*_batchN` benchmarks process N spans per iteration.
                        let name = e.file_name().to_string_lossy().to_string();
                        let per = name
                            .rsplit_once("_batch")
                            .and_then(|(_, n)| n.parse::<f64>().ok())
                            .unwrap_or(1.0);
                        m.insert(name, x / per);
                    }
                }
            }
        }
    }
    m
}

/// Scenario 3: the userspace pipeline (criterion), and the highest span rate without losses.
pub fn pipeline(ctx: &Ctx) -> Result<(Value, Vec<Table>)> {
    let p = ctx.plan;
    let mut jv = serde_json::Map::new();
    let _ = std::fs::remove_dir_all(ctx.root.join("target/criterion/pipeline"));
    let mt = if p.quick { "2" } else { "5" };
    run(crate::cargo().args([
        "bench",
        "-p",
        "tracer",
        "--bench",
        "pipeline",
        "--",
        "--warm-up-time",
        "1",
        "--measurement-time",
        mt,
        "--noplot",
    ]))?;
    let est = criterion_estimates(&ctx.root);
    let mut t = Table::new(
        "3. userspace pipeline, criterion (ns per span, median; synthetic nginx-like records)",
        &["stage", "ns per span"],
    );
    for (k, v) in &est {
        t.row(vec![k.clone(), format!("{v:.0}")]);
    }
    jv.insert("criterion_ns_per_span".into(), json!(est));

    // Raise a fixed request rate until the agent's exit summary shows ring-buffer losses (or the
    // load generator cannot keep up); every request yields two spans (generator + nginx).
    // This is the pipeline's capacity: the CPU budget is lifted to every core (the default
    // budget sheds past budget / CPU per span; the steps' "agent cores" show where that is).
    let agent_args = budget_lifted(ctx);
    let (mut nginx, port) = peers::nginx(&subdir(ctx, "nginx-rate")?)?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut steps = Table::new(
        &format!(
            "3. span rate vs ring-buffer losses (variant b, CPU budget lifted, {} s per step, 64 connections)",
            p.secs
        ),
        &[
            "offered req/s",
            "achieved req/s",
            "spans/s",
            "ring-buffer losses (records shed for overload)",
            "export drops",
            "agent cores",
        ],
    );
    let mut best = 0.0f64;
    let mut best_exported = 0.0f64;
    let mut step_json = Vec::new();
    let mut limited_by = "load generator (no losses at the highest rate it reached)";
    let mut record = |offered: String,
                      achieved: f64,
                      a: &AgentReport,
                      secs: f64,
                      best: &mut f64,
                      best_exported: &mut f64| {
        let sps = a.spans as f64 / secs;
        // Connections shed for overload lose their spans as surely as a full ring buffer.
        if a.ring_drops == 0 && a.conns_shed == 0 {
            *best = best.max(sps);
            if a.export_drops == 0 {
                *best_exported = best_exported.max(sps);
            }
        }
        steps.row(vec![
            offered.clone(),
            format!("{achieved:.0}"),
            format!("{sps:.0}"),
            format!("{} ({} shed)", a.ring_drops, a.records_shed),
            a.export_drops.to_string(),
            format!("{:.2}", a.cpu / secs),
        ]);
        step_json.push(json!({"offered": offered, "achieved_rps": achieved, "spans_per_s": sps, "ring_drops": a.ring_drops, "records_shed": a.records_shed, "conns_shed": a.conns_shed, "export_drops": a.export_drops, "agent_cores": a.cpu / secs}));
    };
    let mut lost = false;
    for &rate in p.span_rates {
        let agent = Agent::start(&ctx.tracer, &agent_args)?;
        let l = load::generate(
            addr,
            "/",
            64,
            Mode::Rate {
                per_sec: rate,
                duration: Duration::from_secs(p.secs),
            },
        )?;
        let a = agent.finish()?;
        eprintln!(
            "bench[3]: offered {rate:.0} req/s, achieved {:.0}, spans {}, losses {}",
            l.rate(),
            a.spans,
            a.ring_drops
        );
        record(
            format!("{rate:.0}"),
            l.rate(),
            &a,
            l.elapsed,
            &mut best,
            &mut best_exported,
        );
        if a.ring_drops > 0 || a.conns_shed > 0 {
            lost = true;
            limited_by = if a.ring_drops > 0 {
                "ring-buffer losses"
            } else {
                "connections shed for overload (--cpu-budget)"
            };
            break;
        }
        if l.rate() < 0.9 * rate {
            break;
        }
    }
    if !lost {
        // Saturate with wrk (cheaper per request than our generator).
        let agent = Agent::start(&ctx.tracer, &agent_args)?;
        let w = load::wrk(port, 1, 64, p.secs)?;
        let a = agent.finish()?;
        eprintln!(
            "bench[3]: wrk saturation {:.0} req/s, spans {}, losses {}",
            w.rps, a.spans, a.ring_drops
        );
        record(
            "wrk max".into(),
            w.rps,
            &a,
            p.secs as f64,
            &mut best,
            &mut best_exported,
        );
        if a.ring_drops > 0 {
            limited_by = "ring-buffer losses";
        } else if a.conns_shed > 0 {
            limited_by = "connections shed for overload (--cpu-budget)";
        }
    }
    nginx.stop();
    jv.insert("span_rate_steps".into(), json!(step_json));
    jv.insert("max_spans_per_s_zero_loss".into(), json!(best));
    jv.insert(
        "max_spans_per_s_zero_loss_and_zero_export_drops".into(),
        json!(best_exported),
    );
    jv.insert("limited_by".into(), json!(limited_by));
    let mut t3 = Table::new(
        "3. highest span rate with zero ring-buffer losses and no connection shed",
        &[
            "spans/s (zero losses)",
            "spans/s (also zero export drops)",
            "limited by",
        ],
    );
    t3.row(vec![
        format!("{best:.0}"),
        format!("{best_exported:.0}"),
        limited_by.into(),
    ]);
    Ok((Value::Object(jv), vec![t, steps, t3]))
}

/// The agent's arguments with its CPU budget lifted to every core, for the scenarios that
/// measure its capacity and its memory rather than its overhead.
fn budget_lifted(ctx: &Ctx) -> Vec<String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    [
        ctx.agent_args.clone(),
        vec!["--cpu-budget".into(), cpus.to_string()],
    ]
    .concat()
}

/// Scenario 4: agent RSS with 10,000 idle traced connections, then after 100k and 1M requests.
pub fn memory(ctx: &Ctx) -> Result<(Value, Vec<Table>)> {
    let p = ctx.plan;
    let (mut nginx, port) = peers::nginx(&subdir(ctx, "nginx-mem")?)?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    // Every request becomes its spans (no connection shed for the CPU budget): the most the
    // agent's tables hold, and the fastest they fill.
    let agent = Agent::start(&ctx.tracer, &budget_lifted(ctx))?;
    let pid = agent.pid();
    let settle = || std::thread::sleep(Duration::from_secs(2));
    settle();
    let rss0 = rss_mib(pid)?;
    let (idle, open_secs) = load::timed(|| load::open_idle(port, p.idle_conns));
    let idle = idle?;
    settle();
    let rss_idle = rss_mib(pid)?;
    eprintln!("bench[4]: {} idle connections open in {open_secs:.1} s; agent RSS {rss0:.1} -> {rss_idle:.1} MiB", idle.len());
    let mut rows = vec![
        ("agent started, no traffic".to_string(), rss0),
        (
            format!("{} idle keep-alive connections", idle.len()),
            rss_idle,
        ),
    ];
    let mut done = 0u64;
    for &n in &p.mem_requests {
        let l = load::generate(addr, "/", 32, Mode::Count { total: n - done })?;
        done = n;
        settle();
        let r = rss_mib(pid)?;
        eprintln!(
            "bench[4]: after {n} requests ({:.0} req/s, {} errors): RSS {r:.1} MiB",
            l.rate(),
            l.errors
        );
        rows.push((format!("+ {n} requests (32 connections)"), r));
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap_or("")
        .trim()
        .to_string();
    drop(idle);
    let a = agent.finish()?;
    nginx.stop();
    let mut t = Table::new("4. agent memory (VmRSS)", &["state", "RSS MiB"]);
    for (k, v) in &rows {
        t.row(vec![k.clone(), format!("{v:.1}")]);
    }
    t.row(vec!["peak (VmHWM)".into(), hwm.clone()]);
    let n = rows.len();
    let growth = rows[n - 1].1 - rows[n - 2].1;
    Ok((
        json!({
            "rss_mib": rows.iter().map(|(k, v)| json!({"state": k, "rss_mib": v})).collect::<Vec<_>>(),
            "rss_idle_conns_mib": rss_idle,
            "rss_growth_last_step_mib": growth,
            "vm_hwm": hwm,
            "spans": a.spans,
            "ring_drops": a.ring_drops,
            "export_drops": a.export_drops,
            "summary": a.summary,
        }),
        vec![t],
    ))
}

/// Scenario 5: a Flask service untraced, traced by tracer, instrumented with the OTel SDK.
pub fn python(ctx: &Ctx) -> Result<(Value, Vec<Table>)> {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum P {
        Untraced,
        Tracer,
        Sdk,
    }
    let p = ctx.plan;
    let label = |v: P| match v {
        P::Untraced => "untraced",
        P::Tracer => "traced by tracer (--pid of the service)",
        P::Sdk => "OpenTelemetry Python SDK (flask instrumentation, batch, OTLP/HTTP)",
    };
    let mut app_cpu: BTreeMap<P, Vec<f64>> = BTreeMap::new();
    let mut agent_cpu: BTreeMap<P, Vec<f64>> = BTreeMap::new();
    let mut total: BTreeMap<P, Vec<f64>> = BTreeMap::new();
    let mut p50: BTreeMap<P, Vec<f64>> = BTreeMap::new();
    let mut p99: BTreeMap<P, Vec<f64>> = BTreeMap::new();
    let mut spans: Vec<f64> = Vec::new();
    let url = format!("{}/v1/traces", ctx.otlp_url);
    for rep in 0..p.reps_minor {
        let order = rep_order(
            "bench[5]:",
            rep,
            p.reps_minor,
            &[P::Untraced, P::Tracer, P::Sdk],
        );
        for v in order {
            let dir = subdir(ctx, "flask")?;
            let (mut app, port) = peers::flask(&dir, (v == P::Sdk).then_some(url.as_str()))?;
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
            let agent = if v == P::Tracer {
                let pid_arg = ["--pid".to_string(), app.pid().to_string()];
                Some(Agent::start(&ctx.tracer, &pid_arg)?)
            } else {
                None
            };
            // Warm-up (imports, first-request paths), not measured.
            load::generate(addr, "/", p.py_conns, Mode::Count { total: 200 })?;
            let c0 = cpu_secs(app.pid())?;
            let a0 = agent.as_ref().map(|a| a.cpu()).unwrap_or(0.0);
            let l = load::generate(
                addr,
                "/",
                p.py_conns,
                Mode::Rate {
                    per_sec: p.py_rate,
                    duration: Duration::from_secs(p.secs),
                },
            )?;
            let c1 = cpu_secs(app.pid())?;
            let a1 = agent.as_ref().map(|a| a.cpu()).unwrap_or(0.0);
            app.stop();
            if let Some(a) = agent {
                let r = a.finish()?;
                spans.push(r.spans as f64);
            }
            let n = l.ok.max(1) as f64;
            let us = (c1 - c0) * 1e6 / n;
            let aus = (a1 - a0) * 1e6 / n;
            app_cpu.entry(v).or_default().push(us);
            agent_cpu.entry(v).or_default().push(aus);
            total.entry(v).or_default().push(us + aus);
            p50.entry(v).or_default().push(l.p(0.5));
            p99.entry(v).or_default().push(l.p(0.99));
            if l.errors > 0 {
                eprintln!("bench[5]: {} errors for {v:?}", l.errors);
            }
        }
    }
    let mut t = Table::new(
        &format!("5. Flask (werkzeug, threaded) at {:.0} req/s over {} connections, {} s × {} reps: CPU per request (app + agent)", p.py_rate, p.py_conns, p.secs, p.reps_minor),
        &["variant", "app CPU µs/req", "agent CPU µs/req", "total µs/req", "added vs untraced µs/req", "p50 µs", "p99 µs"],
    );
    let base = median(&total[&P::Untraced]);
    let mut jv = serde_json::Map::new();
    for v in [P::Untraced, P::Tracer, P::Sdk] {
        let added = median(&total[&v]) - base;
        t.row(vec![
            label(v).into(),
            spread(&app_cpu[&v]).fmt(0),
            if v == P::Tracer {
                spread(&agent_cpu[&v]).fmt(0)
            } else {
                "–".into()
            },
            spread(&total[&v]).fmt(0),
            if v == P::Untraced {
                "–".into()
            } else {
                format!("{added:.0}")
            },
            spread(&p50[&v]).fmt(0),
            spread(&p99[&v]).fmt(0),
        ]);
        jv.insert(
            format!("{v:?}").to_lowercase(),
            json!({
                "app_cpu_us_per_req": summary(&app_cpu[&v]),
                "agent_cpu_us_per_req": summary(&agent_cpu[&v]),
                "total_cpu_us_per_req": summary(&total[&v]),
                "added_cpu_us_per_req": added,
                "p50_us": summary(&p50[&v]),
                "p99_us": summary(&p99[&v]),
            }),
        );
    }
    jv.insert("tracer_spans".into(), json!(spans));
    Ok((Value::Object(jv), vec![t]))
}

/// Scenario 6: redis-server under `redis-benchmark -P 16` (SET and GET), variants a-c.
pub fn redis(ctx: &Ctx) -> Result<(Value, Vec<Table>)> {
    const VARIANTS: [V; 3] = [V::A, V::B, V::C];
    const CONNS: u32 = 32;
    const PIPELINE: u32 = 16;
    let p = ctx.plan;
    let (mut redis, port) = peers::redis(&subdir(ctx, "redis")?)?;
    // Calibration (untraced, also the warm-up): requests per test such that an untraced run of
    // both tests lasts about the plan's seconds; a traced run lasts longer by 1 / its ratio.
    let cal = load::redis_benchmark(port, CONNS, PIPELINE, 100_000)?;
    let n = ((cal.rps() * p.secs as f64 / 2.0 / 10_000.0).round() as u64 * 10_000)
        .clamp(50_000, 10_000_000);
    eprintln!(
        "bench[6]: untraced {:.0} req/s (SET {:.0}, GET {:.0}); {n} requests per test",
        cal.rps(),
        cal.set_rps,
        cal.get_rps
    );

    let mut set: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut get: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut both: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut ratio: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut server_us: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut spans: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut spans_per_req: BTreeMap<V, Vec<f64>> = BTreeMap::new();
    let mut drops: BTreeMap<V, u64> = BTreeMap::new();
    let mut export_drops = 0u64;
    let mut conns_shed = 0u64;
    let mut summaries: Vec<Vec<String>> = Vec::new();
    for rep in 0..p.reps {
        let order = rep_order("bench[6]:", rep, p.reps, &VARIANTS);
        let mut this: BTreeMap<V, f64> = BTreeMap::new();
        for v in order {
            let r = start(ctx, v, &[])?;
            let c0 = cpu_secs(redis.pid())?;
            let b = load::redis_benchmark(port, CONNS, PIPELINE, n)?;
            let c1 = cpu_secs(redis.pid())?;
            let s = stop(r)?;
            this.insert(v, b.rps());
            set.entry(v).or_default().push(b.set_rps);
            get.entry(v).or_default().push(b.get_rps);
            both.entry(v).or_default().push(b.rps());
            server_us
                .entry(v)
                .or_default()
                .push((c1 - c0) * 1e6 / b.requests.max(1) as f64);
            if let Some(a) = s.agent {
                eprintln!(
                    "bench[6]: {}: {:.0} req/s, {} spans, {} ring-buffer losses",
                    v.key(),
                    b.rps(),
                    a.spans,
                    a.ring_drops
                );
                *drops.entry(v).or_default() += a.ring_drops;
                spans.entry(v).or_default().push(a.spans as f64);
                spans_per_req
                    .entry(v)
                    .or_default()
                    .push(a.spans as f64 / b.requests.max(1) as f64);
                if v == V::B {
                    export_drops += a.export_drops;
                    conns_shed += a.conns_shed;
                    summaries.push(a.summary);
                }
            }
        }
        for v in VARIANTS {
            ratio.entry(v).or_default().push(this[&v] / this[&V::A]);
        }
    }
    redis.stop();

    let mut t = Table::new(
        &format!(
            "6. redis-server, redis-benchmark -P {PIPELINE} -c {CONNS} -n {n} -t set,get; {} reps",
            p.reps
        ),
        &[
            "variant",
            "SET req/s",
            "GET req/s",
            "SET+GET req/s",
            "ratio vs (a)",
            "redis-server CPU µs/req",
            "spans per request",
            "ring-buffer losses",
            "dropped before export",
            "connections shed (all reps)",
        ],
    );
    let mut jv = serde_json::Map::new();
    for v in VARIANTS {
        let get_v = |m: &BTreeMap<V, Vec<f64>>| m.get(&v).cloned().unwrap_or_default();
        let agent = v != V::A;
        t.row(vec![
            v.label().into(),
            spread(&get_v(&set)).fmt(0),
            spread(&get_v(&get)).fmt(0),
            spread(&get_v(&both)).fmt(0),
            if agent {
                spread(&get_v(&ratio)).fmt(3)
            } else {
                "1".into()
            },
            spread(&get_v(&server_us)).fmt(2),
            if agent {
                spread(&get_v(&spans_per_req)).fmt(2)
            } else {
                "–".into()
            },
            if agent {
                drops.get(&v).copied().unwrap_or(0).to_string()
            } else {
                "–".into()
            },
            if v == V::B {
                export_drops.to_string()
            } else {
                "–".into()
            },
            if v == V::B {
                conns_shed.to_string()
            } else {
                "–".into()
            },
        ]);
        jv.insert(
            v.key().into(),
            json!({
                "set_rps": summary(&get_v(&set)),
                "get_rps": summary(&get_v(&get)),
                "rps": summary(&get_v(&both)),
                "ratio_vs_a": summary(&get_v(&ratio)),
                "redis_cpu_us_per_req": summary(&get_v(&server_us)),
                "spans": get_v(&spans),
                "spans_per_request": summary(&get_v(&spans_per_req)),
                "losses": drops.get(&v).copied().unwrap_or(0),
            }),
        );
    }
    jv.insert("requests_per_test".into(), json!(n));
    jv.insert("calibration_rps".into(), json!(cal.rps()));
    jv.insert("export_drops_b".into(), json!(export_drops));
    jv.insert("conns_shed_b".into(), json!(conns_shed));
    jv.insert("agent_summaries_b".into(), json!(summaries));
    Ok((Value::Object(jv), vec![t]))
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_f64().unwrap_or(f64::NAN)
}

/// The targets, met or missed, from the results.
pub fn targets(r: &serde_json::Map<String, Value>) -> Table {
    let r = Value::Object(r.clone());
    let mut t = Table::new("Targets", &["target", "measured", "met"]);
    let mut row = |name: &str, measured: f64, shown: String, ok: bool| {
        let met = if measured.is_nan() {
            "not measured"
        } else if ok {
            "yes"
        } else {
            "NO"
        };
        t.row(vec![name.into(), shown, met.into()]);
    };
    let ratio = f(&r, &["1_nginx", "b_tracer", "ratio_vs_a", "median"]);
    row(
        "nginx saturation throughput, traced / untraced ≥ 0.70 (aim ≥ 0.80)",
        ratio,
        format!("{ratio:.3}"),
        ratio >= 0.70,
    );
    // Both spans of an exchange (wrk's and nginx's) against nginx's own CPU per request, probes
    // included, in the same runs.
    let us_span = f(
        &r,
        &["1_nginx", "agent", "cpu_s_per_10k_spans_max_load", "median"],
    ) * 100.0;
    let spans_req = f(&r, &["1_nginx", "agent", "spans_per_request", "median"]);
    let nginx_us = f(
        &r,
        &["1_nginx", "b_tracer", "nginx_cpu_us_per_req", "median"],
    );
    let cpu = us_span * spans_req / nginx_us;
    row(
        "agent CPU per exchange / nginx CPU per request ≤ 0.3 (aim ≤ 0.15)",
        cpu,
        format!(
            "{cpu:.2} ({:.2} µs per exchange, nginx {nginx_us:.1} µs per request)",
            us_span * spans_req
        ),
        cpu <= 0.3,
    );
    let kernel = |v: &str| f(&r, &["1_nginx", "2_kernel", v, "ns_per_data_syscall"]);
    let (ns, floor) = (kernel("b_tracer"), kernel("c_noop_probes"));
    row(
        "in-kernel ns per traced data syscall / no-op floor ≤ 4× (aim ≤ 2.5×)",
        ns / floor,
        format!("{:.1}× ({ns:.0} ns vs {floor:.0} ns)", ns / floor),
        ns / floor <= 4.0,
    );
    // nginx closes the file it served after every request; its sockets stay open (keep-alive).
    let close = |v: &str| {
        r["1_nginx"]["2_kernel"][v]["programs"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "enter_close"))
            .and_then(|p| p["ns_per_run"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let (cl, cl_floor) = (close("b_tracer"), close("c_noop_probes"));
    row(
        "non-socket fd syscalls (nginx's file close) / floor ≤ 1.5× (aim 1.2×)",
        cl / cl_floor,
        format!("{:.2}× ({cl:.0} ns vs {cl_floor:.0} ns)", cl / cl_floor),
        cl / cl_floor <= 1.5,
    );
    let p99 = f(&r, &["1_nginx", "b_tracer", "p99_ratio_vs_a", "median"]);
    row(
        "p99 at 50% of untraced max vs untraced ≤ +20% (aim ≤ +10%)",
        p99,
        pct(p99),
        p99 <= 1.20,
    );
    let sps = f(&r, &["3_pipeline", "max_spans_per_s_zero_loss"]);
    row(
        "≥ 50,000 spans/s with zero losses (CPU budget lifted)",
        sps,
        format!("{sps:.0} spans/s"),
        sps >= 50_000.0,
    );
    let rss = f(&r, &["4_memory", "rss_idle_conns_mib"]);
    let growth = f(&r, &["4_memory", "rss_growth_last_step_mib"]);
    row(
        "RSS ≤ 64 MiB with 10,000 idle connections (aim ≤ 48 MiB)",
        rss,
        format!("{rss:.1} MiB"),
        rss <= 64.0,
    );
    let last = r["4_memory"]["rss_mib"]
        .as_array()
        .and_then(|v| v.last())
        .and_then(|x| x["rss_mib"].as_f64())
        .unwrap_or(f64::NAN);
    // The last step (1M requests) comes after 500k that bring the agent to its steady state (its
    // bounded tables fill within seconds at these rates): a leak would show as growth here.
    row(
        "RSS growth over the last 1M requests (after 500k) ≤ +5%",
        growth,
        format!(
            "{growth:+.1} MiB over the last step ({:+.1}%)",
            growth / (last - growth) * 100.0
        ),
        growth <= 0.05 * (last - growth),
    );
    let tr = f(&r, &["5_python", "tracer", "added_cpu_us_per_req"]);
    let sdk = f(&r, &["5_python", "sdk", "added_cpu_us_per_req"]);
    row(
        "CPU per request ≤ 1/3 of the Python SDK's (added CPU)",
        tr / sdk,
        format!(
            "tracer +{tr:.0} µs vs SDK +{sdk:.0} µs per request ({:.2}×)",
            tr / sdk
        ),
        tr <= sdk / 3.0,
    );
    let redis = f(&r, &["6_redis", "b_tracer", "ratio_vs_a", "median"]);
    let losses = f(&r, &["6_redis", "b_tracer", "losses"]);
    row(
        "redis-benchmark -P 16 throughput ratio ≥ 0.70 (aim ≥ 0.80), zero ring-buffer losses",
        redis,
        format!("{redis:.3}, {losses} ring-buffer losses"),
        redis >= 0.70 && losses == 0.0,
    );
    t
}
