//! NAT46/NAT64 stateless translation: SIIT (RFC 7915) with RFC 6052
//! address mapping and RFC 7757 Explicit Address Mappings.
//!
//! Pure functions over frame buffers: no allocation on the packet path (the
//! EAM table allocates once at construction), no `unsafe`, no panics on any
//! input. See [`siit`] for the in-place frame layout contract.
//!
//! The translator itself does not split packets: an oversized DF=0 packet
//! is [`Drop::NeedsFragmentation`], and callers that can emit several
//! frames split its translation with [`fragment`]. Not implemented: the
//! optional §5.1 Identification generator. Refused packets that RFC 7915
//! answers get their ICMP error from [`build_refusal`]; docs/DECISIONS.md
//! lists the deliberate differences from the RFC.

// Packet bytes are untrusted: outside tests, no `[]` indexing or slicing that
// could panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod addr;
mod fast;
pub mod fragment;
pub mod siit;

pub use addr::{Eam, EamError, EamTable, Mapper, Prefix64, WELL_KNOWN_PREFIX};
pub use fast::{bound_4to6, bound_6to4, header_addrs, Bound};
pub use siit::{
    build_admin_prohibited, build_refusal, build_time_exceeded, build_too_big, translate_4to6,
    translate_6to4, Config, Drop, Placed, Pool4, Rfc6791, RouterAddrs, UdpZeroChecksum,
};

use crate::wire::checksum::{checksum, l4_checksum_v4, l4_checksum_v6};
use crate::wire::parse::{FragKind, IpVersion, ParsedPacket};

