//! The admin endpoint faces hostile clients: a slowloris cannot lock out `/ready`, the
//! API needs the token for reads too, a token-less admin is read-only, and SIGHUP rotates
//! the token (an unusable token file keeps the old one).
//!
//! Ports (SIP, backends, admin) and relay ports, one block per test:
//!   slowloris          17300-17309, relay 19300-19309
//!   token rules        17310-17319, relay 19310-19319
//!   token-less admin   17320-17329, relay 19320-19329

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use testkit::*;

fn write_private(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Waits for the `n`-th log line containing all `needles`; returns it.
fn wait_log(front: &mut Sipfront, needles: &[&str], n: usize) -> String {
    let mut lines = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        front.assert_running();
        lines = log_lines(&front.proc, needles);
        lines.len() >= n
    });
    assert!(
        ok,
        "no log line {n} with {needles:?}; log tail:\n{}",
        front.proc.log_tail(20)
    );
    lines[n - 1].clone()
}

fn rejected(front: &mut Sipfront, reason: &str) -> f64 {
    front.metric("sipfront_admin_rejected_total", &[("reason", reason)])
}

/// True when the peer has closed `s` (EOF or reset); `s` must be non-blocking.
fn is_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn slowloris_leaves_ready_answering_and_is_closed() {
    const CONNS: usize = 500;
    const CAP: usize = 64;
    let dir = TestDir::new("admin-slowloris");
    let (_a, cfg) = one_fake_backend(17300, 19300);
    let mut front = Sipfront::start(
        &dir,
        cfg.extra(&format!(
            "max_connections = {CAP}\nheader_timeout = \"10s\"\nidle_timeout = \"60s\"\n"
        )),
    );
    let admin = front.cfg.admin;
    let evicted0 = rejected(&mut front, "evicted");

    // 500 connections, each with half a request header, never finished.
    let mut loris: Vec<TcpStream> = (0..CONNS)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            let _ = s.write_all(b"GET /api/v1/flows HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let opened = Instant::now();

    // /ready still answers, long before the header timeout frees anything (bounds
    // for a slow machine: the point is that it answers while they are held).
    let t = Instant::now();
    let (code, body) = http_get(admin, "/ready").expect("GET /ready during the slowloris");
    let took = t.elapsed();
    assert_eq!(code, 200, "{body}");
    assert!(
        took < Duration::from_secs(5),
        "/ready took {took:?} with {CONNS} half-open connections"
    );

    // Connections beyond the cap were closed: at most CAP stay open.
    let mut open = CONNS;
    let ok = wait_until(Duration::from_secs(5), || {
        open = loris.iter_mut().map(is_closed).filter(|c| !*c).count();
        open <= CAP
    });
    assert!(
        ok,
        "{open} of {CONNS} half-open connections still open (cap {CAP})"
    );
    assert!(
        opened.elapsed() < Duration::from_secs(10),
        "closed by the cap, not by the header timeout"
    );
    let evicted = rejected(&mut front, "evicted") - evicted0;
    assert!(
        evicted >= (CONNS - CAP) as f64,
        "sipfront_admin_rejected_total{{reason=\"evicted\"}} moved by {evicted}"
    );

    // The rest go at the header timeout (10 s).
    let ok = wait_until(Duration::from_secs(15), || loris.iter_mut().all(is_closed));
    assert!(ok, "half-open connections outlived header_timeout");
    assert!(rejected(&mut front, "header_timeout") >= 1.0);
    // One log line for the lot (rate-limited), not one per connection.
    let lines = log_lines(&front.proc, &["admin endpoint closed connections"]);
    assert!(
        (1..=2).contains(&lines.len()),
        "rate-limited log lines: {lines:#?}"
    );
    assert!(lines[0].contains("evicted="), "{}", lines[0]);
    front.assert_running();
}

#[test]
fn token_guards_the_api_and_sighup_rotates_it() {
    let dir = TestDir::new("admin-token");
    let (_a, cfg) = one_fake_backend(17310, 19310);
    let token_file = dir.join("admin.token");
    let old = "old-token-0123456789abcdef";
    let new = "new-token-fedcba9876543210";
    write_private(&token_file, &format!("{old}\n"));
    let mut front = Sipfront::start(
        &dir,
        cfg.extra(&format!("token_file = \"{}\"\n", token_file.display())),
    );
    let admin = front.cfg.admin;
    let get = |path: &str, token: Option<&str>| -> u16 {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let auth: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("Authorization", b.as_str()))
            .collect();
        http_request(admin, "GET", path, &auth).unwrap().0
    };
    let post = |token: &str| -> (u16, String) {
        let bearer = format!("Bearer {token}");
        http_request(
            admin,
            "POST",
            "/api/v1/backends/a/enable",
            &[("Authorization", &bearer)],
        )
        .unwrap()
    };

    // Reads of the API need the token; the probes do not.
    assert_eq!(get("/api/v1/flows", None), 401, "GET flows without a token");
    assert_eq!(get("/api/v1/status", None), 401);
    assert_eq!(get("/api/v1/flows", Some("wrong-token-0123456789")), 401);
    assert_eq!(get("/api/v1/flows", Some(old)), 200);
    // Counted, and said in the log (once per 10 s).
    assert_eq!(
        front.metric("sipfront_admin_refused_total", &[("reason", "token")]),
        3.0
    );
    wait_log(&mut front, &["admin API requests refused", "token=1"], 1);
    for path in ["/metrics", "/live", "/ready"] {
        assert_eq!(get(path, None), 200, "{path} stays open");
    }

    // SIGHUP with a new token in the file: the new one works at once, the old one is refused.
    write_private(&token_file, &format!("{new}\n"));
    front.proc.signal("HUP");
    let line = wait_log(&mut front, &["config reloaded"], 1);
    assert!(line.contains("admin token rotated"), "reload notes: {line}");
    assert_eq!(
        get("/api/v1/status", Some(old)),
        401,
        "old token after rotation"
    );
    assert_eq!(post(old).0, 401);
    assert_eq!(
        get("/api/v1/status", Some(new)),
        200,
        "new token after rotation"
    );
    let (code, body) = post(new);
    assert_eq!(code, 200, "{body}");

    // A reload whose token file is unusable (other users could read it) keeps the token,
    // says so loudly, and still applies.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    front.proc.signal("HUP");
    let line = wait_log(&mut front, &["config reloaded"], 2);
    assert!(
        line.contains("admin token not rotated") && line.contains("0644"),
        "reload notes: {line}"
    );
    let warn = wait_log(&mut front, &["KEEPING THE PREVIOUS TOKEN"], 1);
    assert!(warn.contains("WARN"), "{warn}");
    assert_eq!(get("/api/v1/status", Some(new)), 200, "token kept");
    assert_eq!(get("/api/v1/status", Some(old)), 401);

    // Unreadable (gone): same.
    std::fs::remove_file(&token_file).unwrap();
    front.proc.signal("HUP");
    let line = wait_log(&mut front, &["config reloaded"], 3);
    assert!(line.contains("cannot read"), "reload notes: {line}");
    assert_eq!(get("/api/v1/status", Some(new)), 200, "token kept");
    front.assert_running();
}

