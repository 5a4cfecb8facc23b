//! Golden packet tests, one pipeline stage chain at a time (in the spirit of
//! Click's `.clicktest` files): an input frame and a config go in; the
//! expected output frame, byte for byte, and the expected verdict come out.
//!
//! Every expected frame is built independently of Shunt: with etherparse's
//! `PacketBuilder` (which computes IPv4 header and L4 checksums itself), or
//! by hand from the RFCs where etherparse cannot express the case (a UDP
//! checksum of 0 on IPv4, a fragment, a truncated header). Values Shunt
//! chooses at run time (the SNAT address and port, the backend) are read
//! from its output, checked against the config, and then fed to the
//! independent builder. Every frame Shunt forwards is also checked with a
//! plain RFC 1071 sum (IPv4 header and TCP/UDP checksums).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use shunt::pipeline::{DropReason, Verdict};

use shunt_testkit::addrs::{CLIENT_ROUTER_MAC, PORT0_MAC as CLI_PORT_MAC, PORT1_MAC as BE_PORT_MAC};
use shunt_testkit::frames::{fix_ipv4_checksum, hex, ones_sum, set_v4, Frame, L4};
use shunt_testkit::{Fixture, Harness};

/// Port indices, in config interface order.
const CLI_PORT: u8 = 0;
const BE_PORT: u8 = 1;
const TTL: u8 = 64;

const BACKEND_MACS: [[u8; 6]; 3] =
    [[0x02, 0, 0, 0, 0x02, 0x0b], [0x02, 0, 0, 0, 0x02, 0x0c], [0x02, 0, 0, 0, 0x02, 0x0d]];

/// `pipelines/l4lb.toml` with small Maglev tables and services besides
/// `web`/`web6`: DNS on both VIPs (backend port 5353), an all-drained
/// service, and one whose backend MAC is unknown.
fn lb_fixture() -> Fixture {
    Fixture::load("l4lb")
        .set("service.*.maglev_table_size", 251)
        .dns_services(5353)
        .copy_service("web", "drained")
        .set("service.drained.vip", "10.0.100.2")
        .truncate("service.drained.backends", 2)
        .set("service.drained.backends.0.addr", "10.0.2.21")
        .set("service.drained.backends.1.addr", "10.0.2.22")
        .set("service.drained.backends.*.weight", 0)
        .copy_service("web", "nomac")
        .set("service.nomac.vip", "10.0.100.3")
        .truncate("service.nomac.backends", 1)
        .set("service.nomac.backends.0.addr", "10.0.2.31")
        .pin_backend_macs()
        .remove("service.nomac.backends.0.mac")
        .set("conntrack.entries_per_worker", 4096)
}

// ---------------------------------------------------------------------------
// Frames (built with etherparse through `Frame`, independent of Shunt).

/// Offset of the IP header and of the L4 header, and the L4 protocol, for
/// the untagged, option-free frames these tests use.
fn layout(frame: &[u8]) -> (bool, usize, usize, u8) {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => (false, 14, 14 + usize::from(frame[14] & 0x0f) * 4, frame[14 + 9]),
        0x86dd => (true, 14, 54, frame[14 + 6]),
        t => panic!("unexpected ethertype {t:#06x}"),
    }
}

/// RFC 1071 / 768 / 793 / 8200 checks of a frame Shunt forwarded: the IPv4
/// header sums to 0xffff, and so does the TCP or UDP segment with its
/// pseudo-header. An IPv4 UDP checksum of 0 means "none" (RFC 768); on IPv6
/// a UDP checksum of 0 is invalid (RFC 8200 §8.1).
fn verify_checksums(frame: &[u8]) {
    let (v6, l3, l4, proto) = layout(frame);
    let (pseudo, seg) = if v6 {
        let plen = usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
        let seg = &frame[l4..l4 + plen];
        let mut acc = u64::from(ones_sum(&frame[l3 + 8..l3 + 40], 0));
        acc += plen as u64 + u64::from(proto);
        (acc, seg)
    } else {
        let ihl = l4 - l3;
        assert_eq!(ones_sum(&frame[l3..l4], 0), 0xffff, "IPv4 header checksum wrong: {}", hex(frame));
        let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
        let seg = &frame[l4..l3 + total];
        assert_eq!(seg.len(), total - ihl);
        let mut acc = u64::from(ones_sum(&frame[l3 + 12..l3 + 20], 0));
        acc += seg.len() as u64 + u64::from(proto);
        (acc, seg)
    };
    match proto {
        6 => assert_eq!(ones_sum(seg, pseudo), 0xffff, "TCP checksum wrong: {}", hex(frame)),
        17 => {
            let field = u16::from_be_bytes([seg[6], seg[7]]);
            if field == 0 {
                assert!(!v6, "IPv6 UDP with checksum 0 (RFC 8200 §8.1): {}", hex(frame));
            } else {
                assert_eq!(ones_sum(seg, pseudo), 0xffff, "UDP checksum wrong: {}", hex(frame));
            }
        }
        p => panic!("unexpected protocol {p}"),
    }
}

