//! Expiry: the periodic sweep of flows and dialogs, in slices so a large table never
//! stalls the dataplane, and the events it leaves for the shell.

use std::time::{Duration, Instant};

use super::dialog::unpin;
use super::sync::{dialog_item, queue};
use super::{Router, RouterEvent, RouterSettings, hold};
use crate::relay::Item;
use crate::relay::backends::Tenure;
use crate::relay::dialogs::{Dialog, SHARDS};
use crate::relay::flows::Idle;

/// How often a slice of the flow table is swept for expired flows.
pub(super) const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// A large table is swept in this many slices, one per `SWEEP_EVERY`, so the
/// dataplane never stalls for a whole-table scan (100k flows and dialogs: ~0.8 ms
/// at once); each slice also expires a part of the dialog shards; rate buckets and
/// per-backend counts are refreshed when a round of the flow table completes.
pub(super) const SWEEP_SLICES: usize = 8;

/// Tables up to this many slots (flows) or entries (dialogs) are swept whole every
/// time.
const SWEEP_MIN_SLICE: usize = 4096;

/// At most about this many flow slots, and dialogs, per slice (tens of ns each, most
/// of it cache misses at a million: with 16,384 the longest timer calls were 0.65-0.87
/// ms, and up to 1.49 ms while the tables filled; with 8,192 the sweep's are 0.36-0.68
/// ms, `cargo bench --bench routing`, four runs each). Larger tables take more slices, closer together, so a round still takes
/// about `SWEEP_EVERY × SWEEP_SLICES` up to about 650,000 flows, and a slice per
/// `SWEEP_MIN_EVERY` beyond (a million: about 6 s).
const SWEEP_MAX_SLICE: usize = 8192;

/// Slices never come closer than this.
const SWEEP_MIN_EVERY: Duration = Duration::from_millis(50);

/// Flows one slice removes at most (the rest of its slots wait for the next slice,
/// which then comes after `SWEEP_MIN_EVERY`): each removal is a sync item (the
/// queue holds `sync.max_turn_changes` between two flushes; beyond it the peer needs the
/// whole table) and, in port mode, a socket closed in this turn.
const SWEEP_MAX_REMOVALS: usize = 2048;

/// While a shard of the dialog table or of a per-source limiter is short of room, one
/// growth step per this, stopping once it has re-placed or walked `GROW_BUDGET`
/// entries (one shard at least: a shard of a million dialogs holds ~4k, a few
/// tenths of a ms; all 256 of them in under 3 s).
const GROW_EVERY: Duration = Duration::from_millis(10);
const GROW_BUDGET: usize = 4096;

/// Records of removed flows' entries a sweep call forgets at most (see
/// `FlowTable::expire_lingering`); a slice removes at most `SWEEP_MAX_REMOVALS` flows,
/// so they never pile up.
const LINGERING_EXPIRE_PER_CALL: usize = SWEEP_MAX_REMOVALS;

/// How often the sweep re-sends to the sync peer each dialog its own traffic kept
/// alive: a quarter of `dialog_idle`. The peer's copy lives that much (and
/// [`RESEND_SLACK`]) beyond `dialog_idle` from the last item about it, so a call
/// refreshed just after its shard's turn, after nearly `dialog_idle` of quiet, is
/// re-sent before the copy expires. One shard per 1/256 of it, so a round is an even
/// trickle (a million refreshed calls and an hour: ~1,100 items/s), never a burst past
/// the router's queue (`sync.max_turn_changes`) that would cost the peer a full table.
pub(super) fn resend_every(s: &RouterSettings) -> Duration {
    s.dialog_idle / 4
}

/// The share of the sync queue the dialog re-sends leave for what else comes before its
/// next flush (decisions, and a sweep's flow removals come first): a quarter.
const RESEND_RESERVE_DIVISOR: usize = 4;

/// Dialogs one timer call re-sends at most: a shard of a million dialogs holds ~4,000,
/// which at once would add about half a millisecond to the sweep slice's stall
/// (`cargo bench --bench routing`, `prefix/resend/1m_dialogs`), and a sweep after a stall
/// would hand the link bursts of them. 1,024 per call still covers a round at one call
/// per `SWEEP_EVERY`: 2,048 items/s against ~1,100 for a million calls and an hour.
const RESEND_PER_CALL: usize = 1024;

/// What a mirrored dialog lives beyond `dialog_idle + resend_every`: the peer's re-send
/// may come a sweep (at most `SWEEP_EVERY`) late, or wait a few sweeps for room in its
/// queue.
pub(super) const RESEND_SLACK: Duration = Duration::from_secs(5);

