//! TOML config -> validated [`Config`]. Every error names the key it is about.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod display;
mod duration;
mod raw;
mod vrrp;

pub use duration::{format_duration, parse_duration};
pub use vrrp::{Vip, Vrrp};

/// A config problem: which key, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(String),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// What brings a flow back to its home backend after that backend recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Failback {
    Never,
    #[default]
    OnRegister,
    Immediate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub sip: Vec<SocketAddr>,
    /// Relay addresses: each holds the whole `relay_ports` range.
    pub relay: Vec<IpAddr>,
    pub relay_ports: RangeInclusive<u16>,
    /// Forward CRLF keepalives to the backend instead of absorbing them.
    pub forward_keepalives: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_flows: usize,
    pub max_dialogs: usize,
    /// New flows per second per source IP (token bucket refill rate).
    pub new_flows_per_ip: u32,
    /// Token bucket depth.
    pub new_flows_burst: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// A flow without traffic (and without a live registration) expires after this.
    pub flow_idle: Duration,
    /// Added to the expiry a 2xx to REGISTER grants.
    pub register_grace: Duration,
    /// Idle lifetime of a dialog (Call-ID -> backend) entry.
    pub dialog_idle: Duration,
    /// Lifetime of a pin for a non-dialog transaction (OPTIONS, MESSAGE, ...) and
    /// of a dialog after the final response to its BYE: long enough for retransmissions.
    pub transaction: Duration,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Bearer token for changing API calls, read from `token_file`.
    pub token: Option<String>,
    pub token_file: Option<String>,
}

// The token never appears in logs or `check-config` output.
impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// OPTIONS health probing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
    /// Final response codes that count as alive.
    pub alive_codes: Vec<RangeInclusive<u16>>,
    /// Answer requests with a stateless 503 when no backend is up.
    pub reply_503: bool,
    /// Retry-After (seconds) in those 503s.
    pub retry_after: u32,
}

impl Health {
    pub fn is_alive_code(&self, code: u16) -> bool {
        self.alive_codes.iter().any(|r| r.contains(&code))
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: Listen,
    pub backends: Vec<Backend>,
    pub failback: Failback,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub admin: Admin,
    pub health: Health,
    /// Built-in VRRPv3; None = external mode.
    pub vrrp: Option<Vrrp>,
    /// State sync with the peer; None = no sync.
    pub sync: Option<Sync>,
}

/// `[sync]`: the peer link that mirrors flows and dialogs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sync {
    pub listen: SocketAddr,
    pub peer: SocketAddr,
    pub key: crate::sync::Key,
    pub key_file: String,
}

fn validate_sync(r: raw::RawSync) -> Result<Sync, ConfigError> {
    let addr = |key: &str, v: Option<String>| -> Result<SocketAddr, ConfigError> {
        let s = v.ok_or_else(|| invalid(key, "is required in [sync]"))?;
        let a: SocketAddr = s
            .parse()
            .map_err(|_| invalid(key, format!("`{s}` is not an IP:port address")))?;
        if a.ip().is_unspecified() || a.port() == 0 {
            return Err(invalid(key, "needs a concrete IP and a non-zero port"));
        }
        Ok(a)
    };
    let listen = addr("sync.listen", r.listen)?;
    let peer = addr("sync.peer", r.peer)?;
    let key_file = r.key_file.ok_or_else(|| {
        invalid(
            "sync.key_file",
            "is required: sync messages are authenticated",
        )
    })?;
    let bytes = std::fs::read(&key_file)
        .map_err(|e| invalid("sync.key_file", format!("cannot read `{key_file}`: {e}")))?;
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < 16 {
        return Err(invalid(
            "sync.key_file",
            format!("`{key_file}` must hold a key of at least 16 bytes"),
        ));
    }
    Ok(Sync {
        listen,
        peer,
        key: crate::sync::Key::new(trimmed),
        key_file,
    })
}

/// The kernel's ephemeral port settings, read from /proc; a parameter so tests can vary it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EphemeralPorts {
    pub range: RangeInclusive<u16>,
    pub reserved: Vec<RangeInclusive<u16>>,
}

