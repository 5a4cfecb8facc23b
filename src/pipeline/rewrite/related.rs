//! ICMP errors about tracked flows ("related" packets, in Linux conntrack's
//! words): a router's Fragmentation Needed or Packet Too Big, a Time
//! Exceeded, a host's Port Unreachable. Each quotes a packet of a flow we
//! rewrote; it must reach the flow's other end rewritten to match what that
//! end sent, or path MTU discovery and traceroute break through the NAT.
//!
//! The quoted packet, reversed, is the key of the entry that forwards the
//! error: an error about a reply (VIP → client) quotes it, and reversed it
//! reads client → VIP, the original direction, whose binding leads to the
//! backend. The error is then rewritten with that entry's binding: outer
//! destination, and the quote's addresses and ports, with every checksum
//! updated incrementally (so a corrupt error stays corrupt).

use super::{get16, Delta};
use crate::pipeline::flow::proto::{ICMP, ICMPV6 as ICMP6, TCP, UDP};
use crate::pipeline::flow::{Family, FlowKey, FlowMeta};
use crate::wire::addr::mapped;
use crate::wire::checksum::udp_encode;

/// Whether an ICMP or ICMPv6 message of this type is an error that quotes
/// the packet that caused it (RFC 792, RFC 4443 §3).
#[inline]
pub fn is_error(proto: u8, icmp_type: u8) -> bool {
    match proto {
        // Destination Unreachable, Time Exceeded, Parameter Problem.
        ICMP => matches!(icmp_type, 3 | 11 | 12),
        // Destination Unreachable, Packet Too Big, Time Exceeded, Parameter Problem.
        ICMP6 => matches!(icmp_type, 1..=4),
        _ => false,
    }
}

/// The quoted packet's headers, as found in the error.
struct Quote {
    /// Offset of the quoted IP header.
    ip: usize,
    /// Offset of the quoted transport header.
    l4: usize,
    proto: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

/// The packet quoted by the error whose ICMP header is at `l4`. The quote
/// is in the error's own family; IPv6 quotes with extension headers and
/// IPv4 quotes of non-first fragments carry no ports and are not matched.
fn quote(pkt: &[u8], l4: usize, family: Family) -> Option<Quote> {
    let ip = l4.checked_add(8)?;
    if family.is_v6() {
        let h: &[u8; 40] = pkt.get(ip..ip.checked_add(40)?)?.try_into().ok()?;
        if h[0] >> 4 != 6 {
            return None;
        }
        let src: [u8; 16] = h[8..24].try_into().ok()?;
        let dst: [u8; 16] = h[24..40].try_into().ok()?;
        Some(Quote { ip, l4: ip + 40, proto: h[6], src, dst })
    } else {
        let h: &[u8; 20] = pkt.get(ip..ip.checked_add(20)?)?.try_into().ok()?;
        let ihl = usize::from(h[0] & 0x0f) * 4;
        if h[0] >> 4 != 4 || ihl < 20 || u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
            return None;
        }
        let src = mapped([h[12], h[13], h[14], h[15]]);
        let dst = mapped([h[16], h[17], h[18], h[19]]);
        Some(Quote { ip, l4: ip + ihl, proto: h[9], src, dst })
    }
}

/// The key of the entry that forwards this error: its quoted packet,
/// reversed. None when the quote is too short to name a flow (fewer than
/// the transport header's first 8 bytes) or is not TCP, UDP or echo.
//= https://www.rfc-editor.org/rfc/rfc6146#section-3.4
// (paraphrase) For an ICMP error message the incoming tuple is taken from
// the packet it carries, with source and destination swapped.
pub fn quoted_key(pkt: &[u8], l4: usize, family: Family) -> Option<FlowKey> {
    let q = quote(pkt, l4, family)?;
    let v6 = family.is_v6();
    let t: &[u8; 8] = pkt.get(q.l4..q.l4.checked_add(8)?)?.try_into().ok()?;
    let (sport, dport) = match q.proto {
        TCP | UDP => (u16::from_be_bytes([t[0], t[1]]), u16::from_be_bytes([t[2], t[3]])),
        // Echo Request / Reply: the identifier plays both ports' role.
        ICMP if !v6 && matches!(t[0], 0 | 8) => {
            let id = u16::from_be_bytes([t[4], t[5]]);
            (id, id)
        }
        ICMP6 if v6 && matches!(t[0], 128 | 129) => {
            let id = u16::from_be_bytes([t[4], t[5]]);
            (id, id)
        }
        _ => return None,
    };
    Some(FlowKey::new(q.dst, q.src, dport, sport, q.proto))
}

