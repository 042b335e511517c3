//! Rate-limited log lines: every log line a packet from the network can cause goes
//! through one of these, so a flood costs one line per interval, with a count.

use std::time::{Duration, Instant};

/// At most one log line per `every` (after a first `burst` of them); the lines in
/// between are counted and the count goes with the next line written.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    every: Duration,
    burst: u32,
    /// Lines that may be written now.
    tokens: u32,
    /// When the last token was counted in (`None`: never used, `burst` tokens).
    refilled: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub fn new(every: Duration) -> LogThrottle {
        LogThrottle::with_burst(every, 1)
    }

    /// Up to `burst` lines at once, then one per `every`.
    pub fn with_burst(every: Duration, burst: u32) -> LogThrottle {
        LogThrottle {
            every,
            burst: burst.max(1),
            tokens: 0,
            refilled: None,
            suppressed: 0,
        }
    }

    fn refill(&mut self, now: Instant) {
        let Some(t) = self.refilled else {
            self.tokens = self.burst;
            self.refilled = Some(now);
            return;
        };
        let n = now.saturating_duration_since(t).as_nanos() / self.every.as_nanos().max(1);
        if n >= u128::from(self.burst) {
            self.tokens = self.burst;
            self.refilled = Some(now);
        } else if n > 0 {
            self.tokens = (self.tokens + n as u32).min(self.burst);
            self.refilled = Some(t + self.every * n as u32);
        }
    }

    /// Takes a line's token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        let some = self.tokens > 0;
        self.tokens -= u32::from(some);
        some
    }

    /// `Some(n)`: write the line now, `n` lines were suppressed since the last one.
    /// `None`: suppressed (counted).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if !self.take(now) {
            self.suppressed += 1;
            return None;
        }
        Some(std::mem::take(&mut self.suppressed))
    }

    /// The lines suppressed since the last one written, once one may be written
    /// again (counted as written): for a summary when no later line comes.
    pub fn overdue(&mut self, now: Instant) -> Option<u64> {
        (self.suppressed > 0 && self.take(now)).then(|| std::mem::take(&mut self.suppressed))
    }
}

/// Counts by reason between two log lines: [`ReasonTally::note`] returns the counts
/// since the last line (`a=1 b=2`, reasons with none left out) when a line is due, at
/// most one per `every`.
pub struct ReasonTally<const N: usize> {
    names: [&'static str; N],
    counts: [u64; N],
    log: LogThrottle,
}

impl<const N: usize> ReasonTally<N> {
    pub fn new(names: [&'static str; N], every: Duration) -> Self {
        ReasonTally {
            names,
            counts: [0; N],
            log: LogThrottle::new(every),
        }
    }

    /// One more of reason `i` (its index in `names`).
    pub fn note(&mut self, i: usize, now: Instant) -> Option<String> {
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.log.allow(now)?;
        let line = by_reason(self.names.into_iter(), &self.counts);
        self.counts = [0; N];
        Some(line)
    }
}

/// `reason=count` for each reason counted, in the counters' order (a log line's).
pub fn by_reason(names: impl Iterator<Item = &'static str>, counts: &[u64]) -> String {
    let parts: Vec<String> = names
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r}={n}"))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_gives_the_counts_since_the_last_line() {
        let t0 = Instant::now();
        let mut t = ReasonTally::new(["a", "b", "c"], Duration::from_secs(10));
        assert_eq!(t.note(1, t0).as_deref(), Some("b=1"));
        assert_eq!(t.note(0, t0), None);
        assert_eq!(t.note(0, t0), None);
        assert_eq!(t.note(2, t0 + Duration::from_secs(1)), None);
        assert_eq!(
            t.note(1, t0 + Duration::from_secs(10)).as_deref(),
            Some("a=2 b=1 c=1")
        );
    }

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
        // Suppressed lines with none after them: a summary once the time has come.
        assert_eq!(l.allow(t + ms(30_001)), None);
        assert_eq!(l.overdue(t + ms(39_999)), None);
        assert_eq!(l.overdue(t + ms(40_000)), Some(1));
        assert_eq!(l.overdue(t + ms(60_000)), None);
        assert_eq!(l.allow(t + ms(49_999)), None);
        assert_eq!(l.allow(t + ms(50_000)), Some(1));
    }

    #[test]
    fn log_throttle_with_a_burst() {
        let t = Instant::now();
        let mut l = LogThrottle::with_burst(ms(1000), 3);
        for i in 0..3 {
            assert_eq!(l.allow(t + ms(i)), Some(0), "line {i} of the burst");
        }
        for i in 3..100 {
            assert_eq!(l.allow(t + ms(i)), None);
        }
        assert_eq!(l.allow(t + ms(1000)), Some(97));
        assert_eq!(l.allow(t + ms(1500)), None);
        assert_eq!(l.overdue(t + ms(1999)), None);
        assert_eq!(l.overdue(t + ms(2000)), Some(1));
        // Quiet for long: the whole burst again.
        for i in 0..3 {
            assert_eq!(l.allow(t + ms(60_000 + i)), Some(0));
        }
        assert_eq!(l.allow(t + ms(60_003)), None);
    }
}
