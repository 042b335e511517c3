//! The peer link as a sans-IO state machine: sequence numbers, epoch admission,
//! heartbeats, full-table requests, chunking and pacing. No socket and no clock:
//! the shell (the dataplane's sync task) feeds datagrams, table changes and the time
//! in, and drains datagrams to send and events out.
//!
//! ```text
//! socket  -> handle_datagram(now, from, bytes)      poll_transmit(now, buf) -> socket
//! router  -> queue(items) / queue_full(items)       poll_event()            -> router
//! timer   -> handle_timeout(now)                    poll_timeout()          -> timer
//! ```
//!
//! Sending: everything for the peer leaves through one paced queue (a full table
//! first, then the changes queued after it was taken), sealed as it leaves so
//! sequence numbers stay in order. Receiving: a sequence gap means lost changes, so
//! we ask for a full table; a full table counts only if all its chunks arrived in
//! order, otherwise we keep asking. Epochs: see [`epoch`]. Key rotation: see [`keys`].

mod epoch;
mod keys;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{Body, Envelope, Ext, Item, Key, SyncDrop, VERSION, seal};
use epoch::{Epochs, Handshake, REORDER_WINDOW, Verdict};
use keys::{KeyNews, Keys};

pub use keys::LINGER as KEY_LINGER;

/// Items per datagram: postcard encodes an item in at most ~45 bytes, so this
/// stays under [`MAX_DATAGRAM`](super::message::MAX_DATAGRAM).
pub const ITEMS_PER_DATAGRAM: usize = 24;
/// The peer counts as gone after this long without a message.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);
pub const HELLO_EVERY: Duration = Duration::from_secs(1);
/// A handshake answer goes out at once, but no more often than this (replayed
/// hellos must not turn into a flood of ours).
pub const PROMPT_GAP: Duration = Duration::from_millis(50);
/// Pacing: at most [`SEND_PER_INTERVAL`] datagrams per interval (about 24 flows
/// each: 460k flows/s), so a full table of 1M flows takes ~2.2 s and a 20 ms burst
/// (~270 KB) fits the peer's socket buffer many times over.
pub const PACING_INTERVAL: Duration = Duration::from_millis(20);
pub const SEND_PER_INTERVAL: usize = 384;
/// Changes waiting to be sent, unless the shell sets another bound
/// ([`Link::set_max_pending`]). More than this and the peer gets a new full table
/// instead (after the one being paced out, if one is).
pub const MAX_PENDING: usize = 1 << 16;

/// A datagram of the peer's that arrived ahead of a missing one waits this long for
/// it (a path that reorders does so by far less); then the missing one counts as
/// lost, and the peer sends its whole table.
pub const REORDER_WAIT: Duration = Duration::from_millis(20);

/// A hello from an epoch not admitted is a recording when its sender's clock put it
/// further than this from ours (the hosts' clocks: NTP keeps them far closer).
pub const FRESH_WITHIN: Duration = Duration::from_secs(60);

/// Stale candidate hellos are refused only while a fresh one came this recently: with
/// clocks further apart than [`FRESH_WITHIN`] every hello of a restarted peer looks
/// stale, and the handshake must still go through (as it did before clocks were
/// compared).
pub const STALE_FALLBACK: Duration = Duration::from_secs(10);

