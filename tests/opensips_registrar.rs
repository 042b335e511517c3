//! deploy/opensips/opensips.cfg run by real OpenSIPS (3.6.8, built by tests/run.sh from
//! ../shared/opensips): the config passes `opensips -C` as shipped and as the tests rewrite
//! it; a NAT'd phone (sipp) registers through sipfront at one of two OpenSIPS nodes that share
//! usrloc with the `clusterer` module over BIN ("full-sharing"); the node stores sipfront's
//! relay address and the phone's flow port as the path back; the registration is replicated
//! to the other node with the same path; calls entered at the home node and at the other node
//! reach the phone through its relay port, and its answers go back to the node that sent the
//! INVITE. The Kamailio versions are in tests/registrar.rs.
//!
//! Skipped (one printed line) without an OpenSIPS build (`OPENSIPS_PREFIX`).
//!
//! With route(auth) on, only an account's own credentials register it and only a
//! subscriber's call reaches a phone.
//!
//! Ports: 24060-24099, relay ports 14000-14499; digest test 24160-24199, relay 14500-14599.

mod opensips;

use opensips::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};
use testkit::*;

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The phone: REGISTERs `user` through sipfront at `sip`, stays registered (its socket open
/// for `hold_ms`) and answers INVITEs out of call.
fn start_phone(dir: &TestDir, user: &str, port: u16, sip: &str, hold_ms: u32) -> Sipp {
    Sipp::phone(dir, "phone", user, port, sip, "phone_answer.xml", hold_ms)
}

fn datagrams(text: &str, direction: &str, backend: &str) -> f64 {
    metric(
        text,
        "sipfront_datagrams_total",
        &[("direction", direction), ("backend", backend)],
    )
}

/// The shipped file passes `opensips -C` with only its module directory changed (its own
/// example addresses), and so do both nodes as the tests rewrite them.
/// Nodes `na` and `nb` (the clusterer's seed first: alone, it declares its empty table
/// synced after seed_fallback_interval (5 s); B then pulls A's table at start-up), their
/// cluster synced, and sipfront on `na`'s VIP with both as backends, both up.
fn cluster_behind_sipfront(
    dir: &TestDir,
    na: &Node,
    nb: &Node,
    relay_ports: &str,
    admin_port: u16,
) -> (OpenSips, OpenSips, Sipfront) {
    let oa = OpenSips::start(dir, "osA", na, None);
    let ob = OpenSips::start_linked(dir, "osB", nb, None, &oa);
    oa.wait_cluster_ready();
    let mut front = Sipfront::start(
        dir,
        SipfrontConfig::new(
            &na.vip.to_string(),
            relay_ports,
            &format!("127.0.0.1:{admin_port}"),
        )
        .backend("osA", &na.sip.to_string())
        .backend("osB", &nb.sip.to_string()),
    );
    front.wait_backends_up(Duration::from_secs(10));
    (oa, ob, front)
}

#[test]
fn opensips_config_is_valid() {
    if skip("opensips_config_is_valid") {
        return;
    }
    let dir = TestDir::new("opensips-check");
    let shipped = std::fs::read_to_string(opensips_cfg()).unwrap();
    let only_mpath = shipped.replace("/usr/lib/x86_64-linux-gnu/opensips/modules/", &module_dir());
    assert_ne!(shipped, only_mpath, "mpath line of the shipped file");
    let path = dir.join("shipped.cfg");
    std::fs::write(&path, &only_mpath).unwrap();
    let (ok, out) = check_config(&path);
    assert!(ok, "opensips -C on the shipped file:\n{out}");
    assert!(out.contains("udp: 10.1.0.21 [10.1.0.21]:5060"), "{out}");
    assert!(out.contains("bin: 10.1.0.21 [10.1.0.21]:5566"), "{out}");
    assert!(
        out.contains("udp: 203.0.113.10:5060"),
        "alias of the VIP: {out}"
    );

    let vip = SocketAddrV4::new(LO, 24260);
    for node in Node::pair((LO, 24270, 24272), (LO, 24271, 24273), vip, LO) {
        let cfg = render_cfg(&node, &module_dir(), &dir.join("fifo"));
        if node.id == 2 {
            assert!(
                cfg.contains("\"cluster_id=1, url=bin:127.0.0.1:24273\")"),
                "node B is not the seed"
            );
            assert!(cfg.contains("\"my_node_id\", 2)"));
            assert!(cfg.contains("node_id=1, url=bin:127.0.0.1:24272"));
        }
        let path = dir.join(&format!("node{}.cfg", node.id));
        std::fs::write(&path, &cfg).unwrap();
        let (ok, out) = check_config(&path);
        assert!(ok, "opensips -C on node {}:\n{out}", node.id);
        let sip = node.sip.port();
        assert!(
            out.contains(&format!("udp: 127.0.0.1 [127.0.0.1]:{sip}")),
            "node {}: {out}",
            node.id
        );
    }
}

/// A phone registers through sipfront at its home OpenSIPS node; the registration is
/// replicated by the clusterer; a call entered at the home node, then one entered at the
/// other node, reach the phone through its relay port, and the phone's answers go back to
/// the node that sent the INVITE.
#[test]
fn opensips_registered_phone_called_via_home_and_other_node() {
    if skip("opensips_registered_phone_called_via_home_and_other_node") {
        return;
    }
    let dir = TestDir::new("opensips-registrar");
    let t0 = Instant::now();
    let vip = SocketAddrV4::new(LO, 24060);
    // With the dialog check on: the calls' requests must find their dialog on the node.
    let [mut na, mut nb] = Node::pair((LO, 24070, 24072), (LO, 24071, 24073), vip, LO);
    (na.dialog_check, nb.dialog_check) = (true, true);
    let (oa, ob, mut front) = cluster_behind_sipfront(&dir, &na, &nb, "14000-14499", 24090);
    eprintln!("[{:?}] OpenSIPS nodes up, cluster synced", t0.elapsed());

    let mut phone = start_phone(&dir, "carol", 24080, &vip.to_string(), 90_000);
    let reg = front.settled_metrics(Duration::from_millis(400), Duration::from_secs(5));
    let (to_a, to_b) = (
        datagrams(&reg, "to_backend", "osA"),
        datagrams(&reg, "to_backend", "osB"),
    );
    assert!(
        (to_a > 0.0) != (to_b > 0.0),
        "REGISTER went to exactly one backend: osA={to_a} osB={to_b}"
    );
    let (home, other) = if to_a > 0.0 { (&oa, &ob) } else { (&ob, &oa) };
    let relay_port = wait_received_port(home, "carol", "127.0.0.1");
    assert!(
        (14000..=14499).contains(&relay_port),
        "received port {relay_port} is the phone's relay port"
    );
    let replicated = wait_received_port(other, "carol", "127.0.0.1");
    assert_eq!(replicated, relay_port, "replicated received address");
    eprintln!(
        "[{:?}] phone registered at {} via relay port {relay_port}, replicated to {}",
        t0.elapsed(),
        home.name(),
        other.name()
    );

    for (i, (via, not_via)) in [(home, other), (other, home)].into_iter().enumerate() {
        let (via_name, not_name) = (via.name().to_string(), not_via.name().to_string());
        let filter = format!(
            "src port {relay_port} and (dst port {} or dst port {})",
            na.sip.port(),
            nb.sip.port()
        );
        let capture = Capture::start(&dir, &format!("capture-{i}"), &filter);
        let before = front.settled_metrics(Duration::from_millis(400), Duration::from_secs(5));
        let invites = phone.messages().matches("INVITE sip:carol@").count();
        let (caller, r) = Sipp::call(
            &dir,
            &format!("caller-{i}"),
            "carol",
            24081 + i as u16,
            &via.node.sip.to_string(),
        );
        assert!(
            r.ok(),
            "call via {via_name} failed: {}\nphone trace:\n{}",
            caller.describe(&r),
            phone.messages()
        );
        assert_eq!(r.stats.successful(), 1, "{}", caller.describe(&r));
        assert!(
            phone.messages().matches("INVITE sip:carol@").count() > invites,
            "the phone got no INVITE via {via_name}"
        );
        let after = front.settled_metrics(Duration::from_millis(400), Duration::from_secs(5));
        let delta = |d: &str, b: &str| datagrams(&after, d, b) - datagrams(&before, d, b);
        // INVITE, ACK, BYE from the node to the phone; 180, 200, 200 back to it.
        assert!(
            delta("to_client", &via_name) >= 3.0,
            "{via_name} -> phone: {}",
            delta("to_client", &via_name)
        );
        assert!(
            delta("to_backend", &via_name) >= 3.0,
            "phone -> {via_name}: {}",
            delta("to_backend", &via_name)
        );
        assert_eq!(delta("to_backend", &not_name), 0.0, "phone -> {not_name}");
        assert_eq!(delta("to_client", &not_name), 0.0, "{not_name} -> phone");
        let packets = capture.stop();
        assert!(packets.len() >= 3, "captured {packets:?}");
        for p in &packets {
            assert_eq!(
                p.dst.port(),
                via.node.sip.port(),
                "the phone's answers go to {via_name}, which sent the INVITE"
            );
        }
        eprintln!(
            "[{:?}] call entered at {via_name} completed through the relay port",
            t0.elapsed()
        );
    }
    phone.proc.assert_running();
    let m = front.metrics();
    assert!(nonzero_drops(&m).is_empty(), "{:?}", nonzero_drops(&m));
    assert_eq!(
        metric(&m, "sipfront_flows_created_total", &[]),
        1.0,
        "only the phone is a client of sipfront"
    );
    front.assert_running();
    for o in [&oa, &ob] {
        let errors = o.unexpected_errors();
        assert!(errors.is_empty(), "{}: {errors:#?}", o.name());
    }
    eprintln!("test took {:?}", t0.elapsed());
}

/// The shipped config with route(auth) on (the `SITE: auth on/off` line, and the nonce
/// secret both nodes share): accounts in the db_text `subscriber` table. Without
/// credentials a REGISTER gets a 401 and stores nothing, one account's credentials do not
/// register another (403), a call without credentials gets a 407 and never reaches the
/// phone, a subscriber's call does, entered at either node; a forged request of a call
/// nobody made is refused, not relayed.
#[test]
fn opensips_with_auth_only_accounts_register_and_call() {
    if skip("opensips_with_auth_only_accounts_register_and_call") {
        return;
    }
    let dir = TestDir::new("opensips-auth");
    let vip = SocketAddrV4::new(LO, 24160);
    let accounts = vec![account("alice"), account("caller")];
    let [mut na, mut nb] = Node::pair((LO, 24170, 24172), (LO, 24171, 24173), vip, LO);
    na.auth = Some(accounts.clone());
    nb.auth = Some(accounts);
    (na.dialog_check, nb.dialog_check) = (true, true);
    let (oa, ob, mut front) = cluster_behind_sipfront(&dir, &na, &nb, "14500-14599", 24190);
    // No credentials, forged ones, another account's: nothing stored.
    refused_registrations(&dir, std::net::SocketAddr::V4(vip), 24182);
    for o in [&oa, &ob] {
        for user in ["mallory", "alice", "caller"] {
            assert!(o.received_of(user).is_empty(), "{user} registered");
        }
    }

    // The account's phone registers through sipfront (replicated to the other node).
    let mut phone = Sipp::phone_auth(
        &dir,
        "phone",
        "alice",
        ("alice", "alice-secret"),
        24180,
        &vip.to_string(),
        "phone_answer.xml",
        90_000,
    );
    let port_a = wait_received_port(&oa, "alice", "127.0.0.1");
    assert_eq!(wait_received_port(&ob, "alice", "127.0.0.1"), port_a);
    assert!((14500..=14599).contains(&port_a), "relay port {port_a}");

    // A call without credentials is challenged and never reaches the phone.
    unauthenticated_call_is_challenged(&dir, 24181, &na.sip.to_string());
    assert!(!phone.messages().contains("INVITE sip:alice@"));

    // A subscriber's call, entered at either node, reaches the phone.
    for (i, node) in [&na, &nb].into_iter().enumerate() {
        let (caller, r) = Sipp::call_auth(
            &dir,
            &format!("caller-{i}"),
            "alice",
            24186 + i as u16,
            &node.sip.to_string(),
            ("caller", "caller-secret"),
        );
        assert!(r.ok(), "call via node {}: {}", node.id, caller.describe(&r));
        assert_eq!(
            phone.messages().matches("INVITE sip:alice@").count(),
            i + 1,
            "the phone's INVITEs after the call via node {}",
            node.id
        );
        // Its ACK and BYE passed the dialog check.
        for m in ["ACK sip:", "BYE sip:"] {
            assert_eq!(
                phone.messages().matches(m).count(),
                i + 1,
                "{m} via node {}",
                node.id
            );
        }
    }
    // Forged requests of a call nobody made are refused, not relayed.
    forged_in_dialog_requests_are_refused(
        std::net::SocketAddr::V4(vip),
        &vip.to_string(),
        24189,
        24199,
    );
    phone.proc.assert_running();
    front.assert_running();
    for o in [&oa, &ob] {
        let errors = o.unexpected_errors();
        assert!(errors.is_empty(), "{}: {errors:#?}", o.name());
    }
}