/// Sets an IPv4 UDP frame's checksum field to 0 ("no checksum", RFC 768).
fn zero_udp_checksum_v4(frame: &mut [u8]) {
    let (v6, _, l4, proto) = layout(frame);
    assert!(!v6 && proto == 17);
    frame[l4 + 6] = 0;
    frame[l4 + 7] = 0;
}

#[track_caller]
fn assert_frame_eq(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: frames differ (first at byte {at}; lengths {} vs {})\n got: {}\nwant: {}",
            got.len(),
            want.len(),
            hex(got),
            hex(want)
        );
    }
}

/// The translated (src, sport, dst, dport) and TTL / hop limit of a frame,
/// read with etherparse.
fn tuple_of(frame: &[u8]) -> (IpAddr, u16, IpAddr, u16, u8) {
    let p = SlicedPacket::from_ethernet(frame).expect("output parses");
    let (src, dst, ttl) = match p.net.expect("IP") {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr()), h.ttl())
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            (IpAddr::V6(h.source_addr()), IpAddr::V6(h.destination_addr()), h.hop_limit())
        }
    };
    let (sport, dport) = match p.transport.expect("L4") {
        TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
        TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
        _ => panic!("unexpected L4"),
    };
    (src, sport, dst, dport, ttl)
}

fn in_prefix(a: IpAddr, net: IpAddr, len: u32) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = u32::MAX << (32 - len);
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = u128::MAX << (128 - len);
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

// ---------------------------------------------------------------------------
// The full-NAT service under test, described as the config describes it.

struct Service {
    vip: IpAddr,
    port: u16,
    pool: (IpAddr, u32),
    backends: [IpAddr; 3],
    backend_port: u16,
}

fn web() -> Service {
    Service {
        vip: v4("10.0.100.1"),
        port: 80,
        pool: (v4("10.0.3.0"), 28),
        backends: [v4("10.0.2.11"), v4("10.0.2.12"), v4("10.0.2.13")],
        backend_port: 80,
    }
}

/// `web6`: `web` on IPv6.
fn web6() -> Service {
    Service {
        vip: v6("fd00:100::1"),
        pool: (v6("fd00:3::"), 124),
        backends: [v6("fd00:2::11"), v6("fd00:2::12"), v6("fd00:2::13")],
        ..web()
    }
}

fn dns() -> Service {
    Service { vip: v4("10.0.100.1"), port: 53, backend_port: 5353, ..web() }
}

fn dns6() -> Service {
    Service { vip: v6("fd00:100::1"), port: 53, backend_port: 5353, ..web6() }
}

/// What the original direction of a flow was translated to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Binding {
    snat: IpAddr,
    snat_port: u16,
    backend: usize,
}

/// A client-side packet to the service (from the client's router to the
/// client-side port, TTL 64).
fn client_pkt<'a>(svc: &Service, client: IpAddr, cport: u16, l4: L4, payload: &'a [u8]) -> Frame<'a> {
    Frame { sport: cport, dport: svc.port, l4, payload, ..Frame::new(client, svc.vip) }
}

/// The service's answer as the client gets it: VIP → client, from the
/// client-side port to the client's router.
fn to_client_pkt<'a>(svc: &Service, client: IpAddr, cport: u16, l4: L4, payload: &'a [u8]) -> Frame<'a> {
    let (smac, dmac) = (CLI_PORT_MAC, CLIENT_ROUTER_MAC);
    Frame { smac, dmac, sport: svc.port, dport: cport, l4, payload, ..Frame::new(svc.vip, client) }
}

