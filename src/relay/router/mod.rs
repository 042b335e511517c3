//! The routing decision, as pure code: datagrams and the time come in, a decision
//! (forward where, or drop why) goes out. No sockets, no clock, no allocation on the
//! forwarding path once the tables are warm.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::backends::{AdminState, BackendId, BackendSet, Change, Tenure};
use super::dialogs::{Dialog, DialogTable, Side, Span};
use super::flows::{Flow, FlowId, FlowTable, Idle, InsertError};
use super::item::Item;
use super::port::RelayPort;
use super::port::RelaySpace;
use super::ratelimit::{Budget, SourceLimiter};
use super::stats::{Counters, Direction, DropReason};
use crate::config::{Backend, Config, Failback, Limits, StaticPeer};
use crate::sip::{Scan, SipView, scan};

mod sync;

pub use sync::SyncEffect;
use sync::flow_item;

/// Where a touched flow's traffic goes.
struct Touched {
    relay_port: RelayPort,
    client: SocketAddr,
    ingress: u16,
    peer: Option<u16>,
}

/// A static peer as the router needs it.
struct Peer {
    name: String,
    /// Rendezvous seeds of the backends that may receive its requests (empty: all).
    backends: Vec<u64>,
}

/// Sync items queued between two flushes of the peer link at most.
const SYNC_QUEUE: usize = 8192;

/// How often a slice of the flow table is swept for expired flows.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// A large table is swept in this many slices, one per `SWEEP_EVERY`, so the
/// dataplane never stalls for a whole-table scan (100k flows and dialogs: ~0.8 ms
/// at once); a large dialog table loses one shard's expired entries per sweep; rate
/// buckets and per-backend counts are refreshed when a round completes.
const SWEEP_SLICES: usize = 8;
/// Tables up to this many slots are swept whole every time.
const SWEEP_MIN_SLICE: usize = 4096;

/// What to do with a datagram a client sent to a public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Send it, unchanged, from `relay_port` to `to`. `new_flow`: the relay socket
    /// for that port must be opened first (then confirm with [`Router::abort_flow`]
    /// on failure).
    Forward {
        flow: FlowId,
        relay_port: RelayPort,
        backend: BackendId,
        to: SocketAddr,
        new_flow: bool,
    },
    /// A keepalive: it refreshed the flow and goes no further.
    Absorbed,
    /// No backend takes it, and it is a request that expects an answer: reply with a
    /// stateless 503 (with Retry-After) so the client fails over instead of
    /// retransmitting into a void. Counted as a `no_backend` drop.
    Reject503,
    Drop(DropReason),
}

/// What to do with a datagram a backend sent to a relay port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendAction {
    /// Send it, unchanged, from public socket `ingress` to the client `to`.
    Forward {
        to: SocketAddr,
        ingress: u16,
        backend: BackendId,
    },
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterEvent {
    /// The flow is gone: close its relay socket.
    FlowRemoved { relay_port: RelayPort },
    /// A removed backend has no flows left; its slot may be reused.
    BackendVacated { backend: BackendId },
}

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
    pub dialog_keys: Option<[u64; 4]>,
    /// Queue table changes for a sync peer.
    pub sync: bool,
    /// Trunks with fixed relay endpoints.
    pub peers: Vec<StaticPeer>,
    /// The public SIP addresses (a peer is reached from the first of its family).
    pub sip: Vec<SocketAddr>,
    /// The relay addresses (a peer's endpoint is one of them).
    pub relay: super::port::RelayAddrs,
}

impl RouterConfig {
    pub fn new(cfg: &Config, dialog_keys: Option<[u64; 4]>) -> Self {
        RouterConfig {
            settings: RouterSettings::from(cfg),
            space: RelaySpace::from_config(cfg),
            limits: cfg.limits.clone(),
            dialog_keys,
            sync: cfg.sync.is_some(),
            peers: cfg.peers.clone(),
            sip: cfg.listen.sip.clone(),
            relay: super::port::RelayAddrs::from_listen(&cfg.listen),
        }
    }
}

