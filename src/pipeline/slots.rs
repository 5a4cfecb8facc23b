//! The memory a table's slots live in: the heap, or part of a shared file
//! mapping that outlives the process (`crate::state`), so a restarted or
//! crashed process finds its flows where it left them.
//!
//! Either way a [`Slots`] derefs to a plain slice: the fast path sees no
//! difference and pays no branch. Invariant: `ptr..ptr+len` is valid,
//! aligned, initialised memory owned by this value alone (the heap
//! allocation, or a range of the mapping no other `Slots` covers), alive
//! as long as `backing` is.

use std::ptr::NonNull;
use std::sync::Arc;

use memmap2::MmapMut;

/// A shared mapping and what keeps it ours (the locked file behind it).
pub struct Region {
    map: MmapMut,
    _owner: Option<std::fs::File>,
}

impl Region {
    pub fn new(map: MmapMut, owner: Option<std::fs::File>) -> Region {
        Region { map, _owner: owner }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn base(&self) -> *const u8 {
        self.map.as_ptr()
    }
}

pub struct Slots<T> {
    ptr: NonNull<T>,
    len: usize,
    backing: Backing,
}

enum Backing {
    /// A `Box<[T]>` taken apart with `Box::into_raw`; rebuilt on drop.
    Heap,
    /// A range of this mapping; unmapped when the last user drops it.
    Mapped(#[allow(dead_code)] Arc<Region>),
}

// SAFETY: `Slots` owns its range exclusively (module invariant), like a
// `Box<[T]>`; the shared mapping behind an `Arc` is only kept alive, never
// accessed through the `Arc`.
unsafe impl<T: Send> Send for Slots<T> {}
// SAFETY: as above; `&Slots` only hands out `&[T]`.
unsafe impl<T: Sync> Sync for Slots<T> {}

impl<T: Copy> Slots<T> {
    /// `len` copies of `fill` on the heap.
    pub fn heap(fill: T, len: usize) -> Slots<T> {
        let boxed: Box<[T]> = vec![fill; len].into_boxed_slice();
        let len = boxed.len();
        let ptr = NonNull::new(Box::into_raw(boxed).cast::<T>()).unwrap_or(NonNull::dangling());
        Slots { ptr, len, backing: Backing::Heap }
    }

    /// `len` values of `T` at byte `offset` of `map`.
    ///
    /// # Safety
    ///
    /// `offset` is aligned for `T`, `offset + len * size_of::<T>()` is within
    /// the mapping, every value in that range is a valid `T`, and no other
    /// `Slots` or reference covers any of it while this one lives.
    pub unsafe fn mapped(map: &Arc<Region>, offset: usize, len: usize) -> Slots<T> {
        // SAFETY: the caller guarantees the range is inside the mapping;
        // writing through a pointer derived from a shared `Arc` is sound
        // because nothing else reads or writes that range.
        let base = unsafe { map.base().cast_mut().add(offset) };
        let ptr = NonNull::new(base.cast::<T>()).unwrap_or(NonNull::dangling());
        Slots { ptr, len, backing: Backing::Mapped(map.clone()) }
    }

    /// Whether the slots live in a mapping that survives the process.
    pub fn is_mapped(&self) -> bool {
        matches!(self.backing, Backing::Mapped(_))
    }
}

impl<T> std::ops::Deref for Slots<T> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: module invariant: valid, aligned, initialised, exclusively ours.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> std::ops::DerefMut for Slots<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for Slots<T> {
    fn drop(&mut self) {
        if let Backing::Heap = self.backing {
            let raw = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
            // SAFETY: `ptr`/`len` came from `Box::into_raw` of a `Box<[T]>`
            // in `heap` and were never handed out as owned since.
            drop(unsafe { Box::from_raw(raw) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_and_mapping_read_and_write_alike() {
        let mut h = Slots::heap(7u32, 5);
        h[4] = 9;
        assert_eq!(&h[..], &[7, 7, 7, 7, 9]);
        assert!(!h.is_mapped());
        let map = Arc::new(Region::new(MmapMut::map_anon(64).unwrap(), None));
        // SAFETY: 16 u32 at offset 0 of a 64-byte page-aligned mapping,
        // zero bytes are valid u32s, and nothing else uses the range.
        let mut m: Slots<u32> = unsafe { Slots::mapped(&map, 0, 16) };
        m[3] = 0x0102_0304;
        assert!(m.is_mapped());
        assert_eq!(&map.map[12..16], &0x0102_0304u32.to_ne_bytes());
        let empty = Slots::heap(0u8, 0);
        assert!(empty.is_empty());
    }
}
