//! The `shunt` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use shunt::config::Config;
use shunt::control::Request;
use shunt::telemetry::stats::Snapshot;

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
    /// Counters of the running instance: workers, services, backends, XDP.
    Stats {
        #[command(flatten)]
        socket: SocketArg,
        /// Refresh every N seconds, showing rates per second.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1")]
        watch: Option<f64>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Latency report of the running instance: p50 … p99.99, max, per worker and merged.
    Histogram {
        #[command(flatten)]
        socket: SocketArg,
        /// What to print: table, hgrm (HdrHistogram percentile distribution), json, svg.
        #[arg(long, default_value = "table")]
        format: String,
        /// Also write latency.hgrm, latency.json and latency.svg into this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// List a running instance's backends (admin state, health, connections) or change them.
    Backend {
        #[command(flatten)]
        socket: SocketArg,
        #[arg(value_enum)]
        action: BackendAction,
        /// Service name (list: only this service's backends).
        #[arg(long)]
        service: Option<String>,
        /// Backend address.
        #[arg(long)]
        addr: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        /// For list: print JSON.
        #[arg(long)]
        json: bool,
        /// For add and weight (0 drains).
        #[arg(long)]
        weight: Option<u32>,
        /// For add: the backend's MAC (else learned from the neighbour table).
        #[arg(long)]
        mac: Option<String>,
    },
    /// Add or remove a service on the running instance.
    Service {
        #[command(flatten)]
        socket: SocketArg,
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Re-read the config file of the running instance (same as SIGHUP).
    Reload {
        #[command(flatten)]
        socket: SocketArg,
    },
}

#[derive(clap::Args)]
struct SocketArg {
    /// Control socket of the running instance.
    #[arg(long, env = "SHUNT_SOCKET", default_value = "/run/shunt/control.sock")]
    socket: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendAction {
    /// Admin state, health, weight, last probe, connections (active/inactive).
    List,
    Add,
    Remove,
    /// No new flows; existing flows finish. Kept across reloads.
    Drain,
    /// No new flows, existing flows expired, no probes. Kept across reloads.
    Disable,
    /// Back in rotation after drain or disable (while healthy).
    Enable,
    Weight,
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Add a service described by a TOML file holding one [[service]]-style table
    /// (name, vip, port, protocol, pipeline, backends, …).
    Add {
        #[arg(long)]
        file: PathBuf,
    },
    /// Remove a service by name.
    Remove { name: String },
    /// Services: VIP, port, protocol, pipeline, backends up/total.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
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
            shunt::pipeline::registry::check(&cfg)?;
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
            let summary = shunt::control::run(&cfg, stop, reload)?;
            print!("{summary}");
            Ok(())
        }
        Command::Stats { socket, watch, json } => stats(&socket.socket, watch, json),
        Command::Histogram { socket, format, out } => {
            let reply = call(&socket.socket, &Request::Histogram { format: format.clone() })?;
            match reply {
                serde_json::Value::String(s) => print!("{s}"),
                other => println!("{}", serde_json::to_string_pretty(&other)?),
            }
            if let Some(dir) = out {
                std::fs::create_dir_all(&dir)?;
                for (fmt, file) in
                    [("hgrm", "latency.hgrm"), ("json", "latency.json"), ("svg", "latency.svg")]
                {
                    let v = call(&socket.socket, &Request::Histogram { format: fmt.into() })?;
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => serde_json::to_string_pretty(&other)?,
                    };
                    std::fs::write(dir.join(file), text)?;
                    eprintln!("wrote {}", dir.join(file).display());
                }
            }
            Ok(())
        }
        Command::Backend { socket, action, service, addr, port, json, weight, mac } => {
            if let BackendAction::List = action {
                let rows = call(&socket.socket, &Request::BackendList { service })?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    print!("{}", backend_table(&rows));
                }
                return Ok(());
            }
            let need = |what: &str| anyhow::anyhow!("backend {} needs --{what}", action_name(action));
            let service = service.ok_or_else(|| need("service"))?;
            let addr = addr.ok_or_else(|| need("addr"))?;
            let port = port.ok_or_else(|| need("port"))?;
            let req = match action {
                BackendAction::List => unreachable!("answered above"),
                BackendAction::Add => {
                    Request::BackendAdd { service, addr, port, weight: weight.unwrap_or(100), mac }
                }
                BackendAction::Remove => Request::BackendRemove { service, addr, port },
                BackendAction::Drain => Request::BackendDrain { service, addr, port },
                BackendAction::Disable => Request::BackendDisable { service, addr, port },
                BackendAction::Enable => Request::BackendEnable { service, addr, port },
                BackendAction::Weight => Request::BackendWeight {
                    service,
                    addr,
                    port,
                    weight: weight.ok_or_else(|| anyhow::anyhow!("backend weight needs --weight N"))?,
                },
            };
            let r = call(&socket.socket, &req)?;
            match r.get("admin").and_then(|a| a.as_str()) {
                Some(admin) => println!(
                    "ok: {admin} (was {}; generation {})",
                    r["before"].as_str().unwrap_or("?"),
                    r["generation"]
                ),
                None => println!("ok: applied (generation {})", r["generation"]),
            }
            Ok(())
        }
        Command::Service { socket, action } => {
            let req = match action {
                ServiceAction::Add { file } => {
                    let text = std::fs::read_to_string(&file)?;
                    let table: toml::Table =
                        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                    let json = serde_json::to_value(table)?;
                    let serde_json::Value::Object(service) = json else { anyhow::bail!("not a table") };
                    Request::ServiceAdd { service }
                }
                ServiceAction::Remove { name } => Request::ServiceRemove { name },
                ServiceAction::List { json } => {
                    let rows = call(&socket.socket, &Request::ServiceList {})?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&rows)?);
                    } else {
                        print!("{}", service_table(&rows));
                    }
                    return Ok(());
                }
            };
            let r = call(&socket.socket, &req)?;
            println!("ok: applied (generation {})", r["generation"]);
            Ok(())
        }
        Command::Reload { socket } => {
            let r = call(&socket.socket, &Request::Reload {})?;
            println!("ok: reloaded (generation {})", r["generation"]);
            for (what, key) in [("kept", "kept"), ("changed", "changed")] {
                for line in r[key].as_array().into_iter().flatten() {
                    println!("  {what}: {}", line.as_str().unwrap_or_default());
                }
            }
            Ok(())
        }
        Command::Lab { action } => shunt::lab::run(match action {
            LabAction::Up => "up",
            LabAction::Down => "down",
            LabAction::Status => "status",
        }),
    }
}

