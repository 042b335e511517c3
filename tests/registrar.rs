//! A NAT'd phone behind sipfront, registered at real Kamailio registrars
//! (deploy/kamailio/kamailio.cfg): the registrar stores sipfront's relay address and the
//! phone's flow port as the path back, and calls to the phone reach it through that relay
//! port — also from a registrar that is not the phone's home, with registrations shared by
//! DMQ, in which case the phone's answers must go back to the registrar that sent the INVITE.
//!
//! With `WITH_AUTH`, only a phone with its account's credentials registers and only a
//! subscriber calls.
//!
//! Ports: 26xxx, relay ports 21000-21999 (21000-21499 and 21500-21999 for the two tests),
//! 24200-24299 for the digest test.

use std::time::{Duration, Instant};
use testkit::*;

/// Starts the "phone": REGISTERs `user` through sipfront at `sip`, then stays registered (its
/// one socket open for `hold_ms`) and answers INVITEs out of call.
fn start_phone(dir: &TestDir, user: &str, port: u16, sip: &str, hold_ms: u32) -> Sipp {
    Sipp::phone(dir, "phone", user, port, sip, "phone_answer.xml", hold_ms)
}

/// Waits until `k` has `aor` registered with a `received` address in the relay port range;
/// returns that relay port.
fn wait_registered(k: &Kamailio, aor: &str, relay_ports: std::ops::RangeInclusive<u16>) -> u16 {
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        last = k.received_of(aor);
        !last.is_empty()
    });
    assert!(
        ok,
        "{aor} not registered at {}: ul.dump:\n{}",
        k.proc.name,
        k.kamcmd(&["ul.dump"])
    );
    assert_eq!(last.len(), 1, "one contact for {aor}: {last:?}");
    // "sip:127.0.0.1:21xxx": sipfront's relay address and the phone's flow port.
    let received = last[0].trim_start_matches("sip:");
    let (ip, port) = received
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("received {received}"));
    let port: u16 = port.parse().expect("received port");
    assert_eq!(
        ip, "127.0.0.1",
        "received address is sipfront's relay address"
    );
    assert!(
        relay_ports.contains(&port),
        "received port {port} should be sipfront's relay port for the phone's flow ({relay_ports:?})"
    );
    port
}

fn datagrams(text: &str, direction: &str, backend: &str) -> f64 {
    metric(
        text,
        "sipfront_datagrams_total",
        &[("direction", direction), ("backend", backend)],
    )
}

#[test]
fn registered_phone_is_called_through_its_relay_port() {
    let dir = TestDir::new("registrar");
    let t0 = Instant::now();

    let kam = Kamailio::start(
        &dir,
        "kamailio",
        26070,
        &[
            "VIP_IP=127.0.0.1".into(),
            "VIP_PORT=26060".into(),
            "RELAY_IP=127.0.0.1".into(),
        ],
    );
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:26060", "21000-21499", "127.0.0.1:26090")
            .backend("kam", "127.0.0.1:26070"),
    );

    let mut phone = start_phone(&dir, "alice", 26080, "127.0.0.1:26060", 60_000);
    let relay_port = wait_registered(&kam, "alice", 21000..=21499);

    let before = front.settled_metrics(Duration::from_millis(400), Duration::from_secs(5));
    let (caller, r) = Sipp::call(&dir, "caller", "alice", 26081, "127.0.0.1:26070");
    assert!(r.ok(), "call failed: {}", caller.describe(&r));
    assert_eq!(r.stats.successful(), 1, "{}", caller.describe(&r));

    // The phone answered an INVITE, an ACK and a BYE that came in through sipfront.
    let msgs = phone.messages();
    assert!(
        msgs.contains("INVITE sip:alice@"),
        "phone got no INVITE; its trace:\n{msgs}"
    );
    assert!(
        msgs.contains("BYE sip:"),
        "phone got no BYE; trace:\n{msgs}"
    );
    phone.proc.assert_running();

    let after = front.settled_metrics(Duration::from_millis(400), Duration::from_secs(5));
    // Kamailio -> relay port -> phone: INVITE, ACK, BYE (at least).
    let to_phone = datagrams(&after, "to_client", "kam") - datagrams(&before, "to_client", "kam");
    // phone -> sipfront -> Kamailio: 180, 200 (INVITE), 200 (BYE).
    let from_phone =
        datagrams(&after, "to_backend", "kam") - datagrams(&before, "to_backend", "kam");
    assert!(to_phone >= 3.0, "datagrams kamailio -> phone: {to_phone}");
    assert!(
        from_phone >= 3.0,
        "datagrams phone -> kamailio: {from_phone}"
    );
    assert!(
        nonzero_drops(&after).is_empty(),
        "{:?}",
        nonzero_drops(&after)
    );
    assert_eq!(
        metric(&after, "sipfront_flows_created_total", &[]),
        1.0,
        "only the phone is a client of sipfront"
    );
    front.assert_running();
    eprintln!(
        "phone registered via relay port {relay_port}; call completed in {:?}",
        t0.elapsed()
    );
}

