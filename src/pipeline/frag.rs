//! Shallow virtual reassembly (VPP's `sv-reass`): IP fragments through NAT
//! without reassembling them.
//!
//! Only the first fragment carries the L4 header, so only it says which
//! flow a datagram belongs to. The table remembers, per datagram — keyed by
//! (source, destination, protocol, IP ID) for IPv4 and (source, destination,
//! Identification) for IPv6 (RFC 8200 §4.5) — the ports and protocol the
//! first fragment carried. A later fragment takes them from here and then
//! goes through conntrack and NAT like any packet of its flow, rewritten in
//! its IP header only; the first fragment's L4 checksum is corrected
//! incrementally, which is right for the whole datagram.
//!
//! Later fragments that arrive before their first are copied into a small
//! preallocated pool and replayed once the first has passed
//! ([`reinject`]); when the pool or the table is full they are dropped and
//! counted. Nothing here allocates after construction, and nothing a
//! fragment says can evict or rewrite a live entry: a first fragment that
//! disagrees with the one already seen, and fragments that overlap the
//! first one's data, are dropped (RFC 1858, RFC 3128, RFC 5722).
//!
//! Invariant: an entry is freed when its datagram's bytes have all passed
//! and no copy of it is held, or when it is older than the timeout; its
//! held copies go with it.

use super::conntrack::Tick;
use super::flow::FlowKey;
use super::maglev::flow_hash;
use super::{Batch, Ctx, DropReason, Verdict};
use crate::config::MAX_BATCH;
use crate::wire::parse::{FragKind, IpVersion, ParsedPacket};
use crate::wire::{ip_protocol, ipv6};

/// Slots probed from a key's hash before the table counts as full there.
const PROBE: usize = 8;
/// A held copy's capacity: one UMEM chunk.
pub const HELD_BYTES: usize = 4096;

/// Sizes and lifetime of a worker's fragment table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragLimits {
    /// Datagrams tracked at once (rounded up to a power of two).
    pub entries: usize,
    /// Later fragments held (by copy) while their first is awaited.
    pub held: usize,
    /// Seconds a datagram's entry lives at most.
    pub timeout: Tick,
}

impl Default for FragLimits {
    /// The config's defaults (`[fragments]`).
    fn default() -> FragLimits {
        let f = crate::config::Fragments::default();
        FragLimits {
            entries: f.entries_per_worker as usize,
            held: f.held_per_worker as usize,
            timeout: f.timeout,
        }
    }
}

/// Which datagram a fragment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FragId {
    src: [u8; 16],
    dst: [u8; 16],
    ident: u32,
    /// IPv4 only: IPv6 keys by (src, dst, Identification).
    proto: u8,
}

impl FragId {
    fn hash(&self) -> u64 {
        flow_hash(&self.src, &self.dst, (self.ident >> 16) as u16, self.ident as u16, self.proto)
    }
}

/// What one fragment's IP header says.
#[derive(Debug, Clone, Copy)]
pub struct Fragment {
    id: FragId,
    /// Offset of its data in the datagram's fragmentable part, in bytes.
    offset: u32,
    /// Bytes of data it carries.
    len: u32,
    more: bool,
    first: bool,
}

impl Fragment {
    /// The fragment fields of a parsed packet; None when it is not a fragment.
    pub fn of(frame: &[u8], pp: &ParsedPacket) -> Option<Fragment> {
        if pp.frag == FragKind::Whole {
            return None;
        }
        let ip = frame.get(pp.l3_offset..)?;
        let len = pp.l3_end.checked_sub(pp.l4_offset)? as u32;
        let (ident, offset, more, proto) = match pp.version {
            IpVersion::V4 => {
                let word = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
                let ident = u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]);
                (u32::from(ident), u32::from(word & 0x1fff) * 8, word & 0x2000 != 0, pp.tuple.proto)
            }
            IpVersion::V6 => {
                let f = ipv6::Packet::new_unchecked(ip).upper_layer().ok()?.frag?;
                (f.ident, u32::from(f.offset), f.more, 0)
            }
        };
        let id = FragId { src: pp.tuple.src, dst: pp.tuple.dst, ident, proto };
        Some(Fragment { id, offset, len, more, first: pp.frag == FragKind::First })
    }

    /// An IPv6 Fragment header with offset 0 and M clear (RFC 6946): the
    /// whole packet, to be processed without the table.
    pub fn is_atomic(&self) -> bool {
        self.first && !self.more
    }
}

