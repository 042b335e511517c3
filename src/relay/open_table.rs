//! An open-addressing hash table with linear probing. A lookup reads one entry in
//! the common case (at most half full; an entry of 32 bytes in a table aligned to 8
//! may span two lines, and both are prefetched), and its address follows from the
//! hash alone, so a received batch can start loading every datagram's line before
//! reading any of them (hashbrown keeps its bucket addresses private). Removal shifts
//! the following entries back instead of leaving tombstones, so probes stay short
//! under churn. The caller hashes (with a [`TableHasher`]) and compares keys.
//!
//! The slots are zeroed memory from `calloc`: a large table is mapped by the kernel
//! page by page as entries land on it.

use bytemuck::Zeroable;

use super::prefetch::prefetch;

/// The hasher callers place entries with: seeded per process (senders cannot
/// precompute collisions) and mixed in every bit, since a table's home slot is the
/// hash's high bits and a sharded caller picks its shard from other bits. foldhash's
/// `fast` variant is not: it spreads consecutive keys (a customer's /24, a CGNAT pool)
/// unevenly over any 8 of its bits, depending on the seed (up to 192 of 256 shards
/// left empty for 1000 consecutive IPv4 sources); `quality` adds the final mixing
/// step, one multiply.
pub type TableHasher = foldhash::quality::RandomState;

/// An entry whose all-zero bytes mean "vacant".
pub trait Entry: Copy + Zeroable {
    fn is_vacant(&self) -> bool;
}

pub struct OpenTable<T> {
    slots: Box<[T]>,
    mask: usize,
    len: usize,
}

/// Where probing for `hash` starts in a table of `mask + 1` slots: the hash's high
/// half, so an entry that keeps only those 32 bits of its hash can tell where it
/// belongs.
#[inline]
fn home(hash: u64, mask: usize) -> usize {
    (hash >> 32) as usize & mask
}

impl<T: Entry> OpenTable<T> {
    /// Room for `max` entries, in at least twice as many slots.
    pub fn with_capacity(max: usize) -> Self {
        let n = max.saturating_mul(2).next_power_of_two().max(16);
        OpenTable {
            slots: bytemuck::zeroed_slice_box(n),
            mask: n - 1,
            len: 0,
        }
    }

