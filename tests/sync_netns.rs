//! State sync between the sipfront pair (issue 6), on a real (virtual) network: network
//! namespaces joined by a bridge, two sipfront hosts with the built-in VRRP and `[sync]`,
//! and around them a NAT router with a sipp phone behind it, two Kamailio registrars that
//! replicate registrations with DMQ, plain UDP backends and load clients.
//!
//! Needs root, `ip netns`, `nft`, `sipp` (sip-tester), `kamailio`/`kamcmd` and `tcpdump`; it
//! fails, never skips, without them. Every test builds its own namespaces (unique names) and
//! removes them, also on failure; the tests of this file run one at a time (`serial`).
//! Nothing is asserted about durations: every wait polls with a generous timeout, and the
//! progress lines on stderr report how long things took.
//!
//! The tests: a NAT'd phone reachable through the new master after `kill -9` without
//! re-registering (and after failback); a phone's in-dialog BYE after the failover following
//! the synced dialog; thousands of flows while the backup restarts, tables equal afterwards;
//! the sync port dropping strangers, forgeries and replays; a master restarted within the
//! peer timeout getting its flows back; a replay from the peer's previous incarnation.
//! Helpers (programs, the pair, the end-to-end setup, sipp scenarios of their own) are in
//! tests/netns_sync/, on top of the namespace helpers of the testkit crate (tests/testkit,
//! shared with tests/vrrp_netns.rs).
//!
//! Addresses (LAN 10.88.0.0/24, VIP 10.88.0.100): NAT router .2 (phone 192.168.77.2
//! behind it), load client .10, sfA .11 (priority 150), sfB .12 (priority 100),
//! backends / registrars .21 and .22, caller .30, intruder .40.

mod netns_sync;

use netns_sync::*;
// The sync tests' VIP, not the VRRP tests' one of the same name in testkit.
use netns_sync::VIP;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::*;

// ---------------------------------------------------------------------------------------------
// 1. A NAT'd phone survives the failover without re-registering
// ---------------------------------------------------------------------------------------------

