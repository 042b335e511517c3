//! Relay endpoints. A flow's relay endpoint is one of the `listen.relay` addresses
//! plus a port of `listen.relay_ports`; one address holds about 16k ports below the
//! kernel's ephemeral range, so large deployments list several addresses. Endpoints
//! map to dense slot indexes (address-major), so per-endpoint tables are plain arrays.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Which `listen.relay` address (by position) and which port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RelayPort {
    pub addr: u8,
    pub port: u16,
}

impl RelayPort {
    /// On the first relay address: what single-address setups and tests use.
    pub const fn first(port: u16) -> Self {
        RelayPort { addr: 0, port }
    }
}

/// The slot space: `addrs` addresses × the ports of one range (the dynamic pool),
/// then the static peers' fixed endpoints. A static endpoint inside the pool is
/// reserved: flows never take it from the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpace {
    base: u16,
    ports: usize,
    addrs: usize,
    statics: Vec<RelayPort>,
}

impl RelaySpace {
    pub fn new(ports: &RangeInclusive<u16>, addrs: usize) -> Self {
        RelaySpace {
            base: *ports.start(),
            ports: ports.clone().count(),
            addrs,
            statics: Vec::new(),
        }
    }

    /// The pool of `listen` plus the relay endpoints of `peers`.
    pub fn from_config(cfg: &Config) -> Self {
        let mut s = RelaySpace::new(&cfg.listen.relay_ports, cfg.listen.relay.len());
        s.statics = cfg
            .peers
            .iter()
            .filter_map(|p| endpoint_of(&cfg.listen.relay, p.relay))
            .collect();
        s
    }

    /// The static endpoints, in config order.
    pub fn statics(&self) -> &[RelayPort] {
        &self.statics
    }

    pub fn is_static(&self, r: RelayPort) -> bool {
        self.statics.contains(&r)
    }

    /// Slots of the dynamic pool.
    fn pool_len(&self) -> usize {
        self.ports * self.addrs
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.pool_len() + self.statics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot of `r`, or None when it is outside the configured addresses or ports.
    #[inline]
    pub fn index(&self, r: RelayPort) -> Option<usize> {
        let a = usize::from(r.addr);
        if let Some(off) = r.port.checked_sub(self.base).map(usize::from)
            && off < self.ports
            && a < self.addrs
        {
            return Some(a * self.ports + off);
        }
        // A handful at most: a scan is cheaper than a map.
        let i = self.statics.iter().position(|&s| s == r)?;
        Some(self.pool_len() + i)
    }

    /// The endpoint of slot `i` (`i < len()`).
    pub fn at(&self, i: usize) -> RelayPort {
        if i >= self.pool_len() {
            return self.statics[i - self.pool_len()];
        }
        RelayPort {
            addr: (i / self.ports) as u8,
            port: self.base + (i % self.ports) as u16,
        }
    }

    /// Every pool endpoint but the reserved ones, interleaving the addresses (port p
    /// on each address, then p+1), so flows spread over all addresses from the start.
    pub fn interleaved(&self) -> impl Iterator<Item = RelayPort> + '_ {
        (0..self.pool_len())
            .map(|i| RelayPort {
                addr: (i % self.addrs) as u8,
                port: self.base + (i / self.addrs) as u16,
            })
            .filter(|r| !self.statics.contains(r))
    }
}

/// The endpoint of `addr` if its IP is one of the relay addresses.
pub fn endpoint_of(relay: &[IpAddr], addr: SocketAddr) -> Option<RelayPort> {
    let i = relay.iter().position(|&ip| ip == addr.ip())?;
    Some(RelayPort {
        addr: u8::try_from(i).ok()?,
        port: addr.port(),
    })
}

/// The socket address of `r` given the configured relay addresses.
pub fn socket_addr(addrs: &[IpAddr], r: RelayPort) -> Option<SocketAddr> {
    addrs
        .get(usize::from(r.addr))
        .map(|&ip| SocketAddr::new(ip, r.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_reject_outsiders() {
        let s = RelaySpace::new(&(100..=102), 2);
        assert_eq!(s.len(), 6);
        for i in 0..s.len() {
            assert_eq!(s.index(s.at(i)), Some(i));
        }
        assert_eq!(s.index(RelayPort { addr: 1, port: 102 }), Some(5));
        assert_eq!(s.index(RelayPort { addr: 2, port: 100 }), None);
        assert_eq!(s.index(RelayPort::first(99)), None);
        assert_eq!(s.index(RelayPort::first(103)), None);
        let order: Vec<_> = s.interleaved().map(|r| (r.addr, r.port)).collect();
        assert_eq!(
            order,
            [(0, 100), (1, 100), (0, 101), (1, 101), (0, 102), (1, 102)]
        );
    }

    #[test]
    fn static_endpoints_get_slots_after_the_pool_and_are_reserved_in_it() {
        let mut s = RelaySpace::new(&(100..=102), 1);
        s.statics = vec![RelayPort::first(101), RelayPort::first(5100)];
        assert_eq!(s.len(), 5);
        assert_eq!(s.index(RelayPort::first(5100)), Some(4));
        assert_eq!(s.at(4), RelayPort::first(5100));
        assert_eq!(s.index(RelayPort::first(5101)), None);
        let pool: Vec<u16> = s.interleaved().map(|r| r.port).collect();
        assert_eq!(
            pool,
            [100, 102],
            "a static endpoint in the pool is reserved"
        );
    }
}
