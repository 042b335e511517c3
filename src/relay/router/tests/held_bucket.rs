//! A source's datagram bucket held by its only flow: the same limit as the
//! limiter's table, wherever the bucket is; it moves back to the table with what it
//! has left when a second flow comes, and datagrams of no flow are charged to it.

use super::*;
use crate::relay::flows::NOT_HELD;

/// 10 datagrams per second, a burst of 20, per source.
fn limited() -> Router {
    router(&config(
        "[limits]\ndatagrams_per_ip = 10\ndatagrams_burst = 20\n",
    ))
}

/// How many of `n` OPTIONS from `from` at `now` are forwarded.
fn through(r: &mut Router, now: Instant, from: &str, n: u32) -> usize {
    (0..n)
        .filter(|i| {
            let msg = req("OPTIONS", &format!("{from}-{i}"));
            matches!(
                r.from_client(now, sa(from), 0, &msg),
                ClientAction::Forward { .. }
            )
        })
        .count()
}

/// One datagram per second, a burst of `burst`; unanswered flows live 5 s.
fn short_lived(burst: u32) -> Router {
    router(&config(&format!(
        "unanswered_idle = \"5s\"\n[limits]\ndatagrams_per_ip = 1\ndatagrams_burst = {burst}\n"
    )))
}

/// A backend reaches `from`'s flow: it lives `flow_idle` (30 s), not 5 s.
fn answer(r: &mut Router, now: Instant, from: &str) {
    let f = r.flow_of(&sa(from)).unwrap();
    let (port, home) = (f.relay_port, f.home);
    r.from_backend(now, port, addr_of(home), &req("OPTIONS", from));
}

fn holds(r: &Router, from: &str) -> bool {
    let id = r.flows.lookup_client(&sa(from)).unwrap();
    r.flows.get(id).unwrap().bucket != NOT_HELD
}

#[test]
fn a_one_flow_source_keeps_its_bucket_in_its_flow_with_the_same_limit() {
    let t0 = Instant::now();
    let mut r = limited();
    assert_eq!(through(&mut r, t0, "198.51.100.1:1", 50), 20);
    assert!(holds(&r, "198.51.100.1:1"));
    // The index says so too: a batch then leaves the limiter's line alone.
    assert!(r.flows.warm_client(&sa("198.51.100.1:1")));
    assert_eq!(r.counters().dropped(DropReason::SourceRateLimited), 30);
    // It refills at the rate: one datagram per 100 ms.
    let t1 = t0 + Duration::from_millis(100);
    assert_eq!(through(&mut r, t1, "198.51.100.1:1", 5), 1);
    let t2 = t0 + Duration::from_secs(10);
    assert_eq!(through(&mut r, t2, "198.51.100.1:1", 50), 20);
}

#[test]
fn a_second_flow_takes_the_bucket_back_to_the_table_with_what_is_left() {
    let t0 = Instant::now();
    let mut r = limited();
    assert_eq!(through(&mut r, t0, "198.51.100.1:1", 15), 15);
    // Five left for the source, whichever port sends them.
    assert_eq!(through(&mut r, t0, "198.51.100.1:2", 20), 5);
    assert_eq!(through(&mut r, t0, "198.51.100.1:1", 5), 0);
    assert!(!holds(&r, "198.51.100.1:1"));
    assert!(!holds(&r, "198.51.100.1:2"));
    assert!(!r.flows.warm_client(&sa("198.51.100.1:1")));
    // An IPv6 /64 is one source: its second address is its second flow.
    assert_eq!(through(&mut r, t0, "[2001:db8:1:2::1]:1", 12), 12);
    assert!(holds(&r, "[2001:db8:1:2::1]:1"));
    assert_eq!(through(&mut r, t0, "[2001:db8:1:2::9]:1", 20), 8);
    assert!(!holds(&r, "[2001:db8:1:2::1]:1"));
}

#[test]
fn datagrams_of_no_flow_are_charged_to_the_bucket_the_sources_flow_holds() {
    let t0 = Instant::now();
    let mut r = limited();
    assert_eq!(through(&mut r, t0, "198.51.100.1:1", 20), 20);
    // Junk from another port: refused as over the rate, not even scanned.
    let a = r.from_client(t0, sa("198.51.100.1:2"), 0, b"junk");
    assert_eq!(a, ClientAction::Drop(DropReason::SourceRateLimited));
    assert_eq!(r.flow_count(), 1);
}

#[test]
fn a_first_flow_starts_with_what_the_table_had_left() {
    let t0 = Instant::now();
    let mut r = limited();
    // Fifteen datagrams that make no flow spend the table's bucket.
    for _ in 0..15 {
        let a = r.from_client(t0, sa("198.51.100.1:1"), 0, b"junk");
        assert!(matches!(a, ClientAction::Drop(r) if r != DropReason::SourceRateLimited));
    }
    assert_eq!(r.flow_count(), 0);
    // The flow made by the next one holds the bucket with what was left: five.
    assert_eq!(through(&mut r, t0, "198.51.100.1:1", 20), 5);
    assert!(holds(&r, "198.51.100.1:1"));
}

