//! IPv6 fixed header view (RFC 8200) and a bounded extension-header walker.

use core::net::Ipv6Addr;

use super::WireError;

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// Hop-by-Hop Options header.
pub const NEXT_HEADER_HOP_BY_HOP: u8 = 0;
/// Routing header.
pub const NEXT_HEADER_ROUTING: u8 = 43;
/// Fragment header.
pub const NEXT_HEADER_FRAGMENT: u8 = 44;
/// Authentication Header (RFC 4302); its length is in 4-byte units.
pub const NEXT_HEADER_AH: u8 = 51;
/// No Next Header: nothing follows.
pub const NEXT_HEADER_NONE: u8 = 59;
/// Destination Options header.
pub const NEXT_HEADER_DEST_OPTS: u8 = 60;

/// Most extension headers [`Packet::upper_layer`] walks before giving up.
///
/// Real traffic carries at most a few; a long chain is an attack on the walker
/// (RFC 7112 asks the whole chain to fit in the first fragment anyway).
pub const MAX_EXT_HEADERS: usize = 8;

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// What a Fragment header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragInfo {
    /// Offset of this fragment's data in bytes (multiple of 8).
    pub offset: u16,
    /// More Fragments flag.
    pub more: bool,
    /// Identification shared by all fragments of one packet.
    pub ident: u32,
}

impl FragInfo {
    /// Only the first fragment carries the upper-layer header.
    #[inline]
    pub const fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// Where the upper-layer header starts, found by [`Packet::upper_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// Upper-layer protocol number; [`NEXT_HEADER_NONE`] when nothing follows.
    pub protocol: u8,
    /// Offset from the start of the IPv6 header.
    pub offset: usize,
    /// The Fragment header, if there was one. For non-first fragments the
    /// bytes at `offset` are not an upper-layer header.
    pub frag: Option<FragInfo>,
}

/// True for the extension headers the walker steps over.
#[inline]
pub const fn is_ext_header(next_header: u8) -> bool {
    matches!(
        next_header,
        NEXT_HEADER_HOP_BY_HOP
            | NEXT_HEADER_ROUTING
            | NEXT_HEADER_FRAGMENT
            | NEXT_HEADER_AH
            | NEXT_HEADER_DEST_OPTS
    )
}

header_view! {
    /// A read/write view of an IPv6 packet.
    ///
    /// The buffer may extend past `40 + payload_len` (Ethernet padding).
    /// Jumbograms (payload_len 0 with a Jumbo option) are not supported: a zero
    /// payload length means an empty payload.
    Packet,
    check: check
}

