//! Stray VRRP adverts on the segment (issue 14): a host that is not a peer floods the
//! master with adverts. Namespaces as in tests/vrrp_netns.rs (10.77.0.0/24 on a bridge,
//! unique names, deleted also on failure); the rogue is 10.77.0.13 and crafts adverts
//! with the library's own `Repr::emit`, sent from a raw socket (protocol 112, TTL 255)
//! in its namespace, at a fixed rate for a few seconds.
//!
//! - With `peers` (unicast): the rogue's adverts, whatever their priority (100, 254,
//!   255), are dropped as `not_peer`; the master keeps the VIP, nobody changes state.
//! - Multicast without `peers`: lower priority adverts make the master re-advertise and
//!   re-announce, but bounded: the GARP count grows by a few bursts, not one per
//!   advert, and the backup never sees the master's adverts late (it stays backup).
//!   Priority 0 adverts from the rogue (not the master the backup follows) are dropped
//!   by the backup, which stays backup.
//!   Priority 254 from anyone would take the address there: that is VRRP (keepalived
//!   does the same), and `peers` is the mitigation.
//! - Multicast without `peers`, adverts of priority 255 and 0 in turn: each pair flips
//!   the master to backup and back (VRRP allows that to anyone on the segment), but
//!   what a flip costs is bounded: transition log lines (10, then one per second),
//!   takeover GARP bursts (one per 100 ms), VIP changes (only the latest is run); once
//!   the flood stops, the pair settles with the VIP on A alone.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};
use testkit::*;

use sipfront::vrrp::{MCAST_GROUP, Repr};
use socket2::{Domain, Protocol, Socket, Type};

const BACKEND: (&str, &str) = ("beA", "10.77.0.21:5060");
const ROGUE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 13);

/// Sends adverts for VRID 51 / the test VIP from `host` to `dests`, cycling through
/// `priorities` (advert interval `interval_cs`), `rate` per second for `duration`.
/// Returns how many went out.
fn flood(
    host: &Host,
    dests: &[Ipv4Addr],
    (priorities, interval_cs): (&[u8], u16),
    rate: u32,
    duration: Duration,
) -> u64 {
    let src = host.addr;
    let dests = dests.to_vec();
    let priorities = priorities.to_vec();
    host.ns.enter(move || {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).unwrap();
        s.set_ttl_v4(255).unwrap();
        s.set_multicast_ttl_v4(255).unwrap();
        s.set_multicast_if_v4(&src).unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        let vip: Ipv4Addr = VIP.parse().unwrap();
        let mut buf = [0u8; 64];
        let start = Instant::now();
        let mut n: u64 = 0;
        while start.elapsed() < duration {
            // Pace: n adverts by now.
            let due = start + Duration::from_secs_f64(n as f64 / f64::from(rate));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let repr = Repr {
                vrid: 51,
                priority: priorities[n as usize % priorities.len()],
                max_advert_int_cs: interval_cs,
                addrs: vec![vip],
            };
            for d in &dests {
                let len = repr.emit(&mut buf, src, *d);
                let to = SocketAddr::V4(SocketAddrV4::new(*d, 0));
                if s.send_to(&buf[..len], &to.into()).is_ok() {
                    n += 1;
                }
            }
        }
        n
    })
}

/// A (150) and B (100) with `extra_a` / `extra_b` in their `[vrrp]`; waits until A is
/// master, B backup, and only A holds the VIP.
fn start_pair(dir: &TestDir, lan: &Lan, extra_a: &str, extra_b: &str) -> (NsSipfront, NsSipfront) {
    let mut a = NsSipfront::start(
        dir,
        lan.host("sfA"),
        "sfA",
        &sipfront_toml(150, &[BACKEND], extra_a),
    );
    a.expect_state(VrrpState::Master, Duration::from_secs(10));
    let mut b = NsSipfront::start(
        dir,
        lan.host("sfB"),
        "sfB",
        &sipfront_toml(100, &[BACKEND], extra_b),
    );
    let ok = wait_until(Duration::from_secs(10), || {
        b.metric("sipfront_vrrp_adverts_total", &[("dir", "received")]) >= 5.0
    });
    assert!(ok, "B hears no adverts from A; log:\n{}", b.log_tail(20));
    b.expect_state(VrrpState::Backup, Duration::from_secs(5));
    assert_eq!(lan.holders(VIP), ["sfA"]);
    // The takeover's two bursts (5 GARPs each, the second after garp_delay 1 s) are out.
    let ok = wait_until(Duration::from_secs(5), || {
        a.metric("sipfront_vrrp_garp_total", &[]) >= 10.0
    });
    assert!(ok, "A's takeover GARP bursts; log:\n{}", a.log_tail(20));
    (a, b)
}

