//! One change of the relay tables, as the sync link carries it to the peer. Items
//! carry no heap data, so the router can queue them without allocating.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::dialogs::{Side, Span};
use super::port::RelayPort;

/// One table change. Backends are referred to by their rendezvous seed (a hash of
/// the name), so the peers need not list them in the same order or reload together;
/// an item for a backend the receiver does not know is counted and skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    Flow {
        client: SocketAddr,
        relay_port: RelayPort,
        ingress: u16,
        home: u64,
        /// Seconds of registration left (granted expiry plus grace), if registered.
        registered_secs: Option<u32>,
    },
    FlowGone {
        relay_port: RelayPort,
    },
    Dialog {
        key: u128,
        backend: u64,
        span: Span,
        opener: Side,
        /// The flow it uses (and, as a dialog, holds).
        flow: RelayPort,
    },
}
