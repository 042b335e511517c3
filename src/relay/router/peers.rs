//! Static peers (trunks): flows from the config on fixed relay endpoints.

use std::net::SocketAddr;
use std::time::Instant;

use super::{Router, RouterConfig};
use crate::relay::backends::BackendId;
use crate::relay::flows::{Flow, FlowId, FlowTable};
use crate::relay::port::RelayPort;

/// A static peer as the router needs it.
pub(super) struct Peer {
    pub(super) name: String,
    /// Rendezvous seeds of the backends that may receive its requests (empty: all).
    pub(super) backends: Vec<u64>,
    /// Its flow, placed at start and never removed (kept here so the status refresh
    /// does not walk the whole flow table to find the peers).
    pub(super) flow: Option<FlowId>,
}

impl Router {
    /// Creates the static peers' flows on their fixed endpoints (config checks
    /// guarantee each endpoint is a relay address and unique).
    pub(super) fn add_peers(&mut self, rc: &RouterConfig, now: Instant) {
        for (i, p) in rc.peers.iter().enumerate() {
            let Some(relay_port) = rc.relay.endpoint_of(p.relay) else {
                continue;
            };
            let client = p.addrs[0];
            let ingress = rc
                .sip
                .iter()
                .position(|s| s.is_ipv4() == client.is_ipv4())
                .unwrap_or(0) as u16;
            let home = self
                .backends
                .choose_among(&client, &self.peers[i].backends)
                .unwrap_or(BackendId::new(0));
            let flow = Flow {
                peer: Some(i as u16),
                answered: true,
                ..Flow::new(client, relay_port, ingress, home, now)
            };
            self.peers[i].flow = self.flows.insert_static(flow, &p.addrs[1..]);
        }
    }

    /// Each static peer's name and flow, in config order.
    pub fn peer_flows(&self) -> impl Iterator<Item = (&str, &Flow)> {
        self.peers
            .iter()
            .filter_map(|p| Some((p.name.as_str(), self.flows.get(p.flow?)?)))
    }

    /// The static peers' relay endpoints: their sockets are opened at start.
    pub fn static_endpoints(&self) -> impl Iterator<Item = RelayPort> + '_ {
        self.peer_flows().map(|(_, f)| f.relay_port)
    }

    /// A static peer's address (exempt from per-source limits: a trusted trunk).
    pub(super) fn is_peer(&self, client: &SocketAddr) -> bool {
        is_peer(&self.flows, client)
    }
}

pub(super) fn is_peer(flows: &FlowTable, client: &SocketAddr) -> bool {
    flows
        .lookup_client(client)
        .and_then(|id| flows.get(id))
        .is_some_and(|f| f.peer.is_some())
}
