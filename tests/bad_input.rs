//! Hostile and odd input at sipfront's public socket: malformed and truncated SIP, binary junk,
//! maximum-size datagrams, datagrams to a relay port from strangers, keepalives. sipfront must
//! drop and count what is not SIP (by the right reason), forward the largest valid datagram
//! intact both ways, swallow keepalives, keep running, and still carry calls afterwards.
//!
//! Ports: 27xxx, relay ports 22000-22999 (22000-22499 and 22500-22999 for the first two
//! tests) and 15450-15459.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use testkit::*;

/// Largest UDP payload over IPv4.
const MAX_UDP: usize = 65_507;

/// Deterministic pseudo-random bytes (xorshift), never containing "SIP/2.0".
fn junk(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    // Not whitespace/NUL-only, not a start line: begin with a high byte.
    v[0] = 0x80;
    assert!(!v.windows(7).any(|w| w.eq_ignore_ascii_case(b"SIP/2.0")));
    v
}

/// A valid SIP request of exactly `total` bytes (the body pads it).
fn sip_of_size(method: &str, call_id: &str, from_port: u16, total: usize) -> Vec<u8> {
    // The Content-Length digits change the header length: converge on the exact size.
    let mut body_len = total - sip_request(method, call_id, from_port, b"").len();
    loop {
        let body: Vec<u8> = (0..body_len).map(|i| b'a' + (i % 26) as u8).collect();
        let m = sip_request(method, call_id, from_port, &body);
        match m.len().cmp(&total) {
            std::cmp::Ordering::Equal => return m,
            std::cmp::Ordering::Greater => body_len -= m.len() - total,
            std::cmp::Ordering::Less => body_len += total - m.len(),
        }
    }
}

/// A SIP response of exactly `total` bytes for `call_id`.
fn sip_response_of_size(call_id: &str, total: usize) -> Vec<u8> {
    let head = |n: usize| {
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-{call_id}\r\n\
             From: <sip:test@127.0.0.1>;tag=a\r\nTo: <sip:service@127.0.0.1>;tag=b\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Type: text/plain\r\n\
             Content-Length: {n}\r\n\r\n"
        )
    };
    let mut n = total - head(0).len();
    loop {
        let h = head(n);
        if h.len() + n == total {
            let mut m = h.into_bytes();
            m.extend((0..n).map(|i| b'A' + (i % 26) as u8));
            return m;
        }
        n = total - h.len();
    }
}

/// Sends `msg` from `client` to sipfront and expects the backend socket to receive exactly
/// these bytes, from the relay address; returns that address.
fn relayed(client: &UdpSocket, sip: SocketAddr, backend: &FakeBackend, msg: &[u8]) -> SocketAddr {
    client.send_to(msg, sip).expect("send to sipfront");
    let (got, from) = backend
        .recv(Duration::from_secs(3))
        .expect("backend received nothing from sipfront");
    assert_eq!(
        got.len(),
        msg.len(),
        "forwarded datagram size (first bytes: {:?})",
        String::from_utf8_lossy(&got[..got.len().min(80)])
    );
    assert!(got == msg, "forwarded datagram differs from the original");
    from
}

