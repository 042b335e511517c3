//! `[limits]`: table sizes, per-source limits, and their per-CIDR overrides
//! (`[[limits.source]]`).

use std::collections::HashSet;

use super::defaults::*;
use super::raw::{RawLimits, RawSourceLimits};
use super::validate::indexed;
use super::{Cidr, ConfigError, Limits, Listen, invalid};

/// The limits one source (an IPv4 address, or an IPv6 /64) is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// Flows it may hold at once.
    pub max_flows_per_ip: usize,
    /// New flows per second (token bucket refill) and the bucket's depth.
    pub new_flows_per_ip: u32,
    pub new_flows_burst: u32,
    /// Datagrams per second (token bucket refill) and the bucket's depth.
    pub datagrams_per_ip: u32,
    pub datagrams_burst: u32,
    /// Unanswered dialog-table entries its flows may hold together.
    pub max_pins_per_ip: u32,
}

/// `[[limits.source]]`: other limits for each source in `cidr` (each source its own,
/// not one shared by the prefix). The longest matching prefix wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceOverride {
    pub cidr: Cidr,
    /// Resolved: keys the entry leaves out come from `[limits]`.
    pub limits: SourceLimits,
}

impl Limits {
    /// The limits of a source no `[[limits.source]]` entry covers.
    pub fn per_source(&self) -> SourceLimits {
        SourceLimits {
            max_flows_per_ip: self.max_flows_per_ip,
            new_flows_per_ip: self.new_flows_per_ip,
            new_flows_burst: self.new_flows_burst,
            datagrams_per_ip: self.datagrams_per_ip,
            datagrams_burst: self.datagrams_burst,
            max_pins_per_ip: self.max_pins_per_ip,
        }
    }
}

/// Each entry overrides what it names; a burst it leaves out follows its own rate the
/// way the global default does when it overrides the rate, else it is the global burst.
fn validate_sources(
    raw: &[RawSourceLimits],
    global: &SourceLimits,
) -> Result<Vec<SourceOverride>, ConfigError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let key = |k: &str| format!("{}.{k}", indexed("limits.source", i));
        let text = r
            .cidr
            .as_deref()
            .ok_or_else(|| invalid(key("cidr"), "is required"))?;
        let cidr: Cidr = text.parse().map_err(|e: String| invalid(key("cidr"), e))?;
        // IPv6 sources are counted per /64: a longer prefix would cover part of one.
        if !cidr.is_v4() && cidr.bits_len() > 64 {
            return Err(invalid(
                key("cidr"),
                format!(
                    "`{text}`: IPv6 sources are limited per /64, so an override needs a \
                     prefix of /64 or shorter"
                ),
            ));
        }
        if !seen.insert(cidr) {
            return Err(invalid(key("cidr"), format!("`{cidr}` is listed twice")));
        }
        let at_least_1 = |k: &str, v: Option<u32>, default: u32| match v {
            Some(0) => Err(invalid(key(k), "must be at least 1")),
            v => Ok(v.unwrap_or(default)),
        };
        let max_flows_per_ip = match r.max_flows_per_ip {
            Some(0) => return Err(invalid(key("max_flows_per_ip"), "must be at least 1")),
            v => v.unwrap_or(global.max_flows_per_ip),
        };
        let new_flows_per_ip = at_least_1(
            "new_flows_per_ip",
            r.new_flows_per_ip,
            global.new_flows_per_ip,
        )?;
        let new_flows_burst = r.new_flows_burst.unwrap_or(match r.new_flows_per_ip {
            Some(rate) => rate.saturating_mul(DEFAULT_NEW_FLOWS_BURST_FACTOR),
            None => global.new_flows_burst,
        });
        if new_flows_burst < new_flows_per_ip {
            return Err(invalid(
                key("new_flows_burst"),
                format!(
                    "{new_flows_burst} is less than the new_flows_per_ip that applies ({new_flows_per_ip})"
                ),
            ));
        }
        let datagrams_per_ip = at_least_1(
            "datagrams_per_ip",
            r.datagrams_per_ip,
            global.datagrams_per_ip,
        )?;
        let datagrams_burst = r.datagrams_burst.unwrap_or(match r.datagrams_per_ip {
            Some(rate) => rate.saturating_mul(2),
            None => global.datagrams_burst,
        });
        if datagrams_burst < datagrams_per_ip {
            return Err(invalid(
                key("datagrams_burst"),
                format!(
                    "{datagrams_burst} is less than the datagrams_per_ip that applies ({datagrams_per_ip})"
                ),
            ));
        }
        let max_pins_per_ip =
            at_least_1("max_pins_per_ip", r.max_pins_per_ip, global.max_pins_per_ip)?;
        out.push(SourceOverride {
            cidr,
            limits: SourceLimits {
                max_flows_per_ip,
                new_flows_per_ip,
                new_flows_burst,
                datagrams_per_ip,
                datagrams_burst,
                max_pins_per_ip,
            },
        });
    }
    // Past this the router's classes (u16) would not do; nobody lists that many.
    if out.len() > 10_000 {
        return Err(invalid("limits.source", "at most 10000 entries"));
    }
    Ok(out)
}

