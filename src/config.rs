//! TOML config -> validated [`Config`]. Every error names the key it is about.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod access;
mod defaults;
mod display;
mod duration;
mod endpoints;
mod hep;
#[cfg(test)]
mod keys;
mod limits;
mod peers;
mod prefix;
mod raw;
mod reload;
mod validate;
mod values;
mod vrrp;

pub use access::{
    Access, Cidr, DEFAULT_DROP_USER_AGENTS, DEFAULT_MAX_BANS, V4_SPACE_LEN, ip_bits, is_v4_bits,
};
pub use defaults::*;
pub use duration::{format_duration, parse_duration};
pub use hep::{HepConfig, HepTransport, Legs};
pub use limits::{SourceLimits, SourceOverride};
pub use prefix::RelayPrefix;
pub use reload::keep_sync;
pub use vrrp::{MAX_VIPS, Vip, Vrrp};

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
    /// Prefix mode (`relay_prefix` + `relay_port`): then `relay` is empty and
    /// `relay_ports` unused.
    pub relay_prefix: Option<RelayPrefix>,
    /// Forward CRLF keepalives to the backend instead of absorbing them.
    pub forward_keepalives: bool,
    /// Receive buffer of the public sockets and prefix mode's relay sockets, in bytes.
    pub receive_buffer: usize,
    /// Receive buffer of each port-mode relay socket (one per flow), in bytes.
    pub relay_receive_buffer: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_flows: usize,
    pub max_dialogs: usize,
    /// New flows per second per source IP (token bucket refill rate).
    pub new_flows_per_ip: u32,
    /// Token bucket depth.
    pub new_flows_burst: u32,
    /// Flows one source (IPv4 address, IPv6 /64) may hold at once.
    pub max_flows_per_ip: usize,
    /// Datagrams per second one source may send (token bucket refill), and its depth.
    pub datagrams_per_ip: u32,
    pub datagrams_burst: u32,
    /// Dialog-table entries one (non-peer) flow may have opened at once.
    pub max_pins_per_flow: u32,
    /// The same, for all flows of one source (IPv4 address, IPv6 /64) together.
    pub max_pins_per_ip: u32,
    /// Flows all the IPv6 sources of one /48 (an end site, or the /56s of many) may
    /// hold together: the /64s of one prefix do not add up to the whole table.
    pub max_flows_per_ipv6_48: usize,
    /// Unanswered dialog entries all the IPv6 sources of one /48 may have opened
    /// together (the pins' `max_flows_per_ipv6_48`).
    pub max_pins_per_ipv6_48: u32,
    /// Records of removed flows' unanswered dialog entries, still counted against
    /// their source (see `relay::lingering`); the oldest goes early beyond it.
    pub max_lingering_records: usize,
    /// `[[limits.source]]`: per-CIDR overrides of the per-source limits above.
    pub source: Vec<SourceOverride>,
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
    /// Idle life of a flow no backend has answered yet (keepalives do not refresh it).
    pub unanswered_idle: Duration,
    /// The longest registration a backend's 2xx can hold a flow for.
    pub max_registration: Duration,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Bearer token every `/api/v1/*` call needs, read from `token_file`. Without one the
    /// API is read-only.
    pub token: Option<String>,
    pub token_file: Option<String>,
    /// Set only by [`Config::load_for_reload`]: why `token_file` could not be used (then
    /// `token` is `None` and the running token stays).
    pub token_error: Option<String>,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub capture: CaptureLimits,
}

/// Bounds of the live captures (`/api/v1/capture`): a capture whose reader stalls
/// holds at most its queue; beyond it frames are dropped (counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureLimits {
    /// Captures running at once (`admin.max_captures`); one more is refused (429).
    pub sessions: usize,
    /// Frames queued per capture (`admin.capture_queue`).
    pub frames: usize,
    /// Bytes queued per capture (`admin.capture_queue_bytes`).
    pub bytes: usize,
}

// The token never appears in logs or `check-config` output.
impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("token_error", &self.token_error)
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("capture", &self.capture)
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
    /// 503s per second at most, in all.
    pub reply_503_rate: u32,
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
    pub sync: Option<SyncConfig>,
    /// Trunks with fixed relay endpoints (`[[peer]]`).
    pub peers: Vec<StaticPeer>,
    /// HEPv3 capture export; None = off.
    pub hep: Option<HepConfig>,
    /// Allow/deny lists, ban table size, scanner User-Agents.
    pub access: Access,
}

