//! Golden tests for the egress MTU check of the NAT stage: a packet of a
//! tracked flow that is longer than its egress interface's MTU comes back
//! to its sender as ICMPv4 Fragmentation Needed (DF set) or ICMPv6 Packet
//! Too Big, with the egress MTU and the packet quoted as it arrived; IPv4
//! without DF is a counted drop. Expected frames are built with etherparse
//! and checksums re-checked with the textbook RFC 1071 sum.

use std::net::IpAddr;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use shunt::pipeline::{DropReason, Verdict};

use shunt_testkit::addrs::*;
use shunt_testkit::frames::{csum, hex, ones_sum, set_v4, w, Frame};
use shunt_testkit::{Fixture, Harness};

/// Client side (interface 0) and backend side (interface 1) MTUs.
const CLIENT_MTU: u16 = 1400;
const BACKEND_MTU: u16 = 1280;

/// Source of Shunt's own ICMPv4 errors (RFC 7600's dummy address).
const ROUTER: [u8; 4] = [192, 0, 0, 8];

/// Source of Shunt's own ICMPv6 errors: 192.0.0.8 in 64:ff9b:1::/96.
const ROUTER6: [u8; 16] = [0, 0x64, 0xff, 0x9b, 0, 1, 0, 0, 0, 0, 0, 0, 192, 0, 0, 8];

/// [`Fixture::small_dns_lb`]: the client link at 1400, the backend link at 1280.
fn lb() -> Harness {
    Harness::with_mtus(&Fixture::small_dns_lb().config(), &[CLIENT_MTU, BACKEND_MTU]).unwrap()
}

/// The client's UDP query (port 40000 to 53) of `len` bytes to `dst`.
fn query(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, len: usize) -> Vec<u8> {
    Frame { smac: CLIENT_MAC, dport: 53, payload: &vec![0x5a; len], ..Frame::new(src, dst) }.build()
}

fn query4(len: usize) -> Vec<u8> {
    query(CLIENT, VIP, len)
}

fn query6(len: usize) -> Vec<u8> {
    query(CLIENT6, VIP6, len)
}

/// Opens the flow with a small query; returns the SNAT port.
fn open(h: &mut Harness, v6: bool) -> u16 {
    let (verdict, out) = h.run_one(&if v6 { query6(5) } else { query4(5) });
    assert_eq!(verdict, Verdict::Forward(1));
    let p = SlicedPacket::from_ethernet(&out).unwrap();
    let src = match p.net.unwrap() {
        NetSlice::Ipv4(ip) => ip.header().source().to_vec(),
        NetSlice::Ipv6(ip) => ip.header().source().to_vec(),
    };
    assert_eq!(src, if v6 { SNAT6.to_vec() } else { SNAT.to_vec() });
    let Some(TransportSlice::Udp(u)) = p.transport else { panic!("not UDP") };
    u.source_port()
}

/// Independent checks of a generated IPv4 error: header and ICMP checksums
/// by RFC 1071, and the MTU field.
fn check_v4_error(f: &[u8], mtu: u16) {
    assert_eq!(csum(&f[14..34]), 0, "IPv4 header checksum");
    assert_eq!(csum(&f[34..]), 0, "ICMP checksum");
    assert_eq!((f[34], f[35]), (3, 4), "Destination Unreachable / Fragmentation Needed");
    assert_eq!(u16::from_be_bytes([f[40], f[41]]), mtu, "next-hop MTU");
}

/// Opens a flow in the family `v6` says, then sends a query whose IP packet
/// is `over` bytes longer than the backend link's MTU (IPv4, DF set: 20 + 8
/// + payload; IPv6: 40 + 8 + payload). The query, its verdict and output.
fn query_over_mtu(v6: bool, over: usize) -> (Vec<u8>, Verdict, Vec<u8>) {
    let mut h = lb();
    open(&mut h, v6);
    let mtu = usize::from(BACKEND_MTU);
    let q = if v6 { query6(mtu - 48 + over) } else { query4(mtu - 28 + over) };
    let (verdict, out) = h.run_one(&q);
    (q, verdict, out)
}

