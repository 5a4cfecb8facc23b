//! SNAT (full-NAT) source ports, partitioned per worker so the owner of a
//! reply is computable from its destination port alone (VPP NAT44-ED).
//!
//! The NAT64 pool's shares also keep a binding table (`Bib`, RFC 6146
//! §3.1): one pool (address, port) per client (IPv6 address, port,
//! protocol) for as long as any of its sessions lives, whatever their
//! destinations (endpoint-independent mapping, RFC 4787 REQ-1), and the
//! way back from a pool pair to its client (hairpinning, §3.8).

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

/// How many free pairs at the front of the list a new flow's port is drawn
/// from: enough that the next port is a 1 in 4,096 guess, few enough (16
/// KiB of the ring, near a head that moves one slot per flow) to stay in
/// cache. Drawing from the whole list cost a cache miss per new flow.
const PICK_WINDOW: usize = 4096;

/// This worker's share of one pool: a free list of (address, port) pairs
/// kept as a ring. Preallocated; alloc and release never allocate.
///
/// Port choice follows RFC 6056 §3.3.3's idea (a keyed hash of the flow
/// picks the port, so an observer cannot predict the next one) on a free
/// list instead of a probe: the flow's keyed hash picks one of the first
/// `PICK_WINDOW` free pairs, which trades places with the head and is
/// taken. Released pairs join the tail,
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
    /// First port of this worker's share, and how many ports it has.
    lo: u32,
    range: u32,
    /// Bindings to clients (the NAT64 pool only, see [`SnatPool::enable_bib`]).
    bib: Option<Bib>,
    pub exhausted: u64,
}

/// A flow's keyed hash in one pool ([`SnatPool::pick_hash`]): which of
/// the free pairs it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PickHash(u64);

/// A client transport address a pool pair is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Client {
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
}

/// One pool pair's binding: its client and how many sessions use it
/// (0: not bound; an SNAT flow of a service, or free).
#[derive(Clone, Copy, Default)]
struct Bound {
    client: Client,
    refs: u32,
}

/// The binding information base of one worker's share of the NAT64 pool
/// (RFC 6146 §3.1), preallocated and indexed both ways: by pool pair
/// (`pairs`, direct: the pair's index in the share) and by client
/// (`index`, open addressing with linear probing over pair indices + 1,
/// at most half full, deletion by backward shift so no tombstones pile
/// up). Neither lookup allocates; a binding lives while sessions use it.
struct Bib {
    pairs: Box<[Bound]>,
    index: Box<[u32]>,
    mask: usize,
}

//= https://www.rfc-editor.org/rfc/rfc6146#section-3.5.1.1
//# If the BIB does not contain such an entry [...] the NAT64 creates a new
//# BIB entry. [...] If the BIB contains such an entry, the NAT64 uses the
//# IPv4 transport address [...] of the BIB entry.
impl Bib {
    fn new(pairs: usize) -> Bib {
        let slots = (pairs * 2).next_power_of_two().max(2);
        Bib { pairs: vec![Bound::default(); pairs].into(), index: vec![0; slots].into(), mask: slots - 1 }
    }

    fn home(&self, c: &Client, key: u64) -> usize {
        let a = u128::from_be_bytes(c.addr);
        let folded = (a as u64) ^ ((a >> 64) as u64).rotate_left(17);
        (mix(folded ^ key ^ (u64::from(c.port) << 8 | u64::from(c.proto))) as usize) & self.mask
    }

    /// The pair index bound to `c`, and its slot in `index`.
    fn find(&self, c: &Client, key: u64) -> Option<(usize, usize)> {
        let mut s = self.home(c, key);
        for _ in 0..self.index.len() {
            let v = *self.index.get(s)?;
            if v == 0 {
                return None;
            }
            let i = v as usize - 1;
            if self.pairs.get(i).is_some_and(|b| b.refs > 0 && b.client == *c) {
                return Some((i, s));
            }
            s = (s + 1) & self.mask;
        }
        None
    }

    fn insert(&mut self, c: &Client, i: usize, key: u64) {
        let mut s = self.home(c, key);
        for _ in 0..self.index.len() {
            if self.index[s] == 0 {
                self.index[s] = i as u32 + 1;
                return;
            }
            s = (s + 1) & self.mask;
        }
    }

