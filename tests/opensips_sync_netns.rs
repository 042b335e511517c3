//! The sipfront pair (built-in VRRP + `[sync]`, network namespaces) in front of two OpenSIPS
//! nodes running deploy/opensips/opensips.cfg (usrloc shared by the `clusterer` over BIN): a
//! phone behind an nft masquerade router registers through the VIP at its home node; the
//! backup sipfront mirrors its flow; the master is killed with SIGKILL; calls entered at the
//! phone's home node and at the other node reach the phone through the new master without the
//! phone re-registering; the old master comes back and the phone is reached through it again.
//! The Kamailio version is the first test of tests/sync_netns.rs, whose helpers
//! (tests/netns_sync/, tests/netns/) this file uses.
//!
//! Needs root, `ip netns`, `nft`, `sipp`; skipped (one printed line) without an OpenSIPS build
//! (`OPENSIPS_PREFIX`). Namespaces `sfsync<PID>x<N>-*` (unique per test process), removed on
//! drop. Addresses: LAN 10.88.0.0/24, VIP 10.88.0.100, NAT .2 (phone 192.168.77.2 behind it),
//! sfA .11, sfB .12, OpenSIPS .21 / .22 (SIP 5060, BIN 5566), caller .30.

// Shared with tests/sync_netns.rs, which uses all of it; this test a part.
#[allow(dead_code)]
mod netns_sync;
mod opensips;

use netns_sync::VIP;
use netns_sync::*;
use opensips::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};
use testkit::*;

const OS_BACKENDS: [(&str, &str); 2] = [("osA", "10.88.0.21:5060"), ("osB", "10.88.0.22:5060")];

