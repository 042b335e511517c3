//! Who may send at all: the `[access]` allow and deny lists, the expiring ban list
//! the admin API fills, and scanner User-Agents. Pure: time is an argument.
//!
//! A check costs one hash lookup per distinct prefix length in a list (usually one
//! or two: operators ban /32s and /64s), not one comparison per entry.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::prefix_map::PrefixMap;
use crate::config::{Access, Cidr, ip_bits};

/// Why a source was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// In `access.deny`, or not in a non-empty `access.allow`.
    Denied,
    /// On the ban list, and the ban has not expired.
    Banned,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BanError {
    /// The table holds `access.max_bans` live bans.
    Full(usize),
}

impl std::fmt::Display for BanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BanError::Full(n) => write!(f, "the ban table is full ({n} bans, access.max_bans)"),
        }
    }
}

/// The admission lists. Bans survive [`AccessControl::configure`] (a reload).
pub struct AccessControl {
    allow: PrefixMap<()>,
    deny: PrefixMap<()>,
    bans: PrefixMap<Instant>,
    max_bans: usize,
    /// Lower-cased User-Agent substrings.
    user_agents: Vec<Box<[u8]>>,
}

impl AccessControl {
    pub fn new(a: &Access) -> Self {
        let mut ac = AccessControl {
            allow: PrefixMap::new(),
            deny: PrefixMap::new(),
            bans: PrefixMap::new(),
            max_bans: 0,
            user_agents: Vec::new(),
        };
        ac.configure(a);
        ac
    }

    /// Applies a (re)loaded `[access]`; bans stay.
    pub fn configure(&mut self, a: &Access) {
        self.allow = PrefixMap::new();
        for &c in &a.allow {
            self.allow.insert(c, ());
        }
        self.deny = PrefixMap::new();
        for &c in &a.deny {
            self.deny.insert(c, ());
        }
        self.max_bans = a.max_bans;
        self.user_agents = a
            .drop_user_agents
            .iter()
            .map(|s| s.to_ascii_lowercase().into_bytes().into_boxed_slice())
            .collect();
    }

    /// Whether `ip` may send. `is_peer` is asked only when the allow list would refuse
    /// (a static peer is never restricted by `allow`; `deny` and bans apply to all).
    #[inline]
    pub fn check(
        &self,
        ip: IpAddr,
        now: Instant,
        is_peer: impl FnOnce() -> bool,
    ) -> Result<(), Refusal> {
        let bits = ip_bits(canonical(ip));
        if self.deny.find(bits).is_some() {
            return Err(Refusal::Denied);
        }
        if let Some((_, &until)) = self.bans.find(bits)
            && until > now
        {
            return Err(Refusal::Banned);
        }
        if self.allow.len() > 0 && self.allow.find(bits).is_none() && !is_peer() {
            return Err(Refusal::Denied);
        }
        Ok(())
    }

    /// Whether a User-Agent value matches a scanner signature (ASCII case-insensitive
    /// substring; no allocation).
    #[inline]
    pub fn is_scanner(&self, user_agent: &[u8]) -> bool {
        self.user_agents.iter().any(|p| {
            !p.is_empty()
                && user_agent
                    .windows(p.len())
                    .any(|w| w.eq_ignore_ascii_case(p))
        })
    }

    /// Bans `c` until `now + dur` (replacing an existing ban of the same prefix).
    pub fn ban(&mut self, c: Cidr, dur: Duration, now: Instant) -> Result<(), BanError> {
        if !self.bans.contains(&c) && self.bans.len() >= self.max_bans {
            self.prune(now);
            if self.bans.len() >= self.max_bans {
                return Err(BanError::Full(self.max_bans));
            }
        }
        self.bans.insert(c, now + dur);
        Ok(())
    }

    /// Lifts a ban; false if there was none.
    pub fn unban(&mut self, c: &Cidr) -> bool {
        self.bans.remove(c).is_some()
    }

    /// Forgets expired bans.
    pub fn prune(&mut self, now: Instant) {
        self.bans.retain(|&until| until > now);
    }

    /// Live bans with the time left, by address (IPv4 first).
    pub fn bans(&self, now: Instant) -> Vec<(Cidr, Duration)> {
        let mut v: Vec<(Cidr, Duration)> = self
            .bans
            .iter()
            .filter(|(_, u)| **u > now)
            .map(|(c, u)| (*c, u.saturating_duration_since(now)))
            .collect();
        v.sort_by_key(|&(c, _)| c);
        v
    }
}