pub(super) fn validate_limits(l: RawLimits, listen: &Listen) -> Result<Limits, ConfigError> {
    let port_count = super::relay_endpoints(listen);
    let max_flows = l.max_flows.unwrap_or(port_count);
    if max_flows == 0 {
        return Err(invalid("limits.max_flows", "must be at least 1"));
    }
    if max_flows > port_count
        && let Some(p) = &listen.relay_prefix
    {
        return Err(invalid(
            "listen.relay_prefix",
            format!(
                "{p} × {} relay port(s) holds {port_count} flows, fewer than \
                 limits.max_flows = {max_flows}",
                p.ports.len()
            ),
        ));
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
    let max_dialogs = l.max_dialogs.unwrap_or(DEFAULT_MAX_DIALOGS);
    if max_dialogs == 0 || max_dialogs > 10_000_000 {
        return Err(invalid(
            "limits.max_dialogs",
            "must be between 1 and 10000000",
        ));
    }
    let new_flows_per_ip = l.new_flows_per_ip.unwrap_or(DEFAULT_NEW_FLOWS_PER_IP);
    if new_flows_per_ip == 0 {
        return Err(invalid("limits.new_flows_per_ip", "must be at least 1"));
    }
    let new_flows_burst = l
        .new_flows_burst
        .unwrap_or(new_flows_per_ip.saturating_mul(DEFAULT_NEW_FLOWS_BURST_FACTOR));
    if new_flows_burst < new_flows_per_ip {
        return Err(invalid(
            "limits.new_flows_burst",
            "must be at least limits.new_flows_per_ip",
        ));
    }
    // A carrier-grade NAT's share of the table (an IPv6 /48 is sized alike).
    let default_per_source = (max_flows / DEFAULT_MAX_FLOWS_PER_IP_DIVISOR).max(max_flows.min(256));
    let max_flows_per_ip = l.max_flows_per_ip.unwrap_or(default_per_source);
    if max_flows_per_ip == 0 {
        return Err(invalid("limits.max_flows_per_ip", "must be at least 1"));
    }
    let datagrams_per_ip = l.datagrams_per_ip.unwrap_or(DEFAULT_DATAGRAMS_PER_IP);
    if datagrams_per_ip == 0 {
        return Err(invalid("limits.datagrams_per_ip", "must be at least 1"));
    }
    let datagrams_burst = l
        .datagrams_burst
        .unwrap_or(datagrams_per_ip.saturating_mul(2));
    if datagrams_burst < datagrams_per_ip {
        return Err(invalid(
            "limits.datagrams_burst",
            "must be at least limits.datagrams_per_ip",
        ));
    }
    let max_pins_per_flow = l.max_pins_per_flow.unwrap_or(DEFAULT_MAX_PINS_PER_FLOW);
    if max_pins_per_flow == 0 {
        return Err(invalid("limits.max_pins_per_flow", "must be at least 1"));
    }
    // max_dialogs is at most 10,000,000 (checked above): the share fits a u32.
    let default_pins_per_source = (max_dialogs / DEFAULT_MAX_PINS_PER_IP_DIVISOR).max(1) as u32;
    let max_pins_per_ip = l.max_pins_per_ip.unwrap_or(default_pins_per_source);
    if max_pins_per_ip == 0 {
        return Err(invalid("limits.max_pins_per_ip", "must be at least 1"));
    }
    let max_flows_per_ipv6_48 = l.max_flows_per_ipv6_48.unwrap_or(default_per_source);
    if max_flows_per_ipv6_48 == 0 {
        return Err(invalid(
            "limits.max_flows_per_ipv6_48",
            "must be at least 1",
        ));
    }
    let max_pins_per_ipv6_48 = l.max_pins_per_ipv6_48.unwrap_or(default_pins_per_source);
    if max_pins_per_ipv6_48 == 0 {
        return Err(invalid("limits.max_pins_per_ipv6_48", "must be at least 1"));
    }
    let max_lingering_records = l
        .max_lingering_records
        .unwrap_or(max_dialogs.min(DEFAULT_MAX_LINGERING_RECORDS));
    if max_lingering_records == 0 || max_lingering_records > max_dialogs.min(1 << 20) {
        return Err(invalid(
            "limits.max_lingering_records",
            "must be between 1 and limits.max_dialogs (each record holds a dialog entry), \
             at most 1048576",
        ));
    }
    let global = SourceLimits {
        max_flows_per_ip,
        new_flows_per_ip,
        new_flows_burst,
        datagrams_per_ip,
        datagrams_burst,
        max_pins_per_ip,
    };
    let source = validate_sources(&l.source, &global)?;
    Ok(Limits {
        source,
        max_pins_per_flow,
        max_pins_per_ip,
        max_flows_per_ipv6_48,
        max_pins_per_ipv6_48,
        max_lingering_records,
        max_flows,
        max_dialogs,
        new_flows_per_ip,
        new_flows_burst,
        max_flows_per_ip,
        datagrams_per_ip,
        datagrams_burst,
    })
}
