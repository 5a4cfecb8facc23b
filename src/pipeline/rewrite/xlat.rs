//! Address-family translation of packets in place: NAT46 services (IPv4 VIP,
//! IPv6 backends), stateful NAT64 (RFC 6146) and stateless SIIT (RFC 7915).
//!
//! Tracked flows (NAT46, NAT64) translate through a fixed carrier prefix and
//! then apply their conntrack binding with the ordinary NAT rewrite, so the
//! binding alone says where a packet goes, whatever prefixes produced it.

use super::nat::rewrite;
use super::related;
use super::Delta;
use crate::nat46::{
    bound_4to6, bound_6to4, build_time_exceeded, build_too_big, translate_4to6, translate_6to4, Bound,
    Config as XlatConfig, Drop, Mapper, Placed, Prefix64, Rfc6791, RouterAddrs, UdpZeroChecksum,
};
use crate::pipeline::batch::FrameMut;
use crate::pipeline::detail::{Cause, Untranslatable};
use crate::pipeline::flow::{proto, Family, FlowKind, FlowMeta, NatBinding, Xlat};
use crate::pipeline::mtu::{LinkMtus, DEFAULT_MTU};
use crate::pipeline::{Ctx, DropReason, Verdict};
use crate::wire::addr::v4_of;
use std::sync::Arc;

/// RFC 8215's local-use translation prefix, as a carrier between the two
/// halves of a tracked translation; it never appears on the wire.
pub(crate) const CARRIER: Prefix64 =
    match Prefix64::new([0, 0x64, 0xff, 0x9b, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 96) {
        Some(p) => p,
        None => panic!("valid /96"),
    };

//= https://www.rfc-editor.org/rfc/rfc7600#section-4
// (paraphrase) 192.0.0.8 is the IPv4 dummy address, the source of ICMPv4
// errors from IPv6-IPv4 translators that have no IPv4 address of their own.
pub const ROUTER_V4: [u8; 4] = [192, 0, 0, 8];

/// The L3 MTUs of a pipeline's two ways out: a packet that would leave
/// larger than its egress MTU (as forwarded, or grown by translation)
/// answers with Packet Too Big / Fragmentation Needed instead (RFC 7915 §4,
/// §5; RFC 1812 §4.2.2.7). Read from [`LinkMtus`] once a batch
/// ([`EgressMtu::read`]), so an interface's MTU change applies from the
/// next batch.
#[derive(Debug, Clone)]
pub struct EgressMtu {
    links: Arc<LinkMtus>,
    /// Interface towards backends, servers, the IPv6 side of SIIT (original direction).
    egress: usize,
    /// Interface back towards clients (reply direction).
    ret: usize,
}

impl Default for EgressMtu {
    fn default() -> EgressMtu {
        EgressMtu::fixed(DEFAULT_MTU, DEFAULT_MTU)
    }
}

impl EgressMtu {
    /// The MTUs of interfaces `egress` and `ret` in `links`.
    pub fn new(links: Arc<LinkMtus>, egress: usize, ret: usize) -> EgressMtu {
        EgressMtu { links, egress, ret }
    }

    /// Constant MTUs, for tests and benches.
    pub fn fixed(egress: u16, ret: u16) -> EgressMtu {
        EgressMtu { links: LinkMtus::new([egress, ret]), egress: 0, ret: 1 }
    }

    /// MTU of the original direction's egress.
    #[inline]
    pub fn egress(&self) -> u16 {
        self.links.get(self.egress)
    }

    /// MTU of the reply direction's egress.
    #[inline]
    pub fn ret(&self) -> u16 {
        self.links.get(self.ret)
    }

    /// Both MTUs as they are now, for one batch: two atomic loads a
    /// batch instead of one (and a bounds check) a packet.
    #[inline]
    pub fn read(&self) -> BatchMtus {
        BatchMtus { egress: self.egress(), ret: self.ret() }
    }
}

/// A pipeline's two egress MTUs, read once for a batch ([`EgressMtu::read`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMtus {
    egress: u16,
    ret: u16,
}

impl Default for BatchMtus {
    fn default() -> BatchMtus {
        EgressMtu::default().read()
    }
}

impl BatchMtus {
    /// MTU of the reply direction's egress.
    #[inline]
    pub fn ret(self) -> u16 {
        self.ret
    }

    /// The MTU of the port a packet of this kind leaves by.
    #[inline]
    pub fn of(self, kind: FlowKind) -> u16 {
        if kind == FlowKind::Reply {
            self.ret
        } else {
            self.egress
        }
    }
}

