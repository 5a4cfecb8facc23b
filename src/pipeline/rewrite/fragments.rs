//! One translated packet out as several: the IPv6 fragments of an IPv4
//! packet without DF that is larger than `lowest_ipv6_mtu` or the egress
//! MTU (RFC 7915 §4). The later pieces go into the batch's spare frames
//! ([`Emit`]); the first stays in the packet's own frame. Stateless: no
//! table, nothing kept between packets.

use crate::nat46::fragment::{add_fragment_header, Plan};
use crate::nat46::Drop;
use crate::pipeline::{Emit, FrameMut};

/// Splits the translated IPv6 packet `p` into fragments of at most `limit`
/// bytes, Identification `id` (the IPv4 one) where it gains a Fragment
/// header. All or nothing: with too few spare frames the packet is refused
/// as [`Drop::NeedsFragmentation`] and nothing is emitted.
pub fn split_into_fragments(
    p: &mut FrameMut<'_>,
    emit: &mut Emit<'_>,
    id: u16,
    limit: u16,
) -> Result<(), Drop> {
    let (start, len) = add_fragment_header(p.frame, p.start, p.meta.len() as usize, id)?;
    if !p.place(start, len) {
        return Err(Drop::Truncated);
    }
    let plan = Plan::new(p.frame, p.start, p.meta.len() as usize, limit)?;
    let extra = plan.pieces() - 1;
    if extra > emit.available() {
        return Err(Drop::NeedsFragmentation);
    }
    let start = p.start;
    for i in 1..=extra {
        let src = &*p.frame;
        // Same offset in the spare chunk: the same headroom before it.
        let placed =
            emit.push(p.meta, p.flow, |dst| plan.write_piece(src, start, i, dst, start).map(|n| (start, n)));
        if !placed {
            // Unreachable with equal chunk sizes; the pieces already out are
            // discarded by the receiver's reassembly timeout.
            return Err(Drop::NeedsFragmentation);
        }
    }
    let n = plan.trim_first(p.frame, start).ok_or(Drop::Truncated)?;
    if !p.place(start, n) {
        return Err(Drop::Truncated);
    }
    Ok(())
}
