//! RFC 7915 header translation in place over Ethernet frames.
//!
//! The payload after the (outer, and for ICMP errors the inner) IP header
//! never moves: the new headers are written in front of it, so 4->6 grows the
//! frame toward the buffer's headroom and 6->4 shrinks it. The Ethernet MACs
//! and an 802.1Q tag are copied unchanged; only the ethertype changes.
//!
//! TTL / Hop Limit is copied, not decremented: routing (and the decision to
//! answer with [`build_time_exceeded`]) belongs to the caller.

use core::net::Ipv6Addr;

use super::addr::Mapper;
use crate::wire::checksum::{checksum, fold, l4_checksum_v6, pseudo_header_v6, udp_encode, update_bytes};
use crate::wire::ethernet::{
    ETHERTYPE_IPV4 as ETH_P_IPV4, ETHERTYPE_IPV6 as ETH_P_IPV6, ETHERTYPE_VLAN as ETH_P_8021Q,
};
use crate::wire::ip_protocol::{ICMP, ICMPV6 as ICMP6, TCP, UDP};
use crate::wire::{ipv4, ipv6};

const FRAG: u8 = 44;
const MAX_EXT: usize = 8;

/// Where a translated (or built) frame now lies in its buffer, as
/// `(start, len)`, or why there is none.
pub type Placed = Result<(usize, usize), Drop>;

/// Why a frame was not translated. `Copy`, dense: [`Drop::index`] indexes a
/// counter array of [`Drop::COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    /// The buffer ends before a header or a length field says it should.
    Truncated,
    /// Bad version, header length or length field.
    Malformed,
    /// Not the IP family this translator reads (ARP, wrong direction, ...).
    NotIp,
    /// IPv4 header or ICMP/ICMPv6 checksum wrong (we would launder it).
    BadChecksum,
    /// An address has no EAM and is outside the RFC 6052 prefix.
    UntranslatableAddr,
    /// ICMP type/code or header with no translation (RFC 7915 §4.2, §5.2).
    Untranslatable,
    /// ICMP/ICMPv6 fragments are not translated (RFC 7915 §1.2).
    FragmentedIcmp,
    /// IPv4 UDP without checksum that we may not or cannot fix (§4.5).
    UdpZeroChecksum,
    /// IPv6 Routing header with Segments Left != 0 (§5.1).
    SegmentsLeft,
    /// Too big for the egress MTU and may not be fragmented: answer with
    /// [`build_too_big`] and this `mtu` (Fragmentation Needed next-hop MTU
    /// for an IPv4 sender, Packet Too Big MTU for an IPv6 sender).
    TooBig {
        /// The MTU to report to the sender.
        mtu: u16,
    },
    /// Too big for the egress MTU but fragmentable: the translator does not
    /// split packets (the SIIT stage does, through [`super::fragment`]).
    NeedsFragmentation,
    /// Not enough room in front of the frame for the grown headers.
    HeadroomExhausted,
    /// An ICMP error quoting an ICMP error (§4.3, §5.3).
    NestedIcmpError,
    /// IPv6 extension headers after a Fragment header (§5.1): answered with
    /// [`build_refusal`].
    ExtAfterFragment,
}

impl Drop {
    /// Number of variants.
    pub const COUNT: usize = 14;

    /// One of each variant, in index order (`TooBig` with MTU 0).
    pub const ALL: [Drop; Self::COUNT] = [
        Drop::Truncated,
        Drop::Malformed,
        Drop::NotIp,
        Drop::BadChecksum,
        Drop::UntranslatableAddr,
        Drop::Untranslatable,
        Drop::FragmentedIcmp,
        Drop::UdpZeroChecksum,
        Drop::SegmentsLeft,
        Drop::TooBig { mtu: 0 },
        Drop::NeedsFragmentation,
        Drop::HeadroomExhausted,
        Drop::NestedIcmpError,
        Drop::ExtAfterFragment,
    ];

    /// Dense index `0..COUNT`.
    pub const fn index(self) -> usize {
        match self {
            Drop::Truncated => 0,
            Drop::Malformed => 1,
            Drop::NotIp => 2,
            Drop::BadChecksum => 3,
            Drop::UntranslatableAddr => 4,
            Drop::Untranslatable => 5,
            Drop::FragmentedIcmp => 6,
            Drop::UdpZeroChecksum => 7,
            Drop::SegmentsLeft => 8,
            Drop::TooBig { .. } => 9,
            Drop::NeedsFragmentation => 10,
            Drop::HeadroomExhausted => 11,
            Drop::NestedIcmpError => 12,
            Drop::ExtAfterFragment => 13,
        }
    }

    /// Short stable lowercase name (counter label).
    pub const fn name(self) -> &'static str {
        match self {
            Drop::Truncated => "truncated",
            Drop::Malformed => "malformed",
            Drop::NotIp => "not_ip",
            Drop::BadChecksum => "bad_checksum",
            Drop::UntranslatableAddr => "untranslatable_addr",
            Drop::Untranslatable => "untranslatable",
            Drop::FragmentedIcmp => "fragmented_icmp",
            Drop::UdpZeroChecksum => "udp_zero_checksum",
            Drop::SegmentsLeft => "segments_left",
            Drop::TooBig { .. } => "too_big",
            Drop::NeedsFragmentation => "needs_fragmentation",
            Drop::HeadroomExhausted => "headroom_exhausted",
            Drop::NestedIcmpError => "nested_icmp_error",
            Drop::ExtAfterFragment => "ext_after_fragment",
        }
    }
}

/// What to do with an IPv4 UDP datagram whose checksum is 0 (4->6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpZeroChecksum {
    /// Compute the full checksum (unfragmented datagrams only).
    Compute,
    /// Drop with [`Drop::UdpZeroChecksum`].
    Drop,
}

/// Per-direction translation settings.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    /// Maps the packet's source address (4->6: IPv4 -> IPv6; 6->4: IPv6 -> IPv4).
    pub src: Mapper<'a>,
    /// Maps the packet's destination address.
    pub dst: Mapper<'a>,
    /// Egress L3 MTU (of the family we emit).
    pub mtu: u16,
    /// IPv4 UDP zero-checksum policy (4->6 only).
    pub udp_zero_checksum: UdpZeroChecksum,
    /// Sources for translated ICMP errors whose own source (a router) has
    /// no translation.
    pub rfc6791: Rfc6791,
}

//= https://www.rfc-editor.org/rfc/rfc6791#section-4
// (paraphrase) ICMPv6 error messages from IPv6 routers whose addresses
// cannot be translated get an IPv4 source from a pool of addresses
// reserved for this purpose.
/// RFC 6791 pools: the source of a translated ICMP error whose source
/// address has no translation. Unset: the error is dropped
/// ([`Drop::UntranslatableAddr`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rfc6791 {
    /// IPv4 sources of ICMPv4 errors translated from ICMPv6 (6->4).
    pub v4: Option<Pool4>,
    /// IPv6 source of ICMPv6 errors translated from ICMPv4 (4->6).
    pub v6: Option<[u8; 16]>,
}

impl Rfc6791 {
    /// Only an IPv4 pool of one address.
    pub const fn v4(addr: [u8; 4]) -> Rfc6791 {
        Rfc6791 { v4: Some(Pool4::single(addr)), v6: None }
    }
}

/// An IPv4 prefix used as an address pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool4 {
    /// Network address (host bits are ignored).
    pub net: [u8; 4],
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Pool4 {
    /// A pool of the one address `addr`.
    pub const fn single(addr: [u8; 4]) -> Pool4 {
        Pool4 { net: addr, len: 32 }
    }

    /// The pool address for an untranslatable `router`: a hash of it, so one
    /// router keeps one address and `traceroute` shows distinct routers
    /// apart (RFC 6791 §4 asks only for an address from the pool).
    pub fn pick(&self, router: &[u8; 16]) -> [u8; 4] {
        let host_bits = 32u32.saturating_sub(u32::from(self.len.min(32)));
        let mask = if host_bits == 0 { 0 } else { u32::MAX >> (32 - host_bits) };
        // FNV-1a over the four words, folded.
        let mut h = 0x811c_9dc5u32;
        for at in [0, 4, 8, 12] {
            h = (h ^ u32::from_be_bytes(rdn(router, at).unwrap_or([0; 4]))).wrapping_mul(0x0100_0193);
        }
        let h = h ^ (h >> 16);
        ((u32::from_be_bytes(self.net) & !mask) | (h & mask)).to_be_bytes()
    }
}

