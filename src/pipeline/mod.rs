//! Packet processing: a worker classifies each batch, runs every pipeline's
//! stages over the packets that belong to it, then dispatches on verdicts.

mod batch;
pub mod classify;
pub mod l2fwd;

pub use batch::{Batch, DropReason, PacketMeta, PacketMut, UmemView, Verdict};

/// A processing step. A stage looks at the packets of its pipeline that are
/// still `Continue` and sets their verdict: continue, forward, or drop.
/// Stages never allocate, lock, or make syscalls.
pub trait Stage: Send {
    fn name(&self) -> &'static str;
    fn process(&mut self, batch: &mut Batch, pipeline: u8);
}

/// One pipeline's stages in configured order.
pub struct Pipeline {
    pub name: String,
    pub stages: Vec<Box<dyn Stage>>,
}

impl Pipeline {
    pub fn run(&mut self, batch: &mut Batch, id: u8) {
        for stage in &mut self.stages {
            stage.process(batch, id);
        }
        // A packet no stage forwarded has nowhere to go.
        for m in &mut batch.pkts[..batch.len] {
            if m.pipeline == id && m.verdict == Verdict::Continue {
                m.verdict = Verdict::Drop(DropReason::NoRoute);
            }
        }
    }
}
