//! `[access]`: who may send at all. CIDR allow and deny lists, the size of the ban
//! table, and scanner User-Agents to drop. [`Cidr`] is the prefix type the admission
//! code and the admin API share.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// Bans the table holds at most, unless `access.max_bans` says otherwise.
pub const DEFAULT_MAX_BANS: usize = 10_000;

/// Scanner and attack-tool User-Agents dropped by default (case-insensitive
/// substrings). None of them is a phone or a SIP server; `sipsak`, which health
/// checks use, is deliberately not here.
pub const DEFAULT_DROP_USER_AGENTS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "VaxSIPUserAgent",
    "sip-scan",
    "iWar",
    "sundayddr",
];

/// An IPv4 or IPv6 prefix. IPv4 is held as an IPv4-mapped IPv6 prefix (`::ffff:0:0/96`
/// plus the IPv4 length), so one comparison serves both families and an IPv4 client
/// seen through a dual-stack socket (`::ffff:a.b.c.d`) matches its IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// The network, host bits zero, as a 128-bit address.
    net: u128,
    /// Prefix length in the 128-bit space (IPv4 /24 is 120).
    len: u8,
}

const V4_MAPPED: u128 = 0xffff << 32;

/// The length of the prefix (`::ffff:0:0/96`) IPv4 is kept in.
pub const V4_SPACE_LEN: u8 = 96;

/// Whether `bits` (see [`ip_bits`]) is an IPv4 address.
#[inline]
pub fn is_v4_bits(bits: u128) -> bool {
    bits & mask(V4_SPACE_LEN) == V4_MAPPED
}

/// An address in the 128-bit space [`Cidr`] uses.
#[inline]
pub fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => V4_MAPPED | u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

#[inline]
fn mask(len: u8) -> u128 {
    match len {
        0 => 0,
        l => u128::MAX << (128 - u32::from(l.min(128))),
    }
}

impl Cidr {
    /// `ip/len` (`len` in the address's own family); host bits are cleared.
    pub fn new(ip: IpAddr, len: u8) -> Option<Cidr> {
        let len = match ip {
            IpAddr::V4(_) if len <= 32 => len + 96,
            IpAddr::V6(_) if len <= 128 => len,
            _ => return None,
        };
        Some(Cidr::from_bits(ip_bits(ip), len))
    }

    /// A prefix of the 128-bit space (`len` ≤ 128).
    #[inline]
    pub fn from_bits(bits: u128, len: u8) -> Cidr {
        let len = len.min(128);
        Cidr {
            net: bits & mask(len),
            len,
        }
    }

    /// Prefix length in the 128-bit space.
    pub fn bits_len(&self) -> u8 {
        self.len
    }

    pub fn is_v4(&self) -> bool {
        self.len >= V4_SPACE_LEN && is_v4_bits(self.net)
    }

