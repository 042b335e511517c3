use super::*;
use crate::sync::Key;
use crate::sync::SyncDrop;
use crate::sync::link::{HELLO_EVERY, PEER_TIMEOUT};

const MS: Duration = Duration::from_millis(1);

/// Both sides change their tables over a bad wire for `secs` virtual seconds.
fn churn(sim: &mut Sim, secs: u64) {
    for _ in 0..secs * 50 {
        for i in 0..2 {
            if sim.sides[i].up {
                let n = sim.rng.below(4) as usize;
                sim.mutate(i, n, 3000);
            }
        }
        sim.run_for(20 * MS);
    }
}

/// Heals the wire and waits for both mirrors to match, within `limit`.
fn heal_and_converge(sim: &mut Sim, limit: Duration) -> Duration {
    sim.loss = 0;
    sim.dup = 0;
    sim.jitter = Duration::ZERO;
    let start = sim.now;
    while sim.now - start < limit {
        sim.run_for(50 * MS);
        if sim.converged() {
            return sim.now - start;
        }
    }
    panic!(
        "no convergence within {limit:?}: mirrors {} {}, synced {} {}, flows {} {} / mirrored {} {}",
        sim.mirrors(0),
        sim.mirrors(1),
        sim.sides[0].link.synced(),
        sim.sides[1].link.synced(),
        sim.sides[0].flows.len(),
        sim.sides[1].flows.len(),
        sim.sides[1].mirror.flows.len(),
        sim.sides[0].mirror.flows.len(),
    );
}

#[test]
fn lossy_reordering_duplicating_wire_converges_once_healed() {
    for seed in 0..6 {
        let mut sim = Sim::new(seed);
        sim.loss = 100;
        sim.dup = 50;
        sim.jitter = 3 * MS;
        churn(&mut sim, 8);
        let took = heal_and_converge(&mut sim, Duration::from_secs(5));
        assert!(took <= 3 * HELLO_EVERY, "seed {seed}: {took:?}");
        let s = sim.sides[1].link.stats();
        assert!(s.dropped(SyncDrop::Replay) > 0, "duplicates were dropped");
        assert_eq!(s.dropped(SyncDrop::BadMac), 0);
        // Still in step when changes continue on a clean wire.
        churn(&mut sim, 1);
        heal_and_converge(&mut sim, Duration::from_secs(1));
    }
}

/// A wire that reorders (and duplicates) but loses nothing: the datagrams that come
/// ahead wait for the late ones, so no side asks for a second whole table, and the
/// mirrors match once the churn stops.
#[test]
fn reordering_without_loss_costs_no_full_table() {
    for seed in 0..4 {
        let mut sim = Sim::new(seed);
        sim.dup = 50;
        sim.jitter = 3 * MS;
        churn(&mut sim, 8);
        heal_and_converge(&mut sim, Duration::from_secs(1));
        for i in 0..2 {
            let s = sim.sides[i].link.stats();
            assert_eq!(
                (s.full_tables_sent, s.full_tables_received),
                (1, 1),
                "seed {seed} side {i}: {s:?}"
            );
        }
    }
}