/// Backend `backend`'s packet from its service port to SNAT address and
/// port `to`, arriving on the backend-side port.
fn backend_pkt<'a>(svc: &Service, backend: usize, to: (IpAddr, u16), l4: L4, payload: &'a [u8]) -> Frame<'a> {
    let (smac, dmac) = (BACKEND_MACS[backend], BE_PORT_MAC);
    let (sport, dport) = (svc.backend_port, to.1);
    Frame { smac, dmac, sport, dport, l4, payload, ..Frame::new(svc.backends[backend], to.0) }
}

/// `f`'s bytes; with `zero_csum`, as IPv4 UDP without a checksum (0).
fn bytes(f: Frame<'_>, zero_csum: bool) -> Vec<u8> {
    let mut v = f.build();
    if zero_csum {
        zero_udp_checksum_v4(&mut v);
    }
    v
}

/// Runs a client → VIP packet; checks it came out as (SNAT → backend) with
/// the backend-side MACs, byte for byte against an etherparse-built frame.
/// `zero_csum`: the input is IPv4 UDP with checksum 0, and so must the output be.
fn original(
    h: &mut Harness,
    svc: &Service,
    client: IpAddr,
    cport: u16,
    l4: L4,
    payload: &[u8],
    zero_csum: bool,
) -> Binding {
    let input = bytes(client_pkt(svc, client, cport, l4, payload), zero_csum);
    let (verdict, out) = h.run_one(&input);
    assert_eq!(verdict, Verdict::Forward(BE_PORT), "original direction verdict");
    verify_checksums(&out);
    let (snat, snat_port, dst, dport, ttl) = tuple_of(&out);
    assert_eq!(ttl, TTL, "TTL / hop limit unchanged");
    assert!(in_prefix(snat, svc.pool.0, svc.pool.1), "SNAT address {snat} outside the pool");
    assert!(snat_port >= 1024, "SNAT port {snat_port} below 1024");
    let backend =
        svc.backends.iter().position(|b| *b == dst).unwrap_or_else(|| panic!("{dst} not a backend"));
    assert_eq!(dport, svc.backend_port);
    let (smac, dmac) = (BE_PORT_MAC, BACKEND_MACS[backend]);
    let (sport, dport) = (snat_port, svc.backend_port);
    let want = Frame { smac, dmac, sport, dport, l4, payload, ..Frame::new(snat, dst) };
    assert_frame_eq(&out, &bytes(want, zero_csum), "original direction");
    Binding { snat, snat_port, backend }
}

/// Runs the backend's reply to binding `b`; checks it came out as
/// (VIP → client) with the client-side MACs, byte for byte.
#[allow(clippy::too_many_arguments)]
fn reply(
    h: &mut Harness,
    svc: &Service,
    client: IpAddr,
    cport: u16,
    b: Binding,
    l4: L4,
    payload: &[u8],
    zero_csum: bool,
) -> Vec<u8> {
    let input = bytes(backend_pkt(svc, b.backend, (b.snat, b.snat_port), l4, payload), zero_csum);
    let (verdict, out) = h.run_one(&input);
    assert_eq!(verdict, Verdict::Forward(CLI_PORT), "reply direction verdict");
    verify_checksums(&out);
    let want = bytes(to_client_pkt(svc, client, cport, l4, payload), zero_csum);
    assert_frame_eq(&out, &want, "reply direction");
    out
}

fn lb() -> Harness {
    lb_fixture().harness()
}

// ---------------------------------------------------------------------------
// l2fwd

/// `pipelines/l2fwd.toml`'s towards-backend pipeline, routed for UDP port
/// 53 to 10.0.0.1 and anything to fd00::1.
fn l2fwd() -> Harness {
    Fixture::load("l2fwd")
        .remove("pipeline.to-client")
        .truncate("route", 2)
        .set("route.0.dst", "10.0.0.1")
        .set("route.0.protocol", "udp")
        .set("route.0.port", 53)
        .set("route.1.dst", "fd00::1")
        .set("route.1.protocol", "any")
        .harness()
}

