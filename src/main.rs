//! The `shunt` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use shunt::config::Config;

#[derive(Parser)]
#[command(
    name = "shunt",
    version,
    about = "AF_XDP userspace fast-path dataplane: L4 load balancing, conntrack, NAT"
)]
struct Cli {
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long, global = true, default_value = "info", env = "SHUNT_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to the configured interfaces and forward until SIGINT/SIGTERM.
    Run {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Validate a config file (and, unless --offline, this host) without running.
    Check {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// Only check the file, not that its interfaces, queues and cores exist here.
        #[arg(long)]
        offline: bool,
    },
    /// Build or tear down the network-namespace lab the default config runs on.
    Lab {
        #[arg(value_enum)]
        action: LabAction,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LabAction {
    Up,
    Down,
    Status,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shunt: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check { config, offline } => {
            let cfg = Config::load(&config)?;
            if !offline {
                cfg.check_host()?;
            }
            println!(
                "{}: ok ({} interface(s), {} worker(s), {} pipeline(s), {} service(s), {} route(s))",
                config.display(),
                cfg.interfaces.len(),
                cfg.workers.len(),
                cfg.pipelines.len(),
                cfg.services.len(),
                cfg.routes.len()
            );
            Ok(())
        }
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            shunt::sys::check_kernel().map_err(anyhow::Error::msg)?;
            shunt::sys::check_privileges().map_err(anyhow::Error::msg)?;
            cfg.check_host()?;
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone())?;
            }
            let reload = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())?;
            let summary = shunt::dataplane::run(&cfg, stop, reload)?;
            print!("{summary}");
            Ok(())
        }
        Command::Lab { action } => shunt::lab::run(match action {
            LabAction::Up => "up",
            LabAction::Down => "down",
            LabAction::Status => "status",
        }),
    }
}
