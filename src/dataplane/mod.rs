//! The thin shell around [`Router`] and the health [`Prober`]: it owns the sockets
//! and the clock, feeds datagrams in, and sends what the router decides.
//!
//! Everything runs on one thread without an async runtime: one level-triggered epoll
//! set holds the public sockets, the relay sockets, the probe sockets' set, the sync
//! socket, an eventfd that control requests and shutdown write to, and a timerfd set
//! to the next deadline of probes, peer probes, housekeeping, sweeps, table growth
//! and the sync link (`sys::timer`: why not the wait's timeout). The
//! router needs no lock, and a datagram is received, routed and sent without a
//! hand-off between threads. One batch of receive buffers serves all sockets, so a
//! flow costs its socket and an epoll entry, not a task or 64 KiB. Relay sockets:
//! `relays.rs`; probes, housekeeping, reload: `tasks.rs`.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

mod capture;
mod control;
mod metrics;
mod peer_probes;
mod relays;
mod status;
mod sync;
mod tasks;

pub use control::{BanInfo, Control, ControlRx, ControlTx, FlowInfo, FlowsPart, TopInfo, channel};
pub use metrics::MetricsHandles;
pub use status::{BackendInfo, PeerInfo, Readiness, STALE, Status};

use capture::Way;
use tasks::{HOUSEKEEPING_EVERY, backend_addrs};

use crate::capture::HepExporter;
use crate::capture::live::Taps;
use crate::config::Config;
use crate::health::checker::ProbeSettings;
use crate::health::prober::Prober;
use crate::relay::port::RelayAddrs;
use crate::relay::router::RouterConfig;
use crate::relay::{BackendAction, ClientAction, Prepared, RelayPort, RelaySpace, Router};
use crate::sync::Key;
use crate::sys::epoll::{self, Epoll};
use crate::sys::mmsg::{self, RecvBatch, SendBatch};
use crate::sys::socket::bind_udp;
use crate::sys::timer::Deadline;

/// `recvmmsg` batches per public socket per turn before other sockets get a turn.
const ROUNDS: usize = 4;

/// Epoll tokens. Port-mode relay sockets use their slot (below `TAG`); the others
/// are tagged.
const TAG: u64 = 1 << 40;
const PUBLIC_TOKEN: u64 = TAG;
pub(super) const PREFIX_TOKEN: u64 = 2 * TAG;
const PROBE_TOKEN: u64 = 3 * TAG;
const SYNC_TOKEN: u64 = 4 * TAG;
const WAKE_TOKEN: u64 = 5 * TAG;
const TIMER_TOKEN: u64 = 6 * TAG;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("cannot bind SIP socket {addr}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot open the health probe socket: {0}")]
    Probe(io::Error),
    #[error("cannot open the sync socket: {0}")]
    Sync(io::Error),
    #[error("cannot make listen.relay_prefix local (ip route add local ... dev lo): {0}")]
    Route(io::Error),
    #[error("cannot open the HEP capture socket: {0}")]
    Hep(io::Error),
    #[error("cannot start the dataplane: {0}")]
    Runtime(io::Error),
}

/// Descriptors port-mode relay sockets must leave free besides the fixed reserve: one
/// per admin connection and one per backend's probe socket (a backend a reload adds
/// must still get one when the flows have taken all they may).
fn fd_others(cfg: &Config) -> u64 {
    (cfg.admin.max_connections + cfg.backends.len()) as u64
}

/// Port mode: raises the open-file limit (warning when `max_flows` sockets do not
/// fit) and returns how many relay sockets may be open. Prefix mode holds no
/// descriptor per flow: no budget.
fn relay_budget(cfg: &Config) -> usize {
    if cfg.listen.relay_prefix.is_some() {
        return usize::MAX;
    }
    crate::sys::fdlimit::prepare(cfg.limits.max_flows, fd_others(cfg))
        .map_or(usize::MAX, |fit| usize::try_from(fit).unwrap_or(usize::MAX))
}

