//! IPv6 fragments from IPv4 packets without DF (RFC 7915 §4, §4.1).
//!
//! Stateless: a packet is split on its own, with no table. The translator
//! translates the whole packet first (its transport checksum is then right
//! for the reassembled datagram); [`add_fragment_header`] gives it a
//! Fragment header if it has none, [`Plan`] says how it splits, and
//! [`Plan::write_piece`] writes each later piece into a frame of its own
//! before [`Plan::trim_first`] cuts the packet down to the first piece.
//! Already-fragmented IPv4 packets (which carry a Fragment header after
//! translation) split the same way, with offsets relative to their own.

use super::siit::{Drop, Placed};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const FRAG: u8 = 44;
const ICMP: u8 = 1;
/// IPv6 header plus Fragment header.
const V6_FRAG_HDRS: usize = 40 + 8;

fn rd16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

fn wr(b: &mut [u8], at: usize, v: &[u8]) -> Option<()> {
    b.get_mut(at..at.checked_add(v.len())?)?.copy_from_slice(v);
    Some(())
}

/// (L2 header length, ethertype), 802.1Q as the translator reads it.
fn l2_info(b: &[u8], start: usize) -> Option<(usize, u16)> {
    let et = rd16(b, start + 12)?;
    if et == ETH_P_8021Q {
        Some((18, rd16(b, start + 16)?))
    } else {
        Some((14, et))
    }
}

/// The IPv4 Identification of the frame `pkt` when its translation must be
/// sent as IPv6 fragments of at most `limit` bytes: DF clear and the IPv6
/// packet (with a Fragment header if the IPv4 one is a fragment) larger
/// than `limit`. `limit` is the smaller of `lowest_ipv6_mtu` and the
/// egress MTU. ICMP errors (which the translator truncates to fit) and
/// ICMP fragments (never translated, RFC 7915 §1.2) are left to it.
///
//= https://www.rfc-editor.org/rfc/rfc7915#section-4
//# When the IPv4 sender does not set the DF bit, the translator MUST NOT
//# include the Fragment Header for the non-fragmented IPv6 packets.
//
// (paraphrase, same section) If the DF flag is not set and the IPv4 packet
// will result in an IPv6 packet larger than a user-defined length
// (lowest-ipv6-mtu), the translator MUST fragment the IPv4 packet so that
// it fits in IPv6 packets of at most that length.
pub fn fragmentation_4to6(pkt: &[u8], limit: u16) -> Option<u16> {
    let (l2, et) = l2_info(pkt, 0)?;
    if et != ETH_P_IPV4 {
        return None;
    }
    let ip = pkt.get(l2..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    let tot = usize::from(rd16(ip, 2)?);
    let flags = rd16(ip, 6)?;
    let (df, mf, off) = (flags & 0x4000 != 0, flags & 0x2000 != 0, flags & 0x1fff);
    if ip.first()? >> 4 != 4 || ihl < 20 || tot < ihl || tot > ip.len() || df {
        return None;
    }
    let fragmented = mf || off != 0;
    if *ip.get(9)? == ICMP {
        // Echo request / reply only: errors are truncated by the translator.
        let ty = *ip.get(ihl)?;
        if fragmented || !(ty == 0 || ty == 8) {
            return None;
        }
    }
    let out = 40 + if fragmented { 8 } else { 0 } + tot - ihl;
    (out > usize::from(limit)).then(|| rd16(ip, 4)).flatten()
}

/// Inserts a Fragment header (offset 0, M clear, Identification `id`) after
/// the 40-byte IPv6 header of the translated frame `buf[start..start + len]`
/// unless one is there already; the headers move 8 bytes towards the
/// frame's start. Returns the frame's new `(start, len)`.
///
//= https://www.rfc-editor.org/rfc/rfc7915#section-4.1
//# Identification:  Copied from the Identification field in the IPv4
//#    header.
// (the low-order 16 bits; the high-order 16 bits are zero)
pub fn add_fragment_header(buf: &mut [u8], start: usize, len: usize, id: u16) -> Placed {
    let (l2, et) = l2_info(buf, start).ok_or(Drop::Truncated)?;
    let ip = start + l2;
    if et != ETH_P_IPV6 || len < l2 + 40 {
        return Err(Drop::Malformed);
    }
    let nh = *buf.get(ip + 6).ok_or(Drop::Truncated)?;
    if nh == FRAG {
        return Ok((start, len));
    }
    let new_start = start.checked_sub(8).ok_or(Drop::HeadroomExhausted)?;
    if buf.len() < start + len {
        return Err(Drop::Truncated);
    }
    buf.copy_within(start..ip + 40, new_start);
    let ip = ip - 8;
    let plen = rd16(buf, ip + 4).ok_or(Drop::Truncated)?.checked_add(8).ok_or(Drop::Malformed)?;
    wr(buf, ip + 4, &plen.to_be_bytes()).ok_or(Drop::Truncated)?;
    wr(buf, ip + 6, &[FRAG]).ok_or(Drop::Truncated)?;
    let id = u32::from(id).to_be_bytes();
    let fh = [nh, 0, 0, 0, id[0], id[1], id[2], id[3]];
    wr(buf, ip + 40, &fh).ok_or(Drop::Truncated)?;
    Ok((new_start, len + 8))
}

/// How a translated IPv6 frame that carries a Fragment header right after
/// its IPv6 header splits into packets of at most `limit` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// L2 + IPv6 + Fragment header bytes, repeated in every piece.
    hdr: usize,
    /// Fragmentable data bytes after the headers.
    data: usize,
    /// Data bytes per piece (a multiple of 8) except the last.
    chunk: usize,
    /// The packet's own offset (bytes) and M flag.
    off: usize,
    more: bool,
}

