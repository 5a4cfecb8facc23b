//! The load balancer's flow stages.
//!
//! `conntrack`: parse, look the whole batch up (prefetching every bucket
//! first, VPP style), track TCP/UDP state. `maglev`: for flows conntrack
//! has not seen, pick a backend, allocate an SNAT port, and create the two
//! entries (original and reply direction) that later packets hit.

use super::conntrack::{ConnState, ConnTable, Direction, Entry, FlowValue, TcpFlags, Tick};
use super::detail::{ipv4_options, martian_source, Cause, Martian, Untranslatable};
use super::flow::{
    proto, BackendId, EntryFlags, Family, FlowKey, FlowKind, FlowMeta, NatBinding, ServiceId, Xlat,
};
use super::maglev::client_hash;
use super::refusal;
use super::rewrite::{self, related};
use super::services::Services;
use super::snat::{self, Client, PickHash};
use super::stats::{parse_or_drop, WorkerStats};
use super::{frag, Batch, Ctx, DropReason, PacketMeta, Stage, Verdict};
use crate::config::MAX_BATCH;
use crate::wire::addr::{is_v4_mapped, mapped, v4_of};
use crate::wire::ethernet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::parse::{parse_simple_as, parse_simple_chain, FragKind, IpVersion, Simple};

/// Seconds between refreshes of a flow's other entry by steady traffic.
const PEER_REFRESH_SECS: i32 = 5;

/// Ingress port of frames another worker handed over: the source worker
/// already checked where they came from.
pub const INGRESS_HANDED: u8 = u8::MAX;

/// Parse + lookup + state tracking, and the checks of where a packet may
/// come from (martians, foreign MACs, replies from the wrong side).
#[derive(Default)]
pub struct ConntrackStage {
    /// Every worker port's MAC, by port index (empty: no MAC check), as
    /// [`mac_word`]s.
    port_macs: Vec<u64>,
    /// The port the pipeline's backends sit behind (its `l2` egress):
    /// the only one replies may arrive on.
    backend_port: Option<u8>,
}

impl ConntrackStage {
    pub fn new(port_macs: Vec<[u8; 6]>, backend_port: Option<u8>) -> ConntrackStage {
        let port_macs = port_macs.iter().map(mac_word).collect();
        ConntrackStage { port_macs, backend_port }
    }
}

/// A MAC address as the low 48 bits of a word, in memory order: compared
/// in one instruction.
fn mac_word(mac: &[u8; 6]) -> u64 {
    let [a, b, c, d, e, f] = *mac;
    u64::from_le_bytes([a, b, c, d, e, f, 0, 0])
}

/// Whether two MACs differ, compared as their first four bytes and then
/// their last two: each compare takes one load and one operand from
/// memory, where six bytes merged into a word take two loads, a shift and
/// an or on each side.
#[inline(always)]
fn macs_differ(a: &[u8; 6], b: &[u8; 6]) -> bool {
    let ([a0, a1, a2, a3, a4, a5], [b0, b1, b2, b3, b4, b5]) = (*a, *b);
    u32::from_ne_bytes([a0, a1, a2, a3]) != u32::from_ne_bytes([b0, b1, b2, b3])
        || u16::from_ne_bytes([a4, a5]) != u16::from_ne_bytes([b4, b5])
}

/// The frame's destination MAC as a [`mac_word`]: eight bytes read, six
/// kept (one load, where six bytes take two and a merge).
#[inline(always)]
fn destination_mac(eth: &[u8; 14]) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = *eth;
    u64::from_le_bytes([a, b, c, d, e, f, g, h]) & 0xFFFF_FFFF_FFFF
}

/// How many packets ahead of its lookup a packet's entry is prefetched.
const ENTRY_AHEAD: usize = 16;

fn martian(ctx: &Ctx, m: Martian) -> Verdict {
    ctx.stats.cause(Cause::Martian(m));
    Verdict::Drop(DropReason::Martian)
}

