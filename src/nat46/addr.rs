//! Address mapping: RFC 6052 IPv4-embedded IPv6 addresses and RFC 7757
//! Explicit Address Mappings, combined in a [`Mapper`].

/// An RFC 6052 prefix: `len` is one of 32, 40, 48, 56, 64, 96.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix64 {
    /// Prefix bits; bits past `len` are ignored.
    pub prefix: [u8; 16],
    /// Prefix length in bits.
    pub len: u8,
}

/// The Well-Known Prefix `64:ff9b::/96`.
//= https://www.rfc-editor.org/rfc/rfc6052#section-2.1
//# This document reserves a "Well-Known Prefix" for use in an
//# algorithmic mapping.  The value of this IPv6 prefix is:
//#
//#    64:ff9b::/96
pub const WELL_KNOWN_PREFIX: Prefix64 =
    Prefix64 { prefix: [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], len: 96 };

/// Where the four IPv4 octets go for each prefix length.
//= https://www.rfc-editor.org/rfc/rfc6052#section-2.2
//# Bits 64 to 71 of the address are reserved for compatibility with the host
//# identifier format defined in the IPv6 addressing architecture
//# [RFC4291].  These bits MUST be set to zero.
const fn positions(len: u8) -> Option<[usize; 4]> {
    match len {
        32 => Some([4, 5, 6, 7]),
        40 => Some([5, 6, 7, 9]),
        48 => Some([6, 7, 9, 10]),
        56 => Some([7, 9, 10, 11]),
        64 => Some([9, 10, 11, 12]),
        96 => Some([12, 13, 14, 15]),
        _ => None,
    }
}

impl Prefix64 {
    /// A prefix, or None if `len` is not an RFC 6052 length.
    pub const fn new(prefix: [u8; 16], len: u8) -> Option<Self> {
        match positions(len) {
            Some(_) => Some(Prefix64 { prefix, len }),
            None => None,
        }
    }

    /// The IPv4-embedded IPv6 address of `v4` (suffix and u-octet zero).
    ///
    /// An invalid `len` (only constructible through the public fields) embeds
    /// as /96.
    #[inline]
    pub fn embed(&self, v4: [u8; 4]) -> [u8; 16] {
        self.embed_u32(u32::from_be_bytes(v4)).to_be_bytes()
    }

    /// [`Prefix64::embed`] on big-endian integers (no byte arrays through
    /// memory on the packet path).
    #[inline(always)]
    fn embed_u32(&self, v4: u32) -> u128 {
        if self.len == 96 {
            // The common case (the Well-Known Prefix), without the masks.
            return u128::from_be_bytes(self.prefix) >> 32 << 32 | u128::from(v4);
        }
        // Byte k of the address sits at bit (15 - k) * 8 of the u128.
        let v = u128::from(v4);
        let (len, emb) = match self.len {
            32 => (32, v << 64),
            40 => (40, (v >> 8) << 64 | (v & 0xFF) << 48),
            48 => (48, (v >> 16) << 64 | (v & 0xFFFF) << 40),
            56 => (56, (v >> 24) << 64 | (v & 0xFF_FFFF) << 32),
            64 => (64, v << 24),
            _ => (96, v),
        };
        (u128::from_be_bytes(self.prefix) & mask128(len)) | emb
    }

    /// The embedded IPv4 address, or None if `v6` is not inside the prefix.
    ///
    /// The suffix is not checked (RFC 6052 §2.2 only says it SHOULD be zero),
    /// nor is the u-octet.
    #[inline]
    pub fn extract(&self, v6: &[u8; 16]) -> Option<[u8; 4]> {
        self.extract_u128(u128::from_be_bytes(*v6)).map(u32::to_be_bytes)
    }

    /// [`Prefix64::extract`] on big-endian integers.
    #[inline(always)]
    fn extract_u128(&self, a: u128) -> Option<u32> {
        if self.len == 96 {
            // The common case (the Well-Known Prefix), without the masks.
            return (a >> 32 == u128::from_be_bytes(self.prefix) >> 32).then_some(a as u32);
        }
        positions(self.len)?;
        let m = mask128(self.len);
        if a & m != u128::from_be_bytes(self.prefix) & m {
            return None;
        }
        let v = match self.len {
            32 => a >> 64,
            40 => ((a >> 64) & 0xFF_FFFF) << 8 | (a >> 48) & 0xFF,
            48 => ((a >> 64) & 0xFFFF) << 16 | (a >> 40) & 0xFFFF,
            56 => ((a >> 64) & 0xFF) << 24 | (a >> 32) & 0xFF_FFFF,
            64 => a >> 24,
            _ => a,
        };
        Some(v as u32)
    }

