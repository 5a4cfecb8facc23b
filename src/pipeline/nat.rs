//! `nat`: the stage that applies each tracked flow's binding: the NAT
//! rewrite, the ICMP-error quote rewrite, or translation to the other
//! family ([`super::rewrite`] does the work).

use super::detail::Cause;
use super::flow::{FlowKind, Xlat};
use super::rewrite::xlat::{router, translate_flow, translate_related, EgressMtu, FlowPrefixes};
use super::rewrite::{nat, related};
use super::{Batch, Ctx, Stage, Verdict};

pub use super::rewrite::nat::rewrite;

pub struct NatStage {
    mtus: EgressMtu,
}

impl NatStage {
    pub fn new(mtus: EgressMtu) -> NatStage {
        NatStage { mtus }
    }
}

impl Stage for NatStage {
    fn name(&self) -> &'static str {
        "nat"
    }

    fn process(&mut self, batch: &mut Batch, pipeline: u8, ctx: &mut Ctx) {
        let router = router(ctx);
        let prefixes = FlowPrefixes::of(ctx);
        let stats = &*ctx.stats;
        batch.for_each_frame(pipeline, |mut p| {
            if !matches!(p.flow.kind, FlowKind::Original | FlowKind::Reply) {
                return;
            }
            let result = if p.flow.xlat == Xlat::None {
                let end = p.start + p.meta.len as usize;
                let rewrite = if p.flow.related { related::rewrite } else { nat::rewrite };
                p.frame.get_mut(p.start..end).and_then(|d| rewrite(d, p.flow)).ok_or(Cause::INCONSISTENT)
            } else if p.flow.related {
                translate_related(&mut p, &prefixes, &self.mtus)
            } else {
                translate_flow(&mut p, &router, &self.mtus)
            };
            if let Err(c) = result {
                stats.cause(c);
                p.meta.verdict = Verdict::Drop(c.reason());
            }
        });
    }
}