#[test]
fn l2fwd_rewrites_macs_only() {
    let mut h = l2fwd();
    let next_hop = [0x02, 0, 0, 0, 0x02, 0x0b];
    for (src, dst, l4) in
        [(v4("192.0.2.7"), v4("10.0.0.1"), L4::Udp), (v6("2001:db8::7"), v6("fd00::1"), L4::SYN)]
    {
        let p = Frame {
            smac: [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee],
            dmac: CLI_PORT_MAC,
            ttl: TTL,
            src,
            dst,
            sport: 40000,
            dport: 53,
            l4,
            payload: b"golden l2fwd payload",
        };
        let input = p.build();
        let (verdict, out) = h.run_one(&input);
        assert_eq!(verdict, Verdict::Forward(1), "the backend side is port 1");
        let want = Frame { smac: BE_PORT_MAC, dmac: next_hop, ..p }.build();
        assert_frame_eq(&out, &want, "l2fwd");
        assert_eq!(&out[12..], &input[12..], "everything after the MACs untouched");
        verify_checksums(&out);
    }
    // Not on any route: nothing to forward it.
    let p = Frame {
        smac: [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee],
        dmac: CLI_PORT_MAC,
        ttl: TTL,
        src: v4("192.0.2.7"),
        dst: v4("10.0.0.1"),
        sport: 40000,
        dport: 54,
        l4: L4::Udp,
        payload: b"x",
    };
    assert_eq!(h.run_one(&p.build()).0, Verdict::Drop(DropReason::NoRoute));
}

// ---------------------------------------------------------------------------
// Full NAT: original direction and reply, every family and protocol.

/// A fresh load balancer: the client's packet `there` ([`original`]), then
/// the backend's answer `back` ([`reply`]). The reply as the client got it.
fn round_trip(
    svc: Service,
    client: IpAddr,
    cport: u16,
    there: (L4, &[u8]),
    back: (L4, &[u8]),
    zero_csum: bool,
) -> Vec<u8> {
    let mut h = lb();
    let b = original(&mut h, &svc, client, cport, there.0, there.1, zero_csum);
    reply(&mut h, &svc, client, cport, b, back.0, back.1, zero_csum)
}

#[test]
fn ipv4_tcp_full_nat_syn_and_syn_ack() {
    round_trip(web(), v4("198.51.100.7"), 40001, (L4::SYN, b""), (L4::SYN_ACK, b""), false);
}

#[test]
fn ipv6_tcp_full_nat_syn_and_syn_ack() {
    round_trip(web6(), v6("2001:db8:c::7"), 40001, (L4::SYN, b""), (L4::SYN_ACK, b""), false);
}

/// Odd payload length: the RFC 1071 pad byte must not confuse anything.
const QUERY: (L4, &[u8]) = (L4::Udp, b"\x12\x34query?");
const ANSWER: (L4, &[u8]) = (L4::Udp, b"\xab\xcdanswer!");

#[test]
fn ipv4_udp_full_nat() {
    round_trip(dns(), v4("198.51.100.7"), 33333, QUERY, ANSWER, false);
}

#[test]
fn ipv4_udp_zero_checksum_stays_zero() {
    let (there, back) = ((L4::Udp, &b"no checksum"[..]), (L4::Udp, &b"none back"[..]));
    let out = round_trip(dns(), v4("198.51.100.8"), 33334, there, back, true);
    assert_eq!(&out[34 + 6..34 + 8], &[0, 0], "RFC 768: 0 = no checksum, must stay 0");
}

#[test]
fn ipv6_udp_full_nat() {
    round_trip(dns6(), v6("2001:db8:c::7"), 33333, QUERY, ANSWER, false);
}

/// Two payload bytes that make the UDP segment of `p` sum to 0xffff, so its
/// computed checksum is 0 and RFC 768 / RFC 8200 require 0xffff on the wire.
fn payload_for_zero_sum(p: &Frame<'_>) -> [u8; 2] {
    let mut f = Frame { payload: &[0, 0], ..*p }.build();
    let (v6, _, l4, _) = layout(&f);
    f[l4 + 6] = 0;
    f[l4 + 7] = 0;
    let (addrs, len) = if v6 { (&f[22..54], f.len() - l4) } else { (&f[26..34], f.len() - l4) };
    let s = ones_sum(&f[l4..], u64::from(ones_sum(addrs, 0)) + len as u64 + 17);
    (!s).to_be_bytes()
}