    /// Doubles the slots and places every entry anew (a stall proportional to the
    /// table: callers keep tables small, e.g. in shards).
    pub fn grow(&mut self, hash_of: impl Fn(&T) -> u64) {
        let bigger = bytemuck::zeroed_slice_box(self.slot_count() * 2);
        let old = std::mem::replace(&mut self.slots, bigger);
        self.mask = self.slots.len() - 1;
        self.len = 0;
        for e in old.iter().filter(|e| !e.is_vacant()) {
            let placed = self.insert(hash_of(e), *e);
            debug_assert!(placed.is_ok());
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Entries it holds at most (half its slots).
    pub fn capacity(&self) -> usize {
        self.slot_count() / 2
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.capacity()
    }

    /// Where the slots lie: (first byte, length in bytes).
    pub fn memory(&self) -> (*const u8, usize) {
        (
            self.slots.as_ptr().cast(),
            std::mem::size_of_val(&*self.slots),
        )
    }

    /// Number of slots (twice the capacity).
    pub fn slot_count(&self) -> usize {
        self.mask + 1
    }

    /// Starts loading the line a lookup of `hash` will read first.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        prefetch(self.slots.as_ptr().wrapping_add(home(hash, self.mask)));
    }

    /// The position of the first entry from `hash`'s home on that `eq` accepts.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<usize> {
        let mut i = home(hash, self.mask);
        let slots = &self.slots;
        // Terminates: at most half the slots are taken, so a vacant one follows.
        loop {
            let e = &slots[i];
            if e.is_vacant() {
                return None;
            }
            if eq(e) {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    pub fn get(&self, pos: usize) -> &T {
        &self.slots[pos]
    }

    pub fn get_mut(&mut self, pos: usize) -> &mut T {
        &mut self.slots[pos]
    }

    /// Adds `v` (the caller knows it is absent) at the first vacant slot from its
    /// home on; gives it back when the table holds its capacity.
    pub fn insert(&mut self, hash: u64, v: T) -> Result<usize, T> {
        if self.is_full() {
            return Err(v);
        }
        let mask = self.mask;
        let mut i = home(hash, mask);
        let slots = &mut self.slots;
        while !slots[i].is_vacant() {
            i = (i + 1) & mask;
        }
        slots[i] = v;
        self.len += 1;
        Ok(i)
    }

    /// Removes the entry at `pos` and shifts back those after it that may sit
    /// nearer their home, so no probe meets a gap before its entry. `hash_of` gives
    /// an entry's hash (only its high half is used).
    pub fn remove_at(&mut self, pos: usize, hash_of: impl Fn(&T) -> u64) -> T {
        let mask = self.mask;
        let slots = &mut self.slots;
        let removed = slots[pos];
        debug_assert!(!removed.is_vacant());
        let mut hole = pos;
        let mut j = pos;
        loop {
            j = (j + 1) & mask;
            let e = slots[j];
            if e.is_vacant() {
                break;
            }
            let at = home(hash_of(&e), mask);
            // The hole lies on e's probe path (from its home to j): e may move there.
            if (j.wrapping_sub(at) & mask) >= (j.wrapping_sub(hole) & mask) {
                slots[hole] = e;
                hole = j;
            }
        }
        slots[hole] = T::zeroed();
        self.len -= 1;
        removed
    }

    /// Removes the entries `keep` refuses; returns how many. One pass, in probe
    /// order from a slot that was vacant before (no probe path crosses it): each
    /// kept entry after a removal moves to the first vacant slot from its home (a
    /// short probe at half load), so removing most of a table costs about a walk
    /// of it, not a shift per removal.
    pub fn retain(
        &mut self,
        mut keep: impl FnMut(&T) -> bool,
        hash_of: impl Fn(&T) -> u64,
    ) -> usize {
        let mask = self.mask;
        let slots = &mut self.slots;
        // At most half the slots are taken.
        let Some(gap) = slots.iter().position(|e| e.is_vacant()) else {
            return 0;
        };
        let mut removed = 0;
        for d in 1..=mask + 1 {
            let j = (gap + d) & mask;
            let e = slots[j];
            if e.is_vacant() {
                continue;
            }
            if !keep(&e) {
                slots[j] = T::zeroed();
                removed += 1;
                continue;
            }
            if removed == 0 {
                // No slot freed yet: every probe path is still whole.
                continue;
            }
            let mut i = home(hash_of(&e), mask);
            while i != j && !slots[i].is_vacant() {
                i = (i + 1) & mask;
            }
            if i != j {
                slots[i] = e;
                slots[j] = T::zeroed();
            }
        }
        self.len -= removed;
        removed
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter(|e| !e.is_vacant())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A key and its value; key 0 is vacant.
    #[derive(Clone, Copy, Zeroable, Debug)]
    #[repr(C)]
    struct E {
        key: u64,
        val: u64,
    }
    impl Entry for E {
        fn is_vacant(&self) -> bool {
            self.key == 0
        }
    }

    /// A hash that collides a lot (few distinct homes), so probes and shifts wrap.
    fn h(key: u64) -> u64 {
        (key % 7) << 32 | key
    }

    fn find(t: &OpenTable<E>, key: u64) -> Option<u64> {
        t.find(h(key), |e| e.key == key).map(|p| t.get(p).val)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u64),
        Remove(u64),
        Retain(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..40, any::<u64>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (1u64..40).prop_map(Op::Remove),
            (2u64..5).prop_map(Op::Retain),
        ]
    }

    proptest! {
        /// Behaves as a map bounded at its capacity, whatever the order of inserts,
        /// removals and prunes.
        #[test]
        fn matches_a_map(ops in proptest::collection::vec(op(), 1..300)) {
            let mut t = OpenTable::<E>::with_capacity(12);
            let cap = t.capacity();
            let mut m = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        if m.contains_key(&k) {
                            continue;
                        }
                        let r = t.insert(h(k), E { key: k, val: v });
                        if m.len() < cap {
                            prop_assert!(r.is_ok());
                            m.insert(k, v);
                        } else {
                            prop_assert!(r.is_err());
                        }
                    }
                    Op::Remove(k) => {
                        if let Some(p) = t.find(h(k), |e| e.key == k) {
                            t.remove_at(p, |e| h(e.key));
                        }
                        m.remove(&k);
                    }
                    Op::Retain(modulo) => {
                        let removed = t.retain(|e| e.key % modulo != 0, |e| h(e.key));
                        let before = m.len();
                        m.retain(|k, _| k % modulo != 0);
                        prop_assert_eq!(removed, before - m.len());
                    }
                }
                prop_assert_eq!(t.len(), m.len());
                for (k, v) in &m {
                    prop_assert_eq!(find(&t, *k), Some(*v));
                }
                prop_assert_eq!(t.iter().count(), m.len());
            }
        }
    }

    #[test]
    fn grows_keeping_every_entry() {
        let mut t = OpenTable::<E>::with_capacity(8);
        for k in 1..=8 {
            assert!(t.insert(h(k), E { key: k, val: k }).is_ok());
        }
        assert!(t.insert(h(9), E { key: 9, val: 9 }).is_err());
        t.grow(|e| h(e.key));
        assert_eq!((t.slot_count(), t.len()), (32, 8));
        assert!(t.insert(h(9), E { key: 9, val: 9 }).is_ok());
        assert!((1..=9).all(|k| find(&t, k) == Some(k)));
    }

    #[test]
    fn refuses_past_its_capacity() {
        let mut t = OpenTable::<E>::with_capacity(3);
        assert_eq!(t.slot_count(), 16);
        for k in 1..=8 {
            assert!(t.insert(h(k), E { key: k, val: k }).is_ok());
        }
        assert!(t.insert(h(9), E { key: 9, val: 9 }).is_err());
        assert_eq!(find(&t, 8), Some(8));
    }
}
