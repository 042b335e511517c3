//! Unanswered dialog entries of removed flows, still counted against their source.
//!
//! A flow no backend answered is removed after `unanswered_idle` (10 s), but the
//! entries it opened live `transaction` (32 s). Without this, a source whose flow
//! expired started a new one with a fresh quota while its old entries still held
//! room: about three `max_pins_per_ip` at once. The entries no longer name a flow
//! that could say whose they are, so the count is kept here, per source, until the
//! latest they can expire.

use std::collections::VecDeque;
use std::net::IpAddr;

use super::per_source::SourceCounts;

/// Records kept at most (each a removed flow's count): beyond, a removed flow's
/// entries count for nobody, as before (counted in [`Lingering::refused`]).
pub const MAX_RECORDS: usize = 1 << 16;

pub struct Lingering {
    /// (clock second from which it no longer counts, source, entries), oldest first:
    /// every record lives the same time, so the queue is in expiry order (but for a
    /// reload that shortened it: a record then waits for the ones before it).
    queue: VecDeque<(u32, IpAddr, u32)>,
    /// The records' entries summed per source (and per IPv6 /48).
    counts: SourceCounts,
    cap: usize,
    refused: u64,
}

impl Lingering {
    /// Room for `cap` records, allocated once.
    pub fn with_capacity(cap: usize) -> Self {
        Lingering {
            queue: VecDeque::with_capacity(cap),
            counts: SourceCounts::with_capacity(cap),
            cap,
            refused: 0,
        }
    }

    /// `n` entries of `ip`'s source count until clock second `until`. Refused
    /// (counted) when [`MAX_RECORDS`] are held.
    pub fn add(&mut self, ip: IpAddr, n: u32, until: u32) {
        if n == 0 {
            return;
        }
        if self.queue.len() >= self.cap {
            self.refused += 1;
            return;
        }
        self.queue.push_back((until, ip, n));
        self.counts.add_n(ip, n);
    }

    /// Forgets the records due by clock second `clock`.
    pub fn expire(&mut self, clock: u32) {
        while let Some(&(until, ip, n)) = self.queue.front() {
            if until > clock {
                return;
            }
            self.queue.pop_front();
            self.counts.remove(ip, n);
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

    /// Removed flows whose entries were not kept: the records were full.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_source_until_due_and_refuses_past_its_room() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b2: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let mut l = Lingering::with_capacity(3);
        l.add(a, 5, 10);
        l.add(b, 2, 11);
        l.add(a, 0, 11);
        l.add(b2, 4, 12);
        assert_eq!((l.get(a), l.get(b), l.get_48(b)), (5, 2, 6));
        l.add(a, 1, 12);
        assert_eq!((l.get(a), l.refused()), (5, 1));
        l.expire(9);
        assert_eq!(l.get(a), 5);
        l.expire(10);
        assert_eq!((l.get(a), l.get(b)), (0, 2));
        l.add(a, 1, 13);
        l.expire(12);
        assert_eq!((l.get(a), l.get(b), l.get_48(b)), (1, 0, 0));
        l.expire(13);
        assert_eq!(l.get(a), 0);
    }
}
