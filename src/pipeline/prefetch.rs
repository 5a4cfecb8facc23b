//! Cache prefetch hints for the batch passes that look up tables at random
//! places (VPP's and DPDK's dual loops): issued for a whole batch before
//! the pass that reads, so the misses overlap instead of queueing.

/// Prefetches the cache line holding the start of `*r`, and with
/// `lines = 2` the one after it (a 128-byte conntrack entry). A hint: it
/// never faults and changes nothing a program can observe but time.
/// No-op off x86_64.
#[inline(always)]
pub fn lines<T>(r: &T, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (r as *const T).cast::<i8>();
        for l in 0..lines {
            // SAFETY: prefetch never faults, whatever the address; the
            // offset stays in the object or one line past it, computed with
            // wrapping arithmetic. SSE is baseline on x86_64.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(l * 64)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (r, lines);
}