/// What a stage needs to answer a packet with an ICMP error: the source
/// addresses, and whether the worker may send any error in this batch.
#[derive(Debug, Clone, Copy)]
pub struct Answers {
    pub from: RouterAddrs,
    /// The worker's error rate is spent until its clock moves on
    /// ([`crate::pipeline::ratelimit::ErrorLimiter::spent`]): `bounce`
    /// builds nothing.
    pub spent: bool,
}

impl Answers {
    /// The batch's: the translator's addresses, the worker's error budget.
    pub fn of(ctx: &Ctx) -> Answers {
        Answers { from: router(ctx), spent: ctx.errors.spent(ctx.now) }
    }
}

/// The translator's own addresses, sources of the ICMP errors it sends.
pub fn router(ctx: &Ctx) -> RouterAddrs {
    let x = &ctx.services.xlat;
    let p = x
        .nat64
        .as_ref()
        .map(|n| n.prefix)
        .or(x.nat46)
        .or_else(|| x.siit.as_ref().and_then(|s| s.prefix))
        .unwrap_or(CARRIER);
    RouterAddrs { v4: ROUTER_V4, v6: p.embed(ROUTER_V4) }
}

/// The packet's TTL / Hop Limit: a translator is a router (RFC 7915 §4.1,
/// §5.1) and decrements it. Returns false when it has expired.
pub(crate) fn decrement_hop(p: &mut FrameMut<'_>, family: Family) -> Option<bool> {
    let v6 = family.is_v6();
    let l3 = p.start + usize::from(p.flow.l3);
    let h = p.frame.get_mut(l3..l3 + 12)?;
    let at = if v6 { 7 } else { 8 };
    let ttl = h[at];
    if ttl <= 1 {
        return Some(false);
    }
    if v6 {
        h[at] = ttl - 1;
    } else {
        // The TTL shares a checksummed word with the protocol (RFC 1624).
        let mut d = Delta::default();
        let word = [ttl - 1, h[9]];
        d.write(&mut h[8..10], &word);
        let c = u16::from_be_bytes([h[10], h[11]]);
        h[10..12].copy_from_slice(&d.apply(c).to_be_bytes());
    }
    Some(true)
}

/// Whether the packet's TTL / Hop Limit runs out here (read only).
pub(crate) fn hop_expired(p: &FrameMut<'_>, family: Family) -> Option<bool> {
    let v6 = family.is_v6();
    let l3 = p.start + usize::from(p.flow.l3);
    Some(*p.frame.get(l3 + if v6 { 7 } else { 8 })? <= 1)
}

/// The flow with its binding's IPv4 addresses in carrier form, for a
/// rewrite the stateless translator then takes back out to IPv4.
fn in_carrier(f: &FlowMeta) -> FlowMeta {
    let nat =
        NatBinding { src: CARRIER.embed(v4_of(&f.nat.src)), dst: CARRIER.embed(v4_of(&f.nat.dst)), ..f.nat };
    FlowMeta { nat, ..*f }
}

/// Makes the packet the `(start, len)` a builder or translator wrote in
/// its frame; one past the frame is a bug here, dropped as inconsistent.
pub(crate) fn set(p: &mut FrameMut<'_>, (start, len): (usize, usize)) -> Result<(), Cause> {
    p.place(start, len).then_some(()).ok_or(Cause::INCONSISTENT)
}

/// A builder of an ICMP error over a packet's frame: `(frame, start, len,
/// source addresses)` to the error's `(start, len)` in the same frame.
pub(crate) type Build<'b> = &'b dyn Fn(&mut [u8], usize, usize, &RouterAddrs) -> Placed;

/// Replaces the packet with the ICMP error `build` writes over it, sent
/// back to its sender (the L2 stage returns it out its ingress port). With
/// the worker's error rate spent, nothing is built: the packet is dropped
/// at once as `error_rate_limited`, as the L2 stage would drop the error:
/// past the rate, a flood that draws errors costs no copy of its quotes.
pub(crate) fn bounce(p: &mut FrameMut<'_>, answers: &Answers, build: Build<'_>) -> Result<(), Cause> {
    if answers.spent {
        p.meta.verdict = Verdict::Drop(DropReason::ErrorRateLimited);
        return Ok(());
    }
    let out = build(p.frame, p.start, p.meta.len() as usize, &answers.from).map_err(Cause::from)?;
    set(p, out)?;
    p.flow.kind = FlowKind::Bounce;
    Ok(())
}

