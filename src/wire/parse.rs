//! One-pass classification summary of a frame: Ethernet (+VLAN) -> IPv4/IPv6
//! -> TCP/UDP/ICMP, returning offsets and a flow key.
//!
//! Frames that are not IP (ARP, LLDP, ...) are `Ok(None)`: not ours, hand them
//! on. Malformed IP is `Err`. Structure is checked here; checksums are not.

use core::net::{IpAddr, Ipv6Addr};

use super::addr::mapped;
use super::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use super::{icmp, icmpv6, ip_protocol, ipv4, ipv6, tcp, udp, WireError};

/// IP version of a parsed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Where a packet sits in a fragment series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FragKind {
    /// Not a fragment.
    #[default]
    Whole,
    /// Offset 0: carries the L4 header, so ports are valid.
    First,
    /// Offset > 0: no L4 header; ports are 0 and the bytes at `l4_offset` are data.
    Later,
}

/// A flow key in one fixed-size form for both families: the connection
/// tables' key too.
///
/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291
/// 2.5.5.2) so one hash table serves both. Ports are TCP/UDP ports; for ICMP
/// and ICMPv6 echo both hold the echo identifier (so the reply's reversed key
/// matches the request's); otherwise 0. Padding is private and always zero;
/// equality and hashing read the five fields, not the padding.
#[repr(C)]
#[derive(Debug, Clone, Copy, Eq, Default)]
pub struct FlowKey {
    /// Source address, 16 bytes.
    pub src: [u8; 16],
    /// Destination address, 16 bytes.
    pub dst: [u8; 16],
    /// Source port or echo identifier.
    pub sport: u16,
    /// Destination port or echo identifier.
    pub dport: u16,
    /// IP protocol of the upper layer.
    pub proto: u8,
    _pad: [u8; 3],
}

/// Field by field, but as three wide compares: the connection table's key
/// compare runs for every packet. The ports, protocol and (zero) padding
/// are the key's last eight bytes in memory order, which the compiler
/// reads as one load; without the padding it assembles them field by
/// field (three instructions more a packet, callgrind).
impl PartialEq for FlowKey {
    #[inline(always)]
    fn eq(&self, o: &FlowKey) -> bool {
        let wide = |k: &FlowKey| {
            let [p0, p1, p2] = k._pad.map(u64::from);
            let tail = u64::from(k.sport)
                | u64::from(k.dport) << 16
                | u64::from(k.proto) << 32
                | p0 << 40
                | p1 << 48
                | p2 << 56;
            (u128::from_ne_bytes(k.src), u128::from_ne_bytes(k.dst), tail)
        };
        let (a, b) = (wide(self), wide(o));
        ((a.0 ^ b.0) | (a.1 ^ b.1) | u128::from(a.2 ^ b.2)) == 0
    }
}

impl core::hash::Hash for FlowKey {
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        (self.src, self.dst, self.sport, self.dport, self.proto).hash(h);
    }
}

#[inline]
fn unmap(a: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

impl FlowKey {
    pub const fn new(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, proto: u8) -> Self {
        Self { src, dst, sport, dport, proto, _pad: [0; 3] }
    }

    /// The key of the reply direction.
    #[inline]
    pub const fn reversed(&self) -> Self {
        Self::new(self.dst, self.src, self.dport, self.sport, self.proto)
    }

    /// Source address, IPv4-mapped addresses shown as IPv4.
    #[inline]
    pub fn src_addr(&self) -> IpAddr {
        unmap(self.src)
    }

    /// Destination address, IPv4-mapped addresses shown as IPv4.
    #[inline]
    pub fn dst_addr(&self) -> IpAddr {
        unmap(self.dst)
    }
}

/// Offsets and flow key of one frame, all offsets from the frame start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedPacket {
    /// VLAN id, if the frame was tagged.
    pub vlan_id: Option<u16>,
    /// IPv4 or IPv6.
    pub version: IpVersion,
    /// Start of the IP header (14 or 18).
    pub l3_offset: usize,
    /// Start of the upper-layer header (after IPv4 options / IPv6 extension
    /// headers); for [`FragKind::Later`] the start of fragment data.
    pub l4_offset: usize,
    /// End of the IP packet (excludes Ethernet padding).
    pub l3_end: usize,
    /// Fragment position.
    pub frag: FragKind,
    /// The flow key.
    pub tuple: FlowKey,
    /// TCP flag byte, 0 when not TCP.
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type, 0 when not ICMP (0 is also Echo Reply: check `tuple.proto`).
    pub icmp_type: u8,
}

