//! Sizes and timeouts of the per-worker tables, as the config states them:
//! conntrack timeouts and full-table policy, the Maglev table size rule.
//! Plain data here; the tables in `pipeline` interpret it.

/// Upper bound on the Maglev table size, to keep builds bounded (2 bytes per entry).
pub const MAX_TABLE_SIZE: u32 = 1 << 24;

/// Deterministic primality test by trial division (Maglev sizes are <= 2^24).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n & 1 == 0 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 3u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// Default idle limit of unassured conntrack entries under pressure, in seconds.
pub const DEFAULT_PRESSURE_TIMEOUT: u32 = 5;

/// Shallow reassembly's per-worker limits (`[fragments]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragments {
    /// Datagrams tracked at once (the table rounds up to a power of two).
    pub entries_per_worker: u32,
    /// Later fragments held, by copy, until their first fragment comes.
    pub held_per_worker: u32,
    /// Seconds a datagram's entry (and its held copies) lives at most.
    pub timeout: u32,
}

impl Default for Fragments {
    /// Linux's `ipfrag_time` is 30 s; a datagram whose fragments are more
    /// than a few seconds apart is lost anyway, and a short life keeps the
    /// table from being held by junk.
    fn default() -> Self {
        Self { entries_per_worker: 4096, held_per_worker: 64, timeout: 3 }
    }
}

/// Bounds of `[fragments]`: memory stays below about 100 MiB of entries
/// and 16 MiB of held copies per worker.
pub const MAX_FRAG_ENTRIES: u32 = 1 << 20;
pub const MAX_FRAG_HELD: u32 = 4096;
pub const MAX_FRAG_TIMEOUT: u32 = 120;

/// Timeouts in seconds per state. Defaults are Linux's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: u32,
    pub tcp_syn_recv: u32,
    pub tcp_established: u32,
    pub tcp_fin_wait: u32,
    pub tcp_close_wait: u32,
    pub tcp_last_ack: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    pub udp_unreplied: u32,
    pub udp_replied: u32,
    pub icmp: u32,
    pub generic: u32,
}

impl Default for Timeouts {
    /// Linux: `tcp_timeouts[]` in nf_conntrack_proto_tcp.c, `udp_timeouts[]`
    /// in nf_conntrack_proto_udp.c (30 s / 120 s stream), ICMP 30 s,
    /// generic 600 s.
    fn default() -> Self {
        Self {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 432_000,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            udp_unreplied: 30,
            udp_replied: 120,
            icmp: 30,
            generic: 600,
        }
    }
}

/// What to do when both candidate buckets of a new key are full of live
/// entries and no resident can be relocated to its other bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Refuse the new flow (counted in `insert_failed_full`).
    Drop,
    /// Replace the least recently seen entry of the two candidate buckets.
    EvictOldest,
}
