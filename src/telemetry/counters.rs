//! Per-worker counters. Each worker is the only writer of its own block, so
//! an increment is a relaxed load and store (a plain `mov` on x86), never a
//! locked read-modify-write; readers may see a value one batch old.

pub use crate::pipeline::stats::{Counter, FlowStats, WorkerStats, MAX_BACKENDS, MAX_SERVICES};
use crate::pipeline::DropReason;

/// Declares [`WorkerCounters`] with its plain counters listed once: the
/// struct fields and their names in [`WorkerCounters::snapshot`] come
/// from the same list.
macro_rules! worker_counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Cache-line aligned so two workers' counters never share a line.
        #[repr(align(64))]
        #[derive(Default, Debug)]
        pub struct WorkerCounters {
            $($(#[$doc])* pub $name: Counter,)*
            pub drops: [Counter; DropReason::COUNT],
            /// Gauges of table fill, written at batch boundaries ([`publish_fill`]).
            pub fill: [Counter; FILL.len()],
        }

        impl WorkerCounters {
            /// The plain counters as `name value` pairs, in declaration order.
            fn plain(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.get()),)*]
            }
        }
    };
}

worker_counters! {
    rx_packets,
    rx_bytes,
    tx_packets,
    tx_bytes,
    batches,
    /// Fill ring wanted frames but the pool was empty.
    fill_starved,
    /// The kernel had consumed every frame of a fill ring (it drops until refilled).
    fill_ring_empty,
    /// Syscalls made to kick the kernel (TX sendto, fill-ring poll).
    wakeups,
    /// Empty RX polls that ran the queue's NAPI through recvfrom() (busy polling).
    busy_polls,
    /// Times an idle adaptive worker slept in poll(2).
    idle_sleeps,
    /// Frames handed to the worker owning their flow, and frames served for others.
    handoffs_out,
    handoffs_served,
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
        let mut v = self.plain();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_every_counter_once_in_a_stable_order() {
        let c = WorkerCounters::default();
        c.tx_bytes.add(7);
        c.dropped(DropReason::ALL[0]);
        let snap = c.snapshot();
        let names: Vec<&str> = snap.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names[..12],
            [
                "rx_packets",
                "rx_bytes",
                "tx_packets",
                "tx_bytes",
                "batches",
                "fill_starved",
                "fill_ring_empty",
                "wakeups",
                "busy_polls",
                "idle_sleeps",
                "handoffs_out",
                "handoffs_served",
            ]
        );
        assert_eq!(names.len(), 12 + DropReason::COUNT);
        assert_eq!(snap[3], ("tx_bytes", 7));
        assert_eq!(snap[12], (DropReason::ALL[0].name(), 1));
    }
}
