//! The health checker: one OPTIONS probe at a time per backend, `rise` successes to
//! come up, `fall` failures to go down, and an ICMP fast path. Pure code: replies,
//! ICMP errors and the time come in; probes to send and state changes come out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config;
use crate::relay::{BackendId, PeerId};

/// What a checker probes, by slot: backends, or static peers (trunks).
pub trait Target: Copy + std::fmt::Debug + PartialEq {
    fn index(self) -> usize;
    fn from_index(i: usize) -> Self;
}

impl Target for BackendId {
    fn index(self) -> usize {
        BackendId::index(self)
    }
    fn from_index(i: usize) -> Self {
        BackendId::from_index(i)
    }
}

impl Target for PeerId {
    fn index(self) -> usize {
        usize::from(self.0)
    }
    fn from_index(i: usize) -> Self {
        PeerId(u16::try_from(i).unwrap_or(u16::MAX))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet: usable, so a (re)started proxy forwards at once; the first
    /// probe result decides without waiting for rise/fall.
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// Why a backend changed state. `as_str` values are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Probe replies with an alive code.
    Probe,
    /// Probes went unanswered.
    Timeout,
    /// ICMP port or host unreachable.
    Icmp,
    /// A final reply whose code is not in `alive_codes`.
    ReplyCode(u16),
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Probe => "probe",
            Reason::Timeout => "timeout",
            Reason::Icmp => "icmp",
            Reason::ReplyCode(_) => "reply_code",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<T = BackendId> {
    Up { backend: T, reason: Reason },
    Down { backend: T, reason: Reason },
}

/// A probe the shell must send: an OPTIONS to `backend` whose Call-ID carries `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTx<T = BackendId> {
    pub backend: T,
    pub seq: u32,
}

#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub alive: Vec<std::ops::RangeInclusive<u16>>,
}