fn rogue_lan() -> Lan {
    Lan::new(&[("sfA", 11), ("sfB", 12), ("rogue", 13), ("beA", 21)])
}

#[test]
fn with_peers_a_rogue_at_any_priority_is_dropped_and_the_master_keeps_the_vip() {
    let _serial = serial();
    let dir = TestDir::new("vrrp-rogue-peers");
    let lan = rogue_lan();
    assert_eq!(lan.host("rogue").addr, ROGUE);
    let _uas = NsSipp::uas(&dir, lan.host("beA"), "uas-a");
    let (mut a, mut b) = start_pair(
        &dir,
        &lan,
        &format!("peers = [\"{NET}.12\"]"),
        &format!("peers = [\"{NET}.11\"]"),
    );
    let (ta, tb) = (a.transitions(), b.transitions());
    let not_peer = |sf: &mut NsSipfront| {
        sf.metric(
            "sipfront_vrrp_adverts_dropped_total",
            &[("reason", "not_peer")],
        )
    };
    let (drop_a, drop_b) = (not_peer(&mut a), not_peer(&mut b));
    let garp_a = a.metric("sipfront_vrrp_garp_total", &[]);

    // 3 s at 1000 adverts/s in all, to A, to B and to the group: 100 (lower), 254, 255.
    let dests = [lan.host("sfA").addr, lan.host("sfB").addr, MCAST_GROUP];
    let sent = flood(
        lan.host("rogue"),
        &dests,
        (&[100, 254, 255], 10),
        1000,
        Duration::from_secs(3),
    );
    assert!(sent > 2500, "the rogue sent only {sent} adverts");
    std::thread::sleep(Duration::from_millis(500));

    a.expect_state(VrrpState::Master, Duration::from_secs(1));
    b.expect_state(VrrpState::Backup, Duration::from_secs(1));
    assert_eq!(lan.holders(VIP), ["sfA"], "the VIP moved");
    assert_eq!(a.transitions(), ta, "A changed state");
    assert_eq!(b.transitions(), tb, "B changed state");
    let (da, db) = (not_peer(&mut a) - drop_a, not_peer(&mut b) - drop_b);
    eprintln!("sent {sent}; not_peer drops: A {da}, B {db}");
    // Each of A and B gets its unicast third and the multicast third (the kernel may
    // drop some from a full socket buffer under the flood).
    assert!(
        da > sent as f64 / 3.0,
        "A dropped {da} of {sent} as not_peer"
    );
    assert!(
        db > sent as f64 / 3.0,
        "B dropped {db} of {sent} as not_peer"
    );
    assert_eq!(
        a.metric("sipfront_vrrp_garp_total", &[]),
        garp_a,
        "A sent GARP for a non-peer"
    );
    assert_eq!(a.metric("sipfront_vrrp_other_master_total", &[]), 0.0);
    assert!(
        !a.log_text().contains("without `peers`"),
        "the multicast warning with peers set"
    );
    // Said in the log too, at most once per 10 s: 3,000 drops, one or two lines.
    let lines = a.log_lines("vrrp packet dropped");
    assert!(
        (1..=2).contains(&lines.len()) && lines[0].contains("not_peer"),
        "{lines:?}"
    );
}

