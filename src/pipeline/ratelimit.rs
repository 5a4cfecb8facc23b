//! Rate limits, token buckets per worker. New flows: one bucket for all of
//! them and a fixed array indexed by a keyed hash of the client address.
//! Answers ([`ErrorLimiter`]): one bucket for the ICMP errors and RSTs the
//! worker originates, and optionally one per destination.
//! No locks (each worker owns its limiter), no allocation after
//! construction. Sources that share a slot share its bucket: a limit per
//! source is at least as strict as configured, never looser.
//!
//! Time is the table's [`Tick`] (seconds): a bucket refills `rate` tokens a
//! second up to `burst`.
//!
//! [`SynCheck`] is the flood guard in front of both: while new TCP flows
//! arrive faster than a set rate, a first SYN is dropped and remembered,
//! and only its retransmission opens a flow. A client proves it lives at
//! the address it sends from; a spoofed flood, which never sends the same
//! SYN twice, is dropped before it costs a table entry, an SNAT port, a
//! transmit and a backend's SYN-ACK.

use super::conntrack::Tick;
use crate::config::RateLimit;

/// Buckets of the per-source limiter (a power of two).
pub const SOURCE_SLOTS: usize = 4096;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    tokens: u32,
    refilled: Tick,
}

impl Bucket {
    /// Takes a token if there is one, refilling first.
    #[inline]
    fn take(&mut self, limit: RateLimit, now: Tick) -> bool {
        let elapsed = now.wrapping_sub(self.refilled) as i32;
        if elapsed > 0 {
            let add = u64::from(limit.rate) * elapsed as u64;
            self.tokens = (u64::from(self.tokens) + add).min(u64::from(limit.burst)) as u32;
            self.refilled = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// [`Bucket::take`] under a limit that may be off (rate 0: everything
    /// passes).
    #[inline]
    fn admit(&mut self, limit: RateLimit, now: Tick) -> bool {
        limit.rate == 0 || self.take(limit, now)
    }

    fn full(limit: RateLimit, now: Tick) -> Bucket {
        Bucket { tokens: limit.burst, refilled: now }
    }
}

/// One worker's limit on the ICMP errors and RSTs it originates (RFC 4443
/// §2.4(f): an IPv6 node MUST limit the ICMPv6 errors it sends; RFC 1812
/// §4.3.2.8 for IPv4): errors answer packets, so a flood of expiring or
/// oversized packets would otherwise turn into an equal flood of errors.
/// A bucket for all of them, and optionally one per destination (hashed
/// into [`SOURCE_SLOTS`] slots, as Linux keeps one per peer), so one
/// flooding sender cannot spend everyone's errors: a client's Packet Too
/// Big still gets through while another draws errors at the limit.
#[derive(Debug, Clone)]
pub struct ErrorLimiter {
    limit: RateLimit,
    bucket: Bucket,
    per_destination: RateLimit,
    /// Empty when the per-destination limit is off.
    destinations: Box<[Bucket]>,
    /// Key of the destination hash, so no sender can aim at another's slot.
    key: u64,
}

impl ErrorLimiter {
    /// `limit.rate` errors a second, up to `limit.burst` at once (rate 0:
    /// no limit).
    pub fn new(limit: RateLimit) -> ErrorLimiter {
        ErrorLimiter::with_destinations(limit, RateLimit::default(), 0)
    }

    /// [`ErrorLimiter::new`], and at most `per_destination` to any one
    /// destination address (rate 0: no such limit); `key` keys the hash.
    pub fn with_destinations(limit: RateLimit, per_destination: RateLimit, key: u64) -> ErrorLimiter {
        let slots = if per_destination.rate == 0 { 0 } else { SOURCE_SLOTS };
        ErrorLimiter {
            limit,
            bucket: Bucket::full(limit, 0),
            per_destination,
            destinations: vec![Bucket::full(per_destination, 0); slots].into_boxed_slice(),
            key,
        }
    }

    pub fn unlimited() -> ErrorLimiter {
        ErrorLimiter::new(RateLimit::default())
    }

    /// Whether one more error may be sent to `dst` (16-byte form) at `now`.
    /// The destination's bucket is asked first: an error it refuses takes
    /// nothing from everyone's.
    #[inline]
    pub fn admit(&mut self, dst: &[u8; 16], now: Tick) -> bool {
        if !self.destinations.is_empty() {
            let i = (source_hash(dst, self.key) as usize) & (self.destinations.len() - 1);
            if let Some(b) = self.destinations.get_mut(i) {
                if !b.take(self.per_destination, now) {
                    return false;
                }
            }
        }
        self.bucket.admit(self.limit, now)
    }

    /// Whether [`ErrorLimiter::admit`] refuses every error at `now`: the
    /// bucket is empty and no second has passed to refill it. A batch has
    /// one clock, so this holds for the whole batch, and a stage that sees
    /// it builds no answer only to have it dropped.
    #[inline]
    pub fn spent(&self, now: Tick) -> bool {
        self.limit.rate != 0 && self.bucket.tokens == 0 && now.wrapping_sub(self.bucket.refilled) as i32 <= 0
    }
}

/// Which limit refused a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Global,
    Source,
}

/// One worker's new-flow limiter.
pub struct FlowLimiter {
    /// Off unless the config sets `syn_check_rate`.
    syn_check: Option<SynCheck>,
    global_limit: RateLimit,
    source_limit: RateLimit,
    global: Bucket,
    /// Empty when the per-source limit is off.
    sources: Box<[Bucket]>,
    /// Key of the source hash, so no client can aim at another's bucket.
    key: u64,
}

impl FlowLimiter {
    pub fn new(global: RateLimit, source: RateLimit, key: u64) -> FlowLimiter {
        let sources = if source.rate == 0 { 0 } else { SOURCE_SLOTS };
        FlowLimiter {
            syn_check: None,
            global_limit: global,
            source_limit: source,
            global: Bucket::full(global, 0),
            sources: vec![Bucket { tokens: source.burst, refilled: 0 }; sources].into_boxed_slice(),
            key,
        }
    }

