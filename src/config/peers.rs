//! `[[peer]]`: static peers (trunks) with fixed relay endpoints.

use super::raw::RawPeer;
use super::validate::indexed;
use super::values::{Need, socket_addr};
use super::{Backend, ConfigError, Listen, StaticPeer, invalid};

/// `[[peer]]` entries at most (trunks and PBXs: each its own endpoint and probes; the
/// dataplane numbers them in 16 bits).
const MAX_PEERS: usize = 10_000;

pub(super) fn validate_peers(
    raw: &[RawPeer],
    listen: &Listen,
    backends: &[Backend],
) -> Result<Vec<StaticPeer>, ConfigError> {
    if raw.len() > MAX_PEERS {
        return Err(invalid(
            "peer",
            format!("{} [[peer]] entries: at most {MAX_PEERS}", raw.len()),
        ));
    }
    let mut out: Vec<StaticPeer> = Vec::with_capacity(raw.len());
    for (i, p) in raw.iter().enumerate() {
        let key = |k: &str| format!("{}.{k}", indexed("peer", i));
        if p.name.trim().is_empty() {
            return Err(invalid(key("name"), "must not be empty"));
        }
        if out.iter().any(|o| o.name == p.name) {
            return Err(invalid(
                key("name"),
                format!("duplicate peer name `{}`", p.name),
            ));
        }
        let list = p.addr.as_deref().unwrap_or_default();
        if list.is_empty() {
            return Err(invalid(key("addr"), "needs at least one IP:port"));
        }
        let mut addrs = Vec::with_capacity(list.len());
        for (j, a) in list.iter().enumerate() {
            let k = if list.len() == 1 {
                key("addr")
            } else {
                indexed(&key("addr"), j)
            };
            let a = socket_addr(&k, a, Need::Concrete)?;
            if addrs.contains(&a) || out.iter().any(|o| o.addrs.contains(&a)) {
                return Err(invalid(
                    k.as_str(),
                    format!("{a} is listed for more than one peer"),
                ));
            }
            if !listen.sip.iter().any(|s| s.is_ipv4() == a.is_ipv4()) {
                return Err(invalid(
                    &k,
                    "no listen.sip address of its IP family to reach it from",
                ));
            }
            addrs.push(a);
        }
        let relay = socket_addr(&key("relay"), &p.relay, Need::Concrete)?;
        if let Some(pre) = &listen.relay_prefix {
            if pre.offset(relay.ip()).is_none() {
                return Err(invalid(
                    key("relay"),
                    format!(
                        "{} is not an address of listen.relay_prefix {pre}",
                        relay.ip()
                    ),
                ));
            }
            if !pre.ports.contains(&relay.port()) {
                return Err(invalid(
                    key("relay"),
                    format!("port {} is not one of listen.relay_port", relay.port()),
                ));
            }
        } else if !listen.relay.contains(&relay.ip()) {
            return Err(invalid(
                key("relay"),
                format!("{} is not one of the listen.relay addresses", relay.ip()),
            ));
        }
        if listen
            .sip
            .iter()
            .any(|s| s.port() == relay.port() && s.ip() == relay.ip())
        {
            return Err(invalid(
                key("relay"),
                format!("{relay} is a listen.sip address"),
            ));
        }
        if let Some(o) = out.iter().find(|o| o.relay == relay) {
            return Err(invalid(
                key("relay"),
                format!("{relay} is peer `{}`'s relay endpoint too", o.name),
            ));
        }
        let names = p.backends.clone().unwrap_or_default();
        for (j, n) in names.iter().enumerate() {
            if !backends.iter().any(|b| &b.name == n) {
                return Err(invalid(
                    indexed(&key("backends"), j),
                    format!("no backend named `{n}`"),
                ));
            }
        }
        out.push(StaticPeer {
            name: p.name.clone(),
            addrs,
            relay,
            backends: names,
            probe: p.probe.unwrap_or(false),
        });
    }
    Ok(out)
}
