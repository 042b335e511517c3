//! The bare forwarder (bare.rs) with unconnected upstream sockets: each send names the
//! backend (a route lookup per send) and datagrams from any source are received, as a
//! relay socket must be (any backend may reach a flow). What that socket use adds to
//! the floor, without any SIP logic.

use crate::bare;

/// `listen,upstream1,upstream2,...`
pub const ENV: &str = "SIPFRONT_BARE_UNCONNECTED_FORWARDER";

/// Runs the unconnected forwarder described by `spec` until killed.
pub fn run(spec: &str) -> ! {
    bare::serve(ENV, "bare unconnected forwarder", spec, |l, b| {
        bare::forward(l, b, bare::Upstream::Unconnected, |_| {})
    })
}
