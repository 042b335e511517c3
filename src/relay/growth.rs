//! Growing a sharded table ahead, from the timer, so that an insert on the datagram
//! path finds room: whether a shard may be short of room, and one step's walk over
//! the shards. The tables say what "short" means and how a shard grows.

/// A sharded table's growth bookkeeping.
#[derive(Debug, Default, Clone, Copy)]
pub struct Growth {
    /// Some shard may be short of room: [`Growth::step`] has work.
    short: bool,
    /// Where the next step looks first.
    cursor: usize,
}

impl Growth {
    /// An insert left its shard short of room (when `short`).
    #[inline]
    pub fn note(&mut self, short: bool) {
        self.short |= short;
    }

    pub fn pending(&self) -> bool {
        self.short
    }

    /// One step over `shards` shards from where the last stopped: `grow(i, budget)`
    /// grows shard `i` if it is short of room, takes what that cost from `budget`,
    /// and says whether it grew. Stops once `budget` is used up (after one shard at
    /// least); a step that looked at every shard leaves nothing pending (nothing was
    /// inserted meanwhile). Returns how many shards grew.
    pub fn step(
        &mut self,
        shards: usize,
        budget: &mut usize,
        mut grow: impl FnMut(usize, &mut usize) -> bool,
    ) -> usize {
        let mut grown = 0;
        for k in 0..shards {
            if k > 0 && *budget == 0 {
                return grown;
            }
            let i = self.cursor;
            self.cursor = (i + 1) % shards;
            grown += usize::from(grow(i, budget));
        }
        self.short = false;
        grown
    }
}
