//! The shell of the state-sync link ([`crate::sync::link::Link`]) inside the
//! dataplane thread: it owns the socket and the clock, feeds datagrams, the router's
//! changes and timeouts to the link, sends what it returns and applies its events to
//! the router (pre-binding mirrored relay ports, closing stale ones).

use std::io;
use std::net::UdpSocket;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, counter, gauge};

use super::{Shell, Status};
use crate::config::{Config, SyncConfig, format_duration};
use crate::relay::router::FullCursor;
use crate::relay::router::SyncReject;
use crate::sync::link::{Link, LinkEvent, Stats, Transmit, backends_hash};
use crate::sync::message::MAX_DATAGRAM;
use crate::sync::{Item, Key, SyncDrop};
use crate::throttle::{LogThrottle, by_reason};

/// The router's changes are taken this often (they are batched into datagrams).
const TAKE_EVERY: Duration = Duration::from_millis(20);
/// How often the backend set is hashed again for the hello (config reload).
const BACKENDS_EVERY: Duration = Duration::from_secs(1);
/// A 20 ms burst of table traffic (384 datagrams, ~540 KB) while the NIC sends it:
/// with the default (~208 KiB) the rest of the burst would be refused.
const SYNC_SNDBUF: usize = 4 << 20;
const RECV_PER_WAKE: usize = 256;

/// The sync socket and link with the shell's scratch space; driven by the dataplane
/// loop: [`SyncShell::turn`] when the socket is readable or [`SyncShell::deadline`]
/// has come.
pub struct SyncShell {
    sock: UdpSocket,
    link: Link,
    m: Metrics,
    /// The router's changes are next taken then.
    take_at: Instant,
    /// One byte more than a sync datagram can be, so an oversized one is seen as such.
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// The datagram in `tx` the socket refused as full: sent first next turn.
    held: Option<Transmit>,
    /// A full table for the peer being built.
    build: Option<Build>,
    /// When the last turn ran: the deadline while a table is being built.
    last_turn: Instant,
    pending: Vec<Item>,
    backends_at: Option<Instant>,
    backends: u64,
    /// Mirrored relay ports that could not be bound (open-file limit, a port taken by
    /// another process): one line per 10 s, with the count in between.
    bind_log: LogThrottle,
    conflict_log: LogThrottle,
    /// Items not applied: one line per 10 s, with the counts by reason.
    reject_log: LogThrottle,
    rejected_logged: u64,
    /// Datagrams dropped (or reported) by the link: one line per 10 s, by reason.
    drop_log: LogThrottle,
    dropped_logged: u64,
    /// `Router::sync_conflicts` + `sync_client_conflicts` at the last log line about them.
    conflicts_logged: u64,
    /// Changes that found a queue full, by [`Overflow`] (the link counts its own
    /// pending queue's): each costs the peer a full table.
    overflows: [u64; Overflow::NAMES.len()],
    overflow_log: LogThrottle,
    overflows_logged: u64,
}

// The link's own bound (for links the shell does not size: tests, the simulation) is
// the config's default: one value, kept in the two layers that may not import each other.
const _: () =
    assert!(crate::sync::link::MAX_PENDING == crate::config::DEFAULT_SYNC_PENDING_CHANGES);

/// The queue a change found full (`sipfront_sync_queue_overflows_total{queue}`).
#[derive(Debug, Clone, Copy)]
enum Overflow {
    /// The router's, between two sync turns (`sync.max_turn_changes`).
    Turn = 0,
    /// The link's changes waiting to be sent, or made while a full table is built
    /// (`sync.max_pending_changes`).
    Pending = 1,
}

