//! `[vrrp]`: the built-in VRRPv3 speaker. Absent = external mode (keepalived or
//! Pacemaker moves the address; `/ready` is their health check).

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Deserialize;

use super::defaults::*;
use super::values::{duration, parse_addr};
use super::{ConfigError, format_duration, invalid, parse_duration};

/// Addresses one VRRP instance holds at most: an advert carries their count in one
/// byte (`vrrp::packet::MAX_ADDRS`, checked equal there).
pub const MAX_VIPS: usize = 255;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVrrp {
    pub interface: Option<String>,
    pub vrid: Option<u8>,
    pub priority: Option<u8>,
    pub advert_interval: Option<String>,
    #[serde(default)]
    pub vips: Vec<String>,
    #[serde(default)]
    pub peers: Vec<String>,
    pub preempt: Option<bool>,
    pub preempt_delay: Option<String>,
    pub track_backends: Option<u8>,
    pub garp_repeat: Option<u32>,
    pub garp_delay: Option<String>,
    pub garp_refresh: Option<String>,
}

/// A virtual address: `ADDR/PREFIX [dev IFACE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    /// Interface to put it on; default: `vrrp.interface`.
    pub dev: Option<String>,
}

impl std::fmt::Display for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)?;
        if let Some(d) = &self.dev {
            write!(f, " dev {d}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vrrp {
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub advert_interval: Duration,
    pub vips: Vec<Vip>,
    /// Unicast peers; empty = multicast to 224.0.0.18.
    pub peers: Vec<Ipv4Addr>,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Priority drop while no backend is up (0 = no tracking).
    pub track_backends: u8,
    /// Gratuitous ARPs per burst, and the delay of the second burst after takeover.
    pub garp_repeat: u32,
    pub garp_delay: Duration,
    /// Re-announce the VIPs this often while master (switches that forget).
    pub garp_refresh: Option<Duration>,
}

fn parse_vip(s: &str) -> Result<Vip, String> {
    let mut words = s.split_whitespace();
    let cidr = words.next().ok_or("empty address")?;
    let (a, p) = cidr
        .split_once('/')
        .ok_or_else(|| format!("`{cidr}` needs a prefix length, e.g. {cidr}/24"))?;
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("`{a}` is not an IPv4 address"))?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| format!("`{p}` is not a prefix length 1-32"))?;
    let dev = match (words.next(), words.next(), words.next()) {
        (None, _, _) => None,
        (Some("dev"), Some(d), None) => Some(iface_name(d)?.to_string()),
        _ => return Err(format!("`{s}`: expected `ADDR/PREFIX [dev IFACE]`")),
    };
    Ok(Vip { addr, prefix, dev })
}

/// A Linux interface name: 1-15 bytes, not `.` or `..`, without `/`, `:`, whitespace
/// (the kernel's `dev_valid_name`) or control characters. Whether it exists is known
/// only on the host that runs it.
fn iface_name(name: &str) -> Result<&str, String> {
    let ok = (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control());
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "`{name}` is not an interface name (1-15 characters, no `/`, `:` or spaces)"
        ))
    }
}