/// Sends a request to the running instance; its error becomes ours.
fn call(socket: &std::path::Path, req: &Request) -> anyhow::Result<serde_json::Value> {
    let r = shunt::control::request(socket, req)?;
    if !r.ok {
        anyhow::bail!("{}", r.error.unwrap_or_else(|| "request failed".into()));
    }
    Ok(r.data.unwrap_or(serde_json::Value::Null))
}

fn stats(socket: &std::path::Path, watch: Option<f64>, json: bool) -> anyhow::Result<()> {
    let fetch =
        || -> anyhow::Result<Snapshot> { Ok(serde_json::from_value(call(socket, &Request::Stats {})?)?) };
    let mut prev = fetch()?;
    let Some(secs) = watch else {
        if json {
            println!("{}", serde_json::to_string_pretty(&prev)?);
        } else {
            print!("{}", prev.table(None));
        }
        return Ok(());
    };
    let every = std::time::Duration::from_secs_f64(secs.max(0.1));
    let mut at = std::time::Instant::now();
    loop {
        std::thread::sleep(every);
        let now = fetch()?;
        let dt = at.elapsed().as_secs_f64();
        at = std::time::Instant::now();
        if json {
            println!("{}", serde_json::to_string(&now)?);
        } else {
            // Clear the screen, then rates over the last interval.
            print!("\x1b[2J\x1b[H{}", now.table(Some((&prev, dt))));
        }
        prev = now;
    }
}

fn action_name(a: BackendAction) -> String {
    a.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string())
}

/// `shunt backend list` as a table, like `ipvsadm -L`.
fn backend_table(rows: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<12} {:<28} {:<9} {:<8} {:>6} {:<5} {:>6} {:>8}  {:<10} {:>9}  {}\n",
        "SERVICE",
        "BACKEND",
        "ADMIN",
        "HEALTH",
        "WEIGHT",
        "TABLE",
        "ACTIVE",
        "INACTIVE",
        "SINCE",
        "LATENCY",
        "LAST PROBE"
    );
    for r in rows.as_array().into_iter().flatten() {
        let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        let (latency, last) = match r["last_probe"].as_object() {
            Some(p) => (
                format!("{:.2}ms", p["latency_ms"].as_f64().unwrap_or(0.0)),
                format!(
                    "{} ({})",
                    if p["pass"].as_bool() == Some(true) { "pass" } else { "fail" },
                    p["detail"].as_str().unwrap_or("")
                ),
            ),
            None => ("-".into(), if r["check"] == "none" { "no check".into() } else { "-".into() }),
        };
        let _ = writeln!(
            out,
            "{:<12} {:<28} {:<9} {:<8} {:>6} {:<5} {:>6} {:>8}  {:<10} {:>9}  {}",
            s("service"),
            s("backend"),
            s("admin"),
            s("health"),
            r["weight"],
            if r["in_table"].as_bool() == Some(true) { "yes" } else { "no" },
            r["active"],
            r["inactive"],
            since(r["since_secs"].as_u64().unwrap_or(0)),
            latency,
            last
        );
    }
    out
}

fn since(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

/// `shunt service list` as a table.
fn service_table(rows: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<12} {:<28} {:<5} {:<10} {:<6} {:>7}\n",
        "SERVICE", "VIP", "PROTO", "PIPELINE", "CHECK", "UP"
    );
    for r in rows.as_array().into_iter().flatten() {
        let vip = r["vip"].as_str().unwrap_or("-");
        let vip: std::net::IpAddr = vip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        let port = r["port"].as_u64().unwrap_or(0) as u16;
        let panic = if r["panic"].as_bool() == Some(true) { "  (all down: panic mode)" } else { "" };
        let _ = writeln!(
            out,
            "{:<12} {:<28} {:<5} {:<10} {:<6} {:>7}{panic}",
            r["name"].as_str().unwrap_or("-"),
            std::net::SocketAddr::new(vip, port).to_string(),
            r["protocol"].as_str().unwrap_or("-"),
            r["pipeline"].as_str().unwrap_or("-"),
            r["check"].as_str().unwrap_or("-"),
            format!("{}/{}", r["backends_up"], r["backends_total"]),
        );
    }
    out
}
