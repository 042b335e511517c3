//! Relay endpoints. Port mode: a flow's relay endpoint is one of the `listen.relay`
//! addresses plus a port of `listen.relay_ports`; one address holds about 16k ports
//! below the kernel's ephemeral range, so large deployments list several addresses.
//! Prefix mode: an address of `listen.relay_prefix` (by its index within the prefix)
//! plus one of the few `listen.relay_port`s. Either way an endpoint is
//! (address index, port), and endpoints map to dense slot indexes (address-major), so
//! per-endpoint tables are plain arrays and the router does not know the mode.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Listen, RelayPrefix};

/// Which relay address (position in `listen.relay`, or index within
/// `listen.relay_prefix`) and which port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RelayPort {
    pub addr: u32,
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
    /// Prefix mode: the relay ports (a short list, not a range).
    list: Option<Box<[u16]>>,
    addrs: usize,
    statics: Vec<RelayPort>,
}

impl RelaySpace {
    pub fn new(ports: &RangeInclusive<u16>, addrs: usize) -> Self {
        RelaySpace {
            base: *ports.start(),
            ports: ports.clone().count(),
            list: None,
            addrs,
            statics: Vec::new(),
        }
    }

    /// `addrs` addresses of a prefix × the ports of `list`.
    pub fn with_port_list(list: &[u16], addrs: usize) -> Self {
        RelaySpace {
            base: 0,
            ports: list.len(),
            list: Some(list.into()),
            addrs,
            statics: Vec::new(),
        }
    }

    /// The pool of `listen` plus the relay endpoints of `peers`.
    pub fn from_config(cfg: &Config) -> Self {
        let mut s = match &cfg.listen.relay_prefix {
            // Only as many addresses as `max_flows` needs (static peers may reserve
            // some): per-endpoint tables are arrays, a /12 is a million entries. With a
            // sync peer twice that: each host hands out its own half first (see
            // `FlowTable::preferring_half`), and one half should hold `max_flows`.
            Some(p) => {
                let halves = if cfg.sync.is_some() { 2 } else { 1 };
                let need =
                    (halves * (cfg.limits.max_flows + cfg.peers.len())).div_ceil(p.ports.len());
                RelaySpace::with_port_list(&p.ports, need.min(p.addr_count() as usize))
            }
            None => RelaySpace::new(&cfg.listen.relay_ports, cfg.listen.relay.len()),
        };
        let addrs = RelayAddrs::from_listen(&cfg.listen);
        s.statics = cfg
            .peers
            .iter()
            .filter_map(|p| addrs.endpoint_of(p.relay))
            .collect();
        s
    }

    /// The offset of `port` among the pool's ports.
    #[inline]
    fn port_offset(&self, port: u16) -> Option<usize> {
        match &self.list {
            Some(l) => l.iter().position(|&p| p == port),
            None => port
                .checked_sub(self.base)
                .map(usize::from)
                .filter(|&o| o < self.ports),
        }
    }

    fn port_at(&self, off: usize) -> u16 {
        match &self.list {
            Some(l) => l[off],
            None => self.base + off as u16,
        }
    }

    /// The space with `statics` reserved (tests; the config gives them otherwise).
    #[cfg(test)]
    pub fn with_statics(mut self, statics: Vec<RelayPort>) -> Self {
        self.statics = statics;
        self
    }

    /// The static endpoints, in config order.
    pub fn statics(&self) -> &[RelayPort] {
        &self.statics
    }

    pub fn is_static(&self, r: RelayPort) -> bool {
        self.statics.contains(&r)
    }

    /// Slots of the dynamic pool.
    pub fn pool_len(&self) -> usize {
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
        let a = r.addr as usize;
        if a < self.addrs
            && let Some(off) = self.port_offset(r.port)
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
            addr: (i / self.ports) as u32,
            port: self.port_at(i % self.ports),
        }
    }

    /// Pool endpoint `pos` (`pos < pool_len()`) in the order flows take them: the
    /// addresses interleaved (port p on each address, then p+1), so flows spread over
    /// all addresses from the start. Reserved (static) endpoints are included.
    #[inline]
    pub fn interleaved_at(&self, pos: usize) -> RelayPort {
        RelayPort {
            addr: (pos % self.addrs) as u32,
            port: self.port_at(pos / self.addrs),
        }
    }

    /// The slot ([`Self::index`]) of interleaved position `pos` (`pos < pool_len()`),
    /// without building the endpoint.
    #[inline]
    pub fn interleaved_index(&self, pos: usize) -> usize {
        (pos % self.addrs) * self.ports + pos / self.addrs
    }

    /// The interleaved position of pool slot `i` (`i < pool_len()`): the inverse of
    /// [`Self::interleaved_at`] over [`Self::index`].
    #[inline]
    pub fn interleaved_pos(&self, i: usize) -> usize {
        (i % self.ports) * self.addrs + i / self.ports
    }

    /// Every pool endpoint but the reserved ones, in [`Self::interleaved_at`] order.
    pub fn interleaved(&self) -> impl Iterator<Item = RelayPort> + '_ {
        (0..self.pool_len())
            .map(|i| self.interleaved_at(i))
            .filter(|r| !self.statics.contains(r))
    }
}