/// Writes `new` over the bytes at `at`, adding the change to `d`.
fn put(b: &mut [u8], at: usize, new: &[u8], d: &mut Delta) -> Option<()> {
    d.write(b.get_mut(at..at.checked_add(new.len())?)?, new);
    Some(())
}

/// Applies `d` to the checksum at `at`; returns the change of that word.
fn fix(b: &mut [u8], at: usize, d: Delta) -> Option<Delta> {
    let old = get16(b, at)?;
    let new = d.apply(old);
    let mut changed = Delta::default();
    put(b, at, &new.to_be_bytes(), &mut changed)?;
    Some(changed)
}

/// Rewrites the ICMP error in `frame` (headers at `f.l3`/`f.l4`, family
/// `f.family`) with its flow's binding `f.nat`: the outer destination becomes
/// `nat.dst`, the quoted source `nat.dst:nat.dport` and the quoted
/// destination `nat.src:nat.sport`. The outer source is kept: the router or
/// host that sent the error is reachable in the family it sent it in. None
/// when the frame does not hold what the conntrack stage found there.
//= https://www.rfc-editor.org/rfc/rfc5508#section-4.2
// (paraphrase) A NAT translating an ICMP error must translate the embedded
// IP header and transport header as well as the outer IP header, and fix
// the checksums of all of them.
pub fn rewrite(frame: &mut [u8], f: &FlowMeta) -> Option<()> {
    rewrite_outer(frame, f, false)
}

/// [`rewrite`] for an error about a hairpinned NAT64 session: the outer
/// source becomes `nat.src` too, the pool address (in the prefix) that the
/// session's packets come from, as translating the error to IPv4 (where
/// its IPv6 source has no form and the NAT64's pool address stands in) and
/// back would give. The other client never learns the sender's address.
pub fn rewrite_hairpinned(frame: &mut [u8], f: &FlowMeta) -> Option<()> {
    rewrite_outer(frame, f, true)
}

#[inline(always)]
fn rewrite_outer(frame: &mut [u8], f: &FlowMeta, outer_src: bool) -> Option<()> {
    let (l3, l4, v6, nat) = (usize::from(f.l3), usize::from(f.l4), f.family.is_v6(), &f.nat);
    let q = quote(frame, l4, f.family)?;
    // Every change inside the ICMP message, plus (ICMPv6) the pseudo-header's
    // addresses: one delta for the outer ICMP checksum.
    let mut outer = Delta::default();
    let mut head = Delta::default();
    if v6 {
        if outer_src {
            put(frame, l3 + 8, &nat.src, &mut head)?;
        }
        put(frame, l3 + 24, &nat.dst, &mut head)?;
        outer += head;
    } else {
        if outer_src {
            put(frame, l3 + 12, &nat.src[12..], &mut head)?;
        }
        put(frame, l3 + 16, &nat.dst[12..], &mut head)?;
        fix(frame, l3 + 10, head)?;
    }
    let mut addrs = Delta::default();
    if v6 {
        put(frame, q.ip + 8, &nat.dst, &mut addrs)?;
        put(frame, q.ip + 24, &nat.src, &mut addrs)?;
    } else {
        put(frame, q.ip + 12, &nat.dst[12..], &mut addrs)?;
        put(frame, q.ip + 16, &nat.src[12..], &mut addrs)?;
        outer += fix(frame, q.ip + 10, addrs)?;
    }
    outer += addrs;
    let mut ports = Delta::default();
    let (csum_at, covers_addrs) = match q.proto {
        TCP | UDP => {
            put(frame, q.l4, &nat.dport.to_be_bytes(), &mut ports)?;
            put(frame, q.l4 + 2, &nat.sport.to_be_bytes(), &mut ports)?;
            (q.l4 + if q.proto == TCP { 16 } else { 6 }, true)
        }
        _ => {
            put(frame, q.l4 + 4, &nat.dport.to_be_bytes(), &mut ports)?;
            (q.l4 + 2, q.proto == ICMP6)
        }
    };
    outer += ports;
    // The quoted transport checksum, when the quote reaches it. A quoted
    // UDP checksum of 0 ("none") stays 0.
    if let Some(c) = get16(frame, csum_at).filter(|&c| !(q.proto == UDP && c == 0)) {
        let mut d = ports;
        if covers_addrs {
            d += addrs;
        }
        let new = if q.proto == UDP { udp_encode(d.apply(c)) } else { d.apply(c) };
        put(frame, csum_at, &new.to_be_bytes(), &mut outer)?;
    }
    fix(frame, l4 + 2, outer)?;
    Some(())
}