/// How one sweep call divides the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slicing {
    /// Flow slots per slice.
    slots: usize,
    /// Slices in a round (at least `SWEEP_SLICES`): the larger of what the flow
    /// slots and the dialogs need.
    parts: usize,
    /// Dialog shards per slice (all of them while the dialog table is small).
    shards: usize,
    /// Time to the next slice.
    every: Duration,
}

/// The slicing for a flow table of `slots` slots and `dialogs` dialogs.
fn slicing(slots: usize, dialogs: usize) -> Slicing {
    let slice = slots
        .div_ceil(SWEEP_SLICES)
        .clamp(SWEEP_MIN_SLICE, SWEEP_MAX_SLICE);
    let parts = slots
        .div_ceil(slice)
        .max(dialogs.div_ceil(SWEEP_MAX_SLICE))
        .max(SWEEP_SLICES);
    let shards = if dialogs > SWEEP_MIN_SLICE {
        SHARDS.div_ceil(parts)
    } else {
        SHARDS
    };
    let round = SWEEP_EVERY * SWEEP_SLICES as u32;
    Slicing {
        slots: slice,
        parts,
        shards,
        every: (round / parts as u32).clamp(SWEEP_MIN_EVERY, SWEEP_EVERY),
    }
}

impl Router {
    /// Re-sends the refreshed dialogs of the shards whose turn has come (see
    /// [`resend_every`]), at most [`RESEND_PER_CALL`] and only while the sync queue has
    /// room to spare; a late call catches up on at most one round.
    fn resend_refreshed(&mut self, now: Instant) {
        if self.sync_out.is_none() || now < self.resend_due {
            return;
        }
        let period = resend_every(&self.settings);
        let step = period / SHARDS as u32;
        // Never more than a round behind: what was refreshed before then goes out in
        // this round anyway.
        self.resend_due = self
            .resend_due
            .max(now.checked_sub(period).unwrap_or(self.resend_due));
        let behind = now.saturating_duration_since(self.resend_due);
        let due = if step.is_zero() {
            SHARDS
        } else {
            (behind.as_nanos() / step.as_nanos())
                .saturating_add(1)
                .min(SHARDS as u128) as usize
        };
        let (out, overflow, backends) =
            (&mut self.sync_out, &mut self.sync_overflow, &self.backends);
        let mut budget = RESEND_PER_CALL;
        let mut done = 0;
        while done < due {
            let room = out.as_ref().map_or(0, |q| {
                (q.capacity() - q.len())
                    .saturating_sub(q.capacity() / RESEND_RESERVE_DIVISOR)
                    .min(budget)
            });
            let mut sent = 0;
            let finished = room > 0
                && self
                    .dialogs
                    .take_refreshed(self.resend_shard, now, room, |key, d| {
                        sent += 1;
                        queue(out, overflow, dialog_item(key, d, backends));
                    });
            budget -= sent;
            if !finished {
                // The rest in the next call (the next sweep): the shard's turn stays
                // due.
                break;
            }
            self.resend_shard = (self.resend_shard + 1) % SHARDS;
            done += 1;
        }
        // Due times stay on their grid (calls come every sweep, not every step); a
        // whole round late, the next one starts afresh.
        let next = self.resend_due + step * done as u32;
        self.resend_due = if done == due && next <= now {
            now + step
        } else {
            next
        };
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let grow = self.tables_short_of_room().then_some(self.next_grow);
        self.next_sweep.into_iter().chain(grow).min()
    }