impl From<&config::Health> for ProbeSettings {
    fn from(h: &config::Health) -> Self {
        ProbeSettings {
            interval: h.interval,
            timeout: h.timeout,
            rise: h.rise,
            fall: h.fall,
            alive: h.alive_codes.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    seq: u32,
    sent: Instant,
}

#[derive(Debug, Clone)]
struct Backend {
    state: Health,
    next_probe: Instant,
    outstanding: Option<Outstanding>,
    successes: u32,
    failures: u32,
    last_rtt: Option<Duration>,
    /// When the last probe went out (paces the probes ICMP errors call for).
    last_sent: Option<Instant>,
}

impl Backend {
    fn new(now: Instant) -> Self {
        Backend {
            state: Health::Unknown,
            next_probe: now,
            outstanding: None,
            successes: 0,
            failures: 0,
            last_rtt: None,
            last_sent: None,
        }
    }
}

pub struct Checker<T = BackendId> {
    settings: ProbeSettings,
    backends: Vec<Backend>,
    seq: u32,
    transmits: VecDeque<ProbeTx<T>>,
    events: VecDeque<Event<T>>,
    /// Replies that matched no outstanding probe (late, stray, duplicated).
    pub stale_replies: u64,
}

impl<T: Target> Checker<T> {
    pub fn new(settings: ProbeSettings, backends: usize, now: Instant) -> Self {
        Checker {
            settings,
            backends: (0..backends).map(|_| Backend::new(now)).collect(),
            seq: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stale_replies: 0,
        }
    }

    /// New settings (config reload); probes in flight are timed out by the new timeout. A
    /// shorter interval applies at once: no backend waits out the old one for its
    /// next probe.
    pub fn set_settings(&mut self, s: ProbeSettings, now: Instant) {
        for b in &mut self.backends {
            b.next_probe = b.next_probe.min(now + s.interval);
        }
        self.settings = s;
    }

    /// Grows or shrinks the backend list (indices are stable; new ones start Unknown).
    pub fn resize(&mut self, n: usize, now: Instant) {
        self.backends.resize_with(n, || Backend::new(now));
    }

    /// Forgets a backend's history (its address changed or it was re-added).
    pub fn reset(&mut self, backend: T, now: Instant) {
        if let Some(b) = self.backends.get_mut(backend.index()) {
            *b = Backend::new(now);
        }
    }

    pub fn state(&self, backend: T) -> Health {
        self.backends
            .get(backend.index())
            .map_or(Health::Down, |b| b.state)
    }

    /// The sequence number of the probe awaiting an answer from `backend`.
    pub fn outstanding(&self, backend: T) -> Option<u32> {
        self.backends
            .get(backend.index())
            .and_then(|b| b.outstanding)
            .map(|o| o.seq)
    }

    pub fn last_rtt(&self, backend: T) -> Option<Duration> {
        self.backends.get(backend.index()).and_then(|b| b.last_rtt)
    }

    /// A reply to probe `seq` of `backend` with status `code`. Returns the RTT when it
    /// answered the outstanding probe.
    pub fn handle_reply(
        &mut self,
        now: Instant,
        backend: T,
        seq: u32,
        code: u16,
    ) -> Option<Duration> {
        let Some(b) = self.backends.get_mut(backend.index()) else {
            self.stale_replies += 1;
            return None;
        };
        match b.outstanding {
            Some(o) if o.seq == seq => {
                if code < 200 {
                    return None; // provisional: wait for the final response
                }
                b.outstanding = None;
                let rtt = now.saturating_duration_since(o.sent);
                b.last_rtt = Some(rtt);
                if self.settings.alive.iter().any(|r| r.contains(&code)) {
                    self.success(backend.index());
                } else {
                    self.failure(backend.index(), Reason::ReplyCode(code));
                }
                Some(rtt)
            }
            _ => {
                self.stale_replies += 1;
                None
            }
        }
    }

    /// An ICMP unreachable from `backend`. `on_probe`: it quoted the outstanding probe
    /// (the shell checked the quote: the port is closed, decisive at once); otherwise
    /// it is unproven (relayed traffic bounced, or a quote too short to check): the
    /// backend is probed now if no probe is in flight (at most every quarter
    /// interval), and the probes decide as ever (`fall` failures). An unproven error
    /// never takes a backend down nor counts as a failure: anyone who learns a relay
    /// port can forge one, and one lost probe must not then be enough.
    pub fn handle_icmp(&mut self, now: Instant, backend: T, on_probe: bool) {
        let Some(b) = self.backends.get_mut(backend.index()) else {
            return;
        };
        if on_probe && b.outstanding.is_some() {
            b.outstanding = None;
            self.failure(backend.index(), Reason::Icmp);
        } else if b.state != Health::Down {
            // Forged errors can come at any rate, and each would otherwise send a
            // probe per round trip: an early probe at most every quarter interval.
            if b.outstanding.is_none() {
                let earliest = b
                    .last_sent
                    .map_or(now, |t| (t + self.settings.interval / 4).max(now));
                b.next_probe = b.next_probe.min(earliest);
            }
        }
    }

    fn success(&mut self, i: usize) {
        let rise = self.settings.rise;
        let b = &mut self.backends[i];
        b.failures = 0;
        b.successes = b.successes.saturating_add(1);
        let up = match b.state {
            Health::Unknown => true,
            Health::Down => b.successes >= rise,
            Health::Up => false,
        };
        if up {
            b.state = Health::Up;
            self.events.push_back(Event::Up {
                backend: T::from_index(i),
                reason: Reason::Probe,
            });
        }
    }

    fn failure(&mut self, i: usize, reason: Reason) {
        let fall = self.settings.fall;
        let b = &mut self.backends[i];
        b.successes = 0;
        b.failures = b.failures.saturating_add(1);
        let down = match b.state {
            Health::Unknown => true,
            // A closed port (the probe's own ICMP error) is decisive at once.
            Health::Up => b.failures >= fall || reason == Reason::Icmp,
            Health::Down => false,
        };
        if down {
            b.state = Health::Down;
            self.events.push_back(Event::Down {
                backend: T::from_index(i),
                reason,
            });
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.backends.len() {
            let timeout = self.settings.timeout;
            if let Some(o) = self.backends[i].outstanding
                && now >= o.sent + timeout
            {
                self.backends[i].outstanding = None;
                self.failure(i, Reason::Timeout);
            }
            let b = &mut self.backends[i];
            if b.outstanding.is_none() && now >= b.next_probe {
                self.seq = self.seq.wrapping_add(1);
                b.outstanding = Some(Outstanding {
                    seq: self.seq,
                    sent: now,
                });
                b.next_probe = now + self.settings.interval;
                b.last_sent = Some(now);
                self.transmits.push_back(ProbeTx {
                    backend: T::from_index(i),
                    seq: self.seq,
                });
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.backends
            .iter()
            .map(|b| match b.outstanding {
                Some(o) => o.sent + self.settings.timeout,
                None => b.next_probe,
            })
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<ProbeTx<T>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
