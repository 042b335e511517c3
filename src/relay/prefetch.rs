//! A hint to the CPU to start loading a cache line without waiting for it, so the
//! table misses of a received batch overlap instead of queueing one after another.

/// Starts loading every line `*p` spans (a 112-byte flow spans two or three).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    let first = p.cast::<u8>();
    let size = std::mem::size_of::<T>();
    let mut offset = 0;
    while offset < size {
        prefetch_line(first.wrapping_add(offset));
        offset += 64;
    }
    if size > 1 {
        prefetch_line(first.wrapping_add(size - 1));
    }
}

/// Starts loading the line holding `*p` into the cache; never faults, whatever `p`.
#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing and cannot fault.
    #[allow(unused_unsafe)]
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
