//! Golden tests for refused new flows: once the SNAT pool has no free port,
//! a new TCP flow's SYN is answered with an RST from the VIP (RFC 9293
//! §3.10.7.1, as a closed port answers), a new UDP flow with ICMP
//! "administratively prohibited" (ICMPv4 3/13, ICMPv6 1/1) quoting the
//! datagram, both back out the port they came in on, so the client fails
//! at once. NAT64 sessions refused for want of a pool port are answered
//! from the server's address under the prefix: an RST for a SYN, ICMPv6
//! "address unreachable" (1/3, RFC 6146 §3.5.1.1) otherwise. Expected frames
//! are built with etherparse; checksums re-checked
//! with the textbook RFC 1071 sum.

use std::net::IpAddr;

use etherparse::PacketBuilder;
use shunt::pipeline::snat::FIRST_PORT;
use shunt::pipeline::Verdict;

use shunt_testkit::addrs::*;
use shunt_testkit::frames::{csum, hex, ones_sum, set_v4, w, Frame, Tcp, ACK, L4, RST};
use shunt_testkit::{Fixture, Harness};

/// Ports of a one-address pool in a one-worker harness.
const POOL_PORTS: u32 = 65536 - FIRST_PORT as u32;

/// [`Fixture::small_lb`] with the given protocol on port 80, and room in
/// conntrack for every port of the pool.
fn lb(protocol: &str) -> Harness {
    Fixture::small_lb()
        .set("service.*.protocol", protocol)
        .set("conntrack.entries_per_worker", 262_144)
        .harness()
}

/// A new flow's first packet from the client: a TCP SYN (seq 1000, an MSS
/// option) or a UDP datagram from client `n` of many (each its own address).
fn first_packet(tcp: bool, v6: bool, n: u32, src_port: u16) -> Vec<u8> {
    let e = PacketBuilder::ethernet2(CLIENT_MAC, PORT0_MAC);
    let b = n.to_be_bytes();
    let ip = if v6 {
        let mut src = CLIENT6;
        src[12..16].copy_from_slice(&b);
        src[11] = 1;
        e.ipv6(src, VIP6, 64)
    } else {
        e.ipv4([11, b[2], b[3], 1], VIP, 64)
    };
    w(|v| {
        if tcp {
            let t = ip.tcp(src_port, 80, 1000, 64240).syn();
            t.options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
                .unwrap()
                .write(v, &[])
                .unwrap()
        } else {
            ip.udp(src_port, 80).write(v, b"hello").unwrap()
        }
    })
}

/// Takes every port of the pool with distinct new flows; all are forwarded.
fn exhaust(h: &mut Harness, tcp: bool, v6: bool) {
    exhaust_with(h, |i| first_packet(tcp, v6, i, 1024 + (i % 60000) as u16));
}

/// Takes every port of a one-address pool with the first packets
/// `first(0)`, `first(1)`, … of distinct flows; all are forwarded.
fn exhaust_with(h: &mut Harness, first: impl Fn(u32) -> Vec<u8>) {
    let frames: Vec<Vec<u8>> = (0..POOL_PORTS).map(first).collect();
    let mut forwarded = 0;
    for chunk in frames.chunks(64) {
        h.run(chunk, |_, v, _| forwarded += usize::from(v == Verdict::Forward(1)));
    }
    assert_eq!(forwarded, POOL_PORTS as usize, "every port handed out once");
    assert!(h.ctx.snat.iter().any(|p| p.available() == 0), "one pool empty");
}

/// What a refused SYN (port 50000 → 80, sequence 1000) is answered with:
/// <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK> from `from`, back to the
/// client's MAC by the port it came in on. The SYN counts one.
fn rst(from: impl Into<IpAddr>, to: impl Into<IpAddr>) -> Vec<u8> {
    let l4 = L4::Tcp(Tcp { seq: 0, window: 0, flags: RST | ACK, ack: 1001 });
    Frame { smac: PORT0_MAC, dmac: CLIENT_MAC, sport: 80, dport: 50000, l4, ..Frame::new(from, to) }.build()
}

/// A UDP datagram "query" from the client (port 40000) to `dst`:`dport`.
fn query(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, dport: u16) -> Vec<u8> {
    Frame { smac: CLIENT_MAC, dport, payload: b"query", ..Frame::new(src, dst) }.build()
}

fn client_syn(v6: bool) -> Vec<u8> {
    let e = PacketBuilder::ethernet2(CLIENT_MAC, PORT0_MAC);
    let ip = if v6 { e.ipv6(CLIENT6, VIP6, 64) } else { e.ipv4(CLIENT, VIP, 64) };
    w(|v| {
        ip.tcp(50000, 80, 1000, 64240)
            .syn()
            .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
            .unwrap()
            .write(v, &[])
            .unwrap()
    })
}

