//! Forged ICMP errors (issue 14 item 4), in a private network namespace (root; raw
//! sockets): what Linux hands back in a UDP socket's error queue, and a healthy backend
//! that stays up under 200 forged port-unreachables per second at sipfront's probe and
//! relay sockets, while a real crash is still found by ICMP at once.
//!
//! Everything lives on the namespace's own loopback, so no port here collides with the
//! tests on the host's loopback.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use sipfront::sys::errqueue;
use socket2::{Domain, Protocol, Socket, Type};
use testkit::*;

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;
const SIP: u16 = 5060;
const BACKEND: u16 = 5070;
const CLIENT: u16 = 5080;
const ADMIN: &str = "127.0.0.1:9090";
/// How long the backend takes to answer a probe (`health.timeout` is 100 ms).
const PROBE_DELAY: Duration = Duration::from_millis(30);

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP error of `icmp_type` and `code` (3 and 1: host unreachable; 3 and 3: port
/// unreachable; 11: time exceeded) that quotes a UDP datagram from `from` to `to`
/// whose payload starts with `payload` (empty: the RFC 792 minimum, IP header and 8
/// bytes). The quoted lengths claim a 300-byte payload, as if it were cut short.
fn icmp_error(
    icmp_type: u8,
    code: u8,
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(20u16 + 8 + 300).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&from.ip().octets());
    ip[16..20].copy_from_slice(&to.ip().octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&from.port().to_be_bytes());
    udp[2..4].copy_from_slice(&to.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(8u16 + 300).to_be_bytes());
    let mut icmp = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&ip);
    icmp.extend_from_slice(&udp);
    icmp.extend_from_slice(payload);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    icmp
}

/// A raw ICMP socket (created in the caller's namespace) that sends to 127.0.0.1.
struct Forger(Socket);

impl Forger {
    fn new() -> Forger {
        Forger(Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).expect("raw socket"))
    }

    fn send(&self, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
        self.send_code(3, from, to, payload);
    }

    fn send_code(&self, code: u8, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
        self.send_type(3, code, from, to, payload);
    }

    fn send_type(&self, t: u8, code: u8, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
        let pkt = icmp_error(t, code, from, to, payload);
        let dst = SocketAddr::V4(SocketAddrV4::new(*from.ip(), 0));
        self.0.send_to(&pkt, &dst.into()).expect("send forged ICMP");
    }

    /// A forger whose errors come from `src` (a router on the path, say).
    fn from(src: Ipv4Addr) -> Forger {
        let f = Forger::new();
        f.0.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())
            .expect("bind the forger");
        f
    }
}

/// Every queued error on `s` after a short wait: (dest, offender, quoted payload).
fn errors(s: &UdpSocket) -> Vec<(SocketAddr, Option<std::net::IpAddr>, Vec<u8>)> {
    std::thread::sleep(Duration::from_millis(50));
    let mut got = vec![];
    errqueue::drain(s, |u| got.push((u.dest, u.offender, u.quote.to_vec())));
    got
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("not IPv4: {a}"),
    }
}

/// What Linux puts in the error queue for a forged ICMP error (measured here, relied on
/// by `health::prober`; documented at `sys::errqueue::drain`).
#[test]
fn linux_error_queue_returns_the_quoted_udp_payload_and_checks_only_addresses() {
    require(&[]);
    let ns = Netns::unique("icmpq");
    ns.enter(|| {
        let forger = Forger::new();
        let open = UdpSocket::bind((LO, 0)).unwrap();
        errqueue::enable(&open, false).unwrap();
        let me = v4(open.local_addr().unwrap());
        let far = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 5999);

        // RFC 792 minimum quote (IP header + 8 bytes): no data at all.
        forger.send(me, far, b"");
        assert_eq!(
            errors(&open),
            vec![(SocketAddr::V4(far), Some(LO.into()), vec![])]
        );
        // A longer quote: the UDP payload part, headers stripped, byte for byte.
        forger.send(me, far, b"OPTIONS sip:x SIP/2.0\r\n");
        assert_eq!(errors(&open)[0].2, b"OPTIONS sip:x SIP/2.0\r\n".to_vec());
        // An unconnected socket takes an error for any destination it may have sent
        // to; another local port gets nothing.
        forger.send(SocketAddrV4::new(LO, me.port() ^ 1), far, b"");
        assert_eq!(errors(&open), vec![]);

        // A connected socket only takes an error quoting its own peer.
        let conn = UdpSocket::bind((LO, 0)).unwrap();
        errqueue::enable(&conn, false).unwrap();
        conn.connect(far).unwrap();
        let me = v4(conn.local_addr().unwrap());
        forger.send(me, SocketAddrV4::new(*far.ip(), 5998), b"");
        forger.send(me, SocketAddrV4::new(LO, far.port()), b"");
        assert_eq!(errors(&conn), vec![]);
        forger.send(me, far, b"");
        assert_eq!(errors(&conn).len(), 1);
    });
}

