//! The dataplane's other tasks: health probes, housekeeping (expiry, metrics,
//! status) and config reloads.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Status;
use super::{Shared, Shell};
use crate::config::Config;
use crate::health::checker::ProbeSettings;
use crate::health::{Event, Health};
use crate::relay::router::{Router, RouterEvent, RouterSettings};
use crate::sys::mmsg;

const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(200);

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

pub(super) async fn probe_loop(shell: Shared) {
    let (wake, poll) = {
        let s = shell.borrow();
        (s.probe_wake.clone(), s.prober.poll())
    };
    let mut buf = vec![0u8; mmsg::BUF_LEN];
    loop {
        // Never hold the shell across an await: the other tasks need it.
        let deadline = shell.borrow().prober.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        // The probe sockets' epoll set: a reply or an ICMP error on any of them.
        let mut ready = None;
        tokio::select! {
            _ = sleep => {}
            r = poll.readable() => ready = r.ok(),
            _ = wake.notified() => {}
        }
        let now = Instant::now();
        let more = {
            let mut guard = shell.borrow_mut();
            let s = &mut *guard;
            let metrics = &s.metrics;
            let more = s
                .prober
                .receive(now, &mut buf, |b, rtt| metrics.probe_rtt(b, rtt));
            s.prober.tick(now);
            s.apply_health_events();
            more
        };
        if let Some(mut r) = ready
            && !more
        {
            // Every ready socket was drained; a new datagram or error wakes the set.
            r.clear_ready();
        }
        // Readiness does not use up tokio's task budget: after a bounded receive,
        // let the other tasks run even if junk keeps arriving at the probe ports.
        tokio::task::yield_now().await;
    }
}

pub(super) async fn housekeeping(shell: Shared, status: Arc<Mutex<Status>>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // A large flow table is swept in more slices than ticks: wake for those too
        // (the sweep only), so a round still takes about as long.
        let due = shell.borrow().router.poll_timeout();
        let sweep_only = tokio::select! {
            _ = tick.tick() => false,
            _ = async {
                match due {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let now = Instant::now();
        let mut guard = shell.borrow_mut();
        let s = &mut *guard;
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
        if sweep_only {
            continue;
        }
        s.metrics.publish(
            s.router.counters(),
            s.router.flow_count(),
            s.router.dialog_count(),
            s.relays_open,
        );
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
        let mut notes = Vec::new();
        if cfg.listen != self.cfg.listen {
            notes.push("listen changes need a restart; kept the running [listen]".to_string());
        }
        if cfg.hep != self.cfg.hep {
            notes.push("hep changes need a restart; kept the running [hep]".to_string());
        }
        let mut cfg = cfg;
        notes.extend(super::sync::reload(
            &self.cfg.sync,
            &mut cfg.sync,
            &mut self.sync_rekey,
        ));
        // Table sizes need a restart; per-source limits and their overrides apply now.
        let (old, new) = (&self.cfg.limits, &mut cfg.limits);
        if (new.max_flows, new.max_dialogs, new.max_pins_per_flow)
            != (old.max_flows, old.max_dialogs, old.max_pins_per_flow)
        {
            notes.push(
                "limits.max_flows/max_dialogs/max_pins_per_flow changes need a restart; kept the running ones"
                    .to_string(),
            );
            (new.max_flows, new.max_dialogs, new.max_pins_per_flow) =
                (old.max_flows, old.max_dialogs, old.max_pins_per_flow);
        }
        if (new.per_source(), &new.source) != (old.per_source(), &old.source) {
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
            .set_settings(ProbeSettings::from(&cfg.health));
        for &i in &reset {
            // A new or moved backend is assumed up until its first probe says otherwise.
            let up = self.prober.checker.state(i) != Health::Down;
            self.router.set_backend_up(i, up);
        }
        self.probe_wake.notify_one();
        let keep_listen = self.cfg.listen.clone();
        let keep_hep = self.cfg.hep.take();
        self.cfg = cfg;
        self.cfg.listen = keep_listen;
        self.cfg.hep = keep_hep;
        notes
    }
}