    /// No limit configured.
    pub fn unlimited() -> FlowLimiter {
        FlowLimiter::new(RateLimit::default(), RateLimit::default(), 0)
    }

    /// Turns the SYN check on above `rate` new TCP flows a second (0: off).
    pub fn with_syn_check(mut self, rate: u32) -> FlowLimiter {
        self.syn_check = (rate != 0).then(|| SynCheck::new(rate, self.key));
        self
    }

    /// Whether a first SYN (flow hash `hash`) may open a flow now: always
    /// while new flows are below the SYN check's rate; above it, only a SYN
    /// seen before (a retransmission).
    #[inline]
    pub fn syn_verified(&mut self, hash: u64, now: Tick) -> bool {
        match &mut self.syn_check {
            Some(c) => c.verified(hash, now),
            None => true,
        }
    }

    /// Whether a new flow from `src` may start at `now`. The per-source
    /// bucket is asked first, so one noisy client spends its own tokens,
    /// not everyone's.
    #[inline]
    pub fn admit(&mut self, src: &[u8; 16], now: Tick) -> Result<(), Refused> {
        if !self.sources.is_empty() {
            let i = (source_hash(src, self.key) as usize) & (self.sources.len() - 1);
            if let Some(b) = self.sources.get_mut(i) {
                if !b.take(self.source_limit, now) {
                    return Err(Refused::Source);
                }
            }
        }
        if !self.global.admit(self.global_limit, now) {
            return Err(Refused::Global);
        }
        Ok(())
    }
}

/// Bits in each generation of the SYN check's filter (2 MiB each). At
/// 1 M spoofed SYNs a second about 4% of them look retransmitted; at the
/// lab's tens of thousands, fewer than 1 in 1000.
pub const SYN_FILTER_BITS: usize = 1 << 24;

/// Seconds a generation of the filter is written: a first SYN is remembered
/// for 3 to 6 s, past Linux's first retransmission (1 s) and Windows' (3 s).
const SYN_GENERATION: Tick = 3;

/// Admission by retransmission while new TCP flows arrive faster than
/// `rate` a second: two generations of a Bloom filter (two bits per SYN)
/// of first SYNs' flow hashes, keyed so no sender can aim at the bits of
/// another's SYN. Counting and filtering cost a few memory accesses; the
/// only bulk work is clearing the older generation every 3 s.
pub struct SynCheck {
    rate: u32,
    key: u64,
    /// New TCP flows asked for in second `second`, and in the second before.
    second: Tick,
    asked: u32,
    asked_before: u32,
    generations: [Box<[u64]>; 2],
    current: usize,
    generation_start: Tick,
}

impl SynCheck {
    pub fn new(rate: u32, key: u64) -> SynCheck {
        let words = SYN_FILTER_BITS / 64;
        SynCheck {
            rate,
            key: mix(key ^ 0x5359_4e43_4845_434b),
            second: 0,
            asked: 0,
            asked_before: 0,
            generations: [vec![0; words].into_boxed_slice(), vec![0; words].into_boxed_slice()],
            current: 0,
            generation_start: 0,
        }
    }