/// A SIP backend made of a UDP socket (in the namespace): answers sipfront's OPTIONS
/// probes with 200 after `PROBE_DELAY` (so a probe is outstanding a third of the time
/// and forged errors meet one) and notes the probe socket's port and the relay port it saw.
struct Responder {
    stop: Arc<AtomicBool>,
    probe_port: Arc<AtomicU16>,
    relay_port: Arc<AtomicU16>,
    /// The latest probe's bytes, and how many probes came.
    last_probe: Arc<std::sync::Mutex<(u64, Vec<u8>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start(sock: UdpSocket) -> Responder {
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let probe_port = Arc::new(AtomicU16::new(0));
        let relay_port = Arc::new(AtomicU16::new(0));
        let last_probe = Arc::new(std::sync::Mutex::new((0u64, Vec::new())));
        let (s, p, r, lp) = (
            stop.clone(),
            probe_port.clone(),
            relay_port.clone(),
            last_probe.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // The socket closes when the thread ends: a crashed backend.
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let d = &buf[..n];
                if d.starts_with(b"OPTIONS ") && String::from_utf8_lossy(d).contains("sfp-") {
                    p.store(from.port(), Ordering::Relaxed);
                    if let Ok(mut g) = lp.lock() {
                        *g = (g.0 + 1, d.to_vec());
                    }
                    std::thread::sleep(PROBE_DELAY);
                } else {
                    r.store(from.port(), Ordering::Relaxed);
                }
                let _ = sock.send_to(&sip_reply_to(d, "200 OK"), from);
            }
        });
        Responder {
            stop,
            probe_port,
            relay_port,
            last_probe,
            thread: Some(thread),
        }
    }

    fn crash(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.crash();
    }
}

/// `sipfront_backend_up` of backend "b" in a scrape.
fn up(text: &str) -> Option<f64> {
    find_metric(text, "sipfront_backend_up", &[("backend", "b")])
}

/// `/metrics` of the sipfront in `ns` (which must still run).
fn metrics_of(ns: &Netns, front: &mut Proc) -> String {
    front.assert_running();
    let admin: SocketAddr = ADMIN.parse().unwrap();
    ns.enter(|| http_get(admin, "/metrics"))
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// sipfront in `ns` with one backend, probed every 100 ms (fall 3), once it is up.
fn start_front(ns: &Netns, dir: &TestDir, backend: SocketAddrV4) -> Proc {
    let cfg = SipfrontConfig::new(&format!("127.0.0.1:{SIP}"), "20000-20009", ADMIN)
        .backend("b", &backend.to_string())
        .extra("[health]\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 3\n");
    let config = dir.join("sipfront.toml");
    std::fs::write(&config, cfg.toml()).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(bin())
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "info");
    let mut front = Proc::spawn("sipfront", &mut cmd, &dir.join("sipfront.log"));
    assert!(
        wait_until(Duration::from_secs(15), || up(&metrics_of(ns, &mut front))
            == Some(1.0)),
        "backend not up; log:\n{}",
        front.log_tail(30)
    );
    front
}

