//! `l2`: choose the egress port and next-hop MAC. Original-direction packets
//! go to their backend's MAC on the backend-side port; replies go to the
//! client-side next hop. A backend with no known MAC is a counted drop.

use super::flow::FlowKind;
use super::{Batch, Ctx, DropReason, PacketMeta, Stage, Verdict};
use crate::wire::addr::mapped;
use crate::wire::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6};

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
    let Ok(eth) = ethernet::Frame::new_checked(frame) else { return [0; 16] };
    let ip = eth.payload();
    match eth.ethertype() {
        ETHERTYPE_IPV4 => ip.get(16..20).and_then(|a| a.try_into().ok()).map_or([0; 16], mapped),
        ETHERTYPE_IPV6 => ip.get(24..40).and_then(|a| a.try_into().ok()).unwrap_or([0; 16]),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer's destination is read past one VLAN tag, in 16-byte form.
    #[test]
    fn answer_destination_reads_past_a_tag() {
        let v4 = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4([10, 0, 0, 1], [192, 0, 2, 7], 64);
        let mut f = Vec::new();
        v4.udp(1, 2).write(&mut f, &[]).unwrap();
        assert_eq!(answer_destination(&f), mapped([192, 0, 2, 7]));
        // The same frame with an 802.1Q tag after the MACs.
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&f[12..]);
        assert_eq!(answer_destination(&tagged), mapped([192, 0, 2, 7]));
        let v6 = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]).ipv6([1; 16], [9; 16], 64);
        let mut g = Vec::new();
        v6.udp(1, 2).write(&mut g, &[]).unwrap();
        assert_eq!(answer_destination(&g), [9; 16]);
        assert_eq!(answer_destination(&f[..20]), [0; 16], "cut short: no destination");
        tagged[16..18].copy_from_slice(&[0x08, 0x06]); // ARP
        assert_eq!(answer_destination(&tagged), [0; 16]);
    }
}