/// The shipped config with `WITH_AUTH`: accounts in a db_text `subscriber` table (the
/// shipped empty one plus this test's accounts). Without credentials a REGISTER gets a
/// 401 challenge and a call a 407, and neither gets through; a phone with its account's
/// credentials registers through sipfront and a subscriber's call reaches it; one
/// account's credentials do not register another; a forged request of a call nobody made
/// is refused, not relayed.
#[test]
fn with_auth_only_accounts_register_and_call() {
    let dir = TestDir::new("registrar-auth");
    let db = dir.join("dbtext");
    std::fs::create_dir_all(&db).unwrap();
    for t in ["subscriber", "version"] {
        std::fs::copy(
            repo_path(&format!("deploy/kamailio/dbtext/{t}")),
            db.join(t),
        )
        .unwrap();
    }
    let mut accounts = std::fs::OpenOptions::new()
        .append(true)
        .open(db.join("subscriber"))
        .unwrap();
    use std::io::Write;
    for (i, user) in ["alice", "caller"].into_iter().enumerate() {
        writeln!(accounts, "{}:{user}::{}::", i + 1, account(user).1).unwrap();
    }
    drop(accounts);
    let kam = Kamailio::start(
        &dir,
        "kamailio",
        26370,
        &[
            "VIP_IP=127.0.0.1".into(),
            "VIP_PORT=26360".into(),
            "RELAY_IP=127.0.0.1".into(),
            "WITH_AUTH".into(),
            "WITH_DLGCHECK".into(),
            format!("AUTH_DB_URL=\"text://{}\"", db.display()),
        ],
    );
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:26360", "24200-24299", "127.0.0.1:26390")
            .backend("kam", "127.0.0.1:26370"),
    );

    // No credentials, forged ones, another account's: nothing stored.
    refused_registrations(&dir, "127.0.0.1:26360".parse().unwrap(), 26382);
    for user in ["mallory", "alice", "caller"] {
        assert!(kam.received_of(user).is_empty(), "{user} registered");
    }

    // The account's phone registers through sipfront.
    let mut phone = Sipp::phone_auth(
        &dir,
        "phone",
        "alice",
        ("alice", "alice-secret"),
        26380,
        "127.0.0.1:26360",
        "phone_answer.xml",
        60_000,
    );
    let relay_port = wait_registered(&kam, "alice", 24200..=24299);

    // A call without credentials is challenged and never reaches the phone.
    unauthenticated_call_is_challenged(&dir, 26381, "127.0.0.1:26370");
    assert!(!phone.messages().contains("INVITE sip:alice@"));

    // A subscriber's call reaches the phone through its relay port.
    let (caller, r) = Sipp::call_auth(
        &dir,
        "caller",
        "alice",
        26386,
        "127.0.0.1:26370",
        ("caller", "caller-secret"),
    );
    assert!(r.ok(), "call failed: {}", caller.describe(&r));
    assert_eq!(r.stats.successful(), 1, "{}", caller.describe(&r));
    let msgs = phone.messages();
    assert!(
        msgs.contains("INVITE sip:alice@"),
        "phone got no INVITE:\n{msgs}"
    );
    assert!(msgs.contains("BYE sip:"), "phone got no BYE:\n{msgs}");
    assert!(msgs.contains("ACK sip:"), "phone got no ACK:\n{msgs}");
    // Forged requests of a call nobody made are refused, not relayed.
    forged_in_dialog_requests_are_refused(
        "127.0.0.1:26360".parse().unwrap(),
        "127.0.0.1:26360",
        26387,
        26399,
    );
    phone.proc.assert_running();
    front.assert_running();
    eprintln!("alice registered with her credentials via relay port {relay_port}; call done");
}