impl ParsedPacket {
    /// The upper-layer bytes `l4_offset..l3_end` of `frame`.
    #[inline]
    pub fn l4<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame.get(self.l4_offset..self.l3_end).unwrap_or(&[])
    }
}

/// What the L4 header contributes to the summary.
#[derive(Default)]
struct L4Info {
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    icmp_type: u8,
}

impl L4Info {
    /// An ICMP or ICMPv6 message: its type, and for echo the identifier as
    /// both "ports", so the reply's reversed key matches the request's.
    #[inline]
    fn icmp(icmp_type: u8, echo_ident: Option<u16>) -> L4Info {
        let ident = echo_ident.unwrap_or(0);
        L4Info { src_port: ident, dst_port: ident, tcp_flags: 0, icmp_type }
    }
}

/// The TCP or UDP view of `seg`: fully checked when `whole`, else (a first
/// fragment) only the `fixed` header length is required.
#[inline]
fn l4_view<'a, V>(
    seg: &'a [u8],
    whole: bool,
    fixed: usize,
    checked: impl FnOnce(&'a [u8]) -> Result<V, WireError>,
    unchecked: impl FnOnce(&'a [u8]) -> V,
) -> Result<V, WireError> {
    if whole {
        checked(seg)
    } else if seg.len() >= fixed {
        Ok(unchecked(seg))
    } else {
        Err(WireError::Truncated)
    }
}

/// Reads ports/flags/type from `seg`. `whole` (not a fragment) validates the
/// full header; a first fragment only needs the fixed header, since e.g. the
/// UDP length covers the reassembled datagram.
#[inline]
fn l4_info(proto: u8, seg: &[u8], whole: bool) -> Result<L4Info, WireError> {
    Ok(match proto {
        ip_protocol::TCP => {
            let p = l4_view(
                seg,
                whole,
                tcp::MIN_HEADER_LEN,
                tcp::Packet::new_checked,
                tcp::Packet::new_unchecked,
            )?;
            L4Info { src_port: p.src_port(), dst_port: p.dst_port(), tcp_flags: p.flags(), icmp_type: 0 }
        }
        ip_protocol::UDP => {
            let p =
                l4_view(seg, whole, udp::HEADER_LEN, udp::Packet::new_checked, udp::Packet::new_unchecked)?;
            L4Info { src_port: p.src_port(), dst_port: p.dst_port(), ..L4Info::default() }
        }
        ip_protocol::ICMP => {
            let p = icmp::Packet::new_checked(seg)?;
            L4Info::icmp(p.msg_type(), p.is_echo().then(|| p.echo_ident()))
        }
        ip_protocol::ICMPV6 => {
            let p = icmpv6::Packet::new_checked(seg)?;
            L4Info::icmp(p.msg_type(), p.is_echo().then(|| p.echo_ident()))
        }
        _ => L4Info::default(),
    })
}

/// Parses `frame` from the Ethernet header up to the L4 header.
///
/// `Ok(None)`: not IPv4/IPv6. `Err`: IP or L4 header malformed or truncated.
pub fn parse(frame: &[u8]) -> Result<Option<ParsedPacket>, WireError> {
    let eth = ethernet::Frame::new_checked(frame)?;
    let l3 = eth.payload_offset();
    let vlan_id = eth.vlan_id();
    let ip = eth.payload();
    match eth.ethertype() {
        ETHERTYPE_IPV4 => parse_v4(ip, l3, vlan_id).map(Some),
        ETHERTYPE_IPV6 => parse_v6(ip, l3, vlan_id).map(Some),
        _ => Ok(None),
    }
}

#[inline]
fn parse_v4(ip: &[u8], l3: usize, vlan_id: Option<u16>) -> Result<ParsedPacket, WireError> {
    let p = ipv4::Packet::new_checked(ip)?;
    let proto = p.protocol();
    let frag = if !p.is_fragment() {
        FragKind::Whole
    } else if p.frag_offset() == 0 {
        FragKind::First
    } else {
        FragKind::Later
    };
    let info = match frag {
        FragKind::Later => L4Info::default(),
        _ => l4_info(proto, p.payload(), frag == FragKind::Whole)?,
    };
    Ok(ParsedPacket {
        vlan_id,
        version: IpVersion::V4,
        l3_offset: l3,
        l4_offset: l3 + p.header_len(),
        l3_end: l3 + usize::from(p.total_len()),
        frag,
        tuple: FlowKey::new(
            mapped(p.src_addr().octets()),
            mapped(p.dst_addr().octets()),
            info.src_port,
            info.dst_port,
            proto,
        ),
        tcp_flags: info.tcp_flags,
        icmp_type: info.icmp_type,
    })
}

#[inline]
fn parse_v6(ip: &[u8], l3: usize, vlan_id: Option<u16>) -> Result<ParsedPacket, WireError> {
    let p = ipv6::Packet::new_checked(ip)?;
    let ul = p.upper_layer()?;
    let end = p.packet_len();
    let frag = match ul.frag {
        None => FragKind::Whole,
        Some(f) if f.is_first() => FragKind::First,
        Some(_) => FragKind::Later,
    };
    let info = match frag {
        FragKind::Later => L4Info::default(),
        _ => {
            let seg = ip.get(ul.offset..end).unwrap_or(&[]);
            l4_info(ul.protocol, seg, frag == FragKind::Whole)?
        }
    };
    Ok(ParsedPacket {
        vlan_id,
        version: IpVersion::V6,
        l3_offset: l3,
        l4_offset: l3 + ul.offset,
        l3_end: l3 + end,
        frag,
        tuple: FlowKey::new(
            p.src_addr().octets(),
            p.dst_addr().octets(),
            info.src_port,
            info.dst_port,
            ul.protocol,
        ),
        tcp_flags: info.tcp_flags,
        icmp_type: info.icmp_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    const M1: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const M2: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn v4_tcp() -> Vec<u8> {
        etherparse_packet!(
            PacketBuilder::ethernet2(M1, M2)
                .ipv4([10, 0, 0, 1], [198, 51, 100, 10], 64)
                .tcp(40000, 80, 1, 65535)
                .syn(),
            &[]
        )
    }

    #[test]
    fn ipv4_tcp_syn() {
        let mut f = v4_tcp();
        f.extend_from_slice(&[0; 6]); // padding to 60 bytes
        let p = parse(&f).unwrap().unwrap();
        assert_eq!(p.version, IpVersion::V4);
        assert_eq!(p.vlan_id, None);
        assert_eq!((p.l3_offset, p.l4_offset, p.l3_end), (14, 34, 54));
        assert_eq!(p.frag, FragKind::Whole);
        assert_eq!(p.tuple.proto, 6);
        assert_eq!(p.tuple.sport, 40000);
        assert_eq!(p.tuple.dport, 80);
        assert_eq!(p.tuple.src_addr(), IpAddr::from([10, 0, 0, 1]));
        assert_eq!(p.tuple.dst_addr(), IpAddr::from([198, 51, 100, 10]));
        assert_eq!(p.tcp_flags, tcp::FLAG_SYN);
        assert_eq!(p.l4(&f).len(), 20);
        let r = p.tuple.reversed();
        assert_eq!((r.sport, r.dport), (80, 40000));
        assert_eq!(r.reversed(), p.tuple);
    }

    #[test]
    fn vlan_ipv6_udp_with_ext_headers() {
        let mut v = etherparse_packet!(
            PacketBuilder::ethernet2(M1, M2)
                .single_vlan(etherparse::VlanId::try_new(7).unwrap())
                .ipv6([1; 16], [2; 16], 64)
                .udp(5000, 53),
            b"q"
        );
        // Insert a Hop-by-Hop header (8 bytes) after the fixed header.
        let ip = 18;
        v[ip + 6] = 0;
        let plen = u16::from_be_bytes([v[ip + 4], v[ip + 5]]) + 8;
        v[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
        let hbh = [17u8, 0, 1, 4, 0, 0, 0, 0];
        v.splice(ip + 40..ip + 40, hbh);
        let p = parse(&v).unwrap().unwrap();
        assert_eq!(p.vlan_id, Some(7));
        assert_eq!(p.version, IpVersion::V6);
        assert_eq!(p.l3_offset, 18);
        assert_eq!(p.l4_offset, 18 + 48);
        assert_eq!(p.l3_end, v.len());
        assert_eq!(p.tuple.proto, 17);
        assert_eq!((p.tuple.sport, p.tuple.dport), (5000, 53));
        assert_eq!(p.tuple.src, [1; 16]);
    }

    #[test]
    fn icmp_echo_uses_ident_both_ways() {
        let v = etherparse_packet!(
            PacketBuilder::ethernet2(M1, M2)
                .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
                .icmpv4_echo_request(0x4242, 1),
            b"ping"
        );
        let p = parse(&v).unwrap().unwrap();
        assert_eq!(p.tuple.proto, 1);
        assert_eq!(p.icmp_type, icmp::TYPE_ECHO_REQUEST);
        assert_eq!((p.tuple.sport, p.tuple.dport), (0x4242, 0x4242));

        let v = etherparse_packet!(
            PacketBuilder::ethernet2(M1, M2).ipv6([1; 16], [2; 16], 64).icmpv6_echo_reply(0x99, 1),
            b"pong"
        );
        let p = parse(&v).unwrap().unwrap();
        assert_eq!(p.tuple.proto, 58);
        assert_eq!(p.icmp_type, icmpv6::TYPE_ECHO_REPLY);
        assert_eq!((p.tuple.sport, p.tuple.dport), (0x99, 0x99));
    }

    #[test]
    fn not_ip_is_none() {
        let mut arp = [0u8; 42];
        arp[12..14].copy_from_slice(&ethernet::ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(parse(&arp), Ok(None));
        assert_eq!(parse(&arp[..10]), Err(WireError::Truncated));
    }

    #[test]
    fn ipv4_fragments() {
        let mut f = v4_tcp();
        // First fragment: MF set, offset 0. The TCP header is still read.
        f[20] = 0x20;
        f[21] = 0;
        let p = parse(&f).unwrap().unwrap();
        assert_eq!(p.frag, FragKind::First);
        assert_eq!(p.tuple.dport, 80);
        // Later fragment: offset 8 bytes; no ports.
        f[20] = 0x00;
        f[21] = 0x01;
        let p = parse(&f).unwrap().unwrap();
        assert_eq!(p.frag, FragKind::Later);
        assert_eq!((p.tuple.sport, p.tuple.dport), (0, 0));
        assert_eq!(p.l4_offset, 34);
    }

    #[test]
    fn first_udp_fragment_length_exceeds_fragment() {
        let mut v = etherparse_packet!(
            PacketBuilder::ethernet2(M1, M2).ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64).udp(1, 2),
            &[0; 16]
        );
        // UDP length says 3000: as a whole packet that is truncated...
        v[38..40].copy_from_slice(&3000u16.to_be_bytes());
        assert_eq!(parse(&v), Err(WireError::Truncated));
        // ...as a first fragment it is expected.
        v[20] = 0x20;
        let p = parse(&v).unwrap().unwrap();
        assert_eq!(p.frag, FragKind::First);
        assert_eq!((p.tuple.sport, p.tuple.dport), (1, 2));
    }

    #[test]
    fn every_truncation_fails_without_panic() {
        let f = v4_tcp();
        for n in 0..f.len() {
            assert!(parse(&f[..n]).is_err(), "len {n}");
        }
        let v = etherparse_packet!(
            PacketBuilder::ethernet2(M1, M2).ipv6([1; 16], [2; 16], 64).tcp(1, 2, 3, 4),
            b"x"
        );
        for n in 0..v.len() {
            assert!(parse(&v[..n]).is_err(), "len {n}");
        }
        assert!(parse(&v).unwrap().is_some());
    }

    fn build(v6: bool, vlan: Option<u16>, l4: u8, sp: u16, dp: u16, data: &[u8]) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(M1, M2);
        let mut v = Vec::new();
        macro_rules! finish {
            ($ip:expr) => {{
                let ip = $ip;
                match l4 {
                    0 => ip.tcp(sp, dp, 1, 2).write(&mut v, data).unwrap(),
                    1 => ip.udp(sp, dp).write(&mut v, data).unwrap(),
                    _ => ip.icmpv4_echo_request(sp, dp).write(&mut v, data).unwrap(),
                }
            }};
        }
        match (v6, vlan) {
            (false, None) => finish!(eth.ipv4([9, 8, 7, 6], [5, 4, 3, 2], 1)),
            (true, None) => finish!(eth.ipv6([7; 16], [8; 16], 1)),
            (false, Some(id)) => finish!(eth.single_vlan(etherparse::VlanId::try_new(id).unwrap()).ipv4(
                [9, 8, 7, 6],
                [5, 4, 3, 2],
                1
            )),
            (true, Some(id)) => {
                finish!(eth.single_vlan(etherparse::VlanId::try_new(id).unwrap()).ipv6([7; 16], [8; 16], 1))
            }
        }
        v
    }

    proptest! {
        #[test]
        fn agrees_with_etherparse(
            v6 in any::<bool>(), vlan in proptest::option::of(0u16..4096), l4 in 0u8..3,
            sp in any::<u16>(), dp in any::<u16>(),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let f = build(v6, vlan, l4, sp, dp, &data);
            let p = parse(&f).unwrap().unwrap();
            let e = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
            prop_assert_eq!(p.vlan_id, vlan);
            let (ep_ip_payload_len, ep_proto) = match &e.net {
                Some(etherparse::NetSlice::Ipv4(s)) => (s.payload().payload.len(), s.payload().ip_number.0),
                Some(etherparse::NetSlice::Ipv6(s)) => (s.payload().payload.len(), s.payload().ip_number.0),
                _ => unreachable!(),
            };
            prop_assert_eq!(p.l3_end - p.l4_offset, ep_ip_payload_len);
            prop_assert_eq!(p.tuple.proto, ep_proto);
            match &e.transport {
                Some(etherparse::TransportSlice::Tcp(t)) => {
                    prop_assert_eq!((p.tuple.sport, p.tuple.dport), (t.source_port(), t.destination_port()));
                }
                Some(etherparse::TransportSlice::Udp(u)) => {
                    prop_assert_eq!((p.tuple.sport, p.tuple.dport), (u.source_port(), u.destination_port()));
                }
                Some(etherparse::TransportSlice::Icmpv4(_)) | Some(etherparse::TransportSlice::Icmpv6(_)) => {
                    prop_assert_eq!((p.tuple.sport, p.tuple.dport), (sp, sp));
                }
                None => unreachable!(),
            }
        }

        #[test]
        fn arbitrary_frames_never_panic(
            mut data in proptest::collection::vec(any::<u8>(), 0..200),
            et in 0u8..4, proto in any::<u8>(),
        ) {
            // Steer toward deep parsing: plausible ethertype, version and protocol.
            if data.len() >= 34 {
                let ety = [0x0800u16, 0x86dd, 0x8100, 0x0806][usize::from(et)];
                data[12..14].copy_from_slice(&ety.to_be_bytes());
                if ety == 0x8100 {
                    data[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
                }
                let l3 = if ety == 0x8100 { 18 } else { 14 };
                data[l3] = if ety == 0x86dd { 0x60 } else { 0x45 };
                let avail = (data.len() - l3) as u16;
                if ety == 0x86dd {
                    if data.len() >= l3 + 40 {
                        data[l3 + 4..l3 + 6].copy_from_slice(&(avail - 40).to_be_bytes());
                        data[l3 + 6] = [0, 6, 17, 58, 44, 60][usize::from(proto) % 6];
                    }
                } else {
                    data[l3 + 2..l3 + 4].copy_from_slice(&avail.to_be_bytes());
                    data[l3 + 6] &= 0x20;
                    data[l3 + 9] = [1, 6, 17, proto][usize::from(proto) % 4];
                }
            }
            if let Ok(Some(p)) = parse(&data) {
                prop_assert!(p.l3_offset <= p.l4_offset);
                prop_assert!(p.l4_offset <= p.l3_end);
                prop_assert!(p.l3_end <= data.len());
                let _ = p.l4(&data);
            }
        }
    }
}

/// The common case, parsed quickly: untagged IPv4 without options or IPv6
/// without extension headers, unfragmented, carrying TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Simple {
    pub v6: bool,
    /// Always 14 (untagged Ethernet).
    pub l3_offset: usize,
    pub l4_offset: usize,
    pub tuple: FlowKey,
    pub tcp_flags: u8,
}

/// [`parse`]'s answer for the common case, or None when the frame is not
/// that case (then call [`parse`]). Accepts exactly what `parse` accepts as
/// a whole TCP/UDP packet of this shape, with the same tuple and offsets.
#[inline]
pub fn parse_simple(frame: &[u8]) -> Option<Simple> {
    simple_in(frame, 0, None)
}

/// [`parse_simple`] for a frame whose ethertype field the caller has read
/// as `family`, which is not read again: None unless it is IPv4 or IPv6
/// (and the frame the common shape). Called once per family, each copy
/// holds that family's parser alone, and what follows it is compiled for
/// that family: an IPv4 key's constant upper address words stay
/// constants through the hash and the key store (callgrind: about ten
/// instructions a packet of register spills saved).
#[inline(always)]
pub fn parse_simple_as(frame: &[u8], family: u16) -> Option<Simple> {
    simple_in(frame, 0, Some(family))
}

/// [`parse_simple`] for a frame of several buffers (multi-buffer AF_XDP):
/// `head` is the first buffer and `more` the bytes in the buffers after it.
/// The IP, TCP and UDP lengths count those bytes; every header must lie in
/// `head`, and the IP packet must end exactly where the last buffer ends
/// (no padding past a first buffer). None when the frame is not that case:
/// a chain is never parsed any other way, so a header that straddles two
/// buffers is refused, never misread.
#[inline]
pub fn parse_simple_chain(head: &[u8], more: u32) -> Option<Simple> {
    let s = simple_in(head, more as usize, None)?;
    let ip = head.len() - 14 + more as usize;
    let ip_len = if s.v6 {
        40 + usize::from(u16::from_be_bytes([*head.get(18)?, *head.get(19)?]))
    } else {
        usize::from(u16::from_be_bytes([*head.get(16)?, *head.get(17)?]))
    };
    (ip_len == ip).then_some(s)
}

/// `frame` is the first buffer; `more` bytes follow in others (0: none);
/// `family`, when given, is the frame's ethertype, already read.
#[inline(always)]
fn simple_in(frame: &[u8], more: usize, family: Option<u16>) -> Option<Simple> {
    let ethertype = match family {
        Some(e) => e,
        None => u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]),
    };
    let ip = frame.get(14..)?;
    // Bytes of the IP packet the frame carries, in all its buffers.
    let carried = ip.len() + more;
    let (v6, l4, end, proto, src, dst) = match ethertype {
        ETHERTYPE_IPV4 => {
            let h: &[u8; 20] = ip.get(..20)?.try_into().ok()?;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            // IHL 5, whole (no MF, offset 0), total length within the frame.
            if h[0] != 0x45 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 || total < 20 || total > carried
            {
                return None;
            }
            let (s, d) = (mapped([h[12], h[13], h[14], h[15]]), mapped([h[16], h[17], h[18], h[19]]));
            (false, 20, total, h[9], s, d)
        }
        ETHERTYPE_IPV6 => {
            let h: &[u8; 40] = ip.get(..40)?.try_into().ok()?;
            let end = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
            if h[0] >> 4 != 6 || end > carried {
                return None;
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&h[8..24]);
            d.copy_from_slice(&h[24..40]);
            (true, 40, end, h[6], s, d)
        }
        _ => return None,
    };
    // The L4 segment's length counts every buffer; its header is in this one.
    let seg_len = end.checked_sub(l4)?;
    let seg = ip.get(l4..end.min(ip.len()))?;
    let ports: &[u8; 8] = seg.get(..8)?.try_into().ok()?;
    let (sport, dport) = (u16::from_be_bytes([ports[0], ports[1]]), u16::from_be_bytes([ports[2], ports[3]]));
    let flags = match proto {
        ip_protocol::TCP => {
            let t: &[u8; 20] = seg.get(..20)?.try_into().ok()?;
            let hl = usize::from(t[12] >> 4) * 4;
            if hl < 20 || hl > seg.len() {
                return None;
            }
            t[13]
        }
        ip_protocol::UDP => {
            let len = usize::from(u16::from_be_bytes([ports[4], ports[5]]));
            if len < 8 || len > seg_len {
                return None;
            }
            0
        }
        _ => return None,
    };
    Some(Simple {
        v6,
        l3_offset: 14,
        l4_offset: 14 + l4,
        tuple: FlowKey::new(src, dst, sport, dport, proto),
        tcp_flags: flags,
    })
}

#[cfg(test)]
mod simple_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever `parse_simple` accepts, `parse` accepts identically.
        #[test]
        fn simple_agrees_with_parse(
            v6 in any::<bool>(),
            tcp in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            flip in any::<(usize, u8)>(),
        ) {
            let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]);
            let b = if v6 { b.ipv6([1; 16], [2; 16], 64) } else { b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64) };
            let f = if tcp {
                etherparse_packet!(b.tcp(1000, 80, 7, 1024).syn(), &payload)
            } else {
                etherparse_packet!(b.udp(1000, 53), &payload)
            };
            // Also a corrupted copy: one byte changed anywhere.
            let mut g = f.clone();
            let i = flip.0 % g.len();
            g[i] ^= flip.1;
            for frame in [&f, &g] {
                // The per-family entry agrees with the general one.
                let family = [ETHERTYPE_IPV4, ETHERTYPE_IPV6].into_iter().find(|&e| frame[12..14] == e.to_be_bytes());
                prop_assert_eq!(family.and_then(|e| parse_simple_as(frame, e)), parse_simple(frame));
                if let Some(s) = parse_simple(frame) {
                    let p = parse(frame).expect("parse accepts it").expect("IP");
                    prop_assert_eq!(p.tuple, s.tuple);
                    prop_assert_eq!(p.l3_offset, s.l3_offset);
                    prop_assert_eq!(p.l4_offset, s.l4_offset);
                    prop_assert_eq!(p.tcp_flags, s.tcp_flags);
                    prop_assert_eq!(p.version == IpVersion::V6, s.v6);
                    prop_assert_eq!(p.frag, FragKind::Whole);
                }
            }
            prop_assert!(parse_simple(&f).is_some());
        }

        /// A frame cut into a first buffer and the rest (a multi-buffer
        /// chain) parses as the whole frame does when its headers lie in
        /// the first buffer, and is refused, never misread, when the cut
        /// falls inside them. A corrupted chain that is accepted is one the
        /// whole-frame parser accepts identically.
        #[test]
        fn chain_agrees_with_whole_or_refuses(
            v6 in any::<bool>(),
            tcp in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 1..400),
            cut in any::<usize>(),
            flip in any::<(usize, u8)>(),
        ) {
            let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]);
            let b = if v6 { b.ipv6([1; 16], [2; 16], 64) } else { b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64) };
            let f = if tcp {
                etherparse_packet!(b.tcp(1000, 80, 7, 1024).ack(1), &payload)
            } else {
                etherparse_packet!(b.udp(1000, 53), &payload)
            };
            let headers = 14 + if v6 { 40 } else { 20 } + if tcp { 20 } else { 8 };
            let cut = 1 + cut % (f.len() - 1);
            let (head, rest) = f.split_at(cut);
            let got = parse_simple_chain(head, rest.len() as u32);
            if cut >= headers {
                prop_assert_eq!(got, parse_simple(&f));
                prop_assert!(got.is_some());
            } else {
                prop_assert_eq!(got, None);
            }
            // A wrong total length (a buffer missing or extra) is refused.
            prop_assert_eq!(parse_simple_chain(head, rest.len() as u32 + 1), None);
            let mut g = f.clone();
            let i = flip.0 % g.len();
            g[i] ^= flip.1;
            let (head, rest) = g.split_at(cut);
            if let Some(s) = parse_simple_chain(head, rest.len() as u32) {
                let p = parse(&g).expect("parse accepts it").expect("IP");
                prop_assert_eq!(p.tuple, s.tuple);
                prop_assert_eq!(p.l4_offset, s.l4_offset);
                prop_assert_eq!(p.tcp_flags, s.tcp_flags);
            }
        }
    }
}
