//! What every header view shares: the wrapper type, its constructors,
//! big-endian field access that never panics (a field out of range reads
//! as zero and is not written), the length checks of `check`, and a
//! declarative list of plain fields ([`fields!`]) so each header names its
//! fields once.

use core::net::{Ipv4Addr, Ipv6Addr};
use core::ops::Range;

use super::WireError;

/// A value a header field holds, stored big-endian at `At`: a byte offset
/// for `u8`, a byte range otherwise. A field out of range reads as zero and
/// is not written, so nothing built on this can panic.
pub(super) trait FieldValue<At>: Sized {
    /// The field at `at` of `buf`, or zero when `buf` is too short.
    fn read(buf: &[u8], at: At) -> Self;
    /// Writes `self` at `at` of `buf`; nothing when `buf` is too short.
    fn write(self, buf: &mut [u8], at: At);
}

impl FieldValue<usize> for u8 {
    #[inline]
    fn read(buf: &[u8], at: usize) -> u8 {
        buf.get(at).copied().unwrap_or(0)
    }

    #[inline]
    fn write(self, buf: &mut [u8], at: usize) {
        if let Some(b) = buf.get_mut(at) {
            *b = self;
        }
    }
}

impl<const N: usize> FieldValue<Range<usize>> for [u8; N] {
    /// The bytes of `r`, all zero unless `r` is in range and `N` long.
    #[inline]
    fn read(buf: &[u8], r: Range<usize>) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(s) = buf.get(r) {
            if s.len() == N {
                out.copy_from_slice(s);
            }
        }
        out
    }

    /// Copies `self` into `r` when `r` is in range and `N` long.
    #[inline]
    fn write(self, buf: &mut [u8], r: Range<usize>) {
        if let Some(s) = buf.get_mut(r) {
            if s.len() == N {
                s.copy_from_slice(&self);
            }
        }
    }
}

/// Fields that are a byte array on the wire: integers (big-endian) and
/// addresses.
macro_rules! array_field {
    ($($ty:ty: $n:literal, $from:expr, $to:expr;)*) => {$(
        impl FieldValue<Range<usize>> for $ty {
            #[inline]
            fn read(buf: &[u8], r: Range<usize>) -> $ty {
                $from(<[u8; $n]>::read(buf, r))
            }

            #[inline]
            fn write(self, buf: &mut [u8], r: Range<usize>) {
                $to(self).write(buf, r);
            }
        }
    )*};
}

array_field! {
    u16: 2, u16::from_be_bytes, u16::to_be_bytes;
    u32: 4, u32::from_be_bytes, u32::to_be_bytes;
    Ipv4Addr: 4, Ipv4Addr::from, |a: Ipv4Addr| a.octets();
    Ipv6Addr: 16, Ipv6Addr::from, |a: Ipv6Addr| a.octets();
}

/// `Truncated` unless `len` bytes hold the `needed` ones.
#[inline]
pub(super) fn holds(len: usize, needed: usize) -> Result<(), WireError> {
    if len < needed {
        return Err(WireError::Truncated);
    }
    Ok(())
}

/// Checks a length a header claims (IPv4 IHL and total length, TCP data
/// offset, UDP length): at least `min`, else `too_short`; within the `len`
/// bytes of the buffer, else `Truncated`.
#[inline]
pub(super) fn claimed_len(
    claimed: usize,
    min: usize,
    len: usize,
    too_short: WireError,
) -> Result<(), WireError> {
    if claimed < min {
        return Err(too_short);
    }
    holds(len, claimed)
}

/// Defines the view type `$name<T: AsRef<[u8]>>` with `new_unchecked`,
/// `new_checked` (which runs `$check`), `into_inner`, and the private
/// `get`/`set` the accessors of each view are written with.
macro_rules! header_view {
    ($(#[$meta:meta])* $name:ident, check: $check:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        #[allow(dead_code)]
        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps `buffer` without checks; accessors still never panic
            /// (fields out of range read as zero, slices come back short).
            #[inline]
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Wraps `buffer` after
            #[doc = concat!("[`", stringify!($name), "::", stringify!($check), "`].")]
            #[inline]
            pub fn new_checked(buffer: T) -> Result<Self, $crate::wire::WireError> {
                let view = $name { buffer };
                view.$check()?;
                Ok(view)
            }

            /// Returns the underlying buffer.
            #[inline]
            pub fn into_inner(self) -> T {
                self.buffer
            }

            /// The field at `at`; zero when out of range.
            #[inline]
            fn get<V: $crate::wire::view::FieldValue<A>, A>(&self, at: A) -> V {
                V::read(self.buffer.as_ref(), at)
            }

            /// `Truncated` unless the buffer holds `needed` bytes.
            #[inline]
            fn holds(&self, needed: usize) -> Result<(), $crate::wire::WireError> {
                $crate::wire::view::holds(self.buffer.as_ref().len(), needed)
            }

            /// See [`claimed_len`](crate::wire::view::claimed_len).
            #[inline]
            fn claimed_len(
                &self,
                claimed: usize,
                min: usize,
                too_short: $crate::wire::WireError,
            ) -> Result<(), $crate::wire::WireError> {
                $crate::wire::view::claimed_len(claimed, min, self.buffer.as_ref().len(), too_short)
            }
        }

        #[allow(dead_code)]
        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            /// Writes `v` at `at`; nothing when out of range.
            #[inline]
            fn set<V: $crate::wire::view::FieldValue<A>, A>(&mut self, at: A, v: V) {
                v.write(self.buffer.as_mut(), at);
            }
        }
    };
}

