//! State sync between the pair: the master streams flow and dialog changes so the
//! backup owns the same relay ports (pre-bound) when the address moves.
//!
//! `message`: encoding and authentication (pure). `link`: the peer link's state
//! machine (pure, `handle_*`/`poll_*`); the dataplane's sync task drives it.

pub mod link;
pub mod message;
#[cfg(test)]
mod sim;

pub use message::{Body, Envelope, Item, Key, SyncDrop};
