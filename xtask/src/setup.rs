//! Idempotent installation of the build toolchain and of the test peers.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::run;

/// What a set of programs needs from Debian and from PyPI.
pub struct Peers {
    pub debian: &'static [&'static str],
    pub pip: &'static [&'static str],
}

/// The programs the tests talk to: servers and clients (busybox httpd: a server answering from
/// forked children; Redis: redis-server, redis-cli and redis-py), an OTLP collector (rotel), a
/// Prometheus parser, openssl for the TLS exporter
/// test's certificates, and an application instrumented with the OpenTelemetry SDK (context
/// propagation test).
pub const TEST_PEERS: Peers = Peers {
    debian: &[
        "nginx",
        "curl",
        "busybox-static",
        "iproute2",
        "util-linux",
        "openssl",
        "python3",
        "redis-server",
        "redis-tools",
    ],
    pip: &[
        "rotel",
        "prometheus-client",
        "opentelemetry-sdk",
        "opentelemetry-instrumentation-requests",
        "redis",
    ],
};

/// The load generators and bpf tools of `cargo xtask bench`, scenario 5's alternatives (a Flask
/// service with the OpenTelemetry SDK) and scenario 6's Redis (redis-server, redis-benchmark).
pub const BENCH_PEERS: Peers = Peers {
    debian: &[
        "nginx",
        "redis-server",
        "redis-tools",
        "curl",
        "iproute2",
        "util-linux",
        "wrk",
        "bpftrace",
        "bpftool",
    ],
    pip: &[
        "flask",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-instrumentation-flask",
    ],
};

/// bpf-linker version known to work with the nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Stdout of `cmd` (trimmed), or its stderr as the error.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn works(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// Nightly with rust-src, and bpf-linker built against the nightly's own LLVM.
pub fn toolchain() -> Result<()> {
    if !works(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let sysroot = PathBuf::from(output(
        Command::new("rustc").args(["+nightly", "--print", "sysroot"]),
    )?);
    if !sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if works(Command::new("bpf-linker").arg("--version")) {
        return Ok(());
    }
    // The linker's LLVM must be the nightly's own (a mismatch fails with "Invalid record").
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("rust"))
        })
        .context("the nightly toolchain has no libLLVM.so.*: reinstall it with `rustup toolchain install nightly`")?;
    let name = lib
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let major = name
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let prefix = cargo_home().join("tracer-llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let dst = prefix.join("lib").join(&name);
    if !dst.exists() {
        std::fs::copy(&lib, &dst).with_context(|| format!("copying {}", lib.display()))?;
    }
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&name, &link)?;
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {major} (a few minutes, once)");
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major}"))
        .env("LLVM_PREFIX", &prefix))
}

/// Debian and Python packages for the programs the tests talk to.
pub fn peers(peers: &Peers) -> Result<()> {
    let missing: Vec<&str> = peers
        .debian
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_ok_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let py_missing: Vec<&str> = peers
        .pip
        .iter()
        .copied()
        .filter(|p| !works(Command::new("python3").args(["-m", "pip", "show", "-q", p])))
        .collect();
    if !py_missing.is_empty() {
        // The whole list, upgraded together: installing one OpenTelemetry package alone can
        // upgrade the API it shares with others already there and leave them mismatched.
        eprintln!(
            "xtask: installing Python packages: {} (missing: {})",
            peers.pip.join(" "),
            py_missing.join(" ")
        );
        run(Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--upgrade"])
            .args(peers.pip))?;
    }
    Ok(())
}
