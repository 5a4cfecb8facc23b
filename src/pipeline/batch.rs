//! A batch of received frames and the verdict each one gets.

use super::flow::{FlowKind, FlowMeta};
use crate::config::MAX_BATCH;

dense_enum! {
    /// Why a packet was dropped. `Copy` and dense so it indexes counters
    /// directly (VPP's `foreach_*_error`); names are what `shunt` prints.
    DropReason;
    Malformed => "malformed", "Headers truncated or inconsistent.";
    NoRoute => "no_route", "Redirected by XDP but matches no configured route.";
    TxRingFull => "tx_ring_full", "The egress TX ring had no free slot.";
    FrameTooLarge => "frame_too_large", "Longer than the egress MTU, and no ICMP error may answer it (IPv4 without DF).";
    Fragment => "fragment", "IP fragment whose fragment fields cannot be read.";
    FragmentBogus => "fragment_bogus", "Fragment that overlaps the first one's data, is too small, misaligned, past 65535, or contradicts its datagram (RFC 1858, 3128, 8200 §4.5).";
    FragmentTableFull => "fragment_table_full", "No room in the fragment table for another datagram.";
    FragmentHeldFull => "fragment_held_full", "Fragment ahead of its first one, and no room to hold it.";
    FragmentTimeout => "fragment_timeout", "Held fragment whose first fragment did not come in time.";
    NoFlow => "no_flow", "Not a new flow to a VIP and no conntrack entry (stray reply).";
    NoBackend => "no_backend", "Every backend of the service is drained (weight 0).";
    ConntrackFull => "conntrack_full", "Conntrack table full: new flow refused.";
    SnatExhausted => "snat_exhausted", "No free SNAT port in this worker's share of the pool.";
    NextHopUnresolved => "next_hop_unresolved", "No MAC known for the backend next hop.";
    Untranslatable => "untranslatable", "No NAT46/64 mapping, or a packet RFC 7915 says to drop.";
    HandoffFull => "handoff_full", "Reply for another worker's SNAT port, and the handoff ring was full.";
    Martian => "martian", "Impossible source address, foreign destination MAC, or bad/source-route IPv4 options.";
    WrongSide => "wrong_side", "Reply-direction packet not from the flow's backend-side interface and next hop.";
    SynUnverified => "syn_unverified", "First SYN of a new flow while new TCP flows exceed syn_check_rate; its retransmission is admitted.";
    RateLimited => "rate_limited", "New flow over the configured new-flow rate (global or per source).";
    ErrorRateLimited => "error_rate_limited", "Packet whose answer (an ICMP error or RST) would exceed the worker's error_rate (RFC 4443 §2.4(f)).";
    LinkDown => "link_down", "The egress interface is down, has no carrier, or is gone.";
    ChainUnsupported => "chain_unsupported", "Frame of several buffers (multi-buffer) that is not plain TCP/UDP with its headers in the first buffer, or whose pipeline or flow cannot carry one (translation, fragments, ICMP).";
    ChainTooLong => "chain_too_long", "Frame of more buffers than a chain may have, or whose buffers did not all arrive.";
}

/// Where a packet goes after the current stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand to the next stage of its pipeline.
    Continue,
    /// Transmit on the worker's port with this index.
    Forward(u8),
    /// Another worker owns this flow (its SNAT port): hand the descriptor over.
    Handoff(u8),
    /// The pipeline kept a copy of what it needed (a fragment held until
    /// its first one comes): free the frame, count nothing.
    Consumed,
    Drop(DropReason),
}

