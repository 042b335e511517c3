//! Expiry: the periodic sweep of flows and dialogs, in slices so a large table never
//! stalls the dataplane, and the events it leaves for the shell.

use std::time::{Duration, Instant};

use super::dialog::unpin;
use super::{Router, RouterEvent, hold};
use crate::relay::Item;
use crate::relay::backends::Tenure;
use crate::relay::dialogs::Dialog;
use crate::relay::flows::Idle;

/// How often a slice of the flow table is swept for expired flows.
pub(super) const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// A large table is swept in this many slices, one per `SWEEP_EVERY`, so the
/// dataplane never stalls for a whole-table scan (100k flows and dialogs: ~0.8 ms
/// at once); a large dialog table loses one shard's expired entries per sweep; rate
/// buckets and per-backend counts are refreshed when a round completes.
pub(super) const SWEEP_SLICES: usize = 8;

/// Tables up to this many slots are swept whole every time.
const SWEEP_MIN_SLICE: usize = 4096;

/// At most this many flow slots per slice (a slot costs a few ns: a stall well
/// under 1 ms). A larger table takes more slices, closer together, so a round still
/// takes about `SWEEP_EVERY × SWEEP_SLICES`.
const SWEEP_MAX_SLICE: usize = 16384;

/// Slices never come closer than this.
const SWEEP_MIN_EVERY: Duration = Duration::from_millis(50);

/// The slots one slice sweeps and the time to the next slice, for a table of
/// `total` slots.
fn slicing(total: usize) -> (usize, Duration) {
    let slice = total
        .div_ceil(SWEEP_SLICES)
        .clamp(SWEEP_MIN_SLICE, SWEEP_MAX_SLICE);
    let slices = total.div_ceil(slice).max(1) as u32;
    let round = SWEEP_EVERY * SWEEP_SLICES as u32;
    (slice, (round / slices).clamp(SWEEP_MIN_EVERY, SWEEP_EVERY))
}

impl Router {
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Expires idle flows and dialogs. Call at [`Router::poll_timeout`] (or any time).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.next_sweep {
            Some(t) if now < t => return,
            _ => {}
        }
        let total = self.flows.slot_count();
        let (slice, every) = slicing(total);
        self.next_sweep = Some(now + every);
        let start = self.sweep_cursor.min(total);
        let end = (start + slice).min(total);
        if start == 0 {
            self.sweep_homes.iter_mut().for_each(|n| *n = 0);
        }
        let mut expired = std::mem::take(&mut self.expired_scratch);
        expired.clear();
        let idle = Idle {
            answered: self.settings.flow_idle,
            unanswered: self.settings.unanswered_idle.min(self.settings.flow_idle),
        };
        self.flows.sweep(
            start..end,
            now,
            idle,
            self.peer_alive,
            &mut expired,
            &mut self.sweep_homes,
        );
        for &id in &expired {
            if let Some(f) = self.flows.remove(id) {
                self.counters.flows_expired += 1;
                self.emit(Item::FlowGone {
                    relay_port: f.relay_port,
                });
                self.events.push_back(RouterEvent::FlowRemoved {
                    relay_port: f.relay_port,
                });
            }
        }
        self.expired_scratch = expired;
        // The per-source tables (up to a million sources) are pruned in parts too,
        // one part per slice: all of them about once per round.
        let parts = total.div_ceil(slice).max(SWEEP_SLICES);
        self.limiter.prune_step(now, parts);
        self.datagram_limiter.prune_step(now, parts);
        // An expired dialog lets go of its flow (the flow itself expires later, when
        // idle).
        let flows = &mut self.flows;
        let mut release = |d: &Dialog| {
            hold(flows, d.flow, Some(d.span), None);
            unpin(flows, d);
        };
        if self.dialogs.len() > SWEEP_MIN_SLICE {
            self.dialogs
                .expire_shard(self.dialog_shard, now, &mut release);
            self.dialog_shard = (self.dialog_shard + 1) % crate::relay::dialogs::SHARDS;
        } else {
            self.dialogs.expire(now, &mut release);
        }
        if end < total {
            self.sweep_cursor = end;
            return;
        }
        self.sweep_cursor = 0;
        self.access.prune(now);
        self.flows_per_backend.copy_from_slice(&self.sweep_homes);
        // A removed backend stays until no flow calls it home and no call is pinned
        // to it (its in-dialog requests must still be accepted).
        // (A scratch vector: the sweep must not allocate in steady state.)
        let mut in_use = std::mem::take(&mut self.vacate_scratch);
        in_use.clear();
        in_use.extend_from_slice(&self.flows_per_backend);
        if self
            .backends
            .iter()
            .any(|(_, b)| b.tenure == Tenure::Removed)
        {
            for (_, d) in self.dialogs.iter() {
                if let Some(n) = in_use.get_mut(d.backend.index()) {
                    *n += 1;
                }
            }
        }
        for id in self.backends.vacate_unused(&in_use) {
            self.events
                .push_back(RouterEvent::BackendVacated { backend: id });
        }
        self.vacate_scratch = in_use;
    }

    pub fn poll_event(&mut self) -> Option<RouterEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_tables_take_more_slices_closer_together() {
        assert_eq!(slicing(100), (SWEEP_MIN_SLICE, SWEEP_EVERY));
        assert_eq!(slicing(100_000), (12_500, SWEEP_EVERY));
        let (slice, every) = slicing(1_000_000);
        assert_eq!(slice, SWEEP_MAX_SLICE);
        // 62 slices in a round of about 4 s.
        assert_eq!(every, Duration::from_millis(4000) / 62);
        assert_eq!(slicing(100_000_000).1, SWEEP_MIN_EVERY);
    }
}
