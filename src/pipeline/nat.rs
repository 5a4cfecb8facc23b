//! `nat`: the stage that applies each tracked flow's binding: the NAT
//! rewrite, the ICMP-error quote rewrite, or translation to the other
//! family ([`super::rewrite`] does the work).

use super::detail::{Cause, Untranslatable};
use super::flow::{Family, FlowKind, Xlat};
use super::rewrite::xlat::{
    bounce, decrement_hop, hop_expired, translate_flow, translate_related, Answers, EgressMtu, FlowPrefixes,
};
use super::rewrite::{nat, related};
use super::stats::WorkerStats;
use super::{Batch, Ctx, DropReason, FrameMut, Stage, Verdict};
use crate::nat46::siit::build_too_big_chain;
use crate::nat46::{build_time_exceeded, RouterAddrs};

pub use super::rewrite::nat::rewrite;

pub struct NatStage {
    /// The egress MTUs, read per batch.
    pub(super) mtus: EgressMtu,
}

impl Stage for NatStage {
    fn process(&mut self, batch: &mut Batch, pipeline: u8, ctx: &mut Ctx) {
        let answers = Answers::of(ctx);
        let prefixes = FlowPrefixes::of(ctx);
        let stats = &*ctx.stats;
        let mtus = self.mtus.read();
        batch.for_each_frame_chain(pipeline, |mut p, more| {
            if !matches!(p.flow.kind, FlowKind::Original | FlowKind::Reply) {
                return;
            }
            if *more > 0 && (!matches!(p.flow.xlat, Xlat::None | Xlat::Hairpin) || p.flow.related) {
                p.meta.verdict = Verdict::Drop(DropReason::ChainUnsupported);
                return;
            }
            if p.flow.xlat == Xlat::Hairpin {
                if let Err(reason) = hairpin(&mut p, *more, &answers, mtus.ret(), stats) {
                    if reason == DropReason::Malformed {
                        stats.cause(Cause::INCONSISTENT);
                    }
                    p.meta.verdict = Verdict::Drop(reason);
                }
                return;
            }
            let result = if p.flow.xlat == Xlat::None {
                if !p.flow.related {
                    let mtu = mtus.of(p.flow.kind);
                    match too_big(&mut p, *more, &answers, mtu) {
                        Fit::Fits => {}
                        Fit::Bounced => return,
                        Fit::Drop(reason) => {
                            p.meta.verdict = Verdict::Drop(reason);
                            return;
                        }
                    }
                }
                let end = p.start + p.meta.len() as usize;
                let flow = &*p.flow;
                // Called directly, not through a function pointer: no
                // indirect call per packet.
                let done = p.frame.get_mut(p.start..end).and_then(|d| match flow.related {
                    true => related::rewrite(d, flow),
                    false => nat::rewrite_tracked(d, flow),
                });
                done.ok_or(Cause::INCONSISTENT)
            } else if p.flow.related {
                translate_related(&mut p, &prefixes, mtus)
            } else {
                translate_flow(&mut p, &answers, mtus)
            };
            if let Err(c) = result {
                stats.cause(c);
                p.meta.verdict = Verdict::Drop(c.reason());
            }
        });
    }
}

