//! The built-in VRRPv3 on a real (virtual) network: network namespaces joined by a bridge,
//! two sipfront hosts moving the VIP 10.77.0.100/24 between them, sipp backends and a sipp
//! client, and real keepalived (`vrrp_version 3`) as the peer for interoperability.
//!
//! Needs root and `ip netns` (fails, never skips, without them), `sipp` (sip-tester),
//! `tcpdump` and `keepalived`. Every test builds its own namespaces (unique names with the
//! pid and a counter) and deletes them, also on failure; nothing is configured in the host's
//! own namespace (the veth pairs are created inside the namespaces). The tests of this file
//! run one at a time (see `testkit::serial`).
//!
//! Timers: 100 ms adverts on both sides (Master_Down ≈ 3 × 100 ms + skew), so a takeover
//! takes a few hundred ms; the tests poll with generous timeouts and assert order, states and
//! causes, not milliseconds.
//!
//! Addresses: client .10, sfA .11 (priority 150), sfB .12 (priority 100), backends .21/.22.
//!
//! - kill -9 of the master under continuous sipp calls: VIP, GARP, neighbour entries, calls;
//! - SIGTERM hand-over (priority 0); preemption by a restarted higher priority;
//! - split brain (cable pulled at the switch) and heal, with fixed priorities and with
//!   backend tracking; the master's own link going down and up;
//! - keepalived 2.2 as the peer, both directions, multicast and unicast (also with the
//!   pre-1.3.6 unicast checksum, `old_unicast_checksum`).

use std::time::{Duration, Instant};
use testkit::*;

/// The MACs `Lan::new` gives sfA (.11) and sfB (.12), checked there against the interfaces.
const A_MAC: &str = "02:77:00:00:00:0b";
const B_MAC: &str = "02:77:00:00:00:0c";
const BACKENDS: [(&str, &str); 2] = [("beA", "10.77.0.21:5060"), ("beB", "10.77.0.22:5060")];

/// Waits until every configured backend is up in `sf`'s health checker.
fn wait_backends_up(sf: &mut NsSipfront, names: &[&str]) {
    let mut text = String::new();
    let ok = wait_until(Duration::from_secs(10), || {
        text = sf.metrics();
        names
            .iter()
            .all(|n| metric(&text, "sipfront_backend_up", &[("backend", n)]) == 1.0)
    });
    assert!(
        ok,
        "{}: backends {names:?} not all up: {:?}",
        sf.name,
        text.lines()
            .filter(|l| l.starts_with("sipfront_backend_up"))
            .collect::<Vec<_>>()
    );
}

/// Waits until `sf` has counted at least `n` received adverts.
fn wait_adverts_received(sf: &mut NsSipfront, n: f64) {
    let mut v = 0.0;
    let ok = wait_until(Duration::from_secs(10), || {
        v = sf.metric("sipfront_vrrp_adverts_total", &[("dir", "received")]);
        v >= n
    });
    if !ok {
        let dropped = sf.metric("sipfront_vrrp_adverts_dropped_total", &[]);
        panic!(
            "{}: only {v} adverts received (want {n}); dropped: {dropped}; log:\n{}",
            sf.name,
            sf.log_tail(20)
        );
    }
}

/// Waits until exactly the hosts `want` hold `addr`.
fn wait_holders(lan: &Lan, addr: &str, want: &[&str], timeout: Duration) {
    let mut last = Vec::new();
    let ok = wait_until(timeout, || {
        last = lan.holders(addr);
        last == want
    });
    assert!(
        ok,
        "{addr} held by {last:?}, expected exactly {want:?} within {timeout:?}"
    );
}

/// Waits until `host`'s neighbour entry for `addr` points at `mac`.
fn wait_neigh(host: &Host, addr: &str, mac: &str, timeout: Duration) {
    let ok = wait_until(timeout, || host.neigh_mac(addr).as_deref() == Some(mac));
    assert!(
        ok,
        "{}: neighbour entry for {addr} is {:?}, expected lladdr {mac} within {timeout:?}",
        host.role,
        host.neigh(addr).1
    );
}

fn datagrams_to_backends(sf: &mut NsSipfront) -> f64 {
    sf.metric("sipfront_datagrams_total", &[("direction", "to_backend")])
}

