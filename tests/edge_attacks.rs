//! The internet edge under attack, against a live sipfront while honest sipp calls run:
//! each attack is bounded in rate and time, honest calls and registrations must all
//! succeed, tables and
//! open files stay bounded, and the right drop counters move.
//!
//! - one IP opening flows at its limit, with CRLF keepalives (`source_flow_limit`);
//! - a dialog-pin flood: INVITEs with fresh Call-IDs, retransmitted, with forged 1xx
//!   from the client itself (`pin_quota`);
//! - 503 amplification with no backend up: every reply is at most its request's size,
//!   and the replies are rate-limited;
//! - a ban added with `sipfront ctl ban` takes effect at once, shows in `ctl bans` and
//!   `ctl top`, and expires; `ctl unban` lifts one at once.
//!
//! Addresses: sipfront on 127.0.9.x (its own loopback addresses, so relay ports cannot
//! collide with other tests), attackers on 127.0.9.6x, honest sipp on 127.0.0.1.
//! Ports: 29xxx; relay ports 23600-23999 on 127.0.9.x.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use testkit::*;

/// Honest load: `calls` sipp calls at `rate`/s, each 200 ms long, from one socket on
/// 127.0.0.1 (one flow: `-t un` would open a new flow per call).
fn honest_calls(dir: &TestDir, local_port: u16, sip: SocketAddr, calls: u64, rate: u32) -> Sipp {
    let (calls, rate, port) = (calls.to_string(), rate.to_string(), local_port.to_string());
    let target = sip.to_string();
    Sipp::start(
        dir,
        "honest",
        &[
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "u1",
            "-d",
            "200",
            "-m",
            &calls,
            "-r",
            &rate,
            "-timeout",
            "60s",
            "-timeout_error",
            &target,
        ],
    )
}

/// Honest registrations: `count` phones (users honestN) REGISTER at `rate`/s from one
/// socket on 127.0.0.1 (one flow), each held 300 ms.
fn honest_registrations(
    dir: &TestDir,
    local_port: u16,
    sip: SocketAddr,
    count: u64,
    rate: u32,
) -> Sipp {
    let sf = scenario("register_load.xml");
    let (count, rate, port) = (count.to_string(), rate.to_string(), local_port.to_string());
    let target = sip.to_string();
    Sipp::start(
        dir,
        "registrations",
        &[
            "-sf",
            &sf,
            "-s",
            "honest",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "u1",
            "-d",
            "300",
            "-m",
            &count,
            "-r",
            &rate,
            "-timeout",
            "60s",
            "-timeout_error",
            &target,
        ],
    )
}

/// A sipp backend on 127.0.0.1:`port` that answers INVITE, OPTIONS and REGISTER
/// (tests/sipp/uas_registrar.xml).
fn registrar_uas(dir: &TestDir, name: &str, port: u16) -> Sipp {
    let sf = scenario("uas_registrar.xml");
    let p = port.to_string();
    let mut s = Sipp::start(
        dir,
        name,
        &["-sf", &sf, "-i", "127.0.0.1", "-p", &p, "-t", "u1"],
    );
    s.wait_bound(port);
    s
}

