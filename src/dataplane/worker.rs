//! The poll-mode worker loop: reclaim completions, refill, receive a batch,
//! classify, run pipelines, transmit. No allocation, lock or syscall per
//! packet; at most one TX kick per port per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xdpilone::xdp::XdpDesc;

use crate::config::{PollMode, MAX_BATCH};
use crate::pipeline::classify::Classifier;
use arc_swap::ArcSwap;

use super::handoff::{Handed, Mesh, Outcome, Returned};
use crate::pipeline::services::Services;
use crate::pipeline::{Batch, Ctx, DropReason, Pipeline, Verdict};
use crate::telemetry::counters::WorkerCounters;
use crate::telemetry::latency::{Hists, Recorder};
use crate::xsk::{BusyPoll, WorkerXsk};

/// Idle loop iterations an adaptive worker spins before it sleeps in poll(2).
const IDLE_SPINS: u32 = 512;
/// Longest an idle adaptive worker sleeps: bounds shutdown latency.
const IDLE_SLEEP_MS: i32 = 10;
/// Copy-mode TX kicks per port per batch: one where the socket's TX budget
/// was raised (Linux 6.17+); 4 × the kernel's default 32 frames cover two
/// full batches where it was not.
const MAX_KICKS: u32 = 4;
/// How long shutdown waits for in-flight TX to complete.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(200);

pub struct Worker {
    pub xsk: WorkerXsk,
    pub pipelines: Vec<Pipeline>,
    pub classifier: Classifier,
    pub counters: Arc<WorkerCounters>,
    pub batch: Batch,
    pub batch_size: u32,
    pub poll: PollMode,
    /// Each port's fill ring is kept at up to this many frames.
    pub fill_target: u32,
    pub ctx: Ctx,
    /// Where the control plane publishes new snapshots.
    pub services: Arc<ArcSwap<Services>>,
    /// This worker's index, and the rings to and from the others.
    pub id: usize,
    pub mesh: Arc<Mesh>,
    /// One batch per source worker for frames handed to us (they live in
    /// that worker's UMEM); built once `mesh.umems` is known.
    pub handed: Vec<Batch>,
    /// Frames of ours coming back from their owners.
    pub returned: Batch,
    /// Worker port index per interface index (u8::MAX = none).
    pub port_of_interface: Vec<u8>,
    /// Latency and batch-size histograms, recycled by the control thread.
    pub recorder: Recorder,
    /// Connection listings (`shunt conn list`), a bounded chunk per batch.
    pub conns: crate::telemetry::conns::Tap,
}

/// Conntrack slots scanned for expiry per batch: amortised, never a sweep.
const EXPIRE_BUDGET: usize = 64;

/// Monotonic nanoseconds (vDSO, no syscall): read twice per batch.
use crate::sys::monotonic_ns as now_ns;

/// Monotonic seconds from the vDSO coarse clock: no syscall, read per batch.
fn now_secs() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC_COARSE is served by the vDSO.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u32
}