impl Plan {
    /// The split of `buf[start..start + len]` (a frame from
    /// [`add_fragment_header`]) into IPv6 packets of at most `limit` bytes.
    pub fn new(buf: &[u8], start: usize, len: usize, limit: u16) -> Result<Plan, Drop> {
        let (l2, _) = l2_info(buf, start).ok_or(Drop::Truncated)?;
        let ip = start + l2;
        if buf.get(ip + 6) != Some(&FRAG) {
            return Err(Drop::Malformed);
        }
        let plen = usize::from(rd16(buf, ip + 4).ok_or(Drop::Truncated)?);
        let fo = rd16(buf, ip + 42).ok_or(Drop::Truncated)?;
        if plen < 8 || l2 + 40 + plen > len {
            return Err(Drop::Malformed);
        }
        // RFC 8200 §4.5: every piece but the last carries a multiple of 8.
        let chunk = (usize::from(limit).saturating_sub(V6_FRAG_HDRS)) & !7;
        if chunk == 0 {
            return Err(Drop::NeedsFragmentation);
        }
        Ok(Plan {
            hdr: l2 + V6_FRAG_HDRS,
            data: plen - 8,
            chunk,
            off: usize::from(fo & 0xfff8),
            more: fo & 1 != 0,
        })
    }

    /// Number of packets, the first included.
    pub fn pieces(&self) -> usize {
        self.data.div_ceil(self.chunk).max(1)
    }

    /// Payload Length and Fragment Offset/M field of piece `i`.
    fn fields(&self, i: usize) -> Option<(u16, u16, usize, usize)> {
        let from = i.checked_mul(self.chunk)?;
        let n = self.data.checked_sub(from)?.min(self.chunk);
        let last = i + 1 == self.pieces();
        let off = self.off.checked_add(from).filter(|&o| o <= 0xfff8)?;
        let fo = off as u16 | u16::from(!last || self.more);
        Some(((8 + n) as u16, fo, from, n))
    }

    /// Writes piece `i` (`i >= 1`) of the frame at `src[start..]` into
    /// `dst` at `at`: the same L2, IPv6 and Fragment headers with its own
    /// Payload Length, offset and M flag, then its data. Returns its length.
    pub fn write_piece(
        &self,
        src: &[u8],
        start: usize,
        i: usize,
        dst: &mut [u8],
        at: usize,
    ) -> Option<usize> {
        let (plen, fo, from, n) = self.fields(i)?;
        let data = start.checked_add(self.hdr)?.checked_add(from)?;
        wr(dst, at, src.get(start..start + self.hdr)?)?;
        wr(dst, at + self.hdr, src.get(data..data.checked_add(n)?)?)?;
        let ip = at + self.hdr - V6_FRAG_HDRS;
        wr(dst, ip + 4, &plen.to_be_bytes())?;
        wr(dst, ip + 42, &fo.to_be_bytes())?;
        Some(self.hdr + n)
    }

    /// Cuts the frame at `buf[start..]` down to the first piece; returns
    /// its length.
    pub fn trim_first(&self, buf: &mut [u8], start: usize) -> Option<usize> {
        let (plen, fo, _, n) = self.fields(0)?;
        let ip = start + self.hdr - V6_FRAG_HDRS;
        wr(buf, ip + 4, &plen.to_be_bytes())?;
        wr(buf, ip + 42, &fo.to_be_bytes())?;
        Some(self.hdr + n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn v4_udp(len: usize, flags: u16) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([192, 0, 2, 1], [198, 51, 100, 2], 64)
            .udp(1, 2)
            .write(&mut f, &vec![0x5a; len - 28])
            .unwrap();
        f[14 + 4..14 + 6].copy_from_slice(&0x1234u16.to_be_bytes());
        f[14 + 6..14 + 8].copy_from_slice(&flags.to_be_bytes());
        f
    }

    #[test]
    fn only_oversize_packets_without_df_are_split() {
        // 1260 bytes of IPv4 make exactly 1280 of IPv6.
        assert_eq!(fragmentation_4to6(&v4_udp(1260, 0), 1280), None);
        assert_eq!(fragmentation_4to6(&v4_udp(1261, 0), 1280), Some(0x1234));
        assert_eq!(fragmentation_4to6(&v4_udp(1261, 0x4000), 1280), None, "DF: Fragmentation Needed instead");
        // A fragment gains a Fragment header: 1252 + 28 = 1280 fits, 1253 does not.
        assert_eq!(fragmentation_4to6(&v4_udp(1252, 0x2000), 1280), None);
        assert_eq!(fragmentation_4to6(&v4_udp(1253, 0x2000), 1280), Some(0x1234));
    }

    #[test]
    fn truncated_frames_never_panic() {
        let f = v4_udp(1400, 0);
        for n in 0..f.len() {
            let _ = fragmentation_4to6(&f[..n], 1280);
        }
        let mut buf = vec![0u8; 64];
        for n in 0..buf.len() {
            let _ = add_fragment_header(&mut buf, 8, n.min(56), 1);
            let _ = Plan::new(&buf, 0, n, 1280);
        }
    }
}
