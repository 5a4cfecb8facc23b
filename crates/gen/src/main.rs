//! `shunt-gen`: the traffic generator of the lab comparison
//! (`scripts/bench-vs-dpdk.sh`); see the library docs for how it sends.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;

/// TX-only AF_XDP traffic generator: UDP over 1..1M flows on one interface queue.
#[derive(Parser)]
#[command(name = "shunt-gen", version)]
struct Cli {
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long, default_value = "info", env = "SHUNT_LOG")]
    log: String,
    #[command(flatten)]
    args: shunt_gen::GenArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("shunt-gen: error: {e}");
            return ExitCode::FAILURE;
        }
    }
    match shunt_gen::main(&cli.args, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shunt-gen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
