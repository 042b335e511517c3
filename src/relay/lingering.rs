//! Unanswered dialog entries of removed flows, still counted against their source.
//!
//! A flow no backend answered is removed after `unanswered_idle` (10 s), but the
//! entries it opened live `transaction` (32 s). Without this, a source whose flow
//! expired started a new one with a fresh quota while its old entries still held
//! room: about three `max_pins_per_ip` at once. The entries no longer name a flow
//! that could say whose they are, so the count is kept here, per source, until the
//! latest they can expire (a count that may outlast the entries, if a backend takes
//! them or they expire sooner: the source only waits longer for its room).

use std::collections::VecDeque;
use std::net::IpAddr;

use super::per_source::SourceCounts;

pub struct Lingering {
    /// (clock second from which it no longer counts, source, entries), oldest first:
    /// every record lives the same time, so the queue is in expiry order (but for a
    /// reload that shortened it: a record then waits for the ones before it).
    queue: VecDeque<(u32, IpAddr, u32)>,
    /// The records' entries summed per source (and per IPv6 /48).
    counts: SourceCounts,
    cap: usize,
    dropped: u64,
}

impl Lingering {
    /// Room for `cap` records, allocated once (the sums' maps for twice as many
    /// sources: removals leave tombstones, and a map that filled past half its room
    /// with them would grow rather than rehash in place).
    pub fn with_capacity(cap: usize) -> Self {
        Lingering {
            queue: VecDeque::with_capacity(cap),
            counts: SourceCounts::with_capacity(cap.saturating_mul(2)),
            cap,
            dropped: 0,
        }
    }

    /// `n` entries of `ip`'s source count until clock second `until`. With the
    /// capacity's records held (`limits.max_lingering_records`), the oldest, the
    /// nearest to its end, is dropped first (counted in [`Lingering::dropped`]).
    pub fn add(&mut self, ip: IpAddr, n: u32, until: u32) {
        if n == 0 {
            return;
        }
        // One source's flows removed in the same second share a record.
        if let Some(last) = self.queue.back_mut()
            && last.0 == until
            && last.1 == ip
        {
            last.2 = last.2.saturating_add(n);
            self.counts.add_n(ip, n);
            return;
        }
        if self.queue.len() >= self.cap {
            self.dropped += 1;
            self.pop();
        }
        self.queue.push_back((until, ip, n));
        self.counts.add_n(ip, n);
    }

    fn pop(&mut self) {
        if let Some((_, ip, n)) = self.queue.pop_front() {
            self.counts.remove(ip, n);
        }
    }

    /// Forgets the records due by clock second `clock`, at most `budget` of them.
    pub fn expire(&mut self, clock: u32, budget: usize) {
        for _ in 0..budget {
            match self.queue.front() {
                Some(&(until, _, _)) if until <= clock => self.pop(),
                _ => return,
            }
        }
    }

    /// Entries still counted for `ip`'s source.
    #[inline]
    pub fn get(&self, ip: IpAddr) -> u32 {
        // Empty unless flows went with entries still open: no lookup then.
        if self.queue.is_empty() {
            return 0;
        }
        self.counts.get(ip)
    }

    /// Entries still counted for the IPv6 sources of `ip`'s /48 (0 for IPv4).
    #[inline]
    pub fn get_48(&self, ip: IpAddr) -> u32 {
        if self.queue.is_empty() {
            return 0;
        }
        self.counts.get_48(ip)
    }

    /// Records dropped before they were due: the records were full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_source_until_due_and_drops_the_oldest_past_its_room() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b2: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let mut l = Lingering::with_capacity(3);
        l.add(a, 5, 10);
        l.add(b, 2, 11);
        l.add(a, 0, 11);
        l.add(b2, 4, 12);
        assert_eq!((l.get(a), l.get(b), l.get_48(b)), (5, 2, 6));
        // The same source in the same second: one record.
        l.add(b2, 1, 12);
        assert_eq!((l.get_48(b), l.dropped()), (7, 0));
        // Full: the oldest (a's, due first) goes.
        l.add(a, 1, 13);
        assert_eq!((l.get(a), l.dropped()), (1, 1));
        l.expire(10, 10);
        assert_eq!((l.get(a), l.get(b)), (1, 2));
        // At most `budget` records per call.
        l.expire(12, 1);
        assert_eq!((l.get(b), l.get_48(b)), (0, 5));
        l.expire(12, 10);
        assert_eq!((l.get(a), l.get_48(b)), (1, 0));
        l.expire(13, 10);
        assert_eq!(l.get(a), 0);
        assert!(l.queue.is_empty());
    }
}
