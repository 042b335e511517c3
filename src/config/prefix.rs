//! Prefix mode (`listen.relay_prefix` + `listen.relay_port`): the prefix type, its
//! address arithmetic, and its validation.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::values::parse_addr;
use super::{Config, ConfigError, EphemeralPorts, invalid};

/// Prefix mode: a flow's relay endpoint is an address of `net/len` on one of `ports`.
/// One wildcard socket per port receives for every address of the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPrefix {
    /// The network address (host bits zero).
    pub net: IpAddr,
    pub len: u8,
    pub ports: Vec<u16>,
}

impl RelayPrefix {
    /// At most this many addresses of a prefix are used (an IPv4 /12): endpoint
    /// tables are arrays over the addresses.
    pub const MAX_ADDRS: u32 = 1 << 20;

    fn host_bits(&self) -> u32 {
        let total = if self.net.is_ipv4() { 32 } else { 128 };
        total - u32::from(self.len)
    }

    /// Addresses used for flows: the whole prefix, capped at [`Self::MAX_ADDRS`].
    pub fn addr_count(&self) -> u32 {
        let bits = self.host_bits();
        if bits >= 20 {
            Self::MAX_ADDRS
        } else {
            1 << bits
        }
    }

    fn base(&self) -> u128 {
        match self.net {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    /// Address `i` of the prefix (`i < addr_count()`).
    pub fn nth(&self, i: u32) -> Option<IpAddr> {
        if i >= self.addr_count() {
            return None;
        }
        let v = self.base() + u128::from(i);
        Some(match self.net {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(v as u32)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(v)),
        })
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let v = match (ip, self.net) {
            (IpAddr::V4(a), IpAddr::V4(_)) => u128::from(u32::from(a)),
            (IpAddr::V6(a), IpAddr::V6(_)) => u128::from(a),
            _ => return false,
        };
        let bits = self.host_bits();
        if bits >= 128 {
            return true;
        }
        v >> bits == self.base() >> bits
    }

    /// The index of `ip` within the prefix, if it is one of the used addresses.
    #[inline]
    pub fn offset(&self, ip: IpAddr) -> Option<u32> {
        if !self.contains(ip) {
            return None;
        }
        let v = match ip {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let off = v - self.base();
        u32::try_from(off).ok().filter(|&o| o < self.addr_count())
    }
}

impl fmt::Display for RelayPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// Why `net/len` (network address, host bits zero, not unspecified or multicast) cannot
/// be a relay prefix: the kernel would not send from its addresses, or making it local
/// would take over addresses that are not ours to take.
fn unusable(net: IpAddr, len: u8) -> Option<&'static str> {
    match net {
        // A /8 at least: the first octet decides.
        IpAddr::V4(a) => match a.octets()[0] {
            0 => Some("is in 0.0.0.0/8, which the kernel does not send from"),
            224.. => Some("is in 224.0.0.0/3 (multicast, reserved, broadcast)"),
            _ => None,
        },
        IpAddr::V6(_) if len < 32 => {
            Some("is too large: a /32 at most (a /64 is usual; 2^20 addresses are used)")
        }
        IpAddr::V6(a) if a.is_loopback() => Some("is the loopback address"),
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
            Some("is IPv4-mapped: an IPv6 relay socket cannot use those addresses")
        }
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => {
            Some("is link-local: sending from it needs an interface")
        }
        IpAddr::V6(_) => None,
    }
}

/// Addresses the config sends to or hears from must lie outside the prefix: its local
/// route would keep a datagram to any of them on this host (a backend's would come
/// back into our own relay socket, from no backend).
pub(super) fn check_outside_prefix(cfg: &Config) -> Result<(), ConfigError> {
    let Some(p) = &cfg.listen.relay_prefix else {
        return Ok(());
    };
    let mut addrs: Vec<(String, IpAddr)> = Vec::new();
    for (i, b) in cfg.backends.iter().enumerate() {
        addrs.push((format!("backend[{i}].addr"), b.addr.ip()));
    }
    if let Some(s) = &cfg.sync {
        addrs.push(("sync.listen".into(), s.listen.ip()));
        addrs.push(("sync.peer".into(), s.peer.ip()));
    }
    if let Some(h) = &cfg.hep {
        addrs.push(("hep.collector".into(), h.collector.ip()));
    }
    // A VRRP peer inside it would get our unicast adverts delivered here (both hosts
    // master); a VIP inside it is local on the backup too (both answer ARP for it).
    if let Some(v) = &cfg.vrrp {
        for (i, vip) in v.vips.iter().enumerate() {
            addrs.push((format!("vrrp.vips[{i}]"), IpAddr::V4(vip.addr)));
        }
        for (i, peer) in v.peers.iter().enumerate() {
            addrs.push((format!("vrrp.peers[{i}]"), IpAddr::V4(*peer)));
        }
    }
    for (i, peer) in cfg.peers.iter().enumerate() {
        for (j, a) in peer.addrs.iter().enumerate() {
            let key = if peer.addrs.len() == 1 {
                format!("peer[{i}].addr")
            } else {
                format!("peer[{i}].addr[{j}]")
            };
            addrs.push((key, a.ip()));
        }
    }
    match addrs.into_iter().find(|(_, ip)| p.contains(*ip)) {
        Some((key, ip)) => Err(invalid(
            key,
            format!(
                "{ip} is inside listen.relay_prefix {p}, which sipfront makes local: \
                 datagrams to it would never leave this host"
            ),
        )),
        None => Ok(()),
    }
}