/// What the shell must do. Drain after every input; one datagram adds at most
/// four, so the queue stays small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The peer is heard (again).
    PeerUp,
    /// Nothing heard for [`PEER_TIMEOUT`]: its flows are ours now.
    PeerDown,
    /// A new peer epoch was admitted: it lost its table, so the flows we mirror for
    /// it are ours to serve (and go back to it in our full table).
    PeerRestarted,
    /// The first chunk of a full table from the peer: start marking what it confirms.
    FullStarted,
    /// Changes from the peer, to apply in order; `full`: a chunk of a full table
    /// (which may repeat what came before it).
    Items { items: Vec<Item>, full: bool },
    /// A full table arrived whole: mirrored flows it did not confirm are gone.
    FullTableApplied,
    /// The peer needs our full table: take it (and drop the router's queued changes,
    /// which it includes) and pass it to [`Link::queue_full`].
    SendFullTable,
    /// The peer's hello announced another backend set (reported once per onset).
    BackendMismatch,
    /// The peer hashes Call-IDs with other keys than ours (one host started with a
    /// sync key the other did not): dialog entries do not match across the pair
    /// (reported once per onset).
    DialogKeyMismatch,
    /// After [`Link::set_key`]: the peer has the new key, we seal with it now.
    KeyInUse,
    /// After [`Link::set_key`]: the previous key is refused from now on.
    /// `peer_switched`: the peer sealed with the new key before; false: the grace ran
    /// out first (an unrotated peer is refused now).
    PreviousKeyRetired { peer_switched: bool },
}

/// Bytes to send, in the buffer given to [`Link::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub len: usize,
}

/// Counters and gauges, published by the shell.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub sent: u64,
    pub received: u64,
    /// Indexed by `SyncDrop as usize` (see [`SyncDrop::ALL`]).
    pub dropped: [u64; SyncDrop::ALL.len()],
    /// Messages sent that the peer has not acknowledged yet.
    pub lag: u64,
    pub peer_flows: u32,
    pub peer_dialogs: u32,
    pub peer_up: bool,
    pub full_tables_sent: u64,
    pub full_tables_received: u64,
    /// Changes that found the pending queue full (each time: a full table instead).
    pub pending_overflows: u64,
    /// Dialog items of a peer that hashes Call-IDs with other keys, not applied.
    pub dialog_items_skipped: u64,
}

impl Stats {
    pub fn dropped(&self, reason: SyncDrop) -> u64 {
        self.dropped[reason as usize]
    }
}

/// A full table under receipt.
#[derive(Debug, Clone, Copy)]
struct FullRx {
    next_chunk: u32,
    intact: bool,
}

/// A full table being sent.
#[derive(Debug)]
struct FullTx {
    items: Vec<Item>,
    next: usize,
    chunk: u32,
}

#[derive(Debug)]
pub struct Link {
    keys: Keys,
    peer: SocketAddr,
    /// Our wall clock: (an instant, ms since the Unix epoch then), set by the shell.
    wall: Option<(Instant, u64)>,
    /// When a hello dated near our clock was last taken (see [`STALE_FALLBACK`]).
    fresh_hello: Option<Instant>,
    /// The admitted peer dates its hellos: an undated candidate hello is a recording
    /// of an older version's run.
    peer_dates_hellos: bool,
    epoch: u64,
    seq: u64,
    epochs: Epochs,
    backends_hash: u64,
    /// Ours, announced in every message ([`Ext::dialog_keys`]; 0: none).
    dialog_keys: u64,
    dialog_mismatch: bool,
    flows: u32,
    dialogs: u32,
    // Receiving.
    want_full: bool,
    synced: bool,
    full_rx: Option<FullRx>,
    last_heard: Option<Instant>,
    mismatch: bool,
    // The peer's view of us, from its hellos.
    peer_acked: u64,
    // Sending.
    pending: VecDeque<Item>,
    max_pending: usize,
    full_tx: Option<FullTx>,
    /// Sequence number of the last chunk of our latest full table: a request from a
    /// peer that has not got that far yet is the same request again.
    full_end: Option<u64>,
    /// [`LinkEvent::SendFullTable`] is out, [`Link::queue_full`] not called yet.
    full_asked: bool,
    /// Changes were dropped while a full table was paced out: a new full table
    /// follows it (instead of starting over at once, which under steady churn never
    /// lets a large table finish).
    full_after: bool,
    next_hello: Instant,
    last_hello: Option<Instant>,
    window_start: Instant,
    window_sent: usize,
    /// Datagrams of the admitted run that came ahead of a missing one (when they
    /// came): fewer than [`REORDER_WINDOW`].
    early: Vec<(Instant, Envelope)>,
    events: VecDeque<LinkEvent>,
    stats: Stats,
}

