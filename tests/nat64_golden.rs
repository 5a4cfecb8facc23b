//! Golden tests for stateful NAT64's bindings (RFC 6146 §3.5.1, RFC 4787
//! REQ-1): one pool (address, port) per client (address, port, protocol)
//! whatever the destination, and hairpinning (RFC 6146 §3.8, RFC 4787
//! REQ-9, RFC 5382 REQ-8): an IPv6 client reaches another at the prefix +
//! that client's pool address and port, and the packets go IPv6 to IPv6
//! inside Shunt, with the sender's own binding as their source. Expected
//! frames are built with etherparse; only the pool ports Shunt chose are
//! read from its output (they are random by design, RFC 6056).

use std::net::IpAddr;

use etherparse::icmpv6::DestUnreachableCode;
use etherparse::{Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use shunt::pipeline::conntrack::{ConnTable, FullPolicy};
use shunt::pipeline::{DropReason, Verdict};

use shunt_testkit::addrs::wkp;
use shunt_testkit::frames::{hex, set_v4, w, Frame};
use shunt_testkit::{Fixture, Harness};

/// Harness port MACs: 02:00:00:00:ff:0N for config interface N (0: the
/// IPv6 side, 1: the IPv4 side).
const PORT0_MAC: [u8; 6] = [2, 0, 0, 0, 0xff, 0];
const PORT1_MAC: [u8; 6] = [2, 0, 0, 0, 0xff, 1];
const V6_HOP_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
const V4_HOP_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0x0b];
const ANY_MAC: [u8; 6] = [2, 0, 0, 0, 9, 9];

const POOL: [u8; 4] = [10, 0, 4, 7];
const SERVER1: [u8; 4] = [198, 51, 100, 80];
const SERVER2: [u8; 4] = [203, 0, 113, 9];
const A: [u8; 16] = [0xfd, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a];
const B: [u8; 16] = [0xfd, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b];

/// `pipelines/nat64.toml` with a one-address pool and this file's next hops.
fn nat64() -> Harness {
    Fixture::load("nat64")
        .set("nat64.pool", "10.0.4.7/32")
        .set("pipeline.nat64.next_hop_mac", "02:00:00:00:02:0b")
        .set("pipeline.nat64.return_next_hop_mac", "02:00:00:00:01:02")
        .set("conntrack.entries_per_worker", 4096)
        .harness()
}

/// A UDP/IPv6 datagram arriving on the IPv6 side.
fn udp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, hop: u8, body: &[u8]) -> Vec<u8> {
    udp_frame(src, sport, dst, dport, hop, body).build()
}

/// The same, leaving Shunt by the IPv6 side.
fn udp6_out(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, hop: u8, body: &[u8]) -> Vec<u8> {
    Frame { smac: PORT0_MAC, dmac: V6_HOP_MAC, ..udp_frame(src, sport, dst, dport, hop, body) }.build()
}

/// A translated IPv6 -> IPv4 UDP datagram as it leaves (RFC 7915 §5.1:
/// Identification 0 and DF clear for a packet this small).
fn udp4_out(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, ttl: u8, body: &[u8]) -> Vec<u8> {
    let mut f =
        Frame { smac: PORT1_MAC, dmac: V4_HOP_MAC, ..udp_frame(src, sport, dst, dport, ttl, body) }.build();
    set_v4(&mut f, 14, 0, 0);
    f
}

/// A UDP datagram arriving on the IPv6 side (from any MAC).
fn udp_frame<'a>(
    src: impl Into<IpAddr>,
    sport: u16,
    dst: impl Into<IpAddr>,
    dport: u16,
    ttl: u8,
    body: &'a [u8],
) -> Frame<'a> {
    Frame { smac: ANY_MAC, dmac: PORT0_MAC, ttl, sport, dport, payload: body, ..Frame::new(src, dst) }
}

/// A UDP/IPv4 datagram from `server` to the pool's `port`, arriving on the
/// IPv4 side.
fn udp4_in(server: [u8; 4], sport: u16, port: u16, body: &[u8]) -> Vec<u8> {
    w(|v| {
        PacketBuilder::ethernet2(V4_HOP_MAC, PORT1_MAC)
            .ipv4(server, POOL, 60)
            .udp(sport, port)
            .write(v, body)
            .unwrap()
    })
}

