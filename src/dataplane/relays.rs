//! Relay sockets: one per flow, all in one level-triggered epoll set that a single
//! task drains (see `epoll.rs` for why level-triggered).

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Instant;

use tokio::io::unix::AsyncFd;

use super::{Shared, Shell};
use crate::relay::RelayPort;
use crate::sys::epoll::{self, Epoll};
use crate::sys::errqueue;
use crate::sys::mmsg;
use crate::sys::socket::bind_udp;

/// A trunk's flow carries as much as a public socket; the default (~208 KB, about
/// 150 small datagrams with their overhead) overflowed at 8000 calls/s on one flow
/// during a few milliseconds' stall. Only queued datagrams use it.
const RELAY_RCVBUF: usize = 2 << 20;

/// Opens a flow's relay socket, with ICMP error reporting for the fast path.
fn bind_relay(addr: SocketAddr) -> io::Result<StdUdpSocket> {
    let s = bind_udp(addr, Some(RELAY_RCVBUF))?;
    errqueue::enable(&s, addr.is_ipv6())?;
    Ok(s)
}

/// Drains the relay sockets that are ready: one `recvmmsg` batch per socket per
/// turn (the set is level-triggered, so a socket with more waiting comes back in
/// the next turn), then other tasks get a turn.
pub(super) async fn relay_reactor(shell: Shared, poll: Rc<AsyncFd<Epoll>>) {
    let mut events = epoll::events();
    loop {
        let mut ready = match poll.readable().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "relay socket set failed");
                return;
            }
        };
        let evs = match poll.get_ref().wait(&mut events) {
            Ok(evs) => evs,
            Err(e) => {
                tracing::error!(error = %e, "epoll_wait on the relay sockets failed");
                return;
            }
        };
        let again = shell.borrow_mut().drain_relays(Instant::now(), evs);
        if again || evs.len() == epoll::EVENTS {
            // More is waiting: keep the readiness, let the public sockets in first.
            tokio::task::yield_now().await;
        } else {
            // Every socket reported was drained; a new datagram wakes the set again.
            ready.clear_ready();
        }
    }
}

impl Shell {
    /// One turn over the ready relay sockets; true when one may hold more.
    fn drain_relays(&mut self, now: Instant, evs: &[epoll::Event]) -> bool {
        let mut again = false;
        let mut batch = self.batch.take().unwrap_or_default();
        for ev in evs {
            let idx = epoll::token(ev) as usize;
            // Closed sockets leave the set; a slot is only reused by a later turn.
            let Some(fd) = self
                .relays
                .get(idx)
                .and_then(|r| r.as_ref())
                .map(|r| r.as_raw_fd())
            else {
                continue;
            };
            // `relays[idx]` stays open during this turn: only the housekeeping and
            // sync tasks close relay sockets.
            if epoll::is_error(ev) {
                self.on_relay_error(now, &fd);
            }
            match batch.recv(fd) {
                Ok(got) => {
                    let port = self.space.at(idx);
                    for i in 0..got {
                        if let Some((data, from)) = batch.get(i) {
                            self.on_backend(now, port, from, data);
                        }
                    }
                    again |= got == mmsg::BATCH;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    // A pending socket error ended this receive; datagrams may wait.
                    self.on_relay_error(now, &fd);
                    again = true;
                }
            }
        }
        self.batch = Some(batch);
        again
    }

    /// An ICMP error on a relay socket: which backend bounced? Probe it now. It is
    /// never a verdict by itself (anyone can forge one, and relay sockets are not
    /// connected); one for a destination that is no backend is ignored and counted.
    pub(super) fn on_relay_error(&mut self, now: Instant, sock: &impl AsRawFd) {
        let prober = &mut self.prober;
        let mut woke = false;
        errqueue::drain(sock, |u| {
            woke |= prober.relay_icmp(now, &u.dest, u.offender);
        });
        if woke {
            self.probe_wake.notify_one();
        }
    }

    /// Binds a relay port (IP_FREEBIND: the relay address may be a VIP that is on
    /// the peer right now) and adds it to the relay set. A port already open stays.
    pub(super) fn open_relay(&mut self, port: RelayPort) -> io::Result<()> {
        let (Some(idx), Some(addr)) = (
            self.space.index(port),
            crate::relay::port::socket_addr(&self.relay_ips, port),
        ) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "relay endpoint outside listen.relay / relay_ports",
            ));
        };
        if self.relays[idx].is_some() {
            return Ok(());
        }
        let sock = bind_relay(addr)?;
        self.relay_poll.get_ref().add(&sock, idx as u64)?;
        self.relays[idx] = Some(sock);
        self.relays_open += 1;
        Ok(())
    }

    pub(super) fn close_relay(&mut self, port: RelayPort) {
        let idx = self.space.index(port);
        if idx.and_then(|i| self.relays[i].take()).is_some() {
            self.relays_open -= 1;
        }
    }
}
