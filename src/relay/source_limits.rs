//! Which limits a source is held to: `[limits]`, or the longest `[[limits.source]]`
//! prefix that covers it. Sources are sorted into classes (0: the global limits), so a
//! rate limiter's bucket remembers a two-byte class, not the limits.

use std::net::IpAddr;

use super::access::canonical;
use super::prefix_map::PrefixMap;
use crate::config::{Limits, SourceLimits, ip_bits};

/// A source's class: an index into [`SourceClasses`].
pub type Class = u16;

/// A source's datagram bucket while its only flow holds it (see
/// `Router::from_client`): the same rate and burst as the limiter's bucket, kept as a
/// GCRA, so one timestamp in the flow's own lines is all of it and a datagram of a
/// phone with an address of its own reads no line of the limiter's table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeldBucket {
    /// Nanoseconds one datagram spends: `1 / datagrams_per_ip` s.
    pub interval_ns: u64,
    /// How far ahead of now it may be spent: `datagrams_burst - 1` intervals.
    pub tolerance_ns: u64,
    burst: f64,
}

impl HeldBucket {
    fn of(l: &SourceLimits) -> HeldBucket {
        let interval = 1e9 / f64::from(l.datagrams_per_ip.max(1));
        let burst = f64::from(l.datagrams_burst.max(1));
        // `as` saturates.
        HeldBucket {
            interval_ns: interval as u64,
            tolerance_ns: ((burst - 1.0) * interval) as u64,
            burst,
        }
    }

    /// Takes one datagram from a bucket spent up to `*tat` at time `t` (ns): false,
    /// and nothing taken, if that would spend it further ahead than the tolerance.
    #[inline]
    pub fn take(&self, tat: &mut u64, t: u64) -> bool {
        let from = (*tat).max(t);
        if from - t > self.tolerance_ns {
            return false;
        }
        *tat = from.saturating_add(self.interval_ns);
        true
    }

    /// The tokens a bucket spent up to `tat` has at `t`, as the limiter counts them.
    pub fn tokens(&self, tat: u64, t: u64) -> f64 {
        let ahead = tat.saturating_sub(t) as f64;
        self.burst - ahead / self.interval_ns.max(1) as f64
    }

    /// The time a bucket with `tokens` left at `t` is spent up to.
    pub fn spent_to(&self, tokens: f64, t: u64) -> u64 {
        let owed = (self.burst - tokens).max(0.0) * self.interval_ns as f64;
        t.saturating_add(owed as u64)
    }
}

#[derive(Debug, Clone)]
pub struct SourceClasses {
    /// By class; 0 is `[limits]` itself.
    limits: Vec<SourceLimits>,
    /// By class, from `limits`.
    held: Vec<HeldBucket>,
    by_cidr: PrefixMap<Class>,
    /// `limits.max_flows_per_ipv6_48`.
    max_flows_per_48: usize,
    /// `limits.max_pins_per_ipv6_48`.
    max_pins_per_48: u32,
}

impl SourceClasses {
    pub fn new(l: &Limits) -> Self {
        let mut limits = Vec::with_capacity(l.source.len() + 1);
        limits.push(l.per_source());
        let mut by_cidr = PrefixMap::new();
        for o in &l.source {
            // Validation caps the list far below u16::MAX.
            by_cidr.insert(o.cidr, limits.len().min(usize::from(Class::MAX)) as Class);
            limits.push(o.limits);
        }
        let held = limits.iter().map(HeldBucket::of).collect();
        SourceClasses {
            limits,
            held,
            by_cidr,
            max_flows_per_48: l.max_flows_per_ipv6_48,
            max_pins_per_48: l.max_pins_per_ipv6_48,
        }
    }

    /// Flows the IPv6 /48 of a source in `class` may hold together: an override
    /// that lets a source hold more lets its /48 hold as many.
    pub fn max_flows_per_48(&self, class: Class) -> usize {
        match class {
            0 => self.max_flows_per_48,
            c => self.max_flows_per_48.max(self.get(c).max_flows_per_ip),
        }
    }

