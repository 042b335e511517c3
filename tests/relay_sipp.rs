//! Load through sipfront with real SIP user agents: a sipp UAC → sipfront → two sipp UAS
//! backends. Checks that every call completes, that both backends get work when there are
//! many client flows, and — from a packet capture, independently of sipfront's own counters —
//! that every client flow (one relay endpoint) talks to exactly one backend. The many-flow
//! test spreads its flows over two relay addresses.
//!
//! Ports: 25xxx, relay ports 20000-20999 (20000-20499 and 20500-20999 for the two tests).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use testkit::*;

const CALLS: u64 = 3000;

/// Many client flows: `-t un` opens one socket per call; with `-max_socket` and calls that last
/// `-d` ms, sipp shares those sockets round robin between concurrent calls, so the run uses a
/// bounded set of ~MAX_SOCKETS client addresses, each carrying many calls.
#[test]
fn multi_socket_uac_flows_each_stick_to_one_backend() {
    const MAX_SOCKETS: u64 = 100;
    let dir = TestDir::new("relay-un");
    let t0 = Instant::now();

    let capture = Capture::start(
        &dir,
        "capture",
        "dst port 25060 or dst port 25070 or dst port 25071",
    );
    let mut uas_a = sipp_uas(&dir, "uas-a", 25070);
    let mut uas_b = sipp_uas(&dir, "uas-b", 25071);
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig {
            relay: "127.0.25.2,127.0.25.3".into(),
            ..SipfrontConfig::new("127.0.0.1:25060", "20000-20499", "127.0.0.1:25090")
        }
        .backend("a", "127.0.0.1:25070")
        .backend("b", "127.0.0.1:25071"),
    );

    let calls = CALLS.to_string();
    let max_socket = MAX_SOCKETS.to_string();
    let mut uac = Sipp::start(
        &dir,
        "uac",
        &[
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-p",
            "25080",
            "-t",
            "un",
            "-max_socket",
            &max_socket,
            "-d",
            "500",
            "-m",
            &calls,
            "-r",
            "500",
            "-l",
            "1000",
            "-timeout",
            "60s",
            "-timeout_error",
            "127.0.0.1:25060",
        ],
    );
    uac.expect_all_ok(CALLS, Duration::from_secs(90));

    // Backends, by their own account (INVITEs counted per message: health probes are calls
    // of their own at the UAS).
    let ra = uas_a.stop(Duration::from_secs(10));
    let rb = uas_b.stop(Duration::from_secs(10));
    let (ca, cb) = (uas_a.counts(), uas_b.counts());
    let (in_a, in_b) = (ca.recv("INVITE"), cb.recv("INVITE"));
    assert!(
        in_a > 0 && in_b > 0,
        "both UAS should receive calls: a={in_a} b={in_b}"
    );
    assert_eq!(in_a + in_b, CALLS, "INVITEs received by UAS a + b");
    assert_eq!(
        ca.recv("BYE") + cb.recv("BYE"),
        CALLS,
        "calls completed at the UAS"
    );
    assert_eq!(
        ra.stats.failed() + rb.stats.failed(),
        0,
        "failed calls at the UAS\n{}\n{}",
        uas_a.describe(&ra),
        uas_b.describe(&rb)
    );

    // sipfront, by its metrics.
    let text = front.settled_metrics(Duration::from_millis(600), Duration::from_secs(5));
    let to_a = metric(
        &text,
        "sipfront_datagrams_total",
        &[("direction", "to_backend"), ("backend", "a")],
    );
    let to_b = metric(
        &text,
        "sipfront_datagrams_total",
        &[("direction", "to_backend"), ("backend", "b")],
    );
    let from_a = metric(
        &text,
        "sipfront_datagrams_total",
        &[("direction", "to_client"), ("backend", "a")],
    );
    let from_b = metric(
        &text,
        "sipfront_datagrams_total",
        &[("direction", "to_client"), ("backend", "b")],
    );
    assert!(to_a > 0.0 && to_b > 0.0, "to_backend a={to_a} b={to_b}");
    // Per call: INVITE, ACK, BYE towards the UAS; 180, 200, 200 back (plus retransmissions).
    assert!(
        to_a + to_b >= 3.0 * CALLS as f64,
        "to_backend a+b = {}",
        to_a + to_b
    );
    assert!(
        from_a + from_b >= 3.0 * CALLS as f64,
        "to_client a+b = {}",
        from_a + from_b
    );
    assert!(
        nonzero_drops(&text).is_empty(),
        "no datagram should be dropped: {:?}",
        nonzero_drops(&text)
    );
    let flows_created = metric(&text, "sipfront_flows_created_total", &[]);
    front.assert_running();

    // The capture, independently of sipfront.
    let packets = capture.stop();
    let client_ports: BTreeSet<u16> = packets
        .iter()
        .filter(|p| p.dst.port() == 25060)
        .map(|p| p.src.port())
        .collect();
    let to_backends: Vec<Packet> = packets
        .iter()
        .copied()
        .filter(|p| p.dst.port() == 25070 || p.dst.port() == 25071)
        .collect();
    // Health probes come from sipfront's probe socket, not from a relay port.
    let (to_backends, _probes) = split_relay_traffic(&to_backends, 20000..=20499, 2);
    assert!(
        to_backends.len() as u64 >= 3 * CALLS,
        "captured {} datagrams to the backends",
        to_backends.len()
    );
    let by_relay_port = destinations_by_source(&to_backends);
    for (relay, backends) in &by_relay_port {
        assert_eq!(
            backends.len(),
            1,
            "relay endpoint {relay} (one client flow) sent to several backends: {backends:?}"
        );
    }
    let relay_ips: BTreeSet<String> = by_relay_port.keys().map(|a| a.ip().to_string()).collect();
    assert_eq!(
        relay_ips,
        BTreeSet::from(["127.0.25.2".to_string(), "127.0.25.3".to_string()]),
        "flows spread over both relay addresses"
    );
    let ports_to_a = by_relay_port
        .values()
        .filter(|b| b.contains(&25070))
        .count();
    let ports_to_b = by_relay_port
        .values()
        .filter(|b| b.contains(&25071))
        .count();
    assert!(
        ports_to_a > 0 && ports_to_b > 0,
        "flows per backend: a={ports_to_a} b={ports_to_b}"
    );
    // One relay port per client address: as many relay ports as client ports, as flows.
    assert!(
        client_ports.len() as u64 >= MAX_SOCKETS / 2,
        "expected many client sockets, got {}",
        client_ports.len()
    );
    assert_eq!(
        by_relay_port.len(),
        client_ports.len(),
        "relay ports used vs client addresses seen"
    );
    assert_eq!(
        flows_created as usize,
        client_ports.len(),
        "sipfront_flows_created_total vs client addresses seen"
    );
    eprintln!(
        "{} calls over {} client flows (a: {ports_to_a}, b: {ports_to_b}) in {:?}",
        CALLS,
        client_ports.len(),
        t0.elapsed()
    );
}