/// One received frame: where it lives in UMEM and what happens to it next.
///
/// Its bytes lie in one chunk inside the batch's UMEM mapping: checked once
/// when the packet enters the batch ([`Batch::push`], [`Emit::push`]) and
/// when a stage moves it in its chunk ([`FrameMut::place`]). Hence private:
/// every stage slices the packet without checking it again (about 30
/// instructions a packet on the established path). A packet moves only
/// between batches over the same UMEM (a worker's).
#[derive(Debug, Clone, Copy)]
pub struct PacketMeta {
    /// UMEM offset of the first packet byte (not the frame base).
    addr: u64,
    len: u32,
    /// Index of the worker port it arrived on.
    pub ingress: u8,
    /// Index into the worker's pipelines, set by classification.
    pub pipeline: u8,
    pub verdict: Verdict,
}

impl PacketMeta {
    const EMPTY: PacketMeta =
        PacketMeta { addr: 0, len: 0, ingress: 0, pipeline: 0, verdict: Verdict::Drop(DropReason::NoRoute) };

    /// UMEM offset of the packet's first byte.
    #[inline(always)]
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Bytes of the packet in its first buffer.
    #[inline(always)]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the first buffer holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A packet outside any batch, for tests of code that takes one.
    #[cfg(test)]
    pub(crate) fn for_tests(addr: u64, len: u32) -> PacketMeta {
        PacketMeta { addr, len, ..PacketMeta::EMPTY }
    }

    /// Whether the packet is still on its way through `pipeline`: the test
    /// every stage's loop makes per packet (a tag compare, not the derived
    /// comparison of the whole verdict).
    #[inline(always)]
    pub fn active(&self, pipeline: u8) -> bool {
        self.pipeline == pipeline && matches!(self.verdict, Verdict::Continue)
    }
}

/// Raw view of a worker's UMEM so stages can reach frame bytes.
#[derive(Clone, Copy)]
pub struct UmemView {
    base: *mut u8,
    len: usize,
    /// UMEM chunk size (a power of two): frames may grow into their headroom.
    frame_size: usize,
}

// SAFETY: a UmemView is a pointer and a length. Access through it is
// governed by frame ownership: a frame is touched only by the thread that
// currently holds its descriptor (its worker, or the owner it was handed to).
unsafe impl Send for UmemView {}
// SAFETY: as above; sharing the view shares no frame.
unsafe impl Sync for UmemView {}

impl UmemView {
    /// # Safety
    /// `base..base+len` must stay mapped for the view's lifetime, and frames
    /// reached through it must not be accessed elsewhere concurrently (the
    /// kernel owns a frame only while it sits in a fill or TX ring).
    pub unsafe fn new(base: *mut u8, len: usize) -> UmemView {
        UmemView { base, len, frame_size: 4096 }
    }

    /// A view over plain memory, for tests and benches.
    ///
    /// # Safety
    /// `mem` must outlive the view and must not be accessed except through
    /// it while the view is in use.
    pub unsafe fn of_slice(mem: &mut [u8]) -> UmemView {
        UmemView { base: mem.as_mut_ptr(), len: mem.len(), frame_size: 4096 }
    }

    /// The same view with another chunk size (UMEM frame_size).
    pub fn with_frame_size(mut self, frame_size: usize) -> UmemView {
        if frame_size.is_power_of_two() {
            self.frame_size = frame_size;
        }
        self
    }

    /// The UMEM offset of the chunk holding `addr..addr + len`: None unless
    /// the chunk lies inside the mapping and the bytes inside the chunk.
    fn chunk_of(&self, addr: u64, len: u32) -> Option<u64> {
        let base = addr & !(self.frame_size as u64 - 1);
        let start = (addr - base) as usize;
        self.range(base, self.frame_size)?;
        (start + len as usize <= self.frame_size).then_some(base)
    }

