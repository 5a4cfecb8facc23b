//! Configuration: TOML schema → validated, typed [`Config`].
//!
//! Two layers: [`Config::load`] checks everything that can be known from the
//! file alone; [`Config::check_host`] checks it against this machine
//! (interfaces exist, queues and cores in range).

mod duration;
mod error;
pub mod health;
mod schema;
mod services;
mod tables;
pub mod xlat;

use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use crate::wire::ethernet::parse_mac;
pub use duration::parse_duration;
pub use error::{ConfigError, Located};
pub use health::{AllDown, CheckKind, HealthCheck, OnDown};
pub use schema::{HugepageMode, PollMode, XdpMode, ZeroCopyMode};
pub use services::{Backend, Conntrack, Prefix, RateLimit, Service, MAX_POOL_ADDRS};
pub use tables::{is_prime, Fragments, FullPolicy, Timeouts, DEFAULT_PRESSURE_TIMEOUT, MAX_TABLE_SIZE};

use error::Source;
use schema::ConfigFile;

/// Largest queue index the XDP program's XSKMAP can hold.
pub const MAX_QUEUES: u32 = 64;
/// Descriptors one batch can hold.
pub const MAX_BATCH: u32 = 64;
/// ICMP errors and RSTs a worker originates a second by default: Linux's
/// `icmp_msgs_per_sec`.
pub const DEFAULT_ERROR_RATE: u32 = 1000;

/// Largest `busy_poll_budget`: a few RX rings' worth per poll is already more than one batch.
pub const MAX_BUSY_POLL_BUDGET: u16 = 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub dataplane: Dataplane,
    pub interfaces: Vec<Interface>,
    pub workers: Vec<Worker>,
    pub pipelines: Vec<Pipeline>,
    pub routes: Vec<Route>,
    pub services: Vec<Service>,
    pub conntrack: Conntrack,
    /// Shallow reassembly's limits.
    pub fragments: Fragments,
    pub summary_interval: u64,
    pub telemetry: Telemetry,
    pub node: Node,
    /// NAT46 / NAT64 / SIIT translators.
    pub xlat: xlat::Xlat,
    /// Where flow state that outlives the process lives (`shunt run
    /// --state-dir`; not a file setting). None: flows die with the process.
    pub state_dir: Option<PathBuf>,
    /// Where each service's VIP and pool are written (same order).
    service_spans: Vec<services::AddressSpans>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telemetry {
    pub control_socket: Option<PathBuf>,
    pub control_group: Option<String>,
    /// Loopback by default; any address the operator writes.
    pub prometheus: Option<std::net::SocketAddr>,
    pub histogram_dir: Option<PathBuf>,
}

/// This node's part in a tier behind ECMP (`[node]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Serving time between withdrawing the VIPs and detaching on stop.
    pub stop_drain: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct Dataplane {
    /// UMEM chunk size (a power of two).
    pub frame_size: u32,
    /// Largest Ethernet frame a chunk holds: `frame_size - RX_HEADROOM`
    /// or less.
    pub max_frame_size: u32,
    pub frames_per_worker: u32,
    pub ring_size: u32,
    pub batch_size: u32,
    pub hugepages: HugepageMode,
    pub poll: PollMode,
    pub zero_copy: ZeroCopyMode,
    /// SCHED_FIFO priority for worker threads (0 = normal scheduling).
    pub realtime_priority: u8,
    /// SO_BUSY_POLL_BUDGET of every socket (0 = no busy polling).
    pub busy_poll_budget: u16,
    /// ICMP errors and RSTs each worker may originate (RFC 4443 §2.4(f)).
    pub errors: RateLimit,
    /// Of those, to any one destination (rate 0: no such limit).
    pub errors_per_destination: RateLimit,
}

