use super::*;
use crate::relay::port::RelayPort;
use crate::sync::message::MAX_DATAGRAM;

const A: &str = "10.0.0.1:7000";
const B: &str = "10.0.0.2:7000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn key() -> Key {
    Key::new(b"sixteen byte key!!")
}

fn pair(now: Instant) -> (Link, Link) {
    let h = backends_hash(&["a", "b"]);
    (
        Link::new(key(), addr(B), 1, h, now),
        Link::new(key(), addr(A), 2, h, now),
    )
}

fn flow(p: u16) -> Item {
    Item::Flow {
        client: "198.51.100.1:5060".parse().unwrap(),
        relay_port: RelayPort::first(p),
        ingress: 0,
        home: 1,
        registered_secs: Some(3600),
    }
}

/// Everything `from` sends now, as datagrams.
fn drain(from: &mut Link, now: Instant) -> Vec<Vec<u8>> {
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut out = vec![];
    while let Some(t) = from.poll_transmit(now, &mut buf) {
        out.push(buf[..t.len].to_vec());
    }
    out
}

fn events(l: &mut Link) -> Vec<LinkEvent> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

fn feed(to: &mut Link, from: &str, now: Instant, dgrams: &[Vec<u8>]) {
    for d in dgrams {
        to.handle_datagram(now, addr(from), d);
    }
}

/// `env` as a datagram under the test key (what a peer holding it could send).
fn sealed_env(env: &Envelope) -> Vec<u8> {
    let mut buf = [0u8; MAX_DATAGRAM];
    let len = seal(&key(), env, &mut buf).unwrap();
    buf[..len].to_vec()
}

/// Hellos both ways until neither has one due: the handshake.
fn handshake(a: &mut Link, b: &mut Link, mut now: Instant) -> Instant {
    for _ in 0..4 {
        let d = drain(a, now);
        feed(b, A, now, &d);
        let d = drain(b, now);
        feed(a, B, now, &d);
        now += PROMPT_GAP;
    }
    now
}

/// Someone who sees our datagrams sends them back from the peer's address (the key is
/// the same both ways, so they open): they must not answer our own challenge, take
/// the peer's place, or feed our own items back to us.
#[test]
fn our_own_datagrams_sent_back_are_dropped() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let mut now = handshake(&mut a, &mut b, t0);
    events(&mut a);
    a.queue_full(vec![]);
    b.queue_full(vec![]);
    a.queue(&[flow(20001)]);
    for _ in 0..8 {
        let mine = drain(&mut a, now);
        feed(&mut a, B, now, &mine);
        now += Duration::from_millis(500);
    }
    let ea = events(&mut a);
    assert!(!ea.contains(&LinkEvent::PeerRestarted), "{ea:?}");
    assert!(
        !ea.iter().any(|e| matches!(e, LinkEvent::Items { .. })),
        "{ea:?}"
    );
    assert!(
        a.stats().dropped(SyncDrop::Reflected) > 0,
        "{:?}",
        a.stats()
    );
    // The real peer still gets through.
    b.queue(&[flow(20002)]);
    let from_b = drain(&mut b, now);
    feed(&mut a, B, now, &from_b);
    let ea = events(&mut a);
    assert!(
        ea.iter().any(|e| matches!(e, LinkEvent::Items { .. })),
        "b's item: {ea:?}"
    );
    assert!(!ea.contains(&LinkEvent::PeerRestarted), "{ea:?}");
}