/// The end-to-end test. A phone behind an nft masquerade router registers through
/// the VIP at one of two Kamailio registrars (DMQ-replicated usrloc, both advertising the
/// VIP); the backup sipfront mirrors its flow and pre-binds its relay port; the master is
/// killed with SIGKILL; calls entered at the phone's home registrar and at the other one
/// reach the phone through the new master without the phone re-registering; its next
/// REGISTER goes to the same home registrar. Then the old master comes back, rejoins as
/// backup, takes the full table before it preempts, and a call reaches the phone through it.
#[test]
fn phone_behind_nat_is_reachable_after_master_kill_without_reregistering() {
    let _serial = serial();
    require(&["sipp", "kamailio", "kamcmd", "nft"]);
    let t0 = Instant::now();
    let dir = TestDir::new("sync-e2e");
    let mut e = e2e_setup(&dir, t0, &scenario("phone_answer.xml"));
    let (client, relay_port) = (e.flow.client.clone(), e.flow.relay_port);
    let (home, other, home_ip, other_ip) = (e.home, e.other, e.home_ip, e.other_ip);
    let flow = e.flow.clone();
    kill_master(&mut e, t0);

    // A call entered at the phone's home registrar, then one at the other registrar.
    let before = settled(&mut e.b);
    for (name, port, registrar, via) in [
        ("call-home", 5061, home_ip, home),
        ("call-other", 5062, other_ip, other),
    ] {
        let m0 = settled(&mut e.b);
        let invites_before = e.phone.messages().matches("INVITE sip:alice@").count();
        let (caller, r) = call(&dir, &e.net, name, port, registrar);
        assert!(
            r.ok(),
            "{name} via {via} failed: {}\nphone trace tail:\n{}",
            caller.describe(&r),
            tail(&e.phone.message_file, 60)
        );
        assert_eq!(r.stats.successful(), 1, "{}", caller.describe(&r));
        let m1 = settled(&mut e.b);
        let to_phone = datagrams(&m1, "to_client", via) - datagrams(&m0, "to_client", via);
        let from_phone = datagrams(&m1, "to_backend", via) - datagrams(&m0, "to_backend", via);
        // INVITE, ACK, BYE from the registrar; 180, 200, 200 back to it.
        assert!(
            to_phone >= 3.0,
            "{name}: {via} -> phone via sfB: {to_phone}"
        );
        assert!(
            from_phone >= 3.0,
            "{name}: phone -> {via} via sfB: {from_phone}"
        );
        assert!(
            e.phone.messages().matches("INVITE sip:alice@").count() > invites_before,
            "{name}: the phone saw no INVITE"
        );
        eprintln!(
            "[{} ms] {name}: entered at {via}, completed through sfB",
            ms(t0)
        );
    }
    e.phone.proc.assert_running();
    let registers = sent_transactions(&e.phone.messages(), "REGISTER");
    assert_eq!(
        registers.len(),
        1,
        "the phone must not have re-registered: {registers:?}"
    );
    // Nothing in sfB's table moved: same flow, and B forwarded for it without creating one.
    let now_b = e.b.flows_of(&client);
    assert_eq!(now_b.len(), 1);
    assert_eq!(now_b[0].key(), flow.key(), "flow on sfB after the calls");
    let after = e.b.metrics();
    assert_eq!(
        metric(&after, "sipfront_flows_created_total", &[]),
        0.0,
        "sfB created a flow (the phone's traffic should have found the mirrored one)"
    );
    let drops = nonzero_drops(&after);
    assert!(drops.is_empty(), "sfB dropped datagrams: {drops:?}");
    assert!(datagrams(&after, "to_client", home) > datagrams(&before, "to_client", home));

    // The phone's next REGISTER, from the same socket address: the first sipp ends, and a
    // second phone registers from 192.168.77.2:5060 while the NAT mapping still exists, and
    // then answers calls as the first did.
    e.phone.proc.signal("KILL");
    e.phone.proc.wait_timeout(Duration::from_secs(5));
    let m0 = settled(&mut e.b);
    let args: Vec<&str> = e.phone_args.iter().map(String::as_str).collect();
    e.phone = start_sipp(&dir, e.net.host("phone"), "phone-2", &args, true);
    let ok = wait_until(Duration::from_secs(20), || {
        e.phone.proc.assert_running();
        received_responses(&e.phone.messages(), "REGISTER").contains(&200)
    });
    assert!(
        ok,
        "re-REGISTER got no 200; phone-2 trace:\n{}",
        e.phone.messages()
    );
    let m1 = settled(&mut e.b);
    let to_home = datagrams(&m1, "to_backend", home) - datagrams(&m0, "to_backend", home);
    let to_other = datagrams(&m1, "to_backend", other) - datagrams(&m0, "to_backend", other);
    assert!(
        to_home >= 1.0 && to_other == 0.0,
        "re-REGISTER must go to the home {home}: to {home} {to_home}, to {other} {to_other}"
    );
    let now_b = e.b.flows_of(&client);
    assert_eq!(
        now_b.len(),
        1,
        "the re-REGISTER came from the same public address"
    );
    assert_eq!(
        now_b[0].key(),
        flow.key(),
        "same flow after the re-REGISTER"
    );
    assert_eq!(registered_port(e.home_kam(), "alice"), relay_port);
    eprintln!("[{} ms] re-REGISTER landed on the home {home}", ms(t0));

    // Failback: A starts again, rejoins as backup, holds preemption until it has B's full
    // table (with the phone's flow, now B's own), then preempts.
    e.a = start_spec(
        &dir,
        e.net.host("sfA"),
        "sfA-2",
        &spec(A_IP, B_IP, 150, &KAM_BACKENDS, &dir),
    );
    e.a.expect_state(VrrpState::Master, Duration::from_secs(20));
    e.b.expect_state(VrrpState::Backup, Duration::from_secs(10));
    wait_holders(&e.net, &["sfA"], Duration::from_secs(10));
    let log = e.a.log_text();
    let full = log.find("full table received");
    let master = log
        .lines()
        .filter(|l| l.contains("vrrp transition") && l.contains("state=\"master\""))
        .map(|l| log.find(l).unwrap_or(0))
        .next_back();
    assert!(
        full.is_some() && master.is_some() && full < master,
        "sfA-2 must take the full table before it becomes master; log:\n{}",
        e.a.log_tail(40)
    );
    let back = e.a.flows_of(&client);
    assert_eq!(
        back.len(),
        1,
        "sfA-2 lacks the phone's flow: {:?}",
        e.a.flows()
    );
    assert_eq!(back[0].key(), flow.key(), "flow on sfA-2 after failback");
    let m0 = settled(&mut e.a);
    let (caller, r) = call(&dir, &e.net, "call-failback", 5063, home_ip);
    assert!(
        r.ok(),
        "call after failback: {}\nphone-2 trace tail:\n{}",
        caller.describe(&r),
        tail(&e.phone.message_file, 60)
    );
    let m1 = settled(&mut e.a);
    assert!(
        datagrams(&m1, "to_client", home) - datagrams(&m0, "to_client", home) >= 3.0,
        "the call after failback did not go through sfA-2"
    );
    for sf in [&mut e.a, &mut e.b] {
        let d = sf.sync_drops();
        assert!(
            !d.contains_key("bad_mac") && !d.contains_key("replay"),
            "{}: {d:?}",
            sf.name
        );
    }
    eprintln!(
        "[{} ms] failback to sfA-2, call through it completed",
        ms(t0)
    );
}