    /// Expires idle flows and dialogs, or grows the shards of a table short of room
    /// (the dialog table or a per-source limiter; one or the other per call: each is
    /// a stall of its own). Call at [`Router::poll_timeout`] (or any time).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.next_sweep {
            Some(t) if now < t => {
                if self.tables_short_of_room() && self.next_grow <= now {
                    self.grow_step(now);
                    self.next_grow = now + GROW_EVERY;
                }
                return;
            }
            _ => {}
        }
        let total = self.flows.slot_count();
        let plan = slicing(total, self.dialogs.len());
        self.next_sweep = Some(now + plan.every);
        let start = self.sweep_cursor.min(total);
        let end = (start + plan.slots).min(total);
        if start == 0 {
            self.sweep_homes.iter_mut().for_each(|n| *n = 0);
        }
        let mut expired = std::mem::take(&mut self.expired_scratch);
        expired.clear();
        let idle = Idle {
            answered: self.settings.flow_idle,
            unanswered: self.settings.unanswered_idle.min(self.settings.flow_idle),
        };
        let walked = self.flows.sweep(
            start..end,
            now,
            idle,
            self.peer_alive,
            SWEEP_MAX_REMOVALS,
            &mut expired,
            &mut self.sweep_homes,
        );
        if walked < end {
            self.next_sweep = Some(now + SWEEP_MIN_EVERY);
        }
        let end = walked;
        self.flows.tick(now);
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
        self.put_back_buckets(now);
        self.flows.expire_lingering(LINGERING_EXPIRE_PER_CALL);
        // The per-source tables (up to a million sources) are pruned in parts too,
        // one part per slice: all of them about once per round.
        self.limiter.prune_step(now, plan.parts);
        self.datagram_limiter.prune_step(now, plan.parts);
        // An expired dialog lets go of its flow (the flow itself expires later, when
        // idle).
        let flows = &mut self.flows;
        let mut release = |d: &Dialog| {
            hold(flows, d.flow, d.flow_gen, Some(d.span), None);
            unpin(flows, d);
        };
        for _ in 0..plan.shards {
            self.dialogs
                .expire_shard(self.dialog_shard, now, &mut release);
            self.dialog_shard = (self.dialog_shard + 1) % SHARDS;
        }
        self.resend_refreshed(now);
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

    /// Whether a table has a shard short of room (see [`Router::grow_step`]).
    fn tables_short_of_room(&self) -> bool {
        self.dialogs.short_of_room()
            || self.limiter.short_of_room()
            || self.datagram_limiter.short_of_room()
    }

    /// A growth step: the tables short of room in turns, starting after the one
    /// that started the last step (so that one that keeps filling does not hold the
    /// others back), sharing one budget of entries re-placed or slots walked.
    fn grow_step(&mut self, now: Instant) {
        let mut budget = GROW_BUDGET;
        self.grow_turn = (self.grow_turn + 1) % 3;
        for k in 0..3 {
            if budget == 0 {
                return;
            }
            match (self.grow_turn + k) % 3 {
                0 if self.dialogs.short_of_room() => {
                    self.dialogs.grow_step(&mut budget);
                }
                1 if self.limiter.short_of_room() => {
                    self.limiter.grow_step(now, &mut budget);
                }
                2 if self.datagram_limiter.short_of_room() => {
                    self.datagram_limiter.grow_step(now, &mut budget);
                }
                _ => {}
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<RouterEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Slicing {
        fn with_slots(self, slots: usize) -> Slicing {
            Slicing { slots, ..self }
        }
    }

    #[test]
    fn large_tables_take_more_slices_closer_together() {
        let small = slicing(100, 100);
        assert_eq!(
            (small.slots, small.shards, small.every),
            (SWEEP_MIN_SLICE, SHARDS, SWEEP_EVERY)
        );
        let s = slicing(50_000, 50_000);
        assert_eq!((s.slots, s.parts, s.every), (6_250, 8, SWEEP_EVERY));
        // 50k dialogs over 256 shards, 32 shards per slice: 6,250 per slice.
        assert_eq!(s.shards, 32);
        let s = slicing(100_000, 100_000);
        // 13 slices of 8,192 in a round of about 4 s; 20 shards (~7,800 dialogs) each.
        assert_eq!((s.slots, s.parts), (SWEEP_MAX_SLICE, 13));
        assert_eq!(s.every, Duration::from_millis(4000) / 13);
        assert_eq!(s.shards, 20);
        // A million: 123 slices, at most one per 50 ms (a round of about 6 s).
        let s = slicing(1_000_000, 0);
        assert_eq!(
            (s.slots, s.parts, s.every),
            (SWEEP_MAX_SLICE, 123, SWEEP_MIN_EVERY)
        );
        assert_eq!(slicing(100_000_000, 0).every, SWEEP_MIN_EVERY);
    }

    #[test]
    fn many_dialogs_take_more_slices_even_with_few_flows() {
        // One trunk flow carrying a million calls: 123 slices, 3 shards (~12k
        // dialogs) each, so every dialog is looked at about once per 6 s round.
        let s = slicing(10, 1_000_000);
        assert_eq!(s.parts, 123);
        assert_eq!(s.shards, 3);
        assert_eq!(s.every, SWEEP_MIN_EVERY);
        // A million flows and a million dialogs: the same.
        assert_eq!(slicing(1_000_000, 1_000_000), s.with_slots(SWEEP_MAX_SLICE));
    }
}