/// Open file descriptors of `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn options(call_id: &str, local: SocketAddr) -> Vec<u8> {
    format!(
        "OPTIONS sip:probe@127.0.9.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}\r\n\
         From: <sip:a@{local}>;tag=a\r\nTo: <sip:probe@127.0.9.1>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nAccept: application/sdp\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\nUser-Agent: edge-test/1.0\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A 1xx the client forges for its own `method` request.
fn ringing_to(method: &str, call_id: &str, local: SocketAddr) -> Vec<u8> {
    format!(
        "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}\r\n\
         From: <sip:x@{local}>;tag=x\r\nTo: <sip:service@127.0.9.2>;tag=forged\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A SUBSCRIBE (it opens a dialog) that the test backends never answer.
fn subscribe(call_id: &str, local: SocketAddr) -> Vec<u8> {
    format!(
        "SUBSCRIBE sip:service@127.0.9.2 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}\r\n\
         From: <sip:x@{local}>;tag=x\r\nTo: <sip:service@127.0.9.2>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 SUBSCRIBE\r\nEvent: presence\r\nContact: <sip:x@{local}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn udp_on(ip: [u8; 4]) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::from((ip, 0))).expect("bind attacker socket");
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s
}

/// Runs `attack` on its own thread until `stop`; returns the thread.
fn spawn_attack(
    stop: &Arc<AtomicBool>,
    attack: impl FnMut() + Send + 'static,
) -> thread::JoinHandle<()> {
    let stop = stop.clone();
    let mut attack = attack;
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            attack();
        }
    })
}

#[test]
fn one_ip_at_its_flow_limit_with_crlf_leaves_honest_calls_alone() {
    let dir = TestDir::new("edge-flows");
    let t0 = Instant::now();
    let _uas_a = registrar_uas(&dir, "uas-a", 29070);
    let _uas_b = registrar_uas(&dir, "uas-b", 29071);
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.9.1:29060", "23600-23799", "127.0.0.1:29090")
            .backend("a", "127.0.0.1:29070")
            .backend("b", "127.0.0.1:29071")
            .extra(
                "[limits]\nmax_flows_per_ip = 30\nnew_flows_per_ip = 200\nnew_flows_burst = 400\n\n\
                 [timeouts]\nunanswered_idle = \"2s\"\n",
            ),
    );
    let sip = front.cfg.sip;
    let pid = front.proc.pid();
    let fds_before = open_fds(pid);

    // The attacker: 100 sockets on one address, each an OPTIONS (a new flow) and CRLFs,
    // every 100 ms (about 3000 datagrams/s), for 4 s.
    let stop = Arc::new(AtomicBool::new(false));
    let socks: Vec<UdpSocket> = (0..100).map(|_| udp_on([127, 0, 9, 66])).collect();
    let mut round = 0u32;
    let attacker = spawn_attack(&stop, move || {
        for (i, s) in socks.iter().enumerate() {
            let local = s.local_addr().unwrap();
            let _ = s.send_to(&options(&format!("flood-{round}-{i}"), local), sip);
            let _ = s.send_to(b"\r\n\r\n", sip);
            let _ = s.send_to(b"\r\n", sip);
            let mut buf = [0u8; 2048];
            while s.recv_from(&mut buf).is_ok() {}
        }
        round += 1;
        thread::sleep(Duration::from_millis(100));
    });

    let mut uac = honest_calls(&dir, 29080, sip, 200, 50);
    let mut reg = honest_registrations(&dir, 29081, sip, 60, 15);
    // Sample the tables and descriptors while both run.
    let mut peak_flows = 0.0f64;
    let mut peak_fds = 0usize;
    let mut top_seen = None;
    let attack_end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < attack_end {
        peak_flows = peak_flows.max(front.metric("sipfront_flows", &[]));
        peak_fds = peak_fds.max(open_fds(pid));
        if let Ok((200, body)) = http_get(front.cfg.admin, "/api/v1/top?limit=3") {
            top_seen = Some(body);
        }
        thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    uac.expect_all_ok(200, Duration::from_secs(60));
    reg.expect_all_ok(60, Duration::from_secs(60));

    let limited = front.wait_metric(
        "sipfront_drops_total",
        &[("reason", "source_flow_limit")],
        Duration::from_secs(3),
        |v| v > 0.0,
    );
    assert!(limited > 0.0, "the attacker's extra flows were refused");
    // 30 attacker flows, 2 honest ones.
    assert!(
        peak_flows <= 32.0,
        "flows peaked at {peak_flows}, more than 30 (attacker) + 2 (honest)"
    );
    assert!(
        peak_fds <= fds_before + 36,
        "open files peaked at {peak_fds} (before: {fds_before})"
    );
    let top = top_seen.expect("/api/v1/top answered");
    let top: serde_json::Value = serde_json::from_str(&top).unwrap();
    assert_eq!(top["by_flows"][0]["source"], "127.0.9.66", "{top}");
    assert_eq!(top["by_flows"][0]["flows"], 30, "{top}");
    assert_eq!(top["by_drops"][0]["source"], "127.0.9.66", "{top}");
    // Unanswered-or-not, the attacker's flows go when it stops: keepalives alone
    // cannot hold them past flow_idle (90 s) — here we only check they never grew.
    front.assert_running();
    eprintln!("edge-flows: {:.1}s", t0.elapsed().as_secs_f64());
}

#[test]
fn a_pin_flood_with_forged_1xx_hits_the_quota() {
    let dir = TestDir::new("edge-pins");
    let t0 = Instant::now();
    let _uas_a = registrar_uas(&dir, "uas-a", 29170);
    let _uas_b = registrar_uas(&dir, "uas-b", 29171);
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.9.2:29160", "23800-23899", "127.0.0.1:29190")
            .backend("a", "127.0.0.1:29170")
            .backend("b", "127.0.0.1:29171")
            .extra("[limits]\nmax_pins_per_flow = 100\n"),
    );
    let sip = front.cfg.sip;
    // The honest flow has a quota of its own: 80 calls stay under it (a call's entry
    // lives until `transaction` after its BYE).
    let mut uac = honest_calls(&dir, 29180, sip, 80, 20);
    let mut reg = honest_registrations(&dir, 29181, sip, 40, 10);

    // One attacker flow: 400 dialog-opening requests with fresh Call-IDs (100/s) that
    // no backend answers (what a stranger's flood is to a backend that rejects or
    // ignores it; the test backends accept every INVITE, and calls a backend answers
    // do not count against the quota), each sent twice (a retransmission) and
    // followed by a forged 180 from the client itself, which must not promote it.
    let s = udp_on([127, 0, 9, 67]);
    let local = s.local_addr().unwrap();
    for i in 0..400 {
        let cid = format!("pin-{i}");
        let m = subscribe(&cid, local);
        let _ = s.send_to(&m, sip);
        let _ = s.send_to(&m, sip);
        let _ = s.send_to(&ringing_to("SUBSCRIBE", &cid, local), sip);
        let mut buf = [0u8; 4096];
        while s.recv_from(&mut buf).is_ok() {}
        if i % 10 == 9 {
            thread::sleep(Duration::from_millis(100));
        }
    }
    uac.expect_all_ok(80, Duration::from_secs(60));
    reg.expect_all_ok(40, Duration::from_secs(60));
    let quota = front.wait_metric(
        "sipfront_drops_total",
        &[("reason", "pin_quota")],
        Duration::from_secs(3),
        |v| v >= 600.0,
    );
    // 300 INVITEs over the quota, each twice.
    assert!(quota >= 600.0, "pin_quota drops: {quota}");
    let dialogs = front.metric("sipfront_dialogs", &[]);
    assert!(
        dialogs <= 100.0 + 80.0,
        "dialog table: {dialogs} entries (100 pins of the attacker + honest calls at most)"
    );
    front.assert_running();
    eprintln!("edge-pins: {:.1}s", t0.elapsed().as_secs_f64());
}

