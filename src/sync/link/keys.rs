//! Which key seals and which keys open: rotation without losing the peer.
//!
//! Operators rotate by writing the new key on both hosts and reloading each in turn,
//! so for a while one side holds the new key and the other only the old one. A
//! rotated side therefore:
//!
//! - **opens** with the new key and the previous one, the previous one until the peer
//!   has been seen sealing with the new key (plus [`LINGER`] for datagrams already
//!   under way), and never longer than the grace given (`[sync] previous_key_grace`);
//! - **seals** with the previous key until the peer announces the new one (every
//!   message carries the id of its sender's newest key), then with the new one. So
//!   the side reloaded first keeps speaking the old key its peer still has, the side
//!   reloaded second switches at once (it has heard the announcement), and the first
//!   follows on its next message. When the grace runs out without that, the previous
//!   key is dropped anyway: an unrotated peer is refused from then on (`bad_mac`).
//!
//! Sequence numbers and epochs do not change with the key: nothing is resent, lost or
//! applied twice because of a rotation.

use std::time::{Duration, Instant};

use crate::sync::SyncDrop;
use crate::sync::message::{Envelope, Key, open};

/// After the peer sealed with the new key, its datagrams sealed with the previous one
/// just before may still be under way (reordered): they are accepted this long.
pub const LINGER: Duration = Duration::from_secs(3);

#[derive(Debug)]
struct Previous {
    key: Key,
    /// Not accepted from then on.
    until: Instant,
    /// The peer announced the current key: seal with it.
    peer_has_current: bool,
    /// The peer sealed with the current key.
    peer_uses_current: bool,
}

/// What a change of the key state means for the shell (reported once each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNews {
    /// We seal with the newest key now: the peer has it.
    Sealing,
    /// The previous key is no longer accepted; `peer_switched`: the peer sealed with
    /// the new one before (false: the grace ran out).
    PreviousRetired { peer_switched: bool },
}

#[derive(Debug)]
pub struct Keys {
    current: Key,
    current_id: u64,
    previous: Option<Previous>,
    /// The newest key id the peer announced (0: none yet).
    peer_id: u64,
    news: Option<KeyNews>,
    retired: Option<KeyNews>,
}

impl Keys {
    pub fn new(key: Key) -> Keys {
        Keys {
            current_id: key.id(),
            current: key,
            previous: None,
            peer_id: 0,
            news: None,
            retired: None,
        }
    }

    /// The id of our newest key, announced in every message.
    pub fn current_id(&self) -> u64 {
        self.current_id
    }

    /// A key rotation is under way (two keys open).
    pub fn rotating(&self) -> bool {
        self.previous.is_some()
    }

    /// The key messages are sealed with now.
    pub fn sealing(&self) -> &Key {
        match &self.previous {
            Some(p) if !p.peer_has_current => &p.key,
            _ => &self.current,
        }
    }

    /// A new key (a reload). The one we seal with now stays open for up to `grace`.
    /// False if `key` is the current key (nothing changes).
    pub fn rotate(&mut self, key: Key, grace: Duration, now: Instant) -> bool {
        if key == self.current {
            return false;
        }
        let id = key.id();
        let sealing = self.sealing().clone();
        // A key still open from an earlier rotation keeps its end: a second rotation
        // before the peer took the first must not extend the oldest key's life.
        let until = match &self.previous {
            Some(p) if p.key == sealing => p.until.min(now + grace),
            _ => now + grace,
        };
        // Back to the key the peer demonstrably has: no second key to open with.
        self.previous = (sealing != key).then_some(Previous {
            key: sealing,
            until,
            peer_has_current: self.peer_id == id,
            peer_uses_current: false,
        });
        if self.previous.as_ref().is_some_and(|p| p.peer_has_current) {
            self.news = Some(KeyNews::Sealing);
        }
        self.current = key;
        self.current_id = id;
        true
    }

    /// Checks the size and the tag (current key first), then decodes. `.1`: opened
    /// with the current key.
    pub fn open(&mut self, now: Instant, data: &[u8]) -> Result<(Envelope, bool), SyncDrop> {
        self.expire(now);
        match open(&self.current, data) {
            Err(SyncDrop::BadMac) => match &self.previous {
                Some(p) => open(&p.key, data).map(|e| (e, false)),
                None => Err(SyncDrop::BadMac),
            },
            r => r.map(|e| (e, true)),
        }
    }

    /// An authentic, fresh message from the peer: `current` as [`Keys::open`] said,
    /// `key_id` as it announced. Call only for messages the epoch check took (not for
    /// replays or unadmitted epochs).
    pub fn heard(&mut self, now: Instant, current: bool, key_id: u64) {
        if key_id != 0 {
            self.peer_id = key_id;
        }
        let Some(p) = &mut self.previous else {
            return;
        };
        if (current || key_id == self.current_id) && !p.peer_has_current {
            p.peer_has_current = true;
            self.news = Some(KeyNews::Sealing);
        }
        if current && !p.peer_uses_current {
            p.peer_uses_current = true;
            p.until = p.until.min(now + LINGER);
        }
    }

    /// A message from an epoch not admitted yet opened with the current key, while
    /// the admitted peer is silent: its sender holds that key (nothing else about it
    /// is trusted yet), so we seal with it. The previous key stays open until the peer
    /// is admitted and uses the new one.
    pub fn peer_holds_current(&mut self) {
        if let Some(p) = &mut self.previous
            && !p.peer_has_current
        {
            p.peer_has_current = true;
            self.news = Some(KeyNews::Sealing);
        }
    }

    /// Drops the previous key once its time is up.
    pub fn expire(&mut self, now: Instant) {
        if let Some(p) = &self.previous
            && now >= p.until
        {
            self.retired = Some(KeyNews::PreviousRetired {
                peer_switched: p.peer_uses_current,
            });
            self.previous = None;
        }
    }

    /// When [`Keys::expire`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.previous.as_ref().map(|p| p.until)
    }

    /// What changed since the last call, in order.
    pub fn take_news(&mut self) -> Option<KeyNews> {
        self.news.take().or_else(|| self.retired.take())
    }
}
