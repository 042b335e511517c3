//! The VRRP speaker's tokio shell: it owns the raw socket, the netlink handle and
//! the GARP socket, feeds adverts and the time into the [`Machine`], sends what it
//! asks for and applies its events (VIPs, gratuitous ARP, logs, metrics).
//!
//! It runs in the same process as the dataplane and tracks it: while the dataplane
//! has not refreshed its status recently, or no backend is up, the priority drops by
//! `track_backends`, so a peer that can still forward takes the address.

use std::net::Ipv4Addr;

use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use tokio::sync::oneshot;

use super::garp::GarpSocket;
use super::iface::{self, Iface};
use super::machine::{Event, Input, Machine, Settings, State};
use super::packet::{Packet, Repr};
use super::speaker::{Speaker, parse_ipv4};
use super::vip::{VipError, Vips};
use super::{PRIORITY_OWNER, check_advert};
use crate::config::Vrrp;

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
}

/// The running speaker: `stop` hands over (priority 0, VIPs removed) and waits.
pub struct VrrpHandle {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl VrrpHandle {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
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

/// Opens the sockets (errors stop startup) and starts the speaker task.
/// What priority tracking looks at, read from the dataplane every [`TRACK_EVERY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// The dataplane runs and some backend takes traffic.
    pub healthy: bool,
    /// It holds the sync peer's full table (always true without `[sync]`).
    pub synced: bool,
}

/// Reads [`Tracked`] at a given time; the server wires it to the dataplane status.
pub type TrackFn = Box<dyn Fn(Instant) -> Tracked + Send + Sync>;

pub async fn start(cfg: Vrrp, track: TrackFn) -> Result<VrrpHandle, VrrpError> {
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
        if let Err(e) = vips.remove(v).await {
            tracing::warn!(vip = %v, error = %e, "could not remove a stale VIP");
        }
    }
    let (tx, rx) = oneshot::channel();
    let shell = Shell {
        machine: Machine::new(settings, Instant::now()),
        speaker,
        garp,
        vips,
        cfg,
        iface,
        track,
        garp_due: Vec::new(),
        next_refresh: None,
        next_renew: None,
        last_priority: 0,
        synced: true,
    };
    tracing::info!(
        interface = %shell.iface.name,
        primary = %shell.iface.primary,
        vrid = shell.cfg.vrid,
        priority = shell.cfg.priority,
        dests = ?shell.speaker.dests(),
        "vrrp speaker starting"
    );
    let task = tokio::spawn(shell.run(rx));
    Ok(VrrpHandle {
        stop: Some(tx),
        task,
    })
}

struct Shell {
    machine: Machine,
    speaker: Speaker,
    garp: GarpSocket,
    vips: Vips,
    cfg: Vrrp,
    iface: Iface,
    track: TrackFn,
    /// Pending gratuitous ARP bursts.
    garp_due: Vec<Instant>,
    next_refresh: Option<Instant>,
    /// When to renew the VIPs' lifetime (while master).
    next_renew: Option<Instant>,
    last_priority: u8,
    synced: bool,
}

fn state_value(s: State) -> f64 {
    match s {
        State::Initialize => 0.0,
        State::Backup => 1.0,
        State::Master => 2.0,
    }
}

