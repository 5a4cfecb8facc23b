//! The `shunt` command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use shunt::config::Config;
use shunt::control::Request;
use shunt::telemetry::log::{self, LogFormat};
use shunt::telemetry::stats::Snapshot;

const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SHUNT_GIT_COMMIT"),
    ", built ",
    env!("SHUNT_BUILD_DATE"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "shunt",
    version = VERSION,
    about = "AF_XDP userspace fast-path dataplane: L4 load balancing, conntrack, NAT"
)]
struct Cli {
    /// Log level: error, warn, info, debug, trace, off, or TARGET=LEVEL directives.
    #[arg(long, global = true, default_value = "info", env = "SHUNT_LOG", value_parser = log::parse_filter)]
    log: String,
    /// Log line format on stderr (under journald, lines carry syslog priorities).
    #[arg(long, global = true, value_enum, default_value = "text", env = "SHUNT_LOG_FORMAT")]
    log_format: LogFormat,
    /// Control socket of the running instance.
    #[arg(long, global = true, env = "SHUNT_SOCKET", default_value = "/run/shunt/control.sock")]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to the configured interfaces and forward until SIGINT/SIGTERM.
    Run {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// Serve the control socket here instead of the config's
        /// `control_socket` (several nodes sharing one config on one host).
        #[arg(long, value_name = "PATH")]
        control_socket: Option<PathBuf>,
        /// Keep flow state (conntrack, SNAT ports, NAT64 sessions, ids) in
        /// files here, on tmpfs, so flows survive a restart, an upgrade and
        /// a crash (see docs/OPERATIONS.md). Off by default.
        #[arg(long, value_name = "DIR", env = "SHUNT_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Validate a config file (and, unless --offline, this host) without running.
    Check {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// Only check the file, not that its interfaces, queues and cores exist here.
        #[arg(long)]
        offline: bool,
        #[arg(long)]
        json: bool,
    },
    /// Build, tear down or inspect the network-namespace lab the default config runs on.
    Lab {
        #[arg(value_enum)]
        action: LabAction,
    },
    /// Counters of the running instance: workers, services, backends, XDP.
    Stats {
        /// Refresh every SECS seconds (0.1 to 86400), showing rates per second.
        #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "1", value_parser = parse_interval)]
        watch: Option<f64>,
        /// Print JSON instead of tables (with --watch: one line of rates per interval).
        #[arg(long)]
        json: bool,
    },
    /// Latency report of the running instance: p50 … p99.99, max, per worker and merged.
    Histogram {
        /// What to print (hgrm: HdrHistogram percentile distribution).
        #[arg(long, value_enum, default_value = "table")]
        format: HistogramFormat,
        /// Same as --format json.
        #[arg(long)]
        json: bool,
        /// Also write latency.hgrm, latency.json and latency.svg into this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Change a service's backends on the running instance.
    Backend {
        #[arg(value_enum)]
        action: BackendAction,
        /// Service name (list: only this service's backends).
        #[arg(long)]
        service: Option<String>,
        /// Backend address.
        #[arg(long)]
        addr: Option<String>,
        /// Backend port (1-65535).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        port: Option<u16>,
        /// For add and weight (0 drains).
        #[arg(long)]
        weight: Option<u32>,
        /// For add: the backend's MAC (else learned from the neighbour table).
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Add or remove a service on the running instance.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
    /// Re-read the config file of the running instance (as SIGHUP does); exits
    /// non-zero, keeping the running config, when the file is broken.
    Reload {
        #[arg(long)]
        json: bool,
    },
    /// Planned restart or upgrade: the running instance re-executes the
    /// binary now at its path (same pid and arguments, the config file read
    /// again); the new image takes over the XDP links, flow state and
    /// queues. Packets of ours are dropped, never passed to the kernel, for
    /// the few milliseconds in between. Waits until the new image serves.
    /// Refused, the instance still running, when the config file is broken
    /// or changes the worker count or table size (flows would be lost).
    Restart {
        /// Restart even if the worker count or table size changes: every
        /// flow is lost.
        #[arg(long)]
        force: bool,
        /// Seconds to wait for the new image.
        #[arg(long, default_value_t = 60.0, value_parser = parse_interval)]
        timeout: f64,
        #[arg(long)]
        json: bool,
    },
    /// Tracked connections of the running instance (as `ipvsadm -Lnc`, `conntrack -L`).
    Conn {
        #[command(subcommand)]
        action: ConnAction,
    },
    /// The running instance's configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// This node's place in a tier behind ECMP: drain (withdraw every VIP,
    /// keep serving flows), undrain, or show what it announces.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// Feed a BGP speaker: print ExaBGP API lines (`announce route VIP/32
    /// next-hop self`, `withdraw route …`) as this node's VIPs change, and
    /// withdraw them all when the running instance stops answering. Run it
    /// from an ExaBGP `process` (see dist/exabgp.conf).
    BgpFeed {
        /// Seconds between polls of the control socket (0.1 to 10).
        #[arg(long, value_name = "SECS", default_value = "0.5", value_parser = parse_feed_interval)]
        interval: f64,
    },
    /// Backend picks of a config's Maglev table for random flows, as a digest
    /// (the same config must give the same picks on every node).
    #[command(hide = true)]
    Picks {
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        #[arg(long)]
        service: String,
        #[arg(long, default_value_t = 100_000)]
        flows: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Print a shell completion script: `shunt completion bash > /etc/bash_completion.d/shunt`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout.
    #[command(hide = true)]
    Manpage,
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HistogramFormat {
    Table,
    Hgrm,
    Json,
    Svg,
}

impl HistogramFormat {
    fn name(self) -> &'static str {
        match self {
            HistogramFormat::Table => "table",
            HistogramFormat::Hgrm => "hgrm",
            HistogramFormat::Json => "json",
            HistogramFormat::Svg => "svg",
        }
    }
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Add a service described by a TOML file: one [[service]] table, or its
    /// keys at the top level (name, vip, port, protocol, pipeline, backends, …).
    Add {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Remove a service by name.
    Remove {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Services: VIP, port, protocol, pipeline, backends up/total.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConnAction {
    /// Client, VIP, backend, SNAT address:port, state, idle time and worker of each flow.
    List {
        /// Only this service's flows.
        #[arg(long)]
        service: Option<String>,
        /// Only flows to this backend (ADDR or ADDR:PORT).
        #[arg(long)]
        backend: Option<String>,
        /// Only flows from this client (ADDR or ADDR:PORT).
        #[arg(long)]
        client: Option<String>,
        /// Only flows in this state: established, syn_sent, time_wait, replied, …
        #[arg(long)]
        state: Option<String>,
        /// At most N flows.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum NodeAction {
    /// Withdraw every VIP (the router sends new flows to other nodes); flows
    /// already here keep being served. Not kept across restarts.
    Drain {
        #[arg(long)]
        json: bool,
    },
    /// Announce this node's VIPs again (those with a backend up).
    Undrain {
        #[arg(long)]
        json: bool,
    },
    /// Drain state and, per VIP, whether it is announced and why not.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// The running configuration, runtime changes included, as TOML.
    Show {
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

/// A CLI output path hit a closed pipe (`shunt … | head`): stop quietly.
#[derive(Debug)]
struct BrokenPipe;

impl std::fmt::Display for BrokenPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("broken pipe")
    }
}

impl std::error::Error for BrokenPipe {}

/// Writes to stdout; EPIPE becomes [`BrokenPipe`] instead of a panic.
fn out(text: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(BrokenPipe.into()),
        r => Ok(r?),
    }
}

fn outln(text: &str) -> anyhow::Result<()> {
    out(&format!("{text}\n"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init(&cli.log, cli.log_format);
    let json = cli.command.json();
    match run(cli.command, &cli.socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<BrokenPipe>() => ExitCode::SUCCESS,
        Err(e) => {
            let msg = hint(shunt::control::chain(&*e));
            if json {
                let _ = outln(&serde_json::json!({ "ok": false, "error": msg }).to_string());
            }
            eprintln!("shunt: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

impl Command {
    fn json(&self) -> bool {
        match self {
            Command::Check { json, .. }
            | Command::Stats { json, .. }
            | Command::Backend { json, .. }
            | Command::Reload { json }
            | Command::Restart { json, .. }
            | Command::Service {
                action:
                    ServiceAction::Add { json, .. }
                    | ServiceAction::Remove { json, .. }
                    | ServiceAction::List { json },
            }
            | Command::Config { action: ConfigAction::Show { json } }
            | Command::Node {
                action:
                    NodeAction::Drain { json } | NodeAction::Undrain { json } | NodeAction::Status { json },
            }
            | Command::Conn { action: ConnAction::List { json, .. } } => *json,
            Command::Histogram { json, format, .. } => *json || *format == HistogramFormat::Json,
            _ => false,
        }
    }
}

/// Adds what the operator can do about an error we can recognise.
fn hint(msg: String) -> String {
    if msg.contains("is already bound by another AF_XDP socket") {
        let others = other_shunt_pids();
        if !others.is_empty() {
            let pids: Vec<String> = others.iter().map(u32::to_string).collect();
            return format!("{msg}: is another shunt running? (pid {})", pids.join(", "));
        }
    }
    msg
}

/// Other processes named `shunt` in this network namespace.
fn other_shunt_pids() -> Vec<u32> {
    let me = std::process::id();
    let netns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let ours = netns("self");
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "shunt")
                && netns(&pid.to_string()) == ours
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// `--watch` seconds: finite, 0.1 to a day (Duration cannot hold `inf`).
fn parse_interval(s: &str) -> Result<f64, String> {
    seconds_up_to(s, 86400)
}

/// `bgp-feed --interval` seconds: 0.1 to 10.
fn parse_feed_interval(s: &str) -> Result<f64, String> {
    seconds_up_to(s, 10)
}

/// A finite number of seconds from 0.1 to `max`.
fn seconds_up_to(s: &str, max: u32) -> Result<f64, String> {
    let secs: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !secs.is_finite() || !(0.1..=f64::from(max)).contains(&secs) {
        return Err(format!("{s} is out of range: 0.1 to {max} seconds"));
    }
    Ok(secs)
}

fn run(command: Command, socket: &Path) -> anyhow::Result<()> {
    match command {
        Command::Check { config, offline, json } => {
            let cfg = Config::load(&config)?;
            shunt::pipeline::registry::check(&cfg)?;
            let mut warnings = cfg.warnings();
            if !offline {
                cfg.check_host()?;
                warnings.extend(cfg.mtu_warnings());
            }
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            if json {
                return outln(
                    &serde_json::json!({
                        "ok": true,
                        "config": config.display().to_string(),
                        "interfaces": cfg.interfaces.len(),
                        "workers": cfg.workers.len(),
                        "pipelines": cfg.pipelines.len(),
                        "services": cfg.services.len(),
                        "routes": cfg.routes.len(),
                        "warnings": warnings,
                    })
                    .to_string(),
                );
            }
            outln(&format!(
                "{}: ok ({} interface(s), {} worker(s), {} pipeline(s), {} service(s), {} route(s))",
                config.display(),
                cfg.interfaces.len(),
                cfg.workers.len(),
                cfg.pipelines.len(),
                cfg.services.len(),
                cfg.routes.len()
            ))
        }
        Command::Run { config, control_socket, state_dir } => {
            // Links a previous image handed over (planned restart); read
            // once, before any thread exists, and not passed on further.
            let inherited = shunt::xdp::Inherited::from_env();
            std::env::remove_var(shunt::xdp::HANDOVER_ENV);
            std::env::remove_var(shunt::xdp::HANDOVER_MAPS_ENV);
            shunt::state::gap::from_env();
            shunt::xsk::umem::from_env();
            shunt::state::gap::mark("new image running");
            let exe = started_exe()?;
            tracing::info!(build = shunt::BUILD, inherited_links = inherited.len(), "starting");
            let mut cfg = Config::load(&config)?;
            cfg.state_dir = state_dir.filter(|d| !d.as_os_str().is_empty());
            if let Some(path) = control_socket {
                cfg.telemetry.control_socket = Some(path);
            }
            shunt::sys::check_kernel().map_err(anyhow::Error::msg)?;
            shunt::sys::check_privileges().map_err(anyhow::Error::msg)?;
            cfg.check_host()?;
            for w in cfg.warnings().into_iter().chain(cfg.mtu_warnings()) {
                tracing::warn!("{w}");
            }
            shunt::state::gap::mark("config loaded and checked");
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone())?;
            }
            let reload = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())?;
            let ended = shunt::control::run(&cfg, stop, reload, inherited)?;
            // The summary goes to stdout; a closed stdout must not fail a clean stop.
            let _ = out(&ended.summary.to_string());
            match ended.handover {
                Some(links) => Err(reexec(&exe, &links)),
                None => Ok(()),
            }
        }
        Command::Stats { watch, json } => stats(socket, watch, json),
        Command::Histogram { format, json, out: dir } => {
            let format = if json { HistogramFormat::Json } else { format };
            let reply = call(socket, &Request::Histogram { format: format.name().into() })?;
            match reply {
                serde_json::Value::String(s) => out(&s)?,
                other => outln(&serde_json::to_string_pretty(&other)?)?,
            }
            if let Some(dir) = dir {
                std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
                for (fmt, file) in
                    [("hgrm", "latency.hgrm"), ("json", "latency.json"), ("svg", "latency.svg")]
                {
                    let v = call(socket, &Request::Histogram { format: fmt.into() })?;
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => serde_json::to_string_pretty(&other)?,
                    };
                    let path = dir.join(file);
                    std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
            }
            Ok(())
        }
        Command::Backend { action, service, addr, port, weight, mac, json } => {
            if let BackendAction::List = action {
                let rows = call(socket, &Request::BackendList { service })?;
                if json {
                    return outln(&serde_json::to_string_pretty(&rows)?);
                }
                return out(&backend_table(&rows));
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
            applied(call(socket, &req)?, json, "applied")
        }
        Command::Service { action } => {
            let (req, json) = match action {
                ServiceAction::Add { file, json } => {
                    (Request::ServiceAdd { service: service_file(&file)? }, json)
                }
                ServiceAction::Remove { name, json } => (Request::ServiceRemove { name }, json),
                ServiceAction::List { json } => {
                    let rows = call(socket, &Request::ServiceList {})?;
                    if json {
                        return outln(&serde_json::to_string_pretty(&rows)?);
                    }
                    return out(&service_table(&rows));
                }
            };
            applied(call(socket, &req)?, json, "applied")
        }
        Command::Reload { json } => applied(call(socket, &Request::Reload {})?, json, "reloaded"),
        Command::Restart { force, timeout, json } => restart(socket, force, timeout, json),
        Command::Conn { action: ConnAction::List { service, backend, client, state, limit, json } } => {
            let r = call(socket, &Request::ConnList { service, backend, client, state, limit: Some(limit) })?;
            if json {
                return outln(&serde_json::to_string_pretty(&r)?);
            }
            conn_table(&r)
        }
        Command::Config { action: ConfigAction::Show { json } } => {
            let r = call(socket, &Request::ConfigShow {})?;
            if json {
                return outln(&serde_json::to_string_pretty(&r)?);
            }
            out(&format!(
                "# running config of {} (generation {}), runtime changes included\n{}",
                r["path"].as_str().unwrap_or("?"),
                r["generation"],
                r["toml"].as_str().unwrap_or("")
            ))
        }
        Command::Node { action } => {
            let (req, json) = match action {
                NodeAction::Drain { json } => (Request::NodeDrain {}, json),
                NodeAction::Undrain { json } => (Request::NodeUndrain {}, json),
                NodeAction::Status { json } => (Request::NodeStatus {}, json),
            };
            let r = call(socket, &req)?;
            if json {
                return ok_json(r);
            }
            for c in r["changes"].as_array().into_iter().flatten() {
                outln(&format!("ok: {}", c.as_str().unwrap_or_default()))?;
            }
            out(&node_table(&r))
        }
        Command::BgpFeed { interval } => bgp_feed(socket, interval),
        Command::Picks { config, service, flows, seed } => picks(&config, &service, flows, seed),
        Command::Completion { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "shunt", &mut buf);
            out(&String::from_utf8_lossy(&buf))
        }
        Command::Manpage => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
            out(&String::from_utf8_lossy(&buf))
        }
        Command::Lab { action } => Ok(shunt::lab::run(match action {
            LabAction::Up => "up",
            LabAction::Down => "down",
            LabAction::Status => "status",
        })?),
    }
}

/// `node status` as text: the node's state, then one VIP per line.
fn node_table(r: &serde_json::Value) -> String {
    use std::fmt::Write;
    let state = if r["stopping"] == true {
        "stopping"
    } else if r["drained"] == true {
        "drained"
    } else {
        "serving"
    };
    let mut text = format!("node: {state}\n{:<40} {:<10} {:<20} {}\n", "VIP", "ROUTE", "SERVICES", "WHY");
    for v in r["vips"].as_array().into_iter().flatten() {
        let services: Vec<&str> =
            v["services"].as_array().into_iter().flatten().filter_map(|s| s.as_str()).collect();
        let _ = writeln!(
            text,
            "{:<40} {:<10} {:<20} {}",
            v["vip"].as_str().unwrap_or("?"),
            if v["announce"] == true { "announced" } else { "withdrawn" },
            services.join(","),
            v["reason"].as_str().unwrap_or("")
        );
    }
    text
}

/// `shunt bgp-feed`: the VIPs announced follow `node.status`; a running
/// instance that stops answering (stopped, killed) has all of them
/// withdrawn at the next poll.
fn bgp_feed(socket: &Path, interval: f64) -> anyhow::Result<()> {
    use shunt::control::announce::{exabgp_lines, VipStatus};
    let mut was: Vec<std::net::IpAddr> = Vec::new();
    let mut reachable = None;
    loop {
        let now: Vec<std::net::IpAddr> = match call(socket, &Request::NodeStatus {}) {
            Ok(r) => {
                if reachable != Some(true) {
                    eprintln!("shunt bgp-feed: shunt answers at {}", socket.display());
                }
                reachable = Some(true);
                let vips: Vec<VipStatus> = serde_json::from_value(r["vips"].clone())?;
                vips.into_iter().filter(|v| v.announce).map(|v| v.vip).collect()
            }
            Err(e) => {
                if reachable != Some(false) {
                    eprintln!("shunt bgp-feed: {}; every VIP withdrawn", shunt::control::chain(&*e));
                }
                reachable = Some(false);
                Vec::new()
            }
        };
        for line in exabgp_lines(&was, &now) {
            outln(&line)?;
        }
        was = now;
        std::thread::sleep(std::time::Duration::from_secs_f64(interval));
    }
}

/// `shunt picks`: the backend each of `flows` random TCP flows to the
/// service gets, from the snapshot the dataplane would build; a digest of
/// the picks and the count per backend, as JSON.
fn picks(config: &Path, service: &str, flows: u32, seed: u64) -> anyhow::Result<()> {
    use shunt::pipeline::flow::FlowKey;
    use shunt::pipeline::services::{IdRegistry, Services};
    let cfg = Config::load(config)?;
    let snap = Services::build(&cfg, 1, &mut IdRegistry::default(), |_| None)?;
    let svc = snap
        .list
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| anyhow::anyhow!("no service `{service}`"))?;
    // xorshift64*: reproducible flows from the seed, no dependency.
    let mut x = seed.max(1);
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut counts = vec![0u64; svc.backends.len()];
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    for _ in 0..flows {
        let r = next();
        let mut src = [0u8; 16];
        src[10] = 0xff;
        src[11] = 0xff;
        src[12..].copy_from_slice(&(r as u32).to_be_bytes());
        let key = FlowKey::new(src, svc.vip, (r >> 32) as u16, svc.port, svc.protocol);
        let b = svc.maglev.lookup(key.hash()).map_or(u16::MAX, |b| b);
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
        // FNV-1a over the pick sequence.
        for byte in b.to_le_bytes() {
            digest = (digest ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
    let per_backend: serde_json::Map<String, serde_json::Value> = svc
        .backends
        .iter()
        .zip(&counts)
        .map(|(b, c)| (shunt::telemetry::stats::endpoint(ip_of(&b.addr), b.port), (*c).into()))
        .collect();
    outln(
        &serde_json::json!({ "service": service, "flows": flows, "seed": seed, "digest": format!("{digest:016x}"), "backends": per_backend })
            .to_string(),
    )
}

fn ip_of(a: &[u8; 16]) -> std::net::IpAddr {
    let v6 = std::net::Ipv6Addr::from(*a);
    v6.to_ipv4_mapped().map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4)
}

/// Reads a service file for `service add`: a `[[service]]` table (as in
/// a config file) or the service's keys at the top level.
fn service_file(file: &Path) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if let Some(services) = table.remove("service") {
        if !table.is_empty() {
            anyhow::bail!(
                "{}: a [[service]] table and other top-level keys; give one or the other",
                file.display()
            );
        }
        let toml::Value::Array(mut list) = services else {
            anyhow::bail!("{}: `service` must be a [[service]] table", file.display())
        };
        if list.len() != 1 {
            anyhow::bail!(
                "{}: {} [[service]] tables; `service add` takes exactly one",
                file.display(),
                list.len()
            );
        }
        let toml::Value::Table(one) = list.remove(0) else {
            anyhow::bail!("{}: `service` must be a [[service]] table", file.display())
        };
        table = one;
    }
    match serde_json::to_value(table)? {
        serde_json::Value::Object(service) => Ok(service),
        _ => anyhow::bail!("{}: not a table", file.display()),
    }
}

/// `conn list` as a table, one flow per line.
fn conn_table(r: &serde_json::Value) -> anyhow::Result<()> {
    let rows = r["connections"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut text = format!(
        "{:<5} {:<24} {:<24} {:<10} {:<24} {:<24} {:<12} {:>7} {:>7} {:>6}\n",
        "proto", "client", "vip", "service", "backend", "snat", "state", "age", "idle", "worker"
    );
    for c in rows {
        let s = |k: &str| c[k].as_str().unwrap_or("-").to_string();
        text.push_str(&format!(
            "{:<5} {:<24} {:<24} {:<10} {:<24} {:<24} {:<12} {:>6}s {:>6}s {:>6}\n",
            s("proto"),
            s("client"),
            s("vip"),
            s("service"),
            s("backend"),
            s("snat"),
            s("state"),
            c["age_secs"],
            c["idle_secs"],
            c["worker"]
        ));
    }
    text.push_str(&format!(
        "{} connection(s){}\n",
        rows.len(),
        if r["truncated"] == true { " (limit reached: --limit N for more)" } else { "" }
    ));
    out(&text)
}

/// Prints the reply as one JSON object, with `"ok": true` added.
fn ok_json(r: serde_json::Value) -> anyhow::Result<()> {
    let mut o = serde_json::json!({ "ok": true });
    if let serde_json::Value::Object(m) = r {
        for (k, v) in m {
            o[k] = v;
        }
    }
    outln(&o.to_string())
}

/// Prints the reply to a change: `ok: applied (generation N)` and what
/// changed, or the reply as JSON.
fn applied(r: serde_json::Value, json: bool, what: &str) -> anyhow::Result<()> {
    if json {
        return ok_json(r);
    }
    match r.get("admin").and_then(|a| a.as_str()) {
        Some(admin) => outln(&format!(
            "ok: {admin} (was {}; generation {})",
            r["before"].as_str().unwrap_or("?"),
            r["generation"]
        ))?,
        None => outln(&format!("ok: {what} (generation {})", r["generation"]))?,
    }
    for c in r["changes"].as_array().into_iter().flatten() {
        outln(&format!("  {}", c.as_str().unwrap_or_default()))?;
    }
    for (label, key) in [("kept", "kept"), ("changed", "changed")] {
        for line in r[key].as_array().into_iter().flatten() {
            outln(&format!("  {label}: {}", line.as_str().unwrap_or_default()))?;
        }
    }
    Ok(())
}

/// The binary's path as started (argv[0], looked up in PATH when bare). An
/// upgrade replaces the file at that path, while `current_exe` reads
/// /proc/self/exe, which keeps naming the old, replaced file.
fn started_exe() -> anyhow::Result<PathBuf> {
    let argv0 = PathBuf::from(std::env::args_os().next().unwrap_or_default());
    if argv0.components().count() > 1 {
        return Ok(std::env::current_dir()?.join(argv0));
    }
    let in_path = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(&argv0)).find(|c| c.is_file()));
    match in_path {
        Some(p) => Ok(p),
        None => Ok(std::env::current_exe()?),
    }
}

/// Replaces this process's image with the binary at `exe`, same arguments,
/// handing it `links` (left open across execve). Returns only on failure;
/// the links then close as the process exits and traffic falls back to the
/// kernel, as on any stop.
fn reexec(exe: &Path, links: &[shunt::xdp::Inherited]) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let (mut items, mut maps) = (Vec::new(), Vec::new());
    for l in links {
        match l.keep_across_exec() {
            Ok((item, m)) => {
                items.push(item);
                maps.extend(m);
            }
            Err(e) => return anyhow::anyhow!("keeping an XDP link open across execve: {e}"),
        }
    }
    tracing::info!(exe = %exe.display(), links = items.len(), "planned restart: executing the new image");
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(shunt::xdp::HANDOVER_ENV, items.join(","))
        .env(shunt::xdp::HANDOVER_MAPS_ENV, maps.join(","));
    if let Some(umems) = shunt::xsk::umem::env_value() {
        cmd.env(shunt::xsk::umem::HANDOVER_ENV, umems);
    }
    if let Some(since) = shunt::state::gap::env_value() {
        cmd.env(shunt::state::gap::SINCE_ENV, since);
    }
    shunt::state::gap::mark("executing the new image");
    let e = cmd.exec();
    anyhow::anyhow!("planned restart: executing {}: {e}", exe.display())
}

/// `shunt restart`: asks for the restart, then waits until a new image
/// (another instance id) answers on the control socket.
fn restart(socket: &Path, force: bool, timeout: f64, json: bool) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let old = call(socket, &Request::Restart { force })?;
    let deadline = t0 + Duration::from_secs_f64(timeout);
    loop {
        if let Ok(now) = call(socket, &Request::NodeStatus {}) {
            if now["instance"] != old["instance"] {
                let ms = t0.elapsed().as_millis();
                if json {
                    return outln(
                        &serde_json::json!({ "ok": true, "pid": old["pid"], "build": now["build"], "ms": ms })
                            .to_string(),
                    );
                }
                return outln(&format!(
                    "ok: restarted ({}, pid {}) in {ms} ms",
                    now["build"].as_str().unwrap_or("?"),
                    old["pid"]
                ));
            }
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "no new instance answered on {} within {timeout}s: see the service log",
                socket.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a request to the running instance; its error becomes ours.
fn call(socket: &Path, req: &Request) -> anyhow::Result<serde_json::Value> {
    let r = shunt::control::request(socket, req)?;
    if !r.ok {
        anyhow::bail!("{}", r.error.unwrap_or_else(|| "request failed".into()));
    }
    Ok(r.data.unwrap_or(serde_json::Value::Null))
}

fn stats(socket: &Path, watch: Option<f64>, json: bool) -> anyhow::Result<()> {
    let fetch =
        || -> anyhow::Result<Snapshot> { Ok(serde_json::from_value(call(socket, &Request::Stats {})?)?) };
    let mut prev = fetch()?;
    let Some(secs) = watch else {
        if json {
            return outln(&serde_json::to_string_pretty(&prev)?);
        }
        return out(&prev.table(None));
    };
    // Screen clearing only for a person at a terminal; a pipe gets plain
    // tables one after another.
    let clear = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let every = std::time::Duration::from_secs_f64(secs);
    let mut at = std::time::Instant::now();
    loop {
        std::thread::sleep(every);
        let now = fetch()?;
        let dt = at.elapsed().as_secs_f64();
        at = std::time::Instant::now();
        if json {
            outln(&now.rates(&prev, dt).to_string())?;
        } else if clear {
            out(&format!("\x1b[2J\x1b[H{}", now.table(Some((&prev, dt)))))?;
        } else {
            out(&format!("{}\n", now.table(Some((&prev, dt)))))?;
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
