//! New-flow rate limits: token buckets per worker, one for all new flows
//! and a fixed array of them indexed by a keyed hash of the client address.
//! No locks (each worker owns its limiter), no allocation after
//! construction. Sources that share a slot share its bucket: a limit per
//! source is at least as strict as configured, never looser.
//!
//! Time is the table's [`Tick`] (seconds): a bucket refills `rate` tokens a
//! second up to `burst`.

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

    fn full(limit: RateLimit, now: Tick) -> Bucket {
        Bucket { tokens: limit.burst, refilled: now }
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
        if self.global_limit.rate != 0 && !self.global.take(self.global_limit, now) {
            return Err(Refused::Global);
        }
        Ok(())
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