/// The reply's translated UDP checksum comes out as "computed 0": it must be
/// sent as 0xffff. An incremental update yields 0 here unless it applies
/// RFC 768's rule.
fn computed_zero_udp_checksum_is_ffff(svc: Service, client: IpAddr) {
    let mut h = lb();
    let b = original(&mut h, &svc, client, 34000, L4::Udp, b"q", false);
    let translated = to_client_pkt(&svc, client, 34000, L4::Udp, &[]);
    let payload = payload_for_zero_sum(&translated);
    let out = reply(&mut h, &svc, client, 34000, b, L4::Udp, &payload, false);
    let (_, _, l4, _) = layout(&out);
    assert_eq!(&out[l4 + 6..l4 + 8], &[0xff, 0xff], "computed checksum 0 is sent as 0xffff");
}

#[test]
fn ipv4_udp_computed_zero_checksum_is_ffff() {
    computed_zero_udp_checksum_is_ffff(dns(), v4("198.51.100.9"));
}

/// Fails today: `nat::rewrite` updates IPv6 UDP checksums with plain
/// `update_u16`/`update_bytes`, which return 0 when the new sum is 0xffff;
/// RFC 8200 §8.1 requires 0xffff (receivers discard UDP/IPv6 with checksum 0).
#[test]
fn ipv6_udp_computed_zero_checksum_is_ffff() {
    computed_zero_udp_checksum_is_ffff(dns6(), v6("2001:db8:c::9"));
}

// ---------------------------------------------------------------------------
// Flows

#[test]
fn established_flow_keeps_backend_and_snat_port() {
    for (svc, client) in [(web(), v4("198.51.100.10")), (web6(), v6("2001:db8:c::10"))] {
        let mut h = lb();
        let b = original(&mut h, &svc, client, 45000, L4::SYN, b"", false);
        reply(&mut h, &svc, client, 45000, b, L4::SYN_ACK, b"", false);
        // Handshake ACK, then data: same backend, same SNAT address and port
        // (`original` rebuilds the expected frame from `b`'s values).
        for payload in [&b""[..], b"GET / HTTP/1.1\r\nHost: golden\r\n\r\n"] {
            let again = original(&mut h, &svc, client, 45000, L4::ACK, payload, false);
            assert_eq!(again, b, "established packet translated like the SYN");
        }
        reply(&mut h, &svc, client, 45000, b, L4::ACK, b"HTTP/1.1 200 OK\r\n\r\n", false);
        // A new flow from the same client gets a different SNAT port (or address).
        let other = original(&mut h, &svc, client, 45001, L4::SYN, b"", false);
        assert_ne!((other.snat, other.snat_port), (b.snat, b.snat_port));
    }
}

/// `web6`'s backends behind the IPv4 VIP 10.0.100.1 as NAT46 services:
/// TCP on port 8080, UDP on 8081.
fn nat46() -> Harness {
    lb_fixture()
        .adopt("nat46", "nat46", "nat46")
        .copy_service("web6", "web46")
        .remove("service.web46.snat_pool")
        .set("service.web46.vip", "10.0.100.1")
        .set("service.web46.port", 8080)
        .copy_service("web46", "udp46")
        .set("service.udp46.port", 8081)
        .set("service.udp46.protocol", "udp")
        .pin_backend_macs()
        .harness()
}

/// NAT46 services (see [`nat46`]): a flow of each, handshake and data both ways, each
/// packet translated by its entry's binding with checksums a stack accepts
/// and the payload intact.
#[test]
fn nat46_flows_translate_with_valid_checksums_both_ways() {
    let mut h = nat46();
    let svc = Service { backend_port: 80, ..web6() };
    let client = v4("198.51.100.46");
    // (VIP port, client port, first packet there, its answer, every later packet)
    let flows = [(8080, 46000, L4::SYN, L4::SYN_ACK, L4::ACK), (8081, 46001, L4::Udp, L4::Udp, L4::Udp)];
    for (vport, cport, there, back, later) in flows {
        let mut flow = None;
        for (i, payload) in [&b""[..], b"GET / HTTP/1.1\r\n\r\n", b"more"].into_iter().enumerate() {
            let l4 = if i == 0 { there } else { later };
            let input =
                Frame { sport: cport, dport: vport, l4, payload, ..Frame::new(client, v4("10.0.100.1")) };
            let (verdict, out) = h.run_one(&input.build());
            assert_eq!(verdict, Verdict::Forward(BE_PORT), "4to6 packet {i} of {cport}");
            verify_checksums(&out);
            let (src, sport, dst, dport, hop) = tuple_of(&out);
            assert!(src.is_ipv6() && svc.backends.contains(&dst) && dport == 80, "{}", hex(&out));
            assert_eq!(hop, TTL - 1, "the translator is a router");
            assert!(out.ends_with(payload));
            assert_eq!(*flow.get_or_insert((src, sport, dst)), (src, sport, dst), "one binding for the flow");
            // The backend answers its peer as it saw it.
            let b = svc.backends.iter().position(|a| *a == dst).expect("a backend");
            let l4 = if i == 0 { back } else { later };
            let answer = backend_pkt(&svc, b, (src, sport), l4, payload);
            let (verdict, out) = h.run_one(&answer.build());
            assert_eq!(verdict, Verdict::Forward(CLI_PORT), "6to4 answer {i} of {cport}");
            verify_checksums(&out);
            let (src, sport, dst, dport, hop) = tuple_of(&out);
            assert_eq!((src, sport, dst, dport, hop), (v4("10.0.100.1"), vport, client, cport, TTL - 1));
            assert!(out.ends_with(payload));
        }
    }
}

