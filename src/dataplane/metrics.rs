//! Metric handles, registered once at start, and the shared status the admin API and
//! the demo read. The dataplane publishes counter deltas here a few times a second.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::capture::{HepDrop, HepStats};
use crate::health::Reason;
use crate::relay::{BackendId, Counters, Direction, DropReason, PerDirection, Suppressed};
use crate::throttle::LogThrottle;

struct BackendHandles {
    datagrams: PerDirection<Counter>,
    bytes: PerDirection<Counter>,
    up: Gauge,
    probe_rtt: Histogram,
}

impl BackendHandles {
    fn new(name: &str) -> Self {
        let name = name.to_string();
        BackendHandles {
            datagrams: PerDirection(Direction::ALL.map(|d| {
                counter!("sipfront_datagrams_total", "direction" => d.as_str(), "backend" => name.clone())
            })),
            bytes: PerDirection(Direction::ALL.map(|d| {
                counter!("sipfront_bytes_total", "direction" => d.as_str(), "backend" => name.clone())
            })),
            up: gauge!("sipfront_backend_up", "backend" => name.clone()),
            probe_rtt: histogram!("sipfront_probe_rtt_seconds", "backend" => name),
        }
    }
}

/// Handles for every series the dataplane exports.
pub struct MetricsHandles {
    drops: Vec<Counter>,
    backends: Vec<BackendHandles>,
    keepalives: PerDirection<Counter>,
    flows_created: Counter,
    flows_expired: Counter,
    flows: Gauge,
    dialogs: Gauge,
    ports_in_use: Gauge,
    replies_503: Counter,
    replies_503_suppressed: [Counter; Suppressed::ALL.len()],
    unpinned: Counter,
    grown_in_decisions: Counter,
    lingering_dropped: Counter,
    /// The last total of [`Self::lingering_dropped`], for its warning.
    lingering_dropped_last: u64,
    lingering_lines: LogThrottle,
    /// Datagrams per static peer (names come from the config, never from traffic).
    peers: Vec<PerDirection<Counter>>,
    last: Counters,
    drop_lines: LogThrottle,
    hep: Option<HepHandles>,
}

/// `sipfront_hep_*`, registered only with `[hep]`.
struct HepHandles {
    stats: Arc<HepStats>,
    sent: Counter,
    bytes: Counter,
    dropped: [Counter; 4],
    last: [u64; 6],
    /// The dataplane's own HEP drops (queue full, too large); the sender thread logs
    /// the collector's.
    drop_lines: LogThrottle,
}

/// `sipfront_socket_drops_total{socket}`: what the kernel dropped at the public,
/// prefix-mode relay and sync sockets, from each socket's own count (read every
/// housekeeping).
pub struct SocketDrops {
    counters: [Counter; 3],
    /// Each socket's count at the last read, by kind and position.
    last: [Vec<u32>; 3],
}

/// Which sockets a [`SocketDrops`] count is of.
#[derive(Debug, Clone, Copy)]
pub enum SocketKind {
    Public = 0,
    Relay = 1,
    Sync = 2,
}

impl SocketDrops {
    pub fn register(public: usize, relay: usize, sync: usize) -> SocketDrops {
        SocketDrops {
            counters: ["public", "relay", "sync"]
                .map(|k| counter!("sipfront_socket_drops_total", "socket" => k)),
            last: [vec![0; public], vec![0; relay], vec![0; sync]],
        }
    }

    /// Adds what socket `i` of `kind` dropped since the last read (`now`: its count).
    pub fn update(&mut self, kind: SocketKind, i: usize, now: Option<u32>) {
        let (Some(now), Some(last)) = (now, self.last[kind as usize].get_mut(i)) else {
            return;
        };
        self.counters[kind as usize].increment(u64::from(now.wrapping_sub(*last)));
        *last = now;
    }
}

