//! Internet checksums: RFC 1071 full sums and RFC 1624 incremental updates.
//!
//! Partial sums are `u32` values already folded to 16 bits (`<= 0xFFFF`), so
//! callers may add up to 65536 of them with plain `+` before [`fold`].

use core::net::{Ipv4Addr, Ipv6Addr};

/// One's complement sum of `data` as big-endian 16-bit words, folded to 16 bits.
///
/// An odd trailing byte is padded with a zero byte on the right (RFC 1071).
/// Returns 0 only when every byte is zero.
//= https://www.rfc-editor.org/rfc/rfc1071#section-2
//# (B)  Byte Order Independence
//#
//#      The sum of 16-bit integers can be computed in either byte order.
//
// So we add native-endian words (no byte swap per word on x86) and swap once at
// the end. Each 8-byte chunk is split into two u32 halves added into a u64: that
// cannot overflow before 2^31 chunks (16 GiB), far above any packet.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Always 8 bytes; the fallback only keeps this free of panics.
        let w = u64::from_ne_bytes(<[u8; 8]>::try_from(c).unwrap_or([0; 8]));
        acc += (w >> 32) + (w & 0xFFFF_FFFF);
    }
    let mut rest = chunks.remainder();
    if let [a, b, c, d, tail @ ..] = rest {
        acc += u64::from(u32::from_ne_bytes([*a, *b, *c, *d]));
        rest = tail;
    }
    if let [a, b, tail @ ..] = rest {
        acc += u64::from(u16::from_ne_bytes([*a, *b]));
        rest = tail;
    }
    if let [b] = rest {
        acc += u64::from(u16::from_ne_bytes([*b, 0]));
    }
    // Fold 64 -> 16 bits with end-around carry, then undo the native order.
    acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
    acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
    let folded = fold_u64(acc);
    u32::from(u16::from_be(folded))
}

#[inline]
fn fold_u64(mut acc: u64) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    acc as u16
}

/// Folds a sum of partial sums to 16 bits with end-around carry (no complement).
#[inline]
pub fn fold(acc: u32) -> u16 {
    fold_u64(u64::from(acc))
}

/// The RFC 1071 checksum of `data`: the complement of its folded sum.
///
/// Over data that includes a correct checksum field this returns 0.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Pseudo-header sum for TCP/UDP/ICMPv6-style checksums over IPv4 (RFC 793 3.1).
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    let acc = u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(proto)
        + u32::from(len);
    u32::from(fold(acc))
}

/// Pseudo-header sum over IPv6 (RFC 8200 section 8.1); `len` is the
/// upper-layer packet length.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: u32) -> u32 {
    let acc = sum(&src.octets()) + sum(&dst.octets()) + (len >> 16) + (len & 0xFFFF) + u32::from(proto);
    u32::from(fold(acc))
}

/// Checksum of an upper-layer `segment` over IPv4, computed over the segment
/// **as is**.
///
/// Zero the checksum field first to get the value to write; over a segment
/// whose checksum field is correct the result is 0 (that is the verify).
/// A segment longer than 65535 bytes cannot be IPv4; its length is truncated
/// into the pseudo-header and the result is meaningless but does not panic.
#[inline]
pub fn l4_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let len = segment.len() as u16;
    !fold(pseudo_header_v4(src, dst, proto, len) + sum(segment))
}

/// IPv6 counterpart of [`l4_checksum_v4`], same as-is semantics.
#[inline]
pub fn l4_checksum_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, segment: &[u8]) -> u16 {
    let len = segment.len() as u32;
    !fold(pseudo_header_v6(src, dst, proto, len) + sum(segment))
}