#[test]
fn handshake_then_full_table_in_chunks_then_incremental() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let now = handshake(&mut a, &mut b, t0);
    let ea = events(&mut a);
    assert!(ea.contains(&LinkEvent::PeerRestarted) && ea.contains(&LinkEvent::PeerUp));
    assert!(
        ea.contains(&LinkEvent::SendFullTable),
        "b wants our table: {ea:?}"
    );
    assert!(events(&mut b).contains(&LinkEvent::SendFullTable));
    b.queue_full(vec![]);
    let table: Vec<Item> = (0..100).map(|i| flow(20000 + i)).collect();
    a.queue_full(table.clone());
    let dgrams = drain(&mut a, now);
    assert_eq!(dgrams.len(), 100usize.div_ceil(ITEMS_PER_DATAGRAM));
    feed(&mut b, A, now, &dgrams);
    let ev = events(&mut b);
    assert_eq!(ev.first(), Some(&LinkEvent::FullStarted));
    assert_eq!(ev.last(), Some(&LinkEvent::FullTableApplied));
    let got: Vec<Item> = ev
        .into_iter()
        .flat_map(|e| match e {
            LinkEvent::Items { items, full } => {
                assert!(full);
                items
            }
            _ => vec![],
        })
        .collect();
    assert_eq!(got, table);
    assert!(b.synced());
    // Then changes flow in order.
    a.queue(&[Item::FlowGone {
        relay_port: RelayPort::first(20000),
    }]);
    let d = drain(&mut a, now);
    feed(&mut b, A, now, &d);
    assert!(
        matches!(&events(&mut b)[..], [LinkEvent::Items { items, full: false }] if items.len() == 1)
    );
    // A lost message (gap) makes b ask again, without a restart.
    a.queue(&[flow(1)]);
    let _lost = drain(&mut a, now);
    a.queue(&[flow(2)]);
    let d = drain(&mut a, now);
    feed(&mut b, A, now, &d);
    // Held for the missing one a while (it may only be late), then given up.
    assert!(b.synced());
    assert!(events(&mut b).is_empty(), "flow(2) waits for flow(1)");
    assert!(b.poll_timeout().is_some_and(|t| t <= now + REORDER_WAIT));
    b.handle_timeout(now + REORDER_WAIT / 2);
    assert!(b.synced(), "still waiting");
    b.handle_timeout(now + REORDER_WAIT);
    assert!(!b.synced());
    let eb = events(&mut b);
    assert!(
        matches!(&eb[..], [LinkEvent::Items { items, full: false }] if items == &[flow(2)]),
        "{eb:?}"
    );
    // Replays and strangers are dropped.
    feed(&mut b, A, now, &d);
    assert_eq!(b.stats().dropped(SyncDrop::Replay), 1);
    b.handle_datagram(now, addr("10.9.9.9:7000"), &d[0]);
    assert_eq!(b.stats().dropped(SyncDrop::NotPeer), 1);
    // b's next hello asks; a sends a new full table.
    let d = drain(&mut b, now + HELLO_EVERY);
    feed(&mut a, B, now + HELLO_EVERY, &d);
    assert!(events(&mut a).contains(&LinkEvent::SendFullTable));
    // Silence: the peer goes down once.
    b.handle_timeout(now + PEER_TIMEOUT);
    assert_eq!(events(&mut b), vec![LinkEvent::PeerDown]);
    assert!(!b.stats().peer_up);
}

#[test]
fn empty_full_table_completes_and_mismatch_is_reported_once() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let now = handshake(&mut a, &mut b, t0);
    events(&mut b);
    a.queue_full(vec![]);
    let d = drain(&mut a, now);
    assert_eq!(d.len(), 1);
    feed(&mut b, A, now, &d);
    assert!(events(&mut b).contains(&LinkEvent::FullTableApplied));
    a.set_local(0, 0, 99);
    for i in 1..4 {
        let d = drain(&mut a, now + HELLO_EVERY * i);
        feed(&mut b, A, now + HELLO_EVERY * i, &d);
    }
    let ev = events(&mut b);
    assert_eq!(
        ev.iter()
            .filter(|e| **e == LinkEvent::BackendMismatch)
            .count(),
        1
    );
    assert_eq!(b.stats().dropped(SyncDrop::BackendMismatch), 1);
    assert_eq!(
        backends_hash(&["a", "b"]),
        backends_hash(&["b", "a"]),
        "order does not matter"
    );
}