/// Source address and port of a UDP or TCP frame.
fn source(frame: &[u8]) -> (Vec<u8>, u16) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let src = match p.net.unwrap() {
        NetSlice::Ipv4(ip) => ip.header().source().to_vec(),
        NetSlice::Ipv6(ip) => ip.header().source().to_vec(),
    };
    let port = match p.transport {
        Some(TransportSlice::Udp(u)) => u.source_port(),
        Some(TransportSlice::Tcp(t)) => t.source_port(),
        _ => panic!("not UDP or TCP"),
    };
    (src, port)
}

fn assert_frame(got: &(Verdict, Vec<u8>), port: u8, want: &[u8], what: &str) {
    assert_eq!(got.0, Verdict::Forward(port), "{what}: verdict");
    assert!(got.1 == want, "{what}:\n got  {}\n want {}", hex(&got.1), hex(want));
}

/// Opens a UDP binding for `client`:`port` (to SERVER1:53); returns its pool port.
fn bind_udp(h: &mut Harness, client: [u8; 16], port: u16) -> u16 {
    let out = h.run_one(&udp6(client, port, wkp(SERVER1), 53, 64, b"query"));
    assert_eq!(out.0, Verdict::Forward(1));
    let (src, pool_port) = source(&out.1);
    assert_eq!(src, POOL);
    pool_port
}

//= https://www.rfc-editor.org/rfc/rfc4787#section-4.1
//# REQ-1: A NAT MUST have an "Endpoint-Independent Mapping" behavior.
#[test]
fn one_client_port_gets_one_pool_port_for_every_destination() {
    let mut h = nat64();
    let t = bind_udp(&mut h, A, 40000);
    // Another server, another server port: the same pool port.
    let got = h.run_one(&udp6(A, 40000, wkp(SERVER2), 123, 64, b"ntp?"));
    assert_frame(&got, 1, &udp4_out(POOL, t, SERVER2, 123, 63, b"ntp?"), "second destination");
    assert_eq!(h.ctx.conntrack.len(), 4, "two sessions (two entries each)");
    assert_eq!(h.ctx.snat[0].bindings(), 1, "one binding");
    // Both servers' answers reach the client through the one binding.
    for (server, sport) in [(SERVER1, 53), (SERVER2, 123)] {
        let answer = udp4_in(server, sport, t, b"answer");
        let want = udp6_out(wkp(server), sport, A, 40000, 59, b"answer");
        assert_frame(&h.run_one(&answer), 0, &want, "answer");
    }
    // Another client port of the same client is another binding.
    let u = bind_udp(&mut h, A, 40001);
    assert_ne!(u, t);
    // Filtering stays address-and-port dependent for IPv4 peers: a third
    // server may not use the binding it never was sent to.
    let stranger = udp4_in([192, 0, 2, 99], 53, t, b"hello?");
    assert_eq!(h.run_one(&stranger).0, Verdict::Drop(DropReason::NoFlow));
}

//= https://www.rfc-editor.org/rfc/rfc6146#section-3.8
// (paraphrase) A packet to the prefix + a pool transport address is
// hairpinned: it reaches the client bound to that address and port, from
// the sender's own binding, without leaving by the IPv4 side.
#[test]
fn udp_hairpins_between_two_ipv6_clients_both_ways() {
    let mut h = nat64();
    let t = bind_udp(&mut h, B, 5000);
    let before = h.ctx.snat[0].available();
    // A sends to B's binding, with a traffic class and a flow label.
    let mut hello = udp6(A, 6000, wkp(POOL), t, 64, b"hello B");
    hello[14] = 0x62; // version 6, traffic class 0x2a
    hello[15] = 0xa3; // flow label 0x3_1234
    hello[16] = 0x12;
    hello[17] = 0x34;
    let got = h.run_one(&hello);
    assert_eq!(got.0, Verdict::Forward(0), "out by the IPv6 side");
    let (_, a_port) = source(&got.1);
    assert_ne!(a_port, t);
    // Traffic class kept, flow label 0 (IPv4 has none), hop limit less one.
    let mut want = udp6_out(wkp(POOL), a_port, B, 5000, 63, b"hello B");
    want[14] = 0x62;
    want[15] = 0xa0;
    assert_frame(&got, 0, &want, "A -> B");
    assert_eq!(h.ctx.snat[0].available(), before - 1, "A got a binding");
    // B answers the address and port it saw: A gets it from where it sent.
    let back = h.run_one(&udp6(B, 5000, wkp(POOL), a_port, 64, b"hello A"));
    assert_frame(&back, 0, &udp6_out(wkp(POOL), t, A, 6000, 63, b"hello A"), "B -> A");
    // REQ-9: what B saw is A's binding, the one A's IPv4 peers see too.
    let out = h.run_one(&udp6(A, 6000, wkp(SERVER1), 53, 64, b"query"));
    assert_frame(&out, 1, &udp4_out(POOL, a_port, SERVER1, 53, 63, b"query"), "A to an IPv4 server");
    // Later packets take the session both ways.
    let again = h.run_one(&udp6(A, 6000, wkp(POOL), t, 64, b"again"));
    assert_frame(&again, 0, &udp6_out(wkp(POOL), a_port, B, 5000, 63, b"again"), "A -> B again");
    assert_eq!(h.detail("untranslatable/hairpin"), 0);
}