//= https://www.rfc-editor.org/rfc/rfc1624#section-3
//# Given the following notation:
//#
//#       HC  - old checksum in header
//#       C   - one's complement sum of old header
//#       HC' - new checksum in header
//#       C'  - one's complement sum of new header
//#       m   - old value of a 16-bit field
//#       m'  - new value of a 16-bit field
//#
//# [...]
//#
//#       HC' = ~(C + (-m) + m')    --    [Eqn. 3]
//#           = ~(~HC + ~m + m')
//
// Derivation: HC = ~C, so C = ~HC. Replacing m by m' changes the sum by
// (-m) + m', and in one's complement arithmetic -m == ~m. Eqn. 3 avoids the
// RFC 1141 form HC' = HC + m + ~m' whose result can be -0 (0xFFFF) where a
// full recompute gives +0. With end-around-carry addition our folded sum is 0
// only if all three terms are 0, so the result equals a full recompute for
// every checksum a full recompute can produce.

/// RFC 1624 eqn. 3 over several fields at once: the one's complement sum of
/// ~old + new for every changed 16-bit word. Computed once per packet and
/// applied to each checksum that covers those words.
///
/// The sum is kept in the machine's byte order: a one's complement sum does
/// not depend on byte order so long as every word is taken in the same one
/// (RFC 1071 §2(B)), so words read from a packet need no byte swap. `word`
/// takes and `apply` gives values in host order; one swap each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta(u32);

impl Delta {
    /// No change.
    pub const ZERO: Delta = Delta(0);

    /// `old` and `new` are the same length, at an even offset of the
    /// checksummed data; an odd last byte is a word padded with zero, as in
    /// [`sum`]. Eight bytes at a time: their two 32-bit halves are summed
    /// wide and folded once (2^16 ≡ 1 modulo 0xFFFF, so wider words sum the
    /// same).
    #[inline]
    pub fn words(&mut self, old: &[u8], new: &[u8]) {
        // `chunks_exact` hands out slices of exactly N bytes: never 0 here.
        fn ne<const N: usize>(b: &[u8]) -> [u8; N] {
            b.try_into().unwrap_or([0; N])
        }
        let (mut o8, mut n8) = (old.chunks_exact(8), new.chunks_exact(8));
        let mut wide = 0u64;
        for (o, n) in (&mut o8).zip(&mut n8) {
            let (o, n) = (!u64::from_ne_bytes(ne(o)), u64::from_ne_bytes(ne(n)));
            wide += (o >> 32) + (o & 0xffff_ffff) + (n >> 32) + (n & 0xffff_ffff);
        }
        let (mut o4, mut n4) = (o8.remainder().chunks_exact(4), n8.remainder().chunks_exact(4));
        for (o, n) in (&mut o4).zip(&mut n4) {
            wide += u64::from(!u32::from_ne_bytes(ne(o))) + u64::from(u32::from_ne_bytes(ne(n)));
        }
        let (mut o2, mut n2) = (o4.remainder().chunks_exact(2), n4.remainder().chunks_exact(2));
        for (o, n) in (&mut o2).zip(&mut n2) {
            wide += u64::from(!u16::from_ne_bytes(ne(o))) + u64::from(u16::from_ne_bytes(ne(n)));
        }
        if let (Some(&o), Some(&n)) = (o2.remainder().first(), n2.remainder().first()) {
            wide += u64::from(!u16::from_ne_bytes([o, 0])) + u64::from(u16::from_ne_bytes([n, 0]));
        }
        // At most four 16-bit parts: the sum fits the u32 with room to spare.
        self.0 += (wide & 0xffff) as u32
            + (wide >> 16 & 0xffff) as u32
            + (wide >> 32 & 0xffff) as u32
            + (wide >> 48) as u32;
    }

    /// [`Delta::words`] for fields of a length known at compile time (a
    /// multiple of 4: addresses): 32 bits at a time, no loop left.
    #[inline(always)]
    pub fn array<const N: usize>(&mut self, old: &[u8; N], new: &[u8; N]) {
        const { assert!(N.is_multiple_of(4) && N <= 32, "whole 32-bit words, at most eight") };
        let word = |b: &[u8]| u64::from(u32::from_ne_bytes(b.try_into().unwrap_or([0; 4])));
        let wide: u64 = old
            .chunks_exact(4)
            .zip(new.chunks_exact(4))
            .map(|(o, n)| (word(o) ^ 0xFFFF_FFFF) + word(n))
            .sum();
        // At most eight 32-bit parts: 35 bits, folded to 32 and split in halves.
        let x = (wide & 0xFFFF_FFFF) + (wide >> 32);
        self.0 += (x & 0xFFFF) as u32 + (x >> 16) as u32;
    }

