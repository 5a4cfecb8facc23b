//! `l2`: choose the egress port and next-hop MAC. Original-direction packets
//! go to their backend's MAC on the backend-side port; replies go to the
//! client-side next hop. A backend with no known MAC is a counted drop.

use super::flow::FlowKind;
use super::{Batch, Ctx, DropReason, PacketMeta, Stage, Verdict};
use crate::wire::addr::mapped;

/// Sends an answer an earlier stage built (an ICMP error, an RST) back to
/// its sender, within the worker's error rate: the builder addressed the
/// frame to the sender's MAC, and it leaves by the port it came in on. A
/// frame handed over from another worker leaves by its source's port: the
/// source address the builder put there (the one the packet was sent to)
/// stays. Out of line: answers are rare, and the loops that call it hot.
/// It takes the packet's parts, not a `PacketMut`: a record passed whole to
/// a call is built on the stack for every packet of the calling loop.
#[cold]
#[inline(never)]
pub(super) fn send_back(meta: &mut PacketMeta, data: &mut [u8], port_macs: &[[u8; 6]], ctx: &mut Ctx) {
    if !ctx.errors.admit(&answer_destination(data), ctx.now) {
        meta.verdict = Verdict::Drop(DropReason::ErrorRateLimited);
        return;
    }
    let port = meta.ingress;
    let Some(src) = data.get_mut(6..12) else {
        meta.verdict = Verdict::Drop(DropReason::Malformed);
        return;
    };
    if let Some(mac) = port_macs.get(usize::from(port)) {
        src.copy_from_slice(mac);
    }
    meta.verdict = Verdict::Forward(port);
}

/// The IP destination of an answer frame in 16-byte form (IPv4 mapped),
/// past one VLAN tag; all zero when the frame is not IP (every answer is,
/// so that never spends a real destination's errors).
fn answer_destination(frame: &[u8]) -> [u8; 16] {
    let mut at = 12;
    let mut ethertype = frame.get(at..at + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        at += 4;
        ethertype = frame.get(at..at + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    }
    let ip = at + 2;
    match ethertype {
        0x0800 => frame.get(ip + 16..ip + 20).and_then(|a| a.try_into().ok()).map_or([0; 16], mapped),
        0x86dd => frame.get(ip + 24..ip + 40).and_then(|a| a.try_into().ok()).unwrap_or([0; 16]),
        _ => [0; 16],
    }
}

pub struct L2Stage {
    egress: u8,
    egress_mac: [u8; 6],
    fallback_mac: Option<[u8; 6]>,
    return_egress: u8,
    return_mac: [u8; 6],
    return_dst_mac: [u8; 6],
    /// Every worker port's MAC, for errors sent back out their ingress.
    port_macs: Vec<[u8; 6]>,
}

impl L2Stage {
    /// Ports are worker port indices; `*_mac` are those ports' own MACs.
    pub fn new(
        (egress, egress_mac): (u8, [u8; 6]),
        fallback_mac: Option<[u8; 6]>,
        (return_egress, return_mac): (u8, [u8; 6]),
        return_dst_mac: [u8; 6],
        port_macs: Vec<[u8; 6]>,
    ) -> L2Stage {
        L2Stage { egress, egress_mac, fallback_mac, return_egress, return_mac, return_dst_mac, port_macs }
    }
}

impl Stage for L2Stage {
    fn process(&mut self, batch: &mut Batch, pipeline: u8, ctx: &mut Ctx) {
        batch.for_each(pipeline, |p| {
            let (port, src, dst) = match p.flow.kind {
                FlowKind::Original => match (p.flow.next_hop != [0; 6])
                    .then_some(p.flow.next_hop)
                    .or_else(|| ctx.services.next_hop(&p.flow.nat.dst))
                    // DSR: the destination is the VIP; the backend is by id.
                    .or_else(|| ctx.services.backend_hop(p.flow.backend))
                    .or(self.fallback_mac)
                {
                    Some(mac) => (self.egress, self.egress_mac, mac),
                    None => {
                        ctx.stats.tx_failed(p.flow.service, p.flow.backend);
                        p.meta.verdict = Verdict::Drop(DropReason::NextHopUnresolved);
                        return;
                    }
                },
                FlowKind::Reply => (self.return_egress, self.return_mac, self.return_dst_mac),
                FlowKind::Bounce | FlowKind::Refused => {
                    return send_back(p.meta, p.data, &self.port_macs, ctx)
                }
                _ => return,
            };
            let Some(macs) = p.data.get_mut(..12) else {
                p.meta.verdict = Verdict::Drop(DropReason::Malformed);
                return;
            };
            macs[..6].copy_from_slice(&dst);
            macs[6..].copy_from_slice(&src);
            p.meta.verdict = Verdict::Forward(port);
        });
    }
}
