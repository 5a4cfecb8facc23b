//! Per-worker connection tracking table.
//!
//! Single-threaded owner, no locks or atomics, all memory allocated in
//! [`ConnTable::new`]; lookup, insert, remove and expiry never allocate.
//!
//! Layout: 8-way set-associative buckets with two candidate buckets per key
//! ("power of two choices", as in VPP's bihash/cuckoo tables without
//! displacement). Each bucket has a 32-byte tag line (8 x u32 partial hashes,
//! 0 = empty) kept apart from the 128-byte entries. Insert fills a key's
//! first bucket before its second, so at the load the table is sized for
//! nearly every lookup touches one tag line and the matching entry, and
//! [`ConnTable::prefetch`] warms that line for a whole batch first (the
//! second bucket's line is read for the rest, and for misses).
//! Two choices plus a one-step cuckoo relocation (move a resident to its own
//! other bucket) let a 1M-slot table reach ~92% occupancy before the first
//! refusal and ~99% after offering as many keys as slots (measured; two
//! choices alone refuse from ~71%).
//!
//! Time: [`Tick`] is a `u32` count of **seconds** from any monotonic origin
//! (see [`tick_from_ns`]); ages are computed with wrapping arithmetic, so only
//! differences matter. Expiry is lazy (lookup/insert reclaim what they touch)
//! plus amortised ([`ConnTable::expire_step`] scans a bounded slice per call,
//! [`ConnTable::sweep_due`] paces it to a full sweep every [`SWEEP_SECS`]).
//! Entries whose owner must hear of their death go to a fixed graveyard;
//! while it is full they do not die (see [`GRAVEYARD`]), so no notice, and
//! no SNAT port, is ever lost.
//!
//! The TCP state machine is a simplified Linux `nf_conntrack_proto_tcp.c`
//! (no window tracking); default timeouts are Linux's `tcp_timeouts[]`,
//! `nf_conntrack_proto_udp.c`, `nf_conntrack_proto_icmp.c` and
//! `nf_conntrack_proto_generic.c` values.

use super::flow::{proto, BackendId, ServiceId};
pub use super::flow::{EntryFlags, FlowKey, NatBinding, NatSums, Place};
use super::prefetch;
use super::slots::Slots;
pub use crate::config::{FullPolicy, Timeouts};
use crate::wire::checksum::Delta;

/// Coarse time in seconds (wrapping); see module docs.
pub type Tick = u32;

/// Converts a monotonic nanosecond clock to a [`Tick`].
#[inline]
pub fn tick_from_ns(ns: u64) -> Tick {
    (ns / 1_000_000_000) as Tick
}

/// Connection state. One byte; TCP states mirror Linux `enum tcp_conntrack`.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnState {
    /// TCP, nothing valid seen yet.
    #[default]
    TcpNone = 0,
    TcpSynSent,
    TcpSynRecv,
    TcpEstablished,
    TcpFinWait,
    TcpCloseWait,
    TcpLastAck,
    TcpTimeWait,
    TcpClose,
    /// UDP seen one way only.
    UdpUnreplied,
    /// UDP seen both ways ("stream").
    UdpReplied,
    /// ICMP / ICMPv6 echo.
    Icmp,
    /// Any other protocol.
    Generic,
}

impl ConnState {
    /// Every state, in discriminant order.
    pub const ALL: [ConnState; STATES] = [
        Self::TcpNone,
        Self::TcpSynSent,
        Self::TcpSynRecv,
        Self::TcpEstablished,
        Self::TcpFinWait,
        Self::TcpCloseWait,
        Self::TcpLastAck,
        Self::TcpTimeWait,
        Self::TcpClose,
        Self::UdpUnreplied,
        Self::UdpReplied,
        Self::Icmp,
        Self::Generic,
    ];

    /// Initial state of a new entry for protocol `proto`.
    pub const fn initial(proto: u8) -> Self {
        match proto {
            proto::TCP => Self::TcpNone,
            proto::UDP => Self::UdpUnreplied,
            proto::ICMP | proto::ICMPV6 => Self::Icmp,
            _ => Self::Generic,
        }
    }
}

/// Packet direction relative to the packet that created the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Original,
    Reply,
}

/// TCP header flag byte (wire bit positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;

    #[inline]
    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// Timeout of `state`, clamped below 2^31 so signed ages stay valid.
/// `TcpNone` (entry created before a valid SYN) uses `tcp_syn_sent`.
#[inline]
fn timeout_of(t: &Timeouts, state: ConnState) -> u32 {
    let secs = match state {
        ConnState::TcpNone | ConnState::TcpSynSent => t.tcp_syn_sent,
        ConnState::TcpSynRecv => t.tcp_syn_recv,
        ConnState::TcpEstablished => t.tcp_established,
        ConnState::TcpFinWait => t.tcp_fin_wait,
        ConnState::TcpCloseWait => t.tcp_close_wait,
        ConnState::TcpLastAck => t.tcp_last_ack,
        ConnState::TcpTimeWait => t.tcp_time_wait,
        ConnState::TcpClose => t.tcp_close,
        ConnState::UdpUnreplied => t.udp_unreplied,
        ConnState::UdpReplied => t.udp_replied,
        ConnState::Icmp => t.icmp,
        ConnState::Generic => t.generic,
    };
    secs.min(i32::MAX as u32)
}

/// Every state's timeout ([`timeout_of`]), indexed by the state, for the
/// normal and the alternative timeouts (`EntryFlags::ALT_TIMEOUTS`). The
/// per-packet expiry check loads one word; a `match` on the state compiled
/// to an indirect jump, mispredicted wherever states mix.
#[derive(Debug, Clone, Copy)]
struct Limits([[u32; STATES]; 2]);

/// Number of [`ConnState`]s.
const STATES: usize = ConnState::Generic as usize + 1;

impl Limits {
    /// Both rows from `t` (alternative timeouts start as the normal ones).
    fn new(t: &Timeouts) -> Limits {
        Limits([Self::row(t); 2])
    }

    fn row(t: &Timeouts) -> [u32; STATES] {
        let mut r = [0; STATES];
        for s in ConnState::ALL {
            r[s as usize] = timeout_of(t, s);
        }
        r
    }

    /// Replaces the normal (`alt == false`) or the alternative row.
    fn set(&mut self, alt: bool, t: &Timeouts) {
        self.0[usize::from(alt)] = Self::row(t);
    }

    #[inline(always)]
    fn get(&self, alt: bool, state: ConnState) -> u32 {
        self.0[usize::from(alt)][state as usize]
    }
}

/// What a new entry carries besides its key and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowValue {
    pub backend: Option<BackendId>,
    pub service: Option<ServiceId>,
    pub nat: NatBinding,
    /// The checksum change of `nat`, kept for the rewrite.
    pub sums: NatSums,
    /// Caller-defined bits (e.g. which NAT halves apply, DSR, affinity).
    pub flags: EntryFlags,
    /// Cached next-hop MAC (all zero = none) and the caller's tag telling
    /// whether it is still current.
    pub next_hop: [u8; 6],
    pub hop_tag: u16,
}

/// A table entry: the key, state and times in the first cache line, the
/// NAT record and its checksum change from the start of the second, where
/// they are copied out whole (no store-forwarding split on an odd offset).
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    key: FlowKey,
    /// Last time traffic refreshed this entry; expiry is `last_seen + timeout(state)`.
    pub last_seen: Tick,
    pub backend: Option<BackendId>,
    pub service: Option<ServiceId>,
    pub state: ConnState,
    pub flags: EntryFlags,
    /// Per-direction FIN seen: bit 0 original, bit 1 reply.
    fin_seen: u8,
    /// Next-hop MAC cached at creation (zero = none), valid while `hop_tag`
    /// matches the caller's current tag (e.g. its config generation).
    pub hop_tag: u16,
    pub next_hop: [u8; 6],
    /// When the owner last refreshed this flow's other entry (lets it do so
    /// every few seconds rather than per packet).
    pub peer_touched: Tick,
    pub nat: NatBinding,
    /// The checksum change of `nat`.
    pub sums: NatSums,
    /// When the flow was created (its age in `shunt conn list`); in the
    /// second cache line's padding, so the entry stays 128 bytes.
    pub created: Tick,
}

const _: () = assert!(core::mem::offset_of!(Entry, nat) == 64 && core::mem::size_of::<Entry>() == 128);

const FIN_ORIG: u8 = 1;
const FIN_REPLY: u8 = 2;
/// In `fin_seen`: a reply-direction packet was seen (half of "assured").
const SEEN_REPLY: u8 = 4;

impl Entry {
    const EMPTY: Entry = Entry {
        key: FlowKey::new([0; 16], [0; 16], 0, 0, 0),
        last_seen: 0,
        backend: None,
        service: None,
        state: ConnState::TcpNone,
        flags: EntryFlags::NONE,
        fin_seen: 0,
        nat: NatBinding { src: [0; 16], dst: [0; 16], sport: 0, dport: 0 },
        peer_touched: 0,
        created: 0,
        next_hop: [0; 6],
        hop_tag: 0,
        sums: NatSums { l3: Delta::ZERO, l4: Delta::ZERO },
    };

    #[cfg(test)]
    fn init(key: FlowKey, value: &FlowValue, now: Tick) -> Self {
        let mut e = Entry::EMPTY;
        e.fill(key, value, now);
        e
    }

    /// Makes this slot a new entry, field by field where it lies: built
    /// whole and then copied, the entry went through the stack.
    #[inline(always)]
    fn fill(&mut self, key: FlowKey, value: &FlowValue, now: Tick) {
        self.key = key;
        self.last_seen = now;
        self.backend = value.backend;
        self.service = value.service;
        self.state = ConnState::initial(key.proto);
        self.flags = value.flags;
        self.fin_seen = 0;
        self.hop_tag = value.hop_tag;
        self.next_hop = value.next_hop;
        self.peer_touched = now;
        self.nat = value.nat;
        self.sums = value.sums;
        self.created = now;
    }

    /// The entry's key (read-only: moving a key would break the index).
    #[inline]
    pub fn key(&self) -> &FlowKey {
        &self.key
    }

    /// Refreshes the idle timer; call for every accepted packet.
    #[inline]
    pub fn touch(&mut self, now: Tick) {
        self.last_seen = now;
    }

    /// Seconds until expiry under `t` at `now` (0 if expired).
    pub fn remaining(&self, t: &Timeouts, now: Tick) -> u32 {
        let age = now.wrapping_sub(self.last_seen) as i32;
        let timeout = timeout_of(t, self.state) as i32;
        if age < 0 {
            timeout as u32
        } else {
            timeout.saturating_sub(age).max(0) as u32
        }
    }

