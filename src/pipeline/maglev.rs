//! Weighted Maglev consistent hashing and the dataplane flow hashes.
//!
//! Table population follows Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, §3.4 (Pseudocode 1):
//! `offset = h1(key) % M`, `skip = h2(key) % (M - 1) + 1`,
//! `permutation[j] = (offset + j * skip) % M`, backends take turns claiming
//! their next preferred empty slot until the table is full.
//!
//! Weights use Katran's credit scheme (facebookincubator/katran,
//! `katran/lib/MaglevHashV2.cpp`): every round each backend adds its weight to
//! a credit counter and takes one turn only when the credit reaches the
//! maximum weight, then pays the maximum weight back. Turns are therefore
//! interleaved evenly over the whole build (a weight-3 backend takes three
//! turns for every one of a weight-1 backend), which keeps entry counts exactly
//! proportional and preserves Maglev's low disruption; the alternative of
//! "fill while count < share" front-loads heavy backends and moves more
//! entries when a share changes.
//!
//! Determinism: every hash here is implemented locally with fixed keys, and
//! backends are sorted by key before the build, so the same *set* of
//! (key, weight) pairs gives the same table in every process on every machine,
//! whatever order the configuration lists them in. The table stores indices
//! into the caller's slice (config order), so the caller keeps its own order.

use core::fmt;

pub use crate::config::{is_prime, MAX_TABLE_SIZE};

/// Default table size: the prime used by the Maglev paper and Katran.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// Backends one table can hold: they are addressed by `u16` indices.
pub const MAX_TABLE_BACKENDS: usize = u16::MAX as usize + 1;

/// Fixed SipHash keys for `h1` (offset) and `h2` (skip). Changing these moves
/// every flow of every deployment: don't.
const H1_KEY: (u64, u64) = (0x9ae1_6a3b_2f90_404f, 0xc3a5_c85c_97cb_3127);
const H2_KEY: (u64, u64) = (0xb492_b66f_be98_f273, 0x9ddf_ea08_eb38_2d69);

/// Why a table could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaglevError {
    /// Maglev needs a prime size so every `skip` generates a full permutation.
    NotPrime(u32),
    /// Fewer slots than backends.
    TooSmall { size: u32, backends: usize },
    /// Size above [`MAX_TABLE_SIZE`].
    TooLarge(u32),
    /// More backends than a `u16` index can address.
    TooManyBackends(usize),
    /// Two backends share a key (they would get identical permutations);
    /// values are indices into the caller's slice.
    DuplicateKey { first: usize, second: usize },
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPrime(m) => write!(f, "maglev table size {m} is not prime"),
            Self::TooSmall { size, backends } => {
                write!(f, "maglev table size {size} < {backends} backends")
            }
            Self::TooLarge(m) => write!(f, "maglev table size {m} > {MAX_TABLE_SIZE}"),
            Self::TooManyBackends(n) => write!(f, "{n} backends > {MAX_TABLE_BACKENDS}"),
            Self::DuplicateKey { first, second } => {
                write!(f, "backends {first} and {second} have the same key")
            }
        }
    }
}

impl std::error::Error for MaglevError {}

/// One backend as seen by the table builder.
///
/// `key` is the backend's stable identity (e.g. [`backend_key`]); `weight` 0
/// drains it (no entries, existing flows are moved by the caller's conntrack
/// policy, not here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevBackend<K> {
    pub key: K,
    pub weight: u32,
}

/// Serialises a backend identity as 16-byte address (v4-mapped for IPv4)
/// followed by the big-endian port.
pub fn backend_key(addr: &[u8; 16], port: u16) -> [u8; 18] {
    let mut k = [0u8; 18];
    k[..16].copy_from_slice(addr);
    k[16..].copy_from_slice(&port.to_be_bytes());
    k
}

/// `::ffff:a.b.c.d`, the 16-byte form used by every hash and key here.
pub use crate::wire::addr::mapped as ipv4_mapped;

