//! Golden tests for ICMP errors about tracked flows: an error quoting a
//! packet of a NATed flow, or of a NAT64 session, reaches the flow's other
//! end rewritten (and translated) to match what that end sent. Every
//! expected frame is built independently with etherparse, never from
//! Shunt's output; Shunt's output is only used as the quote a real router
//! would send back, since that is what such a router quotes.

use std::net::IpAddr;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use shunt::pipeline::{DropReason, Verdict};

use shunt_testkit::addrs::*;
use shunt_testkit::frames::{csum, hex, set_v4, w, Frame, L4};
use shunt_testkit::{Fixture, Harness};

/// DNS on both VIPs, one backend each, SNAT to one address per family.
fn lb() -> Harness {
    Fixture::small_dns_lb().harness()
}

/// `pipelines/nat64.toml` with this file's next hops.
fn nat64() -> Harness {
    Fixture::load("nat64")
        .set("pipeline.nat64.next_hop_mac", "02:00:00:00:02:0b")
        .set("pipeline.nat64.return_next_hop_mac", "02:00:00:00:01:02")
        .set("conntrack.entries_per_worker", 4096)
        .harness()
}

const ROUTER: [u8; 4] = [10, 0, 2, 254];
const CLIENT_ROUTER: [u8; 4] = [10, 0, 1, 254];

const ROUTER6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe];

const SERVER: [u8; 4] = [198, 51, 100, 80];
const IPV4_ROUTER: [u8; 4] = [203, 0, 113, 1];

/// The client's UDP query, port 40000 to 53.
fn query(src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Vec<u8> {
    Frame { smac: CLIENT_MAC, dport: 53, payload: b"query", ..Frame::new(src, dst) }.build()
}

/// The links an ICMP error arrives on or leaves by: (source, destination MAC).
const FROM_BACKEND: ([u8; 6], [u8; 6]) = (BACKEND_MAC, PORT1_MAC);
const TO_BACKEND: ([u8; 6], [u8; 6]) = (PORT1_MAC, BACKEND_MAC);
const FROM_CLIENT: ([u8; 6], [u8; 6]) = (CLIENT_ROUTER_MAC, PORT0_MAC);
const TO_CLIENT: ([u8; 6], [u8; 6]) = (PORT0_MAC, CLIENT_ROUTER_MAC);

/// An ICMP error (type, code, rest of header) from `src` to `dst` with TTL
/// `ttl`, quoting `quote`, on `link`.
fn icmp(
    link: ([u8; 6], [u8; 6]),
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
    ttl: u8,
    (ty, code, rest): (u8, u8, [u8; 4]),
    quote: &[u8],
) -> Vec<u8> {
    let (smac, dmac) = link;
    Frame { smac, dmac, ttl, l4: L4::Icmp { ty, code, rest }, payload: quote, ..Frame::new(src, dst) }.build()
}

/// Runs one frame; returns its verdict and bytes.
fn run(h: &mut Harness, frame: &[u8]) -> (Verdict, Vec<u8>) {
    h.run_one(frame)
}

/// The UDP source port and IP source of a forwarded frame.
fn udp_src(frame: &[u8]) -> (Vec<u8>, u16) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let src = match p.net.unwrap() {
        NetSlice::Ipv4(ip) => ip.header().source().to_vec(),
        NetSlice::Ipv6(ip) => ip.header().source().to_vec(),
    };
    let Some(TransportSlice::Udp(u)) = p.transport else { panic!("not UDP") };
    (src, u.source_port())
}

fn assert_frame(got: &(Verdict, Vec<u8>), port: u8, want: &[u8], what: &str) {
    assert_eq!(got.0, Verdict::Forward(port), "{what}: verdict");
    assert!(got.1 == want, "{what}:\n got  {}\n want {}", hex(&got.1), hex(want));
}

// ------------------------------------------------------------ full-NAT LB

/// A client's UDP query through the LB: returns the SNAT port.
fn open_v4_flow(h: &mut Harness) -> u16 {
    let q = query(CLIENT, VIP);
    let (verdict, out) = run(h, &q);
    assert_eq!(verdict, Verdict::Forward(1));
    let (src, port) = udp_src(&out);
    assert_eq!(src, SNAT);
    port
}

