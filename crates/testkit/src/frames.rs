//! Frame helpers shared by the golden, hostile and fuzz tests: a textbook
//! RFC 1071 checksum, independent of Shunt's incremental one (the oracle;
//! etherparse is the other), and small edits that etherparse's builder
//! cannot express.

/// RFC 1071 one's complement sum of big-endian 16-bit words (odd byte padded
/// on the right) on top of `acc`, folded to 16 bits. Deliberately the
/// textbook form.
pub fn ones_sum(data: &[u8], mut acc: u64) -> u16 {
    for c in data.chunks(2) {
        acc += u64::from(c[0]) << 8 | u64::from(*c.get(1).unwrap_or(&0));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data`: the complemented sum.
pub fn csum(data: &[u8]) -> u16 {
    !ones_sum(data, 0)
}

/// Sets IPv4 Identification and Flags/Fragment Offset of the header at `l3`
/// and recomputes its checksum (etherparse defaults to DF=1).
pub fn set_v4(f: &mut [u8], l3: usize, id: u16, flags_off: u16) {
    f[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
    f[l3 + 6..l3 + 8].copy_from_slice(&flags_off.to_be_bytes());
    f[l3 + 10..l3 + 12].fill(0);
    let c = csum(&f[l3..l3 + 20]);
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// The bytes an etherparse builder writes: `w(|v| builder.write(v, payload).unwrap())`.
pub fn w<F: FnOnce(&mut Vec<u8>)>(f: F) -> Vec<u8> {
    let mut v = Vec::new();
    f(&mut v);
    v
}

/// Hex dump for assertion messages.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}