fields! {
    Packet {
        /// The word of version, traffic class and flow label.
        ver_tc_flow, set_ver_tc_flow: u32 = field::VER_TC_FLOW;
        /// Length of everything after the fixed header, extension headers included.
        pub payload_len, set_payload_len: u16 = field::PAYLOAD_LEN;
        /// Next Header of the fixed header (the first extension header, if any).
        pub next_header, set_next_header: u8 = field::NEXT_HEADER;
        /// Hop limit.
        pub hop_limit, set_hop_limit: u8 = field::HOP_LIMIT;
        /// Source address.
        pub src_addr, set_src_addr: Ipv6Addr = field::SRC;
        /// Destination address.
        pub dst_addr, set_dst_addr: Ipv6Addr = field::DST;
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version and that the payload length fits in the buffer.
    pub fn check(&self) -> Result<(), WireError> {
        self.holds(HEADER_LEN)?;
        if self.version() != 6 {
            return Err(WireError::BadVersion);
        }
        self.holds(HEADER_LEN + usize::from(self.payload_len()))
    }

    /// The version nibble (6 for a checked packet).
    #[inline]
    pub fn version(&self) -> u8 {
        (self.ver_tc_flow() >> 28) as u8
    }

    /// Traffic class (DSCP and ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }

    /// The 20-bit flow label.
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & 0x000F_FFFF
    }

    /// End of the packet within the buffer: `40 + payload_len`, clamped.
    #[inline]
    pub fn packet_len(&self) -> usize {
        (HEADER_LEN + usize::from(self.payload_len())).min(self.buffer.as_ref().len())
    }

    /// Everything after the fixed header up to `40 + payload_len`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let end = self.packet_len();
        self.buffer.as_ref().get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// Walks the extension headers to the upper-layer header.
    ///
    /// Stops at the first protocol that is not an extension header (TCP, UDP,
    /// ICMPv6, ESP, ...), at No Next Header, or after a Fragment header that
    /// is not the first fragment (what follows it is data, not headers).
    /// Errors: a header past the packet end is `Truncated`; more than
    /// [`MAX_EXT_HEADERS`] is `ExtHeaderChainTooLong`; Hop-by-Hop anywhere
    /// but first is `BadExtHeaderOrder`.
    //= https://www.rfc-editor.org/rfc/rfc8200#section-4.3
    //# The Hop-by-Hop Options header [...] is restricted to appear
    //# immediately after an IPv6 header only.
    pub fn upper_layer(&self) -> Result<UpperLayer, WireError> {
        let buf = self.buffer.as_ref();
        let end = self.packet_len();
        let mut proto = self.next_header();
        let mut offset = HEADER_LEN;
        let mut frag = None;
        let mut count = 0;
        while is_ext_header(proto) {
            if let Some(FragInfo { offset: o, .. }) = frag {
                if o != 0 {
                    break;
                }
            }
            if count == MAX_EXT_HEADERS {
                return Err(WireError::ExtHeaderChainTooLong);
            }
            if proto == NEXT_HEADER_HOP_BY_HOP && count != 0 {
                return Err(WireError::BadExtHeaderOrder);
            }
            count += 1;
            let hdr = buf.get(offset..end).unwrap_or(&[]);
            // Every extension header is at least 8 bytes.
            let &[next, hlen, o0, o1, i0, i1, i2, i3, ..] = hdr else {
                return Err(WireError::Truncated);
            };
            let len = match proto {
                NEXT_HEADER_FRAGMENT => {
                    let off_m = u16::from_be_bytes([o0, o1]);
                    frag = Some(FragInfo {
                        offset: off_m & 0xFFF8,
                        more: off_m & 1 != 0,
                        ident: u32::from_be_bytes([i0, i1, i2, i3]),
                    });
                    8
                }
                NEXT_HEADER_AH => (usize::from(hlen) + 2) * 4,
                _ => (usize::from(hlen) + 1) * 8,
            };
            if len > hdr.len() {
                return Err(WireError::Truncated);
            }
            offset += len;
            proto = next;
        }
        Ok(UpperLayer { protocol: proto, offset, frag })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 6, keeping traffic class and flow label.
    #[inline]
    pub fn set_version(&mut self) {
        let w = (self.ver_tc_flow() & 0x0FFF_FFFF) | (6 << 28);
        self.set_ver_tc_flow(w);
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let w = (self.ver_tc_flow() & 0xF00F_FFFF) | (u32::from(tc) << 20);
        self.set_ver_tc_flow(w);
    }

    /// Sets the flow label (low 20 bits of `label`).
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let w = (self.ver_tc_flow() & 0xFFF0_0000) | (label & 0x000F_FFFF);
        self.set_ver_tc_flow(w);
    }

    /// Mutable payload (after the fixed header, up to `40 + payload_len`).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.packet_len();
        self.buffer.as_mut().get_mut(HEADER_LEN..end).unwrap_or(&mut [])
    }
}

/// A fixed IPv6 header, as Shunt writes the packets it builds:
/// [`Repr::emit`] writes it through the view's setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub traffic_class: u8,
    /// Low 20 bits.
    pub flow_label: u32,
    /// Everything after the fixed header, extension headers included.
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
}