pub struct Router {
    settings: RouterSettings,
    peers: Vec<Peer>,
    backends: BackendSet,
    flows: FlowTable,
    dialogs: DialogTable,
    limiter: SourceLimiter,
    /// Datagrams per second per source.
    datagram_limiter: SourceLimiter,
    max_flows_per_ip: usize,
    reply_budget: Budget,
    counters: Counters,
    events: VecDeque<RouterEvent>,
    next_sweep: Option<Instant>,
    expired_scratch: Vec<FlowId>,
    /// Next flow slot to sweep, and the homes counted so far in this round.
    sweep_cursor: usize,
    sweep_homes: Vec<usize>,
    /// Next dialog shard to expire when the dialog table is large.
    dialog_shard: usize,
    flows_per_backend: Vec<usize>,
    vacate_scratch: Vec<usize>,
    /// Table changes for the sync peer (None without `[sync]`). Pre-sized: queueing
    /// never allocates; on overflow the peer gets a full table instead.
    sync_out: Option<Vec<Item>>,
    sync_overflow: bool,
    /// The sync peer is heard: its (mirrored) flows are its to expire.
    peer_alive: bool,
    /// Peer items that did not fit (full tables).
    pub sync_rejected: u64,
    /// Generation of the peer's full table being received.
    sync_gen: u32,
}

/// Methods that open a dialog: its later requests and responses stay on one backend.
fn opens_dialog(method: &[u8]) -> bool {
    matches!(method, b"INVITE" | b"SUBSCRIBE" | b"REFER")
}

impl Router {
    pub fn new(rc: RouterConfig, backend_list: &[Backend], now: Instant) -> Self {
        let backends = BackendSet::new(backend_list);
        let limits = &rc.limits;
        let mut r = Router {
            counters: Counters::new(backends.len(), rc.peers.len()),
            backends,
            // Static peers' flows come on top of `max_flows`.
            flows: FlowTable::new(rc.space.clone(), limits.max_flows + rc.peers.len()),
            peers: rc
                .peers
                .iter()
                .map(|p| Peer {
                    name: p.name.clone(),
                    backends: p.backends.iter().map(|n| super::hrw::seed(n)).collect(),
                })
                .collect(),
            dialogs: DialogTable::new(limits.max_dialogs, rc.dialog_keys),
            sync_out: rc.sync.then(|| Vec::with_capacity(SYNC_QUEUE)),
            sync_overflow: false,
            peer_alive: false,
            sync_rejected: 0,
            sync_gen: 0,
            reply_budget: Budget::new(rc.settings.reply_503_rate),
            // Sources without flows send too: room for many more than the flows. A
            // spoofed one-datagram source refills at once and is pruned to make room.
            datagram_limiter: SourceLimiter::new(
                limits.datagrams_per_ip,
                limits.datagrams_burst,
                limits.max_flows.max(1 << 16),
            ),
            max_flows_per_ip: limits.max_flows_per_ip,
            limiter: SourceLimiter::new(
                limits.new_flows_per_ip,
                limits.new_flows_burst,
                limits.max_flows,
            ),
            events: VecDeque::with_capacity(1024),
            next_sweep: None,
            expired_scratch: Vec::with_capacity(1024),
            sweep_cursor: 0,
            dialog_shard: 0,
            sweep_homes: vec![0; backend_list.len()],
            flows_per_backend: vec![0; backend_list.len()],
            vacate_scratch: Vec::with_capacity(backend_list.len()),
            settings: rc.settings.clone(),
        };
        r.add_peers(&rc, now);
        r
    }