#[test]
fn malformed_burst_is_dropped_by_reason_and_calls_still_complete() {
    let dir = TestDir::new("bad-input");
    let t0 = Instant::now();
    let sip: SocketAddr = "127.0.0.1:27060".parse().unwrap();

    let backend = FakeBackend::start(27070, 22000..=22499);
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:27060", "22000-22499", "127.0.0.1:27090")
            .backend("only", "127.0.0.1:27070"),
    );

    // A client with a flow, learned from a first valid request.
    let client = udp(0, Duration::from_secs(3));
    let client_port = client.local_addr().unwrap().port();
    let relay = relayed(
        &client,
        sip,
        &backend,
        &sip_request("OPTIONS", "warmup-1", client_port, b""),
    );
    assert_eq!(relay.ip().to_string(), "127.0.0.1", "relay address");
    assert!(
        (22000..=22499).contains(&relay.port()),
        "relay port {relay}"
    );

    // The burst, by the reason each datagram must be dropped for.
    let via = "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-x";
    let full = sip_request("INVITE", "cut-in-half", client_port, b"v=0\r\n");
    let burst: Vec<(&str, Vec<u8>)> = vec![
        ("not_sip", junk(1000, 1)),
        ("not_sip", junk(MAX_UDP, 2)), // over-long garbage: as large as UDP allows
        ("not_sip", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec()),
        ("not_sip", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()), // TLS hello
        (
            "bad_start_line",
            format!("INVITE  sip:bob@example.com SIP/2.0\r\n{via}\r\nCall-ID: b1\r\n\r\n")
                .into_bytes(),
        ),
        (
            "bad_start_line",
            b"SIP/2.0 99 Too Low\r\nCall-ID: b2\r\nCSeq: 1 INVITE\r\n\r\n".to_vec(),
        ),
        (
            "bad_start_line",
            b"SIP/2.0 2x0 OK\r\nCall-ID: b3\r\nCSeq: 1 INVITE\r\n\r\n".to_vec(),
        ),
        (
            "bad_start_line",
            b"INV@ITE sip:bob@example.com SIP/2.0\r\nCall-ID: b4\r\n\r\n".to_vec(),
        ),
        (
            "truncated",
            format!(
                "OPTIONS sip:x@example.com SIP/2.0\r\n{via}\r\nCall-ID: t1\r\nCSeq: 1 OPTIONS\r\n"
            )
            .into_bytes(),
        ),
        (
            "truncated",
            b"OPTIONS sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;bra".to_vec(),
        ),
        ("truncated", full[..full.len() / 2].to_vec()),
        (
            "missing_call_id",
            format!(
                "OPTIONS sip:x@example.com SIP/2.0\r\n{via}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes(),
        ),
        (
            "missing_call_id",
            format!("SIP/2.0 200 OK\r\n{via}\r\nCall-ID:   \r\nCSeq: 1 OPTIONS\r\n\r\n")
                .into_bytes(),
        ),
        (
            "bad_header",
            b"OPTIONS sip:x@example.com SIP/2.0\r\nThis line has no colon\r\nCall-ID: h1\r\n\r\n"
                .to_vec(),
        ),
        (
            "bad_header",
            b"OPTIONS sip:x@example.com SIP/2.0\r\nCall-ID: h2\r\nCSeq: lots OPTIONS\r\n\r\n"
                .to_vec(),
        ),
    ];
    let mut expected: BTreeMap<&str, f64> = BTreeMap::new();
    for (reason, d) in &burst {
        client.send_to(d, sip).expect("send junk");
        *expected.entry(reason).or_default() += 1.0;
    }
    // Junk from clients sipfront has never seen.
    for seed in 10..13 {
        let stranger = udp(0, Duration::from_secs(1));
        stranger.send_to(&junk(300, seed), sip).unwrap();
        *expected.entry("not_sip").or_default() += 1.0;
    }

    // The largest valid SIP datagram is forwarded intact; the junk sent before it (same
    // socket, same order) must not have reached the backend.
    let big = sip_of_size("MESSAGE", "big-1", client_port, MAX_UDP);
    assert_eq!(big.len(), MAX_UDP);
    let from = relayed(&client, sip, &backend, &big);
    assert_eq!(from, relay, "same flow, same relay port");
    // ... and the largest response comes back intact, from sipfront's SIP address.
    let big_reply = sip_response_of_size("big-1", MAX_UDP);
    backend.send_to(&big_reply, relay);
    let (got, from) = recv(&client).expect("client got no reply");
    assert_eq!(from, sip, "replies come from the SIP address");
    assert_eq!(got.len(), MAX_UDP);
    assert!(got == big_reply, "relayed reply differs");

    // A valid datagram to the relay port from a stranger is dropped, not relayed.
    let stranger = udp(0, Duration::from_secs(1));
    stranger
        .send_to(
            &sip_request(
                "INVITE",
                "spoof-1",
                stranger.local_addr().unwrap().port(),
                b"",
            ),
            relay,
        )
        .unwrap();
    *expected.entry("unknown_source").or_default() += 1.0;
    // Marker: the next thing the client sees must be this backend reply, not the spoof.
    backend.send_to(&sip_response_of_size("marker-1", 600), relay);
    let (got, _) = recv(&client).expect("client got no marker reply");
    assert!(
        String::from_utf8_lossy(&got).contains("Call-ID: marker-1"),
        "client received something else than the marker: {:?}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    if let Some((d, from)) = backend.recv(Duration::from_millis(300)) {
        panic!(
            "backend got an unexpected datagram from {from}: {:?}",
            String::from_utf8_lossy(&d[..d.len().min(200)])
        );
    }

    // Every drop counted under its reason.
    for (reason, want) in &expected {
        let got = front.wait_metric(
            "sipfront_drops_total",
            &[("reason", reason)],
            Duration::from_secs(5),
            |v| v >= *want,
        );
        assert_eq!(got, *want, "sipfront_drops_total{{reason=\"{reason}\"}}");
    }
    let text = front.settled_metrics(Duration::from_millis(400), Duration::from_secs(5));
    let drops = nonzero_drops(&text);
    let want: BTreeMap<String, f64> = expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(drops, want, "drop counters");
    assert_eq!(
        metric(
            &text,
            "sipfront_datagrams_total",
            &[("direction", "to_backend"), ("backend", "only")]
        ),
        2.0,
        "only the two valid requests reached the backend"
    );
    assert_eq!(
        metric(
            &text,
            "sipfront_bytes_total",
            &[("direction", "to_backend"), ("backend", "only")]
        ),
        (sip_request("OPTIONS", "warmup-1", client_port, b"").len() + MAX_UDP) as f64,
        "bytes to the backend"
    );
    assert_eq!(
        metric(&text, "sipfront_flows_created_total", &[]),
        1.0,
        "junk from unknown clients must not create flows (nor take relay ports)"
    );
    front.assert_running();

    // sipfront still carries calls: sipp UAC -> sipfront -> sipp UAS on the backend address.
    drop(backend);
    let _uas = sipp_uas(&dir, "uas", 27070);
    // A health probe may have hit the port while it was closed (ICMP: down at once); give the
    // checker time to see the UAS answer, then wait for "up".
    std::thread::sleep(Duration::from_millis(1500));
    front.wait_backends_up(Duration::from_secs(10));
    let mut uac = Sipp::start(
        &dir,
        "uac",
        &[
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-p",
            "27080",
            "-t",
            "u1",
            "-m",
            "20",
            "-r",
            "20",
            "-timeout",
            "20s",
            "-timeout_error",
            "127.0.0.1:27060",
        ],
    );
    let r = uac.wait(Duration::from_secs(30));
    assert!(r.ok(), "calls after the burst failed: {}", uac.describe(&r));
    assert_eq!(r.stats.successful(), 20, "{}", uac.describe(&r));
    let text = front.settled_metrics(Duration::from_millis(400), Duration::from_secs(5));
    assert_eq!(nonzero_drops(&text), want, "the calls must not add drops");
    front.assert_running();
    eprintln!(
        "burst of {} datagrams handled in {:?}",
        burst.len() + 5,
        t0.elapsed()
    );
}

