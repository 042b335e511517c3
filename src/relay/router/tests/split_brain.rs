//! Two hosts of a pair that both served clients (a split brain): which flow keeps
//! an endpoint both handed out, once their tables meet again.

use super::*;

/// One host of a pair: sync on, shared dialog keys, pool half `half`.
fn host(half: Option<u8>) -> Router {
    let cfg = config("");
    let rc = RouterConfig {
        sync_queue: Some(crate::config::DEFAULT_SYNC_TURN_CHANGES),
        half,
        ..RouterConfig::new(&cfg, Some([1, 2]))
    };
    Router::new(rc, &cfg.backends, Instant::now())
}

/// `from`'s full table applied to `to` (the link came up).
fn meet(from: &Router, to: &mut Router, now: Instant) {
    let mut full = vec![];
    from.sync_full(now, &mut full);
    to.set_peer_alive(now, true);
    to.begin_full();
    for it in full {
        to.apply_sync(now, it);
    }
    to.end_full(now);
}

/// Both full tables taken before either is applied (they cross on the wire).
fn cross(a: &mut Router, b: &mut Router, now: Instant) {
    let (mut fa, mut fb) = (vec![], vec![]);
    a.sync_full(now, &mut fa);
    b.sync_full(now, &mut fb);
    for (to, full) in [(a, fb), (b, fa)] {
        to.set_peer_alive(now, true);
        to.begin_full();
        for it in full {
            to.apply_sync(now, it);
        }
        to.end_full(now);
    }
}

/// The changes each host sent while they were split: lost.
fn lose_queued(a: &mut Router, b: &mut Router) {
    for r in [a, b] {
        r.take_sync(&mut vec![]);
    }
}

/// The hosts trade their queued changes until neither has any; at most `rounds`.
fn trade(a: &mut Router, b: &mut Router, now: Instant, rounds: usize) {
    for _ in 0..=rounds {
        let (mut ia, mut ib) = (vec![], vec![]);
        a.take_sync(&mut ia);
        b.take_sync(&mut ib);
        if ia.is_empty() && ib.is_empty() {
            return;
        }
        for it in ia {
            b.apply_sync(now, it);
        }
        for it in ib {
            a.apply_sync(now, it);
        }
    }
    panic!("still trading changes after {rounds} rounds");
}

/// The client each host has on each endpoint of the pool.
fn endpoints(r: &Router) -> Vec<Option<SocketAddr>> {
    (20000..=20003)
        .map(|p| {
            let id = r.flows.lookup_port(RelayPort::first(p))?;
            r.flows.get(id).map(|f| f.client)
        })
        .collect()
}

fn register(r: &mut Router, now: Instant, phone: &str) -> RelayPort {
    let (port, home) = client(r, now, phone, &req("REGISTER", phone));
    let ok = resp(200, phone, "REGISTER", "Expires: 600\r\n");
    r.from_backend(now, port, addr_of(home), &ok);
    port
}

#[test]
fn a_split_pair_hands_out_endpoints_of_its_own_half() {
    let t0 = Instant::now();
    let (mut a, mut b) = (host(Some(0)), host(Some(1)));
    let pa = [
        register(&mut a, t0, "198.51.100.1:1"),
        register(&mut a, t0, "198.51.100.2:2"),
    ];
    let pb = [
        register(&mut b, t0, "198.51.100.3:3"),
        register(&mut b, t0, "198.51.100.4:4"),
    ];
    assert!(pa.iter().all(|p| !pb.contains(p)), "{pa:?} {pb:?}");
    meet(&b, &mut a, t0);
    meet(&a, &mut b, t0);
    assert_eq!(endpoints(&a), endpoints(&b));
    assert!(endpoints(&a).iter().all(Option::is_some));
    assert_eq!((a.sync_conflicts, b.sync_conflicts), (0, 0));
}