#[test]
fn opensips_phone_behind_nat_is_reachable_after_master_kill_without_reregistering() {
    if skip("opensips_phone_behind_nat_is_reachable_after_master_kill_without_reregistering") {
        return;
    }
    let _serial = serial();
    require(&["sipp", "nft"]);
    let t0 = Instant::now();
    let dir = TestDir::new("opensips-sync-e2e");
    let mut net = sync_net(&[
        ("sfA", 11),
        ("sfB", 12),
        ("osA", 21),
        ("osB", 22),
        ("caller", 30),
    ]);
    // The sipp phone sends no keepalives: the NAT keeps its UDP mappings 120 s.
    net.add_nat_phone("nat", 2, "phone", 120);

    let vip: Ipv4Addr = VIP.parse().unwrap();
    let nodes = Node::pair(
        ("10.88.0.21".parse().unwrap(), 5060, 5566),
        ("10.88.0.22".parse().unwrap(), 5060, 5566),
        SocketAddrV4::new(vip, 5060),
        vip,
    );
    let os_a = OpenSips::start(&dir, "osA", &nodes[0], Some(&net.host("osA").ns.name));
    let os_b = OpenSips::start_linked(
        &dir,
        "osB",
        &nodes[1],
        Some(&net.host("osB").ns.name),
        &os_a,
    );
    os_a.wait_cluster_ready();
    eprintln!("[{} ms] OpenSIPS nodes up, cluster synced", ms(t0));

    let (mut a, b) = start_pair(
        &dir,
        &net,
        &spec(A_IP, B_IP, 150, &OS_BACKENDS, &dir),
        &spec(B_IP, A_IP, 100, &OS_BACKENDS, &dir),
    );
    let mut b = b;
    eprintln!("[{} ms] sfA master, sfB backup, synced", ms(t0));

    let phone_args: Vec<String> = [
        "-sf",
        &scenario("phone_register.xml"),
        "-oocsf",
        &scenario("phone_answer.xml"),
        "-s",
        "alice",
        "-t",
        "u1",
        "-i",
        "192.168.77.2",
        "-p",
        "5060",
        "-m",
        "1",
        "-d",
        "300000",
        "10.88.0.100:5060",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args: Vec<&str> = phone_args.iter().map(String::as_str).collect();
    let mut phone = start_sipp(&dir, net.host("phone"), "phone", &args, true);
    wait_bound(&mut phone.proc, 5060);

    let flow = a.wait_registered_flow("10.88.0.2:", &mut phone);
    let (client, relay_port) = (flow.client.clone(), flow.relay_port);
    let (home, other, home_os, other_os) = if flow.backend == "osA" {
        ("osA", "osB", &os_a, &os_b)
    } else {
        ("osB", "osA", &os_b, &os_a)
    };
    let home_ip = home_os.node.sip.ip().to_string();
    let other_ip = other_os.node.sip.ip().to_string();
    assert_eq!(
        wait_received_port(home_os, "alice", VIP),
        relay_port,
        "home node"
    );
    assert_eq!(
        wait_received_port(other_os, "alice", VIP),
        relay_port,
        "registration replicated by the clusterer"
    );
    eprintln!(
        "[{} ms] phone {client} registered at {home} via relay port {relay_port}, replicated",
        ms(t0)
    );

    // The backup mirrors the flow and has its relay port bound on the VIP.
    let mut mirrored = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        mirrored = b.flows_of(&client);
        mirrored.len() == 1
            && mirrored[0].key() == flow.key()
            && mirrored[0].registered_secs.is_some()
    });
    assert!(ok, "sfB does not mirror {flow:?}: {mirrored:?}");
    assert!(
        udp_ports_bound(b.pid(), Some(vip)).contains(&relay_port),
        "sfB has not pre-bound {VIP}:{relay_port}"
    );

    // Kill the master.
    let kill_at = Instant::now();
    a.kill9();
    b.expect_state(VrrpState::Master, Duration::from_secs(10));
    let ok = wait_until(Duration::from_secs(10), || net.host("sfB").has_addr(VIP));
    assert!(ok, "sfB did not add the VIP");
    eprintln!(
        "[{} ms] sfA killed; sfB master with the VIP after {:?}",
        ms(t0),
        kill_at.elapsed()
    );

    // A call entered at the home node, then one at the other node, through sfB.
    for (name, port, registrar, via) in [
        ("call-home", 5061, &home_ip, home),
        ("call-other", 5062, &other_ip, other),
    ] {
        let m0 = settled(&mut b);
        let invites_before = phone.messages().matches("INVITE sip:alice@").count();
        let (caller, r) = call(&dir, &net, name, port, registrar);
        assert!(
            r.ok(),
            "{name} via {via} failed: {}\nphone trace tail:\n{}",
            caller.describe(&r),
            tail(&phone.message_file, 60)
        );
        assert_eq!(r.stats.successful(), 1, "{}", caller.describe(&r));
        let m1 = settled(&mut b);
        let to_phone = datagrams(&m1, "to_client", via) - datagrams(&m0, "to_client", via);
        let from_phone = datagrams(&m1, "to_backend", via) - datagrams(&m0, "to_backend", via);
        assert!(
            to_phone >= 3.0,
            "{name}: {via} -> phone via sfB: {to_phone}"
        );
        assert!(
            from_phone >= 3.0,
            "{name}: phone -> {via} via sfB: {from_phone}"
        );
        assert!(
            phone.messages().matches("INVITE sip:alice@").count() > invites_before,
            "{name}: the phone saw no INVITE"
        );
        eprintln!(
            "[{} ms] {name}: entered at {via}, completed through sfB",
            ms(t0)
        );
    }
    phone.proc.assert_running();
    let registers = sent_transactions(&phone.messages(), "REGISTER");
    assert_eq!(
        registers.len(),
        1,
        "the phone must not have re-registered: {registers:?}"
    );
    let now_b = b.flows_of(&client);
    assert_eq!(now_b.len(), 1);
    assert_eq!(now_b[0].key(), flow.key(), "flow on sfB after the calls");
    let after = b.metrics();
    assert_eq!(
        metric(&after, "sipfront_flows_created_total", &[]),
        0.0,
        "sfB created a flow (the phone's traffic should have found the mirrored one)"
    );
    let drops = nonzero_drops(&after);
    assert!(drops.is_empty(), "sfB dropped datagrams: {drops:?}");

    // Failback: A starts again, takes B's full table, preempts; a call reaches the phone
    // through it.
    a = start_spec(
        &dir,
        net.host("sfA"),
        "sfA-2",
        &spec(A_IP, B_IP, 150, &OS_BACKENDS, &dir),
    );
    a.expect_state(VrrpState::Master, Duration::from_secs(20));
    b.expect_state(VrrpState::Backup, Duration::from_secs(10));
    wait_holders(&net, &["sfA"], Duration::from_secs(10));
    let back = a.flows_of(&client);
    assert_eq!(
        back.len(),
        1,
        "sfA-2 lacks the phone's flow: {:?}",
        a.flows()
    );
    assert_eq!(back[0].key(), flow.key(), "flow on sfA-2 after failback");
    let m0 = settled(&mut a);
    let (caller, r) = call(&dir, &net, "call-failback", 5063, &home_ip);
    assert!(
        r.ok(),
        "call after failback: {}\nphone trace tail:\n{}",
        caller.describe(&r),
        tail(&phone.message_file, 60)
    );
    let m1 = settled(&mut a);
    assert!(
        datagrams(&m1, "to_client", home) - datagrams(&m0, "to_client", home) >= 3.0,
        "the call after failback did not go through sfA-2"
    );
    for o in [&os_a, &os_b] {
        let errors = o.unexpected_errors();
        assert!(errors.is_empty(), "{}: {errors:#?}", o.name());
    }
    eprintln!(
        "[{} ms] failback to sfA-2, call through it completed",
        ms(t0)
    );
}
