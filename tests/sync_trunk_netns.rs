//! A trunk (sipfront `[[peer]]`) across a failover of the sipfront pair (built-in VRRP and
//! `[sync]`), in network namespaces (tests/netns_sync helpers): a carrier (sipp) on the LAN,
//! a Kamailio running deploy/kamailio/kamailio.cfg `WITH_TRUNKS` (the peer's relay endpoint
//! `VIP:5100` in its permissions address file, calls to carrier numbers sent there), phones
//! on the LAN registering through the VIP.
//!
//! The carrier calls a phone through the master; during the held call the master is killed
//! with SIGKILL; the phone's BYE after the takeover reaches the carrier (Kamailio sends it to
//! the peer's relay endpoint, which the backup had bound from start, and the new master sends
//! it from the VIP). Then a phone calls a carrier number through the new master: the carrier
//! sees every datagram come from `VIP:5060`.
//!
//! Needs root, `ip netns`, `sipp`, `kamailio`/`kamcmd` and `tcpdump`; fails, never skips,
//! without them. Namespaces are unique (`sfsync<PID>x<N>-<role>`) and removed on failure too;
//! every wait is bounded. LAN 10.88.0.0/24, VIP 10.88.0.100: sfA .11 (150), sfB .12 (100),
//! Kamailio .21, phones .31, carrier .40.

#[allow(dead_code)]
mod netns_sync;

use netns_sync::VIP;
use netns_sync::*;
use std::time::{Duration, Instant};
use testkit::*;

const CARRIER_IP: &str = "10.88.0.40";
const PEER_RELAY_PORT: u16 = 5100;

/// The sipp message trace of `s` in full.
fn trace(s: &Sipp) -> String {
    s.messages()
}