impl Stage for ConntrackStage {
    fn process(&mut self, batch: &mut Batch, pipeline: u8, ctx: &mut Ctx) {
        // Pass 1: parse and hash; prefetch each bucket as soon as its hash is
        // known. The common shape takes a short parser; the rest the full one.
        let port_macs = &self.port_macs;
        batch.for_each(pipeline, |p| {
            let f = &mut *p.flow;
            f.xlat = Xlat::None;
            f.next_hop = [0; 6];
            f.related = false;
            f.frag = FragKind::Whole;
            // Shorter than an Ethernet header: the general parser's (malformed).
            'ethernet: {
                let Some(eth) = p.data.first_chunk::<14>() else { break 'ethernet };
                // A unicast frame for another host reached us (a switch flooding,
                // or someone aiming at the VIP through us): not ours to forward.
                if let Some(&mac) = port_macs.get(usize::from(p.meta.ingress)) {
                    if destination_mac(eth) != mac {
                        p.meta.verdict = martian(ctx, Martian::ForeignMac);
                        return;
                    }
                }
                f.src_mac.copy_from_slice(&eth[6..12]);
                // The common shape finishes in its own branch: merged with the
                // general parser's answer, its key would go through the stack.
                // Each family has its own copy of the parse and the hash.
                if p.more == 0 {
                    let simple = |s: Simple| {
                        f.family = if s.v6 { Family::V6 } else { Family::V4 };
                        f.l3 = s.l3_offset as u16;
                        f.l4 = s.l4_offset as u16;
                        f.tcp_flags = s.tcp_flags;
                        f.icmp_type = 0;
                        place_key(ctx, f, s.tuple);
                    };
                    let done = match u16::from_be_bytes([eth[12], eth[13]]) {
                        ETHERTYPE_IPV4 => parse_simple_as(p.data, ETHERTYPE_IPV4).map(simple),
                        ETHERTYPE_IPV6 => parse_simple_as(p.data, ETHERTYPE_IPV6).map(simple),
                        _ => None,
                    };
                    if done.is_some() {
                        return;
                    }
                }
            }
            if let Some(key) = parse_general(ctx, p.data, p.more, p.meta, f) {
                place_key(ctx, f, key);
            }
        });
        // Pass 2: the first buckets' tag lines are (being) cached; prefetch
        // the first packets' matching entries (or, for no match, the second
        // buckets' tags). Pass 3 prefetches the rest, `ENTRY_AHEAD` packets
        // before it looks them up, so a later packet's tag line has had
        // most of the batch's time to arrive before it is read.
        let n = batch.len().min(MAX_BATCH as usize);
        for i in 0..n.min(ENTRY_AHEAD) {
            if batch.pkts[i].active(pipeline) {
                ctx.conntrack.prefetch_entry_at(batch.flows[i].place);
            }
        }
        // Pass 3: look up and track; count the packets that open a flow
        // (the maglev stage's work).
        let now = ctx.now;
        let mut opening = 0;
        let mut last_dst = LastDestination::default();
        for i in 0..n {
            let ahead = i + ENTRY_AHEAD;
            if ahead < n && batch.pkts[ahead].active(pipeline) {
                ctx.conntrack.prefetch_entry_at(batch.flows[ahead].place);
            }
            let m = &mut batch.pkts[i];
            if !m.active(pipeline) {
                continue;
            }
            let f = &mut batch.flows[i];
            // Asked only of replies and misses: a hit on an original-direction
            // entry never needs it.
            let (backend_port, ingress) = (self.backend_port, m.ingress);
            let from_backends = move || match (backend_port, ingress) {
                (_, INGRESS_HANDED) | (None, _) => true,
                (Some(port), ingress) => port == ingress,
            };
            // Anything for an SNAT address is a reply: it must come from
            // the backend side (checked before it is handed to another
            // worker; with one worker, a hit on its reply entry finds the
            // wrong side in `track`, and a miss is checked below).
            if ctx.workers > 1 {
                let to_pool = ctx.services.in_pool(&f.key.dst);
                if to_pool && !from_backends() {
                    m.verdict = Verdict::Drop(DropReason::WrongSide);
                    continue;
                }
                // Replies to an SNAT port live in the table of the worker
                // that owns the port; elsewhere they can only miss. So do
                // hairpinned packets to a pool address under the NAT64
                // prefix: the pool port's owner holds its binding.
                if to_pool || nat64_hairpin(ctx, f) {
                    let owner = snat::owner(f.key.dport, ctx.workers);
                    if owner != ctx.worker {
                        m.verdict = Verdict::Handoff(owner as u8);
                        continue;
                    }
                }
            }
            match track(&mut ctx.conntrack, f, now, &ctx.services, &ctx.stats, from_backends) {
                Tracked::WrongSide => {
                    m.verdict = Verdict::Drop(DropReason::WrongSide);
                    continue;
                }
                Tracked::Hit => {
                    ctx.stats.packet(f.service, f.backend, m.len() + batch.more[i]);
                    continue;
                }
                // Its backend's flows are expired: schedule it afresh.
                Tracked::Expired(reply) => retire(ctx, &reply),
                Tracked::Miss => {}
            }
            let (to_pool, service) = last_dst.of(&ctx.services, &f.key);
            if !from_backends() && ctx.workers <= 1 && to_pool {
                m.verdict = Verdict::Drop(DropReason::WrongSide);
                continue;
            }
            if f.frag == FragKind::Later {
                // A later fragment never opens a flow: its first one did, or
                // was refused, or opens it now, earlier in this batch.
                let key = f.key;
                let (metas, flows) = (&batch.pkts[..i], &batch.flows[..i]);
                let opened_here = metas.iter().zip(flows).any(|(mj, fj)| {
                    mj.pipeline == pipeline
                        && mj.verdict == Verdict::Continue
                        && fj.frag == FragKind::First
                        && matches!(fj.kind, FlowKind::New(_) | FlowKind::New64)
                        && fj.key == key
                });
                if opened_here {
                    batch.flows[i].kind = FlowKind::LaterOfNew;
                    opening += 1;
                } else if let Some(w) = nat64_creates(ctx, &batch.flows[i])
                    .then(|| client_worker(ctx, &batch.flows[i].key.src))
                    .flatten()
                {
                    // Its session is with the client's owner, where the
                    // first fragment was handed.
                    batch.pkts[i].verdict = Verdict::Handoff(w);
                } else {
                    batch.pkts[i].verdict = Verdict::Drop(DropReason::NoFlow);
                }
                continue;
            }
            if f.related {
                // An error about no flow of ours: nothing to send it to,
                // unless the session may live on another worker.
                m.verdict = match next_session_worker(ctx, f) {
                    Some(w) => Verdict::Handoff(w),
                    None => Verdict::Drop(DropReason::NoFlow),
                };
                continue;
            }
            // A new flow: its source must be a possible one (RFC 1812
            // §5.3.7), and not an address of ours.
            let bad_source = martian_source(&f.key.src)
                .or_else(|| ctx.services.owns(&f.key.src).then_some(Martian::SrcOwn));
            if let Some(why) = bad_source {
                m.verdict = martian(ctx, why);
                continue;
            }
            match service {
                Some(s) => f.kind = FlowKind::New(s),
                None if nat64_hairpin(ctx, f) => {
                    if hairpin_peer(ctx, f).is_some() {
                        f.kind = FlowKind::New64;
                    } else {
                        ctx.stats.cause(Cause::Untranslatable(Untranslatable::Hairpin));
                        m.verdict = Verdict::Drop(DropReason::Untranslatable);
                    }
                }
                None if nat64_creates(ctx, f) => match client_worker(ctx, &f.key.src) {
                    Some(w) => m.verdict = Verdict::Handoff(w),
                    None => f.kind = FlowKind::New64,
                },
                None => m.verdict = Verdict::Drop(DropReason::NoFlow),
            }
            opening += usize::from(matches!(f.kind, FlowKind::New(_) | FlowKind::New64));
        }
        batch.opening = opening;
    }
}

