//! Rate limits. Per source (an IPv4 address, or an IPv6 /64: one subscriber's
//! prefix, so a host cannot dodge its limit by rotating addresses): a token bucket per
//! source, in a table bounded in entries (a shard doubles only when it holds more
//! than a quarter of its slots after a prune, so at most eight slots per entry it
//! held) so a spoofed flood cannot grow memory without bound. And one
//! global [`Budget`] (e.g. for the 503s sent in all).

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Instant;

use super::growth::Growth;
use super::open_table::{Entry, OpenTable, TableHasher};
use super::source_limits::Class;

/// The unit sources are limited and counted in: an IPv4 address, or an IPv6 /64.
pub type SourceKey = u128;

pub fn source_key(ip: IpAddr) -> SourceKey {
    match ip {
        // Tagged so that no IPv4 key equals an IPv6 one.
        IpAddr::V4(a) => u128::from(u32::from(a)) | (1 << 64),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => source_key(IpAddr::V4(v4)),
            None => u128::from(a) & !u128::from(u64::MAX),
        },
    }
}

/// A source as 64 bits: an IPv6 /64 is its prefix; an IPv4 address sits in
/// ffff:ffff::/32, multicast, which is never an IPv6 source (the kernel drops such
/// packets), so no IPv4 key equals an IPv6 one.
fn key64(ip: IpAddr) -> u64 {
    let v4 = |a: std::net::Ipv4Addr| 0xffff_ffff_0000_0000 | u64::from(u32::from(a));
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a) => v4(a),
            None => (u128::from(a) >> 64) as u64,
        },
    }
}

/// One source's bucket: 32 bytes (a table may hold a million).
#[derive(Debug, Clone, Copy, bytemuck::Zeroable)]
struct Bucket {
    key: u64,
    tokens: f64,
    /// Nanoseconds since the limiter's epoch.
    last: u64,
    /// The source's class (its rate and burst), looked up when the bucket is made.
    class: Class,
    /// False in a vacant slot (key 0 is a real source: `::/64`).
    used: bool,
}

impl Bucket {
    /// Adds what its class's rate gave since it was last used, up to the burst.
    #[inline]
    fn refill(&mut self, rates: &[(f64, f64)], t: u64) {
        let (rate, burst) = rate_of(rates, self.class);
        let elapsed = t.saturating_sub(self.last) as f64 * 1e-9;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = t;
    }
}

fn ns_since(epoch: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(epoch).as_nanos() as u64
}

impl Entry for Bucket {
    fn is_vacant(&self) -> bool {
        !self.used
    }
}

/// The fewest shards of the table, by the hash's low bits (a shard's own slots are
/// chosen by its high half). Each grows on its own as sources come: most buckets
/// refill and are pruned within moments, so the table holds far fewer sources than it
/// may, and a table sized for the most would spread them over all its pages.
/// Housekeeping prunes a few shards at a time.
const MIN_SHARDS: usize = 256;

/// Sources a shard holds when the table is full: a larger table has more shards
/// (up to [`MAX_SHARDS`]), since a shard's growth step re-places all of it in one
/// timer call. With 256 shards at a million sources (~4,000 each) a step took
/// 0.6-1.3 ms.
const SHARD_SOURCES: usize = 1024;

const MAX_SHARDS: usize = 4096;

/// The shards for a table of at most `max_entries` sources (a power of two).
fn shard_count(max_entries: usize) -> usize {
    (max_entries / SHARD_SOURCES)
        .next_power_of_two()
        .clamp(MIN_SHARDS, MAX_SHARDS)
}

/// Entries a shard starts with room for (in 32 slots). With 8, 5,000 new sources/s
/// each limited for 0.1 s now and then filled a shard between two growth steps.
const SHARD_ROOM: usize = 16;

/// New sources a shard must have room for between two growth steps (10 ms apart).
/// With 4, 5,000 new sources/s (50 a step over 256 shards) put the four into one
/// small shard in about one run in 30 of `tests/table_growth.rs` (a shard gets 4 of
/// 50 with p ~ 5e-5, and 512 shards pass through that size); 8 of 50 has p ~ 3e-11.
const SHARD_MARGIN: usize = 8;

