//! The prober: the health checker's I/O. It owns the probe sockets, builds OPTIONS
//! with rsip, matches replies and ICMP errors to backends, and hands state changes to
//! the dataplane.
//!
//! One UDP socket per backend, connected to it (bound to the host's own address the
//! route picks, not the floating one, so a standby's view of backend health is already
//! current when it takes over). A connected socket only receives from its backend, and
//! the kernel only queues an ICMP error on it when the quoted datagram went from its
//! port to that backend. That still lets anyone who learns the port forge one, so an
//! ICMP error only takes a backend down when its quoted payload is the outstanding
//! probe through its Call-ID (`ProbeIds::quote_proves`; Linux quotes up to 520 bytes,
//! see `sys::errqueue::drain`). Anything else is ignored and counted in
//! `sipfront_icmp_ignored_total{reason}`; an error with no quoted payload to check
//! (RFC 792's 8 bytes), like one on relayed traffic, only brings the next probe
//! forward (at most every quarter interval); the probes decide, `fall` of them.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use metrics::{Counter, counter};

use super::checker::{Checker, Event, ProbeSettings};
use crate::relay::BackendId;
use crate::sip::probe::ProbeIds;
use crate::sys::epoll::{self, Epoll};
use crate::sys::errqueue;
use crate::throttle::LogThrottle;

/// Why an ICMP error did not count against a backend. `as_str` values are labels of
/// `sipfront_icmp_ignored_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpIgnored {
    /// Its destination is no configured backend (relay sockets).
    NotBackend,
    /// No probe to that backend awaits an answer.
    NoProbeOutstanding,
    /// It quoted bytes that are not the outstanding probe (or too few of them).
    QuoteMismatch,
    /// It quoted no payload to check: the backend is only probed early.
    NoQuote,
    /// It quoted the outstanding probe, but is not a port unreachable from the
    /// backend itself (a router's net or host unreachable, say, which a route change
    /// may cause for a moment): the probe in flight decides.
    NotPortClosed,
    /// An ICMP error that says nothing of reachability (time exceeded, parameter
    /// problem, fragmentation needed; on a probe or a relay socket): read and dropped.
    NotUnreachable,
}

impl IcmpIgnored {
    pub const ALL: [IcmpIgnored; 6] = [
        IcmpIgnored::NotBackend,
        IcmpIgnored::NoProbeOutstanding,
        IcmpIgnored::QuoteMismatch,
        IcmpIgnored::NoQuote,
        IcmpIgnored::NotPortClosed,
        IcmpIgnored::NotUnreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IcmpIgnored::NotBackend => "not_backend",
            IcmpIgnored::NoProbeOutstanding => "no_probe_outstanding",
            IcmpIgnored::QuoteMismatch => "quote_mismatch",
            IcmpIgnored::NoQuote => "no_quote",
            IcmpIgnored::NotPortClosed => "not_port_closed",
            IcmpIgnored::NotUnreachable => "not_unreachable",
        }
    }
}

/// What an ICMP error on a probe socket means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// It quoted the outstanding probe: the backend's port is closed.
    Down,
    Ignored(IcmpIgnored),
}

/// The ignored-ICMP counters (registered once) and their rate-limited log line.
struct IgnoredLog {
    counters: [Counter; IcmpIgnored::ALL.len()],
    counts: [u64; IcmpIgnored::ALL.len()],
    lines: LogThrottle,
}

const IGNORED_LOG_EVERY: Duration = Duration::from_secs(10);

impl IgnoredLog {
    fn new() -> Self {
        IgnoredLog {
            counters: IcmpIgnored::ALL
                .map(|r| counter!("sipfront_icmp_ignored_total", "reason" => r.as_str())),
            counts: [0; IcmpIgnored::ALL.len()],
            lines: LogThrottle::new(IGNORED_LOG_EVERY),
        }
    }

