//! The routing decision, as pure code: datagrams and the time come in, a decision
//! (forward where, or drop why) goes out. No sockets, no clock, no allocation on the
//! forwarding path once the tables are warm.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::access::{AccessControl, Refusal};
use super::backends::{AdminState, BackendId, BackendSet, Change};
use super::dialogs::{Dialog, DialogKey, DialogTable, Marks, Side, Span};
use super::flows::{Flow, FlowId, FlowTable, InsertError, NOT_HELD, RECLAIM};
use super::item::Item;
use super::port::RelayPort;
use super::ratelimit::{Budget, SourceLimiter, source_key};
use super::source_limits::SourceClasses;
use super::stats::{Counters, Direction, DropReason, Suppressed};
use super::top::TopSketch;
use crate::config::{Backend, Failback};
use crate::sip::{Scan, SipView, scan};

mod admission;
mod dialog;
mod expiry;
mod peers;
mod reply;
mod settings;
mod sync;

use dialog::{hold, opens_dialog, refresh};
use peers::{Peer, is_peer};
pub use settings::{RouterConfig, RouterSettings};

use sync::flow_item;
pub use sync::{FullCursor, SyncEffect, SyncReject};

/// Where a touched flow's traffic goes.
struct Touched {
    relay_port: RelayPort,
    client: SocketAddr,
    ingress: u16,
    peer: Option<u16>,
}

/// A datagram scanned ahead of its decision, and its Call-ID's dialog key: a
/// batch's dialog entries are looked up back to back before the decisions (see
/// [`Router::prepare_client`], [`Router::prepare_backend`]), so that at a large
/// table their cache misses overlap.
#[derive(Debug, Clone, Copy)]
pub struct Prepared<'a> {
    scan: Scan<'a>,
    key: Option<DialogKey>,
}

impl<'a> Prepared<'a> {
    /// `data`'s scan: the one made ahead if there is one, else made now.
    fn scan_of(prepared: Option<Self>, data: &'a [u8]) -> Scan<'a> {
        prepared.map_or_else(|| scan(data), |p| p.scan)
    }
}

/// What to do with a datagram a client sent to a public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Send it, unchanged, from `relay_port` to `to`. `new_flow`: the relay socket
    /// for that port must be opened first (then confirm with [`Router::bind_failed`]
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

pub struct Router {
    settings: RouterSettings,
    peers: Vec<Peer>,
    backends: BackendSet,
    flows: FlowTable,
    dialogs: DialogTable,
    limiter: SourceLimiter,
    /// Datagrams per second per source.
    datagram_limiter: SourceLimiter,
    /// Per-source limits: `[limits]`, or a `[[limits.source]]` override.
    sources: SourceClasses,
    max_pins_per_flow: u32,
    access: AccessControl,
    /// Sources by datagrams dropped (bounded; `/api/v1/top`).
    top_drops: TopSketch,
    reply_budget: Budget,
    counters: Counters,
    events: VecDeque<RouterEvent>,
    next_sweep: Option<Instant>,
    /// When the next growth step may run (while a table's shard is short of room:
    /// `expiry::GROW_EVERY`), and which table started the last.
    next_grow: Instant,
    grow_turn: u8,
    expired_scratch: Vec<FlowId>,
    /// Next flow slot to sweep, and the homes counted so far in this round.
    sweep_cursor: usize,
    sweep_homes: Vec<usize>,
    /// Next dialog shard to expire when the dialog table is large.
    dialog_shard: usize,
    /// The next dialog shard whose refreshed entries go to the sync peer again, and
    /// when (`expiry::resend_every`).
    resend_shard: usize,
    resend_due: Instant,
    flows_per_backend: Vec<usize>,
    vacate_scratch: Vec<usize>,
    /// Table changes for the sync peer (None without `[sync]`). Pre-sized: queueing
    /// never allocates; on overflow the peer gets a full table instead.
    sync_out: Option<Vec<Item>>,
    sync_overflow: bool,
    /// The sync peer is heard: its (mirrored) flows are its to expire.
    peer_alive: bool,
    /// Peer items not applied, by [`SyncReject`] (indexed `as usize`).
    pub sync_rejected: [u64; SyncReject::ALL.len()],
    /// Peer flows on an endpoint that one of our own flows holds for another client
    /// (both hosts handed it out: a split brain), whichever kept it.
    pub sync_conflicts: u64,
    /// Peer flows for a client one of our own flows serves on another endpoint (both
    /// hosts served the phone), whichever kept it.
    pub sync_client_conflicts: u64,
    /// Generation of the peer's full table being received.
    sync_gen: u32,
    /// Times of the datagram buckets flows hold count from here: the first time
    /// seen (times passed in before the router was made are valid).
    epoch: Option<Instant>,
    /// Where the Call-ID of the datagram the last `from_client`/`from_backend` scanned
    /// lies in it (empty: none), so that the capture hook need not scan it again.
    last_call_id: (usize, usize),
}

/// The range `part` covers in `whole` (empty if it is not a part of it).
fn range_in(whole: &[u8], part: &[u8]) -> (usize, usize) {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= whole.len() => (start, end),
        _ => (0, 0),
    }
}

