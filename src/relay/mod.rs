//! The relay: flows, dialogs, rendezvous hashing and the routing decision (pure code),
//! plus the tokio shell that drives it with sockets (`dataplane`).

pub mod backends;
mod control;
pub mod dataplane;
mod dialogs;
pub mod epoll;
pub mod errqueue;
pub mod flows;
mod hrw;
pub mod mmsg;
pub mod port;
mod ratelimit;
pub mod router;
pub mod stats;
mod sync_task;

pub use backends::{AdminState, BackendSet, Change};
pub use control::{Control, FlowInfo};
pub use router::{BackendAction, BackendId, ClientAction, Router, RouterEvent};
pub use stats::{Counters, Direction, DropReason};
