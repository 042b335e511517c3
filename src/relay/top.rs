//! The heaviest sources, in bounded memory: a space-saving sketch (Metwally et al.)
//! of [`TOP_SLOTS`] counters. Every source whose true count exceeds total / slots is
//! in it, and a count is over by at most its `error`. The top sources are an API
//! (`/api/v1/top`), never metric labels.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ratelimit::SourceKey;

pub const TOP_SLOTS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopEntry {
    pub source: SourceKey,
    /// Counted (an over-estimate by at most `error`).
    pub count: u64,
    pub error: u64,
}

#[derive(Debug, Clone, Default)]
pub struct TopSketch {
    slots: Vec<TopEntry>,
}

impl TopSketch {
    pub fn new() -> Self {
        TopSketch {
            slots: Vec::with_capacity(TOP_SLOTS),
        }
    }

    /// Counts one event of `source`. A linear pass over 64 slots: only on drops.
    #[inline]
    pub fn add(&mut self, source: SourceKey) {
        if let Some(e) = self.slots.iter_mut().find(|e| e.source == source) {
            e.count += 1;
            return;
        }
        if self.slots.len() < TOP_SLOTS {
            self.slots.push(TopEntry {
                source,
                count: 1,
                error: 0,
            });
            return;
        }
        if let Some(min) = self.slots.iter_mut().min_by_key(|e| e.count) {
            *min = TopEntry {
                source,
                count: min.count + 1,
                error: min.count,
            };
        }
    }

    /// The `n` largest, largest first.
    pub fn top(&self, n: usize) -> Vec<TopEntry> {
        let mut v = self.slots.clone();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.source.cmp(&b.source)));
        v.truncate(n);
        v
    }
}

/// A source key as text: `192.0.2.7` or `2001:db8:1:2::/64`.
pub fn source_name(k: SourceKey) -> String {
    if k >> 64 == 1 {
        Ipv4Addr::from(k as u32).to_string()
    } else {
        format!("{}/64", IpAddr::V6(Ipv6Addr::from(k)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::ratelimit::source_key;
    use super::*;

    #[test]
    fn heavy_hitters_survive_a_spray_of_one_off_sources() {
        let mut t = TopSketch::new();
        let heavy = source_key("192.0.2.66".parse().unwrap());
        let v6 = source_key("2001:db8:1:2::5".parse().unwrap());
        for i in 0..10_000u32 {
            t.add(heavy);
            if i % 4 == 0 {
                t.add(v6);
            }
            // A different spoofed source every time.
            t.add(source_key(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))));
        }
        let top = t.top(3);
        assert_eq!(top[0].source, heavy);
        assert!(top[0].count - top[0].error <= 10_000 && top[0].count >= 10_000);
        assert_eq!(top[1].source, v6);
        assert!(t.top(100).len() <= TOP_SLOTS);
        assert_eq!(source_name(heavy), "192.0.2.66");
        assert_eq!(source_name(v6), "2001:db8:1:2::/64");
    }
}
