//! Copying connection-table entries out of running workers for `shunt conn
//! list`, without stalling them. The housekeeping thread hands a worker a
//! preallocated chunk and a slot cursor; at its next batch boundary the
//! worker copies at most [`CHUNK`] live entries from at most [`SCAN`]
//! slots into it and hands it back (no allocation, no lock, no syscall:
//! two bounded-channel operations). A full listing is many such rounds, so
//! a worker never spends more than one short scan at a time on it.

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use crate::pipeline::conntrack::{ConnTable, Entry, Tick};

/// Entries copied per round.
pub const CHUNK: usize = 256;
/// Slots looked at per round (a sparse table yields fewer entries).
pub const SCAN: usize = 8192;

/// One round's request and answer.
pub struct Chunk {
    /// Slot to start at; on return, the slot to resume from.
    pub cursor: usize,
    /// Slots in the worker's table (the listing is done at `cursor == slots`).
    pub slots: usize,
    /// The worker's clock when it copied.
    pub now: Tick,
    pub entries: Vec<Entry>,
}

impl Chunk {
    fn new() -> Box<Chunk> {
        Box::new(Chunk { cursor: 0, slots: 0, now: 0, entries: Vec::with_capacity(CHUNK) })
    }
}

/// The worker's side.
pub struct Tap {
    requests: Receiver<Box<Chunk>>,
    replies: Sender<Box<Chunk>>,
}

impl Tap {
    /// At a batch boundary: answers a pending request, if any, reading the
    /// clock (`now`) only then.
    #[inline]
    pub fn serve(&self, table: &ConnTable, now: impl FnOnce() -> Tick) {
        let Ok(mut chunk) = self.requests.try_recv() else { return };
        let now = now();
        chunk.entries.clear();
        chunk.now = now;
        chunk.slots = table.capacity();
        let entries = &mut chunk.entries;
        chunk.cursor = table.visit_live(chunk.cursor, SCAN, now, |e| {
            entries.push(*e);
            entries.len() < CHUNK
        });
        // Bounded(1) and only one chunk in flight: cannot be full.
        let _ = self.replies.try_send(chunk);
    }
}

/// The housekeeping thread's side, one per worker.
pub struct Dumper {
    requests: Sender<Box<Chunk>>,
    replies: Receiver<Box<Chunk>>,
    spare: Option<Box<Chunk>>,
}

/// Why a worker's entries could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("a listing is already in progress")]
    Busy,
    #[error("worker did not answer (stuck or stopped?)")]
    NoAnswer,
    #[error("worker has exited")]
    Exited,
}

pub fn pair() -> (Tap, Dumper) {
    let (req_tx, req_rx) = bounded(1);
    let (rep_tx, rep_rx) = bounded(1);
    (
        Tap { requests: req_rx, replies: rep_tx },
        Dumper { requests: req_tx, replies: rep_rx, spare: Some(Chunk::new()) },
    )
}

impl Dumper {
    /// Visits the worker's live entries, round by round, until `f` returns
    /// false or the table ends. Fails if the worker does not answer within
    /// `timeout` (a stopped or stuck worker).
    pub fn visit(
        &mut self,
        timeout: std::time::Duration,
        mut f: impl FnMut(&Entry, Tick) -> bool,
    ) -> Result<(), DumpError> {
        // A chunk a timed-out earlier listing left with the worker.
        if let Ok(c) = self.replies.try_recv() {
            self.spare = Some(c);
        }
        let mut chunk = self.spare.take().unwrap_or_else(Chunk::new);
        chunk.cursor = 0;
        loop {
            if self.requests.try_send(chunk).is_err() {
                return Err(DumpError::Busy);
            }
            chunk = match self.replies.recv_timeout(timeout) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => return Err(DumpError::NoAnswer),
                Err(RecvTimeoutError::Disconnected) => return Err(DumpError::Exited),
            };
            let more = chunk.entries.iter().all(|e| f(e, chunk.now));
            let done = !more || chunk.cursor >= chunk.slots;
            if done {
                self.spare = Some(chunk);
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::conntrack::{FlowKey, FlowValue, FullPolicy, Timeouts};
    use crate::pipeline::flow::BackendId;

    #[test]
    fn listing_in_rounds_sees_every_live_entry_once() {
        let mut t = ConnTable::new(1 << 15, Timeouts::default(), FullPolicy::Drop);
        let n = 3000u16;
        for i in 0..n {
            let k = FlowKey::new([1; 16], [2; 16], i, 80, 6);
            t.insert(k, k.hash(), FlowValue { backend: BackendId::new(i % 7), ..Default::default() }, 1)
                .unwrap();
        }
        let (tap, mut dumper) = pair();
        let worker = std::thread::spawn(move || {
            // The worker's loop: serve at every "batch boundary".
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                tap.serve(&t, || 2);
                std::thread::yield_now();
            }
        });
        let mut seen = std::collections::HashSet::new();
        dumper
            .visit(std::time::Duration::from_secs(2), |e, now| {
                assert_eq!(now, 2);
                assert!(seen.insert(e.key().sport), "entry seen twice");
                true
            })
            .unwrap();
        assert_eq!(seen.len(), usize::from(n));
        // Stopping early stops the rounds.
        let mut taken = 0;
        dumper
            .visit(std::time::Duration::from_secs(2), |_, _| {
                taken += 1;
                taken < 10
            })
            .unwrap();
        assert_eq!(taken, 10);
        drop(dumper);
        worker.join().unwrap();
    }
}