/// Test 1. Continuous calls from a client to the VIP; `kill -9` of the master A. B takes
/// the VIP; its gratuitous ARP moves the client's (and the backends') neighbour entry for the
/// VIP to B's MAC; calls that start after the takeover complete, through B.
#[test]
fn kill9_master_backup_takes_vip_garp_moves_client_calls_complete_through_backup() {
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vrrp-kill9");
    let lan = Lan::new(&[
        ("client", 10),
        ("sfA", 11),
        ("sfB", 12),
        ("beA", 21),
        ("beB", 22),
    ]);
    let (client, host_b) = (lan.host("client"), lan.host("sfB"));
    let _uas_a = NsSipp::uas(&dir, lan.host("beA"), "uas-a");
    let _uas_b = NsSipp::uas(&dir, lan.host("beB"), "uas-b");

    let mut a = NsSipfront::start(
        &dir,
        lan.host("sfA"),
        "sfA",
        &sipfront_toml(150, &BACKENDS, ""),
    );
    a.expect_state(VrrpState::Master, Duration::from_secs(10));
    let mut b = NsSipfront::start(&dir, host_b, "sfB", &sipfront_toml(100, &BACKENDS, ""));
    wait_backends_up(&mut a, &["beA", "beB"]);
    wait_backends_up(&mut b, &["beA", "beB"]);
    wait_adverts_received(&mut b, 5.0);
    b.expect_state(VrrpState::Backup, Duration::from_secs(5));
    wait_holders(&lan, VIP, &["sfA"], Duration::from_secs(5));

    let mut arp = NsCapture::start(&dir, client, "client-arp", "arp");

    // Continuous calls, one client socket (one flow), 20 calls/s. A call that gets no answer
    // for 4 s fails (-recv_timeout); SIGUSR1 ends the run.
    let calls_log = dir.join("calls.log");
    let sf = scenario("uac_timed.xml");
    let mut uac = NsSipp::start(
        &dir,
        client,
        "uac",
        &[
            "-sf",
            &sf,
            "-i",
            "10.77.0.10",
            "-p",
            "5060",
            "-r",
            "20",
            "-m",
            "5000",
            "-recv_timeout",
            "4000",
            "-timeout",
            "55s",
            "-trace_logs",
            "-log_file",
            calls_log.to_str().unwrap(),
            "10.77.0.100:5060",
        ],
    );
    let ok = wait_until(Duration::from_secs(15), || {
        uac.proc.assert_running();
        uac.stats().successful() >= 20
    });
    assert!(
        ok,
        "calls through A do not complete: {:?}\n{}",
        uac.stats().fields,
        uac.proc.log_tail(30)
    );

    // Before the kill: the client resolved the VIP to A, and only A forwards.
    assert_eq!(
        client.neigh_mac(VIP).as_deref(),
        Some(A_MAC),
        "client's neighbour entry for the VIP before the kill: {}",
        client.neigh(VIP).1
    );
    assert!(datagrams_to_backends(&mut a) > 0.0, "A forwarded nothing");
    assert_eq!(
        datagrams_to_backends(&mut b),
        0.0,
        "B forwarded traffic while backup (the VIP is A's)"
    );

    let t_kill = epoch_now();
    let kill_at = Instant::now();
    a.kill9();

    wait_holders_include(&lan, "sfB", Duration::from_secs(10));
    b.expect_state(VrrpState::Master, Duration::from_secs(5));
    wait_neigh(client, VIP, B_MAC, Duration::from_secs(3));
    let t_ready = epoch_now();
    let takeover = kill_at.elapsed();

    // The backends answer the relay address (the VIP): their entries moved to B as well.
    let mut backend_entries = 0;
    for be in ["beA", "beB"] {
        let h = lan.host(be);
        if h.neigh_mac(VIP).is_some() {
            backend_entries += 1;
            wait_neigh(h, VIP, B_MAC, Duration::from_secs(3));
        }
    }
    assert!(
        backend_entries >= 1,
        "no backend had a neighbour entry for the relay VIP"
    );

    // Let calls run through B for a while, then stop the client.
    let after = uac.stats().successful();
    let ok = wait_until(Duration::from_secs(15), || {
        uac.proc.assert_running();
        uac.stats().successful() >= after + 60
    });
    assert!(
        ok,
        "calls do not complete after the takeover: {:?}\n{}",
        uac.stats().fields,
        uac.proc.log_tail(30)
    );
    uac.stop(Duration::from_secs(20));
    arp.stop();

    // The assertion on calls. A call is "started" when its first INVITE is sent (sipp logs
    // the wall clock then). Calls in progress at the kill may fail: their INVITE or dialog
    // went to A, which died, and flows are not synchronised to B. Once B holds the VIP and
    // the client's ARP entry points at B (t_ready, observed by polling, so after the fact),
    // nothing stands between the client and B: every call whose INVITE is sent from
    // t_ready + 0.5 s on (the margin covers a call number logged just before a
    // state change we observed a little late) must complete. sipp was stopped with SIGUSR1,
    // which lets started calls finish, so no call in that window is cut short.
    let log = CallLog::read(&calls_log);
    let before: Vec<u64> = log
        .ok
        .iter()
        .filter(|(_, t)| **t < t_kill)
        .map(|(n, _)| *n)
        .collect();
    let window = log.started_after(t_ready + 0.5);
    let failed = log.failed_among(&window);
    let in_flight = log.failed_among(
        &log.started
            .iter()
            .filter(|(_, t)| **t < t_ready + 0.5)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
    );
    eprintln!(
        "kill -9 -> VIP on B and client ARP at B's MAC observed after {takeover:?}; calls: \
         {} started, {} ok; {} completed through A before the kill; {} failed around the \
         kill (not asserted); {} started >= 0.5 s after the takeover, failed: {failed:?}",
        log.started.len(),
        log.ok.len(),
        before.len(),
        in_flight.len(),
        window.len()
    );
    assert!(
        before.len() >= 20,
        "only {} calls completed before the kill",
        before.len()
    );
    assert!(
        window.len() >= 20,
        "only {} calls started after the takeover",
        window.len()
    );
    assert!(
        failed.is_empty(),
        "calls started after the takeover failed: {failed:?} (of {})\nerrors:\n{}",
        window.len(),
        tail(&uac.error_file, 30)
    );

    // Through B: B forwarded (it did nothing before the kill) and created the client's flow.
    assert!(datagrams_to_backends(&mut b) > 0.0, "B forwarded nothing");
    assert!(
        b.metric("sipfront_flows_created_total", &[]) >= 1.0,
        "B created no flow"
    );
    // Why B became master, and that it announced the VIP with gratuitous ARP, seen on the
    // client's wire from B's MAC.
    assert_eq!(
        b.metric(
            "sipfront_vrrp_transitions_total",
            &[("to", "master"), ("cause", "master_down")]
        ),
        1.0,
        "B transitions: {:?}",
        b.transitions()
    );
    assert!(b.metric("sipfront_vrrp_garp_total", &[]) >= 1.0);
    assert!(
        arp.garps_from(B_MAC, VIP) >= 1,
        "no gratuitous ARP for {VIP} from {B_MAC} on the client's link:\n{}",
        arp.text()
    );
    // A crashed, so nobody removed the VIP from A's interface: it stays there (stale) until
    // sipfront starts again there and removes it.
    eprintln!(
        "after kill -9, VIP still on A's interface: {}",
        lan.host("sfA").has_addr(VIP)
    );
    b.proc.assert_running();
    eprintln!("test took {:?}", t0.elapsed());
}

