//! `sipfront ctl capture` (live capture through the admin API): a call captured by Call-ID
//! into a pcap file that tshark decodes as SIP on both legs in the order they travelled;
//! a text capture by client; no token -> 401; with `admin.max_captures = 2`, a third
//! concurrent capture -> 429, and a reader that goes away frees its place.
//!
//! Ports: SIP 127.0.47.1:31060, relay 127.0.47.2 ports 19500-19539, backend
//! 127.0.0.1:31070, clients 127.0.47.3:31080 and 127.0.47.4:31081, admin 127.0.47.1:31091.

use std::net::SocketAddr;
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use testkit::*;

const SIP: &str = "127.0.47.1:31060";
const ADMIN: &str = "127.0.47.1:31091";
const BACKEND: &str = "127.0.0.1:31070";

fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Starts `sipfront ctl ... capture ARGS` in the background.
fn start_capture(dir: &TestDir, name: &str, token: &std::path::Path, args: &[&str]) -> Proc {
    let mut cmd = Command::new(bin());
    cmd.args(["ctl", "--admin", ADMIN, "--token-file"])
        .arg(token)
        .arg("capture")
        .args(args)
        .env("RUST_LOG", "warn");
    Proc::spawn(name, &mut cmd, &dir.join(&format!("{name}.log")))
}

