//! UDP header view (RFC 768), with the zero-checksum rules of IPv4 and IPv6.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::ip_protocol;
use super::WireError;

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    pub use crate::wire::view::port_field::*;
    use core::ops::Range;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Offset of the checksum field, for incremental updates by the caller.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

shared_view! {
    transport
    /// A read/write view of a UDP datagram.
    ///
    /// The buffer may extend past the UDP length (padding); the datagram,
    /// payload and checksum cover only `..len()`.
}

fields! {
    Packet {
        /// The length field: header plus payload.
        #[allow(clippy::len_without_is_empty)]
        pub len, set_len: u16 = field::LENGTH;
        /// Checksum field; 0 over IPv4 means "no checksum".
        pub checksum, set_checksum: u16 = field::CHECKSUM;
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks `8 <= length <= buffer length`.
    pub fn check(&self) -> Result<(), WireError> {
        self.holds(HEADER_LEN)?;
        self.claimed_len(usize::from(self.len()), HEADER_LEN, WireError::BadUdpLen)
    }

    /// The datagram `..len()`, clamped to the buffer.
    #[inline]
    pub fn datagram(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(..usize::from(self.len())).unwrap_or(b)
    }

    /// Payload `8..len()`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.datagram().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// True when the checksum is correct or absent (0 is allowed over IPv4).
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0 || checksum::l4_checksum_v4(src, dst, ip_protocol::UDP, self.datagram()) == 0
    }

    /// True when the checksum is correct; 0 is invalid over IPv6.
    //= https://www.rfc-editor.org/rfc/rfc8200#section-8.1
    //# IPv6 receivers must discard UDP packets containing a zero checksum
    //# and should log the error.
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        self.checksum() != 0 && checksum::l4_checksum_v6(src, dst, ip_protocol::UDP, self.datagram()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Computes and writes the checksum over an IPv4 pseudo-header; a
    /// computed 0 is written as 0xFFFF.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v4(src, dst, ip_protocol::UDP, self.datagram());
        self.set_checksum(checksum::udp_encode(c));
    }

    /// Computes and writes the checksum over an IPv6 pseudo-header; a
    /// computed 0 is written as 0xFFFF.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v6(src, dst, ip_protocol::UDP, self.datagram());
        self.set_checksum(checksum::udp_encode(c));
    }

    /// Mutable payload `8..len()`.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        self.buffer.as_mut().get_mut(HEADER_LEN..end).unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 199);

    /// 1234 -> 53, length 12, payload "abcd", checksum from the pseudo-header.
    fn dgram() -> [u8; 12] {
        let mut b = [0x04, 0xd2, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, b'a', b'b', b'c', b'd'];
        let c = checksum::l4_checksum_v4(SRC, DST, 17, &b);
        b[6..8].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn fields() {
        let b = dgram();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.src_port(), 1234);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 12);
        assert_eq!(p.payload(), b"abcd");
        assert!(p.verify_checksum_v4(SRC, DST));
        // Cross-check against a hand sum: pseudo (c0a8+0001+c0a8+00c7+0011+000c)
        // + udp (04d2+0035+000c+6162+6364) = 0x2_4c0e -> 0x4c10 -> 0xb3ef.
        assert_eq!(p.checksum(), 0xb3ef);
    }

    #[test]
    fn every_truncation_fails() {
        let b = dgram();
        for n in 0..b.len() {
            assert_eq!(Packet::new_checked(&b[..n]), Err(WireError::Truncated));
        }
    }

    #[test]
    fn length_checks() {
        let mut b = dgram();
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadUdpLen));
        b[4..6].copy_from_slice(&13u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::Truncated));
        b[4..6].copy_from_slice(&10u16.to_be_bytes());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload(), b"ab");
    }

    #[test]
    fn zero_checksum_rules() {
        let mut b = dgram();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_checksum(0);
        assert!(p.verify_checksum_v4(SRC, DST));
        assert!(!p.verify_checksum_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST));
        // Find a payload whose checksum computes to 0; it must be sent as 0xFFFF.
        let target = checksum::l4_checksum_v4(SRC, DST, 17, p.datagram());
        // Adding `target` to the sum (in the payload) turns the checksum into 0.
        let old = u16::from_be_bytes([b'c', b'd']);
        let new = {
            let s = u32::from(old) + u32::from(target);
            checksum::fold(s)
        };
        p.payload_mut()[2..4].copy_from_slice(&new.to_be_bytes());
        assert_eq!(checksum::l4_checksum_v4(SRC, DST, 17, p.datagram()), 0);
        p.fill_checksum_v4(SRC, DST);
        assert_eq!(p.checksum(), 0xFFFF);
        assert!(p.verify_checksum_v4(SRC, DST));
    }

    #[test]
    fn etherparse_oracle() {
        let v = etherparse_packet!(
            etherparse::PacketBuilder::ipv6([1; 16], [2; 16], 5).udp(5353, 5354),
            b"payload"
        );
        let p = Packet::new_checked(&v[40..]).unwrap();
        let e = etherparse::UdpHeaderSlice::from_slice(&v[40..]).unwrap();
        assert_eq!(p.src_port(), e.source_port());
        assert_eq!(p.dst_port(), e.destination_port());
        assert_eq!(p.len(), e.length());
        assert_eq!(p.checksum(), e.checksum());
        assert!(p.verify_checksum_v6([1; 16].into(), [2; 16].into()));
        let mut copy = v.clone();
        let mut q = Packet::new_checked(&mut copy[40..]).unwrap();
        q.fill_checksum_v6([1; 16].into(), [2; 16].into());
        assert_eq!(copy, v);
    }

    fn build_v4(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, data: &[u8]) -> Vec<u8> {
        etherparse_packet!(etherparse::PacketBuilder::ipv4(src, dst, 64).udp(sp, dp), data)
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut data = data;
            if let Ok(p) = Packet::new_checked(&data[..]) {
                prop_assert_eq!(p.payload().len() + HEADER_LEN, p.len() as usize);
                let _ = p.verify_checksum_v4(SRC, DST);
                let _ = p.verify_checksum_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
            }
            let mut p = Packet::new_unchecked(&mut data[..]);
            let _ = (p.datagram().len(), p.payload().len());
            p.set_len(65535);
            p.fill_checksum_v4(SRC, DST);
            let _ = p.payload_mut().len();
        }

        #[test]
        fn nat_rewrite_v4_incremental_equals_full(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new_dst in any::<[u8; 4]>(),
            sp in any::<u16>(), dp in any::<u16>(), ndp in any::<u16>(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
            no_csum in any::<bool>(),
        ) {
            let mut v = build_v4(src, dst, sp, dp, &data);
            let mut p = Packet::new_checked(&mut v[20..]).unwrap();
            if no_csum {
                p.set_checksum(0);
            }
            let mut c = p.checksum();
            c = checksum::udp_update_bytes(c, &dst, &new_dst);
            c = checksum::udp_update_u16(c, dp, ndp);
            p.set_dst_port(ndp);
            p.set_checksum(c);
            if no_csum {
                prop_assert_eq!(c, 0);
            } else {
                prop_assert_ne!(c, 0);
                p.fill_checksum_v4(src.into(), new_dst.into());
                prop_assert_eq!(p.checksum(), c);
                let e = etherparse::UdpHeaderSlice::from_slice(&v[20..]).unwrap().to_header();
                let want = e.calc_checksum_ipv4_raw(src, new_dst, &data).unwrap();
                prop_assert_eq!(want, c);
            }
        }

        #[test]
        fn nat_rewrite_v6_incremental_equals_full(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), new_dst in any::<[u8; 16]>(),
            dp in any::<u16>(), ndp in any::<u16>(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut v = etherparse_packet!(etherparse::PacketBuilder::ipv6(src, dst, 64).udp(9, dp), &data);
            let mut p = Packet::new_checked(&mut v[40..]).unwrap();
            let mut c = p.checksum();
            c = checksum::udp_update_bytes(c, &dst, &new_dst);
            c = checksum::udp_update_u16(c, dp, ndp);
            p.set_dst_port(ndp);
            p.set_checksum(c);
            prop_assert!(p.verify_checksum_v6(src.into(), new_dst.into()));
            p.fill_checksum_v6(src.into(), new_dst.into());
            prop_assert_eq!(p.checksum(), c);
        }
    }
}
