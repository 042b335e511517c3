//! The router's side of state sync: queueing local changes for the peer, applying
//! the peer's, and the full table for a (re)joining peer.

use std::time::{Duration, Instant};

use super::expiry::{RESEND_SLACK, resend_every};
use super::{Router, hold};
use crate::relay::Item;
use crate::relay::Span;
use crate::relay::backends::BackendSet;
use crate::relay::dialogs::{Dialog, DialogKey, Marks, SHARDS};
use crate::relay::flows::{Flow, FlowId, InsertError};
use crate::relay::port::RelayPort;

/// The sync item describing a flow now.
pub(super) fn flow_item(f: &Flow, now: Instant, backends: &BackendSet) -> Item {
    Item::Flow {
        client: f.client,
        relay_port: f.relay_port,
        ingress: f.ingress,
        home: backends.seed_of(f.home),
        registered_secs: f.registered_until.map(|t| {
            t.saturating_duration_since(now)
                .as_secs()
                .min(u64::from(u32::MAX)) as u32
        }),
    }
}

/// The sync item describing dialog entry `key` now.
pub(super) fn dialog_item(key: DialogKey, d: &Dialog, backends: &BackendSet) -> Item {
    Item::Dialog {
        key,
        backend: backends.seed_of(d.backend),
        span: d.span,
        opener: d.opener,
        flow: d.flow,
    }
}

/// Queues `item` for the peer if there is one; a full queue only records the overflow
/// (the peer then gets a full table).
#[inline]
pub(super) fn queue(out: &mut Option<Vec<Item>>, overflow: &mut bool, item: Item) {
    if let Some(q) = out {
        if q.len() < q.capacity() {
            q.push(item);
        } else {
            *overflow = true;
        }
    }
}

/// Whether our own flow `ours` keeps what a peer's flow (registered if
/// `registered_secs`) also claims: a registered one over one that is not, else `tie`.
/// Whether a backend granted a registration, not whether it still runs: that changes
/// only with a REGISTER's answer, which sends an item, while an expiry sends none and
/// would let two hosts' clocks decide differently.
fn own_wins(ours: &Flow, registered_secs: Option<u32>, tie: bool) -> bool {
    let ours_registered = ours.registered_until.is_some();
    if ours_registered != registered_secs.is_some() {
        return ours_registered;
    }
    tie
}

/// Where a full table being built stands ([`Router::sync_full_step`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FullCursor {
    slot: usize,
    flows_done: bool,
    shard: usize,
}

/// Why a peer's item was not applied (`sipfront_sync_items_rejected_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncReject {
    /// It names a backend by a seed we do not have (backend lists differ).
    UnknownBackend,
    /// A flow for a static peer's address: ours from the config.
    StaticPeer,
    /// Its relay endpoint is not in our pool (relay config differs).
    OutsidePool,
    FlowTableFull,
    DialogTableFull,
    /// A dialog entry from a peer that hashes Call-IDs with other keys: no Call-ID of
    /// ours could ever find it (counted by the link, which skips them).
    DialogKeyMismatch,
}

impl SyncReject {
    pub const ALL: [SyncReject; 6] = [
        SyncReject::UnknownBackend,
        SyncReject::StaticPeer,
        SyncReject::OutsidePool,
        SyncReject::FlowTableFull,
        SyncReject::DialogTableFull,
        SyncReject::DialogKeyMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncReject::UnknownBackend => "unknown_backend",
            SyncReject::StaticPeer => "static_peer",
            SyncReject::OutsidePool => "outside_pool",
            SyncReject::FlowTableFull => "flow_table_full",
            SyncReject::DialogTableFull => "dialog_table_full",
            SyncReject::DialogKeyMismatch => "dialog_key_mismatch",
        }
    }
}

/// What the shell must do with sockets after applying a peer's item.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncEffect {
    /// Pre-bind this relay port (IP_FREEBIND): the peer's flow lives there.
    pub bind: Option<RelayPort>,
    /// Close these relay ports.
    pub close: Vec<RelayPort>,
}

