//! Entry points for fuzz targets (`fuzz/fuzz_targets/*.rs`, cargo-fuzz) and
//! for their corpus regression pass (`tests/fuzz_corpus.rs`, plain
//! `cargo test`).
//!
//! Each function takes arbitrary bytes and must never panic except when it
//! finds a bug: every `assert!` here states a property of Shunt, not of the
//! input. See `docs/ROBUSTNESS.md` for how to run them.
//!
//! * [`wire`]: every header view (`new_checked`, all accessors, the setters
//!   on a scratch copy), the checksum helpers, classification's `dst_key`,
//!   and [`shunt::wire::parse::parse`] with its offset invariants.
//! * [`pipeline`]: one frame through the real L4LB pipelines (a
//!   [`Harness`] built once per thread from [`pipeline_fixture`]); a
//!   forwarded frame must be well formed, its checksums as valid as the
//!   input's, a second copy must translate identically, and the backend's
//!   reply (the output reflected) must come back as VIP → client. The
//!   frame then arrives again as a chain of buffers (multi-buffer), cut
//!   where the input says, up to 9216 bytes.
//! * [`config`]: bytes as UTF-8 TOML through [`Config::parse`]: `Ok` or
//!   `Err`, never a panic.
//!
//! * [`nat46`]: both translators and the ICMP error builders.
//! * [`control`]: bytes as a control-socket request through the same edit
//!   and validation path as the running dataplane's.
//!
//! * [`fragments`]: a sequence of fragments of UDP datagrams to the VIPs
//!   (offsets, lengths, flags, IDs, order and batches from the input)
//!   through the L4LB pipelines with a small fragment table: forwarded
//!   fragments go to the backend with a valid IPv4 header checksum and
//!   the flow's ports, and no held copy outlives its entry.
//!
//! * [`xlat`]: one IP packet through the SIIT or the stateful NAT64
//!   pipeline, from either side (hairpinning, fragmenting, errors).
//!
//! A new target is a `pub fn name(data: &[u8])` here, a
//! `fuzz/fuzz_targets/name.rs`, a seed corpus under `fuzz/corpus/name/`, an
//! entry in [`TARGETS`] and [`run`], and a line in `tests/fuzz_corpus.rs`.

use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use shunt::config::Config;
use shunt::nat46::{
    build_time_exceeded, build_too_big, checksums_valid, translate_4to6, translate_6to4, Mapper, Prefix64,
    Rfc6791, RouterAddrs, UdpZeroChecksum, WELL_KNOWN_PREFIX,
};
use shunt::pipeline::build::PortInfo;
use shunt::pipeline::{DropReason, Verdict, MAX_TAIL};
use shunt::wire::parse::{parse, FragKind, IpVersion, ParsedPacket};
use shunt::wire::{checksum, ethernet, icmp, icmpv6, ip_protocol, ipv4, ipv6, tcp, udp};

use crate::fixtures::Fixture;
use crate::frames::ones_sum;
use crate::harness::{Harness, FRAME, HEADROOM};

// ---------------------------------------------------------------------------
// wire

/// Runs every wire view over `data` (and over the payloads they find).
pub fn wire(data: &[u8]) {
    // Unchecked views on raw bytes: accessors must not panic either.
    ipv4_view(data);
    ipv6_view(data);
    l4_views(data);

    if let Ok(eth) = ethernet::Frame::new_checked(data) {
        let _ = (eth.dst_addr(), eth.src_addr(), eth.outer_ethertype(), eth.is_tagged());
        let _ = (eth.vlan_tci(), eth.vlan_id(), eth.ethertype());
        let off = eth.payload_offset();
        assert!(off <= data.len());
        let payload = eth.payload();
        assert_eq!(payload.len(), data.len() - off);
        ipv4_view(payload);
        ipv6_view(payload);
        let mut scratch = data.to_vec();
        let mut f = ethernet::Frame::new_unchecked(&mut scratch[..]);
        f.set_dst_addr([1; 6]);
        f.set_src_addr([2; 6]);
        f.set_vlan_id(u16::from(data.first().copied().unwrap_or(0)) << 4);
        f.set_ethertype(0x0800);
        let _ = f.payload_mut().len();
    }
    let _ = ethernet::Frame::new_unchecked(data).payload();

    let _ = shunt::pipeline::classify::dst_key(data);
    checksums(data);

    match parse(data) {
        Ok(Some(p)) => parsed_invariants(data, &p),
        Ok(None) => {}
        Err(e) => {
            let _ = (e.as_str(), e.to_string());
        }
    }
}

fn ipv4_view(b: &[u8]) {
    let p = ipv4::Packet::new_unchecked(b);
    let _ = (p.version(), p.header_len(), p.tos(), p.dscp(), p.ecn(), p.total_len(), p.ident());
    let _ = (p.dont_frag(), p.more_frags(), p.frag_offset(), p.is_fragment(), p.ttl(), p.protocol());
    let _ = (p.checksum(), p.src_addr(), p.dst_addr(), p.header(), p.options(), p.verify_checksum());
    let _ = p.payload();
    if let Ok(p) = ipv4::Packet::new_checked(b) {
        assert!(p.header_len() >= ipv4::MIN_HEADER_LEN);
        assert_eq!(p.header().len(), p.header_len());
        assert_eq!(p.payload().len(), usize::from(p.total_len()) - p.header_len());
        l4_views(p.payload());
    }
    let mut s = b.to_vec();
    let mut q = ipv4::Packet::new_unchecked(&mut s[..]);
    let k = b.first().copied().unwrap_or(0);
    q.set_version_and_header_len(usize::from(k & 0x3f));
    q.set_tos(k);
    q.set_dscp(k);
    q.set_total_len(u16::from(k) * 7);
    q.set_ident(0x1234);
    q.set_dont_frag(k & 1 != 0);
    q.set_more_frags(k & 2 != 0);
    q.set_frag_offset(u16::from(k) * 8);
    q.set_ttl(k);
    q.set_protocol(k);
    q.set_checksum(0);
    q.set_src_addr(Ipv4Addr::new(10, 0, 0, k));
    q.set_dst_addr(Ipv4Addr::new(10, 0, 1, k));
    q.fill_checksum();
    let _ = q.decrement_ttl();
    let _ = q.payload_mut().len();
}

fn ipv6_view(b: &[u8]) {
    let p = ipv6::Packet::new_unchecked(b);
    let _ = (p.version(), p.traffic_class(), p.flow_label(), p.payload_len(), p.next_header());
    let _ = (p.hop_limit(), p.src_addr(), p.dst_addr(), p.packet_len(), p.payload());
    let _ = p.upper_layer();
    if let Ok(p) = ipv6::Packet::new_checked(b) {
        assert_eq!(p.packet_len(), ipv6::HEADER_LEN + usize::from(p.payload_len()));
        if let Ok(ul) = p.upper_layer() {
            assert!(ul.offset >= ipv6::HEADER_LEN && ul.offset <= p.packet_len(), "{ul:?}");
            let _ = ul.frag.map(|f| f.is_first());
            if let Some(seg) = b.get(ul.offset..p.packet_len()) {
                l4_views(seg);
            }
        }
    }
    let mut s = b.to_vec();
    let mut q = ipv6::Packet::new_unchecked(&mut s[..]);
    let k = b.first().copied().unwrap_or(0);
    q.set_version();
    q.set_traffic_class(k);
    q.set_flow_label(u32::from(k) << 12);
    q.set_payload_len(u16::from(k) * 9);
    q.set_next_header(k);
    q.set_hop_limit(k);
    q.set_src_addr(Ipv6Addr::LOCALHOST);
    q.set_dst_addr(Ipv6Addr::UNSPECIFIED);
    let _ = q.payload_mut().len();
}

