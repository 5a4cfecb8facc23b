//! `siit`: stateless IPv4/IPv6 translation (RFC 7915) of every packet of
//! the pipeline, by prefix and explicit address mappings.

use super::detail::{Cause, Malformed, Untranslatable};
use super::flow::{Family, FlowKind};
use super::rewrite::fragments::split_into_fragments;
use super::rewrite::xlat::{bounce, decrement_hop, router, set, EgressMtu, ROUTER_V4};
use super::{Batch, Ctx, DropReason, Stage, Verdict};
use crate::nat46::fragment::fragmentation_4to6;
use crate::nat46::{
    build_time_exceeded, build_too_big, translate_4to6, translate_6to4, Config as XlatConfig, Drop, Mapper,
    UdpZeroChecksum,
};
use crate::wire::addr::{mapped, v4_of};
use crate::wire::parse::{parse, IpVersion};

/// The packet's bytes as they are now (after the TTL decrement).
fn pkt_after_hop<'a>(p: &'a super::FrameMut<'_>, len: usize) -> &'a [u8] {
    p.frame.get(p.start..p.start + len).unwrap_or(&[])
}

/// Stateless SIIT: every packet of the pipeline is translated by prefix and
/// explicit mappings, IPv4 → IPv6 towards `egress`, IPv6 → IPv4 back.
pub struct SiitStage {
    mtus: EgressMtu,
}

impl SiitStage {
    pub fn new(mtus: EgressMtu) -> SiitStage {
        SiitStage { mtus }
    }
}

impl Stage for SiitStage {
    fn name(&self) -> &'static str {
        "siit"
    }

    fn process(&mut self, batch: &mut Batch, pipeline: u8, ctx: &mut Ctx) {
        let router = router(ctx);
        let stats = &*ctx.stats;
        let Some(siit) = ctx.services.xlat.siit.as_ref() else {
            batch.for_each(pipeline, |p| {
                stats.cause(Cause::Untranslatable(Untranslatable::NoMapping));
                p.meta.verdict = Verdict::Drop(DropReason::Untranslatable);
            });
            return;
        };
        let map = Mapper { eam: Some(&siit.eam), prefix: siit.prefix };
        // IPv4 -> IPv6 leaves by the egress, IPv6 -> IPv4 by the return egress.
        let cfg = |mtu| XlatConfig {
            src: map,
            dst: map,
            mtu,
            udp_zero_checksum: UdpZeroChecksum::Compute,
            icmp_error_src4: Some(ROUTER_V4),
        };
        let (cfg46, cfg64) = (cfg(self.mtus.egress()), cfg(self.mtus.ret()));
        // DF=0 IPv4 larger than this leaves as IPv6 fragments (RFC 7915 §4);
        // translated whole first, so the MTU check is the split's.
        let frag_limit = siit.lowest_ipv6_mtu.min(self.mtus.egress());
        let cfg46_whole = XlatConfig { mtu: u16::MAX, ..cfg46 };
        batch.for_each_frame_emit(pipeline, |mut p, emit| {
            let len = p.meta.len as usize;
            let Some(pkt) = p.frame.get(p.start..p.start + len) else { return };
            let parsed = match parse(pkt) {
                Ok(Some(pp)) => pp,
                bad => {
                    let m = match bad {
                        Err(e) => Malformed::Wire(e),
                        _ => Malformed::NotIp,
                    };
                    stats.cause(Cause::Malformed(m));
                    p.meta.verdict = Verdict::Drop(DropReason::Malformed);
                    return;
                }
            };
            let v6 = parsed.version == IpVersion::V6;
            let family = if v6 { Family::V6 } else { Family::V4 };
            p.flow.l3 = parsed.l3_offset as u16;
            let result = match decrement_hop(&mut p, family) {
                None => Err(Cause::INCONSISTENT),
                Some(false) => {
                    let r = build_time_exceeded(p.frame, p.start, len, &router);
                    bounce(&mut p, r)
                }
                Some(true) => {
                    let split_id =
                        if v6 { None } else { fragmentation_4to6(pkt_after_hop(&p, len), frag_limit) };
                    let r = if v6 {
                        translate_6to4(p.frame, p.start, len, &cfg64)
                    } else if split_id.is_some() {
                        translate_4to6(p.frame, p.start, len, &cfg46_whole)
                    } else {
                        translate_4to6(p.frame, p.start, len, &cfg46)
                    };
                    match r {
                        Ok(out) => {
                            set(&mut p, out);
                            p.flow.kind = if v6 { FlowKind::Reply } else { FlowKind::Original };
                            // The L2 stage looks the next hop up by destination.
                            p.flow.nat.dst = if v6 {
                                map.v6_to_v4(&parsed.tuple.dst).map_or([0; 16], mapped)
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
                        Err(Drop::TooBig { mtu }) => {
                            let r = build_too_big(p.frame, p.start, len, &router, mtu);
                            bounce(&mut p, r)
                        }
                        Err(d) => Err(d.into()),
                    }
                }
            };
            if let Err(c) = result {
                stats.cause(c);
                p.meta.verdict = Verdict::Drop(c.reason());
            }
        });
    }
}
