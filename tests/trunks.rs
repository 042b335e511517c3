//! Trunks (sipfront `[[peer]]`s) with a real Kamailio running deploy/kamailio/kamailio.cfg
//! `WITH_TRUNKS`: the carrier is a sipp at the peer's address, phones are sipps that register
//! through sipfront.
//!
//! - inbound: the carrier's INVITE reaches Kamailio from the peer's fixed relay endpoint,
//!   which Kamailio's `permissions` address file trusts (IP and port), and goes on to a
//!   registered phone; a stranger's INVITE (a normal flow's relay port) gets 403;
//! - outbound: a registered phone calls a carrier number, Kamailio sends it to the peer's
//!   relay endpoint (`$du`), sipfront sends it on from its public SIP address; in-dialog
//!   requests work both ways (BYE from either side);
//! - long calls with `flow_idle = "2s"`: calls held silent for 7 s, then the callee's BYE, the
//!   caller's BYE, a re-INVITE from the backend side, each reaches the other end, through a
//!   trunk and from a plain unregistered client (whose flow only the dialog keeps).
//!
//! Loopback ports 30000-30899, one block of 200 per test (SIP ports at the block's base + 10..
//! + 99, the peer's relay endpoint at + 100, relay ports + 600..+ 699 of the 30000 block).

use std::fs;
use std::time::{Duration, Instant};
use testkit::*;

const RELAY_IP: &str = "127.0.0.1";

/// The addresses of one test's setup, all on 127.0.0.1, from the block's `base` port.
#[derive(Clone, Copy)]
struct Ports {
    base: u16,
    /// Relay ports of the normal flows: `relay.0..=relay.1`.
    relay: (u16, u16),
}

impl Ports {
    fn sip(self) -> u16 {
        self.base + 60
    }
    fn kamailio(self) -> u16 {
        self.base + 70
    }
    fn admin(self) -> u16 {
        self.base + 90
    }
    /// The carrier (the peer's `addr`).
    fn carrier(self) -> u16 {
        self.base + 10
    }
    /// The peer's fixed relay endpoint.
    fn peer_relay(self) -> u16 {
        self.base + 100
    }
    fn sip_addr(self) -> String {
        format!("127.0.0.1:{}", self.sip())
    }
}

struct Setup {
    dir: TestDir,
    ports: Ports,
    kam: Kamailio,
    front: Sipfront,
}

/// Kamailio (deploy/kamailio/kamailio.cfg, `WITH_TRUNKS` when `trunks`) behind sipfront with
/// the peer "carrier" and `flow_idle = "2s"`.
fn start(name: &str, ports: Ports, trunks: bool) -> Setup {
    let dir = TestDir::new(name);
    let mut defines = vec![
        "VIP_IP=127.0.0.1".to_string(),
        format!("VIP_PORT={}", ports.sip()),
        format!("RELAY_IP={RELAY_IP}"),
    ];
    if trunks {
        // The permissions address file: the carrier's relay endpoint, IP and port.
        let list = dir.join("trunks.list");
        fs::write(
            &list,
            format!(
                "# group address mask port tag\n1 {RELAY_IP} 32 {} carrier\n",
                ports.peer_relay()
            ),
        )
        .expect("write trunks.list");
        defines.push("WITH_TRUNKS".into());
        defines.push(format!("TRUNK_ADDRESS_FILE=\"{}\"", list.display()));
        defines.push(format!(
            "CARRIER_RELAY=\"sip:{RELAY_IP}:{}\"",
            ports.peer_relay()
        ));
    }
    let kam = Kamailio::start(&dir, "kamailio", ports.kamailio(), &defines);
    let front = Sipfront::start(
        &dir,
        SipfrontConfig::new(
            &ports.sip_addr(),
            &format!("{}-{}", ports.relay.0, ports.relay.1),
            &format!("127.0.0.1:{}", ports.admin()),
        )
        .backend("kam", &format!("127.0.0.1:{}", ports.kamailio()))
        .extra(&format!(
            "[[peer]]\nname = \"carrier\"\naddr = \"127.0.0.1:{}\"\nrelay = \"{RELAY_IP}:{}\"\n\n\
             [timeouts]\nflow_idle = \"2s\"\n",
            ports.carrier(),
            ports.peer_relay()
        )),
    );
    Setup {
        dir,
        ports,
        kam,
        front,
    }
}

/// A phone `user` on `port`: REGISTERs through sipfront and answers INVITEs with `answer`
/// (a tests/sipp scenario run out of call), registered for 60 s.
fn phone(s: &Setup, user: &str, port: u16, answer: &str) -> Sipp {
    let sip = s.ports.sip_addr();
    Sipp::phone(
        &s.dir,
        &format!("phone-{user}"),
        user,
        port,
        &sip,
        answer,
        60_000,
    )
}