fn wait_holders_include(lan: &Lan, role: &str, timeout: Duration) {
    let ok = wait_until(timeout, || lan.host(role).has_addr(VIP));
    assert!(
        ok,
        "{role} did not get {VIP} within {timeout:?}; holders {:?}",
        lan.holders(VIP)
    );
}

/// Waits until `sf` is master, and has logged its transition to master with `cause` within
/// `within` of that.
fn expect_takeover(sf: &mut NsSipfront, cause: &str, within: Duration) {
    sf.expect_state(VrrpState::Master, Duration::from_secs(5));
    assert!(
        sf.wait_transition("master", cause, within),
        "{} must become master by {cause}; transitions: {:?}",
        sf.name,
        sf.transitions()
    );
}

/// sipfront `name` on host `role` with priority `priority`, backend beA and extra `[vrrp]`
/// settings `vrrp_extra`.
fn start_sf(
    dir: &TestDir,
    lan: &Lan,
    role: &str,
    name: &str,
    priority: u8,
    vrrp_extra: &str,
) -> NsSipfront {
    NsSipfront::start(
        dir,
        lan.host(role),
        name,
        &sipfront_toml(priority, &[BACKENDS[0]], vrrp_extra),
    )
}

/// Starts the usual pair (A 150, B 100, one backend beA) and a client that has resolved
/// the VIP to A.
fn pair(dir: &TestDir, lan: &Lan) -> (NsSipp, NsSipfront, NsSipfront) {
    pair_with(dir, lan, "")
}

/// [`pair`] with extra `[vrrp]` settings for both.
fn pair_with(dir: &TestDir, lan: &Lan, vrrp_extra: &str) -> (NsSipp, NsSipfront, NsSipfront) {
    let uas = NsSipp::uas(dir, lan.host("beA"), "uas-a");
    let mut a = start_sf(dir, lan, "sfA", "sfA", 150, vrrp_extra);
    a.expect_state(VrrpState::Master, Duration::from_secs(10));
    let mut b = start_sf(dir, lan, "sfB", "sfB", 100, vrrp_extra);
    wait_backends_up(&mut a, &["beA"]);
    wait_backends_up(&mut b, &["beA"]);
    wait_adverts_received(&mut b, 5.0);
    b.expect_state(VrrpState::Backup, Duration::from_secs(5));
    wait_holders(lan, VIP, &["sfA"], Duration::from_secs(5));
    let mac = lan.host("client").resolve(VIP, Duration::from_secs(5));
    assert_eq!(mac, A_MAC, "client resolved the VIP to A");
    (uas, a, b)
}

/// The LAN of the keepalived tests: the two hosts and backend beA, no client.
fn keepalived_lan() -> Lan {
    Lan::new(&[("sfA", 11), ("sfB", 12), ("beA", 21)])
}

fn small_lan() -> Lan {
    Lan::new(&[("client", 10), ("sfA", 11), ("sfB", 12), ("beA", 21)])
}

