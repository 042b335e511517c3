//! Which datagrams the HEP export takes: pure, allocation-free.

use std::hash::BuildHasher;
use std::net::IpAddr;

use crate::config::{Cidr, HepConfig, Legs};

/// Decides per datagram; built from `[hep]`.
#[derive(Debug, Clone)]
pub struct Selector {
    pub legs: Legs,
    /// Call-IDs whose hash is below this are taken (`u64::MAX`: all).
    threshold: u64,
    all: bool,
    only: Vec<Cidr>,
    hasher: foldhash::fast::FixedState,
}

impl Selector {
    /// `seed` picks which Call-IDs a sample takes: secret, so senders cannot choose
    /// Call-IDs that stay out of it (the dataplane derives it from the sync key, so
    /// both hosts of a pair take the same calls, else draws it per process).
    pub fn new(cfg: &HepConfig, seed: u64) -> Selector {
        let all = cfg.sample_ppm >= 1_000_000;
        Selector {
            legs: cfg.legs,
            threshold: ((u128::from(cfg.sample_ppm) << 64) / 1_000_000).min(u128::from(u64::MAX))
                as u64,
            all,
            only: cfg.only.clone(),
            hasher: foldhash::fast::FixedState::with_seed(seed),
        }
    }

    /// Whether a datagram of this call between this client and backend is exported. Both
    /// legs and every message of one call get the same answer.
    pub fn wants(&self, call_id: &[u8], client: IpAddr, backend: IpAddr) -> bool {
        if !self.only.is_empty()
            && !self
                .only
                .iter()
                .any(|c| c.contains(client) || c.contains(backend))
        {
            return false;
        }
        self.all || self.hasher.hash_one(call_id) < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EphemeralPorts};

    fn sel(hep: &str) -> Selector {
        seeded(hep, 7)
    }

    fn seeded(hep: &str, seed: u64) -> Selector {
        let text = format!(
            "[listen]\nsip = [\"127.0.0.1:5060\"]\nrelay_ports = \"20000-20099\"\n[[backend]]\nname = \"a\"\naddr = \"127.0.0.1:5070\"\n[hep]\ncollector = \"127.0.0.1:9060\"\n{hep}"
        );
        Selector::new(
            Config::parse(&text, &EphemeralPorts::default())
                .unwrap()
                .hep
                .as_ref()
                .unwrap(),
            seed,
        )
    }

    #[test]
    fn sampling_is_per_call_and_near_the_share() {
        let s = sel("sample = 0.25");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let taken = (0..10_000)
            .filter(|i| s.wants(format!("call-{i}@x").as_bytes(), ip, ip))
            .count();
        assert!((2000..3000).contains(&taken), "{taken}");
        for i in 0..100 {
            let id = format!("c{i}");
            assert_eq!(
                s.wants(id.as_bytes(), ip, ip),
                s.wants(id.as_bytes(), ip, ip)
            );
        }
        assert!(sel("sample = 1.0").wants(b"x", ip, ip));
        assert!(!sel("sample = 0.0").wants(b"x", ip, ip));
    }

    /// The calls a sample takes follow the seed: no Call-ID is out of every sample.
    #[test]
    fn the_sample_follows_the_seed() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let taken = |seed| -> Vec<bool> {
            let s = seeded("sample = 0.5", seed);
            (0..64)
                .map(|i| s.wants(format!("c{i}").as_bytes(), ip, ip))
                .collect()
        };
        assert_eq!(taken(1), taken(1));
        assert_ne!(taken(1), taken(2));
    }

    #[test]
    fn only_matches_client_or_backend() {
        let s = sel("only = [\"198.51.100.0/24\"]");
        let inside: IpAddr = "198.51.100.9".parse().unwrap();
        let outside: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(s.wants(b"x", inside, outside));
        assert!(s.wants(b"x", outside, inside));
        assert!(!s.wants(b"x", outside, outside));
    }
}