fn tshark_rows(file: &std::path::Path) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", "sip", "-T", "fields"])
        .args([
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "sip.Method",
            "-e",
            "sip.Status-Code",
        ])
        .output()
        .expect("tshark is installed (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.split('\t')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn live_capture_pcap_text_token_and_limit() {
    let dir = TestDir::new("live_capture");
    let token = "live-capture-token-0123456789";
    let token_file = dir.join("admin.token");
    write_private(&token_file, &format!("{token}\n"));
    let wrong = dir.join("wrong.token");
    write_private(&wrong, "not-the-token-at-all-0123456789\n");
    let backend = FakeBackend::start(31070, 19500..=19539);
    let cfg = SipfrontConfig {
        relay: "127.0.47.2".into(),
        ..SipfrontConfig::new(SIP, "19500-19539", ADMIN)
    }
    .backend("b1", BACKEND)
    .extra(&format!(
        "token_file = \"{}\"\nmax_captures = 2\n\n[health]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n",
        token_file.display()
    ));
    let _front = Sipfront::start(&dir, cfg);
    let admin: SocketAddr = ADMIN.parse().unwrap();
    let server: SocketAddr = SIP.parse().unwrap();

    // Without the token (or with a wrong one): 401, from the API and from ctl.
    let (code, _) = http_get(admin, "/api/v1/capture?call_id=x&seconds=1").unwrap();
    assert_eq!(code, 401);
    let r = run_sipfront(&[
        "ctl",
        "--admin",
        ADMIN,
        "--token-file",
        wrong.to_str().unwrap(),
        "capture",
        "--call-id",
        "x",
        "--seconds",
        "1",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("401"), "{r:?}");

    // A call captured by Call-ID into a pcap file; another call alongside is not in it.
    let alice = SipClient::bind("127.0.47.3:31080".parse().unwrap(), server, "alice");
    let pcap = dir.join("call.pcap");
    let mut cap = start_capture(
        &dir,
        "ctl-pcap",
        &token_file,
        &[
            "--call-id",
            "live-call-1@test",
            "--seconds",
            "3",
            "--pcap",
            pcap.to_str().unwrap(),
        ],
    );
    sleep(Duration::from_millis(800));
    for id in ["live-call-1@test", "other-call@test"] {
        let invite = alice.request("INVITE", id, 1, "");
        alice.send(&invite);
        let (got, relay) = backend
            .recv(Duration::from_secs(3))
            .expect("INVITE at the backend");
        assert!(got.starts_with(b"INVITE "));
        backend.send_to(&sip_reply_to(&got, "100 Trying"), relay);
        sleep(Duration::from_millis(30));
        backend.send_to(&sip_reply_to(&got, "200 OK"), relay);
        sleep(Duration::from_millis(100));
        alice.send(&alice.request("ACK", id, 1, ""));
        let (ack, _) = backend
            .recv(Duration::from_secs(3))
            .expect("ACK at the backend");
        assert!(ack.starts_with(b"ACK "));
    }
    let status = cap
        .wait_timeout(Duration::from_secs(10))
        .expect("capture ends after 3 s");
    assert!(status.success(), "ctl capture: {}", cap.log_text());
    assert!(
        cap.log_text().contains("8 datagrams written"),
        "{}",
        cap.log_text()
    );
    let rows = tshark_rows(&pcap);
    let (c, p, r, b) = ("127.0.47.3", "127.0.47.1", "127.0.47.2", "127.0.0.1");
    let want = vec![
        format!("{c} {p} INVITE"),
        format!("{r} {b} INVITE"),
        format!("{b} {r} 100"),
        format!("{p} {c} 100"),
        format!("{b} {r} 200"),
        format!("{p} {c} 200"),
        format!("{c} {p} ACK"),
        format!("{r} {b} ACK"),
    ];
    assert_eq!(rows, want, "tshark's view of {}", pcap.display());

    // A text capture by client (IP only: any port), sngrep-like.
    let bob = SipClient::bind("127.0.47.4:31081".parse().unwrap(), server, "bob");
    let mut text = start_capture(
        &dir,
        "ctl-text",
        &token_file,
        &["--client", "127.0.47.4", "--seconds", "2"],
    );
    sleep(Duration::from_millis(800));
    bob.send(&bob.request("OPTIONS", "bob-options@test", 1, ""));
    alice.send(&alice.request("OPTIONS", "alice-options@test", 1, ""));
    let (got, relay) = backend.recv(Duration::from_secs(3)).expect("OPTIONS");
    backend.send_to(&sip_reply_to(&got, "200 OK"), relay);
    let (got, relay) = backend.recv(Duration::from_secs(3)).expect("OPTIONS");
    backend.send_to(&sip_reply_to(&got, "200 OK"), relay);
    let status = text
        .wait_timeout(Duration::from_secs(10))
        .expect("text capture ends");
    let out = text.log_text();
    assert!(status.success(), "{out}");
    assert!(
        out.contains("client  127.0.47.4:31081 -> 127.0.47.1:31060"),
        "{out}"
    );
    assert!(
        out.contains("backend 127.0.0.1:31070 -> 127.0.47.2:"),
        "{out}"
    );
    assert!(out.contains("Call-ID: bob-options@test"), "{out}");
    assert!(!out.contains("alice-options@test"), "{out}");
    assert!(
        out.contains("capture ended (time limit): 4 datagrams, 0 dropped"),
        "{out}"
    );

    // At most `admin.max_captures` (2) at once: a third is refused with 429.
    let mut busy: Vec<Proc> = (0..2)
        .map(|i| {
            start_capture(
                &dir,
                &format!("ctl-busy{i}"),
                &token_file,
                &["--call-id", "none", "--seconds", "20"],
            )
        })
        .collect();
    sleep(Duration::from_millis(800));
    let tok = token_file.to_str().unwrap();
    // A one-second capture that matches nothing: accepted (exit 0) or refused (429).
    let one_more = || {
        run_sipfront(&[
            "ctl",
            "--admin",
            ADMIN,
            "--token-file",
            tok,
            "capture",
            "--call-id",
            "none",
            "--seconds",
            "1",
        ])
    };
    let r = one_more();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("429"), "{r:?}");
    assert!(r.stderr.contains("2 captures are running"), "{r:?}");
    // A reader that goes away frees its place at once (the next heartbeat fails), long
    // before its 20 s are up (the bound leaves a slow machine room, and still comes
    // well before the others end by themselves).
    // The heartbeat is 1 s and a capture that is let in takes 1 s: 10 s is room on a
    // busy machine, and still half the 20 s after which the killed one would end.
    let killed = std::time::Instant::now();
    busy[0].signal("KILL");
    let freed = wait_until(Duration::from_secs(10), || one_more().code == 0);
    assert!(
        freed,
        "no capture accepted within {:?} of killing a reader",
        killed.elapsed()
    );
    busy.remove(0);
    for p in &mut busy {
        let s = p.wait_timeout(Duration::from_secs(30)).expect("ends");
        assert!(s.success(), "{}", p.log_text());
    }
    // Once they ended, a capture is accepted again.
    let r = one_more();
    assert_eq!(r.code, 0, "{r:?}");
}
