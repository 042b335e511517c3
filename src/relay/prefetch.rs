//! A hint to the CPU to start loading a cache line without waiting for it, so the
//! table misses of a received batch overlap instead of queueing one after another.

/// Starts loading every line `*p` spans (a 112-byte flow spans two or three), each
/// once.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    let first = p.cast::<u8>();
    prefetch_line(first);
    // Offsets of the following lines' first bytes, while within `*p`.
    let mut next = LINE - first as usize % LINE;
    while next < std::mem::size_of::<T>() {
        prefetch_line(first.wrapping_add(next));
        next += LINE;
    }
}

const LINE: usize = 64;

/// Starts loading the line holding `*p` into the cache; never faults, whatever `p`.
/// Public for the routing bench, whose memory floor prefetches as the router does.
#[inline(always)]
pub fn prefetch_line(p: *const u8) {
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
