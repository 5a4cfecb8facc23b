//! IPv4 header view (RFC 791). Options are allowed and skipped.

use core::net::Ipv4Addr;

use super::checksum;
use super::WireError;

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1FFF;

header_view! {
    /// A read/write view of an IPv4 packet.
    ///
    /// The buffer may extend past `total_len` (Ethernet padding); [`Packet::payload`]
    /// stops at `total_len`.
    Packet,
    check: check
}

fields! {
    Packet {
        /// The byte of version (high nibble) and IHL.
        ver_ihl, set_ver_ihl: u8 = field::VER_IHL;
        /// The whole TOS byte (DSCP and ECN).
        pub tos, set_tos: u8 = field::TOS;
        /// Total length of header plus payload.
        pub total_len, set_total_len: u16 = field::LENGTH;
        /// Identification.
        pub ident, set_ident: u16 = field::IDENT;
        /// The word of the flags (DF, MF) and the fragment offset.
        flg_off, set_flg_off: u16 = field::FLG_OFF;
        /// Time to live.
        pub ttl, set_ttl: u8 = field::TTL;
        /// Upper-layer protocol number.
        pub protocol, set_protocol: u8 = field::PROTOCOL;
        /// Header checksum field.
        pub checksum, set_checksum: u16 = field::CHECKSUM;
        /// Source address.
        pub src_addr, set_src_addr: Ipv4Addr = field::SRC;
        /// Destination address.
        pub dst_addr, set_dst_addr: Ipv4Addr = field::DST;
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version, IHL and total length against the buffer.
    pub fn check(&self) -> Result<(), WireError> {
        self.holds(MIN_HEADER_LEN)?;
        if self.version() != 4 {
            return Err(WireError::BadVersion);
        }
        let hlen = self.header_len();
        self.claimed_len(hlen, MIN_HEADER_LEN, WireError::BadHeaderLen)?;
        self.claimed_len(usize::from(self.total_len()), hlen, WireError::BadTotalLen)
    }

    /// The version nibble (4 for a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.ver_ihl() >> 4
    }

    /// Header length in bytes (IHL * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.ver_ihl() & 0x0F) * 4
    }

    /// Differentiated services code point (upper 6 bits of TOS).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    /// ECN bits (lower 2 bits of TOS).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x03
    }

    /// Don't Fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flg_off() & FLAG_DF != 0
    }

    /// More Fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flg_off() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the wire field times 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flg_off() & OFFSET_MASK) << 3
    }

    /// True for any fragment (MF set or nonzero offset); only the first
    /// fragment (offset 0) carries the L4 header.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flg_off() & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// The header bytes, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(..self.header_len()).unwrap_or(b)
    }

    /// The option bytes between the fixed header and the payload.
    #[inline]
    pub fn options(&self) -> &[u8] {
        self.header().get(MIN_HEADER_LEN..).unwrap_or(&[])
    }

    /// True when the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }

    #[inline]
    fn payload_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.total_len()).min(len);
        let start = self.header_len().min(end);
        start..end
    }

    /// The payload: `header_len..total_len`, excluding any link padding.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let r = self.payload_range();
        self.buffer.as_ref().get(r).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the header length in bytes (rounded down to 4).
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        let ihl = ((header_len / 4).min(15)) as u8;
        self.set_ver_ihl(0x40 | ihl);
    }

    /// Sets DSCP, keeping ECN.
    #[inline]
    pub fn set_dscp(&mut self, dscp: u8) {
        let tos = (dscp << 2) | self.ecn();
        self.set_tos(tos);
    }

    /// Sets or clears Don't Fragment.
    #[inline]
    pub fn set_dont_frag(&mut self, on: bool) {
        let v = self.flg_off() & !FLAG_DF;
        self.set_flg_off(if on { v | FLAG_DF } else { v });
    }

    /// Sets or clears More Fragments.
    #[inline]
    pub fn set_more_frags(&mut self, on: bool) {
        let v = self.flg_off() & !FLAG_MF;
        self.set_flg_off(if on { v | FLAG_MF } else { v });
    }

    /// Sets the fragment offset in bytes (rounded down to 8).
    #[inline]
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let v = self.flg_off() & !OFFSET_MASK;
        self.set_flg_off(v | (bytes >> 3));
    }

    /// Recomputes the header checksum over the header and options.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// Decrements TTL and patches the checksum incrementally (RFC 1624).
    /// Returns the new TTL, or `None` (and leaves the packet alone) when the
    /// TTL was already 0 or 1 and the packet must not be forwarded.
    #[inline]
    pub fn decrement_ttl(&mut self) -> Option<u8> {
        let ttl = self.ttl();
        if ttl <= 1 {
            return None;
        }
        let proto = self.protocol();
        let old = u16::from_be_bytes([ttl, proto]);
        let new = u16::from_be_bytes([ttl - 1, proto]);
        let c = checksum::update_u16(self.checksum(), old, new);
        self.set_ttl(ttl - 1);
        self.set_checksum(c);
        Some(ttl - 1)
    }

    /// Mutable payload: `header_len..total_len`.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let r = self.payload_range();
        self.buffer.as_mut().get_mut(r).unwrap_or(&mut [])
    }
}