/// What the last packet that missed was sent to, and what that
/// destination is: a batch's new flows mostly go to one VIP and port, so
/// most misses ask the SNAT pools and the VIP map nothing (about 50
/// instructions a new flow, callgrind).
#[derive(Default)]
struct LastDestination {
    asked: Option<([u8; 16], u8, u16)>,
    to_pool: bool,
    service: Option<u16>,
}

impl LastDestination {
    /// Whether `k`'s destination is in an SNAT pool, and the service at
    /// its address, protocol and port.
    #[inline]
    fn of(&mut self, services: &Services, k: &FlowKey) -> (bool, Option<u16>) {
        if self.asked != Some((k.dst, k.proto, k.dport)) {
            self.ask(services, k);
        }
        (self.to_pool, self.service)
    }

    /// Out of line: the loop keeps its registers for the hit path.
    #[inline(never)]
    fn ask(&mut self, services: &Services, k: &FlowKey) {
        self.asked = Some((k.dst, k.proto, k.dport));
        self.to_pool = services.in_pool(&k.dst);
        self.service = services.service_for(&k.dst, k.proto, k.dport);
    }
}

/// Hashes a parsed packet's key and prefetches its bucket, then stores
/// all three. Hashed before it is stored: reading the key back from `f`
/// would stall on store forwarding (narrow stores, wide loads).
#[inline(always)]
fn place_key(ctx: &Ctx, f: &mut FlowMeta, key: FlowKey) {
    let hash = key.hash();
    let place = ctx.conntrack.place(hash);
    ctx.conntrack.prefetch_at(place);
    f.key = key;
    f.hash = hash;
    f.place = place;
}

/// Pass 1 for what `parse_simple` does not take: frames of several
/// buffers, IP options, extension headers, fragments, ICMP, malformed
/// packets. Fills `f` and returns the key to look up, or sets the
/// packet's verdict and returns None. Out of line: the hot loop stays
/// small.
#[inline(never)]
fn parse_general(
    ctx: &mut Ctx,
    data: &[u8],
    more: u32,
    meta: &mut PacketMeta,
    f: &mut FlowMeta,
) -> Option<FlowKey> {
    if more > 0 {
        let Some(s) = parse_simple_chain(data, more) else {
            meta.verdict = Verdict::Drop(DropReason::ChainUnsupported);
            return None;
        };
        f.family = if s.v6 { Family::V6 } else { Family::V4 };
        f.l3 = s.l3_offset as u16;
        f.l4 = s.l4_offset as u16;
        f.tcp_flags = s.tcp_flags;
        f.icmp_type = 0;
        return Some(s.tuple);
    }
    let pp = parse_or_drop(data, &ctx.stats, &mut meta.verdict)?;
    if pp.version == IpVersion::V4 && pp.l4_offset > pp.l3_offset + 20 {
        let opts = data.get(pp.l3_offset + 20..pp.l4_offset).unwrap_or_default();
        if let Err(m) = ipv4_options(opts) {
            meta.verdict = martian(ctx, m);
            return None;
        }
    }
    f.family = if pp.version == IpVersion::V6 { Family::V6 } else { Family::V4 };
    f.l3 = pp.l3_offset as u16;
    f.l4 = pp.l4_offset as u16;
    f.tcp_flags = pp.tcp_flags;
    f.icmp_type = pp.icmp_type;
    if pp.frag != FragKind::Whole {
        // Ports come from the datagram's first fragment.
        f.frag = pp.frag;
        let mut key = pp.tuple;
        if let Err(v) = frag::resolve(ctx, data, &pp, meta.ingress, &mut key) {
            meta.verdict = v;
            return None;
        }
        return Some(key);
    }
    // An ICMP error is looked up as the flow it quotes.
    let quoted = related::is_error(pp.tuple.proto, pp.icmp_type)
        .then(|| related::quoted_key(data, pp.l4_offset, f.family))
        .flatten();
    f.related = quoted.is_some();
    Some(quoted.unwrap_or(pp.tuple))
}

/// Where to look next for the NAT64 session an ICMPv6 error is about,
/// when it is not in this worker's table.
///
/// A session lives on the worker that created it (where RSS put the
/// client's first packet), and its pool port comes from that worker's
/// share, so an ICMPv4 error, quoting the pool address and port, is handed
/// straight to its owner like any reply. An ICMPv6 error from the IPv6
/// side quotes the translated reply (prefix + server → client), which
/// carries no pool port: nothing in it names the owner. Such an error is
/// passed round the workers in order, each looking it up in its own
/// table, until one has the session; the worker it arrived on drops it
/// when it comes back unclaimed (`dataplane::worker::collect_returns`).
/// Errors are rare, so ordinary traffic pays nothing for this.
//= https://www.rfc-editor.org/rfc/rfc6146#section-3.4
// (paraphrase) An incoming ICMPv6 error is matched to its session by the
// packet it carries and translated with that session's state.
fn next_session_worker(ctx: &Ctx, f: &FlowMeta) -> Option<u8> {
    let n = ctx.services.xlat.nat64.as_ref()?;
    if ctx.workers <= 1 || !f.family.is_v6() || !n.contains(&f.key.dst) {
        return None;
    }
    u8::try_from((ctx.worker + 1) % ctx.workers).ok()
}

/// Whether an IPv6 packet to the NAT64 prefix is addressed to one of our
/// own pool addresses: to another client's session, in IPv4 terms
/// (RFC 6146 §3.8 hairpinning).
fn nat64_hairpin(ctx: &Ctx, f: &FlowMeta) -> bool {
    let Some(n) = &ctx.services.xlat.nat64 else { return false };
    f.family.is_v6()
        && n.contains(&f.key.dst)
        && n.prefix.extract(&f.key.dst).is_some_and(|a| ctx.services.in_pool(&mapped(a)))
}

