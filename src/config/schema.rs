//! The TOML schema as written by users. Every table denies unknown keys so a
//! typo is an error with a line and column, never a silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::duration::Seconds;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub dataplane: DataplaneSection,
    #[serde(rename = "interface", default)]
    pub interfaces: Vec<InterfaceSection>,
    #[serde(rename = "worker", default)]
    pub workers: Vec<WorkerSection>,
    #[serde(default)]
    pub pipeline: BTreeMap<String, PipelineSection>,
    #[serde(rename = "route", default)]
    pub routes: Vec<RouteSection>,
    #[serde(rename = "service", default)]
    pub services: Vec<ServiceSection>,
    #[serde(default)]
    pub conntrack: ConntrackSection,
    #[serde(default)]
    pub fragments: FragmentsSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub node: NodeSection,
    pub nat46: Option<super::xlat::Nat46Section>,
    pub nat64: Option<super::xlat::Nat64Section>,
    pub siit: Option<super::xlat::SiitSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneSection {
    /// UMEM chunk size: 2048 or 4096 (default). Headroom in front of each
    /// packet is what NAT46 grows into.
    pub frame_size: Option<Spanned<u32>>,
    /// Largest Ethernet frame (header and IP packet, no FCS) Shunt carries;
    /// above one chunk it arrives and leaves as a chain of chunks.
    pub max_frame_size: Option<Spanned<u32>>,
    pub frames_per_worker: Spanned<u32>,
    /// Descriptors per RX/TX/fill/completion ring; a power of two.
    pub ring_size: Spanned<u32>,
    /// Descriptors per batch, 1..=64.
    pub batch_size: Spanned<u32>,
    pub hugepages: HugepageMode,
    pub poll: PollMode,
    pub zero_copy: ZeroCopyMode,
    /// SCHED_FIFO priority of the workers, 1..=99; 0 = normal scheduling.
    pub realtime_priority: Spanned<u8>,
    /// Packets per preferred busy poll of an RX queue's NAPI; 0 = off.
    pub busy_poll_budget: Spanned<u32>,
    /// ICMP errors and RSTs a worker may originate a second; 0 = unlimited.
    pub error_rate: Spanned<u32>,
    pub error_burst: Option<Spanned<u32>>,
    /// Of those, to any one destination address a second; 0 = no such limit.
    pub error_rate_per_destination: Spanned<u32>,
    pub error_burst_per_destination: Option<Spanned<u32>>,
}

