//! Packet rewriting, in place: NAT of addresses and ports ([`nat`]), the
//! quote inside ICMP errors about a flow ([`related`]), and address-family
//! translation of tracked flows ([`xlat`]). Stages are thin adapters over
//! these; all checksums are updated incrementally (RFC 1624), through
//! [`Delta`], which adds each field's change as it writes it.

pub mod fragments;
pub mod nat;
pub mod related;
pub mod xlat;

pub use crate::wire::checksum::Delta;

pub fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

fn put16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    b.get_mut(at..at + 2)?.copy_from_slice(&v.to_be_bytes());
    Some(())
}