impl Link {
    /// `epoch`: random per process start (non-zero), drawn by the shell.
    pub fn new(key: Key, peer: SocketAddr, epoch: u64, backends_hash: u64, now: Instant) -> Link {
        let epoch = epoch.max(1);
        Link {
            keys: Keys::new(key),
            peer,
            wall: None,
            fresh_hello: None,
            peer_dates_hellos: false,
            epoch,
            seq: 0,
            epochs: Epochs::new(epoch),
            backends_hash,
            dialog_keys: 0,
            dialog_mismatch: false,
            flows: 0,
            dialogs: 0,
            want_full: true,
            synced: false,
            full_rx: None,
            last_heard: None,
            mismatch: false,
            peer_acked: 0,
            pending: VecDeque::new(),
            max_pending: MAX_PENDING,
            full_tx: None,
            full_end: None,
            full_asked: false,
            full_after: false,
            next_hello: now,
            last_hello: None,
            window_start: now,
            window_sent: 0,
            early: Vec::with_capacity(REORDER_WINDOW as usize),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// We hold a complete table from the peer (since its last restart or our gap).
    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A new shared key (a reload; false if it is the one in use). We go on sealing
    /// with the key in use until the peer announces the new one, and accept the old
    /// one until the peer seals with the new one, at most `grace` (see [`keys`]).
    pub fn set_key(&mut self, key: Key, grace: Duration, now: Instant) -> bool {
        if !self.keys.rotate(key, grace, now) {
            return false;
        }
        // Announce it now: a peer that has it already can switch at once.
        self.prompt_hello(now);
        self.take_key_news(now);
        true
    }

    /// Two keys are open (a rotation is under way).
    pub fn rotating(&self) -> bool {
        self.keys.rotating()
    }

    /// A hello soon, but not more often than [`PROMPT_GAP`].
    fn prompt_hello(&mut self, now: Instant) {
        let at = self.last_hello.map_or(now, |t| (t + PROMPT_GAP).max(now));
        self.next_hello = self.next_hello.min(at);
    }

    fn take_key_news(&mut self, now: Instant) {
        while let Some(n) = self.keys.take_news() {
            let ev = match n {
                KeyNews::Sealing => {
                    // The peer should see the new key soon: it retires the old one then.
                    self.prompt_hello(now);
                    LinkEvent::KeyInUse
                }
                KeyNews::PreviousRetired { peer_switched } => {
                    LinkEvent::PreviousKeyRetired { peer_switched }
                }
            };
            self.events.push_back(ev);
        }
    }

    /// The name of the keys we hash Call-IDs with ([`Ext::dialog_keys`]), announced
    /// from now on and compared with the peer's.
    pub fn set_dialog_keys(&mut self, id: u64) {
        self.dialog_keys = id;
    }

    /// Our table's size and backend set, for the next hello.
    pub fn set_local(&mut self, flows: usize, dialogs: usize, backends_hash: u64) {
        self.flows = flows.min(u32::MAX as usize) as u32;
        self.dialogs = dialogs.min(u32::MAX as usize) as u32;
        self.backends_hash = backends_hash;
    }

    /// Incremental changes of our table, sent after anything queued before.
    pub fn queue(&mut self, items: &[Item]) {
        if self.full_asked || self.full_after {
            // The full table the shell is about to take (or takes once the one going
            // out is sent) includes them.
            return;
        }
        if self.pending.len() + items.len() > self.max_pending {
            self.stats.pending_overflows += 1;
            self.pending.clear();
            self.full_again();
            return;
        }
        self.pending.extend(items.iter().copied());
    }

    /// The most changes [`Link::queue`] holds (`sync.max_pending_changes`).
    pub fn set_max_pending(&mut self, n: usize) {
        self.max_pending = n.max(1);
    }

    /// The bound [`Link::set_max_pending`] set.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Our whole table, replacing whatever was queued (it is older than this).
    pub fn queue_full(&mut self, items: Vec<Item>) {
        self.full_asked = false;
        self.full_after = false;
        self.pending.clear();
        self.full_tx = Some(FullTx {
            items,
            next: 0,
            chunk: 0,
        });
        self.stats.full_tables_sent += 1;
    }

    /// Changes were dropped: a new full table, after the one going out if one is (the
    /// peer gets that whole first; starting over at once, under steady churn, might
    /// never let a large table finish).
    pub fn full_again(&mut self) {
        if self.full_tx.is_some() {
            self.full_after = true;
        } else {
            self.ask_full_table();
        }
    }

    fn ask_full_table(&mut self) {
        if !self.full_asked {
            self.full_asked = true;
            self.events.push_back(LinkEvent::SendFullTable);
        }
    }

    /// Our wall clock as the shell last told it (see [`Link::set_wall_clock`]).
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.wall = Some((now, unix_ms));
    }

    /// Ms since the Unix epoch at `now` (0: not known).
    fn wall_ms(&self, now: Instant) -> u64 {
        self.wall.map_or(0, |(at, ms)| {
            let since = now.saturating_duration_since(at).as_millis();
            ms.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
        })
    }

    /// Whether a hello dated `sent_ms` by its sender is near our clock (`None`: it
    /// carries no date, or we have no clock).
    fn dated_near(&self, now: Instant, sent_ms: u64) -> Option<bool> {
        let ours = self.wall_ms(now);
        (sent_ms != 0 && ours != 0)
            .then(|| u128::from(ours.abs_diff(sent_ms)) <= FRESH_WITHIN.as_millis())
    }

    /// Whether a hello dated `sent_ms` (`near`: [`Link::dated_near`]) looks recorded:
    /// dated far from our clock (or undated, once the peer dates its hellos) while a
    /// hello dated near it was taken lately. With clocks further apart than
    /// [`FRESH_WITHIN`] none is near, and nothing looks recorded (see
    /// [`STALE_FALLBACK`]).
    fn looks_recorded(&self, now: Instant, sent_ms: u64, near: Option<bool>) -> bool {
        let far = match near {
            Some(near) => !near,
            None => sent_ms == 0 && self.peer_dates_hellos,
        };
        far && self
            .fresh_hello
            .is_some_and(|t| now.saturating_duration_since(t) < STALE_FALLBACK)
    }

    fn count_drop(&mut self, reason: SyncDrop) {
        self.stats.dropped[reason as usize] += 1;
    }

    /// The socket refused the last transmit.
    pub fn transmit_failed(&mut self) {
        self.stats.sent = self.stats.sent.saturating_sub(1);
        self.count_drop(SyncDrop::SendFailed);
    }

    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if from != self.peer {
            return self.count_drop(SyncDrop::NotPeer);
        }
        let (env, current_key) = match self.keys.open(now, data) {
            Ok(x) => x,
            Err(e) => {
                self.take_key_news(now);
                return self.count_drop(e);
            }
        };
        if env.epoch == self.epoch {
            return self.count_drop(SyncDrop::Reflected);
        }
        // What a sender packs at most: more (up to ~270 small items fit a datagram)
        // would multiply the work a turn of received datagrams makes here.
        if let Body::Items(items) | Body::Full { items, .. } = &env.body
            && items.len() > ITEMS_PER_DATAGRAM
        {
            return self.count_drop(SyncDrop::Decode);
        }
        // The previous key stays open for the admitted run only: one who kept it
        // (a retired host, a leaked file) must not be admitted as a new run.
        if !current_key && !self.epochs.is_admitted(env.epoch) {
            self.take_key_news(now);
            return self.count_drop(SyncDrop::PreviousKeyNewEpoch);
        }
        let hello = match &env.body {
            Body::Hello {
                challenge, echo, ..
            } => Some(Handshake {
                challenge: *challenge,
                echo: *echo,
            }),
            _ => None,
        };
        // A replay of a past run's hello would replace the live peer's challenge in
        // ours: a flood of them after a restart kept the handshake from completing.
        let near = self.dated_near(now, env.ext.sent_ms);
        let stale = hello.is_some() && self.looks_recorded(now, env.ext.sent_ms, near);
        let verdict = self.epochs.check_dated(env.epoch, env.seq, hello, stale);
        if self.epochs.take_prompt() {
            self.prompt_hello(now);
        }
        let verdict = match verdict {
            Ok(v) => v,
            Err(e) => {
                self.take_key_news(now);
                return self.count_drop(e);
            }
        };
        // Only a hello taken (not a replay of the admitted or a retired run) says the
        // peer's clock is near ours.
        if hello.is_some() {
            if near == Some(true) {
                self.fresh_hello = Some(now);
            }
            self.peer_dates_hellos |= env.ext.sent_ms != 0 && verdict != Verdict::Candidate;
        }
        self.stats.received += 1;
        if verdict != Verdict::Candidate {
            self.keys.heard(now, current_key, env.ext.key_id);
        } else if current_key && !self.stats.peer_up {
            // A peer restarted during a rotation holds the new key only: it can read
            // (and answer) our challenge only once we seal with that key. Only once
            // the run we admitted has gone silent: while it talks, a candidate with
            // the new key may be a recording, and the live peer may not have the key.
            self.keys.peer_holds_current();
        }
        self.take_key_news(now);
        if verdict != Verdict::Candidate {
            self.last_heard = Some(now);
        }
        match verdict {
            // Not admitted: nothing in it is trusted beyond the handshake.
            Verdict::Candidate => {}
            // Held until the one missing before it comes, or is given up.
            Verdict::Early => self.early.push((now, env)),
            Verdict::InOrder => {
                self.deliver(env, Verdict::InOrder);
                self.deliver_held();
            }
            Verdict::Gap => {
                // The held ones are older: they go first.
                let mut held = std::mem::take(&mut self.early);
                held.sort_unstable_by_key(|(_, e)| e.seq);
                for (_, e) in held.drain(..) {
                    self.deliver(e, Verdict::Gap);
                }
                self.early = held;
                self.deliver(env, Verdict::Gap);
            }
            Verdict::Admitted => {
                // Held datagrams of the run it replaces are moot.
                self.early.clear();
                self.deliver(env, Verdict::Admitted);
            }
        }
    }