/// `::ffff:a.b.c.d` is the IPv4 client a.b.c.d (a dual-stack socket).
pub(super) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(allow: &[&str], deny: &[&str], uas: &[&str]) -> Access {
        Access {
            allow: allow.iter().map(|s| s.parse().unwrap()).collect(),
            deny: deny.iter().map(|s| s.parse().unwrap()).collect(),
            max_bans: 3,
            drop_user_agents: uas.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn allow_and_deny_table() {
        let t0 = Instant::now();
        // (allow, deny, source, is_peer, expected)
        type Row<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a str,
            bool,
            Result<(), Refusal>,
        );
        let table: &[Row] = &[
            (&[], &[], "192.0.2.1", false, Ok(())),
            (
                &[],
                &["192.0.2.0/24"],
                "192.0.2.1",
                false,
                Err(Refusal::Denied),
            ),
            (
                &[],
                &["192.0.2.0/24"],
                "192.0.2.1",
                true,
                Err(Refusal::Denied),
            ),
            (
                &[],
                &["192.0.2.0/24"],
                "::ffff:192.0.2.9",
                false,
                Err(Refusal::Denied),
            ),
            (&[], &["192.0.2.0/24"], "192.0.3.1", false, Ok(())),
            (&["10.0.0.0/8"], &[], "10.9.9.9", false, Ok(())),
            (
                &["10.0.0.0/8"],
                &[],
                "192.0.2.1",
                false,
                Err(Refusal::Denied),
            ),
            (&["10.0.0.0/8"], &[], "192.0.2.1", true, Ok(())),
            (
                &["10.0.0.0/8"],
                &["10.1.0.0/16"],
                "10.1.2.3",
                false,
                Err(Refusal::Denied),
            ),
            (&["2001:db8::/32"], &[], "2001:db8:5::1", false, Ok(())),
            (
                &["2001:db8::/32"],
                &[],
                "2001:db9::1",
                false,
                Err(Refusal::Denied),
            ),
            (
                &["0.0.0.0/0"],
                &[],
                "2001:db8::1",
                false,
                Err(Refusal::Denied),
            ),
            (&[], &["::/0"], "2001:db8::1", false, Err(Refusal::Denied)),
            // An IPv6 prefix never covers IPv4 clients (whose addresses the lists
            // keep in ::ffff:0:0/96): "deny all IPv6" must not deny everyone.
            (&[], &["::/0"], "192.0.2.1", false, Ok(())),
            (&[], &["::/64"], "::ffff:192.0.2.1", false, Ok(())),
            (&["::/0"], &[], "192.0.2.1", false, Err(Refusal::Denied)),
            (&["::/0", "0.0.0.0/0"], &[], "192.0.2.1", false, Ok(())),
            (
                &[],
                &["2001:db8:1:2::/64", "198.51.100.7"],
                "198.51.100.7",
                false,
                Err(Refusal::Denied),
            ),
            (
                &[],
                &["2001:db8:1:2::/64", "198.51.100.7"],
                "198.51.100.8",
                false,
                Ok(()),
            ),
            (
                &[],
                &["2001:db8:1:2::/64"],
                "2001:db8:1:2:abcd::1",
                false,
                Err(Refusal::Denied),
            ),
        ];
        for (allow, deny, src, peer, want) in table {
            let ac = AccessControl::new(&access(allow, deny, &[]));
            let got = ac.check(src.parse().unwrap(), t0, || *peer);
            assert_eq!(
                got, *want,
                "allow {allow:?} deny {deny:?} src {src} peer {peer}"
            );
        }
    }

    #[test]
    fn bans_expire_are_bounded_and_survive_reconfigure() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut ac = AccessControl::new(&access(&[], &[], &[]));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        ac.ban(c("192.0.2.7"), s(10), t0).unwrap();
        ac.ban(c("2001:db8:1:2::/64"), s(20), t0).unwrap();
        assert_eq!(
            ac.check(ip("192.0.2.7"), t0, || false),
            Err(Refusal::Banned)
        );
        assert_eq!(ac.check(ip("192.0.2.7"), t0, || true), Err(Refusal::Banned));
        assert_eq!(ac.check(ip("192.0.2.8"), t0, || false), Ok(()));
        assert_eq!(
            ac.check(ip("2001:db8:1:2::99"), t0, || false),
            Err(Refusal::Banned)
        );
        // A reload keeps bans.
        ac.configure(&access(&[], &["203.0.113.0/24"], &[]));
        assert_eq!(
            ac.check(ip("192.0.2.7"), t0 + s(9), || false),
            Err(Refusal::Banned)
        );
        // Expiry, in virtual time.
        assert_eq!(ac.check(ip("192.0.2.7"), t0 + s(10), || false), Ok(()));
        assert_eq!(ac.bans(t0 + s(10)).len(), 1);
        // Bounded: 3 live bans, the 4th is refused, until one expires.
        ac.ban(c("198.51.100.0/24"), s(100), t0).unwrap();
        // (192.0.2.7's ban has expired: pruned to make room.)
        ac.ban(c("198.51.101.0/24"), s(100), t0 + s(10)).unwrap();
        assert_eq!(
            ac.ban(c("198.51.102.0/24"), s(100), t0 + s(5)),
            Err(BanError::Full(3))
        );
        // Re-banning one that exists updates it, no room needed.
        ac.ban(c("198.51.100.0/24"), s(5), t0 + s(5)).unwrap();
        ac.ban(c("198.51.102.0/24"), s(100), t0 + s(11)).unwrap();
        assert_eq!(ac.check(ip("198.51.100.3"), t0 + s(11), || false), Ok(()));
        assert!(ac.unban(&c("198.51.102.0/24")));
        assert!(!ac.unban(&c("198.51.102.0/24")));
        assert_eq!(ac.check(ip("198.51.102.3"), t0 + s(11), || false), Ok(()));
        let left = ac.bans(t0 + s(11));
        assert_eq!(
            left.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>(),
            ["198.51.101.0/24", "2001:db8:1:2::/64"]
        );
        assert_eq!(left[0].1, s(99));
    }

    #[test]
    fn scanner_user_agents_match_case_insensitively() {
        let ac = AccessControl::new(&access(&[], &[], &["friendly-scanner", "SIPVicious"]));
        for (ua, want) in [
            (&b"friendly-scanner"[..], true),
            (b"Friendly-Scanner 1.0", true),
            (b"x sipvicious", true),
            (b"sipvicio", false),
            (b"Linphone/5.2", false),
            (b"", false),
        ] {
            assert_eq!(ac.is_scanner(ua), want, "{}", String::from_utf8_lossy(ua));
        }
        let none = AccessControl::new(&access(&[], &[], &[]));
        assert!(!none.is_scanner(b"friendly-scanner"));
    }
}
