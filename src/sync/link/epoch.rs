//! Which incarnation of the peer we listen to, and how a new one is admitted.
//!
//! Epochs are random per start, so their values have no order: a peer whose clock
//! stepped back is not locked out, and an old epoch cannot be told from a new one by
//! its value either. A datagram from an epoch other than the admitted one is a
//! *candidate*: a restarted peer, or a recording of a dead run. Only a hello from the
//! candidate that echoes our outstanding challenge admits it. Challenges come from a
//! sequence seeded by our own random epoch and are never reused, so no recorded
//! datagram carries one we have not sent yet; every admission ends the challenge.
//! Epochs that were admitted and then replaced are dead for good (a new start draws
//! a new random one): the last [`RETIRED`] are refused outright as replays.

use std::collections::VecDeque;

use crate::sync::SyncDrop;

/// Retired peer epochs remembered. Older ones go through the challenge again, which
/// a recording cannot answer; this only saves the challenge traffic.
pub const RETIRED: usize = 16;

/// Datagrams of the admitted run that may arrive ahead of one still missing and wait
/// for it (see [`Verdict::Early`]); one further ahead declares the gap at once.
pub const REORDER_WINDOW: u64 = 32;

/// What a fresh, authentic envelope means for the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Next in sequence of the admitted epoch.
    InOrder,
    /// Admitted epoch, but messages were lost in between.
    Gap,
    /// Admitted epoch, ahead of a message still missing, within [`REORDER_WINDOW`]:
    /// the caller holds it until the missing one comes ([`Epochs::next_held`]) or
    /// is given up ([`Epochs::skip_to_held`]).
    Early,
    /// A hello from a new epoch that answered our challenge: the peer restarted.
    Admitted,
    /// A hello from an epoch not admitted: only its challenge is taken.
    Candidate,
}

/// A hello's handshake fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub challenge: u64,
    pub echo: u64,
}

#[derive(Debug, Clone)]
pub struct Epochs {
    /// The admitted peer epoch and the highest sequence number taken in order.
    admitted: Option<(u64, u64)>,
    /// Bit `i`: sequence number `last + 1 + i` of the admitted epoch came early and is
    /// held by the caller. Bit 0 is clear between calls: `last + 1` is missing.
    early: u64,
    retired: VecDeque<u64>,
    /// Our outstanding challenge.
    challenge: Option<u64>,
    nonce_state: u64,
    /// The peer's latest challenge, echoed in every hello of ours.
    echo: u64,
    /// A hello should go out soon: we issued a challenge or got a new one.
    prompt: bool,
}

impl Epochs {
    /// `seed`: our own random epoch. A challenge is outstanding from the start, so
    /// the first exchange of hellos admits both sides.
    pub fn new(seed: u64) -> Epochs {
        let mut e = Epochs {
            admitted: None,
            early: 0,
            retired: VecDeque::with_capacity(RETIRED),
            challenge: None,
            nonce_state: seed,
            echo: 0,
            prompt: false,
        };
        e.challenge = Some(e.next_nonce());
        e
    }

