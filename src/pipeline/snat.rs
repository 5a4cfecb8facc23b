//! SNAT (full-NAT) source ports, partitioned per worker so the owner of a
//! reply is computable from its destination port alone (VPP NAT44-ED).

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

/// This worker's share of one pool: a free list of (address, port) pairs.
/// Preallocated; alloc and free are a pop and a push.
pub struct SnatPool {
    addrs: Vec<[u8; 16]>,
    /// (address index << 16) | port.
    free: Vec<u32>,
    capacity: usize,
    pub exhausted: u64,
}

impl SnatPool {
    pub fn new(prefix: Prefix, worker: u16, workers: u16) -> SnatPool {
        let n = prefix.size().min(u128::from(crate::config::MAX_POOL_ADDRS)) as u32;
        let addrs: Vec<[u8; 16]> = (0..n).map(|i| addr16(prefix.nth(i))).collect();
        let workers = u32::from(workers.max(1));
        let span = PORTS / workers;
        let lo = u32::from(FIRST_PORT) + u32::from(worker) * span;
        let hi = if u32::from(worker) + 1 == workers { 65536 } else { lo + span };
        let mut free = Vec::with_capacity((n * (hi - lo)) as usize);
        // Spread consecutive allocations over ports and addresses; a fixed
        // odd stride visits every port of the range once (RFC 6056 §3.3.3
        // would randomise per destination; a stride keeps it deterministic).
        let range = hi - lo;
        let mut stride = (40503 % range).max(1);
        while gcd(stride, range) != 1 {
            stride += 1;
        }
        for a in 0..n {
            let mut off = 0u32;
            for _ in 0..range {
                off = (off + stride) % range;
                free.push((a << 16) | (lo + off));
            }
        }
        free.reverse();
        let capacity = free.len();
        SnatPool { addrs, free, capacity, exhausted: 0 }
    }

    /// Takes a free (address, port).
    #[inline]
    pub fn alloc(&mut self) -> Option<([u8; 16], u16)> {
        let Some(v) = self.free.pop() else {
            self.exhausted += 1;
            return None;
        };
        let addr = *self.addrs.get((v >> 16) as usize)?;
        Some((addr, v as u16))
    }

    /// Returns a pair; ignores pairs that are not this pool's.
    #[inline]
    pub fn release(&mut self, addr: &[u8; 16], port: u16) {
        let Some(a) = self.addrs.iter().position(|x| x == addr) else { return };
        if self.free.len() < self.capacity {
            self.free.push(((a as u32) << 16) | u32::from(port));
        }
    }

    pub fn contains(&self, addr: &[u8; 16]) -> bool {
        self.addrs.contains(addr)
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
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
            while let Some((a, port)) = p.alloc() {
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
        while let Some(x) = p.alloc() {
            taken.push(x);
        }
        assert_eq!(taken.len(), PORTS as usize);
        assert_eq!(p.exhausted, 1);
        let mut sorted: Vec<u16> = taken.iter().map(|x| x.1).collect();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), taken.len(), "no port handed out twice");
        p.release(&taken[5].0, taken[5].1);
        assert_eq!(p.alloc(), Some(taken[5]));
        // Foreign addresses are ignored, never double-booked.
        p.release(&[9; 16], 2000);
        assert_eq!(p.alloc(), None);
    }
}