#[test]
fn restarts_with_a_clock_stepped_back_are_admitted_and_replays_are_not() {
    let mut sim = Sim::new(7);
    sim.loss = 20;
    sim.record = true;
    churn(&mut sim, 3);
    heal_and_converge(&mut sim, Duration::from_secs(5));
    let old_epoch = sim.sides[1].epoch;
    let recorded_before = sim.recorded.len();

    // Side 1 crashes and comes back before side 0 notices (within PEER_TIMEOUT), with
    // a smaller epoch and its clock an hour behind.
    sim.crash(1);
    sim.run_for(PEER_TIMEOUT / 2);
    sim.restart(1, old_epoch / 2, -3600);
    sim.loss = 20;
    churn(&mut sim, 3);
    heal_and_converge(&mut sim, Duration::from_secs(5));
    assert!(sim.sides[0].events.contains(&LinkEvent::PeerRestarted));
    assert!(
        !sim.sides[0].events.contains(&LinkEvent::PeerDown),
        "restarted within the peer timeout"
    );

    // An attacker replays everything side 1 sent in its previous run, and everything
    // side 0 sent to it: nothing is applied (the mirror checks would fail, and the
    // tables would no longer match).
    let before0 = sim.sides[0].link.stats().clone();
    let replays: Vec<(usize, Vec<u8>)> = sim.recorded[..recorded_before].to_vec();
    for (to, bytes) in replays {
        let from = sim.sides[1 - to].addr;
        sim.inject(to, from, bytes);
    }
    sim.run_for(HELLO_EVERY);
    assert!(sim.converged(), "replays changed a table");
    let after0 = sim.sides[0].link.stats();
    assert!(after0.dropped(SyncDrop::Replay) > before0.dropped(SyncDrop::Replay));
    assert!(after0.full_tables_received == before0.full_tables_received);

    // Oversized junk and strangers, from the peer's address and another.
    let stranger: SocketAddr = "10.0.0.9:7000".parse().unwrap();
    for _ in 0..10 {
        sim.inject(0, sim.sides[1].addr, vec![0x5a; 65_507]);
        sim.inject(0, stranger, vec![0x5a; 200]);
    }
    sim.run_for(10 * MS);
    let s = sim.sides[0].link.stats();
    assert_eq!(s.dropped(SyncDrop::Oversize), 10);
    assert_eq!(s.dropped(SyncDrop::NotPeer), 10);

    // Side 0 restarts too, with a larger epoch and its clock ahead; side 1 was down
    // longer than the peer timeout this time.
    sim.crash(0);
    sim.run_for(PEER_TIMEOUT + HELLO_EVERY);
    assert!(sim.sides[1].events.contains(&LinkEvent::PeerDown));
    sim.restart(0, u64::MAX - 5, 600);
    churn(&mut sim, 2);
    heal_and_converge(&mut sim, Duration::from_secs(5));
}

#[test]
fn full_table_of_100k_items_paced_and_applied_once() {
    let mut sim = Sim::new(11);
    // Side 0 has 100k flows before side 1 is there: the changes overflow the link's
    // queue, so side 0 switches to a full table on its own.
    sim.crash(1);
    for n in 0..100_000u32 {
        let port = RelayPort {
            addr: n / 50_000,
            port: (n % 50_000) as u16,
        };
        let item = sim.flow(port);
        sim.change(0, item);
    }
    sim.run_for(HELLO_EVERY);
    assert!(sim.sides[0].events.contains(&LinkEvent::SendFullTable));
    let e = sim.sides[1].epoch;
    sim.restart(1, e, 0);
    let took = heal_and_converge(&mut sim, Duration::from_secs(5));
    assert_eq!(sim.sides[1].mirror.flows.len(), 100_000);
    // 4167 datagrams at 256 per 20 ms.
    assert!(took < Duration::from_millis(800), "{took:?}");
    assert_eq!(sim.sides[1].mirror.fulls_applied, 1);
}

#[test]
fn a_full_table_with_lost_chunks_is_not_taken_as_complete() {
    let mut sim = Sim::new(3);
    sim.crash(1);
    for n in 0..3000u16 {
        let item = sim.flow(RelayPort::first(n));
        sim.change(0, item);
    }
    sim.run_for(HELLO_EVERY);
    let e = sim.sides[1].epoch;
    sim.restart(1, e, 0);
    // Every full table over this wire loses some of its 125 chunks; no other changes,
    // so only the receiver's own bookkeeping can tell it is incomplete.
    sim.loss = 50;
    sim.run_for(3 * HELLO_EVERY);
    assert!(!sim.sides[1].link.synced());
    assert_eq!(sim.sides[1].mirror.fulls_applied, 0);
    heal_and_converge(&mut sim, Duration::from_secs(5));
    assert_eq!(sim.sides[1].mirror.fulls_applied, 1);
}

/// Events of side `i` since `from` (an index into its event log).
fn events_since(sim: &Sim, i: usize, from: usize) -> &[LinkEvent] {
    &sim.sides[i].events[from..]
}