/// Without halves (or once a host spills into the other's half) both may hand out
/// one endpoint; each host then keeps the same flow on it whichever table arrives
/// first: a registered one over one that is not, else the lower client address.
#[test]
fn a_conflicting_endpoint_goes_to_the_same_flow_on_both_hosts() {
    let t0 = Instant::now();
    for (x_registers, a_first) in [(false, true), (false, false), (true, true), (true, false)] {
        let (mut a, mut b) = (host(None), host(None));
        let (x, y) = ("198.51.100.1:1", "198.51.100.9:9");
        // Y registers on B; X (the lower address) only pings, or registers too (then
        // the addresses decide).
        let px = client(&mut a, t0, x, &req("OPTIONS", "x")).0;
        let py = register(&mut b, t0, y);
        if x_registers {
            let (_, home) = client(&mut a, t0, x, &req("REGISTER", "xr"));
            let ok = resp(200, "xr", "REGISTER", "Expires: 600\r\n");
            a.from_backend(t0, px, addr_of(home), &ok);
        }
        assert_eq!(px, py, "both handed out the pool's first endpoint");
        if a_first {
            meet(&b, &mut a, t0);
            meet(&a, &mut b, t0);
        } else {
            meet(&a, &mut b, t0);
            meet(&b, &mut a, t0);
        }
        let winner = if x_registers { x } else { y };
        let case = format!("x registers {x_registers}, a first {a_first}");
        assert_eq!(endpoints(&a)[0], Some(sa(winner)), "{case}");
        assert_eq!(endpoints(&a), endpoints(&b), "{case}");
        assert!(a.sync_conflicts + b.sync_conflicts >= 1, "{case}");
        // The loser's next datagram gets another endpoint on its host.
        let (loser, host_of_loser) = if x_registers {
            (y, &mut b)
        } else {
            (x, &mut a)
        };
        let (p, _) = client(host_of_loser, t0, loser, &req("OPTIONS", "again"));
        assert_ne!(p, px, "{case}");
    }
}

/// Both hosts served one phone (each on an endpoint of its own half): when their
/// tables meet, both keep the same one of the two flows, so the backends reach the
/// phone through either host: the registered one, else the lower endpoint. Before,
/// each replaced its own flow with the peer's, and the two swapped endpoints. The
/// tables meet one after the other either way, or cross (both sent before either is
/// applied); then the hosts trade their changes until neither has any.
#[test]
fn a_phone_both_hosts_served_keeps_one_endpoint_on_both() {
    let t0 = Instant::now();
    for (a_registers, b_registers) in [(true, true), (true, false), (false, true), (false, false)] {
        for order in ["a first", "b first", "crossing"] {
            let (mut a, mut b) = (host(Some(0)), host(Some(1)));
            let x = "198.51.100.1:1";
            let serve = |r: &mut Router, registers: bool| {
                if registers {
                    register(r, t0, x)
                } else {
                    client(r, t0, x, &req("OPTIONS", "x")).0
                }
            };
            let pa = serve(&mut a, a_registers);
            let pb = serve(&mut b, b_registers);
            assert!(pa < pb, "A takes the even endpoints, the first one lower");
            lose_queued(&mut a, &mut b);
            match order {
                "a first" => {
                    meet(&b, &mut a, t0);
                    meet(&a, &mut b, t0);
                }
                "b first" => {
                    meet(&a, &mut b, t0);
                    meet(&b, &mut a, t0);
                }
                _ => cross(&mut a, &mut b, t0),
            }
            let case = format!("a registers {a_registers}, b {b_registers}, {order}");
            trade(&mut a, &mut b, t0, 4);
            let on = |r: &Router| r.flow_of(&sa(x)).map(|f| f.relay_port);
            // The registered one, else the lower endpoint (A's).
            let want = if b_registers && !a_registers { pb } else { pa };
            assert_eq!(on(&a), Some(want), "{case}");
            assert_eq!(on(&b), Some(want), "{case}");
            assert_eq!(endpoints(&a), endpoints(&b), "{case}");
        }
    }
}

/// A host that spilled into the other's half: A has X on 20002 and Y (registered) on
/// 20001, B has X on 20001. Y keeps 20001 on both; B, applying A's table in its order,
/// first keeps its own X (20001 is lower than 20002) and then loses 20001 to Y, left
/// without X, while A kept its X. A re-states the flows it kept, so B gets X on 20002.
#[test]
fn a_phone_that_lost_its_endpoint_on_one_host_gets_the_peers_flow_back() {
    let t0 = Instant::now();
    let (mut a, mut b) = (host(Some(0)), host(Some(1)));
    let (x, y, f) = ("198.51.100.1:1", "198.51.100.2:2", "198.51.100.3:3");
    let port = |p: u16| RelayPort::first(p);
    assert_eq!(client(&mut a, t0, f, &req("OPTIONS", "f")).0, port(20000));
    assert_eq!(client(&mut a, t0, x, &req("OPTIONS", "x")).0, port(20002));
    assert_eq!(
        register(&mut a, t0, y),
        port(20001),
        "A spills into B's half"
    );
    assert_eq!(client(&mut b, t0, x, &req("OPTIONS", "x")).0, port(20001));
    lose_queued(&mut a, &mut b);
    cross(&mut a, &mut b, t0);
    trade(&mut a, &mut b, t0, 4);
    let on = |r: &Router, c: &str| r.flow_of(&sa(c)).map(|f| f.relay_port);
    for (r, host) in [(&a, "A"), (&b, "B")] {
        assert_eq!(on(r, y), Some(port(20001)), "{host}");
        assert_eq!(on(r, x), Some(port(20002)), "{host}");
        assert_eq!(on(r, f), Some(port(20000)), "{host}");
    }
}