impl Overflow {
    const NAMES: [&'static str; 2] = ["turn", "pending"];
}

/// A running total's log line is due: it grew since the last line and `log` has a
/// line now (then this is the last). Returns how much it grew.
fn grew(total: u64, logged: &mut u64, log: &mut LogThrottle, now: Instant) -> Option<u64> {
    if total <= *logged || log.allow(now).is_none() {
        return None;
    }
    let new = total - std::mem::replace(logged, total);
    Some(new)
}

/// The wall clock in ms since the Unix epoch (0 before it: not announced).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A random epoch for this run: no clock, so a clock step cannot make it collide
/// with or sort before an earlier run's.
fn random_epoch() -> u64 {
    crate::sys::random::u64().max(1)
}

/// Binds the sync socket.
pub fn open(sc: &SyncConfig, cfg: &Config) -> io::Result<SyncShell> {
    let sock = UdpSocket::bind(sc.listen)?;
    sock.set_nonblocking(true)?;
    crate::sys::socket::set_recv_buffer(&sock, sc.receive_buffer);
    crate::sys::socket::set_send_buffer(&sock, SYNC_SNDBUF);
    let names: Vec<&str> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
    let mut link = Link::new(
        Key::new(sc.key.as_bytes()),
        sc.peer,
        random_epoch(),
        backends_hash(&names),
        Instant::now(),
    );
    // The dialog table's hash keys come from the key this process starts with (see
    // `dataplane::run`), and stay when the key is rotated: name them the same way. The
    // name changes with the hash (here SipHash-1-3/128), so a peer of an older version
    // that hashes Call-IDs otherwise shows as a `dialog_key_mismatch`.
    link.set_dialog_keys(
        Key::new(sc.key.as_bytes())
            .derive("dialog-keys-id/sip13-128")
            .max(1),
    );
    link.set_wall_clock(Instant::now(), unix_ms());
    link.set_max_pending(sc.max_pending_changes);
    tracing::info!(listen = ?sock.local_addr().ok(), peer = %link.peer(), "state sync link up");
    Ok(SyncShell {
        sock,
        link,
        m: Metrics::register(),
        take_at: Instant::now(),
        rx: vec![0u8; MAX_DATAGRAM + 1],
        tx: vec![0u8; MAX_DATAGRAM],
        held: None,
        build: None,
        last_turn: Instant::now(),
        pending: Vec::with_capacity(sc.max_turn_changes),
        backends_at: None,
        backends: 0,
        bind_log: LogThrottle::new(Duration::from_secs(10)),
        conflict_log: LogThrottle::new(Duration::from_secs(10)),
        reject_log: LogThrottle::new(Duration::from_secs(10)),
        rejected_logged: 0,
        drop_log: LogThrottle::new(Duration::from_secs(10)),
        dropped_logged: 0,
        conflicts_logged: 0,
        overflows: [0; Overflow::NAMES.len()],
        overflow_log: LogThrottle::new(Duration::from_secs(10)),
        overflows_logged: 0,
    })
}

/// A new key from a reload, for the link.
pub struct Rekey {
    key: Key,
    grace: Duration,
}

/// The `[sync]` key part of a reload (`Config::keep_restart_only` already kept the
/// section's presence and addresses). A changed key in `key_file` goes to the link (the
/// sync task takes it from the shell); an unusable file keeps the running key, loudly.
pub(super) fn reload(
    running: &Option<SyncConfig>,
    new: &mut Option<SyncConfig>,
    rekey: &mut Option<Rekey>,
) -> Vec<String> {
    let mut notes = Vec::new();
    let (Some(old), Some(n)) = (running, new.as_mut()) else {
        return notes;
    };
    if let Some(why) = n.key_error.take() {
        tracing::warn!(error = %why, "reload: sync key file unusable; KEEPING THE PREVIOUS SYNC KEY");
        notes.push(format!(
            "sync key not rotated, the previous one stays: {why}"
        ));
        n.key = old.key.clone();
    } else if n.key != old.key {
        let grace = format_duration(n.previous_key_grace);
        tracing::info!(%grace, "sync key rotated: sealing with the new key once the peer has it; the previous one is accepted until the peer uses the new one, at most {grace}");
        notes.push(format!(
            "sync key rotated (the previous one is accepted for up to {grace}; reload the peer with the same key)"
        ));
        *rekey = Some(Rekey {
            key: Key::new(n.key.as_bytes()),
            grace: n.previous_key_grace,
        });
    }
    notes
}

/// Metric handles, registered once.
struct Metrics {
    sent: Counter,
    received: Counter,
    dropped: Vec<Counter>,
    /// By [`SyncReject`] (indexed `as usize`).
    rejected: Vec<Counter>,
    conflicts: Counter,
    client_conflicts: Counter,
    lag: Gauge,
    peer_flows: Gauge,
    peer_dialogs: Gauge,
    peer_up: Gauge,
    last_full: Gauge,
    /// By [`Overflow`].
    overflows: [Counter; Overflow::NAMES.len()],
    full_sent: Counter,
    full_received: Counter,
}

impl Metrics {
    fn register() -> Metrics {
        Metrics {
            sent: counter!("sipfront_sync_messages_total", "dir" => "sent"),
            received: counter!("sipfront_sync_messages_total", "dir" => "received"),
            dropped: SyncDrop::ALL
                .iter()
                .map(|r| counter!("sipfront_sync_dropped_total", "reason" => r.as_str()))
                .collect(),
            rejected: SyncReject::ALL
                .iter()
                .map(|r| counter!("sipfront_sync_items_rejected_total", "reason" => r.as_str()))
                .collect(),
            conflicts: counter!("sipfront_sync_endpoint_conflicts_total"),
            client_conflicts: counter!("sipfront_sync_client_conflicts_total"),
            lag: gauge!("sipfront_sync_lag"),
            peer_flows: gauge!("sipfront_sync_peer_flows"),
            peer_dialogs: gauge!("sipfront_sync_peer_dialogs"),
            peer_up: gauge!("sipfront_sync_peer_up"),
            last_full: gauge!("sipfront_sync_last_full_timestamp_seconds"),
            overflows: Overflow::NAMES
                .map(|q| counter!("sipfront_sync_queue_overflows_total", "queue" => q)),
            full_sent: counter!("sipfront_sync_full_tables_total", "dir" => "sent"),
            full_received: counter!("sipfront_sync_full_tables_total", "dir" => "received"),
        }
    }