/// Binds every `listen.sip` address; done before the dataplane starts so that a
/// bind error stops startup with a clear message.
pub fn bind_public(cfg: &Config) -> Result<Vec<StdUdpSocket>, DataplaneError> {
    cfg.listen
        .sip
        .iter()
        .map(|&addr| {
            bind_udp(addr, Some(cfg.listen.receive_buffer))
                .map_err(|source| DataplaneError::Bind { addr, source })
        })
        .collect()
}

pub(super) struct Shell {
    pub(super) router: Router,
    pub(super) prober: Prober,
    pub(super) metrics: MetricsHandles,
    pub(super) cfg: Config,
    relay_addrs: RelayAddrs,
    space: RelaySpace,
    public: Vec<StdUdpSocket>,
    /// Relay sockets by slot; all of them in `poll`.
    relays: Vec<Option<StdUdpSocket>>,
    /// The thread's one epoll set (see the module doc).
    poll: Epoll,
    /// The next deadline, a member of `poll` (see `sys::timer`).
    timer: Deadline,
    /// Endpoints in use: open sockets (port mode), marked slots (prefix mode).
    relays_open: usize,
    /// Port mode: relay sockets that may be open at once, so that admin connections
    /// and probe sockets still find descriptors (`sys::fdlimit`).
    relay_budget: usize,
    /// Prefix mode: the wildcard sockets, one per `listen.relay_port` (same order;
    /// their epoll token is `PREFIX_TOKEN` + that position), and the slots in use.
    /// Empty in port mode.
    prefix: relays::PrefixSockets,
    /// Relayed datagrams queued behind a refused send this turn (see `send_relayed`),
    /// sent per socket by `flush_sends`; taken out while flushing.
    out: Option<Box<SendBatch>>,
    /// The ICMP fast path wants a probe now.
    probe_now: bool,
    probe_buf: Vec<u8>,
    /// Where sipfront's own 503s are written (no allocation per reply): twice the
    /// largest datagram, since a header's trailing whitespace is held there until
    /// it is trimmed (a reply is sent only if no larger than its request).
    reply_buf: Box<[u8]>,
    /// HEP export (`[hep]`).
    hep: Option<HepExporter>,
    /// Live captures (`sipfront ctl capture`); empty unless one runs.
    live: Taps,
    /// OPTIONS probes of static peers with `probe = true`.
    peer_probes: Option<peer_probes::PeerProbes>,
    /// A reloaded sync key for the sync link.
    sync_rekey: Option<sync::Rekey>,
    /// What the kernel dropped at the public and prefix sockets.
    socket_drops: metrics::SocketDrops,
}

/// Channels into a running dataplane.
pub struct Handles {
    pub shutdown: watch::Receiver<bool>,
    pub control: ControlRx,
    /// Told once everything is set up and the loop starts; dropped unsent when the
    /// setup fails, so the caller can report the error instead of running on
    /// without a dataplane.
    pub ready: tokio::sync::oneshot::Sender<()>,
}

