//! The one error type of the wire views.

use core::fmt;

/// Defines the error enum from one list: each variant with its doc, its
/// counter name and its message, so `ALL`, `COUNT`, `as_str` and `Display`
/// follow the enum by construction.
macro_rules! wire_errors {
    ($(#[$meta:meta])* $name:ident {
        $($(#[$doc:meta])* $variant:ident => $label:literal, $msg:literal;)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$doc])* $variant,)*
        }

        impl $name {
            /// Number of variants, for sizing per-reason counter arrays.
            pub const COUNT: usize = [$($label),*].len();

            /// Every variant, in index order (`e as usize`).
            pub const ALL: [$name; Self::COUNT] = [$($name::$variant),*];

            /// A short, stable, lowercase name (counter and log label).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($name::$variant => $msg,)*
                })
            }
        }
    };
}

wire_errors! {
    /// Why a buffer was rejected by a `new_checked` constructor or a header walk.
    ///
    /// `Copy` and payload-free so the fast path can count drops by reason
    /// without allocating; `as usize` indexes a counter array.
    WireError {
        /// The buffer ends before a header or a length field says it should.
        Truncated => "truncated", "packet truncated";
        /// The IP version nibble is not the one this view parses.
        BadVersion => "bad_version", "wrong IP version";
        /// A header length field (IPv4 IHL, TCP data offset) is below its minimum.
        BadHeaderLen => "bad_header_len", "header length below minimum";
        /// The IPv4 total length is shorter than the IPv4 header.
        BadTotalLen => "bad_total_len", "IPv4 total length shorter than header";
        /// The UDP length is shorter than the UDP header.
        BadUdpLen => "bad_udp_len", "UDP length shorter than UDP header";
        /// More IPv6 extension headers than we are willing to walk.
        ExtHeaderChainTooLong => "ext_header_chain_too_long", "IPv6 extension header chain too long";
        /// An IPv6 Hop-by-Hop Options header that is not the first header.
        BadExtHeaderOrder => "bad_ext_header_order", "IPv6 Hop-by-Hop header not first";
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
