//! A pair of sync links with virtual time, like the VRRP `Sim`: each side has its own
//! table (the source, changed by the test) and a mirror of the peer's, kept by
//! applying the link's events the way the router does. The wire loses, reorders and
//! duplicates datagrams with a seeded RNG; sides restart (losing both tables, with a
//! new random epoch and possibly a clock that stepped back); an attacker replays
//! recorded datagrams and sends oversized junk. Operators rotate the shared key
//! ([`Sim::rotate`]: a reload with a new key file).
//!
//! Item application is checked as it happens: a flow's version (carried in
//! `registered_secs`, unique per change) never goes backwards, and an incremental
//! change is applied at most once and only over an older version (a full table may
//! repeat what came before it; nothing else may).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::link::{Link, LinkEvent, backends_hash};
use super::message::{Item, Key, MAX_DATAGRAM};
use crate::relay::port::RelayPort;

mod tests;

/// splitmix64: deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `permille`/1000.
    pub fn chance(&mut self, permille: u32) -> bool {
        self.below(1000) < u64::from(permille)
    }
}

/// Map key of a relay port (`RelayPort` is not `Ord`).
type Port = (u32, u16);

fn pk(p: RelayPort) -> Port {
    (p.addr, p.port)
}

/// The peer's table as applied from events.
#[derive(Default)]
pub struct Mirror {
    pub flows: BTreeMap<Port, (Item, u64)>,
    pub dialogs: BTreeMap<u128, Item>,
    generation: u64,
    last_version: HashMap<Port, u32>,
    /// Versions applied from incremental changes: each at most once.
    incremental: HashSet<u32>,
    pub fulls_applied: u64,
}

impl Mirror {
    fn apply(&mut self, item: Item, full: bool) {
        match item {
            Item::Flow {
                relay_port,
                registered_secs,
                ..
            } => {
                let v = registered_secs.expect("the sim stamps a version");
                let last = self.last_version.insert(pk(relay_port), v).unwrap_or(0);
                assert!(v >= last, "{relay_port:?}: version {v} after {last}");
                if !full {
                    assert!(v > last, "{relay_port:?}: version {v} again");
                    assert!(self.incremental.insert(v), "version {v} applied twice");
                }
                self.flows.insert(pk(relay_port), (item, self.generation));
            }
            Item::FlowGone { relay_port } => {
                self.flows.remove(&pk(relay_port));
            }
            Item::Dialog { key, .. } => {
                self.dialogs.insert(key, item);
            }
        }
    }
}

pub struct Side {
    pub link: Link,
    pub addr: SocketAddr,
    pub epoch: u64,
    /// This side's clock: local = base + (sim time since t0).
    base: Instant,
    pub up: bool,
    pub flows: BTreeMap<Port, Item>,
    pub dialogs: BTreeMap<u128, Item>,
    /// Changes not taken by the link yet (the router's queue).
    changes: Vec<Item>,
    pub mirror: Mirror,
    pub events: Vec<LinkEvent>,
    /// The key in this side's key file (what a restart reads).
    pub key: Key,
}

type Flight = Reverse<(Instant, u64, usize, SocketAddr, Vec<u8>)>;

pub struct Sim {
    pub t0: Instant,
    pub now: Instant,
    pub rng: Rng,
    pub sides: [Side; 2],
    /// Per mille of datagrams lost / duplicated; reordering: up to `jitter` extra delay.
    pub loss: u32,
    pub dup: u32,
    pub jitter: Duration,
    pub delay: Duration,
    flights: BinaryHeap<Flight>,
    seq: u64,
    /// Every datagram sent (to, bytes), for replay attacks.
    pub recorded: Vec<(usize, Vec<u8>)>,
    pub record: bool,
    version: u32,
}

pub fn key() -> Key {
    Key::new(b"sim shared key, 32 bytes long..")
}