    /// Packet `meta`'s whole chunk, the packet's offset in it and the
    /// chunk's UMEM offset.
    ///
    /// # Safety
    /// `meta` must be a packet of a batch over this view (so its chunk lies
    /// inside the mapping: [`PacketMeta`]), and nothing else may reach the
    /// chunk while the slice lives: it must be held by the caller's batch,
    /// and handed out once.
    #[inline(always)]
    unsafe fn chunk<'a>(&self, meta: &PacketMeta) -> (&'a mut [u8], usize, u64) {
        let base = meta.addr & !(self.frame_size as u64 - 1);
        let start = (meta.addr - base) as usize;
        // SAFETY: the chunk is inside the mapping (the caller's promise, kept
        // by how packets enter a batch); that no one else reaches it is the
        // caller's promise too.
        (
            unsafe { std::slice::from_raw_parts_mut(self.base.add(base as usize), self.frame_size) },
            start,
            base,
        )
    }

    /// Bytes `addr..addr+len`, if inside the mapping.
    fn range(&self, addr: u64, len: usize) -> Option<(usize, usize)> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len).filter(|&e| e <= self.len)?;
        Some((start, end))
    }
}

/// Why [`Batch::push`] did not take a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("the batch is full")]
    Full,
    #[error("the descriptor's bytes do not lie in one UMEM chunk")]
    OutsideUmem,
}

/// Buffers after the first that one frame may span (multi-buffer AF_XDP).
pub const MAX_TAIL: usize = crate::config::MAX_CHAIN as usize - 1;

/// One buffer of a chain after its first: UMEM offset of the data, length.
pub type TailBuf = (u64, u32);

/// Free frames a batch may hold for stages that turn one packet into
/// several (SIIT fragmentation), and so the room for packets beyond the
/// received ones.
pub const SPARE_FRAMES: usize = 32;
const SLOTS: usize = MAX_BATCH as usize + SPARE_FRAMES;

/// Up to [`MAX_BATCH`] packets from one port, processed together, plus
/// the packets stages emit into spare frames.
pub struct Batch {
    pub pkts: [PacketMeta; SLOTS],
    pub flows: [FlowMeta; SLOTS],
    /// Packets in the batch: private, so every one was checked as it came
    /// in ([`PacketMeta`]).
    len: usize,
    /// Per slot: bytes of the packet after its first buffer (0 for a frame
    /// of one buffer). Stages see the first buffer (`len` bytes at `addr`)
    /// and read headers there only.
    pub more: [u32; SLOTS],
    /// Per received slot: the chunks after the first that this batch holds
    /// for the packet. Each is placed on a TX ring with it, parked for a
    /// handoff, or freed by [`Batch::free_tails`]: exactly once.
    tail_n: [u8; MAX_BATCH as usize],
    tails: [[TailBuf; MAX_TAIL]; MAX_BATCH as usize],
    /// Packets given buffers after their first in this batch (0: the batch
    /// holds no chain, and the chain bookkeeping is skipped).
    pub chained: usize,
    /// Packets the last `conntrack` pass found opening a flow (new, or a
    /// later fragment of one opened in the batch): 0 lets `maglev` skip
    /// the batch without a look at each packet.
    pub opening: usize,
    umem: UmemView,
    /// UMEM offsets of free frames owned by this batch, for [`Emit`].
    spares: [u64; SPARE_FRAMES],
    spare_len: usize,
    /// How many spares the owner keeps topped up (0: stages cannot emit).
    spare_target: usize,
}

/// Appends packets to a batch from inside [`Batch::for_each_frame_emit`]:
/// each takes one spare frame; the stages after the current one see them.
pub struct Emit<'a> {
    metas: &'a mut [PacketMeta],
    flows: &'a mut [FlowMeta],
    added: usize,
    spares: &'a mut [u64; SPARE_FRAMES],
    spare_len: &'a mut usize,
    umem: UmemView,
}

