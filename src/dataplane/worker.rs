//! The poll-mode worker loop: reclaim completions, refill, receive a batch,
//! classify, run pipelines, transmit. No allocation, lock or syscall per
//! packet; at most one TX kick per port per batch.
//!
//! The loop is generic over [`PortIo`]: AF_XDP sockets in production, the
//! in-memory rings of `xsk::fake` in this module's tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{PollMode, MAX_BATCH};
use crate::pipeline::classify::Classifier;
use arc_swap::ArcSwap;

use super::handoff::{Chain, Handed, Mesh, Outcome, Parked, Returned};
use crate::pipeline::mtu::{frame_limit, LinkMtus};
use crate::pipeline::services::Services;
use crate::pipeline::{Batch, Ctx, DropReason, FlowKind, Pipeline, PushError, Verdict};
use crate::telemetry::counters::{WorkerCounters, WorkerStats};
use crate::telemetry::latency::{Hists, Recorder};
use crate::xsk::{Frame, Port, PortIo, TxNext, WorkerXsk};

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

pub struct Worker<P: PortIo = Port> {
    pub xsk: WorkerXsk<P>,
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
    /// Per peer: frames we handed it that have not come back yet.
    pub in_flight: Vec<u32>,
    /// Worker port index per interface index (u8::MAX = none).
    pub port_of_interface: Vec<u8>,
    /// Latency and batch-size histograms, recycled by the control thread.
    pub recorder: Recorder,
    /// Connection listings (`shunt conn list`), a bounded chunk per batch.
    pub conns: crate::telemetry::conns::Tap,
    /// Every interface's MTU: frames longer than their egress allows are
    /// dropped and counted here rather than lost silently on the wire.
    pub mtus: Arc<LinkMtus>,
    /// Later buffers of chained frames handed to other workers.
    pub parked: Parked,
    /// Per port: an RX poll ended inside a chain, which was dropped; its
    /// remaining buffers are freed as they arrive.
    pub rx_skip: Vec<bool>,
}

/// Where a replayed fragment starts in its frame (the kernel's XDP headroom).
const REPLAY_HEADROOM: u64 = 256;

/// Monotonic nanoseconds (vDSO, no syscall): read twice per batch.
use crate::sys::monotonic_ns as now_ns;

/// Monotonic seconds from the vDSO coarse clock: no syscall, read per batch.
fn now_secs() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC_COARSE is served by the vDSO.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u32
}

impl Worker<Port> {
    /// Closes the sockets side by side ([`WorkerXsk::close_sockets`]).
    pub fn close_sockets(&mut self) {
        self.xsk.close_sockets();
    }
}