/// An IPv4 header without options, as Shunt writes the packets it builds
/// (ICMP errors, translated headers, refusals): [`Repr::emit`] writes it
/// through the view's setters, checksum included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The whole TOS byte.
    pub tos: u8,
    /// Header plus payload.
    pub total_len: u16,
    pub ident: u16,
    /// The flags (DF 0x4000, MF 0x2000) and the fragment offset in 8-byte
    /// units, as one word.
    pub flags_frag: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

impl Repr {
    /// Don't Fragment, offset 0: the flags word of an atomic datagram.
    pub const DF: u16 = FLAG_DF;

    /// Writes the 20-byte header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let mut p = Packet::new_unchecked(buf.get_mut(..MIN_HEADER_LEN).ok_or(WireError::Truncated)?);
        p.set_version_and_header_len(MIN_HEADER_LEN);
        p.set_tos(self.tos);
        p.set_total_len(self.total_len);
        p.set_ident(self.ident);
        p.set_flg_off(self.flags_frag);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A real SYN: 10.0.0.1:54321 -> 10.0.0.2:80, DF, TTL 64, IPv4 checksum 0x149a, TCP 0xc376.
    pub(crate) const SYN: [u8; 40] = [
        0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x14, 0x9a, 0x0a, 0x00, 0x00, 0x01, 0x0a,
        0x00, 0x00, 0x02, // IPv4
        0xd4, 0x31, 0x00, 0x50, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xff, 0xff, 0xc3,
        0x76, 0x00, 0x00, // TCP
    ];

