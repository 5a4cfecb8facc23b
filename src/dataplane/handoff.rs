//! Cross-worker handoff by frame descriptor (VPP NAT44-ED style).
//!
//! SNAT ports are partitioned per worker, so the owner of a reply is known
//! from its destination port. RSS may deliver the reply to another worker;
//! that worker passes the descriptor — not the bytes — to the owner, which
//! runs its pipelines over the frame in place (the frame lives in the
//! source worker's UMEM) and passes the verdict back. The source transmits
//! or frees the frame, because only its sockets can use its UMEM.
//!
//! Frames travel as move-only [`Frame`] handles, and every worker holds
//! (through the mesh) a reference to every worker's UMEM: a worker that
//! stops first leaves its memory mapped for as long as any other worker
//! may still be touching a frame it handed over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_queue::ArrayQueue;

use crate::pipeline::{DropReason, TailBuf, UmemView, MAX_TAIL};
use crate::xsk::umem::UmemArea;
use crate::xsk::Frame;

/// Frames one worker may have in flight to another.
pub const IN_FLIGHT: usize = 1024;

/// The rest of a chained frame (multi-buffer) whose first buffer travels:
/// its length, and where its source parked its later buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// Bytes after the first buffer (0: a frame of one buffer).
    pub more: u32,
    /// The source's [`Parked`] slot holding the later buffers.
    pub slot: u16,
}

impl Chain {
    pub const NONE: Chain = Chain { more: 0, slot: u16::MAX };
}

#[derive(Debug)]
pub struct Handed {
    pub frame: Frame,
    pub len: u32,
    pub chain: Chain,
    /// The interface the frame arrived on at its source (index into
    /// `Config::interfaces`; `u16::MAX`: unknown). An ICMP error or reset
    /// the owner builds in the packet's place goes back out of it.
    pub ingress: u16,
}

#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Transmit on this interface (index into `Config::interfaces`).
    Transmit(u16),
    Drop(DropReason),
    /// The owner kept a copy (a held fragment): free the frame, count nothing.
    Consumed,
    /// Not this worker's: the source hands it on to this worker (an ICMPv6
    /// error looking for its NAT64 session, `pipeline::lb`), or drops it
    /// when that would not move it further round the workers.
    Pass(u16),
}

#[derive(Debug)]
pub struct Returned {
    pub frame: Frame,
    pub len: u32,
    pub outcome: Outcome,
    /// As handed, with `more` 0 when the owner replaced the packet by one
    /// of a single buffer (its later buffers are then freed, not sent).
    pub chain: Chain,
    /// As handed.
    pub ingress: u16,
}

/// The later buffers of chained frames a worker handed over: only the
/// first buffer travels (stages read headers there), so the source keeps
/// the rest until the frame comes back, then sends or frees them with it.
/// Sized for every frame that may be in flight; never grows.
pub struct Parked {
    bufs: Vec<[TailBuf; MAX_TAIL]>,
    n: Vec<u8>,
    free: Vec<u16>,
}

impl Parked {
    /// Room for `slots` chains (at most `u16::MAX`).
    pub fn new(slots: usize) -> Parked {
        let slots = slots.min(usize::from(u16::MAX));
        Parked {
            bufs: vec![[(0, 0); MAX_TAIL]; slots],
            n: vec![0; slots],
            free: (0..slots as u16).rev().collect(),
        }
    }

    /// Keeps `tail`; the slot to take it back by, None when full.
    pub fn park(&mut self, tail: &[TailBuf]) -> Option<u16> {
        if tail.len() > MAX_TAIL {
            return None;
        }
        let slot = self.free.pop()?;
        let i = usize::from(slot);
        self.bufs[i][..tail.len()].copy_from_slice(tail);
        self.n[i] = tail.len() as u8;
        Some(slot)
    }

    /// Takes back what slot `slot` holds (empty for an unknown or free slot).
    pub fn take(&mut self, slot: u16) -> &[TailBuf] {
        let i = usize::from(slot);
        let Some(n) = self.n.get_mut(i) else { return &[] };
        let n = std::mem::take(n);
        if n == 0 {
            return &[];
        }
        self.free.push(slot);
        &self.bufs[i][..usize::from(n)]
    }

