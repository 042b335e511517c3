//! The per-source count of unanswered entries (`limits.max_pins_per_ip`) against a
//! model that sums every live flow's pins, over random placements, removals and
//! pins; and the sums stay untouched for a source's only flow.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use proptest::prelude::*;

use super::*;
use crate::relay::ratelimit::source_key;

#[derive(Debug, Clone)]
enum Op {
    /// A flow from source `s` (of 3; the third an IPv6 /64 with two addresses).
    Place(u8, u16),
    /// The `k`-th live flow (modulo their number) goes.
    Remove(usize),
    AddPin(usize),
    DropPin(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 1u16..1000).prop_map(|(s, p)| Op::Place(s, p)),
        any::<usize>().prop_map(Op::Remove),
        any::<usize>().prop_map(Op::AddPin),
        any::<usize>().prop_map(Op::AddPin),
        any::<usize>().prop_map(Op::DropPin),
    ]
}

fn client(s: u8, port: u16) -> SocketAddr {
    let ip: IpAddr = match s {
        0 => "192.0.2.1".parse().unwrap(),
        1 => "192.0.2.2".parse().unwrap(),
        // One /64 from two addresses: one source.
        2 => "2001:db8:1:2::1".parse().unwrap(),
        _ => "2001:db8:1:2::9".parse().unwrap(),
    };
    SocketAddr::new(ip, port)
}

proptest! {
    #[test]
    fn pins_of_a_source_are_its_flows_pins(ops in proptest::collection::vec(op(), 1..80)) {
        let now = Instant::now();
        let mut t = FlowTable::new(RelaySpace::new(&(100..=131), 1), 32, 1000);
        let mut live: Vec<FlowId> = Vec::new();
        for op in ops {
            match op {
                Op::Place(s, port) => {
                    if let Ok(id) = t.insert(client(s, port), 0, BackendId::new(0), now) {
                        live.push(id);
                    }
                }
                Op::Remove(k) if !live.is_empty() => {
                    let id = live.swap_remove(k % live.len());
                    t.remove(id).unwrap();
                }
                Op::AddPin(k) if !live.is_empty() => t.add_pin(live[k % live.len()]),
                Op::DropPin(k) if !live.is_empty() => t.drop_pin(live[k % live.len()]),
                _ => {}
            }
            let mut model: HashMap<_, (u32, usize)> = HashMap::new();
            for &id in &live {
                let f = t.get(id).unwrap();
                let e = model.entry(source_key(f.client.ip())).or_default();
                e.0 += f.pins;
                e.1 += 1;
            }
            for &id in &live {
                let f = t.get(id).unwrap();
                let (pins, flows) = model[&source_key(f.client.ip())];
                prop_assert_eq!(t.pins_of_source(id), pins, "flow {:?}", f.client);
                if flows == 1 && !f.pins_shared {
                    // A phone's only flow: nothing in the sums.
                    prop_assert_eq!(t.pins_per_source.get(f.client.ip()), 0);
                }
            }
        }
    }
}

#[test]
fn a_sources_only_flow_keeps_its_pins_to_itself_until_a_second_comes() {
    let now = Instant::now();
    let mut t = FlowTable::new(RelaySpace::new(&(100..=103), 1), 4, 1000);
    let a = t
        .insert(client(0, 5060), 0, BackendId::new(0), now)
        .unwrap();
    t.add_pin(a);
    t.add_pin(a);
    assert_eq!(t.pins_of_source(a), 2);
    assert_eq!(t.pins_per_source.get(client(0, 1).ip()), 0);
    let b = t
        .insert(client(0, 5061), 0, BackendId::new(0), now)
        .unwrap();
    t.add_pin(b);
    assert_eq!(t.pins_of_source(a), 3);
    assert_eq!(t.pins_of_source(b), 3);
    t.remove(a).unwrap();
    assert_eq!(t.pins_of_source(b), 1);
    t.drop_pin(b);
    assert_eq!(t.pins_of_source(b), 0);
    assert_eq!(t.pins_per_source.get(client(0, 1).ip()), 0);
}
