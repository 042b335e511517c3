//! Fuzz the VRRPv3 advertisement parser (`sipfront::vrrp::packet`), what every packet of
//! protocol 112 on the interface goes through. Each input is parsed as received, then
//! again with its RFC 5798 checksum made right (so the fuzzer need not find checksums).
//! Parsing must never panic; what parses emits and parses back to the same advert.
//!
//! Run from the crate root (nightly, or stable with RUSTC_BOOTSTRAP=1):
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run vrrp_advert -- -max_total_time=60
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use sipfront::vrrp::packet::{MCAST_GROUP, Packet, Repr};

const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn round_trip(repr: &Repr) {
    let mut buf = vec![0u8; repr.buffer_len()];
    let n = repr.emit(&mut buf, SRC, MCAST_GROUP);
    let p = Packet::new_checked(&buf[..n]).expect("an emitted advert checks");
    let (back, _) = Repr::parse(&p, SRC, MCAST_GROUP).expect("an emitted advert parses");
    assert_eq!(&back, repr, "emit/parse round trip");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data)
        && let Ok((repr, _)) = Repr::parse(&p, SRC, MCAST_GROUP)
    {
        round_trip(&repr);
    }
    let mut buf = data.to_vec();
    if let Ok(mut p) = Packet::new_checked(&mut buf[..]) {
        p.fill_checksum(SRC, MCAST_GROUP);
        let p = Packet::new_checked(&buf[..]).expect("still checks");
        if let Ok((repr, _)) = Repr::parse(&p, SRC, MCAST_GROUP) {
            round_trip(&repr);
        }
    }
});