#[test]
fn call_via_other_registrar_with_dmq_replication() {
    let dir = TestDir::new("registrar-dmq");
    let t0 = Instant::now();

    // Two registrars sharing usrloc over DMQ (direct, not through sipfront), both advertising
    // sipfront's VIP 127.0.0.1:26160.
    let node = |name: &str, port: u16, dmq: u16, peer_dmq: u16| -> Kamailio {
        Kamailio::start(
            &dir,
            name,
            port,
            &[
                "VIP_IP=127.0.0.1".into(),
                "VIP_PORT=26160".into(),
                "RELAY_IP=127.0.0.1".into(),
                "WITH_DMQ".into(),
                "WITH_DLGCHECK".into(),
                format!("DMQ_PORT={dmq}"),
                format!("DMQ_SERVER=\"sip:127.0.0.1:{dmq}\""),
                format!("DMQ_PEER=\"sip:127.0.0.1:{peer_dmq}\""),
            ],
        )
    };
    let k1 = node("kam1", 26170, 26172, 26173);
    let k2 = node("kam2", 26171, 26173, 26172);
    // Both nodes know each other before the phone registers.
    for (k, peer) in [(&k1, 26173), (&k2, 26172)] {
        let mut nodes = String::new();
        let ok = wait_until(Duration::from_secs(20), || {
            nodes = k.kamcmd(&["dmq.list_nodes"]);
            nodes.split('}').any(|node| {
                node.contains(&format!("port: {peer}"))
                    && node.contains("status: active")
                    && node.contains("local: 0")
            })
        });
        assert!(ok, "{}: DMQ peer {peer} not active:\n{nodes}", k.proc.name);
    }

    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:26160", "21500-21999", "127.0.0.1:26190")
            .backend("kam1", "127.0.0.1:26170")
            .backend("kam2", "127.0.0.1:26171"),
    );

    let mut phone = start_phone(&dir, "bob", 26180, "127.0.0.1:26160", 60_000);

    // The phone's home: the registrar sipfront sent the REGISTER to.
    let reg = front.settled_metrics(Duration::from_millis(400), Duration::from_secs(5));
    let (to1, to2) = (
        datagrams(&reg, "to_backend", "kam1"),
        datagrams(&reg, "to_backend", "kam2"),
    );
    assert!(
        (to1 > 0.0) != (to2 > 0.0),
        "REGISTER went to exactly one backend: kam1={to1} kam2={to2}"
    );
    let (home, other, home_name, other_name) = if to1 > 0.0 {
        (&k1, &k2, "kam1", "kam2")
    } else {
        (&k2, &k1, "kam2", "kam1")
    };
    let relay_port = wait_registered(home, "bob", 21500..=21999);
    // Replicated to the other node, with the same path back.
    let replicated = wait_registered(other, "bob", 21500..=21999);
    assert_eq!(replicated, relay_port, "replicated received address");

    // Call through the registrar that is NOT the phone's home.
    let capture = Capture::start(
        &dir,
        "capture",
        "src portrange 21500-21999 and (dst port 26170 or dst port 26171)",
    );
    let before = front.settled_metrics(Duration::from_millis(400), Duration::from_secs(5));
    let other_addr = format!("127.0.0.1:{}", other.port);
    let (caller, r) = Sipp::call(&dir, "caller", "bob", 26181, &other_addr);
    assert!(
        r.ok(),
        "call via {other_name} failed: {}",
        caller.describe(&r)
    );
    assert_eq!(r.stats.successful(), 1);

    let msgs = phone.messages();
    assert!(
        msgs.contains("INVITE sip:bob@"),
        "phone got no INVITE; trace:\n{msgs}"
    );
    phone.proc.assert_running();

    let after = front.settled_metrics(Duration::from_millis(400), Duration::from_secs(5));
    let delta = |dir: &str, b: &str| datagrams(&after, dir, b) - datagrams(&before, dir, b);
    // The INVITE, ACK and BYE came from the other registrar to the phone's relay port...
    assert!(
        delta("to_client", other_name) >= 3.0,
        "{other_name} -> phone: {}",
        delta("to_client", other_name)
    );
    // ...and the phone's 180/200/200 went back to it (Call-ID pinned), none to the home.
    assert!(
        delta("to_backend", other_name) >= 3.0,
        "phone -> {other_name}: {}",
        delta("to_backend", other_name)
    );
    assert_eq!(
        delta("to_backend", home_name),
        0.0,
        "phone -> {home_name} (home) during a call owned by {other_name}"
    );
    assert_eq!(delta("to_client", home_name), 0.0, "{home_name} -> phone");
    assert!(
        nonzero_drops(&after).is_empty(),
        "{:?}",
        nonzero_drops(&after)
    );

    // Independently of sipfront's counters: every datagram from the phone's relay port during
    // the call went to the other registrar.
    let packets = capture.stop();
    assert!(
        packets.len() >= 3,
        "captured {} datagrams from the relay port",
        packets.len()
    );
    for p in &packets {
        assert_eq!(p.src.port(), relay_port, "relay port of the phone's flow");
        assert_eq!(
            p.dst.port(),
            other.port,
            "phone's answers must go to {other_name}, which sent the INVITE"
        );
    }

    // With the dialog check, a call set up through one node is shared with the other by
    // DMQ: while it lasts, a request of that call at the other node is relayed (by its
    // Route and Request-URI, here a listener of the test's), not refused with a 481.
    let mut held = Sipp::call_as(
        &dir,
        "held",
        "call_then_bye.xml",
        26182,
        "bob",
        "carol",
        4_000,
        &other_addr,
    );
    let mut dlg = String::new();
    let ok = wait_until(Duration::from_secs(5), || {
        dlg = home.kamcmd(&["dlg.list"]);
        dlg.contains("from_uri: sip:carol@") && dlg.contains("state: 4")
    });
    assert!(
        ok,
        "{home_name} has not the call {other_name} set up:\n{dlg}"
    );
    // `key`'s value on the first line that has it after `anchor` in the dlg.list output.
    let value = |anchor: &str, key: &str| -> String {
        let at = dlg
            .find(anchor)
            .unwrap_or_else(|| panic!("{anchor} in {dlg}"));
        dlg[at..]
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} after {anchor} in {dlg}"))
            .trim()
            .to_string()
    };
    let call_id = value("call-id:", "call-id:");
    let (from_tag, to_tag) = (value("caller: {", "tag:"), value("callee: {", "tag:"));
    in_dialog_request_is_relayed(
        std::net::SocketAddr::from(([127, 0, 0, 1], home.port)),
        "127.0.0.1:26160",
        (&call_id, &from_tag, &to_tag),
        26183,
        26184,
    );
    let hr = held.wait(Duration::from_secs(20));
    assert!(hr.ok(), "held call: {}", held.describe(&hr));

    front.assert_running();
    eprintln!(
        "home {home_name}, called via {other_name}, relay port {relay_port}, in {:?}",
        t0.elapsed()
    );
}

