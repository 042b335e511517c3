//! The TOML shape, as written by operators. Unknown keys are errors.

use serde::Deserialize;

use super::Failback;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Raw {
    pub listen: Option<RawListen>,
    #[serde(default)]
    pub backend: Vec<RawBackend>,
    pub affinity: Option<RawAffinity>,
    pub limits: Option<RawLimits>,
    pub timeouts: Option<RawTimeouts>,
    pub admin: Option<RawAdmin>,
    pub health: Option<RawHealth>,
    pub vrrp: Option<super::vrrp::RawVrrp>,
    pub sync: Option<RawSync>,
    pub access: Option<super::access::RawAccess>,
    #[serde(default)]
    pub peer: Vec<RawPeer>,
    pub hep: Option<super::hep::RawHep>,
}

/// `[[peer]]`: a trunk (carrier, PBX) with a fixed relay endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub name: String,
    #[serde(default, deserialize_with = "one_or_many_addrs")]
    pub addr: Option<Vec<String>>,
    pub relay: String,
    pub backends: Option<Vec<String>>,
    pub probe: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    #[serde(default)]
    pub sip: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub relay: Option<Vec<String>>,
    pub relay_ports: Option<String>,
    pub relay_prefix: Option<String>,
    pub relay_port: Option<OneOrManyPorts>,
    pub forward_keepalives: Option<bool>,
    pub receive_buffer: Option<usize>,
    pub relay_receive_buffer: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub name: String,
    pub addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAffinity {
    pub failback: Option<Failback>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_flows: Option<usize>,
    pub max_dialogs: Option<usize>,
    pub new_flows_per_ip: Option<u32>,
    pub new_flows_burst: Option<u32>,
    pub max_flows_per_ip: Option<usize>,
    pub datagrams_per_ip: Option<u32>,
    pub datagrams_burst: Option<u32>,
    pub max_pins_per_flow: Option<u32>,
    pub max_pins_per_ip: Option<u32>,
    pub max_flows_per_ipv6_48: Option<usize>,
    pub max_pins_per_ipv6_48: Option<u32>,
    pub max_lingering_records: Option<usize>,
    #[serde(default)]
    pub source: Vec<RawSourceLimits>,
}

/// `[[limits.source]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSourceLimits {
    pub cidr: Option<String>,
    pub max_flows_per_ip: Option<usize>,
    pub new_flows_per_ip: Option<u32>,
    pub new_flows_burst: Option<u32>,
    pub datagrams_per_ip: Option<u32>,
    pub datagrams_burst: Option<u32>,
    pub max_pins_per_ip: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub flow_idle: Option<String>,
    pub register_grace: Option<String>,
    pub dialog_idle: Option<String>,
    pub transaction: Option<String>,
    pub unanswered_idle: Option<String>,
    pub max_registration: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub listen: Option<String>,
    pub token_file: Option<String>,
    pub max_connections: Option<usize>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_captures: Option<usize>,
    pub capture_queue: Option<usize>,
    pub capture_queue_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub alive_codes: Option<Vec<String>>,
    pub reply_503: Option<bool>,
    pub retry_after: Option<u32>,
    pub reply_503_rate: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    pub listen: Option<String>,
    pub peer: Option<String>,
    pub key_file: Option<String>,
    pub previous_key_grace: Option<String>,
    pub max_turn_changes: Option<usize>,
    pub max_pending_changes: Option<usize>,
    pub receive_buffer: Option<usize>,
}

/// `5062` or `[5062, 5064]` (a string the same: `"5062"`, `"5062,5064"`).
#[derive(Debug)]
pub(super) struct OneOrManyPorts(Result<Vec<u16>, String>);

impl OneOrManyPorts {
    pub fn to_vec(&self) -> Result<Vec<u16>, String> {
        self.0.clone()
    }
}

impl<'de> Deserialize<'de> for OneOrManyPorts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PortsVisitor)
    }
}

struct PortsVisitor;

fn port_of(v: i64) -> Result<u16, String> {
    u16::try_from(v).map_err(|_| format!("{v} is not a port"))
}

impl<'de> serde::de::Visitor<'de> for PortsVisitor {
    type Value = OneOrManyPorts;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a port or a list of ports")
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(OneOrManyPorts(port_of(v).map(|p| vec![p])))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.visit_i64(i64::try_from(v).unwrap_or(-1))
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(OneOrManyPorts(
            s.split(',')
                .map(|p| {
                    p.trim()
                        .parse::<u16>()
                        .map_err(|_| format!("`{}` is not a port", p.trim()))
                })
                .collect(),
        ))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::new();
        while let Some(p) = a.next_element::<i64>()? {
            match port_of(p) {
                Ok(p) => v.push(p),
                Err(e) => return Ok(OneOrManyPorts(Err(e))),
            }
        }
        Ok(OneOrManyPorts(Ok(v)))
    }
}

/// `"a"` or `["a", "b"]`: a single relay address stays as simple as it was.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_any(OneOrMany("an IP address or a list of IP addresses"))
}

fn one_or_many_addrs<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    d.deserialize_any(OneOrMany("an IP:port address or a list of them"))
}

/// One string or a list of strings; the text says what the strings are.
struct OneOrMany(&'static str);

impl<'de> serde::de::Visitor<'de> for OneOrMany {
    type Value = Option<Vec<String>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Some(vec![s.to_string()]))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::new();
        while let Some(s) = a.next_element::<String>()? {
            v.push(s);
        }
        Ok(Some(v))
    }
}
