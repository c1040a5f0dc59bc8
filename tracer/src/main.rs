//! `tracer` binary: parse arguments, set up logging, run; errors as one line, exit 1.

use clap::Parser;
use tracer::cli::Cli;

/// Small short-lived allocations on several threads (records, heads, spans): mimalloc's
/// thread-local free lists cost far less than glibc's arenas here.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(format!("tracer={}", cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tracer=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    if let Err(e) = tracer::app::run(cli) {
        // One line: the chain of causes, no backtrace.
        eprintln!("tracer: error: {e:#}");
        std::process::exit(1);
    }
}

/// `--help` and `--version` print as clap renders them; a usage error is one line and exit 2.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("tracer: error: {first} (see `tracer --help`)");
    std::process::exit(2);
}