//= https://www.rfc-editor.org/rfc/rfc5508#section-4.2
// A router on the backend side refuses a packet the LB sent (SNAT → backend):
// the client gets the error, about the packet it sent (client → VIP).
#[test]
fn error_about_a_packet_to_the_backend_reaches_the_client() {
    let mut h = lb();
    let p = open_v4_flow(&mut h);
    for (ty, code, rest) in [(3u8, 3u8, [0u8; 4]), (3, 4, [0, 0, 0x05, 0x78]), (11, 0, [0; 4])] {
        let quote = w(|v| PacketBuilder::ipv4(SNAT, BACKEND, 63).udp(p, 5353).write(v, b"query").unwrap());
        let err = icmp(FROM_BACKEND, ROUTER, SNAT, 255, (ty, code, rest), &quote);
        let want_quote =
            w(|v| PacketBuilder::ipv4(CLIENT, VIP, 63).udp(40000, 53).write(v, b"query").unwrap());
        let want = icmp(TO_CLIENT, ROUTER, CLIENT, 255, (ty, code, rest), &want_quote);
        assert_frame(&run(&mut h, &err), 0, &want, &format!("ICMP {ty}/{code}"));
    }
}

// A router on the client side refuses a reply (VIP → client): the backend
// gets the error, about the reply it sent (backend → SNAT address).
#[test]
fn error_about_a_reply_reaches_the_backend() {
    let mut h = lb();
    let p = open_v4_flow(&mut h);
    let quote = w(|v| PacketBuilder::ipv4(VIP, CLIENT, 60).udp(53, 40000).write(v, b"answer!").unwrap());
    let err = icmp(FROM_CLIENT, CLIENT_ROUTER, VIP, 255, (3, 4, [0, 0, 0x05, 0x00]), &quote);
    let want_quote = w(|v| PacketBuilder::ipv4(BACKEND, SNAT, 60).udp(5353, p).write(v, b"answer!").unwrap());
    let want = icmp(TO_BACKEND, CLIENT_ROUTER, BACKEND, 255, (3, 4, [0, 0, 0x05, 0x00]), &want_quote);
    assert_frame(&run(&mut h, &err), 1, &want, "frag needed about a reply");
}

#[test]
fn ipv6_packet_too_big_about_a_packet_to_the_backend() {
    let mut h = lb();
    let q = query(CLIENT6, VIP6);
    let (verdict, out) = run(&mut h, &q);
    assert_eq!(verdict, Verdict::Forward(1));
    let (src, p) = udp_src(&out);
    assert_eq!(src, SNAT6);
    let quote = w(|v| PacketBuilder::ipv6(SNAT6, BACKEND6, 63).udp(p, 5353).write(v, b"query").unwrap());
    let err = icmp(FROM_BACKEND, ROUTER6, SNAT6, 255, (2, 0, [0, 0, 0x05, 0x00]), &quote);
    let want_quote = w(|v| PacketBuilder::ipv6(CLIENT6, VIP6, 63).udp(40000, 53).write(v, b"query").unwrap());
    let want = icmp(TO_CLIENT, ROUTER6, CLIENT6, 255, (2, 0, [0, 0, 0x05, 0x00]), &want_quote);
    assert_frame(&run(&mut h, &err), 0, &want, "packet too big");
}

#[test]
fn unknown_flows_are_dropped_and_corrupt_errors_stay_corrupt() {
    let mut h = lb();
    let p = open_v4_flow(&mut h);
    // An error quoting a flow nobody opened.
    let quote = w(|v| PacketBuilder::ipv4(SNAT, BACKEND, 63).udp(p ^ 1, 5353).write(v, b"query").unwrap());
    let err = icmp(FROM_BACKEND, ROUTER, SNAT, 255, (3, 3, [0; 4]), &quote);
    assert_eq!(run(&mut h, &err).0, Verdict::Drop(DropReason::NoFlow));
    // A damaged error is rewritten incrementally, so its checksum still
    // fails at the receiver instead of being laundered.
    let quote = w(|v| PacketBuilder::ipv4(SNAT, BACKEND, 63).udp(p, 5353).write(v, b"query").unwrap());
    let mut err = icmp(FROM_BACKEND, ROUTER, SNAT, 255, (3, 3, [0; 4]), &quote);
    let last = err.len() - 1;
    err[last] ^= 0x40;
    let (verdict, out) = run(&mut h, &err);
    assert_eq!(verdict, Verdict::Forward(0));
    assert_ne!(csum(&out[34..]), 0, "corrupt ICMP checksum must stay corrupt");
    assert_eq!(csum(&out[14..34]), 0, "the outer IPv4 header checksum is right");
}