/// One host restarted after a key rotation hashes Call-IDs with other keys: both
/// sides report it once per onset; unknown (0, an older peer) is not a mismatch.
#[test]
fn other_dialog_keys_are_reported_once() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    a.set_dialog_keys(5);
    b.set_dialog_keys(5);
    let mut now = handshake(&mut a, &mut b, t0);
    let hellos = |a: &mut Link, b: &mut Link, now: &mut Instant| {
        for _ in 0..3 {
            *now += HELLO_EVERY;
            let d = drain(a, *now);
            feed(b, A, *now, &d);
            let d = drain(b, *now);
            feed(a, B, *now, &d);
        }
    };
    hellos(&mut a, &mut b, &mut now);
    let count = |l: &mut Link| {
        events(l)
            .iter()
            .filter(|e| **e == LinkEvent::DialogKeyMismatch)
            .count()
    };
    assert_eq!((count(&mut a), count(&mut b)), (0, 0), "same keys");
    b.set_dialog_keys(6);
    hellos(&mut a, &mut b, &mut now);
    assert_eq!((count(&mut a), count(&mut b)), (1, 1), "once each");
    assert_eq!(a.stats().dropped(SyncDrop::DialogKeyMismatch), 1);
    b.set_dialog_keys(0);
    hellos(&mut a, &mut b, &mut now);
    assert_eq!(
        (count(&mut a), count(&mut b)),
        (0, 0),
        "unknown is no mismatch"
    );
    b.set_dialog_keys(6);
    hellos(&mut a, &mut b, &mut now);
    assert_eq!((count(&mut a), count(&mut b)), (1, 1), "a new onset");
}

#[test]
fn table_traffic_is_paced_hellos_are_not() {
    let t0 = Instant::now();
    let (mut a, _) = pair(t0);
    let _first_hello = drain(&mut a, t0);
    let items: Vec<Item> = (0..(SEND_PER_INTERVAL * ITEMS_PER_DATAGRAM * 2) as u16)
        .map(flow)
        .collect();
    a.queue_full(items);
    assert_eq!(drain(&mut a, t0).len(), SEND_PER_INTERVAL);
    assert_eq!(a.poll_timeout(), Some(t0 + PACING_INTERVAL));
    let later = t0 + HELLO_EVERY;
    a.handle_timeout(later);
    let d = drain(&mut a, later);
    assert_eq!(d.len(), SEND_PER_INTERVAL + 1, "the hello on top");
    assert!(d.iter().all(|d| d.len() <= MAX_DATAGRAM));
    assert_eq!(a.poll_timeout(), Some(later + HELLO_EVERY));
}

#[test]
fn pending_overflow_asks_for_a_full_table_once() {
    let t0 = Instant::now();
    let (mut a, _) = pair(t0);
    let chunk = vec![flow(1); MAX_PENDING / 2 + 1];
    a.queue(&chunk);
    a.queue(&chunk);
    a.queue(&chunk);
    assert!(events(&mut a).contains(&LinkEvent::SendFullTable));
    a.queue_full(vec![flow(2)]);
    let d = drain(&mut a, t0);
    assert_eq!(d.len(), 2, "a hello and the table");
}

/// `sync.max_pending_changes` is the bound, and each overflow is counted.
#[test]
fn pending_bound_is_the_configured_one_and_overflows_are_counted() {
    let t0 = Instant::now();
    let (mut a, _) = pair(t0);
    a.set_max_pending(100);
    a.queue(&vec![flow(1); 100]);
    assert_eq!(a.stats().pending_overflows, 0);
    assert!(!events(&mut a).contains(&LinkEvent::SendFullTable));
    a.queue(&[flow(2)]);
    assert_eq!(a.stats().pending_overflows, 1);
    assert!(events(&mut a).contains(&LinkEvent::SendFullTable));
    a.queue_full(vec![flow(3)]);
    a.queue(&vec![flow(4); 100]);
    a.queue(&[flow(5)]);
    assert_eq!(a.stats().pending_overflows, 2);
}

#[test]
fn oversize_is_dropped_unhashed_and_stranger_epochs_wait_for_the_handshake() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    b.handle_datagram(t0, addr(A), &vec![0u8; 65_000]);
    assert_eq!(b.stats().dropped(SyncDrop::Oversize), 1);
    // Before the handshake, items from a are not applied.
    a.queue(&[flow(1)]);
    let d = drain(&mut a, t0);
    feed(&mut b, A, t0, &d[1..]);
    assert_eq!(b.stats().dropped(SyncDrop::UnverifiedEpoch), 1);
    assert!(events(&mut b).is_empty());
}

fn new_key() -> Key {
    Key::new(b"the rotated key, 32 bytes long!")
}

/// A fresh datagram from `epoch` sealed with `key` (as a peer holding only that key
/// would send it).
fn sealed_by(key: &Key, epoch: u64, seq: u64) -> Vec<u8> {
    use crate::sync::message::{Envelope, Ext, VERSION, seal};
    let env = Envelope {
        version: VERSION,
        epoch,
        seq,
        body: Body::Items(vec![]),
        ext: Ext::default(),
    };
    let mut buf = [0u8; MAX_DATAGRAM];
    let n = seal(key, &env, &mut buf).unwrap();
    buf[..n].to_vec()
}

