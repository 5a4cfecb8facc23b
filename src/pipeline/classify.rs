//! Classification: which pipeline a redirected packet belongs to. Mirrors the
//! XDP program's lookup order — (addr, proto, port), (addr, proto, any port),
//! (addr, any protocol) — so userspace and kernel agree on ownership.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::services::{FastHasher, Services};
use super::{Batch, DropReason, Verdict};
use crate::config::Route;
use crate::xdp::maps::MatchKey;

pub struct Classifier {
    routes: HashMap<MatchKey, u8, BuildHasherDefault<FastHasher>>,
    /// Everything XDP redirects belongs to pipeline 0, whose first stage
    /// parses and refuses what is not its own: skip per-packet lookups.
    single: bool,
}

/// The fields classification needs, pulled from a frame without allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DstKey {
    pub addr: [u8; 16],
    pub proto: u8,
    pub port: u16,
}

impl Classifier {
    /// Static routes only: services and their SNAT pools are looked up in
    /// the live snapshot, so a reload that adds a service needs no restart.
    pub fn new(routes: &[Route]) -> Classifier {
        Classifier::with_shortcut(routes, false)
    }

    /// `single`: the config has one pipeline and it starts with a stage that
    /// checks ownership itself (conntrack, siit).
    pub fn with_shortcut(routes: &[Route], single: bool) -> Classifier {
        let mut map = HashMap::default();
        for r in routes {
            map.insert(MatchKey::new(r.dst, r.protocol, r.port), r.pipeline as u8);
        }
        Classifier { routes: map, single }
    }

    pub fn lookup(&self, k: &DstKey) -> Option<u8> {
        if self.routes.is_empty() {
            return None;
        }
        let mut key = MatchKey { addr: k.addr, proto: k.proto, pad: 0, port_be: k.port.to_be() };
        if let Some(&p) = self.routes.get(&key) {
            return Some(p);
        }
        key.port_be = 0;
        if let Some(&p) = self.routes.get(&key) {
            return Some(p);
        }
        key.proto = 0;
        self.routes.get(&key).copied()
    }

    /// Sets each packet's pipeline, or drops it with a reason.
    pub fn classify(&self, batch: &mut Batch, services: &Services) {
        let n = batch.len;
        if self.single {
            for m in &mut batch.pkts[..n] {
                m.pipeline = 0;
            }
            return;
        }
        for i in 0..n {
            let (pipeline, verdict) = match batch.packet(i).map(dst_key) {
                Some(Some(k)) => {
                    match self.lookup(&k).or_else(|| services.pipeline_for(&k.addr, k.proto, k.port)) {
                        Some(pipe) => (pipe, Verdict::Continue),
                        None => (0, Verdict::Drop(DropReason::NoRoute)),
                    }
                }
                // Not IP, or a descriptor outside UMEM.
                _ => (0, Verdict::Drop(DropReason::Malformed)),
            };
            let m = &mut batch.pkts[i];
            m.pipeline = pipeline;
            if m.verdict == Verdict::Continue {
                m.verdict = verdict;
            }
        }
    }
}

/// Destination (address, protocol, port) of an Ethernet frame, or None when
/// it is not well-formed IPv4/IPv6.
pub fn dst_key(frame: &[u8]) -> Option<DstKey> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    off += 2;
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        ethertype = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
        off += 4;
    }
    let ip = frame.get(off..)?;
    let (addr, proto, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(*ip.first()? & 0x0f) * 4;
            if ip.first()? >> 4 != 4 || ihl < 20 || ip.len() < ihl {
                return None;
            }
            let mut a = [0u8; 16];
            a[10] = 0xff;
            a[11] = 0xff;
            a[12..].copy_from_slice(&ip[16..20]);
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            (a, ip[9], if frag == 0 { &ip[ihl..] } else { &[][..] })
        }
        0x86dd => {
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return None;
            }
            let mut a = [0u8; 16];
            a.copy_from_slice(&ip[24..40]);
            (a, ip[6], &ip[40..])
        }
        _ => return None,
    };
    let port = match (proto, l4.get(2..4)) {
        (6 | 17, Some(p)) => u16::from_be_bytes([p[0], p[1]]),
        _ => 0,
    };
    Some(DstKey { addr, proto, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_udp(dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = 17;
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f[34 + 2..34 + 4].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn lookup_order_matches_xdp_program() {
        let routes = [
            Route { dst: "10.0.0.1".parse().unwrap(), protocol: 17, port: 53, pipeline: 1 },
            Route { dst: "10.0.0.1".parse().unwrap(), protocol: 17, port: 0, pipeline: 2 },
            Route { dst: "10.0.0.1".parse().unwrap(), protocol: 0, port: 0, pipeline: 3 },
        ];
        let c = Classifier::new(&routes);
        let k = |f: Vec<u8>| c.lookup(&dst_key(&f).unwrap());
        assert_eq!(k(v4_udp([10, 0, 0, 1], 53)), Some(1));
        assert_eq!(k(v4_udp([10, 0, 0, 1], 54)), Some(2));
        let mut tcp = v4_udp([10, 0, 0, 1], 53);
        tcp[14 + 9] = 6;
        assert_eq!(k(tcp), Some(3));
        assert_eq!(k(v4_udp([10, 0, 0, 2], 53)), None);
    }

    #[test]
    fn truncated_frames_never_panic() {
        let f = v4_udp([10, 0, 0, 1], 53);
        for n in 0..f.len() {
            let _ = dst_key(&f[..n]);
        }
        assert_eq!(dst_key(&f[..33]), None);
    }
}