/// The shipped Kamailio config passes `kamailio -c` with the defines the tests use, with and
/// without DMQ replication.
#[test]
fn kamailio_config_is_valid() {
    let dir = TestDir::new("kamailio-check");
    let ctl = format!("CTL_SOCK=\"unix:{}\"", dir.join("ctl").display());
    let db = format!(
        "AUTH_DB_URL=\"text://{}\"",
        repo_path("deploy/kamailio/dbtext").display()
    );
    let variants: [&[&str]; 3] = [
        &["SIP_PORT=26270", "VIP_PORT=26260", "RELAY_IP=127.0.0.1"],
        &[
            "SIP_PORT=26270",
            "VIP_PORT=26260",
            "WITH_DMQ",
            "DMQ_PORT=26272",
            "DMQ_SERVER=\"sip:127.0.0.1:26272\"",
            "DMQ_PEER=\"sip:127.0.0.1:26273\"",
        ],
        &[
            "SIP_PORT=26270",
            "VIP_PORT=26260",
            "WITH_AUTH",
            &db,
            "AUTH_SECRET=\"a-secret-shared-by-the-nodes\"",
            "WITH_TRUNKS",
            "WITH_DLGCHECK",
        ],
    ];
    for defines in variants {
        let mut cmd = std::process::Command::new("kamailio");
        cmd.args(["-c", "-f"]).arg(kamailio_cfg());
        cmd.args(["-A", &ctl]);
        for d in defines {
            cmd.args(["-A", d]);
        }
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => panic!("cannot run kamailio (Debian package `kamailio`): {e}"),
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kamailio -c failed with {defines:?}:\n{text}"
        );
        assert!(
            text.contains("]:26270 advertise 127.0.0.1:26260"),
            "listen socket with the advertised VIP, {defines:?}:\n{text}"
        );
    }
}
