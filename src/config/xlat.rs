//! Validation of the translator sections: `[nat46]` (IPv4 VIPs in front of
//! IPv6 backends), `[nat64]` (stateful, RFC 6146) and `[siit]` (stateless,
//! RFC 7915 with RFC 6052 prefix and RFC 7757 explicit address mappings).

use serde::Deserialize;
use toml::Spanned;

use super::duration::Seconds;
use super::error::Source;
use super::services::Prefix;
use super::tables::Timeouts;
use super::{ConfigError, Pipeline};
use crate::nat46::{Eam, EamTable, Pool4, Prefix64, Rfc6791, UdpZeroChecksum};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nat46Section {
    /// How IPv4 clients appear to IPv6 backends: prefix + client address.
    pub prefix: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nat64Section {
    /// RFC 6052 prefix IPv6 clients use to reach IPv4 hosts (pool6).
    #[serde(default = "wkp")]
    pub prefix: Spanned<String>,
    /// IPv4 addresses clients are translated to (pool4).
    pub pool: Spanned<String>,
    pub pipeline: Spanned<String>,
    /// RFC 6146 §4 defaults: UDP 5 min, TCP established 2 h, transitory 4 min, ICMP 1 min.
    pub udp: Option<Spanned<Seconds>>,
    pub tcp_established: Option<Spanned<Seconds>>,
    pub tcp_transitory: Option<Spanned<Seconds>>,
    pub icmp: Option<Spanned<Seconds>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiitSection {
    /// RFC 6052 prefix for addresses with no explicit mapping.
    pub prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub eam: Vec<EamSection>,
    pub pipeline: Spanned<String>,
    /// RFC 6791 IPv4 pool (an address or a prefix): sources of ICMPv4 errors
    /// from IPv6 routers whose address has no IPv4 form.
    pub rfc6791_v4: Option<Spanned<String>>,
    /// RFC 6791 IPv6 address: source of ICMPv6 errors from IPv4 routers
    /// whose address has no IPv6 form.
    pub rfc6791_v6: Option<Spanned<String>>,
    /// IPv4 UDP with checksum 0, unfragmented (RFC 7915 §4.5).
    pub udp_zero_checksum: Option<Spanned<UdpZeroChecksumMode>>,
    /// RFC 7915 §4 "lowest-ipv6-mtu": IPv4 packets without DF that would
    /// translate larger than this are sent as IPv6 fragments of at most it.
    pub lowest_ipv6_mtu: Option<Spanned<u32>>,
}

/// `udp_zero_checksum` in `[siit]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UdpZeroChecksumMode {
    /// Compute the checksum the IPv6 packet needs (default).
    Compute,
    /// Drop, answering ICMPv4 Destination Unreachable (administratively prohibited).
    Drop,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EamSection {
    pub v4: Spanned<String>,
    pub v6: Spanned<String>,
}

fn wkp() -> Spanned<String> {
    Spanned::new(0..0, "64:ff9b::/96".into())
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Xlat {
    pub nat46: Option<Prefix64Cfg>,
    pub nat64: Option<Nat64>,
    pub siit: Option<Siit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix64Cfg {
    pub prefix: Prefix64,
    pub as_prefix: Prefix,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nat64 {
    pub prefix: Prefix64Cfg,
    pub pool: Prefix,
    pub pipeline: usize,
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Siit {
    pub prefix: Option<Prefix64Cfg>,
    /// (IPv4 prefix, IPv6 prefix) pairs.
    pub eam: Vec<(Prefix, Prefix)>,
    pub pipeline: usize,
    /// Sources of translated errors from untranslatable routers.
    pub rfc6791: Rfc6791,
    pub udp_zero_checksum: UdpZeroChecksum,
    /// Largest IPv6 packet made from an IPv4 packet without DF (RFC 7915 §4).
    pub lowest_ipv6_mtu: u16,
}

/// RFC 8200 §5: every IPv6 link carries 1280-byte packets, so fragments of
/// this size reach any IPv6 host.
pub const DEFAULT_LOWEST_IPV6_MTU: u16 = 1280;

impl Siit {
    pub fn table(&self) -> EamTable {
        let mut t = EamTable::with_capacity(self.eam.len().max(1));
        for (v4, v6) in &self.eam {
            let (std::net::IpAddr::V4(a), std::net::IpAddr::V6(b)) = (v4.net, v6.net) else { continue };
            let _ = t.insert(Eam { v4: a.octets(), v4_len: v4.len, v6: b.octets(), v6_len: v6.len });
        }
        t
    }
}

fn prefix64(src: &Source<'_>, s: &Spanned<String>) -> Result<Prefix64Cfg, ConfigError> {
    let p = Prefix::parse(s.get_ref())
        .filter(|p| p.net.is_ipv6())
        .ok_or_else(|| src.error(s.span(), format!("invalid IPv6 prefix `{}`", s.get_ref())))?;
    let std::net::IpAddr::V6(a) = p.net else { unreachable!("filtered to IPv6 above") };
    let prefix = Prefix64::new(a.octets(), p.len).ok_or_else(|| {
        src.error(
            s.span(),
            format!("RFC 6052 prefix length must be 32, 40, 48, 56, 64 or 96, not /{}", p.len),
        )
    })?;
    Ok(Prefix64Cfg { prefix, as_prefix: p })
}

fn pipeline_index(
    src: &Source<'_>,
    pipelines: &[Pipeline],
    s: &Spanned<String>,
) -> Result<usize, ConfigError> {
    pipelines
        .iter()
        .position(|p| p.name == *s.get_ref())
        .ok_or_else(|| src.error(s.span(), format!("unknown pipeline `{}`", s.get_ref())))
}

/// `rfc6791_v4` (an IPv4 address or prefix) and `rfc6791_v6` (an IPv6 address).
fn rfc6791(src: &Source<'_>, s: &SiitSection) -> Result<Rfc6791, ConfigError> {
    let v4 = match &s.rfc6791_v4 {
        None => None,
        Some(v) => match Prefix::parse(v.get_ref()) {
            Some(Prefix { net: std::net::IpAddr::V4(a), len }) => Some(Pool4 { net: a.octets(), len }),
            _ => {
                return Err(src.error(
                    v.span(),
                    format!("invalid IPv4 address or prefix `{}` for the RFC 6791 pool", v.get_ref()),
                ))
            }
        },
    };
    let v6 = match &s.rfc6791_v6 {
        None => None,
        Some(v) => match v.get_ref().trim().parse::<std::net::Ipv6Addr>() {
            Ok(a) => Some(a.octets()),
            Err(_) => return Err(src.error(v.span(), format!("invalid IPv6 address `{}`", v.get_ref()))),
        },
    };
    Ok(Rfc6791 { v4, v6 })
}

pub(super) fn validate(
    src: &Source<'_>,
    nat46: Option<&Nat46Section>,
    nat64: Option<&Nat64Section>,
    siit: Option<&SiitSection>,
    pipelines: &[Pipeline],
) -> Result<Xlat, ConfigError> {
    let nat46 = nat46.map(|s| prefix64(src, &s.prefix)).transpose()?;
    let nat64 = match nat64 {
        None => None,
        Some(s) => {
            let prefix = prefix64(src, &s.prefix)?;
            let pool = Prefix::parse(s.pool.get_ref()).filter(|p| p.net.is_ipv4()).ok_or_else(|| {
                src.error(s.pool.span(), format!("invalid IPv4 pool `{}`", s.pool.get_ref()))
            })?;
            if pool.size() > u128::from(super::MAX_POOL_ADDRS) {
                return Err(src.error(
                    s.pool.span(),
                    format!("pool has more than {} addresses", super::MAX_POOL_ADDRS),
                ));
            }
            if nat46.is_some_and(|n| n.as_prefix == prefix.as_prefix) {
                return Err(src.error(s.prefix.span(), "[nat64] and [nat46] must use different prefixes"));
            }
            // RFC 6146 §4: UDP 5 min, TCP established 2 h 4 min, TCP transitory 4 min, ICMP 1 min.
            let mut t = Timeouts {
                udp_unreplied: 300,
                udp_replied: 300,
                tcp_established: 7440,
                icmp: 60,
                ..Timeouts::default()
            };
            let transitory = s.tcp_transitory.as_ref().map_or(240, |v| v.get_ref().0);
            for slot in [
                &mut t.tcp_syn_sent,
                &mut t.tcp_syn_recv,
                &mut t.tcp_fin_wait,
                &mut t.tcp_close_wait,
                &mut t.tcp_last_ack,
                &mut t.tcp_time_wait,
                &mut t.tcp_close,
            ] {
                *slot = transitory;
            }
            if let Some(v) = &s.udp {
                (t.udp_unreplied, t.udp_replied) = (v.get_ref().0, v.get_ref().0);
            }
            if let Some(v) = &s.tcp_established {
                t.tcp_established = v.get_ref().0;
            }
            if let Some(v) = &s.icmp {
                t.icmp = v.get_ref().0;
            }
            Some(Nat64 { prefix, pool, pipeline: pipeline_index(src, pipelines, &s.pipeline)?, timeouts: t })
        }
    };
    let siit = match siit {
        None => None,
        Some(s) => {
            let prefix = s.prefix.as_ref().map(|p| prefix64(src, p)).transpose()?;
            let mut eam = Vec::new();
            for e in &s.eam {
                let v4 = Prefix::parse(e.v4.get_ref()).filter(|p| p.net.is_ipv4()).ok_or_else(|| {
                    src.error(e.v4.span(), format!("invalid IPv4 prefix `{}`", e.v4.get_ref()))
                })?;
                let v6 = Prefix::parse(e.v6.get_ref()).filter(|p| p.net.is_ipv6()).ok_or_else(|| {
                    src.error(e.v6.span(), format!("invalid IPv6 prefix `{}`", e.v6.get_ref()))
                })?;
                //= https://www.rfc-editor.org/rfc/rfc7757#section-3.2
                // (paraphrase) Both prefixes of an EAM have the same suffix length.
                if 32 - v4.len != 128 - v6.len {
                    return Err(src.error(
                        e.v6.span(),
                        "EAM prefixes must have equal suffix lengths (e.g. /32 ↔ /128)",
                    ));
                }
                eam.push((v4, v6));
            }
            if prefix.is_none() && eam.is_empty() {
                return Err(src.error(s.pipeline.span(), "[siit] needs a `prefix`, an `eam` list, or both"));
            }
            let udp_zero_checksum = match s.udp_zero_checksum.as_ref().map(|m| *m.get_ref()) {
                None | Some(UdpZeroChecksumMode::Compute) => UdpZeroChecksum::Compute,
                Some(UdpZeroChecksumMode::Drop) => UdpZeroChecksum::Drop,
            };
            let lowest_ipv6_mtu = match &s.lowest_ipv6_mtu {
                None => DEFAULT_LOWEST_IPV6_MTU,
                Some(m) => u16::try_from(*m.get_ref()).ok().filter(|&m| m >= 1280).ok_or_else(|| {
                    src.error(
                        m.span(),
                        format!("lowest_ipv6_mtu {} outside 1280..=65535 (RFC 8200 §5)", m.get_ref()),
                    )
                })?,
            };
            Some(Siit {
                prefix,
                eam,
                pipeline: pipeline_index(src, pipelines, &s.pipeline)?,
                rfc6791: rfc6791(src, s)?,
                udp_zero_checksum,
                lowest_ipv6_mtu,
            })
        }
    };
    Ok(Xlat { nat46, nat64, siit })
}
