//! The peer link's protocol state, without the socket: sequence numbers, replay
//! protection, heartbeats, full-table requests and chunking. The dataplane's sync
//! task feeds it datagrams and the time and sends what it returns.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::message::{
    Accepted, Body, Envelope, Item, Key, MAX_DATAGRAM, ReplayGuard, SyncDrop, VERSION, open, seal,
};

/// Items per datagram: postcard encodes an item in at most ~45 bytes, so this
/// stays under [`MAX_DATAGRAM`].
pub const ITEMS_PER_DATAGRAM: usize = 24;
/// The peer counts as gone after this long without a message.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);

/// What a received datagram asks of the dataplane.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Changes to apply, in order.
    pub items: Vec<Item>,
    /// The peer wants our full table.
    pub send_full: bool,
    /// This completed a full table from the peer.
    pub full_done: bool,
    /// The peer started anew (new epoch): it lost its table, so the flows we mirror
    /// for it are ours to serve now (and go back to it in our full table).
    pub peer_restarted: bool,
    /// This is the first chunk of a full table.
    pub full_started: bool,
    /// The peer's hello announced a different set of backends.
    pub backend_mismatch: bool,
}

pub struct Link {
    key: Key,
    pub peer: SocketAddr,
    epoch: u64,
    seq: u64,
    guard: ReplayGuard,
    backends_hash: u64,
    /// We need the peer's full table (start, peer restart, lost messages).
    pub want_full: bool,
    /// We hold a full table from the peer (since the last restart or gap).
    pub synced: bool,
    last_heard: Option<Instant>,
    peer_acked: u64,
    pub peer_flows: u32,
    pub peer_dialogs: u32,
    buf: Vec<u8>,
}

impl Link {
    pub fn new(key: Key, peer: SocketAddr, epoch: u64, backends_hash: u64) -> Link {
        Link {
            key,
            peer,
            epoch,
            seq: 0,
            guard: ReplayGuard::default(),
            backends_hash,
            want_full: true,
            synced: false,
            last_heard: None,
            peer_acked: 0,
            peer_flows: 0,
            peer_dialogs: 0,
            buf: vec![0u8; MAX_DATAGRAM + 512],
        }
    }

    /// Seals a body with the next sequence number. Sequence numbers are taken at
    /// send time, so queued bodies must be sealed in the order they go out.
    pub fn seal_body(&mut self, body: Body) -> Option<Vec<u8>> {
        self.seq += 1;
        let env = Envelope {
            version: VERSION,
            epoch: self.epoch,
            seq: self.seq,
            body,
        };
        let n = seal(&self.key, &env, &mut self.buf).ok()?;
        Some(self.buf[..n].to_vec())
    }

    /// Our backend set changed (config reload).
    pub fn set_backends_hash(&mut self, h: u64) {
        self.backends_hash = h;
    }

    pub fn hello(&mut self, flows: usize, dialogs: usize) -> Option<Vec<u8>> {
        let body = Body::Hello {
            backends_hash: self.backends_hash,
            flows: flows.min(u32::MAX as usize) as u32,
            dialogs: dialogs.min(u32::MAX as usize) as u32,
            acked: self.guard.last(),
            want_full: self.want_full,
        };
        self.seal_body(body)
    }

    /// Datagrams carrying `items` as incremental changes.
    pub fn items(&mut self, items: &[Item]) -> Vec<Vec<u8>> {
        item_bodies(items)
            .into_iter()
            .filter_map(|b| self.seal_body(b))
            .collect()
    }

    /// Datagrams carrying a full table (see [`full_bodies`]).
    pub fn full(&mut self, items: &[Item]) -> Vec<Vec<u8>> {
        full_bodies(items)
            .into_iter()
            .filter_map(|b| self.seal_body(b))
            .collect()
    }

    pub fn receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> Result<Received, SyncDrop> {
        if from != self.peer {
            return Err(SyncDrop::NotPeer);
        }
        let env = open(&self.key, data)?;
        let mut out = Received::default();
        // Items name backends by seed, so a different backend list is not fatal, but
        // items for backends one side lacks are skipped: report it.
        if let Body::Hello { backends_hash, .. } = &env.body {
            out.backend_mismatch = *backends_hash != self.backends_hash;
        }
        match self.guard.check(env.epoch, env.seq)? {
            Accepted::InOrder => {}
            Accepted::NewEpoch => {
                self.want_full = true;
                self.synced = false;
                out.peer_restarted = true;
            }
            Accepted::Gap => {
                self.want_full = true;
                self.synced = false;
            }
        }
        self.last_heard = Some(now);
        match env.body {
            Body::Hello {
                flows,
                dialogs,
                acked,
                want_full,
                ..
            } => {
                self.peer_flows = flows;
                self.peer_dialogs = dialogs;
                self.peer_acked = acked.max(self.peer_acked).min(self.seq);
                out.send_full = want_full;
            }
            Body::Items(items) => out.items = items,
            Body::Full { chunk, last, items } => {
                out.full_started = chunk == 0;
                out.items = items;
                if last {
                    out.full_done = true;
                    self.want_full = false;
                    self.synced = true;
                }
            }
        }
        Ok(out)
    }