#[test]
fn a_mirrored_flow_holds_its_sources_bucket_on_the_standby() {
    let t0 = Instant::now();
    let cfg = config("[limits]\ndatagrams_per_ip = 10\ndatagrams_burst = 20\n");
    let (mut master, mut backup) = (synced(&cfg), synced(&cfg));
    assert_eq!(through(&mut master, t0, "198.51.100.1:1", 3), 3);
    let mut items = vec![];
    master.take_sync(&mut items);
    backup.set_peer_alive(t0, true);
    for it in items {
        backup.apply_sync(t0, it);
    }
    assert!(holds(&backup, "198.51.100.1:1"));
    // Buckets are not synced: after a takeover the source has a full one there.
    assert_eq!(through(&mut backup, t0, "198.51.100.1:1", 30), 20);
}

#[test]
fn the_last_flow_of_a_source_takes_its_bucket_back_with_what_is_left() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut r = short_lived(20);
    let (a, b) = ("198.51.100.1:1", "198.51.100.1:2");
    assert_eq!(through(&mut r, t0, a, 5), 5);
    // A backend reaches A: it lives `flow_idle`, B (unanswered) only 5 s.
    answer(&mut r, t0, a);
    assert_eq!(through(&mut r, t0, b, 3), 3);
    assert!(!holds(&r, a) && !holds(&r, b));
    for k in 1..=6 {
        r.handle_timeout(t0 + s(k));
    }
    assert!(r.flow_of(&sa(b)).is_none());
    // A's next datagram takes the bucket back: 12 left at t0, 6 more since.
    let t6 = t0 + s(6);
    assert_eq!(through(&mut r, t6, a, 30), 18);
    assert!(holds(&r, a));
    assert!(r.flows.warm_client(&sa(a)));
    // And a datagram of no flow is charged to it again.
    let c = r.from_client(t6, sa("198.51.100.1:3"), 0, b"junk");
    assert_eq!(c, ClientAction::Drop(DropReason::SourceRateLimited));
}

#[test]
fn a_source_with_flows_left_keeps_its_bucket_in_the_table() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut r = short_lived(20);
    let ports = ["198.51.100.1:1", "198.51.100.1:2", "198.51.100.1:3"];
    for (i, p) in ports.iter().enumerate() {
        assert_eq!(through(&mut r, t0, p, 2), 2);
        if i < 2 {
            // Answered: these two stay.
            answer(&mut r, t0, p);
        }
    }
    for k in 1..=6 {
        r.handle_timeout(t0 + s(k));
    }
    assert!(r.flow_of(&sa(ports[2])).is_none());
    let t6 = t0 + s(6);
    // 14 left at t0, 6 more since, over both flows; neither holds it.
    let got = through(&mut r, t6, ports[0], 15) + through(&mut r, t6, ports[1], 15);
    assert_eq!(got, 20);
    assert!(!holds(&r, ports[0]) && !holds(&r, ports[1]));
}

#[test]
fn a_removed_flow_puts_the_bucket_it_held_back_with_what_is_left() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut r = short_lived(100);
    let a = "198.51.100.1:1";
    assert_eq!(through(&mut r, t0, a, 100), 100);
    for k in 1..=6 {
        r.handle_timeout(t0 + s(k));
    }
    assert!(r.flow_of(&sa(a)).is_none(), "unanswered: gone after 5 s");
    // Its next flow starts with what the bucket has: 6 s at one a second, not a
    // fresh burst of 100.
    assert_eq!(through(&mut r, t0 + s(6), a, 100), 6);
}

#[test]
fn a_flow_sync_moves_to_another_endpoint_keeps_the_bucket_it_had() {
    let t0 = Instant::now();
    let cfg = config("[limits]\ndatagrams_per_ip = 1\ndatagrams_burst = 20\n");
    let (mut master, mut backup) = (synced(&cfg), synced(&cfg));
    let c = "198.51.100.1:1";
    assert_eq!(through(&mut master, t0, c, 1), 1);
    let mut items = vec![];
    master.take_sync(&mut items);
    backup.set_peer_alive(t0, true);
    let Some(&Item::Flow {
        client,
        relay_port,
        ingress,
        home,
        registered_secs,
    }) = items.first()
    else {
        panic!("{items:?}")
    };
    backup.apply_sync(t0, items[0]);
    // The backup serves the client for a while (a takeover): 15 of its 20.
    assert_eq!(through(&mut backup, t0, c, 15), 15);
    // The peer has the client registered on another endpoint now: the flow is
    // replaced (a registered flow wins over this host's own unregistered one).
    assert_eq!(registered_secs, None);
    let moved = RelayPort {
        port: relay_port.port + 1,
        ..relay_port
    };
    backup.apply_sync(
        t0,
        Item::Flow {
            client,
            relay_port: moved,
            ingress,
            home,
            registered_secs: Some(600),
        },
    );
    assert_eq!(backup.flow_of(&sa(c)).unwrap().relay_port, moved);
    assert_eq!(through(&mut backup, t0, c, 20), 5);
}
