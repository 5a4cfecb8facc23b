//! In-memory rings standing in for an AF_XDP socket and the kernel behind
//! it, so the worker loop runs in unit tests. The test plays the kernel:
//! it delivers packets into fill-ring frames, sends what is on the TX ring
//! (or not, to fill it), and can hold completions back.

use std::collections::VecDeque;
use std::sync::Arc;

use super::umem::UmemArea;
use super::{Frame, PortIo};

/// Where a delivered packet starts in its frame (the kernel's XDP headroom).
pub const HEADROOM: u64 = 256;

/// Packets the wire offers on each RX poll: writes one into the buffer and
/// returns its length, or `None` when the wire is idle.
pub type Source = Box<dyn FnMut(&mut [u8]) -> Option<usize> + Send>;

pub struct FakePort {
    pub interface_idx: usize,
    area: Arc<UmemArea>,
    frame_size: u64,
    /// Capacity of each ring.
    pub ring: usize,
    pub fill: VecDeque<u64>,
    pub rx: VecDeque<(u64, u32)>,
    pub tx: VecDeque<(u64, u32)>,
    pub completion: VecDeque<u64>,
    tx_outstanding: u32,
    primed: bool,
    /// When false, TX kicks send nothing: the TX ring fills up.
    pub sending: bool,
    /// Offered on every RX poll, up to the poll's size.
    pub source: Option<Source>,
    /// Packets sent: the bytes of each, when `keep_sent` is set.
    pub sent: Vec<Vec<u8>>,
    pub keep_sent: bool,
    pub sent_count: u64,
    /// Packets the wire offered that found no fill-ring frame.
    pub dropped_no_fill: u64,
}

impl FakePort {
    pub fn new(interface_idx: usize, area: Arc<UmemArea>, frame_size: u32, ring: usize) -> FakePort {
        FakePort {
            interface_idx,
            area,
            frame_size: u64::from(frame_size),
            ring,
            fill: VecDeque::with_capacity(ring),
            rx: VecDeque::with_capacity(ring),
            tx: VecDeque::with_capacity(ring),
            completion: VecDeque::with_capacity(ring),
            tx_outstanding: 0,
            primed: false,
            sending: true,
            source: None,
            sent: Vec::new(),
            keep_sent: false,
            sent_count: 0,
            dropped_no_fill: 0,
        }
    }

    /// Frames held on this port's rings.
    pub fn held(&self) -> usize {
        self.fill.len() + self.rx.len() + self.tx.len() + self.completion.len()
    }

    fn bytes(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let end = (addr as usize).checked_add(len).filter(|&e| e <= self.area.len());
        let end = end.expect("descriptor inside UMEM");
        // SAFETY: `addr..end` lies inside the area (checked), which `self`
        // keeps mapped; the frame sits on one of this port's rings, so in
        // the model no one but the kernel (this code) touches it, and the
        // returned borrow ends before the frame is handed on.
        unsafe { std::slice::from_raw_parts_mut(self.area.base().add(addr as usize), end - addr as usize) }
    }

    /// The wire delivers `packet`: into a fill-ring frame, onto the RX ring.
    /// False when no frame or no RX slot was free (the packet is lost, as
    /// the kernel would drop it; the frame stays on the fill ring).
    pub fn deliver(&mut self, packet: &[u8]) -> bool {
        if self.rx.len() >= self.ring {
            return false;
        }
        let Some(base) = self.fill.pop_front() else {
            self.dropped_no_fill += 1;
            return false;
        };
        let base = base & !(self.frame_size - 1);
        let len = packet.len().min((self.frame_size - HEADROOM) as usize);
        self.bytes(base + HEADROOM, len).copy_from_slice(&packet[..len]);
        self.rx.push_back((base + HEADROOM, len as u32));
        true
    }

    /// The kernel sends what is on the TX ring, as far as the completion
    /// ring has room.
    pub fn send(&mut self) {
        while self.completion.len() < self.ring {
            let Some((addr, len)) = self.tx.pop_front() else { break };
            if self.keep_sent {
                let bytes = self.bytes(addr, len as usize).to_vec();
                self.sent.push(bytes);
            }
            self.sent_count += 1;
            self.completion.push_back(addr);
        }
    }

    fn offer(&mut self, n: u32) {
        let Some(mut source) = self.source.take() else { return };
        let mut buf = [0u8; 2048];
        for _ in 0..n {
            if self.fill.is_empty() || self.rx.len() >= self.ring {
                break;
            }
            let Some(len) = source(&mut buf) else { break };
            self.deliver(&buf[..len]);
        }
        self.source = Some(source);
    }
}

impl PortIo for FakePort {
    fn interface_idx(&self) -> usize {
        self.interface_idx
    }

    fn zero_copy(&self) -> bool {
        false
    }

    fn fd(&self) -> i32 {
        -1
    }

    fn tx_outstanding(&mut self) -> &mut u32 {
        &mut self.tx_outstanding
    }

    fn primed(&mut self) -> &mut bool {
        &mut self.primed
    }

    fn fill_pending(&self) -> u32 {
        self.fill.len() as u32
    }

    fn fill(&mut self, n: u32, mut next: impl FnMut() -> Option<Frame>) -> u32 {
        let mut put = 0;
        while put < n && self.fill.len() < self.ring {
            let Some(frame) = next() else { break };
            self.fill.push_back(frame.into_desc());
            put += 1;
        }
        put
    }

    fn fill_needs_wakeup(&self) -> bool {
        false
    }

    fn wake_fill(&mut self) {}

    fn complete(&mut self, n: u32, mut done: impl FnMut(Frame)) -> u32 {
        let mut got = 0;
        while got < n {
            let Some(addr) = self.completion.pop_front() else { break };
            done(Frame::from_desc(addr));
            got += 1;
        }
        got
    }

    fn receive(&mut self, n: u32, mut rx: impl FnMut(Frame, u32)) -> u32 {
        self.offer(n);
        let mut got = 0;
        while got < n {
            let Some((addr, len)) = self.rx.pop_front() else { break };
            rx(Frame::from_desc(addr), len);
            got += 1;
        }
        got
    }

    fn transmit(&mut self, n: u32, mut next: impl FnMut() -> Option<(Frame, u32)>) -> u32 {
        let mut put = 0;
        while put < n && self.tx.len() < self.ring {
            let Some((frame, len)) = next() else { break };
            self.tx.push_back((frame.into_desc(), len));
            put += 1;
        }
        put
    }

    fn tx_pending(&self) -> u32 {
        self.tx.len() as u32
    }

    fn tx_needs_wakeup(&self) -> bool {
        true
    }

    fn wake_tx(&mut self) {
        if self.sending {
            self.send();
        }
    }

    fn busy_poll(&mut self) -> bool {
        false
    }

    fn received(&mut self) {}
}