fn new_link(key: Key, peer: SocketAddr, epoch: u64, now: Instant) -> Link {
    Link::new(key, peer, epoch, backends_hash(&["a", "b"]), now)
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        // Far from the process start: sides may step their clocks back.
        let t0 = Instant::now() + Duration::from_secs(7200);
        let mut rng = Rng(seed);
        let addrs: [SocketAddr; 2] = [
            "10.0.0.1:7000".parse().unwrap(),
            "10.0.0.2:7000".parse().unwrap(),
        ];
        let sides = [0, 1].map(|i| {
            let epoch = rng.next() | 1;
            Side {
                link: new_link(key(), addrs[1 - i], epoch, t0),
                addr: addrs[i],
                epoch,
                base: t0,
                up: true,
                flows: BTreeMap::new(),
                dialogs: BTreeMap::new(),
                changes: Vec::new(),
                mirror: Mirror::default(),
                events: Vec::new(),
                key: key(),
            }
        });
        Sim {
            t0,
            now: t0,
            rng,
            sides,
            loss: 0,
            dup: 0,
            jitter: Duration::ZERO,
            delay: Duration::from_micros(200),
            flights: BinaryHeap::new(),
            seq: 0,
            recorded: Vec::new(),
            record: false,
            version: 0,
        }
    }

    fn local(&self, i: usize) -> Instant {
        self.sides[i].base + (self.now - self.t0)
    }

    fn global(&self, i: usize, local: Instant) -> Instant {
        self.t0 + local.saturating_duration_since(self.sides[i].base)
    }

    /// Side `i` crashes: it takes nothing until [`Sim::restart`].
    pub fn crash(&mut self, i: usize) {
        self.sides[i].up = false;
    }

    /// Side `i` starts anew: empty tables, epoch `epoch`, clock shifted by `step`
    /// seconds (negative: stepped back).
    pub fn restart(&mut self, i: usize, epoch: u64, step: i64) {
        let elapsed = self.now - self.t0;
        let local_now = self.local(i);
        let local_now = if step < 0 {
            local_now - Duration::from_secs(step.unsigned_abs())
        } else {
            local_now + Duration::from_secs(step as u64)
        };
        let peer = self.sides[1 - i].addr;
        let s = &mut self.sides[i];
        s.base = local_now - elapsed;
        s.link = new_link(s.key.clone(), peer, epoch, local_now);
        s.epoch = epoch;
        s.up = true;
        s.flows.clear();
        s.dialogs.clear();
        s.changes.clear();
        s.mirror = Mirror::default();
    }

    /// Side `i` is reloaded with `key` in its key file.
    pub fn rotate(&mut self, i: usize, key: Key, grace: Duration) {
        let now = self.local(i);
        let s = &mut self.sides[i];
        s.key = key.clone();
        if s.up {
            s.link.set_key(key, grace, now);
        }
        self.pump(i);
    }

    fn stamp(&mut self) -> u32 {
        self.version += 1;
        self.version
    }

    /// `n` random changes of side `i`'s table: new flows, updates, removals, dialogs.
    pub fn mutate(&mut self, i: usize, n: usize, ports: u16) {
        for _ in 0..n {
            let port = RelayPort::first(self.rng.below(u64::from(ports)) as u16);
            let item = match self.rng.below(10) {
                0..=5 => self.flow(port),
                6..=8 if self.sides[i].flows.contains_key(&pk(port)) => {
                    Item::FlowGone { relay_port: port }
                }
                _ => Item::Dialog {
                    key: u128::from(self.rng.next()),
                    backend: 1,
                    span: crate::relay::Span::Dialog,
                    opener: crate::relay::Side::Client,
                    flow: port,
                },
            };
            self.change(i, item);
        }
    }

    pub fn flow(&mut self, relay_port: RelayPort) -> Item {
        Item::Flow {
            client: SocketAddr::from(([198, 51, 100, 1], relay_port.port)),
            relay_port,
            ingress: 0,
            home: 1,
            registered_secs: Some(self.stamp()),
        }
    }

    pub fn change(&mut self, i: usize, item: Item) {
        let s = &mut self.sides[i];
        match item {
            Item::Flow { relay_port, .. } => {
                s.flows.insert(pk(relay_port), item);
            }
            Item::FlowGone { relay_port } => {
                s.flows.remove(&pk(relay_port));
            }
            Item::Dialog { key, .. } => {
                s.dialogs.insert(key, item);
            }
        }
        s.changes.push(item);
    }

    /// Sends `bytes` to side `to` as if from `from`, after the wire delay.
    pub fn inject(&mut self, to: usize, from: SocketAddr, bytes: Vec<u8>) {
        self.seq += 1;
        self.flights
            .push(Reverse((self.now + self.delay, self.seq, to, from, bytes)));
    }

    fn send(&mut self, from: usize, bytes: Vec<u8>) {
        let to = 1 - from;
        if self.record {
            self.recorded.push((to, bytes.clone()));
        }
        let copies = if self.rng.chance(self.dup) { 2 } else { 1 };
        for _ in 0..copies {
            if self.rng.chance(self.loss) {
                continue;
            }
            let extra = Duration::from_nanos(self.rng.below(self.jitter.as_nanos() as u64 + 1));
            self.seq += 1;
            let at = self.now + self.delay + extra;
            let addr = self.sides[from].addr;
            self.flights
                .push(Reverse((at, self.seq, to, addr, bytes.clone())));
        }
    }

    /// The shell's loop body for side `i`: changes in, events applied, datagrams out.
    fn pump(&mut self, i: usize) {
        if !self.sides[i].up {
            return;
        }
        let now = self.local(i);
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            let s = &mut self.sides[i];
            let changes = std::mem::take(&mut s.changes);
            s.link.queue(&changes);
            s.link
                .set_local(s.flows.len(), s.dialogs.len(), backends_hash(&["a", "b"]));
            let mut any = false;
            while let Some(ev) = s.link.poll_event() {
                any = true;
                match &ev {
                    LinkEvent::FullStarted => s.mirror.generation += 1,
                    LinkEvent::Items { items, full } => {
                        items.iter().for_each(|&it| s.mirror.apply(it, *full));
                    }
                    LinkEvent::FullTableApplied => {
                        let g = s.mirror.generation;
                        s.mirror.flows.retain(|_, (_, fg)| *fg == g);
                        s.mirror.fulls_applied += 1;
                    }
                    LinkEvent::SendFullTable => {
                        let mut all: Vec<Item> = s.flows.values().copied().collect();
                        all.extend(s.dialogs.values().copied());
                        s.changes.clear();
                        s.link.queue_full(all);
                    }
                    _ => {}
                }
                s.events.push(ev);
            }
            let mut out = vec![];
            while let Some(t) = s.link.poll_transmit(now, &mut buf) {
                out.push(buf[..t.len].to_vec());
            }
            for d in out {
                self.send(i, d);
            }
            if !any {
                return;
            }
        }
    }

    fn next_time(&self) -> Instant {
        let mut t = self.flights.peek().map(|Reverse(f)| f.0);
        for (i, s) in self.sides.iter().enumerate() {
            if s.up
                && let Some(l) = s.link.poll_timeout()
            {
                let g = self.global(i, l).max(self.now);
                t = Some(t.map_or(g, |t: Instant| t.min(g)));
            }
        }
        t.unwrap_or(self.now + Duration::from_secs(1))
    }

    /// Runs until virtual time `d` from now.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.pump(0);
        self.pump(1);
        loop {
            let t = self.next_time();
            if t > end {
                self.now = end;
                return;
            }
            self.now = t;
            while self
                .flights
                .peek()
                .is_some_and(|Reverse(f)| f.0 <= self.now)
            {
                let Reverse((_, _, to, from, bytes)) = self.flights.pop().unwrap();
                if self.sides[to].up {
                    let now = self.local(to);
                    self.sides[to].link.handle_datagram(now, from, &bytes);
                }
            }
            for i in 0..2 {
                if self.sides[i].up {
                    let now = self.local(i);
                    self.sides[i].link.handle_timeout(now);
                }
                self.pump(i);
            }
        }
    }

    /// Side `i` mirrors side `1 - i`'s flows exactly (and has all its dialogs).
    pub fn mirrors(&self, i: usize) -> bool {
        let (m, src) = (&self.sides[i].mirror, &self.sides[1 - i]);
        m.flows.len() == src.flows.len()
            && m.flows
                .iter()
                .zip(&src.flows)
                .all(|((p, (it, _)), (q, jt))| p == q && it == jt)
            && src.dialogs.keys().all(|k| m.dialogs.contains_key(k))
    }

    pub fn converged(&self) -> bool {
        self.mirrors(0) && self.mirrors(1) && self.sides.iter().all(|s| s.link.synced())
    }
}