    /// The words of `old` replaced by those of `new`, of any lengths: an
    /// IPv4 pseudo-header's addresses by IPv6 ones, say. `~sum(m) ==
    /// sum(~m)` in one's complement, so each side is summed once
    /// ([`sum`], big-endian) and turned to the machine's order.
    #[inline]
    pub fn replace(&mut self, old: &[u8], new: &[u8]) {
        let native = |s: u16| u32::from(s.to_be());
        self.0 += native(!(sum(old) as u16)) + native(sum(new) as u16);
    }

    /// Four bytes written where the checksummed data had none (or zeros):
    /// `new` as the machine reads them (`u32::from_ne_bytes`), so no swap.
    #[inline(always)]
    pub fn add_ne(&mut self, new: u32) {
        self.0 += (new >> 16) + (new & 0xFFFF);
    }

    /// One word changed from `old` to `new` (host order).
    #[inline]
    pub fn word(&mut self, old: u16, new: u16) {
        self.0 += u32::from(!old.to_be()) + u32::from(new.to_be());
    }

    /// [`Delta::word`] for several words: summed as they are and folded,
    /// then swapped once rather than word by word (a byte swap of a one's
    /// complement sum is the sum of the swapped words, RFC 1071 §2(B)).
    #[inline]
    pub fn host_words<const N: usize>(&mut self, old: [u16; N], new: [u16; N]) {
        const { assert!(N <= 16, "at most sixteen words: the sum fits 22 bits") };
        let sum = Delta(old.iter().zip(&new).map(|(&o, &n)| u32::from(!o) + u32::from(n)).sum());
        self.0 += u32::from((sum.folded().0 as u16).to_be());
    }

    /// The same change folded to 16 bits with end-around carry, to be kept
    /// and applied later: a nonzero sum folds to the representative of its
    /// class in 1..=0xFFFF, so [`Delta::apply`] gives the same checksum.
    #[inline]
    pub fn folded(self) -> Delta {
        let x = (self.0 & 0xFFFF) + (self.0 >> 16);
        Delta((x & 0xFFFF) + (x >> 16))
    }

    /// For a [`Delta::folded`] change from the words `old` to `new`, the
    /// folded change from `new` back to `old` (what the same words summed
    /// the other way give): its one's complement negation, which is never
    /// the all-zero sum, since that needs every term zero (old words all
    /// 0xFFFF, new all 0) in both directions at once.
    #[inline]
    pub fn reversed(self) -> Delta {
        match !self.0 & 0xFFFF {
            0 => Delta(0xFFFF),
            n => Delta(n),
        }
    }

    /// The checksum of data whose words are all in this change, summed from
    /// zero (a header built anew): the complement of the folded sum, as the
    /// bytes to store (what `apply(0xFFFF)` gives, without its swap).
    #[inline]
    pub fn checksum_bytes(self) -> [u8; 2] {
        (!(self.folded().0 as u16)).to_ne_bytes()
    }

    /// HC' = ~(~HC + Σ(~m + m')), for a checksum `csum` in host order.
    #[inline]
    pub fn apply(self, csum: u16) -> u16 {
        let mut x = u32::from(!csum.to_be()) + self.0;
        x = (x & 0xFFFF) + (x >> 16);
        x = (x & 0xFFFF) + (x >> 16);
        u16::from_be(!(x as u16))
    }
}

impl Delta {
    /// Writes `new` over `field` and adds the change: a setter that keeps
    /// the checksum's account as it writes.
    #[inline]
    pub fn write(&mut self, field: &mut [u8], new: &[u8]) {
        self.words(field, new);
        field.copy_from_slice(new);
    }
}

