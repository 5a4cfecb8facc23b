//! What the pipeline knows about a flow: its key (the parser's
//! [`FlowKey`], with its hash and the other direction's key), the entry
//! flags the two conntrack entries of a flow carry, the address family,
//! the translation a flow needs, the ids its traffic is counted under, and
//! the per-packet record ([`FlowMeta`]) stages hand to each other.
//!
//! A leaf: it imports nothing from the stages, so every stage, the rewrite
//! code and the tables can depend on it without depending on each other.

use std::num::NonZeroU16;

use super::maglev::flow_hash;
use crate::wire::checksum::Delta;
pub use crate::wire::ip_protocol as proto;
pub use crate::wire::parse::{FlowKey, FragKind};

/// What the pipeline adds to the parser's key: its hash and the other
/// direction's key.
impl FlowKey {
    /// The fixed-seed 5-tuple hash ([`flow_hash`]); reuse it for Maglev.
    #[inline]
    pub fn hash(&self) -> u64 {
        flow_hash(&self.src, &self.dst, self.sport, self.dport, self.proto)
    }

    /// The key of the other direction's entry: the packet rewritten by
    /// `nat`, reversed (ICMP becomes ICMPv6 and back when the flow changes
    /// family).
    #[inline]
    pub fn peer(&self, nat: &NatBinding, flags: EntryFlags) -> FlowKey {
        let proto = match (self.proto, flags.xlat()) {
            (proto::ICMPV6, Xlat::To4) => proto::ICMP,
            (proto::ICMP, Xlat::To6) => proto::ICMPV6,
            (p, _) => p,
        };
        FlowKey::new(nat.dst, nat.src, nat.dport, nat.sport, proto)
    }
}

/// NAT rewrite for the original direction: packets matching the key get
/// `src/sport/dst/dport` replaced by these; replies get the inverse. `flags`
/// of the entry (or the caller) says which halves apply.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatBinding {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

/// The checksum change a flow's NAT rewrite makes, worked out once when
/// the flow is created: every packet that hits the entry carries the
/// entry's key in its headers, so the words the rewrite replaces are the
/// same each time (VPP's NAT sessions keep the same two sums). Folded
/// RFC 1624 sums; zero for flows the rewrite does not serve this way
/// (translated ones).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatSums {
    /// The addresses: what the IPv4 header checksum takes. For a flow
    /// translated to IPv4, whose header is new, the binding's addresses
    /// summed from zero ([`Delta::add_ne`]); zero for one translated to
    /// IPv6.
    pub l3: Delta,
    /// The addresses and ports: what the TCP/UDP checksum takes.
    pub l4: Delta,
}

impl NatSums {
    /// The change of the flow's other direction, when its key and binding
    /// are this direction's binding and key swapped (a NAT binding within
    /// one family): the same words, summed the other way.
    #[inline]
    pub fn reversed(self) -> NatSums {
        NatSums { l3: self.l3.reversed(), l4: self.l4.reversed() }
    }
}

/// Where a key's entry can sit in the connection table: its two candidate
/// buckets and its tag. Worked out once per packet from the hash and used
/// by every pass over the batch (prefetching the tags, then the entry,
/// then the lookup); only the table makes one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Place {
    pub(super) b1: u32,
    pub(super) b2: u32,
    pub(super) tag: u32,
}

/// The flag byte of a conntrack entry. One definition for every bit: the
/// load balancer's, the translator's and the table's own.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct EntryFlags(u8);

impl EntryFlags {
    pub const NONE: EntryFlags = EntryFlags(0);
    /// This entry is the reply direction of its flow.
    pub const REPLY: EntryFlags = EntryFlags(0x01);
    /// The flow is source-NATed (its reply entry holds an SNAT port).
    pub const SNAT: EntryFlags = EntryFlags(0x02);
    /// Packets of this entry arrive IPv4 and leave IPv6.
    pub const TO6: EntryFlags = EntryFlags(0x04);
    /// Packets of this entry arrive IPv6 and leave IPv4.
    pub const TO4: EntryFlags = EntryFlags(0x08);
    /// Direct server return: the flow's replies bypass Shunt, so its state
    /// advances on client packets alone.
    pub const DSR: EntryFlags = EntryFlags(0x10);
    /// A NAT64 session hairpinned between two IPv6 clients through the
    /// pool (RFC 6146 §3.8): IPv6 in, IPv6 out by the IPv6 side.
    pub const HAIRPIN: EntryFlags = EntryFlags(0x20);
    /// The entry ages by the table's second timeout set (NAT64 sessions).
    pub const ALT_TIMEOUTS: EntryFlags = EntryFlags(0x40);
    /// The table reports the entry's death (`ConnTable::pop_dead`).
    pub const NOTIFY_ON_DEATH: EntryFlags = EntryFlags(0x80);

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn from_bits(bits: u8) -> EntryFlags {
        EntryFlags(bits)
    }

