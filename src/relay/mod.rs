//! The relay's pure core: flows, dialogs, the backend set, rendezvous hashing, the
//! relay endpoint space, per-source rate limits, access lists and bans, the top
//! sources and the routing decision. No
//! sockets, no tokio, no clock: time is an argument. `crate::dataplane` drives it.

pub mod access;
pub mod backends;
mod dialogs;
pub mod flows;
mod growth;
mod hrw;
pub mod item;
mod lingering;
mod open_table;
mod per_source;
pub mod port;
pub mod prefetch;
mod prefix_map;
pub mod ratelimit;
pub mod router;
pub mod source_limits;
pub mod stats;
pub mod top;

pub use backends::{AdminState, BackendId, BackendSet, Change, PeerId};
pub use dialogs::{Side, Span};
pub use item::Item;
pub use port::{RelayPort, RelaySpace};
pub use router::{BackendAction, ClientAction, Prepared, Router, RouterEvent};
pub use stats::{Counters, Direction, DropReason, PerDirection, Suppressed};