    /// Whether the first SYN of the flow hashed `hash` may open it at `now`.
    #[inline]
    pub fn verified(&mut self, hash: u64, now: Tick) -> bool {
        if now != self.second {
            self.asked_before = if now == self.second.wrapping_add(1) { self.asked } else { 0 };
            self.asked = 0;
            self.second = now;
        }
        self.asked = self.asked.saturating_add(1);
        if self.asked <= self.rate && self.asked_before <= self.rate {
            return true;
        }
        self.rotate(now);
        let fp = mix(hash ^ self.key);
        let bits = [(fp as usize) & (SYN_FILTER_BITS - 1), ((fp >> 32) as usize) & (SYN_FILTER_BITS - 1)];
        let seen = |g: &[u64]| bits.iter().all(|&b| g.get(b / 64).is_some_and(|w| w & (1 << (b % 64)) != 0));
        if self.generations.iter().any(|g| seen(g)) {
            return true;
        }
        if let Some(g) = self.generations.get_mut(self.current) {
            for b in bits {
                if let Some(w) = g.get_mut(b / 64) {
                    *w |= 1 << (b % 64);
                }
            }
        }
        false
    }

    /// Starts a new generation every `SYN_GENERATION` seconds, forgetting
    /// the oldest (both after a long quiet spell).
    fn rotate(&mut self, now: Tick) {
        let age = now.wrapping_sub(self.generation_start) as i32;
        if (0..SYN_GENERATION as i32).contains(&age) {
            return;
        }
        if age >= 2 * SYN_GENERATION as i32 || age < 0 {
            self.generations.iter_mut().for_each(|g| g.fill(0));
        }
        self.current ^= 1;
        if let Some(g) = self.generations.get_mut(self.current) {
            g.fill(0);
        }
        self.generation_start = now;
    }
}

/// A keyed mix of a 16-byte address (two rounds of a 64-bit multiply-xorshift).
#[inline]
pub fn source_hash(a: &[u8; 16], key: u64) -> u64 {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&a[..8]);
    hi.copy_from_slice(&a[8..]);
    mix(mix(u64::from_le_bytes(lo) ^ key) ^ u64::from_le_bytes(hi))
}