/// Waits until Kamailio has `aor` with a `received` of sipfront's relay address.
fn wait_registered(s: &Setup, aor: &str) {
    let ok = wait_until(Duration::from_secs(10), || {
        s.kam
            .received_of(aor)
            .iter()
            .any(|r| r.starts_with(&format!("sip:{RELAY_IP}:")))
    });
    assert!(
        ok,
        "{aor} not registered via sipfront; ul.dump:\n{}",
        s.kam.kamcmd(&["ul.dump"])
    );
}

/// Starts one sipp call: scenario `sf` from `127.0.0.1:port` to sipfront, `-s service`,
/// `-key user user`, `-d hold_ms`.
fn start_call(s: &Setup, name: &str, sf: &str, port: u16, service: &str, user: &str) -> Sipp {
    start_call_hold(s, name, sf, port, service, user, 500)
}

fn start_call_hold(
    s: &Setup,
    name: &str,
    sf: &str,
    port: u16,
    service: &str,
    user: &str,
    hold_ms: u32,
) -> Sipp {
    let sip = s.ports.sip_addr();
    Sipp::call_as(&s.dir, name, sf, port, service, user, hold_ms, &sip)
}

/// The carrier as a UAS at the peer's address, answering one call with `sf`.
fn start_carrier_uas(s: &Setup, name: &str, sf: &str) -> Sipp {
    Sipp::carrier_uas(&s.dir, name, sf, s.ports.carrier())
}

/// `sipfront_flows_created_total` once the metrics have settled (they are published
/// periodically, so a flow created just now may not be counted yet).
fn flows_created(front: &mut Sipfront) -> f64 {
    let m = front.settled_metrics(Duration::from_millis(400), Duration::from_secs(5));
    metric(&m, "sipfront_flows_created_total", &[])
}

#[test]
fn trunk_calls_in_and_out_through_its_relay_endpoint() {
    let t0 = Instant::now();
    let ports = Ports {
        base: 30000,
        relay: (30600, 30699),
    };
    let mut s = start("trunks-kamailio", ports, true);
    let sip: std::net::SocketAddr = ports.sip_addr().parse().unwrap();

    // (a) inbound: carrier -> sipfront -> (peer relay endpoint) Kamailio -> phone 1001.
    let mut p1 = phone(&s, "1001", ports.base + 81, "phone_answer.xml");
    wait_registered(&s, "1001");
    let mut carrier = start_call(
        &s,
        "carrier-in",
        "call_then_bye.xml",
        ports.carrier(),
        "1001",
        "carrier",
    );
    carrier.expect_one_ok("carrier -> 1001");
    assert_file_contains(
        &p1.message_file,
        "BYE sip:",
        "phone 1001 got the carrier's BYE",
    );
    let kam_log = s.kam.proc.log_text();
    assert!(
        kam_log.contains(&format!(
            "call from trunk {RELAY_IP}:{}",
            ports.peer_relay()
        )),
        "Kamailio did not see the carrier's INVITE come from the peer's relay endpoint:\n{kam_log}"
    );
    drop(carrier);

    // A stranger: a new flow at sipfront, not registered, not a trunk -> 403 from Kamailio,
    // to a carrier number and to a local user alike.
    let stranger = SipClient::bind("127.0.0.1:30030".parse().unwrap(), sip, "mallory");
    stranger.expect(
        &stranger.invite_to("+15550100", "stranger-out"),
        403,
        Duration::from_secs(5),
    );
    stranger.expect(
        &stranger.invite_to("1001", "stranger-in"),
        403,
        Duration::from_secs(5),
    );

    // (b) outbound: registered phone 1002 calls a carrier number; Kamailio sends it to the
    // peer's relay endpoint; the carrier sees it come from sipfront's SIP address.
    let before_to_client = s.front.peer_datagrams("carrier", "to_client");
    let capture = Capture::start(
        &s.dir,
        "to-carrier",
        &format!("dst port {}", ports.carrier()),
    );
    let mut uas = start_carrier_uas(&s, "carrier-uas-1", "phone_answer.xml");
    let mut p2 = start_call(
        &s,
        "phone-1002",
        "phone_register_call.xml",
        ports.base + 82,
        "+15550100",
        "1002",
    );
    p2.expect_one_ok("1002 -> carrier, 1002 hangs up");
    uas.expect_one_ok("carrier answering 1002");
    assert_file_contains(
        &uas.message_file,
        "INVITE sip:+15550100@",
        "carrier got the INVITE",
    );
    assert_file_contains(&uas.message_file, "BYE sip:", "carrier got 1002's BYE");
    drop(uas);

    // The carrier hangs up (after a silent 7 s, 3.5 x flow_idle).
    let mut uas = start_carrier_uas(&s, "carrier-uas-2", "answer_hold_bye.xml");
    let mut p3 = start_call(
        &s,
        "phone-1003",
        "phone_register_call_wait_bye.xml",
        ports.base + 83,
        "+15550101",
        "1003",
    );
    uas.expect_one_ok("carrier answering 1003, carrier hangs up");
    p3.expect_one_ok("1003 -> carrier, carrier hangs up");

    let packets = capture.stop();
    assert!(!packets.is_empty(), "nothing captured towards the carrier");
    let wrong: Vec<_> = packets.iter().filter(|p| p.src != sip).collect();
    assert!(
        wrong.is_empty(),
        "the carrier must only hear from sipfront's SIP address {sip}: {wrong:?}"
    );
    let to_carrier = s.front.peer_datagrams("carrier", "to_client") - before_to_client;
    assert!(
        to_carrier >= 6.0,
        "sipfront_peer_datagrams_total{{direction=to_client}} grew by {to_carrier}"
    );
    assert!(s.front.peer_datagrams("carrier", "to_backend") >= 6.0);
    let m = s.front.metrics();
    assert!(nonzero_drops(&m).is_empty(), "{:?}", nonzero_drops(&m));
    p1.proc.assert_running();
    s.front.assert_running();
    eprintln!("trunk in/out with Kamailio: {:?}", t0.elapsed());
}