/// b's host is restarted with the new key while a is mid-rotation (reloaded, still
/// sealing with the old key): b holds the new key only, so a must seal with it before b
/// can read and answer a's challenge. The link comes up once b's previous run has gone
/// silent ([`PEER_TIMEOUT`]), not after the grace.
#[test]
fn a_peer_restarted_with_the_new_key_is_admitted_after_the_peer_timeout() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let now = handshake(&mut a, &mut b, t0);
    events(&mut a);
    a.set_key(new_key(), Duration::from_secs(300), now);
    assert!(!events(&mut a).contains(&LinkEvent::KeyInUse));
    drop(b);
    let mut b = Link::new(new_key(), addr(A), 3, backends_hash(&["a", "b"]), now);
    // While the run a admitted still counts as alive, a keeps to the old key (a
    // candidate sealed with the new one might be a recording).
    feed(&mut a, B, now, &drain(&mut b, now));
    assert!(!events(&mut a).contains(&LinkEvent::KeyInUse));
    // The old run is silent for PEER_TIMEOUT: now a candidate with the new key counts.
    let now = now + PEER_TIMEOUT;
    a.handle_timeout(now);
    let now = handshake(&mut a, &mut b, now + HELLO_EVERY);
    let ea = events(&mut a);
    assert!(ea.contains(&LinkEvent::KeyInUse), "{ea:?}");
    assert!(ea.contains(&LinkEvent::PeerRestarted), "{ea:?}");
    let eb = events(&mut b);
    assert!(eb.contains(&LinkEvent::PeerUp), "{eb:?}");
    // Both admitted: a's table reaches b.
    assert!(eb.contains(&LinkEvent::SendFullTable) || ea.contains(&LinkEvent::SendFullTable));
    a.queue_full(vec![flow(20000)]);
    let d = drain(&mut a, now);
    feed(&mut b, A, now, &d);
    assert!(events(&mut b).contains(&LinkEvent::FullTableApplied));
    assert!(b.synced());
}

/// During the grace the previous key opens only the admitted run's datagrams: a new
/// run sealed with it (one who kept the retired key, posing as a restarted peer) is
/// not admitted, and its hellos do not even become candidates.
#[test]
fn the_previous_key_does_not_admit_a_new_run() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let now = handshake(&mut a, &mut b, t0);
    events(&mut a);
    a.set_key(new_key(), Duration::from_secs(300), now);
    // The admitted b, on the old key, still gets through.
    let now = now + HELLO_EVERY;
    feed(&mut a, B, now, &drain(&mut b, now));
    assert_eq!(a.stats().dropped(SyncDrop::PreviousKeyNewEpoch), 0);
    // A new run holding only the old key: its hellos answer a's challenge once a
    // seals with the old key, but none is taken.
    let mut forged = Link::new(key(), addr(A), 77, backends_hash(&["a", "b"]), now);
    let mut at = now;
    for _ in 0..5 {
        at += HELLO_EVERY;
        feed(&mut a, B, at, &drain(&mut forged, at));
        feed(&mut forged, A, at, &drain(&mut a, at));
    }
    assert!(a.stats().dropped(SyncDrop::PreviousKeyNewEpoch) >= 5);
    let ea = events(&mut a);
    assert!(!ea.contains(&LinkEvent::PeerRestarted), "{ea:?}");
    // b, admitted, still talks to a.
    feed(&mut a, B, at, &drain(&mut b, at));
    assert_eq!(a.stats().dropped(SyncDrop::Replay), 0);
}

/// Two rotations on a before b took the first: the oldest key, still the one a seals
/// with, ends where the first rotation's grace ended, not a grace after the second.
#[test]
fn a_second_rotation_does_not_extend_the_oldest_key() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let now = handshake(&mut a, &mut b, t0);
    let grace = Duration::from_secs(60);
    a.set_key(new_key(), grace, now);
    a.set_key(
        Key::new(b"a third key, thirty-two bytes!!"),
        grace,
        now + grace / 2,
    );
    assert!(a.rotating());
    a.handle_timeout(now + grace + Duration::from_secs(1));
    assert!(!a.rotating(), "the first key outlived its grace");
}