#[test]
fn oversize_ipv4_with_df_gets_fragmentation_needed_with_the_egress_mtu() {
    let (big, verdict, out) = query_over_mtu(false, 1);
    // RFC 1812 §4.3.2.3: quote as much as fits in 576 bytes, as it arrived.
    let quote = &big[14..14 + 576 - 28];
    let mut want = w(|v| {
        PacketBuilder::ethernet2(PORT0_MAC, CLIENT_MAC)
            .ipv4(ROUTER, CLIENT, 64)
            .icmpv4_raw(3, 4, [0, 0, (BACKEND_MTU >> 8) as u8, BACKEND_MTU as u8])
            .write(v, quote)
            .unwrap()
    });
    set_v4(&mut want, 14, 0, 0); // Shunt's errors carry ID 0 and no DF
    assert_eq!(verdict, Verdict::Forward(0), "back out the ingress port");
    assert!(out == want, "\n got  {}\n want {}", hex(&out), hex(&want));
    check_v4_error(&out, BACKEND_MTU);
    // The quote is the packet as the client sent it: its own addresses,
    // port and TTL, so its stack finds the socket.
    assert_eq!(&out[42 + 12..42 + 20], &[CLIENT, VIP].concat()[..]);
    assert_eq!(out[42 + 8], 64, "quoted TTL as received");
}

#[test]
fn packet_of_exactly_the_mtu_is_forwarded() {
    for v6 in [false, true] {
        let (_, verdict, out) = query_over_mtu(v6, 0);
        assert_eq!(verdict, Verdict::Forward(1), "IPv6: {v6}");
        assert_eq!(out.len(), 14 + usize::from(BACKEND_MTU), "IPv6: {v6}");
    }
}

#[test]
fn oversize_ipv4_without_df_is_a_counted_drop() {
    let mut h = lb();
    open(&mut h, false);
    let mut big = query4(1300);
    set_v4(&mut big, 14, 7, 0); // DF clear
    let (verdict, _) = h.run_one(&big);
    assert_eq!(verdict, Verdict::Drop(DropReason::FrameTooLarge));
}

#[test]
fn oversize_reply_gets_fragmentation_needed_back_to_the_backend() {
    let mut h = lb();
    let p = open(&mut h, false);
    // The backend answers with more than the client link carries.
    let payload = vec![0xa5; usize::from(CLIENT_MTU) - 28 + 100];
    let reply = w(|v| {
        PacketBuilder::ethernet2(BACKEND_MAC, PORT1_MAC)
            .ipv4(BACKEND, SNAT, 64)
            .udp(5353, p)
            .write(v, &payload)
            .unwrap()
    });
    let (verdict, out) = h.run_one(&reply);
    let mut want = w(|v| {
        PacketBuilder::ethernet2(PORT1_MAC, BACKEND_MAC)
            .ipv4(ROUTER, BACKEND, 64)
            .icmpv4_raw(3, 4, [0, 0, (CLIENT_MTU >> 8) as u8, CLIENT_MTU as u8])
            .write(v, &reply[14..14 + 548])
            .unwrap()
    });
    set_v4(&mut want, 14, 0, 0);
    // The error leaves by the port its packet came in on: the backend's.
    assert_eq!(verdict, Verdict::Forward(1));
    assert!(out == want, "\n got  {}\n want {}", hex(&out), hex(&want));
    check_v4_error(&out, CLIENT_MTU);
}

#[test]
fn oversize_ipv6_gets_packet_too_big_with_the_egress_mtu() {
    let (big, verdict, out) = query_over_mtu(true, 1);
    // RFC 4443 §2.4(c): as much of the packet as fits in 1280 bytes.
    let quote = &big[14..14 + 1280 - 48];
    let want = w(|v| {
        PacketBuilder::ethernet2(PORT0_MAC, CLIENT_MAC)
            .ipv6(ROUTER6, CLIENT6, 64)
            .icmpv6_raw(2, 0, u32::from(BACKEND_MTU).to_be_bytes())
            .write(v, quote)
            .unwrap()
    });
    assert_eq!(verdict, Verdict::Forward(0));
    assert!(out == want, "\n got  {}\n want {}", hex(&out), hex(&want));
    // ICMPv6 checksum over the pseudo-header, by RFC 1071.
    let icmp = &out[54..];
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ROUTER6);
    pseudo.extend_from_slice(&CLIENT6);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    assert_eq!(!ones_sum(icmp, u64::from(ones_sum(&pseudo, 0))), 0, "ICMPv6 checksum");
    assert_eq!(u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]), u32::from(BACKEND_MTU));
    assert_eq!(&icmp[8 + 8..8 + 24], &CLIENT6, "quoted source");
}
