//! A counting global allocator for the zero-allocation tests: every allocation
//! and reallocation counts process-wide ([`total`], for a dataplane on its own
//! thread) and on the calling thread ([`on_this_thread`], so the harness's threads
//! and a failing test's report do not count). A test binary installs it with
//! `#[global_allocator] static A: testkit::alloc::Counting = testkit::alloc::Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Counting;

static TOTAL: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static MINE: Cell<u64> = const { Cell::new(0) };
}

/// Allocations so far in the whole process.
pub fn total() -> u64 {
    TOTAL.load(Ordering::SeqCst)
}

/// Allocations so far on this thread.
pub fn on_this_thread() -> u64 {
    MINE.with(Cell::get)
}

fn count() {
    TOTAL.fetch_add(1, Ordering::Relaxed);
    // Not during thread teardown (the slot may be gone).
    let _ = MINE.try_with(|n| n.set(n.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(p, l, n) }
    }
}