impl core::ops::AddAssign for Delta {
    /// Both changes: for a checksum that covers the words of each.
    #[inline]
    fn add_assign(&mut self, other: Delta) {
        self.0 += other.0;
    }
}

/// RFC 1624 Eqn. 3: the new checksum after a 16-bit field changed from `old` to `new`.
///
/// The field must sit at an even offset of the checksummed data (every
/// address, port, id and length field does).
#[inline]
pub fn update_u16(old_csum: u16, old: u16, new: u16) -> u16 {
    let mut d = Delta::default();
    d.word(old, new);
    d.apply(old_csum)
}

/// [`update_u16`] for a 32-bit field (two 16-bit words).
#[inline]
pub fn update_u32(old_csum: u16, old: u32, new: u32) -> u16 {
    update_bytes(old_csum, &old.to_be_bytes(), &new.to_be_bytes())
}

/// [`update_u16`] for a run of bytes replaced in place (IPv4/IPv6 addresses).
///
/// `old` and `new` start at an even offset and may differ in length
/// ([`Delta::replace`]).
#[inline]
pub fn update_bytes(old_csum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut d = Delta::default();
    d.replace(old, new);
    d.apply(old_csum)
}

/// Maps a computed UDP checksum to the value to write: 0 becomes 0xFFFF.
//= https://www.rfc-editor.org/rfc/rfc768
//# If the computed  checksum  is zero,  it is transmitted  as all ones (the
//# equivalent  in one's complement  arithmetic).   An all zero  transmitted
//# checksum  value means that the transmitter  generated  no checksum
#[inline]
pub fn udp_encode(csum: u16) -> u16 {
    if csum == 0 {
        0xFFFF
    } else {
        csum
    }
}

/// [`update_u16`] for a UDP checksum: 0 ("no checksum") stays 0, and a
/// computed 0 is written as 0xFFFF.
#[inline]
pub fn udp_update_u16(old_csum: u16, old: u16, new: u16) -> u16 {
    if old_csum == 0 {
        return 0;
    }
    udp_encode(update_u16(old_csum, old, new))
}

/// [`update_u32`] with the UDP zero rules of [`udp_update_u16`].
#[inline]
pub fn udp_update_u32(old_csum: u16, old: u32, new: u32) -> u16 {
    if old_csum == 0 {
        return 0;
    }
    udp_encode(update_u32(old_csum, old, new))
}