    /// Creates the static peers' flows on their fixed endpoints (config checks
    /// guarantee each endpoint is a relay address and unique).
    fn add_peers(&mut self, rc: &RouterConfig, now: Instant) {
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
                client,
                relay_port,
                ingress,
                home,
                last_seen: now,
                registered_until: None,
                created: now,
                mirrored: false,
                sync_gen: 0,
                dialogs: 0,
                peer: Some(i as u16),
                answered: true,
            };
            self.flows.insert_static(flow, &p.addrs[1..]);
        }
    }

    /// Each static peer's name and flow, in config order.
    pub fn peer_flows(&self) -> impl Iterator<Item = (&str, &Flow)> {
        self.flows.iter().filter_map(|f| {
            let p = self.peers.get(usize::from(f.peer?))?;
            Some((p.name.as_str(), f))
        })
    }

    /// The static peers' relay endpoints: their sockets are opened at start.
    pub fn static_endpoints(&self) -> impl Iterator<Item = RelayPort> + '_ {
        self.flows
            .iter()
            .filter(|f| f.peer.is_some())
            .map(|f| f.relay_port)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.flows.iter()
    }

    pub fn backends(&self) -> &BackendSet {
        &self.backends
    }

    /// Health verdict for a backend.
    pub fn set_backend_up(&mut self, id: BackendId, up: bool) {
        if let Some(b) = self.backends.get_mut(id) {
            b.up = up;
        }
    }

    /// Operator's verdict for a backend, by name. False if there is no such backend.
    pub fn set_admin(&mut self, name: &str, state: AdminState) -> bool {
        let Some(id) = self.backends.by_name(name) else {
            return false;
        };
        if let Some(b) = self.backends.get_mut(id) {
            b.admin = state;
        }
        true
    }

    /// Applies a reloaded config: backends, timeouts and failback policy. Flows and
    /// dialogs stay; listen addresses and table limits need a restart.
    pub fn reconfigure(&mut self, settings: RouterSettings, backends: &[Backend]) -> Vec<Change> {
        self.reply_budget.set_rate(settings.reply_503_rate);
        self.settings = settings;
        let changes = self.backends.update(backends);
        self.counters.resize_backends(self.backends.len());
        self.flows_per_backend.resize(self.backends.len(), 0);
        self.sweep_homes.resize(self.backends.len(), 0);
        changes
    }

    /// Flows per backend (by home), as of the last sweep.
    pub fn flows_per_backend(&self) -> &[usize] {
        &self.flows_per_backend
    }

    /// The backend a flow's traffic goes to now: its home, or the next choice when
    /// the home is unusable (the home moves then; failback policy may move it back).
    fn current_home(&mut self, id: FlowId, is_register: bool) -> Option<BackendId> {
        let flow = self.flows.get(id)?;
        let home = flow.home;
        let home_ok = self.backends.serves(home);
        let back_home = match self.settings.failback {
            Failback::Never => false,
            Failback::OnRegister => is_register,
            Failback::Immediate => true,
        };
        if home_ok && !back_home {
            return Some(home);
        }
        let allowed = flow
            .peer
            .and_then(|p| self.peers.get(usize::from(p)))
            .map_or(&[][..], |p| &p.backends[..]);
        let best = match self.backends.choose_among(&flow.client, allowed) {
            Some(b) => b,
            // Nothing takes new flows (e.g. the only backend drains): stay home.
            None if home_ok => return Some(home),
            None => return None,
        };
        if best != home
            && let Some(f) = self.flows.get_mut(id)
        {
            f.home = best;
        }
        Some(best)
    }

    /// A datagram from `client` arrived on public socket `ingress`.
    pub fn from_client(
        &mut self,
        now: Instant,
        client: SocketAddr,
        ingress: u16,
        data: &[u8],
    ) -> ClientAction {
        if !self.datagram_limiter.allow(client.ip(), now) && !self.is_peer(&client) {
            return self.drop_from_client(DropReason::SourceRateLimited);
        }
        let msg = match scan(data) {
            Scan::Sip(v) => v,
            Scan::Keepalive => return self.client_keepalive(now, client),
            Scan::Invalid(e) => return self.drop_from_client(e.into()),
        };
        let (id, new_flow) = match self.flows.lookup_client(&client) {
            Some(id) => (id, false),
            None => match self.new_flow(now, client, ingress) {
                Ok(id) => (id, true),
                Err(DropReason::NoBackend) => return self.no_backend(now, &msg),
                Err(r) => return self.drop_from_client(r),
            },
        };
        let Some(home) = self.current_home(id, msg.is_method(b"REGISTER")) else {
            return self.no_backend(now, &msg);
        };
        let key = self.dialogs.key(msg.call_id);
        let backend = match self.dialogs.get_mut(key) {
            Some(d) => {
                let before = *d;
                if !self.backends.serves(d.backend) {
                    // Its backend is gone: the dialog follows the flow.
                    d.backend = home;
                }
                refresh(d, &msg, now, &self.settings, Side::Client);
                let after = *d;
                self.dialog_changed(key, Some(&before), &after, true);
                after.backend
            }
            None => {
                if msg.method().is_some_and(opens_dialog) {
                    // Pinned for a transaction only: the pin becomes a dialog when the
                    // backend answers (1xx/2xx), so a client cannot fill the table with
                    // INVITEs nobody answers.
                    let Some(relay_port) = self.flows.get(id).map(|f| f.relay_port) else {
                        return self.drop_from_client(DropReason::NoFlow);
                    };
                    let d = Dialog {
                        backend: home,
                        expires: now + self.settings.transaction,
                        span: Span::Transaction,
                        opener: Side::Client,
                        flow: relay_port,
                    };
                    if self.dialogs.pin(key, d).is_err() {
                        if new_flow {
                            self.abort_flow(id);
                        }
                        return self.drop_from_client(DropReason::DialogTableFull);
                    }
                    self.dialog_changed(key, None, &d, true);
                }
                home
            }
        };
        let Some(Touched {
            relay_port, peer, ..
        }) = self.touch(id, now)
        else {
            return self.drop_from_client(DropReason::NoFlow);
        };
        self.counters
            .forwarded(backend.index(), Direction::ToBackend, data.len());
        if let Some(p) = peer {
            self.counters.peer_forwarded(p, Direction::ToBackend);
        }
        ClientAction::Forward {
            flow: id,
            relay_port,
            backend,
            to: self.backend_addr(backend),
            new_flow,
        }
    }

    /// Traffic for a flow reached us: it is alive, and if the peer served it until
    /// now (the address moved) it is ours from here on, and the peer hears so.
    #[inline]
    fn touch(&mut self, id: FlowId, now: Instant) -> Option<Touched> {
        let flow = self.flows.get_mut(id)?;
        flow.last_seen = now;
        let t = Touched {
            relay_port: flow.relay_port,
            client: flow.client,
            ingress: flow.ingress,
            peer: flow.peer,
        };
        if flow.mirrored {
            flow.mirrored = false;
            let item = flow_item(flow, now, &self.backends);
            self.emit(item);
        }
        Some(t)
    }

    #[inline]
    fn backend_addr(&self, id: BackendId) -> SocketAddr {
        self.backends
            .get(id)
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |b| b.addr)
    }

    fn new_flow(
        &mut self,
        now: Instant,
        client: SocketAddr,
        ingress: u16,
    ) -> Result<FlowId, DropReason> {
        if self.flows.len() >= self.flows.capacity() {
            return Err(DropReason::FlowTableFull);
        }
        let home = self.backends.choose(&client).ok_or(DropReason::NoBackend)?;
        if self.flows.from_source(client.ip()) as usize >= self.max_flows_per_ip {
            return Err(DropReason::SourceFlowLimit);
        }
        if !self.limiter.allow(client.ip(), now) {
            return Err(DropReason::RateLimited);
        }
        let id = self
            .flows
            .insert(client, ingress, home, now)
            .map_err(|e| match e {
                InsertError::Full => DropReason::FlowTableFull,
                InsertError::NoPort => DropReason::NoRelayPort,
            })?;
        self.counters.flows_created += 1;
        if let Some(f) = self.flows.get(id) {
            let item = flow_item(f, now, &self.backends);
            self.emit(item);
        }
        Ok(id)
    }

    /// A static peer's address (exempt from per-source limits: a trusted trunk).
    fn is_peer(&self, client: &SocketAddr) -> bool {
        self.flows
            .lookup_client(client)
            .and_then(|id| self.flows.get(id))
            .is_some_and(|f| f.peer.is_some())
    }

    fn client_keepalive(&mut self, now: Instant, client: SocketAddr) -> ClientAction {
        self.counters.keepalives[Direction::ToBackend] += 1;
        let Some(id) = self.flows.lookup_client(&client) else {
            // No flow, no port: a keepalive alone never allocates one.
            return ClientAction::Absorbed;
        };
        // Keepalives alone do not keep a flow no backend has answered: a stranger
        // cannot hold relay ports with CRLFs.
        if !self.flows.get(id).is_some_and(|f| f.answered) {
            return ClientAction::Absorbed;
        }
        // A phone that only sends keepalives is still ours once it reaches us.
        let Some(Touched { relay_port, .. }) = self.touch(id, now) else {
            return ClientAction::Absorbed;
        };
        if !self.settings.forward_keepalives {
            return ClientAction::Absorbed;
        }
        match self.current_home(id, false) {
            Some(backend) => ClientAction::Forward {
                flow: id,
                relay_port,
                backend,
                to: self.backend_addr(backend),
                new_flow: false,
            },
            None => ClientAction::Absorbed,
        }
    }

    /// A datagram from `src` arrived on relay port `relay_port`.
    pub fn from_backend(
        &mut self,
        now: Instant,
        relay_port: RelayPort,
        src: SocketAddr,
        data: &[u8],
    ) -> BackendAction {
        let Some(backend) = self.backends.by_addr(&src) else {
            return self.drop_from_backend(DropReason::UnknownSource);
        };
        let Some(id) = self.flows.lookup_port(relay_port) else {
            return self.drop_from_backend(DropReason::NoFlow);
        };
        if let Some(f) = self.flows.get_mut(id) {
            f.answered = true;
        }
        match scan(data) {
            // Backends' NAT pings (nathelper) must reach the phone.
            Scan::Keepalive => self.counters.keepalives[Direction::ToClient] += 1,
            Scan::Invalid(e) => return self.drop_from_backend(e.into()),
            Scan::Sip(msg) => {
                if let Err(r) = self.learn_from_backend(now, id, backend, &msg) {
                    return self.drop_from_backend(r);
                }
            }
        }
        let Some(Touched {
            client: to,
            ingress,
            peer,
            ..
        }) = self.touch(id, now)
        else {
            return self.drop_from_backend(DropReason::NoFlow);
        };
        self.counters
            .forwarded(backend.index(), Direction::ToClient, data.len());
        if let Some(p) = peer {
            self.counters.peer_forwarded(p, Direction::ToClient);
        }
        BackendAction::Forward {
            to,
            ingress,
            backend,
        }
    }

    fn learn_from_backend(
        &mut self,
        now: Instant,
        id: FlowId,
        backend: BackendId,
        msg: &SipView<'_>,
    ) -> Result<(), DropReason> {
        let key = self.dialogs.key(msg.call_id);
        if let Some(d) = self.dialogs.get_mut(key) {
            let before = *d;
            if msg.is_request() {
                // A backend's request owns the transaction: its answers go back there.
                d.backend = backend;
            }
            refresh(d, msg, now, &self.settings, Side::Backend);
            let after = *d;
            self.dialog_changed(key, Some(&before), &after, true);
        } else if msg.is_request() {
            let Some(relay_port) = self.flows.get(id).map(|f| f.relay_port) else {
                return Err(DropReason::NoFlow);
            };
            // A backend's request: its answers go back to it. A dialog-opening one
            // becomes a dialog when the client answers it.
            let d = Dialog {
                backend,
                expires: now + self.settings.transaction,
                span: Span::Transaction,
                opener: Side::Backend,
                flow: relay_port,
            };
            self.dialogs
                .pin(key, d)
                .map_err(|()| DropReason::DialogTableFull)?;
            // Lone transactions (NAT pings, MESSAGE) are too short-lived to sync.
            let opening = msg.method().is_some_and(opens_dialog);
            self.dialog_changed(key, None, &d, opening);
        }
        if msg.cseq_is(b"REGISTER") && msg.status().is_some_and(|s| (200..300).contains(&s)) {
            let until = match msg.granted_expiry() {
                Some(0) | None => None,
                Some(s) => {
                    // A backend's grant is capped: a flow is not held for days.
                    let granted =
                        Duration::from_secs(u64::from(s)).min(self.settings.max_registration);
                    Some(now + granted + self.settings.register_grace)
                }
            };
            if let Some(f) = self.flows.get_mut(id)
                && f.registered_until != until
            {
                f.registered_until = until;
                let item = flow_item(f, now, &self.backends);
                self.emit(item);
            }
        }
        Ok(())
    }

    /// After dialog entry `key` changed from `before` (None: new) to `after`: keeps
    /// its flow's hold in step, and tells the sync peer what changed (a new entry
    /// only if `sync_new`).
    fn dialog_changed(
        &mut self,
        key: u128,
        before: Option<&Dialog>,
        after: &Dialog,
        sync_new: bool,
    ) {
        hold(
            &mut self.flows,
            after.flow,
            before.map(|d| d.span),
            Some(after.span),
        );
        let changed = match before {
            Some(b) => b.backend != after.backend || b.span != after.span,
            None => sync_new,
        };
        if changed {
            self.emit(Item::Dialog {
                key,
                backend: self.backends.seed_of(after.backend),
                span: after.span,
                opener: after.opener,
                flow: after.flow,
            });
        }
    }

    /// Undo a flow whose relay socket could not be opened.
    pub fn abort_flow(&mut self, id: FlowId) {
        if let Some(f) = self.flows.remove(id) {
            self.counters.flows_created = self.counters.flows_created.saturating_sub(1);
            self.emit(Item::FlowGone {
                relay_port: f.relay_port,
            });
        }
    }

    /// Count a datagram the shell could not send (full socket buffer, error).
    pub fn send_failed(&mut self) {
        self.counters.drop(DropReason::SendFailed);
    }

    /// Count a stateless 503 sent because no backend was up.
    pub fn replied_503(&mut self) {
        self.counters.replies_503 += 1;
    }

    /// Count a relay socket that could not be opened for a new flow.
    pub fn bind_failed(&mut self, id: FlowId) {
        self.abort_flow(id);
        self.counters.drop(DropReason::BindFailed);
    }

    fn drop_from_client(&mut self, r: DropReason) -> ClientAction {
        self.counters.drop(r);
        ClientAction::Drop(r)
    }

    fn no_backend(&mut self, now: Instant, msg: &SipView<'_>) -> ClientAction {
        self.counters.drop(DropReason::NoBackend);
        if !self.settings.reply_503 || !msg.is_request() || msg.is_method(b"ACK") {
            return ClientAction::Drop(DropReason::NoBackend);
        }
        if !self.reply_budget.take(now) {
            self.counters.replies_503_suppressed += 1;
            return ClientAction::Drop(DropReason::NoBackend);
        }
        ClientAction::Reject503
    }

    /// A 503 the shell did not send: it would have been larger than the request.
    pub fn reply_suppressed(&mut self) {
        self.counters.replies_503_suppressed += 1;
    }

    fn drop_from_backend(&mut self, r: DropReason) -> BackendAction {
        self.counters.drop(r);
        BackendAction::Drop(r)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Expires idle flows and dialogs. Call at [`Router::poll_timeout`] (or any time).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.next_sweep {
            Some(t) if now < t => return,
            _ => {}
        }
        self.next_sweep = Some(now + SWEEP_EVERY);
        let total = self.flows.slot_count();
        let start = self.sweep_cursor.min(total);
        let end = (start + total.div_ceil(SWEEP_SLICES).max(SWEEP_MIN_SLICE)).min(total);
        if start == 0 {
            self.sweep_homes.iter_mut().for_each(|n| *n = 0);
        }
        let mut expired = std::mem::take(&mut self.expired_scratch);
        expired.clear();
        let idle = Idle {
            answered: self.settings.flow_idle,
            unanswered: self.settings.unanswered_idle.min(self.settings.flow_idle),
        };
        self.flows.sweep(
            start..end,
            now,
            idle,
            self.peer_alive,
            &mut expired,
            &mut self.sweep_homes,
        );
        for &id in &expired {
            if let Some(f) = self.flows.remove(id) {
                self.counters.flows_expired += 1;
                self.emit(Item::FlowGone {
                    relay_port: f.relay_port,
                });
                self.events.push_back(RouterEvent::FlowRemoved {
                    relay_port: f.relay_port,
                });
            }
        }
        self.expired_scratch = expired;
        // An expired dialog lets go of its flow (the flow itself expires later, when
        // idle).
        let flows = &mut self.flows;
        let mut release = |d: &Dialog| hold(flows, d.flow, Some(d.span), None);
        if self.dialogs.len() > SWEEP_MIN_SLICE {
            self.dialogs
                .expire_shard(self.dialog_shard, now, &mut release);
            self.dialog_shard = (self.dialog_shard + 1) % super::dialogs::SHARDS;
        } else {
            self.dialogs.expire(now, &mut release);
        }
        if end < total {
            self.sweep_cursor = end;
            return;
        }
        self.sweep_cursor = 0;
        self.limiter.prune(now);
        self.flows_per_backend.copy_from_slice(&self.sweep_homes);
        // A removed backend stays until no flow calls it home and no call is pinned
        // to it (its in-dialog requests must still be accepted).
        // (A scratch vector: the sweep must not allocate in steady state.)
        let mut in_use = std::mem::take(&mut self.vacate_scratch);
        in_use.clear();
        in_use.extend_from_slice(&self.flows_per_backend);
        if self
            .backends
            .iter()
            .any(|(_, b)| b.tenure == Tenure::Removed)
        {
            for (_, d) in self.dialogs.iter() {
                if let Some(n) = in_use.get_mut(d.backend.index()) {
                    *n += 1;
                }
            }
        }
        for id in self.backends.vacate_unused(&in_use) {
            self.events
                .push_back(RouterEvent::BackendVacated { backend: id });
        }
        self.vacate_scratch = in_use;
    }

    pub fn poll_event(&mut self) -> Option<RouterEvent> {
        self.events.pop_front()
    }
}