impl EphemeralPorts {
    /// Reads `net.ipv4.ip_local_port_range` and `ip_local_reserved_ports`.
    pub fn from_system() -> Self {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| {
                let mut it = s.split_whitespace().map(|p| p.parse::<u16>());
                match (it.next(), it.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => Some(a..=b),
                    _ => None,
                }
            })
            .unwrap_or(32768..=60999);
        let reserved = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
            .map(|s| parse_port_list(s.trim()))
            .unwrap_or_default();
        EphemeralPorts { range, reserved }
    }

    /// Ports of `r` that an ephemeral bind could take.
    fn first_conflict(&self, r: &RangeInclusive<u16>) -> Option<u16> {
        (*r.start()..=*r.end())
            .find(|p| self.range.contains(p) && !self.reserved.iter().any(|res| res.contains(p)))
    }
}

/// Relay addresses default to the first SIP address; a flow's endpoint stores the
/// address's position in one byte.
fn validate_relay(list: Option<&[String]>, default: IpAddr) -> Result<Vec<IpAddr>, ConfigError> {
    let Some(list) = list else {
        return Ok(vec![default]);
    };
    if list.is_empty() {
        return Err(invalid("listen.relay", "needs at least one address"));
    }
    if list.len() > usize::from(u8::MAX) + 1 {
        return Err(invalid("listen.relay", "at most 256 addresses"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let key = if list.len() == 1 {
            "listen.relay".to_string()
        } else {
            format!("listen.relay[{i}]")
        };
        let ip: IpAddr = s
            .parse()
            .map_err(|_| invalid(&key, format!("`{s}` is not an IP address")))?;
        if ip.is_unspecified() {
            return Err(invalid(
                &key,
                "must be a concrete address (backends store it as the phone's path back)",
            ));
        }
        if out.contains(&ip) {
            return Err(invalid(&key, format!("`{ip}` is listed twice")));
        }
        if out
            .first()
            .is_some_and(|f: &IpAddr| f.is_ipv4() != ip.is_ipv4())
        {
            // A flow's slot would decide whether it can reach an IPv4 backend.
            return Err(invalid(
                &key,
                "all relay addresses must be of one IP family",
            ));
        }
        out.push(ip);
    }
    Ok(out)
}

fn parse_port_list(s: &str) -> Vec<RangeInclusive<u16>> {
    s.split(',')
        .filter_map(|part| parse_port_range(part.trim()).ok())
        .collect()
}

fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let a: u16 = a.parse().map_err(|_| format!("`{a}` is not a port"))?;
    let b: u16 = b.parse().map_err(|_| format!("`{b}` is not a port"))?;
    if a == 0 {
        return Err("port 0 is not a usable relay port".into());
    }
    if a > b {
        return Err(format!("range {a}-{b} is empty (start above end)"));
    }
    Ok(a..=b)
}

impl Config {
    /// Reads and validates a config file against the running kernel's port settings.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &EphemeralPorts::from_system())
    }

    /// Parses and validates config text.
    pub fn parse(text: &str, eph: &EphemeralPorts) -> Result<Config, ConfigError> {
        let raw: raw::Raw = parse_toml(text)?;
        raw.validate(eph)
    }

    /// Number of relay endpoints (ports × addresses), which bounds the number of flows.
    pub fn relay_port_count(&self) -> usize {
        self.relay_space().len()
    }

    pub fn relay_space(&self) -> crate::relay::port::RelaySpace {
        crate::relay::port::RelaySpace::new(&self.listen.relay_ports, self.listen.relay.len())
    }
}

/// Deserializes with the key path kept, so errors read `listen.foo: unknown field`.
fn parse_toml(text: &str) -> Result<raw::Raw, ConfigError> {
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
    };
    let de = toml::Deserializer::parse(text).map_err(|e| {
        let at = line_of(e.span())
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        ConfigError::Syntax(format!("TOML syntax{at}: {}", e.message().trim()))
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = line_of(inner.span())
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        let key = if path == "." {
            "config".to_string()
        } else {
            path
        };
        invalid(key, format!("{}{at}", inner.message().trim()))
    })
}