impl MetricsHandles {
    /// Registers all series with the installed recorder (or a no-op one).
    pub fn register(backend_names: &[String], peer_names: &[String]) -> Self {
        let drops = DropReason::ALL
            .iter()
            .map(|r| counter!("sipfront_drops_total", "reason" => r.as_str()))
            .collect();
        let backends = backend_names
            .iter()
            .map(|n| BackendHandles::new(n))
            .collect();
        MetricsHandles {
            drops,
            backends,
            // Labelled by where the keepalive came from.
            keepalives: PerDirection(
                ["from_client", "from_backend"]
                    .map(|d| counter!("sipfront_keepalives_total", "direction" => d)),
            ),
            flows_created: counter!("sipfront_flows_created_total"),
            flows_expired: counter!("sipfront_flows_expired_total"),
            flows: gauge!("sipfront_flows"),
            dialogs: gauge!("sipfront_dialogs"),
            ports_in_use: gauge!("sipfront_relay_ports_in_use"),
            replies_503: counter!("sipfront_local_replies_total", "code" => "503"),
            replies_503_suppressed: Suppressed::ALL.map(|r| {
                counter!("sipfront_local_replies_suppressed_total", "code" => "503", "reason" => r.as_str())
            }),
            unpinned: counter!("sipfront_backend_requests_unpinned_total"),
            grown_in_decisions: counter!("sipfront_table_grown_in_decisions_total"),
            lingering_dropped: counter!("sipfront_lingering_pins_dropped_total"),
            lingering_dropped_last: 0,
            lingering_lines: LogThrottle::new(Duration::from_secs(10)),
            peers: peer_names
                .iter()
                .map(|n| {
                    PerDirection(Direction::ALL.map(|d| {
                        counter!("sipfront_peer_datagrams_total", "peer" => n.clone(), "direction" => d.as_str())
                    }))
                })
                .collect(),
            last: Counters::new(backend_names.len(), peer_names.len()),
            drop_lines: LogThrottle::new(Duration::from_secs(10)),
            hep: None,
        }
    }

    /// Exports the HEP sender's totals from now on.
    pub fn set_hep(&mut self, stats: Arc<HepStats>) {
        self.hep = Some(HepHandles {
            stats,
            sent: counter!("sipfront_hep_sent_total"),
            bytes: counter!("sipfront_hep_bytes_total"),
            dropped: HepDrop::ALL
                .map(|r| counter!("sipfront_hep_dropped_total", "reason" => r.as_str())),
            last: [0; 6],
            drop_lines: LogThrottle::new(Duration::from_secs(10)),
        });
    }

    fn publish_hep(&mut self) {
        let Some(h) = &mut self.hep else {
            return;
        };
        let now = [
            h.stats.sent.load(Ordering::Relaxed),
            h.stats.bytes.load(Ordering::Relaxed),
            h.stats.dropped(HepDrop::QueueFull),
            h.stats.dropped(HepDrop::TooLarge),
            h.stats.dropped(HepDrop::Unreachable),
            h.stats.dropped(HepDrop::SendFailed),
        ];
        let d = |i: usize| now[i].saturating_sub(h.last[i]);
        h.sent.increment(d(0));
        h.bytes.increment(d(1));
        for (i, c) in h.dropped.iter().enumerate() {
            c.increment(d(2 + i));
        }
        let new_drops = d(2) > 0 || d(3) > 0;
        h.last = now;
        if new_drops && h.drop_lines.allow(Instant::now()).is_some() {
            tracing::warn!(
                queue_full = now[2],
                too_large = now[3],
                "HEP packets dropped (totals; the collector is slow or the queue small: \
                 hep.queue; datagrams over ~8 KiB are not exported)"
            );
        }
    }

    /// Registers series for a backend added by a reload.
    pub fn set_backend(&mut self, b: BackendId, name: &str) {
        let i = b.index();
        if i >= self.backends.len() {
            self.backends
                .resize_with(i + 1, || BackendHandles::new(name));
            self.last.resize_backends(i + 1);
        }
        self.backends[i] = BackendHandles::new(name);
    }

    /// Health state of a backend (1 = up).
    pub fn backend_up(&self, b: BackendId, up: bool) {
        if let Some(h) = self.backends.get(b.index()) {
            h.up.set(if up { 1.0 } else { 0.0 });
        }
    }

