//! Pipeline behaviour that needs whole pipelines, a clock and a config:
//! SNAT ports given back by expiry, a new flow's burst in one batch, and
//! translation sized by each port's MTU.

use shunt::pipeline::build::PortInfo;
use shunt::pipeline::{DropReason, Verdict};
use shunt_testkit::{Fixture, Harness};

/// A UDP datagram from the client to the DNS VIP.
fn udp(sport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0xff, 0])
        .ipv4([10, 0, 1, 2], [10, 0, 100, 1], 64)
        .udp(sport, 53)
        .write(&mut f, b"query")
        .unwrap();
    f
}

#[test]
fn expired_flows_give_their_snat_port_back() {
    let mut h = udp_service();
    let full = h.ctx.snat[0].available();
    h.ctx.now = 1000;
    let frames: Vec<Vec<u8>> = (0..64).map(|i| udp(10_000 + i)).collect();
    let mut forwarded = 0;
    h.run(&frames, |_, v, _| forwarded += usize::from(matches!(v, Verdict::Forward(_))));
    assert_eq!(forwarded, 64);
    assert_eq!(h.ctx.snat[0].available(), full - 64, "one port per flow");
    // Still live just before the UDP timeout...
    h.ctx.now = 1029;
    h.run(&[] as &[Vec<u8>], |_, _, _| {});
    assert_eq!(h.ctx.snat[0].available(), full - 64);
    // ...and reclaimed by amortised expiry after it: ports come back
    // only once their flows are dead, never while in use.
    h.ctx.now = 1031;
    for _ in 0..(4096 / 64 + 1) {
        h.run(&[] as &[Vec<u8>], |_, _, _| {});
    }
    assert_eq!(h.ctx.snat[0].available(), full);
    assert!(h.ctx.conntrack.is_empty(), "both directions' entries are gone");
}

/// An IPv4 UDP datagram with DF from `sport` to the siit fixture's mapped
/// host (port 2000).
fn to_mapped_host(ttl: u8, sport: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 0xff, 0])
        .ipv4([10, 0, 1, 2], [10, 0, 200, 21], ttl)
        .udp(sport, 2000)
        .write(&mut f, body)
        .unwrap();
    f
}

/// `len` bytes of IP packet to the mapped host.
fn v4(len: usize) -> Vec<u8> {
    to_mapped_host(64, 1000, &vec![7; len - 28])
}

/// The egress MTU comes from the port, not a constant: with a 1400-byte
/// IPv6 link, 1380 bytes of IPv4 (1400 in IPv6) pass and 1381 get
/// Fragmentation Needed with next-hop MTU 1380 (RFC 7915 §4: MTU − 20).
#[test]
fn translation_respects_each_ports_mtu() {
    let config = Fixture::load("siit").config();
    let ports = [
        PortInfo { interface: 0, mac: [2, 0, 0, 0, 0xff, 0], mtu: 1500 },
        PortInfo { interface: 1, mac: [2, 0, 0, 0, 0xff, 1], mtu: 1400 },
    ];
    let mut h = Harness::new(&config, Some(&ports)).unwrap();
    let (v, out) = h.run_one(&v4(1380));
    assert_eq!(v, Verdict::Forward(1));
    assert_eq!(out.len(), 14 + 1400);
    let (v, out) = h.run_one(&v4(1381));
    assert_eq!(v, Verdict::Forward(0), "bounced to the sender");
    let icmp = &out[14 + 20..];
    assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1380);
}

/// The l4lb fixture cut to one UDP service on port 53 with one backend and
/// a one-address SNAT pool.
fn udp_service() -> Harness {
    Fixture::load("l4lb")
        .remove("service.web6")
        .truncate("service.web.backends", 1)
        .set("service.web.protocol", "udp")
        .set("service.web.port", 53)
        .set("service.web.snat_pool", "10.0.3.7/32")
        .set("service.web.maglev_table_size", 251)
        .pin_backend_macs()
        .set("conntrack.entries_per_worker", 4096)
        .set("conntrack.udp", 30)
        .harness()
}

