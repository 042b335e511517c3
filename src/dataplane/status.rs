//! A snapshot of the dataplane, refreshed a few times a second, for the admin API,
//! `/ready` and the demo's status line. Refreshing reuses its buffers (no allocation
//! in steady state).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::health::Checker;
use crate::relay::port::RelayAddrs;
use crate::relay::{Counters, Direction, Router};

#[derive(Debug, Clone, Serialize)]
pub struct BackendInfo {
    pub name: String,
    pub addr: SocketAddr,
    /// Health: unknown, up or down.
    pub state: &'static str,
    /// Admin: enabled, draining or disabled.
    pub admin: &'static str,
    /// Still configured (false: removed by a reload, draining out).
    pub configured: bool,
    pub last_rtt_ms: Option<f64>,
    pub flows: usize,
    pub datagrams_to_backend: u64,
    pub datagrams_to_client: u64,
}

/// A dataplane that has not refreshed its status for this long counts as hung: not
/// ready, and the VRRP speaker lowers its priority. Refreshes come every 200 ms.
pub const STALE: Duration = Duration::from_secs(1);

/// The one readiness rule, for `/ready` and VRRP priority tracking alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NoBackend,
    /// No fresh status: the dataplane is stuck or gone.
    Stalled,
}

/// A static peer (trunk), as `/api/v1/peers` and `sipfront ctl peers` show it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub name: String,
    /// Where requests to it go.
    pub addr: SocketAddr,
    /// Its fixed relay endpoint.
    pub relay: SocketAddr,
    /// The backend its new requests go to now.
    pub backend: String,
    pub datagrams_to_backend: u64,
    pub datagrams_to_client: u64,
    /// Calls (dialogs) it has up now.
    pub dialogs: u32,
    /// With `probe = true`: up (answers OPTIONS), down, or not known yet.
    pub up: Option<bool>,
    pub rtt_ms: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub backends: Vec<BackendInfo>,
    pub peers: Vec<PeerInfo>,
    pub counters: Counters,
    pub flows: usize,
    pub dialogs: usize,
    pub ports_in_use: usize,
    /// At least one backend takes traffic.
    pub ready: bool,
    /// Holds a full table from the sync peer (always true without `[sync]`).
    pub synced: bool,
    pub updated: Option<Instant>,
}

impl Status {
    pub fn new() -> Self {
        Status {
            backends: Vec::new(),
            peers: Vec::new(),
            counters: Counters::default(),
            flows: 0,
            dialogs: 0,
            ports_in_use: 0,
            ready: false,
            synced: true,
            updated: None,
        }
    }

    pub fn readiness(&self, now: Instant) -> Readiness {
        let fresh = self
            .updated
            .is_some_and(|t| now.saturating_duration_since(t) < STALE);
        match (fresh, self.ready) {
            (false, _) => Readiness::Stalled,
            (true, true) => Readiness::Ready,
            (true, false) => Readiness::NoBackend,
        }
    }

    pub fn is_healthy(&self, now: Instant) -> bool {
        self.readiness(now) == Readiness::Ready
    }

    pub fn update(
        &mut self,
        r: &Router,
        checker: &Checker,
        ports_in_use: usize,
        relay: &RelayAddrs,
    ) {
        self.update_peers(r, relay);
        self.counters.copy_from(r.counters());
        self.flows = r.flow_count();
        self.dialogs = r.dialog_count();
        self.ports_in_use = ports_in_use;
        self.updated = Some(Instant::now());
        let set = r.backends();
        let live = set.iter().filter(|(_, b)| !b.is_vacant()).count();
        if self.backends.len() != live {
            self.backends.clear();
        }
        let mut ready = false;
        for (k, (id, b)) in set.iter().filter(|(_, b)| !b.is_vacant()).enumerate() {
            let c = self
                .counters
                .backends
                .get(id.index())
                .cloned()
                .unwrap_or_default();
            let info = BackendInfo {
                name: String::new(),
                addr: b.addr,
                state: checker.state(id).as_str(),
                admin: b.admin.as_str(),
                configured: b.is_configured(),
                last_rtt_ms: checker.last_rtt(id).map(|d| d.as_secs_f64() * 1e3),
                flows: r.flows_per_backend().get(id.index()).copied().unwrap_or(0),
                datagrams_to_backend: c.datagrams[Direction::ToBackend],
                datagrams_to_client: c.datagrams[Direction::ToClient],
            };
            ready |= b.serves();
            if k == self.backends.len() {
                self.backends.push(info);
                self.backends[k].name = b.name.clone();
            } else {
                let slot = &mut self.backends[k];
                let name = std::mem::take(&mut slot.name);
                *slot = info;
                slot.name = name;
                if slot.name != b.name {
                    slot.name.clone_from(&b.name);
                }
            }
        }
        self.ready = ready;
    }
}

impl Status {
    /// Peers come from the config: the list is built once, then refreshed in place.
    fn update_peers(&mut self, r: &Router, relay: &RelayAddrs) {
        let n = r.peer_flows().count();
        if self.peers.len() != n {
            self.peers = r
                .peer_flows()
                .map(|(name, f)| PeerInfo {
                    name: name.to_string(),
                    addr: f.client,
                    relay: relay
                        .socket_addr(f.relay_port)
                        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                    backend: String::new(),
                    datagrams_to_backend: 0,
                    datagrams_to_client: 0,
                    dialogs: 0,
                    up: None,
                    rtt_ms: None,
                })
                .collect();
        }
        for (info, (_, f)) in self.peers.iter_mut().zip(r.peer_flows()) {
            let i = usize::from(f.peer.unwrap_or_default());
            let c = r.counters().peers.get(i).copied().unwrap_or_default();
            info.datagrams_to_backend = c[Direction::ToBackend];
            info.datagrams_to_client = c[Direction::ToClient];
            info.dialogs = f.dialogs;
            let home = r.backends().get(f.home).map_or("", |b| b.name.as_str());
            if info.backend != home {
                info.backend.clear();
                info.backend.push_str(home);
            }
        }
    }
}

impl Default for Status {
    fn default() -> Self {
        Status::new()
    }
}