/// The prefix's local route, added (and removed) over netlink on a short-lived
/// runtime: the dataplane thread has none.
fn on_runtime<T>(f: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Runs the dataplane on the current thread until shutdown.
pub fn run(
    cfg: Config,
    public: Vec<StdUdpSocket>,
    mut metrics: MetricsHandles,
    status: Arc<Mutex<Status>>,
    handles: Handles,
) -> Result<(), DataplaneError> {
    let hep = match &cfg.hep {
        Some(h) => {
            // Which calls a sample takes: the same on both hosts of a pair (from the
            // sync key), else drawn per process; never a constant senders could know.
            let seed = cfg.sync.as_ref().map_or_else(crate::sys::random::u64, |s| {
                Key::new(s.key.as_bytes()).derive("hep-sample-seed")
            });
            let (exp, stats) = HepExporter::start(h, seed).map_err(DataplaneError::Hep)?;
            metrics.set_hep(stats);
            tracing::info!(collector = %h.collector, capture_id = h.capture_id, "HEP capture export on");
            Some(exp)
        }
        None => None,
    };
    let Handles {
        shutdown,
        mut control,
        ready,
    } = handles;
    let poll = Epoll::new().map_err(DataplaneError::Runtime)?;
    for (i, (s, &addr)) in public.iter().zip(&cfg.listen.sip).enumerate() {
        poll.add(s, PUBLIC_TOKEN + i as u64)
            .map_err(|source| DataplaneError::Bind { addr, source })?;
    }
    poll.add(&*control.wake, WAKE_TOKEN)
        .map_err(DataplaneError::Runtime)?;
    let timer = Deadline::new().map_err(DataplaneError::Runtime)?;
    poll.add(&timer, TIMER_TOKEN)
        .map_err(DataplaneError::Runtime)?;
    // Both peers derive the dialog keys from the sync key, so a Call-ID maps to the
    // same entry on both.
    let dialog_keys = cfg.sync.as_ref().map(|s| {
        ["dialog-sip13-k0", "dialog-sip13-k1"].map(|l| Key::new(s.key.as_bytes()).derive(l))
    });
    // Prefix mode: the wildcard sockets first (binding needs no route), so that a
    // second instance on this host fails on its relay port before it touches the
    // running one's route. Then the prefix is made local, held in a guard: an error
    // below (the sync socket) must not leave the route behind. (A panic aborts the
    // process, a SIGKILL too: the next start finds the route by its protocol number
    // and takes it over.)
    let prefix = relays::PrefixSockets::open(&cfg, &poll)?;
    let route = RouteGuard(match &cfg.listen.relay_prefix {
        Some(p) => on_runtime(crate::sys::localroute::ensure(
            crate::sys::localroute::Net {
                addr: p.net,
                len: p.len,
            },
        ))
        .map_err(DataplaneError::Route)?,
        None => None,
    });
    if let Some(p) = &cfg.listen.relay_prefix {
        tracing::info!(prefix = %p, added = route.0.is_some(), "relay prefix is local");
    }
    let router = Router::new(
        RouterConfig {
            port_start: crate::sys::random::u64(),
            ..RouterConfig::new(&cfg, dialog_keys)
        },
        &cfg.backends,
        Instant::now(),
    );
    for (at, len) in router.table_memory() {
        crate::sys::mem::advise_huge_pages(at, len);
    }
    let mut sync_link = match &cfg.sync {
        Some(sc) => Some(sync::open(sc, &cfg).map_err(DataplaneError::Sync)?),
        None => None,
    };
    if let Some(l) = &sync_link {
        poll.add(l.socket(), SYNC_TOKEN)
            .map_err(DataplaneError::Sync)?;
        if let Ok(mut st) = status.lock() {
            st.synced = false;
        }
    }
    // Probe Call-IDs and tags carry the nonce; an ICMP error or a reply counts only if
    // it shows it, so it is drawn at random (not from the clock and pid), and the
    // peer probes', which go out to the internet, are drawn apart from it.
    let nonce = crate::sys::random::u64();
    let prober = Prober::new(
        ProbeSettings::from(&cfg.health),
        backend_addrs(&router),
        Instant::now(),
        nonce,
    )
    .map_err(DataplaneError::Probe)?;
    let mut prober = prober;
    prober.tap(
        hep.as_ref()
            .is_some_and(|h| h.include_local() && h.selector.legs.backend),
    );
    poll.add(prober.poll(), PROBE_TOKEN)
        .map_err(DataplaneError::Probe)?;
    let socket_drops = metrics::SocketDrops::register(
        public.len(),
        prefix.socks().len(),
        usize::from(cfg.sync.is_some()),
    );
    let mut shell = Shell {
        router,
        prober,
        metrics,
        relay_addrs: RelayAddrs::from_listen(&cfg.listen),
        space: RelaySpace::from_config(&cfg),
        public,
        relays: (0..if cfg.listen.relay_prefix.is_some() {
            0
        } else {
            RelaySpace::from_config(&cfg).len()
        })
            .map(|_| None)
            .collect(),
        poll,
        timer,
        relays_open: 0,
        relay_budget: relay_budget(&cfg),
        prefix,
        out: Some(Box::default()),
        probe_now: false,
        probe_buf: vec![0u8; mmsg::BUF_LEN],
        reply_buf: vec![0u8; 2 * mmsg::BUF_LEN].into_boxed_slice(),
        hep,
        live: Taps::new(cfg.admin.capture.sessions),
        // Its own nonce (drawn apart: it goes out to trunks on the internet, and the
        // backend probes' must not follow from it).
        peer_probes: peer_probes::PeerProbes::new(&cfg, crate::sys::random::u64(), Instant::now()),
        sync_rekey: None,
        socket_drops,
        cfg,
    };
    {
        // Static peers' endpoints are bound from the start, on the standby too: a
        // backend can send to a carrier through either host.
        let statics: Vec<RelayPort> = shell.router.static_endpoints().collect();
        for p in statics {
            if let Err(e) = shell.open_relay(p) {
                tracing::error!(addr = p.addr, port = p.port, error = %e, "cannot bind a static peer's relay endpoint");
            }
        }
    }
    tracing::info!(
        sip = ?shell.cfg.listen.sip,
        relay = ?shell.relay_addrs,
        relay_ports = ?shell.cfg.listen.relay_ports,
        backends = shell.cfg.backends.len(),
        "dataplane running"
    );
    let _ = ready.send(());
    shell.run_loop(&mut control, &shutdown, sync_link.as_mut(), &status);
    drop(route);
    Ok(())
}

/// The relay prefix's local route this process added, removed when dropped.
struct RouteGuard(Option<crate::sys::localroute::LocalRoute>);

impl Drop for RouteGuard {
    fn drop(&mut self) {
        if let Some(r) = self.0.take()
            && let Err(e) = on_runtime(r.remove())
        {
            tracing::warn!(error = %e, "cannot remove the relay prefix's local route");
        }
    }
}

impl Shell {
    /// The loop: wait for a ready socket or the next deadline, handle every ready
    /// member once (bounded), then whatever is due.
    fn run_loop(
        &mut self,
        control: &mut ControlRx,
        shutdown: &watch::Receiver<bool>,
        mut sync: Option<&mut sync::SyncShell>,
        status: &Mutex<Status>,
    ) {
        let mut events = epoll::events();
        let mut batch: Box<RecvBatch> = Box::default();
        let start = Instant::now();
        let mut housekeeping_at = start;
        let mut peer_probe_at = Some(start);
        let mut probe_at = self.prober.poll_timeout();
        // One clock read per turn, after the wait. The timer's expiry is absolute
        // (`sys::timer`): a long turn does not delay the next deadline.
        let mut now = start;
        loop {
            let mut next = housekeeping_at;
            // The router's sweep slices and table growth steps.
            let router_at = self.router.poll_timeout();
            for t in [
                probe_at,
                peer_probe_at,
                sync.as_ref().map(|l| l.deadline()),
                router_at,
            ]
            .into_iter()
            .flatten()
            {
                next = next.min(t);
            }
            // Due now: a look that does not wait. Else the timerfd holds the deadline
            // and the wait has no timeout (see `sys::timer`).
            let waited = if self.probe_now || next <= now {
                self.poll.wait(&mut events)
            } else {
                self.timer
                    .set(next)
                    .and_then(|()| self.poll.wait_ready(&mut events))
            };
            let evs = match waited {
                Ok(evs) => evs,
                Err(e) => {
                    tracing::error!(error = %e, "waiting for sockets or the next deadline failed; the dataplane stops");
                    return;
                }
            };
            now = Instant::now();
            let mut probes = self.probe_now;
            for ev in evs {
                let token = epoll::token(ev);
                if token < TAG {
                    self.drain_relay(now, token as usize, ev, &mut batch);
                } else if token < PREFIX_TOKEN {
                    self.drain_public(now, (token - PUBLIC_TOKEN) as u16, ev, &mut batch);
                } else if token < PROBE_TOKEN {
                    self.drain_prefix(now, (token - PREFIX_TOKEN) as usize, ev, &mut batch);
                } else if token == PROBE_TOKEN {
                    probes = true;
                } else if token == SYNC_TOKEN {
                    // The sync link may close relay sockets: their sends go first.
                    self.flush_sends(now);
                    if let Some(l) = sync.as_deref_mut() {
                        l.turn(self, now, status);
                    }
                } else if token == TIMER_TOKEN {
                    self.timer.fired();
                } else if token == WAKE_TOKEN {
                    self.flush_sends(now);
                    if !control::serve(self, control) || *shutdown.borrow() {
                        return;
                    }
                }
            }
            // Before anything can close a relay socket (housekeeping, sync).
            self.flush_sends(now);
            // What is due. Datagrams handled above may have asked for a probe now.
            if probes || self.probe_now || probe_at.is_some_and(|t| t <= now) {
                self.probe_turn(now);
                probe_at = self.prober.poll_timeout();
            }
            if let Some(t) = peer_probe_at
                && t <= now
            {
                peer_probe_at = self.peer_probe_tick(now);
            }
            if let Some(l) = sync.as_deref_mut()
                && l.deadline() <= now
            {
                l.turn(self, now, status);
            }
            if housekeeping_at <= now {
                self.housekeeping(now, status, sync.as_deref().map(|l| l.socket()));
                housekeeping_at = now + HOUSEKEEPING_EVERY;
                // A dropped sender (no wake-up) ends the loop too.
                if shutdown.has_changed().is_err() || *shutdown.borrow() {
                    return;
                }
            } else if router_at.is_some_and(|t| t <= now) {
                self.sweep(now);
            }
        }
    }

    /// A ready public socket: its client datagrams ([`Shell::drain_batches`]).
    fn drain_public(
        &mut self,
        now: Instant,
        ingress: u16,
        ev: &epoll::Event,
        batch: &mut RecvBatch,
    ) {
        let Some(fd) = self.public.get(usize::from(ingress)).map(|s| s.as_raw_fd()) else {
            return;
        };
        if epoll::is_error(ev) {
            // Errors queued by ICMP for replies to clients: nothing to learn from.
            crate::sys::errqueue::drain(&fd, |_| {});
        }
        self.drain_batches(now, fd, batch, Many::Public(ingress));
    }

    /// Up to `ROUNDS` batches from a socket that carries many flows (a public socket, a
    /// prefix socket), all sharing one `now`; the set is level-triggered, so a socket
    /// with more waiting comes back. A short batch means the queue is empty: no
    /// receive for `EAGAIN`.
    pub(super) fn drain_batches(
        &mut self,
        now: Instant,
        fd: RawFd,
        batch: &mut RecvBatch,
        from: Many,
    ) {
        for _ in 0..ROUNDS {
            match batch.recv(fd) {
                Ok(got) => {
                    self.take_batch(now, batch, got, from);
                    if got < mmsg::BATCH {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // A pending socket error (ICMP) failed this receive, not the queue:
                // learn what there is to learn and read on.
                Err(_) => match from {
                    Many::Public(_) => {}
                    Many::Prefix(_) => {
                        self.on_relay_error(now, &fd);
                    }
                },
            }
        }
    }

    /// One received batch: with a large table each decision waits on cache misses, so
    /// every datagram's entries are loaded first, in two passes
    /// (`Router::prefetch_client`, then `warm_client`; the same for backends), and
    /// the misses overlap; each datagram of an established flow is then scanned and
    /// its dialog entry looked up (`prepare_client` / `prepare_backend`,
    /// `warm_dialog`), again all before the first decision; then each datagram is
    /// handled. Each datagram (and its endpoint) is read from the batch once, for all
    /// the passes.
    fn take_batch(&mut self, now: Instant, batch: &RecvBatch, got: usize, from: Many) {
        // One datagram (most turns at low rates): nothing to overlap.
        if got == 1 {
            if let Some((data, src)) = batch.get(0) {
                match from {
                    Many::Public(ingress) => self.on_client(now, ingress, src, data, None),
                    Many::Prefix(port) => {
                        let to = self.prefix_endpoint(batch, 0, port);
                        self.on_backend(now, to, src, data, None);
                    }
                }
            }
            return;
        }
        let got = got.min(mmsg::BATCH);
        let all: [Option<(&[u8], SocketAddr)>; mmsg::BATCH] =
            std::array::from_fn(|i| if i < got { batch.get(i) } else { None });
        match from {
            Many::Public(ingress) => {
                let items = all[..got].iter().flatten();
                items
                    .clone()
                    .for_each(|&(_, src)| self.router.prefetch_client(src));
                items
                    .clone()
                    .for_each(|&(_, src)| self.router.warm_client(src));
                // Then each established flow's datagram is scanned and its dialog
                // entry looked up, all back to back, before the first decision.
                let prepared: [Option<Prepared<'_>>; mmsg::BATCH] = std::array::from_fn(|i| {
                    let (data, src) = all[i]?;
                    self.router.prepare_client(src, data)
                });
                prepared
                    .iter()
                    .flatten()
                    .for_each(|p| self.router.warm_dialog(p));
                for (item, p) in all[..got].iter().zip(prepared) {
                    if let Some((data, src)) = *item {
                        self.on_client(now, ingress, src, data, p);
                    }
                }
            }
            Many::Prefix(port) => {
                let none = RelayPort {
                    addr: u32::MAX,
                    port,
                };
                let ends: [RelayPort; mmsg::BATCH] = std::array::from_fn(|i| {
                    if i < got {
                        self.prefix_endpoint(batch, i, port)
                    } else {
                        none
                    }
                });
                ends[..got]
                    .iter()
                    .for_each(|&to| self.router.prefetch_backend(to));
                ends[..got]
                    .iter()
                    .for_each(|&to| self.router.warm_backend(to));
                let prepared: [Option<Prepared<'_>>; mmsg::BATCH] = std::array::from_fn(|i| {
                    let (data, src) = all[i]?;
                    self.router.prepare_backend(ends[i], src, data)
                });
                prepared
                    .iter()
                    .flatten()
                    .for_each(|p| self.router.warm_dialog(p));
                for ((item, &to), p) in all[..got].iter().zip(&ends).zip(prepared) {
                    if let Some((data, src)) = *item {
                        self.on_backend(now, to, src, data, p);
                    }
                }
            }
        }
    }
}

/// A socket that carries many flows, as [`Shell::drain_batches`] takes it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Many {
    /// A public socket (its index): datagrams from clients.
    Public(u16),
    /// A prefix socket (its relay port): datagrams from backends to any address of
    /// the prefix.
    Prefix(u16),
}

