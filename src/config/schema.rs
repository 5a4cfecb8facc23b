//! The TOML schema as written by users. Every table denies unknown keys so a
//! typo is an error with a line and column, never a silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

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
    #[serde(default)]
    pub telemetry: TelemetrySection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneSection {
    /// UMEM chunk size; 2048 or 4096. Headroom in front of each packet is
    /// what NAT46 grows into.
    pub frame_size: Spanned<u32>,
    pub frames_per_worker: Spanned<u32>,
    /// Descriptors per RX/TX/fill/completion ring; a power of two.
    pub ring_size: Spanned<u32>,
    /// Descriptors per batch, 1..=64.
    pub batch_size: Spanned<u32>,
    pub hugepages: HugepageMode,
    pub poll: PollMode,
    pub zero_copy: ZeroCopyMode,
}

impl Default for DataplaneSection {
    fn default() -> Self {
        Self {
            frame_size: Spanned::new(0..0, 4096),
            frames_per_worker: Spanned::new(0..0, 8192),
            ring_size: Spanned::new(0..0, 2048),
            batch_size: Spanned::new(0..0, 64),
            hugepages: HugepageMode::Auto,
            poll: PollMode::Adaptive,
            zero_copy: ZeroCopyMode::Auto,
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
    pub stages: Spanned<Vec<String>>,
    /// l2fwd: interface to transmit on.
    pub egress: Option<Spanned<String>>,
    /// l2fwd: destination MAC of the next hop.
    pub next_hop_mac: Option<Spanned<String>>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// Seconds between one-line counter summaries while running; 0 = off.
    #[serde(default)]
    pub summary_interval: u64,
}