/// Only a's host was reloaded: a keeps sealing with the old key (b has no other) and
/// accepts it for the grace, then refuses it and seals with the new one.
#[test]
fn the_previous_key_is_refused_after_the_grace() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let mut now = handshake(&mut a, &mut b, t0);
    events(&mut a);
    let grace = Duration::from_secs(60);
    assert!(a.set_key(new_key(), grace, now));
    assert!(
        !a.set_key(new_key(), grace, now),
        "the same key again: no change"
    );
    assert!(a.rotating());
    // Within the grace both directions work on the old key.
    now += HELLO_EVERY;
    let d = drain(&mut a, now);
    assert!(!d.is_empty());
    feed(&mut b, A, now, &d);
    feed(&mut a, B, now, &drain(&mut b, now));
    for l in [&a, &b] {
        assert_eq!(l.stats().dropped(SyncDrop::BadMac), 0);
    }
    assert!(!events(&mut a).contains(&LinkEvent::KeyInUse));
    assert_eq!(a.poll_timeout().map(|t| t <= now + grace), Some(true));
    // The grace runs out.
    let late = now + grace;
    a.handle_timeout(late);
    assert!(events(&mut a).contains(&LinkEvent::PreviousKeyRetired {
        peer_switched: false
    }));
    assert!(!a.rotating());
    a.handle_datagram(late, addr(B), &sealed_by(&key(), 2, 1000));
    assert_eq!(
        a.stats().dropped(SyncDrop::BadMac),
        1,
        "the old key is refused"
    );
    a.handle_datagram(late, addr(B), &sealed_by(&new_key(), 2, 1001));
    assert_eq!(
        a.stats().dropped(SyncDrop::BadMac),
        1,
        "the new one is taken"
    );
    // And a seals with the new key now, which the unreloaded b refuses.
    let d = drain(&mut a, late + HELLO_EVERY);
    feed(&mut b, A, late + HELLO_EVERY, &d);
    assert_eq!(b.stats().dropped(SyncDrop::BadMac), d.len() as u64);
}

/// Both reloaded: the second switches at once (it heard the first announce the key),
/// the first when it sees the second seal with it; the old key is refused
/// [`KEY_LINGER`] after the peer switched, long before the grace.
#[test]
fn both_reloaded_switch_and_retire_the_previous_key_early() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let mut now = handshake(&mut a, &mut b, t0);
    events(&mut a);
    events(&mut b);
    let grace = Duration::from_secs(300);
    a.set_key(new_key(), grace, now);
    now += PROMPT_GAP;
    feed(&mut b, A, now, &drain(&mut a, now));
    b.set_key(new_key(), grace, now);
    assert_eq!(events(&mut b), vec![LinkEvent::KeyInUse]);
    // b's prompt hello is sealed with the new key: a switches too.
    now += PROMPT_GAP;
    let d = drain(&mut b, now);
    assert!(!d.is_empty());
    feed(&mut a, B, now, &d);
    assert_eq!(events(&mut a), vec![LinkEvent::KeyInUse]);
    now += PROMPT_GAP;
    feed(&mut b, A, now, &drain(&mut a, now));
    for (l, from) in [(&mut a, 2), (&mut b, 1)] {
        assert_eq!(l.stats().dropped(SyncDrop::BadMac), 0);
        // Reordered old-key datagrams are still taken for a moment...
        l.handle_datagram(
            now,
            addr(if from == 2 { B } else { A }),
            &sealed_by(&key(), from, 500),
        );
        assert_eq!(l.stats().dropped(SyncDrop::BadMac), 0);
        // ...but not after the linger.
        let later = now + KEY_LINGER;
        l.handle_timeout(later);
        assert!(events(l).contains(&LinkEvent::PreviousKeyRetired {
            peer_switched: true
        }));
        l.handle_datagram(
            later,
            addr(if from == 2 { B } else { A }),
            &sealed_by(&key(), from, 501),
        );
        assert_eq!(l.stats().dropped(SyncDrop::BadMac), 1);
    }
}