/// The client a hairpinned packet is for: the one bound to the pool
/// (address, port) it is addressed to, over the same protocol, when that
/// is not its own sender (TCP and UDP; an echo request to a pool address
/// has no binding to reach).
fn hairpin_peer(ctx: &Ctx, f: &FlowMeta) -> Option<Client> {
    let n = ctx.services.xlat.nat64.as_ref()?;
    let to = mapped(n.prefix.extract(&f.key.dst)?);
    let peer = ctx.snat.get(usize::from(n.pool))?.bound(&to, f.key.dport)?;
    let sender = Client { addr: f.key.src, port: f.key.sport, proto: f.key.proto };
    (matches!(f.key.proto, proto::TCP | proto::UDP) && peer.proto == f.key.proto && peer != sender)
        .then_some(peer)
}

/// The worker that owns a NAT64 client's sessions, when it is not this
/// one: the one a hash of the client's IPv6 address picks.
///
/// Endpoint-independent mapping binds a client's (address, port, protocol)
/// to one pool pair for all its sessions, and that binding lives in one
/// worker's table: every session of the client must be created there,
/// whichever worker RSS gave its first packet to. A packet of a session
/// that RSS put elsewhere misses there and comes here the same way.
/// Replies from the IPv4 side need no steering: the pool port names the
/// owner ([`snat::owner`]), which allocated it from its share.
fn client_worker(ctx: &Ctx, client: &[u8; 16]) -> Option<u8> {
    if ctx.workers <= 1 {
        return None;
    }
    let w = (client_hash(client) % u64::from(ctx.workers)) as u16;
    (w != ctx.worker).then_some(w as u8)
}

/// Whether a packet that matched no flow opens a NAT64 session: an IPv6
/// TCP/UDP packet or echo request to the NAT64 prefix (RFC 6146 §3.5).
fn nat64_creates(ctx: &Ctx, f: &FlowMeta) -> bool {
    let Some(n) = &ctx.services.xlat.nat64 else { return false };
    f.family.is_v6()
        && n.contains(&f.key.dst)
        && matches!((f.key.proto, f.icmp_type), (proto::TCP | proto::UDP, _) | (proto::ICMPV6, 128))
}

/// What [`track`] found.
enum Tracked {
    Hit,
    /// A reply-direction packet from elsewhere than its backend's side
    /// (another port, or another MAC than the backend's next hop).
    WrongSide,
    Miss,
    /// A flow of a backend whose flows are expired: both entries were
    /// removed (the reply-direction one is returned for [`retire`]).
    Expired(Entry),
}

/// Finds the packet's entry; on a hit fills `f` (kind, NAT, service),
/// refreshes the entry and advances its state.
/// An ICMP error about the flow (`f.related`) only reads the entry: it says
/// nothing about the flow's state (Linux conntrack's RELATED).
#[inline(always)]
fn track(
    ct: &mut ConnTable,
    f: &mut FlowMeta,
    now: Tick,
    services: &Services,
    stats: &WorkerStats,
    from_backends: impl Fn() -> bool,
) -> Tracked {
    let hop_tag = services.generation as u16;
    let Some(e) = ct.lookup_at(&f.key, f.place, now) else { return Tracked::Miss };
    let reply = e.flags.contains(EntryFlags::REPLY);
    // A reply entry caches its backend's next-hop MAC: replies come from it.
    // A hairpinned session's replies come from its other IPv6 client. The
    // MAC is compared first: it matches on nearly every reply.
    let hairpin = e.flags.contains(EntryFlags::HAIRPIN);
    if reply
        && ((!hairpin && !from_backends())
            || (macs_differ(&e.next_hop, &f.src_mac) && e.hop_tag == hop_tag && e.next_hop != [0; 6]))
    {
        return Tracked::WrongSide;
    }
    // NAT64 sessions belong to no service and have no backend to expire.
    if e.service.is_some() && services.is_expired(e.backend) {
        let dead = *e;
        ct.remove(&f.key, f.hash);
        let peer = f.key.peer(&dead.nat, dead.flags);
        let peer_entry = ct.remove(&peer, peer.hash());
        return match (dead.flags.contains(EntryFlags::REPLY), peer_entry) {
            (true, _) => Tracked::Expired(dead),
            (false, Some(r)) => Tracked::Expired(r),
            (false, None) => Tracked::Miss,
        };
    }
    f.kind = if reply { FlowKind::Reply } else { FlowKind::Original };
    f.nat = e.nat;
    f.sums = e.sums;
    f.service = e.service;
    f.backend = e.backend;
    f.xlat = e.flags.xlat();
    // A MAC cached under an older config generation is looked up afresh
    // (a branch, not a select of six bytes: the tag is rarely stale).
    f.next_hop = e.next_hop;
    if e.hop_tag != hop_tag {
        f.next_hop = [0; 6];
    }
    if f.related {
        return Tracked::Hit;
    }
    if f.frag == FragKind::Later {
        // No L4 header: nothing for the state machine, but the flow is alive.
        e.touch(now);
        return Tracked::Hit;
    }
    // Every few seconds the other direction's entry is refreshed too, so a
    // one-way stream or a quiet direction never lets half of a live flow
    // expire (every timeout but CLOSE's 10 s, a dying state, is longer).
    let peer_due = now.wrapping_sub(e.peer_touched) as i32 >= PEER_REFRESH_SECS;
    if peer_due {
        e.peer_touched = now;
    }
    e.touch(now);
    let entry_flags = e.flags;
    let dir = if reply { Direction::Reply } else { Direction::Original };
    let before = e.state;
    // The first reply is news for the other entry too (it makes the flow
    // assured once its handshake is done: safe from early drop).
    let first_reply = reply && !e.replied();
    if first_reply {
        e.mark_replied();
    }
    let replied = e.replied();
    let state = match f.key.proto {
        // DSR: the backend's SYN-ACK never passes here, so the client's
        // first ACK is what establishes the flow (then FIN/RST end it).
        proto::TCP if entry_flags.contains(EntryFlags::DSR) && e.state == ConnState::TcpSynSent => {
            let handshake = TcpFlags::SYN | TcpFlags::ACK | TcpFlags::RST;
            if f.tcp_flags & handshake == TcpFlags::ACK {
                e.state = ConnState::TcpEstablished;
            }
            e.on_tcp(dir, TcpFlags(f.tcp_flags))
        }
        proto::TCP => e.on_tcp(dir, TcpFlags(f.tcp_flags)),
        proto::UDP => e.on_udp(dir),
        _ => e.state,
    };
    // Both entries carry the flow's state: any transition is copied over.
    if state != before || peer_due || first_reply {
        let peer = f.key.peer(&f.nat, entry_flags);
        if let Some(p) = ct.lookup(&peer, peer.hash(), now) {
            p.touch(now);
            p.state = state;
            if replied {
                p.mark_replied();
            }
        }
        let delta = i64::from(is_closing(state)) - i64::from(is_closing(before));
        if delta != 0 {
            stats.flow_closing(f.service, f.backend, delta);
        }
    }
    Tracked::Hit
}

