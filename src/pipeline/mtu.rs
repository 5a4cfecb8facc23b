//! Each interface's L3 MTU and link state as the workers see them. The
//! control thread reads the kernel's values (sysfs) once a second and
//! stores them here when they change; workers load them with relaxed
//! atomic reads, so an MTU change or a link going down takes effect without
//! a restart, and the fast path takes no lock and makes no syscall.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering::Relaxed};
use std::sync::Arc;

/// The MTU assumed for an interface the kernel says nothing about.
pub const DEFAULT_MTU: u16 = 1500;

/// L3 MTUs and link states indexed like `Config::interfaces`.
#[derive(Debug)]
pub struct LinkMtus(Box<[AtomicU16]>, Box<[AtomicBool]>);

impl LinkMtus {
    /// Every link starts up (until the control thread reads otherwise).
    pub fn new(mtus: impl IntoIterator<Item = u16>) -> Arc<LinkMtus> {
        let mtus: Box<[AtomicU16]> = mtus.into_iter().map(AtomicU16::new).collect();
        let up = mtus.iter().map(|_| AtomicBool::new(true)).collect();
        Arc::new(LinkMtus(mtus, up))
    }

    /// Whether interface `iface` can transmit: up, with carrier, present
    /// (true when unknown).
    #[inline]
    pub fn is_up(&self, iface: usize) -> bool {
        self.1.get(iface).is_none_or(|u| u.load(Relaxed))
    }

    /// Stores a link state; returns true when it changed.
    pub fn set_up(&self, iface: usize, up: bool) -> bool {
        self.1.get(iface).is_some_and(|cell| cell.swap(up, Relaxed) != up)
    }

    /// The MTU of interface `iface` ([`DEFAULT_MTU`] when unknown).
    #[inline]
    pub fn get(&self, iface: usize) -> u16 {
        self.0.get(iface).map_or(DEFAULT_MTU, |m| m.load(Relaxed))
    }

    /// Stores a new value; returns the old one when it changed.
    pub fn set(&self, iface: usize, mtu: u16) -> Option<u16> {
        let cell = self.0.get(iface)?;
        let old = cell.swap(mtu, Relaxed);
        (old != mtu).then_some(old)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Longest Ethernet frame an interface of L3 MTU `mtu` carries: the MTU
/// plus the Ethernet header, plus one 802.1Q tag when the frame has one.
#[inline]
pub fn frame_limit(mtu: u16, frame: &[u8]) -> u32 {
    let tagged = matches!(frame.get(12..14), Some([0x81, 0x00] | [0x88, 0xa8]));
    u32::from(mtu) + 14 + if tagged { 4 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_reports_changes_only() {
        let m = LinkMtus::new([1500, 9000]);
        assert_eq!(m.set(0, 1500), None);
        assert_eq!(m.set(0, 1280), Some(1500));
        assert_eq!(m.get(0), 1280);
        assert_eq!(m.get(1), 9000);
        assert_eq!(m.get(7), DEFAULT_MTU);
        assert_eq!(m.set(7, 1400), None);
        assert!(m.is_up(1) && m.is_up(7));
        assert!(m.set_up(1, false));
        assert!(!m.set_up(1, false));
        assert!(!m.is_up(1) && m.is_up(0));
    }

    #[test]
    fn tagged_frames_may_be_four_bytes_longer() {
        let mut f = [0u8; 14];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(frame_limit(1500, &f), 1514);
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(frame_limit(1500, &f), 1518);
        assert_eq!(frame_limit(1500, &[]), 1514);
    }
}