    /// The link keeps running totals; counters take them as absolute values.
    fn publish(
        &self,
        st: &Stats,
        rejected: &[u64; SyncReject::ALL.len()],
        (conflicts, client_conflicts): (u64, u64),
        overflows: &[u64; Overflow::NAMES.len()],
    ) {
        for (c, n) in self.overflows.iter().zip(overflows) {
            c.absolute(*n);
        }
        self.full_sent.absolute(st.full_tables_sent);
        self.full_received.absolute(st.full_tables_received);
        self.sent.absolute(st.sent);
        self.received.absolute(st.received);
        for (c, n) in self.dropped.iter().zip(st.dropped) {
            c.absolute(n);
        }
        for (c, n) in self.rejected.iter().zip(rejected) {
            c.absolute(*n);
        }
        self.conflicts.absolute(conflicts);
        self.client_conflicts.absolute(client_conflicts);
        self.lag.set(st.lag as f64);
        self.peer_flows.set(f64::from(st.peer_flows));
        self.peer_dialogs.set(f64::from(st.peer_dialogs));
        self.peer_up.set(if st.peer_up { 1.0 } else { 0.0 });
    }
}

impl SyncShell {
    pub(super) fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// When [`SyncShell::turn`] must run even if nothing arrives.
    pub(super) fn deadline(&self) -> Instant {
        if self.build.is_some() {
            // Due at once: the next step runs in the next turn of the loop.
            return self.last_turn;
        }
        self.link
            .poll_timeout()
            .map_or(self.take_at, |t| t.min(self.take_at))
    }