    /// Empties slot `hole`, moving later entries of its probe run back
    /// (Knuth's algorithm R) so every entry stays reachable from its home.
    fn remove_slot(&mut self, mut hole: usize, key: u64) {
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let v = self.index[j];
            if v == 0 {
                break;
            }
            let Some(b) = self.pairs.get(v as usize - 1) else { break };
            let home = self.home(&b.client, key);
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(hole) & self.mask) {
                self.index[hole] = v;
                hole = j;
            }
        }
        self.index[hole] = 0;
    }
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
        SnatPool {
            addrs,
            ring: free.into_boxed_slice(),
            head: 0,
            len,
            key,
            lo,
            range,
            bib: None,
            exhausted: 0,
        }
    }

    /// Gives this share a binding table (the NAT64 pool's). Idempotent;
    /// pairs already handed out to services' flows stay unbound.
    pub fn enable_bib(&mut self) {
        if self.bib.is_none() {
            self.bib = Some(Bib::new(self.ring.len()));
        }
    }

    /// Index of (address, port) in this share, if it is one of its pairs.
    fn pair(&self, addr: &[u8; 16], port: u16) -> Option<usize> {
        let a = self.addrs.iter().position(|x| x == addr)?;
        let off = u32::from(port).checked_sub(self.lo).filter(|&o| o < self.range)?;
        Some(a * self.range as usize + off as usize)
    }

    /// The pool pair bound to `client`, taking one more reference to it;
    /// else a free pair (as [`SnatPool::alloc`]) bound to `client` now.
    /// Without a binding table, [`SnatPool::alloc`].
    #[inline]
    pub fn alloc_bound(&mut self, client: &Client, flow_hash: u64) -> Option<([u8; 16], u16)> {
        let key = self.key;
        if let Some(bib) = &mut self.bib {
            if let Some((i, _)) = bib.find(client, key) {
                let b = bib.pairs.get_mut(i)?;
                b.refs = b.refs.saturating_add(1);
                let a = *self.addrs.get(i / self.range as usize)?;
                return Some((a, (self.lo + (i % self.range as usize) as u32) as u16));
            }
        }
        let (addr, port) = self.alloc(flow_hash)?;
        if let Some(i) = self.pair(&addr, port) {
            if let Some(bib) = &mut self.bib {
                if let Some(b) = bib.pairs.get_mut(i) {
                    *b = Bound { client: *client, refs: 1 };
                    bib.insert(client, i, key);
                }
            }
        }
        Some((addr, port))
    }

    /// The client a pool pair is bound to (no reference taken).
    #[inline]
    pub fn bound(&self, addr: &[u8; 16], port: u16) -> Option<Client> {
        let b = self.bib.as_ref()?.pairs.get(self.pair(addr, port)?)?;
        (b.refs > 0).then_some(b.client)
    }

    /// One more session uses the bound pair (address, port). Returns
    /// whether it was bound.
    pub fn hold(&mut self, addr: &[u8; 16], port: u16) -> bool {
        let Some(i) = self.pair(addr, port) else { return false };
        match self.bib.as_mut().and_then(|b| b.pairs.get_mut(i)) {
            Some(b) if b.refs > 0 => {
                b.refs = b.refs.saturating_add(1);
                true
            }
            _ => false,
        }
    }

    /// A restored session of `client` uses (address, port): rebuilds its
    /// binding (restart). Call before [`SnatPool::reserve`].
    pub fn rebind(&mut self, addr: &[u8; 16], port: u16, client: &Client) {
        let key = self.key;
        let Some(i) = self.pair(addr, port) else { return };
        let Some(bib) = &mut self.bib else { return };
        let known = bib.find(client, key).is_some();
        let Some(b) = bib.pairs.get_mut(i) else { return };
        if b.refs == 0 {
            *b = Bound { client: *client, refs: 1 };
            // A client with a second pair (state from per-session mappings)
            // keeps the first one for new sessions.
            if !known {
                bib.insert(client, i, key);
            }
        } else if b.client == *client {
            b.refs = b.refs.saturating_add(1);
        }
    }

    /// How many pairs are bound to clients.
    pub fn bindings(&self) -> usize {
        self.bib.as_ref().map_or(0, |b| b.pairs.iter().filter(|x| x.refs > 0).count())
    }

    /// Takes a free (address, port) for the flow whose hash is `flow_hash`.
    #[inline]
    pub fn alloc(&mut self, flow_hash: u64) -> Option<([u8; 16], u16)> {
        self.alloc_at(self.pick_hash(flow_hash))
    }

    /// The keyed hash that places a flow in the pick window: computed once
    /// for a new flow, for both [`SnatPool::prefetch_pick`] and
    /// [`SnatPool::alloc_at`].
    #[inline]
    pub fn pick_hash(&self, flow_hash: u64) -> PickHash {
        PickHash(mix(flow_hash ^ self.key))
    }

    /// [`SnatPool::alloc`] with the flow's [`SnatPool::pick_hash`].
    #[inline]
    pub fn alloc_at(&mut self, pick: PickHash) -> Option<([u8; 16], u16)> {
        let cap = self.ring.len();
        if self.len == 0 || cap == 0 {
            self.exhausted += 1;
            return None;
        }
        self.ring.swap(self.pick(pick, 0), self.head);
        let v = self.ring[self.head];
        self.head = if self.head + 1 == cap { 0 } else { self.head + 1 };
        self.len -= 1;
        let addr = *self.addrs.get((v >> 16) as usize)?;
        Some((addr, v as u16))
    }

    /// The ring slot [`SnatPool::alloc_at`] takes for `pick` when `ahead`
    /// allocations come first (they move the head and shorten the list).
    /// Multiply-shift, not `%`: a pick in the window without a division.
    /// Call with `ahead < len`.
    #[inline]
    fn pick(&self, pick: PickHash, ahead: usize) -> usize {
        let cap = self.ring.len();
        let window = (self.len - ahead).min(PICK_WINDOW);
        let pick = ((u128::from(pick.0) * window as u128) >> 64) as usize;
        // head < cap and ahead + pick < len <= cap: one wrap at most.
        let i = self.head + ahead + pick;
        if i >= cap {
            i - cap
        } else {
            i
        }
    }

    /// Prefetches the ring slot the flow's port will come from, `ahead`
    /// allocations from now (the batch's earlier new flows); a guess that
    /// is wrong, when one of them takes no port, costs nothing but the hint.
    #[inline]
    pub fn prefetch_pick(&self, pick: PickHash, ahead: usize) {
        if ahead < self.len {
            if let Some(slot) = self.ring.get(self.pick(pick, ahead)) {
                super::prefetch::lines(slot, 1);
            }
        }
    }

    /// Returns a pair to the tail of the free list; ignores pairs that are
    /// not this pool's. A bound pair is given back when its last session
    /// ends (RFC 6146 §3.5.1: a BIB entry lives while it has sessions).
    #[inline]
    pub fn release(&mut self, addr: &[u8; 16], port: u16) {
        let Some(a) = self.addrs.iter().position(|x| x == addr) else { return };
        let key = self.key;
        if let (Some(i), Some(bib)) = (self.pair(addr, port), self.bib.as_mut()) {
            if let Some(b) = bib.pairs.get_mut(i) {
                if b.refs > 1 {
                    b.refs -= 1;
                    return;
                }
                if b.refs == 1 {
                    b.refs = 0;
                    let client = b.client;
                    // Unindex it (only if the index points at this pair).
                    let mut s = bib.home(&client, key);
                    for _ in 0..bib.index.len() {
                        let v = bib.index[s];
                        if v == 0 {
                            break;
                        }
                        if v as usize - 1 == i {
                            bib.remove_slot(s, key);
                            break;
                        }
                        s = (s + 1) & bib.mask;
                    }
                }
            }
        }
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

    /// The slot a batch's k-th new flow is prefetched at is the one its
    /// port comes from (all but when an earlier flow of the batch took or
    /// moved that slot, about 1 in 4,096 per earlier flow).
    #[test]
    fn prefetched_pick_is_the_slot_alloc_takes() {
        let mut p = SnatPool::with_key(Prefix::parse("192.0.2.0/28").unwrap(), 0, 1, 7);
        let (mut hits, mut tries) = (0, 0);
        for batch in 0..200u64 {
            let hashes: Vec<u64> = (0..64).map(|k| mix(batch << 8 | k)).collect();
            let ring = p.ring.clone();
            let predicted: Vec<u32> =
                hashes.iter().enumerate().map(|(k, &h)| ring[p.pick(p.pick_hash(h), k)]).collect();
            for (&h, want) in hashes.iter().zip(predicted) {
                let (a, port) = p.alloc(h).unwrap();
                let got = (u32::from(a[15] & 0x0f) << 16) | u32::from(port);
                hits += usize::from(got == want);
                tries += 1;
            }
        }
        assert!(hits * 100 >= tries * 99, "{hits} of {tries} predicted");
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

    fn client(n: u8, port: u16, proto: u8) -> Client {
        let mut addr = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n];
        addr[14] = n ^ 0x5a;
        Client { addr, port, proto }
    }

    /// One pair per client whatever the flow; the pair is freed with the
    /// last session that holds it, and the way back finds the client.
    #[test]
    fn bindings_are_endpoint_independent_and_counted() {
        let prefix = Prefix::parse("192.0.2.7/32").unwrap();
        let mut p = SnatPool::with_key(prefix, 0, 1, 7);
        p.enable_bib();
        let (a, b) = (client(1, 4000, 17), client(2, 4000, 17));
        let pa = p.alloc_bound(&a, 11).unwrap();
        assert_eq!(p.alloc_bound(&a, 12), Some(pa), "same client, another destination: same pair");
        let pb = p.alloc_bound(&b, 11).unwrap();
        assert_ne!(pa, pb);
        // The same address and port over TCP is another client.
        assert_ne!(p.alloc_bound(&client(1, 4000, 6), 11), Some(pa));
        assert_eq!(p.bound(&pa.0, pa.1), Some(a));
        assert_eq!(p.bound(&pb.0, pb.1), Some(b));
        assert_eq!(p.bindings(), 3);
        let free = p.available();
        p.release(&pa.0, pa.1);
        assert_eq!(p.available(), free, "one session of two ended: still bound");
        assert_eq!(p.bound(&pa.0, pa.1), Some(a));
        p.release(&pa.0, pa.1);
        assert_eq!(p.available(), free + 1);
        assert_eq!(p.bound(&pa.0, pa.1), None);
        assert!(p.hold(&pb.0, pb.1), "a bound pair takes another session");
        assert!(!p.hold(&pa.0, pa.1), "a free pair does not");
        p.release(&pb.0, pb.1);
        assert_eq!(p.bound(&pb.0, pb.1), Some(b));
    }

    /// Against a model (a map), through many binds and releases that fill
    /// the index's probe runs and shift them back on deletion.
    #[test]
    fn binding_table_matches_a_model() {
        use std::collections::HashMap;
        let prefix = Prefix::parse("192.0.2.7/32").unwrap();
        let mut p = SnatPool::with_key(prefix, 1, 4, 3);
        p.enable_bib();
        let mut model: HashMap<Client, (([u8; 16], u16), u32)> = HashMap::new();
        let mut x = 0x1234_5678u64;
        for step in 0..200_000u64 {
            x = mix(x ^ step);
            let c = client((x % 61) as u8, (x >> 8) as u16 % 37, [6, 17, 58][(x >> 24) as usize % 3]);
            if x >> 40 & 1 == 0 {
                let got = p.alloc_bound(&c, x).unwrap();
                let e = model.entry(c).or_insert((got, 0));
                assert_eq!(e.0, got, "step {step}");
                e.1 += 1;
            } else if let Some(&(pair, refs)) = model.get(&c) {
                p.release(&pair.0, pair.1);
                if refs == 1 {
                    model.remove(&c);
                } else {
                    model.insert(c, (pair, refs - 1));
                }
            }
        }
        assert_eq!(p.bindings(), model.len());
        for (c, (pair, _)) in &model {
            assert_eq!(p.bound(&pair.0, pair.1), Some(*c));
            assert!(p.hold(&pair.0, pair.1));
        }
    }

    /// A restart rebuilds bindings from the sessions it keeps.
    #[test]
    fn rebind_restores_bindings_and_references() {
        let prefix = Prefix::parse("192.0.2.7/32").unwrap();
        let mut p = SnatPool::with_key(prefix, 0, 1, 7);
        p.enable_bib();
        let a = client(1, 4000, 17);
        let addr = addr16(prefix.nth(0));
        p.rebind(&addr, 5000, &a);
        p.rebind(&addr, 5000, &a);
        p.reserve(|_, port| port == 5000);
        assert_eq!(p.alloc_bound(&a, 1), Some((addr, 5000)));
        for _ in 0..2 {
            p.release(&addr, 5000);
            assert_eq!(p.bound(&addr, 5000), Some(a));
        }
        p.release(&addr, 5000);
        assert_eq!(p.bound(&addr, 5000), None);
    }
}
