//! The command line: bad usage, missing privileges, stopping.

use std::{path::PathBuf, process::Command, time::Duration};

use rstest::rstest;

use tracer_tests::{process::run, tracer_bin, util::which, Agent, Output, Proc, TempDir};

fn tracer(args: &[&str]) -> Output {
    run(
        "tracer",
        Command::new(tracer_bin())
            .args(args)
            .env_remove("RUST_BACKTRACE"),
        Duration::from_secs(30),
    )
}

/// Non-zero exit, exactly one line on stderr that mentions `needle`, no backtrace.
fn assert_one_line_error(out: &Output, needle: &str) {
    assert_ne!(out.code(), Some(0), "exit status 0\n{}", out.describe());
    assert!(
        out.code().is_some(),
        "killed by a signal\n{}",
        out.describe()
    );
    for bad in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(
            !out.stderr.contains(bad),
            "a panic / backtrace on stderr\n{}",
            out.describe()
        );
    }
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line on stderr expected, got {}\n{}",
        lines.len(),
        out.describe()
    );
    assert!(
        lines[0].contains(needle),
        "the error does not mention {needle:?}\n{}",
        out.describe()
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout expected\n{}",
        out.describe()
    );
}

#[test]
fn unknown_flag() {
    let out = tracer(&["--bogus"]);
    assert_one_line_error(&out, "--bogus");
}

#[rstest]
#[case::zero("--cpu-budget=0")]
#[case::negative("--cpu-budget=-1")]
#[case::not_a_number("--cpu-budget=half")]
#[case::not_finite("--cpu-budget=inf")]
fn cpu_budget_not_a_positive_number(#[case] arg: &str) {
    let out = tracer(&[arg, "--duration", "1"]);
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert_one_line_error(&out, "--cpu-budget");
}

#[rstest]
#[case::capture_bytes(&["--capture-bytes", "1"], "capture-bytes")]
#[case::ring_not_a_power_of_two(&["--ring-buffer-mib", "3"], "ring-buffer-mib")]
#[case::ring_too_large(&["--ring-buffer-mib", "2048"], "ring-buffer-mib")]
fn setting_out_of_range(#[case] args: &[&str], #[case] named: &str) {
    let mut all = args.to_vec();
    all.extend(["--duration", "1"]);
    let out = tracer(&all);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert_one_line_error(&out, named);
}

/// A copy of the agent binary any user can run (the original may sit in a directory only root
/// can enter).
fn world_runnable_copy(dir: &TempDir) -> PathBuf {
    let p = dir.join("tracer");
    std::fs::copy(tracer_bin(), &p).unwrap();
    tracer_tests::util::set_mode(&p, 0o755);
    p
}

/// Not root: one line naming CAP_BPF, exit 1.
#[test]
fn not_root() {
    let dir = TempDir::new("notroot");
    let bin = world_runnable_copy(&dir);
    let out = run(
        "setpriv tracer",
        Command::new(which("setpriv"))
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(&bin)
            .args(["--duration", "1"])
            .current_dir(dir.path()),
        Duration::from_secs(30),
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert_one_line_error(&out, "CAP_BPF");
}

/// Root, but without any capability (bounding set emptied): the same one line.
#[test]
fn root_without_capabilities() {
    let out = run(
        "setpriv tracer",
        Command::new(which("setpriv"))
            .args(["--bounding-set=-all", "--inh-caps=-all"])
            .arg(tracer_bin())
            .args(["--duration", "1"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert_one_line_error(&out, "CAP_BPF");
}

/// A process of the test's own that does no network I/O, to give the agent a pid filter.
fn idle_process() -> Proc {
    Proc::spawn(
        "sleep",
        Command::new("sleep")
            .arg("60")
            .stdin(std::process::Stdio::null()),
    )
}

/// `--duration 1`: the agent stops by itself and exits 0 with its summary.
#[test]
fn duration_stops_the_agent() {
    let idle = idle_process();
    let mut agent = Agent::json(&[idle.pid], &["--duration", "1"]);
    let status = agent.wait_exit(Duration::from_secs(15));
    let stopped = agent.stop();
    assert!(
        status.is_some(),
        "the agent did not stop within 15 s of --duration 1\n{}",
        stopped.stderr
    );
    stopped.assert_clean_exit();
    assert!(stopped.spans.is_empty());
}

/// SIGINT as soon as the agent says it is ready: a clean exit (0, summary), every time.
#[test]
fn sigint_right_after_ready() {
    let idle = idle_process();
    for i in 0..12 {
        let agent = Agent::json(&[idle.pid], &[]);
        let stopped = agent.stop_after(Duration::ZERO);
        if !stopped.status.success() || !stopped.stderr.contains(" spans from ") {
            panic!(
                "attempt {i}: SIGINT right after `tracer: ready` did not make a clean exit: status {:?} signal {:?}\n--- stderr ---\n{}",
                stopped.status.code(),
                std::os::unix::process::ExitStatusExt::signal(&stopped.status),
                stopped.stderr
            );
        }
    }
}

/// SIGTERM: a clean exit too.
#[test]
fn sigterm_exits_cleanly() {
    let idle = idle_process();
    let mut agent = Agent::json(&[idle.pid], &[]);
    std::thread::sleep(tracer_tests::agent::MIN_RUN);
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(20));
    let stopped = agent.stop();
    assert!(
        status.is_some(),
        "the agent did not exit within 20 s of SIGTERM\n{}",
        stopped.stderr
    );
    stopped.assert_clean_exit();
}
