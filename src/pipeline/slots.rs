//! The memory a table's slots live in: the heap, or part of a shared file
//! mapping that outlives the process (`crate::state`), so a restarted or
//! crashed process finds its flows where it left them.
//!
//! Either way a [`Slots`] derefs to a plain slice: the fast path sees no
//! difference and pays no branch. Invariant: `ptr..ptr+len` is valid,
//! aligned, initialised memory owned by this value alone (the heap
//! allocation, an anonymous mapping of its own, or a range of the shared
//! mapping no other `Slots` covers), alive as long as `backing` is.

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
    /// A private anonymous mapping of its own, advised for transparent huge
    /// pages; unmapped on drop.
    Anon(#[allow(dead_code)] MmapMut),
    /// A range of this mapping; unmapped when the last user drops it.
    Mapped(#[allow(dead_code)] Arc<Region>),
}

// SAFETY: `Slots` owns its range exclusively (module invariant), like a
// `Box<[T]>`; the shared mapping behind an `Arc` is only kept alive, never
// accessed through the `Arc`.
unsafe impl<T: Send> Send for Slots<T> {}
// SAFETY: as above; `&Slots` only hands out `&[T]`.
unsafe impl<T: Sync> Sync for Slots<T> {}

/// From this size on, slots get a mapping of their own backed by huge
/// pages where the kernel can: a table of random lookups larger than the
/// TLB covers in 4 KiB pages (1,536 entries, 6 MiB) misses the TLB on
/// nearly every lookup, and a 2 MiB page takes those misses away.
pub const HUGE_FROM: usize = 2 << 20;

impl<T: Copy> Slots<T> {
    /// `len` copies of `fill` in process memory: a huge-page mapping from
    /// [`HUGE_FROM`] bytes on, the heap below.
    pub fn heap(fill: T, len: usize) -> Slots<T> {
        let bytes = len.saturating_mul(core::mem::size_of::<T>());
        if bytes >= HUGE_FROM && core::mem::align_of::<T>() <= 4096 {
            if let Some(s) = Slots::anon(fill, len, bytes) {
                return s;
            }
        }
        let boxed: Box<[T]> = vec![fill; len].into_boxed_slice();
        let len = boxed.len();
        let ptr = NonNull::new(Box::into_raw(boxed).cast::<T>()).unwrap_or(NonNull::dangling());
        Slots { ptr, len, backing: Backing::Heap }
    }

    /// `len` copies of `fill` in an anonymous mapping of `bytes`, advised
    /// `MADV_HUGEPAGE` (with THP in `madvise` mode, the common default, only
    /// advised ranges get huge pages). `None` if the mapping fails: the
    /// caller falls back to the heap.
    fn anon(fill: T, len: usize, bytes: usize) -> Option<Slots<T>> {
        let mut map = MmapMut::map_anon(bytes).ok()?;
        // Without THP the advice fails and the 4 KiB pages serve as before.
        let _ = map.advise(memmap2::Advice::HugePage);
        // Moving `map` into `backing` below moves the handle, not the pages.
        let ptr = NonNull::new(map.as_mut_ptr().cast::<T>())?;
        for i in 0..len {
            // SAFETY: the mapping is page-aligned (so aligned for `T`, at most
            // 4096-aligned as checked by the caller), `bytes` long, and holds
            // `len` values of `T`; nothing else refers to it yet.
            unsafe { ptr.as_ptr().add(i).write(fill) };
        }
        Some(Slots { ptr, len, backing: Backing::Anon(map) })
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

    /// The kernel's count of huge-page bytes in the mapping holding `addr`
    /// (`/proc/self/smaps`).
    fn huge_bytes_at(addr: usize) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ').filter(|(r, _)| r.contains('-')) {
                let (lo, hi) = range.split_once('-').unwrap();
                let (lo, hi) =
                    (usize::from_str_radix(lo, 16).unwrap(), usize::from_str_radix(hi, 16).unwrap());
                inside = (lo..hi).contains(&addr);
            } else if let Some(kb) = line.strip_prefix("AnonHugePages:").filter(|_| inside) {
                return kb.trim().trim_end_matches(" kB").trim().parse::<usize>().unwrap() * 1024;
            }
        }
        0
    }

    #[test]
    fn large_tables_are_filled_and_get_huge_pages() {
        let len = 3 * HUGE_FROM / 8;
        let mut big = Slots::heap(0x5a5a_5a5a_5a5a_5a5au64, len);
        assert!(big.iter().all(|&v| v == 0x5a5a_5a5a_5a5a_5a5a));
        big[len - 1] = 1;
        assert_eq!(big[len - 1], 1);
        assert!(!big.is_mapped(), "private memory: nothing survives the process");
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if thp.contains("[never]") || thp.is_empty() {
            eprintln!("transparent huge pages are off here: not checking the page size");
            return;
        }
        assert!(huge_bytes_at(big.as_ptr() as usize) >= 2 << 20, "no huge page in a {len}-slot table");
    }
}
