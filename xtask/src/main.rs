//! Developer tasks: `cargo xtask setup | run | test | vm-test | bench`. Each installs what it needs itself, so a
//! fresh machine needs nothing but rustup and cargo.

mod bench;
mod setup;
mod vm;

use std::process::Command;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the eBPF toolchain (nightly rust-src, bpf-linker) and, with --peers, the
    /// programs the tests talk to.
    Setup {
        #[arg(long)]
        peers: bool,
    },
    /// Build the agent (release) and run it as `tracer ARGS...` (needs root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run every test: unit, parser, the real-program integration tests, and
    /// `vm-test` (the same scenarios on Debian 12's kernel, under qemu).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Boot another kernel (default: Debian 12's 6.1) under qemu with the release agent and run
    /// the scenarios there: the programs load and attach, and the expected spans come out.
    VmTest(vm::VmArgs),
    /// Measure what tracing costs (overhead and capacity, side by side); see BENCHMARKS.md.
    /// Installs its peers, builds the agent variants, needs root.
    Bench(bench::BenchArgs),
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root).context("entering the workspace")?;
    match args.cmd {
        Cmd::Setup { peers } => {
            setup::toolchain()?;
            if peers {
                setup::peers(&setup::TEST_PEERS)?;
            }
        }
        Cmd::Run { args } => {
            setup::toolchain()?;
            run(cargo().args(["build", "--release", "-p", "tracer"]))?;
            let err = exec(Command::new(root.join("target/release/tracer")).args(args));
            bail!("cannot start target/release/tracer: {err}");
        }
        Cmd::Test { args } => {
            setup::toolchain()?;
            setup::peers(&setup::TEST_PEERS)?;
            run(cargo().args(["build", "-p", "tracer"]))?;
            // Bench code is built (not run) so it cannot rot; the fuzz targets build with `cargo +nightly fuzz`.
            run(cargo().args(["build", "--benches", "-p", "tracer"]))?;
            // Every test binary runs, and the VM too, so one failure does not hide the others.
            let tests = run(cargo()
                .args(["test", "--workspace", "--no-fail-fast"])
                .args(args));
            let vm = vm::main(vm::VmArgs {
                kernel: None,
                agent: None,
                timeout: 900,
            });
            match (tests, vm) {
                (Ok(()), Ok(())) => {}
                (Err(t), Ok(())) => return Err(t),
                (Ok(()), Err(v)) => return Err(v),
                (Err(t), Err(v)) => bail!("{t:#}; and {v:#}"),
            }
        }
        Cmd::VmTest(args) => vm::main(args)?,
        Cmd::Bench(args) => bench::main(args)?,
    }
    Ok(())
}

fn exec(cmd: &mut Command) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    cmd.exec()
}
