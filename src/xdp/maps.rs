//! Rust mirrors of the map keys and values in `xdp-redirect/shunt_maps.h`.
//! `tests` below compares their sizes with the compiled object's BTF map
//! definitions, so the two sides cannot drift apart silently.

use std::net::IpAddr;

/// `struct shunt_match_key`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MatchKey {
    /// IPv6, or IPv4-mapped IPv6 (::ffff:a.b.c.d).
    pub addr: [u8; 16],
    pub proto: u8,
    pub pad: u8,
    /// Network byte order; 0 = any port.
    pub port_be: u16,
}

/// `SHUNT_MATCH_FRAGMENT`: a [`MatchKey::pad`] marking the key that
/// redirects non-first fragments to (address, protocol).
pub const MATCH_FRAGMENT: u8 = 1;

impl MatchKey {
    /// The key under which later fragments to `dst` (protocol `proto`) are ours.
    pub fn fragments(dst: IpAddr, proto: u8) -> MatchKey {
        MatchKey { pad: MATCH_FRAGMENT, ..MatchKey::new(dst, proto, 0) }
    }
}

/// `SHUNT_NO_SOCKET_PASS` / `SHUNT_NO_SOCKET_DROP`: values of `shunt_no_socket[0]`.
pub const NO_SOCKET_PASS: u32 = 0;
pub const NO_SOCKET_DROP: u32 = 1;

/// `struct shunt_match_value`
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MatchValue {
    pub pipeline: u32,
    pub flags: u32,
}

/// Key data of `struct shunt_lpm_key` (aya's `lpm_trie::Key` adds prefixlen).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LpmAddr {
    pub addr: [u8; 16],
}

/// `struct shunt_lpm_value`
pub type LpmValue = MatchValue;

/// Key data of `struct shunt_route_key`: protocol and port (matched whole),
/// then the address prefix.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteKeyData {
    pub proto: u8,
    pub pad: u8,
    /// Network byte order; 0 = any port.
    pub port_be: u16,
    pub addr: [u8; 16],
}

/// `enum shunt_counter`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum XdpCounter {
    Redirected = 0,
    Passed = 1,
    RedirectFailed = 2,
    NotIp = 3,
}

impl XdpCounter {
    pub const ALL: [XdpCounter; 4] =
        [XdpCounter::Redirected, XdpCounter::Passed, XdpCounter::RedirectFailed, XdpCounter::NotIp];

    pub fn name(self) -> &'static str {
        match self {
            XdpCounter::Redirected => "redirected",
            XdpCounter::Passed => "passed",
            XdpCounter::RedirectFailed => "redirect_failed",
            XdpCounter::NotIp => "not_ip",
        }
    }
}

// SAFETY: plain #[repr(C)] data with no padding bytes (checked by size tests)
// and every bit pattern valid.
unsafe impl aya::Pod for MatchKey {}
// SAFETY: as above.
unsafe impl aya::Pod for MatchValue {}
// SAFETY: as above.
unsafe impl aya::Pod for LpmAddr {}
// SAFETY: as above.
unsafe impl aya::Pod for RouteKeyData {}

/// 16-byte form of an address as the XDP program sees it.
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl MatchKey {
    pub fn new(dst: IpAddr, proto: u8, port: u16) -> Self {
        MatchKey { addr: addr16(dst), proto, pad: 0, port_be: port.to_be() }
    }
}

/// (addr, prefixlen) as stored in the LPM trie: IPv4 prefixes are mapped.
pub fn lpm_key(net: IpAddr, prefix_len: u8) -> (u32, LpmAddr) {
    let len = match net {
        IpAddr::V4(_) => 96 + u32::from(prefix_len.min(32)),
        IpAddr::V6(_) => u32::from(prefix_len.min(128)),
    };
    (len, LpmAddr { addr: addr16(net) })
}

/// (prefixlen, data) of a prefix route as stored in `shunt_route_prefix`.
pub fn route_key(net: IpAddr, prefix_len: u8, proto: u8, port: u16) -> (u32, RouteKeyData) {
    let (len, addr) = lpm_key(net, prefix_len);
    (32 + len, RouteKeyData { proto, pad: 0, port_be: port.to_be(), addr: addr.addr })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Sizes the kernel object declares for each map, read from its BTF.
    fn map_sizes(name: &str) -> (u32, u32) {
        let obj = aya_obj::Object::parse(super::super::XDP_OBJECT).expect("embedded object parses");
        let map = obj.maps.get(name).unwrap_or_else(|| panic!("map {name} in object"));
        (map.key_size(), map.value_size())
    }

    #[test]
    fn rust_mirror_matches_c_header_sizes() {
        assert_eq!(map_sizes("shunt_match"), (size_of::<MatchKey>() as u32, size_of::<MatchValue>() as u32));
        assert_eq!(
            map_sizes("shunt_prefix"),
            (4 + size_of::<LpmAddr>() as u32, size_of::<LpmValue>() as u32)
        );
        assert_eq!(
            map_sizes("shunt_route_prefix"),
            (4 + size_of::<RouteKeyData>() as u32, size_of::<LpmValue>() as u32)
        );
        assert_eq!(size_of::<RouteKeyData>(), 20);
        assert_eq!(map_sizes("shunt_counters"), (4, 8));
        assert_eq!(size_of::<MatchKey>(), 20);
    }

    #[test]
    fn ipv4_is_mapped() {
        let k = MatchKey::new("10.0.0.1".parse().unwrap(), 6, 80);
        assert_eq!(&k.addr[10..], &[0xff, 0xff, 10, 0, 0, 1]);
        assert_eq!(k.port_be, 80u16.to_be());
        assert_eq!(lpm_key("192.0.2.0".parse().unwrap(), 28).0, 124);
    }
}