/// The translator's own addresses, the source of errors it generates.
#[derive(Debug, Clone, Copy)]
pub struct RouterAddrs {
    /// IPv4 source of ICMPv4 errors.
    pub v4: [u8; 4],
    /// IPv6 source of ICMPv6 errors.
    pub v6: [u8; 16],
}

// ---------------------------------------------------------------------------
// Byte helpers: every access is bounds-checked and fails as `Truncated`.

#[inline]
fn rd8(b: &[u8], at: usize) -> Result<u8, Drop> {
    b.get(at).copied().ok_or(Drop::Truncated)
}

#[inline]
fn rd16(b: &[u8], at: usize) -> Result<u16, Drop> {
    Ok(u16::from_be_bytes(rdn::<2>(b, at)?))
}

#[inline]
fn rdn<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], Drop> {
    let end = at.checked_add(N).ok_or(Drop::Truncated)?;
    b.get(at..end).and_then(|s| <[u8; N]>::try_from(s).ok()).ok_or(Drop::Truncated)
}

#[inline]
fn wr(b: &mut [u8], at: usize, v: &[u8]) -> Result<(), Drop> {
    let end = at.checked_add(v.len()).ok_or(Drop::Truncated)?;
    b.get_mut(at..end).ok_or(Drop::Truncated)?.copy_from_slice(v);
    Ok(())
}

#[inline]
fn wr16(b: &mut [u8], at: usize, v: u16) -> Result<(), Drop> {
    wr(b, at, &v.to_be_bytes())
}

#[inline]
fn sub(b: &[u8], from: usize, to: usize) -> Result<&[u8], Drop> {
    b.get(from..to).ok_or(Drop::Truncated)
}

/// L2 header length (14 or 18 with one 802.1Q tag) and the inner ethertype.
fn l2_info(b: &[u8], start: usize) -> Result<(usize, u16), Drop> {
    let et = rd16(b, start + 12)?;
    if et == ETH_P_8021Q {
        Ok((18, rd16(b, start + 16)?))
    } else {
        Ok((14, et))
    }
}

/// Copies the L2 header into `hdr` with a new ethertype.
fn put_l2(hdr: &mut [u8], at: usize, eth: &[u8; 18], l2: usize, et: u16) -> Result<(), Drop> {
    // Fixed-size copies: MACs, then the 802.1Q tag if any.
    let macs: [u8; 12] = rdn(eth, 0)?;
    wr(hdr, at, &macs)?;
    if l2 == 18 {
        let tag: [u8; 4] = rdn(eth, 12)?;
        wr(hdr, at + 12, &tag)?;
    }
    wr16(hdr, at + l2 - 2, et)
}

/// A frame opened for rewriting: the buffer cut at the frame's end, the
/// end, the L2 header's length and ethertype, a copy of the L2 header (to
/// write again in front of the new IP header) and the IP header's offset.
struct Frame<'a> {
    b: &'a mut [u8],
    end: usize,
    l2: usize,
    et: u16,
    eth: [u8; 18],
    ip: usize,
}

/// Opens the frame `buf[start..start + len]` (the part every translation
/// and every generated error starts with).
#[inline]
fn open(buf: &mut [u8], start: usize, len: usize) -> Result<Frame<'_>, Drop> {
    let end = start.checked_add(len).ok_or(Drop::Truncated)?;
    let b = buf.get_mut(..end).ok_or(Drop::Truncated)?;
    let (l2, et) = l2_info(b, start)?;
    let mut eth = [0u8; 18];
    wr(&mut eth, 0, sub(b, start, start + l2)?)?;
    Ok(Frame { b, end, l2, et, eth, ip: start + l2 })
}

// ---------------------------------------------------------------------------
// IPv4 header.

#[derive(Clone, Copy)]
struct V4 {
    ihl: usize,
    tot: usize,
    tos: u8,
    id: u16,
    df: bool,
    mf: bool,
    off: u16,
    ttl: u8,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
}

impl V4 {
    fn fragmented(&self) -> bool {
        self.mf || self.off != 0
    }
}

/// Reads the IPv4 header at `ip`. `avail`: bytes present from `ip`. An outer
/// header must have its whole total length present; an inner (quoted) one only
/// its header.
fn parse_v4(b: &[u8], ip: usize, avail: usize, outer: bool) -> Result<V4, Drop> {
    let h: [u8; 20] = rdn(b, ip)?;
    if h[0] >> 4 != 4 {
        return Err(Drop::Malformed);
    }
    let ihl = usize::from(h[0] & 0xF) * 4;
    let tot = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if ihl < 20 || tot < ihl || ihl > avail || (outer && tot > avail) {
        return Err(if ihl > avail || tot > avail { Drop::Truncated } else { Drop::Malformed });
    }
    let fo = u16::from_be_bytes([h[6], h[7]]);
    Ok(V4 {
        ihl,
        tot,
        tos: h[1],
        id: u16::from_be_bytes([h[4], h[5]]),
        df: fo & 0x4000 != 0,
        mf: fo & 0x2000 != 0,
        off: fo & 0x1FFF,
        ttl: h[8],
        proto: h[9],
        src: [h[12], h[13], h[14], h[15]],
        dst: [h[16], h[17], h[18], h[19]],
    })
}

#[derive(Clone, Copy)]
struct FragHdr {
    /// Offset in 8-byte units.
    off: u16,
    mf: bool,
    id: u32,
}

impl FragHdr {
    /// An RFC 6946 atomic fragment: offset 0 and M = 0, a whole packet.
    fn is_atomic(&self) -> bool {
        self.off == 0 && !self.mf
    }
}

/// Writes `ip` (20 bytes, its checksum filled) at `at` of `hdr`.
fn put_v4(hdr: &mut [u8], at: usize, ip: ipv4::Repr) -> Result<(), Drop> {
    ip.emit(hdr.get_mut(at..).ok_or(Drop::Truncated)?).map_err(|_| Drop::Truncated)
}

/// Writes a 40-byte IPv6 header (flow label 0) and, if `frag`, a Fragment
/// header after it. Returns the bytes written.
#[allow(clippy::too_many_arguments)]
fn put_v6(
    hdr: &mut [u8],
    at: usize,
    tc: u8,
    ul_len: usize,
    proto: u8,
    hl: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
    frag: Option<FragHdr>,
) -> Result<usize, Drop> {
    let fh = if frag.is_some() { 8 } else { 0 };
    let plen = u16::try_from(ul_len + fh).map_err(|_| Drop::Malformed)?;
    let ip = ipv6::Repr {
        traffic_class: tc,
        flow_label: 0,
        payload_len: plen,
        next_header: if frag.is_some() { FRAG } else { proto },
        hop_limit: hl,
        src: Ipv6Addr::from(*src),
        dst: Ipv6Addr::from(*dst),
    };
    ip.emit(hdr.get_mut(at..).ok_or(Drop::Truncated)?).map_err(|_| Drop::Truncated)?;
    if let Some(f) = frag {
        //= https://www.rfc-editor.org/rfc/rfc8200#section-4.5
        //# Fragment Offset   13-bit unsigned integer.  The offset, in
        //#                   8-octet units, of the data following this
        //#                   header, relative to the start of the
        //#                   Fragmentable Part of the original packet.
        let fo = (f.off << 3) | u16::from(f.mf);
        wr(hdr, at + 40, &[proto, 0])?;
        wr16(hdr, at + 42, fo)?;
        wr(hdr, at + 44, &f.id.to_be_bytes())?;
    }
    Ok(40 + fh)
}

// ---------------------------------------------------------------------------
// IPv6 header and extension-header walk.

#[derive(Clone, Copy)]
struct V6 {
    tc: u8,
    plen: usize,
    hl: u8,
    src: [u8; 16],
    dst: [u8; 16],
    /// Absolute offset of the upper-layer header.
    ul: usize,
    proto: u8,
    frag: Option<FragHdr>,
}