/// Relay ports per prefix at most: one socket each.
const MAX_PREFIX_PORTS: usize = 16;

/// `listen.relay_prefix` (an address/length) and `listen.relay_port` (one port or a
/// short list): the relay sockets bind the wildcard address on those ports.
pub(super) fn validate_relay_prefix(
    text: &str,
    ports: Option<Vec<u16>>,
    sip: &[SocketAddr],
    eph: &EphemeralPorts,
) -> Result<RelayPrefix, ConfigError> {
    const KEY: &str = "listen.relay_prefix";
    let (a, l) = text
        .split_once('/')
        .ok_or_else(|| invalid(KEY, format!("`{text}` is not ADDRESS/LENGTH")))?;
    let net: IpAddr = parse_addr(KEY, a.trim())?;
    let max_len = if net.is_ipv4() { 32 } else { 128 };
    let len: u8 = l
        .trim()
        .parse()
        .ok()
        .filter(|&n| n <= max_len)
        .ok_or_else(|| invalid(KEY, format!("`{l}` is not a prefix length (0-{max_len})")))?;
    let prefix = RelayPrefix {
        net,
        len,
        ports: Vec::new(),
    };
    let host_bits = u32::from(max_len - len);
    let v = match net {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    if host_bits < 128 && v & ((1u128 << host_bits) - 1) != 0 {
        return Err(invalid(
            KEY,
            format!("`{text}` has host bits set (write the network address)"),
        ));
    }
    if net.is_unspecified() || net.is_multicast() || (len < 8 && net.is_ipv4()) {
        return Err(invalid(
            KEY,
            format!("`{text}` is not a usable relay prefix"),
        ));
    }
    if let Some(why) = unusable(net, len) {
        return Err(invalid(KEY, format!("`{text}` {why}")));
    }
    // The whole prefix is made local; past the 2^20 addresses used, the rest would
    // only cut this host off from whatever lives there.
    if net.is_ipv4() && len < 12 {
        return Err(invalid(
            KEY,
            format!(
                "`{text}` is larger than the 2^20 addresses sipfront uses: a /12 or longer \
                 (the whole prefix is made local on this host)"
            ),
        ));
    }
    if !sip.iter().any(|s| s.is_ipv4() == net.is_ipv4()) {
        return Err(invalid(
            KEY,
            "mixed families: no listen.sip address of the prefix's IP family",
        ));
    }
    if let Some(s) = sip.iter().find(|s| prefix.contains(s.ip())) {
        return Err(invalid(
            KEY,
            format!("overlaps the listen.sip address {}", s.ip()),
        ));
    }
    const PKEY: &str = "listen.relay_port";
    let ports =
        ports.ok_or_else(|| invalid(PKEY, "required with listen.relay_prefix (e.g. 5062)"))?;
    if ports.is_empty() || ports.len() > MAX_PREFIX_PORTS {
        return Err(invalid(
            PKEY,
            format!("needs 1 to {MAX_PREFIX_PORTS} ports"),
        ));
    }
    for (i, &p) in ports.iter().enumerate() {
        if p == 0 {
            return Err(invalid(PKEY, "port 0 is not a usable relay port"));
        }
        if ports[..i].contains(&p) {
            return Err(invalid(PKEY, format!("port {p} is listed twice")));
        }
        // The relay sockets bind the wildcard address: any SIP socket on the port clashes.
        if sip.iter().any(|s| s.port() == p) {
            return Err(invalid(PKEY, format!("port {p} is a listen.sip port")));
        }
        if eph.first_conflict(&(p..=p)).is_some() {
            return Err(invalid(
                PKEY,
                format!(
                    "port {p} is in the kernel's ephemeral range {}-{}; any socket could take it",
                    eph.range.start(),
                    eph.range.end()
                ),
            ));
        }
    }
    Ok(RelayPrefix { ports, ..prefix })
}
