//! Ethernet II frame view with at most one VLAN tag (802.1Q or 802.1ad outer).

use super::WireError;

/// IPv4 ethertype.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// ARP ethertype.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IPv6 ethertype.
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
/// 802.1Q customer VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad service VLAN tag (QinQ outer); accepted as a single tag.
pub const ETHERTYPE_QINQ: u16 = 0x88A8;

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of a header with one VLAN tag.
pub const VLAN_HEADER_LEN: usize = 18;

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const TCI: Range<usize> = 14..16;
}

/// True for the ethertypes we treat as one VLAN tag.
#[inline]
const fn is_tag(ethertype: u16) -> bool {
    ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ
}

header_view! {
    /// A read/write view of an Ethernet II frame.
    Frame,
    check: check_len
}

fields! {
    Frame {
        /// Destination MAC address.
        pub dst_addr, set_dst_addr: [u8; 6] = field::DST;
        /// Source MAC address.
        pub src_addr, set_src_addr: [u8; 6] = field::SRC;
        /// The ethertype at offset 12: a tag type for tagged frames.
        pub outer_ethertype: u16 = field::ETHERTYPE;
    }
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks that the header, including a VLAN tag if present, fits.
    pub fn check_len(&self) -> Result<(), WireError> {
        self.holds(HEADER_LEN)?;
        self.holds(self.payload_offset())
    }

    /// True when the frame carries a VLAN tag.
    #[inline]
    pub fn is_tagged(&self) -> bool {
        is_tag(self.outer_ethertype())
    }

    /// Offset of the L3 header: 14, or 18 with a VLAN tag.
    #[inline]
    pub fn payload_offset(&self) -> usize {
        if self.is_tagged() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The ethertype of the payload (after the tag, if any).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        self.get(self.payload_offset() - 2..self.payload_offset())
    }

    /// The whole tag control information (PCP, DEI, VID), if tagged.
    #[inline]
    pub fn vlan_tci(&self) -> Option<u16> {
        if self.is_tagged() {
            Some(self.get(field::TCI))
        } else {
            None
        }
    }

    /// The 12-bit VLAN id, if tagged.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        self.vlan_tci().map(|tci| tci & 0x0FFF)
    }

    /// The L3 payload (after the header and tag); empty if short.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.payload_offset()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the payload ethertype (after the tag, if any).
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        let at = self.payload_offset() - 2;
        self.set(at..at + 2, ethertype);
    }

    /// Sets the 12-bit VLAN id of a tagged frame, keeping PCP and DEI; no-op
    /// on untagged frames (adding a tag would move the payload).
    #[inline]
    pub fn set_vlan_id(&mut self, vid: u16) {
        if let Some(tci) = self.vlan_tci() {
            self.set(field::TCI, (tci & 0xF000) | (vid & 0x0FFF));
        }
    }

    /// Mutable L3 payload; empty if short.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let off = self.payload_offset();
        self.buffer.as_mut().get_mut(off..).unwrap_or(&mut [])
    }
}

/// A MAC address written `aa:bb:cc:dd:ee:ff`, as configs and `ip neigh` write it.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UNTAGGED: [u8; 16] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // src
        0x08, 0x00, // IPv4
        0x45, 0x00,
    ];

    const TAGGED: [u8; 20] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // src
        0x81, 0x00, // 802.1Q
        0xa0, 0x64, // PCP 5, VID 100
        0x86, 0xdd, // IPv6
        0x60, 0x00,
    ];

    #[test]
    fn untagged_fields() {
        let f = Frame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.src_addr(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.outer_ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.vlan_id(), None);
        assert_eq!(f.payload_offset(), 14);
        assert_eq!(f.payload(), &[0x45, 0x00]);
    }

    #[test]
    fn tagged_fields() {
        let f = Frame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.ethertype(), ETHERTYPE_IPV6);
        assert_eq!(f.outer_ethertype(), ETHERTYPE_VLAN);
        assert_eq!(f.vlan_id(), Some(100));
        assert_eq!(f.vlan_tci(), Some(0xa064));
        assert_eq!(f.payload_offset(), 18);
        assert_eq!(f.payload(), &[0x60, 0x00]);
    }

    #[test]
    fn qinq_outer_is_one_tag() {
        let mut b = TAGGED;
        b[12..14].copy_from_slice(&ETHERTYPE_QINQ.to_be_bytes());
        let f = Frame::new_checked(&b[..]).unwrap();
        assert_eq!(f.vlan_id(), Some(100));
        assert_eq!(f.ethertype(), ETHERTYPE_IPV6);
    }

    #[test]
    fn truncated_prefixes() {
        for n in 0..HEADER_LEN {
            assert_eq!(Frame::new_checked(&UNTAGGED[..n]), Err(WireError::Truncated));
        }
        for n in 0..VLAN_HEADER_LEN {
            assert_eq!(Frame::new_checked(&TAGGED[..n]), Err(WireError::Truncated));
        }
        assert!(Frame::new_checked(&TAGGED[..18]).is_ok());
    }

    #[test]
    fn setters() {
        let mut b = TAGGED;
        let mut f = Frame::new_checked(&mut b[..]).unwrap();
        f.set_dst_addr([1, 2, 3, 4, 5, 6]);
        f.set_src_addr([7, 8, 9, 10, 11, 12]);
        f.set_ethertype(ETHERTYPE_ARP);
        f.set_vlan_id(0xFFF);
        f.payload_mut()[0] = 0xAA;
        assert_eq!(f.dst_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src_addr(), [7, 8, 9, 10, 11, 12]);
        assert_eq!(f.ethertype(), ETHERTYPE_ARP);
        assert_eq!(f.vlan_tci(), Some(0xafff));
        assert_eq!(b[18], 0xAA);
        assert_eq!(b[12..14], [0x81, 0x00]);
    }

    #[test]
    fn etherparse_oracle() {
        use etherparse::PacketBuilder;
        let builder = PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
            .single_vlan(etherparse::VlanId::try_new(42).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2000);
        let buf = etherparse_packet!(builder, b"hi");
        let f = Frame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.src_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.dst_addr(), [7, 8, 9, 10, 11, 12]);
        assert_eq!(f.vlan_id(), Some(42));
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        assert_eq!(f.payload_offset(), 18);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut data = data;
            if let Ok(f) = Frame::new_checked(&data[..]) {
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.vlan_id(), f.payload().len());
                prop_assert!(f.payload_offset() <= data.len());
            }
            // Accessors and setters stay in bounds even unchecked.
            let mut f = Frame::new_unchecked(&mut data[..]);
            let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.vlan_tci(), f.payload().len());
            f.set_ethertype(1);
            f.set_vlan_id(2);
            f.set_dst_addr([0; 6]);
            let _ = f.payload_mut().len();
        }
    }
}
