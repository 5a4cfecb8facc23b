//! The detail behind the two drop reasons that hide many causes: which
//! header check a malformed packet failed (its [`WireError`]), and which
//! translator rule refused an untranslatable one (its [`XlatDrop`], RFC
//! 7915). Each detail has its own counter beside the reason's
//! (`WorkerStats::malformed`, `WorkerStats::untranslatable`), so `shunt
//! stats` can say why, not only that.

use super::DropReason;
use crate::nat46::Drop as XlatDrop;
use crate::wire::WireError;

/// Why a packet counted as `malformed` was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A header failed its view's check.
    Wire(WireError),
    /// Neither IPv4 nor IPv6.
    NotIp,
    /// The headers no longer hold what parsing found (a rewrite refused).
    Inconsistent,
}

impl Malformed {
    pub const COUNT: usize = WireError::COUNT + 2;

    /// Dense index `0..COUNT`.
    pub const fn index(self) -> usize {
        match self {
            Malformed::Wire(e) => e as usize,
            Malformed::NotIp => WireError::COUNT,
            Malformed::Inconsistent => WireError::COUNT + 1,
        }
    }

    /// Counter label of index `i`.
    pub fn name_of(i: usize) -> &'static str {
        match WireError::ALL.get(i) {
            Some(e) => e.as_str(),
            None if i == WireError::COUNT => "not_ip",
            None => "inconsistent",
        }
    }
}

/// Why a packet counted as `untranslatable` was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untranslatable {
    /// A translator rule refused it.
    Rule(XlatDrop),
    /// No prefix or mapping configured for its address (no NAT46 prefix,
    /// no `[siit]`, a destination outside the NAT64 prefix).
    NoMapping,
    /// An ICMP error whose TTL / Hop Limit ran out here: a router never
    /// answers an error with an error (RFC 1812 §4.3.2.7).
    ErrorExpired,
    /// A NAT64 client addressed one of the pool's own IPv4 addresses at a
    /// port no client is bound to over that protocol (RFC 6146 §3.8
    /// hairpinning has no one to reach).
    Hairpin,
}

impl Untranslatable {
    pub const COUNT: usize = XlatDrop::COUNT + 3;

    pub const fn index(self) -> usize {
        match self {
            Untranslatable::Rule(d) => d.index(),
            Untranslatable::NoMapping => XlatDrop::COUNT,
            Untranslatable::ErrorExpired => XlatDrop::COUNT + 1,
            Untranslatable::Hairpin => XlatDrop::COUNT + 2,
        }
    }

    pub fn name_of(i: usize) -> &'static str {
        match XlatDrop::ALL.get(i) {
            Some(d) => d.name(),
            None if i == XlatDrop::COUNT => "no_mapping",
            None if i == XlatDrop::COUNT + 1 => "error_expired",
            None => "hairpin",
        }
    }
}

dense_enum! {
    /// Why a packet counted as `martian` was (RFC 1812 §5.3.7, RFC 4291
    /// §2.5.2-2.7, RFC 1812 §5.3.4 for link-layer addressing).
    Martian;
    SrcLoopback => "src_loopback", "Source in 127.0.0.0/8 or ::1.";
    SrcThisNetwork => "src_this_network", "Source in 0.0.0.0/8 or ::.";
    SrcBroadcast => "src_broadcast", "Source 255.255.255.255.";
    SrcMulticast => "src_multicast", "Source in 224.0.0.0/4 or ff00::/8.";
    SrcReserved => "src_reserved", "Source in class E, 240.0.0.0/4.";
    SrcOwn => "src_own", "Source is one of our VIPs or SNAT-pool addresses.";
    ForeignMac => "foreign_mac", "Destination MAC is not the receiving interface's.";
    BadOptions => "bad_ipv4_options", "IPv4 options that do not parse (RFC 791 lengths).";
    SourceRoute => "source_route", "IPv4 loose or strict source route (LSRR/SSRR).";
}

//= https://www.rfc-editor.org/rfc/rfc1812#section-5.3.7
//# A router SHOULD NOT forward any packet that has an invalid IP source
//# address or a source address on network 0.  A router SHOULD NOT forward,
//# except over a loopback interface, any packet that has a source address
//# on network 127.  [...] A router MUST NOT forward a packet whose source
//# address is [...] a Class D (multicast) or Class E address.
//= https://www.rfc-editor.org/rfc/rfc4291#section-2.5.3
//# The loopback address must not be used as the source address in IPv6
//# packets that are sent outside of a single node.
//= https://www.rfc-editor.org/rfc/rfc4291#section-2.7
//# Multicast addresses must not be used as source addresses in IPv6
//# packets or appear in any Routing header.
/// The martian class of source address `a` (16-byte form), if any. Our own
/// addresses are the caller's to check.
#[inline]
pub fn martian_source(a: &[u8; 16]) -> Option<Martian> {
    const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    if a[..12] == V4_MAPPED {
        return match a[12] {
            127 => Some(Martian::SrcLoopback),
            0 => Some(Martian::SrcThisNetwork),
            255 if a[13..] == [255, 255, 255] => Some(Martian::SrcBroadcast),
            224..=239 => Some(Martian::SrcMulticast),
            240..=255 => Some(Martian::SrcReserved),
            _ => None,
        };
    }
    let v = u128::from_be_bytes(*a);
    match v {
        1 => Some(Martian::SrcLoopback),
        0 => Some(Martian::SrcThisNetwork),
        _ if a[0] == 0xff => Some(Martian::SrcMulticast),
        _ => None,
    }
}

