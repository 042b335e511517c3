//! SIP awareness: the zero-allocation hot-path scanner and (rsip-based) message builders.

pub mod probe;
pub mod response;
pub mod scan;

pub use scan::{Kind, Scan, ScanError, SipView, scan};