#[test]
fn tcp_hairpins_between_two_ipv6_clients_both_ways() {
    let mut h = nat64();
    let syn = |src, sport, dst, dport, seq| {
        w(|v| {
            PacketBuilder::ethernet2(ANY_MAC, PORT0_MAC)
                .ipv6(src, dst, 64)
                .tcp(sport, dport, seq, 64240)
                .syn()
                .write(v, &[])
                .unwrap()
        })
    };
    // B's binding: a TCP session to an IPv4 server.
    let out = h.run_one(&syn(B, 5000, wkp(SERVER1), 80, 1));
    assert_eq!(out.0, Verdict::Forward(1));
    let (_, t) = source(&out.1);
    // A's SYN to B's binding reaches B.
    let got = h.run_one(&syn(A, 6000, wkp(POOL), t, 1000));
    let (_, a_port) = source(&got.1);
    let want = w(|v| {
        PacketBuilder::ethernet2(PORT0_MAC, V6_HOP_MAC)
            .ipv6(wkp(POOL), B, 63)
            .tcp(a_port, 5000, 1000, 64240)
            .syn()
            .write(v, &[])
            .unwrap()
    });
    assert_frame(&got, 0, &want, "SYN A -> B");
    // B's SYN-ACK and A's ACK.
    let synack = w(|v| {
        PacketBuilder::ethernet2(ANY_MAC, PORT0_MAC)
            .ipv6(B, wkp(POOL), 64)
            .tcp(5000, a_port, 7000, 65000)
            .syn()
            .ack(1001)
            .write(v, &[])
            .unwrap()
    });
    let want = w(|v| {
        PacketBuilder::ethernet2(PORT0_MAC, V6_HOP_MAC)
            .ipv6(wkp(POOL), A, 63)
            .tcp(t, 6000, 7000, 65000)
            .syn()
            .ack(1001)
            .write(v, &[])
            .unwrap()
    });
    assert_frame(&h.run_one(&synack), 0, &want, "SYN-ACK B -> A");
    let ack = w(|v| {
        PacketBuilder::ethernet2(ANY_MAC, PORT0_MAC)
            .ipv6(A, wkp(POOL), 64)
            .tcp(6000, t, 1001, 64240)
            .ack(7001)
            .write(v, b"GET /")
            .unwrap()
    });
    let want = w(|v| {
        PacketBuilder::ethernet2(PORT0_MAC, V6_HOP_MAC)
            .ipv6(wkp(POOL), B, 63)
            .tcp(a_port, 5000, 1001, 64240)
            .ack(7001)
            .write(v, b"GET /")
            .unwrap()
    });
    assert_frame(&h.run_one(&ack), 0, &want, "data A -> B");
    assert_eq!(h.detail("untranslatable/hairpin"), 0);
}

