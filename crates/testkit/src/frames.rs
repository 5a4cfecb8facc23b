//! Frame helpers shared by the golden, hostile and fuzz tests: a textbook
//! RFC 1071 checksum, independent of Shunt's incremental one (the oracle;
//! etherparse is the other), small edits that etherparse's builder cannot
//! express, and [`Frame`], the one etherparse-based builder of test frames.

use std::net::IpAddr;

use etherparse::PacketBuilder;

use crate::addrs::{CLIENT_ROUTER_MAC, PORT0_MAC};

/// RFC 1071 one's complement sum of big-endian 16-bit words (odd byte padded
/// on the right) on top of `acc`, folded to 16 bits. Deliberately the
/// textbook form.
pub fn ones_sum(data: &[u8], mut acc: u64) -> u16 {
    for c in data.chunks(2) {
        acc += u64::from(c[0]) << 8 | u64::from(*c.get(1).unwrap_or(&0));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data`: the complemented sum.
pub fn csum(data: &[u8]) -> u16 {
    !ones_sum(data, 0)
}

/// Sets IPv4 Identification and Flags/Fragment Offset of the header at `l3`
/// and recomputes its checksum (etherparse defaults to DF=1).
pub fn set_v4(f: &mut [u8], l3: usize, id: u16, flags_off: u16) {
    f[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
    f[l3 + 6..l3 + 8].copy_from_slice(&flags_off.to_be_bytes());
    fix_ipv4_checksum(f, l3);
}

/// Recomputes the checksum of the IPv4 header at `l3` (its IHL honoured)
/// after a test edited the header.
pub fn fix_ipv4_checksum(f: &mut [u8], l3: usize) {
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    f[l3 + 10..l3 + 12].fill(0);
    let c = csum(&f[l3..l3 + ihl]);
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// Inserts an RFC 8200 §4.5 Fragment header (offset `off` in 8-byte
/// units, M flag `m`, Identification `id`) after the fixed IPv6 header at
/// `l3`, taking over its Next Header and growing its Payload Length.
pub fn add_frag_hdr(f: &mut Vec<u8>, l3: usize, off: u16, m: bool, id: u32) {
    let nh = f[l3 + 6];
    f[l3 + 6] = 44;
    let plen = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]) + 8;
    f[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
    let fo = (off << 3) | u16::from(m);
    let mut fh = vec![nh, 0];
    fh.extend_from_slice(&fo.to_be_bytes());
    fh.extend_from_slice(&id.to_be_bytes());
    f.splice(l3 + 40..l3 + 40, fh);
}

// ---------------------------------------------------------------------------
// The frame builder

/// TCP flag bits, for [`Tcp::flags`].
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;

/// A TCP header's numbers and flags (the ports are [`Frame`]'s). The
/// acknowledgment number is written only with [`ACK`] set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    pub seq: u32,
    pub window: u16,
    pub flags: u8,
    pub ack: u32,
}

/// What a [`Frame`] carries above IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Udp,
    Tcp(Tcp),
    /// ICMPv4 or ICMPv6 (by the frame's family): type, code and the rest of
    /// the header; the payload follows (a quote, echo data). Ports unused.
    Icmp {
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
}

impl L4 {
    /// A client's SYN (sequence numbers fixed per kind, so a packet before
    /// and after NAT differs only where NAT must touch it).
    pub const SYN: L4 = L4::Tcp(Tcp { seq: 1000, window: 64240, flags: SYN, ack: 0 });
    /// The server's SYN-ACK to [`L4::SYN`].
    pub const SYN_ACK: L4 = L4::Tcp(Tcp { seq: 5000, window: 65160, flags: SYN | ACK, ack: 1001 });
    /// The client's ACK completing that handshake (or carrying data).
    pub const ACK: L4 = L4::Tcp(Tcp { seq: 1001, window: 502, flags: ACK, ack: 5001 });
}

/// An Ethernet II / IPv4 or IPv6 / TCP, UDP or ICMP frame, built with
/// etherparse's `PacketBuilder` (which computes every checksum itself;
/// IPv4 with Identification 0 and DF set). Fields are what tests vary;
/// start from [`Frame::new`] and change the rest with struct update
/// syntax: `Frame { dport: 53, payload: b"q", ..Frame::new(CLIENT, VIP) }`.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    pub sport: u16,
    pub dport: u16,
    pub l4: L4,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// `src` → `dst` as a client sends it through its router to the
    /// harness's port 0: TTL 64, a UDP datagram from port 40000 to 80 with
    /// no payload.
    pub fn new(src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Self {
        Frame {
            smac: CLIENT_ROUTER_MAC,
            dmac: PORT0_MAC,
            src: src.into(),
            dst: dst.into(),
            ttl: 64,
            sport: 40000,
            dport: 80,
            l4: L4::Udp,
            payload: &[],
        }
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(self.smac, self.dmac);
        let ip = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), self.ttl),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), self.ttl),
            (s, d) => panic!("mixed address families: {s} -> {d}"),
        };
        let mut v = Vec::new();
        let written = match self.l4 {
            L4::Udp => ip.udp(self.sport, self.dport).write(&mut v, self.payload),
            L4::Icmp { ty, code, rest } if self.src.is_ipv4() => {
                ip.icmpv4_raw(ty, code, rest).write(&mut v, self.payload)
            }
            L4::Icmp { ty, code, rest } => ip.icmpv6_raw(ty, code, rest).write(&mut v, self.payload),
            L4::Tcp(t) => {
                let mut b = ip.tcp(self.sport, self.dport, t.seq, t.window);
                if t.flags & FIN != 0 {
                    b = b.fin();
                }
                if t.flags & SYN != 0 {
                    b = b.syn();
                }
                if t.flags & RST != 0 {
                    b = b.rst();
                }
                if t.flags & PSH != 0 {
                    b = b.psh();
                }
                if t.flags & ACK != 0 {
                    b = b.ack(t.ack);
                }
                if t.flags & URG != 0 {
                    b = b.urg(0);
                }
                b.write(&mut v, self.payload)
            }
        };
        written.expect("etherparse writes the frame");
        v
    }

    /// The frame's IP packet, without the Ethernet header (an ICMP error's
    /// quote).
    pub fn ip_packet(&self) -> Vec<u8> {
        self.build().split_off(14)
    }
}

/// The bytes an etherparse builder writes: `w(|v| builder.write(v, payload).unwrap())`.
pub fn w<F: FnOnce(&mut Vec<u8>)>(f: F) -> Vec<u8> {
    let mut v = Vec::new();
    f(&mut v);
    v
}

/// Hex dump for assertion messages.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const B4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

    /// Every field of a [`Frame`] lands where etherparse reads it back.
    #[test]
    fn frame_fields_read_back() {
        let f = Frame {
            smac: [2, 0, 0, 0, 0, 1],
            dmac: [2, 0, 0, 0, 0, 2],
            ttl: 9,
            sport: 1234,
            dport: 53,
            payload: b"abc",
            ..Frame::new(A4, B4)
        };
        let b = f.build();
        assert_eq!((&b[..6], &b[6..12]), (&f.dmac[..], &f.smac[..]));
        let p = SlicedPacket::from_ethernet(&b).unwrap();
        let Some(NetSlice::Ipv4(ip)) = p.net else { panic!("IPv4") };
        assert_eq!((ip.header().source_addr(), ip.header().destination_addr()), (A4, B4));
        assert_eq!(ip.header().ttl(), 9);
        let Some(TransportSlice::Udp(u)) = p.transport else { panic!("UDP") };
        assert_eq!((u.source_port(), u.destination_port(), u.payload()), (1234, 53, &b"abc"[..]));
        assert_eq!(f.ip_packet(), b[14..]);
    }

    /// Each flag bit sets its TCP flag and no other; ACK writes the
    /// acknowledgment number.
    #[test]
    fn tcp_flags_each_set_their_bit() {
        let src = Ipv6Addr::LOCALHOST;
        for bit in [FIN, SYN, RST, PSH, ACK, URG] {
            let t = Tcp { seq: 7, window: 9, flags: bit, ack: 42 };
            let b = Frame { l4: L4::Tcp(t), ..Frame::new(src, src) }.build();
            assert_eq!(b[14 + 40 + 13], bit, "flag byte of {bit:#04x}");
            let ack = u32::from_be_bytes(b[14 + 48..14 + 52].try_into().unwrap());
            assert_eq!(ack, if bit == ACK { 42 } else { 0 }, "{bit:#04x}");
        }
        let b = Frame { l4: L4::SYN_ACK, ..Frame::new(A4, B4) }.build();
        let Some(TransportSlice::Tcp(t)) = SlicedPacket::from_ethernet(&b).unwrap().transport else {
            panic!("TCP")
        };
        assert!(t.syn() && t.ack() && !t.fin());
        assert_eq!((t.sequence_number(), t.acknowledgment_number(), t.window_size()), (5000, 1001, 65160));
    }

    /// ICMP follows the frame's family, and its checksum is right.
    #[test]
    fn icmp_follows_the_family() {
        let l4 = L4::Icmp { ty: 3, code: 4, rest: [0, 0, 5, 0] };
        let b = Frame { l4, payload: &[0x45; 28], ..Frame::new(A4, B4) }.build();
        assert_eq!((b[23], &b[34..42]), (1, &[3, 4, b[36], b[37], 0, 0, 5, 0][..]));
        assert_eq!(csum(&b[34..]), 0, "ICMPv4 checksum");
        let v6 = Ipv6Addr::LOCALHOST;
        let b = Frame { l4: L4::Icmp { ty: 2, code: 0, rest: [0, 0, 5, 0] }, ..Frame::new(v6, v6) }.build();
        assert_eq!((b[20], b[54]), (58, 2), "ICMPv6 Packet Too Big");
    }

    #[test]
    fn fix_ipv4_checksum_covers_options() {
        let mut b = Frame::new(A4, B4).build();
        b.splice(34..34, [1, 1, 1, 0]);
        b[14] = 0x46;
        b[24] ^= 0xff;
        fix_ipv4_checksum(&mut b, 14);
        assert_eq!(csum(&b[14..38]), 0);
    }

    #[test]
    fn fragment_header_goes_after_the_fixed_header() {
        let v6 = Ipv6Addr::LOCALHOST;
        let mut b = Frame { payload: b"12345678", ..Frame::new(v6, v6) }.build();
        let before = b.clone();
        add_frag_hdr(&mut b, 14, 3, true, 0xdead_beef);
        assert_eq!(b[20], 44, "Next Header: Fragment");
        assert_eq!(&b[54..62], &[17, 0, 0, 0x19, 0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(u16::from_be_bytes([b[18], b[19]]), 16 + 8);
        assert_eq!(b[62..], before[54..], "the UDP datagram follows unchanged");
    }
}