#[test]
fn refused_tcp_syn_gets_an_rst_from_the_vip_v4() {
    let mut h = lb("tcp");
    let syn = client_syn(false);
    // Before exhaustion the same SYN opens a flow (the test can fail).
    let mut fresh = lb("tcp");
    assert_eq!(fresh.run_one(&syn).0, Verdict::Forward(1));
    exhaust(&mut h, true, false);
    let (verdict, out) = h.run_one(&syn);
    let mut want = rst(VIP, CLIENT);
    set_v4(&mut want, 14, 0, 0x4000);
    assert_eq!(verdict, Verdict::Forward(0), "back out the ingress port");
    assert!(out == want, "\n got  {}\n want {}", hex(&out), hex(&want));
    assert_eq!(csum(&out[14..34]), 0, "IPv4 header checksum");
    let pseudo = [&VIP[..], &CLIENT[..], &[0, 6, 0, 20]].concat();
    assert_eq!(!ones_sum(&out[34..], u64::from(ones_sum(&pseudo, 0))), 0, "TCP checksum");
    // A retransmission is answered again, still without a port.
    assert_eq!(h.run_one(&syn), (verdict, out));
}

#[test]
fn refused_tcp_syn_gets_an_rst_from_the_vip_v6() {
    let mut h = lb("tcp");
    exhaust(&mut h, true, true);
    let (verdict, out) = h.run_one(&client_syn(true));
    let want = rst(VIP6, CLIENT6);
    assert_eq!(verdict, Verdict::Forward(0));
    assert!(out == want, "\n got  {}\n want {}", hex(&out), hex(&want));
}

#[test]
fn refused_udp_flow_gets_admin_prohibited_from_the_vip() {
    for v6 in [false, true] {
        let mut h = lb("udp");
        exhaust(&mut h, false, v6);
        let q = if v6 { query(CLIENT6, VIP6, 80) } else { query(CLIENT, VIP, 80) };
        let (verdict, out) = h.run_one(&q);
        let quote = &q[14..];
        let mut want = w(|v| {
            let e = PacketBuilder::ethernet2(PORT0_MAC, CLIENT_MAC);
            if v6 {
                e.ipv6(VIP6, CLIENT6, 64).icmpv6_raw(1, 1, [0; 4]).write(v, quote).unwrap()
            } else {
                e.ipv4(VIP, CLIENT, 64).icmpv4_raw(3, 13, [0; 4]).write(v, quote).unwrap()
            }
        });
        if !v6 {
            set_v4(&mut want, 14, 0, 0); // Shunt's errors carry ID 0 and no DF
        }
        assert_eq!(verdict, Verdict::Forward(0), "v6 {v6}");
        assert!(out == want, "v6 {v6}\n got  {}\n want {}", hex(&out), hex(&want));
    }
}

// ------------------------------------------------------------ NAT64

const SERVER: [u8; 4] = [198, 51, 100, 80];

/// `pipelines/nat64.toml` with a pool of one IPv4 address.
fn nat64() -> Harness {
    Fixture::load("nat64")
        .set("nat64.pool", "10.0.4.7/32")
        .set("conntrack.entries_per_worker", 262_144)
        .harness()
}

/// An IPv6 client's first packet to the server through NAT64: a TCP SYN
/// (seq 1000) or a UDP datagram, from client `n` of many.
fn nat64_first(tcp: bool, n: u32, src_port: u16) -> Vec<u8> {
    let mut src = CLIENT6;
    src[12..16].copy_from_slice(&n.to_be_bytes());
    src[11] = 1;
    let ip = PacketBuilder::ethernet2(CLIENT_MAC, PORT0_MAC).ipv6(src, wkp(SERVER), 64);
    w(|v| {
        if tcp {
            ip.tcp(src_port, 80, 1000, 64240).syn().write(v, &[]).unwrap()
        } else {
            ip.udp(src_port, 53).write(v, b"query").unwrap()
        }
    })
}

/// Takes every port of the NAT64 pool with sessions of distinct clients.
fn exhaust_nat64(h: &mut Harness, tcp: bool) {
    exhaust_with(h, |i| nat64_first(tcp, i, 1024 + (i % 60000) as u16));
}

