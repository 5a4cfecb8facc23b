//! Fast path of [`super::siit`] for the common shape: untagged Ethernet,
//! IPv4 with IHL 5 or IPv6 without extension headers, unfragmented TCP, or
//! UDP with a checksum, addresses that map, and a packet that fits the MTU.
//!
//! Each function reads the old L2 + L3 header once into a fixed-size array,
//! writes the new one with one fixed-size copy, and updates the transport
//! checksum with one RFC 1624 delta. It returns `None`, having written
//! nothing, for anything else (including every error), and the caller then
//! runs the general translator; when it returns `Some`, the buffer and the
//! result are byte for byte what the general translator produces (a property
//! test below checks this on valid and corrupted frames).

use super::siit::Config;
use crate::wire::checksum::{udp_encode, Delta};
use std::borrow::Borrow;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const TCP: u8 = 6;
const UDP: u8 = 17;
/// Untagged Ethernet header.
const L2: usize = 14;
/// Ethernet + IPv4 header without options.
const HDR4: usize = L2 + 20;
/// Ethernet + IPv6 header.
const HDR6: usize = L2 + 40;

// Performance note: the headers are read from and written to the frame with
// wide loads and stores (arrays, `u32`/`u64` words). Assembling a header
// byte by byte on the stack and then copying or summing it with wide loads
// defeats store-to-load forwarding and cost more than the translation.

#[inline(always)]
fn read<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    read(b, at).map(u16::from_be_bytes)
}

/// Whether an IPv4 header's checksum is right: a correct header sums to
/// 0xFFFF. Summed as five 32-bit words in the machine's order (the sum of a
/// 0xFFFF is the same either way round, RFC 1071 §2(B)). Folding with
/// end-around carry keeps a sum's value modulo 0xFFFF (2^16 ≡ 1) and gives
/// 0xFFFF, the only nonzero folded value ≡ 0, exactly when the sum is a
/// nonzero multiple of 0xFFFF: one multiply instead of four folds.
#[inline(always)]
fn header_sums_right(ip: &[u8; 20]) -> bool {
    let wide: u64 = (0..5).filter_map(|i| read(ip, 4 * i)).map(|w| u64::from(u32::from_ne_bytes(w))).sum();
    wide != 0 && wide.is_multiple_of(0xFFFF)
}

/// Folds a `u32` sum to 16 bits with end-around carry: the same steps as
/// `checksum::fold`, unrolled (two rounds reach `<= 0xFFFF` from any `u32`:
/// the first gives at most 0x1FFFE, the second at most 0xFFFF).
#[inline(always)]
fn fold(x: u32) -> u16 {
    let x = (x & 0xFFFF) + (x >> 16);
    ((x & 0xFFFF) + (x >> 16)) as u16
}

/// Sum of the two 16-bit words of `x`, not folded.
#[inline(always)]
fn w32(x: u32) -> u32 {
    (x >> 16) + (x & 0xFFFF)
}

/// Sum of the eight 16-bit words of `x`, not folded.
#[inline(always)]
fn w128(x: u128) -> u32 {
    w32((x >> 96) as u32) + w32((x >> 64) as u32) + w32((x >> 32) as u32) + w32(x as u32)
}

