//! What a router is built from: its settings (from the config, replaced on reload)
//! and the table limits, relay space and dialog keys fixed at start.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{Access, Config, Failback, Limits, StaticPeer};
use crate::relay::port::RelaySpace;

/// Settings the router needs, taken from [`Config`].
#[derive(Debug, Clone)]
pub struct RouterSettings {
    pub flow_idle: Duration,
    pub unanswered_idle: Duration,
    pub max_registration: Duration,
    pub register_grace: Duration,
    pub dialog_idle: Duration,
    pub transaction: Duration,
    pub forward_keepalives: bool,
    pub failback: Failback,
    /// Answer requests with a 503 when no backend is up...
    pub reply_503: bool,
    /// ...at most this many per second in all.
    pub reply_503_rate: u32,
}

impl From<&Config> for RouterSettings {
    fn from(c: &Config) -> Self {
        RouterSettings {
            flow_idle: c.timeouts.flow_idle,
            unanswered_idle: c.timeouts.unanswered_idle,
            max_registration: c.timeouts.max_registration,
            register_grace: c.timeouts.register_grace,
            dialog_idle: c.timeouts.dialog_idle,
            transaction: c.timeouts.transaction,
            forward_keepalives: c.listen.forward_keepalives,
            failback: c.failback,
            reply_503: c.health.reply_503,
            reply_503_rate: c.health.reply_503_rate,
        }
    }
}

/// What a router is built from. The dataplane derives it from the config (and the
/// dialog keys from the sync key, so both peers hash Call-IDs alike); tests build
/// it directly.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub settings: RouterSettings,
    pub space: RelaySpace,
    pub limits: Limits,
    /// Shared dialog-key secrets (with `[sync]`); random per process without.
    pub dialog_keys: Option<[u64; 2]>,
    /// With a sync peer: the table changes queued for it between two sync turns
    /// (`sync.max_turn_changes`).
    pub sync_queue: Option<usize>,
    /// Trunks with fixed relay endpoints.
    pub peers: Vec<StaticPeer>,
    /// The public SIP addresses (a peer is reached from the first of its family).
    pub sip: Vec<SocketAddr>,
    /// The relay addresses (a peer's endpoint is one of them).
    pub relay: crate::relay::port::RelayAddrs,
    /// Allow/deny lists, ban table size, scanner User-Agents.
    pub access: Access,
    /// Where in the pool new flows start taking endpoints (any number; the dataplane
    /// draws one per start, tests keep 0): a restarted host without the table does not
    /// hand the first new clients exactly the endpoints its last run gave out first,
    /// which the backends may still hold for other phones.
    pub port_start: u64,
    /// With a sync peer, the half of the endpoint pool this host hands out first
    /// (see [`crate::relay::flows::FlowTable::preferring_half`]); `None` without one.
    pub half: Option<u8>,
}

impl RouterConfig {
    pub fn new(cfg: &Config, dialog_keys: Option<[u64; 2]>) -> Self {
        RouterConfig {
            settings: RouterSettings::from(cfg),
            space: RelaySpace::from_config(cfg),
            limits: cfg.limits.clone(),
            dialog_keys,
            sync_queue: cfg.sync.as_ref().map(|s| s.max_turn_changes),
            peers: cfg.peers.clone(),
            sip: cfg.listen.sip.clone(),
            relay: crate::relay::port::RelayAddrs::from_listen(&cfg.listen),
            access: cfg.access.clone(),
            port_start: 0,
            half: cfg.sync.as_ref().and_then(|s| sync_half(s.listen, s.peer)),
        }
    }
}

/// The pool half of the host whose sync link goes from `listen` to `peer`: the host
/// with the lower address takes 0, its peer (whose `listen` is our `peer`) 1. `None`
/// if the two are equal (the config refuses it).
pub fn sync_half(listen: std::net::SocketAddr, peer: std::net::SocketAddr) -> Option<u8> {
    (listen != peer).then(|| u8::from(listen > peer))
}