#[inline]
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `spent` says so exactly when `admit` refuses, and not a second longer.
    #[test]
    fn errors_are_spent_until_the_next_second() {
        let mut e = ErrorLimiter::new(RateLimit { rate: 2, burst: 3 });
        let d = [7; 16];
        assert!(!e.spent(10));
        assert!((0..3).all(|_| e.admit(&d, 10)));
        assert!(e.spent(10) && !e.admit(&d, 10));
        assert!(!e.spent(11), "a second's tokens");
        assert!(e.admit(&d, 11) && e.admit(&d, 11) && e.spent(11));
        let mut off = ErrorLimiter::unlimited();
        assert!((0..1000).all(|_| off.admit(&d, 10)) && !off.spent(10));
    }

    /// A destination past its own limit is refused while others still get
    /// theirs, and its refusals take nothing from the shared bucket.
    #[test]
    fn one_destination_cannot_spend_everyones_errors() {
        let dst = |i: u32| {
            let mut a = [0u8; 16];
            a[12..].copy_from_slice(&i.to_be_bytes());
            a
        };
        let mut e = ErrorLimiter::with_destinations(
            RateLimit { rate: 10, burst: 10 },
            RateLimit { rate: 1, burst: 2 },
            9,
        );
        let flooder = dst(1);
        let admitted = (0..100).filter(|_| e.admit(&flooder, 10)).count();
        assert_eq!(admitted, 2, "the destination's burst");
        assert!((2..10).all(|i| e.admit(&dst(i), 10)), "eight others: the shared bucket kept 8 of 10");
        assert!(!e.admit(&dst(10), 10) && e.spent(10), "then the shared bucket is spent");
        assert!(e.admit(&flooder, 11), "a second later, one more");
        assert!(!e.admit(&flooder, 11));
    }

    /// Below the rate every SYN passes; above it a spoofed flood (every SYN
    /// new) is dropped while a retransmitted SYN passes within 1 and 3 s,
    /// and the check lifts a second after the flood stops.
    #[test]
    fn syn_check_admits_retransmissions_and_drops_a_spoofed_flood() {
        let mut l = FlowLimiter::unlimited().with_syn_check(100);
        assert!((0..100).all(|i| l.syn_verified(mix(i), 10)), "below the rate");
        let mut flood = 1_000_000u64;
        let mut spoofed_passed = 0;
        let mut step = |l: &mut FlowLimiter, now: Tick, n: usize| {
            for _ in 0..n {
                flood += 1;
                spoofed_passed += usize::from(l.syn_verified(mix(flood), now));
            }
        };
        step(&mut l, 10, 50_000);
        let (linux, windows) = (mix(7), mix(8));
        assert!(!l.syn_verified(linux, 10) && !l.syn_verified(windows, 10), "first SYNs dropped");
        step(&mut l, 11, 50_000);
        assert!(l.syn_verified(linux, 11), "Linux retransmits after 1 s");
        step(&mut l, 12, 50_000);
        step(&mut l, 13, 50_000);
        assert!(l.syn_verified(windows, 13), "Windows retransmits after 3 s");
        assert!(spoofed_passed < 200, "{spoofed_passed} of 200 000 spoofed SYNs passed");
        // The flood over: one quiet second later every SYN passes at once.
        assert!(!l.syn_verified(mix(9), 14));
        assert!(l.syn_verified(mix(10), 15));
        assert!(l.syn_verified(mix(11), 16));
        let mut off = FlowLimiter::unlimited();
        assert!((0..10_000).all(|i| off.syn_verified(mix(i), 10)), "off by default");
    }

    fn a(i: u8) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[15] = i;
        x[14] = 7;
        x
    }

    #[test]
    fn global_bucket_allows_burst_then_rate() {
        let mut l = FlowLimiter::new(RateLimit { rate: 3, burst: 5 }, RateLimit::default(), 1);
        let ok = (0..10).filter(|i| l.admit(&a(*i), 100).is_ok()).count();
        assert_eq!(ok, 5);
        assert_eq!(l.admit(&a(0), 100), Err(Refused::Global));
        let ok = (0..10).filter(|i| l.admit(&a(*i), 101).is_ok()).count();
        assert_eq!(ok, 3);
        // A long pause refills to the burst, not beyond.
        let ok = (0..10).filter(|i| l.admit(&a(*i), 1000).is_ok()).count();
        assert_eq!(ok, 5);
    }

    #[test]
    fn source_bucket_limits_one_client_not_others() {
        let mut l = FlowLimiter::new(RateLimit::default(), RateLimit { rate: 1, burst: 2 }, 42);
        assert!(l.admit(&a(1), 5).is_ok());
        assert!(l.admit(&a(1), 5).is_ok());
        assert_eq!(l.admit(&a(1), 5), Err(Refused::Source));
        // Other clients (different slots for this key) still get in.
        let others = (2..50).filter(|i| l.admit(&a(*i), 5).is_ok()).count();
        assert!(others >= 45, "{others}");
        assert!(l.admit(&a(1), 6).is_ok());
    }

    #[test]
    fn unlimited_admits_everything() {
        let mut l = FlowLimiter::unlimited();
        assert!((0..100_000u32).all(|i| l.admit(&a(i as u8), i).is_ok()));
    }
}
