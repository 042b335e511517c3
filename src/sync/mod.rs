//! State sync between the pair: the master streams flow and dialog changes so the
//! backup owns the same relay ports (pre-bound) when the address moves.
//!
//! `message`: encoding, authentication and replay protection (pure). `link`: the
//! UDP peer link inside the dataplane thread.

pub mod link;
pub mod message;

pub use message::{Body, Envelope, Item, Key, SyncDrop};
