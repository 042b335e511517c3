//! Capture: HEPv3 export of every relayed datagram on both legs.
//!
//! - [`hep`]: the HEPv3 packet (pure: view, parse, emit).
//! - [`select`]: which datagrams are exported (pure: leg, sampling by Call-ID, address filters).
//! - [`sender`]: the shell: a fixed ring of preallocated buffers, a bounded queue and a sender
//!   thread with a connected UDP socket; the dataplane only encodes and hands over, never
//!   blocks, and counts a drop when no buffer is free.

pub mod hep;
pub mod select;
pub mod sender;

pub use select::Selector;
pub use sender::{HepDrop, HepExporter, HepStats};
