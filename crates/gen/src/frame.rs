//! The generator's packets: one Ethernet + IPv4 + UDP template written into
//! every UMEM frame once, and a per-packet stamp that writes only what makes
//! a flow a flow — source address and source port — and the two checksums.
//!
//! The checksums are not recomputed over the packet: everything but the
//! source address and port is the same in every packet, so its one's
//! complement sum is computed once ([`Template::new`]) and each stamp adds
//! the words that change. That is the RFC 1071 sum itself, not an RFC 1624
//! update, so no stale checksum is ever read back from a frame.
//!
//! The first 8 payload bytes carry the submit time (CLOCK_MONOTONIC
//! nanoseconds, big-endian; 0 = none), so a sink on the same host can
//! measure one-way latency through a device under test: the lab's XDP
//! counter reads it with `bpf_ktime_get_ns()`, the same clock.

use core::net::Ipv4Addr;

use shunt::wire::checksum;
use shunt::wire::ethernet::{self, ETHERTYPE_IPV4};
use shunt::wire::{ip_protocol, ipv4, udp};

/// Ethernet + IPv4 (no options) + UDP headers.
pub const HEADERS_LEN: usize = ethernet::HEADER_LEN + 20 + udp::HEADER_LEN;
/// Shortest frame without FCS (Ethernet minimum 64 with FCS).
pub const MIN_FRAME: usize = 60;

/// Where the IPv4 and UDP headers start in the frame.
const IP_AT: usize = ethernet::HEADER_LEN;
const UDP_AT: usize = HEADERS_LEN - udp::HEADER_LEN;
/// The submit time: the first 8 payload bytes.
const TIMESTAMP: core::ops::Range<usize> = HEADERS_LEN..HEADERS_LEN + 8;

/// Addresses and ports common to every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
    /// Frame length without FCS, `MIN_FRAME..`.
    pub size: usize,
}

/// The constant part of every packet and its precomputed partial sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    pub header: Header,
    /// Folded sum of the IPv4 header with source address and checksum zero.
    ip_sum: u32,
    /// Folded sum of the UDP pseudo-header and datagram with source address,
    /// source port and checksum zero.
    udp_sum: u32,
}

impl Template {
    /// Writes the template into `frame` (exactly `header.size` bytes are
    /// meaningful) and returns it with its partial sums. `None` when the
    /// frame is shorter than the packet or the size is below [`MIN_FRAME`]
    /// or above what IPv4 can carry.
    pub fn new(header: Header, frame: &mut [u8]) -> Option<Template> {
        let size = header.size;
        if size < MIN_FRAME || size > usize::from(u16::MAX) + ethernet::HEADER_LEN || frame.len() < size {
            return None;
        }
        let frame = &mut frame[..size];
        frame.fill(0);
        {
            let mut eth = ethernet::Frame::new_unchecked(&mut *frame);
            eth.set_dst_addr(header.dst_mac);
            eth.set_src_addr(header.src_mac);
            eth.set_ethertype(ETHERTYPE_IPV4);
        }
        let ip_len = size - ethernet::HEADER_LEN;
        // The header as every packet has it, source 0.0.0.0: its checksum,
        // complemented, is the sum of all it shares with them.
        let ip = ipv4::Repr {
            tos: 0,
            total_len: ip_len as u16,
            ident: 0,
            flags_frag: ipv4::Repr::DF,
            ttl: 64,
            protocol: ip_protocol::UDP,
            src: Ipv4Addr::UNSPECIFIED,
            dst: header.dst_ip,
        };
        ip.emit(&mut frame[IP_AT..]).ok()?;
        let ip_sum = u32::from(!ipv4::Packet::new_unchecked(&frame[IP_AT..]).checksum());
        let udp_len = ip_len - 20;
        let payload_at = HEADERS_LEN;
        // A recognisable payload rather than zeros, so the checksums cover
        // something: "shunt-gen" repeated.
        for (i, b) in frame[payload_at..].iter_mut().enumerate() {
            *b = b"shunt-gen "[i % 10];
        }
        // The timestamp slot sums as zero; each stamp adds its value.
        frame[TIMESTAMP].fill(0);
        {
            let mut u = udp::Packet::new_unchecked(&mut frame[UDP_AT..]);
            u.set_src_port(0);
            u.set_dst_port(header.dst_port);
            u.set_len(udp_len as u16);
            u.set_checksum(0);
        }
        let pseudo = checksum::pseudo_header_v4(
            Ipv4Addr::UNSPECIFIED,
            header.dst_ip,
            ip_protocol::UDP,
            udp_len as u16,
        );
        let udp_sum = u32::from(checksum::fold(pseudo + checksum::sum(&frame[UDP_AT..])));
        Some(Template { header, ip_sum, udp_sum })
    }