/// A pool port with no binding, or bound over another protocol, has no
/// client to reach: dropped and counted, with no session and no port taken.
#[test]
fn hairpin_to_a_pool_port_without_a_binding_is_dropped_and_counted() {
    let mut h = nat64();
    let t = bind_udp(&mut h, B, 5000);
    let (free, sessions) = (h.ctx.snat[0].available(), h.ctx.conntrack.len());
    let unbound = if t == 65535 { t - 1 } else { t + 1 };
    let got = h.run_one(&udp6(A, 6000, wkp(POOL), unbound, 64, b"anyone?"));
    assert_eq!(got.0, Verdict::Drop(DropReason::Untranslatable));
    let tcp = w(|v| {
        PacketBuilder::ethernet2(ANY_MAC, PORT0_MAC)
            .ipv6(A, wkp(POOL), 64)
            .tcp(6000, t, 1, 64240)
            .syn()
            .write(v, &[])
            .unwrap()
    });
    assert_eq!(h.run_one(&tcp).0, Verdict::Drop(DropReason::Untranslatable), "bound over UDP, not TCP");
    assert_eq!(h.detail("untranslatable/hairpin"), 2);
    assert_eq!((h.ctx.snat[0].available(), h.ctx.conntrack.len()), (free, sessions));
}

/// A hairpinned session the table has no room for takes nothing: the
/// sender's new binding and the hold on the receiver's are both given back.
#[test]
fn a_hairpin_refused_for_a_full_table_gives_both_pairs_back() {
    let mut h = nat64();
    let t = *h.ctx.conntrack.timeouts();
    h.ctx.conntrack = ConnTable::new(16, t, FullPolicy::Drop);
    let t = bind_udp(&mut h, B, 5000);
    // Fill the table with answered (so never dropped early) sessions of B's.
    for port in 1000.. {
        let out = h.run_one(&udp6(B, 5000, wkp(SERVER1), port, 64, b"query"));
        if out.0 == Verdict::Drop(DropReason::ConntrackFull) {
            break;
        }
        assert_eq!(h.run_one(&udp4_in(SERVER1, port, t, b"answer")).0, Verdict::Forward(0));
    }
    let (free, bindings, sessions) =
        (h.ctx.snat[0].available(), h.ctx.snat[0].bindings(), h.ctx.conntrack.len());
    let got = h.run_one(&udp6(A, 6000, wkp(POOL), t, 64, b"hello B"));
    assert_eq!(got.0, Verdict::Drop(DropReason::ConntrackFull));
    assert_eq!(
        (h.ctx.snat[0].available(), h.ctx.snat[0].bindings(), h.ctx.conntrack.len()),
        (free, bindings, sessions),
        "A's pair is free again and A is bound to nothing"
    );
}

/// Bindings are not stored: a restart rebuilds them from the sessions it
/// keeps, so a client keeps its pool port for new destinations, and a
/// hairpinned session keeps both clients' ports held.
#[test]
fn bindings_are_rebuilt_from_the_sessions_a_restart_keeps() {
    let mut h = nat64();
    let t = bind_udp(&mut h, B, 5000);
    let got = h.run_one(&udp6(A, 6000, wkp(POOL), t, 64, b"hello B"));
    let (_, a_port) = source(&got.1);
    let capacity = h.ctx.snat[0].capacity();
    // The table outlives the process (a shared file mapping in Shunt; here
    // it moves to a fresh harness, whose pools know nothing).
    let mut after = nat64();
    std::mem::swap(&mut h.ctx.conntrack, &mut after.ctx.conntrack);
    let restored = shunt::state::restore(&mut after.ctx);
    assert_eq!(restored.kept, 4);
    assert_eq!(after.ctx.snat[0].bindings(), 2, "B's and A's");
    assert_eq!(after.ctx.snat[0].available(), capacity - 2);
    // Endpoint-independent across the restart: new destinations, same ports.
    let out = after.run_one(&udp6(A, 6000, wkp(SERVER2), 53, 64, b"query"));
    assert_frame(&out, 1, &udp4_out(POOL, a_port, SERVER2, 53, 63, b"query"), "A's binding");
    let out = after.run_one(&udp6(B, 5000, wkp(SERVER2), 53, 64, b"query"));
    assert_frame(&out, 1, &udp4_out(POOL, t, SERVER2, 53, 63, b"query"), "B's binding");
    // The hairpinned session still carries B's answer.
    let back = after.run_one(&udp6(B, 5000, wkp(POOL), a_port, 64, b"hello A"));
    assert_frame(&back, 0, &udp6_out(wkp(POOL), t, A, 6000, 63, b"hello A"), "B -> A after restart");
}