/// A NAT64 session refused for want of a pool port: the IPv6 client's SYN
/// is answered with an RST from the address it called (the server's
/// address under the prefix), a retransmission again.
#[test]
fn nat64_refused_tcp_syn_gets_an_rst_from_the_servers_ipv6_address() {
    let mut h = nat64();
    let syn = w(|v| {
        PacketBuilder::ethernet2(CLIENT_MAC, PORT0_MAC)
            .ipv6(CLIENT6, wkp(SERVER), 64)
            .tcp(50000, 80, 1000, 64240)
            .syn()
            .write(v, &[])
            .unwrap()
    });
    assert_eq!(nat64().run_one(&syn).0, Verdict::Forward(1), "before exhaustion: a session");
    exhaust_nat64(&mut h, true);
    let (verdict, out) = h.run_one(&syn);
    let want = rst(wkp(SERVER), CLIENT6);
    assert_eq!(verdict, Verdict::Forward(0), "back out the ingress port");
    assert!(out == want, "\n got  {}\n want {}", hex(&out), hex(&want));
    let pseudo = [&wkp(SERVER)[..], &CLIENT6[..], &[0, 0, 0, 20, 0, 0, 0, 6]].concat();
    assert_eq!(!ones_sum(&out[54..], u64::from(ones_sum(&pseudo, 0))), 0, "TCP checksum");
    assert_eq!(h.run_one(&syn), (verdict, out), "a retransmission is answered again");
}

/// A refused UDP session: ICMPv6 address unreachable (1/3, RFC 6146
/// §3.5.1.1) from the server's IPv6 address, quoting the datagram.
#[test]
fn nat64_refused_udp_gets_address_unreachable_from_the_servers_ipv6_address() {
    let mut h = nat64();
    exhaust_nat64(&mut h, false);
    let q = query(CLIENT6, wkp(SERVER), 53);
    let (verdict, out) = h.run_one(&q);
    let want = w(|v| {
        PacketBuilder::ethernet2(PORT0_MAC, CLIENT_MAC)
            .ipv6(wkp(SERVER), CLIENT6, 64)
            .icmpv6_raw(1, 3, [0; 4])
            .write(v, &q[14..])
            .unwrap()
    });
    assert_eq!(verdict, Verdict::Forward(0), "back out the ingress port");
    assert!(out == want, "\n got  {}\n want {}", hex(&out), hex(&want));
}

/// RFC 6146 §3.8: a packet from an IPv6 client to the prefix + one of the
/// pool's own IPv4 addresses is for the client bound to that address and
/// port (tests/nat64_golden.rs). Where no client is bound there it is
/// refused and counted as `untranslatable/hairpin`: no session is opened,
/// no pool port taken, and nothing leaves by the IPv4 side (where the pool
/// address routes back to Shunt, only to miss there).
#[test]
fn nat64_packets_to_the_pools_own_addresses_are_refused_not_sent_out() {
    let mut h = nat64();
    let hairpin = |n: u32| {
        w(|v| {
            PacketBuilder::ethernet2(CLIENT_MAC, PORT0_MAC)
                .ipv6(CLIENT6, wkp([10, 0, 4, 7]), 64)
                .udp(40000 + n as u16, 1024 + n as u16)
                .write(v, b"to a pool port")
                .unwrap()
        })
    };
    let free = h.ctx.snat[0].available();
    for n in 0..3 {
        let (verdict, _) = h.run_one(&hairpin(n));
        assert_eq!(verdict, Verdict::Drop(shunt::pipeline::DropReason::Untranslatable), "packet {n}");
    }
    assert_eq!(h.detail("untranslatable/hairpin"), 3);
    assert_eq!(h.ctx.snat[0].available(), free, "no pool port taken");
    assert_eq!(h.ctx.conntrack.len(), 0, "no session");
    // A server's address outside the pool still opens a session.
    assert_eq!(h.run_one(&nat64_first(false, 1, 40000)).0, Verdict::Forward(1));
}

/// A pipeline that ends in `l2fwd` (every packet to one next hop, as a
/// one-armed load balancer behind a router) sends a refusal back to its
/// sender by the port it came in on, as `l2` does, not on to the next hop.
#[test]
fn a_refusal_through_l2fwd_goes_back_to_its_sender() {
    let mut h = Fixture::small_lb()
        .set("service.*.protocol", "tcp")
        .set("conntrack.entries_per_worker", 262_144)
        .set("pipeline.l4lb.stages", vec!["conntrack", "maglev", "nat", "l2fwd"])
        .set("pipeline.l4lb.next_hop_mac", "02:00:00:00:02:01")
        .harness();
    exhaust(&mut h, true, false);
    let (verdict, out) = h.run_one(&client_syn(false));
    let mut want = rst(VIP, CLIENT);
    set_v4(&mut want, 14, 0, 0x4000);
    assert_eq!(verdict, Verdict::Forward(0), "back out the ingress port");
    assert!(out == want, "\n got  {}\n want {}", hex(&out), hex(&want));
}