#[test]
fn client_keepalives_are_counted_and_not_forwarded() {
    let dir = TestDir::new("keepalive");
    let sip: SocketAddr = "127.0.0.1:27160".parse().unwrap();

    let backend = FakeBackend::start(27170, 22500..=22999);
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:27160", "22500-22999", "127.0.0.1:27190")
            .backend("only", "127.0.0.1:27170"),
    );
    let client = udp(0, Duration::from_secs(3));
    let port = client.local_addr().unwrap().port();
    let first = sip_request("OPTIONS", "ka-1", port, b"");
    let relay = relayed(&client, sip, &backend, &first);

    // Client keepalives: CRLFCRLF (RFC 5626), CRLF, an empty datagram.
    let from_client: [&[u8]; 6] = [b"\r\n\r\n", b"\r\n\r\n", b"\r\n\r\n", b"\r\n", b"\r\n", b""];
    for k in from_client {
        client.send_to(k, sip).unwrap();
    }
    // The next datagram the backend sees is the marker, not a keepalive.
    let marker = sip_request("OPTIONS", "ka-marker", port, b"");
    assert_eq!(relayed(&client, sip, &backend, &marker), relay);

    // Backend keepalives to the relay port: CRLFCRLF and nathelper's 4 zero bytes. These are
    // counted too, but go on to the client: a registrar's NAT pings must reach the phone to
    // keep its NAT binding towards sipfront open.
    let from_backend: [&[u8]; 3] = [b"\r\n\r\n", b"\r\n\r\n", b"\0\0\0\0"];
    for k in from_backend {
        backend.send_to(k, relay);
    }
    let reply = sip_response_of_size("ka-marker", 400);
    backend.send_to(&reply, relay);
    for k in from_backend.iter().copied().chain([reply.as_slice()]) {
        let (got, from) = recv(&client).expect("client got nothing from sipfront");
        assert_eq!(from, sip, "to the client from the SIP address");
        assert!(
            got == k,
            "client got {:?}, expected {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(k)
        );
    }
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(recv(&client).is_none(), "nothing else reaches the client");
    assert!(
        backend.recv(Duration::from_millis(300)).is_none(),
        "nothing else reaches the backend"
    );

    let ka = |front: &mut Sipfront, d: &str, want: f64| {
        front.wait_metric(
            "sipfront_keepalives_total",
            &[("direction", d)],
            Duration::from_secs(5),
            |v| v >= want,
        )
    };
    assert_eq!(
        ka(&mut front, "from_client", 6.0),
        6.0,
        "keepalives from the client"
    );
    assert_eq!(
        ka(&mut front, "from_backend", 3.0),
        3.0,
        "keepalives from the backend"
    );
    let text = front.settled_metrics(Duration::from_millis(400), Duration::from_secs(5));
    let dg = |d: &str| {
        metric(
            &text,
            "sipfront_datagrams_total",
            &[("direction", d), ("backend", "only")],
        )
    };
    assert_eq!(dg("to_backend"), 2.0, "datagrams to the backend");
    assert!(dg("to_client") >= 1.0, "datagrams to the client");
    assert!(
        nonzero_drops(&text).is_empty(),
        "{:?}",
        nonzero_drops(&text)
    );
    front.assert_running();
}

