//! Capture: HEPv3 export of every relayed datagram on both legs.
//!
//! - [`hep`]: the HEPv3 packet (pure: view, parse, emit).
//! - [`select`]: which datagrams are exported (pure: leg, sampling by Call-ID, address filters).
//! - [`sender`]: the shell: a fixed ring of preallocated buffers, a bounded queue and a sender
//!   thread; the dataplane only encodes and hands over, never blocks, and counts a drop
//!   when no buffer is free. The thread sends over UDP ([`datagram`]: a connected socket)
//!   or TCP ([`stream`]: batched writes on one connection).
//! - [`live`]: `sipfront ctl capture`: a few filtered, bounded live captures streamed by
//!   the admin endpoint (frames, pcap and text output).

mod datagram;
pub mod hep;
pub mod live;
pub mod select;
pub mod sender;
mod stream;

pub use select::Selector;
pub use sender::{HepDrop, HepExporter, HepStats};
