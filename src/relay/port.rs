//! Relay endpoints. A flow's relay endpoint is one of the `listen.relay` addresses
//! plus a port of `listen.relay_ports`; one address holds about 16k ports below the
//! kernel's ephemeral range, so large deployments list several addresses. Endpoints
//! map to dense slot indexes (address-major), so per-endpoint tables are plain arrays.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

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

/// The slot space: `addrs` addresses × the ports of one range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpace {
    base: u16,
    ports: usize,
    addrs: usize,
}

impl RelaySpace {
    pub fn new(ports: &RangeInclusive<u16>, addrs: usize) -> Self {
        RelaySpace {
            base: *ports.start(),
            ports: ports.clone().count(),
            addrs,
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.ports * self.addrs
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot of `r`, or None when it is outside the configured addresses or ports.
    pub fn index(&self, r: RelayPort) -> Option<usize> {
        let off = usize::from(r.port.checked_sub(self.base)?);
        let a = usize::from(r.addr);
        (off < self.ports && a < self.addrs).then_some(a * self.ports + off)
    }

    /// The endpoint of slot `i` (`i < len()`).
    pub fn at(&self, i: usize) -> RelayPort {
        RelayPort {
            addr: (i / self.ports) as u8,
            port: self.base + (i % self.ports) as u16,
        }
    }

    /// Every endpoint, interleaving the addresses (port p on each address, then p+1),
    /// so flows spread over all addresses from the start.
    pub fn interleaved(&self) -> impl Iterator<Item = RelayPort> + '_ {
        (0..self.len()).map(|i| RelayPort {
            addr: (i % self.addrs) as u8,
            port: self.base + (i / self.addrs) as u16,
        })
    }
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
}