#[test]
fn multicast_without_peers_lower_priority_flood_is_bounded_and_adverts_stay_on_time() {
    let _serial = serial();
    let dir = TestDir::new("vrrp-rogue-mcast");
    let lan = rogue_lan();
    let _uas = NsSipp::uas(&dir, lan.host("beA"), "uas-a");
    let (mut a, mut b) = start_pair(&dir, &lan, "", "");
    assert!(
        a.log_text().contains("without `peers`"),
        "no startup warning for multicast without peers; log:\n{}",
        a.log_tail(20)
    );
    let (ta, tb) = (a.transitions(), b.transitions());
    let garp_before = a.metric("sipfront_vrrp_garp_total", &[]);
    let sent_before = a.metric("sipfront_vrrp_adverts_total", &[("dir", "sent")]);
    let seen_before = a.metric("sipfront_vrrp_other_master_total", &[]);

    // 3 s at 2000 lower priority adverts/s (priority 50: below both).
    let t0 = Instant::now();
    let sent = flood(
        lan.host("rogue"),
        &[MCAST_GROUP],
        (&[50], 10),
        2000,
        Duration::from_secs(3),
    );
    let secs = t0.elapsed().as_secs_f64();
    assert!(sent > 3000, "the rogue sent only {sent} adverts");
    std::thread::sleep(Duration::from_millis(300));

    let garps = a.metric("sipfront_vrrp_garp_total", &[]) - garp_before;
    let adverts = a.metric("sipfront_vrrp_adverts_total", &[("dir", "sent")]) - sent_before;
    let seen = a.metric("sipfront_vrrp_other_master_total", &[]) - seen_before;
    eprintln!(
        "rogue sent {sent} in {secs:.1} s; A: {seen} other-master adverts, {adverts} adverts sent, \
         {garps} GARPs"
    );
    assert!(seen > 100.0, "A saw only {seen} of the rogue's adverts");
    // garp_repeat 5, one VIP: one burst per second at most, plus the pending one.
    let max_garps = 5.0 * (secs + 0.3 + 2.0).ceil();
    assert!(
        garps <= max_garps,
        "{garps} GARPs in {secs:.1} s (at most {max_garps})"
    );
    assert!(garps >= 5.0, "A never re-announced the VIP");
    // 100 ms interval: about one advert per interval (the floor leaves a slow machine
    // room; B staying backup below is what shows they kept coming), at most one reply
    // more.
    let span = secs + 0.3;
    assert!(
        adverts >= span * 10.0 * 0.3 && adverts <= span * 20.0 + 4.0,
        "{adverts} adverts in {span:.1} s"
    );
    // The warning is rate-limited.
    let warns = a
        .log_text()
        .lines()
        .filter(|l| l.contains("another master with a lower priority"))
        .count();
    assert!(warns <= 2, "{warns} warnings for the flood");
    // On time: B never missed A for a Master_Down_Interval.
    a.expect_state(VrrpState::Master, Duration::from_secs(1));
    b.expect_state(VrrpState::Backup, Duration::from_secs(1));
    assert_eq!(a.transitions(), ta, "A changed state");
    assert_eq!(b.transitions(), tb, "B changed state");
    assert_eq!(lan.holders(VIP), ["sfA"]);

    // "Leaving" adverts (priority 0) from the rogue, not the master B follows: B
    // drops them (counted, not as received) instead of taking over after Skew_Time.
    let zero = [("reason", "zero_not_master")];
    let received = [("dir", "received")];
    let (dropped0, received0) = (
        b.metric("sipfront_vrrp_adverts_dropped_total", &zero),
        b.metric("sipfront_vrrp_adverts_total", &received),
    );
    let t1 = Instant::now();
    let sent = flood(
        lan.host("rogue"),
        &[MCAST_GROUP],
        (&[0], 10),
        500,
        Duration::from_secs(1),
    );
    let span = t1.elapsed().as_secs_f64() + 0.3;
    std::thread::sleep(Duration::from_millis(300));
    let dropped = b.metric("sipfront_vrrp_adverts_dropped_total", &zero) - dropped0;
    let received = b.metric("sipfront_vrrp_adverts_total", &received) - received0;
    eprintln!("rogue sent {sent} priority 0 adverts; B dropped {dropped}, received {received}");
    assert!(sent > 300, "the rogue sent only {sent}");
    assert!(dropped > 300.0, "B dropped only {dropped} of {sent}");
    // A's adverts only: one per 100 ms, and an answer to each of the rogue's at most
    // once per interval.
    assert!(received <= span * 20.0 + 4.0, "B received {received}");
    let warns = b
        .log_text()
        .lines()
        .filter(|l| l.contains("priority 0 advert from a host that is not the master"))
        .count();
    assert!((1..=2).contains(&warns), "{warns} warnings for the flood");
    assert_eq!(b.transitions(), tb, "B changed state");
    assert_eq!(a.transitions(), ta, "A changed state");
    assert_eq!(lan.holders(VIP), ["sfA"]);
    // The speaker still stops cleanly (priority 0 hand-over from its own thread).
    let st = a.terminate(Duration::from_secs(10));
    assert!(st.success(), "A exited with {st}; log:\n{}", a.log_tail(20));
    assert!(
        b.wait_transition("master", "priority_zero", Duration::from_secs(5)),
        "B transitions: {:?}",
        b.transitions()
    );
}

