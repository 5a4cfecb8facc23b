//! `nat`: rewrite addresses and ports to the flow's binding, updating the
//! IPv4 header and TCP/UDP/ICMP checksums incrementally (RFC 1624).

use super::batch::{FlowKind, FlowMeta, XLAT_NONE};
use super::{Batch, Ctx, DropReason, Stage, Verdict};
use crate::wire::checksum::udp_encode;

pub struct NatStage {
    mtus: super::xlat::EgressMtu,
}

impl NatStage {
    pub fn new(mtus: super::xlat::EgressMtu) -> NatStage {
        NatStage { mtus }
    }
}

impl Stage for NatStage {
    fn name(&self) -> &'static str {
        "nat"
    }

    fn process(&mut self, batch: &mut Batch, pipeline: u8, ctx: &mut Ctx) {
        let router = super::xlat::router(ctx);
        let prefixes = super::xlat::FlowPrefixes::of(ctx);
        batch.for_each_frame(pipeline, |mut p| {
            if !matches!(p.flow.kind, FlowKind::Original | FlowKind::Reply) {
                return;
            }
            let result = if p.flow.xlat == XLAT_NONE {
                let end = p.start + p.meta.len as usize;
                let rewrite = if p.flow.related { super::related::rewrite } else { rewrite };
                p.frame.get_mut(p.start..end).and_then(|d| rewrite(d, p.flow)).ok_or(DropReason::Malformed)
            } else if p.flow.related {
                super::xlat::translate_related(&mut p, &prefixes, &self.mtus)
            } else {
                super::xlat::translate_flow(&mut p, &router, &self.mtus)
            };
            if let Err(r) = result {
                p.meta.verdict = Verdict::Drop(r);
            }
        });
    }
}

pub(super) fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

fn put16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    b.get_mut(at..at + 2)?.copy_from_slice(&v.to_be_bytes());
    Some(())
}

/// RFC 1624 eqn. 3 over several fields at once: the one's complement sum of
/// ~old + new for every changed 16-bit word. Computed once per packet and
/// applied to each checksum that covers those words.
#[derive(Clone, Copy, Default)]
pub(super) struct Delta(pub(super) u32);

impl Delta {
    #[inline]
    pub(super) fn words(&mut self, old: &[u8], new: &[u8]) {
        for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
            self.0 +=
                u32::from(!u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([n[0], n[1]]));
        }
    }

    #[inline]
    pub(super) fn word(&mut self, old: u16, new: u16) {
        self.0 += u32::from(!old) + u32::from(new);
    }

    /// HC' = ~(~HC + Σ(~m + m'))
    #[inline]
    pub(super) fn apply(self, csum: u16) -> u16 {
        let mut x = u32::from(!csum) + self.0;
        x = (x & 0xFFFF) + (x >> 16);
        x = (x & 0xFFFF) + (x >> 16);
        !(x as u16)
    }
}

/// Rewrites `frame` to `flow.nat`. None if a header is out of bounds (the
/// parser checked them, so that means a bug or a hostile frame: drop).
pub fn rewrite(frame: &mut [u8], flow: &FlowMeta) -> Option<()> {
    let (l3, l4) = (usize::from(flow.l3), usize::from(flow.l4));
    let nat = &flow.nat;
    let mut addrs = Delta::default();
    if flow.v6 {
        let a = frame.get_mut(l3 + 8..l3 + 40)?;
        addrs.words(&a[..16], &nat.src);
        addrs.words(&a[16..], &nat.dst);
        a[..16].copy_from_slice(&nat.src);
        a[16..].copy_from_slice(&nat.dst);
    } else {
        let h = frame.get_mut(l3..l3 + 20)?;
        addrs.words(&h[12..16], &nat.src[12..]);
        addrs.words(&h[16..20], &nat.dst[12..]);
        h[12..16].copy_from_slice(&nat.src[12..]);
        h[16..20].copy_from_slice(&nat.dst[12..]);
        let c = u16::from_be_bytes([h[10], h[11]]);
        h[10..12].copy_from_slice(&addrs.apply(c).to_be_bytes());
    }
    match flow.key.proto {
        6 | 17 => {
            let is_udp = flow.key.proto == 17;
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
                if c == 0 && !flow.v6 {
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
        1 | 58 => {
            // Echo: the identifier plays the port's role.
            let c = get16(frame, l4 + 2)?;
            let id = get16(frame, l4 + 4)?;
            let mut d = Delta::default();
            d.word(id, nat.dport);
            if flow.v6 {
                // ICMPv6 covers the pseudo-header; ICMPv4 does not.
                d.0 += addrs.0;
            }
            put16(frame, l4 + 4, nat.dport)?;
            put16(frame, l4 + 2, d.apply(c))
        }
        _ => Some(()),
    }
}