/// The operator's rotation: the new key into both key files, then a reload of one
/// host and, a while later, of the other. Changes keep flowing both ways throughout
/// (over a wire that duplicates), and nothing is lost or applied twice (the mirrors
/// check every application), no full table is needed, the link never goes down, and
/// once both use the new key a recording sealed with the old one is refused.
#[test]
fn key_rotation_by_reloading_one_host_then_the_other_keeps_the_link() {
    for seed in 0..4 {
        let mut sim = Sim::new(100 + seed);
        sim.dup = 30;
        churn(&mut sim, 2);
        heal_and_converge(&mut sim, Duration::from_secs(5));
        sim.dup = 30;
        let marks = [0, 1].map(|i| sim.sides[i].events.len());
        let fulls = [0, 1].map(|i| sim.sides[i].link.stats().full_tables_received);
        let grace = Duration::from_secs(300);
        let new = Key::new(b"the next sim key, 32 bytes long");

        sim.rotate(0, new.clone(), grace);
        sim.record = true;
        churn(&mut sim, 3);
        sim.record = false;
        // Side 1 still has only the old key: side 0 seals with it.
        assert!(!events_since(&sim, 0, marks[0]).contains(&LinkEvent::KeyInUse));
        let old_sealed: Vec<(usize, Vec<u8>)> = sim.recorded.clone();

        sim.rotate(1, new.clone(), grace);
        churn(&mut sim, 2 * keys_linger_secs());
        heal_and_converge(&mut sim, Duration::from_secs(1));

        for i in 0..2 {
            let ev = events_since(&sim, i, marks[i]);
            assert!(
                ev.contains(&LinkEvent::KeyInUse),
                "seed {seed} side {i}: {ev:?}"
            );
            assert!(
                ev.contains(&LinkEvent::PreviousKeyRetired {
                    peer_switched: true
                }),
                "seed {seed} side {i}: {ev:?}"
            );
            for bad in [LinkEvent::PeerDown, LinkEvent::PeerRestarted] {
                assert!(!ev.contains(&bad), "seed {seed} side {i}: {ev:?}");
            }
            let s = sim.sides[i].link.stats();
            assert_eq!(s.full_tables_received, fulls[i], "seed {seed} side {i}");
            assert_eq!(s.dropped(SyncDrop::BadMac), 0, "seed {seed} side {i}");
            assert!(!sim.sides[i].link.rotating());
        }

        // Old-key datagrams (the traffic of the rotation window, replayed) are refused
        // by their tag now, not only as replays.
        let before = [0, 1].map(|i| sim.sides[i].link.stats().dropped(SyncDrop::BadMac));
        for (to, bytes) in old_sealed.iter().filter(|(to, _)| *to == 0) {
            let from = sim.sides[1 - to].addr;
            sim.inject(*to, from, bytes.clone());
        }
        sim.run_for(10 * MS);
        let n = old_sealed.iter().filter(|(to, _)| *to == 0).count() as u64;
        assert!(n > 0);
        assert_eq!(
            sim.sides[0].link.stats().dropped(SyncDrop::BadMac),
            before[0] + n,
            "seed {seed}"
        );
        assert!(sim.converged());
        // A restart reads the new key from the file and rejoins.
        let e = sim.sides[1].epoch;
        sim.crash(1);
        sim.restart(1, e ^ 0xff, 0);
        churn(&mut sim, 1);
        heal_and_converge(&mut sim, Duration::from_secs(5));
    }
}

fn keys_linger_secs() -> u64 {
    crate::sync::link::KEY_LINGER.as_secs() + 1
}

/// A second host reloaded after the grace: the link is down in between (each side
/// refuses the other's key), and comes back with a full table once it is reloaded.
#[test]
fn a_key_rotation_left_half_done_breaks_the_link_after_the_grace_until_finished() {
    let mut sim = Sim::new(21);
    churn(&mut sim, 2);
    heal_and_converge(&mut sim, Duration::from_secs(5));
    let new = Key::new(b"the next sim key, 32 bytes long");
    let grace = Duration::from_secs(10);
    sim.rotate(0, new.clone(), grace);
    churn(&mut sim, 8);
    assert!(
        sim.converged(),
        "within the grace the link works on the old key"
    );
    let mark = sim.sides[0].events.len();
    churn(&mut sim, 2 + PEER_TIMEOUT.as_secs() + 1);
    let ev = events_since(&sim, 0, mark);
    assert!(ev.contains(&LinkEvent::PreviousKeyRetired {
        peer_switched: false
    }));
    assert!(ev.contains(&LinkEvent::PeerDown), "{ev:?}");
    assert!(sim.sides[0].link.stats().dropped(SyncDrop::BadMac) > 0);
    assert!(sim.sides[1].link.stats().dropped(SyncDrop::BadMac) > 0);
    sim.rotate(1, new, grace);
    churn(&mut sim, 1);
    heal_and_converge(&mut sim, Duration::from_secs(5));
    assert!(sim.sides[0].events[mark..].contains(&LinkEvent::PeerUp));
}