//= https://www.rfc-editor.org/rfc/rfc1812#section-5.3.4
//# [...] a router SHOULD NOT forward packets received as link-layer
//# broadcasts or multicasts unless they are addressed to an IP multicast
//# address.
//= https://www.rfc-editor.org/rfc/rfc7126#section-4.4
//# (LSRR, SSRR) Routers, security gateways, and firewalls SHOULD implement
//# an option-specific configuration knob whether packets with this option
//# are dropped [...] default: drop.
/// Checks an IPv4 header's options (`opts`: the bytes after the fixed 20):
/// every option must fit its stated length (RFC 791), and source routes are
/// refused.
pub fn ipv4_options(opts: &[u8]) -> Result<(), Martian> {
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => return Ok(()), // End of Option List
            1 => i += 1,        // No Operation
            _ => {
                let len = usize::from(*opts.get(i + 1).ok_or(Martian::BadOptions)?);
                if len < 2 || i + len > opts.len() {
                    return Err(Martian::BadOptions);
                }
                // 0x83 LSRR, 0x89 SSRR (copied flag set); also their
                // class/number without the copied flag.
                if matches!(kind & 0x7f, 0x03 | 0x09) {
                    return Err(Martian::SourceRoute);
                }
                i += len;
            }
        }
    }
    Ok(())
}

/// A drop with its detail, as the rewrite code reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Malformed(Malformed),
    Untranslatable(Untranslatable),
    Martian(Martian),
}

impl Cause {
    pub const fn reason(self) -> DropReason {
        match self {
            Cause::Malformed(_) => DropReason::Malformed,
            Cause::Untranslatable(_) => DropReason::Untranslatable,
            Cause::Martian(_) => DropReason::Martian,
        }
    }

    /// Headers that no longer hold what parsing found.
    pub const INCONSISTENT: Cause = Cause::Malformed(Malformed::Inconsistent);
}

impl From<XlatDrop> for Cause {
    fn from(d: XlatDrop) -> Cause {
        Cause::Untranslatable(Untranslatable::Rule(d))
    }
}

impl From<WireError> for Cause {
    fn from(e: WireError) -> Cause {
        Cause::Malformed(Malformed::Wire(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_names_distinct() {
        let m: Vec<usize> = WireError::ALL.iter().map(|e| Malformed::Wire(*e).index()).collect();
        assert_eq!(m, (0..WireError::COUNT).collect::<Vec<_>>());
        assert_eq!(Malformed::Inconsistent.index(), Malformed::COUNT - 1);
        let u: Vec<usize> = XlatDrop::ALL.iter().map(|d| Untranslatable::Rule(*d).index()).collect();
        assert_eq!(u, (0..XlatDrop::COUNT).collect::<Vec<_>>());
        assert_eq!(Untranslatable::ErrorExpired.index(), Untranslatable::COUNT - 2);
        assert_eq!(Untranslatable::Hairpin.index(), Untranslatable::COUNT - 1);
        let mut names: Vec<&str> = (0..Malformed::COUNT).map(Malformed::name_of).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Malformed::COUNT);
        let mut names: Vec<&str> = Martian::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Martian::COUNT);
        let mut names: Vec<&str> = (0..Untranslatable::COUNT).map(Untranslatable::name_of).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Untranslatable::COUNT);
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[10] = 0xff;
        x[11] = 0xff;
        x[12..].copy_from_slice(&a);
        x
    }

    #[test]
    fn martian_sources_by_class() {
        use Martian::*;
        let cases: &[([u8; 16], Option<Martian>)] = &[
            (v4([127, 0, 0, 1]), Some(SrcLoopback)),
            (v4([127, 255, 0, 9]), Some(SrcLoopback)),
            (v4([0, 0, 0, 0]), Some(SrcThisNetwork)),
            (v4([0, 1, 2, 3]), Some(SrcThisNetwork)),
            (v4([255, 255, 255, 255]), Some(SrcBroadcast)),
            (v4([224, 0, 0, 1]), Some(SrcMulticast)),
            (v4([239, 255, 255, 250]), Some(SrcMulticast)),
            (v4([240, 0, 0, 1]), Some(SrcReserved)),
            (v4([255, 255, 255, 254]), Some(SrcReserved)),
            (v4([10, 0, 1, 2]), None),
            (v4([223, 255, 255, 255]), None),
            (v4([126, 255, 255, 255]), None),
            (u128::to_be_bytes(1), Some(SrcLoopback)),
            (u128::to_be_bytes(0), Some(SrcThisNetwork)),
            (u128::to_be_bytes(0xff02 << 112 | 1), Some(SrcMulticast)),
            (u128::to_be_bytes(0xfd00 << 112 | 1), None),
            (u128::to_be_bytes(0xfe80 << 112 | 1), None),
        ];
        for (a, want) in cases {
            assert_eq!(martian_source(a), *want, "{a:?}");
        }
    }

    #[test]
    fn ipv4_options_checked() {
        assert_eq!(ipv4_options(&[]), Ok(()));
        assert_eq!(ipv4_options(&[1, 1, 1, 0]), Ok(()));
        // Record Route, 7 bytes + EOL.
        assert_eq!(ipv4_options(&[7, 7, 4, 0, 0, 0, 0, 0]), Ok(()));
        assert_eq!(ipv4_options(&[0x83, 7, 4, 10, 0, 0, 1, 0]), Err(Martian::SourceRoute));
        assert_eq!(ipv4_options(&[0x89, 7, 4, 10, 0, 0, 1, 0]), Err(Martian::SourceRoute));
        assert_eq!(ipv4_options(&[7, 9, 4, 0]), Err(Martian::BadOptions)); // longer than the header
        assert_eq!(ipv4_options(&[7, 1, 0, 0]), Err(Martian::BadOptions)); // length below 2
        assert_eq!(ipv4_options(&[1, 1, 1, 7]), Err(Martian::BadOptions)); // no length byte
    }
}
