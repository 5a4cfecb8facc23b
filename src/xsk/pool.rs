//! The per-worker frame pool: every UMEM frame is, at any moment, in exactly
//! one place — this pool, a fill ring, an RX ring, a batch, a TX ring, or a
//! completion ring. Frames come back here from completions and drops and go
//! out to fill rings.

/// One UMEM frame held by userspace: the right to read, write, and give it
/// away. Neither `Copy` nor `Clone`; the functions that give a frame to the
/// pool or to a ring take it by value, so handing one frame out twice does
/// not compile. Same size as the address it wraps.
///
/// ```
/// # use shunt::xsk::FramePool;
/// let mut pool = FramePool::new(256, 2048);
/// let frame = pool.alloc().unwrap();
/// pool.free(frame);
/// ```
///
/// ```compile_fail
/// # use shunt::xsk::FramePool;
/// let mut pool = FramePool::new(256, 2048);
/// let frame = pool.alloc().unwrap();
/// pool.free(frame);
/// pool.free(frame); // moved: a double free is a compile error
/// ```
#[must_use = "a frame dropped on the floor is lost to the pool"]
#[derive(Debug, PartialEq, Eq)]
pub struct Frame(u64);

impl Frame {
    /// Takes ownership of the frame holding `addr` from a descriptor store
    /// that stops naming it: a ring slot just read, a batch slot being
    /// retired, a handoff message. One descriptor, one call.
    #[inline]
    pub fn from_desc(addr: u64) -> Frame {
        Frame(addr)
    }

    /// The UMEM offset this handle names (a frame base, or a packet start
    /// inside the frame).
    #[inline]
    pub fn addr(&self) -> u64 {
        self.0
    }

    /// Gives the frame to a descriptor store that tracks it by address (a
    /// ring slot, a batch slot); [`Frame::from_desc`] takes it back.
    #[inline]
    pub fn into_desc(self) -> u64 {
        self.0
    }
}

/// A LIFO of free frame base addresses (LIFO keeps recently used frames hot
/// in cache). Capacity is fixed at construction: pushing never allocates.
pub struct FramePool {
    free: Vec<u64>,
    frame_mask: u64,
    total: u32,
}

impl FramePool {
    /// A pool owning frames `0..count` of `frame_size` bytes each.
    pub fn new(count: u32, frame_size: u32) -> FramePool {
        debug_assert!(frame_size.is_power_of_two());
        let free = (0..count).rev().map(|i| u64::from(i) * u64::from(frame_size)).collect();
        FramePool { free, frame_mask: !(u64::from(frame_size) - 1), total: count }
    }

    /// Takes a free frame's base address.
    #[inline]
    pub fn alloc(&mut self) -> Option<Frame> {
        self.free.pop().map(Frame)
    }

    /// Returns a frame. Any address inside the frame is accepted (RX and
    /// completion descriptors carry data offsets, not frame bases).
    #[inline]
    pub fn free(&mut self, frame: Frame) {
        // Never grows: at most `total` frames exist, so capacity suffices.
        debug_assert!(self.free.len() < self.total as usize, "frame returned twice");
        if self.free.len() < self.free.capacity() {
            self.free.push(frame.0 & self.frame_mask);
        }
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    /// The base address of the frame holding `addr`.
    #[inline]
    pub fn frame_base(&self, addr: u64) -> u64 {
        addr & self.frame_mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A deterministic stand-in for the kernel: frames sit in "rings" for a
    /// while, come back at arbitrary offsets inside the frame, in any order.
    #[test]
    fn million_recycles_lose_and_duplicate_nothing() {
        const FRAMES: u32 = 4096;
        const SIZE: u32 = 2048;
        let mut pool = FramePool::new(FRAMES, SIZE);
        let mut in_flight: Vec<u64> = Vec::with_capacity(FRAMES as usize);
        let mut owner = vec![false; FRAMES as usize]; // true = outside the pool
        let mut rng = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut cycles = 0u32;
        while cycles < 1_000_000 {
            // Hand out a burst, as a fill ring refill would.
            for _ in 0..(next() % 64) {
                let Some(f) = pool.alloc() else { break };
                let f = f.into_desc();
                assert_eq!(f % u64::from(SIZE), 0, "pool hands out frame bases");
                let i = (f / u64::from(SIZE)) as usize;
                assert!(!owner[i], "frame {i} handed out twice");
                owner[i] = true;
                in_flight.push(f);
            }
            // Return a burst in random order, at a data offset inside the frame.
            for _ in 0..(next() % 64) {
                if in_flight.is_empty() {
                    break;
                }
                let k = (next() % in_flight.len() as u64) as usize;
                let f = in_flight.swap_remove(k);
                let i = (f / u64::from(SIZE)) as usize;
                owner[i] = false;
                pool.free(Frame::from_desc(f + 256 + next() % 1024));
                cycles += 1;
            }
        }
        for f in in_flight.drain(..) {
            pool.free(Frame::from_desc(f));
        }
        assert_eq!(pool.available(), FRAMES as usize);
        let mut all: Vec<u64> = std::iter::from_fn(|| pool.alloc().map(Frame::into_desc)).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), FRAMES as usize, "every frame exactly once");
    }

    #[test]
    fn exhaustion_and_return_keep_the_count() {
        let mut pool = FramePool::new(256, 4096);
        assert_eq!((pool.total(), pool.available()), (256, 256));
        let mut out: Vec<Frame> = std::iter::from_fn(|| pool.alloc()).collect();
        assert_eq!(out.len(), 256);
        assert_eq!(pool.available(), 0);
        assert!(pool.alloc().is_none(), "an empty pool hands out nothing");
        // A frame comes back at its packet offset; the pool keeps its base.
        let f = out.pop().unwrap();
        let base = f.addr();
        pool.free(Frame::from_desc(f.into_desc() + 256));
        assert_eq!(pool.available(), 1);
        assert_eq!(pool.alloc().map(Frame::into_desc), Some(base), "LIFO: the hot frame first");
        for f in out {
            pool.free(f);
        }
        assert_eq!(pool.available(), 255);
    }

    #[test]
    fn frame_handle_is_a_bare_offset() {
        assert_eq!(std::mem::size_of::<Frame>(), std::mem::size_of::<u64>());
        assert_eq!(std::mem::size_of::<Option<Frame>>(), std::mem::size_of::<Option<u64>>());
    }

    proptest! {
        #[test]
        fn frame_base_masks_offsets(frame in 0u64..1024, off in 0u64..4096) {
            let pool = FramePool::new(1024, 4096);
            prop_assert_eq!(pool.frame_base(frame * 4096 + off), frame * 4096);
        }
    }
}