impl Router {
    #[inline]
    pub(super) fn emit(&mut self, item: Item) {
        // Static peers' flows come from the config on both hosts.
        if let Item::Flow { relay_port, .. } | Item::FlowGone { relay_port } = item
            && self.flows.is_static(relay_port)
        {
            return;
        }
        queue(&mut self.sync_out, &mut self.sync_overflow, item);
    }

    /// Moves queued changes into `out` (which keeps its own storage). Returns true if
    /// the queue overflowed since the last call: the peer needs a full table.
    pub fn take_sync(&mut self, out: &mut Vec<Item>) -> bool {
        if let Some(q) = &self.sync_out {
            out.extend_from_slice(q);
        }
        self.discard_sync()
    }

    /// Drops the queued changes (a full table about to be built covers them).
    /// Returns whether the queue had overflowed.
    pub fn discard_sync(&mut self) -> bool {
        if let Some(q) = &mut self.sync_out {
            q.clear();
        }
        std::mem::take(&mut self.sync_overflow)
    }

    /// Every flow we serve and every dialog, in one walk (tests: the dataplane builds
    /// the table in steps, [`Router::sync_full_step`]).
    #[cfg(test)]
    pub fn sync_full(&self, now: Instant, out: &mut Vec<Item>) {
        let mut at = FullCursor::default();
        while !self.sync_full_step(now, &mut at, out, usize::MAX) {}
    }

    /// A part of [`Router::sync_full`]: about `budget` flow slots, or dialog shards
    /// holding about that many entries, from `at` on. Returns true when the whole
    /// table is in `out`. Between steps the tables change: each change is also queued
    /// ([`Router::take_sync`]); sent after the table, the last one for each flow or
    /// call is its latest state, whether the walk saw it before or after.
    pub fn sync_full_step(
        &self,
        now: Instant,
        at: &mut FullCursor,
        out: &mut Vec<Item>,
        budget: usize,
    ) -> bool {
        if !at.flows_done {
            let slots = self.flows.slot_count();
            let end = at.slot.saturating_add(budget).min(slots);
            out.extend(
                self.flows
                    .iter_slots(at.slot..end)
                    .filter(|f| f.is_own())
                    .map(|f| flow_item(f, now, &self.backends)),
            );
            at.slot = end;
            // Done at the end, also if slots are added later: their flows' items are
            // queued as changes (a walk that followed them might never end).
            at.flows_done = end == slots;
            return false;
        }
        let mut taken = 0;
        while at.shard < SHARDS && taken < budget {
            let before = out.len();
            out.extend(
                self.dialogs
                    .iter_shard(at.shard)
                    .map(|(&key, d)| dialog_item(key, d, &self.backends)),
            );
            taken += out.len() - before + 1;
            at.shard += 1;
        }
        at.shard == SHARDS
    }

    /// Whether the peer is heard. When it falls silent its flows become ours (idle
    /// from now), so they expire normally unless traffic keeps them.
    pub fn set_peer_alive(&mut self, now: Instant, alive: bool) -> usize {
        let was = std::mem::replace(&mut self.peer_alive, alive);
        if was && !alive {
            self.flows.adopt_mirrored(now)
        } else {
            0
        }
    }

    /// The peer restarted and lost its table: the flows mirrored for it are ours now
    /// (idle from now), and our full table gives them back to it.
    pub fn adopt_peer_flows(&mut self, now: Instant) -> usize {
        self.flows.adopt_mirrored(now)
    }

    /// A full table from the peer begins: flows it confirms get a new generation.
    pub fn begin_full(&mut self) {
        self.sync_gen = self.sync_gen.wrapping_add(1);
    }