/// A burst of a new session in one batch opens one session, not one per
/// datagram: its binding is referenced once, and so is free again once the
/// session expires.
#[test]
fn a_new_sessions_burst_in_one_batch_opens_it_once() {
    let mut h = nat64();
    h.ctx.now = 1000;
    let burst: Vec<Vec<u8>> = (0..4).map(|_| udp6(A, 40000, wkp(SERVER1), 53, 64, b"query")).collect();
    let mut ports = Vec::new();
    h.run(&burst, |_, v, out| {
        assert_eq!(v, Verdict::Forward(1));
        ports.push(source(out).1);
    });
    assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    assert_eq!(h.ctx.conntrack.len(), 2, "one session (two entries)");
    assert_eq!(h.ctx.conntrack.counters().updates, 0, "no session overwritten");
    assert_eq!(h.ctx.snat[0].bindings(), 1);
    // Past the UDP session timeout (5 min) the sweep frees the binding.
    h.ctx.now += 301;
    for _ in 0..(4096 / 8 + 1) {
        h.run(&[] as &[Vec<u8>], |_, _, _| {});
    }
    assert!(h.ctx.conntrack.is_empty());
    assert_eq!(h.ctx.snat[0].bindings(), 0, "the binding died with its session");
}

/// An ICMPv6 error from B's stack (Port Unreachable, RFC 4443 §3.1)
/// addressed to `dst`, quoting `quote` (an IPv6 packet as B got it).
fn unreachable6(src: [u8; 16], dst: [u8; 16], hop: u8, mac: ([u8; 6], [u8; 6]), quote: &[u8]) -> Vec<u8> {
    let port = Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port);
    w(|v| PacketBuilder::ethernet2(mac.0, mac.1).ipv6(src, dst, hop).icmpv6(port).write(v, quote).unwrap())
}

//= https://www.rfc-editor.org/rfc/rfc6146#section-3.8
// (paraphrase) Hairpinned packets are handled as if translated to IPv4
// and back; an ICMP error about one is matched to its session by the
// packet it quotes (RFC 6146 §3.4) and translated with that session.
/// B refuses a datagram A hairpinned to it: the error reaches A as
/// translating it to IPv4 and back would deliver it. It comes from B's
/// binding as A addresses it (prefix + pool address), its hop limit one
/// less, and it quotes the datagram as A sent it (A's own address and
/// port, B's binding), every checksum right (the expected frame is built
/// by etherparse).
#[test]
fn an_error_about_a_hairpinned_packet_reaches_its_sender() {
    let mut h = nat64();
    let t = bind_udp(&mut h, B, 5000);
    let got = h.run_one(&udp6(A, 6000, wkp(POOL), t, 64, b"hello B"));
    assert_eq!(got.0, Verdict::Forward(0));
    let (_, a_port) = source(&got.1);
    let err = unreachable6(B, wkp(POOL), 64, (ANY_MAC, PORT0_MAC), &got.1[14..]);
    let quote = w(|v| PacketBuilder::ipv6(A, wkp(POOL), 63).udp(6000, t).write(v, b"hello B").unwrap());
    let want = unreachable6(wkp(POOL), A, 63, (PORT0_MAC, V6_HOP_MAC), &quote);
    assert_frame(&h.run_one(&err), 0, &want, "port unreachable from B");
    // And the other way: A refuses B's answer.
    let back = h.run_one(&udp6(B, 5000, wkp(POOL), a_port, 64, b"hello A"));
    assert_eq!(back.0, Verdict::Forward(0));
    let err = unreachable6(A, wkp(POOL), 64, (ANY_MAC, PORT0_MAC), &back.1[14..]);
    let quote = w(|v| PacketBuilder::ipv6(B, wkp(POOL), 63).udp(5000, a_port).write(v, b"hello A").unwrap());
    let want = unreachable6(wkp(POOL), B, 63, (PORT0_MAC, V6_HOP_MAC), &quote);
    assert_frame(&h.run_one(&err), 0, &want, "port unreachable from A");
    // The NAT64 is a router: an error whose hop limit runs out here is
    // dropped and counted, never answered with another error.
    let err = unreachable6(A, wkp(POOL), 1, (ANY_MAC, PORT0_MAC), &back.1[14..]);
    assert_eq!(h.run_one(&err).0, Verdict::Drop(DropReason::Untranslatable));
    assert_eq!(h.detail("untranslatable/error_expired"), 1);
}