/// What the kernel drops at the public socket (its receive buffer full) is counted
/// (`sipfront_socket_drops_total{socket="public"}`), though sipfront never reads it:
/// here sipfront is stopped (SIGSTOP) while 20,000 datagrams arrive. The buffer is
/// `listen.receive_buffer`, here its least (64 KiB): it holds a few dozen of them
/// (the 8 MiB default holds thousands).
#[test]
fn kernel_drops_at_the_public_socket_are_counted() {
    let dir = TestDir::new("socket-drops");
    let sip: SocketAddr = "127.0.0.1:27260".parse().unwrap();
    let _backend = FakeBackend::start(27270, 15450..=15459);
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:27260", "15450-15459", "127.0.0.1:27290")
            .listen("receive_buffer = 65536")
            .backend("only", "127.0.0.1:27270"),
    );
    assert_eq!(
        front.metric("sipfront_socket_drops_total", &[("socket", "public")]),
        0.0
    );
    let client = udp(0, Duration::from_secs(1));
    front.proc.signal("STOP");
    let junk = junk(1000, 7);
    for _ in 0..20_000 {
        let _ = client.send_to(&junk, sip);
    }
    front.proc.signal("CONT");
    // Every datagram was dropped by the kernel or read (and dropped as not SIP).
    let deadline = Instant::now() + Duration::from_secs(10);
    let (dropped, read) = loop {
        let text = front.metrics();
        let dropped = metric(
            &text,
            "sipfront_socket_drops_total",
            &[("socket", "public")],
        );
        let read = metric(&text, "sipfront_drops_total", &[("reason", "not_sip")]);
        if dropped + read >= 20_000.0 || Instant::now() > deadline {
            break (dropped, read);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(dropped > 0.0, "the kernel dropped some: {dropped}");
    assert_eq!(dropped + read, 20_000.0, "dropped {dropped}, read {read}");
    assert!(read <= 500.0, "the 64 KiB buffer held {read}");
    front.assert_running();
}

/// Flows never take the descriptors kept for admin connections and probe sockets: with
/// 120 open files, many more clients than fit, a backend added by a reload still gets
/// its probe socket (and goes up), and `/ready` still answers. (Without the budget the
/// relay sockets took every descriptor and the new backend's probe socket failed.)
#[test]
fn flows_leave_descriptors_for_probes_and_the_admin() {
    let dir = TestDir::new("fd-budget");
    let sip: SocketAddr = "127.0.0.1:27360".parse().unwrap();
    let _a = FakeBackend::start(27370, 15600..=15699);
    let _b = FakeBackend::start(27371, 15600..=15699);
    let cfg = SipfrontConfig::new("127.0.0.1:27360", "15600-15699", "127.0.0.1:27390")
        .backend("a", "127.0.0.1:27370")
        .extra(
            "max_connections = 4\n\n[limits]\nnew_flows_per_ip = 1000\nnew_flows_burst = 1000\n\n\
             [health]\ninterval = \"200ms\"\n",
        )
        .open_files(120);
    let mut front = Sipfront::start(&dir, cfg.clone());
    let clients: Vec<UdpSocket> = (0..100).map(|_| udp(0, Duration::from_secs(1))).collect();
    for c in &clients {
        let port = c.local_addr().unwrap().port();
        c.send_to(
            &sip_request("OPTIONS", &format!("fd-{port}"), port, b""),
            sip,
        )
        .unwrap();
    }
    let refused = front.wait_metric(
        "sipfront_drops_total",
        &[("reason", "bind_failed")],
        Duration::from_secs(5),
        |v| v > 0.0,
    );
    assert!(refused > 0.0, "more clients than descriptors: some refused");
    // A reload adds backend b: its probe socket opens, it goes up.
    let more = cfg.backend("b", "127.0.0.1:27371");
    std::fs::write(&front.config_path, more.toml()).unwrap();
    front.cfg = more;
    front.proc.signal("HUP");
    front.wait_backends_up(Duration::from_secs(10));
    let (code, _) = http_get(front.cfg.admin, "/ready").unwrap();
    assert_eq!(code, 200);
    front.assert_running();
}
