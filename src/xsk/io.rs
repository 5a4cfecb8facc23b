//! The port I/O the worker loop needs — RX, TX, fill and completion rings —
//! as a trait, so the loop runs over AF_XDP sockets in production and over
//! in-memory rings in tests. The worker is generic over it: static dispatch,
//! no per-packet cost.
//!
//! Ownership rule: a ring method that takes frames (`fill`, `transmit`)
//! calls its `next` only when a slot is free, so a frame it pulls is always
//! placed; one that yields frames (`receive`, `complete`) hands each one on
//! by value. Frames are never copied or lost at this boundary.

use xdpilone::xdp::XdpDesc;

use super::{Frame, Port};
use crate::config::MAX_CHAIN;
use crate::pipeline::TailBuf;

/// Descriptor option: more buffers of this packet follow (multi-buffer
/// AF_XDP, `XDP_PKT_CONTD` in `linux/if_xdp.h`).
pub const XDP_PKT_CONTD: u32 = 1;

/// What a transmit source offers when the ring has `room` free slots.
pub enum TxNext<'a> {
    /// A packet: its first buffer, that buffer's length, and the buffers
    /// after it (empty for a frame of one buffer). Offered only when
    /// `1 + tail.len()` slots are free: a chain goes on the ring whole.
    Packet(Frame, u32, &'a [TailBuf]),
    /// The next packet needs more slots than are free.
    NoRoom,
    /// Nothing more to send.
    Done,
}

pub trait PortIo {
    /// Index into `Config::interfaces`.
    fn interface_idx(&self) -> usize;
    fn zero_copy(&self) -> bool;
    /// The socket, for poll(2); -1 when there is none.
    fn fd(&self) -> i32;
    /// Frames handed to TX and not yet completed.
    fn tx_outstanding(&mut self) -> &mut u32;
    /// Whether the fill ring has been given frames at least once.
    fn primed(&mut self) -> &mut bool;

    /// Frames on the fill ring the kernel has not used yet.
    fn fill_pending(&self) -> u32;
    /// Puts up to `n` frames from `next` on the fill ring and publishes
    /// them; how many went.
    fn fill(&mut self, n: u32, next: impl FnMut() -> Option<Frame>) -> u32;
    /// Wakes the kernel to refill from the fill ring if the ring asks for
    /// it (`need_wakeup`); whether it did.
    fn kick_fill(&mut self) -> bool;
    /// Takes up to `n` frames the kernel has finished sending, each to `done`.
    fn complete(&mut self, n: u32, done: impl FnMut(Frame)) -> u32;

    /// Takes up to `n` received packets, descriptor by descriptor, each to
    /// `rx` with its length and whether more buffers of the same packet
    /// follow (`XDP_PKT_CONTD`); how many packets ended. Reading stops at
    /// the end of a packet, or when the ring is empty (possibly inside a
    /// chain whose rest the next call yields).
    fn receive(&mut self, n: u32, rx: impl FnMut(Frame, u32, bool)) -> u32;
    /// Puts packets from `next` on the TX ring, up to `n` descriptors, and
    /// publishes them; how many descriptors went (fewer when the ring is
    /// full). Each call to `next` says how many slots are free.
    fn transmit<'a>(&mut self, n: u32, next: impl FnMut(u32) -> TxNext<'a>) -> u32;
    /// Descriptors on the TX ring the kernel has not consumed yet.
    fn tx_pending(&self) -> u32;
    fn tx_needs_wakeup(&self) -> bool;
    fn wake_tx(&mut self);

    /// After an empty RX poll: lets the kernel run the queue's NAPI on this
    /// core (busy polling); whether it did.
    fn busy_poll(&mut self) -> bool;
    /// After a non-empty RX poll.
    fn received(&mut self);
}

impl PortIo for Port {
    #[inline]
    fn interface_idx(&self) -> usize {
        self.interface_idx
    }

    #[inline]
    fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    #[inline]
    fn fd(&self) -> i32 {
        Port::fd(self)
    }

    #[inline]
    fn tx_outstanding(&mut self) -> &mut u32 {
        &mut self.tx_outstanding
    }