    /// Buffers parked now, in all chains.
    pub fn buffers(&self) -> usize {
        self.n.iter().map(|&n| usize::from(n)).sum()
    }

    /// Chains parked now.
    pub fn len(&self) -> usize {
        self.bufs.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One worker's UMEM as the others see it: a view to reach frame bytes,
/// and a share of the mapping that keeps the view valid.
pub struct PeerUmem {
    pub view: UmemView,
    _area: Arc<UmemArea>,
}

impl PeerUmem {
    /// `view` must lie inside `area`.
    pub fn new(view: UmemView, area: Arc<UmemArea>) -> PeerUmem {
        PeerUmem { view, _area: area }
    }
}

/// The rings between one ordered pair of workers. Each ring has exactly one
/// producer and one consumer thread.
pub struct Link {
    pub to_owner: ArrayQueue<Handed>,
    /// Twice IN_FLIGHT: the source admits a frame only while fewer than
    /// IN_FLIGHT are out, so the owner's push back can never fail.
    pub back: ArrayQueue<Returned>,
}

/// All links between `n` workers, and each worker's UMEM.
pub struct Mesh {
    n: usize,
    links: Vec<Link>,
    /// Set once every worker has mapped its UMEM, before any packet flows;
    /// unmapped only when the last worker drops the mesh.
    pub umems: OnceLock<Vec<PeerUmem>>,
    /// Per worker: asleep in poll(2), and the eventfd that wakes it, so a
    /// handed frame never waits for the sleeper's timeout.
    sleeping: Vec<AtomicBool>,
    wake_fds: Vec<i32>,
    /// Per worker: has handed its last frame (left its loop and drained),
    /// and has left for good (serves nothing more, or died).
    stopped: Vec<AtomicBool>,
    gone: Vec<AtomicBool>,
}

/// Marks a worker gone when its thread ends, however it ends (a panic
/// included), so no peer waits on it.
pub struct Membership {
    mesh: Arc<Mesh>,
    worker: usize,
}

impl Membership {
    pub fn new(mesh: Arc<Mesh>, worker: usize) -> Membership {
        Membership { mesh, worker }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.mesh.stop_handing(self.worker);
        if let Some(g) = self.mesh.gone.get(self.worker) {
            g.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for &fd in &self.wake_fds {
            if fd >= 0 {
                // SAFETY: `fd` is an eventfd this Mesh created and owns.
                unsafe { libc::close(fd) };
            }
        }
    }
}

impl Mesh {
    pub fn new(n: usize) -> Mesh {
        let links = (0..n * n)
            .map(|_| Link { to_owner: ArrayQueue::new(IN_FLIGHT), back: ArrayQueue::new(2 * IN_FLIGHT) })
            .collect();
        // SAFETY: eventfd(2) with valid flags; -1 on failure is handled
        // (a worker without one just sleeps until its timeout).
        let wake_fds =
            (0..n).map(|_| unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }).collect();
        Mesh {
            n,
            links,
            umems: OnceLock::new(),
            sleeping: (0..n).map(|_| AtomicBool::new(false)).collect(),
            wake_fds,
            stopped: (0..n).map(|_| AtomicBool::new(false)).collect(),
            gone: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// The fd worker `w` adds to its poll set while asleep.
    pub fn wake_fd(&self, w: usize) -> i32 {
        self.wake_fds.get(w).copied().unwrap_or(-1)
    }

    /// Marks worker `w` asleep or awake. Going to sleep returns whether it
    /// may: false if frames arrived for it meanwhile (no lost wakeup).
    pub fn set_sleeping(&self, w: usize, asleep: bool) -> bool {
        let Some(flag) = self.sleeping.get(w) else { return false };
        flag.store(asleep, Ordering::SeqCst);
        if !asleep {
            let mut buf = 0u64;
            // SAFETY: reading 8 bytes into a u64 from a nonblocking eventfd.
            unsafe { libc::read(self.wake_fd(w), (&mut buf as *mut u64).cast(), 8) };
            return true;
        }
        (0..self.n).all(|o| {
            self.link(o, w).is_none_or(|l| l.to_owner.is_empty())
                && self.link(w, o).is_none_or(|l| l.back.is_empty())
        })
    }

    /// Wakes worker `w` if it sleeps: one syscall, only for sleepers.
    pub fn wake(&self, w: usize) {
        if self.sleeping.get(w).is_some_and(|f| f.load(Ordering::SeqCst)) {
            let one = 1u64;
            // SAFETY: writing 8 bytes from a u64 to an eventfd.
            unsafe { libc::write(self.wake_fd(w), (&one as *const u64).cast(), 8) };
        }
    }

    /// Worker `w` hands no more frames (it left its loop and drained).
    pub fn stop_handing(&self, w: usize) {
        if let Some(s) = self.stopped.get(w) {
            s.store(true, Ordering::SeqCst);
        }
    }

    /// Whether no worker will hand another frame.
    pub fn all_stopped(&self) -> bool {
        self.stopped.iter().all(|s| s.load(Ordering::SeqCst))
    }

    /// Whether no peer has frames waiting for worker `w` to serve.
    pub fn inbound_empty(&self, w: usize) -> bool {
        (0..self.n).all(|o| self.link(o, w).is_none_or(|l| l.to_owner.is_empty()))
    }

    /// Whether worker `w` has left for good (finished, or died).
    pub fn is_gone(&self, w: usize) -> bool {
        self.gone.get(w).is_none_or(|g| g.load(Ordering::SeqCst))
    }

    pub fn workers(&self) -> usize {
        self.n
    }

    /// The link carrying frames from worker `from` to worker `to`.
    pub fn link(&self, from: usize, to: usize) -> Option<&Link> {
        if from == to || from >= self.n || to >= self.n {
            return None;
        }
        self.links.get(from * self.n + to)
    }

    /// Hands a frame to `to`; gives it back (the caller drops the packet)
    /// when the link is full.
    pub fn hand(&self, from: usize, to: usize, h: Handed) -> Result<(), Handed> {
        let Some(l) = self.link(from, to) else { return Err(h) };
        if l.to_owner.len() + l.back.len() >= IN_FLIGHT {
            return Err(h);
        }
        l.to_owner.push(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_is_bounded_and_back_never_overflows() {
        let mesh = Mesh::new(2);
        let mut handed = 0;
        while mesh
            .hand(0, 1, Handed { frame: Frame::from_desc(handed), len: 60, chain: Chain::NONE, ingress: 0 })
            .is_ok()
        {
            handed += 1;
        }
        assert_eq!(handed as usize, IN_FLIGHT);
        let l = mesh.link(0, 1).unwrap();
        // The owner answers everything at once: the back ring has room.
        while let Some(h) = l.to_owner.pop() {
            l.back
                .push(Returned {
                    frame: h.frame,
                    len: h.len,
                    outcome: Outcome::Transmit(0),
                    chain: h.chain,
                    ingress: h.ingress,
                })
                .unwrap();
        }
        let refused =
            mesh.hand(0, 1, Handed { frame: Frame::from_desc(7), len: 60, chain: Chain::NONE, ingress: 0 });
        assert_eq!(
            refused.unwrap_err().frame.addr(),
            7,
            "returns still count as in flight; the frame comes back"
        );
        assert!(mesh.link(1, 1).is_none());
    }

    #[test]
    fn parked_tails_come_back_once_and_slots_are_reused() {
        let mut p = Parked::new(2);
        let a = p.park(&[(4096, 100), (8192, 50)]).unwrap();
        let b = p.park(&[(12288, 7)]).unwrap();
        assert!(p.park(&[(16384, 1)]).is_none(), "full: the caller drops the frame");
        assert_eq!(p.len(), 2);
        assert_eq!(p.take(a), &[(4096, 100), (8192, 50)]);
        assert!(p.take(a).is_empty(), "a slot gives its buffers back once");
        assert!(p.take(9).is_empty());
        let c = p.park(&[(20480, 3)]).unwrap();
        assert_eq!(c, a, "the freed slot is reused");
        assert_eq!(p.take(b), &[(12288, 7)]);
        assert_eq!(p.take(c), &[(20480, 3)]);
        assert!(p.is_empty());
    }
}
