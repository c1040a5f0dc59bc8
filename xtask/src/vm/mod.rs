//! `cargo xtask vm-test`: the scenarios of `scenario.sh` with the release agent, first on this
//! machine's kernel (in a network namespace), then on another kernel (by default Debian 12's 6.1
//! cloud kernel) booted under qemu (TCG: no KVM needed) from an initramfs holding the agent,
//! nginx, static busybox and the script. The VM's results come back over the serial console;
//! both runs are checked alike here (`expect`).

mod cpio;
mod expect;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::setup::{self, Peers};

#[derive(clap::Args)]
pub struct VmArgs {
    /// Kernel image (bzImage / vmlinuz) to boot; default: Debian 12's cloud kernel (downloaded
    /// with apt, cached under target/vm).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Agent binary to boot with; default: the release build (`cargo build --release`).
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// Stop the VM and fail after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub timeout: u64,
}

/// qemu, the busybox the scenarios run with, and nginx (copied into the VM with its libraries).
pub const VM_PEERS: Peers = Peers {
    debian: &["qemu-system-x86", "busybox-static", "nginx"],
    pip: &[],
};

/// Debian's metapackage naming the current 6.1 cloud kernel package.
const KERNEL_META: &str = "linux-image-cloud-amd64";

const DIR: &str = "target/vm";

/// Boots the VM and runs the scenarios (/init).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
sh /vm/scenario.sh
reboot -f
"#;

pub fn main(args: VmArgs) -> Result<()> {
    setup::toolchain()?;
    setup::peers(&VM_PEERS)?;
    std::fs::create_dir_all(DIR)?;
    let kernel = match args.kernel {
        Some(k) => {
            if !k.is_file() {
                bail!("--kernel {}: no such file", k.display());
            }
            k
        }
        None => debian_kernel()?,
    };
    let agent = match args.agent {
        Some(a) => a,
        None => {
            crate::run(crate::cargo().args(["build", "--release", "-p", "tracer"]))?;
            PathBuf::from("target/release/tracer")
        }
    };
    let initrd = Path::new(DIR).join("initramfs.cpio");
    std::fs::write(&initrd, initramfs(&agent)?)
        .with_context(|| format!("writing {}", initrd.display()))?;

    // The same script on this machine's kernel first: both kernels must give the same spans.
    let started = Instant::now();
    let mut results = Results::new();
    let host = host_run(&agent, Duration::from_secs(args.timeout));
    // Injection works here: no degradation accepted (in the VM it is, with the agent's reason).
    results.extend(checked("this kernel", host, false));
    let host_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let console = boot(&kernel, &initrd, Duration::from_secs(args.timeout));
    results.extend(checked("vm", console, true));
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    for (name, r) in &results {
        match r {
            Ok(()) => println!("vm-test: ok   {name}"),
            Err(e) => println!("vm-test: FAIL {name}: {e}"),
        }
    }
    println!(
        "vm-test: {} booted in {:.0} s (this kernel: {host_secs:.0} s); console log: {DIR}/console.log",
        kernel.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "vm-test: {} passed, {failed} failed",
        results.len() - failed
    );
    if failed > 0 {
        bail!(
            "vm-test: {failed} check(s) failed (see above; the VM console is in {DIR}/console.log)"
        );
    }
    Ok(())
}

/// The kernel of Debian's current 6.1 cloud kernel package, downloaded and unpacked once.
fn debian_kernel() -> Result<PathBuf> {
    let depends = || setup::output(Command::new("apt-cache").args(["depends", KERNEL_META]));
    let deps = match depends() {
        Ok(d) if d.contains("Depends:") => d,
        _ => {
            crate::run(Command::new("apt-get").args(["update", "-qq"]))?;
            depends()?
        }
    };
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("`apt-cache depends {KERNEL_META}` names no kernel package"))?
        .trim()
        .to_string();
    let version = pkg.trim_start_matches("linux-image-");
    let unpacked = Path::new(DIR).join(&pkg);
    let vmlinuz = unpacked.join(format!("boot/vmlinuz-{version}"));
    if vmlinuz.is_file() {
        return Ok(vmlinuz);
    }
    eprintln!("xtask: downloading {pkg}");
    let dl = Path::new(DIR).join("download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    crate::run(
        Command::new("apt-get")
            .args(["download", "-qq", &pkg])
            .current_dir(&dl),
    )?;
    let deb = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {pkg} left no .deb"))?;
    crate::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let _ = std::fs::remove_dir_all(&dl);
    if !vmlinuz.is_file() {
        bail!("{pkg} holds no {}", vmlinuz.display());
    }
    Ok(vmlinuz)
}

