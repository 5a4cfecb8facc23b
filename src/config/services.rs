//! Validation of `[[service]]` and `[conntrack]`: the L4 load balancer's
//! part of the config.

use std::net::IpAddr;

use toml::Spanned;

use super::error::Source;
use super::health::HealthCheck;
use super::schema::{ConntrackSection, FragmentsSection, FullPolicyCfg, ServiceSection};
use super::tables::MAX_TABLE_SIZE;
use super::tables::{
    is_prime, Fragments, FullPolicy, Timeouts, MAX_FRAG_ENTRIES, MAX_FRAG_HELD, MAX_FRAG_TIMEOUT,
};
use super::{parse_mac, ConfigError, Pipeline, StageConfig};

/// Addresses an SNAT pool may hold: each address costs a worker
/// 4 bytes × its share of 64512 ports in the free list.
pub const MAX_POOL_ADDRS: u32 = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    /// 6 (tcp) or 17 (udp).
    pub protocol: u8,
    pub pipeline: usize,
    pub snat_pool: Option<Prefix>,
    pub affinity: bool,
    /// L2 direct server return: backends hold the VIP and reply to clients
    /// themselves; only the destination MAC changes.
    pub dsr: bool,
    pub maglev_table_size: u32,
    pub backends: Vec<Backend>,
    pub health: HealthCheck,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: IpAddr,
    pub port: u16,
    /// 0 = drain: no new flows, existing flows keep going.
    pub weight: u32,
    pub mac: Option<[u8; 6]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub net: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn parse(s: &str) -> Option<Prefix> {
        let (a, l) = s.split_once('/').unwrap_or((s, ""));
        let net: IpAddr = a.trim().parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = if l.is_empty() { max } else { l.trim().parse::<u8>().ok()? };
        (len <= max).then_some(Prefix { net, len })
    }

    /// Number of addresses, saturating.
    pub fn size(&self) -> u128 {
        let bits = if self.net.is_ipv4() { 32 } else { 128 } - u32::from(self.len);
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }

    /// The `i`th address of the prefix.
    pub fn nth(&self, i: u32) -> IpAddr {
        match self.net {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(i)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(u128::from(i))).into()),
        }
    }

    /// The one-address prefix of `ip`.
    pub fn host(ip: IpAddr) -> Prefix {
        Prefix { net: ip, len: if ip.is_ipv4() { 32 } else { 128 } }
    }

    /// Whether it names one address.
    pub fn is_host(&self) -> bool {
        self.len == if self.net.is_ipv4() { 32 } else { 128 }
    }

    /// The prefix with its host bits cleared.
    pub fn network(&self) -> Prefix {
        let net = match self.net {
            IpAddr::V4(n) => IpAddr::V4(
                (u32::from(n) & u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0)).into(),
            ),
            IpAddr::V6(n) => IpAddr::V6(
                (u128::from(n) & u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0)).into(),
            ),
        };
        Prefix { net, len: self.len }
    }

    /// Whether no host bit is set.
    pub fn is_network(&self) -> bool {
        self.network().net == self.net
    }

    /// Whether the two share an address: the shorter one holds the other's
    /// network address.
    pub fn overlaps(&self, other: &Prefix) -> bool {
        if self.len <= other.len {
            self.contains(other.net)
        } else {
            other.contains(self.net)
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conntrack {
    pub entries_per_worker: u32,
    pub full: FullPolicy,
    pub timeouts: Timeouts,
    /// Idle limit (s) of unassured entries while the table is 3/4 full.
    pub pressure_timeout: u32,
    /// Per-worker new-flow limits (token buckets; rate 0 = unlimited).
    pub new_flows: RateLimit,
    pub source_flows: RateLimit,
    /// New TCP flows a second per worker above which only retransmitted
    /// SYNs open flows (0 = off).
    pub syn_check_rate: u32,
}

/// A token bucket's shape: `rate` tokens a second, at most `burst` saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimit {
    pub rate: u32,
    pub burst: u32,
}

impl Service {
    /// An IPv4 VIP whose backends are IPv6: packets are translated (NAT46).
    pub fn is_nat46(&self) -> bool {
        self.vip.is_ipv4() && self.backends.iter().any(|b| b.addr.is_ipv6())
    }
}

/// Where a service's VIP and SNAT pool are written, for errors found
/// after parsing (the host's own addresses).
#[derive(Debug, Clone)]
pub struct AddressSpans {
    pub vip: std::ops::Range<usize>,
    pub pool: Option<std::ops::Range<usize>>,
}

pub(super) fn validate_services(
    src: &Source<'_>,
    sections: &[ServiceSection],
    pipelines: &[Pipeline],
    nat46: bool,
) -> Result<(Vec<Service>, Vec<AddressSpans>), ConfigError> {
    let mut out: Vec<Service> = Vec::new();
    for s in sections {
        let name = s.name.get_ref().clone();
        let at =
            |span: std::ops::Range<usize>, msg: String| src.error(span, format!("service `{name}`: {msg}"));
        let vip: IpAddr = s
            .vip
            .get_ref()
            .parse()
            .map_err(|_| at(s.vip.span(), format!("invalid VIP address `{}`", s.vip.get_ref())))?;
        if let Some((kind, block)) = reserved(Prefix::host(vip)) {
            return Err(at(s.vip.span(), format!("VIP {vip} is not usable: {kind} address ({block})")));
        }
        let protocol = match s.protocol.get_ref().as_str() {
            "tcp" => 6,
            "udp" => 17,
            other => return Err(at(s.protocol.span(), format!("protocol `{other}` must be tcp or udp"))),
        };
        let port = *s.port.get_ref();
        if port == 0 {
            return Err(at(s.port.span(), "port must be 1..=65535".into()));
        }
        let pipeline = pipelines
            .iter()
            .position(|p| p.name == *s.pipeline.get_ref())
            .ok_or_else(|| at(s.pipeline.span(), format!("unknown pipeline `{}`", s.pipeline.get_ref())))?;
        if !pipelines[pipeline].stages.iter().any(|st| matches!(st, StageConfig::Maglev)) {
            return Err(at(
                s.pipeline.span(),
                format!("pipeline `{}` has no `maglev` stage to pick a backend", pipelines[pipeline].name),
            ));
        }
        let snat_pool = match &s.snat_pool {
            None => None,
            Some(p) => {
                let pool = Prefix::parse(p.get_ref()).ok_or_else(|| {
                    at(p.span(), format!("invalid SNAT pool `{}` (want CIDR)", p.get_ref()))
                })?;
                if pool.net.is_ipv4() != vip.is_ipv4() {
                    return Err(at(p.span(), "SNAT pool family differs from the VIP's".into()));
                }
                if let Some((kind, block)) = reserved(pool) {
                    return Err(at(p.span(), format!("SNAT pool {pool} covers {kind} addresses ({block})")));
                }
                if pool.size() > u128::from(MAX_POOL_ADDRS) {
                    return Err(at(
                        p.span(),
                        format!("SNAT pool {pool} has {} addresses; at most {MAX_POOL_ADDRS}", pool.size()),
                    ));
                }
                Some(pool)
            }
        };
        let dsr = match s.forwarding.as_ref().map(|f| (f.span(), f.get_ref().as_str())) {
            None | Some((_, "nat")) => false,
            Some((_, "dsr")) => {
                if let Some(p) = &s.snat_pool {
                    return Err(at(
                        p.span(),
                        "a DSR service takes no snat_pool: backends reply to clients directly".into(),
                    ));
                }
                true
            }
            Some((span, other)) => return Err(at(span, format!("forwarding `{other}` must be nat or dsr"))),
        };
        let m = *s.maglev_table_size.get_ref();
        if m > MAX_TABLE_SIZE {
            return Err(at(
                s.maglev_table_size.span(),
                format!("maglev_table_size {m} exceeds {} (16M entries)", MAX_TABLE_SIZE),
            ));
        }
        if !is_prime(m) || m < 7 {
            return Err(at(
                s.maglev_table_size.span(),
                format!("maglev_table_size {m} must be a prime ≥ 7 (default 65537)"),
            ));
        }
        if s.backends.is_empty() {
            return Err(at(s.name.span(), "no backends".into()));
        }
        if s.backends.len() as u64 * 2 > u64::from(m) {
            return Err(at(
                s.maglev_table_size.span(),
                format!(
                    "maglev_table_size {m} is too small for {} backends (use ≥ 100× backends)",
                    s.backends.len()
                ),
            ));
        }
        let mut backends: Vec<Backend> = Vec::new();
        for b in &s.backends {
            let addr: IpAddr =
                b.addr.get_ref().parse().map_err(|_| {
                    at(b.addr.span(), format!("invalid backend address `{}`", b.addr.get_ref()))
                })?;
            if addr.is_ipv4() != vip.is_ipv4() {
                if !(vip.is_ipv4() && nat46) {
                    return Err(at(
                        b.addr.span(),
                        "backend family differs from the VIP's (IPv6 backends behind an IPv4 VIP need a [nat46] section)"
                            .into(),
                    ));
                }
                if s.snat_pool.is_some() {
                    return Err(at(
                        b.addr.span(),
                        "a NAT46 service takes no snat_pool: clients appear as [nat46] prefix + address"
                            .into(),
                    ));
                }
            }
            if b.port == 0 {
                return Err(at(b.addr.span(), format!("backend {addr}: port must be 1..=65535")));
            }
            // DSR leaves the IP header alone: the backend serves the VIP's
            // own address, family and port.
            if dsr && (addr.is_ipv4() != vip.is_ipv4() || b.port != port) {
                return Err(at(
                    b.addr.span(),
                    format!(
                        "backend {addr}:{}: a DSR backend has the VIP's family and port ({port})",
                        b.port
                    ),
                ));
            }
            if backends.iter().any(|x| x.addr == addr && x.port == b.port) {
                return Err(at(b.addr.span(), format!("backend {addr}:{} listed twice", b.port)));
            }
            let mac = match &b.mac {
                None => None,
                Some(m) => Some(
                    parse_mac(m.get_ref())
                        .ok_or_else(|| at(m.span(), format!("invalid MAC address `{}`", m.get_ref())))?,
                ),
            };
            backends.push(Backend { addr, port: b.port, weight: b.weight, mac });
        }
        if let Some(other) = out.iter().find(|o| o.vip == vip && o.port == port && o.protocol == protocol) {
            return Err(at(s.vip.span(), format!("same VIP, protocol and port as service `{}`", other.name)));
        }
        out.push(Service {
            name,
            vip,
            port,
            protocol,
            pipeline,
            snat_pool,
            affinity: s.affinity,
            dsr,
            maglev_table_size: m,
            backends,
            health: super::health::validate(src, s.name.get_ref(), protocol, s.health.as_ref())?,
        });
    }
    // The redirect captures every packet to a VIP or pool address: one
    // that is also a backend's would swallow the backend's own traffic.
    for (s, sec) in out.iter().zip(sections) {
        let at = |span: std::ops::Range<usize>, msg: String| {
            src.error(span, format!("service `{}`: {msg}", s.name))
        };
        for (b, owner) in out.iter().flat_map(|o| o.backends.iter().map(move |b| (b, &o.name))) {
            if b.addr == s.vip {
                return Err(at(
                    sec.vip.span(),
                    format!("VIP {} is a backend address of service `{owner}`", s.vip),
                ));
            }
            if let (Some(pool), Some(p)) = (s.snat_pool, &sec.snat_pool) {
                if pool.contains(b.addr) {
                    return Err(at(
                        p.span(),
                        format!("SNAT pool {pool} covers {}, a backend address of service `{owner}`", b.addr),
                    ));
                }
            }
        }
    }
    let spans = sections
        .iter()
        .map(|sec| AddressSpans { vip: sec.vip.span(), pool: sec.snat_pool.as_ref().map(|p| p.span()) })
        .collect();
    Ok((out, spans))
}

/// The special-purpose block a VIP or pool overlaps, as (kind, block):
/// no such address can be ours to redirect (RFC 1122 §3.2.1.3, RFC 4291
/// §2.5.2–2.7, RFC 919 for limited broadcast).
pub fn reserved(p: Prefix) -> Option<(&'static str, &'static str)> {
    let blocks: &[(&str, &str)] = if p.net.is_ipv4() {
        &[
            ("unspecified", "0.0.0.0"),
            ("loopback", "127.0.0.0/8"),
            ("multicast", "224.0.0.0/4"),
            ("broadcast", "255.255.255.255"),
        ]
    } else {
        &[("unspecified", "::"), ("loopback", "::1"), ("multicast", "ff00::/8")]
    };
    blocks.iter().copied().find(|(_, b)| Prefix::parse(b).is_some_and(|b| b.overlaps(&p)))
}

/// A token bucket from its `*_rate` and optional `*_burst` keys (the burst
/// defaults to the rate; rate 0 is no limit, and takes no burst).
pub(super) fn rate_limit(
    src: &Source<'_>,
    rate: &Spanned<u32>,
    burst: &Option<Spanned<u32>>,
) -> Result<RateLimit, ConfigError> {
    let rate = *rate.get_ref();
    let burst = match burst {
        Some(b) if *b.get_ref() == 0 || rate == 0 => {
            return Err(src.error(b.span(), "burst needs a non-zero rate and must be at least 1"));
        }
        Some(b) => *b.get_ref(),
        None => rate,
    };
    Ok(RateLimit { rate, burst })
}

pub(super) fn validate_conntrack(src: &Source<'_>, c: &ConntrackSection) -> Result<Conntrack, ConfigError> {
    let n = *c.entries_per_worker.get_ref();
    if !(1024..=1 << 28).contains(&n) {
        return Err(src.error(c.entries_per_worker.span(), "entries_per_worker must be in 1024..=268435456"));
    }
    let mut t = Timeouts::default();
    for (field, slot) in [
        (&c.tcp_syn_sent, &mut t.tcp_syn_sent),
        (&c.tcp_syn_recv, &mut t.tcp_syn_recv),
        (&c.tcp_established, &mut t.tcp_established),
        (&c.tcp_fin_wait, &mut t.tcp_fin_wait),
        (&c.tcp_close_wait, &mut t.tcp_close_wait),
        (&c.tcp_last_ack, &mut t.tcp_last_ack),
        (&c.tcp_time_wait, &mut t.tcp_time_wait),
        (&c.tcp_close, &mut t.tcp_close),
        (&c.udp, &mut t.udp_unreplied),
        (&c.udp_stream, &mut t.udp_replied),
        (&c.icmp, &mut t.icmp),
    ] {
        if let Some(v) = field {
            let secs = v.get_ref().0;
            if secs == 0 || secs >= 1 << 31 {
                return Err(src.error(v.span(), "timeout must be between 1 s and 68 years"));
            }
            *slot = secs;
        }
    }
    let pressure_timeout = match &c.pressure_timeout {
        Some(v) if v.get_ref().0 == 0 || v.get_ref().0 >= 1 << 31 => {
            return Err(src.error(v.span(), "timeout must be between 1 s and 68 years"));
        }
        Some(v) => v.get_ref().0,
        None => super::tables::DEFAULT_PRESSURE_TIMEOUT,
    };
    let limit = |rate: &Spanned<u32>, burst: &Option<Spanned<u32>>| rate_limit(src, rate, burst);
    Ok(Conntrack {
        pressure_timeout,
        new_flows: limit(&c.new_flow_rate, &c.new_flow_burst)?,
        source_flows: limit(&c.source_flow_rate, &c.source_flow_burst)?,
        syn_check_rate: *c.syn_check_rate.get_ref(),
        entries_per_worker: n,
        full: match c.full {
            FullPolicyCfg::Drop => FullPolicy::Drop,
            FullPolicyCfg::Evict => FullPolicy::EvictOldest,
        },
        timeouts: t,
    })
}

pub(super) fn validate_fragments(src: &Source<'_>, f: &FragmentsSection) -> Result<Fragments, ConfigError> {
    let entries = *f.entries_per_worker.get_ref();
    if !(64..=MAX_FRAG_ENTRIES).contains(&entries) {
        let msg = format!("entries_per_worker must be in 64..={MAX_FRAG_ENTRIES}");
        return Err(src.error(f.entries_per_worker.span(), msg));
    }
    let held = *f.held_per_worker.get_ref();
    if held > MAX_FRAG_HELD {
        let msg =
            format!("held_per_worker must be at most {MAX_FRAG_HELD} (copies of up to 4096 bytes each)");
        return Err(src.error(f.held_per_worker.span(), msg));
    }
    let timeout = f.timeout.get_ref().0;
    if !(1..=MAX_FRAG_TIMEOUT).contains(&timeout) {
        let msg = format!("timeout must be between 1 s and {MAX_FRAG_TIMEOUT} s");
        return Err(src.error(f.timeout.span(), msg));
    }
    Ok(Fragments { entries_per_worker: entries, held_per_worker: held, timeout })
}