    #[inline(always)]
    fn is_wkp(&self) -> bool {
        const WKP: u128 = u128::from_be_bytes(WELL_KNOWN_PREFIX.prefix);
        self.len == 96 && u128::from_be_bytes(self.prefix) >> 32 == WKP >> 32
    }
}

/// RFC 1918 private space.
#[inline(always)]
fn is_rfc1918(a: u32) -> bool {
    a >> 24 == 10 || a >> 20 == 0xAC1 || a >> 16 == 0xC0A8
}

/// One Explicit Address Mapping: `v4/v4_len` <-> `v6/v6_len` with equal
/// suffix lengths (`32 - v4_len == 128 - v6_len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Eam {
    /// IPv4 prefix.
    pub v4: [u8; 4],
    /// IPv4 prefix length, 0..=32.
    pub v4_len: u8,
    /// IPv6 prefix.
    pub v6: [u8; 16],
    /// IPv6 prefix length, 96..=128.
    pub v6_len: u8,
}

/// Why [`EamTable::insert`] refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EamError {
    /// The table is at its capacity.
    Full,
    /// Prefix lengths out of range or suffix lengths differ.
    BadLength,
}

#[inline(always)]
fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

#[inline(always)]
fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    }
}

//= https://www.rfc-editor.org/rfc/rfc7757#section-3.2
// (paraphrase) An EAM is an IPv4 prefix and an IPv6 prefix with suffixes of
// equal length; the suffix is copied unchanged between them, and when
// several EAMs match, the one with the longest prefix is used.
/// A fixed-capacity RFC 7757 Explicit Address Mapping Table.
///
/// Storage is allocated once in [`EamTable::with_capacity`]; lookups are a
/// linear longest-prefix scan (tables are expected to hold tens of entries)
/// and never allocate.
#[derive(Debug, Clone)]
pub struct EamTable {
    entries: Box<[Slot]>,
    len: usize,
}

/// An [`Eam`] as the lookups use it: host-order prefixes and their masks,
/// computed once at insert.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    v4: u32,
    v4_mask: u32,
    v6: u128,
    v6_mask: u128,
}

impl EamTable {
    /// An empty table holding at most `cap` entries.
    pub fn with_capacity(cap: usize) -> Self {
        EamTable { entries: vec![Slot::default(); cap].into_boxed_slice(), len: 0 }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a mapping; host bits of the prefixes are cleared.
    pub fn insert(&mut self, e: Eam) -> Result<(), EamError> {
        if e.v4_len > 32 || e.v6_len > 128 || 32 - e.v4_len != 128u8.saturating_sub(e.v6_len) {
            return Err(EamError::BadLength);
        }
        let (v4_mask, v6_mask) = (mask32(e.v4_len), mask128(e.v6_len));
        let e = Slot {
            v4: u32::from_be_bytes(e.v4) & v4_mask,
            v4_mask,
            v6: u128::from_be_bytes(e.v6) & v6_mask,
            v6_mask,
        };
        if self.len >= self.entries.len() {
            return Err(EamError::Full);
        }
        // Keep entries sorted by prefix length, longest first, so the first
        // match is the longest (v6_len = 96 + v4_len orders both families; a
        // longer prefix has the greater mask).
        let mut i = self.len;
        while i > 0 && self.entries.get(i - 1).is_some_and(|p| p.v4_mask < e.v4_mask) {
            self.entries.swap(i - 1, i);
            i -= 1;
        }
        if let Some(slot) = self.entries.get_mut(i) {
            *slot = e;
        }
        self.len += 1;
        Ok(())
    }

    #[inline(always)]
    fn live(&self) -> &[Slot] {
        self.entries.get(..self.len).unwrap_or(&[])
    }

    /// IPv4 -> IPv6 through the longest matching IPv4 prefix.
    #[inline]
    pub fn v4_to_v6(&self, a: [u8; 4]) -> Option<[u8; 16]> {
        self.lookup4(u32::from_be_bytes(a)).map(u128::to_be_bytes)
    }

    /// [`EamTable::v4_to_v6`] on big-endian integers.
    #[inline(always)]
    fn lookup4(&self, a: u32) -> Option<u128> {
        let best = self.live().iter().find(|e| a & e.v4_mask == e.v4)?;
        Some(best.v6 | u128::from(a & !best.v4_mask))
    }

    /// IPv6 -> IPv4 through the longest matching IPv6 prefix.
    #[inline]
    pub fn v6_to_v4(&self, a: &[u8; 16]) -> Option<[u8; 4]> {
        self.lookup6(u128::from_be_bytes(*a)).map(u32::to_be_bytes)
    }

    /// [`EamTable::v6_to_v4`] on big-endian integers.
    #[inline(always)]
    fn lookup6(&self, a: u128) -> Option<u32> {
        let best = self.live().iter().find(|e| a & e.v6_mask == e.v6)?;
        Some(best.v4 | (a & !best.v6_mask) as u32)
    }
}

/// How one address of a packet is mapped: EAM table first, then the RFC 6052
/// prefix. Both optional; with neither every address is untranslatable.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mapper<'a> {
    /// Explicit mappings, consulted first.
    pub eam: Option<&'a EamTable>,
    /// The RFC 6052 prefix (pool6).
    pub prefix: Option<Prefix64>,
}

