//! A level-triggered epoll set: the dataplane thread's one set (public, relay, probe
//! and sync sockets, the wake-up eventfd) and the probe sockets' own set nested in it.
//!
//! Why level-triggered: a socket that still holds datagrams after its turn is
//! reported again by the next `wait`, so a busy socket cannot starve the others and
//! nothing is lost when a turn ends early (a bounded turn needs no bookkeeping).

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::epoll::{self, EpollCreateFlags, EpollFlags, EpollTimeout};

pub use nix::sys::epoll::EpollEvent as Event;

pub struct Epoll {
    ep: epoll::Epoll,
}

/// Events taken per `wait`.
pub const EVENTS: usize = 64;

pub type Events = [Event; EVENTS];

pub fn events() -> Box<Events> {
    Box::new([Event::empty(); EVENTS])
}

/// The member's token, as given to `add`.
pub fn token(ev: &Event) -> u64 {
    ev.data()
}

/// The member has a pending error (for a UDP socket with `IP_RECVERR`: an ICMP error
/// waiting in its error queue).
pub fn is_error(ev: &Event) -> bool {
    ev.events().contains(EpollFlags::EPOLLERR)
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        Ok(Epoll {
            ep: epoll::Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
        })
    }

    /// Watches `fd` for input (errors are always reported) under `token`, level-
    /// triggered (no `EPOLLET`). Closing the socket removes it from the set.
    pub fn add(&self, fd: impl AsFd, token: u64) -> io::Result<()> {
        Ok(self.ep.add(fd, Event::new(EpollFlags::EPOLLIN, token))?)
    }

    /// Ready members now, without blocking.
    pub fn wait<'a>(&self, events: &'a mut Events) -> io::Result<&'a [Event]> {
        self.wait_for(events, EpollTimeout::ZERO)
    }

    /// Ready members, waiting up to `ms` milliseconds for one (`u16::MAX`: 65 s).
    /// A signal ends the wait early with no members (EINTR is not an error here).
    /// Tests only: the dataplane's deadlines are a member ([`Epoll::wait_ready`]).
    #[cfg(test)]
    pub fn wait_ms<'a>(&self, events: &'a mut Events, ms: u16) -> io::Result<&'a [Event]> {
        self.wait_for(events, EpollTimeout::from(ms))
    }

    /// Ready members, waiting as long as it takes (deadlines come from a member:
    /// [`crate::sys::timer::Deadline`]). A signal ends the wait early with none.
    pub fn wait_ready<'a>(&self, events: &'a mut Events) -> io::Result<&'a [Event]> {
        self.wait_for(events, EpollTimeout::NONE)
    }

    fn wait_for<'a>(&self, events: &'a mut Events, t: EpollTimeout) -> io::Result<&'a [Event]> {
        match self.ep.wait(events, t) {
            Ok(n) => Ok(&events[..n]),
            Err(nix::errno::Errno::EINTR) => Ok(&events[..0]),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.ep.0.as_fd()
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.ep.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn reports_ready_members_level_triggered_and_forgets_closed_ones() {
        let ep = Epoll::new().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        ep.add(&a, 7).unwrap();
        ep.add(&b, 9).unwrap();
        let mut evs = events();
        assert!(ep.wait(&mut evs).unwrap().is_empty());
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", a.local_addr().unwrap()).unwrap();
        tx.send_to(b"y", a.local_addr().unwrap()).unwrap();
        let got: Vec<u64> = ep.wait(&mut evs).unwrap().iter().map(token).collect();
        assert_eq!(got, [7]);
        // Level-triggered: still ready until read empty.
        let mut buf = [0u8; 8];
        a.recv(&mut buf).unwrap();
        assert_eq!(ep.wait(&mut evs).unwrap().len(), 1);
        a.recv(&mut buf).unwrap();
        assert!(ep.wait(&mut evs).unwrap().is_empty());
        tx.send_to(b"z", b.local_addr().unwrap()).unwrap();
        drop(b);
        assert!(
            ep.wait(&mut evs).unwrap().is_empty(),
            "closed socket left the set"
        );
    }
}