    #[inline]
    pub fn contains_bits(&self, bits: u128) -> bool {
        bits & mask(self.len) == self.net
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_bits(ip_bits(ip))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_v4() {
            let a = Ipv4Addr::from(self.net as u32);
            write!(f, "{a}/{}", self.len - 96)
        } else {
            write!(f, "{}/{}", Ipv6Addr::from(self.net), self.len)
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `192.0.2.0/24`, `2001:db8::/32`, or a bare address (a /32 or /128). Host bits
    /// set below the prefix are an error: `192.0.2.1/24` is probably a typo.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR prefix"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0-{max}"))?,
        };
        let c = Cidr::new(ip, len).ok_or_else(|| format!("`{s}` is not a valid prefix"))?;
        if c.net != ip_bits(ip) {
            return Err(format!(
                "`{s}` has host bits set below the prefix; did you mean {c}?"
            ));
        }
        Ok(c)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[access]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub max_bans: Option<usize>,
    pub drop_user_agents: Option<Vec<String>>,
}

/// `[access]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Sources that may send (empty: everyone). Static peers are not restricted by it.
    pub allow: Vec<Cidr>,
    /// Sources refused, static peers included.
    pub deny: Vec<Cidr>,
    /// Size of the ban table (`/api/v1/bans`).
    pub max_bans: usize,
    /// User-Agent substrings (case-insensitive) whose datagrams are dropped.
    pub drop_user_agents: Vec<String>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            allow: Vec::new(),
            deny: Vec::new(),
            max_bans: DEFAULT_MAX_BANS,
            drop_user_agents: DEFAULT_DROP_USER_AGENTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

fn cidrs(key: &str, list: Option<Vec<String>>) -> Result<Vec<Cidr>, ConfigError> {
    let mut out: Vec<Cidr> = list
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| s.parse().map_err(|e| invalid(format!("{key}[{i}]"), e)))
        .collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

pub(super) fn validate_access(r: RawAccess) -> Result<Access, ConfigError> {
    let max_bans = r.max_bans.unwrap_or(DEFAULT_MAX_BANS);
    if max_bans > 1_000_000 {
        return Err(invalid("access.max_bans", "must be at most 1000000"));
    }
    let drop_user_agents = match r.drop_user_agents {
        None => Access::default().drop_user_agents,
        Some(list) => {
            for (i, s) in list.iter().enumerate() {
                if s.trim().is_empty() || !s.is_ascii() {
                    return Err(invalid(
                        format!("access.drop_user_agents[{i}]"),
                        "must be a non-empty ASCII string",
                    ));
                }
            }
            list
        }
    };
    Ok(Access {
        allow: cidrs("access.allow", r.allow)?,
        deny: cidrs("access.deny", r.deny)?,
        max_bans,
        drop_user_agents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_print_and_match() {
        let table: &[(&str, Result<&str, &str>)] = &[
            ("192.0.2.0/24", Ok("192.0.2.0/24")),
            ("192.0.2.7", Ok("192.0.2.7/32")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            ("2001:db8::/32", Ok("2001:db8::/32")),
            ("2001:db8::1", Ok("2001:db8::1/128")),
            ("::/0", Ok("::/0")),
            ("192.0.2.1/24", Err("host bits")),
            ("192.0.2.0/33", Err("0-32")),
            ("2001:db8::/129", Err("0-128")),
            ("example.com", Err("not an IP")),
            ("192.0.2.0/x", Err("0-32")),
        ];
        for (s, want) in table {
            match (s.parse::<Cidr>(), want) {
                (Ok(c), Ok(w)) => assert_eq!(c.to_string(), *w, "{s}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{s}: {e}"),
                (got, _) => panic!("{s}: got {got:?}, want {want:?}"),
            }
        }
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains("192.0.2.200".parse().unwrap()));
        assert!(c.contains("::ffff:192.0.2.9".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        assert!(!c.contains("::c000:201".parse().unwrap()));
        let all4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(!all4.contains("2001:db8::1".parse().unwrap()));
        let v6: Cidr = "2001:db8:1:2::/64".parse().unwrap();
        assert!(v6.contains("2001:db8:1:2:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8:1:3::1".parse().unwrap()));
    }

    #[test]
    fn access_defaults_and_errors() {
        let a = validate_access(RawAccess::default()).unwrap();
        assert_eq!(a, Access::default());
        assert!(a.drop_user_agents.iter().any(|s| s == "friendly-scanner"));
        let off = validate_access(RawAccess {
            drop_user_agents: Some(vec![]),
            ..Default::default()
        })
        .unwrap();
        assert!(off.drop_user_agents.is_empty());
        let e = validate_access(RawAccess {
            deny: Some(vec!["10.0.0.0/8".into(), "10.1.2.3/8".into()]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("access.deny[1]:"), "{e}");
        let e = validate_access(RawAccess {
            drop_user_agents: Some(vec![" ".into()]),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("access.drop_user_agents[0]"),
            "{e}"
        );
    }
}