impl<'a> Mapper<'a> {
    /// Only the RFC 6052 prefix.
    pub const fn prefix(p: Prefix64) -> Self {
        Mapper { eam: None, prefix: Some(p) }
    }

    /// Only the EAM table.
    pub const fn eam(t: &'a EamTable) -> Self {
        Mapper { eam: Some(t), prefix: None }
    }

    //= https://www.rfc-editor.org/rfc/rfc7757#section-3.3
    // (paraphrase) The EAMT is consulted first; only addresses without a
    // matching EAM are translated with the RFC 6052 algorithm.
    /// IPv4 -> IPv6, or None (untranslatable).
    #[inline]
    pub fn v4_to_v6(&self, a: [u8; 4]) -> Option<[u8; 16]> {
        self.map4(u32::from_be_bytes(a)).map(u128::to_be_bytes)
    }

    /// [`Mapper::v4_to_v6`] on big-endian integers, for the fast path: an
    /// `Option<[u8; 16]>` returned through memory and read back with a wide
    /// load stalls store-to-load forwarding.
    #[inline(always)]
    pub(crate) fn map4(&self, a: u32) -> Option<u128> {
        if let Some(v6) = self.eam.and_then(|t| t.lookup4(a)) {
            return Some(v6);
        }
        let p = self.prefix?;
        //= https://www.rfc-editor.org/rfc/rfc6052#section-3.1
        //# The Well-Known Prefix MUST NOT be used to represent non-global IPv4
        //# addresses, such as those defined in [RFC1918]
        if p.is_wkp() && is_rfc1918(a) {
            return None;
        }
        Some(p.embed_u32(a))
    }

    /// IPv6 -> IPv4, or None (untranslatable).
    #[inline]
    pub fn v6_to_v4(&self, a: &[u8; 16]) -> Option<[u8; 4]> {
        self.map6(u128::from_be_bytes(*a)).map(u32::to_be_bytes)
    }

