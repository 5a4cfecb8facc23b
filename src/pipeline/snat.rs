//! SNAT (full-NAT) source ports, partitioned per worker so the owner of a
//! reply is computable from its destination port alone (VPP NAT44-ED).

use super::ratelimit::mix;
use crate::config::Prefix;
use crate::xdp::maps::addr16;

/// Ports below this are never used for SNAT.
pub const FIRST_PORT: u16 = 1024;
const PORTS: u32 = 65536 - FIRST_PORT as u32;

/// Which worker owns SNAT port `port` when `workers` share the range.
#[inline]
pub fn owner(port: u16, workers: u16) -> u16 {
    if port < FIRST_PORT || workers <= 1 {
        return 0;
    }
    let span = PORTS / u32::from(workers);
    (((u32::from(port - FIRST_PORT)) / span).min(u32::from(workers) - 1)) as u16
}

/// This worker's share of one pool: a free list of (address, port) pairs
/// kept as a ring. Preallocated; alloc and release never allocate.
///
/// Port choice follows RFC 6056 §3.3.3's idea (a keyed hash of the flow
/// picks the port, so an observer cannot predict the next one) on a free
/// list instead of a probe: the flow's keyed hash picks any free pair, which
/// trades places with the head and is taken. Released pairs join the tail,
/// so a port just freed is the one least likely to be handed out next (not
/// last-in first-out, which let an attacker guess the port of the next flow).
pub struct SnatPool {
    addrs: Vec<[u8; 16]>,
    /// (address index << 16) | port; the free pairs are `len` slots from `head`.
    ring: Box<[u32]>,
    head: usize,
    len: usize,
    /// Secret of the port choice, drawn per pool share.
    key: u64,
    pub exhausted: u64,
}

impl SnatPool {
    /// A share keyed with a fresh random secret.
    pub fn new(prefix: Prefix, worker: u16, workers: u16) -> SnatPool {
        use std::hash::BuildHasher;
        let key = std::collections::hash_map::RandomState::new().hash_one((worker, workers));
        SnatPool::with_key(prefix, worker, workers, key)
    }

    /// A share whose port choice is keyed with `key` (tests).
    pub fn with_key(prefix: Prefix, worker: u16, workers: u16, key: u64) -> SnatPool {
        let n = prefix.size().min(u128::from(crate::config::MAX_POOL_ADDRS)) as u32;
        let addrs: Vec<[u8; 16]> = (0..n).map(|i| addr16(prefix.nth(i))).collect();
        let workers = u32::from(workers.max(1));
        let span = PORTS / workers;
        let lo = u32::from(FIRST_PORT) + u32::from(worker) * span;
        let hi = if u32::from(worker) + 1 == workers { 65536 } else { lo + span };
        let range = hi - lo;
        let mut free = Vec::with_capacity((n * range) as usize);
        for a in 0..n {
            for off in 0..range {
                free.push((a << 16) | (lo + off));
            }
        }
        let len = free.len();
        SnatPool { addrs, ring: free.into_boxed_slice(), head: 0, len, key, exhausted: 0 }
    }

    /// Takes a free (address, port) for the flow whose hash is `flow_hash`.
    #[inline]
    pub fn alloc(&mut self, flow_hash: u64) -> Option<([u8; 16], u16)> {
        let cap = self.ring.len();
        if self.len == 0 || cap == 0 {
            self.exhausted += 1;
            return None;
        }
        let pick = (mix(flow_hash ^ self.key) % self.len as u64) as usize;
        let i = (self.head + pick) % cap;
        self.ring.swap(i, self.head);
        let v = self.ring[self.head];
        self.head = (self.head + 1) % cap;
        self.len -= 1;
        let addr = *self.addrs.get((v >> 16) as usize)?;
        Some((addr, v as u16))
    }

    /// Returns a pair to the tail of the free list; ignores pairs that are
    /// not this pool's.
    #[inline]
    pub fn release(&mut self, addr: &[u8; 16], port: u16) {
        let Some(a) = self.addrs.iter().position(|x| x == addr) else { return };
        let cap = self.ring.len();
        if self.len < cap {
            self.ring[(self.head + self.len) % cap] = ((a as u32) << 16) | u32::from(port);
            self.len += 1;
        }
    }