/// Reads the IPv6 header at `ip` and walks extension headers up to `end`
/// (the packet end for an outer header, the quote end for an inner one).
//= https://www.rfc-editor.org/rfc/rfc7915#section-5.1
// (paraphrase) Protocol: skip Hop-by-Hop Options, Destination Options,
// Routing (Segments Left 0) and Fragment headers; the first other Next
// Header value is the IPv4 protocol. A Routing header with Segments Left
// non-zero is not translated; extension headers after a Fragment header
// (except ESP, including AH) SHOULD make the packet dropped. The drop is
// [`Drop::ExtAfterFragment`], which [`build_refusal`] answers.
fn parse_v6(b: &[u8], ip: usize, end: usize) -> Result<V6, Drop> {
    let h: [u8; 40] = rdn(b, ip)?;
    if h[0] >> 4 != 6 {
        return Err(Drop::Malformed);
    }
    let tc = (h[0] << 4) | (h[1] >> 4);
    let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(sub(&h, 8, 24)?);
    dst.copy_from_slice(sub(&h, 24, 40)?);
    let mut nh = h[6];
    let mut off = ip + 40;
    let mut frag: Option<FragHdr> = None;
    let mut n = 0;
    loop {
        if off > end {
            return Err(Drop::Truncated);
        }
        match nh {
            0 | 43 | 60 => {
                if frag.is_some() {
                    return Err(Drop::ExtAfterFragment);
                }
                if nh == 0 && n != 0 {
                    return Err(Drop::Malformed);
                }
                if nh == 43 && rd8(b, off + 3)? != 0 {
                    return Err(Drop::SegmentsLeft);
                }
                let next = rd8(b, off)?;
                off += (usize::from(rd8(b, off + 1)?) + 1) * 8;
                nh = next;
            }
            FRAG => {
                if frag.is_some() {
                    return Err(Drop::ExtAfterFragment);
                }
                let f: [u8; 8] = rdn(b, off)?;
                let fo = u16::from_be_bytes([f[2], f[3]]);
                frag = Some(FragHdr {
                    off: fo >> 3,
                    mf: fo & 1 != 0,
                    id: u32::from_be_bytes([f[4], f[5], f[6], f[7]]),
                });
                nh = f[0];
                off += 8;
            }
            _ => break,
        }
        n += 1;
        if n > MAX_EXT {
            return Err(Drop::Malformed);
        }
    }
    if off > end {
        return Err(Drop::Truncated);
    }
    Ok(V6 { tc, plen, hl: h[7], src, dst, ul: off, proto: nh, frag })
}

// ---------------------------------------------------------------------------
// ICMP mappings.

fn is_icmp4_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