/// A built lookup table. Immutable; rebuild and swap on backend change.
#[derive(Clone, PartialEq, Eq)]
pub struct Maglev {
    size: u32,
    /// Empty when every backend is drained; otherwise exactly `size` entries.
    entries: Box<[u16]>,
}

impl fmt::Debug for Maglev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("size", &self.size)
            .field("populated", &!self.entries.is_empty())
            .finish()
    }
}

/// Per-backend permutation walker used only during the build.
struct Walker {
    pos: u64,
    skip: u64,
    credit: u64,
    weight: u64,
    index: u32,
}

impl Maglev {
    /// Builds a table of `size` (prime) slots.
    ///
    /// Returned lookups are indices into `backends`. Cost is about
    /// `O(M log M + R * N)` where `R <= M` is the number of credit rounds
    /// (`R ~= M * max_weight / sum_weights`): a few ms for M=65537, N=100.
    pub fn new<K: AsRef<[u8]>>(size: u32, backends: &[MaglevBackend<K>]) -> Result<Self, MaglevError> {
        if size > MAX_TABLE_SIZE {
            return Err(MaglevError::TooLarge(size));
        }
        if !is_prime(size) {
            return Err(MaglevError::NotPrime(size));
        }
        if backends.len() > MAX_TABLE_BACKENDS {
            return Err(MaglevError::TooManyBackends(backends.len()));
        }
        if (size as usize) < backends.len() {
            return Err(MaglevError::TooSmall { size, backends: backends.len() });
        }

        // Sort by key so configuration order cannot change the table.
        let mut order: Vec<usize> = (0..backends.len()).collect();
        order.sort_by(|&a, &b| backends[a].key.as_ref().cmp(backends[b].key.as_ref()).then(a.cmp(&b)));
        for w in order.windows(2) {
            if backends[w[0]].key.as_ref() == backends[w[1]].key.as_ref() {
                return Err(MaglevError::DuplicateKey { first: w[0], second: w[1] });
            }
        }

        let m = u64::from(size);
        let mut walkers: Vec<Walker> = order
            .iter()
            .filter(|&&i| backends[i].weight > 0)
            .map(|&i| {
                let key = backends[i].key.as_ref();
                let offset = siphash::<1, 3>(H1_KEY, key) % m;
                let skip = siphash::<1, 3>(H2_KEY, key) % (m - 1) + 1;
                Walker {
                    pos: offset,
                    skip,
                    credit: 0,
                    weight: u64::from(backends[i].weight),
                    index: i as u32,
                }
            })
            .collect();
        let Some(max_weight) = walkers.iter().map(|w| w.weight).max() else {
            return Ok(Self { size, entries: Box::new([]) });
        };

        const EMPTY: u32 = u32::MAX;
        let mut table = vec![EMPTY; size as usize];
        let mut filled: u64 = 0;
        'build: loop {
            for w in walkers.iter_mut() {
                w.credit += w.weight;
                if w.credit < max_weight {
                    continue;
                }
                w.credit -= max_weight;
                // M is prime and 0 < skip < M, so the walk visits every slot
                // within M steps; an empty slot exists since filled < M.
                while table[w.pos as usize] != EMPTY {
                    w.pos += w.skip;
                    if w.pos >= m {
                        w.pos -= m;
                    }
                }
                table[w.pos as usize] = w.index;
                w.pos += w.skip;
                if w.pos >= m {
                    w.pos -= m;
                }
                filled += 1;
                if filled == m {
                    break 'build;
                }
            }
        }
        let entries: Box<[u16]> = table.into_iter().map(|i| i as u16).collect();
        Ok(Self { size, entries })
    }

    /// [`Maglev::new`] with [`DEFAULT_TABLE_SIZE`].
    pub fn with_default_size<K: AsRef<[u8]>>(backends: &[MaglevBackend<K>]) -> Result<Self, MaglevError> {
        Self::new(DEFAULT_TABLE_SIZE, backends)
    }

    /// Backend index for a flow hash; `None` when every backend is drained.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u16> {
        self.at(self.slot(hash))
    }

    /// The slot a flow hash maps to: a 64-bit division, which a new flow
    /// pays once for both [`Maglev::prefetch`] and [`Maglev::at`].
    #[inline]
    pub fn slot(&self, hash: u64) -> usize {
        (hash % u64::from(self.size)) as usize
    }

    /// Backend index in `slot` ([`Maglev::slot`]); `None` when every backend
    /// is drained.
    #[inline]
    pub fn at(&self, slot: usize) -> Option<u16> {
        self.entries.get(slot).copied()
    }

    /// Prefetches `slot` ([`Maglev::slot`]): a table of 65,537 slots is
    /// 128 KiB, past L1, and new flows land on it at random.
    #[inline]
    pub fn prefetch(&self, slot: usize) {
        if let Some(e) = self.entries.get(slot) {
            super::prefetch::lines(e, 1);
        }
    }

    /// Table size M.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// True when every backend is drained (all lookups miss).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Raw entries (empty or `size` long), for diagnostics and diffing.
    pub fn entries(&self) -> &[u16] {
        &self.entries
    }

    /// Number of entries owned by each of `n` backends (diagnostics).
    pub fn counts(&self, n: usize) -> Vec<u32> {
        let mut c = vec![0u32; n];
        for &e in self.entries.iter() {
            if let Some(x) = c.get_mut(e as usize) {
                *x += 1;
            }
        }
        c
    }
}

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-C-D (Aumasson & Bernstein, 2012) with a fixed key; used for backend
/// keys off the fast path. SipHash-1-3 is the variant Rust's std uses.
fn siphash<const C: usize, const D: usize>(key: (u64, u64), data: &[u8]) -> u64 {
    let (k0, k1) = key;
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        let m = u64::from_le_bytes(b);
        v[3] ^= m;
        for _ in 0..C {
            sip_round(&mut v);
        }
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    let rem = chunks.remainder();
    last[..rem.len()].copy_from_slice(rem);
    let m = u64::from_le_bytes(last) | ((data.len() as u64) << 56);
    v[3] ^= m;
    for _ in 0..C {
        sip_round(&mut v);
    }
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..D {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

// Fixed secrets for the fast-path hashes (wyhash's default primes).
const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;
const P2: u64 = 0x8ebc_6af0_9c88_c6e3;
const P3: u64 = 0x5899_65cc_7537_4cc3;
const P4: u64 = 0x1d8e_4e27_c47d_124f;

/// Folded 64x64->128 multiply (wyhash/foldhash "mum"): one `mul` instruction,
/// every output bit depends on every input bit.
#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn words(a: &[u8; 16]) -> (u64, u64) {
    let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = *a;
    (
        u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
    )
}

/// 5-tuple flow hash with a fixed seed (same value on every LB instance, so
/// ECMP-sprayed packets of one flow pick the same backend everywhere).
///
/// Three folded multiplies, two of them independent: a few ns. Not
/// hash-flooding resistant (no fixed-seed hash can be). Direction-sensitive.
#[inline]
pub fn flow_hash(src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16, proto: u8) -> u64 {
    let (s0, s1) = words(src);
    let (d0, d1) = words(dst);
    let meta = (u64::from(sport) << 32) | (u64::from(dport) << 16) | u64::from(proto);
    let a = mum(s0 ^ P0, s1 ^ P1);
    let b = mum(d0 ^ P2, d1 ^ P3);
    mum(a ^ P4, b ^ meta ^ P0)
}

/// Source-address-only hash for session affinity (all flows of a client to
/// one backend).
#[inline]
pub fn client_hash(src: &[u8; 16]) -> u64 {
    let (s0, s1) = words(src);
    mum(mum(s0 ^ P1, s1 ^ P4) ^ P2, P3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u32) -> [u8; 18] {
        backend_key(&ipv4_mapped([10, 0, (i >> 8) as u8, i as u8]), 8080)
    }

    fn equal(n: u32) -> Vec<MaglevBackend<[u8; 18]>> {
        (0..n).map(|i| MaglevBackend { key: key(i), weight: 1 }).collect()
    }

    /// Table entries translated to backend keys, so tables built from
    /// differently ordered/filtered lists can be compared.
    fn by_key(t: &Maglev, b: &[MaglevBackend<[u8; 18]>]) -> Vec<[u8; 18]> {
        t.entries().iter().map(|&i| b[i as usize].key).collect()
    }

    #[test]
    fn siphash_matches_std_siphash24() {
        #[allow(deprecated)]
        use std::hash::{Hasher, SipHasher};
        for len in 0..40usize {
            let data: Vec<u8> = (0..len as u8).collect();
            #[allow(deprecated)]
            let mut h = SipHasher::new_with_keys(H1_KEY.0, H1_KEY.1);
            h.write(&data);
            assert_eq!(siphash::<2, 4>(H1_KEY, &data), h.finish(), "len {len}");
        }
    }

    #[test]
    fn siphash24_reference_vector() {
        // Reference vector from the SipHash paper, appendix A (15-byte input).
        let data: Vec<u8> = (0..15u8).collect();
        let k = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        assert_eq!(siphash::<2, 4>(k, &data), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn rejects_bad_sizes() {
        let b = equal(3);
        assert_eq!(Maglev::new(65_536, &b), Err(MaglevError::NotPrime(65_536)));
        assert_eq!(Maglev::new(1, &b), Err(MaglevError::NotPrime(1)));
        assert_eq!(Maglev::new(2, &b), Err(MaglevError::TooSmall { size: 2, backends: 3 }));
        assert!(matches!(Maglev::new(MAX_TABLE_SIZE + 1, &b), Err(MaglevError::TooLarge(_))));
        let dup = [b[0], b[1], b[0]];
        assert_eq!(Maglev::new(13, &dup), Err(MaglevError::DuplicateKey { first: 0, second: 2 }));
        assert!(Maglev::new(3, &b).is_ok());
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65_537));
        assert!(is_prime(655_373));
        assert!(!is_prime(65_535));
    }

    #[test]
    fn deterministic_and_golden() {
        let b = equal(5);
        let t1 = Maglev::new(13, &b).unwrap();
        let t2 = Maglev::new(13, &b).unwrap();
        assert_eq!(t1, t2);
        // Golden: catches any change of hash, keys or population order.
        assert_eq!(t1.entries(), GOLDEN_13);
        let big = Maglev::with_default_size(&equal(10)).unwrap();
        assert_eq!(&big.entries()[..8], GOLDEN_65537_PREFIX);
        assert_eq!(
            flow_hash(&ipv4_mapped([192, 0, 2, 1]), &ipv4_mapped([198, 51, 100, 7]), 40000, 443, 6),
            GOLDEN_FLOW_HASH
        );
        assert_eq!(client_hash(&ipv4_mapped([192, 0, 2, 1])), GOLDEN_CLIENT_HASH);
    }

    const GOLDEN_13: &[u16] = &[2, 2, 0, 1, 4, 0, 3, 1, 4, 0, 2, 1, 3];
    const GOLDEN_65537_PREFIX: &[u16] = &[8, 5, 1, 3, 9, 6, 0, 7];
    const GOLDEN_FLOW_HASH: u64 = 0x04be_faa4_1ef6_a2f0;
    const GOLDEN_CLIENT_HASH: u64 = 0xb48d_c7fa_5eab_91b1;

    #[test]
    fn config_order_does_not_matter() {
        let b = equal(50);
        let mut r = b.clone();
        r.reverse();
        r.swap(3, 17);
        let t1 = Maglev::with_default_size(&b).unwrap();
        let t2 = Maglev::with_default_size(&r).unwrap();
        assert_eq!(by_key(&t1, &b), by_key(&t2, &r));
    }

    #[test]
    fn balance_equal_weights() {
        let b = equal(100);
        let t = Maglev::with_default_size(&b).unwrap();
        let c = t.counts(100);
        let (mn, mx) = (*c.iter().min().unwrap(), *c.iter().max().unwrap());
        assert!(mn > 0);
        assert!(f64::from(mx) / f64::from(mn) <= 1.05, "min {mn} max {mx}");
        assert_eq!(c.iter().sum::<u32>(), DEFAULT_TABLE_SIZE);
    }

    #[test]
    fn weights_are_proportional() {
        let b: Vec<_> = (0..30).map(|i| MaglevBackend { key: key(i), weight: i % 3 + 1 }).collect();
        let t = Maglev::with_default_size(&b).unwrap();
        let c = t.counts(30);
        let unit = f64::from(DEFAULT_TABLE_SIZE) / 60.0; // sum of weights = 60
        for (i, &n) in c.iter().enumerate() {
            let want = unit * f64::from(b[i].weight);
            assert!(
                (f64::from(n) - want).abs() / want < 0.02,
                "backend {i} w {} got {n} want {want}",
                b[i].weight
            );
        }
    }

    #[test]
    fn drained_and_all_drained() {
        let mut b = equal(10);
        b[4].weight = 0;
        let t = Maglev::with_default_size(&b).unwrap();
        assert_eq!(t.counts(10)[4], 0);
        // Draining equals removing: same table by key.
        let mut removed = b.clone();
        removed.remove(4);
        let t2 = Maglev::with_default_size(&removed).unwrap();
        assert_eq!(by_key(&t, &b), by_key(&t2, &removed));

        for x in b.iter_mut() {
            x.weight = 0;
        }
        let t = Maglev::with_default_size(&b).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.lookup(12345), None);
        let none: [MaglevBackend<[u8; 18]>; 0] = [];
        assert_eq!(Maglev::with_default_size(&none).unwrap().lookup(1), None);
    }

    #[test]
    fn disruption_removing_one_of_100() {
        let b = equal(100);
        let t = Maglev::with_default_size(&b).unwrap();
        let before = by_key(&t, &b);
        let mut worst = 0.0f64;
        for victim in [0usize, 37, 99] {
            let mut r = b.clone();
            r.remove(victim);
            let after = by_key(&Maglev::with_default_size(&r).unwrap(), &r);
            let changed = before.iter().zip(&after).filter(|(x, y)| x != y).count();
            let frac = changed as f64 / f64::from(DEFAULT_TABLE_SIZE);
            worst = worst.max(frac);
        }
        eprintln!("maglev disruption removing 1 of 100: {worst:.4}");
        assert!(worst <= 2.0 / 100.0, "changed fraction {worst}");
    }

    #[test]
    fn flows_moved_removing_one_backend() {
        let n = 50usize;
        let b = equal(n as u32);
        let t = Maglev::with_default_size(&b).unwrap();
        let mut r = b.clone();
        r.remove(7);
        let t2 = Maglev::with_default_size(&r).unwrap();
        let flows = 20_000u32;
        let mut moved = 0;
        let mut per = vec![0u32; n];
        for f in 0..flows {
            let src = ipv4_mapped([10, (f >> 16) as u8, (f >> 8) as u8, f as u8]);
            let h = flow_hash(&src, &ipv4_mapped([203, 0, 113, 1]), 1024 + (f % 50000) as u16, 80, 6);
            let a = b[t.lookup(h).unwrap() as usize].key;
            let c = r[t2.lookup(h).unwrap() as usize].key;
            per[t.lookup(h).unwrap() as usize] += 1;
            if a != c {
                moved += 1;
            }
        }
        let frac = f64::from(moved) / f64::from(flows);
        eprintln!("flows moved removing 1 of {n}: {frac:.4}");
        assert!(frac < 2.0 / n as f64, "moved {frac}");
        assert!(frac > 0.5 / n as f64, "moved {frac}");
        // Flow hash spreads synthetic flows evenly too (400 expected each).
        assert!(per.iter().all(|&c| (300..500).contains(&c)), "{per:?}");
    }

    #[test]
    fn flow_hash_sensitivity() {
        let s = ipv4_mapped([10, 0, 0, 1]);
        let d = ipv4_mapped([10, 0, 0, 2]);
        let h = flow_hash(&s, &d, 1, 2, 6);
        assert_ne!(h, flow_hash(&s, &d, 1, 2, 17));
        assert_ne!(h, flow_hash(&s, &d, 2, 1, 6));
        assert_ne!(h, flow_hash(&d, &s, 1, 2, 6));
        assert_ne!(h, flow_hash(&s, &d, 1, 3, 6));
        assert_ne!(client_hash(&s), client_hash(&d));
    }

    /// Run with `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_hash_and_build() {
        let s = ipv4_mapped([10, 0, 0, 1]);
        let d = ipv4_mapped([10, 0, 0, 2]);
        let n = 50_000_000u32;
        let t0 = std::time::Instant::now();
        let mut acc = 0u64;
        for i in 0..n {
            acc ^= flow_hash(std::hint::black_box(&s), &d, i as u16, (i >> 16) as u16, 6);
        }
        let el = t0.elapsed();
        println!("flow_hash: {:.2} ns/op ({acc})", el.as_nanos() as f64 / f64::from(n));
        let t0 = std::time::Instant::now();
        let t = Maglev::with_default_size(&equal(100)).unwrap();
        println!("build M=65537 N=100: {:?} ({})", t0.elapsed(), t.size());
        let t0 = std::time::Instant::now();
        for i in 0..n {
            acc ^= u64::from(t.lookup(u64::from(i).wrapping_mul(P0)).unwrap_or(0));
        }
        println!("lookup: {:.2} ns/op ({acc})", t0.elapsed().as_nanos() as f64 / f64::from(n));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn prop_every_active_backend_gets_entries_and_none_drained(
            weights in proptest::collection::vec(0u32..5, 1..40),
        ) {
            let b: Vec<_> = weights.iter().enumerate()
                .map(|(i, &w)| MaglevBackend { key: key(i as u32), weight: w })
                .collect();
            let t = Maglev::new(4099, &b).unwrap();
            let c = t.counts(b.len());
            prop_assert_eq!(t.is_empty(), weights.iter().all(|&w| w == 0));
            for (i, &w) in weights.iter().enumerate() {
                if w == 0 { prop_assert_eq!(c[i], 0); } else { prop_assert!(c[i] >= 1); }
            }
            prop_assert!(t.entries().iter().all(|&e| (e as usize) < b.len()));
        }

        #[test]
        fn prop_order_independent(n in 1u32..30, seed in any::<u64>()) {
            let b: Vec<_> = (0..n)
                .map(|i| MaglevBackend { key: key(i), weight: 1 + (i * 7 + seed as u32) % 4 })
                .collect();
            let mut r = b.clone();
            // Deterministic shuffle driven by `seed`.
            let mut s = seed | 1;
            for i in (1..r.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                r.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let t1 = Maglev::new(1031, &b).unwrap();
            let t2 = Maglev::new(1031, &r).unwrap();
            prop_assert_eq!(by_key(&t1, &b), by_key(&t2, &r));
        }

        #[test]
        fn prop_lookup_total(h in any::<u64>(), n in 1u32..20) {
            let t = Maglev::new(2053, &equal(n)).unwrap();
            let i = t.lookup(h);
            prop_assert!(matches!(i, Some(x) if u32::from(x) < n));
        }
    }
}
