//! `nat`: rewrite addresses and ports to the flow's binding, updating the
//! IPv4 header and TCP/UDP/ICMP checksums incrementally (RFC 1624).

use super::batch::{FlowKind, FlowMeta};
use super::{Batch, Ctx, DropReason, Stage, Verdict};
use crate::wire::checksum::{udp_encode, udp_update_bytes, udp_update_u16, update_bytes, update_u16};

#[derive(Default)]
pub struct NatStage;

impl Stage for NatStage {
    fn name(&self) -> &'static str {
        "nat"
    }

    fn process(&mut self, batch: &mut Batch, pipeline: u8, _ctx: &mut Ctx) {
        batch.for_each(pipeline, |p| {
            if matches!(p.flow.kind, FlowKind::Original | FlowKind::Reply)
                && rewrite(p.data, p.flow).is_none()
            {
                p.meta.verdict = Verdict::Drop(DropReason::Malformed);
            }
        });
    }
}

fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn put16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    b.get_mut(at..at + 2)?.copy_from_slice(&v.to_be_bytes());
    Some(())
}

/// Rewrites `frame` to `flow.nat`. None if a header is out of bounds (the
/// parser checked them, so that means a bug or a hostile frame: drop).
pub fn rewrite(frame: &mut [u8], flow: &FlowMeta) -> Option<()> {
    let (l3, l4) = (usize::from(flow.l3), usize::from(flow.l4));
    let nat = &flow.nat;
    // Old and new address pairs as contiguous bytes: src then dst.
    let (alen, aoff) = if flow.v6 { (16, 8) } else { (4, 12) };
    let mut old = [0u8; 32];
    old[..2 * alen].copy_from_slice(frame.get(l3 + aoff..l3 + aoff + 2 * alen)?);
    let mut new = [0u8; 32];
    let lo = 16 - alen;
    new[..alen].copy_from_slice(&nat.src[lo..]);
    new[alen..2 * alen].copy_from_slice(&nat.dst[lo..]);
    let (old, new) = (&old[..2 * alen], &new[..2 * alen]);

    frame.get_mut(l3 + aoff..l3 + aoff + 2 * alen)?.copy_from_slice(new);
    if !flow.v6 {
        let c = get16(frame, l3 + 10)?;
        put16(frame, l3 + 10, update_bytes(c, old, new))?;
    }
    match flow.key.proto {
        6 => {
            let c = get16(frame, l4 + 16)?;
            let (os, od) = (get16(frame, l4)?, get16(frame, l4 + 2)?);
            let c = update_u16(update_u16(update_bytes(c, old, new), os, nat.sport), od, nat.dport);
            put16(frame, l4, nat.sport)?;
            put16(frame, l4 + 2, nat.dport)?;
            put16(frame, l4 + 16, c)
        }
        17 => {
            let c = get16(frame, l4 + 6)?;
            let (os, od) = (get16(frame, l4)?, get16(frame, l4 + 2)?);
            // IPv4 UDP checksum 0 means "none" and must stay 0 (RFC 768).
            let c = if flow.v6 {
                // IPv6 UDP must carry a checksum: a computed 0 is sent as 0xFFFF (RFC 8200 §8.1).
                udp_encode(update_u16(update_u16(update_bytes(c, old, new), os, nat.sport), od, nat.dport))
            } else {
                udp_update_u16(udp_update_u16(udp_update_bytes(c, old, new), os, nat.sport), od, nat.dport)
            };
            put16(frame, l4, nat.sport)?;
            put16(frame, l4 + 2, nat.dport)?;
            put16(frame, l4 + 6, c)
        }
        1 | 58 => {
            // Echo: the identifier plays the port's role.
            let c = get16(frame, l4 + 2)?;
            let id = get16(frame, l4 + 4)?;
            let mut c = update_u16(c, id, nat.dport);
            if flow.v6 {
                // ICMPv6 covers the pseudo-header; ICMPv4 does not.
                c = update_bytes(c, old, new);
            }
            put16(frame, l4 + 4, nat.dport)?;
            put16(frame, l4 + 2, c)
        }
        _ => Some(()),
    }
}
