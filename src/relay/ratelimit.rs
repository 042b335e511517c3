//! New-flow rate limiting per source IP: a token bucket per address, in a table
//! bounded in size so a spoofed flood cannot grow memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct NewFlowLimiter {
    buckets: HashMap<IpAddr, Bucket, foldhash::fast::RandomState>,
    rate: f64,
    burst: f64,
    max_entries: usize,
}

impl NewFlowLimiter {
    pub fn new(rate: u32, burst: u32, max_entries: usize) -> Self {
        NewFlowLimiter {
            buckets: HashMap::with_capacity_and_hasher(
                max_entries.min(1 << 14),
                foldhash::fast::RandomState::default(),
            ),
            rate: f64::from(rate),
            burst: f64::from(burst),
            max_entries: max_entries.max(1),
        }
    }

    /// Takes one token for `ip`; false when the address is over its rate (or the
    /// table of addresses is full of addresses that are all still limited).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_entries {
            self.prune(now);
            if self.buckets.len() >= self.max_entries {
                return false;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets addresses whose bucket has refilled: they are indistinguishable from new.
    pub fn prune(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_and_table_is_bounded() {
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut l = NewFlowLimiter::new(10, 20, 2);
        let allowed = (0..30).filter(|_| l.allow(ip, t0)).count();
        assert_eq!(allowed, 20);
        assert!(l.allow(ip, t0 + Duration::from_millis(100)));
        assert!(!l.allow(ip, t0 + Duration::from_millis(100)));
        let ip2: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..5).filter(|_| l.allow(ip2, t0)).count(), 5);
        // Both entries still limited-ish: a third address is refused, not evicting.
        let ip3: IpAddr = "192.0.2.3".parse().unwrap();
        assert!(!l.allow(ip3, t0 + Duration::from_millis(100)));
        // Later everything has refilled and is pruned.
        assert!(l.allow(ip3, t0 + Duration::from_secs(10)));
        assert_eq!(l.len(), 1);
    }
}