/// Puts the RFC 7915 translator's result `r` in place of the packet: its
/// translation (true), or the Packet Too Big / Fragmentation Needed it
/// asks for, bounced (false).
fn take_translation(p: &mut FrameMut<'_>, answers: &Answers, r: Placed) -> Result<bool, Cause> {
    match r {
        Ok(out) => {
            set(p, out)?;
            Ok(true)
        }
        Err(Drop::TooBig { mtu }) => {
            let build = move |b: &mut [u8], s, l, r: &RouterAddrs| build_too_big(b, s, l, r, mtu);
            bounce(p, answers, &build).map(|()| false)
        }
        Err(d) => Err(d.into()),
    }
}

/// Translates a tracked flow's packet to the other family and applies its
/// binding. Errors the RFCs ask for (Time Exceeded, Packet Too Big) replace
/// the packet and turn it into a bounce.
///
/// The common shape (untagged TCP/UDP, no options or extension headers,
/// within the MTU, hop count above 1) goes straight to the binding in one
/// pass (`nat46::bound_*`); everything else takes [`translate_flow_general`].
#[inline]
pub fn translate_flow(p: &mut FrameMut<'_>, answers: &Answers, mtus: BatchMtus) -> Result<(), Cause> {
    let (len, mtu, nat) = (p.meta.len() as usize, mtus.of(p.flow.kind), &p.flow.nat);
    let out = match p.flow.xlat {
        Xlat::To6 => {
            let to = Bound {
                src: &nat.src,
                dst: &nat.dst,
                sport: nat.sport,
                dport: nat.dport,
                l3: Delta::ZERO,
                l4: p.flow.sums.l4,
            };
            bound_4to6(p.frame, p.start, len, mtu, &to)
        }
        Xlat::To4 => {
            let to = Bound {
                src: v4_of(&nat.src),
                dst: v4_of(&nat.dst),
                sport: nat.sport,
                dport: nat.dport,
                l3: p.flow.sums.l3,
                l4: p.flow.sums.l4,
            };
            bound_6to4(p.frame, p.start, len, mtu, &to)
        }
        _ => return Ok(()),
    };
    match out {
        Some(out) => {
            set(p, out)?;
            let f = &mut *p.flow;
            f.family = if f.xlat == Xlat::To6 { Family::V6 } else { Family::V4 };
            f.l4 = f.l3 + f.family.header_len();
            Ok(())
        }
        None => translate_flow_general(p, answers, mtus),
    }
}

