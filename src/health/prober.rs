//! The prober: the health checker's I/O. It owns the probe sockets (bound to the
//! host's own address, not the floating one, so a standby's view of backend health is
//! already current when it takes over), builds OPTIONS with rsip, matches replies and
//! ICMP errors to backends, and hands state changes to the dataplane.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::checker::{Checker, Event, Settings};
use crate::relay::BackendId;
use crate::sip::probe::ProbeIds;
use crate::sys::errqueue;

pub struct Prober {
    pub checker: Checker,
    ids: ProbeIds,
    pub v4: Rc<UdpSocket>,
    pub v6: Option<Rc<UdpSocket>>,
    /// Backend addresses by backend id (the router's slot index).
    addrs: Vec<Option<SocketAddr>>,
}

fn bind(ip: IpAddr) -> io::Result<Rc<UdpSocket>> {
    let s = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
    s.set_nonblocking(true)?;
    errqueue::enable(&s, ip.is_ipv6())?;
    UdpSocket::from_std(s).map(Rc::new)
}

impl Prober {
    /// Binds the probe sockets; must run inside a tokio runtime.
    pub fn new(
        settings: Settings,
        addrs: Vec<Option<SocketAddr>>,
        now: Instant,
        nonce: u64,
    ) -> io::Result<Self> {
        let v6 = if addrs.iter().flatten().any(SocketAddr::is_ipv6) {
            Some(bind(IpAddr::V6(Ipv6Addr::UNSPECIFIED))?)
        } else {
            None
        };
        Ok(Prober {
            checker: Checker::new(settings, addrs.len(), now),
            ids: ProbeIds::new(nonce),
            v4: bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED))?,
            v6,
            addrs,
        })
    }

    pub fn backend_of(&self, a: &SocketAddr) -> Option<BackendId> {
        self.addrs
            .iter()
            .position(|x| x.as_ref() == Some(a))
            .map(BackendId::from_index)
    }

    /// Replaces the address list (config reload); `reset` backends start over.
    pub fn set_addrs(&mut self, addrs: Vec<Option<SocketAddr>>, reset: &[BackendId], now: Instant) {
        self.checker.resize(addrs.len(), now);
        for &i in reset {
            self.checker.reset(i, now);
        }
        if self.v6.is_none() && addrs.iter().flatten().any(SocketAddr::is_ipv6) {
            match bind(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) {
                Ok(s) => self.v6 = Some(s),
                Err(e) => tracing::error!(error = %e, "cannot open IPv6 probe socket"),
            }
        }
        self.addrs = addrs;
    }

    /// Reads replies and ICMP errors from both sockets. Returns RTTs of answered
    /// probes through `rtt`.
    pub fn receive(&mut self, now: Instant, buf: &mut [u8], mut rtt: impl FnMut(BackendId, f64)) {
        // ICMP errors first: an error alone does not make a socket readable, and
        // reading the queue also clears the pending error that would fail our next send.
        self.drain_errors(now);
        for v6 in [false, true] {
            // Bounded: junk sent to the probe port must not hold the dataplane.
            for _ in 0..256 {
                let sock = if v6 {
                    match &self.v6 {
                        Some(s) => s.clone(),
                        None => break,
                    }
                } else {
                    self.v4.clone()
                };
                match sock.try_recv_from(buf) {
                    Ok((n, from)) => match self.ids.parse_reply(&buf[..n]) {
                        Some((i, seq, code))
                            if self.addrs.get(i).copied().flatten() == Some(from) =>
                        {
                            let b = BackendId::from_index(i);
                            if let Some(d) = self.checker.handle_reply(now, b, seq, code) {
                                rtt(b, d.as_secs_f64());
                            }
                        }
                        // Not a reply to one of our probes (another process', junk).
                        _ => {}
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => self.drain_errors(now),
                }
            }
        }
    }

    /// Reads both sockets' ICMP error queues: an unreachable backend fails its probe.
    fn drain_errors(&mut self, now: Instant) {
        let mut hits = Vec::new();
        for sock in std::iter::once(&self.v4).chain(self.v6.as_ref()) {
            errqueue::drain(&**sock, |u| hits.push(u.dest));
            // The queue is empty now: let tokio wait for the next error event.
            let _ = sock.try_io(tokio::io::Interest::ERROR, || {
                Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
            });
        }
        for dest in hits {
            if let Some(b) = self.backend_of(&dest) {
                self.checker.handle_icmp(now, b, true);
            }
        }
    }

    /// Relayed traffic to `dest` bounced: probe that backend now.
    pub fn relay_icmp(&mut self, now: Instant, dest: &SocketAddr) -> bool {
        match self.backend_of(dest) {
            Some(b) => {
                self.checker.handle_icmp(now, b, false);
                true
            }
            None => false,
        }
    }

    /// Runs timers and sends due probes.
    pub fn tick(&mut self, now: Instant) {
        self.drain_errors(now);
        self.checker.handle_timeout(now);
        while let Some(tx) = self.checker.poll_transmit() {
            let Some(target) = self.addrs.get(tx.backend.index()).copied().flatten() else {
                continue;
            };
            let sock = match (target.is_ipv6(), &self.v6) {
                (true, Some(s)) => s.clone(),
                _ => self.v4.clone(),
            };
            let local = sock
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            let msg = self.ids.build(tx.backend.index(), tx.seq, target, local);
            let send = || socket2::SockRef::from(&*sock).send_to(&msg, &target.into());
            // A pending ICMP error for another backend fails one send on a shared
            // socket (IP_RECVERR): read the queue, then try once more.
            let r = send().or_else(|_| {
                self.drain_errors(now);
                send()
            });
            if let Err(e) = r {
                // A send that fails at once (e.g. ECONNREFUSED from a queued ICMP
                // error) is a failed probe the next receive or timeout will count.
                tracing::debug!(backend = tx.backend.index(), error = %e, "probe send failed");
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.checker.poll_timeout()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.checker.poll_event()
    }
}
