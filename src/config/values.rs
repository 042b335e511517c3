//! Parsing of single values shared by every section's validator: addresses and
//! durations, with errors that name the key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use super::{ConfigError, format_duration, invalid, parse_duration};

/// An address type a key can hold, and how an error describes it.
pub(super) trait AddrKind: FromStr {
    const WHAT: &'static str;
}
impl AddrKind for SocketAddr {
    const WHAT: &'static str = "an IP:port address";
}
impl AddrKind for IpAddr {
    const WHAT: &'static str = "an IP address";
}
impl AddrKind for Ipv4Addr {
    const WHAT: &'static str = "an IPv4 address";
}

/// Parses the address in `key`: every address key goes through here.
pub(super) fn parse_addr<T: AddrKind>(key: &str, s: &str) -> Result<T, ConfigError> {
    s.parse()
        .map_err(|_| invalid(key, format!("`{s}` is not {}", T::WHAT)))
}

/// What an IP:port key must be beyond well-formed.
#[derive(Clone, Copy)]
pub(super) enum Need {
    /// Any address (a listen address that may be a wildcard; port 0 is the caller's risk).
    Any,
    /// A bindable listen address: a wildcard IP is fine, port 0 is not.
    Port,
    /// Something to send to (or bind for a peer to send to): concrete IP and port.
    Concrete,
}

pub(super) fn socket_addr(key: &str, s: &str, need: Need) -> Result<SocketAddr, ConfigError> {
    let a: SocketAddr = parse_addr(key, s)?;
    match need {
        Need::Any => {}
        Need::Port if a.port() == 0 => return Err(invalid(key, "port 0 is not allowed")),
        Need::Port => {}
        Need::Concrete if a.ip().is_unspecified() || a.port() == 0 => {
            return Err(invalid(key, "needs a concrete IP and a non-zero port"));
        }
        Need::Concrete => {}
    }
    Ok(a)
}

/// The duration in `key`: `default` when absent, and at least `min`.
pub(super) fn duration(
    key: &str,
    v: Option<&str>,
    default: Duration,
    min: Duration,
) -> Result<Duration, ConfigError> {
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
}
