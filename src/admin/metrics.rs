//! Metric handles, registered once at start, and the shared status the admin API and
//! the demo read. The dataplane publishes counter deltas here a few times a second.

use std::time::Instant;

use metrics::{Counter, Gauge, counter, gauge};

use crate::relay::{Counters, Direction, DropReason, Router};

struct BackendHandles {
    datagrams: [Counter; 2],
    bytes: [Counter; 2],
}

/// Handles for every series the dataplane exports.
pub struct MetricsHandles {
    drops: Vec<Counter>,
    backends: Vec<BackendHandles>,
    keepalives: [Counter; 2],
    flows_created: Counter,
    flows_expired: Counter,
    flows: Gauge,
    dialogs: Gauge,
    ports_in_use: Gauge,
    last: Counters,
    last_drop_log: Option<Instant>,
}

impl MetricsHandles {
    /// Registers all series with the installed recorder (or a no-op one).
    pub fn register(backend_names: &[String]) -> Self {
        let drops = DropReason::ALL
            .iter()
            .map(|r| counter!("sipfront_drops_total", "reason" => r.as_str()))
            .collect();
        let dir = [Direction::ToBackend, Direction::ToClient];
        let backends = backend_names
            .iter()
            .map(|name| BackendHandles {
                datagrams: dir.map(|d| {
                    counter!("sipfront_datagrams_total", "direction" => d.as_str(), "backend" => name.clone())
                }),
                bytes: dir.map(|d| {
                    counter!("sipfront_bytes_total", "direction" => d.as_str(), "backend" => name.clone())
                }),
            })
            .collect();
        MetricsHandles {
            drops,
            backends,
            keepalives: ["from_client", "from_backend"]
                .map(|d| counter!("sipfront_keepalives_total", "direction" => d)),
            flows_created: counter!("sipfront_flows_created_total"),
            flows_expired: counter!("sipfront_flows_expired_total"),
            flows: gauge!("sipfront_flows"),
            dialogs: gauge!("sipfront_dialogs"),
            ports_in_use: gauge!("sipfront_relay_ports_in_use"),
            last: Counters::new(backend_names.len()),
            last_drop_log: None,
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
            for d in 0..2 {
                h.datagrams[d].increment(now.datagrams[d].saturating_sub(last.datagrams[d]));
                h.bytes[d].increment(now.bytes[d].saturating_sub(last.bytes[d]));
            }
        }
        for d in 0..2 {
            self.keepalives[d].increment(c.keepalives[d].saturating_sub(self.last.keepalives[d]));
        }
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
        self.last.copy_from(c);
    }

    /// At most one line per 10 s, with totals by reason: visible, never a flood.
    fn log_drops(&mut self, c: &Counters) {
        let now = Instant::now();
        if self
            .last_drop_log
            .is_some_and(|t| now.duration_since(t).as_secs() < 10)
        {
            return;
        }
        self.last_drop_log = Some(now);
        for r in DropReason::ALL {
            let n = c.dropped(r);
            if n > 0 {
                tracing::warn!(reason = r.as_str(), total = n, "datagrams dropped");
            }
        }
    }
}

/// A snapshot of the dataplane for the admin API and the demo's status line.
#[derive(Debug, Clone)]
pub struct Status {
    pub backend_names: Vec<String>,
    pub counters: Counters,
    pub flows: usize,
    pub dialogs: usize,
    pub ports_in_use: usize,
    pub updated: Option<Instant>,
}

impl Status {
    pub fn new(backend_names: Vec<String>) -> Self {
        Status {
            counters: Counters::new(backend_names.len()),
            backend_names,
            flows: 0,
            dialogs: 0,
            ports_in_use: 0,
            updated: None,
        }
    }

    /// Copies the router's numbers in; reuses this snapshot's buffers.
    pub fn update(&mut self, r: &Router, ports_in_use: usize) {
        self.counters.copy_from(r.counters());
        self.flows = r.flow_count();
        self.dialogs = r.dialog_count();
        self.ports_in_use = ports_in_use;
        self.updated = Some(Instant::now());
    }
}