/// A prune step stops once it has walked this many slots (32 bytes each: ~0.1 ms;
/// one large shard may take it past), so the step that comes with a sweep slice
/// adds little to its stall.
const PRUNE_STEP_SLOTS: usize = 16384;

/// A source's shard among `n` (a power of two): the hash's low bits (the table inside
/// a shard places by bits 32-63; both need the [`TableHasher`]'s mixing: with uneven
/// shards a full limiter found no bucket to prune in the shards it tries and refused
/// new sources).
#[inline]
fn shard_of(h: u64, n: usize) -> usize {
    debug_assert!(n.is_power_of_two());
    h as usize & (n - 1)
}

/// Shards of [`MIN_SHARDS`] a full table prunes for one new source before it refuses
/// it: the same share of a larger table (a 64th), in more shards.
const MAKE_ROOM_SHARDS: usize = 4;

/// After pruning for a new source freed nothing, new sources are refused without
/// pruning again for this long (a flood of new sources must not cost a prune each).
const FULL_BACKOFF_NS: u64 = 10_000_000;

pub struct SourceLimiter {
    shards: Box<[OpenTable<Bucket>]>,
    len: usize,
    hasher: TableHasher,
    /// The first time seen; times are kept as nanoseconds since it.
    epoch: Option<Instant>,
    /// (rate, burst) per class; class 0 is the global limit.
    rates: Vec<(f64, f64)>,
    max_entries: usize,
    /// No whole-table pass before this time (ns), see [`FULL_BACKOFF_NS`].
    full_until: u64,
    /// The next shard [`Self::prune_step`] prunes.
    prune_next: usize,
    /// Shards past three quarters of their room, for [`Self::grow_step`].
    growth: Growth,
    /// New buckets that met a full shard still mostly limited, so the datagram's
    /// decision grew it (an allocation on the datagram path).
    full_places: u64,
}

impl SourceLimiter {
    /// One limit for every source.
    pub fn new(rate: u32, burst: u32, max_entries: usize) -> Self {
        Self::with_classes([(rate, burst)], max_entries)
    }

    /// A (rate, burst) per class, class 0 first.
    pub fn with_classes(rates: impl IntoIterator<Item = (u32, u32)>, max_entries: usize) -> Self {
        let max_entries = max_entries.max(1);
        let mut l = SourceLimiter {
            // Made by `set_classes` below.
            shards: Box::default(),
            len: 0,
            hasher: TableHasher::default(),
            epoch: None,
            rates: Vec::new(),
            max_entries,
            full_until: 0,
            prune_next: 0,
            growth: Growth::default(),
            full_places: 0,
        };
        l.set_classes(rates);
        l
    }

    /// New limits (a reload). Sources start over with full buckets: their classes may
    /// have changed, and a reload is rare.
    pub fn set_classes(&mut self, rates: impl IntoIterator<Item = (u32, u32)>) {
        self.rates = rates
            .into_iter()
            .map(|(r, b)| (f64::from(r), f64::from(b)))
            .collect();
        if self.rates.is_empty() {
            self.rates.push((1.0, 1.0));
        }
        self.shards = (0..shard_count(self.max_entries))
            .map(|_| OpenTable::with_capacity(SHARD_ROOM))
            .collect();
        self.len = 0;
        self.full_until = 0;
    }

    /// The shard of a source whose key hashes to `h`.
    #[inline]
    fn shard_of(&self, h: u64) -> usize {
        shard_of(h, self.shards.len())
    }

