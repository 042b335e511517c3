//! sipfront: a SIP-aware UDP front proxy.
//!
//! The protocol logic lives in plain modules without sockets or clocks of their own
//! (`sip::scan`, `relay::router`, `sync::link`, ...); thin shells drive them with real I/O:
//! `dataplane` on one thread without an async runtime, `admin` on tokio.

pub mod admin;
pub mod capture;
pub mod config;
pub mod dataplane;
pub mod health;
pub mod notify;
pub mod relay;
pub mod server;
pub mod sip;
pub mod sync;
pub mod sys;
pub mod throttle;
pub mod vrrp;