/// Fills the checksum of a copy of `$b` as module `$m`'s view (TCP or UDP:
/// the same methods, no shared trait) for each family's pseudo-header, and
/// checks that it verifies.
macro_rules! fill_then_verify {
    ($m:ident, $b:expr, ($s4:expr, $d4:expr), ($s6:expr, $d6:expr)) => {
        let mut s = $b.to_vec();
        $m::Packet::new_unchecked(&mut s[..]).fill_checksum_v4($s4, $d4);
        assert!($m::Packet::new_unchecked(&s[..]).verify_checksum_v4($s4, $d4), "fill then verify (v4)");
        $m::Packet::new_unchecked(&mut s[..]).fill_checksum_v6($s6, $d6);
        assert!($m::Packet::new_unchecked(&s[..]).verify_checksum_v6($s6, $d6), "fill then verify (v6)");
    };
}

/// What module `$m`'s ICMP or ICMPv6 view of `$b` has in common with the
/// other's (the same methods, no shared trait): the header getters; when
/// the bytes pass `new_checked`, a filled checksum verifies (`$ph`: the
/// pseudo-header's addresses, none for ICMPv4); every setter, the
/// family's own MTU setter `$mtu` too, on a copy.
macro_rules! icmp_view {
    ($m:ident, $b:expr, $k:expr, ($($ph:expr),*), $mtu:ident($v:expr)) => {
        let i = $m::Packet::new_unchecked($b);
        let _ = (i.msg_type(), i.msg_code(), i.checksum(), i.rest_of_header(), i.is_echo(), i.echo_ident());
        if $m::Packet::new_checked($b).is_ok() {
            let mut s = $b.to_vec();
            $m::Packet::new_unchecked(&mut s[..]).fill_checksum($($ph),*);
            let filled = $m::Packet::new_unchecked(&s[..]);
            assert!(filled.verify_checksum($($ph),*), concat!(stringify!($m), ": fill then verify"));
        }
        let mut s = $b.to_vec();
        let mut m = $m::Packet::new_unchecked(&mut s[..]);
        m.set_msg_type($k);
        m.set_msg_code($k);
        m.set_checksum(0);
        m.set_rest_of_header([$k; 4]);
        m.set_echo_ident(1);
        m.set_echo_seq(2);
        m.$mtu($v);
        m.fill_checksum($($ph),*);
        let _ = m.payload_mut().len();
    };
}

/// TCP, UDP, ICMP and ICMPv6 views over the same bytes.
fn l4_views(b: &[u8]) {
    let (s4, d4) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 2));
    let (s6, d6) =
        (Ipv6Addr::LOCALHOST, Ipv6Addr::from([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
    let k = b.first().copied().unwrap_or(0);

    let t = tcp::Packet::new_unchecked(b);
    let _ = (t.src_port(), t.dst_port(), t.seq_number(), t.ack_number(), t.header_len(), t.flags());
    let _ = (t.fin(), t.syn(), t.rst(), t.psh(), t.ack(), t.urg(), t.window(), t.checksum(), t.urgent());
    let _ = (t.options(), t.payload(), t.verify_checksum_v4(s4, d4), t.verify_checksum_v6(s6, d6));
    if let Ok(t) = tcp::Packet::new_checked(b) {
        assert!(t.header_len() >= tcp::MIN_HEADER_LEN && t.header_len() <= b.len());
        assert_eq!(t.payload().len(), b.len() - t.header_len());
        fill_then_verify!(tcp, b, (s4, d4), (s6, d6));
    }
    let mut s = b.to_vec();
    let mut m = tcp::Packet::new_unchecked(&mut s[..]);
    m.set_src_port(1);
    m.set_dst_port(2);
    m.set_seq_number(3);
    m.set_ack_number(4);
    m.set_header_len(usize::from(k));
    m.set_flags(k);
    m.set_window(5);
    m.set_checksum(6);
    m.set_urgent(7);
    m.fill_checksum_v4(s4, d4);
    m.fill_checksum_v6(s6, d6);
    let _ = m.payload_mut().len();

    let u = udp::Packet::new_unchecked(b);
    let _ = (u.src_port(), u.dst_port(), u.len(), u.checksum(), u.datagram(), u.payload());
    let _ = (u.verify_checksum_v4(s4, d4), u.verify_checksum_v6(s6, d6));
    if let Ok(u) = udp::Packet::new_checked(b) {
        assert!(usize::from(u.len()) >= udp::HEADER_LEN && usize::from(u.len()) <= b.len());
        assert_eq!(u.datagram().len(), usize::from(u.len()));
        fill_then_verify!(udp, b, (s4, d4), (s6, d6));
    }
    let mut s = b.to_vec();
    let mut m = udp::Packet::new_unchecked(&mut s[..]);
    m.set_src_port(1);
    m.set_dst_port(2);
    m.set_len(u16::from(k));
    m.set_checksum(0);
    m.fill_checksum_v4(s4, d4);
    m.fill_checksum_v6(s6, d6);
    let _ = m.payload_mut().len();

    let i = icmp::Packet::new_unchecked(b);
    let _ = (i.echo_seq(), i.next_hop_mtu(), i.payload(), i.verify_checksum(), icmp::is_error(k));
    icmp_view!(icmp, b, k, (), set_next_hop_mtu(1500));

    let i = icmpv6::Packet::new_unchecked(b);
    let _ = (i.echo_seq(), i.mtu(), i.pointer(), i.payload(), i.verify_checksum(s6, d6));
    let _ = (icmpv6::is_error(k), icmpv6::is_ndp(k));
    icmp_view!(icmpv6, b, k, (s6, d6), set_mtu(1280));
}

/// One's complement sums are equal when they differ only in the sign of
/// zero (0x0000 and 0xFFFF both verify).
fn csum_eq(a: u16, b: u16) -> bool {
    a == b || (a | b == 0xffff && a & b == 0)
}

/// The checksum helpers, and RFC 1624 incremental updates against a full
/// recomputation.
fn checksums(data: &[u8]) {
    let _ = checksum::fold(checksum::sum(data));
    let c = checksum::checksum(data);
    let (a, b) = data.split_at(data.len() / 2);
    let _ = checksum::pseudo_header_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST, 6, data.len() as u16);
    let _ = checksum::pseudo_header_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED, 17, data.len() as u32);
    let _ = checksum::l4_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST, 6, data);
    let _ = checksum::l4_checksum_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED, 17, data);
    let n = a.len().min(b.len());
    let _ = checksum::update_bytes(c, &a[..n], &b[..n]);
    let _ = checksum::udp_update_bytes(c, &a[..n], &b[..n]);
    let _ = checksum::udp_update_u32(c, 1, 2);
    let _ = checksum::udp_encode(c);

    // Replace one aligned 16-bit word (or 32-bit pair) and compare the
    // incremental update with a full recomputation.
    if data.len() >= 8 {
        let i = (usize::from(data[0]) * 2) % (data.len() & !1).max(2);
        let i = i.min(data.len() - 4) & !1;
        let mut m = data.to_vec();
        let old = u16::from_be_bytes([m[i], m[i + 1]]);
        let new = old.wrapping_add(u16::from(data[1]) | 1);
        m[i..i + 2].copy_from_slice(&new.to_be_bytes());
        let full = checksum::checksum(&m);
        let inc = checksum::update_u16(c, old, new);
        assert!(csum_eq(full, inc), "update_u16: full {full:#06x} incremental {inc:#06x}");
        let old32 = u32::from_be_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]);
        let new32 = old32 ^ u32::from_be_bytes([data[1], data[2], data[3], data[0]]);
        let mut m2 = m.clone();
        m2[i..i + 4].copy_from_slice(&new32.to_be_bytes());
        let full2 = checksum::checksum(&m2);
        let inc2 = checksum::update_u32(full, old32, new32);
        assert!(csum_eq(full2, inc2), "update_u32: full {full2:#06x} incremental {inc2:#06x}");
        let inc3 = checksum::update_bytes(full, &m[i..i + 4], &m2[i..i + 4]);
        assert!(csum_eq(full2, inc3), "update_bytes: full {full2:#06x} incremental {inc3:#06x}");
    }
}

