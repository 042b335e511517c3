//! The flow table: one entry per client transport address, each owning a relay port.
//! Storage is a slab sized once at start; lookups by client address go through a
//! hash table of slab indexes, lookups by relay port index a plain array.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::backends::BackendId;
use super::lingering::Lingering;
use super::open_table::{Entry, OpenTable, TableHasher};
use super::per_source::{SourceCounts, is_v6_source};
use super::port::{RelayPort, RelaySpace};
use super::prefetch::prefetch;
use super::ratelimit::{SourceKey, source_key};

const NO_FLOW: u32 = u32::MAX;

/// [`Flow::bucket`] of a flow that does not hold its source's datagram bucket.
pub const NOT_HELD: u64 = u64::MAX;

/// [`Flow::bucket`] of a flow that does not hold it and may take it with its next
/// datagram: the source's other flows are gone. Values below it are held buckets.
pub const RECLAIM: u64 = 1 << 63;

/// Two cache lines, aligned (at 120 bytes a flow would straddle three in most
/// slots): what a datagram of a million-flow table waits on.
#[derive(Debug, Clone)]
#[repr(align(64))]
pub struct Flow {
    pub client: SocketAddr,
    pub relay_port: RelayPort,
    /// Index of the public socket the client talks to (replies leave from it).
    pub ingress: u16,
    pub home: BackendId,
    pub last_seen: Instant,
    /// Set by a 2xx to REGISTER: the flow outlives idle timeouts until then.
    pub registered_until: Option<Instant>,
    pub created: Instant,
    /// Copied from the peer by state sync: the peer serves it; we hold its port ready.
    pub mirrored: bool,
    /// The peer's full-table generation that last confirmed this mirrored flow.
    pub sync_gen: u32,
    /// Dialogs (answered INVITE, SUBSCRIBE, REFER) that use this flow: while any
    /// lives, the flow does, so a long call keeps its way back.
    pub dialogs: u32,
    /// Dialog-table entries this flow's client opened that no backend has made a
    /// dialog and that have not expired yet (held to `limits.max_pins_per_flow`).
    pub pins: u32,
    /// Its `pins` are counted in the table's per-source sums too: set once another
    /// flow of its source came. A phone's only flow has its source's unanswered
    /// entries to itself, so the sums (another table, another cache miss per new
    /// call and per first answer) are not touched for it. Local: never synced.
    pub pins_shared: bool,
    /// A static peer's flow (its index in the config): exists from start, never
    /// expires, never synced (both hosts have it from the config).
    pub peer: Option<u16>,
    /// A backend has sent something on this flow. Until then it lives only
    /// `unanswered_idle` and keepalives do not refresh it.
    pub answered: bool,
    /// While this is its source's only flow (and was its first), the source's
    /// datagram bucket lives here: spent up to this time (ns since the router's
    /// epoch, see [`HeldBucket`](super::source_limits::HeldBucket)). [`NOT_HELD`]
    /// otherwise: the limiter's table has it. Local: never synced.
    pub bucket: u64,
    /// Its relay endpoint's generation when it was placed there: dialog entries name
    /// their flow by endpoint and generation, so the entries of a flow that is gone
    /// never count for the next flow on its endpoint. Local: never synced.
    pub generation: u16,
}

const _: () = assert!(std::mem::size_of::<Option<Flow>>() == 128);

impl Flow {
    /// Served by this host and synced: neither the peer's (mirrored) nor a static
    /// peer's (both hosts have those from the config).
    #[inline]
    pub fn is_own(&self) -> bool {
        !self.mirrored && self.peer.is_none()
    }

    /// Whether it holds its source's datagram bucket.
    #[inline]
    pub fn holds_bucket(&self) -> bool {
        self.bucket < RECLAIM
    }