    /// Unanswered entries the IPv6 /48 of a source in `class` may have opened
    /// together: an override that lets a source open more lets its /48 open as many.
    pub fn max_pins_per_48(&self, class: Class) -> u32 {
        match class {
            0 => self.max_pins_per_48,
            c => self.max_pins_per_48.max(self.get(c).max_pins_per_ip),
        }
    }

    /// The datagram bucket of a source in `class`, as its only flow holds it.
    #[inline]
    pub fn held(&self, class: Class) -> HeldBucket {
        self.held
            .get(usize::from(class))
            .copied()
            .unwrap_or(self.held[0])
    }

    /// `ip`'s class: a hash lookup per distinct override prefix length (none without
    /// overrides).
    #[inline]
    pub fn class_of(&self, ip: IpAddr) -> Class {
        self.by_cidr
            .find(ip_bits(canonical(ip)))
            .map_or(0, |(_, &c)| c)
    }

    #[inline]
    pub fn get(&self, class: Class) -> &SourceLimits {
        self.limits
            .get(usize::from(class))
            .unwrap_or(&self.limits[0])
    }

    /// `ip`'s limits.
    #[inline]
    pub fn of(&self, ip: IpAddr) -> &SourceLimits {
        self.get(self.class_of(ip))
    }

    /// (rate, burst) per class for the datagram limiter.
    pub fn datagram_rates(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.limits
            .iter()
            .map(|l| (l.datagrams_per_ip, l.datagrams_burst))
    }

    /// (rate, burst) per class for the new-flow limiter.
    pub fn new_flow_rates(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.limits
            .iter()
            .map(|l| (l.new_flows_per_ip, l.new_flows_burst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::ratelimit::SourceLimiter;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    fn held(rate: u32, burst: u32) -> HeldBucket {
        HeldBucket::of(&SourceLimits {
            max_flows_per_ip: 1,
            new_flows_per_ip: 1,
            new_flows_burst: 1,
            datagrams_per_ip: rate,
            datagrams_burst: burst,
            max_pins_per_ip: 1,
        })
    }

    proptest! {
        /// Held in a flow, a source's bucket admits what the limiter's table would:
        /// the same datagrams, but for arrivals on a boundary, where the two
        /// roundings may differ by one.
        #[test]
        fn a_held_bucket_admits_what_the_table_would(
            rate in 1u32..=1000,
            extra in 0u32..=20,
            // In thousandths of the refill interval: about the rate on average, so
            // the bucket drains and refills many times.
            gaps in proptest::collection::vec(0u64..=2000, 1..600),
        ) {
            let burst = rate + extra;
            let interval = 1_000_000_000 / u64::from(rate);
            let (b, mut tat) = (held(rate, burst), 0u64);
            let mut table = SourceLimiter::new(rate, burst, 16);
            let (t0, ip) = (Instant::now(), "192.0.2.1".parse().unwrap());
            let (mut t, mut by_held, mut by_table) = (0u64, 0u32, 0u32);
            for g in gaps {
                t += g * interval / 1000;
                by_held += u32::from(b.take(&mut tat, t));
                by_table += u32::from(table.allow(ip, t0 + Duration::from_nanos(t)));
            }
            prop_assert!(by_held.abs_diff(by_table) <= 1, "held {by_held}, table {by_table}");
        }

        /// Tokens read off a held bucket and written back describe the same bucket.
        #[test]
        fn tokens_and_spent_to_are_inverse(
            rate in 1u32..=100_000,
            tokens in 0u32..=1000,
            t in 0u64..=1 << 50,
        ) {
            let b = held(rate, 1000);
            let k = f64::from(tokens);
            let back = b.tokens(b.spent_to(k, t), t);
            prop_assert!((back - k).abs() < 0.01, "{k} -> {back}");
        }
    }
}