/// What `parse` promises about a frame it accepted.
fn parsed_invariants(data: &[u8], p: &ParsedPacket) {
    assert!(p.l3_offset == 14 || p.l3_offset == 18, "{p:?}");
    assert!(p.l3_offset <= p.l4_offset && p.l4_offset <= p.l3_end && p.l3_end <= data.len(), "{p:?}");
    let _ = p.l4(data);
    let _ = (p.tuple.src_addr(), p.tuple.dst_addr());
    assert_eq!(p.tuple.reversed().reversed(), p.tuple);
    if p.frag == FragKind::Later {
        assert_eq!((p.tuple.sport, p.tuple.dport), (0, 0));
    }
    let l4 = p.l4(data);
    if p.frag == FragKind::Whole {
        match p.tuple.proto {
            ip_protocol::TCP => assert!(tcp::Packet::new_checked(l4).is_ok(), "{p:?}"),
            ip_protocol::UDP => assert!(udp::Packet::new_checked(l4).is_ok(), "{p:?}"),
            ip_protocol::ICMP if p.version == IpVersion::V4 => {
                assert!(icmp::Packet::new_checked(l4).is_ok(), "{p:?}")
            }
            ip_protocol::ICMPV6 if p.version == IpVersion::V6 => {
                assert!(icmpv6::Packet::new_checked(l4).is_ok(), "{p:?}")
            }
            _ => {}
        }
    }
    // The same frame, untagged or with a different VLAN id, parses to the
    // same tuple (a tag only shifts the offsets).
    if p.vlan_id.is_some() {
        let mut untagged = data[..12].to_vec();
        untagged.extend_from_slice(&data[16..]);
        let q = parse(&untagged).expect("untagged copy parses").expect("untagged copy is IP");
        assert_eq!(q.tuple, p.tuple);
        assert_eq!(q.l4_offset + 4, p.l4_offset);
    }
}

// ---------------------------------------------------------------------------
// pipeline

/// The full-NAT L4LB config [`pipeline`] runs, from `pipelines/l4lb.toml`:
/// TCP and UDP services on an IPv4 and an IPv6 VIP, two backends each, SNAT
/// to one address each, plus an `l2fwd` route (from `pipelines/l2fwd.toml`).
/// Every timeout is 1 s and each call advances the clock by 2 s and sweeps
/// the table, so flows left by earlier inputs are gone and an input behaves
/// the same whatever ran before it: a crash reproduces from its one input.
pub fn pipeline_fixture() -> Fixture {
    let mut f = Fixture::load("l4lb")
        .set("service.*.maglev_table_size", 251)
        .truncate("service.*.backends", 2)
        .set("service.web.snat_pool", "10.0.3.1/32")
        .set("service.web6.snat_pool", "fd00:3::1/128")
        .set("service.*.backends.1.port", 8080)
        .dns_services(5353)
        .set("service.dns.backends.1.port", 53)
        .set("service.dns6.backends.1.port", 53)
        .pin_backend_macs()
        .adopt("l2fwd", "pipeline.to-backend", "pipeline.fwd")
        .route("10.9.9.9", "any", "fwd")
        .set("conntrack.entries_per_worker", 4096)
        .set("conntrack.full", "drop");
    for t in [
        "tcp_syn_sent",
        "tcp_syn_recv",
        "tcp_established",
        "tcp_fin_wait",
        "tcp_close_wait",
        "tcp_last_ack",
        "tcp_time_wait",
        "tcp_close",
        "udp",
        "udp_stream",
        "icmp",
    ] {
        f = f.set(&format!("conntrack.{t}"), 1);
    }
    f
}

/// Port indices of the harness: config interface order.
const CLI_PORT: u8 = 0;
const BE_PORT: u8 = 1;

thread_local! {
    static HARNESS: RefCell<Harness> =
        RefCell::new(pipeline_fixture().harness());
}

/// Which checksums of a parsed frame verify: (IPv4 header, L4).
/// `None` where there is no such checksum (IPv6 header; L4 not TCP/UDP/ICMP,
/// or a fragment; IPv4 UDP with checksum 0, "none").
fn checksum_state(frame: &[u8], p: &ParsedPacket) -> (Option<bool>, Option<bool>) {
    let l3 = p.l3_offset;
    let ip = match p.version {
        IpVersion::V4 => {
            let ihl = usize::from(frame[l3] & 0x0f) * 4;
            Some(ones_sum(&frame[l3..l3 + ihl], 0) == 0xffff)
        }
        IpVersion::V6 => None,
    };
    if p.frag != FragKind::Whole {
        return (ip, None);
    }
    let seg = p.l4(frame);
    let pseudo = |proto: u8| -> u64 {
        let addrs = match p.version {
            IpVersion::V4 => &frame[l3 + 12..l3 + 20],
            IpVersion::V6 => &frame[l3 + 8..l3 + 40],
        };
        u64::from(ones_sum(addrs, 0)) + seg.len() as u64 + u64::from(proto)
    };
    let l4 = match (p.tuple.proto, p.version) {
        (ip_protocol::TCP, _) => Some(ones_sum(seg, pseudo(6)) == 0xffff),
        (ip_protocol::UDP, IpVersion::V4) if seg.get(6..8) == Some(&[0, 0]) => None,
        (ip_protocol::UDP, _) => {
            // IPv6 UDP with checksum 0 is invalid (RFC 8200 §8.1).
            Some(seg.get(6..8) != Some(&[0, 0]) && ones_sum(seg, pseudo(17)) == 0xffff)
        }
        (ip_protocol::ICMP, IpVersion::V4) => Some(ones_sum(seg, 0) == 0xffff),
        (ip_protocol::ICMPV6, IpVersion::V6) => Some(ones_sum(seg, pseudo(58)) == 0xffff),
        _ => None,
    };
    (ip, l4)
}