#[test]
fn no_backend_503s_are_never_larger_than_the_request_and_rate_limited() {
    let dir = TestDir::new("edge-503");
    let t0 = Instant::now();
    let backend = FakeBackend::start(29270, 23900..=23949);
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.9.3:29260", "23900-23949", "127.0.0.1:29290")
            .backend("a", "127.0.0.1:29270")
            .extra("[health]\ninterval = \"100ms\"\ntimeout = \"80ms\"\nreply_503_rate = 20\n"),
    );
    let sip = front.cfg.sip;
    drop(backend);
    let up = front.wait_metric(
        "sipfront_backend_up",
        &[("backend", "a")],
        Duration::from_secs(5),
        |v| v == 0.0,
    );
    assert_eq!(up, 0.0, "the backend is down");

    // 2 s of requests at a few hundred per second from one source: tiny ones (a 503 would be larger:
    // never sent) and ordinary ones.
    let s = udp_on([127, 0, 9, 68]);
    s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let local = s.local_addr().unwrap();
    let tiny = |i: usize| format!("OPTIONS sip:x SIP/2.0\r\nCall-ID: t{i}\r\n\r\n").into_bytes();
    let (mut sent, mut sent_bytes, mut replies, mut reply_bytes) = (0usize, 0usize, 0usize, 0usize);
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(2) {
        for _ in 0..2 {
            for m in [tiny(i), options(&format!("amp-{i}"), local)] {
                sent += 1;
                sent_bytes += m.len();
                let _ = s.send_to(&m, sip);
            }
            i += 1;
        }
        let mut buf = [0u8; 4096];
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            replies += 1;
            reply_bytes += n;
            let text = String::from_utf8_lossy(&buf[..n]);
            assert!(text.starts_with("SIP/2.0 503"), "{text}");
            let cid = sip_header(&text, "Call-ID").unwrap();
            assert!(
                cid.starts_with("amp-"),
                "only full-size requests are answered: {cid}"
            );
            let req = options(&cid, local);
            assert!(
                n <= req.len(),
                "a {n}-byte 503 to a {}-byte request",
                req.len()
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(300));
    let mut buf = [0u8; 4096];
    while let Ok((n, _)) = s.recv_from(&mut buf) {
        replies += 1;
        reply_bytes += n;
    }
    let secs = start.elapsed().as_secs_f64();
    // 20/s with a burst of 20.
    assert!(replies > 0, "some 503s were sent");
    assert!(
        replies as f64 <= 20.0 * secs + 25.0,
        "{replies} 503s in {secs:.1}s: not rate-limited to 20/s"
    );
    assert!(
        reply_bytes <= sent_bytes,
        "{reply_bytes} bytes out for {sent_bytes} in"
    );
    let text = front.settled_metrics(Duration::from_millis(600), Duration::from_secs(5));
    let suppressed = metric(&text, "sipfront_local_replies_suppressed_total", &[]);
    let why = |r: &str| {
        metric(
            &text,
            "sipfront_local_replies_suppressed_total",
            &[("reason", r)],
        )
    };
    // A tiny request's 503 would be larger (while the budget has tokens; with none
    // left any request counts as over the rate), and beyond 20/s the rate holds.
    assert!(
        why("larger_than_request") > 0.0,
        "none suppressed as larger than the request"
    );
    assert!(why("rate") > 0.0, "none suppressed for the rate");
    let no_backend = metric(&text, "sipfront_drops_total", &[("reason", "no_backend")]);
    assert!(
        no_backend >= sent as f64 * 0.9,
        "no_backend drops {no_backend} of {sent}"
    );
    eprintln!(
        "edge-503: {sent} requests, {replies} replies ({reply_bytes}/{sent_bytes} bytes), \
         suppressed metric {suppressed}, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

/// Whether `client`'s OPTIONS reaches `backend` within `wait`.
fn reaches(
    client: &UdpSocket,
    sip: SocketAddr,
    backend: &FakeBackend,
    tag: &str,
    wait: Duration,
) -> bool {
    let local = client.local_addr().unwrap();
    client.send_to(&options(tag, local), sip).unwrap();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some((d, _)) = backend.recv(Duration::from_millis(50))
            && String::from_utf8_lossy(&d).contains(tag)
        {
            return true;
        }
    }
    false
}

#[test]
fn a_ban_from_ctl_takes_effect_at_once_and_expires() {
    let dir = TestDir::new("edge-ban");
    let t0 = Instant::now();
    let backend = FakeBackend::start(29370, 23950..=23999);
    let token_file = dir.join("admin.token");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&token_file, "edge-token-0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.9.4:29360", "23950-23999", "127.0.0.1:29390")
            .backend("a", "127.0.0.1:29370")
            .extra(&format!("token_file = \"{}\"\n", token_file.display())),
    );
    let sip = front.cfg.sip;
    let config = front.config_path.to_string_lossy().into_owned();
    let ctl = |args: &[&str]| {
        let mut v = vec!["ctl", "-c", config.as_str()];
        v.extend_from_slice(args);
        let r = run_sipfront(&v);
        assert_eq!(r.code, 0, "sipfront {v:?}: {r:?}");
        r.stdout
    };
    let bad = udp_on([127, 0, 9, 77]);
    let good = udp_on([127, 0, 9, 78]);
    let short = Duration::from_millis(400);
    assert!(reaches(
        &bad,
        sip,
        &backend,
        "before-ban",
        Duration::from_secs(2)
    ));

    let out = ctl(&["ban", "127.0.9.77", "--seconds", "10"]);
    assert!(out.contains("banned 127.0.9.77/32"), "{out}");
    let banned_at = Instant::now();
    assert!(
        !reaches(&bad, sip, &backend, "during-ban-1", short),
        "the ban applies at once"
    );
    assert!(reaches(
        &good,
        sip,
        &backend,
        "neighbour",
        Duration::from_secs(2)
    ));
    let out = ctl(&["bans"]);
    assert!(out.contains("127.0.9.77/32"), "{out}");
    assert!(!reaches(&bad, sip, &backend, "during-ban-2", short));
    let n = front.wait_metric(
        "sipfront_drops_total",
        &[("reason", "banned")],
        Duration::from_secs(3),
        |v| v >= 2.0,
    );
    assert!(n >= 2.0, "banned drops: {n}");
    let out = ctl(&["top"]);
    assert!(
        out.contains("127.0.9.77"),
        "top shows the banned source: {out}"
    );

    // It expires by itself.
    let left = Duration::from_secs(10).saturating_sub(banned_at.elapsed());
    thread::sleep(left + Duration::from_millis(200));
    assert!(reaches(
        &bad,
        sip,
        &backend,
        "after-ban",
        Duration::from_secs(2)
    ));
    let out = ctl(&["bans"]);
    assert!(out.contains("0 bans"), "{out}");

    // A /24 ban, lifted by `ctl unban` at once.
    ctl(&["ban", "127.0.9.0/24", "--seconds", "600"]);
    assert!(!reaches(&good, sip, &backend, "prefix-ban", short));
    ctl(&["unban", "127.0.9.0/24"]);
    assert!(reaches(
        &good,
        sip,
        &backend,
        "unbanned",
        Duration::from_secs(2)
    ));
    // SIGHUP reloads [access]; bans stay.
    ctl(&["ban", "127.0.9.79", "--seconds", "600"]);
    let plain = std::fs::read_to_string(&front.config_path).unwrap();
    std::fs::write(
        &front.config_path,
        format!("{plain}\n[access]\ndeny = [\"127.0.9.78\"]\n"),
    )
    .unwrap();
    front.proc.signal("HUP");
    let denied = wait_until(Duration::from_secs(5), || {
        !reaches(&good, sip, &backend, "denied", Duration::from_millis(300))
    });
    assert!(denied, "the reloaded deny list applies");
    let out = ctl(&["bans"]);
    assert!(
        out.contains("127.0.9.79/32"),
        "a ban survives the reload: {out}"
    );
    std::fs::write(&front.config_path, plain).unwrap();
    front.proc.signal("HUP");
    let allowed = wait_until(Duration::from_secs(5), || {
        reaches(&good, sip, &backend, "allowed", Duration::from_millis(300))
    });
    assert!(allowed, "the deny entry is gone after the next reload");
    let denied_drops = front.wait_metric(
        "sipfront_drops_total",
        &[("reason", "denied")],
        Duration::from_secs(3),
        |v| v >= 1.0,
    );
    assert!(denied_drops >= 1.0, "denied drops: {denied_drops}");

    // A scanner's User-Agent is dropped by the default list, whoever sends it.
    let scanner = udp_on([127, 0, 9, 80]);
    let local = scanner.local_addr().unwrap();
    let probe = String::from_utf8(options("scan-1", local))
        .unwrap()
        .replace("edge-test/1.0", "friendly-scanner");
    scanner.send_to(probe.as_bytes(), sip).unwrap();
    assert!(
        backend.recv(Duration::from_millis(400)).is_none(),
        "the scanner got through"
    );
    let n = front.wait_metric(
        "sipfront_drops_total",
        &[("reason", "scanner")],
        Duration::from_secs(3),
        |v| v >= 1.0,
    );
    assert_eq!(n, 1.0, "scanner drops");

    // Bad input is refused with a message that says why.
    let r = run_sipfront(&["ctl", "-c", &config, "ban", "127.0.9.1/24"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("host bits"), "{r:?}");
    front.assert_running();
    eprintln!("edge-ban: {:.1}s", t0.elapsed().as_secs_f64());
}
