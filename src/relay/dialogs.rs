//! The dialog table: Call-ID -> backend that owns the transaction or dialog.
//!
//! Keys are 128-bit keyed hashes of the Call-ID (SipHash-1-3 with its 128-bit output:
//! one pass, where two 64-bit hashes took two), so an entry has a fixed size, inserts
//! never allocate for the key, and an attacker cannot aim collisions (the hash key is
//! random per process, or derived from the sync key). A collision between two honest
//! Call-IDs (about 2^-128) would only route one message to a backend that drops it.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use siphasher::sip128::{Hasher128, SipHasher13};

use super::backends::BackendId;
use super::growth::Growth;
use super::port::RelayPort;
use super::prefetch::prefetch;

pub type DialogKey = u128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialog {
    pub backend: BackendId,
    pub expires: Instant,
    pub span: Span,
    /// Who sent the request that opened it: only the other side's answer (1xx/2xx)
    /// makes it a dialog, so nobody can pin entries by talking to themselves.
    pub opener: Side,
    /// The relay endpoint of the flow it uses: a dialog holds its flow.
    pub flow: RelayPort,
    /// That flow's generation on the endpoint (`Flow::generation`).
    pub flow_gen: u16,
    /// Yes/no facts about the entry ([`Marks`]).
    pub marks: Marks,
}

/// An entry's yes/no facts, one bit each: a million entries stay 32 bytes each.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Marks(u8);

impl Marks {
    pub const NONE: Marks = Marks(0);
    /// Opened by the client and not (yet) made a dialog by a backend's 1xx/2xx:
    /// counts against the flow's pin quota until it expires (calls a backend takes do
    /// not, however many a PBX places; rejected ones do).
    pub const AWAITING: Marks = Marks(1);
    /// The request that opened it opens a dialog (INVITE, SUBSCRIBE, REFER): only
    /// then may an answer make it one. An answer names its request's method in CSeq
    /// only, which the answering side writes: a client must not turn a backend's
    /// OPTIONS or MESSAGE into an hour-long dialog by answering `CSeq: 1 INVITE`.
    pub const OPENS: Marks = Marks(2);
    /// A dialog kept alive by its own traffic since the sync peer last heard of it:
    /// the peer's copy lives a bounded time from then (`dialog_idle` and a quarter), so
    /// the sweep tells it again
    /// ([`Router::handle_timeout`](crate::relay::Router::handle_timeout)).
    pub const REFRESHED: Marks = Marks(4);

    pub const fn has(self, m: Marks) -> bool {
        self.0 & m.0 == m.0
    }

    pub fn set(&mut self, m: Marks, on: bool) {
        if on {
            self.0 |= m.0;
        } else {
            self.0 &= !m.0;
        }
    }

    /// `self` plus `m` if `on`.
    pub const fn with(self, m: Marks, on: bool) -> Marks {
        if on { Marks(self.0 | m.0) } else { self }
    }

    /// The marks of `self` that are in `m`.
    pub const fn only(self, m: Marks) -> Marks {
        Marks(self.0 & m.0)
    }
}

impl std::ops::BitOr for Marks {
    type Output = Marks;
    fn bitor(self, m: Marks) -> Marks {
        Marks(self.0 | m.0)
    }
}

// A million may be held: the generation fits in what was padding.
const _: () = assert!(std::mem::size_of::<Dialog>() == 32);

/// Which side of sipfront sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    Client,
    Backend,
}

/// How long a pin lives: a lone transaction, or a dialog (INVITE, SUBSCRIBE,
/// REFER) that lives for the dialog idle time, refreshed by its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Span {
    Transaction,
    Dialog,
}

/// The keys are already uniform random bits: hashing them again would only cost time.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
}

type Shard = HashMap<DialogKey, Dialog, BuildHasherDefault<PassThrough>>;

