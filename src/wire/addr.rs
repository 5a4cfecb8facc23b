//! The 16-byte address form every flow key, binding and table uses: IPv6
//! as is, IPv4 as `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2).

/// Whether `a` is an IPv4-mapped address.
#[inline]
pub fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff
}

/// The IPv4 address in the last four bytes.
#[inline]
pub fn v4_of(a: &[u8; 16]) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
}

/// `::ffff:a.b.c.d`. Built as one 128-bit value, so it is stored whole:
/// assembled byte by byte in memory, a 16-byte load of the result (a flow
/// key, on the packet path) would stall on store forwarding.
#[inline]
pub const fn mapped(a: [u8; 4]) -> [u8; 16] {
    (0xffff_u128 << 32 | u32::from_be_bytes(a) as u128).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_round_trips_and_is_recognised() {
        let a = mapped([192, 0, 2, 1]);
        assert_eq!(a, std::net::Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets());
        assert!(is_v4_mapped(&a));
        assert_eq!(v4_of(&a), [192, 0, 2, 1]);
        let mut b = a;
        b[9] = 1;
        assert!(!is_v4_mapped(&b));
    }
}