impl Emit<'_> {
    /// Spare frames left to emit into.
    pub fn available(&self) -> usize {
        (*self.spare_len).min(self.metas.len() - self.added)
    }

    /// Takes a spare frame, lets `write` fill it (it gets the whole chunk
    /// and returns the packet's `(start, len)` in it) and appends the packet
    /// with `meta`'s ingress and pipeline and a copy of `flow`, verdict
    /// `Continue`. False, and the spare kept, when none is left or `write`
    /// returns None.
    pub fn push(
        &mut self,
        meta: &PacketMeta,
        flow: &FlowMeta,
        write: impl FnOnce(&mut [u8]) -> Option<(usize, usize)>,
    ) -> bool {
        if self.available() == 0 {
            return false;
        }
        let base = self.spares[*self.spare_len - 1];
        let Some((b, e)) = self.umem.range(base, self.umem.frame_size) else { return false };
        // SAFETY: b..e is inside the mapping (checked) and is a spare chunk:
        // owned by this batch alone, distinct from every chunk a packet of
        // the batch names, and not in any ring the kernel reads.
        let frame = unsafe { std::slice::from_raw_parts_mut(self.umem.base.add(b), e - b) };
        // In one chunk too (a spare offset need not be chunk-aligned):
        // stages slice it unchecked, by the chunk its offset falls in.
        let (umem, size) = (self.umem, frame.len());
        let in_chunk = |s: usize, l: usize| {
            s.checked_add(l).is_some_and(|e| e <= size)
                && u32::try_from(l).is_ok_and(|l| umem.chunk_of(base + s as u64, l).is_some())
        };
        let Some((start, len)) = write(frame).filter(|&(s, l)| in_chunk(s, l)) else {
            return false;
        };
        *self.spare_len -= 1;
        self.metas[self.added] = PacketMeta {
            addr: base + start as u64,
            len: len as u32,
            ingress: meta.ingress,
            pipeline: meta.pipeline,
            verdict: Verdict::Continue,
        };
        self.flows[self.added] = *flow;
        self.added += 1;
        true
    }
}

/// A packet's whole UMEM frame, for stages that change its length.
pub struct FrameMut<'a> {
    pub meta: &'a mut PacketMeta,
    pub flow: &'a mut FlowMeta,
    /// The whole chunk; the packet is `frame[start..start + meta.len()]`.
    pub frame: &'a mut [u8],
    pub start: usize,
    /// UMEM offset of the chunk, and its size: what [`FrameMut::place`]
    /// checks against (`frame` can be replaced, these cannot).
    base: u64,
    chunk: usize,
}

impl<'a> FrameMut<'a> {
    /// A frame over `frame`, taken as a chunk at UMEM offset 0, for tests
    /// of code that takes one.
    #[cfg(test)]
    pub(crate) fn for_tests(
        meta: &'a mut PacketMeta,
        flow: &'a mut FlowMeta,
        frame: &'a mut [u8],
        start: usize,
    ) -> FrameMut<'a> {
        let chunk = frame.len();
        FrameMut { meta, flow, frame, start, base: 0, chunk }
    }

    /// Makes the packet `len` bytes at `start` of its chunk (a stage that
    /// wrote a new packet over it, or grew or cut it). False, and nothing
    /// changed, when that runs past the chunk.
    pub fn place(&mut self, start: usize, len: usize) -> bool {
        let fits = start.checked_add(len).is_some_and(|e| e <= self.chunk);
        let Ok(len32) = u32::try_from(len) else { return false };
        if fits {
            self.meta.addr = self.base + start as u64;
            self.meta.len = len32;
            self.start = start;
        }
        fits
    }
}

/// A packet as a stage sees it: its metadata, flow state and bytes.
pub struct PacketMut<'a> {
    pub meta: &'a mut PacketMeta,
    pub flow: &'a mut FlowMeta,
    /// The packet's first buffer (the whole packet unless `more > 0`).
    pub data: &'a mut [u8],
    /// Bytes of the packet in buffers after `data` (multi-buffer frames).
    pub more: u32,
}

