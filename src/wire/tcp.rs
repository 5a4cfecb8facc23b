//! TCP header view (RFC 9293). The buffer is the whole segment: TCP has no
//! length field, so slice it to the IP payload first.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::ip_protocol;
use super::WireError;

/// Length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = 20;

mod field {
    pub use crate::wire::view::port_field::*;
    use core::ops::Range;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// Offset of the checksum field, for incremental updates by the caller.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

shared_view! {
    transport
    /// A read/write view of a TCP segment.
}

fields! {
    Packet {
        /// Sequence number.
        pub seq_number, set_seq_number: u32 = field::SEQ;
        /// Acknowledgement number.
        pub ack_number, set_ack_number: u32 = field::ACK;
        /// The byte of the data offset (high nibble), reserved bits and NS.
        data_off, set_data_off: u8 = field::DATA_OFF;
        /// The flag byte (CWR..FIN); compare with the `FLAG_*` constants.
        pub flags, set_flags: u8 = field::FLAGS;
        /// Receive window (unscaled).
        pub window, set_window: u16 = field::WINDOW;
        /// Checksum field.
        pub checksum, set_checksum: u16 = field::CHECKSUM;
        /// Urgent pointer.
        pub urgent, set_urgent: u16 = field::URGENT;
    }
}

/// Defines the `FLAG_*` bits of [`Packet::flags`] and, for those named
/// after the bit, a getter that is true when the bit is set.
macro_rules! tcp_flags {
    ($($(#[$doc:meta])* $flag:ident = $bit:literal $(, $get:ident)?;)*) => {
        $($(#[$doc])* pub const $flag: u8 = $bit;)*

        impl<T: AsRef<[u8]>> Packet<T> {
            $($(
                #[doc = concat!("True when [`", stringify!($flag), "`] is set.")]
                #[inline]
                pub fn $get(&self) -> bool {
                    self.flags() & $flag != 0
                }
            )?)*
        }
    };
}

tcp_flags! {
    /// FIN flag bit.
    FLAG_FIN = 0x01, fin;
    /// SYN flag bit.
    FLAG_SYN = 0x02, syn;
    /// RST flag bit.
    FLAG_RST = 0x04, rst;
    /// PSH flag bit.
    FLAG_PSH = 0x08, psh;
    /// ACK flag bit.
    FLAG_ACK = 0x10, ack;
    /// URG flag bit.
    FLAG_URG = 0x20, urg;
    /// ECE flag bit.
    FLAG_ECE = 0x40;
    /// CWR flag bit.
    FLAG_CWR = 0x80;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the fixed header fits and the data offset is in `5..` and fits.
    pub fn check(&self) -> Result<(), WireError> {
        self.holds(MIN_HEADER_LEN)?;
        self.claimed_len(self.header_len(), MIN_HEADER_LEN, WireError::BadHeaderLen)
    }

    /// Header length in bytes (data offset * 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.data_off() >> 4) * 4
    }

    /// Option bytes between the fixed header and the payload.
    #[inline]
    pub fn options(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(MIN_HEADER_LEN..self.header_len()).unwrap_or(&[])
    }

    /// Segment data after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }

    /// True when the checksum over the segment and IPv4 pseudo-header is correct.
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        checksum::l4_checksum_v4(src, dst, ip_protocol::TCP, self.buffer.as_ref()) == 0
    }

    /// True when the checksum over the segment and IPv6 pseudo-header is correct.
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        checksum::l4_checksum_v6(src, dst, ip_protocol::TCP, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the header length in bytes (rounded down to 4), keeping the
    /// reserved bits and NS.
    #[inline]
    pub fn set_header_len(&mut self, len: usize) {
        let off = ((len / 4).min(15) as u8) << 4;
        let keep = self.data_off() & 0x0F;
        self.set_data_off(off | keep);
    }

    /// Computes and writes the checksum with an IPv4 pseudo-header.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v4(src, dst, ip_protocol::TCP, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Computes and writes the checksum with an IPv6 pseudo-header.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v6(src, dst, ip_protocol::TCP, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Mutable segment data after the header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        self.buffer.as_mut().get_mut(h..).unwrap_or(&mut [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// The TCP part of the SYN in `ipv4::tests`: 54321 -> 80, seq 1000,
    /// window 65535, checksum 0xc376.
    const SYN: [u8; 20] = [
        0xd4, 0x31, 0x00, 0x50, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xff, 0xff, 0xc3,
        0x76, 0x00, 0x00,
    ];

    #[test]
    fn syn_fields() {
        let p = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!(p.src_port(), 54321);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 1000);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.flags(), FLAG_SYN);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst() && !p.psh() && !p.urg());
        assert_eq!(p.window(), 65535);
        assert_eq!(p.checksum(), 0xc376);
        assert_eq!(p.urgent(), 0);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum_v4(SRC, DST));
        assert!(!p.verify_checksum_v4(DST, DST));
    }

    #[test]
    fn fill_checksum_matches_wire() {
        let mut b = SYN;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_checksum(0x1111);
        p.fill_checksum_v4(SRC, DST);
        assert_eq!(b, SYN);
    }

    #[test]
    fn every_truncation_fails() {
        for n in 0..SYN.len() {
            assert_eq!(Packet::new_checked(&SYN[..n]), Err(WireError::Truncated));
        }
    }

