//! The bare forwarder (bare.rs) running sipfront's SIP scanner over every datagram it
//! relays and doing nothing with the result: what reading each datagram's SIP headers
//! adds to the floor, without sipfront's tables, metrics or event loop. A measuring
//! stick for the part of sipfront's cost a SIP-aware relay cannot avoid.

use std::hint::black_box;

use sipfront::sip::scan;

use crate::bare;

/// `listen,upstream1,upstream2,...`
pub const ENV: &str = "SIPFRONT_BARE_SCAN_FORWARDER";

/// Runs the scanning forwarder described by `spec` until killed.
pub fn run(spec: &str) -> ! {
    bare::serve(ENV, "bare scanning forwarder", spec, |l, b| {
        bare::forward(l, b, bare::Upstream::Connected, |d| {
            black_box(scan(black_box(d)));
        })
    })
}