/// TCP states after a FIN or RST: ipvsadm's inactive connections.
#[inline]
pub(crate) fn is_closing(s: ConnState) -> bool {
    matches!(
        s,
        ConnState::TcpFinWait
            | ConnState::TcpCloseWait
            | ConnState::TcpLastAck
            | ConnState::TcpTimeWait
            | ConnState::TcpClose
    )
}

/// Backend selection and flow creation for new flows.
#[derive(Default)]
pub struct MaglevStage;

impl Stage for MaglevStage {
    fn process(&mut self, batch: &mut Batch, pipeline: u8, ctx: &mut Ctx) {
        if batch.opening == 0 {
            return; // every packet hit its flow, or was dropped
        }
        // Pass 1: find the new flows, and prefetch what creating each reads
        // or writes at random: its Maglev slot, its SNAT pick, its entry.
        let mut new = [0u8; MAX_BATCH as usize];
        let mut slot = [0u32; MAX_BATCH as usize];
        let mut pick = [PickHash::default(); MAX_BATCH as usize];
        let mut count = 0;
        let mut later_of_new = false;
        let mut picks = 0;
        for i in 0..batch.len().min(MAX_BATCH as usize) {
            let f = &batch.flows[i];
            if !batch.pkts[i].active(pipeline) {
                continue;
            }
            match f.kind {
                FlowKind::New(s) => {
                    if let Some(svc) = ctx.services.list.get(usize::from(s)) {
                        let at = svc.maglev.slot(if svc.affinity { client_hash(&f.key.src) } else { f.hash });
                        svc.maglev.prefetch(at);
                        slot[count] = at as u32;
                        let pool = svc.snat_pool.filter(|_| !svc.dsr);
                        if let Some(p) = pool.and_then(|p| ctx.snat.get(usize::from(p))) {
                            // The batch's earlier new flows take theirs first.
                            pick[count] = p.pick_hash(f.hash);
                            p.prefetch_pick(pick[count], picks);
                            picks += 1;
                        }
                    }
                    ctx.conntrack.prefetch_insert_at(f.place);
                }
                FlowKind::New64 => {}
                kind => {
                    later_of_new |= kind == FlowKind::LaterOfNew;
                    continue;
                }
            }
            new[count] = i as u8;
            count += 1;
        }
        // Pass 2: create them.
        let mut refused = false;
        let mut opened = OpenedHere::default();
        for ((&i, &slot), &pick) in new[..count].iter().zip(&slot).zip(&pick) {
            let i = usize::from(i);
            let (m, f) = (&mut batch.pkts[i], &mut batch.flows[i]);
            // A flow an earlier packet of this batch opened (a burst of a
            // new UDP flow, a retransmitted SYN) is this one's as well, as
            // if it had come a batch later: never a second binding.
            if opened.may_hold(f.hash) && join_opened(ctx, m, f, batch.more[i]) {
                continue;
            }
            let first_syn =
                f.key.proto == proto::TCP && f.tcp_flags & (TcpFlags::SYN | TcpFlags::ACK) == TcpFlags::SYN;
            if first_syn && !ctx.limiter.syn_verified(f.hash, ctx.now) {
                m.verdict = Verdict::Drop(DropReason::SynUnverified);
                continue;
            }
            if ctx.limiter.admit(&f.key.src, ctx.now).is_err() {
                m.verdict = Verdict::Drop(DropReason::RateLimited);
                continue;
            }
            let created = match f.kind {
                FlowKind::New(s) => create_flow(ctx, f, s, slot as usize, pick),
                FlowKind::New64 => create_nat64(ctx, f),
                _ => continue,
            };
            match created {
                Ok(()) => {
                    opened.add(f.hash);
                    ctx.stats.flow_started_by(f.service, f.backend, m.len() + batch.more[i]);
                }
                Err(DropReason::SnatExhausted) => {
                    // Answered below (the answer may need the whole frame);
                    // a retransmission of a refused flow is answered again
                    // but not counted again.
                    let first = ctx.refusals.first(f.hash, ctx.now);
                    f.kind = if first { FlowKind::Refused } else { FlowKind::Bounce };
                    refused = true;
                }
                Err(reason) => {
                    if reason == DropReason::Untranslatable {
                        // Both of flow creation's: no prefix to map into.
                        ctx.stats.cause(Cause::Untranslatable(Untranslatable::NoMapping));
                    }
                    m.verdict = Verdict::Drop(reason);
                }
            }
        }
        // Later fragments of the flows just created (their first fragment
        // came earlier in this batch) find them now.
        if later_of_new {
            for i in 0..batch.len().min(MAX_BATCH as usize) {
                let m = &mut batch.pkts[i];
                let f = &mut batch.flows[i];
                if !m.active(pipeline) || f.kind != FlowKind::LaterOfNew {
                    continue;
                }
                match track(&mut ctx.conntrack, f, ctx.now, &ctx.services, &ctx.stats, || false) {
                    Tracked::Hit => ctx.stats.packet(f.service, f.backend, m.len() + batch.more[i]),
                    _ => {
                        f.kind = FlowKind::Unknown;
                        m.verdict = Verdict::Drop(DropReason::NoFlow);
                    }
                }
            }
        }
        if refused {
            let nat64 = ctx.services.xlat.nat64.as_ref();
            // No answer is built that the error rate would drop (as `bounce`).
            let spent = ctx.errors.spent(ctx.now);
            batch.for_each_frame(pipeline, |mut p| {
                let refused = matches!(p.flow.kind, FlowKind::Refused | FlowKind::Bounce);
                if refused && spent {
                    p.meta.verdict = Verdict::Drop(DropReason::ErrorRateLimited);
                    return;
                }
                let to64 = nat64.is_some_and(|n| p.flow.family.is_v6() && n.contains(&p.flow.key.dst));
                if refused && !refusal::answer(&mut p, to64) {
                    p.flow.kind = FlowKind::Unknown;
                    p.meta.verdict = Verdict::Drop(DropReason::SnatExhausted);
                }
            });
        }
    }
}