    #[test]
    fn data_offset_checks() {
        let mut b = [0u8; 32];
        b[..20].copy_from_slice(&SYN);
        b[12] = 0x40;
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadHeaderLen));
        b[12] = 0x90; // 36 bytes > 32
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::Truncated));
        b[12] = 0x70; // 28 bytes: 8 bytes of options, 4 of payload
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.options().len(), 8);
        assert_eq!(p.payload().len(), 4);
    }

    #[test]
    fn setters() {
        let mut b = [0u8; 24];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_header_len(20);
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_seq_number(3);
        p.set_ack_number(4);
        p.set_flags(FLAG_ACK | FLAG_PSH | FLAG_FIN | FLAG_RST | FLAG_URG);
        p.set_window(5);
        p.set_urgent(6);
        p.payload_mut().copy_from_slice(b"data");
        p.fill_checksum_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (1, 2));
        assert_eq!((p.seq_number(), p.ack_number()), (3, 4));
        assert!(p.ack() && p.psh() && p.fin() && p.rst() && p.urg() && !p.syn());
        assert_eq!((p.window(), p.urgent()), (5, 6));
        assert_eq!(p.payload(), b"data");
        assert!(p.verify_checksum_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST));
    }

    fn etherparse_v4(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, data: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv4(src, dst, 64).tcp(sp, dp, 12345, 1000).ack(777).psh();
        etherparse_packet!(b, data)
    }

    fn etherparse_v6(src: [u8; 16], dst: [u8; 16], sp: u16, dp: u16, data: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv6(src, dst, 64).tcp(sp, dp, 12345, 1000).syn();
        etherparse_packet!(b, data)
    }

    #[test]
    fn etherparse_oracle() {
        let v = etherparse_v4([1, 2, 3, 4], [5, 6, 7, 8], 1111, 2222, b"hello");
        let p = Packet::new_checked(&v[20..]).unwrap();
        let e = etherparse::TcpHeaderSlice::from_slice(&v[20..]).unwrap();
        assert_eq!(p.src_port(), e.source_port());
        assert_eq!(p.dst_port(), e.destination_port());
        assert_eq!(p.seq_number(), e.sequence_number());
        assert_eq!(p.ack_number(), e.acknowledgment_number());
        assert_eq!(p.window(), e.window_size());
        assert_eq!(p.checksum(), e.checksum());
        assert!(p.ack() && p.psh());
        assert_eq!(p.payload(), b"hello");
        assert!(p.verify_checksum_v4([1, 2, 3, 4].into(), [5, 6, 7, 8].into()));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut data = data;
            if let Ok(p) = Packet::new_checked(&data[..]) {
                prop_assert!(p.header_len() <= data.len());
                let _ = (p.options().len(), p.payload().len(), p.flags(), p.urgent());
                let _ = p.verify_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST);
            }
            let mut p = Packet::new_unchecked(&mut data[..]);
            let _ = (p.seq_number(), p.options().len(), p.payload().len());
            p.set_header_len(60);
            p.fill_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST);
            let _ = p.payload_mut().len();
        }

        #[test]
        fn nat_rewrite_v4_incremental_equals_full(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
            new_src in any::<[u8; 4]>(), new_dst in any::<[u8; 4]>(),
            sp in any::<u16>(), dp in any::<u16>(), nsp in any::<u16>(), ndp in any::<u16>(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut v = etherparse_v4(src, dst, sp, dp, &data);
            let mut p = Packet::new_checked(&mut v[20..]).unwrap();
            let mut c = p.checksum();
            c = checksum::update_bytes(c, &src, &new_src);
            c = checksum::update_bytes(c, &dst, &new_dst);
            c = checksum::update_u16(c, sp, nsp);
            c = checksum::update_u16(c, dp, ndp);
            p.set_src_port(nsp);
            p.set_dst_port(ndp);
            p.set_checksum(c);
            prop_assert!(p.verify_checksum_v4(new_src.into(), new_dst.into()));
            p.fill_checksum_v4(new_src.into(), new_dst.into());
            prop_assert_eq!(p.checksum(), c);
            // The oracle agrees on the freshly rewritten segment.
            let seg = &v[20..];
            let e = etherparse::TcpHeaderSlice::from_slice(seg).unwrap();
            let want = e.to_header().calc_checksum_ipv4_raw(new_src, new_dst, &seg[e.slice().len()..]).unwrap();
            prop_assert_eq!(want, c);
        }

        #[test]
        fn nat_rewrite_v6_incremental_equals_full(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
            new_src in any::<[u8; 16]>(), sp in any::<u16>(), nsp in any::<u16>(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut v = etherparse_v6(src, dst, sp, 443, &data);
            let mut p = Packet::new_checked(&mut v[40..]).unwrap();
            let mut c = p.checksum();
            c = checksum::update_bytes(c, &src, &new_src);
            c = checksum::update_u16(c, sp, nsp);
            p.set_src_port(nsp);
            p.set_checksum(c);
            prop_assert!(p.verify_checksum_v6(new_src.into(), dst.into()));
            p.fill_checksum_v6(new_src.into(), dst.into());
            prop_assert_eq!(p.checksum(), c);
        }
    }
}