fn is_icmp6_error(t: u8) -> bool {
    t < 128
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-4.2
// Figure 3: Pointer Value for Translating from IPv4 to IPv6
// (IPv4 pointer -> IPv6 pointer; n/a means drop)
//   0 Version/IHL -> 0 | 1 Type Of Service -> 1 | 2,3 Total Length -> 4
//   4,5 Identification, 6,7 Flags/Offset -> n/a | 8 TTL -> 7 | 9 Protocol -> 6
//   10,11 Header Checksum -> n/a | 12-15 Source -> 8 | 16-19 Destination -> 24
fn ptr_4to6(p: u8) -> Option<u8> {
    match p {
        0 => Some(0),
        1 => Some(1),
        2 | 3 => Some(4),
        8 => Some(7),
        9 => Some(6),
        12..=15 => Some(8),
        16..=19 => Some(24),
        _ => None,
    }
}

//= https://www.rfc-editor.org/rfc/rfc7915#section-5.2
// Figure 6: Pointer Value for Translating from IPv6 to IPv4
//   0 Version/Traffic Class -> 0 | 1 Traffic Class/Flow Label -> 1
//   2,3 Flow Label -> n/a | 4,5 Payload Length -> 2 | 6 Next Header -> 9
//   7 Hop Limit -> 8 | 8-23 Source -> 12 | 24-39 Destination -> 16
fn ptr_6to4(p: u32) -> Option<u8> {
    match p {
        0 => Some(0),
        1 => Some(1),
        4 | 5 => Some(2),
        6 => Some(9),
        7 => Some(8),
        8..=23 => Some(12),
        24..=39 => Some(16),
        _ => None,
    }
}

/// RFC 1191 plateau table, for Fragmentation Needed with MTU 0.
const PLATEAUS: [u16; 11] = [65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];

/// ICMPv4 error -> ICMPv6 (type, code, 4-byte rest of header).
fn map_icmp4_error(
    ty: u8,
    code: u8,
    rest: [u8; 4],
    inner_tot: usize,
    mtu6: u16,
) -> Result<(u8, u8, [u8; 4]), Drop> {
    //= https://www.rfc-editor.org/rfc/rfc7915#section-4.2
    // (paraphrase) Destination Unreachable (Type 3): codes 0, 1, 5, 6, 7, 8,
    // 11, 12 -> Type 1 Code 0; code 2 -> Parameter Problem (Type 4) Code 1
    // pointing at Next Header (6); code 3 -> Type 1 Code 4; code 4 -> Packet
    // Too Big (Type 2 Code 0); codes 9, 10, 13, 15 -> Type 1 Code 1; others
    // (14, unknown) silently dropped. Time Exceeded (11) -> Type 3, code
    // unchanged. Parameter Problem (12) codes 0 and 2 -> Type 4 Code 0 with
    // the pointer translated per Figure 3; others dropped. Source Quench,
    // Redirect, Alternative Host Address and unknown types are dropped.
    let z = [0u8; 4];
    Ok(match (ty, code) {
        (3, 0 | 1 | 5..=8 | 11 | 12) => (1, 0, z),
        (3, 2) => (4, 1, 6u32.to_be_bytes()),
        (3, 3) => (1, 4, z),
        (3, 4) => {
            //= https://www.rfc-editor.org/rfc/rfc7915#section-5
            //# When translating an ICMPv4 "Fragmentation Needed" packet, the
            //# indicated MTU in the resulting ICMPv6 "Packet Too Big" will never
            //# be set to a value lower than 1280.
            let mut adv = u16::from_be_bytes([rest[2], rest[3]]);
            if adv == 0 {
                // RFC 1191 plateau: the greatest below the quoted Total Length.
                adv = PLATEAUS.iter().copied().find(|&p| usize::from(p) < inner_tot).unwrap_or(68);
            }
            // minimum(advertised MTU + 20, MTU of the IPv6 next hop), at least 1280.
            let m = (u32::from(adv) + 20).min(u32::from(mtu6)).max(1280);
            (2, 0, m.to_be_bytes())
        }
        (3, 9 | 10 | 13 | 15) => (1, 1, z),
        (11, c) => (3, c, z),
        (12, 0 | 2) => (4, 0, u32::from(ptr_4to6(rest[0]).ok_or(Drop::Untranslatable)?).to_be_bytes()),
        _ => return Err(Drop::Untranslatable),
    })
}

/// ICMPv6 error -> ICMPv4 (type, code, 4-byte rest of header).
fn map_icmp6_error(ty: u8, code: u8, rest: [u8; 4], mtu4: u16) -> Result<(u8, u8, [u8; 4]), Drop> {
    //= https://www.rfc-editor.org/rfc/rfc7915#section-5.2
    // (paraphrase) Destination Unreachable (Type 1): code 0, 2, 3 -> Type 3
    // Code 1; code 1 -> Type 3 Code 10; code 4 -> Type 3 Code 3; others
    // dropped. Packet Too Big (2) -> Type 3 Code 4, MTU = minimum(advertised
    // MTU - 20, MTU of the IPv4 next hop). Time Exceeded (3) -> Type 11, code
    // unchanged. Parameter Problem (4): code 0 -> Type 12 Code 0 with the
    // pointer translated per Figure 6 (drop if n/a); code 1 -> Type 3 Code 2;
    // others dropped. Unknown error types are dropped.
    let z = [0u8; 4];
    Ok(match (ty, code) {
        (1, 0 | 2 | 3) => (3, 1, z),
        (1, 1) => (3, 10, z),
        (1, 4) => (3, 3, z),
        (2, _) => {
            let adv = u32::from_be_bytes(rest).saturating_sub(20);
            let m = adv.min(u32::from(mtu4)).min(0xFFFF) as u16;
            let b = m.to_be_bytes();
            (3, 4, [0, 0, b[0], b[1]])
        }
        (3, c) => (11, c, z),
        (4, 0) => (12, 0, [ptr_6to4(u32::from_be_bytes(rest)).ok_or(Drop::Untranslatable)?, 0, 0, 0]),
        (4, 1) => (3, 2, z),
        _ => return Err(Drop::Untranslatable),
    })
}

/// Echo type mapping: ICMPv4 -> ICMPv6.
fn echo_4to6(t: u8) -> Option<u8> {
    //= https://www.rfc-editor.org/rfc/rfc7915#section-4.2
    // (paraphrase) Echo and Echo Reply (Type 8 and Type 0): adjust the Type
    // values to 128 and 129, respectively, and adjust the ICMP checksum both
    // to take the type change into account and to include the ICMPv6
    // pseudo-header. All other informational messages are silently dropped.
    match t {
        8 => Some(128),
        0 => Some(129),
        _ => None,
    }
}

fn echo_6to4(t: u8) -> Option<u8> {
    //= https://www.rfc-editor.org/rfc/rfc7915#section-5.2
    // (paraphrase) Echo Request and Echo Reply (Type 128 and 129): adjust the
    // Type values to 8 and 0, respectively, and adjust the ICMP checksum both
    // to take the type change into account and to exclude the ICMPv6
    // pseudo-header. MLD, Neighbor Discovery and unknown informational
    // messages are silently dropped.
    match t {
        128 => Some(8),
        129 => Some(0),
        _ => None,
    }
}

/// Incremental transport update for an address change (TCP/UDP) at `l4`,
/// limited to `end`. `ipv6_out`: the result is IPv6 (UDP must then carry a
/// checksum). Missing checksum fields (short quotes) are left alone when
/// `quoted`, else `Truncated`.
fn fix_l4_addrs(
    b: &mut [u8],
    l4: usize,
    end: usize,
    proto: u8,
    old: &[u8],
    new: &[u8],
    quoted: bool,
) -> Result<(), Drop> {
    let at = match proto {
        TCP => l4 + 16,
        UDP => l4 + 6,
        _ => return Ok(()),
    };
    if at + 2 > end {
        return if quoted { Ok(()) } else { Err(Drop::Truncated) };
    }
    let c = rd16(b, at)?;
    //= https://www.rfc-editor.org/rfc/rfc7915#section-4.5
    //# Translators MUST do this for TCP and ICMP packets and for
    //# UDP packets that contain a UDP checksum (i.e., the UDP checksum field
    //# is not zero).
    let n = if proto == UDP {
        if c == 0 {
            return Ok(());
        }
        udp_encode(update_bytes(c, old, new))
    } else {
        update_bytes(c, old, new)
    };
    wr16(b, at, n)
}

/// Echo type change plus adding (`add`) or removing the ICMPv6 pseudo-header
/// sum `ph` from the checksum at `l4 + 2`.
fn fix_echo(b: &mut [u8], l4: usize, new_type: u8, ph: u16, add: bool) -> Result<(), Drop> {
    let old_w = rd16(b, l4)?;
    let new_w = (u16::from(new_type) << 8) | (old_w & 0xFF);
    let c = rd16(b, l4 + 2)?;
    let ph = if add { ph } else { !ph };
    let n = !fold(u32::from(!c) + u32::from(!old_w) + u32::from(new_w) + u32::from(ph));
    wr(b, l4, &[new_type])?;
    wr16(b, l4 + 2, n)
}

fn cat(a: &[u8; 4], b: &[u8; 4]) -> [u8; 8] {
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
}

fn cat16(a: &[u8; 16], b: &[u8; 16]) -> [u8; 32] {
    let mut o = [0u8; 32];
    o[..16].copy_from_slice(a);
    o[16..].copy_from_slice(b);
    o
}

fn ph6(src: &[u8; 16], dst: &[u8; 16], len: usize) -> u16 {
    fold(pseudo_header_v6(Ipv6Addr::from(*src), Ipv6Addr::from(*dst), ICMP6, len as u32))
}

// ---------------------------------------------------------------------------
// RFC 6791: sources of translated errors from untranslatable routers.

/// IPv4 source of an ICMPv4 error translated from an ICMPv6 error sent by
/// `src6`: its translation, else an address of the RFC 6791 pool.
fn error_src4(cfg: &Config, src6: &[u8; 16]) -> Result<[u8; 4], Drop> {
    //= https://www.rfc-editor.org/rfc/rfc7915#section-5.1
    // (paraphrase) When the source of an ICMPv6 error cannot be translated
    // to IPv4, the translator uses a source address from its RFC 6791
    // pool.
    cfg.src.v6_to_v4(src6).or_else(|| cfg.rfc6791.v4.map(|p| p.pick(src6))).ok_or(Drop::UntranslatableAddr)
}

/// IPv6 source of an ICMPv6 error translated from an ICMPv4 error whose
/// source translated to `src6` (`None`: no mapping).
fn error_src6(cfg: &Config, src6: Option<[u8; 16]>) -> Result<[u8; 16], Drop> {
    src6.or(cfg.rfc6791.v6).ok_or(Drop::UntranslatableAddr)
}

// ---------------------------------------------------------------------------
// IPv4 -> IPv6.

/// Translates the IPv4 frame `buf[start..start + len]` to IPv6 in place
/// (RFC 7915 §4). Returns the new frame's `(start, len)`; it begins up to 28
/// bytes (48 for ICMP errors) before `start`, so `buf` needs that headroom.
pub fn translate_4to6(buf: &mut [u8], start: usize, len: usize, cfg: &Config) -> Placed {
    match super::fast::translate_4to6(buf, start, len, cfg) {
        Some(r) => Ok(r),
        None => general_4to6(buf, start, len, cfg),
    }
}

/// [`translate_4to6`] for every shape (the fast path's fallback; kept out
/// of line so the fast path stays small enough to inline into).
#[inline(never)]
pub(super) fn general_4to6(buf: &mut [u8], start: usize, len: usize, cfg: &Config) -> Placed {
    let Frame { b, end, l2, et, eth, ip } = open(buf, start, len)?;
    if et != ETH_P_IPV4 {
        return Err(Drop::NotIp);
    }
    let h = parse_v4(b, ip, end - ip, true)?;
    if checksum(sub(b, ip, ip + h.ihl)?) != 0 {
        return Err(Drop::BadChecksum);
    }
    let pend = ip + h.tot; // excludes Ethernet padding
    let l4 = ip + h.ihl;
    let ul_len = h.tot - h.ihl;
    let frag = h.fragmented();
    let src6 = cfg.src.v4_to_v6(h.src);
    let dst6 = cfg.dst.v4_to_v6(h.dst).ok_or(Drop::UntranslatableAddr)?;
    // RFC 7915 §4.1 copies the protocol into Next Header, but an IPv4
    // protocol number that names an IPv6 extension header (Hop-by-Hop 0,
    // Routing 43, Fragment 44, Authentication 51, Destination Options 60,
    // Mobility 135, HIP 139, Shim6 140, experimental 253/254) would make the
    // IPv6 receiver parse the IPv4 payload as that header. Such packets are
    // dropped (found by fuzzing; Jool refuses them too). AH could not
    // survive anyway: its ICV covers the addresses translation changes.
    if matches!(h.proto, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 | 253 | 254) {
        return Err(Drop::Untranslatable);
    }

    if h.proto == ICMP {
        //= https://www.rfc-editor.org/rfc/rfc7915#section-1.2
        //# Fragmented ICMP/ICMPv6 packets will not be translated by IP/ICMP
        //# translators.
        if frag {
            return Err(Drop::FragmentedIcmp);
        }
        if is_icmp4_error(rd8(b, l4)?) {
            let src6 = error_src6(cfg, src6)?;
            return icmp_error_4to6(b, start, l2, &eth, &h, &src6, &dst6, cfg);
        }
    }
    let src6 = src6.ok_or(Drop::UntranslatableAddr)?;

    //= https://www.rfc-editor.org/rfc/rfc7915#section-4
    //# As a result, an IPv6 Fragment Header is only included if
    //# the IPv4 packet is already fragmented.
    //
    //= https://www.rfc-editor.org/rfc/rfc7915#section-4
    //# When the IPv4 sender does not set the DF bit, the translator MUST NOT
    //# include the Fragment Header for the non-fragmented IPv6 packets.
    let fh = if frag { 8 } else { 0 };
    let out_ip = 40 + fh + ul_len;
    if out_ip > usize::from(cfg.mtu) {
        //= https://www.rfc-editor.org/rfc/rfc7915#section-4.1
        //# If the DF bit is set and the MTU of the next-hop interface is less
        //# than the total length value of the IPv4 packet plus 20, the
        //# translator MUST send an ICMPv4 "Fragmentation Needed" error message
        //# to the IPv4 source address.
        return Err(if h.df {
            Drop::TooBig { mtu: cfg.mtu.saturating_sub(20 + fh as u16).max(68) }
        } else {
            Drop::NeedsFragmentation
        });
    }

    // Transport: only a header-bearing packet has something to update.
    if h.off == 0 {
        let old = cat(&h.src, &h.dst);
        let new = cat16(&src6, &dst6);
        match h.proto {
            UDP if rd16(b, l4 + 6)? == 0 => {
                //= https://www.rfc-editor.org/rfc/rfc7915#section-4.5
                //# A stateless translator cannot compute the UDP checksum of
                //# fragmented packets, so when a stateless translator receives the
                //# first fragment of a fragmented UDP IPv4 packet and the checksum
                //# field is zero, the translator SHOULD drop the packet
                if frag || cfg.udp_zero_checksum == UdpZeroChecksum::Drop {
                    return Err(Drop::UdpZeroChecksum);
                }
                let c = l4_checksum_v6(Ipv6Addr::from(src6), Ipv6Addr::from(dst6), UDP, sub(b, l4, pend)?);
                wr16(b, l4 + 6, udp_encode(c))?;
            }
            ICMP => {
                let t = echo_4to6(rd8(b, l4)?).ok_or(Drop::Untranslatable)?;
                if ul_len < 8 {
                    return Err(Drop::Truncated);
                }
                fix_echo(b, l4, t, ph6(&src6, &dst6, ul_len), true)?;
            }
            p => fix_l4_addrs(b, l4, pend, p, &old, &new, false)?,
        }
    }

    //= https://www.rfc-editor.org/rfc/rfc7915#section-4.1
    // (paraphrase) Version 6; Traffic Class = IPv4 TOS; Flow Label 0; Payload
    // Length = Total Length - IPv4 header length (options are dropped, plus 8
    // with a Fragment Header); Next Header = Protocol (1 -> 58); Hop Limit =
    // TTL; addresses per the mapping. Fragment Header: Next Header =
    // Protocol, Fragment Offset and M copied, Identification = the IPv4
    // Identification in the low-order 16 bits, high-order bits zero.
    let hdr_len = l2 + 40 + fh;
    let new_start = l4.checked_sub(hdr_len).ok_or(Drop::HeadroomExhausted)?;
    // All header fields are in locals: write straight over the old headers.
    put_l2(b, new_start, &eth, l2, ETH_P_IPV6)?;
    let proto = if h.proto == ICMP { ICMP6 } else { h.proto };
    let f = frag.then_some(FragHdr { off: h.off, mf: h.mf, id: u32::from(h.id) });
    put_v6(b, new_start + l2, h.tos, ul_len, proto, h.ttl, &src6, &dst6, f)?;

    Ok((new_start, hdr_len + ul_len))
}

/// ICMPv4 error -> ICMPv6 error, translating the quoted packet (§4.3).
#[allow(clippy::too_many_arguments)]
fn icmp_error_4to6(
    b: &mut [u8],
    start: usize,
    l2: usize,
    eth: &[u8; 18],
    h: &V4,
    src6: &[u8; 16],
    dst6: &[u8; 16],
    cfg: &Config,
) -> Placed {
    let ip = start + l2;
    let l4 = ip + h.ihl;
    let pend = ip + h.tot;
    if pend < l4 + 8 {
        return Err(Drop::Truncated);
    }
    if checksum(sub(b, l4, pend)?) != 0 {
        return Err(Drop::BadChecksum);
    }
    let (ty, code) = (rd8(b, l4)?, rd8(b, l4 + 1)?);
    let rest: [u8; 4] = rdn(b, l4 + 4)?;
    let iip = l4 + 8;
    let ext = icmp_ext_in(matches!(ty, 3 | 11 | 12).then_some(rest[1]), 4, iip, pend)?;
    // End of the original datagram: the extension structure follows it.
    let dend = ext.map_or(pend, |e| e.at);
    let ih = parse_v4(b, iip, dend - iip, false)?;
    let (nty, ncode, mut nrest) = map_icmp4_error(ty, code, rest, ih.tot, cfg.mtu)?;

    //= https://www.rfc-editor.org/rfc/rfc7915#section-4.3
    //# The ICMP error messages
    //# containing the packet in error MUST be translated just like a normal
    //# IP packet (except the TTL value of the inner IPv4/IPv6 packet).
    //
    // The quoted packet went from the receiver of this error (outer
    // destination) to somewhere: its addresses map with the roles swapped.
    let isrc6 = cfg.dst.v4_to_v6(ih.src).ok_or(Drop::UntranslatableAddr)?;
    let idst6 = cfg.src.v4_to_v6(ih.dst).ok_or(Drop::UntranslatableAddr)?;
    let ifrag = ih.fragmented();
    let il4 = iip + ih.ihl;
    let iul_len = ih.tot - ih.ihl;
    if ih.off == 0 {
        if ih.proto == ICMP {
            if il4 + 4 <= dend {
                let t = rd8(b, il4)?;
                //= https://www.rfc-editor.org/rfc/rfc7915#section-4.3
                //# This process MUST
                //# stop at the first embedded header and drop the packet if it contains
                //# more embedded headers.
                if is_icmp4_error(t) {
                    return Err(Drop::NestedIcmpError);
                }
                let nt = echo_4to6(t).ok_or(Drop::Untranslatable)?;
                fix_echo(b, il4, nt, ph6(&isrc6, &idst6, iul_len), true)?;
            }
        } else {
            let old = cat(&ih.src, &ih.dst);
            let new = cat16(&isrc6, &idst6);
            fix_l4_addrs(b, il4, dend, ih.proto, &old, &new, true)?;
        }
    }

    let ifh = if ifrag { 8 } else { 0 };
    let hdrs = 40 + 8 + 40 + ifh;
    //= https://www.rfc-editor.org/rfc/rfc4443#section-2.4
    //# (c) Every ICMPv6 error message (type < 128) MUST include as much of
    //#     the IPv6 offending (invoking) packet (the packet that caused the
    //#     error) as possible without making the error message packet exceed
    //#     the minimum IPv6 MTU [IPv6].
    let limit = usize::from(cfg.mtu).min(1280);
    let lay = icmp_ext_layout(dend - il4, ext, 40 + ifh, limit.saturating_sub(48), 8, matches!(nty, 1 | 3));
    let rest_at = icmp_ext_place(b, il4, &lay, ext)?;
    if lay.attr != 0 {
        nrest[0] = lay.attr;
    }
    let rest_len = lay.body();
    let hdr_len = l2 + hdrs;
    let new_start = rest_at.checked_sub(hdr_len).ok_or(Drop::HeadroomExhausted)?;
    let icmp_len = 8 + 40 + ifh + rest_len;

    let mut hdr = [0u8; 18 + 96];
    put_l2(&mut hdr, 0, eth, l2, ETH_P_IPV6)?;
    put_v6(&mut hdr, l2, h.tos, icmp_len, ICMP6, h.ttl, src6, dst6, None)?;
    wr(&mut hdr, l2 + 40, &[nty, ncode, 0, 0])?;
    wr(&mut hdr, l2 + 44, &nrest)?;
    let iproto = if ih.proto == ICMP { ICMP6 } else { ih.proto };
    let f = ifrag.then_some(FragHdr { off: ih.off, mf: ih.mf, id: u32::from(ih.id) });
    put_v6(&mut hdr, l2 + 48, ih.tos, iul_len, iproto, ih.ttl, &isrc6, &idst6, f)?;
    wr(b, new_start, sub(&hdr, 0, hdr_len)?)?;

    let icmp_at = new_start + l2 + 40;
    let c = l4_checksum_v6(
        Ipv6Addr::from(*src6),
        Ipv6Addr::from(*dst6),
        ICMP6,
        sub(b, icmp_at, icmp_at + icmp_len)?,
    );
    wr16(b, icmp_at + 2, c)?;
    Ok((new_start, hdr_len + rest_len))
}

// ---------------------------------------------------------------------------
// IPv6 -> IPv4.

/// IPv4 Flags/Fragment Offset for a translated packet of `tot` bytes.
fn flags_6to4(frag: Option<FragHdr>, tot: usize) -> (u16, u16) {
    match frag {
        //= https://www.rfc-editor.org/rfc/rfc7915#section-5.1.1
        // (paraphrase) With a Fragment Header: Identification = low-order 16
        // bits of the Fragment Header's Identification; MF = M flag; DF = 0;
        // Fragment Offset copied.
        Some(f) => (f.id as u16, (u16::from(f.mf) << 13) | (f.off & 0x1FFF)),
        //= https://www.rfc-editor.org/rfc/rfc7915#section-5
        //# When the resulting IPv4 packet is smaller than or equal to 1260
        //# bytes, the translator MUST send the packet with a cleared Don't
        //# Fragment bit.  Otherwise, the packet MUST be sent with the Don't
        //# Fragment bit set.
        //
        // Identification: all zero (the optional generator of §5.1 is not
        // implemented).
        None => (0, if tot > 1260 { 0x4000 } else { 0 }),
    }
}

/// Translates the IPv6 frame `buf[start..start + len]` to IPv4 in place
/// (RFC 7915 §5). Returns the new frame's `(start, len)`, at or after `start`.
pub fn translate_6to4(buf: &mut [u8], start: usize, len: usize, cfg: &Config) -> Placed {
    match super::fast::translate_6to4(buf, start, len, cfg) {
        Some(r) => Ok(r),
        None => general_6to4(buf, start, len, cfg),
    }
}

/// [`translate_6to4`] for every shape (the fast path's fallback; kept out
/// of line so the fast path stays small enough to inline into).
#[inline(never)]
pub(super) fn general_6to4(buf: &mut [u8], start: usize, len: usize, cfg: &Config) -> Placed {
    let Frame { b, end, l2, et, eth, ip } = open(buf, start, len)?;
    if et != ETH_P_IPV6 {
        return Err(Drop::NotIp);
    }
    let pend_hint = rdn::<2>(b, ip + 4).map(|p| ip + 40 + usize::from(u16::from_be_bytes(p)))?;
    if pend_hint > end {
        return Err(Drop::Truncated);
    }
    let h = parse_v6(b, ip, pend_hint)?;
    let pend = ip + 40 + h.plen;
    let ul_len = pend - h.ul;
    let later = h.frag.is_some_and(|f| f.off != 0);

    if h.proto == ICMP6 {
        //= https://www.rfc-editor.org/rfc/rfc7915#section-5.1
        // (paraphrase) A Fragment header with offset 0 and M = 0 (an atomic
        // fragment) is translated as if it were absent, the IPv4
        // Identification taken from it (§5.1.1): ICMPv6 included. Real
        // fragments of ICMPv6 are not translated (§1.2).
        if h.frag.is_some_and(|f| !f.is_atomic()) {
            return Err(Drop::FragmentedIcmp);
        }
        if is_icmp6_error(rd8(b, h.ul)?) {
            return icmp_error_6to4(b, l2, &eth, &h, pend, cfg);
        }
    }
    //= https://www.rfc-editor.org/rfc/rfc6946#section-4
    // (paraphrase) An atomic fragment is processed as a whole packet. Its
    // UDP length must fit the datagram, as a whole packet's must: found by
    // fuzzing (`xlat`), one that overran it left as a malformed
    // unfragmented IPv4 packet.
    if h.proto == UDP && h.frag.is_some_and(|f| f.is_atomic()) {
        let udp_len = usize::from(u16::from_be_bytes(rdn::<2>(b, h.ul + 4)?));
        if !(8..=ul_len).contains(&udp_len) {
            return Err(Drop::Malformed);
        }
    }
    let src4 = cfg.src.v6_to_v4(&h.src).ok_or(Drop::UntranslatableAddr)?;
    let dst4 = cfg.dst.v6_to_v4(&h.dst).ok_or(Drop::UntranslatableAddr)?;
    let tot = 20 + ul_len;
    let tot16 = u16::try_from(tot).map_err(|_| Drop::Untranslatable)?;
    if tot > usize::from(cfg.mtu) {
        return Err(if h.frag.is_none() && tot > 1260 {
            // The IPv6 sender gets a Packet Too Big for the IPv4 MTU plus
            // the header difference, never below 1280.
            Drop::TooBig { mtu: cfg.mtu.saturating_add(20).max(1280) }
        } else {
            Drop::NeedsFragmentation
        });
    }

    if !later {
        match h.proto {
            ICMP6 => {
                let t = echo_6to4(rd8(b, h.ul)?).ok_or(Drop::Untranslatable)?;
                if ul_len < 8 {
                    return Err(Drop::Truncated);
                }
                fix_echo(b, h.ul, t, ph6(&h.src, &h.dst, ul_len), false)?;
            }
            p => {
                //= https://www.rfc-editor.org/rfc/rfc7915#section-5.5
                //# Translators MUST do this for TCP, UDP, and ICMP.
                let old = cat16(&h.src, &h.dst);
                fix_l4_addrs(b, h.ul, pend, p, &old, &cat(&src4, &dst4), false)?;
            }
        }
    }

    //= https://www.rfc-editor.org/rfc/rfc7915#section-5.1
    // (paraphrase) Version 4, IHL 5 (no options); TOS = Traffic Class; Total
    // Length = Payload Length - extension headers + 20; TTL = Hop Limit;
    // Protocol = upper-layer Next Header (58 -> 1); header checksum computed.
    let (id, fo) = flags_6to4(h.frag, tot);
    let proto = if h.proto == ICMP6 { ICMP } else { h.proto };
    let hdr_len = l2 + 20;
    let new_start = h.ul - hdr_len;
    // All header fields are in locals: write straight over the old headers.
    put_l2(b, new_start, &eth, l2, ETH_P_IPV4)?;
    put_v4(
        b,
        new_start + l2,
        ipv4::Repr {
            tos: h.tc,
            total_len: tot16,
            ident: id,
            flags_frag: fo,
            ttl: h.hl,
            protocol: proto,
            src: src4.into(),
            dst: dst4.into(),
        },
    )?;

    Ok((new_start, hdr_len + ul_len))
}

/// ICMPv6 error -> ICMPv4 error, translating the quoted packet (§5.3).
fn icmp_error_6to4(b: &mut [u8], l2: usize, eth: &[u8; 18], h: &V6, pend: usize, cfg: &Config) -> Placed {
    let l4 = h.ul;
    if pend < l4 + 8 {
        return Err(Drop::Truncated);
    }
    if l4_checksum_v6(Ipv6Addr::from(h.src), Ipv6Addr::from(h.dst), ICMP6, sub(b, l4, pend)?) != 0 {
        return Err(Drop::BadChecksum);
    }
    let (ty, code) = (rd8(b, l4)?, rd8(b, l4 + 1)?);
    let rest: [u8; 4] = rdn(b, l4 + 4)?;
    let (nty, ncode, mut nrest) = map_icmp6_error(ty, code, rest, cfg.mtu)?;
    let src4 = error_src4(cfg, &h.src)?;
    let dst4 = cfg.dst.v6_to_v4(&h.dst).ok_or(Drop::UntranslatableAddr)?;

    //= https://www.rfc-editor.org/rfc/rfc7915#section-5.3
    //# The ICMP error messages
    //# containing the packet in error MUST be translated just like a normal
    //# IP packet (except that the TTL/Hop Limit value of the inner IPv4/IPv6
    //# packet are not decremented).
    let iip = l4 + 8;
    let ext = icmp_ext_in(matches!(ty, 1 | 3).then_some(rest[0]), 8, iip, pend)?;
    let dend = ext.map_or(pend, |e| e.at);
    let ih = parse_v6(b, iip, dend)?;
    let isrc4 = cfg.dst.v6_to_v4(&ih.src).ok_or(Drop::UntranslatableAddr)?;
    let idst4 = cfg.src.v6_to_v4(&ih.dst).ok_or(Drop::UntranslatableAddr)?;
    let iul_len = (40 + ih.plen).checked_sub(ih.ul - iip).ok_or(Drop::Malformed)?;
    let itot = u16::try_from(20 + iul_len).map_err(|_| Drop::Untranslatable)?;
    if ih.frag.is_none_or(|f| f.off == 0) {
        if ih.proto == ICMP6 {
            if ih.ul + 4 <= dend {
                let t = rd8(b, ih.ul)?;
                //= https://www.rfc-editor.org/rfc/rfc7915#section-5.3
                //# This process MUST
                //# stop at the first embedded header and drop the packet if it contains
                //# more embedded headers.
                if is_icmp6_error(t) {
                    return Err(Drop::NestedIcmpError);
                }
                let nt = echo_6to4(t).ok_or(Drop::Untranslatable)?;
                fix_echo(b, ih.ul, nt, ph6(&ih.src, &ih.dst, iul_len), false)?;
            }
        } else {
            let old = cat16(&ih.src, &ih.dst);
            fix_l4_addrs(b, ih.ul, dend, ih.proto, &old, &cat(&isrc4, &idst4), true)?;
        }
    }

    //= https://www.rfc-editor.org/rfc/rfc1812#section-4.3.2.3
    //# the ICMP datagram SHOULD contain as much of the original
    //# datagram as possible without the length of the ICMP
    //# datagram exceeding 576 bytes.
    let hdrs = 20 + 8 + 20;
    let limit = usize::from(cfg.mtu).min(576);
    let lay = icmp_ext_layout(dend - ih.ul, ext, 20, limit.saturating_sub(28), 4, matches!(nty, 3 | 11 | 12));
    let rest_at = icmp_ext_place(b, ih.ul, &lay, ext)?;
    if lay.attr != 0 {
        nrest[1] = lay.attr;
    }
    let rest_len = lay.body();
    let hdr_len = l2 + hdrs;
    let new_start = rest_at.checked_sub(hdr_len).ok_or(Drop::HeadroomExhausted)?;
    let tot = hdrs + rest_len;

    let mut hdr = [0u8; 18 + 48];
    put_l2(&mut hdr, 0, eth, l2, ETH_P_IPV4)?;
    let (id, fo) = flags_6to4(h.frag, tot);
    put_v4(
        &mut hdr,
        l2,
        ipv4::Repr {
            tos: h.tc,
            total_len: tot as u16,
            ident: id,
            flags_frag: fo,
            ttl: h.hl,
            protocol: ICMP,
            src: src4.into(),
            dst: dst4.into(),
        },
    )?;
    wr(&mut hdr, l2 + 20, &[nty, ncode, 0, 0])?;
    wr(&mut hdr, l2 + 24, &nrest)?;
    let (iid, ifo) = flags_6to4(ih.frag, usize::from(itot));
    let iproto = if ih.proto == ICMP6 { ICMP } else { ih.proto };
    put_v4(
        &mut hdr,
        l2 + 28,
        ipv4::Repr {
            tos: ih.tc,
            total_len: itot,
            ident: iid,
            flags_frag: ifo,
            ttl: ih.hl,
            protocol: iproto,
            src: isrc4.into(),
            dst: idst4.into(),
        },
    )?;
    wr(b, new_start, sub(&hdr, 0, hdr_len)?)?;

    let icmp_at = new_start + l2 + 20;
    let c = checksum(sub(b, icmp_at, icmp_at + 8 + 20 + rest_len)?);
    wr16(b, icmp_at + 2, c)?;
    Ok((new_start, hdr_len + rest_len))
}

// ---------------------------------------------------------------------------
// RFC 4884 ICMP extensions in translated errors.
//
//= https://www.rfc-editor.org/rfc/rfc4884#section-4.1
// (paraphrase) Destination Unreachable, Time Exceeded and (ICMPv4 only)
// Parameter Problem carry a length attribute: the length of the original
// datagram field, in 32-bit words for ICMPv4 (the sixth octet) and 64-bit
// words for ICMPv6 (the fifth). When an extension structure follows, the
// original datagram is zero-padded to a word boundary and to at least 128
// octets.
//
//= https://www.rfc-editor.org/rfc/rfc7915#section-4.2
// (paraphrase) The translator translates the length attribute between the
// two word sizes, re-pads the translated original datagram, and carries the
// extension structure unchanged where the translated type has a length
// attribute; where it has none (Packet Too Big, Parameter Problem in
// ICMPv6) the extension is removed (§5.2 likewise for 6->4).

/// The extension structure of a received ICMP error.
#[derive(Clone, Copy)]
struct IcmpExt {
    /// Absolute offset where it starts (the original datagram's end).
    at: usize,
    len: usize,
}

/// The extension of a received error whose length attribute is `attr`
/// (`None`: a type without one), in `word`-byte units, the original
/// datagram starting at `dgram` and the message ending at `pend`.
fn icmp_ext_in(attr: Option<u8>, word: usize, dgram: usize, pend: usize) -> Result<Option<IcmpExt>, Drop> {
    let ipl = match attr {
        None | Some(0) => return Ok(None),
        Some(a) => usize::from(a) * word,
    };
    //= https://www.rfc-editor.org/rfc/rfc4884#section-4.1
    // (paraphrase) When an extension follows, the original datagram field
    // is at least 128 octets long.
    let at = dgram + ipl;
    if ipl < 128 || at > pend {
        return Err(Drop::Malformed);
    }
    Ok(Some(IcmpExt { at, len: pend - at }))
}

/// What follows the translated inner IP header in a translated error.
#[derive(Clone, Copy)]
struct ExtLayout {
    /// Bytes of the original datagram after its IP header, kept.
    rest: usize,
    /// Zero bytes after them (RFC 4884 padding).
    pad: usize,
    /// Extension structure bytes after the padding.
    ext: usize,
    /// Length attribute of the translated error (0: none).
    attr: u8,
}

impl ExtLayout {
    fn body(&self) -> usize {
        self.rest + self.pad + self.ext
    }
}

/// Layout of a translated error's payload: `avail` bytes of the original
/// datagram after its IP header, translated to one of `inner_hdr` bytes,
/// `room` bytes for datagram and extension together, `word` the output's
/// length unit, `keep` whether the output type has a length attribute.
fn icmp_ext_layout(
    avail: usize,
    ext: Option<IcmpExt>,
    inner_hdr: usize,
    room: usize,
    word: usize,
    keep: bool,
) -> ExtLayout {
    let plain = ExtLayout { rest: avail.min(room.saturating_sub(inner_hdr)), pad: 0, ext: 0, attr: 0 };
    let Some(e) = ext.filter(|_| keep) else { return plain };
    let whole = (inner_hdr + avail).div_ceil(word) * word;
    let mut dgram = whole.max(128);
    if dgram + e.len > room {
        // Too long: the original datagram gives way, not the extension,
        // down to 128 bytes; below that the extension is left out.
        dgram = room.saturating_sub(e.len) / word * word;
        if dgram < 128 || dgram < inner_hdr {
            return plain;
        }
    }
    let Ok(attr) = u8::try_from(dgram / word) else { return plain };
    let rest = avail.min(dgram - inner_hdr);
    ExtLayout { rest, pad: dgram - inner_hdr - rest, ext: e.len, attr }
}

/// Moves the kept original datagram bytes (at `rest_at`) to end `pad`
/// bytes before the extension, which stays in place, and zeroes the
/// padding. Returns where those bytes now start.
fn icmp_ext_place(
    b: &mut [u8],
    rest_at: usize,
    lay: &ExtLayout,
    ext: Option<IcmpExt>,
) -> Result<usize, Drop> {
    let Some(e) = ext.filter(|_| lay.ext != 0) else { return Ok(rest_at) };
    let to = e.at.checked_sub(lay.pad + lay.rest).ok_or(Drop::HeadroomExhausted)?;
    let from_end = rest_at + lay.rest;
    if from_end > b.len() || e.at > b.len() {
        return Err(Drop::Truncated);
    }
    b.copy_within(rest_at..from_end, to);
    b.get_mut(to + lay.rest..e.at).ok_or(Drop::Truncated)?.fill(0);
    Ok(to)
}

// ---------------------------------------------------------------------------
// Generated errors.

/// Builds, over the original frame `buf[start..start + len]`, an ICMP
/// "too big" error back to its sender, in the frame's own family: ICMPv4
/// Fragmentation Needed (type 3 code 4, next-hop MTU `mtu`) for IPv4,
/// ICMPv6 Packet Too Big (MTU `mtu`) for IPv6. Use the `mtu` of
/// [`Drop::TooBig`]. The quote is truncated to 576 / 1280 bytes in all; the
/// MACs are swapped; up to 48 bytes of headroom are used.
pub fn build_too_big(buf: &mut [u8], start: usize, len: usize, router: &RouterAddrs, mtu: u16) -> Placed {
    build_too_big_chain(buf, start, len, 0, router, mtu)
}

/// [`build_too_big`] for a frame of several buffers (multi-buffer AF_XDP):
/// `buf[start..start + len]` is its first buffer and `more` the bytes in
/// the others. The error quotes from the first buffer only (the IP and L4
/// headers are there; the quote is 548 / 1232 bytes at most, shortened to
/// what the first buffer holds), so the later buffers are no part of it
/// and the caller frees them.
pub fn build_too_big_chain(
    buf: &mut [u8],
    start: usize,
    len: usize,
    more: usize,
    router: &RouterAddrs,
    mtu: u16,
) -> Placed {
    let m = mtu.to_be_bytes();
    build_error(
        buf,
        start,
        len,
        more,
        router,
        (3, 4, [0, 0, m[0], m[1]]),
        (2, 0, u32::from(mtu).to_be_bytes()),
    )
}

/// Defines `pub fn $name(buf, start, len, router)`: an ICMP error of a
/// fixed (type, code) per family, without data of its own, built back to
/// the sender of the frame like [`build_too_big`].
macro_rules! fixed_error {
    ($(#[$doc:meta])* $name:ident, v4: ($t4:literal, $c4:literal), v6: ($t6:literal, $c6:literal)) => {
        $(#[$doc])*
        pub fn $name(buf: &mut [u8], start: usize, len: usize, router: &RouterAddrs) -> Placed {
            build_error(buf, start, len, 0, router, ($t4, $c4, [0; 4]), ($t6, $c6, [0; 4]))
        }
    };
}

fixed_error! {
    /// ICMP Time Exceeded (in transit): for the caller's TTL / Hop Limit
    /// expiry.
    build_time_exceeded, v4: (11, 0), v6: (3, 0)
}

//= https://www.rfc-editor.org/rfc/rfc1812#section-5.2.7.1
//# 13 = Communication Administratively Prohibited
//= https://www.rfc-editor.org/rfc/rfc4443#section-3.1
//# 1 - Communication with destination administratively prohibited
fixed_error! {
    /// ICMP "administratively prohibited": for a new flow the dataplane
    /// refuses (no SNAT port left).
    build_admin_prohibited, v4: (3, 13), v6: (1, 1)
}

//= https://www.rfc-editor.org/rfc/rfc6146#section-3.5.1.1
//# If it is not possible to allocate an appropriate IPv4 transport
//# address or create a BIB entry, then the packet is discarded.  The
//# NAT64 SHOULD send an ICMPv6 Destination Unreachable error message
//# with Code 3 (Address Unreachable).
fixed_error! {
    /// ICMP Destination Unreachable, address unreachable (ICMPv6 1/3;
    /// ICMPv4 3/1, host unreachable, its RFC 7915 §5.2 counterpart): what a
    /// NAT64 answers a packet it can find no pool address for.
    build_address_unreachable, v4: (3, 1), v6: (1, 3)
}

/// Builds the ICMP error RFC 7915 answers a refused packet with, over the
/// frame like [`build_too_big`]: Fragmentation Needed / Packet Too Big for
/// [`Drop::TooBig`]; Destination Unreachable, communication
/// administratively prohibited (ICMPv4 3/13, ICMPv6 1/1) for IPv4 UDP
/// without a checksum ([`Drop::UdpZeroChecksum`]) and IPv6 extension
/// headers after a Fragment header ([`Drop::ExtAfterFragment`]). `None`:
/// the drop is silent.
pub fn build_refusal(
    buf: &mut [u8],
    start: usize,
    len: usize,
    router: &RouterAddrs,
    drop: Drop,
) -> Option<Result<(usize, usize), Drop>> {
    match drop {
        Drop::TooBig { mtu } => Some(build_too_big(buf, start, len, router, mtu)),
        //= https://www.rfc-editor.org/rfc/rfc7915#section-4.5
        // (paraphrase) A stateless translator cannot compute the checksum of
        // a fragmented IPv4 UDP datagram without one: it drops it. The
        // sender is told, with the same error as a filtered packet.
        //
        //= https://www.rfc-editor.org/rfc/rfc7915#section-5.1
        // (paraphrase) Packets with extension headers after a Fragment
        // header are dropped; the sender is told the packet was refused.
        Drop::UdpZeroChecksum | Drop::ExtAfterFragment => {
            Some(build_admin_prohibited(buf, start, len, router))
        }
        _ => None,
    }
}

/// Whether a packet refused for `drop` is answered ([`build_refusal`]),
/// known before anything is built (a test holds the two to one list).
pub fn answered(drop: Drop) -> bool {
    matches!(drop, Drop::TooBig { .. } | Drop::UdpZeroChecksum | Drop::ExtAfterFragment)
}

type IcmpHead = (u8, u8, [u8; 4]);

/// The error builders' common part. `len` bytes of the frame lie in `buf`
/// from `start`; `more` further bytes of it lie in other buffers (0 for a
/// frame of one buffer). The IP header's length is checked against
/// `len + more`, and the quote is cut at the end of `buf`'s part.
#[allow(clippy::too_many_arguments)]
fn build_error(
    buf: &mut [u8],
    start: usize,
    len: usize,
    more: usize,
    router: &RouterAddrs,
    v4: IcmpHead,
    v6: IcmpHead,
) -> Placed {
    let Frame { b, end, l2, et, mut eth, ip } = open(buf, start, len)?;
    // Back to the sender: swap the MACs.
    let (d, s): ([u8; 6], [u8; 6]) = (rdn(&eth, 0)?, rdn(&eth, 6)?);
    wr(&mut eth, 0, &s)?;
    wr(&mut eth, 6, &d)?;
    match et {
        ETH_P_IPV4 => {
            let h = parse_v4(b, ip, end - ip + more, true)?;
            //= https://www.rfc-editor.org/rfc/rfc1812#section-4.3.2.7
            // (paraphrase) No ICMP error is sent for an ICMP error message or
            // for a non-initial fragment.
            if h.off != 0 {
                return Err(Drop::Untranslatable);
            }
            if h.proto == ICMP && is_icmp4_error(rd8(b, ip + h.ihl)?) {
                return Err(Drop::NestedIcmpError);
            }
            let quote = h.tot.min(576 - 28).min(end - ip);
            let hdr_len = l2 + 28;
            let new_start = ip.checked_sub(hdr_len).ok_or(Drop::HeadroomExhausted)?;
            let mut hdr = [0u8; 18 + 28];
            put_l2(&mut hdr, 0, &eth, l2, ETH_P_IPV4)?;
            put_v4(
                &mut hdr,
                l2,
                ipv4::Repr {
                    tos: 0,
                    total_len: (28 + quote) as u16,
                    ident: 0,
                    flags_frag: 0,
                    ttl: 64,
                    protocol: ICMP,
                    src: router.v4.into(),
                    dst: h.src.into(),
                },
            )?;
            wr(&mut hdr, l2 + 20, &[v4.0, v4.1, 0, 0])?;
            wr(&mut hdr, l2 + 24, &v4.2)?;
            wr(b, new_start, sub(&hdr, 0, hdr_len)?)?;
            let at = new_start + l2 + 20;
            let c = checksum(sub(b, at, ip + quote)?);
            wr16(b, at + 2, c)?;
            Ok((new_start, hdr_len + quote))
        }
        ETH_P_IPV6 => {
            let pend = ip + 40 + usize::from(rd16(b, ip + 4)?);
            if pend > end + more {
                return Err(Drop::Truncated);
            }
            let src: [u8; 16] = rdn(b, ip + 8)?;
            //= https://www.rfc-editor.org/rfc/rfc4443#section-2.4
            //# (e) An ICMPv6 error message MUST NOT be originated as a result of
            //#     receiving the following:
            //#
            //#      (e.1) An ICMPv6 error message.
            //
            // A header chain the translator refuses to walk (extension headers
            // after a Fragment header) is answered: it is the refusal's cause.
            match parse_v6(b, ip, pend.min(end)) {
                Ok(h)
                    if h.proto == ICMP6
                        && h.frag.is_none_or(|f| f.off == 0)
                        && is_icmp6_error(rd8(b, h.ul)?) =>
                {
                    return Err(Drop::NestedIcmpError);
                }
                Ok(_) | Err(Drop::ExtAfterFragment) => {}
                Err(e) => return Err(e),
            }
            let quote = (pend - ip).min(1280 - 48).min(end - ip);
            let hdr_len = l2 + 48;
            let new_start = ip.checked_sub(hdr_len).ok_or(Drop::HeadroomExhausted)?;
            let mut hdr = [0u8; 18 + 48];
            put_l2(&mut hdr, 0, &eth, l2, ETH_P_IPV6)?;
            put_v6(&mut hdr, l2, 0, 8 + quote, ICMP6, 64, &router.v6, &src, None)?;
            wr(&mut hdr, l2 + 40, &[v6.0, v6.1, 0, 0])?;
            wr(&mut hdr, l2 + 44, &v6.2)?;
            wr(b, new_start, sub(&hdr, 0, hdr_len)?)?;
            let at = new_start + l2 + 40;
            let c = l4_checksum_v6(
                Ipv6Addr::from(router.v6),
                Ipv6Addr::from(src),
                ICMP6,
                sub(b, at, ip + quote)?,
            );
            wr16(b, at + 2, c)?;
            Ok((new_start, hdr_len + quote))
        }
        _ => Err(Drop::NotIp),
    }
}