    /// [`Mapper::v6_to_v4`] on big-endian integers (see [`Mapper::map4`]).
    #[inline(always)]
    pub(crate) fn map6(&self, a: u128) -> Option<u32> {
        if let Some(v4) = self.eam.and_then(|t| t.lookup6(a)) {
            return Some(v4);
        }
        let p = self.prefix?;
        let v4 = p.extract_u128(a)?;
        if p.is_wkp() && is_rfc1918(v4) {
            return None;
        }
        Some(v4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv6Addr;

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    //= https://www.rfc-editor.org/rfc/rfc6052#section-2.4
    //# +-----------------------+------------+------------------------------+
    //# | Network-Specific      |    IPv4    | IPv4-embedded IPv6 address   |
    //# | Prefix                |   address  |                              |
    //# +-----------------------+------------+------------------------------+
    //# | 2001:db8::/32         | 192.0.2.33 | 2001:db8:c000:221::          |
    //# | 2001:db8:100::/40     | 192.0.2.33 | 2001:db8:1c0:2:21::          |
    //# | 2001:db8:122::/48     | 192.0.2.33 | 2001:db8:122:c000:2:2100::   |
    //# | 2001:db8:122:300::/56 | 192.0.2.33 | 2001:db8:122:3c0:0:221::     |
    //# | 2001:db8:122:344::/64 | 192.0.2.33 | 2001:db8:122:344:c0:2:2100:0 |
    //# | 2001:db8:122:344::/96 | 192.0.2.33 | 2001:db8:122:344::192.0.2.33 |
    //# +-----------------------+------------+------------------------------+
    #[test]
    fn rfc6052_test_vectors() {
        // The table above, kept once in the test kit (plain strings: no
        // second copy of this crate's types).
        use shunt_testkit::addrs::{RFC6052_EXAMPLES, RFC6052_V4};
        let a = RFC6052_V4;
        let wkp = [("64:ff9b::", 96, "64:ff9b::192.0.2.33")];
        for (p, len, want) in RFC6052_EXAMPLES.into_iter().chain(wkp) {
            let p = Prefix64::new(v6(p), len).unwrap();
            assert_eq!(p.embed(a), v6(want), "/{len}");
            assert_eq!(p.extract(&v6(want)), Some(a), "/{len}");
        }
        assert_eq!(WELL_KNOWN_PREFIX.embed(a), v6("64:ff9b::c000:221"));
    }

    proptest::proptest! {
        /// embed/extract (with the /96 shortcut) against a byte-wise
        /// reference built from the RFC 6052 §2.2 octet positions.
        #[test]
        fn embed_extract_match_reference(
            prefix in proptest::array::uniform16(proptest::prelude::any::<u8>()),
            v4 in proptest::prelude::any::<[u8; 4]>(),
            k in 0usize..6,
            other in proptest::array::uniform16(proptest::prelude::any::<u8>()),
        ) {
            let len = [32u8, 40, 48, 56, 64, 96][k];
            let p = Prefix64::new(prefix, len).unwrap();
            let n = usize::from(len / 8);
            let mut want = [0u8; 16];
            want[..n].copy_from_slice(&prefix[..n]);
            for (i, at) in positions(len).unwrap().into_iter().enumerate() {
                want[at] = v4[i];
            }
            proptest::prop_assert_eq!(p.embed(v4), want);
            proptest::prop_assert_eq!(p.extract(&want), Some(v4));
            let inside = other[..n] == prefix[..n];
            let got = positions(len).unwrap().map(|at| other[at]);
            proptest::prop_assert_eq!(p.extract(&other), inside.then_some(got));
        }
    }

    #[test]
    fn extract_outside_prefix_is_none() {
        let p = Prefix64::new(v6("2001:db8:100::"), 40).unwrap();
        assert_eq!(p.extract(&v6("2001:db8:200::1")), None);
        assert!(Prefix64::new([0; 16], 33).is_none());
        let bad = Prefix64 { prefix: [0; 16], len: 7 };
        assert_eq!(bad.extract(&[0; 16]), None);
        let _ = bad.embed([1, 2, 3, 4]);
    }

    #[test]
    fn wkp_refuses_private() {
        let m = Mapper::prefix(WELL_KNOWN_PREFIX);
        assert_eq!(m.v4_to_v6([10, 1, 2, 3]), None);
        assert_eq!(m.v4_to_v6([192, 168, 0, 1]), None);
        assert_eq!(m.v6_to_v4(&v6("64:ff9b::172.16.0.1")), None);
        assert_eq!(m.v4_to_v6([8, 8, 8, 8]), Some(v6("64:ff9b::8.8.8.8")));
    }

    #[test]
    fn eam_longest_prefix_both_ways_before_prefix() {
        let mut t = EamTable::with_capacity(3);
        t.insert(Eam { v4: [192, 0, 2, 0], v4_len: 24, v6: v6("2001:db8:aaaa::"), v6_len: 120 }).unwrap();
        t.insert(Eam { v4: [192, 0, 2, 8], v4_len: 29, v6: v6("2001:db8:bbbb::"), v6_len: 125 }).unwrap();
        t.insert(Eam { v4: [198, 51, 100, 1], v4_len: 32, v6: v6("2001:db8::1"), v6_len: 128 }).unwrap();
        assert_eq!(
            t.insert(Eam { v4: [1, 0, 0, 0], v4_len: 8, v6: [0; 16], v6_len: 104 }),
            Err(EamError::Full)
        );
        let mut t2 = EamTable::with_capacity(1);
        assert_eq!(
            t2.insert(Eam { v4: [1, 0, 0, 0], v4_len: 8, v6: [0; 16], v6_len: 100 }),
            Err(EamError::BadLength)
        );
        assert!(t2.is_empty());
        let m = Mapper { eam: Some(&t), prefix: Some(WELL_KNOWN_PREFIX) };
        assert_eq!(m.v4_to_v6([192, 0, 2, 5]), Some(v6("2001:db8:aaaa::5")));
        assert_eq!(m.v4_to_v6([192, 0, 2, 9]), Some(v6("2001:db8:bbbb::1")));
        assert_eq!(m.v4_to_v6([198, 51, 100, 1]), Some(v6("2001:db8::1")));
        assert_eq!(m.v4_to_v6([198, 51, 100, 2]), Some(v6("64:ff9b::198.51.100.2")));
        assert_eq!(m.v6_to_v4(&v6("2001:db8:aaaa::5")), Some([192, 0, 2, 5]));
        assert_eq!(m.v6_to_v4(&v6("2001:db8:bbbb::7")), Some([192, 0, 2, 15]));
        assert_eq!(m.v6_to_v4(&v6("2001:db8::1")), Some([198, 51, 100, 1]));
        assert_eq!(m.v6_to_v4(&v6("2001:db8::2")), None);
        assert_eq!(m.v6_to_v4(&v6("64:ff9b::203.0.113.1")), Some([203, 0, 113, 1]));
        assert_eq!(t.len(), 3);
    }
}