    /// The held datagram with sequence number `seq`, taken out.
    fn take_held(&mut self, seq: u64) -> Option<Envelope> {
        let i = self.early.iter().position(|(_, e)| e.seq == seq)?;
        Some(self.early.swap_remove(i).1)
    }

    /// When the oldest held datagram came.
    fn oldest_held(&self) -> Option<Instant> {
        self.early.iter().map(|(t, _)| *t).min()
    }

    /// Delivers the held datagrams that are next in order now.
    fn deliver_held(&mut self) {
        while self.epochs.next_held() {
            if let Some(env) = self.take_held(self.epochs.acked().1) {
                self.deliver(env, Verdict::InOrder);
            }
        }
    }

    /// Gives up on a missing datagram once the oldest one held behind it has waited
    /// [`REORDER_WAIT`]: a gap (the peer's full table follows), then what is in order.
    fn give_up_missing(&mut self, now: Instant) {
        while self
            .oldest_held()
            .is_some_and(|t| now.saturating_duration_since(t) >= REORDER_WAIT)
        {
            let Some(seq) = self.epochs.skip_to_held() else {
                self.early.clear();
                return;
            };
            if let Some(env) = self.take_held(seq) {
                self.deliver(env, Verdict::Gap);
            }
            self.deliver_held();
        }
    }

