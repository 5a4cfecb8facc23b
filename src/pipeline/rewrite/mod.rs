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
#[derive(Clone, Copy, Default)]
pub struct Delta(pub u32);

impl Delta {
    /// `old` and `new` are the same length, a whole number of words.
    /// Addresses go four bytes at a time: two words per load and add.
    #[inline]
    pub fn words(&mut self, old: &[u8], new: &[u8]) {
        let (mut o4, mut n4) = (old.chunks_exact(4), new.chunks_exact(4));
        for (o, n) in (&mut o4).zip(&mut n4) {
            let o = !u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
            let n = u32::from_be_bytes([n[0], n[1], n[2], n[3]]);
            self.0 += (o >> 16) + (o & 0xffff) + (n >> 16) + (n & 0xffff);
        }
        for (o, n) in o4.remainder().chunks_exact(2).zip(n4.remainder().chunks_exact(2)) {
            self.0 +=
                u32::from(!u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([n[0], n[1]]));
        }
    }

    #[inline]
    pub fn word(&mut self, old: u16, new: u16) {
        self.0 += u32::from(!old) + u32::from(new);
    }

    /// HC' = ~(~HC + Σ(~m + m'))
    #[inline]
    pub fn apply(self, csum: u16) -> u16 {
        let mut x = u32::from(!csum) + self.0;
        x = (x & 0xFFFF) + (x >> 16);
        x = (x & 0xFFFF) + (x >> 16);
        !(x as u16)
    }
}
