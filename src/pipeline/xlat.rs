//! `siit`: stateless IPv4/IPv6 translation (RFC 7915) of every packet of
//! the pipeline, by prefix and explicit address mappings.
//!
//! An IPv6 packet whose IPv4 destination is an EAM's IPv4 side, that is the
//! IPv4 form of an IPv6 host, is hairpinned: translated to IPv4 and straight
//! back to IPv6, and sent out the IPv6 side (RFC 7757 §4).

use super::batch::FrameMut;
use super::detail::{Cause, Untranslatable};
use super::flow::{Family, FlowKind};
use super::rewrite::fragments::split_into_fragments;
use super::rewrite::xlat::{bounce, decrement_hop, hop_expired, set, Answers, EgressMtu, ROUTER_V4};
use super::stats::{parse_or_drop, WorkerStats};
use super::{Batch, Ctx, DropReason, Stage, Verdict};
use crate::nat46::fragment::fragmentation_4to6;
use crate::nat46::{
    build_refusal, build_time_exceeded, siit::answered, translate_4to6, translate_6to4, Config as XlatConfig,
    Drop, EamTable, Mapper, Pool4, Rfc6791, RouterAddrs,
};
use crate::wire::addr::{mapped, v4_of};
use crate::wire::parse::IpVersion;

/// The packet's bytes as they are now (after the TTL decrement).
fn pkt_after_hop<'a>(p: &'a super::FrameMut<'_>, len: usize) -> &'a [u8] {
    p.frame.get(p.start..p.start + len).unwrap_or(&[])
}

/// Stateless SIIT: every packet of the pipeline is translated by prefix and
/// explicit mappings, IPv4 → IPv6 towards `egress`, IPv6 → IPv4 back.
pub struct SiitStage {
    /// The egress MTUs, read per batch.
    pub(super) mtus: EgressMtu,
}

