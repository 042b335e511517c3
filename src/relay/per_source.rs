//! Flows per source (an IPv4 address or an IPv6 /64), for `limits.max_flows_per_ip`.
//! Two maps with the narrowest key each (u32, u64) instead of one keyed by a u128
//! [`SourceKey`]: with a source per flow (phones behind their own NATs) this map has
//! as many entries as the flow table, so its entry size is memory per flow.

use std::collections::HashMap;
use std::net::IpAddr;

use super::ratelimit::{SourceKey, source_key};

/// A source's count, the id of the flow that made it one and of the last one added
/// (see [`SourceCounts::first`], [`SourceCounts::remove_flow`]).
#[derive(Debug, Clone, Copy)]
struct Count {
    n: u32,
    first: u32,
    last: u32,
}

type Map<K> = HashMap<K, Count, foldhash::fast::RandomState>;

/// A source in its narrow form; the same grouping as [`source_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    V4(u32),
    V6(u64),
}

/// Whether `ip` counts as an IPv6 source (an IPv4-mapped address counts as its IPv4
/// one).
pub fn is_v6_source(ip: IpAddr) -> bool {
    matches!(src_of(ip), Src::V6(_))
}

fn src_of(ip: IpAddr) -> Src {
    match ip {
        IpAddr::V4(a) => Src::V4(u32::from(a)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => Src::V4(u32::from(v4)),
            None => Src::V6((u128::from(a) >> 64) as u64),
        },
    }
}

pub struct SourceCounts {
    v4: Map<u32>,
    v6: Map<u64>,
    /// IPv6 counts summed per /48 (the /64 key's top 48 bits).
    v6_48: HashMap<u64, u32, foldhash::fast::RandomState>,
}

/// The /48 an IPv6 /64 key lies in.
fn site_of(k64: u64) -> u64 {
    k64 >> 16
}

impl SourceCounts {
    /// Room for `n` sources of each family, allocated once (growth by doubling would
    /// leave the old table's memory behind in the allocator).
    pub fn with_capacity(n: usize) -> Self {
        let h = foldhash::fast::RandomState::default;
        SourceCounts {
            v4: Map::with_capacity_and_hasher(n, h()),
            v6: Map::with_capacity_and_hasher(n, h()),
            v6_48: HashMap::with_capacity_and_hasher(n, h()),
        }
    }

    fn count(&self, ip: IpAddr) -> Option<&Count> {
        match src_of(ip) {
            Src::V4(k) => self.v4.get(&k),
            Src::V6(k) => self.v6.get(&k),
        }
    }

    pub fn get(&self, ip: IpAddr) -> u32 {
        self.count(ip).map_or(0, |c| c.n)
    }

    pub fn add(&mut self, ip: IpAddr) {
        self.add_n(ip, 1);
    }

    /// Adds `n` to `ip`'s count (none: nothing).
    pub fn add_n(&mut self, ip: IpAddr, n: u32) {
        if n > 0 {
            self.add_counted(ip, u32::MAX, n);
        }
    }

    /// Counts flow `id` for `ip`'s source; returns the source's count now.
    pub fn add_flow(&mut self, ip: IpAddr, id: u32) -> u32 {
        self.add_counted(ip, id, 1)
    }

    fn add_counted(&mut self, ip: IpAddr, id: u32, by: u32) -> u32 {
        let new = Count {
            n: 0,
            first: id,
            last: id,
        };
        let c = match src_of(ip) {
            Src::V4(k) => self.v4.entry(k).or_insert(new),
            Src::V6(k) => {
                *self.v6_48.entry(site_of(k)).or_insert(0) += by;
                self.v6.entry(k).or_insert(new)
            }
        };
        c.n += by;
        c.last = id;
        c.n
    }

    /// The counts of all IPv6 sources in `ip`'s /48 together (0 for IPv4).
    pub fn get_48(&self, ip: IpAddr) -> u32 {
        match src_of(ip) {
            Src::V4(_) => 0,
            Src::V6(k) => self.v6_48.get(&site_of(k)).copied().unwrap_or(0),
        }
    }

    fn count_mut(&mut self, ip: IpAddr) -> Option<&mut Count> {
        match src_of(ip) {
            Src::V4(k) => self.v4.get_mut(&k),
            Src::V6(k) => self.v6.get_mut(&k),
        }
    }

    /// Takes flow `id` off `ip`'s source's count. If one flow is left and it is
    /// known (after a count of two: whichever of the first and the last added is not
    /// `id`), returns it, and it is the source's first from now on; the caller checks
    /// that it still is that source's.
    pub fn remove_flow(&mut self, ip: IpAddr, id: u32) -> Option<u32> {
        let c = self.count_mut(ip)?;
        let other = if c.first == id { c.last } else { c.first };
        let left = (c.n == 2).then_some(other);
        let left = left.filter(|&l| l != id);
        if let Some(l) = left {
            c.first = l;
        }
        self.remove(ip, 1);
        left
    }

