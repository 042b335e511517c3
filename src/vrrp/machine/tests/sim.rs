//! A simulated link for VRRP machines, with virtual time: every advertisement a
//! machine sends is emitted to bytes, carried to every other node after `delay`
//! (unless the link between them is cut), parsed, checked and handed in. Time jumps
//! to the earliest delivery or `poll_timeout`. At one instant deliveries come before
//! timeouts, in send order.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::vrrp::check_advert;
use crate::vrrp::machine::{Cause, Event, Input, Machine, Settings, State};
use crate::vrrp::packet::{self, MCAST_GROUP, Packet, Repr};

pub struct Node {
    pub m: Machine,
    pub ip: Ipv4Addr,
    /// Started and not crashed: takes deliveries and timeouts.
    pub up: bool,
    pub events: Vec<(Instant, Event)>,
    /// Adverts sent: (when, priority).
    pub sent: Vec<(Instant, u8)>,
    /// Adverts received: (when, from, priority).
    pub received: Vec<(Instant, Ipv4Addr, u8)>,
}

struct Flight {
    at: Instant,
    seq: u64,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

pub struct Sim {
    pub t0: Instant,
    pub now: Instant,
    pub delay: Duration,
    pub nodes: Vec<Node>,
    cut: HashSet<(usize, usize)>,
    flights: Vec<Flight>,
    seq: u64,
}

impl Sim {
    pub fn new(delay: Duration) -> Sim {
        let t0 = Instant::now();
        Sim {
            t0,
            now: t0,
            delay,
            nodes: Vec::new(),
            cut: HashSet::new(),
            flights: Vec::new(),
            seq: 0,
        }
    }

    /// Virtual time since the start.
    pub fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    pub fn add(&mut self, settings: Settings) -> usize {
        let ip = settings.primary_ip;
        self.nodes.push(Node {
            m: Machine::new(settings, self.now),
            ip,
            up: false,
            events: Vec::new(),
            sent: Vec::new(),
            received: Vec::new(),
        });
        self.nodes.len() - 1
    }

    pub fn start(&mut self, i: usize) {
        self.nodes[i].up = true;
        self.input(i, Input::Startup);
    }

    pub fn input(&mut self, i: usize, input: Input<'_>) {
        let now = self.now;
        self.nodes[i].m.handle_input(now, input);
        self.flush(i);
    }

    /// The node stops dead: no adverts, no timers (a crashed or hung process).
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    pub fn cut(&mut self, a: usize, b: usize) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    fn flush(&mut self, i: usize) {
        let now = self.now;
        while let Some(e) = self.nodes[i].m.poll_event() {
            self.nodes[i].events.push((now, e));
        }
        while let Some(repr) = self.nodes[i].m.poll_transmit() {
            let mut bytes = vec![0u8; repr.buffer_len()];
            repr.emit(&mut bytes, self.nodes[i].ip, MCAST_GROUP);
            self.nodes[i].sent.push((now, repr.priority));
            for to in 0..self.nodes.len() {
                if to != i && !self.cut.contains(&(i, to)) {
                    self.seq += 1;
                    self.flights.push(Flight {
                        at: now + self.delay,
                        seq: self.seq,
                        from: i,
                        to,
                        bytes: bytes.clone(),
                    });
                }
            }
        }
    }

    fn deliver(&mut self, f: Flight) {
        if !self.nodes[f.to].up {
            return;
        }
        let src = self.nodes[f.from].ip;
        let p = Packet::new_checked(&f.bytes[..]).expect("well-formed advert");
        let (repr, kind) = Repr::parse(&p, src, MCAST_GROUP).expect("valid advert");
        assert_eq!(kind, packet::ChecksumKind::PseudoHeader);
        let node = &mut self.nodes[f.to];
        check_advert(node.m.settings(), src, packet::TTL, &repr).expect("advert for us");
        node.received.push((self.now, src, repr.priority));
        self.input(f.to, Input::Advert { src, repr: &repr });
    }

    fn next_time(&self) -> Option<Instant> {
        let flights = self.flights.iter().map(|f| f.at);
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.m.poll_timeout());
        flights.chain(timers).min()
    }

    /// Runs the network until `until` (inclusive) and leaves the clock there.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(t) = self.next_time().filter(|t| *t <= until) {
            self.now = self.now.max(t);
            loop {
                let due = self
                    .flights
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.at <= self.now)
                    .min_by_key(|(_, f)| (f.at, f.seq))
                    .map(|(k, _)| k);
                let Some(k) = due else { break };
                let f = self.flights.swap_remove(k);
                self.deliver(f);
            }
            for i in 0..self.nodes.len() {
                let due = self.nodes[i]
                    .m
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now);
                if self.nodes[i].up && due {
                    let now = self.now;
                    self.nodes[i].m.handle_timeout(now);
                    self.flush(i);
                }
            }
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    pub fn state(&self, i: usize) -> State {
        self.nodes[i].m.state()
    }

    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up && self.state(i) == State::Master)
            .collect()
    }

    /// Transitions of node `i` into `state`: (when, cause).
    pub fn transitions(&self, i: usize, state: State) -> Vec<(Instant, Cause)> {
        self.nodes[i]
            .events
            .iter()
            .filter_map(|(t, e)| match e.transition() {
                Some((s, c)) if s == state => Some((*t, c)),
                _ => None,
            })
            .collect()
    }

    /// Events of node `i` at or after `from`.
    pub fn events_since(&self, i: usize, from: Instant) -> Vec<Event> {
        self.nodes[i]
            .events
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|(_, e)| *e)
            .collect()
    }

    /// The last advert node `i` received before `t`, from anyone: (when, priority).
    pub fn last_received_before(&self, i: usize, t: Instant) -> Option<(Instant, u8)> {
        self.nodes[i]
            .received
            .iter()
            .rev()
            .find(|(at, _, _)| *at < t)
            .map(|(at, _, p)| (*at, *p))
    }
}