/// What the table says about a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragVerdict {
    /// Go on as a packet of the flow with these ports and protocol.
    Pass {
        sport: u16,
        dport: u16,
        proto: u8,
    },
    /// Copied into the held pool: the frame is no longer needed.
    Held,
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    id: FragId,
    used: bool,
    born: Tick,
    /// Set by the first fragment.
    known: bool,
    sport: u16,
    dport: u16,
    proto: u8,
    /// Where the first fragment's data ends: later data must start here or after.
    first_end: u32,
    /// Datagram data length, once the last fragment (MF clear) has passed; 0 before.
    total: u32,
    /// Data bytes passed so far.
    passed: u32,
    /// Copies in the held pool.
    held: u16,
}

#[derive(Debug, Clone, Copy, Default)]
struct HeldSlot {
    used: bool,
    /// Its entry's datagram is known: replay it.
    ready: bool,
    entry: u32,
    len: u16,
    ingress: u8,
    offset: u32,
}

/// Counts of what the table refused or expired (on top of the drop reasons
/// of the packets themselves).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragCounts {
    /// Held copies dropped because their first fragment never came in time.
    pub held_expired: u64,
    /// Held copies dropped because the first fragment showed they overlap it.
    pub held_overlap: u64,
}

/// One worker's fragment table and held pool; preallocated, bounded.
pub struct FragTable {
    entries: Box<[Entry]>,
    mask: usize,
    slots: Box<[HeldSlot]>,
    data: Box<[u8]>,
    timeout: Tick,
    /// Ready held copies not yet replayed.
    ready: usize,
    /// Slots in use: 0 lets the per-batch expiry skip its scan.
    held: usize,
    pub counts: FragCounts,
}

impl FragTable {
    pub fn new(limits: FragLimits) -> FragTable {
        let n = limits.entries.max(PROBE).next_power_of_two();
        FragTable {
            entries: vec![Entry::default(); n].into_boxed_slice(),
            mask: n - 1,
            slots: vec![HeldSlot::default(); limits.held].into_boxed_slice(),
            data: vec![0u8; limits.held * HELD_BYTES].into_boxed_slice(),
            timeout: limits.timeout,
            ready: 0,
            held: 0,
            counts: FragCounts::default(),
        }
    }