/// The relay addresses of either mode: what a [`RelayPort`]'s `addr` indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAddrs {
    /// Port mode: `listen.relay`.
    List(Vec<IpAddr>),
    /// Prefix mode: the addresses of `listen.relay_prefix`.
    Prefix(RelayPrefix),
}

impl RelayAddrs {
    pub fn from_listen(l: &Listen) -> Self {
        match &l.relay_prefix {
            Some(p) => RelayAddrs::Prefix(p.clone()),
            None => RelayAddrs::List(l.relay.clone()),
        }
    }

    /// Address `i`.
    #[inline]
    pub fn ip(&self, i: u32) -> Option<IpAddr> {
        match self {
            RelayAddrs::List(l) => l.get(i as usize).copied(),
            RelayAddrs::Prefix(p) => p.nth(i),
        }
    }

    /// The index of `ip`, if it is a relay address.
    #[inline]
    pub fn index_of(&self, ip: IpAddr) -> Option<u32> {
        match self {
            RelayAddrs::List(l) => l.iter().position(|&a| a == ip).map(|i| i as u32),
            RelayAddrs::Prefix(p) => p.offset(ip),
        }
    }

    /// The endpoint of `addr` if its IP is one of the relay addresses.
    pub fn endpoint_of(&self, addr: SocketAddr) -> Option<RelayPort> {
        Some(RelayPort {
            addr: self.index_of(addr.ip())?,
            port: addr.port(),
        })
    }

    /// The socket address of `r`.
    pub fn socket_addr(&self, r: RelayPort) -> Option<SocketAddr> {
        self.ip(r.addr).map(|ip| SocketAddr::new(ip, r.port))
    }
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
    fn prefix_space_maps_addresses_and_listed_ports() {
        let s = RelaySpace::with_port_list(&[5062, 5070], 4);
        assert_eq!(s.len(), 8);
        for i in 0..s.len() {
            assert_eq!(s.index(s.at(i)), Some(i));
        }
        assert_eq!(
            s.index(RelayPort {
                addr: 3,
                port: 5070
            }),
            Some(7)
        );
        assert_eq!(
            s.index(RelayPort {
                addr: 4,
                port: 5062
            }),
            None
        );
        assert_eq!(
            s.index(RelayPort {
                addr: 0,
                port: 5063
            }),
            None
        );
        let order: Vec<_> = s.interleaved().take(5).map(|r| (r.addr, r.port)).collect();
        assert_eq!(
            order,
            [(0, 5062), (1, 5062), (2, 5062), (3, 5062), (0, 5070)]
        );
        let a = RelayAddrs::Prefix(RelayPrefix {
            net: "10.200.0.0".parse().unwrap(),
            len: 16,
            ports: vec![5062],
        });
        let r = a.endpoint_of("10.200.1.2:5062".parse().unwrap()).unwrap();
        assert_eq!(
            r,
            RelayPort {
                addr: 258,
                port: 5062
            }
        );
        assert_eq!(a.socket_addr(r), Some("10.200.1.2:5062".parse().unwrap()));
        assert_eq!(a.endpoint_of("10.201.0.0:5062".parse().unwrap()), None);
        let v6 = RelayAddrs::Prefix(RelayPrefix {
            net: "fd00:200::".parse().unwrap(),
            len: 64,
            ports: vec![5062],
        });
        let r = v6
            .endpoint_of("[fd00:200::f:1]:5062".parse().unwrap())
            .unwrap();
        assert_eq!(r.addr, 0xf_0001);
        assert_eq!(v6.ip(r.addr), Some("fd00:200::f:1".parse().unwrap()));
        assert_eq!(
            v6.endpoint_of("[fd00:200::1:0:0:1]:5062".parse().unwrap()),
            None,
            "beyond the used addresses"
        );
    }

    /// Prefix mode takes as many addresses as `max_flows` needs; with a sync peer twice
    /// that (each host hands out its own half first), never more than the prefix.
    #[test]
    fn a_prefix_pool_holds_two_halves_of_max_flows_with_a_sync_peer() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "a-shared-secret-of-32-bytes-long\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pool = |prefix: &str, sync: bool| {
            let mut text = format!(
                "[listen]\nsip = [\"127.0.0.1:5060\"]\nrelay_prefix = \"{prefix}\"\n\
                 relay_port = [5062, 5064]\n[[backend]]\nname = \"a\"\naddr = \"127.0.0.1:5070\"\n\
                 [limits]\nmax_flows = 1000\n"
            );
            if sync {
                text.push_str(&format!(
                    "[sync]\nlisten = \"127.0.0.1:7400\"\npeer = \"127.0.0.2:7400\"\n\
                     key_file = \"{}\"\n",
                    key.display()
                ));
            }
            let cfg = Config::parse(&text, &crate::config::EphemeralPorts::default()).unwrap();
            RelaySpace::from_config(&cfg).pool_len()
        };
        assert_eq!(pool("127.16.0.0/16", false), 1000);
        assert_eq!(pool("127.16.0.0/16", true), 2000);
        assert_eq!(pool("127.16.0.0/23", true), 1024, "the whole /23, no more");
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