/// A NAT46 flow's reply entry keeps the address sum of the IPv4 header
/// its replies get. A state file from a build that kept none holds zero
/// there: a restart works it out again, and the flow's next answer leaves
/// with a header checksum a stack accepts.
#[test]
fn a_restored_nat46_flow_answers_with_a_valid_ipv4_header() {
    let mut h = nat46();
    let svc = Service { backend_port: 80, ..web6() };
    let (client, vip) = (v4("198.51.100.46"), v4("10.0.100.1"));
    let syn = Frame { sport: 46000, dport: 8080, l4: L4::SYN, ..Frame::new(client, vip) };
    let (_, out) = h.run_one(&syn.build());
    let (src, sport, dst, ..) = tuple_of(&out);
    let b = svc.backends.iter().position(|a| *a == dst).expect("a backend");
    // As a file written before entries kept the sum would hold it.
    let zeroed = h.ctx.conntrack.retain(|e| {
        e.sums.l3 = shunt::wire::checksum::Delta::ZERO;
        true
    });
    assert_eq!(zeroed, 0);
    let mut after = nat46();
    std::mem::swap(&mut h.ctx.conntrack, &mut after.ctx.conntrack);
    assert_eq!(shunt::state::restore(&mut after.ctx).kept, 2);
    let answer = backend_pkt(&svc, b, (src, sport), L4::SYN_ACK, b"");
    let (verdict, out) = after.run_one(&answer.build());
    assert_eq!(verdict, Verdict::Forward(CLI_PORT));
    verify_checksums(&out);
    assert_eq!(tuple_of(&out), (vip, 8080, client, 46000, TTL - 1));
}

#[test]
fn same_config_same_backend() {
    let (mut a, mut b) = (lb(), lb());
    let svc = web();
    let mut used = [false; 3];
    for i in 0..60u16 {
        let client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1 + (i % 7) as u8));
        let x = original(&mut a, &svc, client, 20000 + i * 13, L4::SYN, b"", false);
        let y = original(&mut b, &svc, client, 20000 + i * 13, L4::SYN, b"", false);
        // SNAT ports are keyed per process (RFC 6056), so only the backend
        // must agree.
        assert_eq!(x.backend, y.backend, "flow {i}: backend differs between fresh harnesses");
        used[x.backend] = true;
    }
    assert_eq!(used, [true; 3], "60 flows over 3 equal backends reach all of them");
}

// ---------------------------------------------------------------------------
// Drops

#[test]
fn vip_on_unconfigured_port_is_no_flow() {
    // The XDP program would not redirect (VIP, tcp, 81). If such a packet
    // reaches the only pipeline anyway (classification skips lookups when a
    // single pipeline starts with conntrack), conntrack finds neither a flow
    // nor a service for it: `NoFlow`.
    let mut h = lb();
    let p = Frame { dport: 81, ..client_pkt(&web(), v4("198.51.100.7"), 40000, L4::SYN, b"") };
    assert_eq!(h.run_one(&p.build()).0, Verdict::Drop(DropReason::NoFlow));
}