/// One client socket (`-t u1`): one flow, so all of its calls go to one backend.
#[test]
fn mono_socket_uac_goes_to_one_backend() {
    let dir = TestDir::new("relay-u1");
    let t0 = Instant::now();

    let capture = Capture::start(&dir, "capture", "dst port 25170 or dst port 25171");
    let mut uas_a = sipp_uas(&dir, "uas-a", 25170);
    let mut uas_b = sipp_uas(&dir, "uas-b", 25171);
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:25160", "20500-20999", "127.0.0.1:25190")
            .backend("a", "127.0.0.1:25170")
            .backend("b", "127.0.0.1:25171"),
    );

    let calls = CALLS.to_string();
    let mut uac = Sipp::start(
        &dir,
        "uac",
        &[
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-p",
            "25180",
            "-t",
            "u1",
            "-m",
            &calls,
            "-r",
            "500",
            "-l",
            "1000",
            "-timeout",
            "60s",
            "-timeout_error",
            "127.0.0.1:25160",
        ],
    );
    uac.expect_all_ok(CALLS, Duration::from_secs(90));

    let ra = uas_a.stop(Duration::from_secs(10));
    let rb = uas_b.stop(Duration::from_secs(10));
    let (in_a, in_b) = (uas_a.counts().recv("INVITE"), uas_b.counts().recv("INVITE"));
    let mut invites = [in_a, in_b];
    invites.sort();
    assert_eq!(
        invites,
        [0, CALLS],
        "all calls of one flow go to one UAS (a={in_a}, b={in_b})"
    );
    assert_eq!(
        ra.stats.failed() + rb.stats.failed(),
        0,
        "failed calls at the UAS"
    );

    let text = front.settled_metrics(Duration::from_millis(600), Duration::from_secs(5));
    let to_a = metric(
        &text,
        "sipfront_datagrams_total",
        &[("direction", "to_backend"), ("backend", "a")],
    );
    let to_b = metric(
        &text,
        "sipfront_datagrams_total",
        &[("direction", "to_backend"), ("backend", "b")],
    );
    assert!(
        (to_a == 0.0) != (to_b == 0.0),
        "exactly one backend gets the flow: a={to_a} b={to_b}"
    );
    assert!(to_a + to_b >= 3.0 * CALLS as f64, "to_backend total");
    assert_eq!(metric(&text, "sipfront_flows_created_total", &[]), 1.0);
    assert!(
        nonzero_drops(&text).is_empty(),
        "{:?}",
        nonzero_drops(&text)
    );
    front.assert_running();

    let packets = capture.stop();
    let (packets, _probes) = split_relay_traffic(&packets, 20500..=20999, 2);
    let by_relay_port = destinations_by_source(&packets);
    assert_eq!(
        by_relay_port.len(),
        1,
        "one client flow, one relay port: {by_relay_port:?}"
    );
    let (relay, backends) = by_relay_port.iter().next().unwrap();
    assert!(
        (20500..=20999).contains(&relay.port()),
        "relay endpoint {relay}"
    );
    assert_eq!(backends.len(), 1, "one backend: {backends:?}");
    assert!(
        packets.len() as u64 >= 3 * CALLS,
        "captured {}",
        packets.len()
    );
    eprintln!("{CALLS} calls over one flow in {:?}", t0.elapsed());
}