/// The hashes of the flows a batch has opened so far, as a 1024-bit
/// filter: a packet whose bit is clear cannot be of one of them, and opens
/// its flow without a second lookup.
#[derive(Default)]
struct OpenedHere([u64; 16]);

impl OpenedHere {
    /// Word and bit of `hash`: its top 10 bits (the table places by the
    /// low bits and tags by the middle ones).
    fn bit(hash: u64) -> (usize, u64) {
        let b = (hash >> 54) as usize;
        (b >> 6, 1 << (b & 63))
    }

    fn may_hold(&self, hash: u64) -> bool {
        let (w, bit) = Self::bit(hash);
        self.0[w] & bit != 0
    }

    fn add(&mut self, hash: u64) {
        let (w, bit) = Self::bit(hash);
        self.0[w] |= bit;
    }
}

/// Tracks a new flow's packet on the entry an earlier packet of its batch
/// may have opened: true when it did (the packet is done), false when the
/// packet opens its flow itself. Out of line: the filter rarely says maybe.
#[cold]
#[inline(never)]
fn join_opened(ctx: &mut Ctx, m: &mut PacketMeta, f: &mut FlowMeta, more: u32) -> bool {
    match track(&mut ctx.conntrack, f, ctx.now, &ctx.services, &ctx.stats, || false) {
        Tracked::Hit => ctx.stats.packet(f.service, f.backend, m.len() + more),
        Tracked::WrongSide => m.verdict = Verdict::Drop(DropReason::WrongSide),
        Tracked::Expired(reply) => {
            retire(ctx, &reply);
            return false;
        }
        Tracked::Miss => return false,
    }
    true
}

/// Creates the flow of `f` to service `s`, on the backend in its Maglev
/// `slot` (the flow hash's, or with affinity the client address's), with
/// an SNAT pair (full NAT) at `pick`, the flow's hash in the pool.
fn create_flow(
    ctx: &mut Ctx,
    f: &mut FlowMeta,
    s: u16,
    slot: usize,
    pick: PickHash,
) -> Result<(), DropReason> {
    let svc = ctx.services.list.get(usize::from(s)).ok_or(DropReason::NoFlow)?;
    let b = svc.maglev.at(slot).ok_or(DropReason::NoBackend)?;
    let backend = svc.backends.get(usize::from(b)).ok_or(DropReason::NoBackend)?;
    let hop = backend.mac;
    let (sid, bid) = (ServiceId::new(svc.id), BackendId::new(backend.id));
    let k = &f.key;
    let b = if is_v4_mapped(&k.dst) && !is_v4_mapped(&backend.addr) {
        // NAT46 (IPv4 VIP, IPv6 backend): the client appears to the backend
        // as prefix + its IPv4 address, so its own address keeps flows apart.
        let prefix = ctx.services.xlat.nat46.ok_or(DropReason::Untranslatable)?;
        let orig = NatBinding {
            src: prefix.embed(v4_of(&k.src)),
            sport: k.sport,
            dst: backend.addr,
            dport: backend.port,
        };
        Binding { orig, flags: EntryFlags::TO6, reply_flags: EntryFlags::TO4, sid, bid, snat: None }
    } else if svc.dsr {
        // The packet leaves as it came, to the backend's MAC: the binding
        // is the identity, and the reply entry (never hit, replies go
        // straight to the client) only carries the flow's lifetime.
        let orig = NatBinding { src: k.src, sport: k.sport, dst: k.dst, dport: k.dport };
        let flags = EntryFlags::DSR;
        Binding { orig, flags, reply_flags: flags, sid, bid, snat: None }
    } else {
        match svc.snat_pool {
            // Full NAT: the flow's source is a pair from the pool.
            Some(pool) => {
                let p = ctx.snat.get_mut(usize::from(pool)).ok_or(DropReason::SnatExhausted)?;
                let (src, sport) = p.alloc_at(pick).ok_or(DropReason::SnatExhausted)?;
                let orig = NatBinding { src, sport, dst: backend.addr, dport: backend.port };
                let flags = EntryFlags::SNAT;
                Binding { orig, flags, reply_flags: flags, sid, bid, snat: Some(pool) }
            }
            None => {
                let orig = NatBinding { src: k.src, sport: k.sport, dst: backend.addr, dport: backend.port };
                let flags = EntryFlags::NONE;
                Binding { orig, flags, reply_flags: flags, sid, bid, snat: None }
            }
        }
    };
    install_via(ctx, f, b, hop)
}

