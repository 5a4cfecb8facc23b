//! NAT: rewrite addresses and ports to the flow's binding, updating the
//! IPv4 header and TCP/UDP/ICMP checksums incrementally (RFC 1624).

use super::{get16, put16, Delta};
use crate::pipeline::flow::{proto, Family, FlowKey, FlowMeta, FragKind, NatBinding, NatSums};
use crate::wire::addr::v4_of;
use crate::wire::checksum::udp_encode;

/// The checksum change of rewriting a packet of `key` to `nat`, for
/// [`rewrite_tracked`] and the one-pass translation (`nat46::bound_*`):
/// `from` is the key's family, `to` the binding's. Between families the
/// transport checksum carries over: the pseudo-header loses the old
/// addresses and gains the new, its length and protocol words sum the same
/// in both (RFC 7915 §4.5, §5.5). The new IPv4 header of a flow translated
/// to IPv4 starts from its addresses' sum ([`to4_header_sum`]); IPv6 has
/// no header checksum (`l3` zero).
#[inline]
pub fn sums(key: &FlowKey, nat: &NatBinding, from: Family, to: Family) -> NatSums {
    let mut l3 = Delta::default();
    if from == to {
        // Fixed-size arrays: a new flow pays this twice.
        if from.is_v6() {
            l3.array(&key.src, &nat.src);
            l3.array(&key.dst, &nat.dst);
        } else {
            // Both addresses as one array: one fold, not two.
            let pair = |a: &[u8; 16], b: &[u8; 16]| {
                let mut both = [0u8; 8];
                both[..4].copy_from_slice(&v4_of(a));
                both[4..].copy_from_slice(&v4_of(b));
                both
            };
            l3.array(&pair(&key.src, &key.dst), &pair(&nat.src, &nat.dst));
        }
    } else {
        fn addrs(a: &[u8; 16], v6: bool) -> &[u8] {
            if v6 {
                a
            } else {
                &a[12..]
            }
        }
        l3.replace(addrs(&key.src, from.is_v6()), addrs(&nat.src, to.is_v6()));
        l3.replace(addrs(&key.dst, from.is_v6()), addrs(&nat.dst, to.is_v6()));
    }
    let mut l4 = l3;
    l4.host_words([key.sport, key.dport], [nat.sport, nat.dport]);
    let l3 = match (from == to, to) {
        (true, _) => l3.folded(),
        (false, Family::V4) => to4_header_sum(nat),
        (false, Family::V6) => Delta::ZERO,
    };
    NatSums { l3, l4: l4.folded() }
}

/// The part of a new IPv4 header's checksum that a flow translated to
/// IPv4 fixes: its binding's two addresses, summed from zero. Kept in the
/// flow's entry (`NatSums::l3`); the translation adds the words that vary
/// by packet.
#[inline]
pub fn to4_header_sum(nat: &NatBinding) -> Delta {
    crate::nat46::header_addrs(v4_of(&nat.src), v4_of(&nat.dst)).folded()
}

/// [`rewrite`] for a packet that hit its flow's entry: its addresses and
/// ports are the entry's key, so the checksums take the change the entry
/// keeps ([`sums`]) and the old fields are not read. TCP and UDP; the rest
/// goes the general way.
#[inline(always)]
pub fn rewrite_tracked(frame: &mut [u8], flow: &FlowMeta) -> Option<()> {
    let is_udp = match flow.key.proto {
        proto::TCP => false,
        proto::UDP => true,
        _ => return rewrite(frame, flow),
    };
    let (l3, l4) = (usize::from(flow.l3), usize::from(flow.l4));
    let (nat, sums) = (&flow.nat, flow.sums);
    if flow.family.is_v6() {
        let a = frame.get_mut(l3 + 8..l3 + 40)?;
        a[..16].copy_from_slice(&nat.src);
        a[16..].copy_from_slice(&nat.dst);
    } else {
        let h = frame.get_mut(l3..l3 + 20)?;
        h[12..16].copy_from_slice(&nat.src[12..]);
        h[16..20].copy_from_slice(&nat.dst[12..]);
        let c = u16::from_be_bytes([h[10], h[11]]);
        h[10..12].copy_from_slice(&sums.l3.apply(c).to_be_bytes());
    }
    if flow.frag == FragKind::Later {
        return Some(());
    }
    let at = if is_udp { 6 } else { 16 };
    let t = frame.get_mut(l4..l4 + at + 2)?;
    t[0..4].copy_from_slice(&(u32::from(nat.sport) << 16 | u32::from(nat.dport)).to_be_bytes());
    let c = u16::from_be_bytes([t[at], t[at + 1]]);
    let new = if is_udp {
        if c == 0 && !flow.family.is_v6() {
            return Some(());
        }
        udp_encode(sums.l4.apply(c))
    } else {
        sums.l4.apply(c)
    };
    t[at..at + 2].copy_from_slice(&new.to_be_bytes());
    Some(())
}