/// A forwarded frame is well formed, and no checksum that was valid on the
/// way in is invalid on the way out. Returns the output's parse.
fn assert_well_formed(input: &[u8], output: &[u8], what: &str) -> Option<ParsedPacket> {
    let Ok(Some(pi)) = parse(input) else {
        // Only l2fwd forwards what does not parse; it touches the MACs only.
        assert_eq!(input.get(12..), output.get(12..), "{what}: non-IP frame changed beyond the MACs");
        return None;
    };
    let po = match parse(output) {
        Ok(Some(p)) => p,
        other => {
            panic!("{what}: forwarded frame does not parse: {other:?}\n in: {input:02x?}\nout: {output:02x?}")
        }
    };
    assert_eq!(input.len(), output.len(), "{what}: length changed");
    assert_eq!((pi.l3_offset, pi.l4_offset, pi.l3_end), (po.l3_offset, po.l4_offset, po.l3_end), "{what}");
    assert_eq!(
        (pi.version, pi.frag, pi.tuple.proto, pi.tcp_flags),
        (po.version, po.frag, po.tuple.proto, po.tcp_flags)
    );
    let (ip_in, l4_in) = checksum_state(input, &pi);
    let (ip_out, l4_out) = checksum_state(output, &po);
    if ip_in == Some(true) {
        assert_eq!(
            ip_out,
            Some(true),
            "{what}: IPv4 header checksum broken\n in: {input:02x?}\nout: {output:02x?}"
        );
    }
    if l4_in == Some(true) {
        assert_eq!(l4_out, Some(true), "{what}: L4 checksum broken\n in: {input:02x?}\nout: {output:02x?}");
    }
    // IPv4 UDP "no checksum" stays "no checksum".
    if pi.version == IpVersion::V4 && pi.tuple.proto == ip_protocol::UDP && l4_in.is_none() {
        assert_eq!(l4_out, None, "{what}: IPv4 UDP checksum 0 was filled in");
    }
    // Everything past the L4 ports/checksum is untouched payload.
    let tail = pi.l4_offset + 20;
    if pi.tuple.proto == ip_protocol::TCP && input.len() > tail {
        assert_eq!(input[tail..], output[tail..], "{what}: payload changed");
    }
    Some(po)
}

/// Swaps MACs, IP addresses and L4 ports in place: what the peer would send
/// back. Swapping keeps every checksum valid (sums are commutative).
fn reflect(frame: &mut [u8], p: &ParsedPacket) {
    let (a, b) = frame.split_at_mut(6);
    a.swap_with_slice(&mut b[..6]);
    let l3 = p.l3_offset;
    let (off, len) = match p.version {
        IpVersion::V4 => (12, 4),
        IpVersion::V6 => (8, 16),
    };
    let (a, b) = frame[l3 + off..l3 + off + 2 * len].split_at_mut(len);
    a.swap_with_slice(b);
    let l4 = p.l4_offset;
    let (a, b) = frame[l4..l4 + 4].split_at_mut(2);
    a.swap_with_slice(b);
}

/// One frame through the L4LB pipelines. When it is forwarded towards a
/// backend, it is run a second time (it must hit conntrack and translate
/// identically), and the backend's reply (the output reflected) must come
/// back translated to VIP → client on the client port. Then the same
/// frame, uncut, arrives as a chain of buffers (`pipeline_chain`).
pub fn pipeline(data: &[u8]) {
    pipeline_one(data);
    HARNESS.with(|h| pipeline_chain(&mut h.borrow_mut(), data));
}

/// The frame split over several buffers, as multi-buffer AF_XDP delivers
/// frames above one chunk (up to 9216 bytes here, longer than one buffer
/// holds): the first buffer's length and the later ones' come from the
/// input's second- and third-last bytes, so the first buffer may end
/// inside a header, and a chain may have more buffers than allowed.
/// Properties: the batch keeps every later buffer it took, untouched, to
/// free or send with its packet; a chain of too many buffers is dropped
/// (`chain_too_long`); a forwarded chain is the frame whole, rewritten in
/// its first buffer, well formed over all of it; and, for frames one
/// buffer could hold, a chain is forwarded or answered exactly as the
/// frame in one buffer (same verdict, same bytes) or refused
/// (`chain_unsupported`).
fn pipeline_chain(h: &mut Harness, data: &[u8]) {
    let Some(pieces) = chain_pieces(data) else { return };
    let input = &data[..data.len().min(MAX_FRAME)];
    let (n, first) = (input.len(), pieces[0].len());
    h.ctx.now = h.ctx.now.wrapping_add(input_clock_step());
    let empty: &[&[u8]] = &[];
    for _ in 0..h.ctx.conntrack.capacity() / 64 + 1 {
        h.run(empty, |_, _, _| {});
    }
    // The same frame in one buffer, just before, when one buffer holds it.
    let single = (n <= FRAME - HEADROOM).then(|| h.run_one(input));
    let c = h.run_chain(&pieces);
    let taken = c.pushed.len();
    assert_eq!(taken, (pieces.len() - 1).min(MAX_TAIL), "later buffers taken");
    assert_eq!(c.tail.len(), taken, "the batch holds every later buffer it took");
    for ((len, bytes), piece) in c.tail.iter().zip(&pieces[1..]) {
        assert_eq!((*len as usize, &bytes[..]), (piece.len(), *piece), "a later buffer changed");
    }
    if pieces.len() - 1 > MAX_TAIL {
        assert_eq!(c.verdict, Verdict::Drop(DropReason::ChainTooLong), "{} buffers", pieces.len());
        return;
    }
    let replaced = c.more == 0;
    if !replaced {
        assert_eq!(c.more as usize, n - first, "length past the first buffer");
    }
    if let Verdict::Forward(_) = c.verdict {
        if !replaced {
            assert_eq!(c.bytes.len(), first, "the first buffer keeps its length");
            let mut whole = c.bytes.clone();
            for (_, t) in &c.tail {
                whole.extend_from_slice(t);
            }
            assert_well_formed(input, &whole, "chain");
            if let Some((sv, sout)) = &single {
                assert_eq!((sv, sout), (&c.verdict, &whole), "chain and one buffer differ");
            }
        } else if let Some((sv, sout)) = &single {
            // An error built in the first buffer: the quote may be cut at its end.
            assert_eq!(sv, &c.verdict, "chain and one buffer answered differently");
            if first >= 14 + 4 + 48 + 1232 {
                assert_eq!(sout, &c.bytes, "the error over a chain differs");
            }
        }
    } else if let (Some((Verdict::Forward(_), _)), Verdict::Drop(r)) = (&single, c.verdict) {
        assert_eq!(
            r,
            DropReason::ChainUnsupported,
            "forwarded in one buffer, dropped as a chain: first {first} of {n}, {} buffers\n{input:02x?}",
            pieces.len()
        );
    }
}

/// The largest frame [`pipeline`] sends as a chain (a 9000-byte MTU's
/// frame plus tags, the `max_frame_size` of jumbo configs).
pub const MAX_FRAME: usize = 9216;

/// How [`pipeline`] cuts an input into buffers: the first buffer's length
/// from the second-last byte (bit 7 set: 14 + the low 6 bits, so it may
/// end inside the IP or L4 header; else 54 + 12 × the byte), the later
/// buffers' from the third-last (64 + 8 × the byte). None when the input
/// (up to [`MAX_FRAME`] bytes) fits the first buffer.
pub fn chain_pieces(data: &[u8]) -> Option<Vec<&[u8]>> {
    let input = &data[..data.len().min(MAX_FRAME)];
    let n = input.len();
    let (a, b) = (n.checked_sub(2).map_or(0, |i| input[i]), n.checked_sub(3).map_or(0, |i| input[i]));
    let first = if a & 0x80 != 0 { 14 + usize::from(a & 0x3f) } else { 54 + usize::from(a) * 12 };
    let rest = 64 + usize::from(b) * 8;
    (n > first).then(|| std::iter::once(&input[..first]).chain(input[first..].chunks(rest)).collect())
}

/// Seconds each input moves the harness's clock on: past the fragment
/// table's lifetime (3 s by default), so no datagram an earlier input
/// fragmented is still known. Otherwise a later input's first fragment
/// with the same (source, destination, protocol, ID) but other ports is
/// rightly refused as `fragment_bogus`, and the "reply to a live flow"
/// check failed on state no single input reproduces.
fn input_clock_step() -> u32 {
    shunt::config::Fragments::default().timeout + 1
}