/// Test 2. SIGTERM of the master: it sends a priority 0 advert and removes the VIP; the
/// backup takes over after Skew_Time, not Master_Down_Interval (the cause says which).
#[test]
fn sigterm_master_hands_over_with_priority_zero() {
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vrrp-sigterm");
    let lan = small_lan();
    let (_uas, mut a, mut b) = pair(&dir, &lan);

    let st = a.terminate(Duration::from_secs(10));
    assert!(st.success(), "A exited with {st}; log:\n{}", a.log_tail(20));
    // A removed the VIP before exiting.
    assert!(
        !lan.host("sfA").has_addr(VIP),
        "the VIP is still on A after a clean exit"
    );
    assert!(
        a.transitions()
            .iter()
            .any(|(s, c)| s == "initialize" && c == "shutdown"),
        "A transitions: {:?}",
        a.transitions()
    );

    b.expect_state(VrrpState::Master, Duration::from_secs(5));
    wait_holders(&lan, VIP, &["sfB"], Duration::from_secs(5));
    let tb = b.transitions();
    assert_eq!(
        tb.last().map(|(s, c)| (s.as_str(), c.as_str())),
        Some(("master", "priority_zero")),
        "B must take over on A's priority 0 advert, not on Master_Down: {tb:?}"
    );
    assert!(
        !tb.iter().any(|(_, c)| c == "master_down"),
        "B transitions: {tb:?}"
    );
    assert_eq!(
        b.metric(
            "sipfront_vrrp_transitions_total",
            &[("to", "master"), ("cause", "priority_zero")]
        ),
        1.0
    );
    assert_eq!(b.metric("sipfront_vrrp_adverts_dropped_total", &[]), 0.0);
    wait_neigh(lan.host("client"), VIP, B_MAC, Duration::from_secs(3));
    eprintln!("test took {:?}", t0.elapsed());
}

/// Test 3. Preemption: A (150) is killed, B (100) takes over; A starts again, removes the
/// VIP its crash left behind, starts as backup and preempts B; B yields and removes the VIP.
#[test]
fn restarted_higher_priority_preempts() {
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vrrp-preempt");
    let lan = small_lan();
    let (_uas, mut a, mut b) = pair(&dir, &lan);

    a.kill9();
    expect_takeover(&mut b, "master_down", Duration::from_secs(2));
    wait_holders_include(&lan, "sfB", Duration::from_secs(5));
    wait_neigh(lan.host("client"), VIP, B_MAC, Duration::from_secs(3));
    // The crash left the VIP on A's interface.
    assert!(
        lan.host("sfA").has_addr(VIP),
        "expected the stale VIP on A after kill -9"
    );
    drop(a);

    let mut a2 = start_sf(&dir, &lan, "sfA", "sfA-restarted", 150, "");
    assert!(
        a2.wait_transition("master", "preempt", Duration::from_secs(10)),
        "restarted A did not preempt: {:?}\n{}",
        a2.transitions(),
        a2.log_tail(20)
    );
    b.expect_state(VrrpState::Backup, Duration::from_secs(5));
    wait_holders(&lan, VIP, &["sfA"], Duration::from_secs(5));
    wait_neigh(lan.host("client"), VIP, A_MAC, Duration::from_secs(3));

    let ta = a2.transitions();
    assert_eq!(
        ta,
        vec![
            ("backup".to_string(), "startup".to_string()),
            ("master".to_string(), "preempt".to_string())
        ],
        "restarted A: startup as backup, then preempt"
    );
    let tb = b.transitions();
    assert_eq!(
        tb.last().map(|(s, c)| (s.as_str(), c.as_str())),
        Some(("backup", "higher_priority_seen")),
        "B yields to the higher priority: {tb:?}"
    );
    a2.expect_state(VrrpState::Master, Duration::from_secs(1));
    eprintln!("test took {:?}", t0.elapsed());
}

/// Test 5. Split brain: A's cable is pulled from the switch (its bridge port leaves the
/// bridge; A's own link stays up), so B also becomes master; both hold the VIP. After the
/// heal exactly one master remains, A (higher priority), B yields and removes the VIP, and
/// the client is sent back to A.
///
/// Priorities are fixed here (`track_backends = 0`): a pure VRRP election, in which A never
/// yields. Who hears whom first after the heal is a race: if A hears B's advert, A counts
/// another master, re-advertises and re-sends gratuitous ARP; if B hears A's first, B
/// simply yields. Either way the end state must be the same.
#[test]
fn split_brain_heals_to_the_higher_priority() {
    split_brain(false);
}

/// Test 5, with backend tracking on (the default): cut off from the LAN, A also loses its
/// backend, so its priority drops by 50 to B's 100 while split. After the heal A may first
/// yield to B (equal priority, B's higher address: `split_brain`), then preempt once its
/// backend is back up. Only the end state is asserted.
#[test]
fn split_brain_with_backend_tracking_heals_to_the_higher_priority() {
    split_brain(true);
}

