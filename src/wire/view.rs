//! What every header view shares: the wrapper type, its constructors and
//! big-endian field access that never panics (a field out of range reads
//! as zero and is not written).

/// Defines the view type `$name<T: AsRef<[u8]>>` with `new_unchecked`,
/// `new_checked` (which runs `$check`), `into_inner`, and the private field
/// readers and writers the accessors of each view are written with.
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

            #[inline]
            fn byte(&self, at: usize) -> u8 {
                self.buffer.as_ref().get(at).copied().unwrap_or(0)
            }

            #[inline]
            fn read_u16(&self, r: core::ops::Range<usize>) -> u16 {
                match self.buffer.as_ref().get(r) {
                    Some(&[a, b]) => u16::from_be_bytes([a, b]),
                    _ => 0,
                }
            }

            #[inline]
            fn read_u32(&self, r: core::ops::Range<usize>) -> u32 {
                match self.buffer.as_ref().get(r) {
                    Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
                    _ => 0,
                }
            }

            /// The bytes of `r`, all zero when out of range.
            #[inline]
            fn read_array<const N: usize>(&self, r: core::ops::Range<usize>) -> [u8; N] {
                let mut out = [0u8; N];
                if let Some(s) = self.buffer.as_ref().get(r) {
                    if s.len() == N {
                        out.copy_from_slice(s);
                    }
                }
                out
            }
        }

        #[allow(dead_code)]
        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            #[inline]
            fn set_byte(&mut self, at: usize, v: u8) {
                if let Some(b) = self.buffer.as_mut().get_mut(at) {
                    *b = v;
                }
            }

            /// Copies `v` into `r` when both have the same length.
            #[inline]
            fn write(&mut self, r: core::ops::Range<usize>, v: &[u8]) {
                if let Some(s) = self.buffer.as_mut().get_mut(r) {
                    if s.len() == v.len() {
                        s.copy_from_slice(v);
                    }
                }
            }

            #[inline]
            fn write_u16(&mut self, r: core::ops::Range<usize>, v: u16) {
                self.write(r, &v.to_be_bytes());
            }

            #[inline]
            fn write_u32(&mut self, r: core::ops::Range<usize>, v: u32) {
                self.write(r, &v.to_be_bytes());
            }
        }
    };
}

/// An ICMPv4 or ICMPv6 view: both share the 8-byte header (type, code,
/// checksum, four type-specific bytes). Defines `Packet` with the accessors
/// the two have in common; each module adds its checksum rules and the
/// type-specific fields. Expects `field::{TYPE, CODE, CHECKSUM, REST,
/// ECHO_IDENT, ECHO_SEQ}`, `HEADER_LEN` and `TYPE_ECHO_{REQUEST,REPLY}` in
/// scope.
macro_rules! icmp_view {
    ($(#[$meta:meta])*) => {
        header_view! {
            $(#[$meta])*
            Packet,
            check: check
        }

        impl<T: AsRef<[u8]>> Packet<T> {
            /// Checks the 8-byte header is present.
            pub fn check(&self) -> Result<(), $crate::wire::WireError> {
                if self.buffer.as_ref().len() < HEADER_LEN {
                    return Err($crate::wire::WireError::Truncated);
                }
                Ok(())
            }

            /// Message type.
            #[inline]
            pub fn msg_type(&self) -> u8 {
                self.byte(field::TYPE)
            }

            /// Message code.
            #[inline]
            pub fn msg_code(&self) -> u8 {
                self.byte(field::CODE)
            }

            /// Checksum field.
            #[inline]
            pub fn checksum(&self) -> u16 {
                self.read_u16(field::CHECKSUM)
            }

            /// Bytes 4..8, whose meaning depends on the type.
            #[inline]
            pub fn rest_of_header(&self) -> [u8; 4] {
                self.read_array(field::REST)
            }

            /// True for Echo Request and Echo Reply.
            #[inline]
            pub fn is_echo(&self) -> bool {
                matches!(self.msg_type(), TYPE_ECHO_REQUEST | TYPE_ECHO_REPLY)
            }

            /// Echo identifier (bytes 4..6); the "port" NAT rewrites.
            #[inline]
            pub fn echo_ident(&self) -> u16 {
                self.read_u16(field::ECHO_IDENT)
            }

            /// Echo sequence number (bytes 6..8).
            #[inline]
            pub fn echo_seq(&self) -> u16 {
                self.read_u16(field::ECHO_SEQ)
            }

            /// Data after the header: echo data, or the quoted packet of an error.
            #[inline]
            pub fn payload(&self) -> &[u8] {
                self.buffer.as_ref().get(HEADER_LEN..).unwrap_or(&[])
            }
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
            /// Sets the message type.
            #[inline]
            pub fn set_msg_type(&mut self, t: u8) {
                self.set_byte(field::TYPE, t);
            }

            /// Sets the message code.
            #[inline]
            pub fn set_msg_code(&mut self, c: u8) {
                self.set_byte(field::CODE, c);
            }

            /// Sets the checksum field.
            #[inline]
            pub fn set_checksum(&mut self, v: u16) {
                self.write_u16(field::CHECKSUM, v);
            }

            /// Sets bytes 4..8.
            #[inline]
            pub fn set_rest_of_header(&mut self, rest: [u8; 4]) {
                self.write(field::REST, &rest);
            }

            /// Sets the echo identifier (checksum not updated).
            #[inline]
            pub fn set_echo_ident(&mut self, v: u16) {
                self.write_u16(field::ECHO_IDENT, v);
            }

            /// Sets the echo sequence number (checksum not updated).
            #[inline]
            pub fn set_echo_seq(&mut self, v: u16) {
                self.write_u16(field::ECHO_SEQ, v);
            }

            /// Mutable data after the header.
            #[inline]
            pub fn payload_mut(&mut self) -> &mut [u8] {
                self.buffer.as_mut().get_mut(HEADER_LEN..).unwrap_or(&mut [])
            }
        }
    };
}