    /// Datagrams tracked now (for gauges and tests).
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.used).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies held now.
    pub fn held(&self) -> usize {
        self.slots.iter().filter(|s| s.used).count()
    }

    fn live(&self, e: &Entry, now: Tick) -> bool {
        e.used && now.wrapping_sub(e.born) < self.timeout
    }

    /// The entry of `id`, or a free (or expired) slot for it; None when
    /// every probed slot holds a live datagram.
    fn find(&mut self, id: &FragId, now: Tick, create: bool) -> Option<usize> {
        let h = id.hash() as usize;
        let mut free = None;
        for i in 0..PROBE {
            let at = (h + i) & self.mask;
            let e = &self.entries[at];
            if self.live(e, now) {
                if e.id == *id {
                    return Some(at);
                }
            } else if free.is_none() {
                free = Some(at);
            }
        }
        let at = free.filter(|_| create)?;
        self.free_entry(at);
        self.entries[at] = Entry { id: *id, used: true, born: now, ..Entry::default() };
        Some(at)
    }

    /// Frees an entry and drops the copies it held (they timed out).
    fn free_entry(&mut self, at: usize) {
        if self.entries[at].held > 0 {
            for s in self.slots.iter_mut().filter(|s| s.used && s.entry as usize == at) {
                if s.ready {
                    self.ready -= 1;
                }
                *s = HeldSlot::default();
                self.held -= 1;
                self.counts.held_expired += 1;
            }
        }
        self.entries[at] = Entry::default();
    }

    /// Datagram bookkeeping after a fragment passed: free the entry once
    /// every byte has gone through and nothing is held.
    fn passed(&mut self, at: usize, frag: &Fragment) {
        let e = &mut self.entries[at];
        e.passed = e.passed.saturating_add(frag.len);
        if !frag.more {
            e.total = frag.offset + frag.len;
        }
        if e.total != 0 && e.passed >= e.total && e.held == 0 {
            self.entries[at] = Entry::default();
        }
    }

    /// Decides one fragment. `ports`: what a first fragment's L4 header
    /// says (sport, dport, proto). `bytes`/`ingress`: the frame, copied if
    /// it must be held.
    pub fn fragment(
        &mut self,
        frag: &Fragment,
        ports: (u16, u16, u8),
        bytes: &[u8],
        ingress: u8,
        now: Tick,
    ) -> FragVerdict {
        if let Err(r) = sane(frag, ports.2) {
            return FragVerdict::Drop(r);
        }
        let Some(at) = self.find(&frag.id, now, true) else {
            return FragVerdict::Drop(DropReason::FragmentTableFull);
        };
        let e = self.entries[at];
        if frag.first {
            if e.known {
                // A copy of the first fragment passes as the original did;
                // one that says something else is an attack or a mix-up,
                // and never replaces what the entry knows.
                let same = (e.sport, e.dport, e.proto) == ports && e.first_end == frag.len;
                return if same {
                    FragVerdict::Pass { sport: e.sport, dport: e.dport, proto: e.proto }
                } else {
                    FragVerdict::Drop(DropReason::FragmentBogus)
                };
            }
            if e.total != 0 && frag.len > e.total {
                return FragVerdict::Drop(DropReason::FragmentBogus);
            }
            let e = &mut self.entries[at];
            e.known = true;
            (e.sport, e.dport, e.proto) = ports;
            e.first_end = frag.len;
            self.release(at);
            self.passed(at, frag);
            return FragVerdict::Pass { sport: ports.0, dport: ports.1, proto: ports.2 };
        }
        if e.known && frag.offset < e.first_end {
            // RFC 1858 §4: data over the first fragment's is how an
            // overlapping fragment rewrites the L4 header after a filter saw it.
            return FragVerdict::Drop(DropReason::FragmentBogus);
        }
        let end = frag.offset + frag.len;
        if e.total != 0 && (end > e.total || (!frag.more && end != e.total)) {
            return FragVerdict::Drop(DropReason::FragmentBogus);
        }
        if e.known {
            self.passed(at, frag);
            return FragVerdict::Pass { sport: e.sport, dport: e.dport, proto: e.proto };
        }
        self.hold(at, frag, bytes, ingress)
    }

    fn hold(&mut self, at: usize, frag: &Fragment, bytes: &[u8], ingress: u8) -> FragVerdict {
        if bytes.len() > HELD_BYTES {
            return FragVerdict::Drop(DropReason::FragmentHeldFull);
        }
        let Some(i) = self.slots.iter().position(|s| !s.used) else {
            return FragVerdict::Drop(DropReason::FragmentHeldFull);
        };
        self.data[i * HELD_BYTES..i * HELD_BYTES + bytes.len()].copy_from_slice(bytes);
        self.slots[i] = HeldSlot {
            used: true,
            ready: false,
            entry: at as u32,
            len: bytes.len() as u16,
            ingress,
            offset: frag.offset,
        };
        self.entries[at].held += 1;
        self.held += 1;
        FragVerdict::Held
    }

    /// The first fragment of entry `at` has come: its held copies may be
    /// replayed, except those overlapping its data.
    fn release(&mut self, at: usize) {
        let first_end = self.entries[at].first_end;
        for s in self.slots.iter_mut().filter(|s| s.used && !s.ready && s.entry as usize == at) {
            if s.offset < first_end {
                *s = HeldSlot::default();
                self.entries[at].held -= 1;
                self.held -= 1;
                self.counts.held_overlap += 1;
            } else {
                s.ready = true;
                self.ready += 1;
            }
        }
    }

    /// What was counted since the last call, reset.
    pub fn take_counts(&mut self) -> FragCounts {
        std::mem::take(&mut self.counts)
    }

    /// Whether held copies wait to be replayed.
    pub fn has_ready(&self) -> bool {
        self.ready > 0
    }

    /// Hands each ready copy to `f` (bytes, ingress port) and frees its
    /// slot; stops when `f` returns false (no room). The copy's entry stays
    /// until the copy passes again, when it is counted.
    pub fn take_ready(&mut self, mut f: impl FnMut(&[u8], u8) -> bool) {
        for i in 0..self.slots.len() {
            if self.ready == 0 {
                return;
            }
            let s = self.slots[i];
            if !(s.used && s.ready) {
                continue;
            }
            let bytes = &self.data[i * HELD_BYTES..i * HELD_BYTES + usize::from(s.len)];
            if !f(bytes, s.ingress) {
                return;
            }
            self.slots[i] = HeldSlot::default();
            self.held -= 1;
            self.ready -= 1;
            let e = &mut self.entries[s.entry as usize];
            e.held = e.held.saturating_sub(1);
        }
    }

    /// Batch boundary: drops held copies whose entry timed out, so the
    /// pool does not fill with datagrams whose first fragment never came.
    pub fn expire(&mut self, now: Tick) {
        if self.held == 0 {
            return;
        }
        for i in 0..self.slots.len() {
            let s = self.slots[i];
            if s.used && !self.live(&self.entries[s.entry as usize], now) {
                self.free_entry(s.entry as usize);
            }
        }
    }
}