fn pipeline_one(data: &[u8]) {
    HARNESS.with(|h| {
        let mut h = h.borrow_mut();
        h.ctx.now = h.ctx.now.wrapping_add(input_clock_step());
        // Sweep the table so no expired entry of an earlier input is left
        // (each input then starts from an empty table and a crash reproduces
        // from its one input). Without this sweep the fuzzer finds the
        // stale-reply-entry bug `tests/hostile.rs`
        // `reused_client_tuple_keeps_its_new_flow` documents.
        let empty: &[&[u8]] = &[];
        for _ in 0..h.ctx.conntrack.capacity() / 64 + 1 {
            h.run(empty, |_, _, _| {});
        }
        // The harness truncates what a UMEM frame cannot hold; so do we
        // when comparing.
        let input = &data[..data.len().min(FRAME - HEADROOM)];
        let (v, out) = h.run_one(input);
        let Verdict::Forward(port) = v else { return };
        let Some(po) = assert_well_formed(input, &out, "original") else { return };
        if port != BE_PORT || !matches!(po.tuple.proto, ip_protocol::TCP | ip_protocol::UDP) {
            return;
        }
        let pi = parse(input).ok().flatten().expect("forwarded input parses");
        if pi.tuple.dst == po.tuple.dst && pi.tuple.dport == po.tuple.dport {
            return; // l2fwd route: not translated
        }
        let (v2, out2) = h.run_one(input);
        assert_eq!(v2, v, "second packet of the flow: verdict differs");
        assert_eq!(out2, out, "second packet of the flow: translation differs");

        let mut reply = out.clone();
        reflect(&mut reply, &po);
        let (rv, rout) = h.run_one(&reply);
        assert_eq!(rv, Verdict::Forward(CLI_PORT), "reply to a live flow");
        let pr = assert_well_formed(&reply, &rout, "reply").expect("reply parses");
        let t = pr.tuple;
        assert_eq!((t.src, t.sport), (pi.tuple.dst, pi.tuple.dport), "reply source is the VIP");
        assert_eq!((t.dst, t.dport), (pi.tuple.src, pi.tuple.sport), "reply goes to the client");
        let cut = data.last().copied().unwrap_or(0);
        error_about_forwarded(&mut h, &out, &pi, &po, cut);
    });
}

/// An ICMP error from the backend side about the packet Shunt forwarded,
/// quoting at least its first 8 transport bytes (`cut` more, up to all of
/// it), reaches the client well formed and quoting the client's own tuple.
fn error_about_forwarded(h: &mut Harness, out: &[u8], pi: &ParsedPacket, po: &ParsedPacket, cut: u8) {
    let l3 = po.l3_offset;
    let v6 = po.version == IpVersion::V6;
    if v6 && po.l4_offset - l3 != 40 {
        return; // a quote with extension headers is not matched
    }
    let qlen = (po.l4_offset - l3 + 8 + usize::from(cut)).min(po.l3_end - l3);
    let quote = &out[l3..l3 + qlen];
    let (src, dst) = (po.tuple.dst, po.tuple.src);
    let mut f = Vec::with_capacity(l3 + 48 + qlen);
    f.extend_from_slice(&out[6..12]);
    f.extend_from_slice(&out[..6]);
    f.extend_from_slice(&out[12..l3]);
    let icmp_len = 8 + qlen;
    if v6 {
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(icmp_len as u16).to_be_bytes());
        f.extend_from_slice(&[ip_protocol::ICMPV6, 64]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    } else {
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + icmp_len) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, ip_protocol::ICMP, 0, 0]);
        f.extend_from_slice(&src[12..]);
        f.extend_from_slice(&dst[12..]);
        f.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
    }
    let l4 = f.len() - 8;
    f.extend_from_slice(quote);
    let c = if v6 {
        checksum::l4_checksum_v6(Ipv6Addr::from(src), Ipv6Addr::from(dst), ip_protocol::ICMPV6, &f[l4..])
    } else {
        let c = checksum::checksum(&f[l3..l3 + 20]);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        checksum::checksum(&f[l4..])
    };
    f[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());

    let (v, e) = h.run_one(&f);
    assert_eq!(v, Verdict::Forward(CLI_PORT), "error about a forwarded packet\n in: {f:02x?}");
    let pe = parse(&e).ok().flatten().expect("forwarded error parses");
    assert_eq!(checksum_state(&e, &pe), (Some(true).filter(|_| !v6), Some(true)), "error: {e:02x?}");
    assert_eq!(pe.tuple.dst, pi.tuple.src, "the error goes to the client");
    // The quote now names the client's packet: client → VIP, its ports.
    let q = &e[pe.l4_offset + 8..];
    let (qs, qd, ql4) =
        if v6 { (&q[8..24], &q[24..40], 40) } else { (&q[12..16], &q[16..20], (usize::from(q[0] & 15)) * 4) };
    let (ps, pd) =
        if v6 { (&pi.tuple.src[..], &pi.tuple.dst[..]) } else { (&pi.tuple.src[12..], &pi.tuple.dst[12..]) };
    assert_eq!((qs, qd), (ps, pd), "quoted addresses");
    let ports = [pi.tuple.sport.to_be_bytes(), pi.tuple.dport.to_be_bytes()].concat();
    assert_eq!(&q[ql4..ql4 + 4], &ports[..], "quoted ports");
}

// ---------------------------------------------------------------------------
// config

/// Bytes as a TOML config: `Config::parse` returns, never panics. An
/// accepted config's derived views are exercised too, and its service
/// tables are built when they are small enough to build quickly.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(c) = Config::parse(Path::new("fuzz.toml"), text) else { return };
    let _ = (c.match_entries(), c.owned_prefixes(), c.queues().count());
    let small = c.services.iter().map(|s| u64::from(s.maglev_table_size)).sum::<u64>() <= 1 << 18;
    if small {
        let _ = shunt::pipeline::services::Services::build(&c, 1, &mut Default::default(), |_| None);
        let ports: Vec<PortInfo> = (0..c.interfaces.len())
            .map(|i| PortInfo { interface: i, mac: [2, 0, 0, 0, 0xff, i as u8], mtu: 1500 })
            .collect();
        let _ = shunt::pipeline::build::pipelines(&c, &ports);
    }
}

/// A frame through the NAT46/NAT64 translator, both directions, and the
/// ICMP error builders: no panic, every output lies inside the buffer,
/// parses with [`parse`] when the input did, and has valid checksums when
/// the input had (generated errors always).
pub fn nat46(data: &[u8]) {
    nat46_translate(data);
    nat46_rules(data);
    nat46_fragment(data);
}