    /// A flow that has seen nothing yet: no registration, no dialog, no answer.
    pub fn new(
        client: SocketAddr,
        relay_port: RelayPort,
        ingress: u16,
        home: BackendId,
        now: Instant,
    ) -> Flow {
        Flow {
            client,
            relay_port,
            ingress,
            home,
            last_seen: now,
            registered_until: None,
            created: now,
            mirrored: false,
            sync_gen: 0,
            dialogs: 0,
            pins: 0,
            pins_shared: false,
            peer: None,
            answered: false,
            bucket: NOT_HELD,
            generation: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId(pub u32);

/// A flow index entry: 31 bits of the high half of the client's hash (where it
/// belongs, and a tag that spares most key comparisons), whether the flow holds its
/// source's datagram bucket (the top bit: a batch warmed from the index alone then
/// knows whether the limiter's line is needed), and the slot id + 1 (0 is vacant).
#[derive(Clone, Copy, bytemuck::Zeroable)]
#[repr(transparent)]
struct IndexEntry(u64);

/// The index's bits of a client's hash. Bit 63 is never a table's home bit (that
/// would take 2^32 slots).
const HASH_BITS: u64 = 0x7fff_ffff_0000_0000;
const HELD_BIT: u64 = 1 << 63;

impl IndexEntry {
    fn new(hash: u64, id: u32) -> Self {
        IndexEntry(hash & HASH_BITS | (u64::from(id) + 1))
    }
    fn tag_of(hash: u64) -> u32 {
        ((hash & HASH_BITS) >> 32) as u32
    }
    fn tag(&self) -> u32 {
        Self::tag_of(self.0)
    }
    fn id(&self) -> u32 {
        (self.0 as u32).wrapping_sub(1)
    }
    fn held(&self) -> bool {
        self.0 & HELD_BIT != 0
    }
    fn set_held(&mut self, held: bool) {
        self.0 = self.0 & !HELD_BIT | if held { HELD_BIT } else { 0 };
    }
    /// All of the hash the table needs to place the entry.
    fn hash_bits(&self) -> u64 {
        self.0 & HASH_BITS
    }
}

impl Entry for IndexEntry {
    fn is_vacant(&self) -> bool {
        self.0 == 0
    }
}

/// How long a flow lives without traffic: once a backend answered it, and before.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    pub answered: Duration,
    pub unanswered: Duration,
}

#[derive(Debug)]
pub enum InsertError {
    Full,
    NoPort,
}

/// How long a freed relay endpoint waits before another flow gets it: a backend's
/// late datagrams for the old flow (retransmissions run 32 s, RFC 3261 timer B/F)
/// find no flow, never the next phone. With none out of quarantine a new flow is
/// refused (`no_relay_port`).
pub const PORT_QUARANTINE: Duration = Duration::from_secs(32);

pub struct FlowTable {
    /// Sized for `max` at start and never moved: pages are touched as flows come.
    slots: Vec<Option<Flow>>,
    free_slots: Vec<u32>,
    /// foldhash with a per-process random seed: several times cheaper than SipHash
    /// for a 6- or 18-byte key, and senders cannot precompute colliding addresses.
    hasher: TableHasher,
    /// Flow ids by client address. The key is the flow's own `client`, not a copy:
    /// 8 bytes an entry instead of 40.
    by_client: OpenTable<IndexEntry>,
    /// Further source addresses of static peers (a few; not flows).
    aliases: HashMap<SocketAddr, u32, foldhash::fast::RandomState>,
    /// Flow per relay slot (`space.index`).
    by_port: Vec<u32>,
    /// Flows placed on each relay slot so far (wrapping): see [`Flow::generation`].
    port_gen: Vec<u16>,
    /// Per pass ([`FlowTable::pass_of`]: this host's half of the pool, then the
    /// peer's), how far the never-handed-out endpoints have been walked in the
    /// interleaved order (counted from `start`, wrapping); they go first.
    fresh: [usize; 2],
    start: usize,
    /// With a sync peer, the half of the pool's interleaved positions (parity) this
    /// host hands out first; the peer takes the other. Two hosts that both serve
    /// clients (a split brain, a takeover's overlap) then do not give one endpoint to
    /// two phones while either half has room. `None`: one pass over the whole pool.
    half: Option<u8>,
    /// Freed endpoints (slot index, [`FlowTable::clock`] from which it may be given
    /// out), FIFO, so a just-freed one is reused last, and not before
    /// [`PORT_QUARANTINE`] has passed: late datagrams for the old flow then find no
    /// flow rather than a stranger's. An entry whose time is not its slot's
    /// `ready_at` is stale (the slot was freed again since). One queue per pass.
    free_ports: [VecDeque<(u32, u32)>; 2],
    /// Per slot: the clock from which it may be given out (0: at once). Checked also
    /// for never-used slots: state sync may have placed and removed a flow on one.
    ready_at: Vec<u32>,
    /// Seconds since `epoch` at the last insert or [`FlowTable::tick`]: a freed
    /// endpoint's quarantine counts in it (a coarse clock: 4 bytes an entry, not 16).
    clock: u32,
    /// The first tick's time.
    epoch: Option<Instant>,
    space: RelaySpace,
    max: usize,
    /// Flows per source (IPv4 address, IPv6 /64), for the per-source cap.
    per_source: SourceCounts,
    /// Datagram buckets of removed flows that held them, (source address, bucket),
    /// until the router puts them back into its limiter ([`FlowTable::drain_released`]).
    released: Vec<(std::net::IpAddr, u64)>,
    /// The `pins` of the flows with [`Flow::pins_shared`] summed per source, for
    /// `limits.max_pins_per_ip`. Kept in step by [`FlowTable::add_pin`],
    /// [`FlowTable::drop_pin`], placement and removal; sources with none have no entry.
    pins_per_source: SourceCounts,
    /// Removed flows' unanswered entries, counted against their sources for as long
    /// as they may live.
    lingering: Lingering,
    /// Seconds a removed flow's entries may still live (`transaction`, and one for
    /// the coarse clock).
    pin_linger: u32,
    /// Flows with [`Flow::mirrored`] set: the walks that look for them
    /// ([`FlowTable::adopt_mirrored`], [`FlowTable::stale_mirrored`]) stop once they
    /// have seen them all, and cost nothing on a host that mirrors none (the master,
    /// when its standby restarts: a walk over a million slots took ~8 ms). Kept in
    /// step by placement, removal, adoption and [`FlowTable::set_mirrored`].
    mirrored: usize,
}

/// A removed flow's unanswered entries may still live `transaction` (rounded up to
/// whole seconds), and a second more for the table's coarse clock.
fn linger_secs(transaction: Duration) -> u32 {
    let secs = transaction.as_secs() + u64::from(transaction.subsec_nanos() > 0) + 1;
    u32::try_from(secs).unwrap_or(u32::MAX)
}

impl FlowTable {
    /// Room for `max` flows; `max_dialogs` bounds the sources with unanswered entries,
    /// and the lingering records (at most 65,536; see [`FlowTable::with_lingering`]).
    pub fn new(space: RelaySpace, max: usize, max_dialogs: usize) -> Self {
        let records = max_dialogs.clamp(1, crate::config::DEFAULT_MAX_LINGERING_RECORDS);
        Self::with_lingering(space, max, max_dialogs, records)
    }

    /// [`FlowTable::new`] with room for `records` lingering records
    /// (`limits.max_lingering_records`), allocated once.
    pub fn with_lingering(
        space: RelaySpace,
        max: usize,
        max_dialogs: usize,
        records: usize,
    ) -> Self {
        let n_ports = space.len();
        let max = max.min(n_ports);
        // Every per-flow table is sized once for `max`: growth by doubling rehashes
        // under load and leaves the old tables' memory with the allocator.
        FlowTable {
            slots: Vec::with_capacity(max),
            // Removals on the forwarding path (a flow aborted) push here too.
            free_slots: Vec::with_capacity(max),
            hasher: TableHasher::default(),
            // Static peers' flows come on top of `max`.
            by_client: OpenTable::with_capacity(max + space.statics().len()),
            aliases: HashMap::default(),
            by_port: vec![NO_FLOW; n_ports],
            port_gen: vec![0; n_ports],
            ready_at: vec![0; n_ports],
            fresh: [0; 2],
            start: 0,
            half: None,
            // A refused new flow hands its endpoint back inside the decision: room for
            // the whole pool in the first list (all of it without a half) and half in
            // the second, so that push never allocates. Pages are touched only as
            // endpoints are freed.
            free_ports: [
                VecDeque::with_capacity(n_ports),
                VecDeque::with_capacity(n_ports / 2 + 1),
            ],
            clock: 0,
            epoch: None,
            space,
            max,
            per_source: SourceCounts::with_capacity(max),
            released: Vec::with_capacity(1024),
            // Every source with a count holds a dialog entry and a flow: allocated
            // once, nothing grows on the forwarding path.
            pins_per_source: SourceCounts::with_capacity(max.min(max_dialogs)),
            // Each record holds a dialog entry at least when it is made.
            lingering: Lingering::with_capacity(records.max(1)),
            pin_linger: linger_secs(crate::config::DEFAULT_TRANSACTION),
            mirrored: 0,
        }
    }

    /// Sets flow `id`'s [`Flow::mirrored`] (the way to change it once placed).
    pub fn set_mirrored(&mut self, id: FlowId, mirrored: bool) {
        if let Some(f) = self.get_mut(id)
            && f.mirrored != mirrored
        {
            f.mirrored = mirrored;
            if mirrored {
                self.mirrored += 1;
            } else {
                self.mirrored -= 1;
            }
        }
    }

    /// Flows with [`Flow::mirrored`] set.
    pub fn mirrored_count(&self) -> usize {
        self.mirrored
    }

    /// See [`FlowTable::set_pin_linger`].
    pub fn lingering_for(mut self, transaction: Duration) -> Self {
        self.set_pin_linger(transaction);
        self
    }

    /// How long a removed flow's unanswered entries may still live: they count
    /// against its source that long.
    pub fn set_pin_linger(&mut self, transaction: Duration) {
        self.pin_linger = linger_secs(transaction);
    }

    /// Records of removed flows' unanswered entries dropped early: they were full.
    pub fn lingering_dropped(&self) -> u64 {
        self.lingering.dropped()
    }

    /// Forgets the records of removed flows' entries that are due, at most `budget`
    /// of them (the timer's: many flows removed in one sweep slice fall due in one
    /// second, and a datagram's decision must not pay for them).
    pub fn expire_lingering(&mut self, budget: usize) {
        self.lingering.expire(self.clock, budget);
    }

    /// New flows take the pool's endpoints from position `start` (modulo its size)
    /// of the interleaved order on, wrapping.
    pub fn starting_at(mut self, start: u64) -> Self {
        let n = self.space.pool_len().max(1) as u64;
        self.start = (start % n) as usize;
        self
    }

    /// New flows take endpoints of interleaved positions of parity `half` first (see
    /// [`FlowTable::half`]); `None` for no preference.
    pub fn preferring_half(mut self, half: Option<u8>) -> Self {
        self.half = half.map(|h| h & 1);
        self
    }

    /// Which pass hands out interleaved position `pos`: 0 (this host's half, or the
    /// whole pool without a half), 1 (the peer's half).
    #[inline]
    fn pass_of(&self, pos: usize) -> usize {
        match self.half {
            Some(h) => usize::from(pos % 2 != usize::from(h)),
            None => 0,
        }
    }

    /// The pass of endpoint slot `i` (`space.index`); reserved endpoints count as ours.
    #[inline]
    fn slot_pass(&self, i: usize) -> usize {
        if i >= self.space.pool_len() {
            return 0;
        }
        self.pass_of(self.space.interleaved_pos(i))
    }

    /// Whether `port` is in this host's half of the pool (always, without a half).
    #[cfg(test)]
    pub fn is_own_half(&self, port: RelayPort) -> bool {
        self.space
            .index(port)
            .is_some_and(|i| self.slot_pass(i) == 0)
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// The blocks every lookup by client reads at random, as (first byte, length in
    /// bytes): the flows (room for all, never moved) and the index. For the shell
    /// to ask for huge pages.
    pub fn memory(&self) -> [(*const u8, usize); 2] {
        let slots = std::mem::size_of::<Option<Flow>>() * self.slots.capacity();
        [(self.slots.as_ptr().cast(), slots), self.by_client.memory()]
    }

    /// Flows held by `ip`'s source.
    pub fn from_source(&self, ip: std::net::IpAddr) -> u32 {
        self.per_source.get(ip)
    }

    /// Flows held by the IPv6 sources of `ip`'s /48 together (0 for IPv4).
    pub fn from_ipv6_48(&self, ip: std::net::IpAddr) -> u32 {
        self.per_source.get_48(ip)
    }

    /// The flow that holds the datagram bucket of `ip`'s source, if one does.
    pub fn holder(&self, ip: std::net::IpAddr) -> Option<FlowId> {
        // Only a source's first flow may hold it, and only until a second comes; the
        // first may have gone (its slot may be another's now).
        let id = FlowId(self.per_source.first(ip)?);
        let f = self.get(id)?;
        let same = source_key(f.client.ip()) == source_key(ip);
        (same && f.holds_bucket()).then_some(id)
    }

    /// Unanswered dialog entries the flows of flow `id`'s source opened (see
    /// `Flow::pins`), removed flows' included for as long as their entries may live.
    pub fn pins_of_source(&self, id: FlowId) -> u32 {
        let Some(f) = self.get(id) else {
            return 0;
        };
        let ip = f.client.ip();
        let own = if f.pins_shared {
            self.pins_per_source.get(ip)
        } else {
            f.pins
        };
        own.saturating_add(self.lingering.get(ip))
    }

    /// Unanswered dialog entries the flows of all IPv6 sources in `ip`'s /48 opened
    /// (0 for IPv4), removed flows' included for as long as their entries may live.
    pub fn pins_of_ipv6_48(&self, ip: std::net::IpAddr) -> u32 {
        self.pins_per_source
            .get_48(ip)
            .saturating_add(self.lingering.get_48(ip))
    }

    /// Flow `id` opened one more dialog entry no backend has taken.
    pub fn add_pin(&mut self, id: FlowId) {
        if let Some(f) = self.get_mut(id) {
            f.pins += 1;
            if f.pins_shared {
                let ip = f.client.ip();
                self.pins_per_source.add(ip);
            }
        }
    }

    /// One of flow `id`'s entries was taken by a backend or expired.
    pub fn drop_pin(&mut self, id: FlowId) {
        if let Some(f) = self.get_mut(id)
            && f.pins > 0
        {
            f.pins -= 1;
            if f.pins_shared {
                let ip = f.client.ip();
                self.pins_per_source.remove(ip, 1);
            }
        }
    }

    /// Flow `id` of `ip`'s source was just placed, its source now has `n` flows:
    /// from the second on, every flow of the source counts its pins in the sums, the
    /// first (until now alone, its pins its own) too. An IPv6 source's flows always
    /// do: its /48's sum must see the pins of every /64 in it
    /// (`limits.max_pins_per_ipv6_48`).
    fn share_pins(&mut self, id: FlowId, ip: std::net::IpAddr, n: u32) {
        if n < 2 && !is_v6_source(ip) {
            return;
        }
        self.share(id, ip);
        // A source's one unshared flow is its first: the count's `first` names it
        // (it may name a gone flow, or another source's in its slot, when the one
        // left was shared already).
        if let Some(first) = self.per_source.first(ip) {
            self.share(FlowId(first), ip);
        }
    }

    /// Counts flow `id`'s pins in the sums of `ip`'s source from now on, if it is
    /// that source's and does not yet.
    fn share(&mut self, id: FlowId, ip: std::net::IpAddr) {
        if let Some(f) = self.get_mut(id)
            && !f.pins_shared
            && source_key(f.client.ip()) == source_key(ip)
        {
            f.pins_shared = true;
            let pins = f.pins;
            self.pins_per_source.add_n(ip, pins);
        }
    }

    /// The `n` sources holding the most flows, most first (a pass over the sources:
    /// for the admin API, not the forwarding path).
    pub fn top_sources(&self, n: usize) -> Vec<(SourceKey, u32)> {
        use std::cmp::Reverse;
        // The `n` largest in a heap of `n` (smallest on top): one walk, no copy of
        // every source (a million of them behind an admin request).
        let mut heap = std::collections::BinaryHeap::with_capacity(n + 1);
        for (k, c) in self.per_source.iter() {
            heap.push(Reverse((c, Reverse(k))));
            if heap.len() > n {
                heap.pop();
            }
        }
        let mut v: Vec<(SourceKey, u32)> = heap
            .into_iter()
            .map(|Reverse((c, Reverse(k)))| (k, c))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    pub fn is_static(&self, port: RelayPort) -> bool {
        self.space.is_static(port)
    }

    /// Places a static peer's flow on its fixed endpoint; datagrams from `aliases`
    /// (the peer's other addresses) belong to it too. None if the endpoint is
    /// outside the space or taken.
    pub fn insert_static(&mut self, flow: Flow, aliases: &[SocketAddr]) -> Option<FlowId> {
        let i = self.space.index(flow.relay_port)?;
        if self.by_port[i] != NO_FLOW || self.lookup_client(&flow.client).is_some() {
            return None;
        }
        let id = self.place(flow).ok()?;
        for &a in aliases {
            self.aliases.insert(a, id.0);
        }
        Some(id)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.max
    }

    #[inline]
    fn find(&self, hash: u64, client: &SocketAddr) -> Option<u32> {
        let slots = &self.slots;
        let tag = IndexEntry::tag_of(hash);
        self.by_client
            .find(hash, |e| {
                e.tag() == tag
                    && slots[e.id() as usize]
                        .as_ref()
                        .is_some_and(|f| f.client == *client)
            })
            .map(|p| self.by_client.get(p).id())
    }

    #[inline]
    pub fn lookup_client(&self, client: &SocketAddr) -> Option<FlowId> {
        let found = self.find(self.hasher.hash_one(client), client);
        match found {
            Some(i) => Some(FlowId(i)),
            None if self.aliases.is_empty() => None,
            None => self.aliases.get(client).map(|&i| FlowId(i)),
        }
    }

    /// First step of warming a batch (see `Router::prefetch_client`): starts loading
    /// the index line a lookup of `client` reads first.
    #[inline]
    pub fn prefetch_client(&self, client: &SocketAddr) {
        self.by_client.prefetch(self.hasher.hash_one(client));
    }

    /// Second step: reads the index (loaded by now) and starts loading the flow its
    /// first entry with `client`'s tag names, without waiting for it. True if that
    /// flow holds its source's datagram bucket (false: the limiter's table has it, or
    /// `client` has no flow).
    #[inline]
    pub fn warm_client(&self, client: &SocketAddr) -> bool {
        let hash = self.hasher.hash_one(client);
        let tag = IndexEntry::tag_of(hash);
        let Some(p) = self.by_client.find(hash, |e| e.tag() == tag) else {
            return false;
        };
        let e = self.by_client.get(p);
        prefetch(self.slots.as_ptr().wrapping_add(e.id() as usize));
        e.held()
    }

    /// Flow `id` no longer holds its source's bucket: it goes back to the router's
    /// limiter as a removed flow's does ([`FlowTable::drain_released`]).
    pub fn release_bucket(&mut self, id: FlowId) {
        let Some((ip, bucket)) = self
            .get(id)
            .filter(|f| f.holds_bucket())
            .map(|f| (f.client.ip(), f.bucket))
        else {
            return;
        };
        self.released.push((ip, bucket));
        self.set_bucket(id, NOT_HELD);
    }

    /// Hands each bucket a removed or released flow held to `put` (source address,
    /// bucket), once.
    pub fn drain_released(&mut self, mut put: impl FnMut(std::net::IpAddr, u64)) {
        for (ip, bucket) in self.released.drain(..) {
            put(ip, bucket);
        }
    }

    /// Sets flow `id`'s [`Flow::bucket`] ([`NOT_HELD`]: it no longer holds it).
    pub fn set_bucket(&mut self, id: FlowId, bucket: u64) {
        let Some(f) = self.slots.get_mut(id.0 as usize).and_then(|s| s.as_mut()) else {
            return;
        };
        f.bucket = bucket;
        let hash = self.hasher.hash_one(f.client);
        if let Some(p) = self.by_client.find(hash, |e| e.id() == id.0) {
            self.by_client.get_mut(p).set_held(bucket < RECLAIM);
        }
    }

    /// First step of warming a batch from backends: the endpoint's entry.
    #[inline]
    pub fn prefetch_port(&self, port: RelayPort) {
        if let Some(i) = self.space.index(port) {
            prefetch(self.by_port.as_ptr().wrapping_add(i));
        }
    }

    /// Reads what a datagram to `port` will read of the table.
    #[inline]
    pub fn warm_port(&self, port: RelayPort) {
        if let Some(id) = self.lookup_port(port) {
            prefetch(self.slots.as_ptr().wrapping_add(id.0 as usize));
        }
    }

    /// The flow on `port` if it is the one of generation `generation` there (see
    /// [`Flow::generation`]).
    /// Whether flow `id` is the one on `port` of `generation` (a dialog entry's flow),
    /// read from the flow itself (hot in a decision).
    pub fn is_at(&self, id: FlowId, port: RelayPort, generation: u16) -> bool {
        self.get(id)
            .is_some_and(|f| f.relay_port == port && f.generation == generation)
    }

    pub fn lookup_generation(&self, port: RelayPort, generation: u16) -> Option<FlowId> {
        self.lookup_port(port)
            .filter(|&id| self.get(id).is_some_and(|f| f.generation == generation))
    }

    /// The generation of the flow on `port` now, or (none there) one no flow there
    /// has: an entry synced before its flow held nothing when it came, so it must not
    /// let go of a flow placed later either.
    pub fn generation_at(&self, port: RelayPort) -> u16 {
        match self.lookup_port(port).and_then(|id| self.get(id)) {
            Some(f) => f.generation,
            None => self.space.index(port).map_or(0, |i| self.port_gen[i]),
        }
    }

    pub fn lookup_port(&self, port: RelayPort) -> Option<FlowId> {
        match self.by_port.get(self.space.index(port)?) {
            Some(&i) if i != NO_FLOW => Some(FlowId(i)),
            _ => None,
        }
    }

    pub fn get(&self, id: FlowId) -> Option<&Flow> {
        self.slots.get(id.0 as usize).and_then(|s| s.as_ref())
    }

    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut Flow> {
        self.slots.get_mut(id.0 as usize).and_then(|s| s.as_mut())
    }

    pub fn insert(
        &mut self,
        client: SocketAddr,
        ingress: u16,
        home: BackendId,
        now: Instant,
    ) -> Result<FlowId, InsertError> {
        if self.len() >= self.max {
            return Err(InsertError::Full);
        }
        self.tick(now);
        let port = self.pop_free_port().ok_or(InsertError::NoPort)?;
        let placed = self.place(Flow::new(client, port, ingress, home, now));
        if placed.is_err()
            && let Some(i) = self.space.index(port)
        {
            self.free_at_once(i);
        }
        placed
    }

    /// Moves the table's coarse clock (removals stamp freed endpoints with it).
    pub fn tick(&mut self, now: Instant) {
        let epoch = *self.epoch.get_or_insert(now);
        let secs = now.saturating_duration_since(epoch).as_secs();
        self.clock = self.clock.max(u32::try_from(secs).unwrap_or(u32::MAX));
    }

    /// Takes the next free endpoint: this host's half before the peer's; in each,
    /// never-used ones first, then the freed ones, oldest first, once out of
    /// quarantine. Endpoints that state sync took directly (`insert_at`) or that are
    /// reserved for static peers are skipped.
    fn pop_free_port(&mut self) -> Option<RelayPort> {
        // Without a half, pass 1 is empty: not walked at all.
        let passes = if self.half.is_some() { 2 } else { 1 };
        (0..passes).find_map(|pass| self.pop_fresh(pass).or_else(|| self.pop_freed(pass)))
    }

    fn pop_fresh(&mut self, pass: usize) -> Option<RelayPort> {
        let n = self.space.pool_len();
        while self.fresh[pass] < n {
            let pos = (self.start + self.fresh[pass]) % n;
            self.fresh[pass] += 1;
            if self.pass_of(pos) != pass {
                continue;
            }
            let i = self.space.interleaved_index(pos);
            // One in quarantine is in `free_ports` and comes from there.
            if self.by_port[i] == NO_FLOW && self.ready_at[i] <= self.clock {
                let r = self.space.at(i);
                if !self.space.is_static(r) {
                    return Some(r);
                }
            }
        }
        None
    }

    fn pop_freed(&mut self, pass: usize) -> Option<RelayPort> {
        while let Some(&(i, ready)) = self.free_ports[pass].front() {
            if self.by_port[i as usize] != NO_FLOW || self.ready_at[i as usize] != ready {
                self.free_ports[pass].pop_front();
                continue;
            }
            // FIFO: the ones behind were freed later still.
            if self.clock < ready {
                return None;
            }
            self.free_ports[pass].pop_front();
            return Some(self.space.at(i as usize));
        }
        None
    }

    /// Inserts a flow on a given port (state sync). A flow that held the port or the
    /// client before is replaced; returns the replaced flows' ports.
    pub fn insert_at(&mut self, mut flow: Flow) -> Result<(FlowId, Vec<RelayPort>), InsertError> {
        let idx = self
            .space
            .index(flow.relay_port)
            .ok_or(InsertError::NoPort)?;
        let mut replaced = Vec::new();
        let old_port = self.by_port[idx];
        if old_port != NO_FLOW {
            if let Some(f) = self.remove(FlowId(old_port)) {
                replaced.push(f.relay_port);
            }
        }
        if let Some(id) = self.lookup_client(&flow.client)
            && let Some(f) = self.remove(id)
        {
            replaced.push(f.relay_port);
        }
        if self.len() >= self.max {
            return Err(InsertError::Full);
        }
        flow.mirrored = true;
        let id = self.place(flow)?;
        // Stale entries in the deque are skipped by pop_free_port; keep the deque
        // from growing without bound when many ports change hands.
        let by_port = &self.by_port;
        for q in &mut self.free_ports {
            if q.len() > 2 * by_port.len() {
                q.retain(|&(i, _)| by_port[i as usize] == NO_FLOW);
            }
        }
        Ok((id, replaced))
    }

    /// Stores `flow`; its client must not have a flow (callers look it up first).
    fn place(&mut self, mut flow: Flow) -> Result<FlowId, InsertError> {
        // Its pins are in no sum yet (see `share_pins`).
        flow.pins_shared = false;
        let port = flow.relay_port;
        let client = flow.client;
        let idx = match self.free_slots.last() {
            Some(&i) => i,
            None => self.slots.len() as u32,
        };
        let hash = self.hasher.hash_one(client);
        // The index is sized for every flow `insert`/`insert_at` admit plus the
        // static peers, so this never fails; if it did, the flow is refused whole.
        if self
            .by_client
            .insert(hash, IndexEntry::new(hash, idx))
            .is_err()
        {
            return Err(InsertError::Full);
        }
        let slot = self.space.index(port);
        if let Some(i) = slot {
            self.port_gen[i] = self.port_gen[i].wrapping_add(1);
            flow.generation = self.port_gen[i];
        }
        self.mirrored += usize::from(flow.mirrored);
        match self.free_slots.pop() {
            Some(i) => self.slots[i as usize] = Some(flow),
            None => self.slots.push(Some(flow)),
        }
        let n = self.per_source.add_flow(client.ip(), idx);
        self.share_pins(FlowId(idx), client.ip(), n);
        if let Some(i) = slot {
            self.by_port[i] = idx;
        }
        Ok(FlowId(idx))
    }

    pub fn remove(&mut self, id: FlowId) -> Option<Flow> {
        self.remove_with(id, true)
    }

    /// Removes a flow that never relayed anything (its socket could not be opened, its
    /// first datagram was refused): its endpoint is free at once, no quarantine.
    pub fn remove_unused(&mut self, id: FlowId) -> Option<Flow> {
        self.remove_with(id, false)
    }

    /// Removes flow `id`; its pool endpoint waits out [`PORT_QUARANTINE`] first if
    /// `quarantine`.
    fn remove_with(&mut self, id: FlowId, quarantine: bool) -> Option<Flow> {
        let flow = self.slots.get_mut(id.0 as usize)?.take()?;
        self.mirrored -= usize::from(flow.mirrored);
        let hash = self.hasher.hash_one(flow.client);
        if let Some(p) = self.by_client.find(hash, |e| e.id() == id.0) {
            self.by_client.remove_at(p, IndexEntry::hash_bits);
        }
        if flow.holds_bucket() && flow.peer.is_none() {
            // Back to the router's limiter (see `drain_released`).
            self.released.push((flow.client.ip(), flow.bucket));
        }
        if let Some(left) = self.per_source.remove_flow(flow.client.ip(), id.0) {
            // The source's one flow left may take its bucket back (from the limiter's
            // table, with its next datagram).
            let key = source_key(flow.client.ip());
            if let Some(f) = self.slots.get_mut(left as usize).and_then(Option::as_mut)
                && source_key(f.client.ip()) == key
                && f.peer.is_none()
                && f.bucket == NOT_HELD
            {
                f.bucket = RECLAIM;
            }
        }
        // Its entries outlive it in the dialog table: still counted for its source
        // as long as they may live (a new flow must not bring a fresh quota
        // meanwhile).
        if flow.pins_shared {
            self.pins_per_source.remove(flow.client.ip(), flow.pins);
        }
        if flow.peer.is_none() {
            let until = self.clock.saturating_add(self.pin_linger);
            self.lingering.add(flow.client.ip(), flow.pins, until);
        } else {
            // Its other addresses must not name the slot's next flow.
            self.aliases.retain(|_, i| *i != id.0);
        }
        if let Some(i) = self.space.index(flow.relay_port) {
            self.by_port[i] = NO_FLOW;
            // A static peer's endpoint never goes to the pool.
            if !self.space.is_static(flow.relay_port) {
                if quarantine {
                    // One second more: the clock is whole seconds and may lag a sweep.
                    let ready = self
                        .clock
                        .saturating_add(PORT_QUARANTINE.as_secs() as u32 + 1);
                    self.ready_at[i] = ready;
                    let pass = self.slot_pass(i);
                    self.free_ports[pass].push_back((i as u32, ready));
                } else {
                    // Nothing can name a flow that carried nothing: its generation
                    // is taken back, so a flood of refused first datagrams (each a
                    // flow on the first endpoint in line) cannot wrap the u16 round to
                    // a gone flow's that a dialog entry still names.
                    self.port_gen[i] = self.port_gen[i].wrapping_sub(1);
                    self.free_at_once(i);
                }
            }
        }
        self.free_slots.push(id.0);
        Some(flow)
    }

    /// Endpoint slot `i` carried nothing: first in line, no quarantine.
    fn free_at_once(&mut self, i: usize) {
        self.ready_at[i] = 0;
        let pass = self.slot_pass(i);
        self.free_ports[pass].push_front((i as u32, 0));
    }

    /// Slots in use or used before (sweeps walk them by index).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Ids of flows in the slots `range` whose life ended at or before `now`,
    /// appended to `out` until it holds `max_out`; mirrored flows are the peer's to
    /// expire while it is alive (`keep_mirrored`). The flows that stay are counted by
    /// home backend into `homes`. Returns the end of the slots walked (`range.end`
    /// unless `out` filled up first).
    #[allow(clippy::too_many_arguments)]
    pub fn sweep(
        &self,
        range: std::ops::Range<usize>,
        now: Instant,
        idle: Idle,
        keep_mirrored: bool,
        max_out: usize,
        out: &mut Vec<FlowId>,
        homes: &mut [usize],
    ) -> usize {
        // One subtraction instead of an addition per flow.
        let answered_cutoff = now.checked_sub(idle.answered);
        let unanswered_cutoff = now.checked_sub(idle.unanswered);
        let base = range.start;
        for (i, s) in self.slots[range.clone()].iter().enumerate() {
            if out.len() >= max_out {
                return base + i;
            }
            let Some(f) = s else { continue };
            let expired = !(keep_mirrored && f.mirrored)
                && f.peer.is_none()
                && f.dialogs == 0
                && if f.answered {
                    answered_cutoff
                } else {
                    unanswered_cutoff
                }
                .is_some_and(|c| f.last_seen <= c)
                && f.registered_until.is_none_or(|r| r <= now);
            if expired {
                out.push(FlowId((base + i) as u32));
            } else if let Some(n) = homes.get_mut(f.home.index()) {
                *n += 1;
            }
        }
        range.end
    }

    pub fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.slots.iter().filter_map(|s| s.as_ref())
    }

    /// The flows in slots `range` (clamped to the slots in use).
    pub fn iter_slots(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = &Flow> {
        self.numbered_slots(range).map(|(_, f)| f)
    }

    /// One part of a listing that goes through the table a part at a time: up to
    /// `limit` flows from slot `from` on, looking at `max_slots` slots at most, and
    /// the slot the next part starts at if the table goes on. A flow keeps its slot
    /// for life, so no part lists one an earlier part listed.
    pub fn part(&self, from: usize, limit: usize, max_slots: usize) -> (Vec<&Flow>, Option<usize>) {
        let end = from.saturating_add(max_slots).min(self.slots.len());
        let mut rows = Vec::with_capacity(limit.min(max_slots));
        for (slot, f) in self.numbered_slots(from..end) {
            if rows.len() == limit {
                return (rows, Some(slot));
            }
            rows.push(f);
        }
        (rows, (end < self.slots.len()).then_some(end))
    }

    /// The flows in slots `range` (clamped to the slots in use) with their slots.
    pub fn numbered_slots(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (usize, &Flow)> {
        let end = range.end.min(self.slots.len());
        let start = range.start.min(end);
        self.slots[start..end]
            .iter()
            .enumerate()
            .filter_map(move |(i, s)| s.as_ref().map(|f| (start + i, f)))
    }

    /// Mirrored flows not confirmed by generation `gen`: the peer no longer has them.
    pub fn stale_mirrored(&self, gen_: u32) -> Vec<FlowId> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|f| f.mirrored).map(|f| (i, f)))
            // All of them seen: the rest of the table holds none.
            .take(self.mirrored)
            .filter(|(_, f)| f.sync_gen != gen_)
            .map(|(i, _)| FlowId(i as u32))
            .collect()
    }

    /// The peer went away: its flows become ours, idle from now.
    pub fn adopt_mirrored(&mut self, now: Instant) -> usize {
        let mut n = 0;
        let mirrored = self.slots.iter_mut().flatten().filter(|f| f.mirrored);
        for f in mirrored.take(self.mirrored) {
            f.mirrored = false;
            f.last_seen = now;
            n += 1;
        }
        self.mirrored -= n;
        n
    }
}

#[cfg(test)]
mod half_tests;
#[cfg(test)]
mod pin_tests;

#[cfg(test)]
mod tests {
    /// Every expired flow of the table (all flows answered, as in tables built here).
    fn expired(t: &FlowTable, now: Instant, idle: Duration, keep: bool, out: &mut Vec<FlowId>) {
        let idle = Idle {
            answered: idle,
            unanswered: idle,
        };
        t.sweep(0..t.slot_count(), now, idle, keep, usize::MAX, out, &mut []);
    }

    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], p))
    }

    fn table(ports: std::ops::RangeInclusive<u16>, max: usize) -> FlowTable {
        FlowTable::new(RelaySpace::new(&ports, 1), max, 1000)
    }

    /// The endpoint of a new flow for client `c` at `at`.
    fn port(t: &mut FlowTable, c: u16, at: Instant) -> Result<RelayPort, InsertError> {
        let id = t.insert(addr(c), 0, BackendId::new(0), at)?;
        Ok(t.get(id).unwrap().relay_port)
    }

    fn s1() -> Duration {
        Duration::from_secs(1)
    }

    const fn rp(port: u16) -> RelayPort {
        RelayPort::first(port)
    }

    #[test]
    fn an_endpoints_generation_names_only_the_flow_on_it() {
        let now = Instant::now();
        let mut t = table(100..=100, 10);
        // An entry synced before any flow names none that comes later.
        let none = t.generation_at(rp(100));
        let a = t.insert(addr(1), 0, BackendId::new(0), now).unwrap();
        assert_eq!(t.lookup_generation(rp(100), none), None);
        let gen_a = t.generation_at(rp(100));
        assert_eq!(t.lookup_generation(rp(100), gen_a), Some(a));
        t.remove(a).unwrap();
        let b = t
            .insert(addr(2), 0, BackendId::new(0), now + PORT_QUARANTINE + s1())
            .unwrap();
        assert_eq!(t.lookup_port(rp(100)), Some(b));
        assert_eq!(
            t.lookup_generation(rp(100), gen_a),
            None,
            "not the gone flow's"
        );
    }

    /// The quarantine holds however an endpoint was freed: a flow state sync placed
    /// on a never-used endpoint, or an endpoint freed, taken by sync and freed again
    /// (its first, older entry in the free list no longer counts).
    #[test]
    fn quarantine_holds_for_endpoints_sync_placed_and_freed() {
        let now = Instant::now();
        let mut t = table(100..=103, 10);
        let a = t.insert(addr(1), 0, BackendId::new(0), now).unwrap();
        // Sync places a flow on 102 (never handed out here), then it goes.
        let mut f = t.get(a).unwrap().clone();
        (f.client, f.relay_port) = (addr(9), rp(102));
        let (m, _) = t.insert_at(f.clone()).unwrap();
        t.remove(m).unwrap();
        let got: Vec<u16> = (2..4).map(|i| port(&mut t, i, now).unwrap().port).collect();
        assert_eq!(got, [101, 103], "102 is in quarantine");
        // 100: freed at 0 s, taken by sync, freed again at 20 s.
        t.remove(a).unwrap();
        let t20 = now + Duration::from_secs(20);
        t.tick(t20);
        (f.client, f.relay_port) = (addr(8), rp(100));
        let (m, _) = t.insert_at(f).unwrap();
        t.remove(m).unwrap();
        // At 40 s 102 is free again, 100 not (its first entry is stale).
        let t40 = now + Duration::from_secs(40);
        assert_eq!(port(&mut t, 5, t40).unwrap(), rp(102));
        assert!(matches!(port(&mut t, 6, t40), Err(InsertError::NoPort)));
        assert_eq!(
            port(&mut t, 6, t20 + PORT_QUARANTINE + s1()).unwrap(),
            rp(100)
        );
    }

    /// A listing in parts names every flow once, over a sparse table, whatever the
    /// part's bounds, and a limit ends it where it says.
    #[test]
    fn a_listing_in_parts_names_every_flow_once() {
        let now = Instant::now();
        let mut t = table(100..=1099, 1000);
        let ids: Vec<FlowId> = (0..1000)
            .map(|c| t.insert(addr(c), 0, BackendId::new(0), now).unwrap())
            .collect();
        // Left: every seventh, and a run at the end.
        for (i, id) in ids.iter().enumerate() {
            if i % 7 != 0 && i < 990 {
                t.remove(*id).unwrap();
            }
        }
        let want: Vec<SocketAddr> = t.iter().map(|f| f.client).collect();
        assert_eq!(want.len(), 142 + 10);
        for (limit, max_slots) in [(1, 1), (5, 3), (10, 64), (1000, 7), (3, 1000)] {
            let (mut got, mut from, mut parts) = (Vec::new(), Some(0), 0);
            while let Some(at) = from {
                let (rows, next) = t.part(at, limit, max_slots);
                assert!(rows.len() <= limit);
                got.extend(rows.iter().map(|f| f.client));
                from = next;
                parts += 1;
            }
            assert_eq!(got, want, "limit {limit}, {max_slots} slots a part");
            assert!(parts >= want.len() / limit, "{parts} parts");
        }
        // A limit that ends inside a part: the next part starts at the flow left out.
        let (rows, next) = t.part(0, 2, 1000);
        assert_eq!(rows.len(), 2);
        let (rest, _) = t.part(next.unwrap(), 1, 1000);
        assert_eq!(rest[0].client, want[2]);
    }

    /// A flow undone before it relayed anything gives its endpoint back at once.
    #[test]
    fn an_unused_flows_endpoint_is_free_at_once() {
        let now = Instant::now();
        let mut t = table(100..=101, 10);
        t.insert(addr(1), 0, BackendId::new(0), now).unwrap();
        let b = t.insert(addr(2), 0, BackendId::new(0), now).unwrap();
        t.remove_unused(b).unwrap();
        assert_eq!(port(&mut t, 3, now).unwrap(), rp(101));
    }

    /// Refused first datagrams do not advance an endpoint's generation: 65,536 of them
    /// would otherwise bring it round to a gone flow's, which dialog entries still name.
    #[test]
    fn unused_flows_leave_the_endpoints_generation_as_it_was() {
        let now = Instant::now();
        let mut t = table(100..=100, 10);
        let a = t.insert(addr(1), 0, BackendId::new(0), now).unwrap();
        let gen_a = t.generation_at(rp(100));
        t.remove(a).unwrap();
        let later = now + PORT_QUARANTINE + s1();
        for i in 0..=u16::MAX as u32 {
            let b = t
                .insert(addr(2 + (i % 1000) as u16), 0, BackendId::new(0), later)
                .unwrap();
            assert_ne!(t.generation_at(rp(100)), gen_a, "the gone flow's, at {i}");
            t.remove_unused(b).unwrap();
        }
        let c = t.insert(addr(1), 0, BackendId::new(0), later).unwrap();
        assert_eq!(t.lookup_generation(rp(100), gen_a), None);
        assert_eq!(t.lookup_port(rp(100)), Some(c));
    }

    /// A table started elsewhere in the pool (the dataplane draws where per start)
    /// hands endpoints out from there, wrapping.
    #[test]
    fn new_flows_take_endpoints_from_the_start_on_wrapping() {
        let now = Instant::now();
        let mut t = table(100..=103, 10).starting_at(6);
        let got: Vec<u16> = (0..4).map(|i| port(&mut t, i, now).unwrap().port).collect();
        assert_eq!(got, [102, 103, 100, 101]);
    }

    /// With a half, new flows take this host's half of the pool first, then its freed
    /// ones out of quarantine, and only then the peer's half; the peer (the other
    /// half) hands out none of the same endpoints while its half has room.
    #[test]
    fn a_pair_takes_endpoints_from_its_own_half_first() {
        let now = Instant::now();
        let take = |t: &mut FlowTable, c: u16, at: Instant| port(t, c, at).unwrap().port;
        let mut a = table(100..=105, 10).starting_at(1).preferring_half(Some(0));
        let mut b = table(100..=105, 10).starting_at(1).preferring_half(Some(1));
        let got_a: Vec<u16> = (0..3).map(|c| take(&mut a, c, now)).collect();
        let got_b: Vec<u16> = (0..3).map(|c| take(&mut b, c, now)).collect();
        assert_eq!(got_a, [102, 104, 100]);
        assert_eq!(got_b, [101, 103, 105]);
        assert!(a.is_own_half(rp(104)) && !a.is_own_half(rp(105)));
        // A's half is in use: a freed endpoint of it comes back after quarantine
        // before A spills into B's half.
        a.remove(a.lookup_client(&addr(1)).unwrap()).unwrap();
        assert_eq!(take(&mut a, 10, now), 101, "in quarantine: B's half");
        let later = now + PORT_QUARANTINE + s1();
        assert_eq!(take(&mut a, 11, later), 104, "out of quarantine: A's own");
        assert_eq!(take(&mut a, 12, later), 103);
        // Without a half, one pass over the whole pool.
        let mut c = table(100..=105, 10).starting_at(1);
        let got_c: Vec<u16> = (0..3).map(|i| take(&mut c, i, now)).collect();
        assert_eq!(got_c, [101, 102, 103]);
    }

    /// In prefix mode (many addresses) the halves are alternate positions of the
    /// interleaved order: every endpoint is in exactly one host's half.
    #[test]
    fn the_halves_split_a_multi_address_pool() {
        let space = RelaySpace::new(&(100..=102), 4);
        let a = FlowTable::new(space.clone(), 100, 10).preferring_half(Some(0));
        let b = FlowTable::new(space.clone(), 100, 10).preferring_half(Some(1));
        let mut own_a = 0;
        for i in 0..space.pool_len() {
            let r = space.at(i);
            assert_eq!(space.interleaved_at(space.interleaved_pos(i)), r);
            assert_ne!(a.is_own_half(r), b.is_own_half(r), "{r:?}");
            own_a += usize::from(a.is_own_half(r));
        }
        assert_eq!(own_a, 6);
    }

    #[test]
    fn insert_lookup_remove_reuses_ports_last() {
        let now = Instant::now();
        let mut t = table(100..=102, 10);
        assert_eq!(t.capacity(), 3);
        let a = t.insert(addr(1), 0, BackendId::new(0), now).unwrap();
        let b = t.insert(addr(2), 0, BackendId::new(0), now).unwrap();
        assert_eq!(t.get(a).unwrap().relay_port, rp(100));
        assert_eq!(t.lookup_port(rp(101)), Some(b));
        assert_eq!(t.lookup_client(&addr(1)), Some(a));
        assert_eq!(t.lookup_port(rp(99)), None);
        assert_eq!(t.lookup_port(rp(103)), None);
        t.remove(a).unwrap();
        assert_eq!(t.lookup_port(rp(100)), None);
        let c = t.insert(addr(3), 0, BackendId::new(0), now).unwrap();
        assert_eq!(
            t.get(c).unwrap().relay_port,
            rp(102),
            "freed port goes to the back"
        );
        // Freed 32 s ago: still in quarantine (a second more than PORT_QUARANTINE: the
        // clock counts whole seconds), no endpoint to give.
        let later = now + PORT_QUARANTINE;
        assert!(matches!(port(&mut t, 4, later), Err(InsertError::NoPort)));
        assert_eq!(
            port(&mut t, 4, now + PORT_QUARANTINE + s1()).unwrap(),
            rp(100)
        );
        assert!(matches!(
            t.insert(addr(5), 0, BackendId::new(0), now),
            Err(InsertError::Full)
        ));
    }

    #[test]
    fn insert_at_takes_a_given_port_and_replaces_holders() {
        let now = Instant::now();
        let mut t = table(100..=103, 10);
        let a = t.insert(addr(1), 0, BackendId::new(0), now).unwrap();
        let mut f = t.get(a).unwrap().clone();
        f.client = addr(9);
        f.relay_port = rp(102);
        let (b, replaced) = t.insert_at(f.clone()).unwrap();
        assert!(replaced.is_empty());
        assert!(t.get(b).unwrap().mirrored);
        // New local flows skip the port sync took.
        assert_eq!(port(&mut t, 2, now).unwrap(), rp(101));
        assert_eq!(port(&mut t, 3, now).unwrap(), rp(103));
        // The peer's view wins on a conflict: port 100 goes to client 1 of the peer.
        f.relay_port = rp(100);
        f.client = addr(7);
        let (_, replaced) = t.insert_at(f).unwrap();
        assert_eq!(replaced, vec![rp(100)]);
        assert_eq!(t.lookup_client(&addr(1)), None);
        let mut out = vec![];
        expired(
            &t,
            now + Duration::from_secs(100),
            Duration::from_secs(1),
            true,
            &mut out,
        );
        assert_eq!(out.len(), 2, "mirrored flows are kept while the peer lives");
        assert_eq!(t.adopt_mirrored(now), 2);
    }

    #[test]
    fn registration_extends_expiry() {
        let now = Instant::now();
        let mut t = table(100..=200, 10);
        let a = t.insert(addr(1), 0, BackendId::new(0), now).unwrap();
        let idle = Duration::from_secs(30);
        let mut out = vec![];
        expired(&t, now + idle, idle, false, &mut out);
        assert_eq!(out, vec![a]);
        t.get_mut(a).unwrap().registered_until = Some(now + Duration::from_secs(3600));
        out.clear();
        expired(&t, now + Duration::from_secs(3599), idle, false, &mut out);
        assert!(out.is_empty());
    }
}
