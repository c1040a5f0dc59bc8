//! Hosts for multi-host topologies: network namespaces the test creates itself, joined by veth
//! pairs with private addresses, deleted on drop (also on panic). Programs run inside with
//! `ip netns exec`; the agent stays in the root namespace (its tracepoints see every namespace of
//! the kernel).

use std::{
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::{
    process::run,
    util::{poll, which},
};

/// Prefix of every namespace the tests create: `tracer-test-PID-N-LABEL`.
const PREFIX: &str = "tracer-test-";

/// Network namespaces of one test, by label.
pub struct Namespaces {
    names: Vec<(String, String)>,
}

fn ip(args: &[&str]) {
    let out = run(
        "ip",
        Command::new(which("ip")).args(args),
        Duration::from_secs(20),
    );
    assert_eq!(
        out.code(),
        Some(0),
        "ip {} failed (the test needs root)\n{}",
        args.join(" "),
        out.describe()
    );
}

/// Namespaces left by test runs that were killed (their pid is gone): deleted, so that they do
/// not pile up. Only names with our prefix are touched.
fn remove_stale() {
    let out = run(
        "ip netns list",
        Command::new(which("ip")).args(["netns", "list"]),
        Duration::from_secs(20),
    );
    for line in out.stdout.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new(which("ip"))
                .args(["netns", "delete", name])
                .status();
        }
    }
}

impl Namespaces {
    /// One namespace per label, each with its loopback up.
    pub fn create(labels: &[&str]) -> Namespaces {
        static N: AtomicU32 = AtomicU32::new(0);
        remove_stale();
        let n = N.fetch_add(1, Ordering::Relaxed);
        let mut ns = Namespaces { names: Vec::new() };
        for label in labels {
            let name = format!("{PREFIX}{}-{n}-{label}", std::process::id());
            ip(&["netns", "add", &name]);
            // Pushed right away: dropped (deleted) even if the next step fails.
            ns.names.push((label.to_string(), name.clone()));
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        ns
    }

    /// The namespace's full name.
    pub fn name(&self, label: &str) -> &str {
        self.names
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, n)| n.as_str())
            .unwrap_or_else(|| panic!("no namespace labelled {label}"))
    }

    /// A veth pair between namespaces `a` and `b`, with addresses `a_addr` and `b_addr`
    /// (`10.x.y.z/30` style, same subnet), both up. Each end is created inside its namespace,
    /// named after the other, so names never clash with the host's or another test's.
    pub fn link(&self, a: &str, a_addr: &str, b: &str, b_addr: &str) {
        let (na, nb) = (self.name(a), self.name(b));
        let (ea, eb) = (format!("to-{b}"), format!("to-{a}"));
        ip(&[
            "link", "add", &ea, "netns", na, "type", "veth", "peer", "name", &eb, "netns", nb,
        ]);
        for (ns, dev, addr) in [(na, &ea, a_addr), (nb, &eb, b_addr)] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
    }

    /// `ip netns exec NAME` and the arguments that follow it: a program run inside `label`.
    pub fn exec_args(&self, label: &str) -> Vec<String> {
        vec!["netns".into(), "exec".into(), self.name(label).into()]
    }

    /// Whether `addr` accepts TCP connections from inside namespace `label`, within `timeout`.
    pub fn wait_listening(&self, label: &str, addr: SocketAddr, timeout: Duration) -> bool {
        let name = self.name(label).to_string();
        poll(timeout, || {
            let name = name.clone();
            in_netns(&name, move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .then_some(())
        })
        .is_some()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace also removes its end of every veth pair (and so the pair).
        for (_, name) in self.names.drain(..).rev() {
            let _ = Command::new(which("ip"))
                .args(["netns", "delete", &name])
                .status();
        }
    }
}

/// Run `f` on a thread of its own moved into network namespace `name` (a network namespace is a
/// property of the thread, so the rest of the test process stays where it is).
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: setns on a namespace file we hold open; affects this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