/// A hairpinned NAT64 packet (RFC 6146 §3.8), IPv6 to IPv6: rewritten to
/// its session's pool addresses and ports and the other client, and sent
/// out by the IPv6 side (the reply direction's port, whichever client
/// sent it). It is what translating to IPv4 and back would give: the hop
/// limit goes down by one (the NAT64 is one router; expiry is answered
/// with Time Exceeded, a packet over the IPv6 side's MTU with Packet Too
/// Big), the flow label, which IPv4 cannot carry, becomes 0 (RFC 7915
/// §4.1), and the traffic class is kept. An ICMPv6 error about the
/// session is rewritten the same way, its quote included, and comes from
/// the session's pool address as the data does; one whose hop limit runs
/// out here is dropped, never answered (RFC 1812 §4.3.2.7). `Malformed`:
/// headers no longer where parsing found them.
fn hairpin(
    p: &mut FrameMut<'_>,
    more: u32,
    answers: &Answers,
    mtu: u16,
    stats: &WorkerStats,
) -> Result<(), DropReason> {
    const BAD: DropReason = DropReason::Malformed;
    if p.flow.related {
        if !decrement_hop(p, Family::V6).ok_or(BAD)? {
            stats.cause(Cause::Untranslatable(Untranslatable::ErrorExpired));
            return Err(DropReason::Untranslatable);
        }
    } else {
        if hop_expired(p, Family::V6).ok_or(BAD)? {
            return bounce(p, answers, &build_time_exceeded).map_err(|c| c.reason());
        }
        match too_big(p, more, answers, mtu) {
            Fit::Fits => {}
            Fit::Bounced => return Ok(()),
            Fit::Drop(reason) => return Err(reason),
        }
    }
    let end = p.start + p.meta.len() as usize;
    let rewrite = if p.flow.related { related::rewrite_hairpinned } else { nat::rewrite };
    p.frame.get_mut(p.start..end).and_then(|d| rewrite(d, p.flow)).ok_or(BAD)?;
    if !p.flow.related {
        decrement_hop(p, Family::V6).ok_or(BAD)?;
    }
    let l3 = p.start + usize::from(p.flow.l3);
    let h = p.frame.get_mut(l3..l3 + 4).ok_or(BAD)?;
    // Version and traffic class stay; the 20-bit flow label goes.
    h[1] &= 0xf0;
    h[2] = 0;
    h[3] = 0;
    p.flow.kind = FlowKind::Reply;
    Ok(())
}

/// What the egress MTU check decided.
enum Fit {
    Fits,
    /// Replaced by Fragmentation Needed / Packet Too Big to its sender.
    Bounced,
    Drop(DropReason),
}

/// A packet longer than its egress MTU is answered the way a router
/// answers it, quoting the packet as it arrived (before the NAT rewrite),
/// so the sender's stack finds its own connection in the quote: ICMPv6
/// Packet Too Big, or ICMPv4 Fragmentation Needed when DF is set. IPv4
/// without DF would need fragmenting, which Shunt does not do: a counted
/// drop (`frame_too_large`), never a silent loss.
//= https://www.rfc-editor.org/rfc/rfc1812#section-4.2.2.7
// (paraphrase) A router that cannot forward a datagram without fragmenting
// it, and whose DF bit is set, discards it and sends an ICMP Destination
// Unreachable with code 4 and the next-hop MTU (RFC 1191 §4).
//= https://www.rfc-editor.org/rfc/rfc4443#section-3.2
//# A Packet Too Big MUST be sent by a router in response to a packet that
//# it cannot forward because the packet is larger than the MTU of the
//# outgoing link.
///
/// `more` is the packet's length past its first buffer (a chain): the
/// error is built over the first buffer and quotes from it (548 / 1232
/// bytes at most, and the headers are all there), and the packet's later
/// buffers are freed by the batch once the first no longer is the packet.
///
/// The size compared is the IP packet's (its header's length field), not
/// the frame's: bytes after the packet (Ethernet padding, or junk) are no
/// part of what the sender could shrink. A frame that still does not fit
/// because of them is dropped and counted at transmit.
#[inline]
fn too_big(p: &mut FrameMut<'_>, more: u32, answers: &Answers, mtu: u16) -> Fit {
    // The IP packet is no longer than the frame after its L2 header: a frame
    // within the MTU fits whatever its IP length says (the common case).
    let carried = (p.meta.len() as usize + more as usize).saturating_sub(usize::from(p.flow.l3));
    if carried <= usize::from(mtu) {
        return Fit::Fits;
    }
    too_big_frame(p, more, answers, mtu)
}