    /// An authentic datagram of the admitted run (or the one just admitted), in order.
    fn deliver(&mut self, mut env: Envelope, verdict: Verdict) {
        match verdict {
            Verdict::Candidate | Verdict::Early => return,
            Verdict::Admitted => {
                self.want_full = true;
                self.synced = false;
                self.full_rx = None;
                self.peer_acked = 0;
                self.events.push_back(LinkEvent::PeerRestarted);
            }
            Verdict::Gap => {
                self.want_full = true;
                self.synced = false;
                if let Some(f) = &mut self.full_rx {
                    f.intact = false;
                }
            }
            Verdict::InOrder => {}
        }
        if !self.stats.peer_up {
            self.stats.peer_up = true;
            self.events.push_back(LinkEvent::PeerUp);
        }
        let peer_dialog_keys = env.ext.dialog_keys;
        // Unknown on either side (an older peer): nothing to compare.
        let keys_differ =
            self.dialog_keys != 0 && peer_dialog_keys != 0 && peer_dialog_keys != self.dialog_keys;
        if keys_differ && let Body::Items(items) | Body::Full { items, .. } = &mut env.body {
            // No Call-ID of ours hashes to its entries' keys: applied, they would only
            // fill the dialog table (and hold mirrored flows) until they expire.
            let before = items.len();
            items.retain(|i| !matches!(i, Item::Dialog { .. }));
            self.stats.dialog_items_skipped += (before - items.len()) as u64;
        }
        match env.body {
            Body::Hello {
                backends_hash,
                flows,
                dialogs,
                acked_epoch,
                acked,
                want_full,
                ..
            } => {
                self.stats.peer_flows = flows;
                self.stats.peer_dialogs = dialogs;
                // Items name backends by seed, so a different backend list is not
                // fatal, but items for backends one side lacks are skipped: report it.
                let mismatch = backends_hash != self.backends_hash;
                if mismatch && !self.mismatch {
                    self.count_drop(SyncDrop::BackendMismatch);
                    self.events.push_back(LinkEvent::BackendMismatch);
                }
                self.mismatch = mismatch;
                if keys_differ && !self.dialog_mismatch {
                    self.count_drop(SyncDrop::DialogKeyMismatch);
                    self.events.push_back(LinkEvent::DialogKeyMismatch);
                }
                self.dialog_mismatch = keys_differ;
                if acked_epoch == self.epoch {
                    self.peer_acked = acked.max(self.peer_acked).min(self.seq);
                    self.stats.lag = self.seq - self.peer_acked;
                    // A request the full table already under way (or not yet seen
                    // whole by the peer) answers is not restarted.
                    if want_full
                        && self.full_tx.is_none()
                        && self.full_end.is_none_or(|end| acked >= end)
                    {
                        self.ask_full_table();
                    }
                }
            }
            Body::Items(items) => {
                if !items.is_empty() {
                    self.events
                        .push_back(LinkEvent::Items { items, full: false });
                }
            }
            Body::Full { chunk, last, items } => self.receive_full(chunk, last, items),
        }
    }