    #[inline]
    fn primed(&mut self) -> &mut bool {
        &mut self.primed
    }

    #[inline]
    fn fill_pending(&self) -> u32 {
        self.fq_cq.pending()
    }

    #[inline]
    fn fill(&mut self, n: u32, mut next: impl FnMut() -> Option<Frame>) -> u32 {
        let mut fill = self.fq_cq.fill(n);
        let room = fill.capacity();
        let mut put = 0;
        // The first `capacity` inserts succeed: pull exactly that many.
        while put < room {
            let Some(frame) = next() else { break };
            fill.insert_once(frame.into_desc());
            put += 1;
        }
        fill.commit();
        put
    }

    #[inline]
    fn kick_fill(&mut self) -> bool {
        let asked = self.fq_cq.needs_wakeup();
        if asked {
            self.fq_cq.wake();
        }
        asked
    }

    #[inline]
    fn complete(&mut self, n: u32, mut done: impl FnMut(Frame)) -> u32 {
        let mut ring = self.fq_cq.complete(n);
        let mut got = 0;
        while let Some(addr) = ring.read() {
            done(Frame::from_desc(addr));
            got += 1;
        }
        ring.release();
        got
    }

    #[inline]
    fn receive(&mut self, n: u32, mut rx: impl FnMut(Frame, u32, bool)) -> u32 {
        // Room for `n` whole chains; a frame of one buffer reads as before.
        let mut ring = self.rx.receive(n.saturating_mul(MAX_CHAIN));
        let mut packets = 0;
        while packets < n {
            let Some(desc) = ring.read() else { break };
            let more = desc.options & XDP_PKT_CONTD != 0;
            rx(Frame::from_desc(desc.addr), desc.len, more);
            packets += u32::from(!more);
        }
        ring.release();
        packets
    }

    #[inline]
    fn transmit<'a>(&mut self, n: u32, mut next: impl FnMut(u32) -> TxNext<'a>) -> u32 {
        // Free slots as the kernel sees them. xdpilone reserves from its
        // cached view of the consumer and refreshes it only once that view
        // shows no slot at all, so a reservation can come up a few slots
        // short of a chain while the ring has room: the rest of the chain
        // then goes into a second reservation, which refreshes.
        let free = self.tx_size.saturating_sub(self.tx.pending()).min(n);
        if free == 0 {
            return 0;
        }
        let mut sent = 0;
        let mut tx = self.tx.transmit(free);
        let mut room = tx.capacity();
        while sent < free {
            let TxNext::Packet(frame, len, tail) = next(free - sent) else { break };
            let head = XdpDesc {
                addr: frame.into_desc(),
                len,
                options: if tail.is_empty() { 0 } else { XDP_PKT_CONTD },
            };
            let descs = std::iter::once(head).chain(tail.iter().enumerate().map(|(k, &(addr, len))| {
                XdpDesc { addr, len, options: if k + 1 < tail.len() { XDP_PKT_CONTD } else { 0 } }
            }));
            for desc in descs {
                if room == 0 {
                    tx.commit();
                    drop(tx);
                    tx = self.tx.transmit(free - sent);
                    room = tx.capacity();
                    // `free` slots were free and the kernel only frees more.
                    debug_assert!(room > 0, "TX ring shrank under a chain");
                }
                tx.insert_once(desc);
                room = room.saturating_sub(1);
                sent += 1;
            }
        }
        tx.commit();
        sent
    }

    #[inline]
    fn tx_pending(&self) -> u32 {
        self.tx.pending()
    }

    #[inline]
    fn tx_needs_wakeup(&self) -> bool {
        self.tx.needs_wakeup()
    }

    #[inline]
    fn wake_tx(&mut self) {
        self.tx.wake();
    }

    #[inline]
    fn busy_poll(&mut self) -> bool {
        self.busy_poll.poll(self.rx.as_raw_fd())
    }

    #[inline]
    fn received(&mut self) {
        if let super::BusyPoll::Probing { .. } = self.busy_poll {
            let fd = self.rx.as_raw_fd();
            self.busy_poll.learn_napi(fd, &self.interface, self.queue);
        }
    }
}