    /// Receives (bounded), hands the router's changes and timeouts to the link, sends
    /// what it returns and applies its events.
    pub(super) fn turn(&mut self, s: &mut Shell, now: Instant, status: &Mutex<Status>) {
        let SyncShell {
            sock,
            link,
            m,
            rx,
            tx,
            held,
            build,
            last_turn,
            pending,
            take_at,
            backends_at,
            backends,
            bind_log,
            conflict_log,
            conflicts_logged,
            reject_log,
            rejected_logged,
            drop_log,
            dropped_logged,
            overflows,
            overflow_log,
            overflows_logged,
        } = self;
        *last_turn = now;
        if now >= *take_at {
            // Taken this often at most (they are batched into datagrams).
            *take_at = now + TAKE_EVERY;
        }
        if let Some(r) = s.sync_rekey.take() {
            link.set_key(r.key, r.grace, now);
            apply_events(s, link, now, m, bind_log, build);
        }
        // Receive (bounded per turn: forwarding waits; the socket stays ready).
        for _ in 0..RECV_PER_WAKE {
            let (n, from) = match sock.recv_from(rx) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => continue,
            };
            link.handle_datagram(now, from, &rx[..n]);
            apply_events(s, link, now, m, bind_log, build);
        }
        // Our changes.
        let overflow = s.router.take_sync(pending);
        if overflow {
            overflows[Overflow::Turn as usize] += 1;
        }
        match build.as_mut() {
            // Held until the table being built is queued, then sent after it.
            Some(b) => {
                if b.changed(pending, overflow, link.max_pending()) {
                    overflows[Overflow::Pending as usize] += 1;
                }
            }
            // Some changes were not queued: the peer gets the whole table instead
            // (after the one going out, if one is: through the link's request).
            None if overflow => link.full_again(),
            None => link.queue(pending),
        }
        pending.clear();
        apply_events(s, link, now, m, bind_log, build);
        build_step(s, link, build, now);
        if backends_at.is_none_or(|t| now.duration_since(t) >= BACKENDS_EVERY) {
            *backends_at = Some(now);
            // The wall clock follows steps and slews (hellos carry it).
            link.set_wall_clock(now, unix_ms());
            let names: Vec<&str> = s
                .router
                .backends()
                .iter()
                .filter(|(_, b)| b.is_configured())
                .map(|(_, b)| b.name.as_str())
                .collect();
            *backends = backends_hash(&names);
        }
        link.set_local(s.router.flow_count(), s.router.dialog_count(), *backends);
        link.handle_timeout(now);
        apply_events(s, link, now, m, bind_log, build);
        transmit(&*sock, link, now, tx, held);
        // A table sent to its end may ask for the next one (changes dropped meanwhile).
        apply_events(s, link, now, m, bind_log, build);
        let mut rejected = s.router.sync_rejected;
        rejected[SyncReject::DialogKeyMismatch as usize] += link.stats().dialog_items_skipped;
        let (endpoints, clients) = (s.router.sync_conflicts, s.router.sync_client_conflicts);
        let overflowed = [
            overflows[Overflow::Turn as usize],
            overflows[Overflow::Pending as usize] + link.stats().pending_overflows,
        ];
        m.publish(link.stats(), &rejected, (endpoints, clients), &overflowed);
        let total = overflowed.iter().sum();
        if let Some(new) = grew(total, overflows_logged, overflow_log, now) {
            tracing::warn!(
                new,
                total,
                by_queue = %by_reason(Overflow::NAMES.into_iter(), &overflowed),
                "sync changes found a queue full: the peer gets the whole table instead \
                 (raise sync.max_turn_changes / sync.max_pending_changes if this repeats): \
                 see sipfront_sync_queue_overflows_total"
            );
        }
        let total: u64 = rejected.iter().sum();
        if let Some(new) = grew(total, rejected_logged, reject_log, now) {
            tracing::warn!(
                new,
                total,
                by_reason = %by_reason(SyncReject::ALL.iter().map(|r| r.as_str()), &rejected),
                "sync items from the peer not applied (the standby lacks them after a \
                 takeover): see sipfront_sync_items_rejected_total"
            );
        }
        let dropped = link.stats().dropped;
        let total: u64 = dropped.iter().sum();
        if let Some(new) = grew(total, dropped_logged, drop_log, now) {
            tracing::warn!(
                new,
                total,
                by_reason = %by_reason(SyncDrop::ALL.iter().map(|r| r.as_str()), &dropped),
                "sync datagrams dropped or reported (another key or version on the peer, \
                 forged or replayed datagrams, a peer restarting): see \
                 sipfront_sync_dropped_total"
            );
        }
        if let Some(new) = grew(endpoints + clients, conflicts_logged, conflict_log, now) {
            tracing::warn!(
                new,
                endpoints,
                clients,
                "both hosts served clients (split brain?): relay endpoints held by both \
                 for different clients, or clients each served on an endpoint of its own; \
                 both keep the same flow on each endpoint and for each client, the other \
                 client gets a new endpoint with its next datagram"
            );
        }
        if let Ok(mut st) = status.lock() {
            st.synced = link.synced();
        }
    }
}

/// Where the link's datagrams go: the sync socket (a fake in tests).
trait Out {
    fn send_to(&self, buf: &[u8], to: std::net::SocketAddr) -> io::Result<usize>;
}

impl Out for UdpSocket {
    fn send_to(&self, buf: &[u8], to: std::net::SocketAddr) -> io::Result<usize> {
        UdpSocket::send_to(self, buf, to)
    }
}

