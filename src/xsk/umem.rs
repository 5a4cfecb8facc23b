//! UMEM memory: one area per worker, on 2 MiB hugepages when the kernel has
//! them reserved, else on 4 KiB pages.
//!
//! A worker's frames may be in another worker's hands (handoff) when the
//! worker stops, so the area is shared (`Arc`): it is unmapped when its last
//! holder — the worker's sockets or a worker that may hold its frames — is
//! gone, not when its worker leaves its loop.

use memmap2::{MmapMut, MmapOptions};

use super::XskError;
use crate::config::HugepageMode;

const HUGE_PAGE: usize = 2 << 20;

pub struct UmemArea {
    map: MmapMut,
    /// `map`'s base, taken once so shared holders need no `&mut`.
    base: *mut u8,
    pub hugepages: bool,
}

// SAFETY: the area is plain anonymous memory; who may touch which frame is
// decided by frame ownership (one holder per frame descriptor), not by
// which thread holds the area.
unsafe impl Send for UmemArea {}
// SAFETY: as above; `&UmemArea` only hands out the base pointer and length.
unsafe impl Sync for UmemArea {}

impl UmemArea {
    pub fn new(len: usize, mode: HugepageMode) -> Result<UmemArea, XskError> {
        if mode != HugepageMode::Off {
            let huge_len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
            match MmapOptions::new().len(huge_len).huge(Some(21)).populate().map_anon() {
                Ok(map) => return Ok(UmemArea::from_map(map, true)),
                Err(source) if mode == HugepageMode::Require => {
                    return Err(XskError::HugepagesUnavailable { mib: huge_len >> 20, source })
                }
                Err(e) => tracing::info!(
                    error = %e,
                    "no 2 MiB hugepages for UMEM ({} MiB wanted); falling back to 4 KiB pages",
                    huge_len >> 20
                ),
            }
        }
        let map = MmapOptions::new()
            .len(len)
            .populate()
            .map_anon()
            .map_err(|source| XskError::Map { len, source })?;
        Ok(UmemArea::from_map(map, false))
    }

    fn from_map(mut map: MmapMut, hugepages: bool) -> UmemArea {
        let base = map.as_mut_ptr();
        UmemArea { map, base, hugepages }
    }

    /// The first byte of the mapping, valid while `self` lives.
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
