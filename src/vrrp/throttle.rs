//! When gratuitous ARP bursts go out (log lines go through
//! [`crate::throttle::LogThrottle`]). Adverts are unauthenticated, so every reaction to
//! one must be bounded by time, not by how many arrive.

use std::time::{Duration, Instant};

/// When gratuitous ARP bursts go out while master: at most one burst is pending;
/// bursts asked for by received adverts keep `min_gap` between them, takeover bursts
/// `takeover_gap` (short: a real takeover is never held up for long, but adverts
/// that flip the machine as fast as they arrive do not get a burst each).
#[derive(Debug, Clone)]
pub struct GarpSchedule {
    min_gap: Duration,
    takeover_gap: Duration,
    last: Option<Instant>,
    /// The one pending burst.
    due: Option<Instant>,
}

impl GarpSchedule {
    pub fn new(min_gap: Duration, takeover_gap: Duration) -> GarpSchedule {
        GarpSchedule {
            min_gap,
            takeover_gap,
            last: None,
            due: None,
        }
    }

    /// When the pending burst is due.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Takeover. True: a burst now (the caller sends it), the next one after
    /// `repeat_after`. False: the last burst was less than `takeover_gap` ago (the
    /// machine flaps); the burst is pending, due `takeover_gap` after the last.
    pub fn takeover(&mut self, now: Instant, repeat_after: Duration) -> bool {
        if let Some(last) = self.last
            && now < last + self.takeover_gap
        {
            let earliest = last + self.takeover_gap;
            self.due = Some(self.due.map_or(earliest, |d| d.min(earliest)));
            return false;
        }
        self.last = Some(now);
        self.due = Some(now + repeat_after);
        true
    }

    /// A burst asked for by a received advert. True: send it now. False: it is folded
    /// into the pending one, which is due no later than `min_gap` after the last burst.
    pub fn request(&mut self, now: Instant) -> bool {
        let earliest = self.last.map_or(now, |t| t + self.min_gap);
        if earliest <= now {
            self.last = Some(now);
            if self.due.is_some_and(|d| d <= now + self.min_gap) {
                // This burst stands for a pending one that was due soon anyway.
                self.due = None;
            }
            return true;
        }
        self.due = Some(self.due.map_or(earliest, |d| d.min(earliest)));
        false
    }

    /// True when the pending burst is due at `now` (the caller sends it).
    pub fn poll(&mut self, now: Instant) -> bool {
        if self.due.is_some_and(|d| d <= now) {
            self.due = None;
            self.last = Some(now);
            return true;
        }
        false
    }

    /// Backup again: nothing pending.
    pub fn clear(&mut self) {
        self.due = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn requested_bursts_coalesce_into_one_pending() {
        let t = Instant::now();
        let mut g = GarpSchedule::new(ms(1000), ms(100));
        assert!(g.request(t), "the first one goes out at once");
        // A flood: nothing goes out at once, one burst is pending.
        for i in 1..1000 {
            assert!(!g.request(t + ms(i)));
            assert_eq!(g.due(), Some(t + ms(1000)));
        }
        assert!(!g.poll(t + ms(999)));
        assert!(g.poll(t + ms(1000)));
        assert_eq!(g.due(), None);
        assert!(
            !g.request(t + ms(1500)),
            "1 s after the pending one went out"
        );
        assert_eq!(g.due(), Some(t + ms(2000)));
        g.clear();
        assert_eq!(g.due(), None);
        assert!(g.request(t + ms(2000)));
    }

    #[test]
    fn takeover_sends_at_once_and_schedules_the_repeat() {
        let t = Instant::now();
        let mut g = GarpSchedule::new(ms(1000), ms(100));
        assert!(g.request(t));
        assert!(g.takeover(t + ms(100), ms(5000)));
        assert_eq!(g.due(), Some(t + ms(5100)));
        // A request soon after folds into the earlier of the two.
        assert!(!g.request(t + ms(120)));
        assert_eq!(g.due(), Some(t + ms(1100)));
        assert!(g.poll(t + ms(1100)));
        assert_eq!(g.due(), None);
    }

    #[test]
    fn a_burst_sent_now_stands_for_a_pending_one_due_soon() {
        let t = Instant::now();
        let mut g = GarpSchedule::new(ms(1000), ms(100));
        assert!(g.takeover(t, ms(1500)));
        assert!(g.request(t + ms(1000)));
        assert_eq!(g.due(), None);
        assert!(g.takeover(t + ms(2000), ms(5000)));
        assert!(g.request(t + ms(3000)));
        assert_eq!(
            g.due(),
            Some(t + ms(7000)),
            "the takeover repeat is far off: kept"
        );
    }

    #[test]
    fn takeovers_faster_than_the_gap_share_one_pending_burst() {
        let t = Instant::now();
        let mut g = GarpSchedule::new(ms(1000), ms(100));
        assert!(g.takeover(t, ms(5000)), "the first takeover sends at once");
        // Adverts flip the machine every millisecond: no burst each.
        for i in 1..100 {
            assert!(!g.takeover(t + ms(i), ms(5000)));
            assert_eq!(g.due(), Some(t + ms(100)));
        }
        assert!(g.poll(t + ms(100)));
        // A real takeover later goes out at once.
        assert!(g.takeover(t + ms(300), ms(5000)));
    }
}