//= https://www.rfc-editor.org/rfc/rfc6146#section-3.5.1
// (paraphrase) A packet from an IPv6 host to the NAT64 prefix with no
// session creates one: the client's BIB entry (X', x) <-> (T, t) is used,
// or created with a pair from the pool, and a session binds it to the
// IPv4 destination extracted from the IPv6 destination (RFC 6052).
fn create_nat64(ctx: &mut Ctx, f: &mut FlowMeta) -> Result<(), DropReason> {
    let n = ctx.services.xlat.nat64.as_ref().ok_or(DropReason::NoFlow)?;
    let server = n.prefix.extract(&f.key.dst).ok_or(DropReason::Untranslatable)?;
    let pool = n.pool;
    if ctx.services.in_pool(&mapped(server)) {
        let prefix = n.prefix;
        return create_hairpin(ctx, f, prefix, pool, mapped(server));
    }
    let p = ctx.snat.get_mut(usize::from(pool)).ok_or(DropReason::SnatExhausted)?;
    let k = f.key;
    let client = Client { addr: k.src, port: k.sport, proto: k.proto };
    let (addr, port) = p.alloc_bound(&client, f.hash).ok_or(DropReason::SnatExhausted)?;
    // ICMP echo: the identifier plays both ports' role (RFC 6146 §3.5.3).
    let dport = if k.proto == proto::ICMPV6 { port } else { k.dport };
    let orig = NatBinding { src: addr, sport: port, dst: mapped(server), dport };
    let flags = EntryFlags::SNAT | EntryFlags::ALT_TIMEOUTS;
    // A NAT64 session belongs to no service: its traffic is counted under none.
    let b = Binding {
        orig,
        flags: EntryFlags::TO4 | flags,
        reply_flags: EntryFlags::TO6 | flags,
        sid: None,
        bid: None,
        snat: Some(pool),
    };
    install(ctx, f, b)
}

//= https://www.rfc-editor.org/rfc/rfc6146#section-3.8
// (paraphrase) A packet from an IPv6 client whose destination, once
// translated, is one of the NAT64's own pool transport addresses is
// hairpinned: its source is translated with the sender's own binding, it is
// taken in as if it had arrived from the IPv4 side, and it reaches the
// client bound to that pool address and port, translated back to IPv6.
//
// Both halves make one session here, IPv6 to IPv6: (A, a) -> (P(T), t)
// is rewritten to (P(T'), a') -> (B, b), where (T', a') is A's binding and
// (T, t) is B's, and B's answers the other way. The session holds a
// reference to both bindings. It lives on the worker that owns t
// (`snat::owner`): A's binding there is its one binding when A's sessions
// are owned by that worker too (always, with one worker); otherwise a
// binding of A in that worker's share, used by its hairpinned sessions.
fn create_hairpin(
    ctx: &mut Ctx,
    f: &mut FlowMeta,
    prefix: crate::nat46::Prefix64,
    pool: u16,
    to: [u8; 16],
) -> Result<(), DropReason> {
    let k = f.key;
    let peer = hairpin_peer(ctx, f).ok_or(DropReason::NoFlow)?;
    let p = ctx.snat.get_mut(usize::from(pool)).ok_or(DropReason::SnatExhausted)?;
    let client = Client { addr: k.src, port: k.sport, proto: k.proto };
    let (addr, port) = p.alloc_bound(&client, f.hash).ok_or(DropReason::SnatExhausted)?;
    p.hold(&to, k.dport);
    let orig = NatBinding { src: prefix.embed(v4_of(&addr)), sport: port, dst: peer.addr, dport: peer.port };
    let flags = EntryFlags::SNAT | EntryFlags::ALT_TIMEOUTS | EntryFlags::HAIRPIN;
    // `orig`'s source is the pair embedded in the prefix: both pairs are
    // given back here, not by `install`, if the session cannot be made.
    let b = Binding { orig, flags, reply_flags: flags, sid: None, bid: None, snat: None };
    install(ctx, f, b).inspect_err(|_| {
        if let Some(p) = ctx.snat.get_mut(usize::from(pool)) {
            p.release(&addr, port);
            p.release(&to, k.dport);
        }
    })
}

/// The two pool pairs a hairpinned session holds, from its reply entry
/// (key (B, b) -> (P(T'), a'), binding (P(T), t) -> (A, a)): the
/// sender's (T', a') and the receiver's (T, t), with their clients.
pub fn hairpin_pairs(reply: &Entry, prefix: &crate::nat46::Prefix64) -> Option<[([u8; 16], u16, Client); 2]> {
    let k = reply.key();
    let sender = Client { addr: reply.nat.dst, port: reply.nat.dport, proto: k.proto };
    let receiver = Client { addr: k.src, port: k.sport, proto: k.proto };
    Some([
        (mapped(prefix.extract(&k.dst)?), k.dport, sender),
        (mapped(prefix.extract(&reply.nat.src)?), reply.nat.sport, receiver),
    ])
}

/// A new flow's two directions. The reply direction's rewrite is always
/// back to the packet as the client sent it, reversed ((VIP → client) for
/// a service's flow): [`install_via`] derives it from the key.
struct Binding {
    orig: NatBinding,
    flags: EntryFlags,
    reply_flags: EntryFlags,
    sid: Option<ServiceId>,
    bid: Option<BackendId>,
    /// The SNAT pool `orig`'s source (address, port) was taken from, given
    /// back if the flow cannot be installed.
    snat: Option<u16>,
}

/// Inserts both entries of a new flow and sets up `f` to be rewritten.
fn install(ctx: &mut Ctx, f: &mut FlowMeta, b: Binding) -> Result<(), DropReason> {
    let hop = ctx.services.next_hop(&b.orig.dst);
    install_via(ctx, f, b, hop)
}