#[cold]
fn too_big_frame(p: &mut FrameMut<'_>, more: u32, answers: &Answers, mtu: u16) -> Fit {
    let l3 = usize::from(p.flow.l3);
    let len = p.meta.len() as usize;
    let at = p.start + l3;
    let field = |o: usize| {
        p.frame.get(at + o..at + o + 2).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let ip_len = if p.flow.family.is_v6() { 40 + field(4) } else { field(2) };
    if ip_len.min((len + more as usize).saturating_sub(l3)) <= usize::from(mtu) {
        return Fit::Fits;
    }
    if !p.flow.family.is_v6() {
        // Flags and fragment offset at bytes 6-7: DF is 0x40 of byte 6.
        let df = p.frame.get(p.start + l3 + 6).is_some_and(|b| b & 0x40 != 0);
        if !df {
            return Fit::Drop(DropReason::FrameTooLarge);
        }
    }
    let build = |b: &mut [u8], s, l, r: &RouterAddrs| build_too_big_chain(b, s, l, more as usize, r, mtu);
    match bounce(p, answers, &build) {
        Ok(()) => Fit::Bounced,
        Err(_) => Fit::Drop(DropReason::FrameTooLarge),
    }
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use crate::nat46::siit::build_too_big_chain;
    use crate::nat46::{build_too_big, RouterAddrs};

    const HEADROOM: usize = 256;

    /// An 8000-byte UDP datagram in a frame, v4 with DF or v6.
    fn datagram(v6: bool) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 0xff, 0]);
        let ip = if v6 {
            eth.ipv6(
                [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                [0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                64,
            )
        } else {
            eth.ipv4([198, 18, 0, 1], [10, 0, 100, 1], 64)
        };
        let payload: Vec<u8> = (0..8000u32).map(|i| (i * 13 % 251) as u8).collect();
        let mut out = Vec::new();
        ip.udp(40000, 9101).write(&mut out, &payload).unwrap();
        if !v6 {
            out[20] |= 0x40;
            out[24..26].fill(0);
            let sum = crate::wire::checksum::checksum(&out[14..34]);
            out[24..26].copy_from_slice(&sum.to_be_bytes());
        }
        out
    }

    /// The error built over a chain's first buffer is byte for byte the one
    /// built over the whole frame in one buffer: the quote (548 / 1232
    /// bytes) lies in the first buffer; the IP length is checked against
    /// all of them. A first buffer shorter than the quote quotes what it
    /// holds; an IP length beyond the chain is refused.
    #[test]
    fn error_over_a_chains_first_buffer_equals_the_whole_frames() {
        let router =
            RouterAddrs { v4: [192, 0, 0, 8], v6: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8] };
        for v6 in [false, true] {
            let frame = datagram(v6);
            let mut whole = vec![0u8; HEADROOM + frame.len()];
            whole[HEADROOM..].copy_from_slice(&frame);
            let (ws, wl) = build_too_big(&mut whole, HEADROOM, frame.len(), &router, 1500).unwrap();
            for first in [1792, 3840] {
                let mut buf = vec![0u8; HEADROOM + first];
                buf[HEADROOM..].copy_from_slice(&frame[..first]);
                let more = frame.len() - first;
                let (s, l) = build_too_big_chain(&mut buf, HEADROOM, first, more, &router, 1500).unwrap();
                assert_eq!(&buf[s..s + l], &whole[ws..ws + wl], "v6 {v6}, first buffer {first}");
                let mut buf = vec![0u8; HEADROOM + first];
                buf[HEADROOM..].copy_from_slice(&frame[..first]);
                assert!(build_too_big_chain(&mut buf, HEADROOM, first, more - 1, &router, 1500).is_err());
            }
            // A first buffer of only the headers: the quote is what it holds.
            let first = if v6 { 14 + 48 } else { 14 + 28 };
            let mut buf = vec![0u8; HEADROOM + first];
            buf[HEADROOM..].copy_from_slice(&frame[..first]);
            let more = frame.len() - first;
            let (s, l) = build_too_big_chain(&mut buf, HEADROOM, first, more, &router, 1500).unwrap();
            assert_eq!(l, first + if v6 { 48 } else { 28 });
            assert_eq!(&buf[s + l - (first - 14)..s + l], &frame[14..first]);
        }
    }
}