    /// Takes every free pair `in_use` names out of the free list (the
    /// ports of flows restored at start). Returns how many it took.
    pub fn reserve(&mut self, mut in_use: impl FnMut(&[u8; 16], u16) -> bool) -> usize {
        let cap = self.ring.len();
        let mut kept = 0;
        for n in 0..self.len {
            let v = self.ring[(self.head + n) % cap];
            let taken = self.addrs.get((v >> 16) as usize).is_some_and(|a| in_use(a, v as u16));
            if !taken {
                self.ring[(self.head + kept) % cap] = v;
                kept += 1;
            }
        }
        let taken = self.len - kept;
        self.len = kept;
        taken
    }

    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        self.addrs.contains(addr)
    }

    pub fn available(&self) -> usize {
        self.len
    }

    pub fn capacity(&self) -> usize {
        self.ring.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cover_every_port_once() {
        let pool = Prefix::parse("192.0.2.0/30").unwrap();
        let mut seen = vec![0u8; 4 * 65536];
        for w in 0..3 {
            let mut p = SnatPool::new(pool, w, 3);
            let mut h = 0u64;
            while let Some((a, port)) = p.alloc({
                h += 1;
                h
            }) {
                assert_eq!(owner(port, 3), w, "port {port} allocated by its owner");
                seen[usize::from(a[15]) * 65536 + usize::from(port)] += 1;
            }
        }
        for a in 0..4 {
            for port in 0..65536usize {
                let want = u8::from(port >= usize::from(FIRST_PORT));
                assert_eq!(seen[a * 65536 + port], want, "addr {a} port {port}");
            }
        }
    }

    #[test]
    fn exhaustion_is_counted_and_release_refills() {
        let pool = Prefix::parse("192.0.2.7/32").unwrap();
        let mut p = SnatPool::new(pool, 0, 1);
        let mut taken = Vec::new();
        while let Some(x) = p.alloc(taken.len() as u64) {
            taken.push(x);
        }
        assert_eq!(taken.len(), PORTS as usize);
        assert_eq!(p.exhausted, 1);
        let mut sorted: Vec<u16> = taken.iter().map(|x| x.1).collect();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), taken.len(), "no port handed out twice");
        p.release(&taken[5].0, taken[5].1);
        assert_eq!(p.alloc(7), Some(taken[5]));
        // Foreign addresses are ignored, never double-booked.
        p.release(&[9; 16], 2000);
        assert_eq!(p.alloc(8), None);
    }

    #[test]
    fn reserved_pairs_are_never_handed_out() {
        let pool = Prefix::parse("192.0.2.7/32").unwrap();
        let mut p = SnatPool::new(pool, 0, 1);
        let busy = |port: u16| port.is_multiple_of(3);
        let taken = p.reserve(|_, port| busy(port));
        assert_eq!(taken, (1024..=65535u32).filter(|&x| busy(x as u16)).count());
        let mut n = 0u64;
        while let Some((_, port)) = p.alloc(n) {
            assert!(!busy(port), "port {port} was reserved");
            n += 1;
        }
        assert_eq!(n as usize + taken, PORTS as usize);
    }

    /// Ports handed to consecutive flows: neither a sequence nor a fixed
    /// stride, and a port just freed is not the next one handed out.
    #[test]
    fn ports_are_unpredictable_and_not_lifo() {
        let pool = Prefix::parse("192.0.2.7/32").unwrap();
        let mut p = SnatPool::with_key(pool, 1, 4, 0x1234_5678_9abc_def0);
        let ports: Vec<u16> =
            (0..1000u64).map(|h| p.alloc(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap().1).collect();
        let (lo, hi) = (FIRST_PORT + 16128, FIRST_PORT + 2 * 16128);
        assert!(ports.iter().all(|&x| (lo..hi).contains(&x) && owner(x, 4) == 1), "stays in the partition");
        let steps: std::collections::HashSet<i32> =
            ports.windows(2).map(|w| i32::from(w[1]) - i32::from(w[0])).collect();
        assert!(steps.len() > 900, "no constant stride: {} distinct steps", steps.len());
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "no port twice while held");
        // Free one and take again: the freed port is not handed straight back.
        let mut again = 0;
        for (i, &port) in ports.iter().enumerate().take(200) {
            p.release(&addr16(pool.nth(0)), port);
            if p.alloc(5000 + i as u64).unwrap().1 == port {
                again += 1;
            }
        }
        assert!(again <= 2, "freed port reused next {again} times of 200");
        // Another key, another sequence.
        let mut q = SnatPool::with_key(pool, 1, 4, 99);
        let other: Vec<u16> =
            (0..1000u64).map(|h| q.alloc(h.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap().1).collect();
        let same = ports.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!(same < 10, "{same} equal picks under different keys");
    }
}