#[test]
fn stray_reply_to_snat_pool_is_no_flow() {
    // An address inside an SNAT pool classifies to the pool's pipeline;
    // conntrack has no entry and (pool address, 40000) is no service:
    // `NoFlow`.
    let mut h = lb();
    for (svc, snat) in [(web(), v4("10.0.3.5")), (web6(), v6("fd00:3::5"))] {
        let p = backend_pkt(&svc, 0, (snat, 40000), L4::SYN_ACK, b"");
        assert_eq!(h.run_one(&p.build()).0, Verdict::Drop(DropReason::NoFlow), "{snat}");
    }
    // A reply to a real flow's SNAT address but the wrong port: no flow either.
    let (svc, client) = (web(), v4("198.51.100.7"));
    let b = original(&mut h, &svc, client, 40000, L4::SYN, b"", false);
    let p = backend_pkt(&svc, b.backend, (b.snat, b.snat_port ^ 1), L4::SYN_ACK, b"");
    assert_eq!(h.run_one(&p.build()).0, Verdict::Drop(DropReason::NoFlow));
}

#[test]
fn truncated_tcp_header_is_malformed() {
    let mut h = lb();
    let full = client_pkt(&web(), v4("198.51.100.7"), 40000, L4::SYN, b"").build();
    // Keep 10 of the 20 TCP header bytes (ports still readable, so the
    // packet classifies to the VIP's pipeline) and make the IPv4 total
    // length agree: a consistent IP packet with a short TCP header.
    let mut f = full[..14 + 20 + 10].to_vec();
    f[16..18].copy_from_slice(&30u16.to_be_bytes());
    fix_ipv4_checksum(&mut f, 14);
    assert_eq!(h.run_one(&f).0, Verdict::Drop(DropReason::Malformed));
    // Frame cut short of what the IPv4 header claims.
    assert_eq!(h.run_one(&full[..14 + 20 + 10]).0, Verdict::Drop(DropReason::Malformed));
    // IPv6: payload length says 10.
    let full6 = client_pkt(&web6(), v6("2001:db8:c::7"), 40000, L4::SYN, b"").build();
    let mut f6 = full6[..54 + 10].to_vec();
    f6[18..20].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(h.run_one(&f6).0, Verdict::Drop(DropReason::Malformed));
}

#[test]
fn ipv4_first_fragment_opens_its_flow_unless_misaligned() {
    let mut h = lb();
    // First fragment: offset 0, More Fragments set (RFC 791). 20 + 16 data
    // bytes: not a multiple of 8, which only a last fragment may be.
    let mut f = client_pkt(&web(), v4("198.51.100.7"), 40000, L4::SYN, b"0123456789abcdef").build();
    set_v4(&mut f, 14, 0, 0x2000);
    assert_eq!(h.run_one(&f).0, Verdict::Drop(DropReason::FragmentBogus));
    // 20 + 20: its ports open the flow like a whole SYN's (tests/frag_golden.rs
    // follows the later fragments).
    let mut f = client_pkt(&web(), v4("198.51.100.7"), 40000, L4::SYN, b"0123456789abcdefghij").build();
    set_v4(&mut f, 14, 0, 0x2000);
    assert_eq!(h.run_one(&f).0, Verdict::Forward(BE_PORT));
}

/// The verdict on a client's first SYN to the `lb_fixture` service at `vip`.
fn first_syn_to(vip: IpAddr) -> Verdict {
    let svc = Service { vip, ..web() };
    lb().run_one(&client_pkt(&svc, v4("198.51.100.7"), 40000, L4::SYN, b"").build()).0
}

#[test]
fn all_backends_drained_is_no_backend() {
    assert_eq!(first_syn_to(v4("10.0.100.2")), Verdict::Drop(DropReason::NoBackend));
}

#[test]
fn backend_without_mac_is_next_hop_unresolved() {
    // The backend has no `mac`, the pipeline no `next_hop_mac`, and the
    // harness resolves no neighbours.
    assert_eq!(first_syn_to(v4("10.0.100.3")), Verdict::Drop(DropReason::NextHopUnresolved));
}

