//! A level-triggered epoll set for the relay sockets, itself registered in tokio's
//! reactor: one task drains whichever relay sockets are ready, in batches, instead
//! of one tokio task (and one reactor registration) per flow.
//!
//! Why level-triggered inside: a socket that still holds datagrams after its turn
//! is reported again by the next `wait`, so a busy flow cannot starve the others
//! and nothing is lost when a turn ends early. The outer registration is tokio's
//! (edge-triggered); any new datagram on any member wakes it, so the outer
//! readiness may be cleared once a `wait` came back with every reported socket
//! drained.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct Epoll {
    fd: OwnedFd,
}

/// Events taken per `wait`.
pub const EVENTS: usize = 64;

pub type Events = [libc::epoll_event; EVENTS];

pub fn events() -> Box<Events> {
    Box::new([libc::epoll_event { events: 0, u64: 0 }; EVENTS])
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for input (errors are always reported) under `token`. Closing
    /// the socket removes it from the set.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Ready members now, without blocking.
    pub fn wait<'a>(&self, events: &'a mut Events) -> io::Result<&'a [libc::epoll_event]> {
        // SAFETY: the kernel writes at most EVENTS entries into `events`.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                EVENTS as libc::c_int,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(&events[..n as usize])
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
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
        ep.add(a.as_raw_fd(), 7).unwrap();
        ep.add(b.as_raw_fd(), 9).unwrap();
        let mut evs = events();
        assert!(ep.wait(&mut evs).unwrap().is_empty());
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", a.local_addr().unwrap()).unwrap();
        tx.send_to(b"y", a.local_addr().unwrap()).unwrap();
        let got: Vec<u64> = ep.wait(&mut evs).unwrap().iter().map(|e| e.u64).collect();
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