/// The SIIT fragmenting path (`nat46::fragment`) over a frame: when it
/// says to split, every piece fits the limit, parses as IPv6 with a
/// Fragment header, and the pieces' data put back together is the whole
/// translated packet's.
fn nat46_fragment(data: &[u8]) {
    use shunt::nat46::fragment::{add_fragment_header, fragmentation_4to6, Plan};
    const LIMIT: u16 = 1280;
    let (c46, _) = nat46_configs();
    let n = data.len().min(FUZZ_MAX);
    let input = data.get(..n).unwrap_or(&[]);
    let Some(id) = fragmentation_4to6(input, LIMIT) else { return };
    let mut buf = [0u8; FUZZ_HEADROOM + FUZZ_MAX];
    buf[FUZZ_HEADROOM..FUZZ_HEADROOM + n].copy_from_slice(input);
    let whole = shunt::nat46::Config { mtu: u16::MAX, ..c46 };
    let Ok((s, l)) = translate_4to6(&mut buf, FUZZ_HEADROOM, n, &whole) else { return };
    let Ok((s, l)) = add_fragment_header(&mut buf, s, l, id) else { return };
    let Ok(plan) = Plan::new(&buf, s, l, LIMIT) else { return };
    // Ethernet (802.1Q aside), IPv6 and Fragment headers.
    let hdr_end = |f: &[u8]| if f.get(12..14) == Some(&[0x81, 0x00]) { 18 + 48 } else { 14 + 48 };
    let h = hdr_end(&buf[s..]);
    let base = u16::from_be_bytes([buf[s + h - 6], buf[s + h - 5]]) & 0xfff8;
    let whole_data = buf[s + h..s + l].to_vec();
    let mut got = vec![0u8; whole_data.len()];
    let check = |f: &[u8], got: &mut Vec<u8>| {
        assert!(f.len() - (h - 48) <= usize::from(LIMIT), "piece within the limit");
        let p = parse(f).expect("piece parses").expect("piece is IP");
        assert_eq!(p.version, IpVersion::V6);
        let fo = u16::from_be_bytes([f[h - 6], f[h - 5]]);
        let at = usize::from((fo & 0xfff8) - base);
        got[at..at + f.len() - h].copy_from_slice(&f[h..]);
    };
    let mut piece = [0u8; FUZZ_HEADROOM + FUZZ_MAX];
    for i in 1..plan.pieces() {
        let len = plan.write_piece(&buf, s, i, &mut piece, 0).expect("piece fits the scratch frame");
        check(&piece[..len], &mut got);
    }
    let first = plan.trim_first(&mut buf, s).expect("first piece");
    check(&buf[s..s + first], &mut got);
    assert_eq!(got, whole_data, "pieces put back together");
}

const FUZZ_HEADROOM: usize = 128;
const FUZZ_MAX: usize = 2048;

fn nat46_configs() -> (shunt::nat46::Config<'static>, shunt::nat46::Config<'static>) {
    let p40 = Prefix64 { prefix: [0x20, 0x01, 0x0d, 0xb8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], len: 40 };
    let c46 = shunt::nat46::Config {
        src: Mapper::prefix(p40),
        dst: Mapper::prefix(WELL_KNOWN_PREFIX),
        mtu: 1500,
        udp_zero_checksum: UdpZeroChecksum::Compute,
        rfc6791: Rfc6791::default(),
    };
    let c64 = shunt::nat46::Config {
        src: Mapper::prefix(WELL_KNOWN_PREFIX),
        dst: Mapper::prefix(p40),
        mtu: 1500,
        udp_zero_checksum: UdpZeroChecksum::Compute,
        rfc6791: Rfc6791::v4([192, 0, 0, 8]),
    };
    (c46, c64)
}

fn nat46_translate(data: &[u8]) {
    let (c46, c64) = nat46_configs();
    let router =
        RouterAddrs { v4: [192, 0, 2, 1], v6: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1] };
    let input = &data[..data.len().min(FUZZ_MAX)];
    let valid_in = parse(input).ok().flatten().is_some_and(|p| checksums_valid(input, &p));
    four_ways(input, valid_in, |dir, buf, n| match dir {
        0 => translate_4to6(buf, FUZZ_HEADROOM, n, &c46),
        1 => translate_6to4(buf, FUZZ_HEADROOM, n, &c64),
        2 => build_time_exceeded(buf, FUZZ_HEADROOM, n, &router),
        _ => build_too_big(buf, FUZZ_HEADROOM, n, &router, 1280),
    });
}

/// `input` through four in-place operations, each on a fresh copy behind
/// [`FUZZ_HEADROOM`]: `op(dir, buf, len)` translates 4→6 (dir 0) and 6→4
/// (1), and builds an ICMP error back to the sender (2, 3). An output lies
/// inside the buffer; a translated frame of an IP input parses as the
/// other family, a generated error parses whatever the input, in the
/// input's family; checksums are valid in errors and wherever `valid_in`
/// vouches for the input's.
fn four_ways(
    input: &[u8],
    valid_in: bool,
    op: impl Fn(usize, &mut [u8], usize) -> Result<(usize, usize), shunt::nat46::Drop>,
) {
    let n = input.len();
    let parsed_in = parse(input).ok().flatten();
    let mut buf = [0u8; FUZZ_HEADROOM + FUZZ_MAX];
    for dir in 0..4 {
        buf.fill(0);
        buf[FUZZ_HEADROOM..FUZZ_HEADROOM + n].copy_from_slice(input);
        let Ok((s, l)) = op(dir, &mut buf, n) else { continue };
        let out = buf.get(s..s + l).expect("output inside the buffer");
        let generated = dir >= 2;
        if parsed_in.is_none() && !generated {
            continue;
        }
        let p = parse(out).expect("translated frame parses").expect("translated frame is IP");
        let want = match (dir, parsed_in.map(|p| p.version)) {
            (0, _) => IpVersion::V6,
            (1, _) => IpVersion::V4,
            (_, Some(v)) => v,
            (_, None) => p.version,
        };
        assert_eq!(p.version, want, "IP version after direction {dir}");
        if valid_in || generated {
            assert!(checksums_valid(out, &p), "checksums invalid after direction {dir}");
        }
    }
}

/// The rules beyond the common paths, on the same input: an EAM-only
/// translator whose IPv4 routers have no IPv6 form (RFC 6791 IPv6 source),
/// an IPv4 pool of eight addresses, the strict zero-checksum policy, and
/// the ICMP errors that answer refused packets. Translated frames parse as
/// the other family with valid checksums when the input's were valid;
/// generated errors parse with valid checksums whatever the input.
fn nat46_rules(data: &[u8]) {
    use shunt::nat46::{build_refusal, Drop, Eam, EamTable, Pool4};
    thread_local! {
        static EAMS: &'static EamTable = {
            let mut t = EamTable::with_capacity(2);
            let v6 = |b: u8| [0x20, 0x01, 0x0d, 0xb8, 0, b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            let _ = t.insert(Eam { v4: [1, 0, 0, 0], v4_len: 24, v6: v6(3), v6_len: 120 });
            let _ = t.insert(Eam { v4: [10, 0, 0, 0], v4_len: 24, v6: v6(2), v6_len: 120 });
            Box::leak(Box::new(t))
        };
    }
    let eams = EAMS.with(|t| *t);
    let (c46, c64) = nat46_configs();
    let rfc6791 = Rfc6791 {
        v4: Some(Pool4 { net: [203, 0, 113, 8], len: 29 }),
        v6: Some([0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8]),
    };
    let strict = shunt::nat46::Config {
        src: Mapper::eam(eams),
        dst: Mapper { eam: Some(eams), prefix: c46.dst.prefix },
        udp_zero_checksum: UdpZeroChecksum::Drop,
        rfc6791,
        ..c46
    };
    let pooled = shunt::nat46::Config { src: Mapper { eam: Some(eams), prefix: None }, rfc6791, ..c64 };
    let router = RouterAddrs {
        v4: [192, 0, 0, 8],
        v6: [0x20, 0x01, 0x0d, 0xb8, 1, 192, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0],
    };
    let input = &data[..data.len().min(FUZZ_MAX)];
    // A fragment's transport checksum is not checked (`checksums_valid`),
    // but an atomic fragment translates to a whole packet whose checksum
    // is: only whole inputs vouch for their transport checksum.
    let parsed_in = parse(input).ok().flatten();
    let valid_in = parsed_in.is_some_and(|p| p.frag == FragKind::Whole && checksums_valid(input, &p));
    four_ways(input, valid_in, |dir, buf, n| match dir {
        0 => translate_4to6(buf, FUZZ_HEADROOM, n, &strict),
        1 => translate_6to4(buf, FUZZ_HEADROOM, n, &pooled),
        2 => build_refusal(buf, FUZZ_HEADROOM, n, &router, Drop::ExtAfterFragment).expect("answered"),
        _ => build_refusal(buf, FUZZ_HEADROOM, n, &router, Drop::UdpZeroChecksum).expect("answered"),
    });
}