/// [`update_bytes`] with the UDP zero rules of [`udp_update_u16`].
#[inline]
pub fn udp_update_bytes(old_csum: u16, old: &[u8], new: &[u8]) -> u16 {
    if old_csum == 0 {
        return 0;
    }
    udp_encode(update_bytes(old_csum, old, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straight RFC 1071 reference: big-endian words, one at a time.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for c in data.chunks(2) {
            let hi = u64::from(c[0]) << 8;
            let lo = c.get(1).map_or(0, |&b| u64::from(b));
            acc += hi | lo;
        }
        fold_u64(acc)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: sum of these words is ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_right() {
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0xab]), 0x1234 + 0xab00);
        assert_eq!(sum(&[]), 0);
        assert_eq!(checksum(&[]), 0xFFFF);
    }

    #[test]
    fn known_ipv4_header() {
        // Wikipedia's IPv4 header checksum example: checksum b861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0);
        let mut z = hdr;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(checksum(&z), 0xb861);
    }

    #[test]
    fn udp_zero_rules() {
        assert_eq!(udp_encode(0), 0xFFFF);
        assert_eq!(udp_encode(0x1234), 0x1234);
        assert_eq!(udp_update_u16(0, 1, 2), 0);
        assert_eq!(udp_update_u32(0, 1, 2), 0);
        assert_eq!(udp_update_bytes(0, &[1, 2], &[3, 4]), 0);
        // Sum 0x0001 (csum 0xFFFE); lowering a word by one makes the sum -0
        // (0xFFFF), so the computed checksum is 0 and UDP must write 0xFFFF.
        assert_eq!(update_u16(0xFFFE, 0x0002, 0x0001), 0);
        assert_eq!(udp_update_u16(0xFFFE, 0x0002, 0x0001), 0xFFFF);
    }

    proptest! {
        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(sum(&data), u32::from(reference_sum(&data)));
        }

        #[test]
        fn sum_is_split_additive(data in proptest::collection::vec(any::<u8>(), 0..300), at in 0usize..300) {
            // Splitting at an even offset and adding partial sums equals the whole.
            let at = (at.min(data.len())) & !1;
            let (a, b) = data.split_at(at);
            prop_assert_eq!(fold(sum(a) + sum(b)), fold(sum(&data)));
        }

        #[test]
        fn update_u16_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 2..200),
            idx in any::<usize>(),
            new in any::<u16>(),
        ) {
            // Data with a nonzero byte, as every real header has (protocol number).
            data[0] |= 1;
            let words = data.len() / 2;
            let i = 2 * (idx % words);
            if i == 0 { data[0] |= 1; }
            let before = checksum(&data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            let new = if i == 0 { new | 0x0100 } else { new };
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(update_u16(before, old, new), checksum(&data));
        }

        #[test]
        fn update_bytes_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 40..200),
            new in proptest::array::uniform16(any::<u8>()),
            v4 in any::<bool>(),
            idx in 0usize..10,
        ) {
            data[0] = 0x45;
            let n = if v4 { 4 } else { 16 };
            let at = 2 + 2 * idx;
            let before = checksum(&data);
            let mut old = [0u8; 16];
            old[..n].copy_from_slice(&data[at..at + n]);
            data[at..at + n].copy_from_slice(&new[..n]);
            prop_assert_eq!(update_bytes(before, &old[..n], &new[..n]), checksum(&data));
            if v4 {
                let o = u32::from_be_bytes([old[0], old[1], old[2], old[3]]);
                let w = u32::from_be_bytes([new[0], new[1], new[2], new[3]]);
                prop_assert_eq!(update_u32(before, o, w), checksum(&data));
            }
        }
    }

    proptest! {
        /// A field rewritten through `words` and a word through `word`, both
        /// in one delta, give the checksum a full recompute gives (either
        /// form of zero), for any field length, place and content.
        #[test]
        fn delta_matches_a_full_recompute(
            words in proptest::collection::vec(any::<u16>(), 2..40),
            field in (0usize..40, 0usize..20),
            fresh in proptest::collection::vec(any::<u8>(), 40),
            changed in any::<u16>(),
        ) {
            let mut data: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
            let n = words.len();
            // Field: whole words `a..b`; the single word is the last one, outside it.
            let a = field.0 % (n - 1);
            let b = (a + field.1).min(n - 1);
            let before = checksum(&data);
            let mut d = Delta::default();
            d.words(&data[2 * a..2 * b], &fresh[..2 * (b - a)]);
            data[2 * a..2 * b].copy_from_slice(&fresh[..2 * (b - a)]);
            d.word(words[n - 1], changed);
            data[2 * n - 2..].copy_from_slice(&changed.to_be_bytes());
            let (got, want) = (d.apply(before), checksum(&data));
            prop_assert!(got == want || (got | want == 0xffff && got & want == 0), "{got:#06x} {want:#06x}");
        }

        /// Words summed in host order and swapped once give, folded, the
        /// very change that swapping each word gives (the same
        /// representative, so `apply` writes the same checksum).
        #[test]
        fn host_words_equal_word_by_word(
            start in any::<u16>(),
            old in any::<[u16; 4]>(),
            new in any::<[u16; 4]>(),
        ) {
            let mut one_by_one = Delta(u32::from(start));
            old.iter().zip(&new).for_each(|(&o, &n)| one_by_one.word(o, n));
            let mut at_once = Delta(u32::from(start));
            at_once.host_words(old, new);
            prop_assert_eq!(at_once.folded(), one_by_one.folded());
        }
    }
}
