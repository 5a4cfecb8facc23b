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
}

impl Untranslatable {
    pub const COUNT: usize = XlatDrop::COUNT + 2;

    pub const fn index(self) -> usize {
        match self {
            Untranslatable::Rule(d) => d.index(),
            Untranslatable::NoMapping => XlatDrop::COUNT,
            Untranslatable::ErrorExpired => XlatDrop::COUNT + 1,
        }
    }

    pub fn name_of(i: usize) -> &'static str {
        match XlatDrop::ALL.get(i) {
            Some(d) => d.name(),
            None if i == XlatDrop::COUNT => "no_mapping",
            None => "error_expired",
        }
    }
}

/// A drop with its detail, as the rewrite code reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Malformed(Malformed),
    Untranslatable(Untranslatable),
}

impl Cause {
    pub const fn reason(self) -> DropReason {
        match self {
            Cause::Malformed(_) => DropReason::Malformed,
            Cause::Untranslatable(_) => DropReason::Untranslatable,
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
        assert_eq!(Untranslatable::ErrorExpired.index(), Untranslatable::COUNT - 1);
        let mut names: Vec<&str> = (0..Malformed::COUNT).map(Malformed::name_of).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Malformed::COUNT);
        let mut names: Vec<&str> = (0..Untranslatable::COUNT).map(Untranslatable::name_of).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Untranslatable::COUNT);
    }
}
