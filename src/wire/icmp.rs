//! ICMPv4 message view (RFC 792). The buffer is the whole ICMP message.

use super::checksum;

/// Length of the ICMP header (type, code, checksum, rest of header).
pub const HEADER_LEN: usize = 8;

/// Echo Reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// Destination Unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
/// Redirect.
pub const TYPE_REDIRECT: u8 = 5;
/// Echo Request.
pub const TYPE_ECHO_REQUEST: u8 = 8;
/// Time Exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Parameter Problem.
pub const TYPE_PARAM_PROBLEM: u8 = 12;

/// Destination Unreachable code: fragmentation needed and DF set (RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;

mod field {
    pub use crate::wire::view::icmp_field::*;
    use core::ops::Range;
    pub const NEXT_HOP_MTU: Range<usize> = 6..8;
}

/// Offset of the checksum field, for incremental updates by the caller.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// True for the error messages that quote the offending IP packet.
#[inline]
pub const fn is_error(msg_type: u8) -> bool {
    matches!(msg_type, TYPE_DEST_UNREACHABLE | TYPE_REDIRECT | TYPE_TIME_EXCEEDED | TYPE_PARAM_PROBLEM)
}

shared_view! {
    icmp
    /// A read/write view of an ICMPv4 message.
}

fields! {
    Packet {
        /// Next-hop MTU of a "fragmentation needed" message (RFC 1191).
        pub next_hop_mtu, set_next_hop_mtu: u16 = field::NEXT_HOP_MTU;
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// True when the checksum over the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Recomputes the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WireError;
    use proptest::prelude::*;

    /// `ping` echo request: id 0x1234, seq 1, data "abcd", checksum 0x2104.
    fn echo() -> [u8; 12] {
        let mut b = [8, 0, 0, 0, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd'];
        let c = checksum::checksum(&b);
        b[2..4].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn echo_fields() {
        let b = echo();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), TYPE_ECHO_REQUEST);
        assert_eq!(p.msg_code(), 0);
        assert!(p.is_echo());
        assert!(!is_error(p.msg_type()));
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq(), 1);
        assert_eq!(p.rest_of_header(), [0x12, 0x34, 0, 1]);
        assert_eq!(p.payload(), b"abcd");
        assert!(p.verify_checksum());
        // Hand sum: 0800+1234+0001+6162+6364 = 0xdefb -> checksum 0x2104.
        assert_eq!(p.checksum(), 0x2104);
    }

    #[test]
    fn every_truncation_fails() {
        let b = echo();
        for n in 0..HEADER_LEN {
            assert_eq!(Packet::new_checked(&b[..n]), Err(WireError::Truncated));
        }
        assert!(Packet::new_checked(&b[..HEADER_LEN]).is_ok());
    }

    #[test]
    fn frag_needed_and_setters() {
        let mut b = [0u8; 36];
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_msg_type(TYPE_DEST_UNREACHABLE);
        p.set_msg_code(CODE_FRAG_NEEDED);
        p.set_next_hop_mtu(1400);
        p.payload_mut()[0] = 0x45;
        p.fill_checksum();
        assert!(is_error(p.msg_type()));
        assert!(!p.is_echo());
        assert_eq!(p.next_hop_mtu(), 1400);
        assert_eq!(p.payload()[0], 0x45);
        assert_eq!(p.payload().len(), 28);
        assert!(p.verify_checksum());
        p.set_rest_of_header([1, 2, 3, 4]);
        p.set_echo_ident(9);
        p.set_echo_seq(10);
        assert_eq!(p.rest_of_header(), [0, 9, 0, 10]);
    }

    #[test]
    fn ident_rewrite_incremental() {
        let mut b = echo();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        let c = checksum::update_u16(p.checksum(), 0x1234, 0xbeef);
        p.set_echo_ident(0xbeef);
        p.set_checksum(c);
        assert!(p.verify_checksum());
    }

    #[test]
    fn etherparse_oracle() {
        let v = etherparse_packet!(
            etherparse::PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 9).icmpv4_echo_request(777, 3),
            b"xyz"
        );
        let p = Packet::new_checked(&v[20..]).unwrap();
        assert_eq!(p.echo_ident(), 777);
        assert_eq!(p.echo_seq(), 3);
        assert_eq!(p.payload(), b"xyz");
        assert!(p.verify_checksum());
        let e = etherparse::Icmpv4Slice::from_slice(&v[20..]).unwrap();
        assert_eq!(p.checksum(), e.checksum());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.echo_ident(), p.next_hop_mtu(), p.payload().len());
                let _ = p.verify_checksum();
            }
            let mut p = Packet::new_unchecked(&mut data[..]);
            let _ = (p.rest_of_header(), p.echo_seq(), p.payload().len());
            p.set_echo_ident(1);
            p.fill_checksum();
            let _ = p.payload_mut().len();
        }
    }
}
