//! Rate limits. Per source (an IPv4 address, or an IPv6 /64: one subscriber's
//! prefix, so a host cannot dodge its limit by rotating addresses): a token bucket per
//! source, in a table bounded in size so a spoofed flood cannot grow memory. And one
//! global [`Budget`] (e.g. for the 503s sent in all).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use super::source_limits::Class;

/// The unit sources are limited and counted in: an IPv4 address, or an IPv6 /64.
pub type SourceKey = u128;

pub fn source_key(ip: IpAddr) -> SourceKey {
    match ip {
        // Tagged so that no IPv4 key equals an IPv6 one.
        IpAddr::V4(a) => u128::from(u32::from(a)) | (1 << 64),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => source_key(IpAddr::V4(v4)),
            None => u128::from(a) & !u128::from(u64::MAX),
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// The source's class (its rate and burst), looked up when the bucket is made.
    class: Class,
}

pub struct SourceLimiter {
    buckets: HashMap<SourceKey, Bucket, foldhash::fast::RandomState>,
    /// (rate, burst) per class; class 0 is the global limit.
    rates: Vec<(f64, f64)>,
    max_entries: usize,
}

impl SourceLimiter {
    /// One limit for every source.
    pub fn new(rate: u32, burst: u32, max_entries: usize) -> Self {
        Self::with_classes([(rate, burst)], max_entries)
    }

    /// A (rate, burst) per class, class 0 first.
    pub fn with_classes(rates: impl IntoIterator<Item = (u32, u32)>, max_entries: usize) -> Self {
        let mut l = SourceLimiter {
            buckets: HashMap::with_capacity_and_hasher(
                max_entries.min(1 << 14),
                foldhash::fast::RandomState::default(),
            ),
            rates: Vec::new(),
            max_entries: max_entries.max(1),
        };
        l.set_classes(rates);
        l
    }

    /// New limits (a reload). Sources start over with full buckets: their classes may
    /// have changed, and a reload is rare.
    pub fn set_classes(&mut self, rates: impl IntoIterator<Item = (u32, u32)>) {
        self.rates = rates
            .into_iter()
            .map(|(r, b)| (f64::from(r), f64::from(b)))
            .collect();
        if self.rates.is_empty() {
            self.rates.push((1.0, 1.0));
        }
        self.buckets.clear();
    }

    /// Takes one token for `ip`'s source (class 0); see [`SourceLimiter::allow_in`].
    #[inline]
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.allow_in(ip, now, || 0)
    }

    /// Takes one token for `ip`'s source; false when the source is over its rate (or
    /// the table of sources is full of sources that are all still limited). `class`
    /// is asked only for a source without a bucket.
    #[inline]
    pub fn allow_in(&mut self, ip: IpAddr, now: Instant, class: impl FnOnce() -> Class) -> bool {
        let key = source_key(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_entries {
            self.prune(now);
            if self.buckets.len() >= self.max_entries {
                return false;
            }
        }
        let rates = &self.rates;
        let b = self.buckets.entry(key).or_insert_with(|| {
            let class = class();
            Bucket {
                tokens: rate_of(rates, class).1,
                last: now,
                class,
            }
        });
        let (rate, burst) = rate_of(rates, b.class);
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

    /// Forgets sources whose bucket has refilled: they are indistinguishable from new.
    pub fn prune(&mut self, now: Instant) {
        let rates = std::mem::take(&mut self.rates);
        self.buckets.retain(|_, b| {
            let (rate, burst) = rate_of(&rates, b.class);
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
        self.rates = rates;
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// A class's (rate, burst); an unknown class gets class 0's (never happens: classes
/// and rates are set together).
#[inline]
fn rate_of(rates: &[(f64, f64)], class: Class) -> (f64, f64) {
    rates
        .get(usize::from(class))
        .or(rates.first())
        .copied()
        .unwrap_or((1.0, 1.0))
}

/// One token bucket for everyone: a budget per second with a burst of one second's
/// worth.
#[derive(Debug, Clone)]
pub struct Budget {
    per_sec: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Budget {
    pub fn new(per_sec: u32) -> Self {
        Budget {
            per_sec: f64::from(per_sec),
            tokens: f64::from(per_sec),
            last: None,
        }
    }

    pub fn set_rate(&mut self, per_sec: u32) {
        self.per_sec = f64::from(per_sec);
    }

    /// Whether a token is there now (none is taken).
    pub fn available(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = self
            .last
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec.max(1.0));
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
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
        let mut l = SourceLimiter::new(10, 20, 2);
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

    #[test]
    fn an_ipv6_64_is_one_source_and_v4_keys_stay_apart() {
        let k = |s: &str| source_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.1"), k("192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
        assert_ne!(k("0.0.0.1"), k("::1"));
        let mut l = SourceLimiter::new(1, 3, 10);
        let t0 = Instant::now();
        let spread = (1..=5)
            .filter(|i| l.allow(format!("2001:db8::{i}").parse().unwrap(), t0))
            .count();
        assert_eq!(spread, 3, "rotating addresses in one /64 shares one bucket");
    }

    #[test]
    fn the_budget_refills_per_second() {
        let t0 = Instant::now();
        let mut b = Budget::new(5);
        assert_eq!((0..10).filter(|_| b.take(t0)).count(), 5);
        assert!(b.available(t0 + Duration::from_millis(200)));
        assert!(
            b.available(t0 + Duration::from_millis(200)),
            "peeking takes nothing"
        );
        assert!(b.take(t0 + Duration::from_millis(200)));
        assert!(!b.available(t0 + Duration::from_millis(200)));
        assert!(!b.take(t0 + Duration::from_millis(200)));
    }
}
