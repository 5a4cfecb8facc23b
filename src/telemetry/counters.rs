//! Per-worker counters. Each worker is the only writer of its own block, so
//! an increment is a relaxed load and store (a plain `mov` on x86), never a
//! locked read-modify-write; readers may see a value one batch old.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::pipeline::DropReason;

#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
    /// For gauges: decrement (wrapping; read with `get_signed`).
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }
    pub fn get_signed(&self) -> i64 {
        self.0.load(Relaxed) as i64
    }
}

/// Services and backends a process can know over its lifetime: their
/// stable ids index the per-worker stats below, preallocated at start.
pub const MAX_SERVICES: usize = 256;
pub const MAX_BACKENDS: usize = 4096;

/// Traffic of one service or backend, as seen by one worker.
#[derive(Default, Debug)]
pub struct FlowStats {
    pub packets: Counter,
    pub bytes: Counter,
    pub new_flows: Counter,
    /// Gauge: flows created minus flows expired.
    pub active_flows: Counter,
}

/// One worker's per-service and per-backend stats, indexed by stable id.
#[derive(Debug)]
pub struct WorkerStats {
    pub services: Box<[FlowStats]>,
    pub backends: Box<[FlowStats]>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            services: (0..MAX_SERVICES).map(|_| FlowStats::default()).collect(),
            backends: (0..MAX_BACKENDS).map(|_| FlowStats::default()).collect(),
        }
    }
}

impl WorkerStats {
    #[inline]
    pub fn packet(&self, service: u16, backend: u16, bytes: u32) {
        if let Some(s) = self.services.get(usize::from(service)) {
            s.packets.add(1);
            s.bytes.add(u64::from(bytes));
        }
        if let Some(b) = self.backends.get(usize::from(backend)) {
            b.packets.add(1);
            b.bytes.add(u64::from(bytes));
        }
    }

    #[inline]
    pub fn flow_started(&self, service: u16, backend: u16) {
        for s in [self.services.get(usize::from(service)), self.backends.get(usize::from(backend))]
            .into_iter()
            .flatten()
        {
            s.new_flows.add(1);
            s.active_flows.add(1);
        }
    }

    #[inline]
    pub fn flow_ended(&self, service: u16, backend: u16) {
        for s in [self.services.get(usize::from(service)), self.backends.get(usize::from(backend))]
            .into_iter()
            .flatten()
        {
            s.active_flows.sub(1);
        }
    }
}

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
pub const FILL: [&str; 4] = ["conntrack_entries", "conntrack_capacity", "snat_ports_in_use", "snat_ports"];

/// Publishes how full the worker's conntrack table and SNAT port shares
/// are. Once per batch: a handful of loads and stores.
#[inline]
pub fn publish_fill(c: &WorkerCounters, ctx: &crate::pipeline::Ctx) {
    let (mut used, mut owned) = (0, 0);
    for p in &ctx.snat {
        owned += p.capacity();
        used += p.capacity() - p.available();
    }
    let values = [ctx.conntrack.len(), ctx.conntrack.capacity(), used, owned];
    for (g, v) in c.fill.iter().zip(values) {
        g.0.store(v as u64, Relaxed);
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
