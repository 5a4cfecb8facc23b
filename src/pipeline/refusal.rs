//! New flows refused for want of an SNAT port are answered, so the client
//! fails at once instead of retransmitting into silence: a TCP SYN gets an
//! RST from the VIP (for NAT64, from the server's address under the prefix),
//! anything else an ICMP "administratively prohibited" error, or for NAT64
//! the "address unreachable" RFC 6146 asks for. The answer is built in the
//! refused packet's own frame (no allocation) and leaves by the port the
//! packet came in on.
//!
//! A flow is counted once (`snat_exhausted`), not once per retransmission:
//! a small direct-mapped table per worker remembers the flow hashes refused
//! in the last [`REMEMBER_SECS`]. A collision only makes a refusal count
//! again; the table never grows.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::conntrack::Tick;
use super::flow::{proto, Family, FlowMeta};
use super::FrameMut;
use crate::nat46::siit::build_address_unreachable;
use crate::nat46::{build_admin_prohibited, RouterAddrs};
use crate::wire::addr::v4_of;
use crate::wire::checksum::{l4_checksum_v4, l4_checksum_v6};
use crate::wire::{ipv4, ipv6};

/// Slots of the recent-refusals table (a power of two).
pub const SLOTS: usize = 1024;
/// How long a refused flow's retransmissions are recognised: TCP's SYN
/// retries (1 + 2 + 4 + … s) and a UDP client's resends fit well inside.
pub const REMEMBER_SECS: u32 = 60;

#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    at: Tick,
    used: bool,
}

/// One worker's recently refused flows.
pub struct Refusals {
    slots: Box<[Slot]>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals { slots: vec![Slot::default(); SLOTS].into_boxed_slice() }
    }
}

impl Refusals {
    /// Records a refusal of the flow with hash `hash`; true when it is the
    /// flow's first in [`REMEMBER_SECS`] (a retransmission refreshes it).
    #[inline]
    pub fn first(&mut self, hash: u64, now: Tick) -> bool {
        let Some(s) = self.slots.get_mut(hash as usize & (SLOTS - 1)) else { return true };
        let again = s.used && s.hash == hash && now.wrapping_sub(s.at) < REMEMBER_SECS;
        *s = Slot { hash, at: now, used: true };
        !again
    }
}

/// Replaces a refused packet with its answer, which the l2 stage returns
/// out its ingress port; `nat64`: the packet would have opened a NAT64
/// session. False when no answer can be built (the caller drops it).
///
/// A TCP SYN gets an RST even through NAT64, where RFC 6146 §3.5.2.2 asks
/// for the ICMPv6 error: a client's connect fails at once on an RST, while
/// many stacks retry through an ICMP error until their timeout.
pub fn answer(p: &mut FrameMut<'_>, nat64: bool) -> bool {
    let built = if p.flow.key.proto == proto::TCP {
        let end = p.start + p.meta.len() as usize;
        p.frame.get_mut(p.start..end).and_then(|d| tcp_reset(d, p.flow)).map(|len| (p.start, len))
    } else {
        let dst = p.flow.key.dst;
        let router = RouterAddrs { v4: v4_of(&dst), v6: dst };
        let (buf, start, len) = (&mut *p.frame, p.start, p.meta.len() as usize);
        if nat64 {
            build_address_unreachable(buf, start, len, &router).ok()
        } else {
            build_admin_prohibited(buf, start, len, &router).ok()
        }
    };
    let Some((start, len)) = built else { return false };
    p.place(start, len)
}