/// [`translate_flow`] for any packet: through the carrier prefix with the
/// RFC 7915 translator, then the binding applied with the NAT rewrite.
pub fn translate_flow_general(p: &mut FrameMut<'_>, answers: &Answers, mtus: BatchMtus) -> Result<(), Cause> {
    let carrier = Mapper::prefix(CARRIER);
    let cfg = XlatConfig {
        src: carrier,
        dst: carrier,
        mtu: mtus.of(p.flow.kind),
        udp_zero_checksum: UdpZeroChecksum::Compute,
        rfc6791: Rfc6791::v4(ROUTER_V4),
    };
    let len = p.meta.len() as usize;
    match p.flow.xlat {
        Xlat::To6 => {
            // Expiry is checked before translation and the hop limit taken
            // down after it, in the IPv6 header, which has no checksum:
            // writing the IPv4 TTL and checksum first would stall the
            // translator's wide reads of that header on store forwarding.
            if hop_expired(p, Family::V4).ok_or(Cause::INCONSISTENT)? {
                return bounce(p, answers, &build_time_exceeded);
            }
            let r = translate_4to6(p.frame, p.start, len, &cfg);
            if !take_translation(p, answers, r)? {
                return Ok(());
            }
            let hop = p.start + usize::from(p.flow.l3) + 7;
            let h = p.frame.get_mut(hop).ok_or(Cause::INCONSISTENT)?;
            *h = h.saturating_sub(1);
            let f = &mut *p.flow;
            f.family = Family::V6;
            f.l4 = f.l3 + 40;
            if f.key.proto == proto::ICMP {
                f.key.proto = proto::ICMPV6;
            }
            let end = p.start + p.meta.len() as usize;
            rewrite(p.frame.get_mut(p.start..end).ok_or(Cause::INCONSISTENT)?, f).ok_or(Cause::INCONSISTENT)
        }
        Xlat::To4 => {
            // Decremented after translation, so that a Packet Too Big quotes
            // the packet with the Hop Limit it arrived with.
            if hop_expired(p, Family::V6).ok_or(Cause::INCONSISTENT)? {
                return bounce(p, answers, &build_time_exceeded);
            }
            // Put the binding's IPv4 addresses into carrier form, then let
            // the stateless translator take them out again.
            let g = in_carrier(p.flow);
            rewrite(p.frame.get_mut(p.start..p.start + len).ok_or(Cause::INCONSISTENT)?, &g)
                .ok_or(Cause::INCONSISTENT)?;
            let r = translate_6to4(p.frame, p.start, len, &cfg);
            if !take_translation(p, answers, r)? {
                return Ok(());
            }
            if decrement_hop(p, Family::V4) != Some(true) {
                return Err(Cause::INCONSISTENT);
            }
            p.flow.family = Family::V4;
            p.flow.l4 = p.flow.l3 + 20;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The IPv6 prefixes tracked translations put IPv4 hosts into: NAT64's
/// (clients reach IPv4 servers at prefix + address) and NAT46's (IPv4
/// clients appear to IPv6 backends at prefix + address).
pub struct FlowPrefixes {
    nat64: Option<Prefix64>,
    nat46: Option<Prefix64>,
}

impl FlowPrefixes {
    pub fn of(ctx: &Ctx) -> FlowPrefixes {
        let x = &ctx.services.xlat;
        FlowPrefixes { nat64: x.nat64.as_ref().map(|n| n.prefix), nat46: x.nat46 }
    }

    fn for_flow(&self, f: &FlowMeta) -> Option<Prefix64> {
        if f.service.is_none() {
            self.nat64
        } else {
            self.nat46
        }
    }
}

/// Translates an ICMP error about a tracked NAT64 session or NAT46 flow to
/// the other family, quoted packet included, and applies the flow's
/// binding to it ([`related::rewrite`]).
//= https://www.rfc-editor.org/rfc/rfc6146#section-3.4
// (paraphrase) ICMP error messages are matched to a session by the packet
// they carry and translated with it; an ICMPv4 error's source, an IPv4
// router, appears in IPv6 as the prefix plus its address.
pub fn translate_related(
    p: &mut FrameMut<'_>,
    prefixes: &FlowPrefixes,
    mtus: BatchMtus,
) -> Result<(), Cause> {
    // A translator is a router, but never sends an error about an error
    // (RFC 1812 §4.3.2.7): one whose TTL runs out here is dropped.
    if !decrement_hop(p, p.flow.family).ok_or(Cause::INCONSISTENT)? {
        return Err(Cause::Untranslatable(Untranslatable::ErrorExpired));
    }
    let len = p.meta.len() as usize;
    let carrier = Mapper::prefix(CARRIER);
    match p.flow.xlat {
        Xlat::To6 => {
            // The error's source and the quote's destination (the IPv4
            // peer) map into the flow's prefix; the quote's source (our
            // IPv4 side) goes through the carrier and is then rewritten.
            let prefix = prefixes.for_flow(p.flow).ok_or(Cause::Untranslatable(Untranslatable::NoMapping))?;
            let cfg = XlatConfig {
                src: Mapper::prefix(prefix),
                dst: carrier,
                mtu: mtus.of(p.flow.kind),
                udp_zero_checksum: UdpZeroChecksum::Compute,
                rfc6791: Rfc6791::default(),
            };
            let out = translate_4to6(p.frame, p.start, len, &cfg).map_err(Cause::from)?;
            set(p, out)?;
            p.flow.family = Family::V6;
            p.flow.l4 = p.flow.l3 + 40;
            let end = p.start + p.meta.len() as usize;
            related::rewrite(p.frame.get_mut(p.start..end).ok_or(Cause::INCONSISTENT)?, p.flow)
                .ok_or(Cause::INCONSISTENT)
        }
        Xlat::To4 => {
            // Rewrite first, to the binding's IPv4 addresses in carrier
            // form, then translate them out. The error's own IPv6 source
            // has no IPv4 form: it leaves from the binding's IPv4 address.
            let g = in_carrier(p.flow);
            related::rewrite(p.frame.get_mut(p.start..p.start + len).ok_or(Cause::INCONSISTENT)?, &g)
                .ok_or(Cause::INCONSISTENT)?;
            let cfg = XlatConfig {
                src: carrier,
                dst: carrier,
                mtu: mtus.of(p.flow.kind),
                udp_zero_checksum: UdpZeroChecksum::Compute,
                rfc6791: Rfc6791::v4(v4_of(&p.flow.nat.src)),
            };
            let out = translate_6to4(p.frame, p.start, len, &cfg).map_err(Cause::from)?;
            set(p, out)?;
            p.flow.family = Family::V4;
            p.flow.l4 = p.flow.l3 + 20;
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{PacketMeta, Verdict};
    use crate::wire::addr::mapped;

    /// A frame of `len` bytes at `HR` in a 512-byte buffer.
    const HR: usize = 128;

    fn flow_frame(v6: bool, udp: bool, i: u32) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 0xff, 0]);
        let a = i.to_be_bytes();
        let b = if v6 {
            let mut s = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11];
            s[12..].copy_from_slice(&a);
            b.ipv6(s, [0, 0x64, 0xff, 0x9b, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 1, a[3]], (i % 200) as u8 + 2)
        } else {
            b.ipv4([10, a[1], a[2], a[3]], [10, 0, 100, 1], (i % 200) as u8 + 2)
        };
        let mut f = Vec::new();
        let payload = vec![i as u8; (i % 40) as usize];
        if udp {
            b.udp((i % 60000) as u16 + 1, 53).write(&mut f, &payload).unwrap();
        } else {
            b.tcp((i % 60000) as u16 + 1, 80, i, 1000).ack(i).write(&mut f, &payload).unwrap();
        }
        f
    }

    /// One flow packet through `translate`; the output bytes.
    fn through(
        frame: &[u8],
        v6: bool,
        nat: NatBinding,
        translate: impl FnOnce(&mut FrameMut<'_>) -> Result<(), Cause>,
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        buf[HR..HR + frame.len()].copy_from_slice(frame);
        let mut meta = PacketMeta::for_tests(HR as u64, frame.len() as u32);
        meta.verdict = Verdict::Continue;
        // The flow's key is the packet's, and its entry's checksum change
        // goes from that key to the binding.
        let key = crate::wire::parse::parse(frame).unwrap().unwrap().tuple;
        let (from, to) = if v6 { (Family::V6, Family::V4) } else { (Family::V4, Family::V6) };
        let mut flow = FlowMeta {
            kind: FlowKind::Original,
            family: from,
            l3: 14,
            l4: if v6 { 54 } else { 34 },
            key,
            nat,
            sums: super::super::nat::sums(&key, &nat, from, to),
            xlat: if v6 { Xlat::To4 } else { Xlat::To6 },
            ..FlowMeta::default()
        };
        let mut p = FrameMut::for_tests(&mut meta, &mut flow, &mut buf, HR);
        translate(&mut p).unwrap();
        let (s, l) = (p.start, p.meta.len() as usize);
        buf[s..s + l].to_vec()
    }

    /// The one-pass translation of tracked flows gives what translating
    /// through the carrier and then rewriting gives, with valid checksums
    /// (the transport checksum may differ only as 0x0000 vs 0xFFFF would).
    #[test]
    fn one_pass_flow_translation_matches_the_general_path() {
        let answers = Answers { from: RouterAddrs { v4: ROUTER_V4, v6: [0; 16] }, spent: false };
        let mtus = BatchMtus::default();
        for i in 0..2000u32 {
            let (v6, udp) = (i % 2 == 1, i % 4 >= 2);
            let frame = flow_frame(v6, udp, i.wrapping_mul(2_654_435_761));
            let x = i.wrapping_mul(40503).to_be_bytes();
            let nat = if v6 {
                NatBinding {
                    src: mapped([10, 0, 100, 1]),
                    dst: mapped([10, x[0], x[1], x[2]]),
                    sport: 80,
                    dport: u16::from_be_bytes([x[2], x[3]]),
                }
            } else {
                let mut d = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                d[12..].copy_from_slice(&x);
                NatBinding {
                    src: CARRIER.embed([10, x[3], x[2], 9]),
                    dst: d,
                    sport: u16::from_be_bytes([x[1], x[0]]),
                    dport: 8080,
                }
            };
            let fast = through(&frame, v6, nat, |p| translate_flow(p, &answers, mtus));
            let general = through(&frame, v6, nat, |p| translate_flow_general(p, &answers, mtus));
            let parsed = crate::wire::parse::parse(&fast).unwrap().unwrap();
            assert!(crate::nat46::checksums_valid(&fast, &parsed), "flow {i}: {fast:02x?}");
            let at = parsed.l4_offset + if udp { 6 } else { 16 };
            let (mut a, mut b) = (fast.clone(), general.clone());
            a[at..at + 2].fill(0);
            b[at..at + 2].fill(0);
            assert_eq!(a, b, "flow {i} (v6 {v6}, udp {udp})");
        }
    }
}