    /// `n` errors ignored for `why`; `dest` and `from` (the quoted destination and
    /// the ICMP sender, where known) go into the log line.
    fn note(
        &mut self,
        now: Instant,
        why: IcmpIgnored,
        n: usize,
        dest: Option<SocketAddr>,
        from: Option<IpAddr>,
    ) {
        if n == 0 {
            return;
        }
        let i = why as usize;
        self.counters[i].increment(n as u64);
        self.counts[i] += n as u64;
        let Some(not_logged_before) = self.lines.allow(now) else {
            return;
        };
        tracing::warn!(
            reason = why.as_str(),
            dest = ?dest,
            from = ?from,
            not_logged_before,
            "ICMP error ignored (one line per 10 s; see sipfront_icmp_ignored_total)"
        );
    }
}

/// A backend's probe socket and the probe last sent on it.
struct ProbeSocket {
    addr: SocketAddr,
    sock: UdpSocket,
    /// Its local address (connected, so fixed): the probe's Via and the tap's source.
    local: SocketAddr,
    /// (seq, bytes) of the last probe sent: what a genuine ICMP error quotes.
    sent: Option<(u32, Vec<u8>)>,
}

pub struct Prober {
    pub checker: Checker,
    ids: ProbeIds,
    /// The probe sockets' level-triggered epoll set (token: backend index), nested in
    /// the dataplane's set; `receive` drains whichever are ready.
    poll: Epoll,
    events: Box<epoll::Events>,
    /// By backend id (the router's slot index); opened at the first probe.
    socks: Vec<Option<ProbeSocket>>,
    /// Backend addresses by backend id.
    addrs: Vec<Option<SocketAddr>>,
    ignored: IgnoredLog,
    /// Probes sent and their replies, kept for capture (HEP `include_local`) when on.
    tapped: Option<VecDeque<Tapped>>,
    /// Tapped datagrams that went because the queue held [`TAP_MAX`] (see
    /// [`Prober::take_tap_evicted`]).
    tap_evicted: u64,
}

/// A probe or its reply as it went over the wire, for capture.
pub struct Tapped {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub data: Vec<u8>,
}

/// Tapped datagrams kept at most until the dataplane takes them (every turn), at least:
/// a probe and its reply per backend fit four times over (older ones go, counted).
const TAP_MAX: usize = 64;