impl Batch {
    pub fn new(umem: UmemView) -> Batch {
        Batch {
            pkts: [PacketMeta::EMPTY; SLOTS],
            flows: [FlowMeta::default(); SLOTS],
            len: 0,
            more: [0; SLOTS],
            tail_n: [0; MAX_BATCH as usize],
            tails: [[(0, 0); MAX_TAIL]; MAX_BATCH as usize],
            chained: 0,
            opening: 0,
            umem,
            spares: [0; SPARE_FRAMES],
            spare_len: 0,
            spare_target: 0,
        }
    }

    /// The same batch keeping up to `n` spare frames ([`Batch::top_up_spares`]).
    pub fn with_spare_target(mut self, n: usize) -> Batch {
        self.spare_target = n.min(SPARE_FRAMES);
        self
    }

    /// Fills the spare stash up to its target from `alloc` (UMEM frame
    /// offsets, chunk-aligned). Called between batches, never inside one.
    pub fn top_up_spares(&mut self, mut alloc: impl FnMut() -> Option<u64>) {
        while self.spare_len < self.spare_target {
            let Some(addr) = alloc() else { break };
            self.spares[self.spare_len] = addr;
            self.spare_len += 1;
        }
    }

    /// Spare frames held now (frame accounting).
    pub fn spares(&self) -> usize {
        self.spare_len
    }

    pub fn clear(&mut self) {
        debug_assert!(
            self.tail_n[..self.len.min(MAX_BATCH as usize)].iter().all(|&n| n == 0),
            "tails leaked"
        );
        self.len = 0;
        self.chained = 0;
        self.opening = 0;
    }

    /// Appends a received packet. Refused when the batch is full, or when
    /// its bytes do not lie in one chunk inside the mapping (a descriptor a
    /// kernel never hands out: stages slice packets without a check).
    pub fn push(&mut self, addr: u64, len: u32, ingress: u8) -> Result<(), PushError> {
        if self.len >= MAX_BATCH as usize {
            return Err(PushError::Full);
        }
        if self.umem.chunk_of(addr, len).is_none() {
            return Err(PushError::OutsideUmem);
        }
        self.pkts[self.len] = PacketMeta { addr, len, ingress, pipeline: 0, verdict: Verdict::Continue };
        self.flows[self.len].kind = FlowKind::Unknown;
        self.more[self.len] = 0;
        self.tail_n[self.len] = 0;
        self.len += 1;
        Ok(())
    }

    /// Appends the next buffer of the last pushed packet (a chunk of a
    /// multi-buffer frame). False, and the chunk not taken, when the chain
    /// already has [`MAX_TAIL`] buffers after its first: the packet is then
    /// dropped as `chain_too_long` (its buffers so far stay held, for
    /// [`Batch::free_tails`]).
    pub fn push_tail(&mut self, addr: u64, len: u32) -> bool {
        let Some(i) = self.len.checked_sub(1) else { return false };
        let n = usize::from(self.tail_n[i]);
        if n >= MAX_TAIL {
            self.pkts[i].verdict = Verdict::Drop(DropReason::ChainTooLong);
            return false;
        }
        self.tails[i][n] = (addr, len);
        self.tail_n[i] += 1;
        if self.more[i] == 0 {
            self.chained += 1;
        }
        self.more[i] += len;
        true
    }

    /// Appends a packet whose buffers after the first (`more` bytes) stay
    /// with the worker that received it (a handed-over frame): stages see
    /// its length; this batch holds none of its tail.
    pub fn push_foreign(&mut self, addr: u64, len: u32, ingress: u8, more: u32) -> Result<(), PushError> {
        self.push(addr, len, ingress)?;
        self.more[self.len - 1] = more;
        self.chained += usize::from(more > 0);
        Ok(())
    }

    /// The whole length of packet `i`: its first buffer and the rest.
    #[inline]
    pub fn total_len(&self, i: usize) -> u32 {
        self.pkts[i].len + self.more[i]
    }