const CONTROL_CONFIG: &str = include_str!("../../../config.toml");

/// Bytes as a control-socket request: parsing answers Ok or a message, and a
/// change request goes through the same edit and validation path as the
/// running dataplane's, returning Ok or Err, never panicking.
pub fn control(data: &[u8]) {
    let Ok(req) = shunt::control::protocol::parse(data) else { return };
    if let Ok(text) = shunt::control::edit::apply(CONTROL_CONFIG, &req) {
        let _ = Config::parse(Path::new("control.toml"), &text);
    }
}

/// Bytes as a worker's conntrack state file, read by the same path a
/// starting worker takes: refused (one log line, empty table) or adopted
/// entry by entry, never a panic; a file whose header is refused leaves
/// the table empty; what is adopted can be looked up and expired. An odd
/// first byte puts a valid header in front and sizes the file to fit, so
/// the fuzzer reaches the entries behind the checksum; bytes that start
/// with the magic are the whole file, so it reaches every header check
/// (truncated, checksum, version, layout, boot, workers, slots, length).
pub fn state(data: &[u8]) {
    use shunt::pipeline::conntrack::{slots_for, FlowKey, LAYOUT};
    use shunt::state::{boot_id, check, Header, StateDir, HEADER, MAGIC, VERSION};
    thread_local! {
        static DIR: (StateDir, Config) = {
            let dir = StateDir::new(std::env::temp_dir().join(format!("shunt-fuzz-state-{}", std::process::id())));
            let mut cfg = Config::parse(Path::new("state.toml"), CONTROL_CONFIG).expect("config.toml parses");
            cfg.conntrack.entries_per_worker = 64;
            cfg.workers.truncate(1);
            (dir, cfg)
        };
    }
    DIR.with(|(dir, cfg)| {
        let want = Header {
            version: VERSION,
            worker: 0,
            workers: 1,
            layout: LAYOUT,
            slots: slots_for(64) as u64,
            generation: 0,
            boot_id: boot_id(),
        };
        let headed = data.first().is_some_and(|b| b & 1 == 1) && !data.starts_with(&MAGIC);
        let mut file = Vec::new();
        if headed {
            file.extend_from_slice(&Header { generation: 1, ..want }.encode());
            file.resize(HEADER, 0);
        }
        file.extend_from_slice(data);
        if headed {
            // The exact length a 64-slot table needs, so the header passes.
            file.resize(shunt::pipeline::conntrack::MemoryLayout::new(64, HEADER).end, 0);
        }
        let refused = Header::decode(&file).and_then(|h| check(&h, &want, file.len() as u64)).is_err();
        std::fs::create_dir_all(&dir.path).expect("temp dir");
        std::fs::write(dir.conntrack_file(0), &file).expect("write state file");
        let mut t = dir.conntrack(cfg, 0, 1000);
        assert!(!refused || t.is_empty(), "a refused file left {} entries", t.len());
        let mut keys = Vec::new();
        t.for_each_live(1000, |e| keys.push(*e.key()));
        for k in keys {
            let _: Option<&FlowKey> = t.lookup(&k, k.hash(), 1000).map(|e| e.key());
        }
        t.expire_step(u32::MAX / 2, 1 << 20);
    });
}

thread_local! {
    static FRAG_HARNESS: RefCell<Harness> = RefCell::new(pipeline_fixture().harness());
}

/// Fragments cut from a UDP datagram to the DNS VIPs, 4 input bytes each:
/// offset/8, length/8, flags (bit 0 MF, bit 1 IPv6, bits 2-3 ID, bits 4-6
/// extra length, bit 7 ends the batch) and a byte that, when odd, makes
/// the fragment use the datagram's real first bytes (its UDP header) at
/// offset 0.
pub fn fragments(data: &[u8]) {
    use shunt::pipeline::frag::{FragLimits, FragTable};
    FRAG_HARNESS.with(|h| {
        let mut h = h.borrow_mut();
        let limits = FragLimits { entries: 16, held: 4, timeout: 3 };
        h.ctx.frag = FragTable::new(limits);
        h.ctx.now = h.ctx.now.wrapping_add(100);
        let body: Vec<u8> = (0..8192u32).map(|i| (i * 13 + 5) as u8).collect();
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut outputs = Vec::new();
        for op in data.chunks_exact(4).take(64) {
            let (off, len8, flags, real) = (usize::from(op[0]) * 8, usize::from(op[1]) * 8, op[2], op[3]);
            let len = (len8 + usize::from(flags >> 4 & 7)).min(3000);
            let v6 = flags & 2 != 0;
            let id = u32::from(flags >> 2 & 3);
            let mut seg = body[off..off + len].to_vec();
            if off == 0 && real & 1 == 1 && seg.len() >= 8 {
                // A UDP header: client port 40000 → 53, length and checksum any.
                seg[..4].copy_from_slice(&[0x9c, 0x40, 0, 53]);
            }
            let mut f = Vec::new();
            let (client, vip): (&[u8], &[u8]) = if v6 {
                (
                    &[0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                    &[0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                )
            } else {
                (&[10, 0, 1, 2], &[10, 0, 100, 1])
            };
            f.extend_from_slice(&[2, 0, 0, 0, 0xff, 0, 2, 0, 0, 0, 9, 9]);
            if v6 {
                f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
                f.extend_from_slice(&((seg.len() + 8) as u16).to_be_bytes());
                f.extend_from_slice(&[44, 64]);
                f.extend_from_slice(client);
                f.extend_from_slice(vip);
                let word = (off as u16) | u16::from(flags & 1);
                f.extend_from_slice(&[17, 0]);
                f.extend_from_slice(&word.to_be_bytes());
                f.extend_from_slice(&id.to_be_bytes());
            } else {
                let word = (off / 8) as u16 | if flags & 1 != 0 { 0x2000 } else { 0 };
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&((seg.len() + 20) as u16).to_be_bytes());
                ip[4..6].copy_from_slice(&(id as u16).to_be_bytes());
                ip[6..8].copy_from_slice(&word.to_be_bytes());
                ip[8] = 64;
                ip[9] = 17;
                ip[12..16].copy_from_slice(client);
                ip[16..20].copy_from_slice(vip);
                let c = !crate::frames::ones_sum(&ip, 0);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&[0x08, 0x00]);
                f.extend_from_slice(&ip);
            }
            f.extend_from_slice(&seg);
            batch.push(f);
            if flags & 0x80 != 0 {
                h.run(&batch, |_, v, b| outputs.push((v, b.to_vec())));
                batch.clear();
            }
        }
        h.run(&batch, |_, v, b| outputs.push((v, b.to_vec())));
        assert!(h.ctx.frag.held() <= limits.held, "held copies beyond the pool");
        for (v, out) in &outputs {
            match v {
                Verdict::Forward(port) if *port == CLI_PORT => {
                    // Too big for the backend link (fragments reach 3000
                    // bytes, the link carries 1500): answered like any
                    // router, with Packet Too Big / Fragmentation Needed.
                    let p = parse(out).ok().flatten().expect("answer parses");
                    let t = out.get(p.l4_offset).copied();
                    let too_big = match p.version {
                        IpVersion::V6 => p.tuple.proto == ip_protocol::ICMPV6 && t == Some(2),
                        IpVersion::V4 => p.tuple.proto == ip_protocol::ICMP && t == Some(3),
                    };
                    assert!(too_big, "a fragment comes back only as Packet Too Big: {out:02x?}");
                }
                Verdict::Forward(port) => {
                    assert_eq!(*port, BE_PORT, "a client fragment goes to a backend");
                    let p = parse(out).ok().flatten().expect("forwarded fragment parses");
                    if p.version == IpVersion::V4 {
                        let l3 = p.l3_offset;
                        assert_eq!(ones_sum(&out[l3..l3 + 20], 0), 0xffff, "IPv4 header checksum");
                    }
                    let vips = [
                        Ipv4Addr::new(10, 0, 100, 1).into(),
                        "fd00:100::1".parse::<Ipv6Addr>().unwrap().into(),
                    ];
                    assert!(
                        !vips.contains(&p.tuple.dst_addr()),
                        "forwarded to the VIP itself: not rewritten"
                    );
                }
                Verdict::Consumed | Verdict::Drop(_) => {}
                v => panic!("unexpected verdict {v:?}"),
            }
        }
        // Everything held dies with its entry.
        h.ctx.now = h.ctx.now.wrapping_add(limits.timeout);
        let empty: &[&[u8]] = &[];
        h.run(empty, |_, _, _| {});
        assert_eq!(h.ctx.frag.held(), 0, "a held copy outlived its entry");
    });
}