/// The shared libraries `bin` loads, as `ldd` resolves them.
fn libraries(bin: &Path) -> Result<Vec<String>> {
    let out = setup::output(Command::new("ldd").arg(bin))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once(" => ") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect())
}

fn which(name: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not installed"))
}

/// The initramfs: /init, the scenario, the agent, nginx and their libraries, busybox.
fn initramfs(tracer: &Path) -> Result<Vec<u8>> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut c = cpio::Cpio::new();
    for d in ["/dev", "/proc", "/sys", "/tmp", "/root", "/etc"] {
        c.dir(d);
    }
    c.char_dev("/dev/console", 5, 1);
    c.file("/init", 0o755, INIT.as_bytes());
    c.file("/vm/scenario.sh", 0o755, include_bytes!("scenario.sh"));
    // nginx's `user root` looks the user up.
    c.file("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    c.file("/etc/group", 0o644, b"root:x:0:\n");
    c.file(
        "/etc/nsswitch.conf",
        0o644,
        b"passwd: files\ngroup: files\nhosts: files\n",
    );
    c.file("/etc/hosts", 0o644, b"127.0.0.1 localhost\n::1 localhost\n");
    c.file("/bin/busybox", 0o755, &read(&which("busybox")?)?);
    let nginx = which("nginx")?;
    let mut libs = libraries(tracer)?;
    libs.extend(libraries(&nginx)?);
    libs.sort();
    libs.dedup();
    for lib in &libs {
        c.file(lib, 0o755, &read(Path::new(lib))?);
    }
    c.file("/usr/sbin/nginx", 0o755, &read(&nginx)?);
    c.file("/bin/tracer", 0o755, &read(tracer)?);
    Ok(c.finish())
}

/// Boot `kernel` with `initrd` and return the console's lines once the VM powers off.
fn boot(kernel: &Path, initrd: &Path, timeout: Duration) -> Result<Vec<String>> {
    let log_path = Path::new(DIR).join("console.log");
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-smp", "2", "-m", "1536"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("qemu's stdout")?;
    let stderr = child.stderr.take().context("qemu's stderr")?;
    for stream in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    eprintln!(
        "xtask: booting {} under qemu (TCG, up to {} s)",
        kernel.display(),
        timeout.as_secs()
    );
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let _ = writeln!(log, "{line}");
                if let Some(i) = line.find("@vm step ") {
                    eprintln!("xtask: vm: {}", &line[i + 9..]);
                }
                lines.push(line);
            }
            // Both streams closed: qemu exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    if timed_out {
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for qemu")?;
    if timed_out {
        bail!(
            "the VM did not finish within {} s (last line: {:?}); console log: {}",
            timeout.as_secs(),
            lines.last().map(String::as_str).unwrap_or(""),
            log_path.display()
        );
    }
    if !status.success() {
        bail!(
            "qemu exited with {status}: {}",
            lines.last().map(String::as_str).unwrap_or("")
        );
    }
    Ok(lines)
}

/// The rest of each console line tagged `@vm TAG ` (the firmware's terminal escapes may precede
/// the first).
fn tagged<'a>(lines: &'a [String], tag: &'a str) -> impl Iterator<Item = &'a str> {
    lines.iter().filter_map(move |l| {
        l.find("@vm ")
            .map(|i| &l[i + 4..])
            .and_then(|r| r.strip_prefix(tag))
            .and_then(|r| r.strip_prefix(' '))
    })
}

type Results = Vec<(String, Result<(), String>)>;

/// The checks of one run of the script, named after the kernel it ran on.
fn checked(label: &str, lines: Result<Vec<String>>, may_degrade: bool) -> Results {
    match lines {
        Ok(lines) => {
            let kernel = tagged(&lines, "kernel").next().unwrap_or(label).to_string();
            check(&lines, may_degrade)
                .into_iter()
                .map(|(name, r)| (format!("{kernel}: {name}"), r))
                .collect()
        }
        Err(e) => vec![(label.to_string(), Err(format!("{e:#}")))],
    }
}

/// The cgroup v2 hierarchy's mount point.
fn cgroup2_root() -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .context("no cgroup v2 hierarchy is mounted")
}

