//! Prefix mode on loopback: 30,000 flows, more than the open-file limit allows
//! sockets for, over 127.16.0.0/16 × one relay port. Each client (a distinct
//! 127.20.x.y address, all sent from one wildcard test socket with IP_PKTINFO) gets
//! its own relay endpoint address; the backend's reply to that address comes back to
//! that client and no other; and sipfront holds a handful of descriptors, not one per
//! flow.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use sipfront::sys::mmsg::RecvBatch;
use sipfront::sys::pktinfo::{bind_wildcard, send_from};
use testkit::*;

const SIP: &str = "127.0.0.1:24460";
const ADMIN: &str = "127.0.0.1:24461";
const BACKEND: u16 = 24462;
const RELAY_PORT: u16 = 24465;
const CLIENT_PORT: u16 = 24468;
const FLOWS: u32 = 30_000;

fn client_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 20, 0, 1)) + i))
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The soft "Max open files" of a process.
fn nofile(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn thirty_thousand_flows_without_a_socket_each() {
    let t0 = Instant::now();
    let dir = TestDir::new("prefix_flows");
    let backend = FakeBackend::start(BACKEND, RELAY_PORT..=RELAY_PORT);
    let cfg = SipfrontConfig::new(SIP, "1-1", ADMIN)
        .prefix("127.16.0.0/16", &RELAY_PORT.to_string())
        .backend("only", &format!("127.0.0.1:{BACKEND}"))
        // A 200 to OPTIONS does not make a flow answered: without the longer
        // unanswered_idle the first flows could expire before the counts are read.
        .extra(
            "[limits]\nmax_flows_per_ip = 10\n\n[health]\ninterval = \"1s\"\n\n\
             [timeouts]\nunanswered_idle = \"10m\"\n",
        )
        // Fewer open files than flows, on any machine (this one's hard limit is 20,000;
        // a stock Debian login's 524,288).
        .open_files(20_000);
    let mut front = Sipfront::start(&dir, cfg);
    let pid = front.proc.pid();
    let limit = nofile(pid);
    assert!(
        limit < u64::from(FLOWS),
        "the test must hold more flows ({FLOWS}) than sipfront may open files ({limit})"
    );

    let client = bind_wildcard(false, CLIENT_PORT, 8 << 20, None).unwrap();
    let sip: SocketAddr = SIP.parse().unwrap();
    let mut batch = RecvBatch::default();
    let mut relays = HashSet::new();
    let mut answered = 0u32;
    let mut wrong = 0u32;
    // In windows of 100 (the fake backend socket has the default receive buffer): send, relay each request back at the backend, collect replies.
    for w in (0..FLOWS).step_by(100) {
        let end = (w + 100).min(FLOWS);
        for i in w..end {
            let req = sip_request("OPTIONS", &format!("flow-{i}"), CLIENT_PORT, b"");
            send_from(&client, &req, sip, client_ip(i)).unwrap();
        }
        for _ in w..end {
            let Some((d, from)) = backend.recv(Duration::from_secs(10)) else {
                let m = front.metrics();
                let nonzero: Vec<&str> = m
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
                    .collect();
                panic!(
                    "no request relayed to the backend; metrics:\n{}",
                    nonzero.join("\n")
                );
            };
            assert_eq!(from.port(), RELAY_PORT);
            assert!(
                matches!(from.ip(), IpAddr::V4(a) if a.octets()[..2] == [127, 16]),
                "relayed from {from}"
            );
            relays.insert(from.ip());
            backend.send_to(&sip_reply_to(&d, "200 OK"), from);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = 0;
        while got < end - w && Instant::now() < deadline {
            match batch.recv(client.as_raw_fd()) {
                Ok(n) => {
                    for k in 0..n {
                        let dst = batch.destination(k);
                        let (d, from) = batch.get(k).unwrap();
                        assert_eq!(from, sip, "replies come from the public address");
                        let text = String::from_utf8_lossy(d);
                        let id: u32 = sip_header(&text, "Call-ID")
                            .and_then(|c| c.strip_prefix("flow-").map(str::to_string))
                            .and_then(|c| c.parse().ok())
                            .unwrap();
                        if dst != Some(client_ip(id)) {
                            wrong += 1;
                        }
                        got += 1;
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        answered += got;
    }
    assert_eq!(wrong, 0, "replies delivered to another client");
    assert_eq!(answered, FLOWS, "every client got its reply");
    assert_eq!(relays.len(), FLOWS as usize, "one relay address per flow");
    let flows = front.wait_metric("sipfront_flows", &[], Duration::from_secs(5), |v| {
        v >= f64::from(FLOWS)
    });
    assert_eq!(flows, f64::from(FLOWS));
    let in_use = front.metric("sipfront_relay_ports_in_use", &[]);
    assert_eq!(in_use, f64::from(FLOWS));
    let fds = open_files(pid);
    assert!(
        fds < 64,
        "sipfront holds {fds} descriptors for {FLOWS} flows"
    );
    // The admin listing goes through the table a part at a time (1,024 rows at
    // most each): all of them, every flow once; and a limit that ends mid-part.
    let admin: SocketAddr = ADMIN.parse().unwrap();
    let all = get_json(admin, "/api/v1/flows?limit=100000");
    assert_eq!(all["total"], u64::from(FLOWS));
    let listed: Vec<&str> = all["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["client"].as_str().unwrap())
        .collect();
    let distinct: HashSet<&str> = listed.iter().copied().collect();
    assert_eq!(listed.len(), FLOWS as usize, "every flow listed");
    assert_eq!(distinct.len(), FLOWS as usize, "no flow listed twice");
    let some = get_json(admin, "/api/v1/flows?limit=2500");
    assert_eq!(some["total"], u64::from(FLOWS));
    assert_eq!(some["flows"].as_array().unwrap().len(), 2500);
    front.assert_running();
    eprintln!(
        "{FLOWS} flows, {fds} descriptors (open-file limit {limit}), {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// The ICMP fast path works on the shared prefix socket as on a per-flow one: a
/// datagram relayed (from a prefix address) to a dead backend bounces, the port
/// unreachable marks it down at once (`reason="icmp"`), long before the next periodic
/// probe, and the client's retransmission reaches the other backend.
#[test]
fn icmp_on_the_prefix_socket_finds_a_dead_backend_before_the_next_probe() {
    let dir = TestDir::new("prefix-icmp");
    let a = FakeBackend::start(24471, 24475..=24475);
    let b = FakeBackend::start(24472, 24475..=24475);
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:24470", "1-1", "127.0.0.1:24473")
            .prefix("127.17.0.0/24", "24475")
            .backend("a", "127.0.0.1:24471")
            .backend("b", "127.0.0.1:24472")
            .extra("[health]\ninterval = \"20s\"\ntimeout = \"1s\"\nrise = 2\nfall = 2\n"),
    );
    let started = Instant::now();
    let admin = front.cfg.admin;
    let client = (24476..24490)
        .map(|p| SipClient::bind(SocketAddr::from(([127, 0, 0, 1], p)), front.cfg.sip, "c"))
        .find(|c| {
            c.send(&c.request("OPTIONS", &format!("home-{}", c.local.port()), 1, ""));
            let mut home = None;
            wait_until(Duration::from_secs(5), || {
                home = flow_backend(admin, c.local);
                home.is_some()
            });
            home.as_deref() == Some("a")
        })
        .expect("one of 14 clients homed on a");
    drop(a);
    let req = client.request("OPTIONS", "after-death", 1, "");
    let mut down = 1.0;
    for _ in 0..16 {
        client.send(&req);
        down = front.wait_metric(
            "sipfront_backend_up",
            &[("backend", "a")],
            Duration::from_millis(500),
            |v| v == 0.0,
        );
        if down == 0.0 {
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(18),
        "too slow to tell; rerun"
    );
    assert_eq!(down, 0.0, "dead backend not found out by ICMP");
    let text = front.metrics();
    assert_eq!(
        metric(
            &text,
            "sipfront_backend_transitions_total",
            &[("backend", "a"), ("to", "down"), ("reason", "icmp")]
        ),
        1.0
    );
    client.send(&req);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reached = false;
    while !reached && Instant::now() < deadline {
        if let Some((d, from)) = b.recv(Duration::from_millis(200)) {
            reached = from.port() == 24475 && String::from_utf8_lossy(&d).contains("after-death");
        }
    }
    assert!(reached, "the client's retransmission never reached b");
    assert_eq!(flow_backend(admin, client.local).as_deref(), Some("b"));
    front.assert_running();
}
