//! The VRRP speaker's tokio shell: it owns the raw socket, the netlink handle and
//! the GARP socket, feeds adverts and the time into the [`Machine`], sends what it
//! asks for and applies its events (VIPs, gratuitous ARP, logs, metrics).
//!
//! It runs on a thread of its own with a current-thread runtime, and nothing else
//! runs there: adverts go out on time whatever the admin endpoint or the dataplane
//! are doing. What received packets make it do is bounded by time ([`super::throttle`]):
//! adverts are not authenticated, and in multicast mode anyone on the segment can
//! send them.
//!
//! It runs in the same process as the dataplane and tracks it: while the dataplane
//! has not refreshed its status recently, or no backend is up, the priority drops by
//! `track_backends`, so a peer that can still forward takes the address.

use std::net::Ipv4Addr;

use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, counter, gauge};
use tokio::sync::oneshot;

use super::garp::GarpSocket;
use super::iface::{self, Iface};
use super::machine::{Cause, Event, Input, Machine, Settings, State};
use super::packet::{Packet, PacketError, Repr};
use super::speaker::{Speaker, parse_ipv4};
use super::throttle::GarpSchedule;
use super::vip::{VipDone, VipError, VipOp, VipRequests, Vips, worker};
use super::{Discard, PRIORITY_OWNER, check_advert};
use crate::config::Vrrp;
use crate::throttle::LogThrottle;