impl Shell {
    fn on_client(
        &mut self,
        now: Instant,
        ingress: u16,
        from: SocketAddr,
        data: &[u8],
        prepared: Option<Prepared<'_>>,
    ) {
        if let Some(pp) = &mut self.peer_probes
            && pp.handle_reply(now, from, data)
        {
            return;
        }
        let (flow, relay_port, to, new_flow) = match self
            .router
            .from_client_with(now, from, ingress, data, prepared)
        {
            ClientAction::Forward {
                flow,
                relay_port,
                to,
                new_flow,
                ..
            } => (flow, relay_port, to, new_flow),
            ClientAction::Reject503 => {
                self.reply_503(now, ingress, from, data);
                return;
            }
            _ => return,
        };
        let Some(idx) = self.space.index(relay_port) else {
            self.router.send_failed();
            return;
        };
        let Some((fd, src)) = self.relay_out(now, idx, relay_port, flow, new_flow) else {
            return;
        };
        self.send_relayed(now, fd, data, to, src);
        self.tap(Way::ToBackend, ingress, from, relay_port, to, data);
    }

    /// The router's [`ClientAction::Reject503`]: a stateless 503 with Retry-After,
    /// written into `reply_buf` ([`Router::write_503`]).
    fn reply_503(&mut self, now: Instant, ingress: u16, to: SocketAddr, data: &[u8]) {
        let mut buf = std::mem::take(&mut self.reply_buf);
        let retry_after = self.cfg.health.retry_after;
        if let Some(resp) = self.router.write_503(now, data, retry_after, &mut buf) {
            match self.public.get(usize::from(ingress)) {
                Some(p) if mmsg::send_direct(p.as_raw_fd(), resp, to, None).is_ok() => {
                    self.tap_local(ingress, to, resp)
                }
                _ => self.router.send_failed(),
            }
        }
        self.reply_buf = buf;
    }