impl Worker {
    pub fn run(&mut self, stop: &AtomicBool) {
        if let Some(umems) = self.mesh.umems.get() {
            self.handed = umems.iter().map(|&u| Batch::new(u)).collect();
        }
        let mut idle = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let mut received = 0;
            for port in 0..self.xsk.ports.len() {
                self.xsk.reclaim(port);
                self.refill(port);
                received += self.poll_port(port);
            }
            if self.mesh.workers() > 1 {
                received += self.serve_handoffs();
                received += self.collect_returns();
            }
            self.recorder.rotate();
            // Once per pass, idle or not: an answer to a pending `conn list`
            // round, and the table fill gauges.
            self.conns.serve(&self.ctx.conntrack, now_secs);
            crate::telemetry::counters::publish_fill(&self.counters, &self.ctx);
            if received > 0 {
                idle = 0;
                continue;
            }
            idle = idle.saturating_add(1);
            if idle.is_multiple_of(IDLE_SPINS) {
                // Idle: still pick up new snapshots and age flows, so SNAT
                // ports and gauges of finished flows come back without traffic.
                self.begin_batch();
            }
            if self.poll == PollMode::Adaptive && idle > IDLE_SPINS {
                self.sleep_until_rx();
            } else {
                std::hint::spin_loop();
            }
        }
        self.drain();
    }

    /// What the latency recorder holds at exit.
    pub fn finish(self) -> Box<Hists> {
        self.recorder.finish()
    }

    /// Tops the port's fill ring up from the pool.
    fn refill(&mut self, port: usize) {
        let xsk = &mut self.xsk;
        let p = &mut xsk.ports[port];
        let in_ring = p.fq_cq.pending();
        if in_ring == 0 && p.primed {
            // The kernel used every frame we gave it: it drops until we refill.
            self.counters.fill_ring_empty.add(1);
        }
        let want = self.fill_target.saturating_sub(in_ring);
        if want < MAX_BATCH {
            return;
        }
        let give = want.min(xsk.pool.available() as u32);
        if give == 0 {
            self.counters.fill_starved.add(1);
            return;
        }
        {
            let mut fill = p.fq_cq.fill(give);
            let n = fill.capacity();
            // Exactly `capacity` inserts succeed, so pop exactly that many.
            let inserted = fill.insert((0..n).map_while(|_| xsk.pool.alloc()));
            fill.commit();
            debug_assert_eq!(inserted, n);
            p.primed |= inserted > 0;
        }
        if p.fq_cq.needs_wakeup() {
            p.fq_cq.wake();
            self.counters.wakeups.add(1);
        }
    }

    /// Receives one batch from `port` and processes it; returns its size.
    fn poll_port(&mut self, port: usize) -> u32 {
        self.batch.clear();
        let t0 = now_ns();
        {
            let p = &mut self.xsk.ports[port];
            let mut rx = p.rx.receive(self.batch_size);
            while let Some(desc) = rx.read() {
                self.batch.push(desc.addr, desc.len, port as u8);
            }
            rx.release();
        }
        let n = self.batch.len as u32;
        if n == 0 {
            // Runs the queue's NAPI here, on our core, for up to the busy-poll
            // budget; its frames show up in the RX ring on the next pass.
            let p = &self.xsk.ports[port];
            if p.busy_poll.poll(p.fd()) {
                self.counters.busy_polls.add(1);
            }
            return 0;
        }
        let p = &mut self.xsk.ports[port];
        if let BusyPoll::Probing { .. } = p.busy_poll {
            p.busy_poll.learn_napi(p.fd(), &p.interface, p.queue);
        }
        self.begin_batch();
        let c = &self.counters;
        c.batches.add(1);
        c.rx_packets.add(u64::from(n));
        c.rx_bytes.add(self.batch.metas().iter().map(|m| u64::from(m.len)).sum());

        crate::pipeline::process(&mut self.batch, &self.classifier, &mut self.pipelines, &mut self.ctx);
        self.hand_over();
        let sent = transmit(&mut self.xsk, &self.counters, &mut self.batch);
        self.recorder.latency(now_ns().saturating_sub(t0), u64::from(sent));
        self.recorder.batch(u64::from(n));
        n
    }

    /// Passes packets whose flow another worker owns to that worker.
    fn hand_over(&mut self) {
        if self.mesh.workers() <= 1 {
            return;
        }
        let mut woke = 0u64; // bitmask of owners already woken this batch
        for m in self.batch.pkts[..self.batch.len].iter_mut() {
            if let Verdict::Handoff(to) = m.verdict {
                if self.mesh.hand(self.id, usize::from(to), Handed { addr: m.addr, len: m.len }) {
                    self.counters.handoffs_out.add(1);
                    // In flight: the frame comes back through `collect_returns`.
                    m.verdict = Verdict::Continue;
                    if woke & (1 << (to % 64)) == 0 {
                        woke |= 1 << (to % 64);
                        self.mesh.wake(usize::from(to));
                    }
                } else {
                    m.verdict = Verdict::Drop(DropReason::HandoffFull);
                }
            }
        }
    }

    /// As owner: runs frames other workers handed us through our pipelines
    /// and our tables, in place in their UMEM, and sends back the outcome.
    fn serve_handoffs(&mut self) -> u32 {
        let mut served = 0;
        for from in 0..self.handed.len() {
            let Some(link) = self.mesh.link(from, self.id) else { continue };
            if link.to_owner.is_empty() {
                continue;
            }
            let batch = &mut self.handed[from];
            batch.clear();
            while batch.len < self.batch_size as usize {
                let Some(h) = link.to_owner.pop() else { break };
                batch.push(h.addr, h.len, 0);
            }
            self.ctx.now = now_secs();
            crate::pipeline::process(batch, &self.classifier, &mut self.pipelines, &mut self.ctx);
            for m in batch.metas() {
                let outcome = match m.verdict {
                    Verdict::Forward(p) => match self.xsk.ports.get(usize::from(p)) {
                        Some(port) => Outcome::Transmit(port.interface_idx as u16),
                        None => Outcome::Drop(DropReason::NoRoute),
                    },
                    Verdict::Drop(r) => Outcome::Drop(r),
                    // Owned here by construction; anything else is a bug upstream.
                    Verdict::Handoff(_) | Verdict::Continue => Outcome::Drop(DropReason::NoRoute),
                };
                if let Outcome::Drop(r) = outcome {
                    self.counters.dropped(r);
                }
                // Cannot fail: see Link::back.
                let _ = link.back.push(Returned { addr: m.addr, len: m.len, outcome });
            }
            self.counters.handoffs_served.add(batch.len as u64);
            self.mesh.wake(from);
            served += batch.len as u32;
        }
        served
    }

    /// As source: transmits or frees our frames that owners sent back.
    fn collect_returns(&mut self) -> u32 {
        let mut n = 0;
        for to in 0..self.mesh.workers() {
            let Some(link) = self.mesh.link(self.id, to) else { continue };
            if link.back.is_empty() {
                continue;
            }
            self.returned.clear();
            let t0 = now_ns();
            while self.returned.len < self.batch_size as usize {
                let Some(r) = link.back.pop() else { break };
                match r.outcome {
                    Outcome::Transmit(iface) => {
                        let port = self.port_of_interface.get(usize::from(iface)).copied().unwrap_or(u8::MAX);
                        self.returned.push(r.addr, r.len, port);
                        if let Some(m) = self.returned.pkts.get_mut(self.returned.len - 1) {
                            m.verdict = if port == u8::MAX {
                                Verdict::Drop(DropReason::NoRoute)
                            } else {
                                Verdict::Forward(port)
                            };
                        }
                    }
                    // The owner counted the reason; the frame is ours to free.
                    Outcome::Drop(_) => self.xsk.pool.free(r.addr),
                }
            }
            n += self.returned.len as u32;
            let sent = transmit(&mut self.xsk, &self.counters, &mut self.returned);
            // Handed frames count once, when their source transmits them.
            self.recorder.latency(now_ns().saturating_sub(t0), u64::from(sent));
        }
        n
    }

    /// Batch boundary: the clock, a new snapshot if one was published, and
    /// bounded table housekeeping.
    fn begin_batch(&mut self) {
        self.ctx.now = now_secs();
        let published = self.services.load();
        if published.generation != self.ctx.services.generation {
            self.ctx.install(arc_swap::Guard::into_inner(published));
        }
        crate::pipeline::housekeeping(&mut self.ctx, EXPIRE_BUDGET);
    }

    /// Blocks in poll(2) until a socket has RX or the idle timeout passes.
    fn sleep_until_rx(&mut self) {
        let mut fds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 17];
        let mut n = self.xsk.ports.len().min(fds.len() - 1);
        for (fd, port) in fds.iter_mut().zip(&self.xsk.ports) {
            *fd = libc::pollfd { fd: port.fd(), events: libc::POLLIN, revents: 0 };
        }
        let wake = self.mesh.wake_fd(self.id);
        if self.mesh.workers() > 1 && wake >= 0 {
            fds[n] = libc::pollfd { fd: wake, events: libc::POLLIN, revents: 0 };
            n += 1;
        }
        if self.mesh.set_sleeping(self.id, true) {
            self.counters.idle_sleeps.add(1);
            // SAFETY: `fds[..n]` are initialised pollfd structs owned by this frame.
            unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, IDLE_SLEEP_MS) };
        }
        self.mesh.set_sleeping(self.id, false);
    }

    /// Finishes in-flight work: processes what is already received and waits
    /// briefly for TX completions so every frame is accounted for.
    fn drain(&mut self) {
        for port in 0..self.xsk.ports.len() {
            self.poll_port(port);
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while Instant::now() < deadline && self.xsk.ports.iter().any(|p| p.tx_outstanding > 0) {
            for port in 0..self.xsk.ports.len() {
                let p = &mut self.xsk.ports[port];
                if p.tx_outstanding > 0 {
                    p.tx.wake();
                }
                self.xsk.reclaim(port);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Puts forwarded packets on their egress TX rings and frees dropped ones.
/// Packets still `Continue` are in flight elsewhere (handed over).
/// Returns how many frames went to TX rings.
fn transmit(xsk: &mut WorkerXsk, c: &WorkerCounters, batch: &mut Batch) -> u32 {
    let mut total = 0;
    for egress in 0..xsk.ports.len() {
        let wanted =
            batch.metas().iter().filter(|m| m.verdict == Verdict::Forward(egress as u8)).count() as u32;
        if wanted == 0 {
            continue;
        }
        let p = &mut xsk.ports[egress];
        let mut sent = 0u32;
        let mut bytes = 0u64;
        let mut next = 0usize;
        // xdpilone serves a reservation from its cached view of the
        // consumer and refreshes only when that is empty, so a short
        // reservation is retried once before the ring counts as full.
        for _ in 0..2 {
            if sent == wanted {
                break;
            }
            let mut tx = p.tx.transmit(wanted - sent);
            let room = tx.capacity();
            let mut put = 0;
            while put < room && next < batch.len {
                let m = &batch.pkts[next];
                next += 1;
                if m.verdict == Verdict::Forward(egress as u8) {
                    tx.insert_once(XdpDesc { addr: m.addr, len: m.len, options: 0 });
                    put += 1;
                    bytes += u64::from(m.len);
                }
            }
            tx.commit();
            sent += put;
        }
        for m in batch.pkts[next..batch.len].iter_mut() {
            if m.verdict == Verdict::Forward(egress as u8) {
                m.verdict = Verdict::Drop(DropReason::TxRingFull);
            }
        }
        p.tx_outstanding += sent;
        total += sent;
        c.tx_packets.add(u64::from(sent));
        c.tx_bytes.add(bytes);
        if p.zero_copy {
            // Zero-copy drivers say when they need a kick.
            if p.tx.needs_wakeup() {
                p.tx.wake();
                c.wakeups.add(1);
            }
        } else {
            // Copy mode sends only inside sendto(), at most `tx_budget`
            // frames per call: kick until the ring is consumed.
            for _ in 0..MAX_KICKS {
                if p.tx.pending() == 0 {
                    break;
                }
                p.tx.wake();
                c.wakeups.add(1);
            }
        }
    }
    for m in batch.metas() {
        if let Verdict::Drop(reason) = m.verdict {
            c.dropped(reason);
            xsk.pool.free(m.addr);
        }
    }
    total
}
