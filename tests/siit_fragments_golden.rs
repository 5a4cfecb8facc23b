//! Golden tests for SIIT fragmentation (RFC 7915 §4, §4.1) through the
//! `siit` pipeline (pipelines/siit.toml): an IPv4 packet without DF whose
//! translation exceeds `lowest_ipv6_mtu` leaves as IPv6 fragments.
//!
//! The expected packets come from etherparse 0.16 (the whole translated
//! datagram, its checksum computed by etherparse) cut into RFC 8200 §4.5
//! fragments by hand here; reassembling Shunt's output must give the
//! datagram back.

use etherparse::PacketBuilder;
use shunt::pipeline::Verdict;
// The client's MAC, the IPv4 side's port (0) and the IPv6 side's port (1).
use shunt_testkit::addrs::{
    CLIENT as CLIENT4, CLIENT_ROUTER_MAC as CLIENT_MAC, PORT0_MAC as PORT0, PORT1_MAC as PORT1,
};
use shunt_testkit::frames::{set_v4, w};
use shunt_testkit::{Fixture, Harness};

/// shunt-be6, the IPv6 next hop of pipelines/siit.toml.
const V6_NEXT_HOP: [u8; 6] = [2, 0, 0, 0, 2, 0x15];
/// 64:ff9b:1::10.0.1.2 (the siit prefix).
const CLIENT6: [u8; 16] = [0, 0x64, 0xff, 0x9b, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 1, 2];
/// 10.0.200.21 ↔ fd00:2::21 (EAM).
const HOST4: [u8; 4] = [10, 0, 200, 21];
const HOST6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x21];
const ID: u16 = 0xbeef;

fn harness(lowest: Option<i64>) -> Harness {
    let f = Fixture::load("siit");
    match lowest {
        Some(m) => f.set("siit.lowest_ipv6_mtu", m).harness(),
        None => f.harness(),
    }
}

/// IPv4 UDP from the client, `payload` bytes, TTL 64, Identification
/// [`ID`], flags/offset word `flags_off` (DF clear unless given).
fn v4_udp(payload: &[u8], flags_off: u16) -> Vec<u8> {
    let mut f = w(|v| {
        PacketBuilder::ethernet2(CLIENT_MAC, PORT0)
            .ipv4(CLIENT4, HOST4, 64)
            .udp(4000, 5000)
            .write(v, payload)
            .unwrap()
    });
    set_v4(&mut f, 14, ID, flags_off);
    f
}

/// The IPv6 datagram the IPv4 one translates to, whole (hop limit 63).
fn v6_udp_whole(payload: &[u8]) -> Vec<u8> {
    w(|v| {
        PacketBuilder::ethernet2(PORT1, V6_NEXT_HOP)
            .ipv6(CLIENT6, HOST6, 63)
            .udp(4000, 5000)
            .write(v, payload)
            .unwrap()
    })
}

/// RFC 8200 §4.5 by hand: the upper-layer bytes `data` (from byte
/// `base_off` of the original datagram) cut into pieces of `chunk` bytes,
/// each behind the L2 and IPv6 header of `whole` (Next Header 44, its own
/// Payload Length) and a Fragment header (Next Header `nh`, offset, M,
/// Identification [`ID`] with high-order bits zero). `last_m`: M of the last.
fn cut(whole_hdr: &[u8], nh: u8, data: &[u8], base_off: usize, chunk: usize, last_m: bool) -> Vec<Vec<u8>> {
    let pieces: Vec<&[u8]> = data.chunks(chunk).collect();
    let n = pieces.len();
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut f = whole_hdr[..14 + 40].to_vec();
            f[14 + 4..14 + 6].copy_from_slice(&((8 + piece.len()) as u16).to_be_bytes());
            f[14 + 6] = 44;
            let off = (base_off + i * chunk) as u16;
            let m = i + 1 < n || last_m;
            f.extend_from_slice(&[nh, 0]);
            f.extend_from_slice(&(off | u16::from(m)).to_be_bytes());
            f.extend_from_slice(&u32::from(ID).to_be_bytes());
            f.extend_from_slice(piece);
            f
        })
        .collect()
}

/// Every output is forwarded on the IPv6 port; returns the frames.
fn forwarded(out: Vec<(Verdict, Vec<u8>)>) -> Vec<Vec<u8>> {
    out.into_iter()
        .map(|(v, b)| {
            assert_eq!(v, Verdict::Forward(1), "out the IPv6 side");
            b
        })
        .collect()
}

/// RFC 8200 §4.5 reassembly of `frags` (one datagram, in any order):
/// the upper-layer bytes, checking offsets, M flags and the headers.
fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut last_seen = false;
    for f in frags {
        assert_eq!(f[14 + 6], 44, "a Fragment header follows the IPv6 header");
        let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
        assert_eq!(f.len(), 14 + 40 + plen);
        let fo = u16::from_be_bytes([f[14 + 42], f[14 + 43]]);
        let (off, more) = (usize::from(fo & 0xfff8), fo & 1 == 1);
        let piece = &f[14 + 48..];
        assert!(!more || piece.len() % 8 == 0, "non-final pieces are multiples of 8");
        last_seen |= !more;
        if data.len() < off + piece.len() {
            data.resize(off + piece.len(), 0);
        }
        data[off..off + piece.len()].copy_from_slice(piece);
    }
    assert!(last_seen, "a last fragment (M clear)");
    data
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-4
// (paraphrase) If the DF flag is not set and the IPv4 packet will result in
// an IPv6 packet larger than lowest-ipv6-mtu, the translator MUST fragment
// it so that it fits in IPv6 packets of at most that size.
#[test]
fn df_clear_udp_larger_than_lowest_ipv6_mtu_leaves_as_fragments() {
    let mut h = harness(None);
    let payload: Vec<u8> = (0..2972u32).map(|i| (i * 7 % 251) as u8).collect();
    let whole = v6_udp_whole(&payload);
    let out = forwarded(h.run_all(&v4_udp(&payload, 0)));
    // 2980 bytes of UDP: 1232 + 1232 + 516 (1280 − 40 − 8 = 1232, a multiple of 8).
    let want = cut(&whole, 17, &whole[14 + 40..], 0, 1232, false);
    assert_eq!(out.len(), 3);
    for (i, (got, want)) in out.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "fragment {i}");
        assert!(got.len() - 14 <= 1280);
    }
    assert_eq!(reassemble(&out), whole[14 + 40..], "reassembles to the translated datagram");
}

