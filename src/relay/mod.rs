//! The relay's pure core: flows, dialogs, the backend set, rendezvous hashing, the
//! relay endpoint space, per-source rate limits and the routing decision. No
//! sockets, no tokio, no clock: time is an argument. `crate::dataplane` drives it.

pub mod backends;
mod dialogs;
pub mod flows;
mod hrw;
pub mod item;
pub mod port;
mod ratelimit;
pub mod router;
pub mod stats;

pub use backends::{AdminState, BackendId, BackendSet, Change};
pub use dialogs::{Side, Span};
pub use item::Item;
pub use port::{RelayPort, RelaySpace};
pub use router::{BackendAction, ClientAction, Router, RouterEvent};
pub use stats::{Counters, Direction, DropReason, PerDirection};