/// A burst of a new flow arrives in one batch: its packets all take the
/// binding the first one opened (one SNAT port, two entries), as they
/// would a batch apart; and so does the next batch's.
#[test]
fn a_new_flows_burst_in_one_batch_opens_it_once() {
    let mut h = udp_service();
    let full = h.ctx.snat[0].available();
    h.ctx.now = 1000;
    // Two flows interleaved, four datagrams each.
    let frames: Vec<Vec<u8>> = (0..8).map(|i| udp(10_000 + i % 2)).collect();
    let mut sports = Vec::new();
    h.run(&frames, |_, v, out| {
        assert!(matches!(v, Verdict::Forward(_)), "{v:?}");
        sports.push(u16::from_be_bytes([out[34], out[35]]));
    });
    assert_ne!(sports[0], sports[1], "two flows, two ports");
    for (i, p) in sports.iter().enumerate() {
        assert_eq!(*p, sports[i % 2], "datagram {i} left by its flow's port: {sports:?}");
    }
    assert_eq!(full - h.ctx.snat[0].available(), 2, "one SNAT port per flow");
    assert_eq!(h.ctx.conntrack.len(), 4, "two entries per flow");
    assert_eq!(h.ctx.conntrack.counters().updates, 0, "no binding overwritten");
    h.run(&frames[..2], |i, _, out| assert_eq!(u16::from_be_bytes([out[34], out[35]]), sports[i]));
}

/// A datagram to the mapped host whose TTL runs out here.
fn expiring(sport: u16) -> Vec<u8> {
    to_mapped_host(1, sport, b"ttl 1")
}

/// Sends a batch of 64 expiring datagrams; returns how many Time Exceeded
/// errors came back (ICMPv4 type 11 out the ingress port) and how many
/// were refused by the error limit.
fn time_exceeded(h: &mut Harness) -> (usize, usize) {
    let (sent, limited, _) = time_exceeded_unbuilt(h);
    (sent, limited)
}

/// [`time_exceeded`], and how many of the dropped packets left the
/// pipeline as they came, no error built over them.
fn time_exceeded_unbuilt(h: &mut Harness) -> (usize, usize, usize) {
    let frames: Vec<Vec<u8>> = (0..64).map(expiring).collect();
    let (mut sent, mut limited, mut unbuilt) = (0, 0, 0);
    h.run(&frames, |i, v, out| match v {
        Verdict::Forward(0) if out[14 + 9] == 1 && out[14 + 20] == 11 => sent += 1,
        Verdict::Drop(DropReason::ErrorRateLimited) => {
            limited += 1;
            unbuilt += usize::from(out == &frames[i][..]);
        }
        v => panic!("{v:?}"),
    });
    (sent, limited, unbuilt)
}

//= https://www.rfc-editor.org/rfc/rfc4443#section-2.4
//# (f) Finally, in order to limit the bandwidth and forwarding costs
//# incurred by originating ICMPv6 error messages, an IPv6 node MUST limit
//# the rate of ICMPv6 error messages it originates.
/// The errors a worker originates are a token bucket of `error_rate` a
/// second (burst `error_burst`): a flood of expiring packets gets that
/// many answers a second, the rest dropped and counted.
#[test]
fn errors_are_limited_to_the_error_rate() {
    let mut h =
        Fixture::load("siit").set("dataplane.error_rate", 10).set("dataplane.error_burst", 20).harness();
    h.ctx.now = 100;
    assert_eq!(time_exceeded(&mut h), (20, 44), "the burst, then nothing");
    // Spent until the next second: no error is even built over them.
    assert_eq!(time_exceeded_unbuilt(&mut h), (0, 64, 64), "the same second");
    h.ctx.now += 1;
    assert_eq!(time_exceeded(&mut h), (10, 54), "a second's worth of tokens");
    h.ctx.now += 5;
    assert_eq!(time_exceeded(&mut h), (20, 44), "refilled up to the burst");
    // The default, Linux's 1000 a second, answers a whole batch.
    let mut h = Fixture::load("siit").harness();
    h.ctx.now = 100;
    assert_eq!(time_exceeded(&mut h), (64, 0));
}