    /// `unassured_cap`: the longest an unassured entry may idle (the
    /// table's pressure timeout while it is nearly full, else `u32::MAX`).
    #[inline]
    fn expired(&self, limits: &Limits, unassured_cap: u32, now: Tick) -> bool {
        // Signed age: a `now` slightly behind `last_seen` is not "ancient".
        let age = now.wrapping_sub(self.last_seen) as i32;
        let mut timeout = limits.get(self.flags.contains(EntryFlags::ALT_TIMEOUTS), self.state);
        if unassured_cap != u32::MAX && !self.assured() {
            timeout = timeout.min(unassured_cap);
        }
        age >= timeout as i32
    }

    /// Whether the flow has seen traffic both ways and (TCP) finished its
    /// handshake: Linux's `IPS_ASSURED`. Unassured entries are what a
    /// spoofed-source flood creates; only they are ever dropped early.
    #[inline]
    pub fn assured(&self) -> bool {
        self.fin_seen & SEEN_REPLY != 0
            && !matches!(self.state, ConnState::TcpNone | ConnState::TcpSynSent | ConnState::TcpSynRecv)
    }

    /// Whether a reply-direction packet has been seen.
    #[inline]
    pub fn replied(&self) -> bool {
        self.fin_seen & SEEN_REPLY != 0
    }

    /// Records that the flow's reply direction has been seen.
    #[inline]
    pub fn mark_replied(&mut self) {
        self.fin_seen |= SEEN_REPLY;
    }

    /// Current TCP state, or `None` for non-TCP entries.
    pub fn tcp_state(&self) -> Option<ConnState> {
        (self.state as u8 <= ConnState::TcpClose as u8).then_some(self.state)
    }

    /// TCP tracking, simplified from Linux `tcp_conntracks[2][6][]` (no
    /// sequence/window checks). Flag precedence as in `get_conntrack_index`:
    /// RST, then SYN(+ACK), then FIN, then ACK. Returns the new state.
    ///
    /// * SYN orig: None/TimeWait/Close -> SynSent (TIME_WAIT reuse).
    /// * SYN+ACK reply: SynSent -> SynRecv.
    /// * ACK orig: SynRecv -> Established; ACK in None -> Established
    ///   (mid-stream pickup, Linux `nf_conntrack_tcp_loose=1`).
    /// * FIN in SynRecv/Established -> FinWait; the other side's ACK ->
    ///   CloseWait; the other side's FIN -> LastAck; then ACK -> TimeWait.
    /// * RST any direction -> Close.
    ///
    /// Anything else leaves the state unchanged (Linux: sIG/sIV).
    #[inline]
    pub fn on_tcp(&mut self, dir: Direction, flags: TcpFlags) -> ConnState {
        use ConnState::*;
        // Nearly every segment: no SYN, FIN or RST on an established
        // connection changes nothing (and skips the state match below).
        if self.state == TcpEstablished && flags.0 & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST) == 0 {
            return TcpEstablished;
        }
        if self.tcp_state().is_none() {
            return self.state;
        }
        let (mine, other) = match dir {
            Direction::Original => (FIN_ORIG, FIN_REPLY),
            Direction::Reply => (FIN_REPLY, FIN_ORIG),
        };
        let s = self.state;
        let next = if flags.has(TcpFlags::RST) {
            TcpClose
        } else if flags.has(TcpFlags::SYN) {
            match (flags.has(TcpFlags::ACK), dir, s) {
                (false, Direction::Original, TcpNone | TcpSynSent | TcpTimeWait | TcpClose) => {
                    self.fin_seen = 0;
                    TcpSynSent
                }
                (true, Direction::Reply, TcpSynSent | TcpSynRecv) => TcpSynRecv,
                _ => s,
            }
        } else if flags.has(TcpFlags::FIN) {
            let first = self.fin_seen & other == 0;
            self.fin_seen |= mine;
            match s {
                TcpSynRecv | TcpEstablished => TcpFinWait,
                TcpFinWait | TcpCloseWait if !first => TcpLastAck,
                _ => s,
            }
        } else if flags.has(TcpFlags::ACK) {
            match (dir, s) {
                (Direction::Original, TcpSynRecv | TcpNone) => TcpEstablished,
                // The peer of the FIN sender acknowledges it.
                (_, TcpFinWait) if self.fin_seen & mine == 0 => TcpCloseWait,
                (_, TcpLastAck) => TcpTimeWait,
                _ => s,
            }
        } else {
            s
        };
        self.state = next;
        next
    }

    /// UDP: a reply makes the flow a stream (longer timeout), as in Linux.
    pub fn on_udp(&mut self, dir: Direction) -> ConnState {
        if dir == Direction::Reply && self.state == ConnState::UdpUnreplied {
            self.state = ConnState::UdpReplied;
        }
        self.state
    }
}

/// What one [`ConnTable::expire_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    /// Slots looked at.
    pub scanned: usize,
    /// Expired entries reclaimed among them.
    pub reclaimed: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// Both candidate buckets hold live entries and the policy is `Drop`.
    Full,
}

impl core::fmt::Display for InsertError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("conntrack buckets full")
    }
}

impl std::error::Error for InsertError {}

/// Monotonic event counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// New entries created (including over expired or evicted slots).
    pub inserts: u64,
    /// Inserts of a key that was already live (value overwritten).
    pub updates: u64,
    pub insert_failed_full: u64,
    pub evictions: u64,
    /// Unassured entries dropped to make room for a new flow (Linux's
    /// `early_drop`); counted apart from `evictions` of assured ones.
    pub early_drops: u64,
    /// Entries moved to their other bucket to make room (cuckoo step).
    pub relocations: u64,
    /// Entries reclaimed after their timeout (lazily or by `expire_step`).
    pub expired: u64,
    pub removes: u64,
    /// Deaths put off because the graveyard was full: the expired entry
    /// stays (holding its slot) until the owner drains the graveyard, and
    /// an insert that needed the slot is refused. Never a lost notice.
    pub deaths_deferred: u64,
}

pub use crate::config::DEFAULT_PRESSURE_TIMEOUT;

/// Dead entries held between drains. Nothing that dies is ever dropped:
/// with the graveyard full, entries that would die stay in place (see
/// [`ConnTable::expire_step`]), so this size only bounds the work between
/// two drains.
pub const GRAVEYARD: usize = 4096;

/// A full expiry sweep is due at least this often (seconds), busy or idle:
/// see [`ConnTable::sweep_due`].
pub const SWEEP_SECS: u32 = 4;

/// Ways per bucket.
pub const WAYS: usize = 8;
const MIN_SLOTS: usize = 2 * WAYS;
/// Upper bound on slots (128 GiB of entries); larger requests are clamped.
pub const MAX_SLOTS: usize = 1 << 30;

/// Slots of a table asked for `capacity` (see [`ConnTable::new`]).
pub fn slots_for(capacity: usize) -> usize {
    capacity.clamp(MIN_SLOTS, MAX_SLOTS).checked_next_power_of_two().unwrap_or(MAX_SLOTS).min(MAX_SLOTS)
}

/// Where a table's tag lines and entries sit in external memory (byte
/// offsets in the mapping handed to [`ConnTable::in_mapping`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLayout {
    pub slots: usize,
    pub tags_at: usize,
    pub entries_at: usize,
    /// First byte after the entries.
    pub end: usize,
}

impl MemoryLayout {
    /// A table of `capacity` placed from byte `base` (a multiple of 64).
    pub fn new(capacity: usize, base: usize) -> MemoryLayout {
        let slots = slots_for(capacity);
        // At least two tag lines of 32 bytes: entries start 64-aligned.
        let entries_at = base + slots / WAYS * core::mem::size_of::<Tags>();
        MemoryLayout {
            slots,
            tags_at: base,
            entries_at,
            end: entries_at + slots * core::mem::size_of::<Entry>(),
        }
    }
}

/// What [`ConnTable::in_mapping`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Adopted {
    /// Entries that passed the per-entry rule.
    pub kept: usize,
    /// Occupied slots that failed it (cleared).
    pub invalid: usize,
}