fn split_brain(tracking: bool) {
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vrrp-split");
    let lan = small_lan();
    let extra = if tracking { "" } else { "track_backends = 0" };
    let (_uas, mut a, mut b) = pair_with(&dir, &lan, extra);
    let client = lan.host("client");
    let mut arp = NsCapture::start(&dir, client, "client-arp", "arp or vrrp");
    // A's two takeover bursts (5 GARPs each, the second one garp_delay = 1 s later) must be
    // over before the split, or the second one could be what re-announces A after the heal.
    let ok = wait_until(Duration::from_secs(5), || {
        a.metric("sipfront_vrrp_garp_total", &[]) >= 10.0
    });
    assert!(ok, "A did not send its two GARP bursts");

    lan.unplug("sfA");
    expect_takeover(&mut b, "master_down", Duration::from_secs(2));
    wait_holders(&lan, VIP, &["sfA", "sfB"], Duration::from_secs(5));
    // A hears nobody and stays master.
    assert_eq!(a.state(), Some(VrrpState::Master));
    wait_neigh(client, VIP, B_MAC, Duration::from_secs(3));
    if tracking {
        // Heal only once A has noticed that its backend is unreachable.
        let ok = wait_until(Duration::from_secs(5), || {
            a.metric("sipfront_backend_up", &[("backend", "beA")]) == 0.0
        });
        assert!(ok, "A still sees its backend up while cut off");
        assert!(
            wait_until(Duration::from_secs(2), || a
                .log_text()
                .contains("vrrp priority changed by backend tracking priority=100")),
            "A's priority did not drop: {}",
            a.log_tail(10)
        );
    }

    let heal = Instant::now();
    lan.plug("sfA");
    wait_holders(&lan, VIP, &["sfA"], Duration::from_secs(10));
    a.expect_state(VrrpState::Master, Duration::from_secs(2));
    b.expect_state(VrrpState::Backup, Duration::from_secs(2));
    let tb = b.transitions();
    let last = tb.last().map(|(s, c)| (s.clone(), c.clone())).unwrap();
    assert!(
        last.0 == "backup" && (last.1 == "higher_priority_seen" || last.1 == "split_brain"),
        "B must yield to A: {tb:?}"
    );
    let ta = a.transitions();
    assert_eq!(
        ta.last().map(|(s, _)| s.as_str()),
        Some("master"),
        "A transitions: {ta:?}"
    );
    if !tracking {
        // A never yielded: its only backup transition is the startup one.
        assert_eq!(
            ta.iter().filter(|(s, _)| s == "backup").count(),
            1,
            "A transitions: {ta:?}"
        );
    }
    let other = a.metric("sipfront_vrrp_other_master_total", &[]) + 0.0;
    // Traffic must find A again: the client's entry for the VIP, moved to B by B's GARP
    // during the split, must point at A soon after the heal (well before ARP would
    // re-validate a stale entry by itself, which takes 5 s or more).
    let moved = wait_until(Duration::from_secs(3), || {
        client.neigh_mac(VIP).as_deref() == Some(A_MAC)
    });
    arp.stop();
    eprintln!(
        "heal (tracking {tracking}): A saw the other master {other} times; A {ta:?}; B {tb:?}; \
         client entry {:?} {:?} after heal; gratuitous ARPs on the client's link: {} from A, \
         {} from B",
        client.neigh(VIP).1,
        heal.elapsed(),
        arp.garps_from(A_MAC, VIP),
        arp.garps_from(B_MAC, VIP)
    );
    if !moved {
        // Evidence for the report: with traffic flowing, how long until the client's own
        // ARP re-validation finds A (B drops what it gets: the VIP is no longer B's).
        let entry = client.neigh(VIP).1;
        let since = Instant::now();
        let mut last = since - Duration::from_secs(1);
        let recovered = wait_until(Duration::from_secs(20), || {
            if last.elapsed() >= Duration::from_millis(100) {
                client.send_udp(&format!("{VIP}:9"));
                last = Instant::now();
            }
            client.neigh_mac(VIP).as_deref() == Some(A_MAC)
        });
        panic!(
            "after the heal the client still sends the VIP's traffic to B's MAC ({entry}), \
             which no longer holds the VIP: nobody re-announced the VIP from A (A saw the \
             other master {other} times; A transitions {ta:?}; B transitions {tb:?}); with \
             traffic every 100 ms the client's ARP found A {} (capture: {})",
            if recovered {
                format!("only after {:?} more", since.elapsed())
            } else {
                "not within 20 s".to_string()
            },
            arp.out.display()
        );
    }
    eprintln!("test took {:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// keepalived interop
// ---------------------------------------------------------------------------------------------

/// keepalived (on sfB's host, the backup) becomes master and gets the VIP.
fn keepalived_takes_over(k: &Keepalived, lan: &Lan) {
    assert!(
        k.wait_log("Entering MASTER STATE", 1, Duration::from_secs(5)),
        "keepalived did not take over:\n{}",
        k.log_text()
    );
    wait_holders_include(lan, "sfB", Duration::from_secs(5));
}

fn assert_keepalived_clean(k: &mut Keepalived, min_received: u64) {
    let mut stats = Default::default();
    let ok = wait_until(Duration::from_secs(10), || {
        stats = k.stats();
        stats
            .get("Advertisements/Received")
            .is_some_and(|n| *n >= min_received)
    });
    assert!(ok, "keepalived received too few adverts: {stats:?}");
    let errors: Vec<_> = stats
        .iter()
        .filter(|(k, v)| {
            (k.starts_with("Packet Errors/") || k.starts_with("Authentication Errors/")) && **v != 0
        })
        .collect();
    assert!(errors.is_empty(), "keepalived counted errors: {errors:?}");
    let complaints = k.packet_complaints();
    assert!(
        complaints.is_empty(),
        "keepalived complained about packets:\n{}",
        complaints.join("\n")
    );
}

/// Test 4a. sipfront master (150) + keepalived backup (100): keepalived accepts sipfront's
/// adverts (TTL, version, checksum in the RFC 5798 form) and stays BACKUP; the VIP is only
/// on sipfront's host. kill -9 sipfront: keepalived becomes MASTER and holds the VIP.
/// sipfront starts again: it preempts keepalived, which goes back to BACKUP and removes
/// the VIP.
#[test]
fn keepalived_backup_follows_sipfront_master_takes_over_on_kill9_and_yields_back() {
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vrrp-ka-backup");
    let lan = keepalived_lan();
    let _uas = NsSipp::uas(&dir, lan.host("beA"), "uas-a");
    let mut a = start_sf(&dir, &lan, "sfA", "sfA", 150, "");
    a.expect_state(VrrpState::Master, Duration::from_secs(10));
    wait_backends_up(&mut a, &["beA"]);

    let mut k = Keepalived::start(&dir, lan.host("sfB"), "keepalived-b", 100);
    // 20 adverts = 2 s = several Master_Down intervals heard and accepted.
    assert_keepalived_clean(&mut k, 20);
    assert_eq!(
        k.count("Entering MASTER STATE"),
        0,
        "keepalived took over from a live sipfront master:\n{}",
        k.log_text()
    );
    wait_holders(&lan, VIP, &["sfA"], Duration::from_secs(2));
    assert_eq!(a.state(), Some(VrrpState::Master));
    assert_eq!(
        a.transitions(),
        vec![
            ("backup".to_string(), "startup".to_string()),
            ("master".to_string(), "master_down".to_string())
        ]
    );
    assert_eq!(a.metric("sipfront_vrrp_adverts_dropped_total", &[]), 0.0);

    a.kill9();
    keepalived_takes_over(&k, &lan);
    let complaints = k.packet_complaints();
    assert!(complaints.is_empty(), "{complaints:?}");
    drop(a);

    // And back: sipfront starts again (removing the VIP its crash left), hears
    // keepalived's lower priority adverts, preempts; keepalived yields and removes the VIP.
    let mut a2 = start_sf(&dir, &lan, "sfA", "sfA-restarted", 150, "");
    assert!(
        a2.wait_transition("master", "preempt", Duration::from_secs(10)),
        "restarted sipfront did not preempt keepalived: {:?}\n{}",
        a2.transitions(),
        a2.log_tail(20)
    );
    assert!(
        k.wait_log("Entering BACKUP STATE", 2, Duration::from_secs(5)),
        "keepalived did not yield to the higher priority sipfront:\n{}",
        k.log_text()
    );
    wait_holders(&lan, VIP, &["sfA"], Duration::from_secs(5));
    assert!(
        a2.metric("sipfront_vrrp_adverts_total", &[("dir", "received")]) >= 1.0,
        "sipfront heard none of keepalived's adverts"
    );
    assert_eq!(a2.metric("sipfront_vrrp_adverts_dropped_total", &[]), 0.0);
    let before = k
        .stats()
        .get("Advertisements/Received")
        .copied()
        .unwrap_or(0);
    // keepalived keeps accepting sipfront's adverts as backup again.
    assert_keepalived_clean(&mut k, before + 10);
    assert_eq!(k.count("Entering MASTER STATE"), 1);
    eprintln!("test took {:?}", t0.elapsed());
}

/// keepalived master (150) on A's host, sipfront backup (100) on B's, sipfront hearing and
/// accepting keepalived's adverts.
fn keepalived_master_sipfront_backup(dir: &TestDir, lan: &Lan) -> (NsSipp, Keepalived, NsSipfront) {
    let uas = NsSipp::uas(dir, lan.host("beA"), "uas-a");
    let k = Keepalived::start(dir, lan.host("sfA"), "keepalived-a", 150);
    assert!(
        k.wait_log("Entering MASTER STATE", 1, Duration::from_secs(5)),
        "keepalived alone did not become master:\n{}",
        k.log_text()
    );
    wait_holders(lan, VIP, &["sfA"], Duration::from_secs(5));
    let mut b = start_sf(dir, lan, "sfB", "sfB", 100, "");
    wait_backends_up(&mut b, &["beA"]);
    // 20 adverts = 2 s: several Master_Down intervals heard and accepted.
    wait_adverts_received(&mut b, 20.0);
    assert_eq!(
        b.state(),
        Some(VrrpState::Backup),
        "B transitions: {:?}",
        b.transitions()
    );
    assert_eq!(
        b.transitions(),
        vec![("backup".to_string(), "startup".to_string())]
    );
    let text = b.metrics();
    assert_eq!(
        metric(&text, "sipfront_vrrp_adverts_dropped_total", &[]),
        0.0,
        "sipfront dropped keepalived's adverts: {:?}",
        text.lines()
            .filter(|l| l.starts_with("sipfront_vrrp_adverts_dropped_total"))
            .collect::<Vec<_>>()
    );
    wait_holders(lan, VIP, &["sfA"], Duration::from_secs(1));
    assert_eq!(k.count("Entering MASTER STATE"), 1);
    (uas, k, b)
}

/// How keepalived, the master, goes away while sipfront is its backup.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KeepalivedExit {
    /// SIGTERM: keepalived sends a priority 0 advert and removes the VIP; sipfront takes
    /// over on that advert.
    Sigterm,
    /// SIGKILL, VRRP process first: a crash; sipfront takes over when Master_Down_Interval
    /// runs out.
    Kill9,
}

impl KeepalivedExit {
    /// The cause sipfront logs for its transition to master.
    fn cause(self) -> &'static str {
        match self {
            KeepalivedExit::Sigterm => "priority_zero",
            KeepalivedExit::Kill9 => "master_down",
        }
    }
}