#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub xdp_mode: XdpMode,
    span: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct Worker {
    pub core: usize,
    /// (index into `Config::interfaces`, queue id)
    pub queues: Vec<QueueId>,
    core_span: Range<usize>,
    /// Where each of `queues` is written, for host-check errors.
    queue_spans: Vec<Range<usize>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueId {
    pub interface: usize,
    pub queue: u32,
}

#[derive(Clone)]
pub struct Pipeline {
    pub name: String,
    pub stages: Vec<StageConfig>,
    /// Where each stage is named in the source, for errors about it.
    pub stage_spans: Vec<Range<usize>>,
}

/// Without the spans: moving a pipeline's lines changes nothing it does
/// (`restart_fields` compares this form).
impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("name", &self.name).field("stages", &self.stages).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageConfig {
    /// Rewrite MACs to the next hop and transmit on `egress`.
    L2Fwd { egress: usize, next_hop_mac: [u8; 6] },
    /// Parse, find the flow in conntrack, track TCP/UDP state.
    Conntrack,
    /// New flows: pick a backend with Maglev, allocate SNAT, create the flow.
    Maglev,
    /// Rewrite addresses and ports; incremental checksums; NAT46/64 translation.
    Nat,
    /// New NAT64 sessions (RFC 6146); the same flow-creation stage as maglev.
    Nat64,
    /// Stateless IPv4/IPv6 translation (RFC 7915).
    Siit,
    /// Next-hop MAC and egress port: towards backends, or back to clients.
    L2(L2Config),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L2Config {
    /// Interface towards backends.
    pub egress: usize,
    /// Fallback MAC towards backends with no `mac` and no neighbour entry.
    pub next_hop_mac: Option<[u8; 6]>,
    /// Interface towards clients (reply traffic).
    pub return_egress: usize,
    pub return_next_hop_mac: [u8; 6],
}

impl StageConfig {
    pub fn name(&self) -> &'static str {
        match self {
            StageConfig::L2Fwd { .. } => "l2fwd",
            StageConfig::Conntrack => "conntrack",
            StageConfig::Maglev => "maglev",
            StageConfig::Nat => "nat",
            StageConfig::Nat64 => "nat64",
            StageConfig::Siit => "siit",
            StageConfig::L2(_) => "l2",
        }
    }
}

/// The stage names a pipeline may list (each with its keys, parsed here;
/// what a stage does and needs is `pipeline::registry`'s, tested to match).
pub const STAGES: &[&str] = &["l2fwd", "conntrack", "maglev", "nat64", "nat", "siit", "l2"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// One address (a full-length prefix) or a whole prefix.
    pub dst: Prefix,
    /// IP protocol number; 0 = any.
    pub protocol: u8,
    /// 0 = any port.
    pub port: u16,
    pub pipeline: usize,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let src = Source { file: path, text };
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| src.error(e.span().unwrap_or(0..0), e.message().to_string()))?;
        validate(&src, file)
    }

    /// Error at a span of this config's source.
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        Source { file: &self.path, text: &self.text }.error(span, message)
    }

    /// Whether every redirected packet can go straight to the only pipeline:
    /// there is one, and its first stage checks ownership itself.
    pub fn single_owning_pipeline(&self) -> bool {
        self.pipelines.len() == 1
            && matches!(self.pipelines[0].stages.first(), Some(StageConfig::Conntrack | StageConfig::Siit))
    }

    /// What only a restart can change (interfaces, workers, pipelines,
    /// routes, `[dataplane]`), without source positions: a reload of a file
    /// whose edits merely moved these lines is not a change.
    pub fn restart_fields(&self) -> String {
        let interfaces: Vec<_> = self.interfaces.iter().map(|i| (&i.name, i.xdp_mode)).collect();
        let workers: Vec<_> = self.workers.iter().map(|w| (w.core, &w.queues)).collect();
        format!("{:?}{interfaces:?}{workers:?}{:?}{:?}", self.dataplane, self.pipelines, self.routes)
    }

    /// The TOML text this config was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Everything the XDP program must redirect by exact match: configured
    /// single-address routes plus each service's (VIP, protocol, port).
    pub fn match_entries(&self) -> Vec<Route> {
        let mut v: Vec<Route> = self.routes.iter().filter(|r| r.dst.is_host()).copied().collect();
        v.extend(self.services.iter().map(|s| Route {
            dst: Prefix::host(s.vip),
            protocol: s.protocol,
            port: s.port,
            pipeline: s.pipeline,
        }));
        v
    }

    /// Configured routes whose destination is a prefix shorter than one
    /// address: the XDP program matches them after the exact entries.
    pub fn prefix_routes(&self) -> impl Iterator<Item = &Route> + '_ {
        self.routes.iter().filter(|r| !r.dst.is_host())
    }

    /// Prefixes redirected whole (SNAT pools, so replies come back to us),
    /// with the pipeline that handles them.
    pub fn owned_prefixes(&self) -> Vec<(Prefix, usize)> {
        let mut v: Vec<(Prefix, usize)> = Vec::new();
        let mut add = |p: Prefix, pipeline: usize| {
            if !v.iter().any(|(q, _)| *q == p) {
                v.push((p, pipeline));
            }
        };
        for s in &self.services {
            if let Some(p) = s.snat_pool {
                add(p, s.pipeline);
            }
        }
        // NAT46 replies come back to prefix + client address.
        if let (Some(n), Some(s)) = (self.xlat.nat46, self.services.iter().find(|s| s.is_nat46())) {
            add(n.as_prefix, s.pipeline);
        }
        if let Some(n) = &self.xlat.nat64 {
            add(n.prefix.as_prefix, n.pipeline);
            add(n.pool, n.pipeline);
        }
        if let Some(t) = &self.xlat.siit {
            if let Some(p) = t.prefix {
                add(p.as_prefix, t.pipeline);
            }
            for (v4, v6) in &t.eam {
                add(*v4, t.pipeline);
                add(*v6, t.pipeline);
            }
        }
        v
    }

    /// All distinct queues across workers, flattened.
    pub fn queues(&self) -> impl Iterator<Item = QueueId> + '_ {
        self.workers.iter().flat_map(|w| w.queues.iter().copied())
    }

    /// Refuses VIPs and SNAT pools that hold an address of the host's own
    /// on a configured interface: redirecting it would take the host's
    /// own traffic (ARP/ND answers, SSH, probes) into the pipeline.
    /// `own` lists (interface, address) pairs.
    pub fn check_own_addresses(&self, own: &[(String, IpAddr)]) -> Result<(), ConfigError> {
        for (s, spans) in self.services.iter().zip(&self.service_spans) {
            if let Some((iface, a)) = own.iter().find(|(_, a)| *a == s.vip) {
                return Err(self.error_at(
                    spans.vip.clone(),
                    format!("service `{}`: VIP {a} is this host's own address on `{iface}`", s.name),
                ));
            }
            if let (Some(pool), Some(span)) = (s.snat_pool, &spans.pool) {
                if let Some((iface, a)) = own.iter().find(|(_, a)| pool.contains(*a)) {
                    return Err(self.error_at(
                        span.clone(),
                        format!(
                            "service `{}`: SNAT pool {pool} covers {a}, this host's own address on `{iface}`",
                            s.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The addresses of the configured interfaces, as the host has them now.
    pub fn own_addresses(&self) -> Vec<(String, IpAddr)> {
        let names: Vec<&str> = self.interfaces.iter().map(|i| i.name.as_str()).collect();
        crate::sys::interface_addresses().into_iter().filter(|(n, _)| names.contains(&n.as_str())).collect()
    }

    /// Checks the config against this host: interfaces exist, queues and
    /// cores are in range, no VIP or pool holds the host's own address.
    /// Errors point at the offending line.
    pub fn check_host(&self) -> Result<(), ConfigError> {
        for iface in &self.interfaces {
            if crate::sys::ifindex(&iface.name).is_none() {
                return Err(self.error_at(
                    iface.span.clone(),
                    format!(
                        "interface `{}` not found on this host (see `ip link`; for the lab run `shunt lab up`)",
                        iface.name
                    ),
                ));
            }
        }
        let cpus = crate::sys::online_cpus();
        for w in &self.workers {
            if w.core >= cpus {
                return Err(self.error_at(
                    w.core_span.clone(),
                    format!("core {} out of range: this host has cores 0..={}", w.core, cpus - 1),
                ));
            }
            for (q, span) in w.queues.iter().zip(&w.queue_spans) {
                let name = &self.interfaces[q.interface].name;
                let n = crate::sys::rx_queue_count(name);
                if q.queue >= n {
                    return Err(self.error_at(
                        span.clone(),
                        format!(
                            "queue {} out of range: `{name}` has {n} RX queue(s) (0..={})",
                            q.queue,
                            n.saturating_sub(1)
                        ),
                    ));
                }
            }
        }
        self.check_own_addresses(&self.own_addresses())?;
        Ok(())
    }

    /// What the config says that works, but not as its writer may think:
    /// two services on one VIP and protocol in different pipelines (their
    /// later fragments carry no port, and all go to the first one's
    /// pipeline). Needs no host.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, a) in self.services.iter().enumerate() {
            let first = |b: &&Service| b.vip == a.vip && b.protocol == a.protocol;
            let Some(owner) = self.services[..i].iter().find(first) else { continue };
            if owner.pipeline != a.pipeline {
                let name = |p: usize| self.pipelines.get(p).map_or("?", |p| p.name.as_str());
                out.push(format!(
                    "services `{}` and `{}` share VIP {} ({}) but not a pipeline: later IP fragments \
                     carry no port, so those of both go to pipeline `{}`, not `{}`",
                    owner.name,
                    a.name,
                    a.vip,
                    if a.protocol == 6 { "tcp" } else { "udp" },
                    name(owner.pipeline),
                    name(a.pipeline),
                ));
            }
        }
        out
    }

    /// One line per interface whose MTU exceeds what `max_frame_size`
    /// carries: the kernel drops a longer frame that XDP sends to Shunt
    /// (the socket's `rx_dropped`), so such traffic would be lost.
    pub fn mtu_warnings(&self) -> Vec<String> {
        self.mtu_warnings_with(crate::sys::mtu)
    }

    fn mtu_warnings_with(&self, mtu: impl Fn(&str) -> Option<u16>) -> Vec<String> {
        let max = self.dataplane.max_frame_size;
        let carried = max.saturating_sub(ETH_HEADER);
        self.interfaces
            .iter()
            .filter_map(|i| {
                let m = u32::from(mtu(&i.name)?);
                (m > carried).then(|| {
                    format!(
                        "interface `{}` has MTU {m}, but max_frame_size = {max} carries IP packets of at \
                         most {carried} bytes: larger ones are dropped; set [dataplane] max_frame_size = {} \
                         (or more) or lower the MTU",
                        i.name,
                        m + ETH_HEADER
                    )
                })
            })
            .collect()
    }
}

/// Bytes the kernel leaves in front of a received packet in its UMEM chunk
/// (XDP_PACKET_HEADROOM; our UMEM headroom is 0).
pub const RX_HEADROOM: u32 = 256;
/// The base page size: the kernel registers no UMEM chunk above it.
pub const PAGE_SIZE: u32 = 4096;
/// Ethernet header bytes in front of the IP packet (no VLAN tag).
pub const ETH_HEADER: u32 = 14;
/// Most UMEM chunks one frame may span (a multi-buffer chain: the first
/// buffer and up to seven more).
pub const MAX_CHAIN: u32 = 8;

/// `frame_size` (the UMEM chunk: 2048 or 4096, never above a page) and
/// `max_frame_size` (by default what one chunk holds: 3840 for 4096). A
/// larger `max_frame_size` is carried as a chain of chunks (multi-buffer
/// AF_XDP), at most [`MAX_CHAIN`] of them.
fn frame_sizes(src: &Source<'_>, d: &schema::DataplaneSection) -> Result<(u32, u32), ConfigError> {
    let frame_size = match &d.frame_size {
        None => PAGE_SIZE,
        Some(f) => {
            let v = *f.get_ref();
            if v != 2048 && v != 4096 {
                return Err(src.error(f.span(), "frame_size must be 2048 or 4096"));
            }
            v
        }
    };
    let per_chunk = frame_size - RX_HEADROOM;
    let largest = (MAX_CHAIN * per_chunk).min(65535 + ETH_HEADER);
    let max_frame_size = match &d.max_frame_size {
        None => per_chunk,
        Some(m) => {
            let max = *m.get_ref();
            if !(1514..=largest).contains(&max) {
                return Err(src.error(
                    m.span(),
                    format!(
                        "max_frame_size must be in 1514..={largest} (an MTU of 1500 up to {MAX_CHAIN} \
                         chunks of {per_chunk} bytes with frame_size = {frame_size})"
                    ),
                ));
            }
            max
        }
    };
    Ok((frame_size, max_frame_size))
}

fn validate(src: &Source<'_>, file: ConfigFile) -> Result<Config, ConfigError> {
    let d = &file.dataplane;
    let (frame_size, max_frame_size) = frame_sizes(src, d)?;
    let frames = *d.frames_per_worker.get_ref();
    if !(256..=1 << 22).contains(&frames) {
        return Err(src.error(d.frames_per_worker.span(), "frames_per_worker must be in 256..=4194304"));
    }
    let ring = *d.ring_size.get_ref();
    if !ring.is_power_of_two() || !(64..=1 << 15).contains(&ring) {
        return Err(src.error(d.ring_size.span(), "ring_size must be a power of two in 64..=32768"));
    }
    let batch = *d.batch_size.get_ref();
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(src.error(d.batch_size.span(), format!("batch_size must be in 1..={MAX_BATCH}")));
    }
    let realtime_priority = *d.realtime_priority.get_ref();
    if realtime_priority > 99 {
        return Err(src.error(
            d.realtime_priority.span(),
            "realtime_priority must be 0 (normal scheduling) or a SCHED_FIFO priority 1..=99",
        ));
    }
    let busy_poll_budget = u16::try_from(*d.busy_poll_budget.get_ref())
        .ok()
        .filter(|b| *b <= MAX_BUSY_POLL_BUDGET)
        .ok_or_else(|| {
            src.error(
                d.busy_poll_budget.span(),
                format!("busy_poll_budget must be 0 (off) or packets per poll, 1..={MAX_BUSY_POLL_BUDGET}"),
            )
        })?;
    let errors = services::rate_limit(src, &d.error_rate, &d.error_burst)?;
    let errors_per_destination =
        services::rate_limit(src, &d.error_rate_per_destination, &d.error_burst_per_destination)?;

    if file.interfaces.is_empty() {
        return Err(src.error(0..0, "no [[interface]] declared"));
    }
    let mut interfaces: Vec<Interface> = Vec::new();
    for i in &file.interfaces {
        let name = i.name.get_ref();
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(src.error(i.name.span(), "interface name must be 1..15 bytes"));
        }
        if interfaces.iter().any(|x| x.name == *name) {
            return Err(src.error(i.name.span(), format!("interface `{name}` declared twice")));
        }
        interfaces.push(Interface { name: name.clone(), xdp_mode: i.xdp_mode, span: i.name.span() });
    }
    let find_iface = |s: &toml::Spanned<String>| -> Result<usize, ConfigError> {
        interfaces.iter().position(|i| i.name == *s.get_ref()).ok_or_else(|| {
            src.error(
                s.span(),
                format!(
                    "unknown interface `{}`: declare it in an [[interface]] table (declared: {})",
                    s.get_ref(),
                    interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )
        })
    };

    if file.workers.is_empty() {
        return Err(src.error(0..0, "no [[worker]] declared"));
    }
    let mut workers = Vec::new();
    let mut seen: Vec<QueueId> = Vec::new();
    for w in &file.workers {
        if w.queues.is_empty() {
            return Err(src.error(w.core.span(), "worker has no queues"));
        }
        let mut queues = Vec::new();
        for q in &w.queues {
            let id = QueueId { interface: find_iface(&q.interface)?, queue: *q.queue.get_ref() };
            if id.queue >= MAX_QUEUES {
                return Err(src.error(q.queue.span(), format!("queue must be below {MAX_QUEUES}")));
            }
            if seen.contains(&id) {
                return Err(src.error(
                    q.queue.span(),
                    format!("queue {} of `{}` is assigned twice", id.queue, q.interface.get_ref()),
                ));
            }
            seen.push(id);
            queues.push(id);
        }
        let queue_spans = w.queues.iter().map(|q| q.queue.span()).collect();
        workers.push(Worker { core: *w.core.get_ref(), queues, core_span: w.core.span(), queue_spans });
    }

    let egress_on_every_worker = |egress: &toml::Spanned<String>| -> Result<usize, ConfigError> {
        let idx = find_iface(egress)?;
        if let Some(w) = workers.iter().find(|w: &&Worker| !w.queues.iter().any(|q| q.interface == idx)) {
            return Err(src.error(
                egress.span(),
                format!(
                    "worker on core {} has no queue on egress `{}`: a worker transmits only on interfaces it has a socket on",
                    w.core,
                    egress.get_ref()
                ),
            ));
        }
        Ok(idx)
    };
    let mac_at = |mac: &toml::Spanned<String>| -> Result<[u8; 6], ConfigError> {
        parse_mac(mac.get_ref())
            .ok_or_else(|| src.error(mac.span(), format!("invalid MAC address `{}`", mac.get_ref())))
    };
    let mut pipelines = Vec::new();
    for (name, p) in &file.pipeline {
        let mut stages = Vec::new();
        let mut stage_spans = Vec::new();
        for stage in p.stages.get_ref() {
            stage_spans.push(stage.span());
            match stage.get_ref().as_str() {
                "l2fwd" => {
                    let egress = p.egress.as_ref().ok_or_else(|| {
                        src.error(p.stages.span(), format!("pipeline `{name}`: l2fwd needs `egress`"))
                    })?;
                    let egress_idx = egress_on_every_worker(egress)?;
                    let mac = p.next_hop_mac.as_ref().ok_or_else(|| {
                        src.error(p.stages.span(), format!("pipeline `{name}`: l2fwd needs `next_hop_mac`"))
                    })?;
                    stages.push(StageConfig::L2Fwd { egress: egress_idx, next_hop_mac: mac_at(mac)? });
                }
                "conntrack" => stages.push(StageConfig::Conntrack),
                "maglev" => stages.push(StageConfig::Maglev),
                "nat" => stages.push(StageConfig::Nat),
                "nat64" => stages.push(StageConfig::Nat64),
                "siit" => stages.push(StageConfig::Siit),
                "l2" => {
                    let need = |f: &Option<toml::Spanned<String>>, key: &str| {
                        f.clone().ok_or_else(|| {
                            src.error(p.stages.span(), format!("pipeline `{name}`: stage l2 needs `{key}`"))
                        })
                    };
                    let egress = egress_on_every_worker(&need(&p.egress, "egress")?)?;
                    let return_egress = egress_on_every_worker(&need(&p.return_egress, "return_egress")?)?;
                    let return_next_hop_mac = mac_at(&need(&p.return_next_hop_mac, "return_next_hop_mac")?)?;
                    let next_hop_mac = p.next_hop_mac.as_ref().map(&mac_at).transpose()?;
                    stages.push(StageConfig::L2(L2Config {
                        egress,
                        next_hop_mac,
                        return_egress,
                        return_next_hop_mac,
                    }));
                }
                other => {
                    return Err(src.error(
                        stage.span(),
                        format!("unknown stage `{other}` (known: {})", STAGES.join(", ")),
                    ))
                }
            }
        }
        if stages.is_empty() {
            return Err(src.error(p.stages.span(), format!("pipeline `{name}` has no stages")));
        }
        pipelines.push(Pipeline { name: name.clone(), stages, stage_spans });
    }

    let mut routes = Vec::new();
    for r in &file.routes {
        let dst = Prefix::parse(r.dst.get_ref()).ok_or_else(|| {
            src.error(r.dst.span(), format!("invalid IP address or prefix `{}`", r.dst.get_ref()))
        })?;
        if !dst.is_network() {
            return Err(src.error(
                r.dst.span(),
                format!("`{}` has host bits set (did you mean `{}`?)", r.dst.get_ref(), dst.network()),
            ));
        }
        let protocol = match r.protocol.get_ref().as_str() {
            "any" => 0,
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            "icmpv6" => 58,
            other => {
                return Err(src.error(
                    r.protocol.span(),
                    format!("unknown protocol `{other}` (tcp, udp, icmp, icmpv6, any)"),
                ))
            }
        };
        if r.port != 0 && protocol != 6 && protocol != 17 {
            return Err(src.error(r.dst.span(), "a port needs protocol tcp or udp"));
        }
        let pipeline = pipelines.iter().position(|p| p.name == *r.pipeline.get_ref()).ok_or_else(|| {
            src.error(r.pipeline.span(), format!("unknown pipeline `{}`", r.pipeline.get_ref()))
        })?;
        routes.push(Route { dst, protocol, port: r.port, pipeline });
    }

    let t = &file.telemetry;
    let prometheus = match &t.prometheus {
        None => None,
        Some(a) => Some(a.get_ref().parse::<std::net::SocketAddr>().map_err(|_| {
            src.error(
                a.span(),
                format!("invalid listen address `{}` (want e.g. \"127.0.0.1:9464\")", a.get_ref()),
            )
        })?),
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
    let telemetry = Telemetry {
        control_socket: non_empty(&t.control_socket),
        control_group: t.control_group.clone(),
        prometheus,
        histogram_dir: non_empty(&t.histogram_dir),
    };
    let sd = &file.node.stop_drain;
    let stop_drain = parse_duration(sd.get_ref())
        .filter(|s| *s <= 3600)
        .map(|s| std::time::Duration::from_secs(u64::from(s)))
        .ok_or_else(|| {
            src.error(sd.span(), format!("stop_drain `{}`: want a duration up to 1h (\"10s\")", sd.get_ref()))
        })?;
    let node = Node { stop_drain };
    let xlat = xlat::validate(src, file.nat46.as_ref(), file.nat64.as_ref(), file.siit.as_ref(), &pipelines)?;
    let (services, service_spans) =
        services::validate_services(src, &file.services, &pipelines, xlat.nat46.is_some())?;
    let conntrack = services::validate_conntrack(src, &file.conntrack)?;
    let fragments = services::validate_fragments(src, &file.fragments)?;
    for (i, p) in pipelines.iter().enumerate() {
        let lb = p.stages.iter().any(|s| !matches!(s, StageConfig::L2Fwd { .. }));
        if lb && !services.iter().any(|s| s.pipeline == i) && !routes.iter().any(|r| r.pipeline == i) {
            tracing::debug!(pipeline = %p.name, "pipeline has no service or route");
        }
    }

    Ok(Config {
        path: src.file.to_path_buf(),
        dataplane: Dataplane {
            frame_size,
            max_frame_size,
            frames_per_worker: frames,
            ring_size: ring,
            batch_size: batch,
            hugepages: d.hugepages,
            poll: d.poll,
            zero_copy: d.zero_copy,
            realtime_priority,
            busy_poll_budget,
            errors,
            errors_per_destination,
        },
        interfaces,
        workers,
        pipelines,
        routes,
        services,
        conntrack,
        fragments,
        summary_interval: file.telemetry.summary_interval,
        telemetry,
        node,
        xlat,
        state_dir: None,
        service_spans,
        text: src.text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[dataplane]
frame_size = 4096

[[interface]]
name = "a0"
[[interface]]
name = "b0"

[[worker]]
core = 0
queues = [{ interface = "a0", queue = 0 }, { interface = "b0", queue = 0 }]

[pipeline.fwd]
stages = ["l2fwd"]
egress = "b0"
next_hop_mac = "02:00:00:00:00:01"

[[route]]
dst = "10.0.0.1"
protocol = "udp"
port = 53
pipeline = "fwd"
"#;

    fn err(text: &str) -> String {
        Config::parse(Path::new("t.toml"), text).unwrap_err().to_string()
    }

    fn dataplane(text: &str) -> Dataplane {
        Config::parse(Path::new("t.toml"), text).unwrap().dataplane
    }

    #[test]
    fn max_frame_size_chains_chunks_and_is_checked() {
        let sizes = |d: Dataplane| (d.frame_size, d.max_frame_size);
        assert_eq!(sizes(dataplane(&GOOD.replace("frame_size = 4096\n", ""))), (4096, 3840));
        assert_eq!(sizes(dataplane(&GOOD.replace("frame_size = 4096", "frame_size = 2048"))), (2048, 1792));
        let jumbo = |line: &str| GOOD.replace("frame_size = 4096", line);
        // Chains of 4096-byte chunks: the chunk never grows past a page.
        assert_eq!(sizes(dataplane(&jumbo("max_frame_size = 9216"))), (4096, 9216));
        assert_eq!(sizes(dataplane(&jumbo("max_frame_size = 1518"))), (4096, 1518));
        assert_eq!(sizes(dataplane(&jumbo("frame_size = 2048\nmax_frame_size = 9216"))), (2048, 9216));
        assert_eq!(sizes(dataplane(&jumbo("max_frame_size = 9216\nhugepages = \"off\""))), (4096, 9216));
        let e = err(&jumbo("max_frame_size = 70000"));
        assert!(e.starts_with("t.toml:3:18: key `dataplane.max_frame_size`"), "{e}");
        assert!(e.contains("max_frame_size must be in 1514..=30720"), "{e}");
        let e = err(&jumbo("frame_size = 2048\nmax_frame_size = 16000"));
        assert!(e.contains("1514..=14336"), "{e}");
        let e = err(&jumbo("frame_size = 16384"));
        assert!(e.contains("frame_size must be 2048 or 4096"), "{e}");
    }

    #[test]
    fn mtu_above_max_frame_size_warns_per_interface() {
        let c = Config::parse(Path::new("t.toml"), GOOD).unwrap();
        let w = c.mtu_warnings_with(|i| Some(if i == "a0" { 9000 } else { 1500 }));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("interface `a0` has MTU 9000, but max_frame_size = 3840"), "{w:?}");
        assert!(w[0].contains("max_frame_size = 9014"), "{w:?}");
        assert!(c.mtu_warnings_with(|_| Some(3826)).is_empty(), "3826 + 14 = 3840 fits");
        assert_eq!(c.mtu_warnings_with(|_| Some(3827)).len(), 2);
        assert!(c.mtu_warnings_with(|_| None).is_empty(), "no MTU known, no warning");
        let j =
            Config::parse(Path::new("t.toml"), &GOOD.replace("frame_size = 4096", "max_frame_size = 9216"))
                .unwrap();
        assert!(j.mtu_warnings_with(|_| Some(9000)).is_empty());
    }

    #[test]
    fn fragment_limits_default_parse_and_are_checked() {
        let c = Config::parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(c.fragments, Fragments { entries_per_worker: 4096, held_per_worker: 64, timeout: 3 });
        let set = format!(
            "{GOOD}\n[fragments]\nentries_per_worker = 65536\nheld_per_worker = 0\ntimeout = \"10s\"\n"
        );
        let c = Config::parse(Path::new("t.toml"), &set).unwrap();
        assert_eq!(c.fragments, Fragments { entries_per_worker: 65536, held_per_worker: 0, timeout: 10 });
        for (bad, says) in [
            ("entries_per_worker = 8", "entries_per_worker must be in 64..=1048576"),
            ("held_per_worker = 5000", "held_per_worker must be at most 4096"),
            ("timeout = 0", "timeout must be between 1 s and 120 s"),
            ("timeout = \"5m\"", "timeout must be between 1 s and 120 s"),
            ("held = 3", "unknown field `held`"),
        ] {
            let e = err(&format!("{GOOD}\n[fragments]\n{bad}\n"));
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("t.toml"), "{bad}: names the file: {e}");
        }
    }

    #[test]
    fn dsr_services_and_stop_drain() {
        let dsr = include_str!("../../pipelines/dsr.toml");
        let c = Config::parse(Path::new("t.toml"), dsr).unwrap();
        assert!(c.services[0].dsr);
        assert_eq!(c.node.stop_drain, std::time::Duration::from_secs(5));
        let e =
            err(&dsr.replace("forwarding = \"dsr\"", "forwarding = \"dsr\"\nsnat_pool = \"10.1.3.0/28\""));
        assert!(e.contains("a DSR service takes no snat_pool"), "{e}");
        let e = err(&dsr.replace("\"10.1.2.12\", port = 80", "\"10.1.2.12\", port = 8080"));
        assert!(e.contains("a DSR backend has the VIP's family and port (80)"), "{e}");
        let e = err(&dsr.replace("forwarding = \"dsr\"", "forwarding = \"tunnel\""));
        assert!(e.contains("forwarding `tunnel` must be nat or dsr"), "{e}");
        let e = err(&dsr.replace("stop_drain = \"5s\"", "stop_drain = \"2h\""));
        assert!(e.contains("stop_drain `2h`"), "{e}");
    }

    #[test]
    fn good_config_parses() {
        let c = Config::parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.routes[0].protocol, 17);
        assert_eq!(
            c.pipelines[0].stages[0],
            StageConfig::L2Fwd { egress: 1, next_hop_mac: [2, 0, 0, 0, 0, 1] }
        );
    }

    /// Each edit of [`GOOD`] is refused: the error starts with the place
    /// where one is given (file, line, column, and the key where serde
    /// knows it) and says why.
    #[test]
    fn bad_configs_name_the_place_and_the_reason() {
        let cases: [(&str, &str, &str, &[&str]); 7] = [
            (
                "frame_size = 4096",
                "frame_sise = 4096",
                "t.toml:3:1: key `dataplane.frame_sise`: unknown field `frame_sise`",
                &[],
            ),
            (
                "frame_size = 4096",
                "frame_size = \"big\"",
                "t.toml:3:14: key `dataplane.frame_size`: invalid type: string",
                &[],
            ),
            ("frame_size = 4096", "frame_size = 3000", "t.toml:3:14:", &["frame_size must be 2048 or 4096"]),
            (
                "interface = \"b0\", queue",
                "interface = \"b9\", queue",
                "t.toml:12:",
                &["unknown interface `b9`", "declared: a0, b0"],
            ),
            ("[\"l2fwd\"]", "[\"l2fwd\", \"teleport\"]", "", &["unknown stage `teleport`"]),
            ("pipeline = \"fwd\"", "pipeline = \"nope\"", "", &["unknown pipeline `nope`"]),
            ("interface = \"b0\", queue = 0", "interface = \"a0\", queue = 0", "", &["assigned twice"]),
        ];
        for (from, to, place, reasons) in cases {
            assert!(GOOD.contains(from), "{from}");
            let e = err(&GOOD.replace(from, to));
            assert!(e.starts_with(place), "{to}: {e}");
            for r in reasons {
                assert!(e.contains(r), "{to}: {e}");
            }
        }
    }

    #[test]
    fn realtime_priority_range() {
        let c = Config::parse(
            Path::new("t.toml"),
            &GOOD.replace("frame_size = 4096", "frame_size = 4096\nrealtime_priority = 50"),
        )
        .unwrap();
        assert_eq!(c.dataplane.realtime_priority, 50);
        let e = err(&GOOD.replace("frame_size = 4096", "frame_size = 4096\nrealtime_priority = 100"));
        assert!(e.starts_with("t.toml:4:21:") && e.contains("SCHED_FIFO priority 1..=99"), "{e}");
    }

    #[test]
    fn error_rate_and_burst() {
        let with = |v: &str| GOOD.replace("frame_size = 4096", &format!("frame_size = 4096\n{v}"));
        let c = Config::parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(c.dataplane.errors, RateLimit { rate: 1000, burst: 1000 }, "Linux's icmp_msgs_per_sec");
        let c = Config::parse(Path::new("t.toml"), &with("error_rate = 50\nerror_burst = 200")).unwrap();
        assert_eq!(c.dataplane.errors, RateLimit { rate: 50, burst: 200 });
        let c = Config::parse(Path::new("t.toml"), &with("error_rate = 0")).unwrap();
        assert_eq!(c.dataplane.errors.rate, 0, "unlimited");
        let e = err(&with("error_rate = 0\nerror_burst = 5"));
        assert!(e.starts_with("t.toml:5:") && e.contains("burst needs a non-zero rate"), "{e}");
        assert_eq!(c.dataplane.errors_per_destination.rate, 0, "off by default");
        let c = Config::parse(
            Path::new("t.toml"),
            &with("error_rate_per_destination = 1\nerror_burst_per_destination = 6"),
        )
        .unwrap();
        assert_eq!(c.dataplane.errors_per_destination, RateLimit { rate: 1, burst: 6 });
        let e = err(&with("error_burst_per_destination = 6"));
        assert!(e.starts_with("t.toml:4:") && e.contains("burst needs a non-zero rate"), "{e}");
    }

    #[test]
    fn busy_poll_budget_range() {
        let with = |v: &str| {
            GOOD.replace("frame_size = 4096", &format!("frame_size = 4096\nbusy_poll_budget = {v}"))
        };
        let c = Config::parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(c.dataplane.busy_poll_budget, 64, "DPDK's default");
        let c = Config::parse(Path::new("t.toml"), &with("0")).unwrap();
        assert_eq!(c.dataplane.busy_poll_budget, 0);
        for bad in ["1025", "70000"] {
            let e = err(&with(bad));
            assert!(
                e.starts_with("t.toml:4:") && e.contains("busy_poll_budget must be 0 (off)"),
                "{bad}: {e}"
            );
        }
        let e = err(&with("-1"));
        assert!(e.starts_with("t.toml:4:") && e.contains("busy_poll_budget"), "{e}");
    }

    #[test]
    fn maglev_table_size_is_bounded() {
        let svc = "\n[[service]]\nname = \"w\"\nvip = \"10.0.100.1\"\nport = 80\nprotocol = \"tcp\"\n\
                   pipeline = \"fwd\"\nmaglev_table_size = 4294967291\nbackends = [{ addr = \"10.0.2.11\", port = 80 }]\n";
        let text = GOOD
            .replace("stages = [\"l2fwd\"]", "stages = [\"conntrack\", \"maglev\", \"nat\", \"l2fwd\"]")
            + svc;
        let e = err(&text);
        assert!(e.contains("maglev_table_size 4294967291 exceeds 16777216"), "{e}");
    }

    #[test]
    fn moved_lines_are_not_a_restart_change() {
        let a = Config::parse(Path::new("t.toml"), GOOD).unwrap();
        let b = Config::parse(Path::new("t.toml"), &format!("# a comment\n\n{GOOD}")).unwrap();
        assert_eq!(a.restart_fields(), b.restart_fields());
        let c = Config::parse(Path::new("t.toml"), &GOOD.replace("core = 0", "core = 1")).unwrap();
        assert_ne!(a.restart_fields(), c.restart_fields());
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("02:aa:bb:cc:dd:ee"), Some([2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]));
        assert_eq!(parse_mac("02:aa:bb:cc:dd"), None);
        assert_eq!(parse_mac("02:aa:bb:cc:dd:ee:ff"), None);
        assert_eq!(parse_mac("zz:aa:bb:cc:dd:ee"), None);
    }
}