    #[test]
    fn syn_fields() {
        let p = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 40);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert!(!p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 6);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.checksum(), 0x149a);
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &SYN[20..]);
        assert!(p.options().is_empty());
    }

    #[test]
    fn fill_checksum_matches_wire() {
        let mut b = SYN;
        b[10] = 0xde;
        b[11] = 0xad;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert_eq!(b, SYN);
    }

    #[test]
    fn every_truncation_fails() {
        for n in 0..SYN.len() {
            assert_eq!(Packet::new_checked(&SYN[..n]), Err(WireError::Truncated), "len {n}");
        }
    }

    #[test]
    fn bad_version_and_ihl() {
        let mut b = SYN;
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadVersion));
        b[0] = 0x44;
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadHeaderLen));
        b[0] = 0x40;
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadHeaderLen));
        // IHL 15 = 60 bytes > 40-byte buffer.
        b[0] = 0x4f;
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::Truncated));
    }

    #[test]
    fn total_len_checks() {
        let mut b = SYN;
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadTotalLen));
        b[2..4].copy_from_slice(&41u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::Truncated));
        // Ethernet padding after total_len is fine and not payload.
        let mut padded = [0u8; 60];
        padded[..40].copy_from_slice(&SYN);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload().len(), 20);
    }

    #[test]
    fn options_are_skipped() {
        // IHL 6: one 4-byte option (NOP NOP NOP EOL), 4-byte payload.
        let mut b = [0u8; 28];
        b[..20].copy_from_slice(&SYN[..20]);
        b[20..24].copy_from_slice(&[1, 1, 1, 0]);
        b[24..28].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version_and_header_len(24);
        p.set_total_len(28);
        p.fill_checksum();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert!(p.verify_checksum());
        let e = etherparse::Ipv4HeaderSlice::from_slice(&b).unwrap();
        assert_eq!(e.header_checksum(), p.checksum());
    }

    #[test]
    fn fragments() {
        let mut b = SYN;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_dont_frag(false);
        p.set_more_frags(true);
        assert!(p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        p.set_more_frags(false);
        p.set_frag_offset(1480);
        assert!(p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        assert!(!p.more_frags());
        assert!(!p.dont_frag());
    }

    #[test]
    fn setters_and_ttl() {
        let mut b = SYN;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_dscp(46);
        assert_eq!(p.dscp(), 46);
        assert_eq!(p.ecn(), 0);
        p.set_ident(7);
        p.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
        p.set_dst_addr(Ipv4Addr::new(198, 51, 100, 10));
        p.fill_checksum();
        assert_eq!(p.decrement_ttl(), Some(63));
        assert!(p.verify_checksum());
        p.set_ttl(1);
        p.fill_checksum();
        assert_eq!(p.decrement_ttl(), None);
        assert_eq!(p.ttl(), 1);
        assert_eq!(p.ident(), 7);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 51, 100, 10));
        p.payload_mut()[0] = 0;
        assert_eq!(b[20], 0);
    }

    /// etherparse's header of a later fragment (MF, offset 100, ID 0xbeef)
    /// carrying `payload_len` bytes of UDP with DSCP `dscp`: the oracle.
    fn oracle(payload_len: u16, dscp: u8) -> etherparse::Ipv4Header {
        let mut h = etherparse::Ipv4Header::new(
            payload_len,
            33,
            etherparse::IpNumber::UDP,
            [1, 2, 3, 4],
            [5, 6, 7, 8],
        )
        .unwrap();
        h.identification = 0xbeef;
        h.dont_fragment = false;
        h.more_fragments = true;
        h.fragment_offset = etherparse::IpFragOffset::try_new(100).unwrap();
        h.dscp = etherparse::Ipv4Dscp::try_new(dscp).unwrap();
        h.header_checksum = h.calc_header_checksum();
        h
    }

    #[test]
    fn emitted_header_is_what_etherparse_writes() {
        let h = oracle(8, 46);
        let repr = Repr {
            tos: 46 << 2,
            total_len: 28,
            ident: 0xbeef,
            flags_frag: 0x2000 | 100,
            ttl: 33,
            protocol: 17,
            src: Ipv4Addr::new(1, 2, 3, 4),
            dst: Ipv4Addr::new(5, 6, 7, 8),
        };
        let mut buf = [0xaa; 24];
        repr.emit(&mut buf).unwrap();
        assert_eq!(&buf[..20], &h.to_bytes()[..]);
        assert_eq!(&buf[20..], &[0xaa; 4], "nothing past the header");
        assert_eq!(repr.emit(&mut buf[..19]), Err(WireError::Truncated));
    }

    #[test]
    fn etherparse_oracle() {
        let h = oracle(5, 0);
        let mut buf = h.to_bytes().to_vec();
        buf.extend_from_slice(&[9; 5]);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.total_len(), h.total_len);
        assert_eq!(p.ttl(), h.time_to_live);
        assert_eq!(p.protocol(), h.protocol.0);
        assert_eq!(p.ident(), h.identification);
        assert_eq!(p.more_frags(), h.more_fragments);
        assert_eq!(p.frag_offset(), h.fragment_offset.value() * 8);
        assert_eq!(p.checksum(), h.header_checksum);
        assert!(p.verify_checksum());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if !data.is_empty() && data[0] >> 4 != 4 && data.len() % 2 == 0 {
                data[0] = 0x40 | (data[0] & 0x0f); // reach past the version check often
            }
            if let Ok(p) = Packet::new_checked(&data[..]) {
                prop_assert!(p.header_len() <= p.total_len() as usize);
                prop_assert!(p.total_len() as usize <= data.len());
                prop_assert_eq!(p.payload().len(), p.total_len() as usize - p.header_len());
                let _ = (p.verify_checksum(), p.options().len(), p.is_fragment(), p.frag_offset());
            }
            let mut p = Packet::new_unchecked(&mut data[..]);
            let _ = (p.src_addr(), p.dst_addr(), p.payload().len(), p.options().len());
            let _ = p.verify_checksum();
            p.set_frag_offset(65535);
            p.set_dst_addr(Ipv4Addr::BROADCAST);
            p.fill_checksum();
            let _ = p.decrement_ttl();
            let _ = p.payload_mut().len();
        }

        #[test]
        fn incremental_rewrite_equals_recompute(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            new_src in any::<[u8; 4]>(), ttl in 2u8..=255, ident in any::<u16>(),
        ) {
            let mut b = SYN;
            let mut p = Packet::new_checked(&mut b[..]).unwrap();
            p.set_src_addr(src.into());
            p.set_dst_addr(dst.into());
            p.set_ttl(ttl);
            p.set_ident(ident);
            p.fill_checksum();
            let c = checksum::update_bytes(p.checksum(), &src, &new_src);
            p.set_src_addr(new_src.into());
            p.set_checksum(c);
            prop_assert!(p.verify_checksum());
            prop_assert!(p.decrement_ttl().is_some());
            let inc = p.checksum();
            p.fill_checksum();
            prop_assert_eq!(inc, p.checksum());
        }
    }
}