/// keepalived (the master) exits as `exit` says; sipfront `b` takes over with the matching
/// cause and gets the VIP (on SIGTERM keepalived removed it, so sfB holds it alone).
fn keepalived_exits_sipfront_takes_over(
    k: &mut Keepalived,
    b: &mut NsSipfront,
    lan: &Lan,
    exit: KeepalivedExit,
) {
    match exit {
        KeepalivedExit::Sigterm => {
            let st = k.terminate(Duration::from_secs(10));
            assert!(st.is_some(), "keepalived did not stop on SIGTERM");
        }
        KeepalivedExit::Kill9 => k.kill9(),
    }
    expect_takeover(b, exit.cause(), Duration::from_secs(1));
    match exit {
        KeepalivedExit::Sigterm => wait_holders(lan, VIP, &["sfB"], Duration::from_secs(5)),
        KeepalivedExit::Kill9 => wait_holders_include(lan, "sfB", Duration::from_secs(5)),
    }
}

/// Test 4b. keepalived master + sipfront backup; keepalived stops (SIGTERM: priority 0,
/// VIP removed): sipfront takes over on the priority 0 advert.
#[test]
fn sipfront_backup_follows_keepalived_master_and_takes_over_on_sigterm() {
    sipfront_backup_takes_over_from_keepalived("vrrp-ka-master-term", KeepalivedExit::Sigterm);
}

