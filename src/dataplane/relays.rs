//! Relay sockets, members of the dataplane's level-triggered epoll set (see
//! `epoll.rs` for why level-triggered). Port mode: one socket per flow, the epoll
//! token is the endpoint's slot. Prefix mode: one wildcard socket per relay port, the
//! token is `PREFIX_TOKEN` + the port's position; the destination address of each
//! datagram (`IP_PKTINFO`) names the endpoint, and sends carry the endpoint as their
//! source.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use super::{DataplaneError, PREFIX_TOKEN, Shell};
use crate::config::Config;
use crate::relay::RelayPort;
use crate::relay::flows::FlowId;
use crate::sys::epoll::{self, Epoll};
use crate::sys::errqueue;
use crate::sys::mmsg;
use crate::sys::pktinfo;
use crate::sys::socket::bind_udp;

/// Prefix mode's sockets (empty in port mode).
#[derive(Default)]
pub(super) struct PrefixSockets {
    /// By position in `listen.relay_port`.
    socks: Vec<StdUdpSocket>,
    ports: Vec<u16>,
    /// Slots in use, a bit each (flows and mirrored flows hold their endpoint).
    used: Vec<u64>,
}

impl PrefixSockets {
    /// Binds the wildcard socket of every relay port and adds it to `poll`.
    pub(super) fn open(cfg: &Config, poll: &Epoll) -> Result<Self, DataplaneError> {
        let Some(p) = &cfg.listen.relay_prefix else {
            return Ok(PrefixSockets::default());
        };
        let mut socks = Vec::new();
        for (i, &port) in p.ports.iter().enumerate() {
            let v6 = p.net.is_ipv6();
            let wild = SocketAddr::new(
                if v6 {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                } else {
                    std::net::Ipv4Addr::UNSPECIFIED.into()
                },
                port,
            );
            let bind = |source| DataplaneError::Bind { addr: wild, source };
            // A prefix socket carries every flow of its port: as much as a public one.
            let s =
                pktinfo::bind_wildcard(v6, port, cfg.listen.receive_buffer, Some((p.net, p.len)))
                    .map_err(bind)?;
            errqueue::enable(&s, v6).map_err(bind)?;
            poll.add(&s, PREFIX_TOKEN + i as u64).map_err(bind)?;
            socks.push(s);
        }
        Ok(PrefixSockets {
            socks,
            ports: p.ports.clone(),
            used: vec![
                0;
                crate::relay::RelaySpace::from_config(cfg)
                    .len()
                    .div_ceil(64)
            ],
        })
    }

    pub(super) fn is_on(&self) -> bool {
        !self.socks.is_empty()
    }

    /// The wildcard sockets, by position in `listen.relay_port`.
    pub(super) fn socks(&self) -> &[StdUdpSocket] {
        &self.socks
    }

    /// The socket of relay port `port`.
    #[inline]
    fn sock(&self, port: u16) -> Option<&StdUdpSocket> {
        let i = self.ports.iter().position(|&p| p == port)?;
        self.socks.get(i)
    }
}

/// Opens a flow's relay socket (`rcvbuf`: `listen.relay_receive_buffer`), with ICMP
/// error reporting for the fast path.
fn bind_relay(addr: SocketAddr, rcvbuf: usize) -> io::Result<StdUdpSocket> {
    let s = bind_udp(addr, Some(rcvbuf))?;
    errqueue::enable(&s, addr.is_ipv6())?;
    Ok(s)
}

