//! Packet processing: a worker classifies each batch, runs every pipeline's
//! stages over the packets that belong to it, then dispatches on verdicts.
//!
//! Stages of the L4 load balancer, in order: `conntrack` (parse, lookup,
//! state), `maglev` (new flows: backend, SNAT port, entries), `nat`
//! (rewrite, incremental checksums), `l2` (next hop, egress port).

#[macro_use]
mod dense;

mod batch;
pub mod build;
pub mod classify;
pub mod conntrack;
pub mod detail;
pub mod flow;
pub mod frag;
pub mod l2;
pub mod l2fwd;
pub mod lb;
pub mod maglev;
pub mod mtu;
pub mod nat;
pub mod prefetch;
pub mod ratelimit;
pub mod refusal;
pub mod registry;
pub mod rewrite;
pub mod services;
pub mod slots;
pub mod snat;
pub mod stats;
pub mod xlat;

use std::sync::Arc;

pub use batch::{
    Batch, DropReason, Emit, FrameMut, PacketMeta, PacketMut, PushError, TailBuf, UmemView, Verdict,
    MAX_TAIL, SPARE_FRAMES,
};
pub use flow::{FlowKind, FlowMeta};

use conntrack::{ConnTable, Tick};
use services::Services;
use snat::SnatPool;

use stats::WorkerStats;

/// A processing step. A stage looks at the packets of its pipeline that are
/// still `Continue` and sets their verdict: continue, forward, or drop.
/// Stages never allocate, lock, or make syscalls. What a stage is called
/// and whether it takes frames of several buffers is said once, in its
/// [`registry::StageDescriptor`].
pub trait Stage: Send {
    fn process(&mut self, batch: &mut Batch, pipeline: u8, ctx: &mut Ctx);
}

/// Per-worker state the flow stages share: tables, the config snapshot and
/// the batch's clock. Owned by one worker thread; never locked.
pub struct Ctx {
    /// Seconds, read once per batch.
    pub now: Tick,
    pub services: Arc<Services>,
    pub conntrack: ConnTable,
    /// This worker's share of each SNAT pool, indexed like `services.pools`.
    pub snat: Vec<SnatPool>,
    /// Per-service and per-backend traffic, read by the control thread.
    pub stats: Arc<WorkerStats>,
    pub worker: u16,
    pub workers: u16,
    /// New-flow rate limits (none unless the config sets them).
    pub limiter: ratelimit::FlowLimiter,
    /// The ICMP errors and RSTs this worker may still send (none unless set).
    pub errors: ratelimit::ErrorLimiter,
    /// Flows recently refused for want of an SNAT port (counted once each).
    pub refusals: refusal::Refusals,
    /// Datagrams whose later fragments are expected (shallow reassembly).
    pub frag: frag::FragTable,
}

impl Ctx {
    pub fn new(
        conntrack: ConnTable,
        services: Arc<Services>,
        stats: Arc<WorkerStats>,
        worker: u16,
        workers: u16,
    ) -> Ctx {
        let mut ctx = Ctx {
            now: 0,
            services: Arc::new(Services::empty()),
            conntrack,
            snat: Vec::new(),
            stats,
            worker,
            workers,
            limiter: ratelimit::FlowLimiter::unlimited(),
            errors: ratelimit::ErrorLimiter::unlimited(),
            refusals: refusal::Refusals::default(),
            frag: frag::FragTable::new(frag::FragLimits::default()),
        };
        ctx.install(services);
        ctx
    }

    /// A small context with no services, for unit tests of single stages.
    #[cfg(test)]
    pub fn for_tests() -> Ctx {
        let ct = ConnTable::new(1024, conntrack::Timeouts::default(), conntrack::FullPolicy::Drop);
        Ctx::new(ct, Arc::new(Services::empty()), Arc::new(WorkerStats::default()), 0, 1)
    }