/// Shards, chosen by the key's high bits (the map hashes the low ones), so expiry
/// can sweep a large table a few shards at a time instead of stalling on all of it
/// (a million dialogs: ~4k per shard), and a growing shard rehashes only its part.
pub const SHARDS: usize = 256;

/// Free room a shard should keep for new dialogs: below it, [`DialogTable::grow_step`]
/// grows the shard (twice its entries) off the datagram path. A quarter of its entries
/// lasts while the other shards grow: each shard sees 1/256 of the new calls.
fn room_wanted(len: usize) -> usize {
    len / 4 + 16
}

/// A shard is grown ahead until its room reaches this (power-of-two sizing may give
/// it up to about twice as much): an even share of `max` plus a margin that an even
/// spread of keyed hashes does not exceed (a quarter, and 64, over the share: more
/// than ten standard deviations at any size). Past it an insert grows the shard.
fn ceiling(max: usize) -> usize {
    let share = max.div_ceil(SHARDS);
    share + share / 4 + 64
}

fn short_of_room(s: &Shard, ceiling: usize) -> bool {
    s.capacity() < ceiling && s.capacity() - s.len() < room_wanted(s.len())
}

pub struct DialogTable {
    shards: Box<[Shard; SHARDS]>,
    /// The SipHash key: random per process, or shared with the sync peer so both
    /// compute the same dialog keys.
    keys: [u64; 2],
    max: usize,
    /// Entries over all shards (kept: summing 256 shards per new dialog would cost).
    len: usize,
    /// [`ceiling`] of `max`.
    ceiling: usize,
    growth: Growth,
    /// Inserts that found their shard without free room, so the insert itself
    /// rehashed it (a stall) or grew it (also an allocation) on the datagram path.
    full_inserts: u64,
}

fn shard_of(key: DialogKey) -> usize {
    (key >> 64) as usize % SHARDS
}

impl DialogTable {
    pub fn new(max: usize, shared: Option<[u64; 2]>) -> Self {
        DialogTable {
            shards: Box::new(std::array::from_fn(|_| {
                HashMap::with_capacity_and_hasher(max.min(1 << 16) / SHARDS, Default::default())
            })),
            keys: shared.unwrap_or_else(|| {
                let r = RandomState::new();
                [r.hash_one(0u8), r.hash_one(1u8)]
            }),
            max,
            len: 0,
            ceiling: ceiling(max),
            growth: Growth::default(),
            full_inserts: 0,
        }
    }

    /// Hashes a Call-ID, ignoring whitespace (a folded Call-ID line is the same ID).
    pub fn key(&self, call_id: &[u8]) -> DialogKey {
        let mut h = SipHasher13::new_with_keys(self.keys[0], self.keys[1]);
        // Nearly every Call-ID is one piece (no byte up to SP: no fold, no other
        // whitespace), checked without an early exit so that it vectorises; hashing it
        // whole gives the key its pieces give.
        if !call_id.iter().fold(false, |any, &b| any | (b <= b' ')) {
            h.write(call_id);
        } else {
            for piece in call_id
                .split(|b| b.is_ascii_whitespace())
                .filter(|p| !p.is_empty())
            {
                h.write(piece);
            }
        }
        h.finish128().as_u128()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&DialogKey, &Dialog)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// The entries of shard `i` (`i < SHARDS`).
    pub fn iter_shard(&self, i: usize) -> impl Iterator<Item = (&DialogKey, &Dialog)> {
        self.shards[i].iter()
    }
}

impl DialogTable {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Looks `key` up and starts loading its entry's lines, without waiting for
    /// them: an entry of 48 bytes may straddle two lines, and the lookup itself
    /// loads only the key's.
    #[inline]
    pub fn warm(&self, key: DialogKey) {
        if let Some(d) = self.shards[shard_of(key)].get(&key) {
            prefetch(d);
        }
    }

    pub fn get_mut(&mut self, key: DialogKey) -> Option<&mut Dialog> {
        self.shards[shard_of(key)].get_mut(&key)
    }