/// [`install`], with the next hop's MAC given: a backend's, from the
/// snapshot's backend list (DSR too, where the packet's destination stays
/// the VIP). Inline in its two callers: passed to a call, the binding and
/// both entries' values go through memory (about 20 instructions a flow).
#[inline(always)]
fn install_via(ctx: &mut Ctx, f: &mut FlowMeta, b: Binding, hop: Option<[u8; 6]>) -> Result<(), DropReason> {
    let k = f.key;
    let now = ctx.now;
    let free_port = |ctx: &mut Ctx| {
        if let Some(pool) = b.snat.and_then(|p| ctx.snat.get_mut(usize::from(p))) {
            pool.release(&b.orig.src, b.orig.sport);
        }
    };
    // Cache the backend's MAC with the snapshot generation it came from.
    let hop_tag = ctx.services.generation as u16;
    let next_hop = hop.unwrap_or([0; 6]);
    // Both entries report their death: whichever dies first (expired, or
    // dropped early to make room) takes the other with it and frees the port.
    // The rewrite's checksum change; a translated flow's key is of the
    // family it is translated from.
    let sums = |key: &FlowKey, nat: &NatBinding, flags: EntryFlags| match flags.xlat() {
        Xlat::To6 => rewrite::nat::sums(key, nat, Family::V4, Family::V6),
        Xlat::To4 => rewrite::nat::sums(key, nat, Family::V6, Family::V4),
        Xlat::None | Xlat::Hairpin => rewrite::nat::sums(key, nat, f.family, f.family),
    };
    let value = FlowValue {
        backend: b.bid,
        service: b.sid,
        nat: b.orig,
        sums: sums(&k, &b.orig, b.flags),
        flags: b.flags | EntryFlags::NOTIFY_ON_DEATH,
        next_hop,
        hop_tag,
    };
    // The reply entry's place, fetched while the original one is written.
    let reply_key = k.peer(&b.orig, b.flags);
    let reply_at = ctx.conntrack.place(reply_key.hash());
    ctx.conntrack.prefetch_at(reply_at);
    // Replies are rewritten to the packet as the client sent it, reversed.
    let reply_nat = NatBinding { src: k.dst, sport: k.dport, dst: k.src, dport: k.sport };
    // Within one family that undoes the original rewrite: its change is
    // the original's, summed the other way.
    let reply_sums = if b.flags.xlat() == Xlat::None && b.reply_flags.xlat() == Xlat::None {
        value.sums.reversed()
    } else {
        sums(&reply_key, &reply_nat, b.reply_flags)
    };
    let state = match ctx.conntrack.insert_at(k, f.place, value, now) {
        Ok(e) => match k.proto {
            proto::TCP => e.on_tcp(Direction::Original, TcpFlags(f.tcp_flags)),
            proto::UDP => e.on_udp(Direction::Original),
            _ => e.state,
        },
        Err(_) => {
            free_port(ctx);
            return Err(DropReason::ConntrackFull);
        }
    };
    // When the reply entry dies the flow is over: its SNAT port is freed,
    // its original-direction entry removed, and its stats gauge lowered.
    let reply = FlowValue {
        backend: b.bid,
        service: b.sid,
        nat: reply_nat,
        sums: reply_sums,
        flags: EntryFlags::REPLY | b.reply_flags | EntryFlags::NOTIFY_ON_DEATH,
        next_hop,
        hop_tag,
    };
    match ctx.conntrack.insert_beside(reply_key, reply_at, reply, now, &k) {
        Ok(e) => e.state = state,
        Err(_) => {
            ctx.conntrack.remove(&k, f.hash);
            free_port(ctx);
            return Err(DropReason::ConntrackFull);
        }
    }
    f.kind = FlowKind::Original;
    f.nat = b.orig;
    f.sums = value.sums;
    f.service = b.sid;
    f.backend = b.bid;
    f.xlat = b.flags.xlat();
    f.next_hop = next_hop;
    Ok(())
}

/// Frees what dead flows held: SNAT ports, and the other entry of a flow
/// one of whose entries died. Run once per batch.
pub fn reap(ctx: &mut Ctx) {
    while let Some(dead) = ctx.conntrack.pop_dead() {
        let key = *dead.key();
        // Remove the other entry only if it is this flow's: a client may
        // have reused its address and port for a newer flow.
        let other = key.peer(&dead.nat, dead.flags);
        let hash = other.hash();
        let ours =
            ctx.conntrack.lookup(&other, hash, ctx.now).is_some_and(|e| e.key().peer(&e.nat, e.flags) == key);
        let removed = if ours { ctx.conntrack.remove(&other, hash) } else { None };
        if dead.flags.contains(EntryFlags::REPLY) {
            retire(ctx, &dead);
        } else if let Some(reply) = removed {
            // An original-direction entry died first: the flow ends with
            // its reply entry (which holds the SNAT port). If that one is
            // gone already, it was retired when it died.
            retire(ctx, &reply);
        }
    }
}

/// What a finished flow held, given back: its SNAT port and its place in
/// the stats gauges. `reply` is the flow's reply-direction entry.
fn retire(ctx: &mut Ctx, reply: &Entry) {
    let key = reply.key();
    if reply.flags.contains(EntryFlags::HAIRPIN) {
        let n = ctx.services.xlat.nat64.as_ref();
        let pairs = n.and_then(|n| Some((n.pool, hairpin_pairs(reply, &n.prefix)?)));
        if let Some((pool, pairs)) = pairs {
            if let Some(p) = ctx.snat.get_mut(usize::from(pool)) {
                for (a, port, _) in &pairs {
                    p.release(a, *port);
                }
            }
        }
    } else if reply.flags.contains(EntryFlags::SNAT) {
        // A reply entry's key is (backend → SNAT address, SNAT port).
        if let Some(pool) = ctx.snat.iter_mut().find(|p| p.contains(&key.dst)) {
            pool.release(&key.dst, key.dport);
        }
    }
    ctx.stats.flow_ended(reply.service, reply.backend, is_closing(reply.state));
}

#[cfg(test)]
mod tests {
    use super::macs_differ;
    use proptest::prelude::*;

    proptest! {
        /// Two MACs differ exactly when any one byte does, wherever it is.
        #[test]
        fn macs_differ_is_inequality(a in any::<[u8; 6]>(), i in 0usize..6, x in any::<u8>()) {
            let mut b = a;
            b[i] ^= x;
            prop_assert_eq!(macs_differ(&a, &b), x != 0);
            prop_assert!(!macs_differ(&a, &a));
        }
    }
}