    /// Makes the template in `frame` the packet of flow (`src`, `sport`)
    /// sent at `time_ns`: writes the source address, source port, the
    /// timestamp and both checksums. Returns false (and writes nothing) if
    /// `frame` is too short to hold them.
    #[inline]
    pub fn stamp(&self, frame: &mut [u8], src: u32, sport: u16, time_ns: u64) -> bool {
        let Some(h) = frame.get_mut(..TIMESTAMP.end) else { return false };
        let (hi, lo) = (src >> 16, src & 0xFFFF);
        let t = (0..4).map(|i| ((time_ns >> (16 * i)) & 0xFFFF) as u32).sum::<u32>();
        let ip_csum = !checksum::fold(self.ip_sum + hi + lo);
        // A computed UDP checksum of zero is sent as all ones (RFC 768).
        let udp_csum = checksum::udp_encode(!checksum::fold(self.udp_sum + hi + lo + u32::from(sport) + t));
        let mut ip = ipv4::Packet::new_unchecked(&mut h[IP_AT..]);
        ip.set_src_addr(Ipv4Addr::from(src));
        ip.set_checksum(ip_csum);
        let mut u = udp::Packet::new_unchecked(&mut h[UDP_AT..]);
        u.set_src_port(sport);
        u.set_checksum(udp_csum);
        h[TIMESTAMP].copy_from_slice(&time_ns.to_be_bytes());
        true
    }
}

/// Walks the flows in a fixed order: source port first (`ports` of them from
/// `base_port`), then the next source address; after `flows` flows it starts
/// over. Flow `i` is (`base_ip + i / ports`, `base_port + i % ports`), so
/// any `flows` consecutive packets are `flows` distinct 5-tuples.
#[derive(Debug, Clone)]
pub struct Flows {
    base_ip: u32,
    base_port: u16,
    ports: u32,
    flows: u32,
    i: u32,
    ip: u32,
    port: u32,
}

impl Flows {
    /// `ports >= 1`, `flows >= 1`; the caller has checked that the last
    /// address and port do not wrap (see [`Flows::last`]).
    pub fn new(base_ip: Ipv4Addr, base_port: u16, ports: u32, flows: u32) -> Flows {
        let ports = ports.max(1);
        Flows { base_ip: u32::from(base_ip), base_port, ports, flows: flows.max(1), i: 0, ip: 0, port: 0 }
    }

    /// The last source address and port the walk uses, or `None` if either
    /// would wrap past 255.255.255.255 or port 65535.
    pub fn last(base_ip: Ipv4Addr, base_port: u16, ports: u32, flows: u32) -> Option<(Ipv4Addr, u16)> {
        let ports = ports.max(1);
        let used_ports = ports.min(flows.max(1));
        let port = u32::from(base_port).checked_add(used_ports - 1).filter(|&p| p <= 0xFFFF)?;
        let addrs = flows.max(1).div_ceil(ports);
        let ip = u32::from(base_ip).checked_add(addrs - 1)?;
        Some((Ipv4Addr::from(ip), port as u16))
    }

