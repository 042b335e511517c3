//! Random numbers from the kernel (`getrandom(2)`) for what must not be guessed from
//! outside: probe nonces, the sync link's epoch.

/// A random `u64` from the kernel's generator; if it fails (it blocks only before the
/// pool is seeded, at early boot), std's `RandomState`, which is seeded by the OS too.
pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        return u64::from_le_bytes(b);
    }
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(std::process::id())
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_differ() {
        let v: Vec<u64> = (0..8).map(|_| super::u64()).collect();
        for (i, a) in v.iter().enumerate() {
            assert!(v[i + 1..].iter().all(|b| b != a), "{v:?}");
        }
    }
}
