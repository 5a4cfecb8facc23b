//! Packet rewriting, in place: NAT of addresses and ports ([`nat`]), the
//! quote inside ICMP errors about a flow ([`related`]), and address-family
//! translation of tracked flows ([`xlat`]). Stages are thin adapters over
//! these; all checksums are updated incrementally (RFC 1624).

pub mod fragments;
pub mod nat;
pub mod related;
pub mod xlat;

pub fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

fn put16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    b.get_mut(at..at + 2)?.copy_from_slice(&v.to_be_bytes());
    Some(())
}

/// RFC 1624 eqn. 3 over several fields at once: the one's complement sum of
/// ~old + new for every changed 16-bit word. Computed once per packet and
/// applied to each checksum that covers those words.
///
/// The sum is kept in the machine's byte order: a one's complement sum does
/// not depend on byte order so long as every word is taken in the same one
/// (RFC 1071 §2(B)), so words read from a packet need no byte swap. `word`
/// takes and `apply` gives values in host order; one swap each.
#[derive(Clone, Copy, Default)]
pub struct Delta(u32);

impl Delta {
    /// `old` and `new` are the same length, a whole number of words.
    /// Eight bytes at a time: their two 32-bit halves are summed wide and
    /// folded once (2^16 ≡ 1 modulo 0xFFFF, so wider words sum the same).
    #[inline]
    pub fn words(&mut self, old: &[u8], new: &[u8]) {
        let (mut o8, mut n8) = (old.chunks_exact(8), new.chunks_exact(8));
        let mut wide = 0u64;
        for (o, n) in (&mut o8).zip(&mut n8) {
            let o = !u64::from_ne_bytes([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]]);
            let n = u64::from_ne_bytes([n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7]]);
            wide += (o >> 32) + (o & 0xffff_ffff) + (n >> 32) + (n & 0xffff_ffff);
        }
        let (o4, n4) = (o8.remainder().chunks_exact(4), n8.remainder().chunks_exact(4));
        let (o2, n2) = (o4.remainder().chunks_exact(2), n4.remainder().chunks_exact(2));
        for (o, n) in o4.zip(n4) {
            let o = !u32::from_ne_bytes([o[0], o[1], o[2], o[3]]);
            wide += u64::from(o) + u64::from(u32::from_ne_bytes([n[0], n[1], n[2], n[3]]));
        }
        for (o, n) in o2.zip(n2) {
            wide +=
                u64::from(!u16::from_ne_bytes([o[0], o[1]])) + u64::from(u16::from_ne_bytes([n[0], n[1]]));
        }
        // At most four 16-bit parts: the sum fits the u32 with room to spare.
        self.0 += (wide & 0xffff) as u32
            + (wide >> 16 & 0xffff) as u32
            + (wide >> 32 & 0xffff) as u32
            + (wide >> 48) as u32;
    }

    /// One word changed from `old` to `new` (host order).
    #[inline]
    pub fn word(&mut self, old: u16, new: u16) {
        self.0 += u32::from(!old.to_be()) + u32::from(new.to_be());
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

impl core::ops::AddAssign for Delta {
    /// Both changes: for a checksum that covers the words of each.
    #[inline]
    fn add_assign(&mut self, other: Delta) {
        self.0 += other.0;
    }
}

#[cfg(test)]
mod tests {
    use super::Delta;
    use crate::wire::checksum::checksum;
    use proptest::prelude::*;

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
    }
}