impl Router {
    /// The Call-ID of `data`, if the last [`from_client`](Self::from_client) or
    /// [`from_backend`](Self::from_backend) call was given `data` and found one; else
    /// empty.
    pub fn last_call_id<'d>(&self, data: &'d [u8]) -> &'d [u8] {
        data.get(self.last_call_id.0..self.last_call_id.1)
            .unwrap_or_default()
    }

    pub fn new(rc: RouterConfig, backend_list: &[Backend], now: Instant) -> Self {
        let backends = BackendSet::new(backend_list);
        let limits = &rc.limits;
        let sources = SourceClasses::new(limits);
        let mut r = Router {
            counters: Counters::new(backends.len(), rc.peers.len()),
            backends,
            // Static peers' flows come on top of `max_flows`.
            flows: FlowTable::with_lingering(
                rc.space.clone(),
                limits.max_flows + rc.peers.len(),
                limits.max_dialogs,
                limits.max_lingering_records,
            )
            .starting_at(rc.port_start)
            .preferring_half(rc.half)
            .lingering_for(rc.settings.transaction),
            peers: rc
                .peers
                .iter()
                .map(|p| Peer {
                    name: p.name.clone(),
                    backends: p.backends.iter().map(|n| super::hrw::seed(n)).collect(),
                    flow: None,
                })
                .collect(),
            dialogs: DialogTable::new(limits.max_dialogs, rc.dialog_keys),
            sync_out: rc.sync_queue.map(Vec::with_capacity),
            sync_overflow: false,
            peer_alive: false,
            sync_rejected: [0; SyncReject::ALL.len()],
            sync_conflicts: 0,
            sync_client_conflicts: 0,
            sync_gen: 0,
            reply_budget: Budget::new(rc.settings.reply_503_rate),
            // Sources without flows send too: room for many more than the flows. A
            // spoofed one-datagram source refills at once and is pruned to make room.
            datagram_limiter: SourceLimiter::with_classes(
                sources.datagram_rates(),
                limits.max_flows.max(1 << 16),
            ),
            max_pins_per_flow: limits.max_pins_per_flow,
            access: AccessControl::new(&rc.access),
            top_drops: TopSketch::new(),
            limiter: SourceLimiter::with_classes(sources.new_flow_rates(), limits.max_flows),
            sources,
            events: VecDeque::with_capacity(1024),
            next_sweep: None,
            next_grow: now,
            grow_turn: 0,
            expired_scratch: Vec::with_capacity(1024),
            sweep_cursor: 0,
            dialog_shard: 0,
            resend_shard: 0,
            resend_due: now,
            sweep_homes: vec![0; backend_list.len()],
            flows_per_backend: vec![0; backend_list.len()],
            vacate_scratch: Vec::with_capacity(backend_list.len()),
            settings: rc.settings.clone(),
            last_call_id: (0, 0),
            epoch: None,
        };
        r.add_peers(&rc, now);
        r
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// With a million flows each decision waits on cache misses (the flow index, the
    /// flow). A received batch is warmed in two passes before any decision: this one
    /// starts loading, for every datagram, the lines whose address follows from the
    /// client address alone; [`Router::warm_client`]
    /// then reads the index lines (loaded by then) and starts loading the flows. The
    /// misses of the whole batch overlap instead of queueing. Changes nothing.
    #[inline]
    pub fn prefetch_client(&self, client: SocketAddr) {
        self.flows.prefetch_client(&client);
    }

    /// The second pass of warming a batch, see [`Router::prefetch_client`]. Unless
    /// the flow holds its source's datagram bucket, the limiter's line is loaded too.
    #[inline]
    pub fn warm_client(&self, client: SocketAddr) {
        if !self.flows.warm_client(&client) {
            self.datagram_limiter.prefetch(client.ip());
        }
    }

    /// The third pass of warming a batch of at least two client datagrams: scans
    /// `data` and computes its dialog key, for [`Router::warm_dialog`] and then
    /// [`Router::from_client_with`]. Only for a client with a flow (known after
    /// the first two passes): datagrams of unknown sources (a flood from new
    /// addresses) keep being refused before they are scanned.
    #[inline]
    pub fn prepare_client<'a>(&self, client: SocketAddr, data: &'a [u8]) -> Option<Prepared<'a>> {
        self.flows.lookup_client(&client)?;
        Some(self.prepared(data))
    }

    /// [`Router::prepare_client`] for a datagram from `src` to `relay_port`: only
    /// from a backend, to an endpoint with a flow.
    #[inline]
    pub fn prepare_backend<'a>(
        &self,
        relay_port: RelayPort,
        src: SocketAddr,
        data: &'a [u8],
    ) -> Option<Prepared<'a>> {
        self.backends.by_addr(&src)?;
        self.flows.lookup_port(relay_port)?;
        Some(self.prepared(data))
    }

    fn prepared<'a>(&self, data: &'a [u8]) -> Prepared<'a> {
        let scan = scan(data);
        let key = match scan {
            Scan::Sip(v) => Some(self.dialogs.key(v.call_id)),
            _ => None,
        };
        Prepared { scan, key }
    }

    /// The dialog key of `call_id`: the one computed ahead if `prepared` has it.
    fn dialog_key(&self, prepared: Option<Prepared<'_>>, call_id: &[u8]) -> DialogKey {
        prepared
            .and_then(|p| p.key)
            .unwrap_or_else(|| self.dialogs.key(call_id))
    }

    /// The fourth pass: looks the dialog entry up and prefetches its lines (the
    /// batch's lookups run back to back, their misses overlapping).
    #[inline]
    pub fn warm_dialog(&self, prepared: &Prepared<'_>) {
        if let Some(key) = prepared.key {
            self.dialogs.warm(key);
        }
    }

    /// [`Router::prefetch_client`] for [`Router::from_backend`]: the endpoint's entry.
    #[inline]
    pub fn prefetch_backend(&self, relay_port: RelayPort) {
        self.flows.prefetch_port(relay_port);
    }

    /// [`Router::warm_client`] for [`Router::from_backend`]: the flow.
    #[inline]
    pub fn warm_backend(&self, relay_port: RelayPort) {
        self.flows.warm_port(relay_port);
    }

    /// The router's big blocks read at random per datagram, as (first byte, length
    /// in bytes): for the shell to back with huge pages (they are never moved).
    pub fn table_memory(&self) -> [(*const u8, usize); 2] {
        self.flows.memory()
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    pub fn dialog_count(&self) -> usize {
        self.dialogs.len()
    }

    /// Decisions (and items from the sync peer) that found a table shard full (the
    /// dialog table's, or a per-source limiter's still mostly limited) and rehashed
    /// or grew it themselves, a stall and (growing) an allocation on the datagram
    /// path: the timer grows shards ahead, so this stays 0 unless new calls or
    /// sources come faster than it grows them, or a dialog shard holds more than its
    /// ceiling (`dialogs::ceiling`).
    pub fn grown_in_decisions(&self) -> u64 {
        self.dialogs.full_inserts()
            + self.limiter.full_places()
            + self.datagram_limiter.full_places()
    }

    /// Records of removed flows' unanswered entries (still counted against their
    /// sources) dropped before they were due, the oldest first: the records were
    /// full.
    pub fn lingering_dropped(&self) -> u64 {
        self.flows.lingering_dropped()
    }

    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.flows.iter()
    }

    /// One part of a listing that goes through the table a part at a time (see
    /// `FlowTable::part`).
    pub fn flows_part(
        &self,
        from: usize,
        limit: usize,
        max_slots: usize,
    ) -> (Vec<&Flow>, Option<usize>) {
        self.flows.part(from, limit, max_slots)
    }

    /// The flow of `client`, by the index (not a walk of the table).
    pub fn flow_of(&self, client: &SocketAddr) -> Option<&Flow> {
        self.flows
            .lookup_client(client)
            .and_then(|id| self.flows.get(id))
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
        self.flows.set_pin_linger(settings.transaction);
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
        // A static peer never registers and its flow never ends: once a reload removed
        // its home, its next new request goes elsewhere (its calls keep their pins).
        let leave =
            flow.peer.is_some() && !self.backends.get(home).is_some_and(|b| b.is_configured());
        if home_ok && !back_home && !leave {
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
        self.from_client_with(now, client, ingress, data, None)
    }

    /// [`Router::from_client`], for a datagram [`Router::prepare_client`] scanned
    /// (if `prepared`): the same decision, without scanning it again.
    pub fn from_client_with(
        &mut self,
        now: Instant,
        client: SocketAddr,
        ingress: u16,
        data: &[u8],
        prepared: Option<Prepared<'_>>,
    ) -> ClientAction {
        // Source port 0 ("no reply"): a flow for it could never be answered, and each
        // reply would fail in the kernel.
        if client.port() == 0 {
            return self.drop_client(client, DropReason::BadSource);
        }
        // First, and cheap: a hash lookup per prefix length in the lists.
        let refused = {
            let (flows, access) = (&self.flows, &self.access);
            access.check(client.ip(), now, || is_peer(flows, &client))
        };
        if let Err(r) = refused {
            let reason = match r {
                Refusal::Denied => DropReason::Denied,
                Refusal::Banned => DropReason::Banned,
            };
            return self.drop_client(client, reason);
        }
        let found = self.flows.lookup_client(&client);
        if !self.allow_datagram(found, client, now) {
            return self.drop_client(client, DropReason::SourceRateLimited);
        }
        self.last_call_id = (0, 0);
        let msg = match Prepared::scan_of(prepared, data) {
            Scan::Sip(v) => {
                self.last_call_id = range_in(data, v.call_id);
                v
            }
            Scan::Keepalive => return self.client_keepalive(now, client),
            Scan::Invalid(e) => return self.drop_client(client, e.into()),
        };
        let (id, new_flow) = match found {
            Some(id) => (id, false),
            // A scanner is refused before it gets a flow; datagrams of established
            // flows (peers among them) are not searched for User-Agents again.
            None if msg.user_agent.is_some_and(|ua| self.access.is_scanner(ua)) => {
                return self.drop_client(client, DropReason::Scanner);
            }
            None => match self.new_flow(now, client, ingress) {
                Ok(id) => (id, true),
                Err(DropReason::NoBackend) => return self.no_backend(now, &msg),
                Err(r) => return self.drop_client(client, r),
            },
        };
        let Some(home) = self.current_home(id, msg.is_method(b"REGISTER")) else {
            return self.no_backend(now, &msg);
        };
        let key = self.dialog_key(prepared, msg.call_id);
        let backend = match self.dialogs.get_mut(key) {
            // Another flow's entry (the other leg of a call between two of our clients,
            // or someone who learned the Call-ID): it routes by it, but neither ends,
            // refreshes nor moves it, so nobody can release or keep another's call
            // (and the flow it holds) by sending its Call-ID.
            Some(d) if !self.flows.is_at(id, d.flow, d.flow_gen) => {
                if self.backends.serves(d.backend) {
                    d.backend
                } else {
                    home
                }
            }
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
                    let Some((relay_port, flow_gen, pins, peer)) = self
                        .flows
                        .get(id)
                        .map(|f| (f.relay_port, f.generation, f.pins, f.peer))
                    else {
                        return self.drop_client(client, DropReason::NoFlow);
                    };
                    // Static peers are exempt, and their calls count against no one
                    // (not in the sums of their address or /48 either).
                    let counted = peer.is_none();
                    let quota = counted.then(|| self.pin_quota(id, pins, client)).flatten();
                    if let Some(r) = quota {
                        return self.refuse_opening(id, new_flow, now, client, r);
                    }
                    let d = Dialog {
                        backend: home,
                        expires: now + self.settings.transaction,
                        span: Span::Transaction,
                        opener: Side::Client,
                        flow: relay_port,
                        flow_gen,
                        marks: Marks::OPENS.with(Marks::AWAITING, counted),
                    };
                    if self.dialogs.pin(key, d).is_err() {
                        let r = DropReason::DialogTableFull;
                        return self.refuse_opening(id, new_flow, now, client, r);
                    }
                    if counted {
                        self.flows.add_pin(id);
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
            return self.drop_client(client, DropReason::NoFlow);
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

    /// Takes a datagram from the bucket of `client`'s source (`found`: its flow):
    /// false if the source is over its datagram rate. The bucket is in the flow that
    /// holds it if the source has one flow (the common phone: no line of the
    /// limiter's table is read), else in the limiter's table. Peers are exempt.
    #[inline]
    fn allow_datagram(&mut self, found: Option<FlowId>, client: SocketAddr, now: Instant) -> bool {
        let ip = client.ip();
        let flow = found.and_then(|id| self.flows.get(id).map(|f| (id, f.peer, f.bucket)));
        if flow.is_some_and(|(_, peer, _)| peer.is_some()) {
            return true;
        }
        let class = self.sources.class_of(ip);
        let t = self.ns(now);
        let holder = match flow {
            Some((id, _, bucket)) if bucket < RECLAIM => Some(id),
            Some((id, _, RECLAIM)) => self.reclaim(id, ip, class, now, t),
            Some(_) => None,
            // A datagram of no flow yet: its source's other flow may hold the bucket.
            None => self.flows.holder(ip),
        };
        if let Some(f) = holder.and_then(|id| self.flows.get_mut(id)) {
            return self.sources.held(class).take(&mut f.bucket, t);
        }
        self.datagram_limiter.allow_in(ip, now, || class) || self.is_peer(&client)
    }

    /// Flow `id`'s source's other flows are gone: it takes the bucket from the
    /// limiter's table, with what the table has left, if it is still the only one.
    fn reclaim(
        &mut self,
        id: FlowId,
        ip: std::net::IpAddr,
        class: super::source_limits::Class,
        now: Instant,
        t: u64,
    ) -> Option<FlowId> {
        if self.flows.from_source(ip) != 1 {
            self.flows.set_bucket(id, NOT_HELD);
            return None;
        }
        self.hold_from_table(id, ip, class, now, t);
        Some(id)
    }

    /// Flow `id` holds its source's bucket from now on, with what the limiter's
    /// table has left of it (full if the table has none).
    fn hold_from_table(
        &mut self,
        id: FlowId,
        ip: std::net::IpAddr,
        class: super::source_limits::Class,
        now: Instant,
        t: u64,
    ) {
        let left = self.datagram_limiter.tokens(ip, now);
        let held = self.sources.held(class);
        self.flows
            .set_bucket(id, left.map_or(0, |k| held.spent_to(k, t)));
    }

    /// The buckets of removed flows that held their source's go back into the
    /// limiter's table with what they had left (else the source's next flow would
    /// start over with a full one). After every call that may remove flows.
    fn put_back_buckets(&mut self, now: Instant) {
        let t = self.ns(now);
        let (flows, limiter, sources) =
            (&mut self.flows, &mut self.datagram_limiter, &self.sources);
        flows.drain_released(|ip, bucket| {
            let class = sources.class_of(ip);
            limiter.take_over(ip, now, class, sources.held(class).tokens(bucket, t));
        });
    }

    /// `now` in nanoseconds since the epoch.
    #[inline]
    fn ns(&mut self, now: Instant) -> u64 {
        let e = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(e).as_nanos() as u64
    }

    /// Flow `id` was just placed. The first flow of a source holds the source's
    /// datagram bucket (as much as the limiter's table had left of it); when a second
    /// comes, the bucket goes back into the table.
    fn flow_placed(&mut self, id: FlowId, now: Instant) {
        let Some(ip) = self
            .flows
            .get(id)
            .filter(|f| f.peer.is_none())
            .map(|f| f.client.ip())
        else {
            return;
        };
        match self.flows.from_source(ip) {
            1 => {
                let (class, t) = (self.sources.class_of(ip), self.ns(now));
                self.hold_from_table(id, ip, class, now, t);
            }
            2 => {
                if let Some(h) = self.flows.holder(ip).filter(|&h| h != id) {
                    self.flows.release_bucket(h);
                    self.put_back_buckets(now);
                }
            }
            _ => {}
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
            let item = flow_item(flow, now, &self.backends);
            self.flows.set_mirrored(id, false);
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
        let class = self.sources.class_of(client.ip());
        let max = self.sources.get(class).max_flows_per_ip;
        if self.flows.from_source(client.ip()) as usize >= max
            || self.flows.from_ipv6_48(client.ip()) as usize >= self.sources.max_flows_per_48(class)
        {
            return Err(DropReason::SourceFlowLimit);
        }
        if !self.limiter.allow_in(client.ip(), now, || class) {
            return Err(DropReason::RateLimited);
        }
        let id = self
            .flows
            .insert(client, ingress, home, now)
            .map_err(|e| match e {
                InsertError::Full => DropReason::FlowTableFull,
                InsertError::NoPort => DropReason::NoRelayPort,
            })?;
        self.flow_placed(id, now);
        self.counters.flows_created += 1;
        if let Some(f) = self.flows.get(id) {
            let item = flow_item(f, now, &self.backends);
            self.emit(item);
        }
        Ok(id)
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
        self.from_backend_with(now, relay_port, src, data, None)
    }

    /// [`Router::from_backend`], for a datagram [`Router::prepare_backend`] scanned
    /// (if `prepared`).
    pub fn from_backend_with(
        &mut self,
        now: Instant,
        relay_port: RelayPort,
        src: SocketAddr,
        data: &[u8],
        prepared: Option<Prepared<'_>>,
    ) -> BackendAction {
        let Some(backend) = self.backends.by_addr(&src) else {
            // A stranger at a relay endpoint (a scanner): `ctl top` names it.
            self.top_drops.add(source_key(src.ip()));
            return self.drop_from_backend(DropReason::UnknownSource);
        };
        let Some(id) = self.flows.lookup_port(relay_port) else {
            return self.drop_from_backend(DropReason::NoFlow);
        };
        self.last_call_id = (0, 0);
        // Whether this shows the client is someone a backend deals with, not only an
        // address that sent something: then the flow lives `flow_idle`, else
        // `unanswered_idle`. A backend's request or NAT ping does, and a 101-299 to
        // anything but OPTIONS; a challenge, a refusal or a 200 to OPTIONS do not (a
        // forged source gets those too: it would hold an endpoint for two minutes).
        let answered = match Prepared::scan_of(prepared, data) {
            // Backends' NAT pings (nathelper) must reach the phone.
            Scan::Keepalive => {
                self.counters.keepalives[Direction::ToClient] += 1;
                true
            }
            Scan::Invalid(e) => return self.drop_from_backend(e.into()),
            Scan::Sip(msg) => {
                let answered = msg.is_request()
                    || (msg.status().is_some_and(|c| (101..300).contains(&c))
                        && !msg.cseq_is(b"OPTIONS"));
                self.last_call_id = range_in(data, msg.call_id);
                let key = self.dialog_key(prepared, msg.call_id);
                if let Err(r) = self.learn_from_backend(now, id, backend, &msg, key) {
                    return self.drop_from_backend(r);
                }
                answered
            }
        };
        if answered && let Some(f) = self.flows.get_mut(id) {
            f.answered = true;
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
        key: DialogKey,
    ) -> Result<(), DropReason> {
        if let Some(d) = self.dialogs.get_mut(key) {
            let own = self.flows.is_at(id, d.flow, d.flow_gen);
            // An answer on another flow's endpoint answers that flow's request, which
            // did not touch this entry (`from_client`): a stranger's BYE's 481 must not
            // end the call, nor its INFO's 200 keep it, nor a 180 promote it. A 2xx to
            // a BYE still ends it: the far end took that BYE as the call's (a phone
            // whose NAT gave it a new port mid-call hangs up from a new flow; a
            // stranger who could do that could end the call anyway). A backend's
            // requests act by Call-ID: the other leg of a call between two of our
            // clients has the same one.
            let bye_done =
                msg.cseq_is(b"BYE") && msg.status().is_some_and(|c| (200..300).contains(&c));
            if own || msg.is_request() || bye_done {
                let before = *d;
                if msg.is_request() {
                    // A backend's request owns the transaction: its answers go back
                    // there.
                    d.backend = backend;
                }
                refresh(d, msg, now, &self.settings, Side::Backend);
                if d.marks.has(Marks::AWAITING) && d.span == Span::Dialog {
                    // A backend took the client's call (1xx/2xx): no longer a
                    // stranger's pin (of the flow that opened it). A rejected one
                    // (407, 403...) counts until it expires.
                    d.marks.set(Marks::AWAITING, false);
                    if let Some(opener) = self.flows.lookup_generation(d.flow, d.flow_gen) {
                        self.flows.drop_pin(opener);
                    }
                }
                let after = *d;
                self.dialog_changed(key, Some(&before), &after, true);
            }
        } else if msg.method().is_some_and(|m| m != b"ACK") {
            // (An ACK is never answered: nothing to send back.)
            let Some((relay_port, flow_gen)) =
                self.flows.get(id).map(|f| (f.relay_port, f.generation))
            else {
                return Err(DropReason::NoFlow);
            };
            // A backend's request: its answers go back to it. A dialog-opening one
            // becomes a dialog when the client answers it.
            let opening = msg.method().is_some_and(opens_dialog);
            let d = Dialog {
                backend,
                expires: now + self.settings.transaction,
                span: Span::Transaction,
                opener: Side::Backend,
                flow: relay_port,
                flow_gen,
                marks: Marks::NONE.with(Marks::OPENS, opening),
            };
            if self.dialogs.pin(key, d).is_ok() {
                // Lone transactions (NAT pings, MESSAGE) are too short-lived to sync.
                self.dialog_changed(key, None, &d, opening);
            } else {
                // Full, or the entry's shard is until it grows (clients' unanswered
                // INVITEs can fill the table up to their quotas):
                // the phone still gets the call or the NAT ping; its answer goes to
                // the flow's home, the right backend whenever that sent it.
                self.counters.unpinned += 1;
            }
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

    /// Undo a new flow. `unused` (the datagram it was made for was refused): its
    /// endpoint carried nothing and is free at once; else (its socket could not be
    /// bound) it goes to the back of the free list.
    fn undo_new_flow(&mut self, id: FlowId, now: Instant, unused: bool) {
        if self.forget_flow(id, now, unused) {
            self.counters.flows_created = self.counters.flows_created.saturating_sub(1);
        }
    }

    /// Removes flow `id` (its endpoint free at once if `unused`), tells the sync peer
    /// and gives its datagram bucket back to the limiter before the client's next
    /// datagram makes a new flow. Whether there was one.
    fn forget_flow(&mut self, id: FlowId, now: Instant, unused: bool) -> bool {
        let removed = if unused {
            self.flows.remove_unused(id)
        } else {
            self.flows.remove(id)
        };
        if let Some(f) = &removed {
            self.emit(Item::FlowGone {
                relay_port: f.relay_port,
            });
        }
        self.put_back_buckets(now);
        removed.is_some()
    }

    /// The socket of an existing flow's endpoint cannot be opened (a mirrored flow
    /// whose pre-bind failed: another process holds the port). Rather than keep a
    /// flow nothing can be sent from, which every datagram of its client refreshes,
    /// it goes (counted `bind_failed`), and the client's next datagram makes a flow
    /// on another endpoint. A static peer's endpoint is its own: it stays.
    pub fn relay_lost(&mut self, id: FlowId, now: Instant) {
        self.counters.drop(DropReason::BindFailed);
        if self.flows.get(id).is_none_or(|f| f.peer.is_some()) {
            return;
        }
        if self.forget_flow(id, now, false) {
            self.counters.flows_expired += 1;
        }
    }

    /// Count a datagram the shell could not send (full socket buffer, error).
    pub fn send_failed(&mut self) {
        self.counters.drop(DropReason::SendFailed);
    }

    /// Count a relay socket that could not be opened for a new flow.
    pub fn bind_failed(&mut self, id: FlowId, now: Instant) {
        self.undo_new_flow(id, now, false);
        self.counters.drop(DropReason::BindFailed);
    }

    /// A dialog-opening request refused: a flow made for this datagram alone goes
    /// with it.
    fn refuse_opening(
        &mut self,
        id: FlowId,
        new_flow: bool,
        now: Instant,
        client: SocketAddr,
        r: DropReason,
    ) -> ClientAction {
        if new_flow {
            self.undo_new_flow(id, now, true);
        }
        self.drop_client(client, r)
    }

    fn drop_client(&mut self, client: SocketAddr, r: DropReason) -> ClientAction {
        self.counters.drop(r);
        self.top_drops.add(source_key(client.ip()));
        ClientAction::Drop(r)
    }

    fn no_backend(&mut self, now: Instant, msg: &SipView<'_>) -> ClientAction {
        self.counters.drop(DropReason::NoBackend);
        if !self.settings.reply_503 || !msg.is_request() || msg.is_method(b"ACK") {
            return ClientAction::Drop(DropReason::NoBackend);
        }
        // Only a peek: the token is taken when the 503 is written ([`Router::write_503`]),
        // so requests whose 503 would be too large to send do not use up the budget.
        if !self.reply_budget.available(now) {
            self.counters.suppress(Suppressed::Rate);
            return ClientAction::Drop(DropReason::NoBackend);
        }
        ClientAction::Reject503
    }

    /// Whether flow `id` (with `pins` unanswered entries, from `client`) is at one of
    /// its pin quotas: its own, its source's, its IPv6 /48's.
    fn pin_quota(&self, id: FlowId, pins: u32, client: SocketAddr) -> Option<DropReason> {
        if pins >= self.max_pins_per_flow {
            return Some(DropReason::PinQuota);
        }
        let class = self.sources.class_of(client.ip());
        let full = self.flows.pins_of_source(id) >= self.sources.get(class).max_pins_per_ip
            || self.flows.pins_of_ipv6_48(client.ip()) >= self.sources.max_pins_per_48(class);
        full.then_some(DropReason::SourcePinQuota)
    }

    fn drop_from_backend(&mut self, r: DropReason) -> BackendAction {
        self.counters.drop(r);
        BackendAction::Drop(r)
    }
}

#[cfg(test)]
mod tests;