impl Shell {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        gauge!("sipfront_vrrp_state").set(0.0);
        self.machine.handle_input(Instant::now(), Input::Startup);
        self.flush().await;
        let mut buf = vec![0u8; 2048];
        let mut track = tokio::time::interval(TRACK_EVERY);
        track.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = [
                self.machine.poll_timeout(),
                self.garp_due.iter().min().copied(),
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
                _ = &mut stop => break,
                r = self.speaker.readable() => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "vrrp socket failed");
                        break;
                    }
                    self.receive(&mut buf);
                }
                _ = track.tick() => self.track(),
                _ = sleep => {}
            }
            let now = Instant::now();
            self.machine.handle_timeout(now);
            self.garp_timers(now);
            if self.next_renew.is_some_and(|t| t <= now) {
                self.next_renew = Some(now + VIP_RENEW);
                self.add_vips().await;
            }
            self.flush().await;
        }
        // Hand over: priority 0 tells the backup to take over after Skew_Time only.
        self.machine.handle_input(Instant::now(), Input::Shutdown);
        self.flush().await;
        gauge!("sipfront_vrrp_state").set(0.0);
        tracing::info!("vrrp speaker stopped");
    }

    fn receive(&mut self, buf: &mut [u8]) {
        loop {
            let data = match self.speaker.try_recv(buf) {
                Ok(Some(d)) => d,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "vrrp recv");
                    return;
                }
            };
            let Some(ip) = parse_ipv4(data) else {
                counter!("sipfront_vrrp_adverts_dropped_total", "reason" => "bad_ip").increment(1);
                continue;
            };
            if ip.src == self.iface.primary {
                continue;
            }
            if !self.cfg.peers.is_empty() && !self.cfg.peers.contains(&ip.src) {
                counter!("sipfront_vrrp_adverts_dropped_total", "reason" => "not_peer")
                    .increment(1);
                continue;
            }
            let parsed =
                Packet::new_checked(ip.payload).and_then(|p| Repr::parse(&p, ip.src, ip.dst));
            let repr = match parsed {
                Ok((repr, _kind)) => repr,
                Err(e) => {
                    counter!("sipfront_vrrp_adverts_dropped_total", "reason" => e.as_str())
                        .increment(1);
                    continue;
                }
            };
            if let Err(d) = check_advert(self.machine.settings(), ip.src, ip.ttl, &repr) {
                counter!("sipfront_vrrp_adverts_dropped_total", "reason" => d.as_str())
                    .increment(1);
                continue;
            }
            counter!("sipfront_vrrp_adverts_total", "dir" => "received").increment(1);
            self.machine.handle_input(
                Instant::now(),
                Input::Advert {
                    src: ip.src,
                    repr: &repr,
                },
            );
        }
    }

    /// Priority tracking: no backend up, or a dataplane that stopped reporting, costs
    /// `track_backends` points.
    fn track(&mut self) {
        let Tracked { healthy, synced } = (self.track)(Instant::now());
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
        let before = self.garp_due.len();
        self.garp_due.retain(|&t| t > now);
        let mut fire = before != self.garp_due.len();
        if let Some(t) = self.next_refresh
            && t <= now
        {
            fire = true;
            self.next_refresh = self.cfg.garp_refresh.map(|r| now + r);
        }
        if fire && self.machine.state() == State::Master {
            self.send_garp();
        }
    }

    fn send_garp(&self) {
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
                    Ok(()) => counter!("sipfront_vrrp_garp_total").increment(1),
                    Err(e) => tracing::warn!(vip = %v, error = %e, "gratuitous ARP failed"),
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
                let n = repr.emit(&mut buf, self.iface.primary, dst);
                if self.speaker.send(&buf[..n]) > 0 {
                    counter!("sipfront_vrrp_adverts_total", "dir" => "sent").increment(1);
                }
            }
        }
        while let Some(ev) = self.machine.poll_event() {
            self.apply(ev).await;
        }
    }

    async fn add_vips(&self) {
        for v in &self.cfg.vips {
            if let Err(e) = self.vips.add(v, VIP_LIFETIME_SECS).await {
                tracing::error!(vip = %v, error = %e, "cannot add VIP");
            }
        }
    }

    async fn apply(&mut self, ev: Event) {
        if let Some((state, cause)) = ev.transition() {
            gauge!("sipfront_vrrp_state").set(state_value(state));
            counter!("sipfront_vrrp_transitions_total", "to" => state.as_str(), "cause" => cause.as_str())
                .increment(1);
            tracing::warn!(
                state = state.as_str(),
                cause = cause.as_str(),
                priority = self.machine.effective_priority(),
                master = ?self.machine.master_ip(),
                "vrrp transition"
            );
        }
        match ev {
            Event::AddVips => {
                self.add_vips().await;
                self.next_renew = Some(Instant::now() + VIP_RENEW);
            }
            Event::RemoveVips => {
                for v in &self.cfg.vips {
                    if let Err(e) = self.vips.remove(v).await {
                        tracing::error!(vip = %v, error = %e, "cannot remove VIP");
                    }
                }
                self.garp_due.clear();
                self.next_refresh = None;
                self.next_renew = None;
            }
            Event::SendGarp => {
                self.send_garp();
                let now = Instant::now();
                self.garp_due.push(now + self.cfg.garp_delay);
                self.next_refresh = self.cfg.garp_refresh.map(|r| now + r);
            }
            Event::OtherMasterSeen { src, priority } => {
                counter!("sipfront_vrrp_other_master_total").increment(1);
                tracing::warn!(%src, priority, "another master seen (split brain healed); reasserting");
            }
            Event::BecameMaster { .. } | Event::BecameBackup { .. } | Event::Stopped => {}
        }
    }
}
