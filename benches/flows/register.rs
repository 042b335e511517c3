//! Phase "flows": every client sends one REGISTER through sipfront and waits for its
//! 200, retransmitting like a UAC (RFC 3261 Timer E: 0.5 s doubling to 4 s, five
//! sends in all). A window bounds the REGISTERs in flight, so the phase measures
//! holding flows, not surviving a burst.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use crate::clients;
use crate::pktinfo::{Sock, wait_readable};

const WINDOW: usize = 256;
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const MAX_SENDS: u32 = 5;

/// Home backend of a client whose REGISTER got no 200.
pub const NO_HOME: u8 = u8::MAX;

pub struct Registered {
    pub wanted: usize,
    /// Per client: index of the stub backend that answered, or `NO_HOME`.
    pub home: Vec<u8>,
    pub ok: usize,
    pub failed: usize,
    pub retransmits: u64,
    /// Replies that reached another client address or port than the one that asked,
    /// or came from elsewhere than sipfront.
    pub misdelivered: u64,
    /// Final replies other than 200.
    pub non_200: u64,
    pub send_errors: u64,
    pub elapsed: Duration,
}

impl Registered {
    /// Clients that hold a flow, in order.
    pub fn clients(&self) -> Vec<usize> {
        (0..self.wanted)
            .filter(|&i| self.home[i] != NO_HOME)
            .collect()
    }
}

#[derive(Clone, Copy)]
struct InFlight {
    client: usize,
    sends: u32,
    due: Instant,
}

/// Registers clients `0..n` through `sip`; gives up after `limit` overall.
pub fn register_all(socks: &[Sock], n: usize, sip: SocketAddrV4, limit: Duration) -> Registered {
    let t0 = Instant::now();
    let mut r = Registered {
        wanted: n,
        home: vec![NO_HOME; n],
        ok: 0,
        failed: 0,
        retransmits: 0,
        misdelivered: 0,
        non_200: 0,
        send_errors: 0,
        elapsed: Duration::ZERO,
    };
    let mut done = vec![false; n];
    let mut inflight: Vec<InFlight> = Vec::with_capacity(WINDOW);
    let mut next = 0;
    let mut buf = vec![0u8; 65536];
    let send = |i: usize, r: &mut Registered| {
        let s = &socks[clients::sock(i)];
        if s.send_from(clients::ip(i), sip, &clients::register(i))
            .is_err()
        {
            // Like a lost datagram: the retransmission covers it.
            r.send_errors += 1;
        }
    };
    loop {
        let now = Instant::now();
        while inflight.len() < WINDOW && next < n {
            send(next, &mut r);
            inflight.push(InFlight {
                client: next,
                sends: 1,
                due: now + T1,
            });
            next += 1;
        }
        for s in socks {
            while let Ok(Some(d)) = s.recv(&mut buf) {
                let Some(rep) = clients::parse_reply(&buf[..d.len]) else {
                    continue;
                };
                if rep.tag != 'R' || rep.n >= n || done[rep.n] {
                    continue; // a late reply to a retransmission
                }
                let i = rep.n;
                if d.to != clients::ip(i) || s.port != clients::port(i) || d.from != sip {
                    r.misdelivered += 1;
                    continue;
                }
                if rep.status < 200 {
                    continue;
                }
                done[i] = true;
                if rep.status == 200 {
                    r.ok += 1;
                    r.home[i] = match rep.server {
                        Some(s) if s.ends_with(b"-b") => 1,
                        _ => 0,
                    };
                } else {
                    r.non_200 += 1;
                    r.failed += 1;
                }
            }
        }
        let now = Instant::now();
        let over = now.duration_since(t0) >= limit;
        for f in &mut inflight {
            if done[f.client] || now < f.due {
                continue;
            }
            if f.sends >= MAX_SENDS || over {
                done[f.client] = true;
                r.failed += 1;
                continue;
            }
            send(f.client, &mut r);
            r.retransmits += 1;
            f.sends += 1;
            // Timer E doubles up to T2; after the last send, wait T2 for the answer.
            f.due = now + (T1 * 2u32.pow(f.sends - 1)).min(T2);
        }
        inflight.retain(|f| !done[f.client]);
        if over {
            r.failed += n - next + inflight.len();
            break;
        }
        if next == n && inflight.is_empty() {
            break;
        }
        let wake = inflight
            .iter()
            .map(|f| f.due)
            .min()
            .unwrap_or(now + Duration::from_millis(10));
        wait_readable(socks, wake);
    }
    r.elapsed = t0.elapsed();
    r
}
