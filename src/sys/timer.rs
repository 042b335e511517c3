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
}

impl Deadline {
    pub fn new() -> io::Result<Deadline> {
        Ok(Deadline {
            fd: TimerFd::new(
                ClockId::CLOCK_MONOTONIC,
                TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
            )?,
            armed: None,
        })
    }

    /// Makes the descriptor readable at `at` (or just after), unless it already is
    /// set for `at`. `now` is a recent reading of the clock: an older one only
    /// delays the expiry by its age.
    pub fn set(&mut self, now: Instant, at: Instant) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        // Zero would disarm the timer: a deadline already due expires at once.
        let d = at
            .saturating_duration_since(now)
            .max(Duration::from_nanos(1));
        self.fd.set(
            Expiration::OneShot(TimeSpec::from_duration(d)),
            TimerSetTimeFlags::empty(),
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

    #[test]
    fn readable_at_the_deadline_and_set_again_only_when_it_changes() {
        let poll = Epoll::new().unwrap();
        let mut t = Deadline::new().unwrap();
        poll.add(&t, 7).unwrap();
        let mut evs = epoll::events();
        let now = Instant::now();
        let at = now + Duration::from_millis(30);
        t.set(now, at).unwrap();
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
        t.set(now, now).unwrap();
        assert_eq!(poll.wait_ms(&mut evs, 2_000).unwrap().len(), 1);
        t.set(now, now).unwrap();
        assert_eq!(t.armed, Some(now));
        t.fired();
        assert!(poll.wait(&mut evs).unwrap().is_empty());
        // A later deadline replaces an earlier one.
        let now = Instant::now();
        t.set(now, now + Duration::from_millis(5)).unwrap();
        t.set(now, now + Duration::from_secs(60)).unwrap();
        assert!(poll.wait_ms(&mut evs, 50).unwrap().is_empty());
    }
}