/// Checks one fragment on its own.
//= https://www.rfc-editor.org/rfc/rfc8200#section-4.5
//# If the length of a fragment, as derived from the fragment packet's
//# Payload Length field, is not a multiple of 8 octets and the M flag of
//# that fragment is 1, then that fragment must be discarded [...]
//# If the length and offset of a fragment are such that the Payload Length
//# of the packet reassembled from that fragment would exceed 65,535 octets,
//# then that fragment must be discarded [...]
//= https://www.rfc-editor.org/rfc/rfc3128#section-4
// (paraphrase) A TCP fragment with offset 1 (8 bytes) can overwrite the
// TCP flags and ports of the first; drop fragments that start inside the
// transport header.
fn sane(frag: &Fragment, proto: u8) -> Result<(), DropReason> {
    let bogus = Err(DropReason::FragmentBogus);
    if frag.len == 0 || (frag.more && !frag.len.is_multiple_of(8)) || frag.offset + frag.len > 65535 {
        return bogus;
    }
    let l4_header = match proto {
        ip_protocol::TCP => 20,
        ip_protocol::UDP | ip_protocol::ICMP | ip_protocol::ICMPV6 => 8,
        _ => 0,
    };
    // RFC 1858 §3: a first fragment too small to hold the whole header.
    if frag.first && frag.len < l4_header {
        return bogus;
    }
    if !frag.first && frag.offset < l4_header {
        return bogus;
    }
    Ok(())
}

/// Fills `key`'s ports and protocol for a fragment, or says what to do
/// with it instead. Atomic fragments (RFC 6946) pass as they are.
pub fn resolve(
    ctx: &mut Ctx,
    frame: &[u8],
    pp: &ParsedPacket,
    ingress: u8,
    key: &mut FlowKey,
) -> Result<(), Verdict> {
    let Some(frag) = Fragment::of(frame, pp) else {
        return Err(Verdict::Drop(DropReason::Fragment));
    };
    if frag.is_atomic() {
        return Ok(());
    }
    let t = &pp.tuple;
    match ctx.frag.fragment(&frag, (t.sport, t.dport, t.proto), frame, ingress, ctx.now) {
        FragVerdict::Pass { sport, dport, proto } => {
            key.sport = sport;
            key.dport = dport;
            key.proto = proto;
            Ok(())
        }
        FragVerdict::Held => Err(Verdict::Consumed),
        FragVerdict::Drop(r) => Err(Verdict::Drop(r)),
    }
}

/// Puts the held copies that may go now into `batch` (cleared first), each
/// at a frame `alloc` gives (a UMEM offset where the packet starts); the
/// caller processes and sends the batch like a received one. Returns how
/// many it put there.
pub fn reinject(ctx: &mut Ctx, batch: &mut Batch, mut alloc: impl FnMut() -> Option<u64>) -> usize {
    batch.clear();
    if !ctx.frag.has_ready() {
        return 0;
    }
    ctx.frag.take_ready(|bytes, ingress| {
        if batch.len() >= MAX_BATCH as usize {
            return false;
        }
        let Some(addr) = alloc() else { return false };
        batch.push_copy(addr, bytes, ingress)
    });
    batch.len()
}
