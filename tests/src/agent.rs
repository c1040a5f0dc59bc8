//! The agent under test: `tracer` started with filters, its stdout collected in the background.

use std::{
    io::{BufRead, BufReader, Read},
    os::unix::process::ExitStatusExt,
    process::{Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::{
    process::Proc,
    span::{match_exact, well_formed, Expect, Span},
    util::tracer_bin,
};

/// How long the agent may take to attach before the test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a test waits for the spans of what it did.
pub const SPAN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct State {
    spans: Vec<Span>,
    /// Every stdout line, JSON or not.
    lines: Vec<String>,
    /// stdout lines that are not a JSON object (in JSON mode).
    bad_lines: Vec<String>,
    stderr: String,
    ready: bool,
    stdout_closed: bool,
    stderr_closed: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap());
        self.cv.notify_all();
    }
}

pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A running agent. Dropped while running: killed.
pub struct Agent {
    proc: Proc,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    json: bool,
    args: Vec<String>,
    started_unix_ns: u64,
    ready_at: Instant,
}

/// `--cpu-budget` of test agents: more cores than a test machine has.
pub const NO_CPU_LIMIT: &str = "1024";

/// Least time between `tracer: ready` and the SIGINT of `stop`. The agent loses or dies of a
/// SIGINT sent right after `ready` (its handler is installed a moment later): `cli.rs`
/// `sigint_right_after_ready` tests that on its own; the other tests keep clear of it.
pub const MIN_RUN: Duration = Duration::from_millis(250);

/// What a stopped agent left.
pub struct Stopped {
    pub status: ExitStatus,
    pub spans: Vec<Span>,
    pub lines: Vec<String>,
    pub stderr: String,
    pub args: Vec<String>,
    started_unix_ns: u64,
    stopped_unix_ns: u64,
    bad_lines: Vec<String>,
}

impl Agent {
    /// `tracer --output json --pid P...` plus `extra` arguments; returns once it is attached.
    /// Without `--cpu-budget` in `extra`, the agent gets [`NO_CPU_LIMIT`].
    pub fn json(pids: &[u32], extra: &[&str]) -> Agent {
        Self::start("json", pids, extra)
    }

    /// `tracer --output FORMAT --pid P... EXTRA...`; returns once it is attached (`tracer: ready`
    /// on stderr) and fails the test if that does not happen within 30 s.
    pub fn start(format: &str, pids: &[u32], extra: &[&str]) -> Agent {
        Self::start_with_env(format, pids, extra, &[])
    }