    /// Whether every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: EntryFlags) -> bool {
        self.0 & other.0 == other.0
    }

    #[inline]
    pub const fn union(self, other: EntryFlags) -> EntryFlags {
        EntryFlags(self.0 | other.0)
    }

    /// The family change the entry's packets need: HAIRPIN before TO6
    /// before TO4.
    #[inline]
    pub const fn xlat(self) -> Xlat {
        // Indexed by the byte shifted down two: TO6, TO4 and HAIRPIN land
        // on bits 0, 1 and 3 (DSR's bit 2 masked off). A load, not a chain
        // of tests, for the translated flows.
        const BY_BITS: [Xlat; 12] = [
            Xlat::None,
            Xlat::To6,
            Xlat::To4,
            Xlat::To6,
            Xlat::None,
            Xlat::None,
            Xlat::None,
            Xlat::None,
            Xlat::Hairpin,
            Xlat::Hairpin,
            Xlat::Hairpin,
            Xlat::Hairpin,
        ];
        const { assert!(Self::TO6.0 == 1 << 2 && Self::TO4.0 == 1 << 3 && Self::HAIRPIN.0 == 1 << 5) };
        if self.0 & (Self::HAIRPIN.0 | Self::TO6.0 | Self::TO4.0) == 0 {
            return Xlat::None; // nearly every entry: one test
        }
        BY_BITS[((self.0 >> 2) & 0b1011) as usize]
    }
}

impl std::ops::BitOr for EntryFlags {
    type Output = EntryFlags;
    fn bitor(self, rhs: EntryFlags) -> EntryFlags {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for EntryFlags {
    fn bitor_assign(&mut self, rhs: EntryFlags) {
        self.0 |= rhs.0;
    }
}

impl std::ops::BitAnd for EntryFlags {
    type Output = EntryFlags;
    fn bitand(self, rhs: EntryFlags) -> EntryFlags {
        EntryFlags(self.0 & rhs.0)
    }
}

/// Address-family translation a flow's packets need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Xlat {
    /// No family change.
    #[default]
    None,
    /// Arrives IPv4, leaves IPv6.
    To6,
    /// Arrives IPv6, leaves IPv4.
    To4,
    /// Arrives IPv6 and leaves IPv6 by the IPv6 side, its addresses and
    /// ports those the NAT64 pool gives both ends (RFC 6146 §3.8).
    Hairpin,
}

/// IP version of a packet's (outer) header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    #[default]
    V4,
    V6,
}

impl Family {
    /// Length of the fixed IP header: where the transport header starts
    /// when there are no options or extension headers.
    #[inline]
    pub const fn header_len(self) -> u16 {
        match self {
            Family::V4 => 20,
            Family::V6 => 40,
        }
    }

    #[inline]
    pub const fn is_v6(self) -> bool {
        matches!(self, Family::V6)
    }
}

macro_rules! stats_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("Stable id of a ", $what, ": indexes per-worker stats. `Option<", stringify!($name), ">` is two bytes; `None` is traffic counted under no ", $what, " (NAT64 sessions, SIIT).")]
        #[repr(transparent)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(NonZeroU16);

        impl $name {
            /// The id with this index; `None` for `u16::MAX`, the one index
            /// the niche takes.
            #[inline]
            pub const fn new(index: u16) -> Option<$name> {
                match NonZeroU16::new(index.wrapping_add(1)) {
                    Some(n) => Some($name(n)),
                    None => None,
                }
            }

            #[inline]
            pub const fn index(self) -> usize {
                self.0.get() as usize - 1
            }
        }
    };
}