    /// The tail buffers the batch holds for packet `i` (empty for a frame of
    /// one buffer, a handed-over one, or a packet a stage replaced).
    #[inline]
    pub fn tail(&self, i: usize) -> &[TailBuf] {
        match (self.tails.get(i), self.tail_n.get(i)) {
            (Some(t), Some(&n)) => &t[..usize::from(n)],
            _ => &[],
        }
    }

    /// Gives up packet `i`'s tail buffers (they were placed on a TX ring or
    /// parked for a handoff): the batch no longer frees them.
    #[inline]
    pub fn release_tail(&mut self, i: usize) {
        if let Some(n) = self.tail_n.get_mut(i) {
            *n = 0;
        }
    }

    /// Gives packet `i` these tail buffers (a handed-over frame back home).
    pub fn attach_tail(&mut self, i: usize, bufs: &[TailBuf], more: u32) {
        if i >= MAX_BATCH as usize || bufs.len() > MAX_TAIL {
            return;
        }
        self.tails[i][..bufs.len()].copy_from_slice(bufs);
        self.tail_n[i] = bufs.len() as u8;
        self.chained += usize::from(!bufs.is_empty());
        self.more[i] = more;
    }

    /// Frees every tail buffer the batch still holds (the packet was
    /// dropped, or a stage replaced it by a packet of one buffer), through
    /// `free`. Called once a batch is sent.
    pub fn free_tails(&mut self, mut free: impl FnMut(u64)) {
        if self.chained == 0 {
            return;
        }
        for i in 0..self.len.min(MAX_BATCH as usize) {
            let n = usize::from(std::mem::take(&mut self.tail_n[i]));
            for &(addr, _) in &self.tails[i][..n] {
                free(addr);
            }
        }
    }

