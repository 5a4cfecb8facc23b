//! Per-worker counters. Each worker is the only writer of its own block, so
//! an increment is a relaxed load and store (a plain `mov` on x86), never a
//! locked read-modify-write; readers may see a value one batch old.

pub use crate::pipeline::stats::{Counter, FlowStats, WorkerStats, MAX_BACKENDS, MAX_SERVICES};
use crate::pipeline::DropReason;

/// Cache-line aligned so two workers' counters never share a line.
#[repr(align(64))]
#[derive(Default, Debug)]
pub struct WorkerCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    pub batches: Counter,
    /// Fill ring wanted frames but the pool was empty.
    pub fill_starved: Counter,
    /// The kernel had consumed every frame of a fill ring (it drops until refilled).
    pub fill_ring_empty: Counter,
    /// Syscalls made to kick the kernel (TX sendto, fill-ring poll).
    pub wakeups: Counter,
    /// Empty RX polls that ran the queue's NAPI through recvfrom() (busy polling).
    pub busy_polls: Counter,
    /// Times an idle adaptive worker slept in poll(2).
    pub idle_sleeps: Counter,
    /// Frames handed to the worker owning their flow, and frames served for others.
    pub handoffs_out: Counter,
    pub handoffs_served: Counter,
    pub drops: [Counter; DropReason::COUNT],
    /// Gauges of table fill, written at batch boundaries ([`publish_fill`]).
    pub fill: [Counter; FILL.len()],
}

/// Names of the fill gauges, in `WorkerCounters::fill` order.
/// `conntrack_early_drops` is a running count (unassured flows dropped to
/// make room), published with the fill it explains.
pub const FILL: [&str; 5] =
    ["conntrack_entries", "conntrack_capacity", "snat_ports_in_use", "snat_ports", "conntrack_early_drops"];

/// Publishes how full the worker's conntrack table and SNAT port shares
/// are. Once per batch: a handful of loads and stores.
#[inline]
pub fn publish_fill(c: &WorkerCounters, ctx: &crate::pipeline::Ctx) {
    let (mut used, mut owned) = (0, 0);
    for p in &ctx.snat {
        owned += p.capacity();
        used += p.capacity() - p.available();
    }
    let early = ctx.conntrack.counters().early_drops as usize;
    let values = [ctx.conntrack.len(), ctx.conntrack.capacity(), used, owned, early];
    for (g, v) in c.fill.iter().zip(values) {
        g.set(v as u64);
    }
}

impl WorkerCounters {
    #[inline]
    pub fn dropped(&self, reason: DropReason) {
        self.drops[reason as usize].add(1);
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }

    /// `name value` pairs in a stable order, for summaries and tests.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("rx_packets", self.rx_packets.get()),
            ("rx_bytes", self.rx_bytes.get()),
            ("tx_packets", self.tx_packets.get()),
            ("tx_bytes", self.tx_bytes.get()),
            ("batches", self.batches.get()),
            ("fill_starved", self.fill_starved.get()),
            ("fill_ring_empty", self.fill_ring_empty.get()),
            ("wakeups", self.wakeups.get()),
            ("busy_polls", self.busy_polls.get()),
            ("idle_sleeps", self.idle_sleeps.get()),
            ("handoffs_out", self.handoffs_out.get()),
            ("handoffs_served", self.handoffs_served.get()),
        ];
        for r in DropReason::ALL {
            v.push((r.name(), self.drops[*r as usize].get()));
        }
        v
    }

    /// The fill gauges as `name value` pairs.
    pub fn gauges(&self) -> Vec<(&'static str, u64)> {
        FILL.iter().zip(&self.fill).map(|(n, g)| (*n, g.get())).collect()
    }
}
