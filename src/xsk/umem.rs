//! UMEM memory: one area per worker, on 2 MiB hugepages when the kernel has
//! them reserved, else on 4 KiB pages.

use anyhow::{bail, Context, Result};
use memmap2::{MmapMut, MmapOptions};

use crate::config::HugepageMode;

const HUGE_PAGE: usize = 2 << 20;

pub struct UmemArea {
    map: MmapMut,
    pub hugepages: bool,
}

impl UmemArea {
    pub fn new(len: usize, mode: HugepageMode) -> Result<UmemArea> {
        if mode != HugepageMode::Off {
            let huge_len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
            match MmapOptions::new().len(huge_len).huge(Some(21)).populate().map_anon() {
                Ok(map) => return Ok(UmemArea { map, hugepages: true }),
                Err(e) if mode == HugepageMode::Require => bail!(
                    "hugepages = \"require\" but a {} MiB hugepage mapping failed ({e}); reserve pages with \
                     `echo N > /proc/sys/vm/nr_hugepages`",
                    huge_len >> 20
                ),
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
            .with_context(|| format!("mapping {len} bytes of UMEM"))?;
        Ok(UmemArea { map, hugepages: false })
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
