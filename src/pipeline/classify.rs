//! Classification: which pipeline a redirected packet belongs to. Mirrors the
//! XDP program's lookup order — (addr, proto, port), (addr, proto, any port),
//! (addr, any protocol), then the same three against prefix routes, longest
//! prefix first — so userspace and kernel agree on ownership. A later
//! fragment, which carries no port, goes first by (VIP, protocol) to its
//! service's pipeline, as the XDP program's fragment entries redirect it.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::flow::proto::{ICMP, ICMPV6};
use super::rewrite::related::is_error;
use super::services::{FastHasher, Services};
use super::{Batch, DropReason, Verdict};
use crate::config::Route;
use crate::wire::ipv6;
use crate::wire::parse::parse_simple_chain;
use crate::xdp::maps::{lpm_key, MatchKey};

pub struct Classifier {
    routes: HashMap<MatchKey, u8, BuildHasherDefault<FastHasher>>,
    /// Prefix routes keyed by (masked key, prefix length in the 16-byte
    /// form the XDP program uses: IPv4 lengths + 96).
    prefixes: HashMap<(MatchKey, u8), u8, BuildHasherDefault<FastHasher>>,
    /// The distinct lengths in `prefixes`, longest first: one probe each.
    prefix_lens: Vec<u8>,
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
    /// A non-first fragment: no port to match on.
    pub later: bool,
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
        let mut prefixes = HashMap::default();
        let mut prefix_lens = Vec::new();
        for r in routes {
            let key = MatchKey::new(r.dst.net, r.protocol, r.port);
            if r.dst.is_host() {
                map.insert(key, r.pipeline as u8);
            } else {
                let len = lpm_key(r.dst.net, r.dst.len).0 as u8;
                prefixes.insert((MatchKey { addr: mask16(&key.addr, len), ..key }, len), r.pipeline as u8);
                prefix_lens.push(len);
            }
        }
        prefix_lens.sort_unstable_by(|a, b| b.cmp(a));
        prefix_lens.dedup();
        Classifier { routes: map, prefixes, prefix_lens, single }
    }

    pub fn lookup(&self, k: &DstKey) -> Option<u8> {
        if self.routes.is_empty() && self.prefixes.is_empty() {
            return None;
        }
        let variants = [(k.proto, k.port.to_be()), (k.proto, 0), (0, 0)];
        for (proto, port_be) in variants {
            let key = MatchKey { addr: k.addr, proto, pad: 0, port_be };
            if let Some(&p) = self.routes.get(&key) {
                return Some(p);
            }
        }
        for (proto, port_be) in variants {
            for &len in &self.prefix_lens {
                let key = MatchKey { addr: mask16(&k.addr, len), proto, pad: 0, port_be };
                if let Some(&p) = self.prefixes.get(&(key, len)) {
                    return Some(p);
                }
            }
        }
        None
    }

    /// Sets each packet's pipeline, or drops it with a reason.
    pub fn classify(&self, batch: &mut Batch, services: &Services) {
        let n = batch.len();
        if self.single {
            for m in &mut batch.pkts[..n] {
                m.pipeline = 0;
            }
            return;
        }
        // Packets of a batch mostly go to one destination (a VIP and
        // port): the last key's answer is kept, so a run of them costs one
        // lookup, not up to six hash probes each.
        let mut last: Option<(DstKey, Option<u8>)> = None;
        for i in 0..n {
            // A frame of several buffers: its first holds the headers but
            // not the IP payload the header announces, so only the chain
            // parser (lengths counted over every buffer) may read it.
            let key = match batch.more[i] {
                0 => batch.packet(i).map(dst_key),
                more => batch.packet(i).map(|f| chain_key(f, more)),
            };
            let (pipeline, verdict) = match key {
                Some(None) if batch.more[i] > 0 => (0, Verdict::Drop(DropReason::ChainUnsupported)),
                Some(Some(k)) => {
                    let found = match last {
                        Some((prev, found)) if prev == k => found,
                        _ => k
                            .later
                            .then(|| services.pipeline_for_fragment(&k.addr, k.proto))
                            .flatten()
                            .or_else(|| self.lookup(&k))
                            .or_else(|| services.pipeline_for(&k.addr, k.proto, k.port)),
                    };
                    last = Some((k, found));
                    match found {
                        Some(pipe) => (pipe, Verdict::Continue),
                        None => (0, Verdict::Drop(DropReason::NoRoute)),
                    }
                }
                // Not IP.
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

/// [`dst_key`] of a chain whose first buffer is `frame` and whose other
/// buffers hold `more` bytes: plain TCP/UDP with every header in `frame`
/// ([`parse_simple_chain`]), else None (refused as `chain_unsupported`).
fn chain_key(frame: &[u8], more: u32) -> Option<DstKey> {
    let s = parse_simple_chain(frame, more)?;
    Some(DstKey { addr: s.tuple.dst, proto: s.tuple.proto, port: s.tuple.dport, later: false })
}

/// `addr` with all but its first `len` bits cleared.
fn mask16(addr: &[u8; 16], len: u8) -> [u8; 16] {
    let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
    (u128::from_be_bytes(*addr) & mask).to_be_bytes()
}

/// Destination (address, protocol, port) of an Ethernet frame, or None when
/// it is not well-formed IPv4/IPv6. IPv6 extension headers are walked (as
/// the XDP program does) so the protocol is the upper layer's. An ICMP or
/// ICMPv6 error is keyed by the packet it quotes, as that packet's source
/// (address, protocol, port): an error about a VIP's traffic classifies
/// like the VIP's own packets. Errors whose quote says nothing fall back to
/// the address.
pub fn dst_key(frame: &[u8]) -> Option<DstKey> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    off += 2;
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        ethertype = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
        off += 4;
    }
    let ip = frame.get(off..)?;
    let (addr, proto, l4, v6, later) = match ethertype {
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
            (a, ip[9], if frag == 0 { &ip[ihl..] } else { &[][..] }, false, frag != 0)
        }
        0x86dd => {
            let p = ipv6::Packet::new_checked(ip).ok()?;
            let a = p.dst_addr().octets();
            match p.upper_layer() {
                Ok(ul) if ul.frag.is_none_or(|f| f.is_first()) => {
                    (a, ul.protocol, ip.get(ul.offset..).unwrap_or(&[]), true, false)
                }
                Ok(ul) => (a, ul.protocol, &[][..], true, true),
                // A chain too long or truncated: the address alone decides.
                Err(_) => (a, p.next_header(), &[][..], true, false),
            }
        }
        _ => return None,
    };
    let port = match (proto, l4.get(2..4)) {
        (6 | 17, Some(p)) => u16::from_be_bytes([p[0], p[1]]),
        (ICMP | ICMPV6, _) => match quoted_source(l4, v6) {
            Some((proto, port)) => return Some(DstKey { addr, proto, port, later: false }),
            None => 0,
        },
        _ => 0,
    };
    Some(DstKey { addr, proto, port, later })
}

