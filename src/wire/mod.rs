//! Zero-copy packet header views and Internet checksums.
//!
//! Each view wraps `T: AsRef<[u8]>` (add `AsMut` for setters) in the style of
//! smoltcp's `wire` module: `new_checked` validates lengths once, after which
//! no accessor can panic. Accessors on `new_unchecked` views do not panic
//! either — out-of-range fields read as zero and slices come back short — so a
//! setter that breaks a length invariant cannot turn into a crash. Nothing
//! here allocates or uses `unsafe`.

// Packet bytes are untrusted: outside tests, no `[]` indexing or slicing that
// could panic. Use `get`, `chunks_exact` and slice patterns instead.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

#[macro_use]
mod view;

pub mod addr;
pub mod checksum;
pub mod error;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod parse;
pub mod tcp;
pub mod udp;

pub use error::WireError;
pub use ethernet::Frame as EthernetFrame;
pub use icmp::Packet as IcmpPacket;
pub use icmpv6::Packet as Icmpv6Packet;
pub use ipv4::Packet as Ipv4Packet;
pub use ipv6::Packet as Ipv6Packet;
pub use ipv6::{FragInfo, UpperLayer};
pub use parse::{parse, FlowKey, FragKind, IpVersion, ParsedPacket};
pub use tcp::Packet as TcpPacket;
pub use udp::Packet as UdpPacket;

/// IP protocol numbers (IANA) used by the views.
pub mod ip_protocol {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 encapsulation (6in4).
    pub const IPV6: u8 = 41;
    /// Encapsulating Security Payload.
    pub const ESP: u8 = 50;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
}