    /// `start`, with these environment variables set for the agent (e.g. `OTEL_EXPORTER_OTLP_*`).
    /// The agent never inherits the test's own `OTEL_*` variables: only `env`'s reach it.
    pub fn start_with_env(
        format: &str,
        pids: &[u32],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        assert!(
            !pids.is_empty(),
            "the agent must be filtered by the pids of the test's own processes"
        );
        let mut args = vec!["--output".to_string(), format.to_string()];
        for p in pids {
            args.push("--pid".into());
            args.push(p.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        // The tests check what is captured, on a debug build sharing a busy machine: no
        // shedding for CPU unless a test asks for it (the ring buffer's fill still sheds).
        if !extra.contains(&"--cpu-budget") {
            args.extend(["--cpu-budget".to_string(), NO_CPU_LIMIT.to_string()]);
        }
        let bin = tracer_bin();
        let started_unix_ns = unix_ns();
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("TRACER_LOG");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        let mut proc = Proc::spawn("tracer", &mut cmd);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        let json = format == "json";
        let out = proc.child_mut().stdout.take().unwrap();
        let err = proc.child_mut().stderr.take().unwrap();
        let s1 = shared.clone();
        let r1 = std::thread::spawn(move || read_stdout(out, json, &s1));
        let s2 = shared.clone();
        let r2 = std::thread::spawn(move || read_stderr(err, &s2));
        let mut agent = Agent {
            proc,
            shared,
            readers: vec![r1, r2],
            json,
            args,
            started_unix_ns,
            ready_at: Instant::now(),
        };
        agent.wait_ready(&bin.display().to_string());
        agent.ready_at = Instant::now();
        agent
    }

    fn wait_ready(&mut self, bin: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut st = self.shared.state.lock().unwrap();
        loop {
            if st.ready {
                return;
            }
            let now = Instant::now();
            if st.stderr_closed || now >= deadline {
                let stderr = st.stderr.clone();
                drop(st);
                let status = self.proc.wait_timeout(Duration::from_secs(2));
                panic!(
                    "the agent did not become ready (no `tracer: ready` on stderr {}): {bin} {}\nexit status: {:?}\n--- stderr ---\n{stderr}",
                    if now >= deadline { "within 30 s" } else { "before it exited" },
                    self.args.join(" "),
                    status
                );
            }
            st = self.shared.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid
    }

    pub fn stderr(&self) -> String {
        self.shared.state.lock().unwrap().stderr.clone()
    }

    pub fn spans(&self) -> Vec<Span> {
        self.shared.state.lock().unwrap().spans.clone()
    }

    /// Wait until at least `n` spans satisfy `pred`; returns them. On timeout: `Err` with all spans.
    pub fn try_wait_for(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Span) -> bool,
    ) -> Result<Vec<Span>, String> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        loop {
            let got: Vec<Span> = st.spans.iter().filter(|s| pred(s)).cloned().collect();
            if got.len() >= n {
                return Ok(got);
            }
            let now = Instant::now();
            if now >= deadline || st.stdout_closed {
                let all: Vec<String> = st.spans.iter().map(|s| s.to_string()).collect();
                return Err(format!(
                    "waited {timeout:?} for {n} span(s), {} matched{}; all spans:\n{}\n--- agent stderr ---\n{}",
                    got.len(),
                    if st.stdout_closed { " (the agent's stdout closed)" } else { "" },
                    all.join("\n"),
                    st.stderr
                ));
            }
            st = self.shared.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// `try_wait_for`, failing the test on timeout.
    pub fn wait_for(&self, n: usize, timeout: Duration, pred: impl Fn(&Span) -> bool) -> Vec<Span> {
        self.try_wait_for(n, timeout, pred)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Wait until `n` stdout lines arrived (any format).
    pub fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        loop {
            if st.lines.len() >= n {
                return st.lines.clone();
            }
            let now = Instant::now();
            if now >= deadline || st.stdout_closed {
                panic!("waited {timeout:?} for {n} line(s) on stdout, got:\n{}\n--- agent stderr ---\n{}", st.lines.join("\n"), st.stderr);
            }
            st = self.shared.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Send a signal to the agent.
    pub fn signal(&self, sig: libc::c_int) {
        self.proc.signal(sig);
    }

    /// Wait up to `timeout` for the agent to exit by itself (`--count`, `--duration`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_timeout(timeout)
    }

    /// SIGINT (unless it exited already), wait for the exit (the agent flushes what it has), collect everything.
    pub fn stop(self) -> Stopped {
        self.stop_after(MIN_RUN)
    }

    /// `stop`, the SIGINT sent no sooner than `min_run` after `tracer: ready`.
    pub fn stop_after(mut self, min_run: Duration) -> Stopped {
        if let Some(rest) = min_run.checked_sub(self.ready_at.elapsed()) {
            std::thread::sleep(rest);
        }
        self.proc.signal(libc::SIGINT);
        let status = match self.proc.wait_timeout(Duration::from_secs(20)) {
            Some(s) => s,
            None => {
                let threads = thread_dump(self.proc.pid);
                let stderr = self.stderr();
                let spans = self.spans().len();
                self.proc.kill();
                panic!("the agent did not exit within 20 s of SIGINT ({spans} spans printed so far)\n--- threads ---\n{threads}--- stderr ---\n{stderr}");
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let st = std::mem::take(&mut *self.shared.state.lock().unwrap());
        Stopped {
            status,
            spans: st.spans,
            lines: st.lines,
            stderr: st.stderr,
            args: self.args.clone(),
            started_unix_ns: self.started_unix_ns,
            stopped_unix_ns: unix_ns(),
            bad_lines: st.bad_lines,
        }
    }

    /// Wait until as many spans as `expected` arrived (at most `SPAN_TIMEOUT`), stop the agent
    /// (so that anything late is flushed too) and assert that its spans are exactly `expected`
    /// and all well formed, and that it exited cleanly. Returns the spans in `expected`'s order.
    pub fn expect_exact(self, expected: &[Expect]) -> Vec<Span> {
        // Until every expectation has a candidate (not merely as many spans: an early extra span
        // must not cut the wait for a late expected one).
        let done = |spans: &[Span]| {
            spans.len() >= expected.len()
                && expected.iter().all(|e| spans.iter().any(|s| e.matches(s)))
        };
        if !self.wait_until(SPAN_TIMEOUT, done) {
            // Reported with the exact-set diff below, which says what is missing.
            eprintln!("note: waited {SPAN_TIMEOUT:?} for the expected spans");
        }
        let stopped = self.stop();
        stopped.assert_clean_exit();
        stopped.assert_exact(expected)
    }

    /// Wait until `f(spans so far)` holds; false on timeout or when the agent's stdout closed.
    pub fn wait_until(&self, timeout: Duration, f: impl Fn(&[Span]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        loop {
            if f(&st.spans) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.stdout_closed {
                return false;
            }
            st = self.shared.cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.proc.is_running() {
            // A clean detach if it can, else killed with its group.
            self.proc.signal(libc::SIGINT);
            self.proc.wait_timeout(Duration::from_secs(5));
        }
        self.proc.kill();
    }
}

impl Stopped {
    /// Exit status 0 after SIGINT, a summary on stderr, no panic, only JSON objects on stdout.
    pub fn assert_clean_exit(&self) {
        let ctx = || {
            format!(
                "agent: tracer {}\nexit status: {:?} signal {:?}\n--- stderr ---\n{}",
                self.args.join(" "),
                self.status.code(),
                self.status.signal(),
                self.stderr
            )
        };
        assert!(
            self.status.success(),
            "the agent did not exit 0 after SIGINT\n{}",
            ctx()
        );
        assert!(
            !self.stderr.contains("panicked"),
            "the agent panicked\n{}",
            ctx()
        );
        assert!(
            self.stderr.contains(" spans from "),
            "no exit summary on stderr\n{}",
            ctx()
        );
        assert!(
            self.bad_lines.is_empty(),
            "stdout lines that are not span JSON objects: {:?}\n{}",
            self.bad_lines,
            ctx()
        );
    }

    /// Every span well formed (for tests that check many spans without one expectation each).
    pub fn assert_well_formed(&self) {
        let window = (
            self.started_unix_ns - 1_000_000_000,
            self.stopped_unix_ns + 1_000_000_000,
        );
        let problems: Vec<String> = self
            .spans
            .iter()
            .filter_map(|s| {
                let e = well_formed(s, window);
                (!e.is_empty())
                    .then(|| format!("malformed span {}: {}\n  {s}", s.name(), e.join("; ")))
            })
            .collect();
        assert!(
            problems.is_empty(),
            "{}\n--- agent stderr ---\n{}",
            problems.join("\n"),
            self.stderr
        );
    }

    /// Every span well formed, and the set exactly `expected`.
    pub fn assert_exact(&self, expected: &[Expect]) -> Vec<Span> {
        let window = (
            self.started_unix_ns - 1_000_000_000,
            self.stopped_unix_ns + 1_000_000_000,
        );
        // Shown by libtest on failure, or with --nocapture.
        eprintln!(
            "agent: tracer {}: {} span(s)",
            self.args.join(" "),
            self.spans.len()
        );
        for s in &self.spans {
            eprintln!("  {s}");
        }
        let mut problems = String::new();
        for s in &self.spans {
            let e = well_formed(s, window);
            if !e.is_empty() {
                problems += &format!("malformed span {}: {}\n  {s}\n", s.name(), e.join("; "));
            }
        }
        match match_exact(&self.spans, expected) {
            Ok(v) if problems.is_empty() => v,
            Ok(_) => panic!("{problems}\n--- agent stderr ---\n{}", self.stderr),
            Err(r) => panic!(
                "{problems}{r}\n--- agent: tracer {} ---\n{}",
                self.args.join(" "),
                self.stderr
            ),
        }
    }
}

/// Each thread of `pid`: name, state, wait channel and kernel stack (for a hung agent).
fn thread_dump(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let p = t.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        let state = read("status")
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or("")
            .to_string();
        out += &format!(
            "{} {} {} wchan={}\n",
            t.file_name().to_string_lossy(),
            read("comm").trim(),
            state,
            read("wchan")
        );
        for l in read("stack").lines().take(12) {
            out += &format!("    {l}\n");
        }
    }
    out
}

fn read_stdout(out: impl Read, json: bool, shared: &Shared) {
    let mut r = BufReader::new(out);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches('\n')
                    .to_string();
                shared.update(|st| {
                    if json {
                        match serde_json::from_str::<serde_json::Value>(&line) {
                            Ok(v) if v.is_object() => st.spans.push(Span(v)),
                            _ => st.bad_lines.push(line.clone()),
                        }
                    }
                    st.lines.push(line);
                });
            }
        }
    }
    shared.update(|st| st.stdout_closed = true);
}

fn read_stderr(err: impl Read, shared: &Shared) {
    let mut r = BufReader::new(err);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).into_owned();
                shared.update(|st| {
                    if line.trim_end() == "tracer: ready" {
                        st.ready = true;
                    }
                    st.stderr.push_str(&line);
                });
            }
        }
    }
    shared.update(|st| st.stderr_closed = true);
}