/// A call to the phone entered at the registrar that is NOT its home, established through
/// the master: its Call-ID is pinned to that registrar, and the pin is synced. The master
/// is killed mid-call; the phone then hangs up, and its in-dialog BYE must leave the new
/// master towards the registrar that owns the call (from the synced dialog table), not the
/// phone's home.
#[test]
fn in_dialog_bye_from_phone_after_failover_follows_the_synced_dialog() {
    let _serial = serial();
    require(&["sipp", "kamailio", "kamcmd", "nft"]);
    let t0 = Instant::now();
    let dir = TestDir::new("sync-dialog");
    let answer = format!(
        "{}/tests/netns_sync/phone_answer_then_bye.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut e = e2e_setup(&dir, t0, &answer);
    let (other, other_ip) = (e.other, e.other_ip);
    let dialogs_b0 = e.b.metric("sipfront_dialogs", &[]);

    let caller_sf = format!(
        "{}/tests/netns_sync/caller_wait_bye.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut caller = start_caller(&dir, &e.net, "caller", &caller_sf, 5061, other_ip, "40s");
    // Established through A: the phone got the ACK.
    let ok = wait_until(Duration::from_secs(15), || {
        caller.proc.assert_running();
        e.phone.messages().contains("ACK sip:")
    });
    assert!(
        ok,
        "the call via {other} was not established; phone trace:\n{}",
        e.phone.messages()
    );
    // B holds the call's pin (one more dialog than before).
    let mut dialogs_b = 0.0;
    let ok = wait_until(Duration::from_secs(5), || {
        dialogs_b = e.b.metric("sipfront_dialogs", &[]);
        dialogs_b > dialogs_b0
    });
    assert!(
        ok,
        "sfB mirrors no dialog of the call: sipfront_dialogs {dialogs_b}"
    );
    eprintln!(
        "[{} ms] call via {other} established through sfA; sfB holds {dialogs_b} dialog(s)",
        ms(t0)
    );

    let d = bye_after_failover(&mut e, &mut caller, t0);
    assert!(
        received_responses(&e.phone.messages(), "BYE").contains(&200),
        "the phone got no 200 to its BYE"
    );
    assert!(d("to_client", other) >= 1.0, "200 to the BYE from {other}");
    eprintln!("[{} ms] phone's BYE went through sfB to {other}", ms(t0));
}

/// The same with a call longer than `dialog_idle` (4 s here): the phone keeps it alive with
/// an in-dialog INFO every 2 s for 24 s through the master, which refreshes the master's
/// pin without changing it. The master re-sends such pins to the backup (every
/// `dialog_idle / 4`), whose copy would otherwise have expired `dialog_idle` (and a
/// quarter, and 5 s: 10 s in all) after the call was set up; the master is killed and
/// the phone hangs up 3 s after its last INFO (within `dialog_idle`): its BYE must reach
/// the registrar that owns the call.
#[test]
fn a_call_longer_than_dialog_idle_keeps_its_backend_after_failover() {
    let _serial = serial();
    require(&["sipp", "kamailio", "kamcmd", "nft"]);
    let t0 = Instant::now();
    let dir = TestDir::new("sync-long-call");
    let answer = format!(
        "{}/tests/netns_sync/phone_answer_info_then_bye.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut e = e2e_setup_with(&dir, t0, &answer, "[timeouts]\ndialog_idle = \"4s\"\n");
    let (other, other_ip) = (e.other, e.other_ip);
    let caller_sf = format!(
        "{}/tests/netns_sync/caller_info_wait_bye.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut caller = start_caller(&dir, &e.net, "caller", &caller_sf, 5061, other_ip, "80s");
    // The twelfth INFO answered: 24 s of a call whose set-up copy would have expired on B
    // after 10 (and the phone hangs up 3 s later, within dialog_idle).
    let ok = wait_until(Duration::from_secs(45), || {
        caller.proc.assert_running();
        received_responses(&e.phone.messages(), "INFO")
            .iter()
            .filter(|&&c| c == 200)
            .count()
            >= 12
    });
    assert!(
        ok,
        "the phone's INFOs did not go through; phone trace tail:\n{}",
        tail(&e.phone.message_file, 40)
    );
    let dialogs_b = e.b.metric("sipfront_dialogs", &[]);
    assert!(dialogs_b >= 1.0, "sfB holds no dialog: {dialogs_b}");
    eprintln!(
        "[{} ms] call via {other} kept alive 24 s through sfA; sfB holds {dialogs_b} dialog(s)",
        ms(t0)
    );

    let _ = bye_after_failover(&mut e, &mut caller, t0);
    eprintln!("[{} ms] phone's BYE went through sfB to {other}", ms(t0));
}

/// Kills the master; the phone then hangs up (its scenario's BYE), which must end the
/// caller's call and reach, through the new master, the registrar that owns the call
/// (`e.other`), nothing the phone's home. Returns B's datagram counts over that, by
/// direction and backend.
fn bye_after_failover(
    e: &mut E2e,
    caller: &mut Sipp,
    t0: Instant,
) -> impl Fn(&str, &str) -> f64 + use<> {
    let (home, other) = (e.home, e.other);
    kill_master(e, t0);
    let m0 = settled(&mut e.b);
    let r = caller.wait(Duration::from_secs(45));
    assert!(
        r.ok(),
        "the phone's BYE did not end the call: {}\nphone trace tail:\n{}",
        caller.describe(&r),
        tail(&e.phone.message_file, 40)
    );
    let m1 = settled(&mut e.b);
    let d = move |dir: &str, b: &str| datagrams(&m1, dir, b) - datagrams(&m0, dir, b);
    assert!(
        d("to_backend", other) >= 1.0 && d("to_backend", home) == 0.0,
        "the phone's BYE must go to {other} (owns the call), not the home {home}: \
         to {other} {}, to {home} {}",
        d("to_backend", other),
        d("to_backend", home)
    );
    d
}

// ---------------------------------------------------------------------------------------------
// 2. Sync under load, peer restarted in the middle
// ---------------------------------------------------------------------------------------------

/// A few thousand client flows are created on the master while the backup is killed and
/// started again; after it has rejoined (full table), both hosts list the same flows
/// (client, relay port, home backend), and the backup has every relay port bound.
#[test]
fn thousands_of_flows_while_backup_restarts_tables_converge() {
    const N: usize = 3000;
    let _serial = serial();
    require(&["tcpdump"]);
    let t0 = Instant::now();
    let dir = TestDir::new("sync-load");
    let (net, [be_a, be_b]) = udp_pair_net();
    let (spec_a, spec_b) = pair_specs(&UDP_BACKENDS, LOAD_LIMITS, &dir);
    let (mut a, mut b1) = start_pair(&dir, &net, &spec_a, &spec_b);
    eprintln!("[{} ms] pair up and synced", ms(t0));

    let socks = Arc::new(client_sockets(net.host("client"), N));
    let vip: std::net::SocketAddr = format!("{VIP}:5060").parse().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (socks, sent) = (socks.clone(), sent.clone());
        std::thread::spawn(move || {
            // ~500 new flows a second: the whole run spans the backup's restart.
            for (i, s) in socks.iter().enumerate() {
                let local = s.local_addr().unwrap();
                let _ = s.send_to(&options_request(local, &format!("load{i}")), vip);
                sent.store(i + 1, Ordering::Relaxed);
                if i % 25 == 24 {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
    };
    let wait_sent = |n: usize| {
        assert!(
            wait_until(Duration::from_secs(60), || sent.load(Ordering::Relaxed)
                >= n),
            "client stalled at {}",
            sent.load(Ordering::Relaxed)
        );
    };
    wait_sent(N / 3);
    b1.kill9();
    let killed = Instant::now();
    eprintln!(
        "[{} ms] sfB killed after {} flows",
        ms(t0),
        sent.load(Ordering::Relaxed)
    );
    wait_sent(2 * N / 3);
    // Down long enough for A to notice (peer timeout 3 s).
    while killed.elapsed() < Duration::from_millis(3500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let restart_at = sent.load(Ordering::Relaxed);
    let mut b = start_spec(&dir, net.host("sfB"), "sfB-2", &spec_b);
    eprintln!("[{} ms] sfB started again after {restart_at} flows", ms(t0));
    sender.join().unwrap();
    eprintln!("[{} ms] all {N} first requests sent", ms(t0));

    // Every client got its 200 (retransmitting like a UAC for the few that lost one).
    let mut answered = vec![false; N];
    for round in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        for (i, s) in socks.iter().enumerate() {
            if !answered[i] && got_200(s) {
                answered[i] = true;
            }
        }
        let missing: Vec<usize> = (0..N).filter(|&i| !answered[i]).collect();
        if missing.is_empty() {
            break;
        }
        assert!(round < 19, "{} clients never got a 200", missing.len());
        for i in missing {
            let s = &socks[i];
            let _ = s.send_to(
                &options_request(s.local_addr().unwrap(), &format!("load{i}")),
                vip,
            );
        }
    }
    eprintln!(
        "[{} ms] all {N} clients answered (backends saw {} + {} requests incl. probes)",
        ms(t0),
        be_a.requests.load(Ordering::Relaxed),
        be_b.requests.load(Ordering::Relaxed)
    );

    b.wait_synced(Duration::from_secs(30));
    assert!(
        b.wait_log("full table received", Duration::from_secs(5)),
        "sfB-2 did not log `full table received`; log:\n{}",
        b.log_tail(30)
    );
    let set = |rows: &[FlowRow]| rows.iter().map(FlowRow::key).collect::<BTreeSet<_>>();
    let (mut fa, mut fb) = (BTreeSet::new(), BTreeSet::new());
    let ok = wait_until(Duration::from_secs(60), || {
        fa = set(&a.flows().1);
        fb = set(&b.flows().1);
        fa.len() == N && fa == fb
    });
    if !ok {
        let only_a: Vec<_> = fa.difference(&fb).take(10).collect();
        let only_b: Vec<_> = fb.difference(&fa).take(10).collect();
        panic!(
            "tables differ: A {} flows, B {} flows; only on A (first 10): {only_a:?}; only on \
             B: {only_b:?}\nA: {:?}\nB: {:?}",
            fa.len(),
            fb.len(),
            sync_metrics(&a.metrics()),
            sync_metrics(&b.metrics())
        );
    }
    // One flow per client socket, spread over both backends.
    let clients: BTreeSet<&String> = fa.iter().map(|(c, _, _)| c).collect();
    assert_eq!(clients.len(), N);
    let per_backend: BTreeMap<&String, usize> = fa.iter().fold(BTreeMap::new(), |mut m, k| {
        *m.entry(&k.2).or_default() += 1;
        m
    });
    assert_eq!(per_backend.len(), 2, "homes: {per_backend:?}");
    eprintln!(
        "[{} ms] both tables hold the same {N} flows (homes {per_backend:?})",
        ms(t0)
    );

    // B holds every mirrored relay port, bound on the VIP.
    let vip_ip: std::net::Ipv4Addr = VIP.parse().unwrap();
    let ports: BTreeSet<u16> = fa.iter().map(|k| k.1).collect();
    // A, the lower [sync] listen address, hands out its own half of the pool (even
    // offsets in 20000-29999) while it has room: B, had it served too, the other.
    let odd: Vec<&u16> = ports.iter().filter(|&&p| (p - 20000) % 2 != 0).collect();
    assert!(odd.is_empty(), "A handed out B's half: {odd:?}");
    let mut bound = BTreeSet::new();
    let ok = wait_until(Duration::from_secs(10), || {
        bound = udp_ports_bound(b.pid(), Some(vip_ip));
        ports.is_subset(&bound)
    });
    assert!(
        ok,
        "sfB-2 has not bound {} of the {N} relay ports",
        ports.difference(&bound).count()
    );

    // Gauges and counters agree; no authentication or replay drops anywhere.
    let ma = a.metrics();
    let mb = b.metrics();
    assert_eq!(metric(&ma, "sipfront_flows", &[]), N as f64);
    assert_eq!(metric(&mb, "sipfront_flows", &[]), N as f64);
    assert!(
        wait_until(Duration::from_secs(5), || b
            .metric("sipfront_sync_peer_flows", &[])
            == N as f64),
        "sfB-2's sipfront_sync_peer_flows: {:?}",
        sync_metrics(&b.metrics())
    );
    for (name, text) in [("sfA", &ma), ("sfB-2", &mb)] {
        for reason in [
            "bad_mac",
            "replay",
            "decode",
            "version",
            "not_peer",
            "backend_mismatch",
        ] {
            assert_eq!(
                metric(text, "sipfront_sync_dropped_total", &[("reason", reason)]),
                0.0,
                "{name}: sync drops {reason}: {:?}",
                sync_metrics(text)
            );
        }
    }
    // Lag: messages A sent that B has not acknowledged (heartbeats carry the acks, once a
    // second) falls back to a heartbeat or two once the load is over.
    let mut lag = f64::NAN;
    let ok = wait_until(Duration::from_secs(15), || {
        lag = a.metric("sipfront_sync_lag", &[]);
        lag <= 2.0
    });
    assert!(ok, "sfA's sipfront_sync_lag stays at {lag}");
    // The VRRP roles never moved.
    assert_eq!(a.state(), Some(VrrpState::Master));
    assert_eq!(b.state(), Some(VrrpState::Backup));
    wait_holders(&net, &["sfA"], Duration::from_secs(1));
    eprintln!(
        "[{} ms] done; sfA sync: {:?}; sfA log: {} `sync peer silent`, {} `sync peer up`",
        ms(t0),
        sync_metrics(&ma),
        a.log_lines("sync peer silent").len(),
        a.log_lines("sync peer up").len()
    );
    drop(b1);
}

// ---------------------------------------------------------------------------------------------
// 3. Security of the sync port
// ---------------------------------------------------------------------------------------------

use sipfront::sync::message::{Body, Envelope, Item, Key, VERSION, open, seal};

fn forged_flow() -> Item {
    Item::Flow {
        client: "203.0.113.9:5060".parse().unwrap(),
        relay_port: sipfront::relay::port::RelayPort::first(29999),
        ingress: 0,
        home: 0,
        registered_secs: Some(3600),
    }
}

fn seal_with(key: &[u8], epoch: u64, seq: u64, body: Body) -> Vec<u8> {
    let env = Envelope {
        version: VERSION,
        epoch,
        seq,
        body,
        ext: Default::default(),
    };
    let mut buf = vec![0u8; 4096];
    let n = seal(&Key::new(key), &env, &mut buf).expect("seal");
    buf.truncate(n);
    buf
}

/// The LAN of the sync-port tests (with an intruder at .40), one backend, and the pair up
/// and synced: (net, backend, A's config, A, B).
fn intruder_setup(dir: &TestDir) -> (Net, UdpBackend, SfSpec, NsSipfront, NsSipfront) {
    let net = sync_net(&[
        ("client", 10),
        ("sfA", 11),
        ("sfB", 12),
        ("beA", 21),
        ("intruder", 40),
    ]);
    let be = UdpBackend::start(net.host("beA"), 5060);
    let (spec_a, spec_b) = pair_specs(&[("beA", "10.88.0.21:5060")], "", dir);
    let (a, b) = start_pair(dir, &net, &spec_a, &spec_b);
    (net, be, spec_a, a, b)
}

/// Captures A's sync datagrams to B (capture `name`) while `n` client flows are made (tag
/// `tag`) and both hosts list them; returns the client sockets (keep them), the captured
/// datagrams and the first one that carried flow items: its bytes and its opened envelope.
fn capture_flow_items(
    dir: &TestDir,
    net: &Net,
    a: &mut NsSipfront,
    b: &mut NsSipfront,
    name: &str,
    n: usize,
    tag: &str,
) -> (
    Vec<std::net::UdpSocket>,
    Vec<UdpDatagram>,
    Vec<u8>,
    Envelope,
) {
    let cap = PcapCapture::start(
        dir,
        net.host("sfB"),
        name,
        &format!("udp and src host {A_IP} and dst port {SYNC_PORT}"),
    );
    let socks = make_flows(net, n, tag);
    wait_flow_count(a, n);
    wait_flow_count(b, n);
    let captured = cap.stop();
    let key = Key::new(SYNC_KEY.as_bytes());
    let (payload, env) = captured
        .iter()
        .find_map(|d| {
            let env = open(&key, &d.payload).ok()?;
            matches!(&env.body, Body::Items(items) if !items.is_empty())
                .then(|| (d.payload.clone(), env))
        })
        .unwrap_or_else(|| {
            panic!(
                "no sync datagram with flow items among {} captured",
                captured.len()
            )
        });
    (socks, captured, payload, env)
}

/// Datagrams to the backup's sync port that are not the peer's current messages are dropped
/// and counted by reason, and change nothing: from another LAN address (`not_peer`), and
/// with the peer's address forged by an attacker on the LAN — a replayed captured
/// datagram (`replay`), a tampered one and one sealed with a wrong key (`bad_mac`), a
/// properly sealed one with a stale sequence number (`replay`), a runt (`short`). The key
/// never shows in logs or the admin API.
#[test]
fn sync_port_drops_strangers_forgeries_and_replays() {
    let _serial = serial();
    require(&["tcpdump"]);
    let t0 = Instant::now();
    let dir = TestDir::new("sync-security");
    let (net, _be, _spec_a, mut a, mut b) = intruder_setup(&dir);
    // A datagram that carried flows to B: sealed by A, accepted by B.
    let (_socks, captured, orig, env) =
        capture_flow_items(&dir, &net, &mut a, &mut b, "sync-a-to-b", 20, "sec");
    eprintln!(
        "[{} ms] captured {} sync datagrams A -> B; replaying seq {} of epoch {:#x} ({} bytes)",
        ms(t0),
        captured.len(),
        env.seq,
        env.epoch,
        orig.len()
    );

    let before: BTreeSet<_> = b.flows().1.iter().map(FlowRow::key).collect();
    let drops0 = b.sync_drops();
    let vip_ip: std::net::Ipv4Addr = VIP.parse().unwrap();
    let b_sync = SocketAddrV4::new(B_IP.parse().unwrap(), SYNC_PORT);
    let a_sync = SocketAddrV4::new(A_IP.parse().unwrap(), SYNC_PORT);
    let intruder = net.host("intruder");

    // From the intruder's own address: a valid datagram and garbage.
    send_plain(intruder, b_sync, &orig);
    send_plain(intruder, b_sync, b"hello sipfront, please sync this");
    // Posing as A (forged source address and port).
    let mut tampered = orig.clone();
    tampered[orig.len() / 2] ^= 0x20;
    let wrong_key = seal_with(
        b"not-the-shared-key-0123456789",
        env.epoch,
        env.seq + 1_000_000,
        Body::Items(vec![forged_flow()]),
    );
    let stale = seal_with(
        SYNC_KEY.as_bytes(),
        env.epoch,
        env.seq,
        Body::Items(vec![forged_flow()]),
    );
    send_spoofed(intruder, a_sync, b_sync, &orig); // replay
    send_spoofed(intruder, a_sync, b_sync, &tampered); // bad_mac
    send_spoofed(intruder, a_sync, b_sync, &wrong_key); // bad_mac
    send_spoofed(intruder, a_sync, b_sync, &stale); // replay
    send_spoofed(intruder, a_sync, b_sync, &[0x01, 0x02, 0x03]); // short
    let want: BTreeMap<&str, f64> = [
        ("not_peer", 2.0),
        ("replay", 2.0),
        ("bad_mac", 2.0),
        ("short", 1.0),
    ]
    .into_iter()
    .collect();
    let mut delta = BTreeMap::new();
    let ok = wait_until(Duration::from_secs(10), || {
        let d = b.sync_drops();
        delta = d
            .iter()
            .map(|(k, v)| (k.clone(), v - drops0.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v != 0.0)
            .collect::<BTreeMap<String, f64>>();
        want.iter()
            .all(|(k, v)| delta.get(*k).copied().unwrap_or(0.0) >= *v)
    });
    assert!(
        ok,
        "sfB's sync drops after the attacks: {delta:?}, expected at least {want:?}"
    );
    // Settle, then exactly those.
    std::thread::sleep(Duration::from_millis(500));
    let d = b.sync_drops();
    let delta: BTreeMap<String, f64> = d
        .iter()
        .map(|(k, v)| (k.clone(), v - drops0.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect();
    let want_owned: BTreeMap<String, f64> = want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(delta, want_owned, "sfB's sync drops by reason");
    eprintln!("[{} ms] sfB dropped: {delta:?}", ms(t0));

    // Nothing changed: same flows, the forged one absent and its port not bound, the
    // real peer still heard and in sync.
    let after: BTreeSet<_> = b.flows().1.iter().map(FlowRow::key).collect();
    assert_eq!(after, before, "sfB's table changed");
    assert!(b.flows_of("203.0.113.9:5060").is_empty());
    assert!(!udp_ports_bound(b.pid(), Some(vip_ip)).contains(&29999));
    assert_eq!(b.metric("sipfront_sync_peer_up", &[]), 1.0);
    let _more = make_flows(&net, 5, "after");
    wait_flow_count(&mut a, 25);
    wait_flow_count(&mut b, 25);
    let d = a.sync_drops();
    assert!(d.is_empty(), "sfA sync drops: {d:?}");

    // The key never shows.
    for sf in [&mut a, &mut b] {
        assert!(
            !sf.log_text().contains(SYNC_KEY),
            "{}: key in the log",
            sf.name
        );
        for path in ["/metrics", "/api/v1/status", "/api/v1/flows"] {
            let body = sf.get(path).map(|(_, b)| b).unwrap_or_default();
            assert!(!body.contains(SYNC_KEY), "{}: key in {path}", sf.name);
        }
    }
    eprintln!("[{} ms] done", ms(t0));
}

// ---------------------------------------------------------------------------------------------
// 4. A master that crashes and is restarted at once (systemd `Restart=`)
// ---------------------------------------------------------------------------------------------

/// The master is killed and started again before the backup's peer timeout (3 s) notices
/// it was gone, as a supervisor restarting a crashed process does. The backup takes the
/// VIP meanwhile; the restarted host asks for a full table, and once it has it (and
/// preempts) it must hold every flow it had before, on the same relay ports: otherwise the
/// phones behind those flows are unreachable through it, and its new flows take relay
/// ports that the backup still holds for other clients.
#[test]
fn master_restarted_within_peer_timeout_gets_its_flows_back() {
    const N: usize = 200;
    let _serial = serial();
    require(&[]);
    let t0 = Instant::now();
    let dir = TestDir::new("sync-quick-restart");
    let net = sync_net(&[("client", 10), ("sfA", 11), ("sfB", 12), ("beA", 21)]);
    let _be = UdpBackend::start(net.host("beA"), 5060);
    let backends = [("beA", "10.88.0.21:5060")];
    let extra = "[limits]\nnew_flows_per_ip = 1000000\nmax_flows_per_ip = 1000000\ndatagrams_per_ip = 1000000\n";
    let (spec_a, spec_b) = pair_specs(&backends, extra, &dir);
    let (mut a, mut b) = start_pair(&dir, &net, &spec_a, &spec_b);
    let _socks = make_flows(&net, N, "quick");
    wait_flow_count(&mut a, N);
    wait_flow_count(&mut b, N);
    let set = |rows: &[FlowRow]| rows.iter().map(FlowRow::key).collect::<BTreeSet<_>>();
    let before = set(&a.flows().1);
    assert_eq!(set(&b.flows().1), before, "B mirrors A");

    let killed = Instant::now();
    a.kill9();
    drop(a);
    let mut a2 = start_spec(&dir, net.host("sfA"), "sfA-2", &spec_a);
    eprintln!(
        "[{} ms] sfA killed and started again in {:?}",
        ms(t0),
        killed.elapsed()
    );
    a2.wait_synced(Duration::from_secs(15));
    a2.expect_state(VrrpState::Master, Duration::from_secs(15));
    b.expect_state(VrrpState::Backup, Duration::from_secs(10));
    let peer_silent = b.log_lines("sync peer silent");
    eprintln!(
        "[{} ms] sfA-2 synced and master; sfB logged {} `sync peer silent`; flows: sfA-2 {}, sfB {}",
        ms(t0),
        peer_silent.len(),
        a2.flows().0,
        b.flows().0
    );
    let mut after = BTreeSet::new();
    let ok = wait_until(Duration::from_secs(10), || {
        after = set(&a2.flows().1);
        after == before
    });
    if !ok {
        // What that costs: a new client of sfA-2 takes a relay port; if sfA-2 does not know
        // the ports of its old flows, it hands out one of them, and sfB (which mirrors the
        // new flow) drops the old client's flow on that port.
        let _new = make_flows(&net, 1, "after-restart");
        let mut new_flow = None;
        wait_until(Duration::from_secs(5), || {
            new_flow = a2
                .flows()
                .1
                .into_iter()
                .find(|f| !before.iter().any(|k| k.0 == f.client));
            new_flow.is_some()
        });
        std::thread::sleep(Duration::from_millis(500));
        let new_flow = new_flow.expect("a flow for the new client on sfA-2");
        let old_owner = before.iter().find(|k| k.1 == new_flow.relay_port);
        let b_now = set(&b.flows().1);
        panic!(
            "after its quick restart sfA-2 holds {} of its {N} flows (sfB holds {}); a new \
             client got relay port {} on sfA-2, which belonged to {old_owner:?} (still on sfB: \
             {}); sfB log:\n{}",
            after.intersection(&before).count(),
            b_now.len(),
            new_flow.relay_port,
            old_owner.is_some_and(|k| b_now.contains(k)),
            b.log_tail(15)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Replay of a datagram from the peer's previous incarnation
// ---------------------------------------------------------------------------------------------

/// A sync datagram captured before the peer restarted (its previous epoch) is replayed with
/// the peer's forged address: it must be dropped as a replay, not taken for yet another
/// restart of the peer (which would apply its stale items and restart the full sync).
#[test]
fn datagram_replayed_from_previous_peer_incarnation_is_dropped() {
    let _serial = serial();
    require(&["tcpdump"]);
    let t0 = Instant::now();
    let dir = TestDir::new("sync-old-epoch");
    let (net, _be, spec_a, mut a, mut b) = intruder_setup(&dir);
    let (_socks, _, old, env) =
        capture_flow_items(&dir, &net, &mut a, &mut b, "sync-epoch1", 10, "epoch1-");

    // A restarts cleanly (SIGTERM: it hands the VIP over), then comes back: a new epoch.
    a.proc.signal("TERM");
    a.proc.wait_timeout(Duration::from_secs(10));
    drop(a);
    std::thread::sleep(Duration::from_secs(4));
    let full_before = b.log_lines("full table received").len();
    let mut a2 = start_spec(&dir, net.host("sfA"), "sfA-2", &spec_a);
    a2.wait_synced(Duration::from_secs(15));
    a2.expect_state(VrrpState::Master, Duration::from_secs(15));
    assert!(
        wait_until(Duration::from_secs(10), || b
            .log_lines("full table received")
            .len()
            > full_before),
        "sfB did not take sfA-2's full table"
    );
    std::thread::sleep(Duration::from_secs(2));
    let full_synced = b.log_lines("full table received").len();
    let drops0 = b.sync_drops();
    eprintln!(
        "[{} ms] sfA restarted; replaying seq {} of its previous epoch {:#x}",
        ms(t0),
        env.seq,
        env.epoch
    );

    let a_sync = SocketAddrV4::new(A_IP.parse().unwrap(), SYNC_PORT);
    let b_sync = SocketAddrV4::new(B_IP.parse().unwrap(), SYNC_PORT);
    send_spoofed(net.host("intruder"), a_sync, b_sync, &old);
    // Dropped and counted: as `replay` (or under a reason of its own for a stale epoch).
    let total = |d: &BTreeMap<String, f64>| d.values().sum::<f64>();
    let mut dropped = 0.0;
    let ok = wait_until(Duration::from_secs(5), || {
        dropped = total(&b.sync_drops()) - total(&drops0);
        dropped >= 1.0
    });
    std::thread::sleep(Duration::from_secs(2));
    let full_after = b.log_lines("full table received").len();
    let drops1 = b.sync_drops();
    assert!(
        ok,
        "the replayed datagram of sfA's previous epoch was not dropped (sync drops before \
         {drops0:?}, after {drops1:?}); sfB logged `full table received` {} more time(s) \
         after it: it took the replay for a restart of its peer",
        full_after - full_synced
    );
    assert!(
        !drops1.contains_key("not_peer") && !drops1.contains_key("bad_mac"),
        "counted under the wrong reason: {drops1:?}"
    );
    assert_eq!(full_after, full_synced, "sfB re-synced after the replay");
}

// ---------------------------------------------------------------------------------------------
// The helpers' parsers (no namespaces)
// ---------------------------------------------------------------------------------------------

/// `sent_transactions` counts a retransmitted REGISTER once and a second one again;
/// `received_responses` reads status codes by CSeq method (sipp's `-trace_msg` format).
#[test]
fn sipp_trace_parsers() {
    let msg = |dir: &str, body: &str| {
        format!(
            "----------------------------------------------- 2026-01-01 00:00:00.000000\n\
             UDP message {dir}:\n\n{body}\n\n"
        )
    };
    let reg = |cid: &str, cseq: u32| {
        format!(
            "REGISTER sip:10.88.0.100:5060 SIP/2.0\nVia: SIP/2.0/UDP 192.168.77.2:5060\n\
             Call-ID: {cid}\nCSeq: {cseq} REGISTER\nContent-Length: 0"
        )
    };
    let ok = |cid: &str, cseq: &str| {
        format!("SIP/2.0 200 OK\nCall-ID: {cid}\nCSeq: {cseq}\nContent-Length: 0")
    };
    let trace = [
        msg("sent (376 bytes)", &reg("a@x", 1)),
        msg("sent (376 bytes)", &reg("a@x", 1)),
        msg("received [456] bytes :", &ok("a@x", "1 REGISTER")),
        msg(
            "received [900] bytes :",
            "INVITE sip:alice@x SIP/2.0\nCSeq: 1 INVITE",
        ),
        msg("sent (300 bytes)", &ok("inv@y", "1 INVITE")),
    ]
    .concat();
    assert_eq!(sent_transactions(&trace, "REGISTER").len(), 1);
    assert_eq!(received_responses(&trace, "REGISTER"), vec![200]);
    assert!(received_responses(&trace, "INVITE").is_empty());
    let two = trace.clone() + &msg("sent (376 bytes)", &reg("a@x", 2));
    assert_eq!(sent_transactions(&two, "REGISTER").len(), 2);
}
