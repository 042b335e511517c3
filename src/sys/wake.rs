//! A wake-up for a thread blocked in `epoll_wait`: an eventfd that other threads
//! write to (control requests, shutdown) and the waiting thread reads back.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::eventfd::{EfdFlags, EventFd};

pub struct Wake {
    fd: EventFd,
}

impl Wake {
    pub fn new() -> io::Result<Wake> {
        Ok(Wake {
            fd: EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?,
        })
    }

    /// Makes the descriptor readable until [`Wake::clear`]; any thread.
    pub fn wake(&self) {
        // Only fails when the counter would overflow: it is readable then anyway.
        let _ = self.fd.write(1);
    }

    /// Reads the counter back to zero (not readable any more).
    pub fn clear(&self) {
        let _ = self.fd.read();
    }
}

impl AsFd for Wake {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::epoll::{Epoll, events, token};

    #[test]
    fn a_wake_makes_the_set_ready_until_cleared() {
        let ep = Epoll::new().unwrap();
        let w = Wake::new().unwrap();
        ep.add(&w, 3).unwrap();
        let mut evs = events();
        assert!(ep.wait(&mut evs).unwrap().is_empty());
        w.wake();
        w.wake();
        let got: Vec<u64> = ep.wait(&mut evs).unwrap().iter().map(token).collect();
        assert_eq!(got, [3]);
        w.clear();
        assert!(ep.wait_ms(&mut evs, 1).unwrap().is_empty());
    }
}