    /// Takes one token for `ip`'s source (class 0); see [`SourceLimiter::allow_in`].
    #[inline]
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.allow_in(ip, now, || 0)
    }

    fn ns(&mut self, now: Instant) -> u64 {
        ns_since(*self.epoch.get_or_insert(now), now)
    }

    /// Takes one token for `ip`'s source; false when the source is over its rate (or
    /// the table of sources is full of sources that are all still limited). `class`
    /// is asked only for a source without a bucket.
    #[inline]
    pub fn allow_in(&mut self, ip: IpAddr, now: Instant, class: impl FnOnce() -> Class) -> bool {
        let (key, h, t) = self.locate(ip, now);
        if let Some(b) = self.find_refilled(key, h, t) {
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                return true;
            }
            return false;
        }
        let class = class();
        let (_, burst) = rate_of(&self.rates, class);
        let tokens = if burst >= 1.0 { burst - 1.0 } else { burst };
        self.place(key, h, t, class, tokens) && burst >= 1.0
    }

    /// `ip`'s source's key, its hash, and `now` as the table counts time.
    #[inline]
    fn locate(&mut self, ip: IpAddr, now: Instant) -> (u64, u64, u64) {
        let key = key64(ip);
        (key, self.hasher.hash_one(key), self.ns(now))
    }

    /// The bucket of source `key` (hash `h`), refilled up to `t`, if it has one.
    #[inline]
    fn find_refilled(&mut self, key: u64, h: u64, t: u64) -> Option<&mut Bucket> {
        let i = self.shard_of(h);
        let (shards, rates) = (&mut self.shards, &self.rates);
        let shard = &mut shards[i];
        let b = shard.get_mut(shard.find(h, |b| b.key == key)?);
        b.refill(rates, t);
        Some(b)
    }

    /// The tokens `ip`'s source has left now, if it has a bucket (nothing changes).
    pub fn tokens(&self, ip: IpAddr, now: Instant) -> Option<f64> {
        let key = key64(ip);
        let h = self.hasher.hash_one(key);
        let t = self.epoch.map_or(0, |e| ns_since(e, now));
        let shard = &self.shards[self.shard_of(h)];
        let mut b = *shard.get(shard.find(h, |b| b.key == key)?);
        b.refill(&self.rates, t);
        Some(b.tokens)
    }

    /// `ip`'s source's bucket comes (back) from elsewhere with `tokens` left: its
    /// bucket here keeps the lesser of that and what it has, or is made with it.
    pub fn take_over(&mut self, ip: IpAddr, now: Instant, class: Class, tokens: f64) {
        let (key, h, t) = self.locate(ip, now);
        if let Some(b) = self.find_refilled(key, h, t) {
            b.tokens = b.tokens.min(tokens);
            return;
        }
        // No room: the source starts over with a full bucket later, as one whose
        // bucket was pruned does.
        self.place(key, h, t, class, tokens);
    }

    /// Puts a new bucket into the table; false if there is no room.
    fn place(&mut self, key: u64, h: u64, t: u64, class: Class, tokens: f64) -> bool {
        let shard = self.shard_of(h);
        // At the limit, room is made by pruning, the key's own shard first.
        let pruned = self.len >= self.max_entries;
        if pruned && !self.make_room(shard, t) {
            return false;
        }
        let bucket = Bucket {
            key,
            tokens,
            last: t,
            class,
            used: true,
        };
        // A full shard here means it filled between two timer steps.
        if self.shards[shard].is_full() && self.prune_or_grow(shard, t, !pruned) {
            self.full_places += 1;
        }
        let table = &mut self.shards[shard];
        let placed = table.insert(h, bucket).is_ok();
        self.len += usize::from(placed);
        self.growth.note(filling(table));
        placed
    }

    /// Makes room in shard `i`: forgets its refilled buckets (if `prune`), then
    /// doubles it if more than half is still limited, so it grows with the sources
    /// that are limited, not with every source seen since the sweep last came by
    /// (amortized: a prune that keeps at most half leaves room for a quarter of the
    /// slots). The total stays bounded by `max_entries` (new buckets are refused at
    /// it), not the shard. Returns whether it grew.
    fn prune_or_grow(&mut self, i: usize, t: u64, prune: bool) -> bool {
        if prune {
            self.prune_shard(i, t);
        }
        let table = &mut self.shards[i];
        if table.len() <= table.capacity() / 2 {
            return false;
        }
        let hasher = &self.hasher;
        table.grow(|b| hasher.hash_one(b.key));
        true
    }

    /// Whether a shard may be past three quarters of its room: [`Self::grow_step`]
    /// has work.
    pub fn short_of_room(&self) -> bool {
        self.growth.pending()
    }

    /// New buckets so far whose shard grew inside the decision (see
    /// [`Self::grow_step`]).
    pub fn full_places(&self) -> u64 {
        self.full_places
    }

    /// What [`Self::place`] does for a full shard ([`Self::prune_or_grow`]), done
    /// ahead from the timer for shards past three quarters of their room, from where
    /// the last step stopped, taking the slots it walks from `budget` until that is
    /// used up (one shard at least). Returns how many shards grew.
    pub fn grow_step(&mut self, now: Instant, budget: &mut usize) -> usize {
        let t = self.ns(now);
        // Out while its step calls back into the table.
        let mut growth = self.growth;
        let grown = growth.step(self.shards.len(), budget, |i, budget| {
            if !filling(&self.shards[i]) {
                return false;
            }
            *budget = budget.saturating_sub(self.shards[i].slot_count());
            self.prune_or_grow(i, t, true)
        });
        self.growth = growth;
        grown
    }

    /// Starts loading the line [`Self::allow_in`] will read first for `ip`: a batch
    /// does this for every datagram before deciding any, so the misses overlap.
    #[inline]
    pub fn prefetch(&self, ip: IpAddr) {
        let h = self.hasher.hash_one(key64(ip));
        self.shards[self.shard_of(h)].prefetch(h);
    }

    /// The table is full: prunes the new key's shard, then the ones after it, up to
    /// [`MAKE_ROOM_SHARDS`] for every [`MIN_SHARDS`] of the table, until there is room. A few shards only: this
    /// runs for a datagram, and a flood of sources that are all still limited must
    /// not cost a pass over the table each (the sweep prunes all of it in a round).
    #[cold]
    fn make_room(&mut self, first: usize, t: u64) -> bool {
        if t < self.full_until {
            return false;
        }
        let n = self.shards.len();
        for i in 0..MAKE_ROOM_SHARDS * n / MIN_SHARDS {
            self.prune_shard((first + i) % n, t);
            if self.len < self.max_entries {
                return true;
            }
        }
        self.full_until = t + FULL_BACKOFF_NS;
        false
    }

    fn prune_shard(&mut self, i: usize, t: u64) {
        let (rates, hasher) = (&self.rates, &self.hasher);
        let table = &mut self.shards[i];
        // A refilled bucket is indistinguishable from a new one.
        self.len -= table.retain(
            |b| {
                let (rate, burst) = rate_of(rates, b.class);
                b.tokens + t.saturating_sub(b.last) as f64 * 1e-9 * rate < burst
            },
            |b| hasher.hash_one(b.key),
        );
    }

    /// Forgets sources whose bucket has refilled: they are indistinguishable from new.
    pub fn prune(&mut self, now: Instant) {
        let t = self.ns(now);
        for i in 0..self.shards.len() {
            self.prune_shard(i, t);
        }
    }

    /// Prunes the next `1/parts` of the shards (at least one), or fewer once
    /// [`PRUNE_STEP_SLOTS`] slots have been walked: called `parts` times, it has
    /// pruned all of a small table; a large one takes more steps (and a full shard
    /// prunes itself before it grows).
    pub fn prune_step(&mut self, now: Instant, parts: usize) {
        let t = self.ns(now);
        let mut walked = 0;
        let n = self.shards.len();
        for _ in 0..n.div_ceil(parts.max(1)) {
            walked += self.shards[self.prune_next].slot_count();
            self.prune_shard(self.prune_next, t);
            self.prune_next = (self.prune_next + 1) % n;
            if walked >= PRUNE_STEP_SLOTS {
                break;
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

/// A shard past three quarters of its room, or with room for fewer than
/// [`SHARD_MARGIN`]: the timer prunes it, or grows it, before a new source finds it
/// full.
fn filling(t: &OpenTable<Bucket>) -> bool {
    t.len() * 4 > t.capacity() * 3 || t.len() + SHARD_MARGIN > t.capacity()
}

/// A class's (rate, burst); an unknown class gets class 0's (never happens: classes
/// and rates are set together).
#[inline]
fn rate_of(rates: &[(f64, f64)], class: Class) -> (f64, f64) {
    rates
        .get(usize::from(class))
        .or(rates.first())
        .copied()
        .unwrap_or((1.0, 1.0))
}

/// One token bucket for everyone: a budget per second with a burst of one second's
/// worth.
#[derive(Debug, Clone)]
pub struct Budget {
    per_sec: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Budget {
    pub fn new(per_sec: u32) -> Self {
        Budget {
            per_sec: f64::from(per_sec),
            tokens: f64::from(per_sec),
            last: None,
        }
    }

    pub fn set_rate(&mut self, per_sec: u32) {
        self.per_sec = f64::from(per_sec);
    }

    /// Whether a token is there now (none is taken).
    pub fn available(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = self
            .last
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec.max(1.0));
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_and_table_is_bounded() {
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut l = SourceLimiter::new(10, 20, 2);
        let allowed = (0..30).filter(|_| l.allow(ip, t0)).count();
        assert_eq!(allowed, 20);
        assert!(l.allow(ip, t0 + Duration::from_millis(100)));
        assert!(!l.allow(ip, t0 + Duration::from_millis(100)));
        let ip2: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..5).filter(|_| l.allow(ip2, t0)).count(), 5);
        // Both entries still limited-ish: a third address is refused, not evicting.
        let ip3: IpAddr = "192.0.2.3".parse().unwrap();
        assert!(!l.allow(ip3, t0 + Duration::from_millis(100)));
        // Later everything has refilled and is pruned (by the sweep: making room for
        // a new source prunes only a few shards, which here need not hold the two).
        l.prune(t0 + Duration::from_secs(10));
        assert_eq!(l.len(), 0);
        assert!(l.allow(ip3, t0 + Duration::from_secs(10)));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn prune_steps_cover_the_whole_table_and_a_full_one_makes_room() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(10, 1, 1000);
        let ip = |i: u32| IpAddr::V4(i.into());
        assert!((0..1000).all(|i| l.allow(ip(i), t0)));
        assert_eq!(l.len(), 1000);
        // Full of sources that are all still limited: a new one is refused.
        assert!(!l.allow(ip(5000), t0));
        // A bucket refills in 100 ms; steps in 256 parts (the most) forget them all.
        let t1 = t0 + Duration::from_millis(100);
        for _ in 0..256 {
            l.prune_step(t1, 1000);
        }
        assert_eq!(l.len(), 0);
        assert!((0..1000).all(|i| l.allow(ip(i), t1)));
        // Full again, refilled later: a new source makes room (a shard or more
        // pruned) without a sweep. The first shard with any bucket is enough, and it
        // may hold just one (then the table is exactly full again).
        let t2 = t1 + Duration::from_millis(100);
        assert!(l.allow(ip(5000), t2));
        assert!((900..=1000).contains(&l.len()), "{}", l.len());
        // It has a bucket now: its one token is spent.
        assert!(!l.allow(ip(5000), t2));
    }

    /// `n` new sources at `rate` per second, each taking one token of a burst of 5
    /// refilled at 10/s (0.1 s to refill), a growth step every 10 ms (or none), in a
    /// table of 256 shards; returns the shards the steps grew.
    fn new_sources(n: u32, rate: u32, steps: bool) -> (SourceLimiter, usize) {
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(10, 5, 200_000);
        assert_eq!(l.shards.len(), MIN_SHARDS);
        let mut ahead = 0;
        for i in 0..n {
            let now = t0 + Duration::from_secs(1) * i / rate;
            assert!(l.allow(IpAddr::V4((i * 7919).into()), now));
            if steps && i % (rate / 100) == 0 && l.short_of_room() {
                ahead += l.grow_step(now, &mut 4096);
            }
        }
        (l, ahead)
    }

    #[test]
    fn shards_are_pruned_or_grown_ahead_so_new_sources_find_room() {
        // 5,000 new sources/s (300,000 phones registering in a minute), ~500 of them
        // still limited at a time: no new source meets a full shard.
        let (l, ahead) = new_sources(100_000, 5_000, true);
        assert_eq!(l.full_places(), 0);
        assert!(ahead > 0);
        // Refilled buckets were forgotten rather than grown around.
        let most = l.shards.iter().map(|s| s.capacity()).max().unwrap();
        assert!(most <= 32, "{most}");
        // Without steps, full shards grow inside the decision (at 20,000/s: ~2,000
        // still limited at a time, about 8 per shard).
        let (l, _) = new_sources(100_000, 20_000, false);
        assert!(l.full_places() > 0);
        // A flood (200,000 new sources/s, 20,000 or more still limited at a time):
        // some shards fill between two steps and grow in a decision (counted), most
        // grow on the timer.
        let (l, ahead) = new_sources(200_000, 200_000, true);
        assert!(
            l.full_places() < ahead as u64,
            "{} vs {ahead}",
            l.full_places()
        );
    }

    #[test]
    fn a_shard_stays_small_in_a_large_table() {
        // A million sources within a millisecond, each having taken one of its 60
        // tokens (refilled at one a second): none has refilled, so none is pruned; the
        // table is full, and the largest shard, which one growth step re-places,
        // holds ~1,000 of them, not the ~4,000 of 256 shards.
        let t0 = Instant::now();
        let mut l = SourceLimiter::new(1, 60, 1_000_000);
        assert_eq!(l.shards.len(), 1024);
        let mut budget = 0;
        for i in 0..1_000_000u32 {
            let now = t0 + Duration::from_nanos(u64::from(i));
            assert!(l.allow(IpAddr::V4(i.wrapping_mul(7919).into()), now));
            if i % 500 == 0 && l.short_of_room() {
                l.grow_step(now, &mut budget);
            }
        }
        assert_eq!(l.len(), 1_000_000);
        let most = l.shards.iter().map(|s| s.len()).max().unwrap();
        assert!(most < 1_300, "{most}");
        // Full of limited sources: a new one is refused; once they have refilled, it
        // finds room (pruned from its shard and the ones after it).
        let new = IpAddr::V4([10, 0, 0, 1].into());
        assert!(!l.allow(new, t0 + Duration::from_millis(1)));
        assert!(l.allow(new, t0 + Duration::from_secs(2)));
        assert!(l.len() < 1_000_000);
        assert_eq!(shard_count(1000), MIN_SHARDS);
        assert_eq!(shard_count(usize::MAX / 2), MAX_SHARDS);
    }

    #[test]
    fn consecutive_sources_spread_over_the_shards_and_slots() {
        // 100,000 consecutive IPv4 sources: about 390 per shard if the bits are
        // uniform (a standard deviation of about 20), and the same over bits 32-39,
        // where the table inside a shard starts probing. foldhash's `fast` hash left
        // up to 192 of 256 shards empty for 1000 such sources, depending on the seed.
        for _ in 0..5 {
            let l = SourceLimiter::new(10, 1, 1000);
            let (mut shards, mut homes) = ([0u32; MIN_SHARDS], [0u32; 256]);
            for i in 0..100_000u32 {
                let h = l.hasher.hash_one(key64(IpAddr::V4(i.into())));
                shards[shard_of(h, MIN_SHARDS)] += 1;
                homes[(h >> 32) as usize % 256] += 1;
            }
            for counts in [shards, homes] {
                let (lo, hi) = (counts.iter().min(), counts.iter().max());
                assert!(
                    counts.iter().all(|c| (250..=550).contains(c)),
                    "{lo:?}..{hi:?}"
                );
            }
        }
    }

    #[test]
    fn an_ipv6_64_is_one_source_and_v4_keys_stay_apart() {
        let k = |s: &str| source_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.1"), k("192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
        assert_ne!(k("0.0.0.1"), k("::1"));
        let mut l = SourceLimiter::new(1, 3, 10);
        let t0 = Instant::now();
        let spread = (1..=5)
            .filter(|i| l.allow(format!("2001:db8::{i}").parse().unwrap(), t0))
            .count();
        assert_eq!(spread, 3, "rotating addresses in one /64 shares one bucket");
    }

    #[test]
    fn the_budget_refills_per_second() {
        let t0 = Instant::now();
        let mut b = Budget::new(5);
        assert_eq!((0..10).filter(|_| b.take(t0)).count(), 5);
        assert!(b.available(t0 + Duration::from_millis(200)));
        assert!(
            b.available(t0 + Duration::from_millis(200)),
            "peeking takes nothing"
        );
        assert!(b.take(t0 + Duration::from_millis(200)));
        assert!(!b.available(t0 + Duration::from_millis(200)));
        assert!(!b.take(t0 + Duration::from_millis(200)));
    }
}