impl raw::Raw {
    fn validate(self, eph: &EphemeralPorts) -> Result<Config, ConfigError> {
        let listen = self
            .listen
            .ok_or_else(|| invalid("listen", "section is required"))?;
        if listen.sip.is_empty() {
            return Err(invalid("listen.sip", "needs at least one address"));
        }
        let mut sip = Vec::new();
        for (i, s) in listen.sip.iter().enumerate() {
            let key = format!("listen.sip[{i}]");
            let a: SocketAddr = s
                .parse()
                .map_err(|_| invalid(&key, format!("`{s}` is not an IP:port address")))?;
            if a.port() == 0 {
                return Err(invalid(&key, "port 0 is not allowed"));
            }
            if sip.contains(&a) {
                return Err(invalid(&key, format!("`{a}` is listed twice")));
            }
            sip.push(a);
        }
        let relay = validate_relay(listen.relay.as_deref(), sip[0].ip())?;
        let rp_text = listen.relay_ports.as_deref().unwrap_or("16384-32767");
        let relay_ports =
            parse_port_range(rp_text).map_err(|r| invalid("listen.relay_ports", r))?;
        for a in &sip {
            if relay_ports.contains(&a.port())
                && (relay.contains(&a.ip()) || a.ip().is_unspecified())
            {
                return Err(invalid(
                    "listen.relay_ports",
                    format!("range {rp_text} contains the listen port {}", a.port()),
                ));
            }
        }
        if let Some(p) = eph.first_conflict(&relay_ports) {
            return Err(invalid(
                "listen.relay_ports",
                format!(
                    "range {rp_text} overlaps the kernel's ephemeral range {}-{} (first: {p}); \
                     any socket could take a relay port a flow needs. Move the range below {} \
                     or reserve it in net.ipv4.ip_local_reserved_ports",
                    eph.range.start(),
                    eph.range.end(),
                    eph.range.start()
                ),
            ));
        }

        if self.backend.is_empty() {
            return Err(invalid("backend", "at least one [[backend]] is required"));
        }
        let mut names = HashSet::new();
        let mut addrs = HashSet::new();
        let mut backends = Vec::new();
        for (i, b) in self.backend.iter().enumerate() {
            let name_key = format!("backend[{i}].name");
            if b.name.is_empty()
                || !b
                    .name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
            {
                return Err(invalid(
                    name_key,
                    format!(
                        "`{}` must be non-empty letters, digits, `-`, `_` or `.`",
                        b.name
                    ),
                ));
            }
            if !names.insert(b.name.clone()) {
                return Err(invalid(name_key, format!("`{}` is used twice", b.name)));
            }
            let addr_key = format!("backend[{i}].addr");
            let addr: SocketAddr = b.addr.parse().map_err(|_| {
                invalid(&addr_key, format!("`{}` is not an IP:port address", b.addr))
            })?;
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(invalid(
                    &addr_key,
                    "needs a concrete IP and a non-zero port",
                ));
            }
            if !addrs.insert(addr) {
                return Err(invalid(
                    addr_key,
                    format!("`{addr}` is used by two backends"),
                ));
            }
            if sip.contains(&addr) {
                return Err(invalid(
                    addr_key,
                    "is one of sipfront's own listen addresses",
                ));
            }
            backends.push(Backend {
                name: b.name.clone(),
                addr,
            });
        }
        if backends.len() > u16::MAX as usize {
            return Err(invalid("backend", "too many backends"));
        }

        let port_count =
            ((*relay_ports.end() as usize) - (*relay_ports.start() as usize) + 1) * relay.len();
        let l = self.limits.unwrap_or_default();
        let max_flows = l.max_flows.unwrap_or(port_count);
        if max_flows == 0 {
            return Err(invalid("limits.max_flows", "must be at least 1"));
        }
        if max_flows > port_count {
            return Err(invalid(
                "limits.max_flows",
                format!(
                    "{max_flows} is more than the {port_count} relay ports \
                     (listen.relay_ports × listen.relay addresses)"
                ),
            ));
        }
        let max_dialogs = l.max_dialogs.unwrap_or(100_000);
        if max_dialogs == 0 || max_dialogs > 10_000_000 {
            return Err(invalid(
                "limits.max_dialogs",
                "must be between 1 and 10000000",
            ));
        }
        let new_flows_per_ip = l.new_flows_per_ip.unwrap_or(100);
        if new_flows_per_ip == 0 {
            return Err(invalid("limits.new_flows_per_ip", "must be at least 1"));
        }
        let new_flows_burst = l
            .new_flows_burst
            .unwrap_or(new_flows_per_ip.saturating_mul(2));
        if new_flows_burst < new_flows_per_ip {
            return Err(invalid(
                "limits.new_flows_burst",
                "must be at least limits.new_flows_per_ip",
            ));
        }