/// Three calls held silent for 7 s (3.5 x flow_idle), from `caller_port..+3` (the carrier at
/// its peer address when `trunk`), to three registered phones: (i) the callee hangs up, (ii)
/// the caller hangs up, (iii) the callee re-INVITEs through the backend, then the caller
/// hangs up.
fn long_calls(s: &mut Setup, trunk: bool) {
    let base = s.ports.base;
    let mut phones = Vec::new();
    let cases = [
        (
            "1001",
            "answer_hold_bye.xml",
            "call_wait_bye.xml",
            "callee hangs up",
        ),
        (
            "1002",
            "phone_answer.xml",
            "call_then_bye.xml",
            "caller hangs up",
        ),
        (
            "1003",
            "answer_hold_reinvite.xml",
            "call_wait_reinvite.xml",
            "re-INVITE from the backend side",
        ),
    ];
    for (i, (user, answer, _, _)) in cases.iter().enumerate() {
        phones.push(phone(s, user, base + 81 + i as u16, answer));
        wait_registered(s, user);
    }
    let created_before = flows_created(&mut s.front);
    // The trunk has one address: its three calls run one after the other.
    let mut callers: Vec<(Sipp, &str)> = Vec::new();
    for (i, (user, _, call, what)) in cases.iter().enumerate() {
        let port = if trunk {
            s.ports.carrier()
        } else {
            base + 20 + i as u16
        };
        let name = format!("caller-{user}");
        let c = start_call_hold(s, &name, call, port, user, "caller", 7000);
        if trunk {
            let mut c = c;
            c.expect_one_ok(what);
        } else {
            callers.push((c, what));
        }
    }
    for (c, what) in &mut callers {
        c.expect_one_ok(what);
    }
    for (i, p) in phones.iter_mut().enumerate() {
        let msgs = p.messages();
        assert!(
            msgs.contains("BYE sip:"),
            "phone {}: no BYE:\n{msgs}",
            cases[i].0
        );
        p.proc.assert_running();
    }
    let created = flows_created(&mut s.front) - created_before;
    let expected = if trunk { 0.0 } else { 3.0 };
    assert_eq!(
        created, expected,
        "flows created during the calls: each caller's flow must have lived through its silent call"
    );
    let m = s.front.metrics();
    assert!(nonzero_drops(&m).is_empty(), "{:?}", nonzero_drops(&m));
    s.front.assert_running();
}

#[test]
fn long_silent_trunk_calls_end_from_either_side() {
    let t0 = Instant::now();
    let ports = Ports {
        base: 30200,
        relay: (30700, 30799),
    };
    let mut s = start("trunks-long", ports, true);
    long_calls(&mut s, true);
    eprintln!("long trunk calls: {:?}", t0.elapsed());
}

#[test]
fn long_silent_calls_from_a_plain_client_end_from_either_side() {
    let t0 = Instant::now();
    let ports = Ports {
        base: 30400,
        relay: (30800, 30899),
    };
    // The default config: anybody may call a registered user.
    let mut s = start("trunks-plain-long", ports, false);
    long_calls(&mut s, false);
    eprintln!("long calls from a plain client: {:?}", t0.elapsed());
}