/// Sends what the link has, in order. A datagram the socket refuses as full (its
/// buffer holds what the device has not sent yet) is held in `tx` and sent first next
/// turn, before anything new is sealed, instead of lost: its sequence number is the
/// next one, and a lost chunk costs the peer a whole new table. Other errors lose it.
fn transmit(
    sock: &impl Out,
    link: &mut Link,
    now: Instant,
    tx: &mut [u8],
    held: &mut Option<Transmit>,
) {
    loop {
        let Some(t) = held.take().or_else(|| link.poll_transmit(now, tx)) else {
            return;
        };
        match sock.send_to(&tx[..t.len], t.to) {
            Ok(_) => {}
            Err(e) if crate::sys::mmsg::is_full(&e) => {
                *held = Some(t);
                return;
            }
            Err(_) => link.transmit_failed(),
        }
    }
}

/// Flow slots (or dialog entries) per build step. A million flows built at once held
/// forwarding for 47 ms; in steps of 4,096 the longest took 0.78 ms (8,192: 0.94,
/// 16,384: 1.34), 60 ms in all (`cargo bench --bench sync -- --prefix --flows 1000000
/// --reps 1 --keep`, the log's `full table for the sync peer` line).
const BUILD_STEP: usize = 4_096;

/// Our full table for the peer, built a step per dataplane turn
/// ([`Router::sync_full_step`]) so that forwarding never waits for the whole walk.
pub(super) struct Build {
    items: Vec<Item>,
    at: FullCursor,
    /// Changes made since the build began: sent after the table, so the last item
    /// for each flow or call is its latest state.
    since: Vec<Item>,
    /// More changes than the link's pending bound: a newer table follows this one
    /// instead.
    overflowed: bool,
    started: Instant,
    steps: u32,
    /// The longest step: how long forwarding waited at most.
    longest: Duration,
}

impl Build {
    /// Holds `items` for after the table. Returns true if they found `since` full
    /// (`max_pending`), not if the router's queue had (`overflow`).
    fn changed(&mut self, items: &[Item], overflow: bool, max_pending: usize) -> bool {
        if self.overflowed {
            return false;
        }
        let full = self.since.len() + items.len() > max_pending;
        if overflow || full {
            self.overflowed = true;
            self.since = Vec::new();
        } else {
            self.since.extend_from_slice(items);
        }
        full && !overflow
    }
}

/// A full table for the peer (unless one is being built: it answers this request
/// too). The router's queued changes are older than the walk, which covers them.
fn start_full(s: &mut Shell, build: &mut Option<Build>) {
    if build.is_some() {
        return;
    }
    s.router.discard_sync();
    *build = Some(Build {
        items: Vec::with_capacity(s.router.flow_count() + s.router.dialog_count()),
        at: FullCursor::default(),
        since: Vec::new(),
        overflowed: false,
        started: Instant::now(),
        steps: 0,
        longest: Duration::ZERO,
    });
}

/// Flows we mirrored became ours (`adopted`): no change item says so, and a table
/// being built has passed some of them as the peer's. It starts over.
fn restart_build(s: &mut Shell, build: &mut Option<Build>, adopted: usize) {
    if adopted > 0 && build.take().is_some() {
        start_full(s, build);
    }
}

/// One step of the table being built; when it is whole, it goes to the link with the
/// changes made meanwhile behind it.
fn build_step(s: &mut Shell, link: &mut Link, build: &mut Option<Build>, now: Instant) {
    let Some(b) = build.as_mut() else {
        return;
    };
    b.steps += 1;
    let t = Instant::now();
    let done = s
        .router
        .sync_full_step(now, &mut b.at, &mut b.items, BUILD_STEP);
    b.longest = b.longest.max(t.elapsed());
    if !done {
        return;
    }
    let Some(b) = build.take() else {
        return;
    };
    tracing::info!(
        items = b.items.len(),
        steps = b.steps,
        longest_step_ms = b.longest.as_secs_f64() * 1000.0,
        build_ms = b.started.elapsed().as_secs_f64() * 1000.0,
        "full table for the sync peer"
    );
    link.queue_full(b.items);
    if b.overflowed {
        link.full_again();
    } else {
        link.queue(&b.since);
    }
}

