//! The per-source count of unanswered entries (`limits.max_pins_per_ip`) against a
//! model that sums every live flow's pins, over random placements (new flows and
//! flows from state sync, which replace what held their endpoint or client),
//! removals and pins; and the sums stay untouched for a source's only flow.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use proptest::prelude::*;

use super::*;
use crate::relay::ratelimit::source_key;

#[derive(Debug, Clone)]
enum Op {
    /// A flow from address `s` (see [`client`]).
    Place(u8, u16),
    /// A flow from state sync on endpoint `e`, replacing the flows that held that
    /// endpoint or that client.
    Sync(u8, u16, u16),
    /// The `k`-th live flow (modulo their number) goes.
    Remove(usize),
    AddPin(usize),
    DropPin(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 1u16..1000).prop_map(|(s, p)| Op::Place(s, p)),
        (0u8..6, 1u16..1000, 100u16..132).prop_map(|(s, p, e)| Op::Sync(s, p, e)),
        any::<usize>().prop_map(Op::Remove),
        any::<usize>().prop_map(Op::AddPin),
        any::<usize>().prop_map(Op::AddPin),
        any::<usize>().prop_map(Op::DropPin),
    ]
}

/// Six addresses, four sources: 0 and its IPv4-mapped form 4 are one; 2 and 3
/// are one /64; 5 is another /64 of their /48.
fn client(s: u8, port: u16) -> SocketAddr {
    let ip: IpAddr = match s {
        0 => "192.0.2.1".parse().unwrap(),
        1 => "192.0.2.2".parse().unwrap(),
        2 => "2001:db8:1:2::1".parse().unwrap(),
        3 => "2001:db8:1:2::9".parse().unwrap(),
        5 => "2001:db8:1:3::1".parse().unwrap(),
        _ => "::ffff:192.0.2.1".parse().unwrap(),
    };
    SocketAddr::new(ip, port)
}

proptest! {
    #[test]
    fn pins_of_a_source_are_its_flows_pins(ops in proptest::collection::vec(op(), 1..80)) {
        let now = Instant::now();
        let mut t = FlowTable::new(RelaySpace::new(&(100..=131), 1), 32, 1000);
        let mut live: Vec<FlowId> = Vec::new();
        // Removed flows' pins, which keep counting for their sources (time stands
        // still here: they never expire).
        let mut gone: HashMap<_, u32> = HashMap::new();
        let mut gone_site = 0;
        for op in ops {
            // Each live flow as (slot, endpoint, generation): which one it is.
            let before: Vec<(FlowId, (RelayPort, u16), SocketAddr, u32)> = live
                .iter()
                .map(|&id| {
                    let f = t.get(id).unwrap();
                    (id, (f.relay_port, f.generation), f.client, f.pins)
                })
                .collect();
            match op {
                Op::Place(s, port) => {
                    if let Ok(id) = t.insert(client(s, port), 0, BackendId::new(0), now) {
                        live.push(id);
                    }
                }
                Op::Sync(s, port, e) => {
                    let mut f = Flow::new(client(s, port), RelayPort::first(e), 0, BackendId::new(0), now);
                    // Whatever a caller hands in, a placed flow starts outside the sums.
                    f.pins_shared = true;
                    f.pins = 2;
                    if let Ok((id, _)) = t.insert_at(f) {
                        live.retain(|&l| t.get(l).is_some() && l != id);
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
            // A flow removed, or replaced (in its slot too) by a synced one.
            for (id, which, c, pins) in before {
                let there = t.get(id).is_some_and(|f| (f.relay_port, f.generation) == which);
                if !there {
                    *gone.entry(source_key(c.ip())).or_default() += pins;
                    if c.ip().to_string().starts_with("2001:db8:1:") {
                        gone_site += pins;
                    }
                }
            }
            // The count of mirrored flows the walks rely on.
            let mirrored = live.iter().filter(|&&id| t.get(id).unwrap().mirrored).count();
            prop_assert_eq!(t.mirrored_count(), mirrored);
            let mut model: HashMap<_, (u32, usize)> = gone.iter().map(|(&k, &n)| (k, (n, 0))).collect();
            for &id in &live {
                let f = t.get(id).unwrap();
                let e = model.entry(source_key(f.client.ip())).or_default();
                e.0 += f.pins;
                e.1 += 1;
            }
            // The /48's sum: every IPv6 flow's pins in it, whatever its /64.
            let site: u32 = live
                .iter()
                .map(|&id| t.get(id).unwrap())
                .filter(|f| f.client.ip().to_string().starts_with("2001:db8:1:"))
                .map(|f| f.pins)
                .sum::<u32>()
                + gone_site;
            prop_assert_eq!(t.pins_of_ipv6_48(client(5, 1).ip()), site);
            prop_assert_eq!(t.pins_of_ipv6_48(client(0, 1).ip()), 0);
            for &id in &live {
                let f = t.get(id).unwrap();
                let (pins, flows) = model[&source_key(f.client.ip())];
                prop_assert_eq!(t.pins_of_source(id), pins, "flow {:?}", f.client);
                if flows == 1 && !f.pins_shared {
                    // A phone's only flow: nothing in the sums.
                    prop_assert_eq!(t.pins_per_source.get(f.client.ip()), 0);
                }
                if !f.pins_shared {
                    // What the sums rely on: an unshared flow is its source's only
                    // one, and the count names it as the source's first.
                    prop_assert_eq!(flows, 1);
                    prop_assert_eq!(t.per_source.first(f.client.ip()), Some(id.0));
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
    // A's two entries are still open: they count until they may have expired.
    assert_eq!(t.pins_of_source(b), 3);
    t.tick(now + std::time::Duration::from_secs(33));
    t.expire_lingering(usize::MAX);
    assert_eq!(t.pins_of_source(b), 1);
    t.drop_pin(b);
    assert_eq!(t.pins_of_source(b), 0);
    assert_eq!(t.pins_per_source.get(client(0, 1).ip()), 0);
}

#[test]
fn a_stale_first_leaves_the_sums_right() {
    let now = Instant::now();
    let mut t = FlowTable::new(RelaySpace::new(&(100..=103), 1), 4, 1000);
    let place = |t: &mut FlowTable, port| t.insert(client(0, port), 0, BackendId::new(0), now);
    let a = place(&mut t, 1).unwrap();
    let b = place(&mut t, 2).unwrap();
    let c = place(&mut t, 3).unwrap();
    t.remove(c).unwrap();
    t.remove(a).unwrap();
    // The count's first may name a gone flow now; B is left, shared.
    let d = place(&mut t, 4).unwrap();
    t.add_pin(b);
    t.add_pin(d);
    t.add_pin(d);
    assert_eq!(t.pins_of_source(b), 3);
    assert_eq!(t.pins_of_source(d), 3);
    t.remove(d).unwrap();
    assert_eq!(t.pins_of_source(b), 3, "D's two still count");
    t.tick(now + std::time::Duration::from_secs(33));
    t.expire_lingering(usize::MAX);
    assert_eq!(t.pins_of_source(b), 1);
}