    /// Pins `key` as `d` (a new entry, or replacing one: its flow stays); refuses a
    /// new entry when full. Returns the span it had before, if it existed.
    pub fn pin(&mut self, key: DialogKey, d: Dialog) -> Result<Option<Span>, ()> {
        let shard = &mut self.shards[shard_of(key)];
        if let Some(old) = shard.get_mut(&key) {
            let before = old.span;
            // The flow and its quota count stay. Not REFRESHED: only the sync peer's
            // items replace an entry, and the peer just stated it (sending it back
            // would echo the peer's own state).
            let marks = d.marks.only(Marks::OPENS) | old.marks.only(Marks::AWAITING | Marks::OPENS);
            *old = Dialog {
                flow: old.flow,
                flow_gen: old.flow_gen,
                marks,
                ..d
            };
            return Ok(Some(before));
        }
        if self.len >= self.max {
            return Err(());
        }
        if shard.len() == shard.capacity() {
            self.full_inserts += 1;
        }
        shard.insert(key, d);
        self.len += 1;
        self.growth.note(short_of_room(shard, self.ceiling));
        Ok(None)
    }

    /// Whether a shard may be short of room (see [`DialogTable::grow_step`]).
    pub fn short_of_room(&self) -> bool {
        self.growth.pending()
    }

    /// Inserts so far that met a shard without free room and rehashed or grew it
    /// inside the insert (on the datagram path); `grow_step` keeps this at 0 unless
    /// new calls come faster than it grows or a shard holds more than its ceiling.
    pub fn full_inserts(&self) -> u64 {
        self.full_inserts
    }

    /// Grows shards short of room (see [`room_wanted`]) to twice their entries, from
    /// where the last step stopped, taking the entries it re-places from `budget`
    /// until that is used up (one shard at least); returns how many grew. Called
    /// from the timer, so an insert on the datagram path finds room and never
    /// allocates.
    pub fn grow_step(&mut self, budget: &mut usize) -> usize {
        let (shards, ceiling) = (&mut self.shards, self.ceiling);
        self.growth.step(SHARDS, budget, |i, budget| {
            let shard = &mut shards[i];
            if !short_of_room(shard, ceiling) {
                return false;
            }
            let len = shard.len();
            shard.reserve(len.max(room_wanted(len)).min(ceiling - len));
            *budget = budget.saturating_sub(len.max(1));
            true
        })
    }

    /// Hands live entries of shard `i` marked [`Marks::REFRESHED`] to `resend`, at most
    /// `budget` of them, clearing their mark. Whether the shard is done (else the rest
    /// keep their mark for the next call).
    pub fn take_refreshed(
        &mut self,
        i: usize,
        now: Instant,
        budget: usize,
        mut resend: impl FnMut(DialogKey, &Dialog),
    ) -> bool {
        let mut left = budget;
        for (&key, d) in self.shards[i].iter_mut() {
            if d.marks.has(Marks::REFRESHED) && d.expires > now {
                if left == 0 {
                    return false;
                }
                left -= 1;
                d.marks.set(Marks::REFRESHED, false);
                resend(key, d);
            }
        }
        true
    }

    /// Drops entries that expired, each reported to `gone`; returns how many (the
    /// router expires a few shards per sweep instead).
    #[cfg(test)]
    pub fn expire(&mut self, now: Instant, gone: &mut impl FnMut(&Dialog)) -> usize {
        (0..SHARDS).map(|i| self.expire_shard(i, now, gone)).sum()
    }