// ------------------------------------------------------------ NAT64

/// An IPv6 client's UDP query through NAT64: returns the IPv4 frame sent.
fn open_nat64(h: &mut Harness) -> Vec<u8> {
    let q = query(CLIENT6, wkp(SERVER));
    let (verdict, out) = run(h, &q);
    assert_eq!(verdict, Verdict::Forward(1));
    out
}

//= https://www.rfc-editor.org/rfc/rfc6146#section-3.4
// ICMPv4 errors about a session's packets (from the server itself or from
// a router on the IPv4 side) reach the IPv6 client as ICMPv6 errors about
// the packet it sent, from prefix + the error's IPv4 source.
#[test]
fn nat64_icmpv4_errors_reach_the_ipv6_client() {
    let mut h = nat64();
    let sent = open_nat64(&mut h);
    let (t, _) = udp_src(&sent);
    assert!(t[..3] == [10, 0, 4], "pool address {t:?}");
    // (ICMPv4 source, type, code, rest) -> (ICMPv6 type, code, rest)
    let cases = [
        (SERVER, [3u8, 3u8], [0u8; 4], [1u8, 4u8], [0u8; 4]), // port unreachable
        (IPV4_ROUTER, [11, 0], [0; 4], [3, 0], [0; 4]),       // time exceeded
        (IPV4_ROUTER, [3, 4], [0, 0, 0x05, 0x78], [2, 0], [0, 0, 0x05, 0x8c]), // 1400 -> 1420
    ];
    for (from, a, ar, b, br) in cases {
        // The quote is the IPv4 packet Shunt sent, as the router got it.
        let err = icmp(
            FROM_BACKEND,
            from,
            <[u8; 4]>::try_from(&t[..]).unwrap(),
            250,
            (a[0], a[1], ar),
            &sent[14..],
        );
        // What the client sent, hop limit as it left Shunt (63).
        let want_quote =
            w(|v| PacketBuilder::ipv6(CLIENT6, wkp(SERVER), 63).udp(40000, 53).write(v, b"query").unwrap());
        let want = icmp(TO_CLIENT, wkp(from), CLIENT6, 249, (b[0], b[1], br), &want_quote);
        assert_frame(&run(&mut h, &err), 0, &want, &format!("ICMPv4 {a:?} from {from:?}"));
    }
}

// An ICMPv6 error from the client's side about a server's reply reaches
// the IPv4 server as ICMPv4, from the session's pool address.
#[test]
fn nat64_icmpv6_errors_reach_the_ipv4_server() {
    let mut h = nat64();
    let sent = open_nat64(&mut h);
    let (t, port) = udp_src(&sent);
    let t4: [u8; 4] = t[..].try_into().unwrap();
    let reply = w(|v| {
        PacketBuilder::ethernet2(BACKEND_MAC, PORT1_MAC)
            .ipv4(SERVER, t4, 60)
            .udp(53, port)
            .write(v, b"answer")
            .unwrap()
    });
    let (verdict, reply6) = run(&mut h, &reply);
    assert_eq!(verdict, Verdict::Forward(0));
    // The client refuses it: Port Unreachable quoting the reply it got.
    let err = icmp(FROM_CLIENT, CLIENT6, wkp(SERVER), 64, (1, 4, [0; 4]), &reply6[14..]);
    let mut want_quote =
        w(|v| PacketBuilder::ipv4(SERVER, t4, 59).udp(53, port).write(v, b"answer").unwrap());
    set_v4(&mut want_quote, 0, 0, 0);
    let mut want = icmp(TO_BACKEND, t4, SERVER, 63, (3, 3, [0; 4]), &want_quote);
    set_v4(&mut want, 14, 0, 0);
    assert_frame(&run(&mut h, &err), 1, &want, "port unreachable from the client");
}