/// Changes at a steady rate above what fits behind a large full table: the table going
/// out is finished (the peer applies a whole one) and a newer one follows, instead of
/// starting over each time the queue overflows (which under such churn never ends).
#[test]
fn churn_while_a_full_table_goes_out_lets_it_finish() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let mut now = handshake(&mut a, &mut b, t0);
    events(&mut a);
    events(&mut b);
    let table: Vec<Item> = (0..200_000u32).map(|i| flow((i % 60_000) as u16)).collect();
    a.queue_full(table.clone());
    let (mut applied, mut tables) = (None, 1);
    // The table takes about 0.43 s to pace out (8,334 datagrams, 384 per 20 ms); the
    // changes pass the queue's bound every third step, about every 60 ms.
    for step in 0..2_000 {
        a.queue(&vec![flow(7); 700]);
        if step % 3 == 0 {
            a.queue(&vec![flow(8); MAX_PENDING / 2]);
        }
        a.handle_timeout(now);
        let d = drain(&mut a, now);
        feed(&mut b, A, now, &d);
        for ev in events(&mut a) {
            if ev == LinkEvent::SendFullTable {
                a.queue_full(table.clone());
                tables += 1;
            }
        }
        b.handle_timeout(now);
        let d = drain(&mut b, now);
        feed(&mut a, B, now, &d);
        if applied.is_none() && events(&mut b).contains(&LinkEvent::FullTableApplied) {
            applied = Some(step);
        }
        now += PACING_INTERVAL;
    }
    assert!(
        applied.is_some(),
        "no full table completed ({tables} started)"
    );
    assert!(b.synced());
    assert!(
        tables >= 2,
        "the dropped changes got a newer table: {tables}"
    );
}

/// A peer that hashes Call-IDs with other keys: its dialog items, which no Call-ID of
/// ours could find, are skipped and counted; its flows still apply.
#[test]
fn dialog_items_of_a_peer_with_other_dialog_keys_are_skipped() {
    use crate::relay::{Side, Span};
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    a.set_dialog_keys(11);
    b.set_dialog_keys(22);
    let now = handshake(&mut a, &mut b, t0);
    events(&mut b);
    let dialog = Item::Dialog {
        key: 7,
        backend: 1,
        span: Span::Dialog,
        opener: Side::Client,
        flow: RelayPort::first(20001),
    };
    a.queue(&[flow(20001), dialog]);
    a.queue_full(vec![flow(20002), dialog]);
    let d = drain(&mut a, now);
    feed(&mut b, A, now, &d);
    let applied: Vec<Item> = events(&mut b)
        .into_iter()
        .flat_map(|e| match e {
            LinkEvent::Items { items, .. } => items,
            _ => vec![],
        })
        .collect();
    assert_eq!(applied, vec![flow(20002)], "the dialogs were applied");
    assert_eq!(b.stats().dialog_items_skipped, 1);
    // The same keys: applied.
    b.set_dialog_keys(11);
    a.queue(&[dialog]);
    let d = drain(&mut a, now);
    feed(&mut b, A, now, &d);
    assert!(events(&mut b).contains(&LinkEvent::Items {
        items: vec![dialog],
        full: false
    }));
}

/// A sender packs at most `ITEMS_PER_DATAGRAM` items; a datagram with more (a peer
/// that holds the key but not the protocol) is dropped whole, so a turn of received
/// datagrams cannot carry many times the work they were sized for.
#[test]
fn a_datagram_with_more_items_than_a_sender_packs_is_dropped() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    let now = handshake(&mut a, &mut b, t0);
    events(&mut b);
    let sealed = |n: usize, seq| {
        let items = (0..n)
            .map(|i| Item::FlowGone {
                relay_port: RelayPort::first(20000 + i as u16),
            })
            .collect();
        sealed_env(&Envelope {
            version: VERSION,
            epoch: 1,
            seq,
            body: Body::Items(items),
            ext: Ext::default(),
        })
    };
    let decode = |l: &Link| l.stats().dropped[SyncDrop::Decode as usize];
    feed(&mut b, A, now, &[sealed(ITEMS_PER_DATAGRAM + 1, 1000)]);
    assert_eq!(decode(&b), 1);
    let items = |evs: Vec<LinkEvent>| evs.iter().any(|e| matches!(e, LinkEvent::Items { .. }));
    assert!(!items(events(&mut b)));
    feed(&mut b, A, now, &[sealed(ITEMS_PER_DATAGRAM, 1001)]);
    assert_eq!(decode(&b), 1);
    assert!(items(events(&mut b)));
}