stats_id!(ServiceId, "service");
stats_id!(BackendId, "backend");

/// What the flow stages learn about a packet and hand to the next stage
/// (VPP's buffer opaque).
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowMeta {
    pub kind: FlowKind,
    pub family: Family,
    pub l3: u16,
    pub l4: u16,
    pub tcp_flags: u8,
    pub key: FlowKey,
    pub hash: u64,
    /// The key's place in the connection table.
    pub place: Place,
    /// The flow's service and backend (for stats).
    pub service: Option<ServiceId>,
    pub backend: Option<BackendId>,
    /// The rewrite to apply: new source, source port, destination, destination port.
    pub nat: NatBinding,
    /// Its checksum change, from the flow's entry.
    pub sums: NatSums,
    /// Address family translation the flow needs.
    pub xlat: Xlat,
    /// ICMP/ICMPv6 type, when the packet is ICMP.
    pub icmp_type: u8,
    /// Next-hop MAC cached in the flow's entry (all zero = look it up).
    pub next_hop: [u8; 6],
    /// An ICMP error about the flow (its key is the quoted packet, reversed).
    pub related: bool,
    /// The frame's source MAC (replies must come from their flow's next hop).
    pub src_mac: [u8; 6],
    /// Where the packet sits in a fragment series: a later fragment has
    /// no L4 header to rewrite.
    pub frag: FragKind,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlowKind {
    /// Not looked up yet.
    #[default]
    Unknown,
    /// First packet of a flow to a VIP: service index.
    New(u16),
    /// Client → backend direction of a tracked flow.
    Original,
    /// Backend → client direction of a tracked flow.
    Reply,
    /// First packet from an IPv6 client through stateful NAT64.
    New64,
    /// A later fragment whose first fragment, earlier in this batch, opens
    /// its flow: looked up again once the flow exists.
    LaterOfNew,
    /// An ICMP error the dataplane generated about this packet: back out
    /// the port it came in on, to the MAC it came from.
    Bounce,
    /// A bounce that answers a new flow refused for want of an SNAT port,
    /// the flow's first refusal (the worker counts it as `snat_exhausted`).
    Refused,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_index_and_fit_in_two_bytes() {
        assert_eq!(std::mem::size_of::<Option<ServiceId>>(), 2);
        assert_eq!(ServiceId::new(0).map(ServiceId::index), Some(0));
        assert_eq!(BackendId::new(4095).map(BackendId::index), Some(4095));
        assert_eq!(ServiceId::new(u16::MAX), None);
    }

    #[test]
    fn flags_name_the_translation() {
        assert_eq!(EntryFlags::NONE.xlat(), Xlat::None);
        assert_eq!((EntryFlags::TO6 | EntryFlags::SNAT).xlat(), Xlat::To6);
        assert_eq!((EntryFlags::REPLY | EntryFlags::TO4).xlat(), Xlat::To4);
        assert!((EntryFlags::REPLY | EntryFlags::SNAT).contains(EntryFlags::SNAT));
        assert!(!EntryFlags::REPLY.contains(EntryFlags::REPLY | EntryFlags::SNAT));
        // Every byte: HAIRPIN wins over TO6, TO6 over TO4, other bits ignored.
        for bits in 0..=u8::MAX {
            let f = EntryFlags::from_bits(bits);
            let want = if f.contains(EntryFlags::HAIRPIN) {
                Xlat::Hairpin
            } else if f.contains(EntryFlags::TO6) {
                Xlat::To6
            } else if f.contains(EntryFlags::TO4) {
                Xlat::To4
            } else {
                Xlat::None
            };
            assert_eq!(f.xlat(), want, "{bits:#04x}");
        }
    }

    #[test]
    fn peer_key_swaps_icmp_family_with_the_flow() {
        let k = FlowKey::new([1; 16], [2; 16], 7, 7, proto::ICMP);
        let nat = NatBinding { src: [3; 16], dst: [4; 16], sport: 9, dport: 9 };
        assert_eq!(k.peer(&nat, EntryFlags::TO6).proto, proto::ICMPV6);
        assert_eq!(k.peer(&nat, EntryFlags::NONE), FlowKey::new([4; 16], [3; 16], 9, 9, proto::ICMP));
    }
}