#[test]
fn multicast_without_peers_a_flip_flood_costs_bounded_logs_garps_and_vip_changes() {
    let _serial = serial();
    let dir = TestDir::new("vrrp-rogue-flip");
    let lan = rogue_lan();
    let _uas = NsSipp::uas(&dir, lan.host("beA"), "uas-a");
    let (mut a, mut b) = start_pair(&dir, &lan, "", "");
    let lines = |sf: &NsSipfront| sf.transitions().len();
    let (lines_a, lines_b) = (lines(&a), lines(&b));
    let moves_before = a.metric("sipfront_vrrp_transitions_total", &[]);
    let garp_before = a.metric("sipfront_vrrp_garp_total", &[]);

    // 3 s at 2000 adverts/s: 255 (A yields), 0 (A takes over after Skew_Time, which
    // the sender's 1 cs interval makes 0), ...
    let t0 = Instant::now();
    let sent = flood(
        lan.host("rogue"),
        &[MCAST_GROUP],
        (&[255, 0], 1),
        2000,
        Duration::from_secs(3),
    );
    let secs = t0.elapsed().as_secs_f64();
    assert!(sent > 3000, "the rogue sent only {sent} adverts");

    // Settled: A master (150), B backup, the VIP on A only.
    a.expect_state(VrrpState::Master, Duration::from_secs(5));
    b.expect_state(VrrpState::Backup, Duration::from_secs(5));
    let ok = wait_until(Duration::from_secs(5), || lan.holders(VIP) == ["sfA"]);
    assert!(ok, "VIP holders {:?}\n{}", lan.holders(VIP), lan.describe());
    let span = t0.elapsed().as_secs_f64();
    let moves = a.metric("sipfront_vrrp_transitions_total", &[]) - moves_before;
    let garps = a.metric("sipfront_vrrp_garp_total", &[]) - garp_before;
    let (la, lb) = (lines(&a) - lines_a, lines(&b) - lines_b);
    eprintln!(
        "rogue sent {sent} in {secs:.1} s; A: {moves} transitions, {la} transition lines, \
         {garps} GARPs; B: {lb} transition lines"
    );
    assert!(moves > 40.0, "the flood flipped A only {moves} times");
    // 10 lines, then one per second (+1 for a summary line's second).
    let max_lines = 10 + span.ceil() as usize + 1;
    assert!(
        la <= max_lines,
        "A logged {la} transitions (at most {max_lines})"
    );
    assert!(
        lb <= max_lines,
        "B logged {lb} transitions (at most {max_lines})"
    );
    // garp_repeat 5, one VIP: a takeover burst per 100 ms at most, one requested burst
    // per second, the repeats after garp_delay.
    let max_garps = 5.0 * (span * 10.0 + span + 4.0).ceil();
    assert!(
        garps <= max_garps,
        "{garps} GARPs in {span:.1} s (at most {max_garps})"
    );
    // The flips the throttle kept from the log after the last line written are
    // summed up once the next line may be written (the last of them left A master).
    let ok = wait_until(Duration::from_secs(3), || {
        a.log_text()
            .lines()
            .rev()
            .find(|l| l.contains("vrrp transition"))
            .is_some_and(|l| {
                l.contains("came faster than one per second") && l.contains("state=\"master\"")
            })
    });
    assert!(
        ok,
        "no summary line naming the state; log:\n{}",
        a.log_tail(20)
    );
}