#[test]
fn tokenless_loopback_admin_is_read_only() {
    let dir = TestDir::new("admin-readonly");
    let (_a, cfg) = one_fake_backend(17320, 19320);
    let mut front = Sipfront::start(&dir, cfg);
    let admin = front.cfg.admin;
    for action in ["drain", "disable", "enable"] {
        let path = format!("/api/v1/backends/a/{action}");
        let (code, body) = http_request(admin, "POST", &path, &[]).unwrap();
        assert_eq!(code, 403, "POST {path} on a token-less admin: {body}");
        assert!(
            body.contains("read-only") && body.contains("token_file"),
            "a clear error: {body}"
        );
    }
    // A token sent anyway changes nothing: there is none to match.
    let (code, _) = http_request(
        admin,
        "POST",
        "/api/v1/backends/a/drain",
        &[("Authorization", "Bearer anything-0123456789")],
    )
    .unwrap();
    assert_eq!(code, 403);
    // A page whose name resolves to 127.0.0.1 (DNS rebinding) cannot read it: its Host
    // is not a loopback name. Loopback names and addresses can.
    let port = admin.port();
    for (host, want) in [
        (format!("rebind.example:{port}"), 403),
        (format!("127.0.0.1.rebind.example:{port}"), 403),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        (format!("[::1]:{port}"), 200),
    ] {
        let (code, body) =
            http_request(admin, "GET", "/api/v1/flows", &[("Host", host.as_str())]).unwrap();
        assert_eq!(code, want, "Host: {host}: {body}");
        if want == 403 {
            assert!(body.contains("loopback"), "a clear error: {body}");
        }
    }
    // A web page on a loopback name cannot start costly reads it cannot even read
    // (a no-cors fetch of a capture or a listing): the browser names the page.
    let host = format!("127.0.0.1:{port}");
    for extra in [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let (code, body) = http_request(
            admin,
            "GET",
            "/api/v1/flows",
            &[("Host", host.as_str()), extra],
        )
        .unwrap();
        assert_eq!(code, 403, "{extra:?}: {body}");
        assert!(body.contains("web pages"), "{body}");
    }
    // /metrics stays open (Prometheus).
    let (code, _) = http_request(admin, "GET", "/metrics", &[("Origin", "http://x")]).unwrap();
    assert_eq!(code, 200);
    for (reason, n) in [("host", 2.0), ("web_page", 2.0), ("read_only", 4.0)] {
        assert_eq!(
            front.metric("sipfront_admin_refused_total", &[("reason", reason)]),
            n,
            "{reason}"
        );
    }
    // Reads work; nothing was changed.
    let st = get_json(admin, "/api/v1/status");
    assert_eq!(st["backends"][0]["admin"], "enabled", "{st}");
    let r = run_sipfront(&["ctl", "--admin", &admin.to_string(), "drain", "a"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("403") || r.stderr.contains("read-only"),
        "{r:?}"
    );
    front.assert_running();
}