#[test]
fn forged_icmp_never_downs_a_healthy_backend_and_a_real_crash_still_does() {
    require(&[]);
    let ns = Netns::unique("icmpf");
    let dir = TestDir::new("icmp_forged");
    let backend = SocketAddrV4::new(LO, BACKEND);
    let (bsock, client, forger) = ns.enter(|| {
        (
            UdpSocket::bind(backend).unwrap(),
            UdpSocket::bind((LO, CLIENT)).unwrap(),
            Forger::new(),
        )
    });
    let mut responder = Responder::start(bsock);

    let mut front = start_front(&ns, &dir, backend);
    let metrics = |front: &mut Proc| metrics_of(&ns, front);

    // A flow, so a relay socket sends to the backend.
    client
        .send_to(&sip_request("REGISTER", "icmp-1", CLIENT, b""), (LO, SIP))
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            responder.relay_port.load(Ordering::Relaxed) != 0
                && responder.probe_port.load(Ordering::Relaxed) != 0
        }),
        "no relayed request or probe at the backend"
    );
    let probe = SocketAddrV4::new(LO, responder.probe_port.load(Ordering::Relaxed));
    let relay = SocketAddrV4::new(LO, responder.relay_port.load(Ordering::Relaxed));
    let not_backend = SocketAddrV4::new(LO, 5999);
    // Looks like the probe's start, but with a Call-ID the forger had to guess.
    let fake_quote = format!(
        "OPTIONS sip:{backend} SIP/2.0\r\nVia: SIP/2.0/UDP {probe};branch=z9hG4bK-sfp-0000000000000000-0-1;rport\r\n"
    );
    let forged: [(SocketAddrV4, SocketAddrV4, &[u8]); 5] = [
        (probe, backend, b""),
        (probe, backend, fake_quote.as_bytes()),
        (probe, backend, b"OPTIONS "),
        (relay, backend, b""),
        (relay, not_backend, b""),
    ];

    // 200 forged port-unreachables per second for 3 s, while the backend must stay up.
    let stop = AtomicBool::new(false);
    let mut sent = 0u32;
    let mut min_up = 1.0f64;
    std::thread::scope(|s| {
        s.spawn(|| {
            let t0 = Instant::now();
            for (k, (from, to, quote)) in forged.iter().cycle().take(600).enumerate() {
                let due = t0 + Duration::from_millis(5 * k as u64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                forger.send(*from, *to, quote);
            }
            stop.store(true, Ordering::Relaxed);
        });
        while !stop.load(Ordering::Relaxed) {
            min_up = min_up.min(up(&metrics(&mut front)).unwrap_or(0.0));
            sent += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    // Counters are published as they move; give the last ones a moment.
    std::thread::sleep(Duration::from_millis(300));
    let text = metrics(&mut front);
    let ignored = |r: &str| find_metric(&text, "sipfront_icmp_ignored_total", &[("reason", r)]);
    let by_reason: Vec<(&str, Option<f64>)> = [
        "not_backend",
        "no_probe_outstanding",
        "quote_mismatch",
        "no_quote",
    ]
    .into_iter()
    .map(|r| (r, ignored(r)))
    .collect();
    eprintln!("ignored ICMP by reason after 600 forged: {by_reason:?} ({sent} polls)");
    let downs = metric(
        &text,
        "sipfront_backend_transitions_total",
        &[("backend", "b"), ("to", "down")],
    );
    assert_eq!(
        min_up,
        1.0,
        "backend went down under forged ICMP; log:\n{}",
        front.log_tail(30)
    );
    assert_eq!(downs, 0.0, "{text}");
    assert!(
        by_reason.iter().all(|(_, v)| v.is_some()),
        "every reason registered at start: {by_reason:?}"
    );
    assert!(ignored("not_backend").unwrap() >= 100.0, "{by_reason:?}");
    let probe_side: f64 = by_reason[1..].iter().filter_map(|(_, v)| *v).sum();
    assert!(probe_side >= 300.0, "{by_reason:?}");
    // Some met an outstanding probe and were still refused.
    assert!(ignored("quote_mismatch").unwrap() >= 1.0, "{by_reason:?}");
    assert!(ignored("no_quote").unwrap() >= 1.0, "{by_reason:?}");
    let log = strip_ansi(&front.log_text());
    let lines = log.matches("ICMP error ignored").count();
    assert!((1..=2).contains(&lines), "rate-limited log: {lines} lines");

    // A real crash: the backend's port closes, its port unreachable quotes the probe,
    // and the backend is down by ICMP within about one probe interval.
    let t = Instant::now();
    responder.crash();
    assert!(
        wait_until(Duration::from_secs(2), || up(&metrics(&mut front))
            == Some(0.0)),
        "crash not detected; log:\n{}",
        front.log_tail(30)
    );
    let took = t.elapsed();
    let text = metrics(&mut front);
    let icmp_downs = metric(
        &text,
        "sipfront_backend_transitions_total",
        &[("backend", "b"), ("to", "down"), ("reason", "icmp")],
    );
    // How soon is the benches' business; `reason="icmp"` says the fast path did it.
    eprintln!("crash detected in {took:?}");
    assert_eq!(icmp_downs, 1.0, "{text}");
}

/// A router's unreachable (host unreachable, or a port unreachable not sent by the
/// backend itself) that quotes the real outstanding probe (an on-path router, or a
/// route change for a moment) does not take the backend down at once: it only brings
/// the next probe forward (`not_port_closed`), and the backend, which answers, stays up.
/// A time exceeded quoting it is read and counted (`not_unreachable`), nothing more.
#[test]
fn a_routers_unreachable_quoting_the_probe_does_not_down_the_backend() {
    require(&[]);
    let ns = Netns::unique("icmpr");
    let dir = TestDir::new("icmp_router");
    let backend = SocketAddrV4::new(LO, BACKEND);
    let router = Ipv4Addr::new(127, 0, 0, 50);
    let (bsock, forger) = ns.enter(|| (UdpSocket::bind(backend).unwrap(), Forger::from(router)));
    let responder = Responder::start(bsock);
    let mut front = start_front(&ns, &dir, backend);
    let metrics = |front: &mut Proc| metrics_of(&ns, front);
    // For 3 s: each new probe, while it waits for its answer, draws a host unreachable
    // and a port unreachable from the router, both quoting it exactly.
    let (mut seen, mut forged, mut exceeded) = (0u64, 0u32, 0u32);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let (n, probe) = responder.last_probe.lock().unwrap().clone();
        if n != seen && !probe.is_empty() {
            seen = n;
            let from = SocketAddrV4::new(LO, responder.probe_port.load(Ordering::Relaxed));
            forger.send_code(1, from, backend, &probe);
            forger.send_code(3, from, backend, &probe);
            forger.send_type(11, 0, from, backend, &probe);
            forged += 2;
            exceeded += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Every forged error read (the time exceeded ones counted last of each probe's).
    let ignored =
        |text: &str, r: &str| metric(text, "sipfront_icmp_ignored_total", &[("reason", r)]);
    wait_until(Duration::from_secs(5), || {
        ignored(&metrics(&mut front), "not_unreachable") >= f64::from(exceeded)
    });
    let text = metrics(&mut front);
    let downs = metric(
        &text,
        "sipfront_backend_transitions_total",
        &[("backend", "b"), ("to", "down")],
    );
    let (not_closed, other) = (
        ignored(&text, "not_port_closed"),
        ignored(&text, "not_unreachable"),
    );
    eprintln!(
        "{forged} unreachables forged, not_port_closed {not_closed}, downs {downs}; \
         {exceeded} time exceeded, not_unreachable {other}"
    );
    assert_eq!(
        other,
        f64::from(exceeded),
        "every time exceeded counted as not_unreachable"
    );
    assert!(forged >= 20, "too few probes met: {forged}");
    assert_eq!(
        downs,
        0.0,
        "a router's unreachable downed the backend; log:\n{}",
        front.log_tail(30)
    );
    assert!(
        not_closed >= 10.0,
        "{not_closed} of {forged} counted as not_port_closed"
    );
    assert_eq!(up(&text), Some(1.0));
}