#[test]
fn conntrack_full_of_assured_flows_refuses_new_ones_and_keeps_old_ones() {
    let mut h = lb_fixture().set("conntrack.entries_per_worker", 1024).harness();
    let svc = web();
    let client_of = |i: u16| IpAddr::V4(Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8));
    // Assured flows (SYN, SYN-ACK, ACK) until the table refuses one; each
    // needs two entries, so 1024 slots hold at most 512 of them. Assured
    // flows are never dropped early to make room.
    let mut open = Vec::new();
    let mut full = 0;
    for i in 0..600u16 {
        let syn = client_pkt(&svc, client_of(i), 10000 + i, L4::SYN, b"").build();
        match h.run_one(&syn).0 {
            Verdict::Forward(BE_PORT) => {
                let b = original(&mut h, &svc, client_of(i), 10000 + i, L4::SYN, b"", false);
                reply(&mut h, &svc, client_of(i), 10000 + i, b, L4::SYN_ACK, b"", false);
                original(&mut h, &svc, client_of(i), 10000 + i, L4::ACK, b"", false);
                open.push((i, b));
            }
            Verdict::Drop(DropReason::ConntrackFull) => full += 1,
            v => panic!("flow {i}: unexpected {v:?}"),
        }
    }
    assert!(full > 0, "no flow refused");
    assert!(!open.is_empty() && open.len() <= 512, "{} flows fit in 1024 entries", open.len());
    // A burst of new SYNs: those whose buckets hold only assured entries
    // are refused (the rest take the few free ways left, or each other's).
    let mut refused = 0;
    for i in 600..700u16 {
        let syn = client_pkt(&svc, client_of(i), 10000 + i, L4::SYN, b"").build();
        match h.run_one(&syn).0 {
            Verdict::Drop(DropReason::ConntrackFull) => refused += 1,
            Verdict::Forward(BE_PORT) => {}
            v => panic!("flow {i}: unexpected {v:?}"),
        }
    }
    assert!(refused > 0, "no new flow refused by a table full of assured ones");
    // Every assured flow still translates exactly as before.
    for (i, b) in open {
        let again = original(&mut h, &svc, client_of(i), 10000 + i, L4::ACK, b"", false);
        assert_eq!(again, b, "assured flow {i} lost its binding");
    }
}

// ---------------------------------------------------------------------------
// L2 DSR (pipelines/dsr.toml): only the destination MAC changes.

/// A client → VIP frame of the DSR service, arriving from the router.
fn dsr_pkt(client: IpAddr, cport: u16, l4: L4) -> Vec<u8> {
    Frame {
        smac: CLIENT_ROUTER_MAC,
        dmac: CLI_PORT_MAC,
        ttl: TTL,
        src: client,
        dst: IpAddr::V4(Ipv4Addr::new(10, 1, 100, 1)),
        sport: cport,
        dport: 80,
        l4,
        payload: b"dsr",
    }
    .build()
}

/// Runs `input` and checks it left on the backend port unchanged but for
/// its MACs; returns the backend's index.
fn dsr_forwarded(h: &mut Harness, input: &[u8]) -> usize {
    let (verdict, out) = h.run_one(input);
    assert_eq!(verdict, Verdict::Forward(BE_PORT), "DSR verdict");
    assert_eq!(out[6..12], BE_PORT_MAC, "source MAC: the backend-side port's");
    assert_eq!(out[12..], input[12..], "IP header and payload untouched");
    BACKEND_MACS[..2]
        .iter()
        .position(|m| out[..6] == *m)
        .unwrap_or_else(|| panic!("destination MAC {} is no backend's", hex(&out[..6])))
}

#[test]
fn dsr_rewrites_only_the_destination_mac_and_picks_up_flows_mid_stream() {
    let fixture = Fixture::load("dsr").set("service.*.maglev_table_size", 251).pin_backend_macs();
    let mut node1 = fixture.harness();
    let mut node2 = fixture.harness();
    let mut seen = [0usize; 2];
    for i in 0..64u16 {
        let client = IpAddr::V4(Ipv4Addr::new(10, 1, 1, 2 + (i % 7) as u8));
        let cport = 40_000 + i;
        let b = dsr_forwarded(&mut node1, &dsr_pkt(client, cport, L4::SYN));
        seen[b] += 1;
        assert_eq!(
            dsr_forwarded(&mut node1, &dsr_pkt(client, cport, L4::ACK)),
            b,
            "the flow keeps its backend"
        );
        // The flow moved to another node (ECMP rehash): its next packet is
        // no SYN, and the same config sends it to the same backend.
        assert_eq!(dsr_forwarded(&mut node2, &dsr_pkt(client, cport, L4::ACK)), b, "mid-stream pickup");
    }
    assert!(seen.iter().all(|&n| n > 0), "both backends used: {seen:?}");
}
