//! Which limits a source is held to: `[limits]`, or the longest `[[limits.source]]`
//! prefix that covers it. Sources are sorted into classes (0: the global limits), so a
//! rate limiter's bucket remembers a two-byte class, not the limits.

use std::net::IpAddr;

use super::access::canonical;
use super::prefix_map::PrefixMap;
use crate::config::{Limits, SourceLimits, ip_bits};

/// A source's class: an index into [`SourceClasses`].
pub type Class = u16;

#[derive(Debug, Clone)]
pub struct SourceClasses {
    /// By class; 0 is `[limits]` itself.
    limits: Vec<SourceLimits>,
    by_cidr: PrefixMap<Class>,
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
        SourceClasses { limits, by_cidr }
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
