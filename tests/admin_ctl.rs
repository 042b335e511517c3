//! Operating sipfront: the admin API and `sipfront ctl` with a bearer token (drain, enable,
//! disable, status, flows), SIGHUP config reload (backends added, removed, moved; an
//! invalid file rejected), and the admin config checks.
//!
//! Ports (SIP, backends, admin, clients on 127.0.2.x) and relay ports, one block per test:
//!   drain with ctl and token  17200-17239, relay 18800-18999
//!   SIGHUP reload             17240-17279, relay 19000-19099
//!   SIGHUP then SIGTERM       17330-17339, relay 19330-19339
//!   reload against the kept   17340-17349, relay 19340-19349

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::*;

/// Client sockets `ip:ports`, each one a flow at sipfront.
fn clients(ip: [u8; 4], ports: std::ops::Range<u16>, sip: SocketAddr) -> Vec<SipClient> {
    ports
        .map(|p| SipClient::bind(SocketAddr::from((ip, p)), sip, "client"))
        .collect()
}

/// Every client sends one OPTIONS (Call-ID `TAG-PORT-IP`); returns, per client, the index
/// of the backend in `backends` that received it (re-sending to clients whose datagram has
/// not arrived, UDP being UDP).
fn landing(tag: &str, cs: &[SipClient], backends: &[&FakeBackend]) -> Vec<usize> {
    let call_id = |c: &SipClient| format!("{tag}-{}-{}", c.local.port(), c.local.ip());
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for _attempt in 0..5 {
        for c in cs {
            if !got.contains_key(&call_id(c)) {
                c.send(&c.request("OPTIONS", &call_id(c), 1, ""));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while got.len() < cs.len() && Instant::now() < deadline {
            for (i, b) in backends.iter().enumerate() {
                while let Some((d, _)) = b.recv(Duration::from_millis(10)) {
                    let text = String::from_utf8_lossy(&d);
                    if let Some(id) = sip_header(&text, "Call-ID")
                        && id.starts_with(&format!("{tag}-"))
                    {
                        let prev = got.insert(id.clone(), i);
                        assert!(
                            prev.is_none_or(|p| p == i),
                            "{id} reached two backends ({prev:?} and {i})"
                        );
                    }
                }
            }
        }
        if got.len() == cs.len() {
            break;
        }
    }
    cs.iter()
        .map(|c| {
            *got.get(&call_id(c))
                .unwrap_or_else(|| panic!("{}'s OPTIONS reached no backend", c.local))
        })
        .collect()
}

fn count(landed: &[usize], backend: usize) -> usize {
    landed.iter().filter(|&&b| b == backend).count()
}

/// Writes a token file as operators must: mode 0600 (sipfront refuses looser ones).
fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `GET path` of the admin API with `auth` headers (every `/api/v1` call needs the token
/// when one is set), as JSON; panics unless 200 with JSON.
fn get_json_auth(admin: SocketAddr, auth: &[(&str, &str)], path: &str) -> serde_json::Value {
    match http_request(admin, "GET", path, auth) {
        Ok((200, body)) => serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}")),
        Ok((code, body)) => panic!("GET http://{admin}{path} answered {code}: {body}"),
        Err(e) => panic!("GET http://{admin}{path} failed: {e}"),
    }
}

/// [`backend_status`] with `auth` headers.
fn backend_status_auth(
    admin: SocketAddr,
    auth: &[(&str, &str)],
    name: &str,
) -> Option<serde_json::Value> {
    get_json_auth(admin, auth, "/api/v1/status")["backends"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
}

/// [`wait_backend_status`] with `auth` headers.
fn wait_backend_status_auth(
    admin: SocketAddr,
    auth: &[(&str, &str)],
    name: &str,
    key: &str,
    want: impl Into<serde_json::Value>,
) -> serde_json::Value {
    let want = want.into();
    let mut last = None;
    let ok = wait_until(Duration::from_secs(10), || {
        last = backend_status_auth(admin, auth, name);
        last.as_ref().is_some_and(|b| b[key] == want)
    });
    assert!(
        ok,
        "status of backend {name}: {key} should be {want}, last seen: {last:?}"
    );
    last.unwrap()
}

/// [`flow_backend`] with `auth` headers.
fn flow_backend_auth(
    admin: SocketAddr,
    auth: &[(&str, &str)],
    client: SocketAddr,
) -> Option<String> {
    let v = get_json_auth(
        admin,
        auth,
        &format!("/api/v1/flows?client={client}&limit=10"),
    );
    let flows = v["flows"].as_array()?;
    assert!(flows.len() <= 1, "several flows for one client: {v}");
    flows
        .first()
        .and_then(|f| f["backend"].as_str())
        .map(str::to_string)
}

fn transitions(text: &str, backend: &str, to: &str) -> f64 {
    metric(
        text,
        "sipfront_backend_transitions_total",
        &[("backend", backend), ("to", to), ("reason", "admin")],
    )
}

#[test]
fn drain_enable_disable_through_ctl_with_token() {
    let dir = TestDir::new("ctl-drain");
    let t0 = Instant::now();
    let relay = 18800..=18999;
    let a = FakeBackend::start(17201, relay.clone());
    let b = FakeBackend::start(17202, relay.clone());
    let token = "s3cret-token-0123456789abcdef";
    let token_file = dir.join("admin.token");
    write_private(&token_file, &format!("{token}\n"));
    let wrong_file = dir.join("wrong.token");
    write_private(&wrong_file, "not-the-right-token-at-all\n");
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:17200", "18800-18999", "127.0.0.1:17203")
            .backend("a", "127.0.0.1:17201")
            .backend("b", "127.0.0.1:17202")
            .extra(&format!(
                "token_file = \"{}\"\n\n[health]\ninterval = \"300ms\"\ntimeout = \"250ms\"\n",
                token_file.display()
            )),
    );
    let admin = front.cfg.admin;
    let admin_s = admin.to_string();
    let config = front.config_path.to_string_lossy().into_owned();
    let sip = front.cfg.sip;
    let bs = [&a, &b];

    // Flows that exist before the drain.
    let old = clients([127, 0, 2, 1], 17210..17240, sip);
    let old_home = landing("old", &old, &bs);
    assert!(
        count(&old_home, 0) > 0 && count(&old_home, 1) > 0,
        "30 clients should land on both backends: {old_home:?}"
    );
    for (c, &h) in old.iter().zip(&old_home) {
        assert_eq!(
            flow_backend_auth(admin, &auth, c.local).as_deref(),
            Some(["a", "b"][h]),
            "flows API vs the backend that received {}'s datagram",
            c.local
        );
    }

    // Changes need the token.
    let r = run_sipfront(&["ctl", "--admin", &admin_s, "drain", "a"]);
    assert_eq!(r.code, 1, "ctl drain without a token: {r:?}");
    assert!(
        r.stderr.contains("401") && r.stderr.to_lowercase().contains("token"),
        "the error names the 401 and the token: {r:?}"
    );
    let wrong = wrong_file.to_string_lossy().into_owned();
    let r = run_sipfront(&[
        "ctl",
        "--admin",
        &admin_s,
        "--token-file",
        &wrong,
        "drain",
        "a",
    ]);
    assert_eq!(r.code, 1, "ctl drain with a wrong token: {r:?}");
    assert!(r.stderr.contains("401"), "{r:?}");
    let (code, body) = http_request(admin, "POST", "/api/v1/backends/a/drain", &[]).unwrap();
    assert_eq!(code, 401, "POST without Authorization: {body}");
    let (code, body) = http_request(
        admin,
        "POST",
        "/api/v1/backends/a/drain",
        &[("Authorization", "Bearer not-the-right-token-at-all")],
    )
    .unwrap();
    assert_eq!(code, 401, "POST with a wrong token: {body}");
    let (code, _) = http_request(
        admin,
        "POST",
        "/api/v1/backends/a/drain",
        &[("Authorization", token)],
    )
    .unwrap();
    assert_eq!(code, 401, "token without the Bearer scheme");
    // (The status snapshot may lag by a refresh: let it catch up, then compare.)
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        backend_status_auth(admin, &auth, "a").unwrap()["admin"],
        "enabled",
        "refused calls change nothing"
    );
    // With a token set, reading the API needs it too (the flow list maps clients to relay
    // ports); /metrics, /live and /ready stay open for Prometheus and keepalived.
    let r = run_sipfront(&["ctl", "--admin", &admin_s, "status"]);
    assert_eq!(r.code, 1, "ctl status without a token: {r:?}");
    assert!(r.stderr.contains("401"), "{r:?}");
    for path in ["/api/v1/status", "/api/v1/flows"] {
        let (code, body) = http_request(admin, "GET", path, &[]).unwrap();
        assert_eq!(code, 401, "GET {path} without a token: {body}");
    }
    for path in ["/metrics", "/live", "/ready"] {
        let (code, body) = http_get(admin, path).unwrap();
        assert_eq!(code, 200, "GET {path} needs no token: {body}");
    }

    // Drain `a` with the token from the config file.
    let r = run_sipfront(&["ctl", "-c", &config, "drain", "a"]);
    assert_eq!(r.code, 0, "ctl -c CONFIG drain a: {r:?}");
    assert!(r.stdout.contains("draining"), "{r:?}");
    let st = wait_backend_status_auth(admin, &auth, "a", "admin", "draining");
    assert_eq!(st["state"], "up", "draining is not a health state: {st}");
    let r = run_sipfront(&["ctl", "-c", &config, "status"]);
    assert_eq!(r.code, 0, "{r:?}");
    let row = r
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("a"))
        .unwrap_or_else(|| panic!("no row for a in ctl status:\n{}", r.stdout));
    assert!(row.contains("draining"), "ctl status row for a: {row}");

    // Existing flows stay where they are; new clients never get `a`.
    let again = landing("again", &old, &bs);
    assert_eq!(again, old_home, "existing flows moved during a drain");
    let new = clients([127, 0, 2, 2], 17210..17240, sip);
    let new_home = landing("new", &new, &bs);
    assert_eq!(
        count(&new_home, 0),
        0,
        "new clients sent to draining a: {new_home:?}"
    );

    // `ctl flows --client` shows one flow of `a`.
    let on_a = &old[old_home.iter().position(|&h| h == 0).unwrap()];
    let client = on_a.local.to_string();
    let r = run_sipfront(&["ctl", "-c", &config, "flows", "--client", &client]);
    assert_eq!(r.code, 0, "{r:?}");
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with(&client))
        .unwrap_or_else(|| panic!("no row for {client}:\n{}", r.stdout));
    assert_eq!(
        row.split_whitespace().nth(2),
        Some("a"),
        "flow row (client, relay port, backend...): {row}"
    );
    let relay_port: u16 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(relay.contains(&relay_port), "{row}");
    let r = run_sipfront(&["ctl", "-c", &config, "flows", "--client", "127.0.2.9:17299"]);
    assert_eq!(r.code, 1, "flows for an unknown client: {r:?}");
    let r = run_sipfront(&["ctl", "-c", &config, "flows", "--limit", "5"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("in all"),
        "ctl flows summary line: {}",
        r.stdout
    );

    // Enable with the bearer token over HTTP: new clients may get `a` again.
    let (code, body) = http_request(
        admin,
        "POST",
        "/api/v1/backends/a/enable",
        &[("Authorization", &bearer)],
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON reply");
    assert_eq!(v["admin"], "enabled", "{v}");
    let more = clients([127, 0, 2, 3], 17210..17240, sip);
    let more_home = landing("more", &more, &bs);
    assert!(
        count(&more_home, 0) > 0,
        "no new client on re-enabled a: {more_home:?}"
    );

    // Disable: `a`'s flows move to `b` at once.
    let r = run_sipfront(&[
        "ctl",
        "--admin",
        &admin_s,
        "--token-file",
        &token_file.to_string_lossy(),
        "disable",
        "a",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let moved = landing("disabled", &old, &bs);
    assert!(
        moved.iter().all(|&h| h == 1),
        "flows of disabled a still sent there: {moved:?}"
    );
    wait_backend_status_auth(admin, &auth, "a", "admin", "disabled");

    // Unknown backend: 404 / exit 1. Bad ctl arguments and configs: exit 2.
    let (code, _) = http_request(
        admin,
        "POST",
        "/api/v1/backends/nosuch/drain",
        &[("Authorization", &bearer)],
    )
    .unwrap();
    assert_eq!(code, 404);
    let r = run_sipfront(&["ctl", "-c", &config, "drain", "nosuch"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("404") || r.stderr.contains("nosuch"),
        "{r:?}"
    );
    let r = run_sipfront(&["ctl", "-c", &config, "drain"]);
    assert_eq!(r.code, 2, "missing backend name: {r:?}");
    let r = run_sipfront(&["ctl", "-c", "/nonexistent/sipfront.toml", "status"]);
    assert_eq!(r.code, 2, "unreadable config: {r:?}");
    let r = run_sipfront(&["ctl", "--admin", "127.0.0.1:17239", "status"]);
    assert_eq!(r.code, 1, "nothing listening: {r:?}");
    assert!(r.stderr.contains("127.0.0.1:17239"), "{r:?}");

    let text = http_get(admin, "/metrics").unwrap().1;
    assert_eq!(transitions(&text, "a", "draining"), 1.0);
    assert_eq!(transitions(&text, "a", "enabled"), 1.0);
    assert_eq!(transitions(&text, "a", "disabled"), 1.0);
    assert_eq!(
        log_lines(&front.proc, &["admin state changed", "backend=a "]).len(),
        3,
        "one log line per admin change"
    );
    eprintln!("ctl drain test took {:?}", t0.elapsed());
}

/// Sends a CRLF keepalive from each socket every 250 ms until dropped.
struct Pinger {
    on: Arc<AtomicBool>,
    socks: Arc<std::sync::Mutex<Vec<std::net::UdpSocket>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pinger {
    fn start(socks: Vec<std::net::UdpSocket>, to: SocketAddr) -> Pinger {
        let on = Arc::new(AtomicBool::new(true));
        let socks = Arc::new(std::sync::Mutex::new(socks));
        let (on2, socks2) = (on.clone(), socks.clone());
        let thread = std::thread::spawn(move || {
            while on2.load(Ordering::Relaxed) {
                for s in socks2.lock().unwrap().iter() {
                    let _ = s.send_to(b"\r\n\r\n", to);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Pinger {
            on,
            socks,
            thread: Some(thread),
        }
    }

    fn add(&mut self, more: Vec<std::net::UdpSocket>) {
        self.socks.lock().unwrap().extend(more);
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.on.store(false, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The status of every backend as (name, addr, admin, configured), for comparing the
/// running config before and after a reload.
fn backends_view(
    admin: SocketAddr,
    auth: &[(&str, &str)],
) -> BTreeSet<(String, String, String, bool)> {
    get_json_auth(admin, auth, "/api/v1/status")["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or("").to_string(),
                b["addr"].as_str().unwrap_or("").to_string(),
                b["admin"].as_str().unwrap_or("").to_string(),
                b["configured"].as_bool().unwrap_or(true),
            )
        })
        .collect()
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

#[test]
fn sighup_reload_adds_removes_and_moves_backends_and_rejects_invalid_config() {
    let dir = TestDir::new("reload");
    let t0 = Instant::now();
    let relay = 19000..=19099;
    let a = FakeBackend::start(17241, relay.clone());
    let b = FakeBackend::start(17242, relay.clone());
    let c = FakeBackend::start(17243, relay.clone());
    let token = "reload-token-0123456789abcdef";
    let token_file = dir.join("admin.token");
    write_private(&token_file, &format!("{token}\n"));
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    let extra = &format!(
        "token_file = \"{}\"\n\n\
         [health]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\n\
         [timeouts]\nflow_idle = \"2s\"\n",
        token_file.display()
    );
    let base = SipfrontConfig::new("127.0.0.1:17240", "19000-19099", "127.0.0.1:17244");
    let mut front = Sipfront::start(
        &dir,
        base.clone()
            .backend("a", "127.0.0.1:17241")
            .backend("b", "127.0.0.1:17242")
            .extra(extra),
    );
    let admin = front.cfg.admin;
    let sip = front.cfg.sip;
    assert_eq!(c.probes(), 0, "c is not configured yet");

    // Flows on `a` and `b`, kept alive by CRLF keepalives (which refresh a flow) until the
    // test lets those on `b` expire.
    let first = clients([127, 0, 2, 10], 17250..17270, sip);
    let first_home = landing("first", &first, &[&a, &b]);
    assert!(count(&first_home, 1) > 0, "no flow on b: {first_home:?}");
    let sockets = |cs: &[SipClient], keep: &dyn Fn(usize) -> bool| -> Vec<std::net::UdpSocket> {
        cs.iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, c)| c.sock.try_clone().unwrap())
            .collect()
    };
    let b_pinger = Pinger::start(sockets(&first, &|i| first_home[i] == 1), sip);
    let mut other_pinger = Pinger::start(sockets(&first, &|i| first_home[i] != 1), sip);

    // An admin state survives reloads: drain `a` first.
    let (code, body) = http_request(admin, "POST", "/api/v1/backends/a/drain", &auth).unwrap();
    assert_eq!(code, 200, "{body}");

    // Reload: `b` removed, `c` added.
    let reloaded = base
        .clone()
        .backend("a", "127.0.0.1:17241")
        .backend("c", "127.0.0.1:17243")
        .extra(extra);
    std::fs::write(&front.config_path, reloaded.toml()).unwrap();
    front.proc.signal("HUP");
    let line = wait_log(&mut front, &["config reloaded"], 1);
    assert!(
        line.contains("backend b removed") && line.contains("backend c added"),
        "reload notes: {line}"
    );
    front.cfg = reloaded.clone();
    front.wait_backends_up(Duration::from_secs(10));
    assert!(c.probes() > 0, "added backend c is probed");
    let st_c = wait_backend_status_auth(admin, &auth, "c", "state", "up");
    assert_eq!(st_c["configured"], true, "{st_c}");
    assert!(st_c["last_rtt_ms"].is_number(), "{st_c}");
    // The removed backend stays listed while it has flows.
    let st_b = wait_backend_status_auth(admin, &auth, "b", "configured", false);
    assert_eq!(st_b["admin"], "draining", "{st_b}");
    let mut st_b = st_b;
    let has_flows = wait_until(Duration::from_secs(10), || {
        st_b = backend_status_auth(admin, &auth, "b").expect("b listed");
        st_b["flows"].as_u64() > Some(0)
    });
    assert!(
        has_flows,
        "flows per backend (swept twice a second): {st_b}"
    );
    // a's admin state is kept across the reload.
    wait_backend_status_auth(admin, &auth, "a", "admin", "draining");

    // `b`'s flows stay on it while it drains out; new clients go to `c` only (a drains).
    let still = landing("still", &first, &[&a, &b, &c]);
    for (h0, h1) in first_home.iter().zip(&still) {
        assert_eq!(
            h0, h1,
            "flows kept across the reload: {first_home:?} vs {still:?}"
        );
    }
    let second = clients([127, 0, 2, 11], 17250..17270, sip);
    let second_home = landing("second", &second, &[&a, &b, &c]);
    assert!(
        second_home.iter().all(|&h| h == 2),
        "new clients with a draining and b removed: {second_home:?}"
    );

    other_pinger.add(sockets(&second, &|_| true));

    // Let `b`'s flows idle out: `b` disappears.
    drop(b_pinger);
    let gone = wait_until(Duration::from_secs(20), || {
        backend_status_auth(admin, &auth, "b").is_none()
    });
    assert!(
        gone,
        "removed backend b still listed after its flows expired: {}",
        get_json_auth(admin, &auth, "/api/v1/status")
    );
    wait_log(&mut front, &["removed backend drained"], 1);

    // An invalid config is rejected; the running one stays.
    let before = backends_view(admin, &auth);
    let invalid = format!(
        "{}\n[[backend]]\nname = \"d\"\naddr = \"not-an-address\"\n",
        reloaded.toml()
    );
    std::fs::write(&front.config_path, invalid).unwrap();
    front.proc.signal("HUP");
    let line = wait_log(
        &mut front,
        &["reload rejected: invalid config; keeping the running one"],
        1,
    );
    assert!(line.contains("addr"), "the error names the key: {line}");
    front.assert_running();
    assert_eq!(
        backends_view(admin, &auth),
        before,
        "status changed by a rejected reload"
    );
    std::fs::write(&front.config_path, "[listen\nsip = ").unwrap();
    front.proc.signal("HUP");
    wait_log(
        &mut front,
        &["reload rejected: invalid config; keeping the running one"],
        2,
    );
    front.assert_running();
    assert_eq!(backends_view(admin, &auth), before);
    assert_eq!(
        log_lines(&front.proc, &["config reloaded"]).len(),
        1,
        "no reload applied"
    );

    // A moved backend: `c` gets a new address; its flows follow it there.
    let c2 = FakeBackend::start(17245, relay.clone());
    let moved = base
        .clone()
        .backend("a", "127.0.0.1:17241")
        .backend("c", "127.0.0.1:17245")
        .extra(extra);
    std::fs::write(&front.config_path, moved.toml()).unwrap();
    front.proc.signal("HUP");
    let line = wait_log(&mut front, &["config reloaded"], 2);
    assert!(line.contains("backend c address changed"), "{line}");
    front.cfg = moved;
    front.wait_backends_up(Duration::from_secs(10));
    assert!(c2.probes() > 0, "c probed at its new address");
    wait_backend_status_auth(admin, &auth, "c", "addr", "127.0.0.1:17245");
    // The same flows (kept alive all along), now sent to c's new address.
    let flows_before = metric(&front.metrics(), "sipfront_flows_created_total", &[]);
    let after_move = landing("after-move", &second, &[&a, &c, &c2]);
    assert!(
        after_move.iter().all(|&h| h == 2),
        "c's flows should go to its new address: {after_move:?}"
    );
    assert_eq!(
        metric(&front.metrics(), "sipfront_flows_created_total", &[]),
        flows_before,
        "no new flows: the existing ones followed c"
    );
    drop(other_pinger);
    front.assert_running();
    eprintln!("reload test took {:?}", t0.elapsed());
}

/// Admin config rules, checked by `sipfront check-config`: a non-loopback admin listener
/// needs a token file; a token must be long enough; health timeout at most the interval.
#[test]
fn admin_and_health_config_checks() {
    let dir = TestDir::new("admin-config");
    let write = |name: &str, extra: &str| -> String {
        let cfg = SipfrontConfig::new("127.0.0.1:17280", "19100-19109", "127.0.0.1:17281")
            .backend("a", "127.0.0.1:17282");
        let mut text = cfg.toml().replace("127.0.0.1:17281", "0.0.0.0:17281");
        if !extra.is_empty() {
            text = text.replace(
                "listen = \"0.0.0.0:17281\"",
                &format!("listen = \"0.0.0.0:17281\"\n{extra}"),
            );
        }
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    };
    let short = dir.join("short.token");
    write_private(&short, "short\n");
    let good = dir.join("good.token");
    write_private(&good, "0123456789abcdef0123\n");
    let loose = dir.join("loose.token");
    write_private(&loose, "0123456789abcdef0123\n");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    let r = run_sipfront(&["check-config", &write("open.toml", "")]);
    assert_eq!(r.code, 2, "non-loopback admin without a token: {r:?}");
    assert!(r.stderr.contains("admin"), "names the admin key: {r:?}");
    let r = run_sipfront(&[
        "check-config",
        &write(
            "short.toml",
            &format!("token_file = \"{}\"", short.display()),
        ),
    ]);
    assert_eq!(r.code, 2, "too short a token: {r:?}");
    assert!(r.stderr.contains("token"), "{r:?}");
    let r = run_sipfront(&[
        "check-config",
        &write("good.toml", &format!("token_file = \"{}\"", good.display())),
    ]);
    assert_eq!(r.code, 0, "non-loopback admin with a token: {r:?}");
    assert!(
        !r.stdout.contains("0123456789abcdef0123"),
        "check-config must not print the token: {}",
        r.stdout
    );
    // A token file other users can read is refused, naming the key and the mode; `run`
    // refuses it the same way (exit 2, like every config error).
    let loose_cfg = write(
        "loose.toml",
        &format!("token_file = \"{}\"", loose.display()),
    );
    for cmd in [
        &["check-config", loose_cfg.as_str()][..],
        &["run", "-c", &loose_cfg],
    ] {
        let r = run_sipfront(cmd);
        assert_eq!(r.code, 2, "{cmd:?} with a 0644 token file: {r:?}");
        assert!(
            r.stderr.contains("admin.token_file") && r.stderr.contains("mode 0644"),
            "the error names the key and the mode: {r:?}"
        );
    }
    let r = run_sipfront(&[
        "check-config",
        &write(
            "health.toml",
            &format!(
                "token_file = \"{}\"\n\n[health]\ninterval = \"200ms\"\ntimeout = \"300ms\"",
                good.display()
            ),
        ),
    ]);
    assert_eq!(r.code, 2, "health timeout above interval: {r:?}");
    assert!(r.stderr.contains("timeout"), "{r:?}");
    // A [vrrp] interface this host does not have: `run` finds out only when it opens
    // it, and says so as the config error it is.
    let no_iface = write(
        "no-iface.toml",
        &format!(
            "token_file = \"{}\"\n\n[vrrp]\ninterface = \"sfnosuch0\"\nvrid = 51\n\
             vips = [\"10.99.0.10/24\"]\npeers = [\"10.99.0.2\"]",
            good.display()
        ),
    );
    let r = run_sipfront(&["run", "-c", &no_iface]);
    assert_eq!(r.code, 2, "an interface the host lacks: {r:?}");
    assert!(
        r.stderr.contains("vrrp.interface `sfnosuch0`"),
        "names the key: {r:?}"
    );
}

/// A SIGTERM that comes while a SIGHUP reload runs stops sipfront (a signal that came
/// with no listener was lost, and `systemctl stop` waited for its SIGKILL), and a
/// SIGHUP right after start reloads rather than kills.
#[test]
fn sigterm_during_a_reload_stops_it() {
    let dir = TestDir::new("hup-term");
    let (_a, cfg) = one_fake_backend(17330, 19330);
    let mut front = Sipfront::start(&dir, cfg);
    front.proc.signal("HUP");
    wait_log(&mut front, &["config reloaded"], 1);
    // Back to back (kill(1) would space them by milliseconds): the SIGTERM arrives
    // while the SIGHUP's reload runs.
    let pid = front.proc.pid() as libc::pid_t;
    // SAFETY: kill(2) on a child of this test.
    unsafe {
        libc::kill(pid, libc::SIGHUP);
        libc::kill(pid, libc::SIGTERM);
    }
    let status = front.proc.wait_timeout(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "sipfront did not stop on SIGTERM after SIGHUPs: {status:?}\n{}",
        front.proc.log_tail(20)
    );
}

/// A reload keeps the running `[listen]`: a new file that moves its own public address
/// and puts a backend at the running one (a loop through sipfront) is refused as a
/// whole, though it is valid on its own; the running backends stay.
#[test]
fn a_reload_is_checked_with_the_listen_it_keeps() {
    let dir = TestDir::new("reload-kept");
    let (_a, cfg) = one_fake_backend(17340, 19340);
    let mut front = Sipfront::start(&dir, cfg);
    let moved = SipfrontConfig::new("127.0.0.1:17343", "19340-19349", "127.0.0.1:17342")
        .backend("a", "127.0.0.1:17341")
        .backend("loop", "127.0.0.1:17340");
    std::fs::write(&front.config_path, moved.toml()).unwrap();
    front.proc.signal("HUP");
    let line = wait_log(&mut front, &["reload failed"], 1);
    assert!(
        line.contains("backend[1].addr") && line.contains("own listen addresses"),
        "{line}"
    );
    let st = get_json(front.cfg.admin, "/api/v1/status");
    assert_eq!(st["backends"].as_array().map(Vec::len), Some(1), "{st}");
    front.assert_running();
}