/// Declares the plain fields of view `$view`, each once, one a line: the
/// docs of its getter, the getter's name, its setter's name if it has one,
/// its type and its place (a `mod field` constant). Setters write that field
/// alone: no checksum is updated. Both are `#[inline]` and never panic (see
/// [`FieldValue`]).
///
/// ```ignore
/// fields! {
///     Packet {
///         /// Source port.
///         pub src_port, set_src_port: u16 = field::SRC_PORT;
///     }
/// }
/// ```
macro_rules! fields {
    ($view:ident {
        $($(#[$meta:meta])* $vis:vis $get:ident $(, $set:ident)?: $ty:ty = $at:expr;)*
    }) => {
        impl<T: AsRef<[u8]>> $view<T> {
            $(
                $(#[$meta])*
                #[inline]
                $vis fn $get(&self) -> $ty {
                    self.get($at)
                }
            )*
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $view<T> {
            $($(
                #[doc = concat!("Sets [`", stringify!($get), "`](Self::", stringify!($get), "); writes nothing else.")]
                #[inline]
                $vis fn $set(&mut self, v: $ty) {
                    self.set($at, v);
                }
            )?)*
        }
    };
}

/// Byte places of the ports TCP and UDP both begin with (RFC 9293 §3.1,
/// RFC 768).
pub(super) mod port_field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
}

/// Byte places of the 8-byte header ICMPv4 and ICMPv6 share: type, code,
/// checksum and four type-specific bytes, an echo identifier and sequence
/// number in echo messages.
pub(super) mod icmp_field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const REST: Range<usize> = 4..8;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQ: Range<usize> = 6..8;
}

/// The views of the headers two protocols share, which define `Packet`
/// and the accessors the two have in common; each module adds its own
/// fields and checksum rules. Expects `field` (with at least the places of
/// the shared header) in scope.
///
/// - `transport`: TCP or UDP, which both begin with the source and
///   destination port at the [`port_field`] places. Expects a `check`
///   method in scope.
/// - `icmp`: ICMPv4 or ICMPv6, which share the 8-byte header laid out in
///   [`icmp_field`]. Expects `HEADER_LEN` and `TYPE_ECHO_{REQUEST,REPLY}`
///   in scope.
macro_rules! shared_view {
    (transport $(#[$meta:meta])*) => {
        shared_view! {
            @packet $(#[$meta])* {
                /// Source port.
                pub src_port, set_src_port: u16 = field::SRC_PORT;
                /// Destination port.
                pub dst_port, set_dst_port: u16 = field::DST_PORT;
            }
        }
    };
    (icmp $(#[$meta:meta])*) => {
        shared_view! {
            @packet $(#[$meta])* {
                /// Message type.
                pub msg_type, set_msg_type: u8 = field::TYPE;
                /// Message code.
                pub msg_code, set_msg_code: u8 = field::CODE;
                /// Checksum field.
                pub checksum, set_checksum: u16 = field::CHECKSUM;
                /// Bytes 4..8, whose meaning depends on the type.
                pub rest_of_header, set_rest_of_header: [u8; 4] = field::REST;
                /// Echo identifier (bytes 4..6); the "port" NAT rewrites.
                pub echo_ident, set_echo_ident: u16 = field::ECHO_IDENT;
                /// Echo sequence number (bytes 6..8).
                pub echo_seq, set_echo_seq: u16 = field::ECHO_SEQ;
            }
        }

        impl<T: AsRef<[u8]>> Packet<T> {
            /// Checks the 8-byte header is present.
            pub fn check(&self) -> Result<(), $crate::wire::WireError> {
                self.holds(HEADER_LEN)
            }

            /// True for Echo Request and Echo Reply.
            #[inline]
            pub fn is_echo(&self) -> bool {
                matches!(self.msg_type(), TYPE_ECHO_REQUEST | TYPE_ECHO_REPLY)
            }

            /// Data after the header: echo data, or the quoted packet of an error.
            #[inline]
            pub fn payload(&self) -> &[u8] {
                self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
            /// Mutable data after the header.
            #[inline]
            pub fn payload_mut(&mut self) -> &mut [u8] {
                self.buffer.as_mut().get_mut(HEADER_LEN..).unwrap_or(&mut [])
            }
        }
    };
    (@packet $(#[$meta:meta])* { $($fields:tt)* }) => {
        header_view! {
            $(#[$meta])*
            Packet,
            check: check
        }

        fields! {
            Packet { $($fields)* }
        }
    };
}

/// The bytes etherparse's `PacketBuilder` step `$builder` writes around
/// `$payload`: the independently built packets the views' tests check
/// against.
#[cfg(test)]
macro_rules! etherparse_packet {
    ($builder:expr, $payload:expr) => {{
        let mut v = Vec::new();
        $builder.write(&mut v, $payload).unwrap();
        v
    }};
}