    fn next_nonce(&mut self) -> u64 {
        // splitmix64: a bijection of the state, so values do not repeat within a run,
        // and the random seed makes them differ between runs.
        loop {
            self.nonce_state = self.nonce_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.nonce_state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    }

    /// Classifies an authentic envelope; `hello` carries its handshake fields if it
    /// is a hello. Errors are drops. (Tests: the link dates its hellos.)
    #[cfg(test)]
    pub fn check(
        &mut self,
        epoch: u64,
        seq: u64,
        hello: Option<Handshake>,
    ) -> Result<Verdict, SyncDrop> {
        self.check_dated(epoch, seq, hello, false)
    }

    /// Classifies an authentic envelope; `hello` carries its handshake fields if it
    /// is a hello. Errors are drops. `stale`: the hello's sender dated it so far from
    /// our clock that it looks recorded (the caller decides). From an epoch not
    /// admitted and not answering our challenge (only a live peer can), its challenge
    /// is not taken, since it would replace the live peer's in our hellos; ours goes
    /// out, for a live peer whose clock is far from ours to answer.
    pub fn check_dated(
        &mut self,
        epoch: u64,
        seq: u64,
        hello: Option<Handshake>,
        stale: bool,
    ) -> Result<Verdict, SyncDrop> {
        if let Some((e, last)) = &mut self.admitted
            && *e == epoch
        {
            if seq <= *last {
                return Err(SyncDrop::Replay);
            }
            // A hello's challenge counts only from the newest datagram seen: one that
            // was overtaken must not put back the older challenge.
            let newest = if self.early == 0 {
                *last
            } else {
                *last + u64::from(64 - self.early.leading_zeros())
            };
            let newest_yet = seq > newest;
            let ahead = seq - *last - 1;
            let verdict = if ahead == 0 {
                *last = seq;
                // Bit 0 is now the next one: held or not, `next_held` says.
                self.early >>= 1;
                Verdict::InOrder
            } else if ahead < REORDER_WINDOW {
                let bit = 1u64 << ahead;
                if self.early & bit != 0 {
                    return Err(SyncDrop::Replay);
                }
                self.early |= bit;
                Verdict::Early
            } else {
                // Too far ahead: the held ones are taken as they are (the caller
                // delivers them first), the gap is declared.
                *last = seq;
                self.early = 0;
                Verdict::Gap
            };
            if let Some(h) = hello
                && newest_yet
            {
                self.take_challenge(h.challenge);
            }
            return Ok(verdict);
        }
        if self.retired.contains(&epoch) {
            return Err(SyncDrop::Replay);
        }
        let Some(h) = hello else {
            self.challenge_candidate();
            return Err(SyncDrop::UnverifiedEpoch);
        };
        let answers = self.challenge.is_some_and(|c| c == h.echo);
        if stale && !answers {
            self.challenge_candidate();
            return Err(SyncDrop::StaleHello);
        }
        self.take_challenge(h.challenge);
        if answers {
            self.early = 0;
            if let Some((old, _)) = self.admitted.replace((epoch, seq)) {
                if self.retired.len() == RETIRED {
                    self.retired.pop_front();
                }
                self.retired.push_back(old);
            }
            self.challenge = None;
            // Tell it at once that it is admitted (and whether we want its table).
            self.prompt = true;
            return Ok(Verdict::Admitted);
        }
        self.challenge_candidate();
        Ok(Verdict::Candidate)
    }

    fn challenge_candidate(&mut self) {
        if self.challenge.is_none() {
            self.challenge = Some(self.next_nonce());
            self.prompt = true;
        }
    }

    fn take_challenge(&mut self, c: u64) {
        if c != 0 && c != self.echo {
            self.echo = c;
            self.prompt = true;
        }
    }

    /// After an in-order message: whether the next one was held early; if so it is
    /// taken now (in order), and the caller delivers it.
    pub fn next_held(&mut self) -> bool {
        let Some((_, last)) = &mut self.admitted else {
            return false;
        };
        if self.early & 1 == 0 {
            return false;
        }
        *last += 1;
        self.early >>= 1;
        true
    }

    /// The missing message is given up: the oldest held one is taken (a gap), its
    /// sequence number returned. `None` if none is held.
    pub fn skip_to_held(&mut self) -> Option<u64> {
        let (_, last) = self.admitted.as_mut()?;
        if self.early == 0 {
            return None;
        }
        let i = self.early.trailing_zeros();
        *last += u64::from(i) + 1;
        self.early = self.early.checked_shr(i + 1).unwrap_or(0);
        Some(*last)
    }

    /// Whether `epoch` is the admitted peer run.
    pub fn is_admitted(&self, epoch: u64) -> bool {
        self.admitted.is_some_and(|(e, _)| e == epoch)
    }

    /// Whether a hello should go out before its regular time (cleared by the call).
    pub fn take_prompt(&mut self) -> bool {
        std::mem::take(&mut self.prompt)
    }

    /// The handshake fields for our next hello.
    pub fn hello(&self) -> Handshake {
        Handshake {
            challenge: self.challenge.unwrap_or(0),
            echo: self.echo,
        }
    }

    /// The admitted peer epoch and the last sequence number taken from it (0, 0
    /// before any).
    pub fn acked(&self) -> (u64, u64) {
        self.admitted.unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(challenge: u64, echo: u64) -> Option<Handshake> {
        Some(Handshake { challenge, echo })
    }

    #[test]
    fn admission_needs_the_current_challenge_and_retired_epochs_stay_out() {
        let mut e = Epochs::new(42);
        let c1 = e.hello().challenge;
        assert_ne!(c1, 0, "a challenge is out from the start");
        // Items from a stranger epoch and a hello with a wrong echo do not admit it.
        assert_eq!(e.check(7, 1, None), Err(SyncDrop::UnverifiedEpoch));
        assert_eq!(e.check(7, 2, hello(99, 0)), Ok(Verdict::Candidate));
        assert!(e.take_prompt(), "the peer's challenge wants an answer");
        assert_eq!(e.hello().echo, 99);
        assert_eq!(e.check(7, 3, hello(99, c1)), Ok(Verdict::Admitted));
        assert_eq!(e.hello().challenge, 0, "answered");
        assert_eq!(e.check(7, 4, None), Ok(Verdict::InOrder));
        assert_eq!(e.check(7, 4, None), Err(SyncDrop::Replay));
        // 6 before 5: held early; once 5 comes, 6 is next. 5's challenge is older
        // than 6's: 6's stays the one echoed.
        assert_eq!(e.check(7, 6, hello(66, 0)), Ok(Verdict::Early));
        assert_eq!(e.hello().echo, 66);
        assert_eq!(e.check(7, 6, None), Err(SyncDrop::Replay), "held already");
        assert_eq!(e.check(7, 5, hello(55, 0)), Ok(Verdict::InOrder));
        assert_eq!(
            e.hello().echo,
            66,
            "an overtaken hello's challenge is not taken"
        );
        assert!(e.next_held());
        assert!(!e.next_held());
        assert_eq!(e.acked(), (7, 6));
        // 8 and 10 early, 7 never comes: given up, 8 is taken, then 9 and 10 wait.
        assert_eq!(e.check(7, 8, None), Ok(Verdict::Early));
        assert_eq!(e.check(7, 10, None), Ok(Verdict::Early));
        assert_eq!(e.skip_to_held(), Some(8));
        assert!(!e.next_held(), "9 is missing");
        assert_eq!(e.check(7, 9, None), Ok(Verdict::InOrder));
        assert!(e.next_held());
        assert_eq!((e.acked(), e.skip_to_held()), ((7, 10), None));
        // The last place in the window waits; one further is a gap at once, and
        // what was held counts as taken.
        assert_eq!(e.check(7, 10 + REORDER_WINDOW, None), Ok(Verdict::Early));
        assert_eq!(e.check(7, 11 + REORDER_WINDOW, None), Ok(Verdict::Gap));
        assert_eq!(e.skip_to_held(), None);
        assert_eq!(e.check(7, 10 + REORDER_WINDOW, None), Err(SyncDrop::Replay));
        // The peer restarts with a smaller epoch (no order): a new challenge, which a
        // recording of the old run (echoing c1) cannot answer.
        assert_eq!(e.check(3, 1, None), Err(SyncDrop::UnverifiedEpoch));
        let c2 = e.hello().challenge;
        assert!(c2 != 0 && c2 != c1);
        assert!(e.take_prompt());
        assert_eq!(e.check(5, 9, hello(0, c1)), Ok(Verdict::Candidate));
        assert_eq!(e.check(3, 2, hello(0, c2)), Ok(Verdict::Admitted));
        assert!(e.take_prompt(), "tell the peer at once");
        assert_eq!(e.acked(), (3, 2));
        // Anything from epoch 7 now is a replay, the challenge is not reissued.
        assert_eq!(e.check(7, 100, hello(0, c2)), Err(SyncDrop::Replay));
        assert_eq!(e.hello().challenge, 0);
        assert!(!e.take_prompt());
    }

    #[test]
    fn retired_epochs_are_bounded_and_challenges_differ_per_seed() {
        let mut e = Epochs::new(1);
        for epoch in 10..(10 + RETIRED as u64 + 5) {
            let _ = e.check(epoch, 1, None);
            let c = e.hello().challenge;
            assert_eq!(e.check(epoch, 2, hello(0, c)), Ok(Verdict::Admitted));
        }
        assert_eq!(e.retired.len(), RETIRED);
        assert_ne!(Epochs::new(1).hello(), Epochs::new(2).hello());
    }
}
