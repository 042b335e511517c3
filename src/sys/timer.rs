//! The dataplane's next deadline as a timerfd in its epoll set.
//!
//! Why not `epoll_wait`'s timeout: a wait with a timeout arms a kernel timer each
//! time the thread sleeps and cancels it when a datagram wakes it first, which at
//! low rates is every wait; on a virtual machine programming the timer is a trip
//! to the hypervisor. The deadlines themselves (probes, housekeeping, the sweep,
//! the sync link) move only when one falls due, so a timerfd armed when the
//! deadline changes, with waits that never time out, sets the timer a few dozen
//! times a second instead of twice per wake-up.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

pub struct Deadline {
    fd: TimerFd,
    /// The deadline the timer is set for, until it fires.
    armed: Option<Instant>,
    /// An instant and the monotonic clock's reading at it (`Instant` reads that
    /// clock): deadlines become absolute expiries.
    base: (Instant, Duration),
}

impl Deadline {
    pub fn new() -> io::Result<Deadline> {
        let at = Instant::now();
        let clock = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
        Ok(Deadline {
            fd: TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )?,
            armed: None,
            base: (at, Duration::from(clock)),
        })
    }

    /// Makes the descriptor readable at `at` (or just after), unless it already is
    /// set for `at`. The expiry is absolute: a turn that took long before arming it
    /// does not push it back, and a deadline already past expires at once.
    pub fn set(&mut self, at: Instant) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        let (base, clock) = self.base;
        // Never zero (that would disarm): the clock read more than zero at start.
        let expiry = clock + at.saturating_duration_since(base);
        self.fd.set(
            Expiration::OneShot(TimeSpec::from_duration(expiry)),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
        )?;
        self.armed = Some(at);
        Ok(())
    }

    /// The descriptor was readable: clears it, and the next [`Deadline::set`] arms
    /// the timer again.
    pub fn fired(&mut self) {
        self.armed = None;
        // Nonblocking: a read that finds nothing (a stale readiness) is harmless.
        let _ = nix::unistd::read(&self.fd, &mut [0u8; 8]);
    }
}

impl AsFd for Deadline {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::epoll::{self, Epoll};

    /// A deadline in an epoll set (token 7).
    fn polled() -> (Epoll, Deadline) {
        let poll = Epoll::new().unwrap();
        let t = Deadline::new().unwrap();
        poll.add(&t, 7).unwrap();
        (poll, t)
    }

    #[test]
    fn readable_at_the_deadline_and_set_again_only_when_it_changes() {
        let (poll, mut t) = polled();
        let mut evs = epoll::events();
        let now = Instant::now();
        let at = now + Duration::from_millis(30);
        t.set(at).unwrap();
        assert!(poll.wait(&mut evs).unwrap().is_empty());
        let got = poll.wait_ms(&mut evs, 2_000).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(epoll::token(&got[0]), 7);
        assert!(Instant::now() >= at);
        // Level-triggered: readable until read.
        assert_eq!(poll.wait(&mut evs).unwrap().len(), 1);
        t.fired();
        assert!(poll.wait(&mut evs).unwrap().is_empty());
        // A deadline already due expires at once; setting the same one again does
        // not re-arm a timer that fired and was not read.
        let now = Instant::now();
        t.set(now).unwrap();
        assert_eq!(poll.wait_ms(&mut evs, 2_000).unwrap().len(), 1);
        t.set(now).unwrap();
        assert_eq!(t.armed, Some(now));
        t.fired();
        assert!(poll.wait(&mut evs).unwrap().is_empty());
        // A later deadline replaces an earlier one.
        let now = Instant::now();
        t.set(now + Duration::from_millis(5)).unwrap();
        t.set(now + Duration::from_secs(60)).unwrap();
        assert!(poll.wait_ms(&mut evs, 50).unwrap().is_empty());
    }

    /// A deadline computed before a long turn (a full sync, a reload) and armed after
    /// it expires at the deadline, not the turn's length later.
    #[test]
    fn a_deadline_armed_late_expires_at_the_deadline() {
        let (poll, mut t) = polled();
        let mut evs = epoll::events();
        let start = Instant::now();
        // Wide apart, for a loaded machine: the deadline at 1.05 s, a timer that
        // counted from when it was armed at 2.05 s.
        std::thread::sleep(Duration::from_millis(1000));
        t.set(start + Duration::from_millis(1050)).unwrap();
        assert_eq!(poll.wait_ms(&mut evs, 4_000).unwrap().len(), 1);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1050) && took < Duration::from_millis(1800),
            "{took:?}"
        );
    }
}