/// Hellos of a past run, recorded and replayed from the peer's address faster than the
/// live peer's come, must not keep the handshake from completing: each would replace
/// the live peer's challenge in our hellos. They are dated by their sender's clock: a
/// stale one is dropped while a fresh one came lately.
#[test]
fn replayed_hellos_of_a_past_run_do_not_block_the_handshake() {
    let t0 = Instant::now();
    let wall = 1_800_000_000_000;
    let h = backends_hash(&["a", "b"]);
    // A's run of an hour ago: its hellos are the recordings.
    let mut past = Link::new(key(), addr(B), 9, h, t0);
    past.set_wall_clock(t0, wall - 3_600_000);
    let recorded = drain(&mut past, t0);
    assert!(!recorded.is_empty());
    let (mut a, mut b) = pair(t0);
    a.set_wall_clock(t0, wall);
    b.set_wall_clock(t0, wall);
    let mut now = t0;
    for _ in 0..8 {
        let d = drain(&mut a, now);
        feed(&mut b, A, now, &d);
        for _ in 0..10 {
            feed(&mut b, A, now, &recorded);
        }
        let d = drain(&mut b, now);
        feed(&mut a, B, now, &d);
        now += PROMPT_GAP;
    }
    assert_eq!(a.epochs.acked().0, 2, "A admitted B");
    assert_eq!(b.epochs.acked().0, 1, "B admitted A");
    assert!(b.stats().dropped[SyncDrop::StaleHello as usize] > 0);
}

/// Hosts whose clocks are further apart than `FRESH_WITHIN` see each other's hellos
/// as stale: with no fresh hello around they are taken as before, and the handshake
/// completes.
#[test]
fn the_handshake_completes_between_hosts_with_skewed_clocks() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0);
    a.set_wall_clock(t0, 1_800_000_000_000);
    b.set_wall_clock(t0, 1_800_000_000_000 + 3_600_000);
    handshake(&mut a, &mut b, t0);
    assert_eq!(a.epochs.acked().0, 2);
    assert_eq!(b.epochs.acked().0, 1);
    assert_eq!(b.stats().dropped[SyncDrop::StaleHello as usize], 0);
}

/// A peer whose clock is over `FRESH_WITHIN` from ours restarts, while someone replays
/// hellos of its previous (admitted) run dated near our clock: the replays are refused
/// as replays and do not count as the peer's clock agreeing with ours, and a stale
/// hello still draws our challenge, which the live peer answers: it is let in.
#[test]
fn a_restarted_peer_with_a_skewed_clock_is_let_in_despite_replays() {
    let t0 = Instant::now();
    let wall = 1_800_000_000_000;
    let h = backends_hash(&["a", "b"]);
    let (mut a, mut b) = pair(t0);
    a.set_wall_clock(t0, wall);
    b.set_wall_clock(t0, wall + 120_000);
    let mut now = handshake(&mut a, &mut b, t0);
    assert_eq!(a.epochs.acked().0, 2);
    // Hellos of B's run, as its seal would make them two minutes ago by its clock:
    // dated near A's clock now.
    let replay = |seq: u64| {
        let env = Envelope {
            version: VERSION,
            epoch: 2,
            seq,
            body: Body::Hello {
                backends_hash: h,
                flows: 0,
                dialogs: 0,
                acked_epoch: 1,
                acked: 1,
                want_full: false,
                challenge: 4242,
                echo: 0,
            },
            ext: Ext {
                sent_ms: wall,
                ..Ext::default()
            },
        };
        sealed_env(&env)
    };
    let replays: Vec<Vec<u8>> = (1..=3).map(replay).collect();
    // B restarts (epoch 5), its clock still two minutes ahead.
    let mut b2 = Link::new(key(), addr(A), 5, h, now);
    b2.set_wall_clock(now, wall + 120_000);
    for _ in 0..8 {
        feed(&mut a, B, now, &replays);
        let d = drain(&mut b2, now);
        feed(&mut a, B, now, &d);
        feed(&mut a, B, now, &replays);
        let d = drain(&mut a, now);
        feed(&mut b2, A, now, &d);
        now += PROMPT_GAP;
    }
    assert_eq!(a.epochs.acked().0, 5, "A let the restarted B in");
    assert_eq!(b2.epochs.acked().0, 1, "B admitted A");
    assert!(a.stats().dropped[SyncDrop::Replay as usize] > 0);
}