/// Run the scenario script here, in a network namespace of its own (so its fixed port is
/// private), with busybox's applets first in PATH as in the VM. Returns its output lines.
fn host_run(agent: &Path, timeout: Duration) -> Result<Vec<String>> {
    let work = std::env::current_dir()?.join(DIR).join("host");
    let _ = std::fs::remove_dir_all(&work);
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin)?;
    let busybox = which("busybox")?;
    for applet in [
        "sh", "ip", "nc", "wget", "mkfifo", "head", "tr", "grep", "wc", "sed", "tail", "date",
        "sleep", "cat", "mkdir",
    ] {
        std::os::unix::fs::symlink(&busybox, bin.join(applet))?;
    }
    let script = work.join("scenario.sh");
    std::fs::write(&script, include_bytes!("scenario.sh"))?;
    let cgroup = cgroup2_root()?.join(format!("tracer-vmtest-{}", std::process::id()));
    let path = format!(
        "{}:/usr/sbin:/sbin:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    eprintln!("xtask: running the scenarios on this machine's kernel");
    let mut child = Command::new("unshare")
        .args(["--net", "--"])
        .arg(&busybox)
        .arg("sh")
        .arg(&script)
        .env("PATH", path)
        .env("VM_WORK", &work)
        .env("VM_TRACER", std::fs::canonicalize(agent)?)
        .env("VM_CGROUP", &cgroup)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own process group: on timeout, nginx and the agent go with it.
        .process_group(0)
        .spawn()
        .context("starting the scenario script (unshare, from util-linux)")?;
    let stdout = child.stdout.take().context("the script's stdout")?;
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SAFETY: signals the process group of our own child, by its id.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let lines = reader.join().unwrap_or_default();
    let _ = std::fs::remove_dir(&cgroup);
    match status {
        None => bail!(
            "the scenario script did not finish within {} s",
            timeout.as_secs()
        ),
        Some(s) if !s.success() => bail!("the scenario script exited with {s}"),
        Some(_) => Ok(lines),
    }
}

/// Every check: the script's own steps, then each run's spans.
fn check(lines: &[String], may_degrade: bool) -> Results {
    let mut results = Results::new();
    for step in tagged(lines, "step") {
        let mut it = step.splitn(3, ' ');
        let (name, verdict, detail) = (
            it.next().unwrap_or(""),
            it.next().unwrap_or(""),
            it.next().unwrap_or(""),
        );
        let r = if verdict == "ok" {
            Ok(())
        } else {
            // One line, even when an agent's error quotes a whole verifier log.
            Err(detail.chars().take(600).collect())
        };
        results.push((name.to_string(), r));
    }
    if !lines.iter().any(|l| l.ends_with("@vm end")) {
        results.push((
            "scenario".into(),
            Err("the script did not finish (see the console log)".into()),
        ));
    }
    for run in expect::RUNS {
        let prefix = format!("{} ", run.name);
        let mut spans = Vec::new();
        let mut bad = Vec::new();
        for line in tagged(lines, "span").filter_map(|l| l.strip_prefix(&prefix)) {
            match serde_json::from_str::<expect::Span>(line) {
                Ok(s) => spans.push(s),
                Err(e) => bad.push(format!("{e}: {line}")),
            }
        }
        let agent: Vec<&str> = tagged(lines, "agent")
            .filter_map(|l| l.strip_prefix(&prefix))
            .collect();
        let mut degraded = None;
        if let Some(d) = &run.degraded {
            if let Some(said) = agent.iter().find(|l| l.contains(d.says)) {
                let said = said.split_once(d.says).map_or(*said, |(_, rest)| rest);
                let r = if may_degrade {
                    degraded = Some(d.link);
                    Ok(())
                } else {
                    Err(format!("unexpected on this kernel{said}"))
                };
                results.push((format!("{} degraded{said}", run.name), r));
            }
        }
        for x in run.exchanges {
            let r = expect::exchange(&spans, x, degraded.unwrap_or(x.link)).map_err(|e| {
                // The agent's own lines explain a run without spans.
                if spans.is_empty() && !agent.is_empty() {
                    format!("{e}; agent said: {}", agent.join(" | "))
                } else {
                    e
                }
            });
            results.push((format!("{} GET {}", run.name, x.path), r));
        }
        let extra = expect::unexpected(&spans, run);
        let r = if extra.is_empty() && bad.is_empty() {
            Ok(())
        } else {
            Err(extra
                .iter()
                .map(|s| format!("{} {}", s.kind, s.name))
                .chain(bad)
                .collect::<Vec<_>>()
                .join("; "))
        };
        results.push((format!("{} no other spans", run.name), r));
    }
    results
}