#[test]
fn lowest_ipv6_mtu_sets_the_fragment_size_and_the_egress_mtu_caps_it() {
    let payload = vec![0x42u8; 2972];
    let whole = v6_udp_whole(&payload);
    // 1500: 1452 bytes a piece (1500 − 48, down to a multiple of 8 = 1448).
    let out = forwarded(harness(Some(1500)).run_all(&v4_udp(&payload, 0)));
    assert_eq!(out, cut(&whole, 17, &whole[14 + 40..], 0, 1448, false));
    // 9000 is above the 1500-byte egress link: the link's MTU wins.
    let out = forwarded(harness(Some(9000)).run_all(&v4_udp(&payload, 0)));
    assert_eq!(out, cut(&whole, 17, &whole[14 + 40..], 0, 1448, false));
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-4
//# When the IPv4 sender does not set the DF bit, the translator MUST NOT
//# include the Fragment Header for the non-fragmented IPv6 packets.
#[test]
fn df_clear_packet_that_fits_stays_whole() {
    let mut h = harness(None);
    let payload = vec![0x11u8; 1260 - 28]; // exactly 1280 bytes in IPv6
    let out = forwarded(h.run_all(&v4_udp(&payload, 0)));
    assert_eq!(out, vec![v6_udp_whole(&payload)]);
}

#[test]
fn ipv4_fragments_split_again_with_their_offsets() {
    let mut h = harness(None);
    // A first fragment (MF, offset 0) of 1480 bytes of UDP: 1232 + 248,
    // both pieces with M set (more of the datagram follows).
    let payload = vec![0x33u8; 1472];
    let out = forwarded(h.run_all(&v4_udp(&payload, 0x2000)));
    // Its UDP checksum covers the whole datagram (here all in this
    // fragment): the IPv4 one adjusted for the pseudo-header (§4.5) equals
    // the one etherparse computes over IPv6.
    let whole = v6_udp_whole(&payload);
    assert_eq!(out, cut(&whole, 17, &whole[14 + 40..], 0, 1232, true));

    // A last fragment (MF clear, offset 185 × 8 = 1480) of 1480 data bytes:
    // pieces at 1480 and 2712, M set on all but the last.
    let raw: Vec<u8> = (0..1480u32).map(|i| i as u8).collect();
    let mut v4 = w(|v| {
        PacketBuilder::ethernet2(CLIENT_MAC, PORT0)
            .ipv4(CLIENT4, HOST4, 64)
            .write(v, 17.into(), &raw)
            .unwrap()
    });
    set_v4(&mut v4, 14, ID, 185);
    let out = forwarded(h.run_all(&v4));
    let whole = w(|v| {
        PacketBuilder::ethernet2(PORT1, V6_NEXT_HOP)
            .ipv6(CLIENT6, HOST6, 63)
            .write(v, 17.into(), &raw)
            .unwrap()
    });
    assert_eq!(out, cut(&whole, 17, &raw, 1480, 1232, false));
}

#[test]
fn df_clear_echo_request_is_fragmented_with_its_icmpv6_checksum_whole() {
    let mut h = harness(None);
    let payload: Vec<u8> = (0..1992u32).map(|i| i as u8).collect();
    let mut v4 = w(|v| {
        PacketBuilder::ethernet2(CLIENT_MAC, PORT0)
            .ipv4(CLIENT4, HOST4, 64)
            .icmpv4_echo_request(7, 1)
            .write(v, &payload)
            .unwrap()
    });
    set_v4(&mut v4, 14, ID, 0);
    let whole = w(|v| {
        PacketBuilder::ethernet2(PORT1, V6_NEXT_HOP)
            .ipv6(CLIENT6, HOST6, 63)
            .icmpv6_echo_request(7, 1)
            .write(v, &payload)
            .unwrap()
    });
    let out = forwarded(h.run_all(&v4));
    assert_eq!(out, cut(&whole, 58, &whole[14 + 40..], 0, 1232, false));
    assert_eq!(reassemble(&out), whole[14 + 40..]);
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-4.1
//# If the DF bit is set and the MTU of the next-hop interface is less
//# than the total length value of the IPv4 packet plus 20, the
//# translator MUST send an ICMPv4 "Fragmentation Needed" error message
//# to the IPv4 source address.
#[test]
fn df_set_still_gets_fragmentation_needed_without_a_fragment_header_counted() {
    let mut h = harness(None);
    let out = h.run_all(&v4_udp(&vec![0u8; 1600], 0x4000));
    assert_eq!(out.len(), 1);
    let (v, b) = &out[0];
    assert_eq!(*v, Verdict::Forward(0), "back to the IPv4 sender");
    let icmp = &b[14 + 20..];
    assert_eq!((icmp[0], icmp[1]), (3, 4));
    // 1500 − 20: no Fragment header would have been added.
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1480);
}