// ---------------------------------------------------------------------------
// xlat

/// `pipelines/siit.toml` with an RFC 6791 pool (pool6, two EAMs that
/// hairpin to each other, DF=0 IPv4 fragmented at 1280), and
/// `pipelines/nat64.toml` with 1 s session lifetimes.
fn xlat_harnesses() -> [Harness; 2] {
    let siit = Fixture::load("siit").set("siit.rfc6791_v4", "203.0.113.8/29").harness();
    let mut nat64 = Fixture::load("nat64").set("conntrack.entries_per_worker", 4096);
    for t in ["udp", "tcp_established", "tcp_transitory", "icmp"] {
        nat64 = nat64.set(&format!("nat64.{t}"), 1);
    }
    [siit, nat64.harness()]
}

thread_local! {
    static XLAT: RefCell<[Harness; 2]> = RefCell::new(xlat_harnesses());
}

/// One IP packet (the input after its first byte) through stateless SIIT
/// (bit 0 of the first byte clear) or stateful NAT64 (set), arriving on
/// the harness's first port or its second (bit 1): the translators'
/// extension header walks, fragmenting, hairpinning, ICMP error
/// translation and errors built on the way. No panic; every frame that
/// comes out (a split packet's pieces included) parses as IP; and when
/// every checksum of the input was valid, so is every checksum of a whole
/// packet that comes out. NAT64 sessions age out between inputs, as in
/// [`pipeline`], so a crash reproduces from its one input.
pub fn xlat(data: &[u8]) {
    let Some((&sel, ip)) = data.split_first() else { return };
    let ip = &ip[..ip.len().min(FRAME - HEADROOM - 14)];
    let ethertype = if ip.first().is_some_and(|b| b >> 4 == 6) { [0x86, 0xdd] } else { [0x08, 0x00] };
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&[2, 0, 0, 0, 0xff, sel >> 1 & 1]);
    f.extend_from_slice(&[2, 0, 0, 0, 9, 9]);
    f.extend_from_slice(&ethertype);
    f.extend_from_slice(ip);
    // Only a whole packet has its transport header checked by `parse`
    // (length, checksum): a fragment, an atomic one included, vouches for
    // neither, and an atomic fragment translates to a whole packet.
    let whole_in = parse(&f).ok().flatten().filter(|p| p.frag == FragKind::Whole);
    let valid_in = whole_in.as_ref().is_some_and(|p| {
        let (hdr, l4) = checksum_state(&f, p);
        hdr != Some(false) && l4 == Some(true)
    });
    XLAT.with(|x| {
        let mut x = x.borrow_mut();
        let h = &mut x[usize::from(sel & 1)];
        if sel & 1 == 1 {
            h.ctx.now = h.ctx.now.wrapping_add(2);
            let empty: &[&[u8]] = &[];
            for _ in 0..h.ctx.conntrack.capacity() / 64 + 1 {
                h.run(empty, |_, _, _| {});
            }
        }
        for (v, out) in h.run_all(&f) {
            if !matches!(v, Verdict::Forward(_)) {
                continue;
            }
            let p = match parse(&out) {
                Ok(Some(p)) => p,
                other => panic!("output does not parse: {other:?}\n in: {f:02x?}\nout: {out:02x?}"),
            };
            if valid_in && p.frag == FragKind::Whole {
                let (hdr, l4) = checksum_state(&out, &p);
                assert_ne!(hdr, Some(false), "IPv4 header checksum\n in: {f:02x?}\nout: {out:02x?}");
                assert_ne!(l4, Some(false), "transport checksum\n in: {f:02x?}\nout: {out:02x?}");
            }
        }
    });
}

/// The names of the targets above, for tools that iterate over them.
pub const TARGETS: &[&str] =
    &["wire", "pipeline", "config", "nat46", "control", "state", "fragments", "xlat"];

/// Runs the target called `name` on `data`; false when there is none.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "wire" => wire(data),
        "pipeline" => pipeline(data),
        "config" => config(data),
        "nat46" => nat46(data),
        "control" => control(data),
        "state" => state(data),
        "fragments" => fragments(data),
        "xlat" => xlat(data),
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::frames::csum;

    /// A VLAN-tagged IPv4 TCP frame with a payload, valid checksums.
    fn tcp_v4() -> Vec<u8> {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(7.try_into().unwrap())
            .ipv4([192, 0, 2, 9], [198, 51, 100, 7], 9)
            .tcp(4000, 80, 1, 1000)
            .write(&mut f, &[0x50; 40])
            .unwrap();
        f
    }

    #[test]
    fn nat46_every_truncation_keeps_the_properties() {
        let f = tcp_v4();
        for n in 0..=f.len() {
            nat46(&f[..n]);
        }
    }

    #[test]
    fn every_target_runs_by_name() {
        for t in TARGETS {
            assert!(run(t, &tcp_v4()), "{t}");
        }
        assert!(!run("nope", &[]));
    }

    proptest! {
        #[test]
        fn nat46_arbitrary_frames_never_panic(
            mut data in proptest::collection::vec(any::<u8>(), 0..400), et in 0u8..3, proto in any::<u8>(),
        ) {
            if data.len() >= 60 {
                let v6 = et == 1;
                data[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
                let avail = (data.len() - 14) as u16;
                if v6 {
                    data[14] = 0x60;
                    data[18..20].copy_from_slice(&(avail - 40).to_be_bytes());
                    data[20] = [6, 17, 58, 44, 0, 60, 43, proto][usize::from(proto) % 8];
                    if et == 2 {
                        data[54] = proto % 5;
                    }
                } else {
                    data[14] = 0x45;
                    data[16..18].copy_from_slice(&avail.to_be_bytes());
                    data[20] &= 0x60;
                    data[23] = [1, 6, 17, proto][usize::from(proto) % 4];
                    data[24..26].fill(0);
                    let c = csum(&data[14..34]);
                    data[24..26].copy_from_slice(&c.to_be_bytes());
                    if et == 2 {
                        data[34] = [3, 11, 12, 8][usize::from(proto) % 4];
                    }
                }
            }
            nat46(&data);
        }
    }
}