impl Stage for SiitStage {
    fn process(&mut self, batch: &mut Batch, pipeline: u8, ctx: &mut Ctx) {
        let answers = Answers::of(ctx);
        let stats = &*ctx.stats;
        let Some(siit) = ctx.services.xlat.siit.as_ref() else {
            batch.for_each(pipeline, |p| {
                stats.cause(Cause::Untranslatable(Untranslatable::NoMapping));
                p.meta.verdict = Verdict::Drop(DropReason::Untranslatable);
            });
            return;
        };
        let map = Mapper { eam: Some(&siit.eam), prefix: siit.prefix };
        // With no RFC 6791 IPv4 pool configured, errors from untranslatable
        // IPv6 routers come from the RFC 7600 dummy address.
        let rfc6791 = Rfc6791 { v4: siit.rfc6791.v4.or(Some(Pool4::single(ROUTER_V4))), ..siit.rfc6791 };
        // IPv4 -> IPv6 leaves by the egress, IPv6 -> IPv4 by the return egress;
        // the MTUs are read per batch, so an interface's MTU change applies at once.
        let cfg =
            |mtu| XlatConfig { src: map, dst: map, mtu, udp_zero_checksum: siit.udp_zero_checksum, rfc6791 };
        let (cfg46, cfg64) = (cfg(self.mtus.egress()), cfg(self.mtus.ret()));
        // A hairpinned packet leaves by the IPv6 egress: its IPv4 form must
        // fit that MTU less the 20 bytes the second translation adds back.
        let cfg64_hairpin = cfg(self.mtus.egress().saturating_sub(20));
        //= https://www.rfc-editor.org/rfc/rfc7757#section-4
        // (paraphrase) When hairpinning, the IPv4 source is translated with
        // the RFC 6052 prefix (pool6), not by the EAM table: the receiving
        // IPv6 host then answers through the translator, and the reply comes
        // from the address the first host sent to.
        let cfg_hairpin = XlatConfig {
            src: Mapper { eam: None, prefix: siit.prefix },
            mtu: u16::MAX,
            ..cfg(self.mtus.egress())
        };
        // DF=0 IPv4 larger than this leaves as IPv6 fragments (RFC 7915 §4);
        // translated whole first, so the MTU check is the split's.
        let frag_limit = siit.lowest_ipv6_mtu.min(self.mtus.egress());
        let cfg46_whole = XlatConfig { mtu: u16::MAX, ..cfg46 };
        batch.for_each_frame_emit(pipeline, |mut p, emit| {
            let len = p.meta.len() as usize;
            let Some(pkt) = p.frame.get(p.start..p.start + len) else { return };
            let Some(parsed) = parse_or_drop(pkt, stats, &mut p.meta.verdict) else { return };
            let v6 = parsed.version == IpVersion::V6;
            let family = if v6 { Family::V6 } else { Family::V4 };
            p.flow.l3 = parsed.l3_offset as u16;
            // Expiry is checked before translation, the hop count taken down
            // after it: an error built on the way (Packet Too Big, a refusal)
            // quotes the packet as it arrived.
            let result = match hop_expired(&p, family) {
                None => Err(Cause::INCONSISTENT),
                Some(true) => bounce(&mut p, &answers, &build_time_exceeded),
                Some(false) => {
                    let hairpin = v6 && hairpinned(&p, &map, &siit.eam);
                    let split_id =
                        if v6 { None } else { fragmentation_4to6(pkt_after_hop(&p, len), frag_limit) };
                    let r = if hairpin {
                        translate_6to4(p.frame, p.start, len, &cfg64_hairpin)
                    } else if v6 {
                        translate_6to4(p.frame, p.start, len, &cfg64)
                    } else if split_id.is_some() {
                        translate_4to6(p.frame, p.start, len, &cfg46_whole)
                    } else {
                        translate_4to6(p.frame, p.start, len, &cfg46)
                    };
                    match r {
                        Ok(out) => {
                            if let Err(c) = set(&mut p, out) {
                                return fail(&mut p, c, stats);
                            }
                            if hairpin {
                                let len = p.meta.len() as usize;
                                let placed = match translate_4to6(p.frame, p.start, len, &cfg_hairpin) {
                                    Ok(out) => set(&mut p, out),
                                    Err(d) => Err(d.into()),
                                };
                                if let Err(c) = placed {
                                    return fail(&mut p, c, stats);
                                }
                            }
                            let to_v4 = v6 && !hairpin;
                            let out_family = if to_v4 { Family::V4 } else { Family::V6 };
                            if decrement_hop(&mut p, out_family) != Some(true) {
                                return fail(&mut p, Cause::INCONSISTENT, stats);
                            }
                            p.flow.kind = if to_v4 { FlowKind::Reply } else { FlowKind::Original };
                            // The L2 stage looks the next hop up by destination.
                            p.flow.nat.dst = if to_v4 {
                                map.v6_to_v4(&parsed.tuple.dst).map_or([0; 16], mapped)
                            } else if hairpin {
                                ipv6_dst(&p).unwrap_or([0; 16])
                            } else {
                                map.v4_to_v6(v4_of(&parsed.tuple.dst)).unwrap_or([0; 16])
                            };
                            match split_id {
                                Some(id) => {
                                    split_into_fragments(&mut p, emit, id, frag_limit).map_err(Cause::from)
                                }
                                None => Ok(()),
                            }
                        }
                        Err(d) => refuse(&mut p, &answers, d, stats),
                    }
                }
            };
            if let Err(c) = result {
                fail(&mut p, c, stats);
            }
        });
    }
}

/// The IPv6 destination of the packet at the frame's L3 offset.
fn ipv6_dst(p: &FrameMut<'_>) -> Option<[u8; 16]> {
    let at = p.start + usize::from(p.flow.l3) + 24;
    p.frame.get(at..at + 16)?.try_into().ok()
}

/// Whether an IPv6 packet's destination translates to an IPv4 address that
/// an EAM maps back to IPv6 (RFC 7757 §4: hairpinning).
fn hairpinned(p: &FrameMut<'_>, map: &Mapper<'_>, eam: &EamTable) -> bool {
    ipv6_dst(p).and_then(|d| map.v6_to_v4(&d)).is_some_and(|d4| eam.v4_to_v6(d4).is_some())
}

fn fail(p: &mut FrameMut<'_>, c: Cause, stats: &WorkerStats) {
    stats.cause(c);
    p.meta.verdict = Verdict::Drop(c.reason());
}

/// A packet the translator refused: answered with the ICMP error RFC 7915
/// asks for ([`build_refusal`]), else dropped. Either way it is counted
/// under its rule.
fn refuse(p: &mut FrameMut<'_>, answers: &Answers, d: Drop, stats: &WorkerStats) -> Result<(), Cause> {
    if !answered(d) {
        return Err(d.into());
    }
    stats.cause(d.into());
    let build = |b: &mut [u8], s, l, r: &RouterAddrs| build_refusal(b, s, l, r, d).unwrap_or(Err(d));
    bounce(p, answers, &build)
}
