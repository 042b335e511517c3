//! The thin tokio shell around [`Router`] and the health [`Prober`]: it owns the
//! sockets and the clock, feeds datagrams in, and sends what the router decides.
//!
//! Everything runs on one thread (a current-thread runtime with a `LocalSet`): the
//! router needs no lock, and a datagram is received, routed and sent without a
//! hand-off between threads. One batch of receive buffers serves all sockets, so a
//! flow costs its socket and an epoll entry, not a task or 64 KiB. Relay sockets:
//! `relays.rs`; probes, housekeeping, reload: `tasks.rs`.

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, Ready};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::LocalSet;

mod capture;
mod control;
mod metrics;
mod peer_probes;
mod relays;
mod status;
mod sync;
mod tasks;

pub use control::{BanInfo, Control, FlowInfo, TopInfo};
pub use metrics::MetricsHandles;
pub use status::{BackendInfo, PeerInfo, Readiness, STALE, Status};

use capture::Way;
use relays::relay_reactor;
use tasks::{backend_addrs, housekeeping, probe_loop};

use crate::capture::HepExporter;
use crate::capture::live::Taps;
use crate::config::Config;
use crate::health::checker::ProbeSettings;
use crate::health::prober::Prober;
use crate::relay::port::RelayAddrs;
use crate::relay::router::RouterConfig;
use crate::relay::{BackendAction, ClientAction, RelayPort, RelaySpace, Router};
use crate::sip::response::build_response;
use crate::sync::Key;
use crate::sys::epoll::Epoll;
use crate::sys::mmsg::{self, RecvBatch};
use crate::sys::socket::{bind_udp, send_now};

/// `recvmmsg` batches per wake-up before other sockets get a turn.
const ROUNDS: usize = 4;
const PUBLIC_RCVBUF: usize = 8 << 20;

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
    #[error("cannot start the dataplane runtime: {0}")]
    Runtime(io::Error),
}

/// Binds every `listen.sip` address; done before the dataplane starts so that a
/// bind error stops startup with a clear message.
pub fn bind_public(cfg: &Config) -> Result<Vec<StdUdpSocket>, DataplaneError> {
    cfg.listen
        .sip
        .iter()
        .map(|&addr| {
            bind_udp(addr, Some(PUBLIC_RCVBUF))
                .map_err(|source| DataplaneError::Bind { addr, source })
        })
        .collect()
}

/// A socket in the reactor for reading only. tokio's own `UdpSocket` also registers
/// for writability, and on loopback every send then wakes the reactor once more
/// (EPOLLOUT as the sent datagram's buffer space is freed): a third more
/// `epoll_wait` calls for nothing, since sends never wait (see `send_now`).
type Sock = AsyncFd<StdUdpSocket>;

fn register<T: AsRawFd>(s: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: callers pass types that own their descriptor (sockets, the epoll set),
    // and the AsyncFd owns them, so the descriptor stays open and the same for as
    // long as it is registered.
    unsafe { AsyncFd::register_with_interest(s, Interest::READABLE | Interest::ERROR) }
        .map_err(io::Error::from)
}

pub(super) struct Shell {
    pub(super) router: Router,
    pub(super) prober: Prober,
    pub(super) metrics: MetricsHandles,
    pub(super) cfg: Config,
    relay_addrs: RelayAddrs,
    space: RelaySpace,
    public: Vec<Rc<Sock>>,
    /// Relay sockets by slot; all of them in `relay_poll`, drained by one task.
    relays: Vec<Option<StdUdpSocket>>,
    relay_poll: Rc<AsyncFd<Epoll>>,
    /// Endpoints in use: open sockets (port mode), marked slots (prefix mode).
    relays_open: usize,
    /// Prefix mode: the wildcard sockets, one per `listen.relay_port` (same order;
    /// their epoll token is that position), and the slots in use. Empty in port mode.
    prefix: relays::PrefixSockets,
    /// Taken out while a batch is handled (the handlers borrow the shell mutably).
    batch: Option<Box<RecvBatch>>,
    /// Wakes the probe task when the ICMP fast path wants a probe now.
    probe_wake: Rc<Notify>,
    /// HEP export (`[hep]`).
    hep: Option<HepExporter>,
    /// Live captures (`sipfront ctl capture`); empty unless one runs.
    live: Taps,
    /// OPTIONS probes of static peers with `probe = true`.
    peer_probes: Option<peer_probes::PeerProbes>,
    /// A reloaded sync key for the sync task to hand to its link.
    sync_rekey: Option<sync::Rekey>,
}

type Shared = Rc<RefCell<Shell>>;

/// Channels into a running dataplane.
pub struct Handles {
    pub shutdown: watch::Receiver<bool>,
    pub control: mpsc::Receiver<Control>,
}

/// Runs the dataplane on the current thread until shutdown.
pub fn run(
    cfg: Config,
    public: Vec<StdUdpSocket>,
    metrics: MetricsHandles,
    status: Arc<Mutex<Status>>,
    handles: Handles,
) -> Result<(), DataplaneError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DataplaneError::Runtime)?;
    let local = LocalSet::new();
    local.block_on(&rt, serve(cfg, public, metrics, status, handles))
}