/// Rewrites `frame` to `flow.nat`. None if a header is out of bounds (the
/// parser checked them, so that means a bug or a hostile frame: drop).
#[inline(always)]
pub fn rewrite(frame: &mut [u8], flow: &FlowMeta) -> Option<()> {
    let (l3, l4) = (usize::from(flow.l3), usize::from(flow.l4));
    let nat = &flow.nat;
    let mut addrs = Delta::default();
    if flow.family.is_v6() {
        let a = frame.get_mut(l3 + 8..l3 + 40)?;
        addrs.write(&mut a[..16], &nat.src);
        addrs.write(&mut a[16..], &nat.dst);
    } else {
        let h = frame.get_mut(l3..l3 + 20)?;
        addrs.write(&mut h[12..16], &nat.src[12..]);
        addrs.write(&mut h[16..20], &nat.dst[12..]);
        let c = u16::from_be_bytes([h[10], h[11]]);
        h[10..12].copy_from_slice(&addrs.apply(c).to_be_bytes());
    }
    if flow.frag == FragKind::Later {
        // No L4 header here: the first fragment's checksum fix covers the datagram.
        return Some(());
    }
    match flow.key.proto {
        proto::TCP | proto::UDP => {
            let is_udp = flow.key.proto == proto::UDP;
            let at = if is_udp { 6 } else { 16 };
            let t = frame.get_mut(l4..l4 + at + 2)?;
            let (os, od) = (u16::from_be_bytes([t[0], t[1]]), u16::from_be_bytes([t[2], t[3]]));
            let mut d = addrs;
            d.word(os, nat.sport);
            d.word(od, nat.dport);
            t[0..2].copy_from_slice(&nat.sport.to_be_bytes());
            t[2..4].copy_from_slice(&nat.dport.to_be_bytes());
            let c = u16::from_be_bytes([t[at], t[at + 1]]);
            let new = if is_udp {
                if c == 0 && !flow.family.is_v6() {
                    // IPv4 UDP checksum 0 means "none" and must stay 0 (RFC 768).
                    return Some(());
                }
                // A computed 0 is sent as 0xFFFF (RFC 768; required for IPv6, RFC 8200 §8.1).
                udp_encode(d.apply(c))
            } else {
                d.apply(c)
            };
            t[at..at + 2].copy_from_slice(&new.to_be_bytes());
            Some(())
        }
        proto::ICMP | proto::ICMPV6 => {
            // Echo: the identifier plays the port's role.
            let c = get16(frame, l4 + 2)?;
            let id = get16(frame, l4 + 4)?;
            let mut d = Delta::default();
            d.word(id, nat.dport);
            if flow.family.is_v6() {
                // ICMPv6 covers the pseudo-header; ICMPv4 does not.
                d += addrs;
            }
            put16(frame, l4 + 4, nat.dport)?;
            put16(frame, l4 + 2, d.apply(c))
        }
        _ => Some(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Ethernet + IPv4/IPv6 + a transport header of 20 bytes, every byte
    /// `fill`'s, then the key fields of `key` written where they belong.
    fn frame(v6: bool, key: &FlowKey, fill: &[u8]) -> (Vec<u8>, FlowMeta) {
        let l4 = if v6 { 54 } else { 34 };
        let mut b: Vec<u8> = fill.iter().copied().cycle().take(l4 + 20).collect();
        if v6 {
            b[22..38].copy_from_slice(&key.src);
            b[38..54].copy_from_slice(&key.dst);
        } else {
            b[26..30].copy_from_slice(&key.src[12..]);
            b[30..34].copy_from_slice(&key.dst[12..]);
        }
        b[l4..l4 + 2].copy_from_slice(&key.sport.to_be_bytes());
        b[l4 + 2..l4 + 4].copy_from_slice(&key.dport.to_be_bytes());
        let flow = FlowMeta {
            family: if v6 { Family::V6 } else { Family::V4 },
            l3: 14,
            l4: l4 as u16,
            key: *key,
            ..FlowMeta::default()
        };
        (b, flow)
    }

    fn addr(v6: bool, a: [u8; 16]) -> [u8; 16] {
        if v6 {
            a
        } else {
            crate::wire::addr::mapped([a[0], a[1], a[2], a[3]])
        }
    }

    /// The two sums a one's complement change can fold to when it is zero:
    /// 0 (every term zero: old words all ones, new all zeros) and 0xFFFF
    /// (an identity binding, DSR's). Reversed, each must be what the reply
    /// direction's own words give.
    #[test]
    fn reply_sums_reverse_both_zeros() {
        for v6 in [false, true] {
            let fam = if v6 { Family::V6 } else { Family::V4 };
            for (a, p, na, np) in [([0xff; 16], 0xffff, [0; 16], 0), ([7; 16], 80, [7; 16], 80)] {
                let key = FlowKey::new(addr(v6, a), addr(v6, a), p, p, proto::TCP);
                let nat = NatBinding { src: addr(v6, na), dst: addr(v6, na), sport: np, dport: np };
                let reply_key = key.peer(&nat, crate::pipeline::flow::EntryFlags::NONE);
                let reply = NatBinding { src: key.dst, sport: key.dport, dst: key.src, dport: key.sport };
                let want = sums(&reply_key, &reply, fam, fam);
                assert_eq!(want, sums(&key, &nat, fam, fam).reversed(), "v6 {v6}, {a:?} -> {na:?}");
            }
        }
    }

    proptest! {
        /// A flow's reply entry may take the original entry's change summed
        /// the other way: it equals the change worked out from the reply's
        /// own key and binding (both families, words of all ones and zeros
        /// included).
        #[test]
        fn reply_sums_are_the_original_reversed(
            v6: bool, src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16,
            nsrc: [u8; 16], ndst: [u8; 16], nsport: u16, ndport: u16, extreme in 0u8..4,
        ) {
            let pick = |a: [u8; 16], n: u8| match n { 1 => [0; 16], 2 => [0xff; 16], _ => a };
            let (src, nsrc) = (pick(src, extreme), pick(nsrc, 3 - extreme));
            let key = FlowKey::new(addr(v6, src), addr(v6, dst), sport, dport, proto::TCP);
            let nat = NatBinding { src: addr(v6, nsrc), dst: addr(v6, ndst), sport: nsport, dport: ndport };
            let fam = if v6 { Family::V6 } else { Family::V4 };
            let reply_key = key.peer(&nat, crate::pipeline::flow::EntryFlags::NONE);
            let reply = NatBinding { src: key.dst, sport: key.dport, dst: key.src, dport: key.sport };
            prop_assert_eq!(sums(&reply_key, &reply, fam, fam), sums(&key, &nat, fam, fam).reversed());
        }

        /// The entry's kept checksum change gives byte for byte what reading
        /// the old fields gives, whatever the checksums were (zero ones
        /// included) and for first, later and whole packets.
        #[test]
        fn tracked_rewrite_matches_general(
            v6: bool, udp: bool, later: bool,
            src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16,
            nsrc: [u8; 16], ndst: [u8; 16], nsport: u16, ndport: u16,
            fill in proptest::collection::vec(any::<u8>(), 1..8),
            zero_csum: bool,
        ) {
            let proto = if udp { proto::UDP } else { proto::TCP };
            let key = FlowKey::new(addr(v6, src), addr(v6, dst), sport, dport, proto);
            let nat = NatBinding { src: addr(v6, nsrc), dst: addr(v6, ndst), sport: nsport, dport: ndport };
            let (mut b, mut flow) = frame(v6, &key, &fill);
            if zero_csum {
                let at = usize::from(flow.l4) + if udp { 6 } else { 16 };
                b[at..at + 2].fill(0);
            }
            flow.nat = nat;
            flow.frag = if later { FragKind::Later } else { FragKind::Whole };
            flow.sums = sums(&key, &nat, flow.family, flow.family);
            let mut general = b.clone();
            prop_assert!(rewrite(&mut general, &flow).is_some());
            prop_assert!(rewrite_tracked(&mut b, &flow).is_some());
            prop_assert_eq!(b, general);
        }
    }
}