/// (protocol, source port) of the TCP/UDP packet an ICMP error at `icmp`
/// quotes, when `icmp` is an error (RFC 792, RFC 4443 §3) with such a quote.
fn quoted_source(icmp: &[u8], v6: bool) -> Option<(u8, u16)> {
    if !is_error(if v6 { ICMPV6 } else { ICMP }, *icmp.first()?) {
        return None;
    }
    let q = icmp.get(8..)?;
    let (proto, l4) = if v6 { (*q.get(6)?, 40) } else { (*q.get(9)?, usize::from(*q.first()? & 0x0f) * 4) };
    let sport = q.get(l4..l4 + 2)?;
    matches!(proto, 6 | 17).then(|| (proto, u16::from_be_bytes([sport[0], sport[1]])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Prefix;

    fn v4_udp(dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = 17;
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f[34 + 2..34 + 4].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn route(dst: &str, protocol: u8, port: u16, pipeline: usize) -> Route {
        Route { dst: Prefix::parse(dst).unwrap(), protocol, port, pipeline }
    }

    fn v6_udp(dst: &str, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 8];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[14 + 4..14 + 6].copy_from_slice(&8u16.to_be_bytes());
        f[14 + 6] = 17;
        f[14 + 24..14 + 40].copy_from_slice(&dst.parse::<std::net::Ipv6Addr>().unwrap().octets());
        f[54 + 2..54 + 4].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn prefix_routes_match_after_exact_ones_longest_first() {
        let routes = [
            route("192.0.2.0/24", 0, 0, 1),
            route("192.0.2.128/25", 17, 0, 2),
            route("192.0.2.7", 0, 0, 3),
            route("2001:db8:100::/40", 0, 0, 4),
            route("2001:db8:100::/48", 6, 443, 5),
            route("0.0.0.0/0", 6, 22, 6),
        ];
        let c = Classifier::new(&routes);
        let k = |f: Vec<u8>| c.lookup(&dst_key(&f).unwrap());
        assert_eq!(k(v4_udp([192, 0, 2, 1], 53)), Some(1));
        assert_eq!(k(v4_udp([192, 0, 2, 255], 53)), Some(2), "longer prefix for its protocol");
        assert_eq!(k(v4_udp([192, 0, 2, 7], 53)), Some(3), "an exact entry wins");
        assert_eq!(k(v4_udp([192, 0, 3, 1], 53)), None);
        let mut tcp = v4_udp([192, 0, 2, 200], 22);
        tcp[14 + 9] = 6;
        // (proto, port) before (any): the /0 for TCP port 22 beats the /24.
        assert_eq!(k(tcp), Some(6));
        assert_eq!(k(v6_udp("2001:db8:1ff:ffff::1", 53)), Some(4));
        assert_eq!(k(v6_udp("2001:db8:200::1", 53)), None);
        let mut tcp6 = v6_udp("2001:db8:100:0:1::1", 443);
        tcp6[14 + 6] = 6;
        assert_eq!(k(tcp6), Some(5));
        // An IPv6 address whose low 32 bits look like a routed IPv4 one.
        assert_eq!(k(v6_udp("::c000:201", 53)), None);
    }

    /// Runs of one destination reuse the last answer; a packet to another
    /// destination between them is looked up on its own, and so is the
    /// first one back.
    #[test]
    fn a_batch_mixing_destinations_is_classified_per_packet() {
        let routes = [route("10.0.0.1", 17, 53, 1), route("10.0.0.2", 0, 0, 2)];
        let c = Classifier::with_shortcut(&routes, false);
        let mut mem = vec![0u8; 4096 * 8];
        // SAFETY: `mem` outlives `batch` and is reached only through it.
        let mut batch = Batch::new(unsafe { crate::pipeline::UmemView::of_slice(&mut mem) });
        let dsts = [
            ([10, 0, 0, 1], 53),
            ([10, 0, 0, 1], 53),
            ([10, 0, 0, 2], 53),
            ([10, 0, 0, 1], 53),
            ([10, 0, 0, 1], 54),
            ([10, 0, 0, 3], 53),
            ([10, 0, 0, 2], 9),
        ];
        for (i, (dst, port)) in dsts.into_iter().enumerate() {
            assert!(batch.push_copy((i * 4096 + 256) as u64, &v4_udp(dst, port), 0));
        }
        c.classify(&mut batch, &Services::empty());
        let got: Vec<_> = batch.metas().iter().map(|m| (m.pipeline, m.verdict)).collect();
        let ok = |p| (p, Verdict::Continue);
        let no_route = (0, Verdict::Drop(DropReason::NoRoute));
        assert_eq!(got, [ok(1), ok(1), ok(2), ok(1), no_route, no_route, ok(2)]);
    }

    #[test]
    fn lookup_order_matches_xdp_program() {
        let routes = [route("10.0.0.1", 17, 53, 1), route("10.0.0.1", 17, 0, 2), route("10.0.0.1", 0, 0, 3)];
        let c = Classifier::new(&routes);
        let k = |f: Vec<u8>| c.lookup(&dst_key(&f).unwrap());
        assert_eq!(k(v4_udp([10, 0, 0, 1], 53)), Some(1));
        assert_eq!(k(v4_udp([10, 0, 0, 1], 54)), Some(2));
        let mut tcp = v4_udp([10, 0, 0, 1], 53);
        tcp[14 + 9] = 6;
        assert_eq!(k(tcp), Some(3));
        assert_eq!(k(v4_udp([10, 0, 0, 2], 53)), None);
    }

    /// TCP SYN to [fd00:100::1]:80 behind `ext` (next header, bytes) pairs.
    fn v6_tcp(ext: &[(u8, &[u8])]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[14 + 24..14 + 40].copy_from_slice(&[0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let mut next_at = 14 + 6;
        for (proto, body) in ext {
            f[next_at] = *proto;
            next_at = f.len();
            f.extend_from_slice(body);
        }
        f[next_at] = 6;
        let mut tcp = [0u8; 20];
        tcp[..4].copy_from_slice(&[0xc0, 0, 0, 80]);
        f.extend_from_slice(&tcp);
        let plen = (f.len() - 54) as u16;
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        f
    }

    #[test]
    fn ipv6_extension_headers_are_walked_to_the_port() {
        let dstopts: &[u8] = &[0, 0, 1, 4, 0, 0, 0, 0];
        let hop: &[u8] = &[0, 0, 1, 4, 0, 0, 0, 0];
        let frag_first: &[u8] = &[0, 0, 0, 0, 0, 0, 0, 9];
        for chain in [vec![], vec![(60, dstopts)], vec![(0, hop), (60, dstopts)], vec![(44, frag_first)]] {
            let k = dst_key(&v6_tcp(&chain)).unwrap();
            assert_eq!((k.proto, k.port), (6, 80), "chain {chain:?}");
        }
        // A later fragment carries no port.
        let k = dst_key(&v6_tcp(&[(44, &[0, 0, 0, 8, 0, 0, 0, 9])])).unwrap();
        assert_eq!((k.proto, k.port, k.later), (6, 0, true));
        let mut f = v4_udp([10, 0, 0, 1], 53);
        assert!(!dst_key(&f).unwrap().later);
        f[14 + 7] = 1; // offset 8 bytes
        assert_eq!(dst_key(&f).map(|k| (k.port, k.later)), Some((0, true)));
        // Longer than the walker goes: the address alone (first header).
        let long: Vec<(u8, &[u8])> = (0..9).map(|_| (60u8, dstopts)).collect();
        let k = dst_key(&v6_tcp(&long)).unwrap();
        assert_eq!((k.proto, k.port), (60, 0));
    }

    #[test]
    fn icmp_errors_are_keyed_by_the_quoted_source() {
        // Fragmentation Needed to the VIP, quoting VIP:80 -> client TCP.
        let mut f = vec![0u8; 14 + 20 + 8 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = 1;
        f[14 + 16..14 + 20].copy_from_slice(&[10, 0, 100, 1]);
        f[34] = 3;
        f[35] = 4;
        f[42] = 0x45;
        f[42 + 9] = 6;
        f[62..64].copy_from_slice(&80u16.to_be_bytes());
        f[64..66].copy_from_slice(&40000u16.to_be_bytes());
        let k = dst_key(&f).unwrap();
        assert_eq!((k.proto, k.port), (6, 80));
        // An echo request is not an error: the address with port 0.
        f[34] = 8;
        let k = dst_key(&f).unwrap();
        assert_eq!((k.proto, k.port), (1, 0));
        // ICMPv6 Packet Too Big quoting [VIP]:80 -> client.
        let mut g = v6_tcp(&[]);
        g.truncate(54);
        g[20] = 58;
        let mut icmp = vec![2, 0, 0, 0, 0, 0, 5, 0];
        let mut quote = vec![0u8; 40 + 8];
        quote[0] = 0x60;
        quote[6] = 6;
        quote[40..42].copy_from_slice(&80u16.to_be_bytes());
        icmp.extend_from_slice(&quote);
        g.extend_from_slice(&icmp);
        g[18..20].copy_from_slice(&(icmp.len() as u16).to_be_bytes());
        let k = dst_key(&g).unwrap();
        assert_eq!((k.proto, k.port), (6, 80));
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
