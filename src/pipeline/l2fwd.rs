//! `l2fwd`: rewrite Ethernet addresses to the next hop and transmit on the
//! configured egress port (answers that earlier stages built go back to
//! their senders, as `l2` sends them). The simplest complete pipeline, and
//! the baseline the benchmarks compare against DPDK's
//! `testpmd --forward-mode=mac`.

use super::flow::FlowKind;
use super::l2::send_back;
use super::{Ctx, DropReason, PacketMut, Stage, Verdict};
use crate::pipeline::batch::Batch;

pub struct L2Fwd {
    /// Worker port index of the egress interface.
    egress_port: u8,
    /// Source MAC: the egress interface's own address.
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    /// Every worker port's MAC, for answers sent back out their ingress;
    /// `None` when no stage before this one can build an answer.
    answers: Option<Vec<[u8; 6]>>,
}

impl L2Fwd {
    pub fn new(egress_port: u8, src_mac: [u8; 6], dst_mac: [u8; 6]) -> L2Fwd {
        L2Fwd { egress_port, src_mac, dst_mac, answers: None }
    }

    /// Behind other stages: answers they build (ICMP errors, RSTs) go back
    /// to their senders, as `l2` sends them, not on to the next hop.
    pub fn answering(self, port_macs: Vec<[u8; 6]>) -> L2Fwd {
        L2Fwd { answers: Some(port_macs), ..self }
    }

    #[inline(always)]
    fn forward(&self, p: PacketMut<'_>) {
        let Some(macs) = p.data.get_mut(..12) else {
            p.meta.verdict = Verdict::Drop(DropReason::Malformed);
            return;
        };
        macs[..6].copy_from_slice(&self.dst_mac);
        macs[6..].copy_from_slice(&self.src_mac);
        p.meta.verdict = Verdict::Forward(self.egress_port);
    }
}

impl Stage for L2Fwd {
    fn process(&mut self, batch: &mut Batch, pipeline: u8, ctx: &mut Ctx) {
        // Alone in its pipeline (the forwarding baseline), the loop reads
        // no flow state at all.
        match &self.answers {
            None => batch.for_each(pipeline, |p| self.forward(p)),
            Some(port_macs) => batch.for_each(pipeline, |p| {
                if matches!(p.flow.kind, FlowKind::Bounce | FlowKind::Refused) {
                    return send_back(p.meta, p.data, port_macs, ctx);
                }
                self.forward(p)
            }),
        }
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
        batch.push(4096 + 256, 60, 0).unwrap();
        batch.push(256, 10, 0).unwrap(); // shorter than an Ethernet header
        let mut s = L2Fwd::new(1, [0xaa; 6], [0xbb; 6]);
        s.process(&mut batch, 0, &mut Ctx::for_tests());
        assert_eq!(batch.metas()[0].verdict, Verdict::Forward(1));
        assert_eq!(batch.metas()[1].verdict, Verdict::Drop(DropReason::Malformed));
        let out = &mem[4096 + 256..4096 + 256 + 60];
        assert_eq!(&out[..6], &[0xbb; 6]);
        assert_eq!(&out[6..12], &[0xaa; 6]);
        assert_eq!(&out[12..], &frame[12..], "payload untouched");
    }
}