#[test]
fn trunk_call_survives_master_kill_and_next_call_leaves_from_the_vip() {
    let _serial = serial();
    require(&["sipp", "kamailio", "kamcmd", "tcpdump"]);
    let t0 = Instant::now();
    let dir = TestDir::new("sync-trunk");
    let net = sync_net(&[
        ("sfA", 11),
        ("sfB", 12),
        ("kamA", 21),
        ("phone", 31),
        ("carrier", 40),
    ]);

    // Kamailio with trunks: the carrier's relay endpoint VIP:5100 in the address file.
    let list = dir.join("trunks.list");
    std::fs::write(
        &list,
        format!("# group address mask port tag\n1 {VIP} 32 {PEER_RELAY_PORT} carrier\n"),
    )
    .expect("write trunks.list");
    let kam = start_kamailio(
        &dir,
        net.host("kamA"),
        "kamA",
        &[
            format!("VIP_IP={VIP}"),
            "VIP_PORT=5060".into(),
            format!("RELAY_IP={VIP}"),
            "WITH_TRUNKS".into(),
            format!("TRUNK_ADDRESS_FILE=\"{}\"", list.display()),
            format!("CARRIER_RELAY=\"sip:{VIP}:{PEER_RELAY_PORT}\""),
        ],
    );

    let backends = [("kamA", "10.88.0.21:5060")];
    let peer = format!(
        "[[peer]]\nname = \"carrier\"\naddr = \"{CARRIER_IP}:5060\"\n\
         relay = \"{VIP}:{PEER_RELAY_PORT}\"\n"
    );
    let (spec_a, spec_b) = pair_specs(&backends, &peer, &dir);
    let (mut a, mut b) = start_pair(&dir, &net, &spec_a, &spec_b);
    let vip: std::net::Ipv4Addr = VIP.parse().unwrap();
    for sf in [&a, &b] {
        assert!(
            udp_ports_bound(sf.pid(), Some(vip)).contains(&PEER_RELAY_PORT),
            "{} has not bound the peer's relay endpoint {VIP}:{PEER_RELAY_PORT}",
            sf.name
        );
    }
    eprintln!(
        "[{} ms] Kamailio up; sfA master, sfB backup, both bind {VIP}:{PEER_RELAY_PORT}",
        ms(t0)
    );

    // A phone registers through the VIP (sfA); it answers the carrier's call and hangs up
    // 5 s later (after the takeover).
    let answer = format!(
        "{}/tests/netns_sync/phone_answer_then_bye.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let register = scenario("phone_register.xml");
    let mut phone = start_sipp(
        &dir,
        net.host("phone"),
        "phone-alice",
        &[
            "-sf",
            &register,
            "-oocsf",
            &answer,
            "-s",
            "alice",
            "-t",
            "u1",
            "-i",
            "10.88.0.31",
            "-p",
            "5060",
            "-m",
            "1",
            "-d",
            "120000",
            &format!("{VIP}:5060"),
        ],
        true,
    );
    wait_bound(&mut phone.proc, 5060);
    let port = registered_port(&kam, "alice");
    // The backup mirrors the phone's flow (synced), relay port pre-bound.
    let ok = wait_until(Duration::from_secs(10), || {
        b.flows_of("10.88.0.31:5060").len() == 1
            && udp_ports_bound(b.pid(), Some(vip)).contains(&port)
    });
    assert!(
        ok,
        "sfB does not mirror the phone's flow (relay port {port})"
    );
    eprintln!("[{} ms] alice registered via relay port {port}", ms(t0));

    // The carrier calls alice (INVITE to the VIP), then waits for her BYE.
    let call_wait_bye = scenario("call_wait_bye.xml");
    let mut carrier = start_sipp(
        &dir,
        net.host("carrier"),
        "carrier-in",
        &[
            "-sf",
            &call_wait_bye,
            "-s",
            "alice",
            "-key",
            "user",
            "carrier",
            "-t",
            "u1",
            "-i",
            CARRIER_IP,
            "-p",
            "5060",
            "-m",
            "1",
            "-timeout",
            "40s",
            "-timeout_error",
            &format!("{VIP}:5060"),
        ],
        true,
    );
    let ok = wait_until(Duration::from_secs(15), || {
        carrier.proc.assert_running();
        trace(&phone).contains("ACK sip:")
    });
    assert!(
        ok,
        "the carrier's call was not established; phone trace:\n{}\ncarrier trace:\n{}",
        trace(&phone),
        trace(&carrier)
    );
    let log = kam.proc.log_text();
    assert!(
        log.contains(&format!("call from trunk {VIP}:{PEER_RELAY_PORT}")),
        "Kamailio did not see the carrier's INVITE come from the peer's relay endpoint:\n{}",
        kam.proc.log_tail(30)
    );
    // B holds the call's pin before the kill.
    let ok = wait_until(Duration::from_secs(5), || {
        b.metric("sipfront_dialogs", &[]) >= 1.0
    });
    assert!(ok, "sfB mirrors no dialog of the call");
    eprintln!("[{} ms] carrier -> alice established through sfA", ms(t0));

    // kill -9 the master during the held call.
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
    let before_to_carrier = b.metric(
        "sipfront_peer_datagrams_total",
        &[("peer", "carrier"), ("direction", "to_client")],
    );

    // alice's BYE (5 s after answering) reaches the carrier through sfB.
    let r = carrier.wait(Duration::from_secs(45));
    assert!(
        r.ok() && r.stats.successful() == 1,
        "the carrier did not get alice's BYE after the takeover: {}\nphone trace tail:\n{}",
        carrier.describe(&r),
        tail(&phone.message_file, 40)
    );
    assert!(
        received_responses(&trace(&phone), "BYE").contains(&200),
        "alice got no 200 to her BYE"
    );
    let sent = b.metric(
        "sipfront_peer_datagrams_total",
        &[("peer", "carrier"), ("direction", "to_client")],
    ) - before_to_carrier;
    // Counters are published periodically: wait for the BYE to show.
    let ok = sent >= 1.0
        || wait_until(Duration::from_secs(5), || {
            b.metric(
                "sipfront_peer_datagrams_total",
                &[("peer", "carrier"), ("direction", "to_client")],
            ) > before_to_carrier
        });
    assert!(ok, "sfB sent nothing to the carrier after the takeover");
    eprintln!("[{} ms] alice's BYE reached the carrier via sfB", ms(t0));
    drop(carrier);

    // After the takeover: bob registers and calls a carrier number through sfB; Kamailio
    // sends it to the peer's relay endpoint; the carrier sees only the VIP.
    let mut capture = NsCapture::start(
        &dir,
        net.host("carrier"),
        "to-carrier",
        &format!("udp and dst host {CARRIER_IP} and dst port 5060"),
    );
    let uas_sf = scenario("phone_answer.xml");
    let mut uas = start_sipp(
        &dir,
        net.host("carrier"),
        "carrier-uas",
        &[
            "-sf",
            &uas_sf,
            "-s",
            "carrier",
            "-t",
            "u1",
            "-i",
            CARRIER_IP,
            "-p",
            "5060",
            "-m",
            "1",
            "-timeout",
            "40s",
            "-timeout_error",
        ],
        true,
    );
    wait_bound(&mut uas.proc, 5060);
    let out_sf = scenario("phone_register_call.xml");
    let mut bob = start_sipp(
        &dir,
        net.host("phone"),
        "phone-bob",
        &[
            "-sf",
            &out_sf,
            "-s",
            "+15550100",
            "-key",
            "user",
            "bob",
            "-t",
            "u1",
            "-i",
            "10.88.0.31",
            "-p",
            "5062",
            "-m",
            "1",
            "-d",
            "500",
            "-timeout",
            "40s",
            "-timeout_error",
            &format!("{VIP}:5060"),
        ],
        true,
    );
    let r = bob.wait(Duration::from_secs(45));
    assert!(
        r.ok() && r.stats.successful() == 1,
        "bob -> carrier after the takeover: {}",
        bob.describe(&r)
    );
    let r = uas.wait(Duration::from_secs(45));
    assert!(
        r.ok() && r.stats.successful() == 1,
        "carrier answering bob: {}",
        uas.describe(&r)
    );
    let t = trace(&uas);
    assert!(t.contains("INVITE sip:+15550100@"), "carrier got no INVITE");
    assert!(t.contains("BYE sip:"), "carrier got no BYE from bob");
    capture.stop();
    let text = capture.text();
    let to_carrier: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!(" > {CARRIER_IP}.5060:")))
        .collect();
    assert!(
        to_carrier.len() >= 3,
        "captured too little towards the carrier:\n{text}"
    );
    let wrong: Vec<&&str> = to_carrier
        .iter()
        .filter(|l| !l.trim_start().starts_with(&format!("{VIP}.5060 > ")))
        .collect();
    assert!(
        wrong.is_empty(),
        "the carrier must only hear from {VIP}:5060: {wrong:?}"
    );
    b.proc.assert_running();
    eprintln!(
        "[{} ms] bob -> carrier through sfB, {} datagrams to the carrier, all from {VIP}:5060",
        ms(t0),
        to_carrier.len()
    );
}