/// How often the dataplane's health is looked at for priority tracking.
const TRACK_EVERY: Duration = Duration::from_millis(100);
/// VIPs are added with this lifetime and renewed every [`VIP_RENEW`] while master:
/// a master that dies without cleaning up loses them within seconds.
const VIP_LIFETIME_SECS: u32 = 3;
const VIP_RENEW: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    #[error("vrrp.interface `{name}`: {source}")]
    Interface {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot open the VRRP socket on {name} (needs CAP_NET_RAW): {source}")]
    Socket {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot open the gratuitous ARP socket (needs CAP_NET_RAW): {0}")]
    Garp(std::io::Error),
    #[error("cannot open netlink (needs CAP_NET_ADMIN): {0}")]
    Netlink(#[from] VipError),
    #[error("vrrp settings: {0}")]
    Settings(#[from] super::SettingsError),
    #[error("cannot start the vrrp thread: {0}")]
    Runtime(std::io::Error),
}

/// The running speaker, on a thread of its own: `stop` hands over (priority 0, VIPs
/// removed) and waits for the thread. Dropped without `stop`, the thread hands over
/// by itself.
pub struct VrrpHandle {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Closed when the speaker's thread ends, asked to or not.
    ended: Option<oneshot::Receiver<()>>,
}

impl VrrpHandle {
    /// Closed when the speaker has ended: on its own (a socket error, say) unless
    /// [`VrrpHandle::stop`] came first. The host then takes no part in the election any
    /// more, and must not go on as if it did.
    pub fn take_ended(&mut self) -> Option<oneshot::Receiver<()>> {
        self.ended.take()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            match tokio::task::spawn_blocking(move || t.join()).await {
                Ok(Ok(())) => {}
                _ => tracing::error!("vrrp thread panicked"),
            }
        }
    }
}

fn settings(cfg: &Vrrp, iface: &Iface) -> Settings {
    Settings {
        vrid: cfg.vrid,
        priority: cfg.priority,
        advert_interval: cfg.advert_interval,
        preempt: cfg.preempt,
        preempt_delay: cfg.preempt_delay,
        primary_ip: iface.primary,
        accept_mode: false,
        vips: cfg.vips.iter().map(|v| v.addr).collect(),
    }
}

/// What priority tracking looks at, read from the dataplane every [`TRACK_EVERY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// The dataplane runs and some backend takes traffic.
    pub healthy: bool,
    /// It holds the sync peer's full table (always true without `[sync]`).
    pub synced: bool,
}

/// Reads [`Tracked`] at a given time; the server wires it to the dataplane status.
/// `None`: not readable right now without waiting (the speaker never blocks on the
/// dataplane); after [`TRACK_BUSY_LIMIT`] such reads in a row it counts as unhealthy.
pub type TrackFn = Box<dyn Fn(Instant) -> Option<Tracked> + Send + Sync>;

/// Consecutive unreadable [`TrackFn`] reads (one per [`TRACK_EVERY`]) after which the
/// dataplane counts as unhealthy.
const TRACK_BUSY_LIMIT: u32 = 10;
/// Datagrams read per wake-up before the loop yields (timers first, then more).
const RX_BATCH: usize = 64;
/// Gratuitous ARP bursts asked for by received adverts keep this gap.
const GARP_MIN_GAP: Duration = Duration::from_secs(1);
/// Takeover bursts at most this often (a machine flipped by adverts as fast as they
/// come); a real takeover waits at most this long for its burst.
const TAKEOVER_GARP_GAP: Duration = Duration::from_millis(100);
/// Warnings that received packets cause are written at most this often (with a count).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Opens the sockets on a thread of its own (errors stop startup) and runs the speaker
/// there, on a current-thread runtime where nothing else runs: a slow admin request
/// or a busy dataplane cannot delay an advert.
pub async fn start(cfg: Vrrp, track: TrackFn) -> Result<VrrpHandle, VrrpError> {
    if cfg.peers.is_empty() {
        tracing::warn!(
            interface = %cfg.interface,
            "vrrp in multicast mode without `peers`: any host on the segment can take part \
             in the election (VRRP adverts are not authenticated; a priority 254 advert \
             takes the addresses); set vrrp.peers to accept adverts from the peers only"
        );
    }
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let (ended_tx, ended_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("sipfront-vrrp".into())
        .spawn(move || {
            // Dropped when the thread ends, however it ends.
            let _ended = ended_tx;
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(VrrpError::Runtime(e)));
                    return;
                }
            };
            rt.block_on(async move {
                match VrrpInstance::open(cfg, track).await {
                    Ok(v) => {
                        if ready_tx.send(Ok(())).is_ok() {
                            v.run(stop_rx).await;
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(VrrpError::Runtime)?;
    match ready_rx.await {
        Ok(Ok(())) => Ok(VrrpHandle {
            stop: Some(stop_tx),
            thread: Some(thread),
            ended: Some(ended_rx),
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(VrrpError::Runtime(std::io::Error::other(
            "the vrrp thread ended during startup",
        ))),
    }
}

/// The speaker's metrics: handles registered once; names and labels are what the
/// dashboard, the alerts and the tests use.
struct Metrics {
    state: Gauge,
    sent: Counter,
    received: Counter,
    garp: Counter,
    other_master: Counter,
    /// By reason; the known reasons are registered at start, others when first seen.
    dropped: Vec<(&'static str, Counter)>,
    /// By (to, cause), registered when first taken.
    transitions: Vec<((State, Cause), Counter)>,
}

const DROP_REASONS: &[&str] = &["bad_ip", "not_peer", "zero_not_master", "send_failed"];

impl Metrics {
    fn register() -> Metrics {
        let packet = [
            PacketError::Truncated,
            PacketError::BadVersion,
            PacketError::BadType,
            PacketError::BadLength,
            PacketError::BadChecksum,
            PacketError::BadInterval,
        ]
        .map(PacketError::as_str);
        let checks = [
            Discard::BadTtl,
            Discard::OtherVrid,
            Discard::OwnAdvert,
            Discard::AddrMismatch,
        ]
        .map(Discard::as_str);
        let dropped = DROP_REASONS
            .iter()
            .chain(&packet)
            .chain(&checks)
            .map(|&r| (r, Self::dropped_counter(r)))
            .collect();
        Metrics {
            state: gauge!("sipfront_vrrp_state"),
            sent: counter!("sipfront_vrrp_adverts_total", "dir" => "sent"),
            received: counter!("sipfront_vrrp_adverts_total", "dir" => "received"),
            garp: counter!("sipfront_vrrp_garp_total"),
            other_master: counter!("sipfront_vrrp_other_master_total"),
            dropped,
            transitions: Vec::new(),
        }
    }

    fn dropped_counter(reason: &'static str) -> Counter {
        counter!("sipfront_vrrp_adverts_dropped_total", "reason" => reason)
    }

    fn drop(&mut self, reason: &'static str) {
        match self.dropped.iter().find(|(r, _)| *r == reason) {
            Some((_, c)) => c.increment(1),
            None => {
                let c = Self::dropped_counter(reason);
                c.increment(1);
                self.dropped.push((reason, c));
            }
        }
    }

    fn transition(&mut self, state: State, cause: Cause) {
        self.state.set(state_value(state));
        match self.transitions.iter().find(|(k, _)| *k == (state, cause)) {
            Some((_, c)) => c.increment(1),
            None => {
                let c = counter!("sipfront_vrrp_transitions_total",
                    "to" => state.as_str(), "cause" => cause.as_str());
                c.increment(1);
                self.transitions.push(((state, cause), c));
            }
        }
    }
}

/// One virtual router (keepalived's `vrrp_instance`): the [`Machine`] and everything
/// it acts through. Runs alone on the speaker thread.
struct VrrpInstance {
    machine: Machine,
    speaker: Speaker,
    garp: GarpSocket,
    /// VIP changes, run by [`worker`] so the advert loop never waits on netlink
    /// (the latest request wins).
    vip_ops: VipRequests,
    vip_worker: tokio::task::JoinHandle<()>,
    vip_done: VipDone,
    /// Mastership asked the worker to add the VIPs, and its round has not come back:
    /// the takeover's ARP waits for it (announcing an address before it is on the
    /// interface sends the clients' traffic to a host that drops it).
    awaiting_add: bool,
    /// The takeover's ARP burst, held until the add is done.
    garp_held: bool,
    cfg: Vrrp,
    iface: Iface,
    track: TrackFn,
    /// Unreadable [`TrackFn`] reads in a row.
    track_busy: u32,
    /// Gratuitous ARP bursts: at most one pending.
    garp_schedule: GarpSchedule,
    /// The machine just became master: its next [`Event::SendGarp`] is the takeover's.
    takeover: bool,
    next_refresh: Option<Instant>,
    /// When to renew the VIPs' lifetime (while master).
    next_renew: Option<Instant>,
    last_priority: u8,
    synced: bool,
    metrics: Metrics,
    warn_other_master: LogThrottle,
    warn_stray_zero: LogThrottle,
    /// Adverts dropped by the receive checks: one line per `WARN_EVERY`.
    warn_dropped: LogThrottle,
    warn_send_failed: LogThrottle,
    warn_garp_failed: LogThrottle,
    /// Transitions: 10 lines at once, then at most one per second (adverts can flip
    /// the machine as fast as they arrive); the metric counts every one.
    warn_transition: LogThrottle,
}

fn state_value(s: State) -> f64 {
    match s {
        State::Initialize => 0.0,
        State::Backup => 1.0,
        State::Master => 2.0,
    }
}

impl VrrpInstance {
    /// Opens the sockets and removes VIPs a crash may have left behind. Runs on the
    /// speaker thread's runtime (the sockets register with it).
    async fn open(cfg: Vrrp, track: TrackFn) -> Result<VrrpInstance, VrrpError> {
        let vip_addrs: Vec<Ipv4Addr> = cfg.vips.iter().map(|v| v.addr).collect();
        let iface =
            iface::lookup(&cfg.interface, &vip_addrs).map_err(|source| VrrpError::Interface {
                name: cfg.interface.clone(),
                source,
            })?;
        let settings = settings(&cfg, &iface);
        settings.validate()?;
        let speaker = Speaker::open(&iface, &cfg.peers).map_err(|source| VrrpError::Socket {
            name: cfg.interface.clone(),
            source,
        })?;
        let garp = GarpSocket::open(iface.index).map_err(VrrpError::Garp)?;
        let vips = Vips::open(&cfg.interface)?;
        // A crash as master may have left the VIPs behind: start clean, as a backup.
        for v in &cfg.vips {
            match tokio::time::timeout(super::vip::NETLINK_TIMEOUT, vips.remove(v)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(vip = %v, error = %e, "could not remove a stale VIP"),
                Err(_) => tracing::warn!(vip = %v, "no netlink answer removing a stale VIP"),
            }
        }
        let (vip_ops, rx) = tokio::sync::watch::channel(VipOp::Remove);
        let (done_tx, vip_done) = tokio::sync::watch::channel(VipOp::Remove);
        let vip_worker = tokio::spawn(worker(
            vips,
            cfg.vips.clone(),
            VIP_LIFETIME_SECS,
            rx,
            done_tx,
        ));
        tracing::info!(
            interface = %iface.name,
            primary = %iface.primary,
            vrid = cfg.vrid,
            priority = cfg.priority,
            dests = ?speaker.dests(),
            "vrrp speaker starting"
        );
        Ok(VrrpInstance {
            machine: Machine::new(settings, Instant::now()),
            speaker,
            garp,
            vip_ops,
            vip_worker,
            vip_done,
            awaiting_add: false,
            garp_held: false,
            cfg,
            iface,
            track,
            track_busy: 0,
            garp_schedule: GarpSchedule::new(GARP_MIN_GAP, TAKEOVER_GARP_GAP),
            takeover: false,
            next_refresh: None,
            next_renew: None,
            last_priority: 0,
            synced: true,
            metrics: Metrics::register(),
            warn_other_master: LogThrottle::new(WARN_EVERY),
            warn_stray_zero: LogThrottle::new(WARN_EVERY),
            warn_dropped: LogThrottle::new(WARN_EVERY),
            warn_send_failed: LogThrottle::new(WARN_EVERY),
            warn_garp_failed: LogThrottle::new(WARN_EVERY),
            warn_transition: LogThrottle::with_burst(Duration::from_secs(1), 10),
        })
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        self.metrics.state.set(0.0);
        self.machine.handle_input(Instant::now(), Input::Startup);
        self.flush().await;
        let mut buf = vec![0u8; 2048];
        let mut track = tokio::time::interval(TRACK_EVERY);
        track.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // More datagrams than one batch were waiting: read on after a yield.
        let mut backlog = false;
        loop {
            let deadline = [
                self.machine.poll_timeout(),
                self.garp_schedule.due(),
                self.next_refresh,
                self.next_renew,
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // Stop and timers before reading: a flood cannot delay an advert.
                biased;
                _ = &mut stop => break,
                _ = sleep => {}
                _ = track.tick() => self.track(),
                // The VIP worker is gone (whatever the state): no address would be
                // added, renewed or removed any more. The speaker ends, and so the
                // process.
                () = self.vip_ops.closed() => {
                    tracing::error!("vrrp VIP worker ended; stopping the speaker");
                    break;
                }
                // (An error: the worker ended, which the branch above acts on.)
                r = self.vip_done.changed(), if self.awaiting_add => {
                    if r.is_ok() && *self.vip_done.borrow_and_update() == VipOp::Add {
                        self.awaiting_add = false;
                        if std::mem::take(&mut self.garp_held) {
                            self.takeover_garp(Instant::now());
                        }
                    }
                }
                _ = tokio::task::yield_now(), if backlog => {
                    backlog = self.receive(&mut buf);
                }
                r = self.speaker.readable(), if !backlog => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "vrrp socket failed");
                        break;
                    }
                    backlog = self.receive(&mut buf);
                }
            }
            let now = Instant::now();
            self.machine.handle_timeout(now);
            self.garp_timers(now);
            // The advert first: a renewal is queued for the VIP worker, never awaited.
            self.flush().await;
            if let Some(n) = self.warn_transition.overdue(now) {
                tracing::warn!(
                    state = self.machine.state().as_str(),
                    transitions_not_logged = n,
                    "vrrp transitions came faster than one per second; see sipfront_vrrp_transitions_total"
                );
            }
            if self.next_renew.is_some_and(|t| t <= now) {
                self.next_renew = Some(now + VIP_RENEW);
                self.vip_ops.send_replace(VipOp::Add);
            }
        }
        // Hand over: priority 0 tells the backup to take over after Skew_Time only.
        self.machine.handle_input(Instant::now(), Input::Shutdown);
        self.flush().await;
        // The VIPs must be gone before the process exits: let the worker finish.
        drop(self.vip_ops);
        let _ = self.vip_worker.await;
        self.metrics.state.set(0.0);
        tracing::info!("vrrp speaker stopped");
    }

    /// The takeover's ARP: a burst now, the next after `garp_delay`.
    fn takeover_garp(&mut self, now: Instant) {
        if self.garp_schedule.takeover(now, self.cfg.garp_delay) {
            self.send_garp();
        }
        self.next_refresh = self.cfg.garp_refresh.map(|r| now + r);
    }

    /// A received datagram dropped for `reason` (from `src`): counted, and a warning at
    /// most every `WARN_EVERY` (RFC 5798 §7.1: a mismatched address list SHOULD be
    /// logged; other reasons say why two hosts may both be master).
    fn dropped(&mut self, reason: &'static str, src: Option<Ipv4Addr>) {
        self.metrics.drop(reason);
        // Another group's adverts on the segment, or ours reflected by a switch, are
        // normal: counted only, so the lines that explain two masters stand out. Not
        // another VRID from a listed peer: that is a misconfigured pair.
        let from_peer = src.is_some_and(|s| self.cfg.peers.contains(&s));
        let routine = reason == Discard::OwnAdvert.as_str()
            || (reason == Discard::OtherVrid.as_str() && !from_peer);
        if routine {
            return;
        }
        if let Some(more) = self.warn_dropped.allow(Instant::now()) {
            tracing::warn!(
                reason,
                src = ?src,
                not_logged_before = more,
                "vrrp packet dropped: see sipfront_vrrp_adverts_dropped_total{{reason}}"
            );
        }
    }

    /// Reads up to [`RX_BATCH`] datagrams; true if there may be more.
    fn receive(&mut self, buf: &mut [u8]) -> bool {
        for _ in 0..RX_BATCH {
            let data = match self.speaker.try_recv(buf) {
                Ok(Some(d)) => d,
                Ok(None) => return false,
                Err(e) => {
                    tracing::debug!(error = %e, "vrrp recv");
                    return false;
                }
            };
            let Some(ip) = parse_ipv4(data) else {
                self.dropped("bad_ip", None);
                continue;
            };
            if ip.src == self.iface.primary {
                // Ours back (multicast loop is off), or another's forged with our source.
                self.dropped(Discard::OwnAdvert.as_str(), Some(ip.src));
                continue;
            }
            // The source filter: with `peers`, nobody else takes part.
            if !self.cfg.peers.is_empty() && !self.cfg.peers.contains(&ip.src) {
                self.dropped("not_peer", Some(ip.src));
                continue;
            }
            let parsed =
                Packet::new_checked(ip.payload).and_then(|p| Repr::parse(&p, ip.src, ip.dst));
            let repr = match parsed {
                Ok((repr, _kind)) => repr,
                Err(e) => {
                    self.dropped(e.as_str(), Some(ip.src));
                    continue;
                }
            };
            if let Err(d) = check_advert(self.machine.settings(), ip.src, ip.ttl, &repr) {
                self.dropped(d.as_str(), Some(ip.src));
                continue;
            }
            // A stray priority 0 is counted as dropped (by the machine's event).
            if !self.machine.is_stray_zero(ip.src, &repr) {
                self.metrics.received.increment(1);
            }
            self.machine.handle_input(
                Instant::now(),
                Input::Advert {
                    src: ip.src,
                    repr: &repr,
                },
            );
        }
        true
    }

    /// Priority tracking: no backend up, or a dataplane that stopped reporting, costs
    /// `track_backends` points.
    fn track(&mut self) {
        let read = (self.track)(Instant::now());
        let Tracked { healthy, synced } = match read {
            Some(t) => {
                self.track_busy = 0;
                t
            }
            None => {
                self.track_busy += 1;
                if self.track_busy < TRACK_BUSY_LIMIT {
                    return;
                }
                Tracked {
                    healthy: false,
                    synced: self.synced,
                }
            }
        };
        if synced != self.synced {
            // A node without the peer's table must not take the address from a
            // master that has it (it still takes over if the master dies).
            self.synced = synced;
            self.machine
                .handle_input(Instant::now(), Input::HoldPreempt(!synced));
            if synced {
                tracing::info!("sync complete: vrrp preemption allowed");
            } else {
                tracing::info!("no full table from the sync peer yet: vrrp preemption held");
            }
        }
        if self.cfg.track_backends == 0 || self.cfg.priority == PRIORITY_OWNER {
            return;
        }
        let p = if healthy {
            self.cfg.priority
        } else {
            self.cfg
                .priority
                .saturating_sub(self.cfg.track_backends)
                .max(1)
        };
        if p != self.last_priority {
            if self.last_priority != 0 {
                tracing::warn!(
                    priority = p,
                    healthy,
                    "vrrp priority changed by backend tracking"
                );
            }
            self.last_priority = p;
            self.machine
                .handle_input(Instant::now(), Input::SetPriority(p));
        }
    }

    fn garp_timers(&mut self, now: Instant) {
        let mut fire = self.garp_schedule.poll(now);
        if let Some(t) = self.next_refresh
            && t <= now
        {
            fire = true;
            self.next_refresh = self.cfg.garp_refresh.map(|r| now + r);
        }
        // Not before the addresses are on the interface (the takeover's burst follows
        // the add).
        if fire && self.machine.state() == State::Master && !self.awaiting_add {
            self.send_garp();
        }
    }

    fn send_garp(&mut self) {
        for _ in 0..self.cfg.garp_repeat {
            for v in &self.cfg.vips {
                // A VIP on another interface is announced from that interface's socket.
                let r = match &v.dev {
                    Some(dev) if *dev != self.iface.name => iface::lookup(dev, &[]).and_then(|i| {
                        GarpSocket::open(i.index).and_then(|s| s.send(i.mac, v.addr))
                    }),
                    _ => self.garp.send(self.iface.mac, v.addr),
                };
                match r {
                    Ok(()) => self.metrics.garp.increment(1),
                    Err(e) => {
                        if let Some(more) = self.warn_garp_failed.allow(Instant::now()) {
                            tracing::warn!(vip = %v, error = %e, suppressed = more, "gratuitous ARP failed");
                        }
                    }
                }
            }
        }
    }

    /// Sends what the machine queued, then applies its events (in that order, so a
    /// yielding master hears our advert before the ARP moves the address).
    async fn flush(&mut self) {
        let mut buf = [0u8; 1100];
        while let Some(repr) = self.machine.poll_transmit() {
            for dst in self.speaker.dests().to_vec() {
                // One send per destination, its checksum over that destination.
                let n = repr.emit(&mut buf, self.iface.primary, dst);
                match self.speaker.send_to(&buf[..n], dst, self.iface.primary) {
                    Ok(()) => self.metrics.sent.increment(1),
                    // A master whose adverts do not leave loses the VIP to its peer
                    // while it still holds it: say so.
                    Err(e) => {
                        self.metrics.drop("send_failed");
                        if let Some(more) = self.warn_send_failed.allow(Instant::now()) {
                            tracing::warn!(
                                %dst,
                                src = %self.iface.primary,
                                error = %e,
                                not_logged_before = more,
                                "vrrp advert not sent"
                            );
                        }
                    }
                }
            }
        }
        while let Some(ev) = self.machine.poll_event() {
            self.apply(ev).await;
        }
    }

    async fn apply(&mut self, ev: Event) {
        if let Some((state, cause)) = ev.transition() {
            self.metrics.transition(state, cause);
            if let Some(more) = self.warn_transition.allow(Instant::now()) {
                tracing::warn!(
                    state = state.as_str(),
                    cause = cause.as_str(),
                    priority = self.machine.effective_priority(),
                    master = ?self.machine.master_ip(),
                    not_logged_before = more,
                    "vrrp transition"
                );
            }
        }
        match ev {
            Event::BecameMaster { .. } => self.takeover = true,
            Event::AddVips => {
                // Rounds done before this one are not its answer.
                self.vip_done.borrow_and_update();
                self.vip_ops.send_replace(VipOp::Add);
                self.awaiting_add = true;
                self.next_renew = Some(Instant::now() + VIP_RENEW);
            }
            Event::RemoveVips => {
                self.vip_ops.send_replace(VipOp::Remove);
                self.awaiting_add = false;
                self.garp_held = false;
                self.garp_schedule.clear();
                self.takeover = false;
                self.next_refresh = None;
                self.next_renew = None;
            }
            Event::SendGarp => {
                let now = Instant::now();
                if std::mem::take(&mut self.takeover) {
                    if self.awaiting_add {
                        self.garp_held = true;
                    } else {
                        self.takeover_garp(now);
                    }
                } else if self.awaiting_add {
                    // The takeover's burst, after the add, answers it.
                } else if self.garp_schedule.request(now) {
                    // Asked for by a received advert: at most one burst per
                    // GARP_MIN_GAP, the rest folded into one pending burst.
                    self.send_garp();
                }
            }
            Event::OtherMasterSeen { src, priority } => {
                self.metrics.other_master.increment(1);
                if let Some(more) = self.warn_other_master.allow(Instant::now()) {
                    tracing::warn!(
                        %src,
                        priority,
                        suppressed = more,
                        "another master with a lower priority seen (a healed split brain, or a \
                         stray sender); reasserting"
                    );
                }
            }
            Event::ZeroFromNonMaster { src } => {
                self.metrics.drop("zero_not_master");
                if let Some(more) = self.warn_stray_zero.allow(Instant::now()) {
                    tracing::warn!(
                        %src,
                        master = ?self.machine.master_ip(),
                        not_logged_before = more,
                        "vrrp priority 0 advert from a host that is not the master ignored"
                    );
                }
            }
            Event::BecameBackup { .. } | Event::Stopped => {}
        }
    }
}