    fn on_backend(
        &mut self,
        now: Instant,
        port: RelayPort,
        from: SocketAddr,
        data: &[u8],
        prepared: Option<Prepared<'_>>,
    ) {
        if let BackendAction::Forward { to, ingress, .. } = self
            .router
            .from_backend_with(now, port, from, data, prepared)
        {
            let Some(fd) = self.public.get(usize::from(ingress)).map(|p| p.as_raw_fd()) else {
                self.router.send_failed();
                return;
            };
            self.send_relayed(now, fd, data, to, None);
            self.tap(Way::ToClient, ingress, to, port, from, data);
        }
    }

    /// Sends a relayed datagram at once, or queues it for `flush_sends` (flushing
    /// first when full) behind a queued one or when the kernel refused it. It counts
    /// as sent; a send that fails in the flush is counted then.
    ///
    /// At once, because that measured cheaper than queueing every datagram (a copy
    /// into the batch) and one `sendmmsg` per socket in port mode at 500-8,000 calls/s,
    /// and no dearer (within the spread) in prefix mode at 3000 calls/s and at
    /// 20,000-60,000 requests/s (see the journal, session 19).
    fn send_relayed(
        &mut self,
        now: Instant,
        fd: RawFd,
        data: &[u8],
        to: SocketAddr,
        src: Option<IpAddr>,
    ) {
        if self.out.as_ref().is_none_or(|o| o.is_empty()) {
            let Err(e) = mmsg::send_direct(fd, data, to, src) else {
                return;
            };
            // Refused: learn from the error queue and decide as a flush would.
            if !mmsg::worth_resending(&e, || self.on_relay_error(now, &fd) > 0) {
                self.router.send_failed();
                return;
            }
            // Queued: the flush sends it again at the turn's end (retrying as for
            // any refused send), and this turn's later datagrams queue behind it.
        }
        if self
            .out
            .as_mut()
            .is_some_and(|o| o.push_from(fd, data, to, src))
        {
            return;
        }
        self.flush_sends(now);
        if !self
            .out
            .get_or_insert_default()
            .push_from(fd, data, to, src)
        {
            self.router.send_failed();
        }
    }

    /// Sends the queued datagrams, one `sendmmsg` per socket. A pending ICMP error
    /// (IP_RECVERR) fails one send: learn from it, then send that one again (again
    /// while more arrive, a few times at most).
    fn flush_sends(&mut self, now: Instant) {
        let Some(mut out) = self.out.take() else {
            return;
        };
        if !out.is_empty() {
            let lost = out.flush(|fd| self.on_relay_error(now, &fd) > 0);
            for _ in 0..lost {
                self.router.send_failed();
            }
        }
        self.out = Some(out);
    }
}