/// Test 4c. keepalived master + sipfront backup; keepalived crashes (SIGKILL, VRRP process
/// first): sipfront takes over when Master_Down_Interval runs out.
#[test]
fn sipfront_backup_takes_over_from_killed_keepalived() {
    sipfront_backup_takes_over_from_keepalived("vrrp-ka-master-kill", KeepalivedExit::Kill9);
}

fn sipfront_backup_takes_over_from_keepalived(tag: &str, exit: KeepalivedExit) {
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new(tag);
    let lan = keepalived_lan();
    let (_uas, mut k, mut b) = keepalived_master_sipfront_backup(&dir, &lan);

    let before = b.metric("sipfront_vrrp_adverts_total", &[("dir", "received")]);
    keepalived_exits_sipfront_takes_over(&mut k, &mut b, &lan, exit);
    if exit == KeepalivedExit::Sigterm {
        assert!(
            k.count("sent 0 priority") >= 1,
            "keepalived log:\n{}",
            k.log_text()
        );
        assert!(!b.transitions().iter().any(|(_, c)| c == "master_down"));
        assert!(b.metric("sipfront_vrrp_adverts_total", &[("dir", "received")]) > before);
    }
    assert_eq!(b.metric("sipfront_vrrp_adverts_dropped_total", &[]), 0.0);
    eprintln!("test took {:?}", t0.elapsed());
}