/// `[[peer]]`: a carrier or PBX trunk. Its flow exists from start, never expires and
/// always has the relay endpoint `relay`, so backends can authenticate it by that
/// address and send to it (sipfront sends on from the public SIP address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPeer {
    pub name: String,
    /// Where it sends from; the first is where requests to it go.
    pub addrs: Vec<SocketAddr>,
    /// Its relay endpoint: one of `listen.relay` with a fixed port.
    pub relay: SocketAddr,
    /// Backends that may receive its requests (empty: all).
    pub backends: Vec<String>,
    /// Send it OPTIONS probes (from its public SIP address, with `[health]`'s
    /// interval, timeout, rise, fall and alive codes): `sipfront_peer_up`.
    pub probe: bool,
}

/// `[sync]`: the peer link that mirrors flows and dialogs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    pub listen: SocketAddr,
    pub peer: SocketAddr,
    /// The shared key from `key_file` (empty when `key_error` is set).
    pub key: Secret,
    pub key_file: String,
    /// Set only by [`Config::load_for_reload`]: why `key_file` could not be used (then
    /// the running key stays).
    pub key_error: Option<String>,
    /// After a key rotation (reload with a new key), the previous key is still accepted
    /// until the peer seals with the new one, and never longer than this.
    pub previous_key_grace: Duration,
    /// Changes queued for the peer between two sync turns (at most 20 ms apart);
    /// beyond it the peer gets a full table instead.
    pub max_turn_changes: usize,
    /// Changes waiting for the link to send them; beyond it, likewise.
    pub max_pending_changes: usize,
    /// The sync socket's receive buffer, in bytes.
    pub receive_buffer: usize,
}

/// Key material read from a file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: &[u8]) -> Self {
        Secret(bytes.to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The kernel's ephemeral port settings, read from /proc; a parameter so tests can vary it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EphemeralPorts {
    pub range: RangeInclusive<u16>,
    pub reserved: Vec<RangeInclusive<u16>>,
}

impl Default for EphemeralPorts {
    /// Linux's defaults: 32768-60999, nothing reserved.
    fn default() -> Self {
        EphemeralPorts {
            range: 32768..=60999,
            reserved: vec![],
        }
    }
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
            .unwrap_or(EphemeralPorts::default().range);
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

fn parse_port_list(s: &str) -> Vec<RangeInclusive<u16>> {
    s.split(',')
        .filter_map(|part| parse_port_range(part.trim()).ok())
        .collect()
}

fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let r = parse_u16_range(s, "port")?;
    if *r.start() == 0 {
        return Err("port 0 is not a usable relay port".into());
    }
    Ok(r)
}

/// `"A-B"` or `"A"` as a range of u16 values; `what` names one in errors.
fn parse_u16_range(s: &str, what: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let value = |t: &str| {
        t.parse::<u16>()
            .map_err(|_| format!("`{t}` is not a {what}"))
    };
    let (a, b) = (value(a)?, value(b)?);
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

    /// [`Config::load`] for a SIGHUP reload: an unusable `admin.token_file` or
    /// `sync.key_file` (unreadable, loose mode, too short) is not an error but lands in
    /// `admin.token_error` / `sync.key_error`, so the rest of the reload applies and the
    /// running token or key stays.
    pub fn load_for_reload(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let raw: raw::Raw = parse_toml(&text)?;
        raw.validate(&EphemeralPorts::from_system(), SecretFiles::KeepOnError)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str, eph: &EphemeralPorts) -> Result<Config, ConfigError> {
        let raw: raw::Raw = parse_toml(text)?;
        raw.validate(eph, SecretFiles::Required)
    }

    /// Number of relay endpoints (ports × addresses), which bounds the number of flows.
    pub fn relay_port_count(&self) -> usize {
        relay_endpoints(&self.listen)
    }
}

/// How validation treats an unusable `admin.token_file` or `sync.key_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretFiles {
    /// A config error (load, check-config).
    Required,
    /// Recorded in `admin.token_error` / `sync.key_error` (reload: the running token
    /// or key stays).
    KeepOnError,
}

/// Relay endpoints: every relay address holds the whole port range (port mode), or
/// every address of the prefix each relay port (prefix mode).
fn relay_endpoints(l: &Listen) -> usize {
    match &l.relay_prefix {
        Some(p) => p.addr_count() as usize * p.ports.len(),
        None => l.relay_ports.len() * l.relay.len(),
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

#[cfg(test)]
mod prefix_tests;
#[cfg(test)]
mod tests;