impl Shell {
    /// A ready port-mode relay socket (`idx`: its slot): one batch (the set is
    /// level-triggered, so a socket with more waiting comes back in the next turn).
    pub(super) fn drain_relay(
        &mut self,
        now: Instant,
        idx: usize,
        ev: &epoll::Event,
        batch: &mut mmsg::RecvBatch,
    ) {
        // Closed sockets leave the set; a slot is only reused by a later turn.
        let Some(fd) = self
            .relays
            .get(idx)
            .and_then(|r| r.as_ref())
            .map(|r| r.as_raw_fd())
        else {
            return;
        };
        // `relays[idx]` stays open during this turn: only housekeeping and sync
        // close relay sockets.
        if epoll::is_error(ev) {
            self.on_relay_error(now, &fd);
        }
        match batch.recv(fd) {
            Ok(got) => {
                let port = self.space.at(idx);
                for i in 0..got {
                    if let Some((data, from)) = batch.get(i) {
                        self.on_backend(now, port, from, data, None);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // A pending socket error ended this receive; datagrams may wait (and
            // come back in the next turn).
            Err(_) => {
                self.on_relay_error(now, &fd);
            }
        }
    }

    /// One prefix socket's turn ([`Shell::drain_batches`]): each datagram's endpoint
    /// from its destination address.
    pub(super) fn drain_prefix(
        &mut self,
        now: Instant,
        idx: usize,
        ev: &epoll::Event,
        batch: &mut mmsg::RecvBatch,
    ) {
        let (Some(fd), Some(&port)) = (
            self.prefix.socks.get(idx).map(|s| s.as_raw_fd()),
            self.prefix.ports.get(idx),
        ) else {
            return;
        };
        if epoll::is_error(ev) {
            self.on_relay_error(now, &fd);
        }
        // One socket carries every flow's replies on this port: as many batches per
        // turn as a public socket gets.
        self.drain_batches(now, fd, batch, super::Many::Prefix(port));
    }

    /// The endpoint datagram `i` of a prefix socket's batch was sent to (an address of
    /// the prefix beyond the used ones holds no flow).
    pub(super) fn prefix_endpoint(
        &self,
        batch: &mmsg::RecvBatch,
        i: usize,
        port: u16,
    ) -> RelayPort {
        RelayPort {
            addr: batch
                .destination(i)
                .and_then(|d| self.relay_addrs.index_of(d))
                .unwrap_or(u32::MAX),
            port,
        }
    }

    /// Where a datagram to a backend leaves from: the endpoint's socket, and in prefix
    /// mode the endpoint's address to send from. Port mode opens the socket of a new
    /// flow (or reopens one that could not be opened before). None, counted, if there
    /// is none.
    pub(super) fn relay_out(
        &mut self,
        now: Instant,
        idx: usize,
        r: RelayPort,
        flow: FlowId,
        new_flow: bool,
    ) -> Option<(RawFd, Option<IpAddr>)> {
        if self.prefix.is_on() {
            if new_flow {
                self.mark_relay(idx, true);
            }
            let out = self
                .relay_addrs
                .ip(r.addr)
                .zip(self.prefix.sock(r.port).map(|s| s.as_raw_fd()));
            if out.is_none() {
                self.router.send_failed();
            }
            return out.map(|(src, fd)| (fd, Some(src)));
        }
        if new_flow && let Err(e) = self.open_relay(r) {
            tracing::debug!(port = r.port, error = %e, "relay bind failed");
            self.router.bind_failed(flow, now);
            return None;
        }
        if self.relays[idx].is_none() {
            // The socket could not be opened before (a mirrored flow's pre-bind, or a
            // port that was still closing): try again; if it still fails, the flow
            // goes and the client's next datagram gets another endpoint.
            if let Err(e) = self.open_relay(r) {
                tracing::debug!(port = r.port, error = %e, "relay reopen failed");
                self.router.relay_lost(flow, now);
                return None;
            }
        }
        let fd = self.relays[idx].as_ref().map(|s| s.as_raw_fd());
        if fd.is_none() {
            self.router.send_failed();
        }
        fd.map(|fd| (fd, None))
    }

    /// Prefix mode: an endpoint taken or given back (nothing to bind or close).
    pub(super) fn mark_relay(&mut self, idx: usize, on: bool) {
        let bit = 1u64 << (idx % 64);
        if let Some(u) = self.prefix.used.get_mut(idx / 64)
            && (*u & bit != 0) != on
        {
            *u ^= bit;
            if on {
                self.relays_open += 1;
            } else {
                self.relays_open -= 1;
            }
        }
    }

    /// An ICMP error on a relay socket: which backend bounced? Probe it now. It is
    /// never a verdict by itself (anyone can forge one, and relay sockets are not
    /// connected); one for a destination that is no backend is ignored and counted.
    /// Returns how many of the queued errors came from ICMP (see `errqueue::drain`).
    pub(super) fn on_relay_error(&mut self, now: Instant, sock: &impl AsRawFd) -> usize {
        let prober = &mut self.prober;
        let (mut woke, mut unreachable) = (false, 0);
        let n = errqueue::drain(sock, |u| {
            unreachable += 1;
            woke |= prober.relay_icmp(now, &u.dest, u.offender);
        });
        prober.relay_icmp_other(now, n.saturating_sub(unreachable));
        if woke {
            self.probe_now = true;
        }
        n
    }

    /// Binds a relay port (IP_FREEBIND: the relay address may be a VIP that is on
    /// the peer right now) and adds it to the relay set. A port already open stays.
    /// Port mode: refused past the open-file budget (`relay_budget`).
    pub(super) fn open_relay(&mut self, port: RelayPort) -> io::Result<()> {
        if self.prefix.is_on() {
            let Some(idx) = self.space.index(port) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "relay endpoint outside listen.relay_prefix / relay_port",
                ));
            };
            self.mark_relay(idx, true);
            return Ok(());
        }
        let (Some(idx), Some(addr)) = (self.space.index(port), self.relay_addrs.socket_addr(port))
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "relay endpoint outside listen.relay / relay_ports",
            ));
        };
        if self.relays[idx].is_some() {
            return Ok(());
        }
        if self.relays_open >= self.relay_budget {
            // The rest of the descriptors are the admin connections' and the probes'.
            return Err(io::Error::other(
                "open-file limit: the descriptors left are kept for admin connections and probes",
            ));
        }
        let sock = bind_relay(addr, self.cfg.listen.relay_receive_buffer)?;
        self.poll.add(&sock, idx as u64)?;
        self.relays[idx] = Some(sock);
        self.relays_open += 1;
        Ok(())
    }

    pub(super) fn close_relay(&mut self, port: RelayPort) {
        let idx = self.space.index(port);
        if self.prefix.is_on() {
            if let Some(i) = idx {
                self.mark_relay(i, false);
            }
            return;
        }
        if idx.and_then(|i| self.relays[i].take()).is_some() {
            self.relays_open -= 1;
        }
    }
}
