//! Rate limits for what received packets make the speaker do: log lines and gratuitous
//! ARP bursts. Adverts are unauthenticated, so every reaction to one must be bounded
//! by time, not by how many arrive.

use std::time::{Duration, Instant};

/// At most one log line per `every`; the lines in between are counted and the count
/// goes with the next line written.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)`: write the line now, `n` lines were suppressed since the last one.
    /// `None`: suppressed (counted).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now < t + self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// When gratuitous ARP bursts go out while master: at most one burst is pending, and
/// bursts asked for by received adverts keep `min_gap` between them (takeover bursts
/// do not wait).
#[derive(Debug, Clone)]
pub struct GarpSchedule {
    min_gap: Duration,
    last: Option<Instant>,
    /// The one pending burst.
    due: Option<Instant>,
}

impl GarpSchedule {
    pub fn new(min_gap: Duration) -> GarpSchedule {
        GarpSchedule {
            min_gap,
            last: None,
            due: None,
        }
    }

    /// When the pending burst is due.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Takeover: a burst now (the caller sends it), the next one after `repeat_after`.
    pub fn takeover(&mut self, now: Instant, repeat_after: Duration) {
        self.last = Some(now);
        self.due = Some(now + repeat_after);
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
    fn log_throttle_counts_what_it_suppresses() {
        let t = Instant::now();
        let mut l = LogThrottle::new(ms(10_000));
        assert_eq!(l.allow(t), Some(0));
        for i in 1..=500 {
            assert_eq!(l.allow(t + ms(i)), None);
        }
        assert_eq!(l.allow(t + ms(9_999)), None);
        assert_eq!(l.allow(t + ms(10_000)), Some(501));
        assert_eq!(l.allow(t + ms(10_001)), None);
        assert_eq!(l.allow(t + ms(30_000)), Some(1));
    }

    #[test]
    fn requested_bursts_coalesce_into_one_pending() {
        let t = Instant::now();
        let mut g = GarpSchedule::new(ms(1000));
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
        let mut g = GarpSchedule::new(ms(1000));
        assert!(g.request(t));
        g.takeover(t + ms(10), ms(5000));
        assert_eq!(g.due(), Some(t + ms(5010)));
        // A request soon after folds into the earlier of the two.
        assert!(!g.request(t + ms(20)));
        assert_eq!(g.due(), Some(t + ms(1010)));
        assert!(g.poll(t + ms(1010)));
        assert_eq!(g.due(), None);
    }

    #[test]
    fn a_burst_sent_now_stands_for_a_pending_one_due_soon() {
        let t = Instant::now();
        let mut g = GarpSchedule::new(ms(1000));
        g.takeover(t, ms(1500));
        assert!(g.request(t + ms(1000)));
        assert_eq!(g.due(), None);
        g.takeover(t + ms(2000), ms(5000));
        assert!(g.request(t + ms(3000)));
        assert_eq!(
            g.due(),
            Some(t + ms(7000)),
            "the takeover repeat is far off: kept"
        );
    }
}
