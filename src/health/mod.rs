//! Backend health: the OPTIONS probe state machine (pure, time passed in) and the
//! prober that drives it with a socket.

pub mod checker;
pub mod prober;

pub use checker::{Checker, Event, Health, ProbeTx, Reason};
