//! `tracer` binary: parse arguments, set up logging, run; errors as one line, exit 1.

use clap::Parser;
use tracer::cli::Cli;

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(format!("tracer={}", cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tracer=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    if let Err(e) = tracer::app::run(cli) {
        // One line: the chain of causes, no backtrace.
        eprintln!("tracer: error: {e:#}");
        std::process::exit(1);
    }
}