fn apply_events(
    s: &mut Shell,
    link: &mut Link,
    now: Instant,
    m: &Metrics,
    bind_log: &mut LogThrottle,
    build: &mut Option<Build>,
) {
    let peer = link.peer();
    while let Some(ev) = link.poll_event() {
        match ev {
            LinkEvent::PeerUp => {
                s.router.set_peer_alive(now, true);
                tracing::info!(%peer, "sync peer up");
            }
            LinkEvent::PeerDown => {
                let adopted = s.router.set_peer_alive(now, false);
                tracing::warn!(%peer, adopted, "sync peer silent; its flows are ours now");
                restart_build(s, build, adopted);
            }
            LinkEvent::PeerRestarted => {
                let n = s.router.adopt_peer_flows(now);
                if n > 0 {
                    tracing::warn!(
                        adopted = n,
                        "sync peer restarted; its flows are ours until it has them back"
                    );
                }
                restart_build(s, build, n);
            }
            LinkEvent::FullStarted => s.router.begin_full(),
            LinkEvent::Items { items, .. } => {
                for item in items {
                    let eff = s.router.apply_sync(now, item);
                    for p in eff.close {
                        s.close_relay(p);
                    }
                    if let Some(p) = eff.bind
                        && let Err(e) = s.open_relay(p)
                        && let Some(more) = bind_log.allow(now)
                    {
                        tracing::warn!(addr = p.addr, port = p.port, error = %e, failed_since_last_line = more, "cannot pre-bind a mirrored relay port");
                    }
                }
            }
            LinkEvent::FullTableApplied => {
                for p in s.router.end_full(now) {
                    s.close_relay(p);
                }
                m.last_full.set(unix_ms() as f64 / 1000.0);
                tracing::info!(
                    flows = s.router.flow_count(),
                    "full table received from the sync peer"
                );
            }
            LinkEvent::SendFullTable => start_full(s, build),
            LinkEvent::KeyInUse => {
                tracing::info!(%peer, "sync key rotation: the peer has the new key; sealing with it");
            }
            LinkEvent::PreviousKeyRetired {
                peer_switched: true,
            } => {
                tracing::info!(%peer, "sync key rotation complete: the previous key is refused now");
            }
            LinkEvent::PreviousKeyRetired {
                peer_switched: false,
            } => {
                tracing::warn!(%peer, "sync.previous_key_grace ran out before the peer used the new key: the previous key is refused now, so is the peer until it is reloaded with the new key");
            }
            LinkEvent::BackendMismatch => {
                tracing::warn!(%peer, "sync peer has a different backend list; flows homed on backends one side lacks are not mirrored");
            }
            LinkEvent::DialogKeyMismatch => {
                tracing::warn!(%peer, "sync peer hashes Call-IDs with other keys (one host started before a sync key rotation, the other after, or the two run versions that hash Call-IDs differently, see the upgrade notes): flows and registrations are mirrored, calls' backend pins are not until both hosts run the same version and have been restarted with the current key");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use std::cell::{Cell, RefCell};
    use std::net::SocketAddr;

    /// A socket that refuses sends number `refuse` (counting from 0, refused ones
    /// included) as full, and keeps the rest.
    struct Fake {
        sent: RefCell<Vec<Vec<u8>>>,
        calls: Cell<usize>,
        refuse: std::ops::Range<usize>,
    }

    impl Out for Fake {
        fn send_to(&self, buf: &[u8], _: SocketAddr) -> io::Result<usize> {
            let n = self.calls.get();
            self.calls.set(n + 1);
            if self.refuse.contains(&n) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.sent.borrow_mut().push(buf.to_vec());
            Ok(buf.len())
        }
    }

    /// A full send buffer in the middle of a full table: the refused chunk is sent
    /// next turn, in order, and the peer gets the table intact (no new one asked for).
    #[test]
    fn a_send_refused_as_full_is_sent_next_turn_in_order() {
        let (a_addr, b_addr): (SocketAddr, SocketAddr) = (
            "10.0.0.1:7400".parse().unwrap(),
            "10.0.0.2:7400".parse().unwrap(),
        );
        let key = || Key::new(b"sixteen byte key!!");
        let t0 = Instant::now();
        let mut a = Link::new(key(), b_addr, 1, 7, t0);
        let mut b = Link::new(key(), a_addr, 2, 7, t0);
        let mut tx = vec![0u8; MAX_DATAGRAM];
        let mut held = None;
        let fake = Fake {
            sent: RefCell::new(vec![]),
            calls: Cell::new(0),
            refuse: 0..0,
        };
        let mut now = t0;
        let mut exchange = |a: &mut Link, b: &mut Link, fake: &Fake, held: &mut _, now| {
            transmit(fake, a, now, &mut tx, held);
            for d in fake.sent.borrow_mut().drain(..) {
                b.handle_datagram(now, a_addr, &d);
            }
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Some(t) = b.poll_transmit(now, &mut buf) {
                a.handle_datagram(now, b_addr, &buf[..t.len]);
            }
        };
        for _ in 0..4 {
            exchange(&mut a, &mut b, &fake, &mut held, now);
            now += crate::sync::link::PROMPT_GAP;
        }
        while b.poll_event().is_some() {}
        let item = Item::Flow {
            client: "198.51.100.1:5060".parse().unwrap(),
            relay_port: crate::relay::port::RelayPort::first(20000),
            ingress: 0,
            home: 1,
            registered_secs: Some(3600),
        };
        a.queue_full(vec![item; 2_000]);
        let fake = Fake {
            refuse: fake.calls.get() + 10..fake.calls.get() + 12,
            ..fake
        };
        let mut turns = 0;
        while turns < 20 && (a.queued() || held.is_some()) {
            exchange(&mut a, &mut b, &fake, &mut held, now);
            now += Duration::from_millis(20);
            turns += 1;
        }
        let evs: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
        assert!(
            evs.contains(&LinkEvent::FullTableApplied),
            "the table did not arrive intact ({} events)",
            evs.len()
        );
        assert!(turns > 1, "the refusal ended the first turn");
        assert!(b.synced());
        assert_eq!(a.stats().dropped(SyncDrop::SendFailed), 0);
    }

    fn sc(key: &[u8]) -> SyncConfig {
        SyncConfig {
            listen: "10.0.0.1:7400".parse().unwrap(),
            peer: "10.0.0.2:7400".parse().unwrap(),
            key: Secret::new(key),
            key_file: "/etc/sipfront/sync.key".into(),
            key_error: None,
            previous_key_grace: Duration::from_secs(300),
            max_turn_changes: crate::config::DEFAULT_SYNC_TURN_CHANGES,
            max_pending_changes: crate::config::DEFAULT_SYNC_PENDING_CHANGES,
            receive_buffer: crate::config::DEFAULT_SYNC_RECEIVE_BUFFER,
        }
    }

    /// A reload's whole `[sync]` part: what the config layer keeps, then the key.
    fn reload_all(
        running: &Option<SyncConfig>,
        new: &mut Option<SyncConfig>,
        rekey: &mut Option<Rekey>,
    ) -> Vec<String> {
        let mut notes = crate::config::keep_sync(new, running);
        notes.extend(reload(running, new, rekey));
        notes
    }

    #[test]
    fn a_reload_rotates_a_changed_key_and_keeps_the_running_one_on_error() {
        let running = Some(sc(b"the first key, 16+"));
        let mut rekey = None;
        let mut same = running.clone();
        assert!(reload_all(&running, &mut same, &mut rekey).is_empty());
        assert!(rekey.is_none());

        let mut new = Some(sc(b"the second key, 16+"));
        let notes = reload_all(&running, &mut new, &mut rekey);
        assert!(notes[0].contains("sync key rotated"), "{notes:?}");
        let r = rekey.take().unwrap();
        assert_eq!(r.key, Key::new(b"the second key, 16+"));
        assert_eq!(r.grace, Duration::from_secs(300));

        let mut broken = Some(SyncConfig {
            key: Secret::new(b""),
            key_error: Some("sync.key_file: `x` has mode 0644".into()),
            listen: "10.0.0.9:7400".parse().unwrap(),
            ..sc(b"")
        });
        let notes = reload_all(&running, &mut broken, &mut rekey);
        assert!(rekey.is_none());
        assert!(notes.iter().any(|n| n.contains("restart")), "{notes:?}");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("not rotated") && n.contains("0644")),
            "{notes:?}"
        );
        assert_eq!(broken, running, "what runs stays, for the next comparison");

        let mut gone = None;
        assert!(reload_all(&running, &mut gone, &mut rekey)[0].contains("restart"));
        assert_eq!(gone, running);

        // The queue bounds size buffers made at start: kept, with a note.
        let mut bigger = Some(SyncConfig {
            max_turn_changes: 100_000,
            max_pending_changes: 200_000,
            ..sc(b"the first key, 16+")
        });
        let notes = reload_all(&running, &mut bigger, &mut rekey);
        assert!(
            notes
                .iter()
                .any(|n| n.contains("max_turn_changes") && n.contains("restart")),
            "{notes:?}"
        );
        assert_eq!(bigger, running);
    }
}
