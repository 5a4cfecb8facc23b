//! UMEM memory: one area per worker, on 2 MiB hugepages when the kernel has
//! them reserved, else on 4 KiB pages.
//!
//! A worker's frames may be in another worker's hands (handoff) when the
//! worker stops, so the area is shared (`Arc`): it is unmapped when its last
//! holder — the worker's sockets or a worker that may hold its frames — is
//! gone, not when its worker leaves its loop.

//!
//! A planned restart hands the next image one UMEM per worker, allocated
//! (zeroed, on hugepages when it can) by the old image while its workers
//! still run: memfds left open across `execve` ([`HANDOVER_ENV`]). The new
//! image only maps them, so the time to fault in and zero the UMEM is not
//! part of the restart's gap.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use memmap2::{MmapMut, MmapOptions};

use super::XskError;
use crate::config::HugepageMode;

/// The environment variable carrying prefaulted UMEMs to the next image:
/// `fd:bytes:h` (hugepages) or `fd:bytes:p` (4 KiB pages) items, comma
/// separated.
pub const HANDOVER_ENV: &str = "SHUNT_HANDOVER_UMEM";

/// UMEMs handed to this image (memfds and whether they are on hugepages),
/// taken by workers as they build; or, in an image about to restart, the
/// ones made for the next.
static HANDED: Mutex<Vec<(File, bool)>> = Mutex::new(Vec::new());

const HUGE_PAGE: usize = 2 << 20;

pub struct UmemArea {
    map: MmapMut,
    /// `map`'s base, taken once so shared holders need no `&mut`.
    base: *mut u8,
    pub hugepages: bool,
}

// SAFETY: the area is plain memory (an anonymous mapping, or a memfd a
// previous image handed over, mapped by this process alone); who may touch
// which frame is decided by frame ownership (one holder per frame
// descriptor), not by which thread holds the area.
unsafe impl Send for UmemArea {}
// SAFETY: as above; `&UmemArea` only hands out the base pointer and length.
unsafe impl Sync for UmemArea {}

impl UmemArea {
    pub fn new(len: usize, mode: HugepageMode) -> Result<UmemArea, XskError> {
        if let Some(area) = take_handed(len, mode) {
            return Ok(area);
        }
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

/// Reads the UMEMs a previous image handed over and removes the variable
/// (the image after this one gets its own). Call before any thread exists.
pub fn from_env() {
    let Some(v) = std::env::var_os(HANDOVER_ENV) else { return };
    std::env::remove_var(HANDOVER_ENV);
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    for item in v.to_string_lossy().split(',').filter(|s| !s.is_empty()) {
        let parsed = (|| {
            let mut f = item.split(':');
            let fd: i32 = f.next()?.parse().ok()?;
            let len: u64 = f.next()?.parse().ok()?;
            let huge = match f.next()? {
                "h" => true,
                "p" => false,
                _ => return None,
            };
            Some((fd, len, huge))
        })();
        let Some((fd, len, huge)) = parsed else {
            tracing::warn!(item, "{HANDOVER_ENV}: not fd:bytes:h|p; ignored");
            continue;
        };
        match crate::sys::bpf_link::adopt(fd) {
            Ok(owned) => {
                let file = File::from(owned);
                // A descriptor that is not the memfd we were promised is
                // closed and not mapped.
                if file.metadata().map(|m| m.len()).ok() == Some(len) {
                    handed.push((file, huge));
                } else {
                    tracing::warn!(fd, "handed UMEM is not of the size announced; ignored");
                }
            }
            Err(e) => tracing::warn!(fd, error = %e, "handed UMEM ignored"),
        }
    }
}

/// A handed UMEM of at least `len` bytes that `mode` accepts, mapped.
fn take_handed(len: usize, mode: HugepageMode) -> Option<UmemArea> {
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    let i = handed.iter().position(|(f, huge)| {
        let fits = f.metadata().is_ok_and(|m| m.len() >= len as u64);
        let kind = match mode {
            HugepageMode::Require => *huge,
            HugepageMode::Auto => true,
            HugepageMode::Off => !*huge,
        };
        fits && kind
    })?;
    let (file, huge) = handed.swap_remove(i);
    drop(handed);
    let size = file.metadata().ok()?.len() as usize;
    // SAFETY: the memfd was made by the previous image for this one alone
    // and handed only here (removed from the list): no other mapping of it
    // exists in any process, and its size is fixed (`size`, read above).
    let map = unsafe { MmapOptions::new().len(size).populate().map_mut(&file) };
    match map {
        Ok(map) => {
            crate::state::gap::mark(&format!("handed UMEM mapped ({} MiB)", size >> 20));
            Some(UmemArea::from_map(map, huge))
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not map a handed UMEM; mapping a new one");
            None
        }
    }
}

/// Allocates, for the next image of a planned restart, `workers` UMEMs of
/// `len` bytes each as memfds (hugepages unless `mode` is off, 4 KiB pages
/// when `mode` is auto and no hugepages are left), left open across
/// `execve` ([`env_value`]). When one cannot be made, none is handed: the
/// next image then maps its own.
pub fn prepare_next(workers: usize, len: usize, mode: HugepageMode) {
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    handed.clear();
    for _ in 0..workers {
        let made = match mode {
            HugepageMode::Off => memfd(len, false),
            HugepageMode::Require => memfd(len, true),
            HugepageMode::Auto => memfd(len, true).or_else(|_| memfd(len, false)),
        };
        match made {
            Ok(m) => handed.push(m),
            Err(e) => {
                tracing::info!(error = %e, "no UMEM prepared for the next image: it maps its own");
                handed.clear();
                return;
            }
        }
    }
}

/// A memfd of `len` bytes (rounded up to 2 MiB on hugepages), every page
/// allocated and zeroed now, without `FD_CLOEXEC`.
fn memfd(len: usize, huge: bool) -> std::io::Result<(File, bool)> {
    let flags = if huge { libc::MFD_HUGETLB | libc::MFD_HUGE_2MB } else { 0 };
    // SAFETY: a NUL-terminated name and plain flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"shunt-umem".as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let size = if huge { len.div_ceil(HUGE_PAGE) * HUGE_PAGE } else { len };
    file.set_len(size as u64)?;
    // SAFETY: fallocate on a descriptor we own, within its size.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, size as libc::off_t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((file, huge))
}

/// The value of [`HANDOVER_ENV`] for the next image: the UMEMs
/// [`prepare_next`] made (their descriptors stay open across `execve`).
pub fn env_value() -> Option<String> {
    let handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    let items: Vec<String> = handed
        .iter()
        .map(|(f, huge)| {
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            format!("{}:{size}:{}", f.as_raw_fd(), if *huge { "h" } else { "p" })
        })
        .collect();
    (!items.is_empty()).then(|| items.join(","))
}

/// Closes the handed UMEMs no worker took (fewer workers than before).
pub fn release_unused() {
    HANDED.lock().unwrap_or_else(|e| e.into_inner()).clear();
}