/// Unicast mode, sipfront as the sender: sipfront master (150, `peers = [B, beA]`: two
/// peers) and keepalived backup (100, `unicast_peer { A }`, checksum auto-detection as
/// shipped). keepalived accepts sipfront's unicast adverts (RFC 5798 checksum over the
/// unicast destination: each peer gets one advert per interval, checksummed for itself,
/// none meant for the other peer) and stays BACKUP; kill -9 sipfront: keepalived takes
/// over.
#[test]
fn unicast_keepalived_backup_accepts_sipfront_adverts() {
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vrrp-ka-unicast");
    let lan = keepalived_lan();
    let _uas = NsSipp::uas(&dir, lan.host("beA"), "uas-a");
    let mut a = start_sf(
        &dir,
        &lan,
        "sfA",
        "sfA",
        150,
        "peers = [\"10.77.0.12\", \"10.77.0.21\"]",
    );
    a.expect_state(VrrpState::Master, Duration::from_secs(10));
    let mut k = Keepalived::start_with(
        &dir,
        lan.host("sfB"),
        "keepalived-b",
        100,
        "    unicast_src_ip 10.77.0.12\n    unicast_peer {\n        10.77.0.11\n    }",
    );
    assert_keepalived_clean(&mut k, 20);
    assert_eq!(k.count("Entering MASTER STATE"), 0, "{}", k.log_text());
    assert_eq!(
        k.count("Setting unicast VRRPv3 checksum to old version"),
        0,
        "keepalived fell back to the old checksum: sipfront's is not the RFC form"
    );
    wait_holders(&lan, VIP, &["sfA"], Duration::from_secs(2));
    a.kill9();
    keepalived_takes_over(&k, &lan);
    eprintln!("test took {:?}", t0.elapsed());
}

/// Unicast mode, sipfront as the receiver, with the checksum of keepalived before 1.3.6
/// (`old_unicast_checksum`: the pseudo-header uses 224.0.0.18 even for unicast): sipfront
/// backup (100, `peers = [A]`) accepts keepalived's (150) adverts, drops none, stays backup,
/// and takes over on keepalived's priority 0 advert when it stops.
#[test]
fn unicast_sipfront_backup_accepts_old_keepalived_checksum() {
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vrrp-ka-unicast-old");
    let lan = keepalived_lan();
    let _uas = NsSipp::uas(&dir, lan.host("beA"), "uas-a");
    let mut k = Keepalived::start_with(
        &dir,
        lan.host("sfA"),
        "keepalived-a",
        150,
        "    unicast_src_ip 10.77.0.11\n    unicast_peer {\n        10.77.0.12\n    }\n    \
         old_unicast_checksum",
    );
    assert!(
        k.wait_log("Entering MASTER STATE", 1, Duration::from_secs(5)),
        "{}",
        k.log_text()
    );
    let mut b = start_sf(&dir, &lan, "sfB", "sfB", 100, "peers = [\"10.77.0.11\"]");
    wait_backends_up(&mut b, &["beA"]);
    wait_adverts_received(&mut b, 20.0);
    assert_eq!(
        b.state(),
        Some(VrrpState::Backup),
        "B transitions: {:?}",
        b.transitions()
    );
    assert_eq!(b.metric("sipfront_vrrp_adverts_dropped_total", &[]), 0.0);
    wait_holders(&lan, VIP, &["sfA"], Duration::from_secs(1));

    keepalived_exits_sipfront_takes_over(&mut k, &mut b, &lan, KeepalivedExit::Sigterm);
    assert_eq!(b.metric("sipfront_vrrp_adverts_dropped_total", &[]), 0.0);
    eprintln!("test took {:?}", t0.elapsed());
}

/// Test 5, the other way to cut A off: A's own link goes down (`ip link set eth0 down`:
/// sends fail with ENETDOWN, the VIP stays configured) and comes back. The speaker must
/// survive the errors, B takes over meanwhile, and after the link is back exactly A is
/// master again. (Whether the client's ARP follows is the split brain test's business.)
#[test]
fn master_link_down_and_up_recovers() {
    let _serial = serial();
    let t0 = Instant::now();
    let dir = TestDir::new("vrrp-link-flap");
    let lan = small_lan();
    let (_uas, mut a, mut b) = pair_with(&dir, &lan, "track_backends = 0");
    lan.host("sfA").link(false);
    expect_takeover(&mut b, "master_down", Duration::from_secs(2));
    wait_holders(&lan, VIP, &["sfA", "sfB"], Duration::from_secs(5));
    a.proc.assert_running();
    lan.host("sfA").link(true);
    wait_holders(&lan, VIP, &["sfA"], Duration::from_secs(10));
    a.expect_state(VrrpState::Master, Duration::from_secs(2));
    b.expect_state(VrrpState::Backup, Duration::from_secs(2));
    let tb = b.transitions();
    let (s, c) = tb.last().cloned().unwrap();
    assert!(
        s == "backup" && (c == "higher_priority_seen" || c == "split_brain"),
        "B must yield to A: {tb:?}"
    );
    let ta = a.transitions();
    assert_eq!(
        ta.iter().filter(|(s, _)| s == "backup").count(),
        1,
        "A never yields (fixed priorities): {ta:?}"
    );
    assert!(
        !a.log_text().contains("vrrp socket failed"),
        "A's VRRP socket failed on the link flap:\n{}",
        a.log_tail(20)
    );
    a.proc.assert_running();
    eprintln!("test took {:?}", t0.elapsed());
}
