//! ICMPv6 message view (RFC 4443). The buffer is the whole ICMPv6 message;
//! unlike ICMPv4 the checksum covers an IPv6 pseudo-header.

use core::net::Ipv6Addr;

use super::checksum;
use super::ip_protocol;

/// Length of the ICMPv6 header (type, code, checksum, 4 type-specific bytes).
pub const HEADER_LEN: usize = 8;

/// Destination Unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 1;
/// Packet Too Big (carries the MTU).
pub const TYPE_PACKET_TOO_BIG: u8 = 2;
/// Time Exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 3;
/// Parameter Problem (carries a pointer).
pub const TYPE_PARAM_PROBLEM: u8 = 4;
/// Echo Request.
pub const TYPE_ECHO_REQUEST: u8 = 128;
/// Echo Reply.
pub const TYPE_ECHO_REPLY: u8 = 129;
/// Router Solicitation (NDP, RFC 4861).
pub const TYPE_ROUTER_SOLICIT: u8 = 133;
/// Router Advertisement (NDP).
pub const TYPE_ROUTER_ADVERT: u8 = 134;
/// Neighbor Solicitation (NDP).
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
/// Neighbor Advertisement (NDP).
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;
/// Redirect (NDP).
pub const TYPE_REDIRECT: u8 = 137;

use super::view::icmp_field as field;

/// Offset of the checksum field, for incremental updates by the caller.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// True for error messages (types 0..=127), which quote the offending packet.
#[inline]
pub const fn is_error(msg_type: u8) -> bool {
    msg_type < 128
}

/// True for Neighbor Discovery messages, which a dataplane hands to the kernel.
#[inline]
pub const fn is_ndp(msg_type: u8) -> bool {
    matches!(msg_type, TYPE_ROUTER_SOLICIT..=TYPE_REDIRECT)
}

shared_view! {
    icmp
    /// A read/write view of an ICMPv6 message.
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// MTU of a Packet Too Big message (bytes 4..8).
    #[inline]
    pub fn mtu(&self) -> u32 {
        u32::from_be_bytes(self.rest_of_header())
    }

    /// Pointer of a Parameter Problem message (bytes 4..8).
    #[inline]
    pub fn pointer(&self) -> u32 {
        u32::from_be_bytes(self.rest_of_header())
    }

    /// True when the checksum over the message and pseudo-header is correct.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        checksum::l4_checksum_v6(src, dst, ip_protocol::ICMPV6, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the Packet Too Big MTU (checksum not updated).
    #[inline]
    pub fn set_mtu(&mut self, mtu: u32) {
        self.set_rest_of_header(mtu.to_be_bytes());
    }

    /// Recomputes the checksum with the IPv6 pseudo-header.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v6(src, dst, ip_protocol::ICMPV6, self.buffer.as_ref());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WireError;
    use proptest::prelude::*;

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap())
    }

    #[test]
    fn echo_fields_and_checksum() {
        let (s, d) = addrs();
        let mut b = [128, 0, 0, 0, 0xab, 0xcd, 0x00, 0x07, 1, 2, 3];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(s, d);
        assert!(p.verify_checksum(s, d));
        assert!(!p.verify_checksum(d, d));
        assert!(p.is_echo());
        assert!(!is_error(p.msg_type()));
        assert!(!is_ndp(p.msg_type()));
        assert_eq!(p.echo_ident(), 0xabcd);
        assert_eq!(p.echo_seq(), 7);
        assert_eq!(p.payload(), &[1, 2, 3]);
    }

    #[test]
    fn every_truncation_fails() {
        let b = [2u8, 0, 0, 0, 0, 0, 5, 0xdc];
        for n in 0..HEADER_LEN {
            assert_eq!(Packet::new_checked(&b[..n]), Err(WireError::Truncated));
        }
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), TYPE_PACKET_TOO_BIG);
        assert_eq!(p.mtu(), 1500);
        assert!(is_error(p.msg_type()));
        assert!(p.payload().is_empty());
    }

    #[test]
    fn setters_and_ndp() {
        let mut b = [0u8; 24];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(TYPE_NEIGHBOR_SOLICIT);
        p.set_msg_code(0);
        assert!(is_ndp(p.msg_type()));
        p.set_msg_type(TYPE_PARAM_PROBLEM);
        p.set_rest_of_header([0, 0, 0, 6]);
        assert_eq!(p.pointer(), 6);
        p.set_mtu(1280);
        assert_eq!(p.mtu(), 1280);
        p.set_echo_ident(1);
        p.set_echo_seq(2);
        assert_eq!(p.rest_of_header(), [0, 1, 0, 2]);
        p.payload_mut()[0] = 0x60;
        assert_eq!(b[8], 0x60);
    }

    #[test]
    fn etherparse_oracle() {
        let v = etherparse_packet!(
            etherparse::PacketBuilder::ipv6([1; 16], [2; 16], 64).icmpv6_echo_reply(4242, 9),
            b"pong"
        );
        let p = Packet::new_checked(&v[40..]).unwrap();
        assert_eq!(p.msg_type(), TYPE_ECHO_REPLY);
        assert_eq!(p.echo_ident(), 4242);
        assert_eq!(p.echo_seq(), 9);
        assert!(p.verify_checksum([1; 16].into(), [2; 16].into()));
        let e = etherparse::Icmpv6Slice::from_slice(&v[40..]).unwrap();
        assert_eq!(p.checksum(), e.checksum());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let (s, d) = addrs();
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.mtu(), p.echo_ident(), p.payload().len());
                let _ = p.verify_checksum(s, d);
            }
            let mut p = Packet::new_unchecked(&mut data[..]);
            let _ = (p.rest_of_header(), p.pointer(), p.payload().len());
            p.set_mtu(1);
            p.fill_checksum(s, d);
            let _ = p.payload_mut().len();
        }

        #[test]
        fn echo_ident_rewrite_incremental(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), new_src in any::<[u8; 16]>(),
            id in any::<u16>(), new_id in any::<u16>(),
            data in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut v = etherparse_packet!(etherparse::PacketBuilder::ipv6(src, dst, 64).icmpv6_echo_request(id, 1), &data);
            let mut p = Packet::new_checked(&mut v[40..]).unwrap();
            let mut c = checksum::update_u16(p.checksum(), id, new_id);
            c = checksum::update_bytes(c, &src, &new_src);
            p.set_echo_ident(new_id);
            p.set_checksum(c);
            prop_assert!(p.verify_checksum(new_src.into(), dst.into()));
            p.fill_checksum(new_src.into(), dst.into());
            prop_assert_eq!(p.checksum(), c);
        }
    }
}
