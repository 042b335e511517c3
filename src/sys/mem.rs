//! Memory hints for the big tables.

/// A transparent huge page on x86-64 (and on aarch64 with 4 KiB pages).
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the whole 2 MiB pages inside `len` bytes from `ptr` with
/// transparent huge pages (`MADV_HUGEPAGE`, for THP's default `madvise` mode): at a
/// million flows every lookup in a table of a hundred MiB would otherwise also miss
/// the TLB. A hint: where THP is off nothing changes, and a failure costs only
/// speed. False if nothing was advised (under 2 MiB, or refused).
pub fn advise_huge_pages(ptr: *const u8, len: usize) -> bool {
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
    let end = (ptr as usize).saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
    if end <= start {
        return false;
    }
    // SAFETY: MADV_HUGEPAGE changes how pages are backed, never their contents; the
    // range lies inside the caller's allocation (an unmapped part fails with ENOMEM).
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_huge_pages_of_a_block_are_advised_and_small_blocks_left_alone() {
        let small = vec![0u8; 1 << 20];
        assert!(!advise_huge_pages(small.as_ptr(), small.len()));
        let big = vec![0u8; 8 << 20];
        // Some hosts have THP "never" (then madvise still succeeds) or no THP at all
        // (EINVAL): either way the call must not harm the block.
        let _ = advise_huge_pages(big.as_ptr(), big.len());
        assert!(big.iter().all(|&b| b == 0));
    }
}