impl Default for DataplaneSection {
    fn default() -> Self {
        Self {
            frame_size: None,
            max_frame_size: None,
            frames_per_worker: Spanned::new(0..0, 8192),
            ring_size: Spanned::new(0..0, 2048),
            batch_size: Spanned::new(0..0, 64),
            hugepages: HugepageMode::Auto,
            poll: PollMode::Adaptive,
            zero_copy: ZeroCopyMode::Auto,
            realtime_priority: Spanned::new(0..0, 0),
            busy_poll_budget: Spanned::new(0..0, 64),
            error_rate: Spanned::new(0..0, super::DEFAULT_ERROR_RATE),
            error_burst: None,
            error_rate_per_destination: Spanned::new(0..0, 0),
            error_burst_per_destination: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HugepageMode {
    /// Use 2 MiB pages if the kernel has them reserved, else 4 KiB with a log line.
    Auto,
    Require,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Spin on the rings forever: lowest latency, one core per worker.
    Busy,
    /// Spin while there is traffic, then sleep in poll(2) when idle.
    Adaptive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroCopyMode {
    /// Let the kernel choose: zero-copy where the driver supports it.
    Auto,
    Require,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Driver (native) mode, falling back to skb mode with a warning.
    Auto,
    Driver,
    Skb,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    pub name: Spanned<String>,
    #[serde(default = "default_xdp_mode")]
    pub xdp_mode: XdpMode,
}

fn default_xdp_mode() -> XdpMode {
    XdpMode::Auto
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    pub core: Spanned<usize>,
    pub queues: Vec<QueueRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRef {
    pub interface: Spanned<String>,
    pub queue: Spanned<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Stage names in order; the order is data, not code.
    pub stages: Spanned<Vec<Spanned<String>>>,
    /// l2fwd: interface to transmit on.
    pub egress: Option<Spanned<String>>,
    /// l2fwd / l2: destination MAC of the next hop on `egress` (for l2,
    /// used when a backend has no `mac` and the kernel has no neighbour).
    pub next_hop_mac: Option<Spanned<String>>,
    /// l2: interface towards clients, for reply traffic.
    pub return_egress: Option<Spanned<String>>,
    /// l2: MAC of the client-side next hop (router or client).
    pub return_next_hop_mac: Option<Spanned<String>>,
}

/// An L4 load-balanced service: VIP:port spread over weighted backends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    pub name: Spanned<String>,
    pub vip: Spanned<String>,
    pub port: Spanned<u16>,
    pub protocol: Spanned<String>,
    pub pipeline: Spanned<String>,
    /// Full-NAT source pool (CIDR); absent = DNAT only.
    pub snat_pool: Option<Spanned<String>>,
    /// Pick the backend by client address only (session affinity).
    #[serde(default)]
    pub affinity: bool,
    /// "nat" (default: DNAT, or full-NAT with `snat_pool`) or "dsr" (L2
    /// direct server return: only the destination MAC is rewritten).
    pub forwarding: Option<Spanned<String>>,
    #[serde(default = "default_maglev_size")]
    pub maglev_table_size: Spanned<u32>,
    pub backends: Vec<BackendSection>,
    /// Probes and down-backend behaviour; absent = the defaults.
    pub health: Option<super::health::HealthSection>,
}

fn default_maglev_size() -> Spanned<u32> {
    Spanned::new(0..0, 65537)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    pub addr: Spanned<String>,
    pub port: u16,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Backend MAC; absent = learned from the kernel's neighbour table.
    pub mac: Option<Spanned<String>>,
}

fn default_weight() -> u32 {
    100
}

/// Timeouts accept seconds (`120`) or a duration string (`"120s"`, `"5m"`, `"2h"`, `"5d"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConntrackSection {
    pub entries_per_worker: Spanned<u32>,
    /// "drop" new flows when full, or "evict" the oldest entry.
    pub full: FullPolicyCfg,
    pub tcp_syn_sent: Option<Spanned<Seconds>>,
    pub tcp_syn_recv: Option<Spanned<Seconds>>,
    pub tcp_established: Option<Spanned<Seconds>>,
    pub tcp_fin_wait: Option<Spanned<Seconds>>,
    pub tcp_close_wait: Option<Spanned<Seconds>>,
    pub tcp_last_ack: Option<Spanned<Seconds>>,
    pub tcp_time_wait: Option<Spanned<Seconds>>,
    pub tcp_close: Option<Spanned<Seconds>>,
    pub udp: Option<Spanned<Seconds>>,
    pub udp_stream: Option<Spanned<Seconds>>,
    pub icmp: Option<Spanned<Seconds>>,
    /// Idle limit of unassured entries while the table is 3/4 full.
    pub pressure_timeout: Option<Spanned<Seconds>>,
    /// New flows per second per worker (0 = unlimited), and the burst.
    pub new_flow_rate: Spanned<u32>,
    pub new_flow_burst: Option<Spanned<u32>>,
    /// New flows per second per client address per worker (0 = unlimited).
    pub source_flow_rate: Spanned<u32>,
    pub source_flow_burst: Option<Spanned<u32>>,
    /// New TCP flows per second per worker above which a first SYN is
    /// dropped and only its retransmission admitted (0 = off).
    pub syn_check_rate: Spanned<u32>,
}

impl Default for ConntrackSection {
    fn default() -> Self {
        Self {
            entries_per_worker: Spanned::new(0..0, 262_144),
            full: FullPolicyCfg::Drop,
            tcp_syn_sent: None,
            tcp_syn_recv: None,
            tcp_established: None,
            tcp_fin_wait: None,
            tcp_close_wait: None,
            tcp_last_ack: None,
            tcp_time_wait: None,
            tcp_close: None,
            udp: None,
            udp_stream: None,
            icmp: None,
            pressure_timeout: None,
            new_flow_rate: Spanned::new(0..0, 0),
            new_flow_burst: None,
            source_flow_rate: Spanned::new(0..0, 0),
            source_flow_burst: None,
            syn_check_rate: Spanned::new(0..0, 0),
        }
    }
}

/// `[fragments]`: shallow reassembly's per-worker limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FragmentsSection {
    pub entries_per_worker: Spanned<u32>,
    /// Later fragments held ahead of their first (0: drop them).
    pub held_per_worker: Spanned<u32>,
    pub timeout: Spanned<Seconds>,
}

impl Default for FragmentsSection {
    fn default() -> Self {
        let d = super::tables::Fragments::default();
        Self {
            entries_per_worker: Spanned::new(0..0, d.entries_per_worker),
            held_per_worker: Spanned::new(0..0, d.held_per_worker),
            timeout: Spanned::new(0..0, Seconds(d.timeout)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FullPolicyCfg {
    Drop,
    Evict,
}

/// This node's part in a tier of Shunt nodes behind ECMP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// On SIGTERM/SIGINT: withdraw every VIP, keep serving this long, then
    /// detach. "0s" = detach at once.
    pub stop_drain: Spanned<String>,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self { stop_drain: Spanned::new(0..0, "0s".into()) }
    }
}

/// Traffic Shunt owns: destination (address, protocol, port) → pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub dst: Spanned<String>,
    #[serde(default = "default_protocol")]
    pub protocol: Spanned<String>,
    #[serde(default)]
    pub port: u16,
    pub pipeline: Spanned<String>,
}

fn default_protocol() -> Spanned<String> {
    Spanned::new(0..0, "any".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Seconds between one-line counter summaries while running; 0 = off.
    pub summary_interval: u64,
    /// Unix socket for `shunt stats`, `shunt backend …`; "" = none.
    pub control_socket: String,
    /// Group allowed to use the control socket (mode 0660); none = root only (0600).
    pub control_group: Option<String>,
    /// Prometheus listen address, e.g. "127.0.0.1:9464"; absent = off.
    pub prometheus: Option<Spanned<String>>,
    /// Where `shunt run` writes the final latency report on exit; "" = nowhere.
    pub histogram_dir: String,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            summary_interval: 0,
            control_socket: "/run/shunt/control.sock".into(),
            control_group: None,
            prometheus: None,
            histogram_dir: "/var/lib/shunt/reports".into(),
        }
    }
}
