//! The addresses and MACs golden tests and benches build frames with, as
//! `pipelines/l4lb.toml`, [`Fixture::small_lb`](crate::Fixture::small_lb)
//! and `scripts/lab.sh` assign them, and the harness's port MACs; and the
//! RFC 6052 address examples.

/// The harness's port MACs: 02:00:00:00:ff:0N for config interface N
/// ([`Harness::new`](crate::Harness::new) without ports).
pub const PORT0_MAC: [u8; 6] = [2, 0, 0, 0, 0xff, 0];
pub const PORT1_MAC: [u8; 6] = [2, 0, 0, 0, 0xff, 1];
/// The source MAC of client frames (Shunt checks only the destination).
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 9, 9];
/// The client side's next hop, l4lb's `return_next_hop_mac`.
pub const CLIENT_ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
/// shunt-be1 (10.0.2.11, fd00:2::11), as `pin_backend_macs` pins it.
pub const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0x0b];

/// shunt-client.
pub const CLIENT: [u8; 4] = [10, 0, 1, 2];
/// Service `web`.
pub const VIP: [u8; 4] = [10, 0, 100, 1];
/// The one address of `small_lb`'s IPv4 pool.
pub const SNAT: [u8; 4] = [10, 0, 3, 7];
/// shunt-be1.
pub const BACKEND: [u8; 4] = [10, 0, 2, 11];
/// shunt-client6 (fd00:6::2).
pub const CLIENT6: [u8; 16] = [0xfd, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// Service `web6` (fd00:100::1).
pub const VIP6: [u8; 16] = [0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The one address of `small_lb`'s IPv6 pool (fd00:3::7).
pub const SNAT6: [u8; 16] = [0xfd, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
/// shunt-be1 (fd00:2::11).
pub const BACKEND6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11];

/// 64:ff9b::/96 + `a`: an IPv4 address under RFC 6052's Well-Known Prefix,
/// by hand (bytes 12-15).
pub fn wkp(a: [u8; 4]) -> [u8; 16] {
    let mut v = [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    v[12..].copy_from_slice(&a);
    v
}

/// The IPv4 address of RFC 6052 §2.4's examples, 192.0.2.33.
pub const RFC6052_V4: [u8; 4] = [192, 0, 2, 33];

//= https://www.rfc-editor.org/rfc/rfc6052#section-2.4
//# +-----------------------+------------+------------------------------+
//# | Network-Specific      |    IPv4    | IPv4-embedded IPv6 address   |
//# | Prefix                |   address  |                              |
//# +-----------------------+------------+------------------------------+
//# | 2001:db8::/32         | 192.0.2.33 | 2001:db8:c000:221::          |
//# | 2001:db8:100::/40     | 192.0.2.33 | 2001:db8:1c0:2:21::          |
//# | 2001:db8:122::/48     | 192.0.2.33 | 2001:db8:122:c000:2:2100::   |
//# | 2001:db8:122:300::/56 | 192.0.2.33 | 2001:db8:122:3c0:0:221::     |
//# | 2001:db8:122:344::/64 | 192.0.2.33 | 2001:db8:122:344:c0:2:2100:0 |
//# | 2001:db8:122:344::/96 | 192.0.2.33 | 2001:db8:122:344::192.0.2.33 |
//# +-----------------------+------------+------------------------------+
/// That table, one row per prefix length: (prefix, length, the address
/// [`RFC6052_V4`] embeds to).
pub const RFC6052_EXAMPLES: [(&str, u8, &str); 6] = [
    ("2001:db8::", 32, "2001:db8:c000:221::"),
    ("2001:db8:100::", 40, "2001:db8:1c0:2:21::"),
    ("2001:db8:122::", 48, "2001:db8:122:c000:2:2100::"),
    ("2001:db8:122:300::", 56, "2001:db8:122:3c0:0:221::"),
    ("2001:db8:122:344::", 64, "2001:db8:122:344:c0:2:2100:0"),
    ("2001:db8:122:344::", 96, "2001:db8:122:344::192.0.2.33"),
];