    fn receive_full(&mut self, chunk: u32, last: bool, items: Vec<Item>) {
        if chunk == 0 {
            self.full_rx = Some(FullRx {
                next_chunk: 0,
                intact: true,
            });
            self.events.push_back(LinkEvent::FullStarted);
        }
        let rx = self.full_rx.get_or_insert(FullRx {
            next_chunk: chunk,
            intact: false,
        });
        rx.intact &= rx.next_chunk == chunk;
        rx.next_chunk = chunk.wrapping_add(1);
        let intact = rx.intact;
        // Applied even from a broken table: they are the peer's current state.
        if !items.is_empty() {
            self.events
                .push_back(LinkEvent::Items { items, full: true });
        }
        if last {
            self.full_rx = None;
            if intact {
                self.want_full = false;
                self.synced = true;
                self.stats.full_tables_received += 1;
                self.events.push_back(LinkEvent::FullTableApplied);
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.give_up_missing(now);
        self.keys.expire(now);
        self.take_key_news(now);
        if self.stats.peer_up
            && self
                .last_heard
                .is_none_or(|t| now.saturating_duration_since(t) >= PEER_TIMEOUT)
        {
            self.stats.peer_up = false;
            self.events.push_back(LinkEvent::PeerDown);
        }
        if now.saturating_duration_since(self.window_start) >= PACING_INTERVAL {
            self.window_start = now;
            self.window_sent = 0;
        }
    }

    /// When to call [`Link::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_hello;
        if self.stats.peer_up
            && let Some(h) = self.last_heard
        {
            t = t.min(h + PEER_TIMEOUT);
        }
        if self.queued() {
            t = t.min(self.window_start + PACING_INTERVAL);
        }
        if let Some(k) = self.keys.poll_timeout() {
            t = t.min(k);
        }
        if let Some(e) = self.oldest_held() {
            t = t.min(e + REORDER_WAIT);
        }
        Some(t)
    }

    /// Table traffic is waiting (a full table or changes).
    pub fn queued(&self) -> bool {
        self.full_tx.is_some() || !self.pending.is_empty()
    }

    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// The next datagram for the peer, sealed into `buf` (at least
    /// [`MAX_DATAGRAM`](super::message::MAX_DATAGRAM) bytes). Hellos are not paced;
    /// table traffic is, [`SEND_PER_INTERVAL`] per [`PACING_INTERVAL`].
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if now >= self.next_hello {
            self.last_hello = Some(now);
            self.next_hello = now + HELLO_EVERY;
            let (acked_epoch, acked) = self.epochs.acked();
            let Handshake { challenge, echo } = self.epochs.hello();
            let body = Body::Hello {
                backends_hash: self.backends_hash,
                flows: self.flows,
                dialogs: self.dialogs,
                acked_epoch,
                acked,
                want_full: self.want_full,
                challenge,
                echo,
            };
            return self.seal(now, body, buf);
        }
        if now.saturating_duration_since(self.window_start) >= PACING_INTERVAL {
            self.window_start = now;
            self.window_sent = 0;
        }
        if self.window_sent >= SEND_PER_INTERVAL {
            return None;
        }
        let body = if let Some(f) = &mut self.full_tx {
            let end = (f.next + ITEMS_PER_DATAGRAM).min(f.items.len());
            let body = Body::Full {
                chunk: f.chunk,
                // An empty table is one empty chunk: it still completes the peer's sync.
                last: end == f.items.len(),
                items: f.items[f.next..end].to_vec(),
            };
            f.next = end;
            f.chunk += 1;
            if end == f.items.len() {
                self.full_tx = None;
                self.full_end = Some(self.seq + 1);
                if std::mem::take(&mut self.full_after) {
                    self.ask_full_table();
                }
            }
            body
        } else if !self.pending.is_empty() {
            let n = self.pending.len().min(ITEMS_PER_DATAGRAM);
            Body::Items(self.pending.drain(..n).collect())
        } else {
            return None;
        };
        self.window_sent += 1;
        self.seal(now, body, buf)
    }

    fn seal(&mut self, now: Instant, body: Body, buf: &mut [u8]) -> Option<Transmit> {
        self.seq += 1;
        let env = Envelope {
            version: VERSION,
            epoch: self.epoch,
            seq: self.seq,
            body,
            ext: Ext {
                key_id: self.keys.current_id(),
                dialog_keys: self.dialog_keys,
                sent_ms: self.wall_ms(now),
            },
        };
        match seal(self.keys.sealing(), &env, buf) {
            Ok(len) => {
                self.stats.sent += 1;
                self.stats.lag = self.seq.saturating_sub(self.peer_acked);
                Some(Transmit { to: self.peer, len })
            }
            Err(e) => {
                // Items are bounded in size and buffers are checked by the caller:
                // this is a bug, not traffic, and the peer sees a gap.
                tracing::error!(error = %e, "cannot seal a sync message");
                None
            }
        }
    }
}

/// A hash of the set of backend names (order does not matter), compared between
/// peers to report configs that differ.
pub fn backends_hash<S: AsRef<str>>(names: &[S]) -> u64 {
    let mut sorted: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    sorted.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for n in sorted {
        for b in n.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests;