    pub fn probe_rtt(&self, b: BackendId, secs: f64) {
        if let Some(h) = self.backends.get(b.index()) {
            h.probe_rtt.record(secs);
        }
    }

    /// One state change (rare: looked up by name here).
    pub fn transition(&self, backend: &str, to: &'static str, reason: &'static str) {
        counter!("sipfront_backend_transitions_total", "backend" => backend.to_string(), "to" => to, "reason" => reason)
            .increment(1);
    }

    pub fn health_transition(&self, backend: &str, up: bool, reason: Reason) {
        self.transition(backend, if up { "up" } else { "down" }, reason.as_str());
    }

    /// [`crate::relay::Router::grown_in_decisions`]: a running total.
    pub fn grown_in_decisions(&self, total: u64) {
        self.grown_in_decisions.absolute(total);
    }

    /// [`crate::relay::Router::lingering_dropped`]: a running total; warns (at most
    /// every 10 s) when it grew.
    pub fn lingering_dropped(&mut self, total: u64) {
        self.lingering_dropped.absolute(total);
        let grew = total > self.lingering_dropped_last;
        self.lingering_dropped_last = total;
        if grew && let Some(more) = self.lingering_lines.allow(Instant::now()) {
            tracing::warn!(
                total,
                not_logged_before = more,
                "records of removed flows' unanswered dialog entries dropped early, so \
                 those entries no longer count against their source: the records \
                 (max_dialogs, at most 65,536) are full (many sources opening calls \
                 nobody answers)"
            );
        }
    }

    /// Adds what changed since the last call. Allocation-free.
    pub fn publish(&mut self, c: &Counters, flows: usize, dialogs: usize, ports_in_use: usize) {
        let mut dropped_now = 0;
        for (i, h) in self.drops.iter().enumerate() {
            let d = c.drops[i].saturating_sub(self.last.drops[i]);
            if d > 0 {
                h.increment(d);
                dropped_now += d;
            }
        }
        for (i, h) in self.backends.iter().enumerate() {
            let (Some(now), Some(last)) = (c.backends.get(i), self.last.backends.get(i)) else {
                continue;
            };
            for d in Direction::ALL {
                h.datagrams[d].increment(now.datagrams[d].saturating_sub(last.datagrams[d]));
                h.bytes[d].increment(now.bytes[d].saturating_sub(last.bytes[d]));
            }
        }
        for (h, (now, last)) in self.peers.iter().zip(c.peers.iter().zip(&self.last.peers)) {
            for d in Direction::ALL {
                h[d].increment(now[d].saturating_sub(last[d]));
            }
        }
        for d in Direction::ALL {
            self.keepalives[d].increment(c.keepalives[d].saturating_sub(self.last.keepalives[d]));
        }
        self.replies_503
            .increment(c.replies_503.saturating_sub(self.last.replies_503));
        for (i, counter) in self.replies_503_suppressed.iter().enumerate() {
            counter.increment(
                c.replies_503_suppressed[i].saturating_sub(self.last.replies_503_suppressed[i]),
            );
        }
        self.unpinned
            .increment(c.unpinned.saturating_sub(self.last.unpinned));
        self.flows_created
            .increment(c.flows_created.saturating_sub(self.last.flows_created));
        self.flows_expired
            .increment(c.flows_expired.saturating_sub(self.last.flows_expired));
        self.flows.set(flows as f64);
        self.dialogs.set(dialogs as f64);
        self.ports_in_use.set(ports_in_use as f64);
        if dropped_now > 0 {
            self.log_drops(c);
        }
        self.publish_hep();
        self.last.copy_from(c);
    }

    /// At most one line per 10 s, with totals by reason: visible, never a flood.
    fn log_drops(&mut self, c: &Counters) {
        if self.drop_lines.allow(Instant::now()).is_none() {
            return;
        }
        for r in DropReason::ALL {
            let n = c.dropped(r);
            if n > 0 {
                tracing::warn!(reason = r.as_str(), total = n, "datagrams dropped");
            }
        }
    }
}