    /// The next flow's source address (host order) and port.
    #[inline]
    pub fn next_flow(&mut self) -> (u32, u16) {
        let out = (self.base_ip.wrapping_add(self.ip), self.base_port.wrapping_add(self.port as u16));
        self.i += 1;
        if self.i == self.flows {
            self.i = 0;
            self.ip = 0;
            self.port = 0;
        } else {
            self.port += 1;
            if self.port == self.ports {
                self.port = 0;
                self.ip += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use shunt::wire::udp::Packet as Udp;
    use std::collections::HashSet;

    fn header(size: usize) -> Header {
        Header {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst_ip: Ipv4Addr::new(10, 12, 0, 1),
            dst_port: 9,
            size,
        }
    }

    /// Parses a stamped frame with the wire views and checks both checksums
    /// from scratch.
    fn verify(frame: &[u8], src: Ipv4Addr, sport: u16, size: usize) {
        let ip = ipv4::Packet::new_checked(&frame[ethernet::HEADER_LEN..size]).unwrap();
        assert!(ip.verify_checksum(), "IPv4 header checksum");
        assert_eq!(ip.src_addr(), src);
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 12, 0, 1));
        assert_eq!(usize::from(ip.total_len()), size - 14);
        let u = Udp::new_checked(ip.payload()).unwrap();
        assert_eq!(u.src_port(), sport);
        assert_eq!(u.dst_port(), 9);
        assert_ne!(u.checksum(), 0, "UDP checksum present");
        assert!(u.verify_checksum_v4(src, Ipv4Addr::new(10, 12, 0, 1)), "UDP checksum");
    }

    #[test]
    fn smallest_frame_is_exact_bytes() {
        let mut f = [0xAAu8; 2048];
        let t = Template::new(header(60), &mut f).unwrap();
        assert!(t.stamp(&mut f, u32::from(Ipv4Addr::new(10, 10, 1, 2)), 1024, 0));
        #[rustfmt::skip]
        let want: [u8; 40] = [
            2, 0, 0, 0, 0, 2,  2, 0, 0, 0, 0, 1,  0x08, 0x00,
            0x45, 0, 0, 46,  0, 0, 0x40, 0,  64, 17, 0x25, 0xa7,  10, 10, 1, 2,  10, 12, 0, 1,
            0x04, 0x00,  0, 9,  0, 26,
        ];
        assert_eq!(f[..40], want);
        verify(&f, Ipv4Addr::new(10, 10, 1, 2), 1024, 60);
        assert_eq!(&f[42..50], &[0; 8], "no timestamp");
        assert_eq!(&f[50..52], b"n ");
        assert_eq!(f[60], 0xAA, "nothing written past the frame");
    }

    #[test]
    fn bad_sizes_are_refused() {
        let mut f = [0u8; 2048];
        assert!(Template::new(header(59), &mut f).is_none());
        assert!(Template::new(header(2049), &mut f).is_none());
        assert!(Template::new(header(2048), &mut f).is_some());
        let t = Template::new(header(60), &mut f).unwrap();
        assert!(!t.stamp(&mut f[..49], 1, 1, 1));
    }

    #[test]
    fn flows_cycle_ports_then_addresses() {
        let base = Ipv4Addr::new(10, 10, 1, 2);
        let mut w = Flows::new(base, 65534, 2, 5);
        let got: Vec<_> = (0..6).map(|_| w.next_flow()).collect();
        let ip = |d| u32::from(Ipv4Addr::new(10, 10, 1, d));
        assert_eq!(
            got,
            [(ip(2), 65534), (ip(2), 65535), (ip(3), 65534), (ip(3), 65535), (ip(4), 65534), (ip(2), 65534)]
        );
        assert_eq!(Flows::last(base, 65534, 2, 5), Some((Ipv4Addr::new(10, 10, 1, 4), 65535)));
        assert_eq!(Flows::last(base, 65535, 2, 5), None, "port wraps");
        assert_eq!(Flows::last(Ipv4Addr::BROADCAST, 1, 2, 3), None, "address wraps");
        assert_eq!(Flows::last(base, 65535, 64512, 1), Some((base, 65535)), "one flow uses one port");
    }

    proptest! {
        /// Every stamped packet checks out from scratch, whatever flow and
        /// size, and restamping a used frame leaves no trace of the old flow.
        #[test]
        fn stamped_checksums_are_valid(size in 60usize..=1514, a in any::<u32>(), pa in any::<u16>(),
                                       ta in any::<u64>(), b in any::<u32>(), pb in any::<u16>(),
                                       tb in any::<u64>()) {
            let mut f = vec![0u8; 2048];
            let t = Template::new(header(size), &mut f).unwrap();
            t.stamp(&mut f, a, pa, ta);
            verify(&f, Ipv4Addr::from(a), pa, size);
            prop_assert_eq!(&f[42..50], &ta.to_be_bytes()[..]);
            t.stamp(&mut f, b, pb, tb);
            verify(&f, Ipv4Addr::from(b), pb, size);
            prop_assert_eq!(&f[42..50], &tb.to_be_bytes()[..]);
        }

        /// `flows` consecutive flows are exactly `flows` distinct tuples, all
        /// within the range `last` reports, and the walk then repeats.
        #[test]
        fn walk_has_exactly_n_distinct_flows(flows in 1u32..3000, ports in 1u32..700, port in 0u16..60000) {
            let base = Ipv4Addr::new(10, 0, 0, 1);
            prop_assume!(Flows::last(base, port, ports, flows).is_some());
            let (last_ip, last_port) = Flows::last(base, port, ports, flows).unwrap();
            let mut w = Flows::new(base, port, ports, flows);
            let first: Vec<_> = (0..flows).map(|_| w.next_flow()).collect();
            let set: HashSet<_> = first.iter().copied().collect();
            prop_assert_eq!(set.len(), flows as usize);
            for &(ip, p) in &first {
                prop_assert!(ip >= u32::from(base) && ip <= u32::from(last_ip));
                prop_assert!(p >= port && p <= last_port);
            }
            prop_assert!(first.contains(&(u32::from(last_ip), (port as u32 + ((flows - 1) % ports)) as u16)));
            let again: Vec<_> = (0..flows).map(|_| w.next_flow()).collect();
            prop_assert_eq!(first, again);
        }
    }
}
