//! A static peer (trunk) through the real binary on loopback: its relay endpoint is
//! bound from the start, its requests reach the backend from that fixed endpoint, a
//! backend's request to the endpoint leaves from the public SIP address to the peer, and
//! the answer goes back to the backend that sent it; `sipfront ctl peers` lists it.

use std::time::Duration;

use testkit::*;

const SIP: &str = "127.0.0.1:17400";
const ADMIN: &str = "127.0.0.1:17401";
const BACKEND_A: u16 = 17402;
const BACKEND_B: u16 = 17403;
const ENDPOINT: &str = "127.0.0.1:17405";
const CARRIER: u16 = 17406;

#[test]
fn a_trunk_is_reached_through_its_fixed_endpoint_in_both_directions() {
    let dir = TestDir::new("peers");
    let a = FakeBackend::start(BACKEND_A, 19400..=19409);
    let b = FakeBackend::start(BACKEND_B, 19400..=19409);
    let cfg = SipfrontConfig::new(SIP, "19400-19409", ADMIN)
        .backend("a", &format!("127.0.0.1:{BACKEND_A}"))
        .backend("b", &format!("127.0.0.1:{BACKEND_B}"))
        .extra(&format!(
            "[timeouts]\nflow_idle = \"1s\"\n\n[[peer]]\nname = \"carrier\"\naddr = \"127.0.0.1:{CARRIER}\"\nrelay = \"{ENDPOINT}\"\nbackends = [\"b\"]\n"
        ));
    let mut front = Sipfront::start(&dir, cfg);
    assert!(
        udp_port_bound(17405),
        "the endpoint is bound before any traffic"
    );
    let carrier = udp(CARRIER, Duration::from_millis(100));
    let sip: std::net::SocketAddr = SIP.parse().unwrap();
    let endpoint: std::net::SocketAddr = ENDPOINT.parse().unwrap();

    // Inbound, well after flow_idle: from the fixed endpoint, to its only backend.
    std::thread::sleep(Duration::from_millis(2500));
    carrier
        .send_to(&sip_request("INVITE", "in-1", CARRIER, b""), sip)
        .unwrap();
    let (got, from) = b.recv(Duration::from_secs(3)).expect("INVITE at backend b");
    assert!(got.starts_with(b"INVITE "));
    assert_eq!(
        from, endpoint,
        "the backend sees the trunk's fixed relay endpoint"
    );
    assert!(
        a.recv(Duration::from_millis(200)).is_none(),
        "a is not the trunk's backend"
    );

    // Outbound from backend a (any backend may call the trunk): out of the public address.
    let invite = sip_request("INVITE", "out-1", BACKEND_A, b"");
    a.send_to(&invite, endpoint);
    let (got, from) = recv(&carrier).expect("INVITE at the carrier");
    assert_eq!(got, invite, "relayed unchanged");
    assert_eq!(from, sip, "the carrier sees the public SIP address");
    // The carrier's answer goes back to a, the backend that sent the INVITE.
    carrier
        .send_to(&sip_reply_to(&invite, "200 OK"), sip)
        .unwrap();
    let (got, from) = a.recv(Duration::from_secs(3)).expect("200 at backend a");
    assert!(got.starts_with(b"SIP/2.0 200"));
    assert_eq!(from, endpoint);

    let out = run_sipfront(&["ctl", "--admin", ADMIN, "peers"]);
    assert_eq!(out.code, 0, "ctl peers failed: {}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("carrier"))
        .unwrap_or_else(|| panic!("no carrier row in:\n{}", out.stdout));
    assert!(line.contains(ENDPOINT) && line.contains(" b "), "{line}");
    // Counters reach the metrics with the next status refresh (every 200 ms).
    let peer = |m: &str, dir: &str| {
        metric(
            m,
            "sipfront_peer_datagrams_total",
            &[("peer", "carrier"), ("direction", dir)],
        )
    };
    let mut m = String::new();
    let settled = wait_until(Duration::from_secs(3), || {
        m = front.metrics();
        peer(&m, "to_backend") == 2.0 && peer(&m, "to_client") == 1.0
    });
    assert!(
        settled,
        "peer counters: {} to backends, {} to the peer",
        peer(&m, "to_backend"),
        peer(&m, "to_client")
    );
}

#[test]
fn a_probed_peer_is_up_while_it_answers_options_and_down_when_it_stops() {
    const SIP: &str = "127.0.0.1:17410";
    const ADMIN: &str = "127.0.0.1:17411";
    const CARRIER: u16 = 17416;
    let dir = TestDir::new("peer-probe");
    let _a = FakeBackend::start(17412, 19410..=19419);
    let cfg = SipfrontConfig::new(SIP, "19410-19419", ADMIN)
        .backend("a", "127.0.0.1:17412")
        .extra(&format!(
            "[health]\ninterval = \"100ms\"\ntimeout = \"80ms\"\nrise = 2\nfall = 2\n\n\
             [[peer]]\nname = \"carrier\"\naddr = \"127.0.0.1:{CARRIER}\"\nrelay = \"127.0.0.1:17415\"\nprobe = true\n"
        ));
    let mut front = Sipfront::start(&dir, cfg);
    let sip: std::net::SocketAddr = SIP.parse().unwrap();
    // The carrier answers OPTIONS for a while: each probe comes from the public address.
    let carrier = udp(CARRIER, Duration::from_millis(50));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ans, stp, sock) = (answered.clone(), stop.clone(), carrier.try_clone().unwrap());
    let responder = std::thread::spawn(move || {
        while !stp.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some((d, from)) = recv(&sock)
                && d.starts_with(b"OPTIONS ")
            {
                assert_eq!(from, sip, "probes leave from the public SIP address");
                let _ = sock.send_to(&sip_reply_to(&d, "200 OK"), from);
                ans.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let up = |m: &str| metric(m, "sipfront_peer_up", &[("peer", "carrier")]);
    let mut m = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            m = front.metrics();
            up(&m) == 1.0
        }),
        "peer not up: {}",
        up(&m)
    );
    // `ctl peers` reads the status snapshot, refreshed every 200 ms.
    let mut table = String::new();
    let shown = wait_until(Duration::from_secs(3), || {
        table = run_sipfront(&["ctl", "--admin", ADMIN, "peers"]).stdout;
        table
            .lines()
            .any(|l| l.starts_with("carrier") && l.contains(" yes "))
    });
    assert!(shown, "{table}");
    // The probe replies were consumed: none reached the backend as relayed traffic.
    assert_eq!(
        metric(
            &m,
            "sipfront_peer_datagrams_total",
            &[("peer", "carrier"), ("direction", "to_backend")]
        ),
        0.0
    );
    // It stops answering: down after `fall` timeouts.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    responder.join().unwrap();
    assert!(answered.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    assert!(
        wait_until(Duration::from_secs(5), || {
            m = front.metrics();
            up(&m) == 0.0
        }),
        "peer not down"
    );
}