/// A UDP socket connected to `addr`, with ICMP errors queued (`IP_RECVERR`).
fn open(addr: SocketAddr) -> io::Result<UdpSocket> {
    let any = match addr {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let s = UdpSocket::bind(SocketAddr::new(any, 0))?;
    s.set_nonblocking(true)?;
    errqueue::enable(&s, addr.is_ipv6())?;
    s.connect(addr)?;
    Ok(s)
}

/// Datagrams read per ready socket per turn: junk must not hold the dataplane.
const RECV_PER_TURN: usize = 64;

impl Prober {
    /// Creates the probe socket set.
    pub fn new(
        settings: ProbeSettings,
        addrs: Vec<Option<SocketAddr>>,
        now: Instant,
        nonce: u64,
    ) -> io::Result<Self> {
        Ok(Prober {
            checker: Checker::new(settings, addrs.len(), now),
            ids: ProbeIds::new(nonce),
            poll: Epoll::new()?,
            events: epoll::events(),
            socks: addrs.iter().map(|_| None).collect(),
            addrs,
            ignored: IgnoredLog::new(),
            tapped: None,
            tap_evicted: 0,
        })
    }

    /// Keeps probes and their replies for [`Prober::poll_tapped`] (on), or not (off).
    pub fn tap(&mut self, on: bool) {
        self.tapped = on.then(VecDeque::new);
    }

    /// The next probe or reply sent or received since the last call, when tapping.
    pub fn poll_tapped(&mut self) -> Option<Tapped> {
        self.tapped.as_mut()?.pop_front()
    }

    /// Tapped datagrams dropped for room since the last call (the consumer counts
    /// them as its own drops).
    pub fn take_tap_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.tap_evicted)
    }

    fn keep(&mut self, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        if let Some(q) = self.tapped.as_mut() {
            if q.len() >= TAP_MAX.max(4 * self.addrs.len()) {
                q.pop_front();
                self.tap_evicted += 1;
            }
            q.push_back(Tapped {
                src,
                dst,
                data: data.to_vec(),
            });
        }
    }

    /// The probe sockets' set: readable when a reply or an ICMP error waits.
    pub fn poll(&self) -> &Epoll {
        &self.poll
    }

    pub fn backend_of(&self, a: &SocketAddr) -> Option<BackendId> {
        self.addrs
            .iter()
            .position(|x| x.as_ref() == Some(a))
            .map(BackendId::from_index)
    }

    /// Ignored ICMP errors so far, by reason (as in [`IcmpIgnored::ALL`]).
    pub fn icmp_ignored(&self, why: IcmpIgnored) -> u64 {
        self.ignored.counts[why as usize]
    }

    /// Replaces the address list (config reload); `reset` backends start over. A
    /// backend whose address changed gets a new socket at its next probe.
    pub fn set_addrs(&mut self, addrs: Vec<Option<SocketAddr>>, reset: &[BackendId], now: Instant) {
        self.checker.resize(addrs.len(), now);
        for &i in reset {
            self.checker.reset(i, now);
        }
        self.socks.resize_with(addrs.len(), || None);
        for (slot, addr) in self.socks.iter_mut().zip(&addrs) {
            if slot.as_ref().is_some_and(|s| Some(s.addr) != *addr) {
                // Closing the socket also takes it out of the epoll set.
                *slot = None;
            }
        }
        for &i in reset {
            if let Some(s) = self.socks.get_mut(i.index()).and_then(Option::as_mut) {
                s.sent = None;
            }
        }
        self.addrs = addrs;
    }

    /// Reads replies and ICMP errors from the ready probe sockets. Returns RTTs of
    /// answered probes through `rtt`, and true when a socket may hold more.
    pub fn receive(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        mut rtt: impl FnMut(BackendId, f64),
    ) -> bool {
        let mut events = std::mem::replace(&mut self.events, epoll::events());
        let evs = match self.poll.wait(&mut events) {
            Ok(evs) => evs,
            Err(e) => {
                tracing::error!(error = %e, "epoll_wait on the probe sockets failed");
                self.events = events;
                return false;
            }
        };
        let mut more = evs.len() == epoll::EVENTS;
        for ev in evs {
            let i = epoll::token(ev) as usize;
            if epoll::is_error(ev) {
                self.drain_errors(now, i);
            }
            for n in 0.. {
                let Some(s) = self.socks.get(i).and_then(Option::as_ref) else {
                    break;
                };
                if n == RECV_PER_TURN {
                    more = true;
                    break;
                }
                match s.sock.recv(buf) {
                    // Connected: only the backend's own datagrams arrive here.
                    Ok(len) => match self.ids.parse_reply(&buf[..len]) {
                        Some((b, seq, code)) if b == i => {
                            let (from, local) = (s.addr, s.local);
                            self.keep(from, local, &buf[..len]);
                            let b = BackendId::from_index(i);
                            if let Some(d) = self.checker.handle_reply(now, b, seq, code) {
                                rtt(b, d.as_secs_f64());
                            }
                        }
                        // Not a reply to one of our probes (another process', junk).
                        _ => {}
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // A pending ICMP error (ECONNREFUSED) ended this receive.
                    Err(_) => self.drain_errors(now, i),
                }
            }
        }
        self.events = events;
        more
    }

    /// Reads backend `i`'s probe socket's ICMP error queue: only a port unreachable
    /// from the backend that quotes the outstanding probe fails it.
    fn drain_errors(&mut self, now: Instant, i: usize) {
        let Some(s) = self.socks.get(i).and_then(Option::as_ref) else {
            return;
        };
        let b = BackendId::from_index(i);
        let outstanding = self.checker.outstanding(b);
        let mut verdicts = Vec::new();
        let icmp = errqueue::drain(&s.sock, |u| {
            let v = if u.dest != s.addr {
                // The kernel matched it to this connected socket, so it cannot be.
                Verdict::Ignored(IcmpIgnored::NotBackend)
            } else {
                match (outstanding, &s.sent) {
                    (Some(seq), Some((sent_seq, sent))) if seq == *sent_seq => {
                        if u.quote.is_empty() {
                            Verdict::Ignored(IcmpIgnored::NoQuote)
                        } else if !self.ids.quote_proves(sent, i, seq, u.quote) {
                            Verdict::Ignored(IcmpIgnored::QuoteMismatch)
                        } else if !u.is_port_closed_at_dest() {
                            // Our probe, but a router's word, not the backend's.
                            Verdict::Ignored(IcmpIgnored::NotPortClosed)
                        } else {
                            Verdict::Down
                        }
                    }
                    _ => Verdict::Ignored(IcmpIgnored::NoProbeOutstanding),
                }
            };
            verdicts.push((v, u.dest, u.offender));
        });
        let other = icmp.saturating_sub(verdicts.len());
        self.ignored
            .note(now, IcmpIgnored::NotUnreachable, other, Some(s.addr), None);
        for (v, dest, from) in verdicts {
            match v {
                Verdict::Down => self.checker.handle_icmp(now, b, true),
                Verdict::Ignored(why) => {
                    if matches!(why, IcmpIgnored::NoQuote | IcmpIgnored::NotPortClosed) {
                        // Unproven: the probe in flight decides, at its first failure.
                        self.checker.handle_icmp(now, b, false);
                    }
                    self.ignored.note(now, why, 1, Some(dest), from);
                }
            }
        }
    }

    /// `n` ICMP errors on a relay socket said nothing of reachability: counted.
    pub fn relay_icmp_other(&mut self, now: Instant, n: usize) {
        self.ignored
            .note(now, IcmpIgnored::NotUnreachable, n, None, None);
    }

    /// Relayed traffic to `dest` bounced: probe that backend now (never a verdict by
    /// itself). Returns whether `dest` is a backend; other destinations are counted.
    pub fn relay_icmp(&mut self, now: Instant, dest: &SocketAddr, from: Option<IpAddr>) -> bool {
        match self.backend_of(dest) {
            Some(b) => {
                self.checker.handle_icmp(now, b, false);
                true
            }
            None => {
                self.ignored
                    .note(now, IcmpIgnored::NotBackend, 1, Some(*dest), from);
                false
            }
        }
    }

    /// Runs timers and sends due probes.
    pub fn tick(&mut self, now: Instant) {
        self.checker.handle_timeout(now);
        while let Some(tx) = self.checker.poll_transmit() {
            let i = tx.backend.index();
            let Some(target) = self.addrs.get(i).copied().flatten() else {
                continue;
            };
            if let Err(e) = self.ensure_socket(i, target) {
                // No socket (e.g. no route yet): the probe's timeout counts it.
                tracing::debug!(backend = i, error = %e, "cannot open probe socket");
                continue;
            }
            let Some(s) = self.socks[i].as_mut() else {
                continue;
            };
            let local = s.local;
            let msg = self.ids.build(i, tx.seq, target, local);
            // Recorded first: an error read while sending must find it.
            s.sent = Some((tx.seq, msg.clone()));
            let mut r = s.sock.send(&msg);
            if r.is_err() {
                // A pending ICMP error (IP_RECVERR) fails one send: read the queue,
                // then try once more.
                self.drain_errors(now, i);
                if let Some(s) = self.socks[i].as_ref() {
                    r = s.sock.send(&msg);
                }
            }
            match r {
                Ok(_) => self.keep(local, target, &msg),
                // A send that fails at once is a failed probe its timeout will count.
                Err(e) => tracing::debug!(backend = i, error = %e, "probe send failed"),
            }
        }
    }

    /// Opens backend `i`'s probe socket if it has none.
    fn ensure_socket(&mut self, i: usize, addr: SocketAddr) -> io::Result<()> {
        if self.socks[i].as_ref().is_some_and(|s| s.addr == addr) {
            return Ok(());
        }
        self.socks[i] = None;
        let sock = open(addr)?;
        let local = sock.local_addr()?;
        self.poll.add(&sock, i as u64)?;
        tracing::debug!(backend = i, fd = sock.as_raw_fd(), %addr, "probe socket opened");
        self.socks[i] = Some(ProbeSocket {
            addr,
            sock,
            local,
            sent: None,
        });
        Ok(())
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.checker.poll_timeout()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.checker.poll_event()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Reason;

    fn settings() -> ProbeSettings {
        ProbeSettings {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 3,
            alive: vec![200..=699],
        }
    }

    /// Runs the prober for up to `ms` (or until `done`), answering probes at `live`.
    fn run(
        p: &mut Prober,
        live: &[&std::net::UdpSocket],
        ms: u64,
        mut done: impl FnMut(&Event) -> bool,
    ) -> Vec<Event> {
        let mut buf = vec![0u8; 2048];
        let mut out = vec![];
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            let now = Instant::now();
            p.receive(now, &mut buf, |_, _| {});
            p.tick(now);
            while let Some(e) = p.poll_event() {
                let stop = done(&e);
                out.push(e);
                if stop {
                    return out;
                }
            }
            let mut req = [0u8; 2048];
            for live in live {
                while let Ok((n, from)) = live.recv_from(&mut req) {
                    let reply = crate::sip::response::build_response(
                        &req[..n],
                        200,
                        "OK",
                        Some("t"),
                        &[],
                        None,
                    )
                    .unwrap();
                    live.send_to(&reply, from).unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        out
    }

    /// The tap holds TAP_MAX datagrams; older ones go, counted for the consumer.
    #[test]
    fn a_full_tap_counts_what_it_evicts() {
        let mut p = Prober::new(settings(), vec![], Instant::now(), 1).unwrap();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        p.keep(a, a, b"not tapping");
        assert_eq!(p.take_tap_evicted(), 0);
        p.tap(true);
        for i in 0..TAP_MAX + 6 {
            p.keep(a, a, format!("{i}").as_bytes());
        }
        assert_eq!(p.take_tap_evicted(), 6);
        assert_eq!(p.take_tap_evicted(), 0, "taken");
        assert_eq!(p.poll_tapped().unwrap().data, b"6", "the oldest went");
        assert_eq!(std::iter::from_fn(|| p.poll_tapped()).count(), TAP_MAX - 1);
    }

    #[test]
    fn connected_probe_sockets_see_replies_and_a_real_closed_port_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let live = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            live.set_nonblocking(true).unwrap();
            let crash = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let addrs = vec![
                Some(live.local_addr().unwrap()),
                Some(crash.local_addr().unwrap()),
            ];
            let mut p = Prober::new(settings(), addrs, Instant::now(), 7).unwrap();
            let b0 = BackendId::from_index(0);
            let b1 = BackendId::from_index(1);
            // Both come up.
            crash.set_nonblocking(true).unwrap();
            let mut up = 0;
            let evs = run(&mut p, &[&live, &crash], 2000, |e| {
                up += usize::from(matches!(e, Event::Up { .. }));
                up == 2
            });
            assert_eq!(evs.len(), 2, "{evs:?}");
            assert!(evs.contains(&Event::Up {
                backend: b0,
                reason: Reason::Probe
            }));
            assert!(evs.contains(&Event::Up {
                backend: b1,
                reason: Reason::Probe
            }));
            // Backend 1 crashes: its port is closed, the kernel's port unreachable
            // quotes the probe, and one probe decides (fall is 3).
            drop(crash);
            let t = Instant::now();
            let evs = run(&mut p, &[&live], 2000, |e| matches!(e, Event::Down { .. }));
            assert_eq!(
                evs,
                vec![Event::Down {
                    backend: b1,
                    reason: Reason::Icmp
                }]
            );
            assert!(
                t.elapsed() < Duration::from_millis(200),
                "{:?}",
                t.elapsed()
            );
            for why in IcmpIgnored::ALL {
                assert_eq!(p.icmp_ignored(why), 0, "{why:?}");
            }
            // An error for relayed traffic to somewhere that is no backend is counted.
            let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
            assert!(!p.relay_icmp(Instant::now(), &elsewhere, None));
            assert_eq!(p.icmp_ignored(IcmpIgnored::NotBackend), 1);
            assert_eq!(p.checker.state(b0), crate::health::Health::Up);
        });
    }
}
