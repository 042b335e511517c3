//! `[hep]`: HEPv3 capture export to a Homer (or any HEP) collector. Absent = no export.

use std::net::SocketAddr;

use serde::Deserialize;

use super::access::Cidr;
use super::values::{Need, socket_addr};
use super::{ConfigError, Secret, invalid};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHep {
    pub collector: Option<String>,
    pub capture_id: Option<u32>,
    pub password: Option<String>,
    pub legs: Option<Vec<String>>,
    pub sample: Option<f64>,
    pub only: Option<Vec<String>>,
    pub include_local: Option<bool>,
    pub queue: Option<usize>,
    pub transport: Option<String>,
}

/// How HEP packets reach the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HepTransport {
    /// One datagram per packet (HEP's default, port 9060).
    Udp,
    /// A stream of packets, written in batches: far fewer system calls per packet at
    /// high rates (Kamailio `tcp_accept_hep3`, heplify-server `HEPTCPAddr`, OpenSIPS
    /// `proto_hep`).
    Tcp,
}

/// Which legs of a relayed datagram are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Legs {
    /// Client ↔ public SIP address.
    pub client: bool,
    /// Relay endpoint ↔ backend.
    pub backend: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HepConfig {
    pub collector: SocketAddr,
    pub capture_id: u32,
    /// The HEP auth key chunk; sent in clear, as HEP does.
    pub password: Option<Secret>,
    pub legs: Legs,
    /// Share of Call-IDs captured, in millionths (1_000_000 = all). Both legs and every
    /// message of a call are in or out together.
    pub sample_ppm: u32,
    /// Only datagrams whose client or backend address is in one of these (empty: all).
    pub only: Vec<Cidr>,
    /// Also export the stateless 503s and the health probes (with replies) sipfront
    /// sends itself.
    pub include_local: bool,
    /// Encoded packets waiting for the sender at most (the buffer ring's size).
    pub queue: usize,
    pub transport: HepTransport,
}

pub const DEFAULT_HEP_CAPTURE_ID: u32 = 2001;
pub const DEFAULT_HEP_QUEUE: usize = 1024;

fn parse_cidr(key: &str, s: &str) -> Result<Cidr, ConfigError> {
    s.parse().map_err(|r: String| invalid(key, r))
}

/// `[hep]`.
pub(super) fn validate_hep(r: RawHep) -> Result<HepConfig, ConfigError> {
    let collector = r
        .collector
        .as_deref()
        .ok_or_else(|| invalid("hep.collector", "is required (the collector's IP:PORT)"))
        .and_then(|s| socket_addr("hep.collector", s, Need::Concrete))?;
    let legs = match r.legs {
        None => Legs {
            client: true,
            backend: true,
        },
        Some(list) => {
            let mut legs = Legs {
                client: false,
                backend: false,
            };
            for (i, l) in list.iter().enumerate() {
                match l.as_str() {
                    "client" => legs.client = true,
                    "backend" => legs.backend = true,
                    other => {
                        return Err(invalid(
                            format!("hep.legs[{i}]"),
                            format!("`{other}` is not a leg: \"client\" or \"backend\""),
                        ));
                    }
                }
            }
            if !legs.client && !legs.backend {
                return Err(invalid("hep.legs", "needs \"client\", \"backend\" or both"));
            }
            legs
        }
    };
    let sample = r.sample.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample) {
        return Err(invalid("hep.sample", "must be between 0.0 and 1.0"));
    }
    let only = r
        .only
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| parse_cidr(&format!("hep.only[{i}]"), s))
        .collect::<Result<Vec<_>, _>>()?;
    let password = match r.password {
        Some(p) if p.is_empty() => return Err(invalid("hep.password", "must not be empty")),
        Some(p) if p.len() > 255 => return Err(invalid("hep.password", "at most 255 bytes")),
        Some(p) => Some(Secret::new(p.as_bytes())),
        None => None,
    };
    let queue = r.queue.unwrap_or(DEFAULT_HEP_QUEUE);
    if !(1..=65536).contains(&queue) {
        return Err(invalid("hep.queue", "must be 1-65536"));
    }
    let transport = match r.transport.as_deref() {
        None | Some("udp") => HepTransport::Udp,
        Some("tcp") => HepTransport::Tcp,
        Some(other) => {
            return Err(invalid(
                "hep.transport",
                format!("`{other}` is not a transport: \"udp\" or \"tcp\""),
            ));
        }
    };
    Ok(HepConfig {
        collector,
        transport,
        capture_id: r.capture_id.unwrap_or(DEFAULT_HEP_CAPTURE_ID),
        password,
        legs,
        sample_ppm: (sample * 1_000_000.0).round() as u32,
        only,
        include_local: r.include_local.unwrap_or(false),
        queue,
    })
}

impl std::fmt::Display for HepConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "\n[hep]\ncollector = \"{}\"", self.collector)?;
        let transport = match self.transport {
            HepTransport::Udp => "udp",
            HepTransport::Tcp => "tcp",
        };
        writeln!(f, "transport = \"{transport}\"")?;
        writeln!(f, "capture_id = {}", self.capture_id)?;
        if self.password.is_some() {
            writeln!(f, "# password = (set, not shown)")?;
        }
        let mut legs = Vec::new();
        if self.legs.client {
            legs.push("\"client\"");
        }
        if self.legs.backend {
            legs.push("\"backend\"");
        }
        writeln!(f, "legs = [{}]", legs.join(", "))?;
        writeln!(f, "sample = {}", f64::from(self.sample_ppm) / 1_000_000.0)?;
        let only: Vec<String> = self.only.iter().map(|c| format!("\"{c}\"")).collect();
        writeln!(f, "only = [{}]", only.join(", "))?;
        writeln!(f, "include_local = {}", self.include_local)?;
        writeln!(f, "queue = {}", self.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let c = parse_cidr("k", "10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        let all = parse_cidr("k", "0.0.0.0/0").unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let one = parse_cidr("k", "2001:db8::1").unwrap();
        assert_eq!(one.bits_len(), 128);
        assert!(one.contains("2001:db8::1".parse().unwrap()));
        assert!(!one.contains("2001:db8::2".parse().unwrap()));
        assert!(parse_cidr("k", "10.0.0.0/33").is_err());
    }

    fn raw(transport: Option<&str>) -> RawHep {
        RawHep {
            collector: Some("192.0.2.50:9060".into()),
            transport: transport.map(String::from),
            ..RawHep::default()
        }
    }

    #[test]
    fn transport_is_udp_by_default_and_a_bad_one_names_the_key() {
        assert_eq!(
            validate_hep(raw(None)).unwrap().transport,
            HepTransport::Udp
        );
        assert_eq!(
            validate_hep(raw(Some("tcp"))).unwrap().transport,
            HepTransport::Tcp
        );
        let e = validate_hep(raw(Some("sctp"))).unwrap_err().to_string();
        assert!(e.contains("hep.transport") && e.contains("sctp"), "{e}");
    }
}