    /// The full table is complete: mirrored flows it did not contain are gone on the
    /// peer (their removal was lost). Returns their relay ports, to close.
    pub fn end_full(&mut self, now: Instant) -> Vec<RelayPort> {
        let stale = self.flows.stale_mirrored(self.sync_gen);
        let gone = stale
            .into_iter()
            .filter_map(|id| self.flows.remove(id).map(|f| f.relay_port))
            .collect();
        self.put_back_buckets(now);
        gone
    }

    /// Whether a peer's flow for `client` loses its endpoint to our own flow there
    /// (`held`, the flow on that endpoint) for another client. Both hosts handed it out (a split brain, or
    /// a spill into the other's half of the pool); each decides the same from the
    /// two flows, so they agree once each has the other's item: a flow a backend
    /// granted a registration keeps it over one without (the backend reaches that
    /// phone through it), else the lower client address. The loser goes; its phone
    /// gets a new endpoint with its next datagram.
    fn keeps_own_endpoint(
        &mut self,
        held: Option<FlowId>,
        client: std::net::SocketAddr,
        registered_secs: Option<u32>,
    ) -> bool {
        let Some(ours) = held
            .and_then(|id| self.flows.get(id))
            .filter(|f| f.is_own() && f.client != client)
        else {
            return false;
        };
        self.sync_conflicts += 1;
        own_wins(ours, registered_secs, ours.client < client)
    }

    /// Whether a peer's flow for `client` on `relay_port` loses to our own flow for that
    /// client on another endpoint: both hosts served the phone (a split brain, or the
    /// moments of a takeover when both hold the VIP). Each decides the same from the two
    /// flows, so both keep one of them: a registered one over one that is not (the
    /// backend reaches the phone through it), else the lower endpoint. Counted in the
    /// client conflicts.
    fn keeps_own_client(
        &mut self,
        client: std::net::SocketAddr,
        relay_port: RelayPort,
        registered_secs: Option<u32>,
    ) -> bool {
        let Some(ours) = self
            .flows
            .lookup_client(&client)
            .and_then(|id| self.flows.get(id))
            .filter(|f| f.is_own() && f.relay_port != relay_port)
        else {
            return false;
        };
        self.sync_client_conflicts += 1;
        own_wins(ours, registered_secs, ours.relay_port < relay_port)
    }

