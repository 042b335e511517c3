//! The router's admission controls as the admin API and reloads see them: reloading
//! `[access]` and the per-source limits, the ban list, and the top sources.

use std::time::{Duration, Instant};

use super::Router;
use crate::config::{Access, Cidr, Limits};
use crate::relay::access::BanError;
use crate::relay::ratelimit::SourceKey;
use crate::relay::source_limits::SourceClasses;
use crate::relay::top::TopEntry;

impl Router {
    /// Applies a reloaded `[access]` (allow, deny, ban table size, User-Agents); bans
    /// stay.
    pub fn set_access(&mut self, a: &Access) {
        self.access.configure(a);
    }

    /// Applies reloaded per-source limits and their `[[limits.source]]` overrides
    /// (the table sizes in `l` are not touched). The limiters' tables start over full;
    /// a datagram bucket a source's only flow holds keeps its state, at the new rate.
    pub fn set_source_limits(&mut self, l: &Limits) {
        self.sources = SourceClasses::new(l);
        self.datagram_limiter
            .set_classes(self.sources.datagram_rates());
        self.limiter.set_classes(self.sources.new_flow_rates());
    }

    /// Refuses `c` until `now + dur`.
    pub fn ban(&mut self, c: Cidr, dur: Duration, now: Instant) -> Result<(), BanError> {
        self.access.ban(c, dur, now)
    }

    /// Lifts the ban of exactly `c`; false if there was none.
    pub fn unban(&mut self, c: &Cidr) -> bool {
        self.access.unban(c)
    }

    /// Live bans and the time each has left.
    pub fn bans(&self, now: Instant) -> Vec<(Cidr, Duration)> {
        self.access.bans(now)
    }

    /// The sources with the most dropped datagrams (an estimate: see `top.rs`).
    pub fn top_drops(&self, n: usize) -> Vec<TopEntry> {
        self.top_drops.top(n)
    }

    /// The sources holding the most flows now (exact).
    pub fn top_flows(&self, n: usize) -> Vec<(SourceKey, u32)> {
        self.flows.top_sources(n)
    }
}