    /// Packets in the batch.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn metas(&self) -> &[PacketMeta] {
        &self.pkts[..self.len]
    }

    /// Like `for_each`, but hands out the packet's whole UMEM frame and the
    /// packet's offset in it, for stages that grow or shrink packets into
    /// the headroom (NAT46/64). They update `meta.addr`/`meta.len`.
    #[inline]
    pub fn for_each_frame(&mut self, pipeline: u8, mut f: impl FnMut(FrameMut<'_>)) {
        self.for_each_frame_chain(pipeline, |p, _| f(p));
    }

    /// [`Batch::for_each_frame`] that also hands out the bytes of the
    /// packet after its first buffer (`more`, 0 for one buffer). A stage
    /// that moves or resizes the packet in its frame has replaced it (an
    /// ICMP error, a TCP reset): its later buffers are no longer part of
    /// it, and `more` becomes 0 (the batch frees them).
    #[inline]
    pub fn for_each_frame_chain(&mut self, pipeline: u8, mut f: impl FnMut(FrameMut<'_>, &mut u32)) {
        let umem = self.umem;
        let packets = self.pkts[..self.len].iter_mut().zip(self.flows.iter_mut()).zip(self.more.iter_mut());
        for ((meta, flow), more) in packets {
            if !meta.active(pipeline) {
                continue;
            }
            // SAFETY: the packet's own UMEM chunk, inside the mapping (a
            // packet of this batch); chunks are disjoint, each descriptor of
            // a batch names a distinct chunk, and the kernel does not touch
            // chunks held in a batch.
            let (frame, start, base) = unsafe { umem.chunk(meta) };
            let was = (meta.addr, meta.len);
            let chunk = umem.frame_size;
            f(FrameMut { meta, flow, frame, start, base, chunk }, more);
            if *more > 0 && (meta.addr, meta.len) != was {
                *more = 0;
            }
        }
    }

    /// [`Batch::for_each_frame`] for stages that may turn a packet into
    /// several: `f` also gets an [`Emit`] that appends packets in spare
    /// frames. Appended packets are not passed to `f`; the next stages
    /// see them after the batch's own.
    #[inline]
    pub fn for_each_frame_emit(&mut self, pipeline: u8, mut f: impl FnMut(FrameMut<'_>, &mut Emit<'_>)) {
        let umem = self.umem;
        let n = self.len;
        let (pkts, extra_pkts) = self.pkts.split_at_mut(n);
        let (flows, extra_flows) = self.flows.split_at_mut(n);
        let mut emit = Emit {
            metas: extra_pkts,
            flows: extra_flows,
            added: 0,
            spares: &mut self.spares,
            spare_len: &mut self.spare_len,
            umem,
        };
        for (meta, flow) in pkts.iter_mut().zip(flows.iter_mut()) {
            if !meta.active(pipeline) {
                continue;
            }
            // SAFETY: as in `for_each_frame_chain`; spare chunks handed out
            // by `emit` are distinct from every packet's chunk.
            let (frame, start, base) = unsafe { umem.chunk(meta) };
            let chunk = umem.frame_size;
            f(FrameMut { meta, flow, frame, start, base, chunk }, &mut emit);
        }
        // Emitted packets are whole in their spare frame.
        for m in &mut self.more[n..n + emit.added] {
            *m = 0;
        }
        self.len = n + emit.added;
    }

    /// The bytes of packet `i`, if there is one.
    pub fn packet(&self, i: usize) -> Option<&[u8]> {
        let m = self.pkts[..self.len].get(i)?;
        // SAFETY: a packet of this batch lies inside the mapping
        // ([`PacketMeta`]); the batch's frames are owned by this batch and no
        // `&mut` to them is live while `&self` is borrowed.
        Some(unsafe { std::slice::from_raw_parts(self.umem.base.add(m.addr as usize), m.len as usize) })
    }

    /// Copies `data` into UMEM at `addr` and appends it as a packet (tests,
    /// benches and the harness; workers receive frames from the kernel).
    pub fn push_copy(&mut self, addr: u64, data: &[u8], ingress: u8) -> bool {
        let Ok(len) = u32::try_from(data.len()) else { return false };
        if self.push(addr, len, ingress).is_err() {
            return false;
        }
        // SAFETY: `push` took the packet, so its bytes lie in one chunk
        // inside the mapping; `&mut self` means no other reference into the
        // batch's frames is live.
        unsafe { std::slice::from_raw_parts_mut(self.umem.base.add(addr as usize), data.len()) }
            .copy_from_slice(data);
        true
    }

    /// Copies `data` into UMEM at `addr` and appends it as the next buffer
    /// of the last packet, like [`Batch::push_tail`] (tests and the fuzz
    /// harness: a frame split over several buffers).
    pub fn push_tail_copy(&mut self, addr: u64, data: &[u8]) -> bool {
        let Some((start, end)) = self.umem.range(addr, data.len()) else { return false };
        // SAFETY: inside the mapping (checked); `&mut self` means no other
        // reference into the batch's frames is live.
        unsafe { std::slice::from_raw_parts_mut(self.umem.base.add(start), end - start) }
            .copy_from_slice(data);
        self.push_tail(addr, data.len() as u32)
    }

    /// The bytes of one tail buffer of [`Batch::tail`] (tests and the fuzz
    /// harness).
    pub fn tail_bytes(&self, (addr, len): TailBuf) -> Option<&[u8]> {
        let (start, end) = self.umem.range(addr, len as usize)?;
        // SAFETY: as in `packet`.
        Some(unsafe { std::slice::from_raw_parts(self.umem.base.add(start), end - start) })
    }

    /// Calls `f` for every packet of `pipeline` still marked `Continue`.
    #[inline]
    pub fn for_each(&mut self, pipeline: u8, mut f: impl FnMut(PacketMut<'_>)) {
        let umem = self.umem;
        let packets = self.pkts[..self.len].iter_mut().zip(self.flows.iter_mut()).zip(self.more.iter());
        for ((meta, flow), more) in packets {
            if !meta.active(pipeline) {
                continue;
            }
            // SAFETY: a packet of this batch lies inside the mapping
            // ([`PacketMeta`]). Each descriptor in a batch names a distinct
            // frame (the frame pool hands each frame out once), so no two
            // slices alias, and the kernel does not touch frames that sit in
            // an RX batch.
            let data = unsafe {
                std::slice::from_raw_parts_mut(umem.base.add(meta.addr as usize), meta.len as usize)
            };
            f(PacketMut { meta, flow, data, more: *more });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stages slice packets unchecked: a descriptor whose bytes are not in
    /// one chunk inside the mapping never enters a batch.
    #[test]
    fn descriptors_outside_umem_are_refused() {
        let mut mem = vec![0u8; 2 * 4096];
        // SAFETY: `mem` outlives the batch and is not used otherwise.
        let mut batch = Batch::new(unsafe { UmemView::of_slice(&mut mem) });
        for (addr, len) in [(4000, 200), (u64::MAX - 10, 64), (2 * 4096, 1), (8191, 2), (u64::MAX, 0)] {
            assert_eq!(batch.push(addr, len, 0), Err(PushError::OutsideUmem), "{addr} + {len}");
        }
        assert!(!batch.push_copy(4000, &[0; 200], 0), "push_copy too");
        assert_eq!(batch.len, 0);
        assert_eq!(batch.push(4096 + 4000, 96, 0), Ok(()), "the last bytes of the last chunk");
        assert_eq!(batch.push(0, 4096, 0), Ok(()), "a whole chunk");
        for _ in 2..MAX_BATCH {
            batch.push(256, 60, 0).unwrap();
        }
        assert_eq!(batch.push(256, 60, 0), Err(PushError::Full));
        assert_eq!(batch.packet(0).map(<[u8]>::len), Some(96));
    }

    /// A packet a stage emits lies in one chunk, even in a spare whose
    /// offset is not chunk-aligned.
    #[test]
    fn an_emitted_packet_lies_in_one_chunk() {
        let mut mem = vec![0u8; 2 * 4096 + 100];
        // SAFETY: `mem` outlives the batch and is not used otherwise.
        let mut batch = Batch::new(unsafe { UmemView::of_slice(&mut mem) }).with_spare_target(1);
        batch.push(256, 60, 0).unwrap();
        batch.top_up_spares(|| Some(4096 + 100));
        let mut pushed = Vec::new();
        batch.for_each_frame_emit(0, |p, emit| {
            // 4096 + 100 + 4000 crosses into the third chunk, past the mapping.
            pushed.push(emit.push(p.meta, p.flow, |_| Some((4000, 60))));
            pushed.push(emit.push(p.meta, p.flow, |_| Some((3000, 60))));
        });
        assert_eq!(pushed, [false, true]);
        assert_eq!(batch.len, 2);
        assert_eq!((batch.metas()[1].addr(), batch.metas()[1].len()), (4096 + 100 + 3000, 60));
    }

    /// A stage's new placement of its packet stays in the packet's chunk.
    #[test]
    fn a_packet_is_placed_only_inside_its_chunk() {
        let mut mem = vec![0u8; 2 * 4096];
        // SAFETY: `mem` outlives the batch and is not used otherwise.
        let mut batch = Batch::new(unsafe { UmemView::of_slice(&mut mem) });
        batch.push(4096 + 256, 60, 0).unwrap();
        let mut placed = Vec::new();
        batch.for_each_frame(0, |mut p| {
            assert_eq!((p.frame.len(), p.start), (4096, 256));
            placed.push(p.place(4000, 97));
            placed.push(p.place(usize::MAX, 2));
            placed.push(p.place(0, 1 << 33));
            placed.push(p.place(4096, 1));
            placed.push(p.place(128, 100));
        });
        assert_eq!(placed, [false, false, false, false, true]);
        assert_eq!((batch.metas()[0].addr(), batch.metas()[0].len()), (4096 + 128, 100));
    }
}
