//! The one error type of the wire views.

use core::fmt;

/// Why a buffer was rejected by a `new_checked` constructor or a header walk.
///
/// `Copy` and payload-free so the fast path can count drops by reason
/// without allocating; `as usize` indexes a counter array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer ends before a header or a length field says it should.
    Truncated,
    /// The IP version nibble is not the one this view parses.
    BadVersion,
    /// A header length field (IPv4 IHL, TCP data offset) is below its minimum.
    BadHeaderLen,
    /// The IPv4 total length is shorter than the IPv4 header.
    BadTotalLen,
    /// The UDP length is shorter than the UDP header.
    BadUdpLen,
    /// More IPv6 extension headers than we are willing to walk.
    ExtHeaderChainTooLong,
    /// An IPv6 Hop-by-Hop Options header that is not the first header.
    BadExtHeaderOrder,
}

impl WireError {
    /// Number of variants, for sizing per-reason counter arrays.
    pub const COUNT: usize = 7;

    /// Every variant, in index order (`e as usize`).
    pub const ALL: [WireError; Self::COUNT] = [
        WireError::Truncated,
        WireError::BadVersion,
        WireError::BadHeaderLen,
        WireError::BadTotalLen,
        WireError::BadUdpLen,
        WireError::ExtHeaderChainTooLong,
        WireError::BadExtHeaderOrder,
    ];

    /// A short, stable, lowercase name (counter and log label).
    pub const fn as_str(self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::BadVersion => "bad_version",
            WireError::BadHeaderLen => "bad_header_len",
            WireError::BadTotalLen => "bad_total_len",
            WireError::BadUdpLen => "bad_udp_len",
            WireError::ExtHeaderChainTooLong => "ext_header_chain_too_long",
            WireError::BadExtHeaderOrder => "bad_ext_header_order",
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            WireError::Truncated => "packet truncated",
            WireError::BadVersion => "wrong IP version",
            WireError::BadHeaderLen => "header length below minimum",
            WireError::BadTotalLen => "IPv4 total length shorter than header",
            WireError::BadUdpLen => "UDP length shorter than UDP header",
            WireError::ExtHeaderChainTooLong => "IPv6 extension header chain too long",
            WireError::BadExtHeaderOrder => "IPv6 Hop-by-Hop header not first",
        };
        f.write_str(msg)
    }
}

impl core::error::Error for WireError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_matches_and_indexes() {
        for (i, e) in WireError::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
            assert!(!e.as_str().is_empty());
            assert!(!e.to_string().is_empty());
        }
    }
}