/// Keeps a dialog entry alive while its messages flow, and shortens it once the
/// dialog or transaction is over (only retransmissions are left to route). `from`
/// sent `msg`.
fn refresh(d: &mut Dialog, msg: &SipView<'_>, now: Instant, s: &RouterSettings, from: Side) {
    let final_status = msg.status().filter(|&c| c >= 200);
    let ending = msg.is_method(b"BYE")
        || (msg.cseq_is(b"BYE") && final_status.is_some())
        || (msg.cseq_is(b"INVITE") && final_status.is_some_and(|c| c >= 300));
    if ending {
        d.span = Span::Transaction;
        d.expires = now + s.transaction;
    } else if d.span == Span::Dialog {
        // In-dialog traffic either way keeps the dialog (and its flow).
        d.expires = now + s.dialog_idle;
    } else if from != d.opener
        && msg.status().is_some_and(|c| (101..300).contains(&c))
        && msg.cseq_method().is_some_and(opens_dialog)
    {
        // The other side answered the dialog-opening request: a dialog now. The
        // opener's own retransmissions or answers never promote it.
        d.span = Span::Dialog;
        d.expires = now + s.dialog_idle;
    } else {
        d.expires = d.expires.max(now + s.transaction);
    }
}

/// Keeps a flow's count of dialogs in step with one dialog's span change.
fn hold(flows: &mut FlowTable, port: RelayPort, before: Option<Span>, after: Option<Span>) {
    let was = before == Some(Span::Dialog);
    let is = after == Some(Span::Dialog);
    if was == is {
        return;
    }
    let Some(f) = flows.lookup_port(port).and_then(|id| flows.get_mut(id)) else {
        return;
    };
    if is {
        f.dialogs += 1;
    } else {
        f.dialogs = f.dialogs.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests;