/// Fingerprint of the in-memory layout of the table (sizes and field
/// offsets): state written by a build with other entries is refused. A
/// change of meaning without a change of layout (a new state or flag bit)
/// must bump `crate::state`'s version instead.
pub const LAYOUT: u64 = {
    use core::mem::{align_of, offset_of, size_of};
    let parts = [
        size_of::<Entry>(),
        align_of::<Entry>(),
        size_of::<Tags>(),
        WAYS,
        size_of::<FlowKey>(),
        size_of::<NatBinding>(),
        offset_of!(Entry, key),
        offset_of!(Entry, last_seen),
        offset_of!(Entry, backend),
        offset_of!(Entry, service),
        offset_of!(Entry, state),
        offset_of!(Entry, flags),
        offset_of!(Entry, fin_seen),
        offset_of!(Entry, nat),
        offset_of!(Entry, peer_touched),
        offset_of!(Entry, next_hop),
        offset_of!(Entry, hop_tag),
        offset_of!(Entry, created),
        offset_of!(Entry, sums),
        ConnState::Generic as usize,
    ];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < parts.len() {
        h = (h ^ parts[i] as u64).wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
};

#[repr(C, align(32))]
#[derive(Clone, Copy, Default)]
struct Tags([u32; WAYS]);

impl Tags {
    /// The ways that hold `tag`: bit `w` for way `w`. Two vector compares
    /// packed into one byte mask, not eight compares and branches.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn matching(&self, tag: u32) -> u32 {
        use core::arch::x86_64::{
            __m128i, _mm_cmpeq_epi32, _mm_load_si128, _mm_movemask_epi8, _mm_packs_epi16, _mm_packs_epi32,
            _mm_set1_epi32,
        };
        let a = self.0.as_ptr().cast::<__m128i>();
        // SAFETY: a `Tags` is 32 bytes aligned to 32, so both halves are in
        // bounds and 16-byte aligned for `_mm_load_si128`; SSE2 is baseline
        // on x86_64. A matching lane is all ones (-1), which the saturating
        // packs keep as -1 down to one byte per way (the low 8 of the mask;
        // the high 8 repeat them).
        unsafe {
            let k = _mm_set1_epi32(tag as i32);
            let eq = |p: *const __m128i| _mm_cmpeq_epi32(_mm_load_si128(p), k);
            let ways = _mm_packs_epi32(eq(a), eq(a.add(1)));
            (_mm_movemask_epi8(_mm_packs_epi16(ways, ways)) & 0xFF) as u32
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[inline(always)]
    fn matching(&self, tag: u32) -> u32 {
        let mut m = 0;
        for (w, &t) in self.0.iter().enumerate() {
            m |= u32::from(t == tag) << w;
        }
        m
    }
}

/// The connection table. See module docs.
pub struct ConnTable {
    tags: Slots<Tags>,
    entries: Slots<Entry>,
    bucket_mask: usize,
    len: usize,
    cursor: usize,
    timeouts: Timeouts,
    /// These and the alternative timeouts, by state, for the expiry check.
    limits: Limits,
    policy: FullPolicy,
    /// Idle limit of unassured entries while `len >= pressure_at`.
    pressure_timeout: u32,
    pressure_at: usize,
    counters: Counters,
    /// Dead `EntryFlags::NOTIFY_ON_DEATH` entries not yet drained.
    graveyard: Box<[Entry]>,
    graves: usize,
    /// Slots the expiry sweep still owes ([`ConnTable::sweep_due`]), the
    /// tick they were last reckoned at, the calls in that tick and the one
    /// before (at least 1), and each call's part of what was owed then.
    sweep_owed: usize,
    sweep_tick: Tick,
    sweep_calls: usize,
    sweep_calls_before: usize,
    sweep_share: usize,
}

/// Candidate buckets and tag derived from a 64-bit hash: low bits pick the
/// first bucket, the high 32 bits are the tag, the second bucket is the first
/// XOR a tag-derived non-zero offset (always distinct when >1 bucket).
#[inline(always)]
fn place(hash: u64, mask: usize) -> (usize, usize, u32) {
    let tag = ((hash >> 32) as u32).max(1);
    let b1 = (hash as usize) & mask;
    (b1, b1 ^ alt_offset(tag, mask), tag)
}

/// XOR distance between a key's two buckets; depends on the tag only, so an
/// entry's other bucket is computable from where it sits (cuckoo-filter
/// style partial-key relocation).
#[inline(always)]
fn alt_offset(tag: u32, mask: usize) -> usize {
    let d = (tag.wrapping_mul(0x9e37_79b9) as usize) & mask;
    if d == 0 {
        1 & mask
    } else {
        d
    }
}

impl ConnTable {
    /// Allocates `capacity` slots rounded up to a power of two (min 16,
    /// clamped to [`MAX_SLOTS`]). Size it ~1.1x the flows you must hold: a
    /// refusal/eviction can start from ~92% occupancy.
    pub fn new(capacity: usize, timeouts: Timeouts, full_policy: FullPolicy) -> Self {
        let buckets = slots_for(capacity) / WAYS;
        let tags = Slots::heap(Tags::default(), buckets);
        let entries = Slots::heap(Entry::EMPTY, buckets * WAYS);
        Self::over(tags, entries, timeouts, full_policy)
    }

    fn over(tags: Slots<Tags>, entries: Slots<Entry>, timeouts: Timeouts, full_policy: FullPolicy) -> Self {
        let slots = entries.len();
        let buckets = tags.len();
        Self {
            tags,
            entries,
            bucket_mask: buckets - 1,
            len: 0,
            cursor: 0,
            timeouts,
            limits: Limits::new(&timeouts),
            policy: full_policy,
            pressure_timeout: DEFAULT_PRESSURE_TIMEOUT,
            pressure_at: slots / 4 * 3,
            counters: Counters::default(),
            graveyard: vec![Entry::EMPTY; GRAVEYARD].into_boxed_slice(),
            graves: 0,
            sweep_owed: 0,
            sweep_tick: 0,
            sweep_calls: 0,
            sweep_calls_before: 1,
            sweep_share: 0,
        }
    }

    /// Total slots.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Occupied slots, including expired entries not yet reclaimed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Under pressure (three quarters of the slots in use) unassured
    /// entries idle at most `secs` (Linux lowers nothing; a SYN flood fills
    /// a table in a second, and 120 s of SYN_SENT keeps it full).
    pub fn set_pressure_timeout(&mut self, secs: u32) {
        self.pressure_timeout = secs.clamp(1, i32::MAX as u32);
    }

    /// The idle cap of unassured entries now ([`Entry::expired`]).
    #[inline]
    fn unassured_cap(&self) -> u32 {
        if self.len >= self.pressure_at {
            self.pressure_timeout
        } else {
            u32::MAX
        }
    }

    /// Timeouts for entries flagged `EntryFlags::ALT_TIMEOUTS`.
    pub fn set_alt_timeouts(&mut self, t: Timeouts) {
        self.limits.set(true, &t);
    }

    /// Replaces the timeouts; applies to existing entries at their next check.
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
        self.limits.set(false, &t);
    }

    /// Where `hash`'s entry can sit, for the `*_at` calls: computed once
    /// per packet, not once per pass.
    #[inline]
    pub fn place(&self, hash: u64) -> Place {
        let (b1, b2, tag) = place(hash, self.bucket_mask);
        Place { b1: b1 as u32, b2: b2 as u32, tag }
    }

    /// Prefetches the tag line a lookup of `hash` reads first (call for a
    /// whole batch before looking any of it up, VPP style). No-op off x86_64.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        self.prefetch_at(self.place(hash));
    }

    /// [`Self::prefetch`] at a place from [`Self::place`]: the first
    /// bucket's tag line only, where nearly every key is (see
    /// [`Self::insert`]); [`Self::prefetch_entry_at`] fetches the second's
    /// when the first holds no match.
    #[inline]
    pub fn prefetch_at(&self, at: Place) {
        self.prefetch_tags(at.b1 as usize);
    }

    #[inline(always)]
    fn prefetch_tags(&self, b: usize) {
        if let Some(t) = self.tags.get(b) {
            prefetch::lines(t, 1);
        }
    }

    /// Second prefetch stage: once the tag lines are cached (after
    /// [`Self::prefetch`]), prefetches the first entry whose tag matches
    /// `hash` (normally the only one), so the key compare in
    /// [`Self::lookup`] hits cache.
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) {
        self.prefetch_entry_at(self.place(hash));
    }

    /// [`Self::prefetch_entry`] at a place from [`Self::place`].
    #[inline]
    pub fn prefetch_entry_at(&self, at: Place) {
        if !self.prefetch_first_way(at.b1 as usize, at.tag) {
            // Not in its first bucket (a new flow, or one of the few
            // placed in the second): that bucket's tags are next.
            self.prefetch_tags(at.b2 as usize);
        }
    }

    /// Prefetches both lines (key and state in the first, the NAT record
    /// every packet reads in the second) of bucket `b`'s first way whose
    /// tag is `tag`; false when none is.
    #[inline(always)]
    fn prefetch_first_way(&self, b: usize, tag: u32) -> bool {
        let m = self.tags.get(b).map_or(0, |t| t.matching(tag));
        if let Some(e) = self.entries.get(b * WAYS + m.trailing_zeros() as usize).filter(|_| m != 0) {
            prefetch::lines(e, 2);
        }
        m != 0
    }

    /// For a key about to be inserted (a lookup at `at` missed): prefetches
    /// the entry insert will fill, the first free way of the key's first
    /// bucket, whose tags the lookup already brought in.
    #[inline]
    pub fn prefetch_insert_at(&self, at: Place) {
        self.prefetch_first_way(at.b1 as usize, 0); // a free way's tag is 0
    }

    /// Whether slot `i`'s entry may die now: one whose owner asked to be
    /// told (`EntryFlags::NOTIFY_ON_DEATH`) needs a free grave.
    #[inline]
    fn can_die(&self, i: usize) -> bool {
        self.graves < self.graveyard.len() || !self.entries[i].flags.contains(EntryFlags::NOTIFY_ON_DEATH)
    }

    /// Clears slot (bucket `b`, way `w`) of an entry that died (expired or
    /// dropped for room), burying it if its owner asked to be told. Returns
    /// false, changing nothing, when it cannot ([`Self::can_die`]): the
    /// entry stays until the owner has drained the graveyard, so no death
    /// (and no SNAT port an entry holds) is ever lost.
    #[inline]
    fn clear(&mut self, b: usize, w: usize) -> bool {
        let i = b * WAYS + w;
        if !self.can_die(i) {
            self.counters.deaths_deferred += 1;
            return false;
        }
        self.tags[b].0[w] = 0;
        self.len -= 1;
        let e = &self.entries[i];
        if e.flags.contains(EntryFlags::NOTIFY_ON_DEATH) {
            if let Some(slot) = self.graveyard.get_mut(self.graves) {
                *slot = *e;
                self.graves += 1;
            }
        }
        true
    }

    /// Whether the graveyard is full (entries that would die wait for
    /// [`Self::pop_dead`] to make room).
    pub fn graveyard_full(&self) -> bool {
        self.graves >= self.graveyard.len()
    }

    /// Takes one `EntryFlags::NOTIFY_ON_DEATH` entry that died since it was last
    /// asked. Call until None once per batch.
    pub fn pop_dead(&mut self) -> Option<Entry> {
        self.graves = self.graves.checked_sub(1)?;
        self.graveyard.get(self.graves).copied()
    }

    /// Bucket and way of a key matching `tag`, whether live or expired.
    // Always inlined: the per-packet lookup's inner loop; a call costs about
    // 20 instructions a packet (callgrind), and the inliner's choice drifts.
    // The first bucket first: insert fills it before the second, so the
    // second is read (a cache line more) only for the few keys there, and
    // for misses.
    #[inline(always)]
    fn find(&self, key: &FlowKey, b1: usize, b2: usize, tag: u32) -> Option<(usize, usize)> {
        self.find_by(key, b1, b2, tag, |e, k| e == k)
    }

    /// [`Self::find`] for a key being inserted, which rarely has an entry:
    /// the compare, run only on a tag match, is a call, so the key is not
    /// loaded (and its words kept in registers or spilled) before the loop,
    /// as the inlined compare's loads are, for nothing.
    #[inline(always)]
    fn find_new(&self, key: &FlowKey, b1: usize, b2: usize, tag: u32) -> Option<(usize, usize)> {
        #[inline(never)]
        fn same(e: &FlowKey, k: &FlowKey) -> bool {
            e == k
        }
        self.find_by(key, b1, b2, tag, same)
    }

    #[inline(always)]
    fn find_by(
        &self,
        key: &FlowKey,
        b1: usize,
        b2: usize,
        tag: u32,
        same: impl Fn(&FlowKey, &FlowKey) -> bool,
    ) -> Option<(usize, usize)> {
        for b in [b1, b2] {
            let mut m = self.tags[b].matching(tag);
            while m != 0 {
                let w = m.trailing_zeros() as usize;
                m &= m - 1;
                if same(&self.entries[b * WAYS + w].key, key) {
                    return Some((b, w));
                }
            }
        }
        None
    }

    /// Live entry for `key`; an expired match is reclaimed and reported absent.
    /// `hash` must be the same value used at insert (e.g. [`FlowKey::hash`]).
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, hash: u64, now: Tick) -> Option<&mut Entry> {
        self.lookup_at(key, self.place(hash), now)
    }

    /// [`Self::lookup`] at the key's place from [`Self::place`] (of the
    /// table as it is: no resize in between).
    #[inline(always)]
    pub fn lookup_at(&mut self, key: &FlowKey, at: Place, now: Tick) -> Option<&mut Entry> {
        let (b, w) = self.find(key, at.b1 as usize, at.b2 as usize, at.tag)?;
        let cap = self.unassured_cap();
        if self.entries[b * WAYS + w].expired(&self.limits, cap, now) {
            // Absent either way; reclaimed later if the graveyard is full.
            if self.clear(b, w) {
                self.counters.expired += 1;
            }
            return None;
        }
        Some(&mut self.entries[b * WAYS + w])
    }

    /// Inserts a new flow (state = [`ConnState::initial`] of `key.proto`,
    /// `last_seen = now`). A live entry with the same key is overwritten
    /// (`updates`), like `HashMap::insert`. When both candidate buckets are
    /// full, expired entries there are reclaimed first, then the policy
    /// applies; only the chosen slot is ever written.
    #[inline(always)]
    pub fn insert(
        &mut self,
        key: FlowKey,
        hash: u64,
        value: FlowValue,
        now: Tick,
    ) -> Result<&mut Entry, InsertError> {
        self.insert_sparing(key, self.place(hash), value, now, None)
    }

    /// [`ConnTable::insert`] at the key's place from [`Self::place`] (of the
    /// table as it is: no resize in between), for a key a lookup at `at`
    /// has just missed.
    #[inline(always)]
    pub fn insert_at(
        &mut self,
        key: FlowKey,
        at: Place,
        value: FlowValue,
        now: Tick,
    ) -> Result<&mut Entry, InsertError> {
        self.insert_sparing(key, at, value, now, None)
    }

    /// [`ConnTable::insert_at`] for the second entry of a flow: making room
    /// never displaces `sibling`, the flow's first entry (young and
    /// unassured, it is otherwise the first candidate for an early drop).
    #[inline(always)]
    pub fn insert_beside(
        &mut self,
        key: FlowKey,
        at: Place,
        value: FlowValue,
        now: Tick,
        sibling: &FlowKey,
    ) -> Result<&mut Entry, InsertError> {
        self.insert_sparing(key, at, value, now, Some(sibling))
    }

    // Inline in its callers: the slot is claimed first and the entry
    // written after, so the value is built where it is stored; passed to
    // the out-of-line cases as well, it went through the stack field by
    // field (about 30 instructions an entry).
    #[inline(always)]
    fn insert_sparing(
        &mut self,
        key: FlowKey,
        at: Place,
        value: FlowValue,
        now: Tick,
        spare: Option<&FlowKey>,
    ) -> Result<&mut Entry, InsertError> {
        let i = self.claim(&key, at, now, spare)?;
        let e = &mut self.entries[i];
        e.fill(key, &value, now);
        Ok(e)
    }

    /// The slot `key`'s new entry goes to: its old entry's (a live one is
    /// overwritten, an expired one dies and is reborn there), else a free
    /// way, else one made free. The caller fills it.
    #[inline(always)]
    fn claim(
        &mut self,
        key: &FlowKey,
        at: Place,
        now: Tick,
        spare: Option<&FlowKey>,
    ) -> Result<usize, InsertError> {
        let (b1, b2, tag) = (at.b1 as usize, at.b2 as usize, at.tag);
        if let Some((b, w)) = self.find_new(key, b1, b2, tag) {
            return self.claim_own(b, w, tag, now);
        }
        // The first bucket while it has a free way, then the second: a
        // lookup reads the first bucket's tags and, for nearly every key,
        // no more (three cache lines a packet, not four). A free way's tag
        // is 0, so one vector match finds them all.
        let free = [b1, b2].into_iter().find_map(|b| {
            let free = self.tags[b].matching(0);
            (free != 0).then(|| (b, free.trailing_zeros() as usize))
        });
        let Some((b, w)) = free else {
            return self.make_room(b1, b2, tag, now, spare);
        };
        Ok(self.occupy(b, w, tag))
    }

    /// Takes the free slot (bucket `b`, way `w`) for a new entry tagged `tag`.
    #[inline(always)]
    fn occupy(&mut self, b: usize, w: usize, tag: u32) -> usize {
        self.tags[b].0[w] = tag;
        self.len += 1;
        self.counters.inserts += 1;
        b * WAYS + w
    }

    /// The slot of an insert whose key has an entry at (bucket `b`, way
    /// `w`): a live one is overwritten, an expired one dies and is reborn.
    #[inline(never)]
    fn claim_own(&mut self, b: usize, w: usize, tag: u32, now: Tick) -> Result<usize, InsertError> {
        let i = b * WAYS + w;
        if self.entries[i].expired(&self.limits, self.unassured_cap(), now) {
            // Died and reborn in place: its owner must still hear of it.
            if !self.clear(b, w) {
                self.counters.insert_failed_full += 1;
                return Err(InsertError::Full);
            }
            self.counters.expired += 1;
            return Ok(self.occupy(b, w, tag));
        }
        self.counters.updates += 1;
        Ok(i)
    }

    /// An insert whose buckets are both full: expired entries there are
    /// reclaimed, then one moved to its other bucket, then the policy
    /// decides (early drop of an unassured entry, eviction, or refusal).
    #[cold]
    #[inline(never)]
    fn make_room(
        &mut self,
        b1: usize,
        b2: usize,
        tag: u32,
        now: Tick,
        spare: Option<&FlowKey>,
    ) -> Result<usize, InsertError> {
        let cap = self.unassured_cap();
        let mut slot = None;
        // Reclaim expired ones, remember the oldest live unassured one and
        // the oldest live one.
        let mut oldest: Option<(usize, usize, i64)> = None;
        let mut oldest_unassured: Option<(usize, usize, i64)> = None;
        for b in [b1, b2] {
            for w in 0..WAYS {
                if self.tags[b].0[w] == 0 {
                    continue; // freed earlier in this loop (b1 == b2 case)
                }
                let e = &self.entries[b * WAYS + w];
                if e.expired(&self.limits, cap, now) {
                    if self.clear(b, w) {
                        self.counters.expired += 1;
                        slot.get_or_insert((b, w));
                    }
                } else if spare != Some(&e.key) && self.can_die(b * WAYS + w) {
                    let age = i64::from(now.wrapping_sub(e.last_seen) as i32);
                    let older = |o: &Option<(usize, usize, i64)>| o.is_none_or(|(_, _, a)| age > a);
                    if !e.assured() && older(&oldest_unassured) {
                        oldest_unassured = Some((b, w, age));
                    }
                    if older(&oldest) {
                        oldest = Some((b, w, age));
                    }
                }
            }
        }
        if slot.is_none() {
            slot = self.relocate_one(b1, b2);
        }
        // Linux's early_drop: a new flow may displace a flow that never
        // saw a reply, never an assured one. Only `EvictOldest` goes on
        // to the oldest assured entry.
        if let (None, Some((b, w, _))) = (slot, oldest_unassured) {
            if self.clear(b, w) {
                self.counters.early_drops += 1;
                slot = Some((b, w));
            }
        }
        if slot.is_none() {
            match (self.policy, oldest) {
                (FullPolicy::EvictOldest, Some((b, w, _))) if self.clear(b, w) => {
                    self.counters.evictions += 1;
                    slot = Some((b, w));
                }
                _ => {
                    self.counters.insert_failed_full += 1;
                    return Err(InsertError::Full);
                }
            }
        }
        let Some((b, w)) = slot else {
            self.counters.insert_failed_full += 1;
            return Err(InsertError::Full);
        };
        Ok(self.occupy(b, w, tag))
    }

    /// One-step cuckoo displacement: moves some entry of `b1`/`b2` to its
    /// other bucket if that has a free way, returning the freed slot. Reads up
    /// to 16 more tag lines, only when both candidate buckets are full.
    fn relocate_one(&mut self, b1: usize, b2: usize) -> Option<(usize, usize)> {
        for b in [b1, b2] {
            for w in 0..WAYS {
                let tag = self.tags[b].0[w];
                let alt = b ^ alt_offset(tag, self.bucket_mask);
                if tag == 0 || alt == b1 || alt == b2 {
                    continue;
                }
                if let Some(w2) = self.tags[alt].0.iter().position(|&x| x == 0) {
                    self.entries[alt * WAYS + w2] = self.entries[b * WAYS + w];
                    self.tags[alt].0[w2] = tag;
                    self.tags[b].0[w] = 0;
                    self.counters.relocations += 1;
                    return Some((b, w));
                }
            }
        }
        None
    }

    /// Removes `key` whether live or expired, returning the entry.
    pub fn remove(&mut self, key: &FlowKey, hash: u64) -> Option<Entry> {
        let (b1, b2, tag) = place(hash, self.bucket_mask);
        let (b, w) = self.find(key, b1, b2, tag)?;
        // Removal is the caller's own act: it gets the entry, not a notice.
        self.tags[b].0[w] = 0;
        self.len -= 1;
        self.counters.removes += 1;
        Some(self.entries[b * WAYS + w])
    }

    /// Scans the next `budget` slots from a rotating cursor and reclaims
    /// expired entries. Call once per batch with a small budget (e.g. 64):
    /// a full sweep takes capacity/budget calls. Stops early, at the entry
    /// it could not bury, when the graveyard is full: drain it
    /// ([`Self::pop_dead`]) and call again for the rest of the budget.
    pub fn expire_step(&mut self, now: Tick, budget: usize) -> Swept {
        let slots = self.entries.len();
        let mut swept = Swept::default();
        let cap = self.unassured_cap();
        let budget = budget.min(slots);
        // A bucket at a time: its live ways from one tag compare, so empty
        // slots cost no branch each (half the table is empty, at random).
        'sweep: while swept.scanned < budget {
            let i = self.cursor;
            let (b, from) = (i / WAYS, i % WAYS);
            let n = (WAYS - from).min(budget - swept.scanned);
            let mut live = !self.tags[b].matching(0) & (((1 << n) - 1) << from);
            while live != 0 {
                let w = live.trailing_zeros() as usize;
                live &= live - 1;
                if self.entries[b * WAYS + w].expired(&self.limits, cap, now) {
                    if !self.clear(b, w) {
                        // Resume at the entry that could not be buried.
                        swept.scanned += w - from;
                        self.cursor = b * WAYS + w;
                        break 'sweep;
                    }
                    swept.reclaimed += 1;
                }
            }
            self.cursor = if i + n == slots { 0 } else { i + n };
            swept.scanned += n;
        }
        self.sweep_owed = self.sweep_owed.saturating_sub(swept.scanned);
        self.counters.expired += swept.reclaimed as u64;
        // The next call, a batch later, starts here: its lines are cached
        // by then (a large table's sweep missed on every bucket and entry).
        let b = self.cursor / WAYS;
        self.prefetch_tags(b);
        for e in self.entries.get(b * WAYS..(b + 1) * WAYS).unwrap_or_default() {
            prefetch::lines(e, 1);
        }
        swept
    }

    /// Slots to scan now for a full sweep every [`SWEEP_SECS`] however
    /// little or much traffic there is (at least `min`, at most `max`): the
    /// time that passed since the last call earns its share of the table,
    /// and each call pays an equal part of what is owed when the tick
    /// began, spread over as many calls as the tick before saw (more calls
    /// go on paying; fewer leave the rest owed). A busy worker scans a few
    /// slots a batch, an idle one up to `max` a call. With a fixed budget
    /// per batch an idle worker took minutes to reclaim a flood's entries
    /// and the SNAT ports they held, and a busy one swept a large table
    /// many times a second, a cache miss per live slot.
    pub fn sweep_due(&mut self, now: Tick, min: usize, max: usize) -> usize {
        let passed = now.wrapping_sub(self.sweep_tick) as i32;
        if passed != 0 {
            self.sweep_tick = now;
            self.sweep_calls_before = self.sweep_calls.max(1);
            self.sweep_calls = 0;
            if passed > 0 {
                let per_sec = self.entries.len().div_ceil(SWEEP_SECS as usize);
                let earned = per_sec.saturating_mul(passed as usize);
                self.sweep_owed = self.sweep_owed.saturating_add(earned).min(self.entries.len());
            }
            self.sweep_share = self.sweep_owed.div_ceil(self.sweep_calls_before);
        }
        self.sweep_calls = self.sweep_calls.saturating_add(1);
        self.sweep_owed.min(self.sweep_share).clamp(min, max.max(min))
    }

    /// Visits live entries from slot `start`, looking at most at
    /// `max_slots` slots, until `f` returns false; returns the slot to
    /// resume from (`capacity()` when done). Bounded steps for listings
    /// taken at batch boundaries (telemetry::conns).
    pub fn visit_live(
        &self,
        start: usize,
        max_slots: usize,
        now: Tick,
        mut f: impl FnMut(&Entry) -> bool,
    ) -> usize {
        let end = start.saturating_add(max_slots).min(self.entries.len());
        let cap = self.unassured_cap();
        for i in start..end {
            let e = &self.entries[i];
            if self.tags[i / WAYS].0[i % WAYS] != 0 && !e.expired(&self.limits, cap, now) && !f(e) {
                return i + 1;
            }
        }
        end
    }

    /// Visits every live entry (control plane / dumps; O(capacity)).
    pub fn for_each_live(&self, now: Tick, mut f: impl FnMut(&Entry)) {
        let cap = self.unassured_cap();
        for (b, t) in self.tags.iter().enumerate() {
            for (w, &tag) in t.0.iter().enumerate() {
                let e = &self.entries[b * WAYS + w];
                if tag != 0 && !e.expired(&self.limits, cap, now) {
                    f(e);
                }
            }
        }
    }

    /// Removes every occupied entry `keep` refuses, without reporting
    /// deaths (for checks at start, before any port is handed out); `keep`
    /// may mend what it keeps, but not its key. Returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut Entry) -> bool) -> usize {
        let mut removed = 0;
        for b in 0..self.tags.len() {
            for w in 0..WAYS {
                if self.tags[b].0[w] != 0 && !keep(&mut self.entries[b * WAYS + w]) {
                    self.tags[b].0[w] = 0;
                    self.len -= 1;
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Whether the table lives in a mapping that survives the process.
    pub fn is_mapped(&self) -> bool {
        self.entries.is_mapped()
    }

    /// A table over `map` placed as `layout` says (`None` when the mapping
    /// is too small or misplaced). With `keep`, the entries found there
    /// stay if they pass the per-entry rule: a known state, a key whose
    /// hash gives the slot's tag and one of its two buckets, a last-seen
    /// time not in the future; the others are cleared. Without `keep` the
    /// memory is cleared first.
    pub fn in_mapping(
        mut map: super::slots::Region,
        layout: MemoryLayout,
        keep: bool,
        now: Tick,
        timeouts: Timeouts,
        full_policy: FullPolicy,
    ) -> Option<(ConnTable, Adopted)> {
        let entry = core::mem::size_of::<Entry>();
        let buckets = layout.slots / WAYS;
        if layout != MemoryLayout::new(layout.slots, layout.tags_at)
            || map.len() < layout.end
            || !layout.tags_at.is_multiple_of(64)
        {
            return None;
        }
        let mut adopted = Adopted::default();
        {
            let bytes = map.bytes_mut();
            if !(bytes.as_ptr() as usize).is_multiple_of(64) {
                return None;
            }
            if !keep {
                bytes[layout.tags_at..layout.end].fill(0);
            }
            // Typed access needs valid values: `state` is the one field of
            // an entry with invalid bit patterns, so check it as a byte.
            let state_at = core::mem::offset_of!(Entry, state);
            for i in 0..layout.slots {
                let t = layout.tags_at + i * 4;
                let e = layout.entries_at + i * entry;
                let tagged = bytes.get(t..t + 4).is_some_and(|x| x != [0; 4]);
                if tagged && bytes.get(e + state_at).is_none_or(|&st| st > ConnState::Generic as u8) {
                    bytes[t..t + 4].fill(0);
                    bytes[e..e + entry].fill(0);
                    adopted.invalid += 1;
                }
            }
        }
        let map = std::sync::Arc::new(map);
        // SAFETY: `layout` matches `MemoryLayout::new` and fits the mapping
        // (checked above), so both ranges are inside it, apart, and 64-byte
        // aligned (the mapping is, and every offset is a multiple of 64).
        // Tag lines are plain u32s; every entry's state byte was checked
        // and every other field accepts any bits (an all-zero entry is
        // `TcpNone` with no ids). The mapping is not touched elsewhere.
        let (tags, entries) = unsafe {
            (
                Slots::mapped(&map, layout.tags_at, buckets),
                Slots::mapped(&map, layout.entries_at, layout.slots),
            )
        };
        let mut table = ConnTable::over(tags, entries, timeouts, full_policy);
        for b in 0..buckets {
            for w in 0..WAYS {
                let tag = table.tags[b].0[w];
                if tag == 0 {
                    continue;
                }
                let e = &table.entries[b * WAYS + w];
                let k = e.key;
                let (b1, b2, want) = place(k.hash(), table.bucket_mask);
                let ok = k == FlowKey::new(k.src, k.dst, k.sport, k.dport, k.proto)
                    && tag == want
                    && (b == b1 || b == b2)
                    && (e.last_seen.wrapping_sub(now) as i32) <= 1;
                if ok {
                    table.len += 1;
                    adopted.kept += 1;
                } else {
                    table.tags[b].0[w] = 0;
                    adopted.invalid += 1;
                }
            }
        }
        Some((table, adopted))
    }
}

#[cfg(test)]
mod tests {
    use super::super::maglev::ipv4_mapped;
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn k(i: u32, proto: u8) -> FlowKey {
        FlowKey::new(
            ipv4_mapped([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
            ipv4_mapped([192, 0, 2, 1]),
            (i % 50_000) as u16 + 1024,
            443,
            proto,
        )
    }

    fn v(i: u32) -> FlowValue {
        FlowValue {
            backend: BackendId::new(i as u16),
            service: ServiceId::new((i >> 16) as u16),
            nat: NatBinding { sport: i as u16 ^ 0x5555, ..Default::default() },
            flags: EntryFlags::from_bits(i as u8),
            ..Default::default()
        }
    }

    fn long() -> Timeouts {
        Timeouts { udp_unreplied: 1_000_000, ..Timeouts::default() }
    }

    const S: TcpFlags = TcpFlags(TcpFlags::SYN);
    const SA: TcpFlags = TcpFlags(TcpFlags::SYN | TcpFlags::ACK);
    const A: TcpFlags = TcpFlags(TcpFlags::ACK);
    const FA: TcpFlags = TcpFlags(TcpFlags::FIN | TcpFlags::ACK);
    const R: TcpFlags = TcpFlags(TcpFlags::RST);
    use Direction::{Original as O, Reply as Rp};

    fn tcp_entry() -> Entry {
        Entry::init(k(1, proto::TCP), &v(1), 0)
    }

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<FlowKey>(), 40);
        assert_eq!(core::mem::size_of::<Entry>(), 128);
        assert!(core::mem::offset_of!(Entry, fin_seen) < 64);
        assert_eq!(core::mem::size_of::<Tags>(), 32);
    }

    #[test]
    fn tcp_handshake_and_fin_close() {
        use ConnState::*;
        let mut e = tcp_entry();
        assert_eq!(e.state, TcpNone);
        assert_eq!(e.on_tcp(O, S), TcpSynSent);
        assert_eq!(e.on_tcp(O, S), TcpSynSent); // retransmit
        assert_eq!(e.on_tcp(Rp, SA), TcpSynRecv);
        assert_eq!(e.on_tcp(O, A), TcpEstablished);
        assert_eq!(e.on_tcp(Rp, A), TcpEstablished);
        // Client closes first.
        assert_eq!(e.on_tcp(O, FA), TcpFinWait);
        assert_eq!(e.on_tcp(O, FA), TcpFinWait); // retransmitted FIN
        assert_eq!(e.on_tcp(O, A), TcpFinWait); // own ACK does not answer it
        assert_eq!(e.on_tcp(Rp, A), TcpCloseWait);
        assert_eq!(e.on_tcp(Rp, FA), TcpLastAck);
        assert_eq!(e.on_tcp(O, A), TcpTimeWait);
        // TIME_WAIT reuse by a new SYN.
        assert_eq!(e.on_tcp(O, S), TcpSynSent);
    }

    #[test]
    fn tcp_simultaneous_fin_and_server_close() {
        use ConnState::*;
        let mut e = tcp_entry();
        for (d, f) in [(O, S), (Rp, SA), (O, A)] {
            e.on_tcp(d, f);
        }
        assert_eq!(e.on_tcp(Rp, FA), TcpFinWait); // server closes
        assert_eq!(e.on_tcp(O, FA), TcpLastAck); // both FINs, no ACK yet
        assert_eq!(e.on_tcp(Rp, A), TcpTimeWait);
    }

    #[test]
    fn tcp_rst_and_ignored() {
        use ConnState::*;
        let mut e = tcp_entry();
        assert_eq!(e.on_tcp(Rp, SA), TcpNone); // SYN+ACK without SYN
        assert_eq!(e.on_tcp(O, FA), TcpNone);
        e.on_tcp(O, S);
        assert_eq!(e.on_tcp(O, A), TcpSynSent); // ACK before SYN+ACK
        assert_eq!(e.on_tcp(Rp, R), TcpClose);
        let mut e = tcp_entry();
        assert_eq!(e.on_tcp(O, A), TcpEstablished); // mid-stream pickup
        assert_eq!(e.on_tcp(O, S), TcpEstablished); // SYN in ES ignored
        assert_eq!(e.on_tcp(O, TcpFlags(TcpFlags::RST | TcpFlags::ACK)), TcpClose);
        // Non-TCP entries are untouched.
        let mut u = Entry::init(k(2, proto::UDP), &v(2), 0);
        assert_eq!(u.on_tcp(O, S), UdpUnreplied);
        assert_eq!(u.on_udp(O), UdpUnreplied);
        assert_eq!(u.on_udp(Rp), UdpReplied);
        assert_eq!(Entry::init(k(3, proto::ICMP), &v(3), 0).state, Icmp);
        assert_eq!(Entry::init(k(3, 47), &v(3), 0).state, Generic);
    }

    #[test]
    fn timeouts_follow_state() {
        let t = Timeouts::default();
        let mut ct = ConnTable::new(64, t, FullPolicy::Drop);
        let (a, b) = (k(1, proto::TCP), k(2, proto::TCP));
        ct.insert(a, a.hash(), v(1), 1000).unwrap().on_tcp(O, S);
        let e = ct.insert(b, b.hash(), v(2), 1000).unwrap();
        e.on_tcp(O, S);
        e.on_tcp(Rp, SA);
        e.on_tcp(O, A);
        assert_eq!(e.remaining(&t, 1000), 432_000);
        assert!(ct.lookup(&a, a.hash(), 1000 + 119).is_some());
        assert!(ct.lookup(&a, a.hash(), 1000 + 120).is_none()); // syn_sent
        assert_eq!(ct.counters().expired, 1);
        assert_eq!(ct.len(), 1);
        let e = ct.lookup(&b, b.hash(), 1000 + 200_000).unwrap();
        assert_eq!(e.backend, BackendId::new(2));
        e.touch(1000 + 200_000);
        assert!(ct.lookup(&b, b.hash(), 1000 + 200_000 + 431_999).is_some());
        assert!(ct.lookup(&b, b.hash(), 1000 + 200_000 + 432_000).is_none());
        // A clock slightly behind last_seen does not expire anything.
        let c = k(3, proto::UDP);
        ct.insert(c, c.hash(), v(3), 50).unwrap();
        assert!(ct.lookup(&c, c.hash(), 40).is_some());
    }

    #[test]
    fn timeouts_across_tick_wrap() {
        let mut ct = ConnTable::new(64, Timeouts::default(), FullPolicy::Drop);
        let a = k(1, proto::UDP);
        ct.insert(a, a.hash(), v(1), u32::MAX - 5).unwrap();
        assert!(ct.lookup(&a, a.hash(), 10).is_some()); // age 16 < 30
        assert!(ct.lookup(&a, a.hash(), 24).is_none()); // age 30
    }

    #[test]
    fn expire_step_is_bounded_and_complete() {
        let mut ct = ConnTable::new(1024, Timeouts::default(), FullPolicy::Drop);
        for i in 0..500 {
            let key = k(i, proto::UDP);
            ct.insert(key, key.hash(), v(i), 0).unwrap();
        }
        assert_eq!(ct.expire_step(10, 1024).reclaimed, 0);
        let mut total = 0;
        for _ in 0..16 {
            let n = ct.expire_step(30, 64).reclaimed;
            assert!(n <= 64);
            total += n;
        }
        assert_eq!(total, 500);
        assert!(ct.is_empty());
        assert_eq!(ct.counters().expired, 500);
    }

    /// Each call reclaims exactly the expired entries in the slots from the
    /// cursor on that its budget covers, budgets that end mid-bucket
    /// included, and the next call goes on from there.
    #[test]
    fn expire_step_reclaims_exactly_its_window() {
        let mut ct = ConnTable::new(1024, Timeouts::default(), FullPolicy::Drop);
        let plain = |i| FlowValue { flags: EntryFlags::default(), ..v(i) };
        for i in 0..700 {
            let key = k(i, proto::UDP);
            ct.insert(key, key.hash(), plain(i), if i % 3 == 0 { 0 } else { 25 }).unwrap();
        }
        let (now, slots) = (40, ct.entries.len());
        let cap = ct.unassured_cap();
        let mut scanned = 0;
        for budget in [1, 3, 5, 7, 9, 11, 13].into_iter().cycle() {
            if scanned >= slots {
                break;
            }
            let from = ct.cursor;
            let expect = (from..from + budget)
                .map(|i| i % slots)
                .filter(|&i| {
                    ct.tags[i / WAYS].0[i % WAYS] != 0 && ct.entries[i].expired(&ct.limits, cap, now)
                })
                .count();
            let s = ct.expire_step(now, budget);
            assert_eq!((s.scanned, s.reclaimed), (budget, expect), "from slot {from}");
            assert_eq!(ct.cursor, (from + budget) % slots);
            scanned += budget;
        }
        assert_eq!(ct.len(), (0..700).filter(|i| i % 3 != 0).count());
        assert!((0..700)
            .filter(|i| i % 3 != 0)
            .all(|i| ct.lookup(&k(i, proto::UDP), k(i, proto::UDP).hash(), now).is_some()));
    }

    /// Inserts assured keys `0..` until a refusal, returning the accepted ones.
    fn fill_until_full(ct: &mut ConnTable) -> Vec<u32> {
        let mut ok = Vec::new();
        for i in 0.. {
            let key = k(i, proto::UDP);
            match ct.insert(key, key.hash(), v(i), i) {
                Ok(e) => {
                    e.mark_replied();
                    ok.push(i)
                }
                Err(InsertError::Full) => break,
            }
        }
        ok
    }

    #[test]
    fn drop_policy_refuses_and_keeps_existing() {
        let mut ct = ConnTable::new(16, long(), FullPolicy::Drop);
        let ok = fill_until_full(&mut ct);
        assert_eq!(ok.len(), 16); // 2 buckets, every key sees both
        assert_eq!(ct.counters().insert_failed_full, 1);
        for i in 100..110 {
            let key = k(i, proto::UDP);
            assert_eq!(ct.insert(key, key.hash(), v(i), 20), Err(InsertError::Full));
        }
        for &i in &ok {
            let key = k(i, proto::UDP);
            let e = ct.lookup(&key, key.hash(), 20).unwrap();
            assert_eq!((e.key(), e.backend, e.nat), (&key, v(i).backend, v(i).nat));
        }
        assert_eq!(ct.len(), 16);
        assert_eq!(ct.counters().insert_failed_full, 11);
    }

    #[test]
    fn evict_oldest_policy() {
        let mut ct = ConnTable::new(16, long(), FullPolicy::EvictOldest);
        let mut live: Vec<u32> = (0..16).collect();
        for &i in &live {
            let key = k(i, proto::UDP);
            ct.insert(key, key.hash(), v(i), 100 + i).unwrap().mark_replied();
        }
        // Refresh key 0 so key 1 becomes the oldest.
        let k0 = k(0, proto::UDP);
        ct.lookup(&k0, k0.hash(), 200).unwrap().touch(200);
        for (n, new) in (16..20u32).enumerate() {
            let key = k(new, proto::UDP);
            let e = ct.insert(key, key.hash(), v(new), 300).unwrap();
            e.mark_replied();
            assert_eq!(e.backend, v(new).backend);
            let victim = [1, 2, 3, 4][n];
            live.retain(|&x| x != victim);
            live.push(new);
            let vk = k(victim, proto::UDP);
            assert!(ct.lookup(&vk, vk.hash(), 300).is_none(), "victim {victim}");
            for &i in &live {
                let key = k(i, proto::UDP);
                let e = ct.lookup(&key, key.hash(), 300).unwrap();
                assert_eq!((e.backend, e.flags, e.nat), (v(i).backend, v(i).flags, v(i).nat));
            }
        }
        assert_eq!(ct.counters().evictions, 4);
        assert_eq!(ct.len(), 16);
    }

    /// A flood of new flows (unassured, Linux's early_drop rule) takes the
    /// place of other unassured flows, never of assured ones, whatever the
    /// policy; and under pressure unassured flows age out fast.
    #[test]
    fn early_drop_spares_assured_flows() {
        for policy in [FullPolicy::Drop, FullPolicy::EvictOldest] {
            let mut ct = ConnTable::new(16, long(), policy);
            // Half assured (a TCP handshake seen both ways), half SYN only.
            for i in 0..16u32 {
                let key = k(i, proto::TCP);
                let e = ct.insert(key, key.hash(), v(i), 100).unwrap();
                e.on_tcp(O, S);
                if i % 2 == 0 {
                    e.on_tcp(Rp, SA);
                    e.mark_replied();
                    e.on_tcp(O, A);
                    assert!(e.assured());
                } else {
                    assert!(!e.assured());
                }
            }
            // 8 spoofed SYNs fill the 8 unassured places...
            for i in 100..108u32 {
                let key = k(i, proto::TCP);
                ct.insert(key, key.hash(), v(i), 101).unwrap().on_tcp(O, S);
            }
            assert_eq!(ct.counters().early_drops, 8, "{policy:?}");
            assert_eq!(ct.counters().evictions, 0);
            for i in (0..16u32).step_by(2) {
                let key = k(i, proto::TCP);
                assert!(ct.lookup(&key, key.hash(), 102).is_some(), "assured flow {i} kept ({policy:?})");
            }
            for i in (1..16u32).step_by(2) {
                let key = k(i, proto::TCP);
                assert!(ct.lookup(&key, key.hash(), 102).is_none(), "unassured flow {i} dropped early");
            }
            // ...and the next ones take the oldest unassured (the SYNs of 101).
            let key = k(200, proto::TCP);
            assert!(ct.insert(key, key.hash(), v(200), 102).is_ok());
            assert_eq!(ct.counters().early_drops, 9);
        }
        // A SYN-only entry has no place to take among assured ones: refused
        // under `drop`, only `evict` displaces an assured flow.
        let mut ct = ConnTable::new(16, long(), FullPolicy::Drop);
        for i in 0..16u32 {
            let key = k(i, proto::UDP);
            ct.insert(key, key.hash(), v(i), 0).unwrap().mark_replied();
        }
        let key = k(99, proto::TCP);
        assert_eq!(ct.insert(key, key.hash(), v(99), 1).map(|_| ()), Err(InsertError::Full));
        assert_eq!(ct.counters().early_drops, 0);
    }

    /// A flow's second entry, in a table whose only unassured entry is the
    /// flow's first, is refused rather than displacing it (a half flow
    /// forwards its first packet and then loses its retransmission).
    #[test]
    fn second_entry_never_drops_its_first_early() {
        let mut ct = ConnTable::new(16, long(), FullPolicy::Drop);
        for i in 0..15u32 {
            let key = k(i, proto::UDP);
            ct.insert(key, key.hash(), v(i), 0).unwrap().mark_replied();
        }
        let first = k(50, proto::TCP);
        ct.insert(first, first.hash(), v(50), 1).unwrap().on_tcp(O, S);
        let second = k(51, proto::TCP);
        let r = ct.insert_beside(second, ct.place(second.hash()), v(51), 1, &first).map(|_| ());
        assert_eq!(r, Err(InsertError::Full));
        assert!(ct.lookup(&first, first.hash(), 1).is_some(), "first entry kept");
        assert_eq!(ct.counters().early_drops, 0);
        // Without a sibling to spare, the same insert drops it early.
        assert!(ct.insert(second, second.hash(), v(51), 1).is_ok());
        assert_eq!(ct.counters().early_drops, 1);
    }

    #[test]
    fn unassured_entries_age_fast_under_pressure() {
        let mut ct = ConnTable::new(64, Timeouts::default(), FullPolicy::Drop);
        ct.set_pressure_timeout(3);
        // 47 of 64 slots: below three quarters, SYN_SENT lasts 120 s.
        for i in 0..47u32 {
            let key = k(i, proto::TCP);
            ct.insert(key, key.hash(), v(i), 0).unwrap().on_tcp(O, S);
        }
        let a = k(0, proto::TCP);
        assert!(ct.lookup(&a, a.hash(), 10).is_some());
        // Pressure (48 = 3/4): unassured entries idle 3 s at most; an
        // assured one keeps its timeout.
        let b = k(500, proto::UDP);
        ct.insert(b, b.hash(), v(500), 0).unwrap().mark_replied();
        assert_eq!(ct.len(), 48);
        assert!(ct.lookup(&b, b.hash(), 20).is_some(), "assured keeps its 30 s");
        assert_eq!(ct.expire_step(20, 64).reclaimed, 47, "SYN_SENT aged out under pressure");
        assert_eq!(ct.len(), 1);
        let c = k(1, proto::TCP);
        assert!(ct.lookup(&c, c.hash(), 20).is_none());
    }

    #[test]
    fn full_buckets_reclaim_expired_first() {
        let mut ct = ConnTable::new(16, Timeouts::default(), FullPolicy::Drop);
        for i in 0..16 {
            let key = k(i, proto::UDP);
            ct.insert(key, key.hash(), v(i), 0).unwrap().mark_replied();
        }
        let key = k(99, proto::UDP);
        assert!(ct.insert(key, key.hash(), v(99), 29).is_err());
        assert!(ct.insert(key, key.hash(), v(99), 30).is_ok());
        assert_eq!(ct.counters().expired, 16);
        assert_eq!(ct.len(), 1);
    }

    /// An entry whose owner must hear of its death.
    fn notify(i: u32) -> FlowValue {
        FlowValue { flags: EntryFlags::NOTIFY_ON_DEATH, ..v(i) }
    }

    /// More entries than the graveyard holds die in one sweep: the sweep
    /// stops at the first it cannot bury, and every death is reported once
    /// the owner drains (the graveyard used to keep 4096 and lose the rest,
    /// with the SNAT ports they held).
    #[test]
    fn deaths_beyond_the_graveyard_are_deferred_never_lost() {
        let n = 3 * GRAVEYARD as u32 + 123;
        let mut ct = ConnTable::new(4 * n as usize, long(), FullPolicy::Drop);
        for i in 0..n {
            let key = k(i, proto::TCP);
            ct.insert(key, key.hash(), notify(i), 0).unwrap();
        }
        let now = 121; // past SYN_SENT
        let mut dead = std::collections::HashSet::new();
        let mut sweeps = 0;
        let mut scanned = 0;
        while scanned < ct.capacity() {
            let s = ct.expire_step(now, ct.capacity() - scanned);
            assert!(s.reclaimed <= GRAVEYARD);
            scanned += s.scanned;
            sweeps += 1;
            while let Some(e) = ct.pop_dead() {
                assert!(dead.insert(*e.key()), "{:?} reported twice", e.key());
            }
        }
        assert_eq!(dead.len(), n as usize, "every death reported");
        assert!(ct.is_empty());
        assert_eq!(sweeps, 4, "paused three times, each at a full graveyard");
        assert_eq!(ct.counters().expired, u64::from(n));
    }

    /// With the graveyard full, an expired entry that would die on lookup or
    /// to make room stays (absent to lookups, refusing its slot) until the
    /// graveyard is drained; entries nobody is told about die as before.
    #[test]
    fn full_graveyard_defers_lazy_deaths() {
        let mut ct = ConnTable::new(2 * GRAVEYARD + 64, long(), FullPolicy::Drop);
        for i in 0..GRAVEYARD as u32 {
            let key = k(i, proto::TCP);
            ct.insert(key, key.hash(), notify(i), 0).unwrap();
        }
        let late = k(1 << 20, proto::TCP);
        ct.insert(late, late.hash(), notify(7), 0).unwrap();
        let quiet = k(2 << 20, proto::TCP);
        ct.insert(quiet, quiet.hash(), v(0), 0).unwrap();
        // Fill the graveyard without draining it, sparing `late`.
        for i in 0..GRAVEYARD as u32 {
            let key = k(i, proto::TCP);
            assert!(ct.lookup(&key, key.hash(), 121).is_none());
        }
        assert!(ct.graveyard_full());
        let len = ct.len();
        assert!(ct.lookup(&late, late.hash(), 121).is_none(), "expired is absent");
        assert_eq!(ct.len(), len, "but not cleared");
        assert!(ct.insert(late, late.hash(), notify(8), 121).is_err(), "its slot is refused");
        assert!(ct.lookup(&quiet, quiet.hash(), 121).is_none());
        assert_eq!(ct.len(), len - 1, "an entry nobody hears of dies at once");
        assert_eq!(ct.counters().deaths_deferred, 2);
        let mut reported = 0;
        while ct.pop_dead().is_some() {
            reported += 1;
        }
        assert_eq!(reported, GRAVEYARD);
        let e = ct.insert(late, late.hash(), notify(9), 121).unwrap();
        assert_eq!(e.backend, notify(9).backend, "reborn once drained");
        let old = ct.pop_dead().unwrap();
        assert_eq!((old.key(), old.backend), (&late, notify(7).backend), "its old life reported");
    }

    /// An idle owner calling a few times a second is owed the whole table
    /// every `SWEEP_SECS`, at most `max` slots a call.
    #[test]
    fn sweep_is_owed_by_time() {
        let mut ct = ConnTable::new(4096, long(), FullPolicy::Drop);
        assert_eq!(ct.sweep_due(0, 64, 1024), 64, "nothing owed yet");
        assert_eq!(ct.sweep_due(1, 64, 1024), 1024, "a second earns a quarter of 4096, capped");
        ct.expire_step(1, 1024);
        assert_eq!(ct.sweep_due(1, 64, 4096), 64, "paid");
        assert_eq!(ct.sweep_due(3, 0, 4096), 1024, "2048 owed, spread over the tick before's two calls");
        assert_eq!(ct.sweep_due(100, 0, 1 << 20), 4096, "never more than one sweep");
        ct.expire_step(100, 4096);
        assert_eq!(ct.sweep_due(90, 0, 1 << 20), 0, "a clock going back earns nothing");
        assert_eq!(ct.sweep_due(91, 0, 1 << 20), 1024);
    }

    /// A busy worker (1,000 calls a tick) pays each tick's share in equal
    /// parts of a few slots, not in a burst at the tick, and still sweeps
    /// the whole table every `SWEEP_SECS`.
    #[test]
    fn busy_sweep_is_spread_over_the_calls() {
        let mut ct = ConnTable::new(4096, long(), FullPolicy::Drop);
        let slots = ct.entries.len();
        let part = (slots / SWEEP_SECS as usize).div_ceil(1000);
        for _ in 0..1000 {
            assert_eq!(ct.sweep_due(0, 0, 1024), 0);
        }
        let mut scanned = 0;
        for tick in 1..=SWEEP_SECS {
            for call in 0..1000 {
                let n = ct.sweep_due(tick, 0, 1024);
                assert!(n <= part, "tick {tick}, call {call}: {n} slots, over {part}");
                scanned += ct.expire_step(tick, n).scanned;
            }
        }
        assert_eq!(scanned, slots, "one full sweep in SWEEP_SECS");
    }

    #[test]
    fn insert_existing_overwrites_and_remove() {
        let mut ct = ConnTable::new(64, Timeouts::default(), FullPolicy::Drop);
        let a = k(7, proto::TCP);
        ct.insert(a, a.hash(), v(1), 0).unwrap().on_tcp(O, S);
        let e = ct.insert(a, a.hash(), v(2), 1).unwrap();
        assert_eq!((e.backend, e.state), (BackendId::new(2), ConnState::TcpNone));
        assert_eq!(ct.len(), 1);
        assert_eq!(ct.counters().updates, 1);
        assert_eq!(ct.remove(&a, a.hash()).map(|e| e.backend), Some(BackendId::new(2)));
        assert!(ct.remove(&a, a.hash()).is_none());
        assert!(ct.lookup(&a, a.hash(), 1).is_none());
        assert!(ct.is_empty());
        ct.prefetch(a.hash());
        ct.prefetch_entry(a.hash());
    }

    /// The expiry check's table says what `timeout_of` says, for every
    /// state, normal and alternative timeouts apart.
    #[test]
    fn limits_by_state_match_the_timeouts() {
        let t = Timeouts::default();
        let alt = Timeouts { tcp_established: 77, udp_replied: 5, ..Timeouts::default() };
        let mut l = Limits::new(&t);
        l.set(true, &alt);
        for (i, s) in ConnState::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i, "ALL is in discriminant order");
            assert_eq!(l.get(false, s), timeout_of(&t, s), "{s:?}");
            assert_eq!(l.get(true, s), timeout_of(&alt, s), "{s:?} (alt)");
        }
        assert_eq!(l.get(true, ConnState::TcpEstablished), 77);
    }

    /// Keys whose hashes collide share both buckets and the tag: every
    /// way holding the tag is tried, in order, and told apart by the key.
    #[test]
    fn colliding_hashes_are_told_apart_by_the_key() {
        let t = Tags([5, 1, 5, 0, 5, 9, 9, 5]);
        let u = Tags([9, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(t.matching(5), 0b1001_0101);
        assert_eq!(t.matching(9), 0b0110_0000);
        assert_eq!(u.matching(0), 0b0111_1110);
        assert_eq!(t.matching(7), 0);
        let mut ct = ConnTable::new(64, Timeouts::default(), FullPolicy::Drop);
        let keys: Vec<FlowKey> = (0..12).map(|i| k(i, proto::UDP)).collect();
        let hash = keys[0].hash();
        for (i, key) in keys.iter().enumerate() {
            ct.insert(*key, hash, v(i as u32 + 1), 0).unwrap();
        }
        for (i, key) in keys.iter().enumerate() {
            let e = ct.lookup(key, hash, 1).map(|e| e.backend);
            assert_eq!(e, Some(BackendId::new(i as u16 + 1)), "key {i}");
        }
        assert!(ct.lookup(&k(99, proto::UDP), hash, 1).is_none());
    }

    /// At the load the table is sized for (about half full), nearly every
    /// key sits in its first bucket: the one whose tags the lookup
    /// prefetches, so a hit costs three cache lines, not four.
    #[test]
    fn keys_fill_their_first_bucket_first() {
        let mut ct = ConnTable::new(1 << 16, long(), FullPolicy::Drop);
        let n = ct.capacity() as u32 / 2;
        for i in 0..n {
            let key = k(i, proto::UDP);
            ct.insert(key, key.hash(), v(i), 0).unwrap();
        }
        let first = (0..n)
            .filter(|&i| {
                let key = k(i, proto::UDP);
                let (b1, b2, tag) = place(key.hash(), ct.bucket_mask);
                ct.find(&key, b1, b2, tag).is_some_and(|(b, _)| b == b1)
            })
            .count();
        assert!(first as f64 >= 0.95 * f64::from(n), "{first} of {n} in their first bucket");
    }

    #[test]
    fn one_million_entries() {
        let n = 1u32 << 20;
        let mut ct = ConnTable::new(n as usize, long(), FullPolicy::Drop);
        assert_eq!(ct.capacity(), n as usize);
        let mut first_fail = None;
        for i in 0..n {
            let key = k(i, proto::UDP);
            let h = key.hash();
            ct.prefetch(h);
            if ct.insert(key, h, v(i), 0).is_err() && first_fail.is_none() {
                first_fail = Some(i);
            }
        }
        let load = ct.len() as f64 / f64::from(n);
        eprintln!("1M table: first refusal at {:?}, final load {load:.4}", first_fail);
        assert!(first_fail.unwrap_or(n) > n / 10 * 9, "{first_fail:?}");
        assert!(load > 0.97, "{load}");
        let mut found = 0;
        for i in 0..n {
            let key = k(i, proto::UDP);
            if let Some(e) = ct.lookup(&key, key.hash(), 1) {
                assert_eq!(e.backend, BackendId::new(i as u16));
                found += 1;
            }
        }
        assert_eq!(found, ct.len());
    }

    /// Run with `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_lookup_batched() {
        let n = 1u32 << 20;
        let mut ct = ConnTable::new(n as usize * 2, long(), FullPolicy::Drop);
        let keys: Vec<(FlowKey, u64)> = (0..n)
            .map(|i| {
                let key = k(i, proto::UDP);
                (key, key.hash())
            })
            .collect();
        for (i, (key, h)) in keys.iter().enumerate() {
            ct.insert(*key, *h, v(i as u32), 0).unwrap();
        }
        // Random-ish order so every lookup is a cache miss.
        let order: Vec<usize> = (0..n as usize).map(|i| i.wrapping_mul(0x9e37_79b9) % n as usize).collect();
        let hashes: Vec<u64> = order.iter().map(|&i| keys[i].1).collect();
        for stages in 0..3 {
            let t0 = std::time::Instant::now();
            let mut acc = 0u64;
            for (batch, hb) in order.chunks(32).zip(hashes.chunks(32)) {
                if stages >= 1 {
                    hb.iter().for_each(|&h| ct.prefetch(h));
                }
                if stages >= 2 {
                    hb.iter().for_each(|&h| ct.prefetch_entry(h));
                }
                for &i in batch {
                    let (key, h) = &keys[i];
                    if let Some(e) = ct.lookup(key, *h, 1) {
                        acc += e.backend.map_or(0, |b| b.index() as u64);
                    }
                }
            }
            let ns = t0.elapsed().as_nanos() as f64 / f64::from(n);
            println!("conntrack lookup, prefetch stages {stages}: {ns:.1} ns ({acc})");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16),
        Lookup(u8),
        Touch(u8),
        Remove(u8),
        Advance(u8),
        Expire(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..64, any::<u16>()).prop_map(|(a, b)| Op::Insert(a, b)),
            4 => (0u8..64).prop_map(Op::Lookup),
            2 => (0u8..64).prop_map(Op::Touch),
            1 => (0u8..64).prop_map(Op::Remove),
            2 => (0u8..20).prop_map(Op::Advance),
            1 => (0u8..40).prop_map(Op::Expire),
        ]
    }

    /// Key `i`: even ids UDP (30 s), odd ids ICMP with a 7 s timeout.
    fn mk(i: u8) -> FlowKey {
        k(u32::from(i), if i & 1 == 0 { proto::UDP } else { proto::ICMP })
    }

    fn small_timeouts() -> Timeouts {
        Timeouts { icmp: 7, ..Timeouts::default() }
    }

    /// Runs `ops`; model maps key id -> (backend, last_seen). Checks every
    /// lookup against the model: `Some` must carry the model's value; `None`
    /// for a model-live key is allowed only when `may_lose` (eviction).
    fn run(ops: &[Op], cap: usize, policy: FullPolicy) -> Result<(), TestCaseError> {
        let t = small_timeouts();
        let mut ct = ConnTable::new(cap, t, policy);
        let mut model: HashMap<u8, (Option<BackendId>, Tick)> = HashMap::new();
        let mut now: Tick = u32::MAX - 50; // exercise wrap-around
        let timeout = |i: u8| if i & 1 == 0 { t.udp_unreplied } else { t.icmp };
        let live = |m: &HashMap<u8, (Option<BackendId>, Tick)>, i: u8, now: Tick| {
            m.get(&i).filter(|(_, seen)| now.wrapping_sub(*seen) < timeout(i)).map(|x| x.0)
        };
        for o in ops {
            match *o {
                Op::Insert(i, b) => {
                    let b = BackendId::new(b);
                    let key = mk(i);
                    let val = FlowValue { backend: b, ..v(u32::from(i)) };
                    match ct.insert(key, key.hash(), val, now) {
                        Ok(e) => {
                            // Assured: the model knows no early drop.
                            e.mark_replied();
                            prop_assert_eq!(e.backend, b);
                            model.insert(i, (b, now));
                        }
                        Err(InsertError::Full) => {
                            prop_assert_eq!(policy, FullPolicy::Drop);
                            // A refused insert never touches the old value,
                            // which must have been absent or expired.
                            prop_assert!(live(&model, i, now).is_none());
                            model.remove(&i);
                        }
                    }
                }
                Op::Lookup(i) | Op::Touch(i) => {
                    let key = mk(i);
                    let want = live(&model, i, now);
                    let got = ct.lookup(&key, key.hash(), now);
                    match (&got, want) {
                        (Some(e), Some(b)) => prop_assert_eq!(e.backend, b),
                        (Some(e), None) => prop_assert!(false, "stale {:?}", e.key()),
                        (None, Some(_)) => {
                            prop_assert_eq!(policy, FullPolicy::EvictOldest, "lost {}", i);
                            model.remove(&i);
                        }
                        (None, None) => {}
                    }
                    if let (Op::Touch(_), Some(e)) = (o, got) {
                        e.touch(now);
                        if let Some(m) = model.get_mut(&i) {
                            m.1 = now;
                        }
                    }
                }
                Op::Remove(i) => {
                    let key = mk(i);
                    let got = ct.remove(&key, key.hash()).map(|e| e.backend);
                    let was_live = live(&model, i, now);
                    let had = model.remove(&i).map(|x| x.0);
                    if got.is_some() {
                        // Possibly expired but not yet reclaimed: same value.
                        prop_assert_eq!(got, had);
                    } else if policy == FullPolicy::Drop {
                        prop_assert!(was_live.is_none(), "lost {}", i);
                    }
                }
                Op::Advance(s) => now = now.wrapping_add(u32::from(s)),
                Op::Expire(n) => {
                    ct.expire_step(now, usize::from(n));
                }
            }
            prop_assert!(ct.len() <= ct.capacity());
        }
        // Final sweep: every model-live key is present with its value (Drop).
        if policy == FullPolicy::Drop {
            for i in 0..64u8 {
                let key = mk(i);
                let got = ct.lookup(&key, key.hash(), now).map(|e| e.backend);
                prop_assert_eq!(got, live(&model, i, now), "key {}", i);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn prop_matches_model_drop_roomy(ops in proptest::collection::vec(op(), 1..300)) {
            run(&ops, 1024, FullPolicy::Drop)?;
        }

        #[test]
        fn prop_matches_model_drop_tight(ops in proptest::collection::vec(op(), 1..300)) {
            run(&ops, 16, FullPolicy::Drop)?;
        }

        #[test]
        fn prop_never_wrong_with_eviction(ops in proptest::collection::vec(op(), 1..300)) {
            run(&ops, 16, FullPolicy::EvictOldest)?;
        }
    }
}