async fn serve(
    cfg: Config,
    public: Vec<StdUdpSocket>,
    mut metrics: MetricsHandles,
    status: Arc<Mutex<Status>>,
    handles: Handles,
) -> Result<(), DataplaneError> {
    let hep = match &cfg.hep {
        Some(h) => {
            let (exp, stats) = HepExporter::start(h).map_err(DataplaneError::Hep)?;
            metrics.set_hep(stats);
            tracing::info!(collector = %h.collector, capture_id = h.capture_id, "HEP capture export on");
            Some(exp)
        }
        None => None,
    };
    let Handles {
        mut shutdown,
        control,
    } = handles;
    let public = public
        .into_iter()
        .zip(&cfg.listen.sip)
        .map(|(s, &addr)| {
            register(s)
                .map(Rc::new)
                .map_err(|source| DataplaneError::Bind { addr, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let relay_poll = Rc::new(
        Epoll::new()
            .and_then(register)
            .map_err(DataplaneError::Runtime)?,
    );
    // Both peers derive the dialog keys from the sync key, so a Call-ID maps to the
    // same entry on both.
    let dialog_keys = cfg.sync.as_ref().map(|s| {
        ["dialog-k0", "dialog-k1", "dialog-k2", "dialog-k3"]
            .map(|l| Key::new(s.key.as_bytes()).derive(l))
    });
    // Prefix mode: the prefix must be local before the wildcard sockets can use it.
    let route = match &cfg.listen.relay_prefix {
        Some(p) => crate::sys::localroute::ensure(p.net, p.len, p.nth(0).unwrap_or(p.net))
            .await
            .map_err(DataplaneError::Route)?,
        None => None,
    };
    if let Some(p) = &cfg.listen.relay_prefix {
        tracing::info!(prefix = %p, added = route.is_some(), "relay prefix is local");
    }
    let router = Router::new(
        RouterConfig::new(&cfg, dialog_keys),
        &cfg.backends,
        Instant::now(),
    );
    let sync_link = match &cfg.sync {
        Some(sc) => Some(sync::open(sc, &cfg).map_err(DataplaneError::Sync)?),
        None => None,
    };
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()) << 32;
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
    let shell: Shared = Rc::new(RefCell::new(Shell {
        router,
        prober,
        metrics,
        relay_addrs: RelayAddrs::from_listen(&cfg.listen),
        space: RelaySpace::from_config(&cfg),
        public: public.clone(),
        relays: (0..if cfg.listen.relay_prefix.is_some() {
            0
        } else {
            RelaySpace::from_config(&cfg).len()
        })
            .map(|_| None)
            .collect(),
        relay_poll: relay_poll.clone(),
        relays_open: 0,
        prefix: relays::PrefixSockets::open(&cfg, relay_poll.get_ref())?,
        batch: Some(Box::default()),
        probe_wake: Rc::new(Notify::new()),
        hep,
        live: Taps::default(),
        // Its own nonce: its Call-IDs never match a backend probe's.
        peer_probes: peer_probes::PeerProbes::new(
            &cfg,
            nonce.rotate_left(17) ^ 0x9e37,
            Instant::now(),
        ),
        sync_rekey: None,
        cfg,
    }));
    for (i, sock) in public.into_iter().enumerate() {
        tokio::task::spawn_local(public_loop(shell.clone(), i as u16, sock));
    }
    {
        // Static peers' endpoints are bound from the start, on the standby too: a
        // backend can send to a carrier through either host.
        let mut s = shell.borrow_mut();
        let statics: Vec<RelayPort> = s.router.static_endpoints().collect();
        for p in statics {
            if let Err(e) = s.open_relay(p) {
                tracing::error!(addr = p.addr, port = p.port, error = %e, "cannot bind a static peer's relay endpoint");
            }
        }
    }
    tokio::task::spawn_local(relay_reactor(shell.clone(), relay_poll));
    tokio::task::spawn_local(probe_loop(shell.clone()));
    tokio::task::spawn_local(peer_probes::peer_probe_loop(shell.clone()));
    tokio::task::spawn_local(housekeeping(shell.clone(), status.clone()));
    tokio::task::spawn_local(control::serve(shell.clone(), control));
    if let Some(link) = sync_link {
        if let Ok(mut st) = status.lock() {
            st.synced = false;
        }
        tokio::task::spawn_local(sync::run(shell.clone(), link, status.clone()));
    }
    {
        let s = shell.borrow();
        tracing::info!(
            sip = ?s.cfg.listen.sip,
            relay = ?s.relay_addrs,
            relay_ports = ?s.cfg.listen.relay_ports,
            backends = s.cfg.backends.len(),
            "dataplane running"
        );
    }
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    if let Some(r) = route
        && let Err(e) = r.remove().await
    {
        tracing::warn!(error = %e, "cannot remove the relay prefix's local route");
    }
    Ok(())
}

/// Receives client datagrams on public socket `ingress` until it fails, with the
/// shell borrowed per wake-up. A wake-up shares one `now`; after `ROUNDS` full
/// batches other sockets get a turn.
async fn public_loop(shell: Shared, ingress: u16, sock: Rc<Sock>) {
    let fd = sock.as_raw_fd();
    loop {
        // An ICMP error alone does not make a socket readable: wait for both.
        let mut ready = match sock.ready(Interest::READABLE | Interest::ERROR).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "socket failed");
                return;
            }
        };
        let drained = {
            let mut guard = shell.borrow_mut();
            let s = &mut *guard;
            let now = Instant::now();
            if ready.ready().is_error() {
                // Errors queued by ICMP for replies to clients: nothing to learn from.
                ready.clear_ready_matching(Ready::ERROR);
            }
            // Always put back below; a fresh one only if a panicking handler lost it.
            let mut batch = s.batch.take().unwrap_or_default();
            let mut drained = false;
            for _ in 0..ROUNDS {
                match batch.recv(fd) {
                    Ok(got) => {
                        for i in 0..got {
                            if let Some((data, from)) = batch.get(i) {
                                s.on_client(now, ingress, from, data);
                            }
                        }
                        // A short batch means the queue was empty: clear readiness now
                        // instead of paying a receive for EAGAIN.
                        if got < mmsg::BATCH {
                            ready.clear_ready_matching(Ready::READABLE);
                            drained = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready.clear_ready_matching(Ready::READABLE);
                        drained = true;
                        break;
                    }
                    // A pending socket error: nothing to learn, read on.
                    Err(_) => {}
                }
            }
            s.batch = Some(batch);
            drained
        };
        drop(ready);
        if !drained {
            // Still readable: tokio's readiness futures do not count against the
            // task budget, so without this a flood would never let the relay
            // reactor, probes, housekeeping or sync run.
            tokio::task::yield_now().await;
        }
    }
}

impl Shell {
    fn on_client(&mut self, now: Instant, ingress: u16, from: SocketAddr, data: &[u8]) {
        if let Some(pp) = &mut self.peer_probes
            && pp.handle_reply(now, from, data)
        {
            return;
        }
        let (flow, relay_port, to, new_flow) =
            match self.router.from_client(now, from, ingress, data) {
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
        if self.prefix.is_on() {
            if new_flow {
                self.mark_relay(idx, true);
            }
            self.send_prefix(now, relay_port, to, data);
            return;
        }
        if new_flow && let Err(e) = self.open_relay(relay_port) {
            tracing::debug!(port = relay_port.port, error = %e, "relay bind failed");
            self.router.bind_failed(flow);
            return;
        }
        if self.relays[idx].is_none() {
            // The socket could not be opened before (a mirrored flow's pre-bind, or a
            // port that was still closing): try again rather than black-hole the flow.
            if let Err(e) = self.open_relay(relay_port) {
                tracing::debug!(port = relay_port.port, error = %e, "relay reopen failed");
                self.router.send_failed();
                return;
            }
        }
        let Some(relay) = &self.relays[idx] else {
            self.router.send_failed();
            return;
        };
        if send_now(relay, data, to).is_err() {
            // A pending ICMP error (IP_RECVERR) fails one send: learn from it, then
            // send once more.
            let fd = relay.as_raw_fd();
            self.on_relay_error(now, &fd);
            let resent = self.relays[idx].as_ref().map(|r| send_now(r, data, to));
            if !matches!(resent, Some(Ok(_))) {
                self.router.send_failed();
                return;
            }
        }
        self.tap(Way::ToBackend, ingress, from, relay_port, to, data);
    }

    /// The router's [`ClientAction::Reject503`]: a stateless 503 with Retry-After.
    fn reply_503(&mut self, now: Instant, ingress: u16, to: SocketAddr, data: &[u8]) {
        let retry = self.cfg.health.retry_after.to_string();
        let Some(resp) = build_response(
            data,
            503,
            "Service Unavailable",
            Some("sipfront-503"),
            &[("Retry-After", &retry)],
            None,
        ) else {
            return;
        };
        // Never an amplifier: a reply larger than the request is not sent.
        if resp.len() > data.len() {
            self.router.reply_suppressed();
            return;
        }
        if !self.router.replied_503(now) {
            return;
        }
        match self.public.get(usize::from(ingress)) {
            Some(p) if send_now(p.get_ref(), &resp, to).is_ok() => {
                self.tap_local(ingress, to, &resp);
            }
            _ => self.router.send_failed(),
        }
    }

    fn on_backend(&mut self, now: Instant, port: RelayPort, from: SocketAddr, data: &[u8]) {
        if let BackendAction::Forward { to, ingress, .. } =
            self.router.from_backend(now, port, from, data)
        {
            let sent = self
                .public
                .get(usize::from(ingress))
                .map(|p| send_now(p.get_ref(), data, to));
            if !matches!(sent, Some(Ok(_))) {
                self.router.send_failed();
                return;
            }
            self.tap(Way::ToClient, ingress, to, port, from, data);
        }
    }
}