impl Repr {
    /// Writes the 40-byte header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let mut p = Packet::new_unchecked(buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?);
        p.set_ver_tc_flow(6 << 28);
        p.set_traffic_class(self.traffic_class);
        p.set_flow_label(self.flow_label);
        p.set_payload_len(self.payload_len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Fixed header: tc 0xb8, flow 0x12345, payload `plen`, next `nh`,
    /// hop limit 64, 2001:db8::1 -> 2001:db8::2.
    fn fixed(nh: u8, plen: u16) -> [u8; 40] {
        let mut h = [0u8; 40];
        h[..4].copy_from_slice(&0x6b81_2345u32.to_be_bytes());
        h[4..6].copy_from_slice(&plen.to_be_bytes());
        h[6] = nh;
        h[7] = 64;
        h[8..10].copy_from_slice(&[0x20, 0x01]);
        h[10..12].copy_from_slice(&[0x0d, 0xb8]);
        h[23] = 1;
        h[24..26].copy_from_slice(&[0x20, 0x01]);
        h[26..28].copy_from_slice(&[0x0d, 0xb8]);
        h[39] = 2;
        h
    }

    /// HbH (8) -> Fragment (8) -> DestOpts (16) -> UDP (8 + 4 data).
    fn chain() -> [u8; 84] {
        let mut b = [0u8; 84];
        b[..40].copy_from_slice(&fixed(NEXT_HEADER_HOP_BY_HOP, 44));
        // Hop-by-Hop: next=Fragment, len 0, PadN(4).
        b[40..48].copy_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        // Fragment: next=DestOpts, offset 0, M=1, id 0xdeadbeef.
        b[48..56].copy_from_slice(&[60, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef]);
        // Destination options: next=UDP, len 1 (16 bytes), PadN(12).
        b[56..72].copy_from_slice(&[17, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // UDP 1234 -> 53, len 12.
        b[72..80].copy_from_slice(&[0x04, 0xd2, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00]);
        b[80..84].copy_from_slice(b"abcd");
        b
    }

    #[test]
    fn fixed_fields() {
        let mut b = [0u8; 48];
        b[..40].copy_from_slice(&fixed(17, 8));
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 8);
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload().len(), 8);
        let ul = p.upper_layer().unwrap();
        assert_eq!(ul, UpperLayer { protocol: 17, offset: 40, frag: None });
    }

    #[test]
    fn emitted_header_is_what_etherparse_writes() {
        let (src, dst) =
            ("2001:db8::1".parse::<Ipv6Addr>().unwrap(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        let h = etherparse::Ipv6Header {
            traffic_class: 0xb8,
            flow_label: etherparse::Ipv6FlowLabel::try_new(0x12345).unwrap(),
            payload_length: 8,
            next_header: etherparse::IpNumber::UDP,
            hop_limit: 64,
            source: src.octets(),
            destination: dst.octets(),
        };
        let repr = Repr {
            traffic_class: 0xb8,
            flow_label: 0x12345,
            payload_len: 8,
            next_header: 17,
            hop_limit: 64,
            src,
            dst,
        };
        let mut buf = [0xaa; 44];
        repr.emit(&mut buf).unwrap();
        assert_eq!(&buf[..40], &h.to_bytes()[..]);
        assert_eq!(&buf[40..], &[0xaa; 4], "nothing past the header");
        assert_eq!(repr.emit(&mut buf[..39]), Err(WireError::Truncated));
    }

    #[test]
    fn every_truncation_fails() {
        let b = chain();
        for n in 0..b.len() {
            assert_eq!(Packet::new_checked(&b[..n]), Err(WireError::Truncated), "len {n}");
        }
        assert!(Packet::new_checked(&b[..]).is_ok());
    }

    #[test]
    fn bad_version() {
        let mut b = fixed(59, 0);
        b[0] = 0x45;
        assert_eq!(Packet::new_checked(&b[..]), Err(WireError::BadVersion));
    }

    #[test]
    fn padding_beyond_payload_len() {
        let mut b = [0u8; 60];
        b[..40].copy_from_slice(&fixed(59, 4));
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
        assert_eq!(p.packet_len(), 44);
    }

    #[test]
    fn hbh_frag_dest_chain() {
        let b = chain();
        let p = Packet::new_checked(&b[..]).unwrap();
        let ul = p.upper_layer().unwrap();
        assert_eq!(ul.protocol, 17);
        assert_eq!(ul.offset, 72);
        let f = ul.frag.unwrap();
        assert!(f.more);
        assert!(f.is_first());
        assert_eq!(f.offset, 0);
        assert_eq!(f.ident, 0xdeadbeef);
    }

    #[test]
    fn non_first_fragment_stops_walk() {
        let mut b = chain();
        // offset 185*8 = 1480, M=0
        b[50..52].copy_from_slice(&((185u16 << 3) & 0xFFF8).to_be_bytes());
        let ul = Packet::new_checked(&b[..]).unwrap().upper_layer().unwrap();
        assert_eq!(ul.protocol, 60);
        assert_eq!(ul.offset, 56);
        let f = ul.frag.unwrap();
        assert_eq!(f.offset, 1480);
        assert!(!f.more);
    }

    #[test]
    fn payload_len_cuts_chain() {
        // payload_len ends inside the destination options header.
        let mut b = chain();
        b[4..6].copy_from_slice(&20u16.to_be_bytes());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(WireError::Truncated));
        for plen in 0..32u16 {
            b[4..6].copy_from_slice(&plen.to_be_bytes());
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!(p.upper_layer(), Err(WireError::Truncated), "plen {plen}");
        }
        b[4..6].copy_from_slice(&32u16.to_be_bytes());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.upper_layer().unwrap().offset, 72);
    }

    #[test]
    fn no_next_header() {
        let mut b = [0u8; 48];
        b[..40].copy_from_slice(&fixed(NEXT_HEADER_DEST_OPTS, 8));
        b[40..48].copy_from_slice(&[59, 0, 1, 4, 0, 0, 0, 0]);
        let ul = Packet::new_checked(&b[..]).unwrap().upper_layer().unwrap();
        assert_eq!(ul.protocol, NEXT_HEADER_NONE);
        assert_eq!(ul.offset, 48);
    }

    fn dest_opts_chain(n: usize) -> [u8; 40 + 8 * 10] {
        let mut b = [0u8; 40 + 8 * 10];
        b[..40].copy_from_slice(&fixed(NEXT_HEADER_DEST_OPTS, (8 * 10) as u16));
        for i in 0..10 {
            let nh = if i + 1 < n { NEXT_HEADER_DEST_OPTS } else { 59 };
            b[40 + 8 * i..48 + 8 * i].copy_from_slice(&[nh, 0, 1, 4, 0, 0, 0, 0]);
        }
        b
    }

    #[test]
    fn chain_length_limit() {
        let b = dest_opts_chain(MAX_EXT_HEADERS);
        let ul = Packet::new_checked(&b[..]).unwrap().upper_layer().unwrap();
        assert_eq!(ul.protocol, 59);
        assert_eq!(ul.offset, 40 + 8 * MAX_EXT_HEADERS);
        let b = dest_opts_chain(MAX_EXT_HEADERS + 1);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().upper_layer(), Err(WireError::ExtHeaderChainTooLong));
    }