    /// Applies one change from the peer.
    pub fn apply_sync(&mut self, now: Instant, item: Item) -> SyncEffect {
        let mut effect = SyncEffect::default();
        if let Item::Flow { relay_port, .. } | Item::FlowGone { relay_port } = item
            && self.flows.is_static(relay_port)
        {
            // A static peer: ours from the config, whatever the peer says.
            return effect;
        }
        match item {
            Item::Flow {
                client,
                relay_port,
                ingress,
                home,
                registered_secs,
            } => {
                let Some(home) = self.backends.by_seed(home) else {
                    self.reject_sync(SyncReject::UnknownBackend);
                    return effect;
                };
                // A static peer's address (its own or an alias): the peer's host does not
                // have it in its config (a rolling change), and replacing our flow would
                // leave its other addresses naming whatever takes the slot next.
                if self
                    .flows
                    .lookup_client(&client)
                    .and_then(|id| self.flows.get(id))
                    .is_some_and(|f| f.peer.is_some())
                {
                    self.reject_sync(SyncReject::StaticPeer);
                    return effect;
                }
                let held = self.flows.lookup_port(relay_port);
                if self.keeps_own_endpoint(held, client, registered_secs)
                    || self.keeps_own_client(client, relay_port, registered_secs)
                {
                    // The peer keeps its loser until it hears of our winner, which it
                    // may have had before it placed that loser: say it again (it decides
                    // the same, so this does not go back and forth).
                    let own = self.flows.lookup_client(&client);
                    for id in [held, own].into_iter().flatten() {
                        if let Some(f) = self.flows.get(id).filter(|f| f.is_own()) {
                            let item = flow_item(f, now, &self.backends);
                            self.emit(item);
                        }
                    }
                    return effect;
                }
                // Capped as a backend's grant is: a peer's value holds no flow longer
                // than a REGISTER through us could.
                let cap = self.settings.max_registration + self.settings.register_grace;
                let registered_until =
                    registered_secs.map(|s| now + Duration::from_secs(u64::from(s)).min(cap));
                // An update of a flow we already mirror on the same port: no socket work.
                if let Some(id) = held
                    && let Some(f) = self.flows.get_mut(id)
                    && f.client == client
                {
                    f.home = home;
                    f.ingress = ingress;
                    f.registered_until = registered_until;
                    f.sync_gen = self.sync_gen;
                    self.flows.set_mirrored(id, true);
                    return effect;
                }
                let flow = Flow {
                    registered_until,
                    mirrored: true,
                    sync_gen: self.sync_gen,
                    // The peer served it: a backend answered it there.
                    answered: true,
                    ..Flow::new(client, relay_port, ingress, home, now)
                };
                match self.flows.insert_at(flow) {
                    Ok((id, replaced)) => {
                        // A replaced flow's bucket goes back first: the new flow of
                        // its source takes over what it had left.
                        self.put_back_buckets(now);
                        self.flow_placed(id, now);
                        effect.close = replaced.into_iter().filter(|&p| p != relay_port).collect();
                        effect.bind = Some(relay_port);
                    }
                    Err(InsertError::NoPort) => self.reject_sync(SyncReject::OutsidePool),
                    Err(InsertError::Full) => self.reject_sync(SyncReject::FlowTableFull),
                }
            }
            Item::FlowGone { relay_port } => {
                if let Some(id) = self.flows.lookup_port(relay_port)
                    && self.flows.get(id).is_some_and(|f| f.mirrored)
                    && self.flows.remove(id).is_some()
                {
                    effect.close.push(relay_port);
                }
            }
            Item::Dialog {
                key,
                backend,
                span,
                opener,
                flow,
            } => {
                let Some(backend) = self.backends.by_seed(backend) else {
                    self.reject_sync(SyncReject::UnknownBackend);
                    return effect;
                };
                let ttl = if span == Span::Dialog {
                    // The peer re-sends a call its traffic refreshed only at its
                    // shard's next turn, up to `resend_every` (and a late sweep)
                    // after the traffic: the copy outlives that.
                    self.settings.dialog_idle + resend_every(&self.settings) + RESEND_SLACK
                } else {
                    self.settings.transaction
                };
                let d = Dialog {
                    backend,
                    expires: now + ttl,
                    span,
                    opener,
                    flow,
                    // Ours on that endpoint: generations are local.
                    flow_gen: self.flows.generation_at(flow),
                    // Only dialogs and entries of dialog-opening requests are synced.
                    marks: Marks::OPENS,
                };
                match self.dialogs.pin(key, d) {
                    // The mirrored flow is held by the peer's dialogs too, so it
                    // survives a takeover for as long as its calls do.
                    Ok(mut before) => {
                        let (mut flow, mut flow_gen) = (flow, d.flow_gen);
                        if let Some(e) = self.dialogs.get_mut(key) {
                            // Pinned before its flow was placed (a full table built in
                            // steps sends a call set up meanwhile before that flow's
                            // item): it belongs to the flow there now, which it never
                            // held.
                            if e.flow == flow
                                && self.flows.lookup_generation(flow, e.flow_gen).is_none()
                            {
                                e.flow_gen = flow_gen;
                                before = None;
                            }
                            (flow, flow_gen) = (e.flow, e.flow_gen);
                        }
                        hold(&mut self.flows, flow, flow_gen, before, Some(span));
                    }
                    Err(()) => self.reject_sync(SyncReject::DialogTableFull),
                }
            }
        }
        self.put_back_buckets(now);
        effect
    }
}

impl Router {
    fn reject_sync(&mut self, why: SyncReject) {
        self.sync_rejected[why as usize] += 1;
    }
}