    pub fn alive(&self, now: Instant) -> bool {
        self.last_heard
            .is_some_and(|t| now.saturating_duration_since(t) < PEER_TIMEOUT)
    }

    /// Messages sent that the peer has not acknowledged yet.
    pub fn lag(&self) -> u64 {
        self.seq.saturating_sub(self.peer_acked)
    }
}

/// Bodies carrying `items` as incremental changes, in datagram-sized chunks.
pub fn item_bodies(items: &[Item]) -> Vec<Body> {
    items
        .chunks(ITEMS_PER_DATAGRAM)
        .map(|c| Body::Items(c.to_vec()))
        .collect()
}

/// Bodies carrying a full table in bounded chunks; always at least one (an empty
/// table still completes the peer's full sync).
pub fn full_bodies(items: &[Item]) -> Vec<Body> {
    let chunks: Vec<&[Item]> = if items.is_empty() {
        vec![&[]]
    } else {
        items.chunks(ITEMS_PER_DATAGRAM).collect()
    };
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| Body::Full {
            chunk: i as u32,
            last: i == last,
            items: c.to_vec(),
        })
        .collect()
}

/// A hash of the set of backend names (order does not matter), compared between
/// peers to report configs that differ.
pub fn backends_hash<S: AsRef<str>>(names: &[S]) -> u64 {
    let mut sorted: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    sorted.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for n in sorted {
        for b in n.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Link, Link, SocketAddr, SocketAddr) {
        let a: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:7000".parse().unwrap();
        let k = Key::new(b"sixteen byte key!!");
        let h = backends_hash(&["a", "b"]);
        (Link::new(k.clone(), b, 1, h), Link::new(k, a, 2, h), a, b)
    }

    fn flow(p: u16) -> Item {
        Item::Flow {
            client: "198.51.100.1:5060".parse().unwrap(),
            relay_port: crate::relay::port::RelayPort::first(p),
            ingress: 0,
            home: 1,
            registered_secs: Some(3600),
        }
    }

    #[test]
    fn join_full_sync_in_chunks_then_incremental() {
        let now = Instant::now();
        let (mut a, mut b, a_addr, b_addr) = pair();
        // b starts and asks for a full table in its hello.
        let hello = b.hello(0, 0).unwrap();
        let r = a.receive(now, b_addr, &hello).unwrap();
        assert!(r.send_full);
        assert!(r.peer_restarted, "a new epoch: b lost its table");
        let table: Vec<Item> = (0..100).map(|i| flow(20000 + i)).collect();
        let dgrams = a.full(&table);
        assert_eq!(dgrams.len(), 100usize.div_ceil(ITEMS_PER_DATAGRAM));
        assert!(dgrams.iter().all(|d| d.len() <= MAX_DATAGRAM));
        let mut got = vec![];
        for d in &dgrams {
            let r = b.receive(now, a_addr, d).unwrap();
            got.extend(r.items);
            assert_eq!(r.full_done, std::ptr::eq(d, dgrams.last().unwrap()));
        }
        assert_eq!(got, table);
        assert!(b.synced && !b.want_full);
        // Then changes flow one by one.
        let d = a.items(&[Item::FlowGone {
            relay_port: crate::relay::port::RelayPort::first(20000),
        }]);
        assert_eq!(b.receive(now, a_addr, &d[0]).unwrap().items.len(), 1);
        assert!(b.synced);
        // A lost message (gap) makes b ask again.
        let _lost = a.items(&[flow(1)]);
        let d = a.items(&[flow(2)]);
        let r = b.receive(now, a_addr, &d[0]).unwrap();
        assert!(b.want_full && !b.synced);
        assert!(!r.peer_restarted, "a gap is not a restart");
        // Replays and strangers are dropped.
        assert_eq!(b.receive(now, a_addr, &d[0]), Err(SyncDrop::Replay));
        assert_eq!(
            b.receive(now, "10.9.9.9:7000".parse().unwrap(), &d[0]),
            Err(SyncDrop::NotPeer)
        );
        assert!(b.alive(now) && !b.alive(now + PEER_TIMEOUT));
    }

    #[test]
    fn empty_full_table_still_completes_and_mismatched_backends_are_refused() {
        let now = Instant::now();
        let (mut a, mut b, a_addr, _) = pair();
        let d = a.full(&[]);
        assert_eq!(d.len(), 1);
        assert!(b.receive(now, a_addr, &d[0]).unwrap().full_done);
        let mut c = Link::new(Key::new(b"sixteen byte key!!"), b.peer, 3, 99);
        let h = c.hello(0, 0).unwrap();
        assert!(b.receive(now, a_addr, &h).unwrap().backend_mismatch);
        assert_eq!(
            backends_hash(&["a", "b"]),
            backends_hash(&["b", "a"]),
            "order does not matter"
        );
        assert!(a.lag() > 0);
    }
}
