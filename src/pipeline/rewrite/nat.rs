//! NAT: rewrite addresses and ports to the flow's binding, updating the
//! IPv4 header and TCP/UDP/ICMP checksums incrementally (RFC 1624).

use super::{get16, put16, Delta};
use crate::pipeline::flow::{proto, FlowMeta, FragKind};
use crate::wire::checksum::udp_encode;

/// Rewrites `frame` to `flow.nat`. None if a header is out of bounds (the
/// parser checked them, so that means a bug or a hostile frame: drop).
#[inline(always)]
pub fn rewrite(frame: &mut [u8], flow: &FlowMeta) -> Option<()> {
    let (l3, l4) = (usize::from(flow.l3), usize::from(flow.l4));
    let nat = &flow.nat;
    let mut addrs = Delta::default();
    if flow.family.is_v6() {
        let a = frame.get_mut(l3 + 8..l3 + 40)?;
        addrs.write(&mut a[..16], &nat.src);
        addrs.write(&mut a[16..], &nat.dst);
    } else {
        let h = frame.get_mut(l3..l3 + 20)?;
        addrs.write(&mut h[12..16], &nat.src[12..]);
        addrs.write(&mut h[16..20], &nat.dst[12..]);
        let c = u16::from_be_bytes([h[10], h[11]]);
        h[10..12].copy_from_slice(&addrs.apply(c).to_be_bytes());
    }
    if flow.frag == FragKind::Later {
        // No L4 header here: the first fragment's checksum fix covers the datagram.
        return Some(());
    }
    match flow.key.proto {
        proto::TCP | proto::UDP => {
            let is_udp = flow.key.proto == proto::UDP;
            let at = if is_udp { 6 } else { 16 };
            let t = frame.get_mut(l4..l4 + at + 2)?;
            let (os, od) = (u16::from_be_bytes([t[0], t[1]]), u16::from_be_bytes([t[2], t[3]]));
            let mut d = addrs;
            d.word(os, nat.sport);
            d.word(od, nat.dport);
            t[0..2].copy_from_slice(&nat.sport.to_be_bytes());
            t[2..4].copy_from_slice(&nat.dport.to_be_bytes());
            let c = u16::from_be_bytes([t[at], t[at + 1]]);
            let new = if is_udp {
                if c == 0 && !flow.family.is_v6() {
                    // IPv4 UDP checksum 0 means "none" and must stay 0 (RFC 768).
                    return Some(());
                }
                // A computed 0 is sent as 0xFFFF (RFC 768; required for IPv6, RFC 8200 §8.1).
                udp_encode(d.apply(c))
            } else {
                d.apply(c)
            };
            t[at..at + 2].copy_from_slice(&new.to_be_bytes());
            Some(())
        }
        proto::ICMP | proto::ICMPV6 => {
            // Echo: the identifier plays the port's role.
            let c = get16(frame, l4 + 2)?;
            let id = get16(frame, l4 + 4)?;
            let mut d = Delta::default();
            d.word(id, nat.dport);
            if flow.family.is_v6() {
                // ICMPv6 covers the pseudo-header; ICMPv4 does not.
                d += addrs;
            }
            put16(frame, l4 + 4, nat.dport)?;
            put16(frame, l4 + 2, d.apply(c))
        }
        _ => Some(()),
    }
}