/// `[vrrp]`.
pub(super) fn validate_vrrp(r: RawVrrp) -> Result<Vrrp, ConfigError> {
    let interface = r
        .interface
        .filter(|i| !i.is_empty())
        .ok_or_else(|| invalid("vrrp.interface", "is required (e.g. \"eth0\")"))?;
    iface_name(&interface).map_err(|why| invalid("vrrp.interface", why))?;
    let vrid = match r.vrid {
        Some(v @ 1..=255) => v,
        Some(_) => return Err(invalid("vrrp.vrid", "must be 1-255")),
        None => {
            return Err(invalid(
                "vrrp.vrid",
                "is required (1-255, the same on both peers)",
            ));
        }
    };
    let priority = match r.priority.unwrap_or(DEFAULT_VRRP_PRIORITY) {
        0 => {
            return Err(invalid(
                "vrrp.priority",
                "must be 1-255 (255: address owner)",
            ));
        }
        p => p,
    };
    let d = |key: &str, v: &Option<String>, default: Duration| {
        duration(key, v.as_deref(), default, Duration::ZERO)
    };
    let advert_interval = d(
        "vrrp.advert_interval",
        &r.advert_interval,
        DEFAULT_ADVERT_INTERVAL,
    )?;
    let ms = advert_interval.as_millis();
    if !(10..=40_950).contains(&ms) || ms % 10 != 0 {
        return Err(invalid(
            "vrrp.advert_interval",
            format!(
                "{} must be a whole number of centiseconds from 10ms to 40950ms",
                format_duration(advert_interval)
            ),
        ));
    }
    if r.vips.is_empty() {
        return Err(invalid("vrrp.vips", "needs at least one address"));
    }
    if r.vips.len() > MAX_VIPS {
        return Err(invalid(
            "vrrp.vips",
            format!("at most {MAX_VIPS} addresses (one advert lists them all)"),
        ));
    }
    let mut vips = Vec::new();
    for (i, s) in r.vips.iter().enumerate() {
        let v = parse_vip(s).map_err(|r| invalid(format!("vrrp.vips[{i}]"), r))?;
        if vips.iter().any(|x: &Vip| x.addr == v.addr) {
            return Err(invalid(
                format!("vrrp.vips[{i}]"),
                format!("{} is listed twice", v.addr),
            ));
        }
        vips.push(v);
    }
    let mut peers = Vec::new();
    for (i, s) in r.peers.iter().enumerate() {
        let key = format!("vrrp.peers[{i}]");
        let p = parse_addr::<Ipv4Addr>(&key, s)?;
        if peers.contains(&p) {
            return Err(invalid(key, format!("{p} is listed twice")));
        }
        peers.push(p);
    }
    let garp_refresh = match &r.garp_refresh {
        Some(s) => {
            let r = parse_duration(s).map_err(|e| invalid("vrrp.garp_refresh", e))?;
            if r > Duration::ZERO && r < Duration::from_secs(1) {
                return Err(invalid(
                    "vrrp.garp_refresh",
                    "at least 1s (or \"0s\": never); each refresh is a burst per address",
                ));
            }
            (r > Duration::ZERO).then_some(r)
        }
        None => None,
    };
    let garp_repeat = r.garp_repeat.unwrap_or(DEFAULT_GARP_REPEAT);
    if !(1..=100).contains(&garp_repeat) {
        return Err(invalid("vrrp.garp_repeat", "1 to 100 ARPs per burst"));
    }
    Ok(Vrrp {
        interface,
        vrid,
        priority,
        advert_interval,
        vips,
        peers,
        preempt: r.preempt.unwrap_or(DEFAULT_PREEMPT),
        preempt_delay: d(
            "vrrp.preempt_delay",
            &r.preempt_delay,
            DEFAULT_PREEMPT_DELAY,
        )?,
        track_backends: r.track_backends.unwrap_or(DEFAULT_TRACK_BACKENDS),
        garp_repeat,
        garp_delay: d("vrrp.garp_delay", &r.garp_delay, DEFAULT_GARP_DELAY)?,
        garp_refresh,
    })
}

impl Vrrp {
    pub(super) fn write_toml(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vips: Vec<String> = self.vips.iter().map(|v| format!("\"{v}\"")).collect();
        let peers: Vec<String> = self.peers.iter().map(|p| format!("\"{p}\"")).collect();
        writeln!(
            f,
            "\n[vrrp]\ninterface = \"{}\"\nvrid = {}\npriority = {}\nadvert_interval = \"{}\"\nvips = [{}]\npeers = [{}]\npreempt = {}\npreempt_delay = \"{}\"\ntrack_backends = {}\ngarp_repeat = {}\ngarp_delay = \"{}\"",
            self.interface,
            self.vrid,
            self.priority,
            format_duration(self.advert_interval),
            vips.join(", "),
            peers.join(", "),
            self.preempt,
            format_duration(self.preempt_delay),
            self.track_backends,
            self.garp_repeat,
            format_duration(self.garp_delay),
        )?;
        if let Some(r) = self.garp_refresh {
            writeln!(f, "garp_refresh = \"{}\"", format_duration(r))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vips_parse() {
        assert_eq!(
            parse_vip("10.1.0.10/24 dev eth1").unwrap(),
            Vip {
                addr: "10.1.0.10".parse().unwrap(),
                prefix: 24,
                dev: Some("eth1".into())
            }
        );
        assert!(parse_vip("10.1.0.10").unwrap_err().contains("prefix"));
        assert!(parse_vip("10.1.0.10/33").is_err());
        assert!(parse_vip("10.1.0.10/24 via x").is_err());
    }
}
