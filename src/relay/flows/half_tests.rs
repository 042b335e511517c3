//! Endpoint order with and without a pool half, over random pools (ports, addresses,
//! reserved endpoints), starts and halves: until the pool runs out every unreserved
//! endpoint is handed out exactly once, this host's half entirely before any of the
//! peer's, and two hosts of a pair (halves 0 and 1) share no endpoint until both
//! spill.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

use proptest::prelude::*;

use super::*;
use crate::relay::backends::BackendId;

/// Hands out endpoints until the pool runs out.
fn drain(t: &mut FlowTable, now: Instant) -> Vec<RelayPort> {
    let mut out = Vec::new();
    for i in 0u32.. {
        let client = SocketAddr::from(((0x0a00_0000u32 + i).to_be_bytes(), 5060));
        match t.insert(client, 0, BackendId::new(0), now) {
            Ok(id) => out.push(t.get(id).unwrap().relay_port),
            Err(_) => break,
        }
    }
    out
}

fn space(ports: u16, addrs: usize, reserved: &[u16]) -> RelaySpace {
    RelaySpace::new(&(1000..=999 + ports), addrs).with_statics(
        reserved
            .iter()
            .map(|&k| RelayPort::first(1000 + k % ports))
            .collect(),
    )
}

proptest! {
    #[test]
    fn every_endpoint_once_own_half_first(
        ports in 1u16..40,
        addrs in 1usize..4,
        reserved in proptest::collection::vec(0u16..40, 0..3),
        start in any::<u64>(),
        half in proptest::option::of(0u8..2),
    ) {
        let s = space(ports, addrs, &reserved);
        for pos in 0..s.pool_len() {
            prop_assert_eq!(Some(s.interleaved_index(pos)), s.index(s.interleaved_at(pos)));
        }
        let pool: HashSet<RelayPort> = s.interleaved().collect();
        let now = Instant::now();
        let mut t = FlowTable::new(s.clone(), usize::MAX, 10)
            .starting_at(start)
            .preferring_half(half);
        let got = drain(&mut t, now);
        let unique: HashSet<RelayPort> = got.iter().copied().collect();
        prop_assert_eq!(unique.len(), got.len(), "an endpoint twice");
        prop_assert_eq!(&unique, &pool);
        // Own half first: once a peer's endpoint came, no own one follows.
        let own: Vec<bool> = got.iter().map(|&r| t.is_own_half(r)).collect();
        prop_assert!(own.windows(2).all(|w| w[0] || !w[1]), "{:?}", own);
        if half.is_none() {
            prop_assert!(own.iter().all(|&o| o));
        }
    }

    #[test]
    fn a_pair_shares_no_endpoint_within_its_halves(
        ports in 1u16..40,
        addrs in 1usize..4,
        start_a in any::<u64>(),
        start_b in any::<u64>(),
    ) {
        let s = space(ports, addrs, &[]);
        let now = Instant::now();
        let mut a = FlowTable::new(s.clone(), usize::MAX, 10)
            .starting_at(start_a)
            .preferring_half(Some(0));
        let mut b = FlowTable::new(s.clone(), usize::MAX, 10)
            .starting_at(start_b)
            .preferring_half(Some(1));
        let got_a: Vec<RelayPort> =
            drain(&mut a, now).into_iter().filter(|&r| a.is_own_half(r)).collect();
        let got_b: HashSet<RelayPort> =
            drain(&mut b, now).into_iter().filter(|&r| b.is_own_half(r)).collect();
        prop_assert!(got_a.iter().all(|r| !got_b.contains(r)));
        prop_assert_eq!(got_a.len() + got_b.len(), s.pool_len());
    }
}