        let t = self.timeouts.unwrap_or_default();
        let dur = |key: &str, v: &Option<String>, default: Duration, min: Duration| {
            let d = match v {
                Some(s) => parse_duration(s).map_err(|r| invalid(key, r))?,
                None => default,
            };
            if d < min {
                return Err(invalid(
                    key,
                    format!("must be at least {}", format_duration(min)),
                ));
            }
            Ok(d)
        };
        let timeouts = Timeouts {
            flow_idle: dur(
                "timeouts.flow_idle",
                &t.flow_idle,
                Duration::from_secs(90),
                Duration::from_secs(1),
            )?,
            register_grace: dur(
                "timeouts.register_grace",
                &t.register_grace,
                Duration::from_secs(32),
                Duration::ZERO,
            )?,
            dialog_idle: dur(
                "timeouts.dialog_idle",
                &t.dialog_idle,
                Duration::from_secs(3600),
                Duration::from_secs(1),
            )?,
            transaction: dur(
                "timeouts.transaction",
                &t.transaction,
                Duration::from_secs(32),
                Duration::from_millis(100),
            )?,
        };

        let failback = self.affinity.and_then(|a| a.failback).unwrap_or_default();
        let admin_raw = self.admin;
        let admin_listen = match admin_raw.as_ref().and_then(|a| a.listen.as_ref()) {
            Some(s) => s
                .parse()
                .map_err(|_| invalid("admin.listen", format!("`{s}` is not an IP:port address")))?,
            None => SocketAddr::from(([127, 0, 0, 1], 9090)),
        };
        let token_file = admin_raw.and_then(|a| a.token_file);
        let token = match &token_file {
            Some(path) => {
                let t = std::fs::read_to_string(path).map_err(|e| {
                    invalid("admin.token_file", format!("cannot read `{path}`: {e}"))
                })?;
                let t = t.trim().to_string();
                if t.len() < 16 {
                    return Err(invalid(
                        "admin.token_file",
                        format!("`{path}` must hold a token of at least 16 characters"),
                    ));
                }
                Some(t)
            }
            None => None,
        };
        if token.is_none() && !admin_listen.ip().is_loopback() {
            return Err(invalid(
                "admin.token_file",
                format!("required when admin.listen ({admin_listen}) is not a loopback address"),
            ));
        }
        let health = validate_health(self.health.unwrap_or_default(), &dur)?;
        let vrrp = self.vrrp.map(vrrp::RawVrrp::validate).transpose()?;
        let sync = self.sync.map(validate_sync).transpose()?;

        Ok(Config {
            listen: Listen {
                sip,
                relay,
                relay_ports,
                forward_keepalives: listen.forward_keepalives.unwrap_or(false),
            },
            backends,
            failback,
            limits: Limits {
                max_flows,
                max_dialogs,
                new_flows_per_ip,
                new_flows_burst,
            },
            timeouts,
            admin: Admin {
                listen: admin_listen,
                token,
                token_file,
            },
            health,
            vrrp,
            sync,
        })
    }
}

type DurFn<'a> =
    dyn Fn(&str, &Option<String>, Duration, Duration) -> Result<Duration, ConfigError> + 'a;

fn validate_health(h: raw::RawHealth, dur: &DurFn<'_>) -> Result<Health, ConfigError> {
    let interval = dur(
        "health.interval",
        &h.interval,
        Duration::from_millis(500),
        Duration::from_millis(10),
    )?;
    let timeout = dur(
        "health.timeout",
        &h.timeout,
        interval.min(Duration::from_millis(400)),
        Duration::from_millis(5),
    )?;
    if timeout > interval {
        return Err(invalid(
            "health.timeout",
            format!(
                "{} is longer than health.interval ({}): one probe at a time",
                format_duration(timeout),
                format_duration(interval)
            ),
        ));
    }
    let count = |key: &str, v: Option<u32>| match v {
        None => Ok(2),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(n) => Err(invalid(key, format!("{n} is not between 1 and 100"))),
    };
    let mut alive_codes = Vec::new();
    for (i, c) in h
        .alive_codes
        .unwrap_or_else(|| vec!["200-699".into()])
        .iter()
        .enumerate()
    {
        let key = format!("health.alive_codes[{i}]");
        let r = parse_port_range(c).map_err(|r| invalid(&key, r))?;
        if *r.start() < 100 || *r.end() > 699 {
            return Err(invalid(
                key,
                format!("`{c}` is outside the SIP codes 100-699"),
            ));
        }
        alive_codes.push(r);
    }
    if alive_codes.is_empty() {
        return Err(invalid(
            "health.alive_codes",
            "needs at least one code or range",
        ));
    }
    Ok(Health {
        interval,
        timeout,
        rise: count("health.rise", h.rise)?,
        fall: count("health.fall", h.fall)?,
        alive_codes,
        reply_503: h.reply_503.unwrap_or(true),
        retry_after: h.retry_after.unwrap_or(30),
    })
}

#[cfg(test)]
mod tests;
