//! Golden tests for the RFC 7915 translator: every expected frame is built
//! independently (etherparse 0.16 `PacketBuilder`, or by hand from the RFC
//! for IPv6 Fragment headers and IPv4 flag fields), never from the
//! translator's output.
//!
//! Topology: IPv4 Internet hosts map through the Well-Known Prefix
//! `64:ff9b::/96`; the IPv6 site `2001:db8:6::/120` is explicitly mapped
//! (RFC 7757) to `192.0.2.0/24`.

use std::sync::OnceLock;

use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep};
use shunt::nat46::*;

use shunt_testkit::addrs::{RFC6052_EXAMPLES, RFC6052_V4};
use shunt_testkit::frames::{add_frag_hdr, csum, set_v4, w};
// `e()`: the Ethernet header of every frame handed to the translator.
use shunt_testkit::harness::{translate, with_headroom, xlat_back, xlat_in as e, HEADROOM};

const H4: [u8; 4] = [198, 51, 100, 10]; // IPv4 Internet host
const H4_6: [u8; 16] = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 198, 51, 100, 10];
const R4: [u8; 4] = [203, 0, 113, 1]; // IPv4 router
const R4_6: [u8; 16] = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 203, 0, 113, 1];
const S6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x21]; // IPv6 site host
const S6_4: [u8; 4] = [192, 0, 2, 0x21];
const R6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]; // IPv6 site router
const R6_4: [u8; 4] = [192, 0, 2, 1];

/// The site's EAM, built once for every test.
fn eam() -> &'static EamTable {
    static EAM: OnceLock<EamTable> = OnceLock::new();
    EAM.get_or_init(|| {
        let mut t = EamTable::with_capacity(2);
        t.insert(Eam { v4: [192, 0, 2, 0], v4_len: 24, v6: S6, v6_len: 120 }).unwrap();
        t
    })
}

/// 4->6 (Internet -> site) and 6->4 (site -> Internet) configs.
fn cfgs(mtu: u16) -> (Config<'static>, Config<'static>) {
    let wkp = Mapper::prefix(WELL_KNOWN_PREFIX);
    let site = Mapper::eam(eam());
    let base = Config {
        src: wkp,
        dst: site,
        mtu,
        udp_zero_checksum: UdpZeroChecksum::Compute,
        rfc6791: Rfc6791::default(),
    };
    (base, Config { src: site, dst: wkp, ..base })
}

/// `frame` through the translator with the default configs (MTU 1500):
/// IPv4 → IPv6 when `to_v6`, else IPv6 → IPv4.
fn xlat(frame: &[u8], to_v6: bool) -> Result<Vec<u8>, Drop> {
    let (c46, c64) = cfgs(1500);
    translate(frame, to_v6, if to_v6 { &c46 } else { &c64 })
}

/// An Internet host's packet to the site, with hop count `hop`: as it
/// reaches the translator over IPv4, and as the translator must send it on
/// over IPv6, with the same transport header and payload (written by `l4`).
fn inbound(hop: u8, l4: impl Fn(PacketBuilderStep<IpHeaders>, &mut Vec<u8>)) -> (Vec<u8>, Vec<u8>) {
    (w(|v| l4(e().ipv4(H4, S6_4, hop), v)), w(|v| l4(e().ipv6(H4_6, S6, hop), v)))
}

/// A site host's packet to the Internet: over IPv6 as it reaches the
/// translator, and over IPv4 as etherparse writes it (DF set,
/// Identification 0), which the test adjusts to what the translator sends.
fn outbound(hop: u8, l4: impl Fn(PacketBuilderStep<IpHeaders>, &mut Vec<u8>)) -> (Vec<u8>, Vec<u8>) {
    (w(|v| l4(e().ipv6(S6, H4_6, hop), v)), w(|v| l4(e().ipv4(S6_4, H4, hop), v)))
}

// ------------------------------------------------------------------ TCP/UDP