/// Offset of the TCP or UDP checksum field in the transport header.
#[inline(always)]
fn csum_offset(proto: u8) -> Option<usize> {
    match proto {
        TCP => Some(16),
        UDP => Some(6),
        _ => None,
    }
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-4.5
//# the translator needs to update the upper-layer checksum
//
// The TCP/UDP pseudo-header holds the addresses, the protocol and the
// upper-layer length. The length and protocol words add up to the same one's
// complement sum in both families (RFC 768 / RFC 8200 §8.1: a 16-bit length
// and an 8-bit protocol for IPv4, a 32-bit length and a 24-bit-zero-padded
// next header for IPv6), so only the addresses change the sum, and RFC 1624
// Eqn. 3 over all of them at once is
//
//     HC' = ~(~HC + ~sum(old addresses) + sum(new addresses))
//
// which is what the general path's `update_bytes` computes. `old_addrs` and
// `new_addrs` are unfolded word sums: a sum folded with end-around carry is 0
// only if every word is 0, so folding here gives the general path's values.
#[inline(always)]
fn l4_csum(proto: u8, old_csum: u16, old_addrs: u32, new_addrs: u32) -> u16 {
    let not_old = u32::from(!fold(old_addrs));
    let c = !fold(u32::from(!old_csum) + not_old + u32::from(fold(new_addrs)));
    if proto == UDP {
        udp_encode(c)
    } else {
        c
    }
}

/// The frame split at `l4` into the new header `[new_start, l4)` and the
/// transport header up to and including its checksum field, with the old
/// checksum. Checks the field ends by `pend`; `None` for UDP without a
/// checksum (the general path's rules for it differ by direction).
#[allow(clippy::type_complexity)]
#[inline(always)]
fn split_out<const H: usize>(
    b: &mut [u8],
    new_start: usize,
    l4: usize,
    pend: usize,
    proto: u8,
) -> Option<(&mut [u8; H], &mut [u8], u16)> {
    let at = csum_offset(proto)?;
    if l4 + at + 2 > pend {
        return None;
    }
    let (front, seg) = b.split_at_mut_checked(l4)?;
    let hdr: &mut [u8; H] = front.get_mut(new_start..)?.try_into().ok()?;
    let seg = seg.get_mut(..at + 2)?;
    let c = be16(seg, at)?;
    if proto == UDP && c == 0 {
        return None;
    }
    Some((hdr, seg, c))
}

/// A tracked flow's binding, for [`bound_4to6`] / [`bound_6to4`]: the
/// output's addresses (in wire order) and ports, and what the flow's entry
/// keeps of its checksums (see `pipeline::flow::NatSums`): the transport
/// checksum's change from the flow's key to them, and, to IPv4, the new
/// header's address sum (unused to IPv6).
#[derive(Debug, Clone, Copy)]
pub struct Bound<A> {
    pub src: A,
    pub dst: A,
    pub sport: u16,
    pub dport: u16,
    pub l3: Delta,
    pub l4: Delta,
}

/// Finishes the transport header `seg` (up to and including its checksum,
/// whose old value is `c`). Stateless: the checksum updated by one RFC 1624
/// delta for the address words (`sums()`: the unfolded old and new sums).
/// Bound: the binding's ports over its first four bytes and the checksum
/// updated by the binding's kept change, which covers the ports too.
#[inline(always)]
fn finish_transport(
    seg: &mut [u8],
    proto: u8,
    c: u16,
    sums: impl FnOnce() -> (u32, u32),
    bound: Option<(u16, u16, Delta)>,
) -> Option<()> {
    let at = seg.len().checked_sub(2)?;
    let new = if let Some((sport, dport, l4)) = bound {
        let ports: &mut [u8; 4] = seg.get_mut(..4)?.try_into().ok()?;
        *ports = (u32::from(sport) << 16 | u32::from(dport)).to_be_bytes();
        let c = l4.apply(c);
        if proto == UDP {
            udp_encode(c)
        } else {
            c
        }
    } else {
        let (old_sum, new_sum) = sums();
        l4_csum(proto, c, old_sum, new_sum)
    };
    seg.get_mut(at..)?.copy_from_slice(&new.to_be_bytes());
    Some(())
}

/// What to do besides the RFC 7915 header change: nothing (stateless SIIT),
/// or, for a tracked flow, set its ports and act as a router (Hop Limit /
/// TTL down by one; a packet with 1 or less is left to the general path,
/// which answers with Time Exceeded).
#[derive(Clone, Copy)]
struct Routed {
    bound: Option<(u16, u16, Delta)>,
}

impl Routed {
    const NO: Routed = Routed { bound: None };

    /// The outgoing hop count, or None when it runs out here.
    #[inline(always)]
    fn hop(self, hop: u8) -> Option<u8> {
        match self.bound {
            None => Some(hop),
            Some(_) if hop <= 1 => None,
            Some(_) => Some(hop - 1),
        }
    }
}

/// IPv4 -> IPv6 (RFC 7915 §4) for the common shape, or `None` untouched.
pub(super) fn translate_4to6(
    buf: &mut [u8],
    start: usize,
    len: usize,
    cfg: &Config,
) -> Option<(usize, usize)> {
    let map = |s, d| Some((cfg.src.map4(s)?.to_be_bytes(), cfg.dst.map4(d)?.to_be_bytes()));
    four_to_six(buf, start, len, cfg.mtu, map, Routed::NO)
}

/// IPv4 -> IPv6 straight to a tracked flow's binding in one pass: the
/// header change of `translate_4to6` with the binding's addresses
/// instead of mapped ones, its ports, one checksum delta for all of it, and
/// the Hop Limit one less than the TTL. `None`, untouched, for anything
/// but the common shape within `mtu` and with a TTL above 1.
#[inline]
pub fn bound_4to6(
    buf: &mut [u8],
    start: usize,
    len: usize,
    mtu: u16,
    to: &Bound<&[u8; 16]>,
) -> Option<(usize, usize)> {
    let routed = Routed { bound: Some((to.sport, to.dport, to.l4)) };
    four_to_six(buf, start, len, mtu, |_, _| Some((to.src, to.dst)), routed)
}

/// `map` gives the new addresses, or borrows them (a binding's are read
/// where they are written, not copied to the stack first).
#[inline(always)]
fn four_to_six<A: Borrow<[u8; 16]>>(
    buf: &mut [u8],
    start: usize,
    len: usize,
    mtu: u16,
    map: impl FnOnce(u32, u32) -> Option<(A, A)>,
    routed: Routed,
) -> Option<(usize, usize)> {
    // One copy a protocol, as in `six_to_four`. Reading the header before
    // the dispatch and its first eight bytes as one word, as that does, ran
    // ten fewer instructions here but 1 ns slower over four code placements
    // (2026-12-05), so this one doesn't.
    match *buf.get(start.checked_add(L2 + 9)?)? {
        TCP => four_to_six_of::<TCP, A>(buf, start, len, mtu, map, routed),
        UDP => four_to_six_of::<UDP, A>(buf, start, len, mtu, map, routed),
        _ => None,
    }
}

#[inline(always)]
fn four_to_six_of<const PROTO: u8, A: Borrow<[u8; 16]>>(
    buf: &mut [u8],
    start: usize,
    len: usize,
    mtu: u16,
    map: impl FnOnce(u32, u32) -> Option<(A, A)>,
    routed: Routed,
) -> Option<(usize, usize)> {
    let proto = PROTO;
    let end = start.checked_add(len)?;
    let b = buf.get_mut(..end)?;
    let old: [u8; HDR4] = read(b, start)?;
    let ip: [u8; 20] = read(&old, L2)?;
    let (tos, ttl) = (ip[1], ip[8]);
    let tot = usize::from(be16(&ip, 2)?);
    // No VLAN tag, IHL 5, MF 0 and offset 0 (DF may be set).
    if be16(&old, 12)? != ETH_P_IPV4 || ip[0] != 0x45 || be16(&ip, 6)? & 0x3FFF != 0 {
        return None;
    }
    let l4 = start + HDR4;
    let pend = start + L2 + tot;
    if tot < 20 || pend > end {
        return None;
    }
    if !header_sums_right(&ip) {
        return None;
    }
    let ul_len = tot - 20;
    //= https://www.rfc-editor.org/rfc/rfc7915#section-4.1
    //# If the DF bit is set and the MTU of the next-hop interface is less
    //# than the total length value of the IPv4 packet plus 20, the
    //# translator MUST send an ICMPv4 "Fragmentation Needed" error message
    //# to the IPv4 source address.
    //
    // (Left to the general path, like every other error.)
    if 40 + ul_len > usize::from(mtu) {
        return None;
    }
    let ttl = routed.hop(ttl)?;
    let (src4, dst4) = (read(&ip, 12).map(u32::from_be_bytes)?, read(&ip, 16).map(u32::from_be_bytes)?);
    let (src6, dst6) = map(src4, dst4)?;
    let macs: [u8; 12] = read(&old, 0)?;
    let (hdr, seg, c) = split_out::<HDR6>(b, l4.checked_sub(HDR6)?, l4, pend, proto)?;

    // Nothing was written before this point.
    let sums = || {
        let (s, d) = (u128::from_be_bytes(*src6.borrow()), u128::from_be_bytes(*dst6.borrow()));
        (w32(src4) + w32(dst4), w128(s) + w128(d))
    };
    finish_transport(seg, proto, c, sums, routed.bound)?;

    //= https://www.rfc-editor.org/rfc/rfc7915#section-4.1
    // (paraphrase) Version 6; Traffic Class = IPv4 TOS; Flow Label 0; Payload
    // Length = Total Length - IPv4 header length; Next Header = Protocol;
    // Hop Limit = TTL; addresses per the mapping.
    let first = (0x6000_0000_u64 | u64::from(tos) << 20) << 32
        | (ul_len as u64) << 16
        | u64::from(proto) << 8
        | u64::from(ttl);
    hdr[..12].copy_from_slice(&macs);
    hdr[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    hdr[14..22].copy_from_slice(&first.to_be_bytes());
    hdr[22..38].copy_from_slice(src6.borrow());
    hdr[38..].copy_from_slice(dst6.borrow());
    Some((l4 - HDR6, HDR6 + ul_len))
}

/// A new IPv4 header's two addresses (wire order) as a checksum change
/// from zero, summed as the machine reads them: the part of the header
/// checksum they fix, unfolded. A tracked flow keeps it folded in its
/// entry (`pipeline::rewrite::nat::to4_header_sum`).
#[inline(always)]
pub fn header_addrs(src: [u8; 4], dst: [u8; 4]) -> Delta {
    let mut d = Delta::ZERO;
    d.add_ne(u32::from_ne_bytes(src));
    d.add_ne(u32::from_ne_bytes(dst));
    d
}

/// IPv6 -> IPv4 (RFC 7915 §5) for the common shape, or `None` untouched.
pub(super) fn translate_6to4(
    buf: &mut [u8],
    start: usize,
    len: usize,
    cfg: &Config,
) -> Option<(usize, usize)> {
    let map = |s, d| {
        let (s, d) = (cfg.src.map6(s)?.to_be_bytes(), cfg.dst.map6(d)?.to_be_bytes());
        Some((s, d, header_addrs(s, d)))
    };
    six_to_four(buf, start, len, cfg.mtu, map, Routed::NO)
}

/// IPv6 -> IPv4 straight to a tracked flow's binding in one pass (see
/// [`bound_4to6`]): the TTL is one less than the Hop Limit.
#[inline]
pub fn bound_6to4(
    buf: &mut [u8],
    start: usize,
    len: usize,
    mtu: u16,
    to: &Bound<[u8; 4]>,
) -> Option<(usize, usize)> {
    let routed = Routed { bound: Some((to.sport, to.dport, to.l4)) };
    six_to_four(buf, start, len, mtu, |_, _| Some((to.src, to.dst, to.l3)), routed)
}

#[inline(always)]
fn six_to_four(
    buf: &mut [u8],
    start: usize,
    len: usize,
    mtu: u16,
    map: impl FnOnce(u128, u128) -> Option<([u8; 4], [u8; 4], Delta)>,
    routed: Routed,
) -> Option<(usize, usize)> {
    let end = start.checked_add(len)?;
    let b = buf.get_mut(..end)?;
    let old: [u8; HDR6] = read(b, start)?;
    // One copy a protocol: its checksum's place and UDP's zero rule are
    // constants there, not selects. The header is read (and its bounds
    // checked) once, for the dispatch and the copy alike.
    match old[L2 + 6] {
        TCP => six_to_four_of::<TCP>(b, start, old, mtu, map, routed),
        UDP => six_to_four_of::<UDP>(b, start, old, mtu, map, routed),
        _ => None,
    }
}

/// `b` ends where the packet does; `old` is its first `HDR6` bytes.
#[inline(always)]
fn six_to_four_of<const PROTO: u8>(
    b: &mut [u8],
    start: usize,
    old: [u8; HDR6],
    mtu: u16,
    map: impl FnOnce(u128, u128) -> Option<([u8; 4], [u8; 4], Delta)>,
    routed: Routed,
) -> Option<(usize, usize)> {
    let proto = PROTO;
    let end = b.len();
    // EtherType, version, Traffic Class, Flow Label and Payload Length as
    // one word: one load for the checks and the fields.
    let head = read(&old, 12).map(u64::from_be_bytes)?;
    let hl = old[L2 + 7];
    // No VLAN tag, version 6, no extension headers (Next Header is TCP/UDP,
    // read by the caller).
    if head >> 44 != (u64::from(ETH_P_IPV6) << 4 | 6) {
        return None;
    }
    let (tc, ul_len) = (u32::from((head >> 36) as u8), usize::from(head as u16));
    let l4 = start + HDR6;
    let pend = l4 + ul_len;
    let tot = 20 + ul_len;
    if pend > end || tot > usize::from(mtu) {
        return None;
    }
    let hl = routed.hop(hl)?;
    let src = read(&old, L2 + 8).map(u128::from_be_bytes)?;
    let dst = read(&old, L2 + 24).map(u128::from_be_bytes)?;
    // The new addresses, and their sum for the header checksum.
    let (src4, dst4, addrs) = map(src, dst)?;
    let macs: [u8; 12] = read(&old, 0)?;
    let (hdr, seg, c) = split_out::<HDR4>(b, l4 - HDR4, l4, pend, proto)?;

    //= https://www.rfc-editor.org/rfc/rfc7915#section-5.5
    //# Translators MUST do this for TCP, UDP, and ICMP.
    //
    // Nothing was written before this point.
    let new_addrs = || w32(u32::from_be_bytes(src4)) + w32(u32::from_be_bytes(dst4));
    finish_transport(seg, proto, c, || (w128(src) + w128(dst), new_addrs()), routed.bound)?;

    //= https://www.rfc-editor.org/rfc/rfc7915#section-5.1
    // (paraphrase) Version 4, IHL 5 (no options); TOS = Traffic Class; Total
    // Length = Payload Length + 20; Identification 0 (no generator); TTL =
    // Hop Limit; Protocol = Next Header; header checksum computed.
    //
    //= https://www.rfc-editor.org/rfc/rfc7915#section-5
    //# When the resulting IPv4 packet is smaller than or equal to 1260
    //# bytes, the translator MUST send the packet with a cleared Don't
    //# Fragment bit.  Otherwise, the packet MUST be sent with the Don't
    //# Fragment bit set.
    //
    // The header checksum sums the words as the machine reads them (RFC
    // 1071 §2(B)): the addresses' part comes with them, the rest is the
    // bytes stored, and the checksum is stored as it comes out: no swaps.
    let w0 = (0x4500_0000 | tc << 16 | tot as u32).to_be_bytes();
    let w1 = if tot > 1260 { 0x4000_u32 } else { 0 }.to_be_bytes();
    let mut sum = addrs;
    sum.add_ne(u32::from_ne_bytes(w0));
    sum.add_ne(u32::from_ne_bytes(w1));
    sum.add_ne(u32::from(u16::from_ne_bytes([hl, proto])));
    let [c0, c1] = sum.checksum_bytes();
    hdr[..12].copy_from_slice(&macs);
    hdr[12..14].copy_from_slice(&ETH_P_IPV4.to_be_bytes());
    hdr[14..18].copy_from_slice(&w0);
    hdr[18..22].copy_from_slice(&w1);
    hdr[22..26].copy_from_slice(&[hl, proto, c0, c1]);
    hdr[26..30].copy_from_slice(&src4);
    hdr[30..].copy_from_slice(&dst4);
    Some((l4 - HDR4, HDR4 + ul_len))
}

#[cfg(test)]
mod tests {
    use super::super::addr::{Eam, EamTable, Mapper, Prefix64, WELL_KNOWN_PREFIX};
    use super::super::siit::{general_4to6, general_6to4, Config, Rfc6791, UdpZeroChecksum};
    use crate::wire::checksum::checksum;
    use proptest::prelude::*;

    const P40: [u8; 16] = [0x20, 1, 0xd, 0xb8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    const EAM6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0xee, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    /// IPv4 addresses: global, EAM-mapped, RFC 1918 (refused by the WKP).
    const V4: [[u8; 4]; 3] = [[198, 51, 100, 7], [203, 0, 113, 9], [10, 1, 2, 3]];

    fn eam() -> EamTable {
        let mut t = EamTable::with_capacity(2);
        t.insert(Eam { v4: [203, 0, 113, 0], v4_len: 24, v6: EAM6, v6_len: 120 }).unwrap();
        t
    }

    /// Mapper `k`: WKP, a /40 prefix, the EAM table with the WKP behind it.
    fn mapper(t: &EamTable, k: u8) -> Mapper<'_> {
        match k % 3 {
            0 => Mapper::prefix(WELL_KNOWN_PREFIX),
            1 => Mapper::prefix(Prefix64::new(P40, 40).unwrap()),
            _ => Mapper { eam: Some(t), prefix: Some(WELL_KNOWN_PREFIX) },
        }
    }

    fn config(t: &EamTable, src: u8, dst: u8, mtu: u16) -> Config<'_> {
        Config {
            src: mapper(t, src),
            dst: mapper(t, dst),
            mtu,
            udp_zero_checksum: UdpZeroChecksum::Compute,
            rfc6791: Rfc6791::v4([192, 0, 0, 8]),
        }
    }

    /// A frame of the fast path's shape (before corruption): TCP or UDP over
    /// IPv4 (with `tos`, DF) or IPv6 (with `tos` as Traffic Class and a flow
    /// label), addresses picked from what the mappers of `config` map.
    #[allow(clippy::too_many_arguments)]
    fn frame(
        v6: bool,
        tcp: bool,
        src: [u8; 4],
        dst: [u8; 4],
        m: (u8, u8),
        tos: u8,
        payload: &[u8],
    ) -> Vec<u8> {
        let t = eam();
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = if v6 {
            let s = mapper(&t, m.0)
                .v4_to_v6(src)
                .unwrap_or([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            let d = mapper(&t, m.1)
                .v4_to_v6(dst)
                .unwrap_or([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            b.ipv6(s, d, 64)
        } else {
            b.ipv4(src, dst, 64)
        };
        let mut f = Vec::new();
        if tcp {
            b.tcp(1000, 80, 7, 1024).ack(9).write(&mut f, payload).unwrap();
        } else {
            b.udp(1000, 53).write(&mut f, payload).unwrap();
        }
        if v6 {
            f[14] = 0x60 | (tos >> 4);
            f[15] = (tos << 4) | 0x0a;
            f[16] = 0xbc;
        } else {
            f[15] = tos;
            f[20] |= 0x40;
            f[24..26].fill(0);
            let c = checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        f
    }

    /// Runs the fast path and the general path on copies of `frame` behind
    /// `hr` bytes of headroom. `Some` must equal the general result byte for
    /// byte; `None` must leave the buffer untouched. Returns whether the fast
    /// path took it.
    fn agree(v6: bool, frame: &[u8], hr: usize, len: usize, cfg: &Config) -> Result<bool, TestCaseError> {
        let mut buf = vec![0u8; hr + frame.len()];
        buf[hr..].copy_from_slice(frame);
        let (mut fast, mut general) = (buf.clone(), buf.clone());
        let (f, g) = if v6 {
            (super::translate_6to4(&mut fast, hr, len, cfg), general_6to4(&mut general, hr, len, cfg))
        } else {
            (super::translate_4to6(&mut fast, hr, len, cfg), general_4to6(&mut general, hr, len, cfg))
        };
        match f {
            Some(r) => {
                prop_assert_eq!(Ok(r), g);
                prop_assert_eq!(fast, general);
            }
            None => prop_assert_eq!(fast, buf),
        }
        Ok(f.is_some())
    }

    proptest! {
        /// The divisibility test agrees with RFC 1071's fold on any 20
        /// bytes, and on headers whose checksum field is set right.
        #[test]
        fn header_check_equals_the_fold(mut h in any::<[u8; 20]>(), fix in any::<bool>()) {
            if fix {
                h[10..12].fill(0);
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            let folded = h.chunks(2).fold(0u32, |a, w| a + u32::from(u16::from_be_bytes([w[0], w[1]])));
            prop_assert_eq!(super::header_sums_right(&h), super::fold(folded) == 0xFFFF);
            if fix {
                prop_assert!(super::header_sums_right(&h));
            }
        }

        /// The fast path agrees with the general path on valid frames and on
        /// frames with one byte changed, cut short, padded, with little or
        /// no headroom, a small MTU or a zero UDP checksum; and it takes
        /// every valid frame of its shape whose addresses map.
        #[test]
        fn fast_path_matches_general(
            v6 in any::<bool>(), tcp in any::<bool>(),
            (src, dst) in (0usize..3, 0usize..3), m in (0u8..3, 0u8..3), cm in (0u8..3, 0u8..3),
            tos in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..1400),
            flip in any::<(usize, u8)>(), cut in 0usize..4, pad in 0usize..8, zero_udp in any::<bool>(),
            hr in prop_oneof![Just(64usize), 0usize..30], mtu in prop_oneof![Just(1500u16), 1u16..1500],
        ) {
            let t = eam();
            let f = frame(v6, tcp, V4[src], V4[dst], m, tos, &payload);
            let cfg = config(&t, m.0, m.1, 1500);
            // Valid and mappable: the fast path must take it.
            let maps = cfg.src.v4_to_v6(V4[src]).is_some() && cfg.dst.v4_to_v6(V4[dst]).is_some();
            let took = agree(v6, &f, 64, f.len(), &cfg)?;
            prop_assert_eq!(took, maps);

            let cfg = config(&t, cm.0, cm.1, mtu);
            let mut g = f.clone();
            g.resize(f.len() + pad, 0);
            if !tcp && zero_udp {
                let at = if v6 { 54 + 6 } else { 34 + 6 };
                g[at..at + 2].fill(0);
            }
            agree(v6, &g, hr, g.len(), &cfg)?;
            agree(v6, &g, hr, g.len().saturating_sub(cut * 9), &cfg)?;
            let i = flip.0 % g.len();
            g[i] ^= flip.1;
            agree(v6, &g, hr, g.len(), &cfg)?;
            agree(!v6, &g, hr, g.len(), &cfg)?;
        }
    }
}
