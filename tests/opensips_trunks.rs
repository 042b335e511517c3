//! Trunks (sipfront `[[peer]]`s) with a real OpenSIPS (3.6.8, built by tests/run.sh from
//! ../shared/opensips) running deploy/opensips/opensips.cfg with its marked lines rewritten and
//! `route(trunks)` enabled (tests/opensips/mod.rs): the carrier is a sipp at the peer's
//! address, phones are sipps that register through sipfront. The Kamailio version is
//! tests/trunks.rs (same sipp scenarios).
//!
//! - inbound: the carrier's INVITE reaches OpenSIPS from the peer's fixed relay endpoint,
//!   which the `permissions` db_text address table trusts (`check_source_address(1)`, IP and
//!   port), and goes on to a registered phone; a stranger's INVITE (a normal flow's relay
//!   port, an unregistered From user) gets 403, and so does an impostor (the From user of a
//!   registered phone, from another flow: `is_ip_registered` with the source port);
//! - outbound: a registered phone calls a carrier number, OpenSIPS sends it to the peer's
//!   relay endpoint (`$du`), sipfront sends it on from its public SIP address; in-dialog
//!   requests follow `loose_route()` both ways (BYE from either side).
//!
//! Skipped (one printed line) without an OpenSIPS build (`OPENSIPS_PREFIX`).
//!
//! Loopback ports 32000-32699: SIP 32060, OpenSIPS 32070 (BIN 32072, its absent neighbour
//! 32073), admin 32090, carrier 32010, the peer's relay endpoint 32100, phones 32081-32083,
//! stranger 32030, impostor 32031, relay ports 32600-32699.

mod opensips;

use opensips::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};
use testkit::*;

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;
const SIP: u16 = 32060;
const OPENSIPS: u16 = 32070;
const ADMIN: u16 = 32090;
const CARRIER: u16 = 32010;
const PEER_RELAY: u16 = 32100;

fn sip_addr() -> String {
    format!("127.0.0.1:{SIP}")
}

/// A phone `user` on `port`: REGISTERs through sipfront and answers INVITEs with `answer`.
fn phone(dir: &TestDir, user: &str, port: u16, answer: &str) -> Sipp {
    let sip = sip_addr();
    Sipp::phone(
        dir,
        &format!("phone-{user}"),
        user,
        port,
        &sip,
        answer,
        60_000,
    )
}

/// One sipp call to sipfront (see [`Sipp::call_as`]), held 500 ms.
fn start_call(dir: &TestDir, name: &str, sf: &str, port: u16, service: &str, user: &str) -> Sipp {
    Sipp::call_as(dir, name, sf, port, service, user, 500, &sip_addr())
}

fn start_carrier_uas(dir: &TestDir, name: &str, sf: &str) -> Sipp {
    Sipp::carrier_uas(dir, name, sf, CARRIER)
}