    /// Switches to a new snapshot (at a batch boundary). SNAT pools that
    /// survive keep their state, so ports in use are never handed out twice.
    pub fn install(&mut self, services: Arc<Services>) {
        let mut old: Vec<Option<SnatPool>> = std::mem::take(&mut self.snat).into_iter().map(Some).collect();
        for p in &services.pools {
            let kept = self.services.pools.iter().position(|q| q == p).and_then(|i| old.get_mut(i)?.take());
            self.snat.push(kept.unwrap_or_else(|| SnatPool::new(*p, self.worker, self.workers)));
        }
        // The NAT64 pool binds each client to one pair (endpoint-independent
        // mapping, RFC 6146 §3.5.1).
        if let Some(n) = &services.xlat.nat64 {
            if let Some(p) = self.snat.get_mut(usize::from(n.pool)) {
                p.enable_bib();
            }
        }
        self.services = services;
    }
}

/// One pipeline's stages in configured order.
pub struct Pipeline {
    pub name: String,
    pub stages: Vec<Box<dyn Stage>>,
    /// Whether every stage takes frames of several buffers
    /// ([`registry::StageDescriptor::chains`]); if not, such frames are
    /// refused (`chain_unsupported`) before the first stage.
    pub chains: bool,
}

impl Pipeline {
    pub fn run(&mut self, batch: &mut Batch, id: u8, ctx: &mut Ctx) {
        if batch.chained > 0 && !self.chains {
            let n = batch.len();
            for (m, &more) in batch.pkts[..n].iter_mut().zip(&batch.more) {
                if m.active(id) && more > 0 {
                    m.verdict = Verdict::Drop(DropReason::ChainUnsupported);
                }
            }
        }
        for stage in &mut self.stages {
            stage.process(batch, id, ctx);
        }
        // A packet no stage forwarded has nowhere to go.
        let n = batch.len();
        for m in &mut batch.pkts[..n] {
            if m.active(id) {
                m.verdict = Verdict::Drop(DropReason::NoRoute);
            }
        }
    }
}

/// One batch through classification and every pipeline it touches, then
/// the batch-boundary housekeeping. What a worker does between RX and TX.
pub fn process(
    batch: &mut Batch,
    classifier: &classify::Classifier,
    pipelines: &mut [Pipeline],
    ctx: &mut Ctx,
) {
    classifier.classify(batch, &ctx.services);
    for (id, pipeline) in pipelines.iter_mut().enumerate() {
        let id = id as u8;
        if batch.metas().iter().any(|m| m.active(id)) {
            pipeline.run(batch, id, ctx);
        }
    }
}

/// The most conntrack slots one housekeeping call scans (tens of
/// microseconds at worst): a table sweep owed after a quiet spell is spread
/// over the calls that follow.
pub const EXPIRE_MAX: usize = 1024;

/// The fewest conntrack slots one housekeeping call scans: one bucket. The
/// sweep's pace comes from time ([`conntrack::ConnTable::sweep_due`]); at
/// 64 slots a batch, a busy worker swept a million-flow table several
/// times a second, a cache miss per live slot (9 % of `established/1M`).
pub const EXPIRE_MIN: usize = conntrack::WAYS;

/// Batch-boundary housekeeping: free what dead flows held and expire a
/// bounded slice of conntrack: the part of a full sweep every
/// [`conntrack::SWEEP_SECS`] that is due ([`conntrack::ConnTable::sweep_due`]),
/// at least `min_slots` ([`EXPIRE_MIN`] for a worker), at most
/// [`EXPIRE_MAX`] unless `min_slots` is more. Each dead flow is reaped as
/// soon as its entry is cleared; the sweep pauses when the graveyard is
/// full and goes on once it is drained, so no flow's SNAT port is ever
/// lost.
pub fn housekeeping(ctx: &mut Ctx, min_slots: usize) {
    lb::reap(ctx);
    let mut left = ctx.conntrack.sweep_due(ctx.now, min_slots, EXPIRE_MAX);
    while left > 0 {
        let swept = ctx.conntrack.expire_step(ctx.now, left);
        lb::reap(ctx);
        if swept.scanned == 0 {
            break; // cannot happen after a drain; never spin
        }
        left = left.saturating_sub(swept.scanned);
    }
    ctx.frag.expire(ctx.now);
}