/// Whether the IPv4 header checksum and, for unfragmented TCP/UDP/ICMP/ICMPv6
/// (ICMPv4 over either version), the transport checksum of a parsed frame are valid. IPv4 UDP checksum 0
/// counts as valid, IPv6 UDP checksum 0 as invalid.
pub fn checksums_valid(frame: &[u8], p: &ParsedPacket) -> bool {
    let l4 = p.l4(frame);
    match p.version {
        IpVersion::V4 => {
            let Some(hdr) = frame.get(p.l3_offset..p.l4_offset) else { return false };
            if checksum(hdr) != 0 {
                return false;
            }
            if p.frag != FragKind::Whole {
                return true;
            }
            let (core::net::IpAddr::V4(s), core::net::IpAddr::V4(d)) =
                (p.tuple.src_addr(), p.tuple.dst_addr())
            else {
                return false;
            };
            match p.tuple.proto {
                6 => l4_checksum_v4(s, d, 6, l4) == 0,
                17 => matches!(l4.get(6..8), Some([0, 0])) || l4_checksum_v4(s, d, 17, l4) == 0,
                1 => checksum(l4) == 0,
                _ => true,
            }
        }
        IpVersion::V6 => {
            if p.frag != FragKind::Whole {
                return true;
            }
            let (s, d) = (p.tuple.src.into(), p.tuple.dst.into());
            match p.tuple.proto {
                6 | 58 => l4_checksum_v6(s, d, p.tuple.proto, l4) == 0,
                17 => !matches!(l4.get(6..8), Some([0, 0])) && l4_checksum_v6(s, d, 17, l4) == 0,
                // ICMPv4 (meaningless over IPv6, translated as it is): its
                // checksum has no pseudo-header, so it holds or not on either side.
                1 => checksum(l4) == 0,
                _ => true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `siit::answered` names exactly the drops `build_refusal` answers: the
    /// SIIT stage asks it before building anything.
    #[test]
    fn answered_drops_are_those_build_refusal_answers() {
        let router = RouterAddrs { v4: [192, 0, 0, 8], v6: [0; 16] };
        let mut frame = [0u8; 64];
        for d in Drop::ALL {
            let built = build_refusal(&mut frame, 0, 64, &router, d).is_some();
            assert_eq!(siit::answered(d), built, "{d:?}");
        }
    }

    /// Independent RFC 1071 reference: big-endian words one at a time.
    fn ref_sum(parts: &[&[u8]]) -> u16 {
        let mut acc: u64 = 0;
        for data in parts {
            for c in data.chunks(2) {
                acc += (u64::from(c[0]) << 8) | c.get(1).map_or(0, |&b| u64::from(b));
            }
        }
        while acc > 0xFFFF {
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
        acc as u16
    }

    /// Independent full verification of the frame's checksums.
    fn ref_valid(f: &[u8]) -> bool {
        let l2 = if f[12..14] == [0x81, 0x00] { 18 } else { 14 };
        let ip = &f[l2..];
        if ip[0] >> 4 == 4 {
            let ihl = usize::from(ip[0] & 15) * 4;
            let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ref_sum(&[&ip[..ihl]]) != 0xFFFF {
                return false;
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3FFF != 0;
            let seg = &ip[ihl..tot];
            let ph = [&ip[12..20], &[0, ip[9]], &(seg.len() as u16).to_be_bytes()[..]].concat();
            frag || match ip[9] {
                1 => ref_sum(&[seg]) == 0xFFFF,
                17 if seg[6..8] == [0, 0] => true,
                6 | 17 => ref_sum(&[&ph, seg]) == 0xFFFF,
                _ => true,
            }
        } else {
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if ip[6] == 44 {
                return true;
            }
            let seg = &ip[40..40 + plen];
            let ph = [&ip[8..40], &(seg.len() as u32).to_be_bytes()[..], &[0, 0, 0, ip[6]]].concat();
            match ip[6] {
                17 if seg[6..8] == [0, 0] => false,
                6 | 17 | 58 => ref_sum(&[&ph, seg]) == 0xFFFF,
                _ => true,
            }
        }
    }

    const HR: usize = 64;

    fn v4_frame(vlan: bool, tos: u8, id: u16, fo: u16, ttl: u8, proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x20, 0x07]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let tot = (20 + l4.len()) as u16;
        let mut h = vec![0x45, tos];
        h.extend_from_slice(&tot.to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&fo.to_be_bytes());
        h.extend_from_slice(&[ttl, proto, 0, 0, 198, 51, 100, 7, 203, 0, 113, 9]);
        let c = !ref_sum(&[&h]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let src = [198u8, 51, 100, 7];
        let dst = [203u8, 0, 113, 9];
        let mut seg = l4.to_vec();
        let ph = [&src[..], &dst[..], &[0, proto], &(seg.len() as u16).to_be_bytes()[..]].concat();
        match proto {
            6 if fo & 0x1FFF == 0 => {
                seg[16..18].fill(0);
                let c = !ref_sum(&[&ph, &seg]);
                seg[16..18].copy_from_slice(&c.to_be_bytes());
            }
            17 if fo & 0x1FFF == 0 => {
                seg[6..8].fill(0);
                let l = (seg.len() as u16).to_be_bytes();
                seg[4..6].copy_from_slice(&l);
                let ph = [&src[..], &dst[..], &[0, proto], &l[..]].concat();
                let c = match !ref_sum(&[&ph, &seg]) {
                    0 => 0xFFFF,
                    c => c,
                };
                seg[6..8].copy_from_slice(&c.to_be_bytes());
            }
            1 => {
                seg[2..4].fill(0);
                let c = !ref_sum(&[&seg]);
                seg[2..4].copy_from_slice(&c.to_be_bytes());
            }
            _ => {}
        }
        f.extend_from_slice(&h);
        f.extend_from_slice(&seg);
        f
    }

    fn cfgs(t: &EamTable) -> (Config<'_>, Config<'_>) {
        let p = Prefix64::new([0x20, 1, 0xd, 0xb8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 40).unwrap();
        let c46 = Config {
            src: Mapper::prefix(p),
            dst: Mapper { eam: Some(t), prefix: Some(WELL_KNOWN_PREFIX) },
            mtu: 9000,
            udp_zero_checksum: UdpZeroChecksum::Compute,
            rfc6791: Rfc6791::default(),
        };
        // Same packet back: the same mapper per address.
        let c64 = Config { rfc6791: Rfc6791::v4([192, 0, 0, 8]), ..c46 };
        (c46, c64)
    }

    fn eam() -> EamTable {
        let mut t = EamTable::with_capacity(4);
        t.insert(Eam {
            v4: [203, 0, 113, 0],
            v4_len: 24,
            v6: [0x20, 1, 0xd, 0xb8, 0xee, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            v6_len: 120,
        })
        .unwrap();
        t
    }

    fn l4_strategy() -> impl Strategy<Value = (u8, Vec<u8>)> {
        (0u8..3, proptest::collection::vec(any::<u8>(), 20..1500)).prop_map(|(k, mut v)| match k {
            0 => {
                v[12] = 0x50;
                (6, v)
            }
            1 => {
                // Nonzero checksum is guaranteed by the builder (0 -> FFFF).
                (17, v)
            }
            _ => {
                v[0] = if v[0] & 1 == 0 { 8 } else { 0 };
                v[1] = 0;
                (1, v)
            }
        })
    }

    proptest! {
        /// 4->6->4 is the identity for the invertible subset of IPv4:
        /// no options; not fragmented: ID 0 and DF = (Total Length > 1260)
        /// (RFC 7915 §5: 6->4 derives DF from the size and writes ID 0);
        /// fragmented (TCP/UDP only, ICMP fragments are dropped): DF 0, any
        /// ID, MF and offset; UDP with a checksum (4->6 fills in a zero one);
        /// TTL and TOS arbitrary; addresses inside the configured mappings.
        #[test]
        fn round_trip_4to6to4(
            vlan in any::<bool>(), tos in any::<u8>(), ttl in any::<u8>(),
            (proto, l4) in l4_strategy(), frag in any::<bool>(), id in any::<u16>(),
            mf in any::<bool>(), off in 0u16..0x1FFF,
        ) {
            let t = eam();
            let (c46, c64) = cfgs(&t);
            let frag = frag && proto != 1;
            let tot = 20 + l4.len();
            let (id, fo) = if frag {
                let off = if mf { off } else { off.max(1) };
                (id, (u16::from(mf) << 13) | off)
            } else {
                (0, if tot > 1260 { 0x4000 } else { 0 })
            };
            let f = v4_frame(vlan, tos, id, fo, ttl, proto, &l4);
            let mut buf = vec![0u8; HR + f.len()];
            buf[HR..].copy_from_slice(&f);
            let (s, l) = translate_4to6(&mut buf, HR, f.len(), &c46).unwrap();
            prop_assert_eq!(l, f.len() + 20 + if frag { 8 } else { 0 });
            prop_assert!(ref_valid(&buf[s..s + l]));
            let (s2, l2) = translate_6to4(&mut buf, s, l, &c64).unwrap();
            prop_assert_eq!(s2, HR);
            prop_assert_eq!(&buf[s2..s2 + l2], &f[..]);
        }

        /// Translated checksums are valid whenever the input's were, both
        /// directions, checked by an independent RFC 1071 implementation.
        #[test]
        fn checksums_stay_valid(
            tos in any::<u8>(), ttl in any::<u8>(), (proto, l4) in l4_strategy(), zero_udp in any::<bool>(),
        ) {
            let t = eam();
            let (c46, c64) = cfgs(&t);
            let mut f = v4_frame(false, tos, 0, 0x4000, ttl, proto, &l4);
            if proto == 17 && zero_udp {
                f[14 + 20 + 6..14 + 20 + 8].fill(0);
            }
            prop_assert!(ref_valid(&f));
            let mut buf = vec![0u8; HR + f.len()];
            buf[HR..].copy_from_slice(&f);
            let (s, l) = translate_4to6(&mut buf, HR, f.len(), &c46).unwrap();
            prop_assert!(ref_valid(&buf[s..s + l]));
            let (s, l) = translate_6to4(&mut buf, s, l, &c64).unwrap();
            prop_assert!(ref_valid(&buf[s..s + l]));
        }

    }

    #[test]
    fn drop_index_dense() {
        let all = Drop::ALL;
        assert_eq!(all.len(), Drop::COUNT);
        for (i, d) in all.iter().enumerate() {
            assert_eq!(d.index(), i);
            assert!(!d.name().is_empty());
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let t = eam();
        let (c46, _) = cfgs(&t);
        let f = v4_frame(true, 0, 0, 0, 9, 6, &[0x50; 40]);
        for n in 0..f.len() {
            let mut buf = vec![0u8; HR + f.len()];
            buf[HR..].copy_from_slice(&f);
            assert!(translate_4to6(&mut buf, HR, n, &c46).is_err(), "len {n}");
        }
        let mut buf = vec![0u8; 10];
        assert_eq!(translate_4to6(&mut buf, 5, usize::MAX, &c46), Err(Drop::Truncated));
        // No headroom.
        let mut buf = f.clone();
        assert_eq!(translate_4to6(&mut buf, 0, f.len(), &c46), Err(Drop::HeadroomExhausted));
    }
}