/// Rewrites the TCP segment in `data` (a whole frame, parsed into `f`) into
/// the reset a closed port sends back; returns the new frame length.
//= https://www.rfc-editor.org/rfc/rfc9293#section-3.10.7.1
//# If the ACK bit is off, sequence number zero is used,
//#
//#    <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
//#
//# If the ACK bit is on,
//#
//#    <SEQ=SEG.ACK><CTL=RST>
fn tcp_reset(data: &mut [u8], f: &FlowMeta) -> Option<usize> {
    let (l3, l4) = (usize::from(f.l3), usize::from(f.l4));
    let v6 = f.family == Family::V6;
    // The segment as received: its length is what the IP header says.
    let ip_end = if v6 {
        l3 + 40 + usize::from(u16::from_be_bytes(data.get(l3 + 4..l3 + 6)?.try_into().ok()?))
    } else {
        l3 + usize::from(u16::from_be_bytes(data.get(l3 + 2..l3 + 4)?.try_into().ok()?))
    };
    let tcp = data.get(l4..ip_end.min(data.len()))?;
    let doff = usize::from(*tcp.get(12)? >> 4) * 4;
    let flags = *tcp.get(13)?;
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    let ack = u32::from_be_bytes(tcp.get(8..12)?.try_into().ok()?);
    let (sport, dport) = (f.key.sport, f.key.dport);
    let seg_len =
        tcp.len().checked_sub(doff)? as u32 + u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
    let (rseq, rack, rflags) =
        if flags & 0x10 != 0 { (ack, 0, 0x04) } else { (0, seq.wrapping_add(seg_len), 0x14) };
    let mut seg = [0u8; 20];
    seg[0..2].copy_from_slice(&dport.to_be_bytes());
    seg[2..4].copy_from_slice(&sport.to_be_bytes());
    seg[4..8].copy_from_slice(&rseq.to_be_bytes());
    seg[8..12].copy_from_slice(&rack.to_be_bytes());
    seg[12] = 5 << 4;
    seg[13] = rflags;
    // Back to the sender's MAC (the l2 stage sets the source).
    let src_mac: [u8; 6] = data.get(6..12)?.try_into().ok()?;
    data.get_mut(..6)?.copy_from_slice(&src_mac);
    let (src, dst) = (f.key.dst, f.key.src);
    let tcp_at = if v6 {
        let c = l4_checksum_v6(Ipv6Addr::from(src), Ipv6Addr::from(dst), proto::TCP, &seg);
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        let ip = ipv6::Repr {
            traffic_class: 0,
            flow_label: 0,
            payload_len: 20,
            next_header: proto::TCP,
            hop_limit: 64,
            src: Ipv6Addr::from(src),
            dst: Ipv6Addr::from(dst),
        };
        ip.emit(data.get_mut(l3..)?).ok()?;
        l3 + ipv6::HEADER_LEN
    } else {
        let (s4, d4) = (v4_of(&src), v4_of(&dst));
        let c = l4_checksum_v4(Ipv4Addr::from(s4), Ipv4Addr::from(d4), proto::TCP, &seg);
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        // DF set, ID 0 (RFC 6864: an atomic datagram's ID is unused).
        let ip = ipv4::Repr {
            tos: 0,
            total_len: 40,
            ident: 0,
            flags_frag: ipv4::Repr::DF,
            ttl: 64,
            protocol: proto::TCP,
            src: Ipv4Addr::from(s4),
            dst: Ipv4Addr::from(d4),
        };
        ip.emit(data.get_mut(l3..)?).ok()?;
        l3 + ipv4::MIN_HEADER_LEN
    };
    data.get_mut(tcp_at..tcp_at + 20)?.copy_from_slice(&seg);
    Some(tcp_at + 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_counts_once_until_it_is_forgotten() {
        let mut r = Refusals::default();
        assert!(r.first(7, 100));
        assert!(!r.first(7, 101), "a retransmission");
        assert!(!r.first(7, 101 + REMEMBER_SECS - 1), "refreshed by the last one");
        assert!(r.first(7, 101 + 3 * REMEMBER_SECS), "forgotten");
        assert!(r.first(7 + SLOTS as u64, 101 + 3 * REMEMBER_SECS), "another flow in the slot");
        assert!(r.first(0, 0), "hash 0 in an unused slot is new");
    }
}