    #[test]
    fn hop_by_hop_must_be_first() {
        let mut b = chain();
        b[40] = 0; // HbH -> HbH
        assert_eq!(Packet::new_checked(&b[..]).unwrap().upper_layer(), Err(WireError::BadExtHeaderOrder));
    }

    #[test]
    fn setters() {
        let mut b = [0u8; 40];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version();
        p.set_traffic_class(0xfe);
        p.set_flow_label(0xfffff);
        p.set_payload_len(0);
        p.set_next_header(58);
        p.set_hop_limit(255);
        p.set_src_addr(Ipv6Addr::LOCALHOST);
        p.set_dst_addr(Ipv6Addr::UNSPECIFIED);
        assert!(p.payload_mut().is_empty());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.traffic_class(), 0xfe);
        assert_eq!(p.flow_label(), 0xfffff);
        assert_eq!(p.next_header(), 58);
        assert_eq!(p.hop_limit(), 255);
        assert_eq!(p.src_addr(), Ipv6Addr::LOCALHOST);
    }

    #[test]
    fn etherparse_oracle() {
        use etherparse::{IpNumber, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader};
        // etherparse 0.16 puts the fragment offset and M flag at the wrong bit
        // positions (etherparse issue #150, fixed in 0.20), so only the
        // all-zero offset/M word is a valid oracle; offsets are tested by hand above.
        let frag = Ipv6FragmentHeader::new(
            IpNumber::IPV6_DESTINATION_OPTIONS,
            etherparse::IpFragOffset::try_new(0).unwrap(),
            false,
            0x01020304,
        );
        let dest = Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[1, 4, 0, 0, 0, 0]).unwrap();
        let mut buf = Vec::new();
        let ip = Ipv6Header {
            traffic_class: 3,
            flow_label: etherparse::Ipv6FlowLabel::try_new(77).unwrap(),
            payload_length: 16 + 20,
            next_header: IpNumber::IPV6_FRAGMENTATION_HEADER,
            hop_limit: 9,
            source: [1; 16],
            destination: [2; 16],
        };
        ip.write(&mut buf).unwrap();
        frag.write(&mut buf).unwrap();
        dest.write(&mut buf).unwrap();
        buf.extend_from_slice(&[0u8; 20]);
        buf[56 + 12] = 0x50; // TCP data offset 5
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.traffic_class(), 3);
        assert_eq!(p.flow_label(), 77);
        assert_eq!(p.hop_limit(), 9);
        assert_eq!(p.src_addr(), Ipv6Addr::from([1; 16]));
        let ul = p.upper_layer().unwrap();
        assert_eq!(ul.protocol, 6);
        assert_eq!(ul.offset, 56);
        assert_eq!(ul.frag.unwrap().ident, 0x01020304);
        // etherparse agrees on where the payload starts.
        let sliced = etherparse::SlicedPacket::from_ip(&buf).unwrap();
        let e = match sliced.net {
            Some(etherparse::NetSlice::Ipv6(s)) => s,
            _ => panic!("not ipv6"),
        };
        assert_eq!(e.payload().ip_number, IpNumber::TCP);
        assert_eq!(e.payload().payload.len(), buf.len() - ul.offset);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..160)) {
            if data.len() >= 40 {
                data[0] = 0x60 | (data[0] & 0x0f);
                let plen = (data.len() - 40) as u16;
                let pick = u16::from(data[5]) % (plen + 1);
                data[4..6].copy_from_slice(&pick.to_be_bytes());
                // Make extension headers likely.
                let ext = [0u8, 43, 44, 51, 60, 59, 17];
                data[6] = ext[usize::from(data[6]) % ext.len()];
            }
            if let Ok(p) = Packet::new_checked(&data[..]) {
                prop_assert!(p.packet_len() <= data.len());
                if let Ok(ul) = p.upper_layer() {
                    prop_assert!(ul.offset <= p.packet_len());
                }
                let _ = (p.src_addr(), p.dst_addr(), p.flow_label(), p.payload().len());
            }
            let mut p = Packet::new_unchecked(&mut data[..]);
            let _ = p.upper_layer();
            p.set_flow_label(1);
            p.set_dst_addr(Ipv6Addr::LOCALHOST);
            let _ = p.payload_mut().len();
        }
    }
}
