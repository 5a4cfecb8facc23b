//! `l2fwd`: rewrite Ethernet addresses to the next hop and transmit on the
//! configured egress port (answers that earlier stages built go back to
//! their senders, as `l2` sends them). The simplest complete pipeline, and the baseline
//! the benchmarks compare against DPDK's `testpmd --forward-mode=mac`.

use super::flow::FlowKind;
use super::l2::send_back;
use super::{Ctx, DropReason, Stage, Verdict};
use crate::pipeline::batch::Batch;

pub struct L2Fwd {
    /// Worker port index of the egress interface.
    egress_port: u8,
    /// Source MAC: the egress interface's own address.
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    /// Every worker port's MAC, for answers sent back out their ingress.
    port_macs: Vec<[u8; 6]>,
}

impl L2Fwd {
    pub fn new(egress_port: u8, src_mac: [u8; 6], dst_mac: [u8; 6], port_macs: Vec<[u8; 6]>) -> L2Fwd {
        L2Fwd { egress_port, src_mac, dst_mac, port_macs }
    }
}

impl Stage for L2Fwd {
    fn process(&mut self, batch: &mut Batch, pipeline: u8, ctx: &mut Ctx) {
        batch.for_each(pipeline, |p| {
            // After nat or maglev: an ICMP error or RST they built goes back
            // to its sender, as `l2` sends it, not on to the next hop.
            if matches!(p.flow.kind, FlowKind::Bounce | FlowKind::Refused) {
                return send_back(p, &self.port_macs, ctx);
            }
            let Some(macs) = p.data.get_mut(..12) else {
                p.meta.verdict = Verdict::Drop(DropReason::Malformed);
                return;
            };
            macs[..6].copy_from_slice(&self.dst_mac);
            macs[6..].copy_from_slice(&self.src_mac);
            p.meta.verdict = Verdict::Forward(self.egress_port);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::batch::UmemView;

    #[test]
    fn rewrites_macs_and_forwards() {
        let mut mem = vec![0u8; 8192];
        let frame: Vec<u8> = (0u8..60).collect();
        mem[4096 + 256..4096 + 256 + 60].copy_from_slice(&frame);
        mem[256..256 + 10].copy_from_slice(&[1; 10]);
        // SAFETY: `mem` outlives the batch and is read only after it is done.
        let mut batch = Batch::new(unsafe { UmemView::of_slice(&mut mem) });
        batch.push(4096 + 256, 60, 0);
        batch.push(256, 10, 0); // shorter than an Ethernet header
        let mut s = L2Fwd::new(1, [0xaa; 6], [0xbb; 6], Vec::new());
        s.process(&mut batch, 0, &mut Ctx::for_tests());
        assert_eq!(batch.metas()[0].verdict, Verdict::Forward(1));
        assert_eq!(batch.metas()[1].verdict, Verdict::Drop(DropReason::Malformed));
        let out = &mem[4096 + 256..4096 + 256 + 60];
        assert_eq!(&out[..6], &[0xbb; 6]);
        assert_eq!(&out[6..12], &[0xaa; 6]);
        assert_eq!(&out[12..], &frame[12..], "payload untouched");
    }

    #[test]
    fn descriptor_outside_umem_is_dropped_not_read() {
        let mut mem = vec![0u8; 4096];
        // SAFETY: `mem` outlives the batch and is read only after it is done.
        let mut batch = Batch::new(unsafe { UmemView::of_slice(&mut mem) });
        batch.push(4000, 200, 0);
        batch.push(u64::MAX - 10, 64, 0);
        L2Fwd::new(1, [0; 6], [0; 6], Vec::new()).process(&mut batch, 0, &mut Ctx::for_tests());
        for m in batch.metas() {
            assert_eq!(m.verdict, Verdict::Drop(DropReason::Malformed));
        }
    }
}