/// With `error_rate_per_destination`, a sender drawing errors past its own
/// limit is refused while another sender's errors still go out: a flood
/// from one host does not spend the answers (Packet Too Big, Time
/// Exceeded) everyone else needs.
#[test]
fn a_destination_past_its_error_limit_leaves_the_rest_for_others() {
    let mut h = Fixture::load("siit")
        .set("dataplane.error_rate_per_destination", 1)
        .set("dataplane.error_burst_per_destination", 6)
        .harness();
    h.ctx.now = 100;
    assert_eq!(time_exceeded(&mut h), (6, 58), "the flooder: its burst of 6, as Linux's per-peer limit");
    // Another client, same batch size, same second.
    let mut other = expiring(7);
    other[26..30].copy_from_slice(&[10, 0, 1, 3]);
    let c =
        etherparse::Ipv4HeaderSlice::from_slice(&other[14..34]).unwrap().to_header().calc_header_checksum();
    other[24..26].copy_from_slice(&c.to_be_bytes());
    let (v, out) = h.run_one(&other);
    assert_eq!(v, Verdict::Forward(0), "the other client's error goes out");
    assert_eq!((out[14 + 9], out[14 + 20], &out[30..34]), (1, 11, &[10, 0, 1, 3][..]), "Time Exceeded to it");
    h.ctx.now += 1;
    assert_eq!(time_exceeded(&mut h), (1, 63), "the flooder: a second's worth");
}

/// A UDP datagram from the client to `dst`:`dport`.
fn udp_to(dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0xff, 0])
        .ipv4([10, 0, 1, 2], dst, 64)
        .udp(sport, dport)
        .write(&mut f, b"query")
        .unwrap();
    f
}

/// New flows in one batch to one address but other ports, and to an SNAT
/// pool address, are each classified for themselves, whatever the packet
/// before them asked (the miss path remembers the last destination).
#[test]
fn each_new_flow_in_a_batch_is_classified_by_its_own_destination() {
    let mut h = udp_service();
    h.ctx.now = 1000;
    let (vip, pool) = ([10, 0, 100, 1], [10, 0, 3, 7]);
    let frames = [
        udp_to(vip, 20_000, 53),
        udp_to(vip, 20_001, 54),
        udp_to(vip, 20_002, 53),
        udp_to(pool, 20_003, 53),
        udp_to(pool, 20_004, 54),
        udp_to(vip, 20_005, 53),
        udp_to(vip, 20_006, 53),
    ];
    let mut verdicts = Vec::new();
    h.run(&frames, |_, v, _| verdicts.push(v));
    let forward = |v: &Verdict| matches!(v, Verdict::Forward(_));
    assert!(forward(&verdicts[0]) && forward(&verdicts[2]), "{verdicts:?}");
    assert_eq!(verdicts[1], Verdict::Drop(DropReason::NoFlow), "no service on port 54");
    assert_eq!(verdicts[3], Verdict::Drop(DropReason::WrongSide), "a reply from the client side");
    assert_eq!(verdicts[4], Verdict::Drop(DropReason::WrongSide), "a reply from the client side");
    assert!(forward(&verdicts[5]) && forward(&verdicts[6]), "{verdicts:?}");
}

/// The UDP datagram of `udp` from source MAC `src` to destination MAC `dst`.
fn udp_between(src: [u8; 6], dst: [u8; 6], sport: u16) -> Vec<u8> {
    let mut f = udp(sport);
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// A frame is ours when all six bytes of its destination MAC are its
/// port's, whatever the source MAC after them; anything shorter than an
/// Ethernet header is malformed.
#[test]
fn a_frame_for_another_mac_is_a_martian() {
    let mut h = udp_service();
    h.ctx.now = 1000;
    let (client, port) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0xff, 0]);
    let frames = [
        udp_between(client, port, 30_000),
        udp_between(client, [2, 0, 0, 0, 0xff, 0x77], 30_001),
        udp_between(client, [0x12, 0, 0, 0, 0xff, 0], 30_002),
        udp_between([0xab, 0xcd, 0, 0, 0, 1], port, 30_003),
        udp_between(client, port, 30_004)[..13].to_vec(),
    ];
    let mut verdicts = Vec::new();
    h.run(&frames, |_, v, _| verdicts.push(v));
    let martian = Verdict::Drop(DropReason::Martian);
    assert!(matches!(verdicts[0], Verdict::Forward(_)), "{verdicts:?}");
    assert_eq!(verdicts[1..3], [martian, martian], "another host's MAC, last or first byte");
    assert!(matches!(verdicts[3], Verdict::Forward(_)), "the source MAC is not compared: {verdicts:?}");
    assert_eq!(verdicts[4], Verdict::Drop(DropReason::Malformed));
}