    /// The id given with the count that made `ip`'s source's count one, from zero or
    /// by [`SourceCounts::remove_flow`] (that flow may have gone since).
    pub fn first(&self, ip: IpAddr) -> Option<u32> {
        self.count(ip).map(|c| c.first)
    }

    /// Takes `by` off `ip`'s count (never below zero); a count of zero has no entry.
    pub fn remove(&mut self, ip: IpAddr, by: u32) {
        fn dec<K: std::hash::Hash + Eq>(m: &mut Map<K>, k: K, by: u32) {
            if let Some(c) = m.get_mut(&k) {
                c.n = c.n.saturating_sub(by);
                if c.n == 0 {
                    m.remove(&k);
                }
            }
        }
        match src_of(ip) {
            Src::V4(k) => dec(&mut self.v4, k, by),
            Src::V6(k) => {
                // What the /64 had, at most, comes off its /48.
                let had = self.v6.get(&k).map_or(0, |c| c.n);
                dec_site(&mut self.v6_48, k, by.min(had));
                dec(&mut self.v6, k, by);
            }
        }
    }

    /// Every source with its count, as [`SourceKey`]s.
    pub fn iter(&self) -> impl Iterator<Item = (SourceKey, u32)> + '_ {
        let v4 = self
            .v4
            .iter()
            .map(|(&k, c)| (source_key(IpAddr::V4(k.into())), c.n));
        let v6 = self.v6.iter().map(|(&k, c)| {
            let ip = std::net::Ipv6Addr::from(u128::from(k) << 64);
            (source_key(IpAddr::V6(ip)), c.n)
        });
        v4.chain(v6)
    }
}

fn dec_site(m: &mut HashMap<u64, u32, foldhash::fast::RandomState>, k64: u64, by: u32) {
    if let Some(n) = m.get_mut(&site_of(k64)) {
        *n = n.saturating_sub(by);
        if *n == 0 {
            m.remove(&site_of(k64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_source_as_source_key_groups_them() {
        let mut c = SourceCounts::with_capacity(4);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        c.add(ip("192.0.2.1"));
        c.add(ip("::ffff:192.0.2.1"));
        c.add(ip("2001:db8:1:2::1"));
        c.add(ip("2001:db8:1:2::9"));
        c.add(ip("2001:db8:1:3::1"));
        assert_eq!(c.get(ip("192.0.2.1")), 2);
        assert_eq!(c.get(ip("2001:db8:1:2::77")), 2);
        // The /64s of one /48 together; IPv4 has none.
        assert_eq!(c.get_48(ip("2001:db8:1:99::1")), 3);
        assert_eq!(c.get_48(ip("2001:db8:2::1")), 0);
        assert_eq!(c.get_48(ip("192.0.2.1")), 0);
        let mut all: Vec<_> = c.iter().collect();
        all.sort();
        let mut want = vec![
            (source_key(ip("192.0.2.1")), 2),
            (source_key(ip("2001:db8:1:2::")), 2),
            (source_key(ip("2001:db8:1:3::")), 1),
        ];
        want.sort();
        assert_eq!(all, want);
        c.remove(ip("192.0.2.1"), 1);
        c.remove(ip("192.0.2.1"), 1);
        c.remove(ip("192.0.2.1"), 1);
        assert_eq!(c.get(ip("192.0.2.1")), 0);
        assert_eq!(c.iter().count(), 2);
        // Removal takes off the /48 what the /64 had, no more.
        c.remove(ip("2001:db8:1:2::1"), 5);
        assert_eq!(c.get_48(ip("2001:db8:1::1")), 1);
        c.remove_flow(ip("2001:db8:1:3::1"), 0);
        assert_eq!(c.get_48(ip("2001:db8:1::1")), 0);
        assert_eq!(c.iter().count(), 0);
    }

    #[test]
    fn the_flow_left_after_a_count_of_two_is_known() {
        let mut c = SourceCounts::with_capacity(4);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        c.add_flow(a, 10);
        c.add_flow(a, 11);
        assert_eq!(c.remove_flow(a, 10), Some(11));
        assert_eq!(c.first(a), Some(11));
        c.add_flow(a, 12);
        assert_eq!(c.remove_flow(a, 12), Some(11));
        // From three, two are left: none is named.
        c.add_flow(a, 13);
        c.add_flow(a, 14);
        assert_eq!(c.remove_flow(a, 13), None);
        assert_eq!(c.remove_flow(a, 11), Some(14));
        assert_eq!(c.remove_flow(a, 14), None);
        assert_eq!(c.get(a), 0);
    }
}