impl<P: PortIo> Worker<P> {
    pub fn run(&mut self, stop: &AtomicBool) {
        self.join_mesh();
        let mut idle = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let received = self.step();
            if received > 0 {
                idle = 0;
                continue;
            }
            idle = idle.saturating_add(1);
            let sleeping = self.poll == PollMode::Adaptive && idle > IDLE_SPINS;
            if sleeping || idle.is_multiple_of(IDLE_SPINS) {
                // Idle: still pick up new snapshots and age flows, so SNAT
                // ports and gauges of finished flows come back without
                // traffic. Asleep, that is once per wake-up (at most every
                // IDLE_SLEEP_MS), as often as the conntrack sweep needs.
                self.begin_batch();
            }
            if sleeping {
                self.sleep_until_rx();
            } else {
                std::hint::spin_loop();
            }
        }
        self.drain();
    }

    /// Builds one batch per peer UMEM, once the mesh knows them all.
    fn join_mesh(&mut self) {
        if let Some(umems) = self.mesh.umems.get() {
            self.handed = umems.iter().map(|u| Batch::new(u.view)).collect();
        }
        self.in_flight = vec![0; self.mesh.workers()];
        let peers = self.mesh.workers().saturating_sub(1);
        self.parked = Parked::new(peers * super::handoff::IN_FLIGHT);
        self.rx_skip = vec![false; self.xsk.ports.len()];
    }

    /// One pass over every port and the handoff rings; how many packets
    /// it received (from ports and peers).
    fn step(&mut self) -> u32 {
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
        received
    }

    /// After the loop: keeps serving peers and collecting our own frames
    /// until no worker hands any more and nothing is in flight, so every
    /// handed frame is answered and sent or freed. Peers that died are not
    /// waited for (`handoff::Membership`).
    pub fn settle_handoffs(&mut self) {
        self.mesh.stop_handing(self.id);
        if self.mesh.workers() <= 1 {
            return;
        }
        loop {
            let all_stopped = self.mesh.all_stopped();
            let moved = self.serve_handoffs() + self.collect_returns();
            for port in 0..self.xsk.ports.len() {
                self.xsk.reclaim(port);
            }
            let answered =
                self.in_flight.iter().enumerate().all(|(peer, &n)| n == 0 || self.mesh.is_gone(peer));
            if all_stopped && moved == 0 && answered && self.mesh.inbound_empty(self.id) {
                return;
            }
            if moved == 0 {
                std::thread::yield_now();
            }
        }
    }

    /// What the latency recorder holds at exit.
    pub fn finish(self) -> Box<Hists> {
        self.recorder.finish()
    }

    /// Tops the port's fill ring up from the pool.
    fn refill(&mut self, port: usize) {
        let xsk = &mut self.xsk;
        let p = &mut xsk.ports[port];
        let in_ring = p.fill_pending();
        if in_ring == 0 && *p.primed() {
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
        let pool = &mut xsk.pool;
        let inserted = p.fill(give, || pool.alloc());
        *p.primed() |= inserted > 0;
        if p.kick_fill() {
            self.counters.wakeups.add(1);
        }
    }

    /// Receives one batch from `port` and processes it; returns its size.
    fn poll_port(&mut self, port: usize) -> u32 {
        self.batch.clear();
        let t0 = now_ns();
        let (batch, pool, counters) = (&mut self.batch, &mut self.xsk.pool, &self.counters);
        let p = &mut self.xsk.ports[port];
        let skip = match self.rx_skip.get_mut(port) {
            Some(s) => s,
            None => return 0,
        };
        // A frame of several buffers arrives as a chain of descriptors:
        // the first is the packet, the rest its tail.
        let mut in_chain = false;
        p.receive(self.batch_size, |frame, len, more| {
            let addr = frame.into_desc();
            if *skip {
                // The rest of a chain already dropped.
                pool.free(Frame::from_desc(addr));
                *skip = more;
                return;
            }
            if in_chain {
                if !batch.push_tail(addr, len) {
                    // Too many buffers: the packet is dropped (chain_too_long).
                    pool.free(Frame::from_desc(addr));
                }
            } else if let Err(e) = batch.push(addr, len, port as u8) {
                // Full: unreachable while batch_size <= MAX_BATCH; never lose
                // the frame. Outside UMEM: a descriptor no kernel gives.
                if e == PushError::OutsideUmem {
                    counters.dropped(DropReason::Malformed);
                }
                pool.free(Frame::from_desc(addr));
                *skip = more;
                return;
            }
            in_chain = more;
        });
        if in_chain {
            // The ring ended inside a chain: drop what came, skip the rest.
            if let Some(m) = batch.len().checked_sub(1).and_then(|i| batch.pkts.get_mut(i)) {
                m.verdict = Verdict::Drop(DropReason::ChainTooLong);
            }
            *skip = true;
        }
        let n = self.batch.len() as u32;
        if n == 0 {
            // Runs the queue's NAPI here, on our core, for up to the busy-poll
            // budget; its frames show up in the RX ring on the next pass.
            if p.busy_poll() {
                self.counters.busy_polls.add(1);
            }
            return 0;
        }
        p.received();
        // Frames stages may emit into (SIIT fragments); a no-op without a target.
        let pool = &mut self.xsk.pool;
        self.batch.top_up_spares(|| pool.alloc().map(Frame::into_desc));
        self.begin_batch();
        let c = &self.counters;
        c.batches.add(1);
        c.rx_packets.add(u64::from(n));
        c.rx_bytes.add((0..self.batch.len()).map(|i| u64::from(self.batch.total_len(i))).sum());

        crate::pipeline::process(&mut self.batch, &self.classifier, &mut self.pipelines, &mut self.ctx);
        self.hand_over();
        let sent = transmit(&mut self.xsk, &self.counters, &self.ctx.stats, &mut self.batch, &self.mtus);
        self.recorder.latency(now_ns().saturating_sub(t0), u64::from(sent));
        self.recorder.batch(u64::from(n));
        self.replay_held();
        n
    }

    /// Fragments held until their first fragment came, copied back into
    /// frames of ours and run through the pipelines like received ones.
    fn replay_held(&mut self) {
        while self.ctx.frag.has_ready() {
            let pool = &mut self.xsk.pool;
            let alloc = || pool.alloc().map(|f| f.into_desc() + REPLAY_HEADROOM);
            if crate::pipeline::frag::reinject(&mut self.ctx, &mut self.batch, alloc) == 0 {
                // No free frame now: they wait for the next pass (or time out).
                return;
            }
            crate::pipeline::process(&mut self.batch, &self.classifier, &mut self.pipelines, &mut self.ctx);
            self.hand_over();
            transmit(&mut self.xsk, &self.counters, &self.ctx.stats, &mut self.batch, &self.mtus);
        }
    }

    /// Passes packets whose flow another worker owns to that worker.
    fn hand_over(&mut self) {
        if self.mesh.workers() <= 1 {
            return;
        }
        let mut woke = 0u64; // bitmask of owners already woken this batch
        for i in 0..self.batch.len() {
            let Verdict::Handoff(to) = self.batch.pkts[i].verdict else { continue };
            // Only the first buffer travels; a chain's later ones wait here.
            let more = self.batch.more[i];
            let chain = if more == 0 {
                Chain::NONE
            } else {
                match self.parked.park(self.batch.tail(i)) {
                    Some(slot) => Chain { more, slot },
                    None => {
                        self.batch.pkts[i].verdict = Verdict::Drop(DropReason::HandoffFull);
                        continue;
                    }
                }
            };
            let m = &mut self.batch.pkts[i];
            let ingress =
                self.xsk.ports.get(usize::from(m.ingress)).map_or(u16::MAX, |p| p.interface_idx() as u16);
            let handed = Handed { frame: Frame::from_desc(m.addr()), len: m.len(), chain, ingress };
            match self.mesh.hand(self.id, usize::from(to), handed) {
                Ok(()) => {
                    self.counters.handoffs_out.add(1);
                    if let Some(n) = self.in_flight.get_mut(usize::from(to)) {
                        *n += 1;
                    }
                    // In flight: the frame comes back through `collect_returns`.
                    m.verdict = Verdict::Continue;
                    self.batch.release_tail(i);
                    if woke & (1 << (to % 64)) == 0 {
                        woke |= 1 << (to % 64);
                        self.mesh.wake(usize::from(to));
                    }
                }
                Err(refused) => {
                    // Back in its batch slot, to be freed with the drops (its
                    // tail too: the batch still holds it).
                    // The same frame as the slot's descriptor: consumed
                    // back into it.
                    let back = refused.frame.into_desc();
                    debug_assert_eq!(back, m.addr());
                    m.verdict = Verdict::Drop(DropReason::HandoffFull);
                    if refused.chain.more > 0 {
                        let _ = self.parked.take(refused.chain.slot);
                    }
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
            let mut chains = [Chain::NONE; MAX_BATCH as usize];
            let mut ingresses = [u16::MAX; MAX_BATCH as usize];
            while batch.len() < (self.batch_size as usize).min(MAX_BATCH as usize) {
                let Some(h) = link.to_owner.pop() else { break };
                chains[batch.len()] = h.chain;
                ingresses[batch.len()] = h.ingress;
                // Its later buffers stay with the source: stages see the length.
                let addr = h.frame.into_desc();
                let handed = crate::pipeline::lb::INGRESS_HANDED;
                if batch.push_foreign(addr, h.len, handed, h.chain.more).is_err() {
                    // Not in this UMEM (the source checked it in its own):
                    // back to the source, dropped.
                    self.counters.dropped(DropReason::Malformed);
                    let outcome = Outcome::Drop(DropReason::Malformed);
                    let (frame, len, chain, ingress) = (Frame::from_desc(addr), h.len, h.chain, h.ingress);
                    let back = link.back.push(Returned { frame, len, outcome, chain, ingress });
                    debug_assert!(back.is_ok(), "handoff back ring overflowed");
                }
            }
            self.ctx.now = now_secs();
            crate::pipeline::process(batch, &self.classifier, &mut self.pipelines, &mut self.ctx);
            for (i, m) in batch.metas().iter().enumerate() {
                let ingress = ingresses[i];
                let outcome = match m.verdict {
                    // An error built in the packet's place (l2 sends it out
                    // its ingress port, which only the source knows).
                    Verdict::Forward(crate::pipeline::lb::INGRESS_HANDED) if ingress != u16::MAX => {
                        Outcome::Transmit(ingress)
                    }
                    Verdict::Forward(p) => match self.xsk.ports.get(usize::from(p)) {
                        Some(port) => Outcome::Transmit(port.interface_idx() as u16),
                        None => Outcome::Drop(DropReason::NoRoute),
                    },
                    Verdict::Drop(r) => Outcome::Drop(r),
                    Verdict::Consumed => Outcome::Consumed,
                    // Not found here either: the source passes it on.
                    Verdict::Handoff(to) => Outcome::Pass(u16::from(to)),
                    // Owned here by construction; anything else is a bug upstream.
                    Verdict::Continue => Outcome::Drop(DropReason::NoRoute),
                };
                if let Outcome::Drop(r) = outcome {
                    self.counters.dropped(r);
                }
                // Cannot fail: see Link::back.
                let chain = Chain { more: batch.more[i], ..chains[i] };
                let back = link.back.push(Returned {
                    frame: Frame::from_desc(m.addr()),
                    len: m.len(),
                    outcome,
                    chain,
                    ingress,
                });
                debug_assert!(back.is_ok(), "handoff back ring overflowed");
            }
            self.counters.handoffs_served.add(batch.len() as u64);
            self.mesh.wake(from);
            served += batch.len() as u32;
        }
        if served > 0 {
            self.replay_held();
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
            while self.returned.len() < (self.batch_size as usize).min(MAX_BATCH as usize) {
                let Some(r) = link.back.pop() else { break };
                if let Some(n) = self.in_flight.get_mut(to) {
                    *n = n.saturating_sub(1);
                }
                let tail =
                    if r.chain.slot == Chain::NONE.slot { &[][..] } else { self.parked.take(r.chain.slot) };
                match r.outcome {
                    Outcome::Transmit(iface) => {
                        let port = self.port_of_interface.get(usize::from(iface)).copied().unwrap_or(u8::MAX);
                        let addr = r.frame.into_desc();
                        if self.returned.push(addr, r.len, port).is_err() {
                            // Our own frame, checked when it came in: never.
                            self.counters.dropped(DropReason::Malformed);
                            for &(a, _) in tail.iter().chain([&(addr, 0)]) {
                                self.xsk.pool.free(Frame::from_desc(a));
                            }
                            continue;
                        }
                        let i = self.returned.len() - 1;
                        // The tail rejoins its packet; one the owner replaced
                        // (more = 0) is freed with the batch.
                        self.returned.attach_tail(i, tail, r.chain.more);
                        if let Some(m) = self.returned.pkts.get_mut(i) {
                            m.verdict = if port == u8::MAX {
                                Verdict::Drop(DropReason::NoRoute)
                            } else {
                                Verdict::Forward(port)
                            };
                        }
                    }
                    // The owner counted the reason; the frame is ours to free.
                    Outcome::Drop(_) | Outcome::Consumed => {
                        for &(addr, _) in tail {
                            self.xsk.pool.free(Frame::from_desc(addr));
                        }
                        self.xsk.pool.free(r.frame)
                    }
                    // Only ICMP errors go round, and chains never carry ICMP.
                    Outcome::Pass(_) if !tail.is_empty() => {
                        for &(addr, _) in tail {
                            self.xsk.pool.free(Frame::from_desc(addr));
                        }
                        self.counters.dropped(DropReason::ChainUnsupported);
                        self.xsk.pool.free(r.frame)
                    }
                    Outcome::Pass(next) => {
                        let h = Handed { frame: r.frame, len: r.len, chain: Chain::NONE, ingress: r.ingress };
                        match pass_on(&self.mesh, self.id, to, usize::from(next), h) {
                            Ok(()) => {
                                self.counters.handoffs_out.add(1);
                                if let Some(c) = self.in_flight.get_mut(usize::from(next)) {
                                    *c += 1;
                                }
                            }
                            Err((reason, h)) => {
                                self.counters.dropped(reason);
                                self.xsk.pool.free(h.frame);
                            }
                        }
                    }
                }
            }
            n += self.returned.len() as u32;
            let sent =
                transmit(&mut self.xsk, &self.counters, &self.ctx.stats, &mut self.returned, &self.mtus);
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
        crate::pipeline::housekeeping(&mut self.ctx, crate::pipeline::EXPIRE_MIN);
        let frag = self.ctx.frag.take_counts();
        self.counters.drops[DropReason::FragmentTimeout as usize].add(frag.held_expired);
        self.counters.drops[DropReason::FragmentBogus as usize].add(frag.held_overlap);
    }

    /// Blocks in poll(2) until a socket has RX or the idle timeout passes.
    fn sleep_until_rx(&mut self) {
        let mut fds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; 17];
        let mut n = self.xsk.ports.len().min(fds.len() - 1);
        for (fd, port) in fds.iter_mut().zip(&self.xsk.ports) {
            // A port without a socket (fd -1) is ignored by poll(2).
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
        while Instant::now() < deadline && self.xsk.ports.iter_mut().any(|p| *p.tx_outstanding() > 0) {
            for port in 0..self.xsk.ports.len() {
                let p = &mut self.xsk.ports[port];
                if *p.tx_outstanding() > 0 {
                    p.wake_tx();
                }
                self.xsk.reclaim(port);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Puts forwarded packets on their egress TX rings and frees dropped ones.
/// Packets still `Continue` are in flight elsewhere (handed over).
/// Returns how many packets went to TX rings. Packets toward a backend that
/// fail here are counted against it too (`tx_failed`). A chained frame goes
/// on the ring whole (all its buffers) or not at all; every tail buffer the
/// batch still holds afterwards (its packet dropped or replaced) is freed.
fn transmit<P: PortIo>(
    xsk: &mut WorkerXsk<P>,
    c: &WorkerCounters,
    stats: &WorkerStats,
    batch: &mut Batch,
    mtus: &LinkMtus,
) -> u32 {
    let mut total = 0;
    for egress in 0..xsk.ports.len() {
        let forward = Verdict::Forward(egress as u8);
        let iface = xsk.ports[egress].interface_idx();
        let mtu = mtus.get(iface);
        // A link without carrier drops in the kernel, where no counter of
        // ours sees it: drop here, counted.
        let up = mtus.is_up(iface);
        let mut wanted = 0u32;
        for i in 0..batch.len() {
            if batch.pkts[i].verdict != forward {
                continue;
            }
            if !up {
                batch.pkts[i].verdict = Verdict::Drop(DropReason::LinkDown);
                continue;
            }
            // Stages answer oversize packets they own with ICMP errors; what
            // still exceeds the egress MTU here would be lost on the wire.
            let head = batch.packet(i).map_or(&[][..], |f| f.get(..14).unwrap_or(f));
            let tail = batch.tail(i).len() as u32;
            if batch.total_len(i) > frame_limit(mtu, head) {
                batch.pkts[i].verdict = Verdict::Drop(DropReason::FrameTooLarge);
            } else if batch.more[i] > 0 && tail == 0 {
                // A chain whose later buffers this worker does not hold.
                batch.pkts[i].verdict = Verdict::Drop(DropReason::ChainUnsupported);
            } else {
                wanted += 1 + if batch.more[i] > 0 { tail } else { 0 };
            }
        }
        if wanted == 0 {
            continue;
        }
        let p = &mut xsk.ports[egress];
        let mut bytes = 0u64;
        let mut packets = 0u32;
        let mut next = 0usize;
        let b = &*batch;
        // The ring offers its free slots: a packet is taken only when all
        // its buffers fit, and `next` stops just past the last one placed.
        let descs = p.transmit(wanted, |room| {
            while let Some(m) = b.pkts[..b.len()].get(next) {
                if m.verdict != forward {
                    next += 1;
                    continue;
                }
                let tail = if b.more[next] > 0 { b.tail(next) } else { &[] };
                if 1 + tail.len() as u32 > room {
                    return TxNext::NoRoom;
                }
                bytes += u64::from(b.total_len(next));
                packets += 1;
                next += 1;
                return TxNext::Packet(Frame::from_desc(m.addr()), m.len(), tail);
            }
            TxNext::Done
        });
        for i in 0..batch.len() {
            if batch.pkts[i].verdict != forward {
                continue;
            }
            if i < next {
                // On the ring: its tail went with it.
                if batch.more[i] > 0 {
                    batch.release_tail(i);
                }
            } else {
                batch.pkts[i].verdict = Verdict::Drop(DropReason::TxRingFull);
            }
        }
        *p.tx_outstanding() += descs;
        total += packets;
        c.tx_packets.add(u64::from(packets));
        c.tx_bytes.add(bytes);
        if p.zero_copy() {
            // Zero-copy drivers say when they need a kick.
            if p.tx_needs_wakeup() {
                p.wake_tx();
                c.wakeups.add(1);
            }
        } else {
            // Copy mode sends only inside sendto(), at most `tx_budget`
            // frames per call: kick until the ring is consumed.
            for _ in 0..MAX_KICKS {
                if p.tx_pending() == 0 {
                    break;
                }
                p.wake_tx();
                c.wakeups.add(1);
            }
        }
    }
    for (m, f) in batch.metas().iter().zip(&batch.flows) {
        // A refused flow's first answer counts the refusal, sent or not.
        if f.kind == FlowKind::Refused {
            c.dropped(DropReason::SnatExhausted);
        }
        match m.verdict {
            Verdict::Drop(reason) => {
                c.dropped(reason);
                xsk.pool.free(Frame::from_desc(m.addr()));
                let egress_failed = matches!(
                    reason,
                    DropReason::TxRingFull | DropReason::FrameTooLarge | DropReason::LinkDown
                );
                if egress_failed && f.kind == FlowKind::Original {
                    stats.tx_failed(f.service, f.backend);
                }
            }
            Verdict::Consumed => xsk.pool.free(Frame::from_desc(m.addr())),
            _ => {}
        }
    }
    let pool = &mut xsk.pool;
    batch.free_tails(|addr| pool.free(Frame::from_desc(addr)));
    total
}

/// Worker `id`, source of a frame that worker `from` did not claim, hands
/// it on to worker `next`. Each hop must move it further round the workers
/// from its source (`from` before `next` in that order), so its journey
/// ends after at most one visit to each; back at its start, or with the
/// link full, it is refused with the reason to count.
fn pass_on(mesh: &Mesh, id: usize, from: usize, next: usize, h: Handed) -> Result<(), (DropReason, Handed)> {
    let n = mesh.workers();
    let ahead = |w: usize| (w + n - id) % n;
    if next >= n || next == id || ahead(next) <= ahead(from) {
        return Err((DropReason::NoFlow, h));
    }
    mesh.hand(id, next, h).map_err(|h| (DropReason::HandoffFull, h))?;
    mesh.wake(next);
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The worker loop over in-memory rings (`xsk::fake`): the test plays
    //! the kernel. Every test checks frame conservation: each frame of a
    //! worker is in its pool, on one of its rings, or in a handoff ring.

    use std::net::IpAddr;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc, Barrier};
    use std::time::Duration;

    use arc_swap::ArcSwap;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    use super::Worker;
    use crate::config::{Config, HugepageMode};
    use crate::dataplane::handoff::{Membership, Mesh, PeerUmem, IN_FLIGHT};
    use crate::dataplane::setup::{self, WorkerInit};
    use crate::dataplane::DataplaneError;
    use crate::pipeline::build::PortInfo;
    use crate::pipeline::registry::BuildError;
    use crate::pipeline::services::{IdRegistry, Services};
    use crate::pipeline::DropReason;
    use crate::telemetry::counters::{WorkerCounters, WorkerStats};
    use crate::telemetry::latency;
    use crate::xsk::fake::FakePort;
    use crate::xsk::umem::UmemArea;
    use crate::xsk::WorkerXsk;

    const VIP: [u8; 4] = [10, 0, 100, 1];
    const SNAT: [u8; 4] = [10, 0, 3, 1];
    const BACKEND: [u8; 4] = [10, 0, 2, 11];
    const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
    /// The backend's pinned `mac`: its replies come from it.
    const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0x0b];
    /// A SNAT port whose owner is worker 1 of 2, and one of worker 0's.
    const PORT_OF_W1: u16 = 60000;
    const PORT_OF_W0: u16 = 2000;
    const CLI: usize = 0;
    const BE: usize = 1;

    /// `[dataplane]`, the two interfaces (client side first) and one
    /// worker per queue pair.
    fn dataplane(workers: usize, frames: u32, ring: u32) -> String {
        let mut text = format!(
            "[dataplane]\nframe_size = 2048\nframes_per_worker = {frames}\nring_size = {ring}\n\
             hugepages = \"off\"\npoll = \"busy\"\n\
             [[interface]]\nname = \"cli0\"\n[[interface]]\nname = \"be0\"\n"
        );
        for w in 0..workers {
            text += &format!(
                "[[worker]]\ncore = {w}\nqueues = [{{ interface = \"cli0\", queue = {w} }}, \
                 {{ interface = \"be0\", queue = {w} }}]\n"
            );
        }
        text
    }

    fn config(workers: usize, frames: u32, ring: u32) -> Config {
        Config::parse(Path::new("worker-test.toml"), &config_text(workers, frames, ring)).unwrap()
    }

    /// [`dataplane`] with one full-NAT TCP service.
    fn config_text(workers: usize, frames: u32, ring: u32) -> String {
        let mut text = dataplane(workers, frames, ring);
        text += r#"
[pipeline.l4lb]
stages = ["conntrack", "maglev", "nat", "l2"]
egress = "be0"
return_egress = "cli0"
return_next_hop_mac = "02:00:00:00:01:02"

[[service]]
name = "web"
vip = "10.0.100.1"
port = 80
protocol = "tcp"
pipeline = "l4lb"
snat_pool = "10.0.3.0/30"
maglev_table_size = 251
backends = [{ addr = "10.0.2.11", port = 80, weight = 100, mac = "02:00:00:00:02:0b" }]

[conntrack]
entries_per_worker = 4096
"#;
        text
    }

    fn port_mac(interface: usize) -> [u8; 6] {
        [2, 0, 0, 0, 0xff, interface as u8]
    }

    fn shared(config: &Config) -> (Arc<ArcSwap<Services>>, Arc<Mesh>) {
        let mut ids = IdRegistry::default();
        let services =
            Arc::new(ArcSwap::from_pointee(Services::build(config, 1, &mut ids, |_| None).unwrap()));
        (services, Arc::new(Mesh::new(config.workers.len())))
    }

    /// Worker `wi` over fake ports, and its UMEM for the mesh.
    fn build_one(
        config: &Config,
        wi: usize,
        services: &Arc<ArcSwap<Services>>,
        mesh: &Arc<Mesh>,
        mtu: u16,
    ) -> Result<(Worker<FakePort>, PeerUmem), DataplaneError> {
        let dp = &config.dataplane;
        let len = dp.frames_per_worker as usize * dp.frame_size as usize;
        let area = Arc::new(UmemArea::new(len, HugepageMode::Off).unwrap());
        let ports: Vec<FakePort> = config.workers[wi]
            .queues
            .iter()
            .map(|q| FakePort::new(q.interface, area.clone(), dp.frame_size, dp.ring_size as usize))
            .collect();
        let infos: Vec<PortInfo> = ports
            .iter()
            .map(|p| PortInfo { interface: p.interface_idx, mac: port_mac(p.interface_idx), mtu })
            .collect();
        let xsk = WorkerXsk::in_memory(ports, area, dp.frames_per_worker, dp.frame_size);
        let umem = PeerUmem::new(setup::umem_view(config, &xsk), xsk.area());
        let init = WorkerInit {
            counters: Arc::new(WorkerCounters::default()),
            stats: Arc::new(WorkerStats::default()),
            services: services.clone(),
            mesh: mesh.clone(),
            recorder: latency::pair().0,
            conns: crate::telemetry::conns::pair().0,
            mtus: crate::pipeline::mtu::LinkMtus::new(config.interfaces.iter().map(|_| mtu)),
        };
        Ok((setup::assemble(config, wi, init, xsk, &infos)?, umem))
    }

    /// Workers over fake ports, sharing a mesh as `Dataplane::start` sets up.
    fn workers(config: &Config) -> Vec<Worker<FakePort>> {
        workers_at_mtu(config, 1500)
    }

    /// Workers whose links all have MTU `mtu`.
    fn workers_at_mtu(config: &Config, mtu: u16) -> Vec<Worker<FakePort>> {
        let (services, mesh) = shared(config);
        let (mut out, umems): (Vec<_>, Vec<_>) =
            (0..config.workers.len()).map(|wi| build_one(config, wi, &services, &mesh, mtu).unwrap()).unzip();
        assert!(mesh.umems.set(umems).is_ok());
        for w in &mut out {
            w.join_mesh();
        }
        out
    }

    /// An IPv4 address and a port.
    type Endpoint = ([u8; 4], u16);

    fn tcp(src: Endpoint, dst: Endpoint, to: usize, syn: bool) -> Vec<u8> {
        let from = if to == BE { BACKEND_MAC } else { ROUTER_MAC };
        let ip = PacketBuilder::ethernet2(from, port_mac(to)).ipv4(src.0, dst.0, 64);
        let mut out = Vec::new();
        let tcp = ip.tcp(src.1, dst.1, 1000, 64240);
        if syn { tcp.syn() } else { tcp.ack(1) }.write(&mut out, &[]).unwrap();
        out
    }

    /// A reply from the backend to SNAT port `port`, arriving on be0.
    fn reply(port: u16) -> Vec<u8> {
        tcp((BACKEND, 80), (SNAT, port), BE, false)
    }

    fn syn(client_port: u16) -> Vec<u8> {
        tcp(([198, 18, 0, 1], client_port), (VIP, 80), CLI, true)
    }

    fn drops(w: &Worker<FakePort>, r: DropReason) -> u64 {
        w.counters.drops[r as usize].get()
    }

    /// Frames of worker `wi` waiting in the mesh (handed, or coming back).
    fn in_mesh(mesh: &Mesh, wi: usize) -> usize {
        (0..mesh.workers()).filter_map(|o| mesh.link(wi, o)).map(|l| l.to_owner.len() + l.back.len()).sum()
    }

    /// Every frame of the worker is in its pool, on its rings, or in the mesh.
    fn assert_conserved(w: &Worker<FakePort>, wi: usize, mesh: &Mesh) {
        let held: usize = w.xsk.ports.iter().map(FakePort::held).sum::<usize>() + w.parked.buffers();
        let total = w.xsk.pool.total() as usize;
        assert_eq!(
            w.xsk.pool.available() + held + in_mesh(mesh, wi),
            total,
            "worker {wi}: pool {} + rings {held} + mesh {} != {total}",
            w.xsk.pool.available(),
            in_mesh(mesh, wi)
        );
    }

    /// One worker (one queue pair on each side) with its fill rings primed.
    fn one_worker(frames: u32, ring: u32) -> Worker<FakePort> {
        let mut w = workers(&config(1, frames, ring)).remove(0);
        w.step();
        w
    }

    /// Every frame of the worker is back in its pool or on its fill rings.
    fn assert_all_home(w: &Worker<FakePort>, total: usize) {
        let held: usize = w.xsk.ports.iter().map(FakePort::held).sum();
        assert_eq!(w.xsk.pool.available() + held, total, "every chunk back exactly once");
        assert_eq!(w.parked.buffers(), 0);
    }

    /// Drives one worker until its rings settle.
    fn settle(w: &mut Worker<FakePort>) {
        for _ in 0..8 {
            w.step();
        }
    }

    /// What worker `w` alone sends on port `out` for `frame` arriving on
    /// port `on`: the last frame sent there once it settles.
    fn sends_on(w: &mut Worker<FakePort>, on: usize, frame: &[u8], out: usize) -> Vec<u8> {
        assert!(w.xsk.ports[on].deliver(frame));
        settle(w);
        w.xsk.ports[out].sent.last().expect("nothing sent").clone()
    }

    /// The source, destination and payload of the IP packet (of either
    /// family) in Ethernet frame `frame`.
    fn ip_payload(frame: &[u8]) -> (IpAddr, IpAddr, &[u8]) {
        match SlicedPacket::from_ethernet(frame).unwrap().net {
            Some(NetSlice::Ipv4(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
                ip.payload().payload,
            ),
            Some(NetSlice::Ipv6(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
                ip.payload().payload,
            ),
            _ => panic!("not IP: {frame:02x?}"),
        }
    }

    /// Primes both workers' fill rings, then worker 1 (of two) opens a
    /// flow with a client SYN: the SNAT address and port its SYN left
    /// with, from worker 1's own share. Worker 1 keeps what it sends to
    /// the backend side.
    fn open_flow_on_w1(ws: &mut [Worker<FakePort>]) -> Endpoint {
        ws[0].step();
        ws[1].step();
        let w = &mut ws[1];
        w.xsk.ports[BE].keep_sent = true;
        assert!(w.xsk.ports[CLI].deliver(&syn(40000)));
        settle(w);
        let out = SlicedPacket::from_ethernet(&w.xsk.ports[BE].sent[0]).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &out.net else { panic!("not IPv4") };
        let snat_addr = ip.header().source();
        let Some(TransportSlice::Tcp(t)) = out.transport else { panic!("not TCP") };
        assert_eq!(crate::pipeline::snat::owner(t.source_port(), 2), 1);
        (snat_addr, t.source_port())
    }

    /// A worker with no socket on an interface its pipeline sends on is
    /// refused: the error names the worker, and its cause stays typed
    /// (boxed, so the error enum stays small) and next in the chain.
    #[test]
    fn pipeline_build_failure_names_the_worker_and_keeps_its_cause() {
        // The config check refuses such a worker: only its sockets lack be0.
        let mut cfg = config(1, 512, 128);
        cfg.workers[0].queues.retain(|q| q.interface == CLI);
        let (services, mesh) = shared(&cfg);
        let Err(e) = build_one(&cfg, 0, &services, &mesh, 1500) else { panic!("built without be0") };
        let DataplaneError::Pipelines { worker: 0, source } = &e else { panic!("{e:?}") };
        assert!(matches!(**source, BuildError::NoSocket { .. }), "{source:?}");
        // Next in the chain `shunt run` prints.
        let cause = std::error::Error::source(&e).expect("a source");
        assert_eq!(cause.to_string(), "worker has no socket on be0");
        assert!(std::mem::size_of::<DataplaneError>() <= 64, "{}", std::mem::size_of::<DataplaneError>());
    }

    #[test]
    fn forwards_and_every_frame_comes_back() {
        let w = &mut one_worker(512, 128);
        w.xsk.ports[BE].keep_sent = true;
        for i in 0..40 {
            assert!(w.xsk.ports[CLI].deliver(&syn(10000 + i)));
        }
        settle(w);
        assert_eq!(w.counters.rx_packets.get(), 40);
        assert_eq!(w.counters.tx_packets.get(), 40);
        assert_eq!(w.xsk.ports[BE].sent.len(), 40);
        // Bytes on the wire: DNAT to the backend, SNAT from the pool.
        let p = SlicedPacket::from_ethernet(&w.xsk.ports[BE].sent[0]).unwrap();
        let Some(NetSlice::Ipv4(ip)) = p.net else { panic!("not IPv4") };
        assert_eq!(ip.header().destination(), BACKEND);
        assert_eq!(ip.header().source()[..3], SNAT[..3], "from the SNAT pool 10.0.3.0/30");
        assert!(matches!(p.transport, Some(TransportSlice::Tcp(_))));
        assert_eq!(w.xsk.ports.iter().map(|p| p.tx.len() + p.completion.len()).sum::<usize>(), 0);
        assert_conserved(w, 0, &w.mesh.clone());
    }

    /// A config whose frames reach 9216 bytes: chains of 2048-byte chunks
    /// (1792 bytes of packet each), links at MTU 9000.
    fn jumbo(workers_n: usize, frames: u32, ring: u32) -> Vec<Worker<FakePort>> {
        let text = config_text(workers_n, frames, ring)
            .replace("frame_size = 2048", "frame_size = 2048\nmax_frame_size = 9216");
        let cfg = Config::parse(Path::new("worker-test.toml"), &text).unwrap();
        assert_eq!((cfg.dataplane.frame_size, cfg.dataplane.max_frame_size), (2048, 9216));
        workers_at_mtu(&cfg, 9000)
    }

    /// The client of the jumbo tests.
    const CLIENT: Endpoint = ([198, 18, 0, 1], 40000);

    /// One jumbo worker (`frames` frames, 128-slot rings) through which
    /// [`CLIENT`] has opened a flow to the VIP with its SYN; it keeps what
    /// it sends to the backend side.
    fn jumbo_with_flow(frames: u32) -> Worker<FakePort> {
        let mut w = jumbo(1, frames, 128).remove(0);
        w.step();
        w.xsk.ports[BE].keep_sent = true;
        assert!(w.xsk.ports[CLI].deliver(&syn(CLIENT.1)));
        settle(&mut w);
        w
    }

    /// Two jumbo workers (1024 frames, 256-slot rings) of which worker 1
    /// has opened a flow ([`open_flow_on_w1`]): the workers, their mesh,
    /// and the SNAT address and port the flow's SYN left with.
    fn jumbo_pair_with_flow_on_w1() -> (Vec<Worker<FakePort>>, Arc<Mesh>, Endpoint) {
        let mut ws = jumbo(2, 1024, 256);
        let mesh = ws[0].mesh.clone();
        let snat = open_flow_on_w1(&mut ws);
        (ws, mesh, snat)
    }

    /// A 9014-byte TCP frame (9000 at IP) with a recognisable payload.
    fn big_tcp(src: Endpoint, dst: Endpoint, to: usize) -> (Vec<u8>, Vec<u8>) {
        let from = if to == BE { BACKEND_MAC } else { ROUTER_MAC };
        let payload: Vec<u8> = (0..8960u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut big = Vec::new();
        PacketBuilder::ethernet2(from, port_mac(to))
            .ipv4(src.0, dst.0, 64)
            .tcp(src.1, dst.1, 1001, 64240)
            .ack(1)
            .write(&mut big, &payload)
            .unwrap();
        assert_eq!(big.len(), 9014);
        (big, payload)
    }

    /// Checks `out` is an IPv4 TCP frame of 9014 bytes from `src` to `dst`
    /// carrying `payload`, with a correct TCP checksum.
    fn assert_whole_tcp(out: &[u8], src: [u8; 4], dst: [u8; 4], payload: &[u8]) {
        assert_eq!(out.len(), 9014);
        let p = SlicedPacket::from_ethernet(out).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("not IPv4") };
        assert_eq!((ip.header().source(), ip.header().destination()), (src, dst));
        assert_eq!(ip.header().total_len(), 9000);
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else { panic!("not TCP") };
        assert_eq!(tcp.payload(), payload);
        let sum = tcp.to_header().calc_checksum_ipv4(&ip.header().to_header(), tcp.payload()).unwrap();
        assert_eq!(tcp.checksum(), sum, "TCP checksum after NAT");
    }

    /// The second frame to the backend (after the SYN) is the jumbo frame,
    /// whole and rewritten: from the SNAT address the SYN left with (one of
    /// the pool's) to the backend, carrying `payload`; and every chunk of
    /// the worker is accounted for.
    fn assert_jumbo_left_whole(w: &Worker<FakePort>, payload: &[u8]) {
        let sent = &w.xsk.ports[BE].sent;
        let snat: [u8; 4] = sent[0][26..30].try_into().unwrap();
        assert_eq!(snat[..3], SNAT[..3], "from the SNAT pool 10.0.3.0/30");
        assert_whole_tcp(&sent[1], snat, BACKEND, payload);
        assert_conserved(w, 0, &w.mesh);
    }

    /// A frame of a 9000-byte MTU (9014 bytes with its Ethernet header)
    /// arrives as a chain of six 2048-byte chunks: it leaves as one,
    /// NAT-rewritten, with every payload byte intact and a correct
    /// checksum, and every chunk comes back to the pool.
    #[test]
    fn jumbo_frame_leaves_whole_and_rewritten() {
        let w = &mut jumbo_with_flow(512);
        let (big, payload) = big_tcp(CLIENT, (VIP, 80), CLI);
        assert!(w.xsk.ports[CLI].deliver(&big));
        assert_eq!(w.xsk.ports[CLI].rx.len(), 6, "a chain of six buffers");
        settle(w);
        assert_eq!(w.counters.tx_packets.get(), 2, "{:?}", w.counters.snapshot());
        assert_eq!(w.counters.rx_bytes.get(), w.counters.tx_bytes.get());
        assert_jumbo_left_whole(w, &payload);
        assert_eq!(w.counters.total_drops(), 0);
    }

    /// Delivers `frame` on the client side as a chain whose first buffer
    /// ends at `cut`, the rest in chunks of 1792 bytes, and settles.
    fn deliver_cut_at(w: &mut Worker<FakePort>, frame: &[u8], cut: usize) {
        let rest = frame[cut..].chunks(1792);
        let pieces: Vec<&[u8]> = std::iter::once(&frame[..cut]).chain(rest).collect();
        assert!(w.xsk.ports[CLI].deliver_pieces(&pieces));
        settle(w);
    }

    /// Headers that do not all lie in the first buffer are refused and
    /// counted, never parsed from a partial header; headers that end
    /// exactly where the first buffer ends are fine.
    #[test]
    fn chain_with_headers_past_its_first_buffer_is_refused() {
        let w = &mut jumbo_with_flow(512);
        let (big, payload) = big_tcp(CLIENT, (VIP, 80), CLI);
        // Cut inside the IPv4 header, then inside the TCP header.
        for cut in [30, 40] {
            deliver_cut_at(w, &big, cut);
        }
        assert_eq!(drops(w, DropReason::ChainUnsupported), 2);
        assert_eq!(w.counters.tx_packets.get(), 1, "only the SYN left");
        // Ethernet, IPv4 and TCP headers: 54 bytes, all in the first buffer.
        deliver_cut_at(w, &big, 54);
        assert_eq!(w.counters.tx_packets.get(), 2);
        assert_jumbo_left_whole(w, &payload);
    }

    /// A chain of more buffers than a frame may have is dropped and
    /// counted, and each of its buffers is freed exactly once; so is a
    /// chain whose end has not arrived when the RX ring runs dry (its
    /// remaining buffers are freed as they come, not taken for a packet).
    #[test]
    fn overlong_and_cut_chains_are_dropped_and_every_buffer_freed() {
        let w = &mut jumbo_with_flow(512);
        let (big, payload) = big_tcp(CLIENT, (VIP, 80), CLI);
        // Ten buffers: two more than a chain may have.
        let pieces: Vec<&[u8]> = big.chunks(big.len().div_ceil(10)).collect();
        assert_eq!(pieces.len(), 10);
        assert!(w.xsk.ports[CLI].deliver_pieces(&pieces));
        settle(w);
        assert_eq!(drops(w, DropReason::ChainTooLong), 1);
        assert_conserved(w, 0, &w.mesh.clone());
        // The kernel has published the first three buffers of six only.
        assert!(w.xsk.ports[CLI].deliver(&big));
        let late: Vec<_> = (0..3).filter_map(|_| w.xsk.ports[CLI].rx.pop_back()).collect();
        w.step();
        assert_eq!(drops(w, DropReason::ChainTooLong), 2);
        w.xsk.ports[CLI].rx.extend(late.into_iter().rev());
        // The next packet after the cut chain's rest is whole again.
        assert!(w.xsk.ports[CLI].deliver(&big));
        settle(w);
        assert_eq!(drops(w, DropReason::ChainTooLong), 2);
        // The cut chain's rest was freed, not parsed as a packet of its own.
        assert_eq!(w.counters.total_drops(), 2, "{:?}", w.counters.snapshot());
        assert_eq!(w.counters.tx_packets.get(), 2, "{:?}", w.counters.snapshot());
        assert_jumbo_left_whole(w, &payload);
    }

    /// A full TX ring takes a chain whole or not at all: what is on the
    /// ring is whole packets, the rest is dropped and counted, and once
    /// the kernel resumes every buffer completes back to the pool.
    #[test]
    fn full_tx_ring_never_splits_a_chain() {
        let w = &mut jumbo_with_flow(1024);
        let (big, _) = big_tcp(CLIENT, (VIP, 80), CLI);
        w.xsk.ports[BE].sending = false;
        // 21 chains of six take 126 of the 128 slots; the 22nd does not fit.
        for _ in 0..22 {
            assert!(w.xsk.ports[CLI].deliver(&big));
            w.step();
        }
        let tx = &w.xsk.ports[BE].tx;
        let ends = tx.iter().filter(|d| d.2 & crate::xsk::XDP_PKT_CONTD == 0).count();
        assert_eq!((tx.len(), ends), (126, 21), "whole chains on the ring");
        assert_eq!(drops(w, DropReason::TxRingFull), 1);
        assert_conserved(w, 0, &w.mesh.clone());
        w.xsk.ports[BE].sending = true;
        w.xsk.ports[BE].send();
        settle(w);
        assert_eq!(w.xsk.ports[BE].sent_count, 22, "the SYN and 21 chains");
        assert_all_home(w, 1024);
    }

    /// A chained reply that lands on the worker that does not own its
    /// SNAT port: only its first buffer is handed over, the rest waits
    /// parked, and the source sends the whole frame once the owner has
    /// rewritten it.
    #[test]
    fn chained_reply_handed_over_leaves_whole() {
        let (mut ws, mesh, (snat_addr, snat_port)) = jumbo_pair_with_flow_on_w1();
        ws[0].xsk.ports[CLI].keep_sent = true;
        let (big, payload) = big_tcp((BACKEND, 80), (snat_addr, snat_port), BE);
        assert!(ws[0].xsk.ports[BE].deliver(&big));
        ws[0].step();
        assert_eq!(ws[0].parked.buffers(), 5, "the tail waits at its source");
        assert_conserved(&ws[0], 0, &mesh);
        ws[1].step();
        settle(&mut ws[0]);
        assert_eq!(ws[0].counters.handoffs_out.get(), 1);
        assert_eq!(ws[1].counters.handoffs_served.get(), 1);
        assert_eq!(ws[0].parked.buffers(), 0);
        assert_whole_tcp(&ws[0].xsk.ports[CLI].sent[0], VIP, [198, 18, 0, 1], &payload);
        assert_conserved(&ws[0], 0, &mesh);
        assert_conserved(&ws[1], 1, &mesh);
        // A chained reply for a flow the owner does not know comes back
        // dropped: every buffer of it is freed at its source.
        let (stray, _) = big_tcp((BACKEND, 80), (snat_addr, PORT_OF_W1 + 2), BE);
        assert!(ws[0].xsk.ports[BE].deliver(&stray));
        ws[0].step();
        ws[1].step();
        settle(&mut ws[0]);
        assert_eq!(drops(&ws[1], DropReason::NoFlow), 1);
        assert_eq!(ws[0].parked.buffers(), 0);
        assert_conserved(&ws[0], 0, &mesh);
        assert_all_home(&ws[0], 1024);
    }

    /// `frame` with DF set or clear in its IPv4 header (checksum corrected).
    fn with_df(mut frame: Vec<u8>, df: bool) -> Vec<u8> {
        frame[20] = (frame[20] & !0x40) | if df { 0x40 } else { 0 };
        frame[24..26].fill(0);
        let sum = crate::wire::checksum::checksum(&frame[14..34]);
        frame[24..26].copy_from_slice(&sum.to_be_bytes());
        frame
    }

    /// Checks `out` is an ICMPv4 Fragmentation Needed with next-hop MTU
    /// `mtu`, from 192.0.0.8 to `to`, quoting the first 548 bytes of
    /// `packet` (an Ethernet frame) as it arrived, with a valid checksum.
    fn assert_frag_needed(out: &[u8], to: [u8; 4], packet: &[u8], mtu: u16) {
        let p = SlicedPacket::from_ethernet(out).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("not IPv4") };
        assert_eq!((ip.header().source(), ip.header().destination()), ([192, 0, 0, 8], to));
        assert_eq!(ip.header().total_len(), 576, "20 + 8 + a 548-byte quote");
        let icmp = &out[34..];
        assert_eq!((icmp[0], icmp[1]), (3, 4), "Destination Unreachable, Fragmentation Needed");
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), mtu);
        assert_eq!(crate::wire::checksum::checksum(icmp), 0, "ICMP checksum");
        assert_eq!(&icmp[8..], &packet[14..14 + 548], "the quote is the packet as it arrived");
        assert_eq!((&out[..6], &out[6..12]), (&packet[6..12], &packet[..6]), "MACs swapped");
    }

    /// A chain bigger than its egress MTU (9000-byte frames towards a
    /// 1500-byte backend link) is answered like a router would: with DF
    /// set, a Fragmentation Needed quoting its first buffer goes back to
    /// the client and the chain's later chunks are freed; without DF it is
    /// dropped and counted (`frame_too_large`). Either way every chunk
    /// returns to the pool exactly once.
    #[test]
    fn oversize_chain_gets_frag_needed_and_every_chunk_comes_back() {
        let w = &mut jumbo_with_flow(512);
        w.xsk.ports[CLI].keep_sent = true;
        let be_iface = w.xsk.ports[BE].interface_idx;
        assert_eq!(w.mtus.set(be_iface, 1500), Some(9000));
        let big = with_df(big_tcp(CLIENT, (VIP, 80), CLI).0, true);
        for round in 1..=3 {
            assert!(w.xsk.ports[CLI].deliver(&big));
            assert_eq!(w.xsk.ports[CLI].rx.len(), 6, "a chain of six buffers");
            settle(w);
            assert_eq!(w.xsk.ports[CLI].sent.len(), round, "{:?}", w.counters.snapshot());
            assert_frag_needed(&w.xsk.ports[CLI].sent[round - 1], CLIENT.0, &big, 1500);
            assert_conserved(w, 0, &w.mesh.clone());
        }
        assert_eq!(w.xsk.ports[BE].sent.len(), 1, "only the SYN went to the backend");
        assert_eq!(w.counters.total_drops(), 0, "{:?}", w.counters.snapshot());
        // DF clear: no error may answer it (RFC 1812 would fragment).
        let plain = with_df(big_tcp(CLIENT, (VIP, 80), CLI).0, false);
        assert!(w.xsk.ports[CLI].deliver(&plain));
        settle(w);
        assert_eq!(drops(w, DropReason::FrameTooLarge), 1);
        assert_eq!(w.xsk.ports[CLI].sent.len(), 3);
        assert_all_home(w, 512);
    }

    /// The same on a handoff: a chained reply lands on the worker that
    /// does not own its SNAT port, its owner finds it too big for the
    /// client link and replaces its first buffer with the error, and the
    /// source frees the parked tail and sends the error to the backend.
    #[test]
    fn oversize_chain_handed_over_is_answered_and_its_tail_freed_at_the_source() {
        let (mut ws, mesh, (snat_addr, snat_port)) = jumbo_pair_with_flow_on_w1();
        let cli_iface = ws[1].xsk.ports[CLI].interface_idx;
        assert_eq!(ws[1].mtus.set(cli_iface, 1500), Some(9000));
        ws[0].xsk.ports[BE].keep_sent = true;
        ws[0].xsk.ports[CLI].keep_sent = true;
        let big = with_df(big_tcp((BACKEND, 80), (snat_addr, snat_port), BE).0, true);
        assert!(ws[0].xsk.ports[BE].deliver(&big));
        ws[0].step();
        assert_eq!(ws[0].parked.buffers(), 5, "the tail waits at its source");
        ws[1].step();
        settle(&mut ws[0]);
        assert_eq!(ws[1].counters.handoffs_served.get(), 1);
        assert!(ws[0].xsk.ports[CLI].sent.is_empty(), "nothing to the client");
        assert_eq!(ws[0].xsk.ports[BE].sent.len(), 1);
        assert_frag_needed(&ws[0].xsk.ports[BE].sent[0], BACKEND, &big, 1500);
        assert_eq!(ws[0].counters.total_drops() + ws[1].counters.total_drops(), 0);
        assert_conserved(&ws[0], 0, &mesh);
        assert_conserved(&ws[1], 1, &mesh);
        assert_all_home(&ws[0], 1024);
    }

    #[test]
    fn full_tx_ring_drops_and_counts_and_loses_no_frame() {
        let w = &mut one_worker(1024, 64);
        w.xsk.ports[BE].sending = false; // the kernel stops sending
        let mut offered = 0u64;
        for round in 0..4u16 {
            for i in 0..48 {
                offered += u64::from(w.xsk.ports[CLI].deliver(&syn(1024 + round * 64 + i)));
            }
            w.step();
        }
        let full = drops(w, DropReason::TxRingFull);
        assert_eq!(w.xsk.ports[BE].tx.len(), 64, "the TX ring is full");
        assert_eq!(w.counters.tx_packets.get(), 64);
        assert_eq!(full, offered - 64, "every packet beyond the ring is dropped and counted");
        assert_conserved(w, 0, &w.mesh.clone());
        // The kernel resumes: every frame completes back to the pool.
        w.xsk.ports[BE].sending = true;
        w.xsk.ports[BE].send();
        settle(w);
        assert_eq!(w.xsk.ports[BE].sent_count, 64);
        assert_eq!(w.xsk.ports[BE].tx.len() + w.xsk.ports[BE].completion.len(), 0);
        assert_conserved(w, 0, &w.mesh.clone());
    }

    /// Backend-side failures count against the backend: a full TX ring
    /// above, a link without carrier here (dropped as `link_down`).
    #[test]
    fn egress_failures_count_against_the_backend() {
        let w = &mut one_worker(1024, 64);
        let be_iface = w.xsk.ports[BE].interface_idx;
        let failed =
            |w: &Worker<FakePort>| w.ctx.stats.backends.iter().map(|b| b.tx_failed.get()).sum::<u64>();
        w.xsk.ports[BE].sending = false;
        for round in 0..4u16 {
            for i in 0..48 {
                w.xsk.ports[CLI].deliver(&syn(20000 + round * 64 + i));
            }
            w.step();
        }
        assert_eq!(failed(w), drops(w, DropReason::TxRingFull), "ring full: {}", failed(w));
        assert!(failed(w) > 0);
        w.xsk.ports[BE].sending = true;
        w.xsk.ports[BE].send();
        settle(w);
        let before = failed(w);
        w.mtus.set_up(be_iface, false);
        for i in 0..10 {
            w.xsk.ports[CLI].deliver(&syn(30000 + i));
        }
        settle(w);
        assert_eq!(drops(w, DropReason::LinkDown), 10);
        assert_eq!(failed(w) - before, 10);
        w.mtus.set_up(be_iface, true);
        let sent = w.counters.tx_packets.get();
        w.xsk.ports[CLI].deliver(&syn(40000));
        settle(w);
        assert_eq!(w.counters.tx_packets.get(), sent + 1, "sends again once the link is up");
        assert_conserved(w, 0, &w.mesh.clone());
    }

    /// With the SNAT pool taken, each new flow is answered (an RST back out
    /// the client port) and counted once, retransmissions included.
    #[test]
    fn refused_flows_are_answered_and_counted_once() {
        let w = &mut one_worker(512, 128);
        w.xsk.ports[CLI].keep_sent = true;
        let mut h = 0u64;
        while w.ctx.snat[0].alloc(h).is_some() {
            h += 1;
        }
        for _ in 0..3 {
            w.xsk.ports[CLI].deliver(&syn(5000));
            settle(w);
        }
        w.xsk.ports[CLI].deliver(&syn(5001));
        settle(w);
        assert_eq!(drops(w, DropReason::SnatExhausted), 2, "two flows refused");
        let answers = &w.xsk.ports[CLI].sent;
        assert_eq!(answers.len(), 4, "every SYN answered");
        for a in answers {
            let p = SlicedPacket::from_ethernet(a).unwrap();
            let Some(TransportSlice::Tcp(t)) = p.transport else { panic!("not TCP") };
            assert!(t.rst() && t.ack() && t.acknowledgment_number() == 1001);
        }
        assert_conserved(w, 0, &w.mesh.clone());
    }

    #[test]
    fn starved_fill_ring_is_counted_and_recovers() {
        // 256 frames, TX rings big enough to hold them all.
        let cfg = config(1, 256, 512);
        let mut ws = workers(&cfg);
        let w = &mut ws[0];
        w.xsk.ports[BE].sending = false;
        let mut port = 1024;
        for _ in 0..64 {
            w.step();
            while w.xsk.ports[CLI].deliver(&syn(port)) {
                port += 1;
            }
        }
        assert_eq!(w.xsk.pool.available(), 0, "every frame waits on the TX ring");
        assert!(w.counters.fill_starved.get() > 0, "refill found no free frame");
        assert!(w.counters.fill_ring_empty.get() > 0, "the kernel saw an empty fill ring");
        assert!(w.xsk.ports[CLI].dropped_no_fill > 0, "the wire lost packets meanwhile");
        assert_eq!(drops(w, DropReason::TxRingFull), 0);
        assert_conserved(w, 0, &w.mesh.clone());
        // Completions come back: the fill ring is refilled and RX resumes.
        w.xsk.ports[BE].sending = true;
        w.xsk.ports[BE].send();
        settle(w);
        assert!(w.xsk.ports[CLI].fill.len() >= 64);
        assert!(w.xsk.ports[CLI].deliver(&syn(port)));
        assert_conserved(w, 0, &w.mesh.clone());
    }

    #[test]
    fn full_handoff_ring_drops_and_counts_and_loses_no_frame() {
        let cfg = config(2, 4096, 2048);
        let mut ws = workers(&cfg);
        let mesh = ws[0].mesh.clone();
        ws[0].step();
        // Worker 1 never runs: its inbound ring fills up.
        let mut delivered = 0;
        while delivered < IN_FLIGHT + 200 {
            for _ in 0..64 {
                assert!(ws[0].xsk.ports[BE].deliver(&reply(PORT_OF_W1)));
                delivered += 1;
            }
            ws[0].step();
        }
        assert_eq!(ws[0].counters.handoffs_out.get(), IN_FLIGHT as u64);
        assert_eq!(drops(&ws[0], DropReason::HandoffFull), (delivered - IN_FLIGHT) as u64);
        assert_conserved(&ws[0], 0, &mesh);
        // The owner catches up: no flow of its own, so it drops them, and
        // the source frees every frame.
        while in_mesh(&mesh, 0) > 0 {
            ws[1].step();
            ws[0].step();
        }
        assert_eq!(ws[1].counters.handoffs_served.get(), IN_FLIGHT as u64);
        assert_eq!(drops(&ws[1], DropReason::NoFlow), IN_FLIGHT as u64);
        assert_eq!(in_mesh(&mesh, 0), 0);
        assert_conserved(&ws[0], 0, &mesh);
        assert_all_home(&ws[0], 4096);
    }

    #[test]
    fn handed_reply_is_transmitted_by_its_source() {
        let cfg = config(2, 1024, 256);
        let mut ws = workers(&cfg);
        let mesh = ws[0].mesh.clone();
        // Worker 1 opens the flow: the SNAT port is from its share.
        let (snat_addr, snat_port) = open_flow_on_w1(&mut ws);
        // The reply lands on worker 0, which hands it over; worker 1 NATs
        // it in worker 0's UMEM; worker 0 sends it to the client.
        ws[0].xsk.ports[CLI].keep_sent = true;
        assert!(ws[0].xsk.ports[BE].deliver(&tcp((BACKEND, 80), (snat_addr, snat_port), BE, false)));
        ws[0].step();
        ws[1].step();
        settle(&mut ws[0]);
        assert_eq!(ws[0].counters.handoffs_out.get(), 1);
        assert_eq!(ws[1].counters.handoffs_served.get(), 1);
        let back = SlicedPacket::from_ethernet(&ws[0].xsk.ports[CLI].sent[0]).unwrap();
        let Some(NetSlice::Ipv4(ip)) = back.net else { panic!("not IPv4") };
        assert_eq!((ip.header().source(), ip.header().destination()), (VIP, [198, 18, 0, 1]));
        assert_conserved(&ws[0], 0, &mesh);
        assert_conserved(&ws[1], 1, &mesh);
    }

    /// Worker 0 hands frames to worker 1 and is gone (its sockets closed,
    /// its own UMEM reference dropped) before worker 1 serves them. Worker
    /// 1 then parses and rewrites those frames in worker 0's memory: with
    /// a UMEM unmapped when its worker ends, this faults.
    #[test]
    fn handed_frames_outlive_their_worker() {
        let cfg = config(2, 4096, 2048);
        let mut ws = workers(&cfg);
        ws[0].step();
        for _ in 0..8 {
            for _ in 0..64 {
                assert!(ws[0].xsk.ports[BE].deliver(&reply(PORT_OF_W1)));
            }
            ws[0].step();
        }
        assert_eq!(ws[0].counters.handoffs_out.get(), 512);
        let mut w1 = ws.pop().unwrap();
        let w0 = ws.pop().unwrap();
        drop(w0.finish());
        settle(&mut w1);
        assert_eq!(w1.counters.handoffs_served.get(), 512);
        assert_eq!(drops(&w1, DropReason::NoFlow), 512, "the owner read every handed frame");
    }

    /// Two workers handing each other replies under continuous load are
    /// stopped one after the other, mid-handoff, many times. In even rounds
    /// the first to stop drops its sockets and UMEM reference at once while
    /// the other still serves its frames; in odd rounds both settle their
    /// handoffs, and then every frame is accounted for.
    #[test]
    fn stopping_two_workers_mid_handoff_many_times() {
        let cfg = Arc::new(config(2, 2048, 512));
        for round in 0..150u64 {
            let (services, mesh) = shared(&cfg);
            let stops = [Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false))];
            // Odd rounds keep the workers until both stopped, to count
            // frames; even rounds drop each one on its thread as soon as
            // it stops, as production does.
            let keep = round % 2 == 1;
            let both_stopped = Arc::new(Barrier::new(2));
            let (umem_tx, umem_rx) = mpsc::channel();
            let handles: Vec<_> = (0..2usize)
                .map(|wi| {
                    let (cfg, services, mesh, stop) =
                        (cfg.clone(), services.clone(), mesh.clone(), stops[wi].clone());
                    let (umem_tx, both_stopped) = (umem_tx.clone(), both_stopped.clone());
                    std::thread::spawn(move || {
                        let _membership = Membership::new(mesh.clone(), wi);
                        let (mut w, umem) = build_one(&cfg, wi, &services, &mesh, 1500).unwrap();
                        umem_tx.send((wi, umem, w.counters.clone())).unwrap();
                        while mesh.umems.get().is_none() {
                            std::thread::yield_now();
                        }
                        w.join_mesh();
                        // Replies owned by the other worker, and some of our own.
                        let (theirs, ours) =
                            if wi == 0 { (PORT_OF_W1, PORT_OF_W0) } else { (PORT_OF_W0, PORT_OF_W1) };
                        let mut n = 0u32;
                        w.xsk.ports[BE].source = Some(Box::new(move |buf: &mut [u8]| {
                            n = n.wrapping_add(1);
                            let p = reply(if n.is_multiple_of(4) { ours } else { theirs });
                            buf[..p.len()].copy_from_slice(&p);
                            Some(p.len())
                        }));
                        w.run(&stop);
                        if !keep {
                            drop(w.finish());
                            return None;
                        }
                        w.settle_handoffs();
                        both_stopped.wait();
                        assert_conserved(&w, wi, &mesh);
                        assert_eq!(in_mesh(&mesh, wi), 0, "settled: nothing of ours in flight");
                        Some((w.counters.handoffs_out.get(), w.counters.handoffs_served.get()))
                    })
                })
                .collect();
            let mut umems: Vec<(usize, PeerUmem, Arc<WorkerCounters>)> =
                (0..2).map(|_| umem_rx.recv().unwrap()).collect();
            umems.sort_by_key(|(wi, _, _)| *wi);
            let counters: Vec<_> = umems.iter().map(|(_, _, c)| c.clone()).collect();
            assert!(mesh.umems.set(umems.into_iter().map(|(_, u, _)| u).collect()).is_ok());
            // Under load: both are handing frames over.
            while counters.iter().any(|c| c.handoffs_out.get() == 0) {
                std::thread::yield_now();
            }
            let first = (round / 2 % 2) as usize;
            std::thread::sleep(Duration::from_micros(300 + round * 37 % 2000));
            stops[first].store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(round * 53 % 1000));
            stops[1 - first].store(true, Ordering::Relaxed);
            let done: Vec<_> = handles.into_iter().map(|h| h.join().expect("worker thread")).collect();
            if let [Some((out0, served0)), Some((out1, served1))] = done[..] {
                assert!(out0 > 0 && out1 > 0, "round {round}: both handed frames over");
                // Settled: everything one handed out, the other served.
                assert_eq!((out0, out1), (served1, served0), "round {round}");
            }
        }
    }

    const NAT64: &str = r#"
[pipeline.nat64]
stages = ["conntrack", "nat64", "nat", "l2"]
egress = "be0"
next_hop_mac = "02:00:00:00:02:50"
return_egress = "cli0"
return_next_hop_mac = "02:00:00:00:06:02"

[nat64]
prefix = "64:ff9b::/96"
pool = "10.0.4.0/30"
pipeline = "nat64"

[conntrack]
entries_per_worker = 4096
"#;
    const CLIENT6: [u8; 16] = [0xfd, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const CLIENT6_MAC: [u8; 6] = [2, 0, 0, 0, 6, 2];
    const SERVER4: [u8; 4] = [198, 51, 100, 80];
    /// The server as the client addresses it: 64:ff9b::198.51.100.80.
    const SERVER6: [u8; 16] = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 198, 51, 100, 80];
    const V4_HOP_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0x50];

    /// Steps every worker in turn until handed frames have come and gone.
    fn drive(ws: &mut [Worker<FakePort>]) {
        for _ in 0..8 {
            for w in ws.iter_mut() {
                w.step();
            }
        }
    }

    /// RFC 1071: a valid checksum makes the ones-complement sum 0xffff.
    fn sums_to_ffff(parts: &[&[u8]]) -> bool {
        let mut acc = 0u64;
        for p in parts {
            for c in p.chunks(2) {
                acc += (u64::from(c[0]) << 8) | u64::from(c.get(1).copied().unwrap_or(0));
            }
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc == 0xffff
    }

    /// ICMP errors about a stateful NAT64 session that land on a worker
    /// other than the session's come out translated with the session's
    /// mapping, byte for byte as when they land on its owner: the ICMPv4
    /// error (quoting the pool port) is handed to the port's owner, the
    /// ICMPv6 error (quoting no pool port) goes round the workers until
    /// the owner claims it. An error about no session goes round once and
    /// is dropped as `no_flow` where it arrived.
    #[test]
    fn nat64_errors_reach_the_worker_that_owns_the_session() {
        let cfg = Config::parse(Path::new("nat64-workers.toml"), &(dataplane(3, 1024, 256) + NAT64)).unwrap();
        let mut ws = workers(&cfg);
        let mesh = ws[0].mesh.clone();
        drive(&mut ws);
        for w in ws.iter_mut() {
            w.xsk.ports[CLI].keep_sent = true;
            w.xsk.ports[BE].keep_sent = true;
        }
        // Worker 2 owns the client's sessions (a hash of its address picks
        // the worker) and opens the session: the pool port is from its share.
        let client6 = (0..=255u8)
            .map(|i| {
                let mut a = CLIENT6;
                a[14] = i;
                a
            })
            .find(|a| crate::pipeline::maglev::client_hash(a) % 3 == 2)
            .unwrap();
        let mut query = Vec::new();
        PacketBuilder::ethernet2(CLIENT6_MAC, port_mac(CLI))
            .ipv6(client6, SERVER6, 64)
            .udp(40000, 53)
            .write(&mut query, b"query")
            .unwrap();
        assert!(ws[2].xsk.ports[CLI].deliver(&query));
        settle(&mut ws[2]);
        let out = SlicedPacket::from_ethernet(&ws[2].xsk.ports[BE].sent[0]).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &out.net else { panic!("not IPv4") };
        let (pool_addr, server) = (ip.header().source(), ip.header().destination());
        assert_eq!(server, SERVER4);
        let Some(TransportSlice::Udp(u)) = out.transport else { panic!("not UDP") };
        let pool_port = u.source_port();
        assert_eq!(crate::pipeline::snat::owner(pool_port, 3), 2, "port {pool_port} from worker 2's share");

        // The client's Port Unreachable about the server's answer (prefix +
        // server → client), as its kernel sends it. It reaches worker 0.
        let mut answer = Vec::new();
        PacketBuilder::ipv6(SERVER6, client6, 63).udp(53, 40000).write(&mut answer, b"answer").unwrap();
        let unreachable6 = |quoted: &[u8]| {
            let mut v = Vec::new();
            PacketBuilder::ethernet2(CLIENT6_MAC, port_mac(CLI))
                .ipv6(client6, SERVER6, 64)
                .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(
                    etherparse::icmpv6::DestUnreachableCode::Port,
                ))
                .write(&mut v, quoted)
                .unwrap();
            v
        };
        let err6 = unreachable6(&answer);
        assert!(ws[0].xsk.ports[CLI].deliver(&err6));
        drive(&mut ws);
        assert_eq!(ws[0].xsk.ports[BE].sent.len(), 1, "worker 0 sends the translated error");
        let handed = ws[0].xsk.ports[BE].sent[0].clone();
        assert_eq!(ws[0].counters.handoffs_out.get(), 2, "to worker 1, then to worker 2");
        assert_eq!(ws[1].counters.handoffs_served.get(), 1);
        assert_eq!(ws[2].counters.handoffs_served.get(), 1);
        // What the owner makes of the same error when it lands there.
        assert_eq!(sends_on(&mut ws[2], CLI, &err6, BE), handed, "same bytes as on the owner");
        // ICMPv4 Port Unreachable from the session's pool address to the
        // server, quoting the server's answer as it would have left in IPv4.
        let (src, dst, icmp) = ip_payload(&handed);
        assert_eq!((src, dst), (pool_addr.into(), SERVER4.into()));
        assert_eq!(&icmp[..2], &[3, 3], "Destination Unreachable, port");
        assert!(sums_to_ffff(&[icmp]), "ICMP checksum");
        let q = etherparse::Ipv4HeaderSlice::from_slice(&icmp[8..]).unwrap();
        assert_eq!(
            (q.source(), q.destination(), q.protocol()),
            (SERVER4, pool_addr, etherparse::IpNumber::UDP)
        );
        assert!(sums_to_ffff(&[&icmp[8..28]]), "quoted IPv4 header checksum");
        let ports = |b: &[u8]| (u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]]));
        assert_eq!(ports(&icmp[28..]), (53, pool_port), "quoted ports: the session's");

        // The server's Port Unreachable about the query, to the pool port:
        // handed straight to worker 2, sent to the client by worker 0.
        let mut sent = Vec::new();
        PacketBuilder::ipv4(pool_addr, SERVER4, 63).udp(pool_port, 53).write(&mut sent, b"query").unwrap();
        let mut err4 = Vec::new();
        PacketBuilder::ethernet2(V4_HOP_MAC, port_mac(BE))
            .ipv4(SERVER4, pool_addr, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port,
            ))
            .write(&mut err4, &sent)
            .unwrap();
        assert!(ws[0].xsk.ports[BE].deliver(&err4));
        drive(&mut ws);
        assert_eq!(ws[0].xsk.ports[CLI].sent.len(), 1, "worker 0 sends it to the client");
        assert_eq!(ws[0].counters.handoffs_out.get(), 3);
        let to_client = ws[0].xsk.ports[CLI].sent[0].clone();
        assert_eq!(sends_on(&mut ws[2], BE, &err4, CLI), to_client, "same bytes as on the owner");
        let (src, dst, icmp) = ip_payload(&to_client);
        assert_eq!((src, dst), (SERVER6.into(), client6.into()));
        assert_eq!(&icmp[..2], &[1, 4], "Destination Unreachable, port");
        let len = (icmp.len() as u32).to_be_bytes();
        assert!(sums_to_ffff(&[&SERVER6, &client6, &len, &[0, 0, 0, 58], icmp]), "ICMPv6 checksum");
        let q = etherparse::Ipv6HeaderSlice::from_slice(&icmp[8..]).unwrap();
        assert_eq!((q.source(), q.destination()), (client6, SERVER6), "the client's own query");
        assert_eq!(ports(&icmp[48..]), (40000, 53));

        // An error about a packet of no session: round the workers, then
        // dropped where it arrived; nothing is sent.
        let mut stray = Vec::new();
        PacketBuilder::ipv6(SERVER6, client6, 63).udp(53, 40001).write(&mut stray, b"answer").unwrap();
        let no_flow = drops(&ws[0], DropReason::NoFlow);
        assert!(ws[0].xsk.ports[CLI].deliver(&unreachable6(&stray)));
        drive(&mut ws);
        assert_eq!(drops(&ws[0], DropReason::NoFlow), no_flow + 1);
        assert_eq!(ws[0].counters.handoffs_out.get(), 5);
        assert_eq!(ws[0].xsk.ports[BE].sent.len(), 1, "nothing more sent");
        for (wi, w) in ws.iter().enumerate() {
            assert_conserved(w, wi, &mesh);
        }
    }
}