    /// `expire` for one shard (`i < SHARDS`).
    pub fn expire_shard(
        &mut self,
        i: usize,
        now: Instant,
        gone: &mut impl FnMut(&Dialog),
    ) -> usize {
        let shard = &mut self.shards[i];
        let before = shard.len();
        shard.retain(|_, d| {
            let keep = d.expires > now;
            if !keep {
                gone(d);
            }
            keep
        });
        let gone = before - shard.len();
        self.len -= gone;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shared_keys_agree_across_tables() {
        let a = DialogTable::new(10, Some([1, 2]));
        let b = DialogTable::new(10, Some([1, 2]));
        let c = DialogTable::new(10, Some([1, 3]));
        assert_eq!(a.key(b"x@y"), b.key(b"x@y"));
        assert_ne!(a.key(b"x@y"), c.key(b"x@y"));
    }

    #[test]
    fn pin_refresh_expire_and_cap() {
        let now = Instant::now();
        let d = |b: u16, secs: u64, span: Span, port: u16| Dialog {
            backend: BackendId::new(b),
            expires: now + Duration::from_secs(secs),
            span,
            opener: Side::Client,
            flow: RelayPort::first(port),
            flow_gen: 1,
            marks: Marks::OPENS,
        };
        let mut t = DialogTable::new(2, None);
        let a = t.key(b"abc@host");
        assert_eq!(a, t.key(b"abc@host"));
        assert_eq!(a, t.key(b"abc@\r\n host"), "folding is ignored");
        // One piece or many, the same bytes hash the same; a control byte is not
        // whitespace.
        assert_eq!(t.key(b"a b\tc"), t.key(b"abc"));
        assert_ne!(t.key(b"a\x01bc"), t.key(b"abc"));
        assert_eq!(t.key(b" \t "), t.key(b""));
        assert_ne!(a, t.key(b"abd@host"));
        assert_eq!(t.pin(a, d(1, 1, Span::Transaction, 7)), Ok(None));
        t.pin(t.key(b"x"), d(0, 5, Span::Transaction, 8)).unwrap();
        assert!(
            t.pin(t.key(b"y"), d(0, 0, Span::Transaction, 9)).is_err(),
            "full table refuses"
        );
        assert_eq!(
            t.pin(a, d(0, 10, Span::Dialog, 10)),
            Ok(Some(Span::Transaction))
        );
        let got = *t.get_mut(a).unwrap();
        assert_eq!(got.backend, BackendId::new(0));
        assert_eq!(got.flow, RelayPort::first(7), "a dialog keeps its flow");
        let mut gone = Vec::new();
        assert_eq!(
            t.expire(now + Duration::from_secs(6), &mut |d| gone.push(d.flow)),
            1
        );
        assert_eq!(gone, [RelayPort::first(8)]);
        assert_eq!(t.len(), 1);
        // The expired entry's room is free again.
        assert_eq!(t.pin(t.key(b"y"), d(0, 0, Span::Transaction, 9)), Ok(None));
        assert_eq!(t.len(), 2);
    }

    /// A peer's item replacing an entry: AWAITING (the quota count) only from the old
    /// entry, and not REFRESHED (the peer just stated it: sending it back would echo).
    #[test]
    fn a_replaced_entry_keeps_its_quota_mark_and_drops_its_refresh_mark() {
        let mut t = DialogTable::new(10, None);
        let (a, b) = (t.key(b"a"), t.key(b"b"));
        let with = |m: Marks| Dialog {
            marks: m,
            ..entry(1)
        };
        t.pin(a, with(Marks::OPENS | Marks::AWAITING | Marks::REFRESHED))
            .unwrap();
        t.pin(a, with(Marks::OPENS)).unwrap();
        assert_eq!(t.get_mut(a).unwrap().marks, Marks::OPENS | Marks::AWAITING);
        t.pin(b, with(Marks::NONE)).unwrap();
        t.pin(b, with(Marks::OPENS | Marks::AWAITING | Marks::REFRESHED))
            .unwrap();
        assert_eq!(t.get_mut(b).unwrap().marks, Marks::OPENS);
    }

    /// At most `budget` refreshed entries per call; the rest keep their mark.
    #[test]
    fn take_refreshed_stops_at_its_budget() {
        let now = Instant::now();
        let mut t = DialogTable::new(100_000, None);
        for i in 0..5000u64 {
            let d = Dialog {
                expires: now + std::time::Duration::from_secs(60),
                marks: Marks::OPENS | Marks::REFRESHED,
                ..entry(i)
            };
            t.pin(t.key(format!("{i}").as_bytes()), d).unwrap();
        }
        let shard = (0..SHARDS)
            .max_by_key(|&i| t.iter_shard(i).count())
            .unwrap();
        let n = t.iter_shard(shard).count();
        assert!(n >= 3, "{n}");
        let mut got = 0;
        assert!(!t.take_refreshed(shard, now, 2, |_, _| got += 1));
        assert_eq!(got, 2);
        assert!(t.take_refreshed(shard, now, n, |_, _| got += 1));
        assert_eq!(got, n, "each once");
        assert!(
            t.take_refreshed(shard, now, 0, |_, _| got += 1),
            "none left"
        );
    }

    fn entry(n: u64) -> Dialog {
        Dialog {
            backend: BackendId::new(0),
            expires: Instant::now(),
            span: Span::Dialog,
            opener: Side::Client,
            flow: RelayPort::first(n as u16),
            flow_gen: 1,
            marks: Marks::OPENS,
        }
    }

    /// Fills a table of `max` with `n` dialogs, a growth step (of `budget`) after
    /// every `every` inserts while a shard is short of room, as the timer would.
    fn fill(max: usize, n: u64, every: u64, budget: usize) -> DialogTable {
        let mut t = DialogTable::new(max, Some([3, 4]));
        for i in 0..n {
            t.pin(t.key(format!("{i}@t").as_bytes()), entry(i)).unwrap();
            if i % every == 0 && t.short_of_room() {
                t.grow_step(&mut budget.clone());
            }
        }
        t
    }

    #[test]
    fn shards_grow_ahead_so_inserts_find_room() {
        // 200k dialogs, past the initial room (~115k), a step after every 100
        // inserts: no insert meets a full shard.
        let t = fill(1_000_000, 200_000, 100, 4096);
        assert_eq!(t.len(), 200_000);
        assert_eq!(t.full_inserts(), 0);
        for s in t.shards.iter() {
            assert!(s.capacity() - s.len() >= room_wanted(s.len()) / 2);
        }
        // Without the steps the same fill grows shards inside inserts (the counter
        // sees it).
        let t = fill(1_000_000, 200_000, u64::MAX, 4096);
        assert!(
            t.full_inserts() >= SHARDS as u64 / 2,
            "{}",
            t.full_inserts()
        );
    }

    #[test]
    fn growth_ahead_stops_at_the_share_of_max() {
        // A share of 661 per shard: the ceiling, 890, is just under a room of 896
        // (1024 slots). Filled to max, the shards with the most entries (over 704,
        // ~2 standard deviations above the share) would be short of room in 896 and
        // grow to 1792; at the ceiling they do not.
        let max = 661 * SHARDS;
        assert_eq!(ceiling(max), 890);
        let mut t = fill(max, max as u64, 100, 4096);
        assert_eq!(t.full_inserts(), 0);
        assert!(t.shards.iter().any(|s| s.len() > 704), "none past 704");
        let top = t.shards.iter().map(|s| s.capacity()).max().unwrap();
        assert_eq!(top, 896);
        t.grow_step(&mut { usize::MAX });
        assert!(!t.short_of_room(), "no shard short at the ceiling");
        assert_eq!(t.grow_step(&mut { usize::MAX }), 0);
        // A step stops after its budget (one shard at least) and the rest waits.
        let mut t = fill(1_000_000, 100_000, u64::MAX, 1);
        assert!(t.short_of_room());
        let mut budget = 1;
        assert_eq!(t.grow_step(&mut budget), 1);
        assert_eq!(budget, 0);
        assert!(t.short_of_room());
        assert_eq!(t.grow_step(&mut budget), 1, "one shard at least");
        while t.short_of_room() {
            t.grow_step(&mut 10_000);
        }
        assert!(t.shards.iter().all(|s| !short_of_room(s, t.ceiling)));
    }
}