//= https://www.rfc-editor.org/rfc/rfc7915#section-4.1
// Traffic Class = TOS, Hop Limit = TTL, Next Header = Protocol; TCP checksum
// updated for the pseudo-header (§4.5). No Fragment header for DF packets.
#[test]
fn tcp_4to6() {
    let (input, want) = inbound(61, |ip, v| ip.tcp(40000, 443, 7, 1000).ack(9).write(v, b"hello").unwrap());
    assert_eq!(xlat(&input, true).unwrap(), want);
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-5.1
// DF clear for <= 1260 bytes, ID 0, TTL = Hop Limit (§5); TCP checksum (§5.5).
#[test]
fn tcp_6to4_and_dscp() {
    let (mut input, mut want) = outbound(17, |ip, v| ip.tcp(5555, 80, 1, 100).syn().write(v, b"x").unwrap());
    input[14] = 0x6b; // traffic class 0xb8 (EF)
    input[15] = 0x80;
    want[15] = 0xb8;
    set_v4(&mut want, 14, 0, 0);
    assert_eq!(xlat(&input, false).unwrap(), want);
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-5
//# When the resulting IPv4 packet is smaller than or equal to 1260
//# bytes, the translator MUST send the packet with a cleared Don't
//# Fragment bit.  Otherwise, the packet MUST be sent with the Don't
//# Fragment bit set.
#[test]
fn udp_both_ways_and_df_threshold() {
    let (input, want) = inbound(5, |ip, v| ip.udp(53, 3333).write(v, b"answer").unwrap());
    assert_eq!(xlat(&input, true).unwrap(), want);

    for n in [1232usize, 1233] {
        let data = vec![0xab; n];
        let (input, mut want) = outbound(64, |ip, v| ip.udp(1, 2).write(v, &data).unwrap());
        // 20 + 8 + 1232 = 1260: DF clear; one byte more: DF set.
        set_v4(&mut want, 14, 0, if n > 1232 { 0x4000 } else { 0 });
        assert_eq!(xlat(&input, false).unwrap(), want, "n {n}");
    }
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-4.5
// IPv4 UDP checksum 0: compute the IPv6 checksum (configurable) or drop;
// fragmented zero-checksum UDP is dropped.
#[test]
fn udp_zero_checksum() {
    let (mut c46, _) = cfgs(1500);
    let (mut input, want) = inbound(5, |ip, v| ip.udp(53, 3333).write(v, b"odd").unwrap());
    input[40..42].fill(0);
    assert_eq!(translate(&input, true, &c46).unwrap(), want);
    let mut frag = input.clone();
    set_v4(&mut frag, 14, 7, 0x2000);
    assert_eq!(translate(&frag, true, &c46), Err(Drop::UdpZeroChecksum));
    c46.udp_zero_checksum = UdpZeroChecksum::Drop;
    assert_eq!(translate(&input, true, &c46), Err(Drop::UdpZeroChecksum));
}

#[test]
fn vlan_tag_kept() {
    let vid = etherparse::VlanId::try_new(42).unwrap();
    let input = w(|v| e().single_vlan(vid).ipv4(H4, S6_4, 9).udp(1, 2).write(v, b"q").unwrap());
    let want = w(|v| e().single_vlan(vid).ipv6(H4_6, S6, 9).udp(1, 2).write(v, b"q").unwrap());
    assert_eq!(xlat(&input, true).unwrap(), want);
}

#[test]
fn ipv4_options_are_dropped() {
    let (mut input, want) = inbound(9, |ip, v| ip.udp(1, 2).write(v, b"opt").unwrap());
    // Insert 4 bytes of options (NOP NOP NOP EOL).
    input.splice(34..34, [1, 1, 1, 0]);
    input[14] = 0x46;
    let tot = u16::from_be_bytes([input[16], input[17]]) + 4;
    input[16..18].copy_from_slice(&tot.to_be_bytes());
    input[24..26].fill(0);
    let c = csum(&input[14..38]);
    input[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(xlat(&input, true).unwrap(), want);
}

// ---------------------------------------------------------------- ICMP echo

//= https://www.rfc-editor.org/rfc/rfc7915#section-4.2
// Echo Request/Reply 8/0 -> 128/129, checksum gains the pseudo-header.
#[test]
fn icmp_echo_both_ways() {
    let input = w(|v| e().ipv4(H4, S6_4, 50).icmpv4_echo_request(0x77, 3).write(v, b"ping").unwrap());
    let want = w(|v| e().ipv6(H4_6, S6, 50).icmpv6_echo_request(0x77, 3).write(v, b"ping").unwrap());
    assert_eq!(xlat(&input, true).unwrap(), want);

    let input = w(|v| e().ipv6(S6, H4_6, 50).icmpv6_echo_reply(0x77, 3).write(v, b"pong").unwrap());
    let mut want = w(|v| e().ipv4(S6_4, H4, 50).icmpv4_echo_reply(0x77, 3).write(v, b"pong").unwrap());
    set_v4(&mut want, 14, 0, 0);
    assert_eq!(xlat(&input, false).unwrap(), want);
}

#[test]
fn untranslatable_icmp_dropped() {
    // ICMPv4 Timestamp (13) and ICMPv6 Neighbor Solicitation (135).
    let input = w(|v| e().ipv4(H4, S6_4, 50).icmpv4_raw(13, 0, [0; 4]).write(v, &[0; 12]).unwrap());
    assert_eq!(xlat(&input, true), Err(Drop::Untranslatable));
    let input = w(|v| e().ipv6(S6, H4_6, 255).icmpv6_raw(135, 0, [0; 4]).write(v, &[0; 16]).unwrap());
    assert_eq!(xlat(&input, false), Err(Drop::Untranslatable));
    // ICMP fragments are not translated (§1.2).
    let mut input = w(|v| e().ipv4(H4, S6_4, 50).icmpv4_echo_request(1, 1).write(v, b"x").unwrap());
    set_v4(&mut input, 14, 1, 0x2000);
    assert_eq!(xlat(&input, true), Err(Drop::FragmentedIcmp));
}

// --------------------------------------------------------------- ICMP errors

/// The packet the site host sent (IPv6) and its IPv4 translation, as quoted.
fn quoted_pair() -> (Vec<u8>, Vec<u8>) {
    let data = [0x5a; 24];
    let v6 = w(|v| PacketBuilder::ipv6(S6, H4_6, 3).udp(33434, 33435).write(v, &data).unwrap());
    let mut v4 = w(|v| PacketBuilder::ipv4(S6_4, H4, 3).udp(33434, 33435).write(v, &data).unwrap());
    set_v4(&mut v4, 0, 0, 0);
    (v6, v4)
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-4.3
// ICMPv4 errors from an IPv4 router: type/code mapped (§4.2), inner packet
// translated (TTL kept), ICMPv6 checksum over the pseudo-header.
#[test]
fn icmp4_errors_to_icmp6() {
    let (q6, q4) = quoted_pair();
    // (v4 type, code, rest) -> (v6 type, code, rest)
    let cases: [ErrMap; 6] = [
        ([11, 0], [0; 4], [3, 0], [0; 4]),                        // Time Exceeded
        ([3, 3], [0; 4], [1, 4], [0; 4]),                         // Port unreachable
        ([3, 1], [0; 4], [1, 0], [0; 4]),                         // Host unreachable
        ([3, 13], [0; 4], [1, 1], [0; 4]),                        // Admin prohibited
        ([3, 4], [0, 0, 0x05, 0x78], [2, 0], [0, 0, 0x05, 0x8c]), // Frag needed 1400 -> PTB 1420
        ([12, 0], [9, 0, 0, 0], [4, 0], [0, 0, 0, 6]),            // Param problem: Protocol -> Next Header
    ];
    for (a, ar, b, br) in cases {
        let input = w(|v| e().ipv4(R4, S6_4, 250).icmpv4_raw(a[0], a[1], ar).write(v, &q4).unwrap());
        let want = w(|v| e().ipv6(R4_6, S6, 250).icmpv6_raw(b[0], b[1], br).write(v, &q6).unwrap());
        assert_eq!(xlat(&input, true).unwrap(), want, "{a:?}");
    }
    // Frag needed below 1280 is raised to 1280; protocol unreachable points at Next Header.
    let input = w(|v| e().ipv4(R4, S6_4, 250).icmpv4_raw(3, 4, [0, 0, 2, 0]).write(v, &q4).unwrap());
    let want = w(|v| e().ipv6(R4_6, S6, 250).icmpv6_raw(2, 0, [0, 0, 5, 0]).write(v, &q6).unwrap());
    assert_eq!(xlat(&input, true).unwrap(), want);
    let input = w(|v| e().ipv4(R4, S6_4, 250).icmpv4_raw(3, 2, [0; 4]).write(v, &q4).unwrap());
    let want = w(|v| e().ipv6(R4_6, S6, 250).icmpv6_raw(4, 1, [0, 0, 0, 6]).write(v, &q6).unwrap());
    assert_eq!(xlat(&input, true).unwrap(), want);
    // Pointer with no IPv6 counterpart (Identification) and Source Quench: dropped.
    let input = w(|v| e().ipv4(R4, S6_4, 250).icmpv4_raw(12, 0, [4, 0, 0, 0]).write(v, &q4).unwrap());
    assert_eq!(xlat(&input, true), Err(Drop::Untranslatable));
    let input = w(|v| e().ipv4(R4, S6_4, 250).icmpv4_raw(4, 0, [0; 4]).write(v, &q4).unwrap());
    assert_eq!(xlat(&input, true), Err(Drop::Untranslatable));
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-5.3
#[test]
fn icmp6_errors_to_icmp4() {
    // The quoted packet went from the IPv4 host to the site host.
    let data = [0x33; 20];
    let q6 = w(|v| PacketBuilder::ipv6(H4_6, S6, 9).tcp(80, 5555, 1, 2).write(v, &data).unwrap());
    let mut q4 = w(|v| PacketBuilder::ipv4(H4, S6_4, 9).tcp(80, 5555, 1, 2).write(v, &data).unwrap());
    set_v4(&mut q4, 0, 0, 0);
    let cases: [ErrMap; 6] = [
        ([3, 0], [0; 4], [11, 0], [0; 4]), // Hop limit exceeded
        ([1, 4], [0; 4], [3, 3], [0; 4]),  // Port unreachable
        ([1, 0], [0; 4], [3, 1], [0; 4]),  // No route
        ([1, 1], [0; 4], [3, 10], [0; 4]), // Admin prohibited
        ([2, 0], [0, 0, 0x05, 0x78], [3, 4], [0, 0, 0x05, 0x64]), // PTB 1400 -> frag needed 1380
        ([4, 0], [0, 0, 0, 7], [12, 0], [8, 0, 0, 0]), // Hop Limit -> TTL
    ];
    for (a, ar, b, br) in cases {
        let input = w(|v| e().ipv6(R6, H4_6, 60).icmpv6_raw(a[0], a[1], ar).write(v, &q6).unwrap());
        let mut want = w(|v| e().ipv4(R6_4, H4, 60).icmpv4_raw(b[0], b[1], br).write(v, &q4).unwrap());
        set_v4(&mut want, 14, 0, 0);
        assert_eq!(xlat(&input, false).unwrap(), want, "{a:?}");
    }
    let input = w(|v| e().ipv6(R6, H4_6, 60).icmpv6_raw(4, 1, [0, 0, 0, 6]).write(v, &q6).unwrap());
    let mut want = w(|v| e().ipv4(R6_4, H4, 60).icmpv4_raw(3, 2, [0; 4]).write(v, &q4).unwrap());
    set_v4(&mut want, 14, 0, 0);
    assert_eq!(xlat(&input, false).unwrap(), want);
}

//= https://www.rfc-editor.org/rfc/rfc1812#section-4.3.2.3
// ICMPv4 errors translated from ICMPv6 are truncated to 576 bytes; ICMPv6
// errors translated from ICMPv4 to 1280 (RFC 4443 §2.4 (c)).
#[test]
fn icmp_error_truncation() {
    let data = vec![0x11; 1000];
    let q6 = w(|v| PacketBuilder::ipv6(H4_6, S6, 9).udp(1, 2).write(v, &data).unwrap());
    let mut q4 = w(|v| PacketBuilder::ipv4(H4, S6_4, 9).udp(1, 2).write(v, &data).unwrap());
    set_v4(&mut q4, 0, 0, 0);
    let input = w(|v| e().ipv6(R6, H4_6, 60).icmpv6_raw(3, 0, [0; 4]).write(v, &q6).unwrap());
    let mut want = w(|v| e().ipv4(R6_4, H4, 60).icmpv4_raw(11, 0, [0; 4]).write(v, &q4[..576 - 28]).unwrap());
    set_v4(&mut want, 14, 0, 0);
    assert_eq!(xlat(&input, false).unwrap(), want);

    let data = vec![0x22; 1300];
    let (q6, q4) = {
        let q6 = w(|v| PacketBuilder::ipv6(S6, H4_6, 3).udp(7, 8).write(v, &data).unwrap());
        let mut q4 = w(|v| PacketBuilder::ipv4(S6_4, H4, 3).udp(7, 8).write(v, &data).unwrap());
        set_v4(&mut q4, 0, 0, 0);
        (q6, q4)
    };
    let input = w(|v| e().ipv4(R4, S6_4, 250).icmpv4_raw(11, 0, [0; 4]).write(v, &q4).unwrap());
    let want = w(|v| e().ipv6(R4_6, S6, 250).icmpv6_raw(3, 0, [0; 4]).write(v, &q6[..1280 - 48]).unwrap());
    assert_eq!(xlat(&input, true).unwrap(), want);
}

#[test]
fn inner_echo_is_translated() {
    let q6 = w(|v| PacketBuilder::ipv6(S6, H4_6, 1).icmpv6_echo_request(9, 9).write(v, b"trace").unwrap());
    let mut q4 =
        w(|v| PacketBuilder::ipv4(S6_4, H4, 1).icmpv4_echo_request(9, 9).write(v, b"trace").unwrap());
    set_v4(&mut q4, 0, 0, 0);
    let input = w(|v| e().ipv4(R4, S6_4, 250).icmpv4_raw(11, 0, [0; 4]).write(v, &q4).unwrap());
    let want = w(|v| e().ipv6(R4_6, S6, 250).icmpv6_raw(3, 0, [0; 4]).write(v, &q6).unwrap());
    assert_eq!(xlat(&input, true).unwrap(), want);
}

// ---------------------------------------------------------------- fragments

//= https://www.rfc-editor.org/rfc/rfc7915#section-4.1
// Fragment Header: Next Header = Protocol, offset and M copied,
// Identification low 16 bits = IPv4 Identification.
#[test]
fn fragments_4to6() {
    // First fragment (MF=1, offset 0): UDP header present, checksum updated.
    let data = [0x44u8; 32];
    let (mut input, mut want) = inbound(30, |ip, v| ip.udp(9, 10).write(v, &data).unwrap());
    set_v4(&mut input, 14, 0xbeef, 0x2000);
    add_frag_hdr(&mut want, 14, 0, true, 0xbeef);
    assert_eq!(xlat(&input, true).unwrap(), want);
    // Later fragment (offset 185 * 8, MF=0): payload untouched.
    let raw = [0x99u8; 40];
    let (mut input, mut want) = inbound(30, |ip, v| ip.write(v, 17.into(), &raw).unwrap());
    set_v4(&mut input, 14, 0xbeef, 185);
    add_frag_hdr(&mut want, 14, 185, false, 0xbeef);
    assert_eq!(xlat(&input, true).unwrap(), want);
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-5.1.1
#[test]
fn fragments_6to4() {
    let data = [0x45u8; 64];
    let (mut input, mut want) = outbound(30, |ip, v| ip.tcp(1, 2, 3, 4).write(v, &data).unwrap());
    add_frag_hdr(&mut input, 14, 0, true, 0x1234_abcd);
    set_v4(&mut want, 14, 0xabcd, 0x2000);
    assert_eq!(xlat(&input, false).unwrap(), want);

    let raw = [0x77u8; 48];
    let (mut input, mut want) = outbound(30, |ip, v| ip.write(v, 6.into(), &raw).unwrap());
    add_frag_hdr(&mut input, 14, 300, true, 0x1234_abcd);
    set_v4(&mut want, 14, 0xabcd, 0x2000 | 300);
    assert_eq!(xlat(&input, false).unwrap(), want);
}

#[test]
fn extension_headers_skipped_and_segments_left_refused() {
    let (mut input, mut want) = outbound(30, |ip, v| ip.udp(1, 2).write(v, b"ext").unwrap());
    // Hop-by-Hop (PadN) then Routing with Segments Left 0.
    input[20] = 0;
    input.splice(54..54, [43, 0, 1, 4, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0]);
    let plen = u16::from_be_bytes([input[18], input[19]]) + 16;
    input[18..20].copy_from_slice(&plen.to_be_bytes());
    set_v4(&mut want, 14, 0, 0);
    assert_eq!(xlat(&input, false).unwrap(), want);
    input[65] = 1; // Segments Left
    assert_eq!(xlat(&input, false), Err(Drop::SegmentsLeft));
}

// ------------------------------------------------------- too big / generated

/// (input type/code, rest of header) -> (output type/code, rest of header).
type ErrMap = ([u8; 2], [u8; 4], [u8; 2], [u8; 4]);

const ROUTER: RouterAddrs = RouterAddrs { v4: [192, 0, 2, 254], v6: R6 };

/// `input` through the translator (IPv4 → IPv6 when `to_v6`) with egress
/// MTU `link_mtu`, refused as too big: the MTU the refusal names, and the
/// ICMP error [`build_too_big`] then makes of the frame in the same buffer.
fn too_big(input: &[u8], to_v6: bool, link_mtu: u16) -> (u16, Vec<u8>) {
    let (c46, c64) = cfgs(link_mtu);
    let mut buf = with_headroom(input);
    let r = if to_v6 {
        translate_4to6(&mut buf, HEADROOM, input.len(), &c46)
    } else {
        translate_6to4(&mut buf, HEADROOM, input.len(), &c64)
    };
    let Err(Drop::TooBig { mtu }) = r else { panic!("{r:?}") };
    let (s, l) = build_too_big(&mut buf, HEADROOM, input.len(), &ROUTER, mtu).unwrap();
    (mtu, buf[s..s + l].to_vec())
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-4.1
//# If the DF bit is set and the MTU of the next-hop interface is less
//# than the total length value of the IPv4 packet plus 20, the
//# translator MUST send an ICMPv4 "Fragmentation Needed" error message
//# to the IPv4 source address.
#[test]
fn too_big_4to6_generates_frag_needed() {
    let data = vec![0x10; 1300 - 28];
    let input = w(|v| e().ipv4(H4, S6_4, 64).udp(1, 2).write(v, &data).unwrap());
    let (mtu, error) = too_big(&input, true, 1280);
    assert_eq!(mtu, 1260);
    let mut want = w(|v| {
        xlat_back()
            .ipv4(ROUTER.v4, H4, 64)
            .icmpv4_raw(3, 4, [0, 0, 0x04, 0xec])
            .write(v, &input[14..14 + 548])
            .unwrap()
    });
    set_v4(&mut want, 14, 0, 0);
    assert_eq!(error, want);
    // DF clear: would need fragmentation, which is not implemented.
    let mut nodf = input.clone();
    set_v4(&mut nodf, 14, 0, 0);
    assert_eq!(translate(&nodf, true, &cfgs(1280).0), Err(Drop::NeedsFragmentation));
}

#[test]
fn too_big_6to4_generates_packet_too_big() {
    let data = vec![0x20; 1400];
    let input = w(|v| e().ipv6(S6, H4_6, 64).udp(1, 2).write(v, &data).unwrap());
    let (mtu, error) = too_big(&input, false, 1300);
    assert_eq!(mtu, 1320);
    let want = w(|v| {
        xlat_back()
            .ipv6(R6, S6, 64)
            .icmpv6_raw(2, 0, 1320u32.to_be_bytes())
            .write(v, &input[14..14 + 1232])
            .unwrap()
    });
    assert_eq!(error, want);
}

#[test]
fn time_exceeded_generated_both_families() {
    let input = w(|v| e().ipv6(S6, H4_6, 1).udp(33434, 33434).write(v, b"probe").unwrap());
    let mut buf = with_headroom(&input);
    let (s, l) = build_time_exceeded(&mut buf, HEADROOM, input.len(), &ROUTER).unwrap();
    let want = w(|v| xlat_back().ipv6(R6, S6, 64).icmpv6_raw(3, 0, [0; 4]).write(v, &input[14..]).unwrap());
    assert_eq!(&buf[s..s + l], &want[..]);

    let input = w(|v| e().ipv4(H4, S6_4, 1).udp(33434, 33434).write(v, b"probe").unwrap());
    let mut buf = with_headroom(&input);
    let (s, l) = build_time_exceeded(&mut buf, HEADROOM, input.len(), &ROUTER).unwrap();
    let mut want =
        w(|v| xlat_back().ipv4(ROUTER.v4, H4, 64).icmpv4_raw(11, 0, [0; 4]).write(v, &input[14..]).unwrap());
    set_v4(&mut want, 14, 0, 0);
    assert_eq!(&buf[s..s + l], &want[..]);
    // Never in response to an ICMP error.
    let err = w(|v| e().ipv4(R4, S6_4, 1).icmpv4_raw(11, 0, [0; 4]).write(v, &[0x45; 28]).unwrap());
    let mut buf = with_headroom(&err);
    assert_eq!(build_time_exceeded(&mut buf, HEADROOM, err.len(), &ROUTER), Err(Drop::NestedIcmpError));
}

// ------------------------------------------------------ address mapping

//= https://www.rfc-editor.org/rfc/rfc6052#section-2.4
// Each prefix length of the RFC 6052 table, applied by the translator.
#[test]
fn each_rfc6052_prefix_length() {
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let a = RFC6052_V4;
    for (p, len, want_addr) in RFC6052_EXAMPLES {
        let cfg = Config { src: Mapper::prefix(Prefix64::new(v6(p), len).unwrap()), ..cfgs(1500).0 };
        let input = w(|v| e().ipv4(a, S6_4, 9).udp(1, 2).write(v, b"6052").unwrap());
        let want = w(|v| e().ipv6(v6(want_addr), S6, 9).udp(1, 2).write(v, b"6052").unwrap());
        assert_eq!(translate(&input, true, &cfg).unwrap(), want, "/{len}");
        // And back (6->4 with the same mappers).
        let mut back = w(|v| e().ipv4(a, S6_4, 9).udp(1, 2).write(v, b"6052").unwrap());
        set_v4(&mut back, 14, 0, 0);
        assert_eq!(translate(&want, false, &cfg).unwrap(), back, "/{len}");
    }
}

//= https://www.rfc-editor.org/rfc/rfc7757#section-3.3
// EAM before the prefix; an address in neither is untranslatable.
#[test]
fn eam_and_untranslatable_addresses() {
    let input = w(|v| e().ipv4(H4, [192, 0, 2, 200], 9).udp(1, 2).write(v, b"e").unwrap());
    let mut d = S6;
    d[15] = 200;
    let want = w(|v| e().ipv6(H4_6, d, 9).udp(1, 2).write(v, b"e").unwrap());
    assert_eq!(xlat(&input, true).unwrap(), want);
    let input = w(|v| e().ipv4(H4, [10, 0, 0, 1], 9).udp(1, 2).write(v, b"e").unwrap());
    assert_eq!(xlat(&input, true), Err(Drop::UntranslatableAddr));
    let input = w(|v| {
        e().ipv6([0x20, 1, 0xd, 0xb8, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], H4_6, 9)
            .udp(1, 2)
            .write(v, b"e")
            .unwrap()
    });
    assert_eq!(xlat(&input, false), Err(Drop::UntranslatableAddr));
}
