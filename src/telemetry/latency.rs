//! Per-worker latency and batch-size histograms, recycled so the fast path
//! never allocates: each worker owns one pair, the control thread holds a
//! spare; they swap over bounded channels, and the control thread merges
//! full ones into running totals off the fast path.

use crossbeam_channel::{bounded, Receiver, Sender};
use hdrhistogram::Histogram;

use super::report::{LATENCY_MAX_NS, SIGFIG};

/// One worker's two histograms (or their sums).
#[derive(Debug, Clone)]
pub struct Hists {
    /// RX → TX-submit time per packet, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Packets per non-empty RX batch.
    pub batch: Histogram<u64>,
}

impl Hists {
    /// Empty histograms with the workers' standard bounds: latency 1 ns up
    /// to [`LATENCY_MAX_NS`] (longer values saturate), batch 1..=1024, both
    /// with [`SIGFIG`] significant digits.
    pub fn new() -> Hists {
        let hist =
            |max| Histogram::new_with_bounds(1, max, SIGFIG).expect("static histogram bounds are valid");
        // Fixed bounds: auto-resize would allocate on the fast path.
        Hists { latency: hist(LATENCY_MAX_NS), batch: hist(1024) }
    }

    fn reset(&mut self) {
        self.latency.reset();
        self.batch.reset();
    }

    /// Adds `other` into `self`. Bounds are identical, so this cannot fail.
    pub fn add(&mut self, other: &Hists) {
        let _ = self.latency.add(&other.latency);
        let _ = self.batch.add(&other.batch);
    }
}

impl Default for Hists {
    fn default() -> Self {
        Hists::new()
    }
}

/// The worker's side.
pub struct Recorder {
    current: Box<Hists>,
    fresh: Receiver<Box<Hists>>,
    full: Sender<Box<Hists>>,
}

impl Recorder {
    /// `packets` packets that spent `ns` between RX and TX submission.
    #[inline]
    pub fn latency(&mut self, ns: u64, packets: u64) {
        if packets > 0 {
            self.current.latency.saturating_record_n(ns.max(1), packets);
        }
    }

    #[inline]
    pub fn batch(&mut self, size: u64) {
        self.current.batch.saturating_record(size.max(1));
    }

    /// At a batch boundary (or idle): if the control thread offers an empty
    /// pair, take it and hand the full one over. A channel op, no syscall.
    #[inline]
    pub fn rotate(&mut self) {
        if let Ok(fresh) = self.fresh.try_recv() {
            let full = std::mem::replace(&mut self.current, fresh);
            if let Err(e) = self.full.try_send(full) {
                // Cannot happen (two pairs circulate, channels hold two);
                // keep the samples rather than lose them.
                let full = e.into_inner();
                self.current.add(&full);
            }
        }
    }

    /// What the worker recorded since its last rotation (at shutdown).
    pub fn finish(self) -> Box<Hists> {
        self.current
    }
}

/// The control thread's side, one per worker.
pub struct Collector {
    fresh: Sender<Box<Hists>>,
    full: Receiver<Box<Hists>>,
    pub total: Hists,
    /// Pairs handed over so far: the worker's heartbeat.
    pub handovers: u64,
}

/// A recorder for a worker and the collector that drains it.
pub fn pair() -> (Recorder, Collector) {
    let (fresh_tx, fresh_rx) = bounded(2);
    let (full_tx, full_rx) = bounded(2);
    let _ = fresh_tx.try_send(Box::new(Hists::new()));
    (
        Recorder { current: Box::new(Hists::new()), fresh: fresh_rx, full: full_tx },
        Collector { fresh: fresh_tx, full: full_rx, total: Hists::new(), handovers: 0 },
    )
}

impl Collector {
    /// Merges whatever the worker handed over and offers the pair back.
    pub fn collect(&mut self) {
        while let Ok(mut h) = self.full.try_recv() {
            self.total.add(&h);
            self.handovers += 1;
            h.reset();
            let _ = self.fresh.try_send(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_loses_no_sample_and_recycles() {
        let (mut rec, mut col) = pair();
        let mut sent = 0;
        for round in 0..100u64 {
            for i in 0..37 {
                rec.latency(1000 + i, 3);
                rec.batch(3);
                sent += 3;
            }
            rec.rotate();
            if round % 3 == 0 {
                col.collect();
            }
        }
        col.collect();
        let rest = rec.finish();
        col.total.add(&rest);
        assert_eq!(col.total.latency.len(), sent);
        assert_eq!(col.total.batch.len(), sent / 3);
    }
}
