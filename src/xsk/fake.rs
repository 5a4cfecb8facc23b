//! In-memory rings standing in for an AF_XDP socket and the kernel behind
//! it, so the worker loop runs in unit tests. The test plays the kernel:
//! it delivers packets into fill-ring frames, sends what is on the TX ring
//! (or not, to fill it), and can hold completions back.

use std::collections::VecDeque;
use std::sync::Arc;

use super::umem::UmemArea;
use super::{Frame, PortIo, TxNext, XDP_PKT_CONTD};

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
    /// Descriptors: address, length, options (`XDP_PKT_CONTD`).
    pub rx: VecDeque<(u64, u32, u32)>,
    pub tx: VecDeque<(u64, u32, u32)>,
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
    /// Whether the socket takes multi-buffer frames (`XDP_USE_SG`): a
    /// packet longer than one chunk is delivered as a chain; without it
    /// such a packet is dropped, as the kernel drops it.
    pub sg: bool,
    /// Packets longer than one chunk dropped for want of `sg`.
    pub dropped_too_long: u64,
    /// Bytes of the packet being sent whose last buffer is still to come.
    partial: Vec<u8>,
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
            sg: true,
            dropped_too_long: 0,
            partial: Vec::new(),
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

    /// The wire delivers `packet`: into fill-ring frames (one, or a chain
    /// of as many as it needs, each with the kernel's headroom), onto the
    /// RX ring. False when no frame or no RX slot was free (the packet is
    /// lost, as the kernel would drop it; the frames stay on the fill ring).
    pub fn deliver(&mut self, packet: &[u8]) -> bool {
        let per = (self.frame_size - HEADROOM) as usize;
        let bufs = packet.len().div_ceil(per).max(1);
        if bufs > 1 && !self.sg {
            self.dropped_too_long += 1;
            return false;
        }
        if self.rx.len() + bufs > self.ring {
            return false;
        }
        if self.fill.len() < bufs {
            self.dropped_no_fill += 1;
            return false;
        }
        let mut chunks = packet.chunks(per).peekable();
        if packet.is_empty() {
            return false;
        }
        while let Some(chunk) = chunks.next() {
            let Some(base) = self.fill.pop_front() else { return false };
            let base = base & !(self.frame_size - 1);
            self.bytes(base + HEADROOM, chunk.len()).copy_from_slice(chunk);
            let options = if chunks.peek().is_some() { XDP_PKT_CONTD } else { 0 };
            self.rx.push_back((base + HEADROOM, chunk.len() as u32, options));
        }
        true
    }

    /// The wire delivers a packet as a chain cut where the caller says:
    /// one buffer per piece (pieces must each fit a chunk). False as for
    /// [`FakePort::deliver`].
    pub fn deliver_pieces(&mut self, pieces: &[&[u8]]) -> bool {
        let per = (self.frame_size - HEADROOM) as usize;
        if pieces.is_empty() || pieces.iter().any(|p| p.is_empty() || p.len() > per) {
            return false;
        }
        if self.rx.len() + pieces.len() > self.ring || self.fill.len() < pieces.len() {
            return false;
        }
        for (k, piece) in pieces.iter().enumerate() {
            let Some(base) = self.fill.pop_front() else { return false };
            let base = base & !(self.frame_size - 1);
            self.bytes(base + HEADROOM, piece.len()).copy_from_slice(piece);
            let options = if k + 1 < pieces.len() { XDP_PKT_CONTD } else { 0 };
            self.rx.push_back((base + HEADROOM, piece.len() as u32, options));
        }
        true
    }

    /// The kernel sends what is on the TX ring, as far as the completion
    /// ring has room; a chain is one packet on the wire.
    pub fn send(&mut self) {
        while self.completion.len() < self.ring {
            let Some((addr, len, options)) = self.tx.pop_front() else { break };
            if self.keep_sent {
                let bytes = self.bytes(addr, len as usize).to_vec();
                self.partial.extend_from_slice(&bytes);
            }
            if options & XDP_PKT_CONTD == 0 {
                if self.keep_sent {
                    self.sent.push(std::mem::take(&mut self.partial));
                }
                self.sent_count += 1;
            }
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

    fn kick_fill(&mut self) -> bool {
        false
    }

    fn complete(&mut self, n: u32, mut done: impl FnMut(Frame)) -> u32 {
        let mut got = 0;
        while got < n {
            let Some(addr) = self.completion.pop_front() else { break };
            done(Frame::from_desc(addr));
            got += 1;
        }
        got
    }

    fn receive(&mut self, n: u32, mut rx: impl FnMut(Frame, u32, bool)) -> u32 {
        self.offer(n);
        let mut got = 0;
        while got < n {
            let Some((addr, len, options)) = self.rx.pop_front() else { break };
            let more = options & XDP_PKT_CONTD != 0;
            rx(Frame::from_desc(addr), len, more);
            got += u32::from(!more);
        }
        got
    }

    fn transmit<'a>(&mut self, n: u32, mut next: impl FnMut(u32) -> TxNext<'a>) -> u32 {
        let mut put = 0;
        while put < n && self.tx.len() < self.ring {
            let room = (self.ring - self.tx.len()).min((n - put) as usize) as u32;
            match next(room) {
                TxNext::Packet(frame, len, tail) => {
                    let options = if tail.is_empty() { 0 } else { XDP_PKT_CONTD };
                    self.tx.push_back((frame.into_desc(), len, options));
                    for (k, &(addr, len)) in tail.iter().enumerate() {
                        let options = if k + 1 < tail.len() { XDP_PKT_CONTD } else { 0 };
                        self.tx.push_back((addr, len, options));
                    }
                    put += 1 + tail.len() as u32;
                }
                TxNext::NoRoom | TxNext::Done => break,
            }
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
