//! Builds the kernel programs (`tracer-ebpf`) with the nightly toolchain and bpf-linker, the aya
//! way, so a plain `cargo build` produces a complete agent.

use std::{env, fs, path::PathBuf};

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // Library-only builds (parser work, docs): the agent then refuses to start with a clear line.
        fs::write(out_dir.join("tracer-probes"), b"")
            .context("writing empty probes placeholder")?;
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let features: &[&str] = if env::var_os("CARGO_FEATURE_NOOP_PROBES").is_some() {
        &["noop"]
    } else {
        &[]
    };
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../tracer-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [Package { name: "tracer-ebpf", root_dir: root, no_default_features: false, features }],
        Toolchain::default(),
    )
    .context("building the eBPF programs (needs rustup nightly with rust-src and bpf-linker: run `cargo xtask setup`)")
}