#[test]
fn opensips_trunk_calls_in_and_out_through_its_relay_endpoint() {
    if skip("opensips_trunk_calls_in_and_out_through_its_relay_endpoint") {
        return;
    }
    let t0 = Instant::now();
    let dir = TestDir::new("opensips-trunks");
    let vip = SocketAddrV4::new(LO, SIP);
    // One node (A, the clusterer seed; its neighbour B is never started).
    let [mut node, _] = Node::pair((LO, OPENSIPS, 32072), (LO, 32071, 32073), vip, LO);
    node.trunk = Some(PEER_RELAY);
    let mut os = OpenSips::start(&dir, "osA", &node, None);
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new(&sip_addr(), "32600-32699", &format!("127.0.0.1:{ADMIN}"))
            .backend("osA", &format!("127.0.0.1:{OPENSIPS}"))
            .extra(&format!(
                "[[peer]]\nname = \"carrier\"\naddr = \"127.0.0.1:{CARRIER}\"\n\
                 relay = \"127.0.0.1:{PEER_RELAY}\"\n"
            )),
    );
    let sip: std::net::SocketAddr = sip_addr().parse().unwrap();
    eprintln!("[{:?}] OpenSIPS and sipfront up", t0.elapsed());

    // (a) inbound: carrier -> sipfront -> (peer relay endpoint) OpenSIPS -> phone 1001.
    let mut p1 = phone(&dir, "1001", 32081, "phone_answer.xml");
    wait_received_port(&os, "1001", "127.0.0.1");
    let mut carrier = start_call(
        &dir,
        "carrier-in",
        "call_then_bye.xml",
        CARRIER,
        "1001",
        "carrier",
    );
    carrier.expect_one_ok("carrier -> 1001");
    assert_file_contains(
        &p1.message_file,
        "BYE sip:",
        "phone 1001 got the carrier's BYE",
    );
    let log = os.proc.log_text();
    assert!(
        log.contains(&format!(
            "call from trunk carrier 127.0.0.1:{PEER_RELAY} to 1001"
        )),
        "OpenSIPS did not see the carrier's INVITE come from the peer's relay endpoint:\n{}",
        os.proc.log_tail(40)
    );
    drop(carrier);
    eprintln!("[{:?}] inbound trunk call done", t0.elapsed());

    // A stranger: a new flow at sipfront (an ordinary relay port, not in the address
    // table), From user not registered -> 403, to a carrier number and to a local user.
    let stranger = SipClient::bind("127.0.0.1:32030".parse().unwrap(), sip, "mallory");
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
    // An impostor: From a registered user (1001), but from another flow (relay port) than
    // the one 1001 registered from -> 403 (`is_ip_registered` with the source port).
    let impostor = SipClient::bind("127.0.0.1:32031".parse().unwrap(), sip, "1001");
    impostor.expect(
        &impostor.invite_to("+15550100", "impostor-out"),
        403,
        Duration::from_secs(5),
    );

    // (b) outbound: registered phone 1002 calls a carrier number; OpenSIPS sends it to the
    // peer's relay endpoint; the carrier sees it come from sipfront's SIP address; 1002
    // hangs up.
    let before_to_client = front.peer_datagrams("carrier", "to_client");
    let capture = Capture::start(&dir, "to-carrier", &format!("dst port {CARRIER}"));
    let mut uas = start_carrier_uas(&dir, "carrier-uas-1", "phone_answer.xml");
    let mut p2 = start_call(
        &dir,
        "phone-1002",
        "phone_register_call.xml",
        32082,
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

    // The carrier hangs up.
    let mut uas = start_carrier_uas(&dir, "carrier-uas-2", "answer_hold_bye.xml");
    let mut p3 = start_call(
        &dir,
        "phone-1003",
        "phone_register_call_wait_bye.xml",
        32083,
        "+15550101",
        "1003",
    );
    uas.expect_one_ok("carrier answering 1003, carrier hangs up");
    p3.expect_one_ok("1003 -> carrier, carrier hangs up");
    eprintln!("[{:?}] outbound trunk calls done", t0.elapsed());

    let packets = capture.stop();
    assert!(!packets.is_empty(), "nothing captured towards the carrier");
    let wrong: Vec<_> = packets.iter().filter(|p| p.src != sip).collect();
    assert!(
        wrong.is_empty(),
        "the carrier must only hear from sipfront's SIP address {sip}: {wrong:?}"
    );
    let to_carrier = front.peer_datagrams("carrier", "to_client") - before_to_client;
    assert!(
        to_carrier >= 6.0,
        "sipfront_peer_datagrams_total{{direction=to_client}} grew by {to_carrier}"
    );
    assert!(front.peer_datagrams("carrier", "to_backend") >= 6.0);
    let m = front.metrics();
    assert!(nonzero_drops(&m).is_empty(), "{:?}", nonzero_drops(&m));
    p1.proc.assert_running();
    front.assert_running();
    os.proc.assert_running();
    eprintln!("trunk in/out with OpenSIPS: {:?}", t0.elapsed());
}
