//! The dataplane's slow work, called from its loop when due: health probes,
//! housekeeping (expiry, metrics, status) and config reloads.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Shell;
use super::Status;
use super::metrics::SocketKind;
use crate::config::Config;
use crate::health::checker::ProbeSettings;
use crate::health::{Event, Health};
use crate::relay::router::{Router, RouterEvent, RouterSettings};
use crate::sys::socket;

pub(super) const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(200);

pub(super) fn backend_addrs(r: &Router) -> Vec<Option<SocketAddr>> {
    r.backends()
        .iter()
        .map(|(_, b)| (!b.is_vacant()).then_some(b.addr))
        .collect()
}

impl Shell {
    /// Applies health verdicts to routing, with one log line per change.
    fn apply_health_events(&mut self) {
        self.tap_probes();
        while let Some(ev) = self.prober.poll_event() {
            let (id, up, reason) = match ev {
                Event::Up { backend, reason } => (backend, true, reason),
                Event::Down { backend, reason } => (backend, false, reason),
            };
            self.router.set_backend_up(id, up);
            self.metrics.backend_up(id, up);
            let Some(slot) = self.router.backends().get(id) else {
                continue;
            };
            let name = slot.name.clone();
            self.metrics.health_transition(&name, up, reason);
            let rtt_ms = self
                .prober
                .checker
                .last_rtt(id)
                .map(|d| d.as_secs_f64() * 1e3);
            if up {
                tracing::info!(backend = %name, addr = %slot.addr, reason = reason.as_str(), ?rtt_ms, "backend up");
            } else if let crate::health::Reason::ReplyCode(code) = reason {
                tracing::warn!(backend = %name, addr = %slot.addr, reason = reason.as_str(), code, "backend down");
            } else {
                tracing::warn!(backend = %name, addr = %slot.addr, reason = reason.as_str(), "backend down");
            }
        }
    }
}

impl Shell {
    /// Probe replies and ICMP errors (`receive`), due probes, verdicts: on a ready
    /// probe socket, at the prober's deadline, or when the ICMP fast path asks.
    pub(super) fn probe_turn(&mut self, now: Instant) {
        self.probe_now = false;
        let metrics = &self.metrics;
        // Bounded per turn; the nested set is level-triggered, so more comes back.
        self.prober
            .receive(now, &mut self.probe_buf, |b, rtt| metrics.probe_rtt(b, rtt));
        self.prober.tick(now);
        self.apply_health_events();
    }

    /// Expiry: the router's next sweep slice (or table growth step) and what it
    /// removed. A large flow table is swept in more slices than housekeeping ticks,
    /// and growth steps come every 10 ms while a table is short of room, so the loop
    /// also calls this alone at [`Router::poll_timeout`].
    pub(super) fn sweep(&mut self, now: Instant) {
        let s = self;
        s.router.handle_timeout(now);
        while let Some(ev) = s.router.poll_event() {
            match ev {
                RouterEvent::FlowRemoved { relay_port } => s.close_relay(relay_port),
                RouterEvent::BackendVacated { backend } => {
                    tracing::info!(
                        slot = backend.index(),
                        "removed backend drained; slot freed"
                    );
                    let addrs = backend_addrs(&s.router);
                    s.prober.set_addrs(addrs, &[], now);
                }
            }
        }
    }

    /// Expiry, metrics and the status snapshot, every `HOUSEKEEPING_EVERY`.
    pub(super) fn housekeeping(
        &mut self,
        now: Instant,
        status: &Mutex<Status>,
        sync: Option<&std::net::UdpSocket>,
    ) {
        self.sweep(now);
        let s = self;
        s.metrics.publish(
            s.router.counters(),
            s.router.flow_count(),
            s.router.dialog_count(),
            s.relays_open,
        );
        s.metrics.grown_in_decisions(s.router.grown_in_decisions());
        s.metrics.lingering_dropped(s.router.lingering_dropped());
        for (i, sock) in s.public.iter().enumerate() {
            s.socket_drops
                .update(SocketKind::Public, i, socket::drops(sock));
        }
        for (i, sock) in s.prefix.socks().iter().enumerate() {
            s.socket_drops
                .update(SocketKind::Relay, i, socket::drops(sock));
        }
        if let Some(sock) = sync {
            s.socket_drops
                .update(SocketKind::Sync, 0, socket::drops(sock));
        }
        if let Ok(mut st) = status.lock() {
            st.update(&s.router, &s.prober.checker, s.relays_open, &s.relay_addrs);
            if let Some(pp) = &s.peer_probes {
                for p in &mut st.peers {
                    if let Some((up, rtt)) = pp.state(&p.name) {
                        p.up = up;
                        p.rtt_ms = rtt.map(|d| d.as_secs_f64() * 1e3);
                    }
                }
            }
        }
    }
}

impl Shell {
    /// For the control task: the router's health view after a reload.
    pub(super) fn reload(&mut self, cfg: Config) -> Vec<String> {
        let mut cfg = cfg;
        let mut notes = cfg.keep_restart_only(&self.cfg);
        notes.extend(super::sync::reload(
            &self.cfg.sync,
            &mut cfg.sync,
            &mut self.sync_rekey,
        ));
        // Per-source limits and their overrides apply now (table sizes need a restart).
        let (old, new) = (&self.cfg.limits, &cfg.limits);
        let per_source = |l: &crate::config::Limits| {
            (
                l.per_source(),
                l.max_flows_per_ipv6_48,
                l.max_pins_per_ipv6_48,
            )
        };
        if (per_source(new), &new.source) != (per_source(old), &old.source) {
            self.router.set_source_limits(new);
            notes.push(format!(
                "per-source limits reloaded ({} [[limits.source]] override(s))",
                new.source.len()
            ));
        }
        let now = Instant::now();
        if cfg.access != self.cfg.access {
            notes.push("access lists reloaded (bans kept)".to_string());
        }
        self.router.set_access(&cfg.access);
        let changes = self
            .router
            .reconfigure(RouterSettings::from(&cfg), &cfg.backends);
        let mut reset = Vec::new();
        for ch in &changes {
            let (id, what) = match *ch {
                crate::relay::Change::Added(id) => (id, "added"),
                crate::relay::Change::Readded(id) => (id, "re-added"),
                crate::relay::Change::AddressChanged(id) => (id, "address changed"),
                crate::relay::Change::Removed(id) => (id, "removed (draining)"),
            };
            let Some(b) = self.router.backends().get(id) else {
                continue;
            };
            notes.push(format!("backend {} {what}", b.name));
            if !matches!(ch, crate::relay::Change::Removed(_)) {
                reset.push(id);
                let name = b.name.clone();
                self.metrics.set_backend(id, &name);
            }
        }
        self.prober
            .set_addrs(backend_addrs(&self.router), &reset, now);
        self.prober
            .checker
            .set_settings(ProbeSettings::from(&cfg.health), now);
        // Static peers are probed with `[health]`'s settings too (the peers themselves
        // change only with a restart).
        if let Some(pp) = &mut self.peer_probes {
            pp.set_settings(ProbeSettings::from(&cfg.health), now);
        }
        for &i in &reset {
            // A new or moved backend is assumed up until its first probe says otherwise.
            let up = self.prober.checker.state(i) != Health::Down;
            self.router.set_backend_up(i, up);
        }
        self.probe_now = true;
        self.cfg = cfg;
        notes
    }
}
