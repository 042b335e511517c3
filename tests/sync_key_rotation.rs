//! Sync key rotation on SIGHUP with real processes (deploy/README.md section 10, "Rotating
//! it"; src/sync/link/keys.rs): two sipfront hosts on loopback addresses, no VRRP, joined by
//! the HMAC-authenticated `[sync]` link, one fake UDP backend that both health-check.
//!
//! - The documented rotation: a new key file (mode 0600) on both hosts, SIGHUP A, then B.
//!   The link never goes down, flows registered on A while and after each host reloads are
//!   mirrored on B, no message is refused (`sipfront_sync_dropped_total{reason="bad_mac"}`
//!   stays 0), nothing asks for a full table again, and both hosts end with the new key
//!   only (`sync key rotation complete`).
//! - A half-done rotation: only A is reloaded and B keeps the old key past A's
//!   `previous_key_grace` (2 s): A refuses the old key, the link goes down on both sides
//!   with `bad_mac` counted, and once B is reloaded it comes back (full table) and flows
//!   reach B again.
//!
//! - A host restarted after a rotation hashes Call-IDs with keys from the new key, its
//!   peer still with the old one's: both say so (warning, `dialog_key_mismatch` counted
//!   once, nothing refused); restarting the other host too ends it.
//!
//! Addresses: 127.0.53.0/24, 127.0.54.0/24 and 127.0.56.0/24; ports 13000-13399,
//! 13500-13899 and 27200-27599, which no other test uses. The tests may run in parallel: each has its own
//! addresses and ports. Every process is a [`Proc`] guard, killed by pid on drop.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use testkit::*;

const OLD_KEY: &str = "rotation-test-old-key-3f9a1c7e5b2d";
const NEW_KEY: &str = "rotation-test-new-key-8e4b6d0a2c1f";

/// Log lines of the rotation (src/dataplane/sync.rs).
const ROTATED: &str = "sync key rotated";
const PEER_HAS_NEW: &str = "sync key rotation: the peer has the new key";
const COMPLETE: &str = "sync key rotation complete";
const GRACE_RAN_OUT: &str = "previous_key_grace ran out";
const FULL_TABLE: &str = "full table received from the sync peer";
const PEER_SILENT: &str = "sync peer silent";

/// Addresses and ports of one test's pair.
struct Site {
    /// `127.0.N.` prefix: A is .1, B .2, the phones .10.
    net: &'static str,
    base: u16,
}

impl Site {
    fn ip(&self, host: u8) -> String {
        format!("{}{host}", self.net)
    }
    fn backend(&self) -> u16 {
        self.base + 20
    }
    fn relay(&self) -> (u16, u16) {
        (self.base + 100, self.base + 399)
    }
    /// Host 1 (A) or 2 (B).
    fn sip(&self, host: u8) -> SocketAddr {
        format!("{}:{}", self.ip(host), self.base + 59 + u16::from(host))
            .parse()
            .unwrap()
    }
    fn admin(&self, host: u8) -> String {
        format!("{}:{}", self.ip(host), self.base + 29 + u16::from(host))
    }
    fn sync(&self, host: u8) -> String {
        format!("{}:{}", self.ip(host), self.base + 10)
    }
}

/// Writes `key` to `path` with mode 0600 the way `install -m 600` does: a private file
/// renamed into place, so sipfront never reads half a key or a looser mode.
fn write_key(path: &Path, key: &str) {
    let tmp = path.with_extension("new");
    fs::write(&tmp, format!("{key}\n")).expect("write key file");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).expect("chmod 600 key");
    fs::rename(&tmp, path).expect("rename key file into place");
}

/// One host of the pair: its own test directory (config, log, key file).
struct Host {
    sf: Sipfront,
    key_file: PathBuf,
    name: &'static str,
}

fn start_host(
    dir: &TestDir,
    site: &Site,
    host: u8,
    name: &'static str,
    grace: Option<&str>,
    key: &str,
) -> Host {
    let key_file = dir.join("sync.key");
    write_key(&key_file, key);
    let peer = 3 - host;
    let (lo, hi) = site.relay();
    let mut sync = format!(
        "[sync]\nlisten = \"{}\"\npeer = \"{}\"\nkey_file = \"{}\"\n",
        site.sync(host),
        site.sync(peer),
        key_file.display()
    );
    if let Some(g) = grace {
        sync.push_str(&format!("previous_key_grace = \"{g}\"\n"));
    }
    let cfg = SipfrontConfig::new(
        &site.sip(host).to_string(),
        &format!("{lo}-{hi}"),
        &site.admin(host),
    )
    .backend("reg", &format!("127.0.0.1:{}", site.backend()))
    .extra("[health]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n")
    .extra(&sync);
    Host {
        sf: Sipfront::start(dir, cfg),
        key_file,
        name,
    }
}

impl Host {
    fn admin(&self) -> SocketAddr {
        self.sf.cfg.admin
    }
    fn lines(&self, needle: &str) -> usize {
        log_lines(&self.sf.proc, &[needle]).len()
    }
    fn peer_up(&mut self) -> f64 {
        self.sf.metric("sipfront_sync_peer_up", &[])
    }
    fn bad_mac(&mut self) -> f64 {
        self.sf
            .metric("sipfront_sync_dropped_total", &[("reason", "bad_mac")])
    }
    fn last_full(&mut self) -> f64 {
        self.sf
            .metric("sipfront_sync_last_full_timestamp_seconds", &[])
    }
    /// The `sipfront_sync_*` samples, for failure messages.
    fn sync_state(&self) -> String {
        match http_get(self.admin(), "/metrics") {
            Ok((200, text)) => sync_metrics(&text).join("\n"),
            other => format!("(no metrics: {other:?})"),
        }
    }
    /// SIGHUP, then waits until the reload is logged.
    fn reload(&mut self) {
        let before = self.lines("config reloaded");
        self.sf.proc.signal("HUP");
        self.expect(
            "no `config reloaded` after SIGHUP",
            Duration::from_secs(5),
            |h| {
                h.sf.assert_running();
                h.lines("config reloaded") > before
            },
        );
        assert!(
            self.lines(ROTATED) >= 1,
            "{}: the reload did not rotate the sync key; log:\n{}",
            self.name,
            self.sf.proc.log_tail(20)
        );
    }
    /// Waits until `cond` holds; panics saying `what` did not happen, with the host's
    /// sync metrics and log, otherwise.
    fn expect(&mut self, what: &str, timeout: Duration, mut cond: impl FnMut(&mut Host) -> bool) {
        let ok = wait_until(timeout, || cond(self));
        assert!(
            ok,
            "{}: {what} (waited {timeout:?}); sync metrics:\n{}\nlog:\n{}",
            self.name,
            self.sync_state(),
            self.sf.proc.log_tail(25)
        );
    }
    /// Waits for a log line; panics with the log otherwise.
    fn expect_log(&mut self, needle: &str, timeout: Duration) {
        self.expect(&format!("no `{needle}`"), timeout, |h| h.lines(needle) > 0);
    }
    /// Client address -> relay port of every flow this host holds.
    fn flows(&self) -> Vec<(String, u64)> {
        let v = get_json(self.admin(), "/api/v1/flows?limit=100000");
        v["flows"]
            .as_array()
            .expect("flows array")
            .iter()
            .map(|f| {
                (
                    f["client"].as_str().unwrap_or("").to_string(),
                    f["relay_port"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }
}

/// The pair of one test, in sync: both hold the other's full table and hear it.
fn start_pair(site: &Site, grace: Option<&str>) -> (TestDir, TestDir, FakeBackend, Host, Host) {
    let (lo, hi) = site.relay();
    let dir_a = TestDir::new("rot-a");
    let dir_b = TestDir::new("rot-b");
    let backend = FakeBackend::start(site.backend(), lo..=hi);
    let mut a = start_host(&dir_a, site, 1, "sfA", grace, OLD_KEY);
    let mut b = start_host(&dir_b, site, 2, "sfB", grace, OLD_KEY);
    for h in [&mut a, &mut b] {
        h.expect(
            "no full table from the peer",
            Duration::from_secs(10),
            |h| h.last_full() > 0.0 && h.peer_up() == 1.0,
        );
    }
    (dir_a, dir_b, backend, a, b)
}

/// A phone on 127.0.N.10 (a new port each) registers through A; the fake backend grants 300 s.
/// Returns the phone's address and the relay port its flow got on A.
fn register(site: &Site, backend: &FakeBackend, tag: &str) -> (String, u64) {
    let local: SocketAddr = format!("{}:0", site.ip(10)).parse().unwrap();
    let phone = SipClient::bind(local, site.sip(1), tag);
    let req = phone.request(
        "REGISTER",
        &format!("{tag}@rotation"),
        1,
        "Expires: 300\r\n",
    );
    phone.send(&req);
    let (got, from) = backend
        .recv(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("{tag}: REGISTER did not reach the backend through A"));
    assert!(
        got.starts_with(b"REGISTER "),
        "{tag}: backend got something else"
    );
    let reply = String::from_utf8(sip_reply_to(&got, "200 OK"))
        .unwrap()
        .replacen("Content-Length: 0", "Expires: 300\r\nContent-Length: 0", 1);
    backend.send_to(reply.as_bytes(), from);
    let ok = wait_until(Duration::from_secs(3), || {
        recv(&phone.sock).is_some_and(|(d, _)| d.starts_with(b"SIP/2.0 200"))
    });
    assert!(ok, "{tag}: the 200 did not come back through A");
    assert_eq!(
        from.ip().to_string(),
        site.ip(1),
        "{tag}: from A's relay address"
    );
    (phone.local.to_string(), u64::from(from.port()))
}

/// Registers a phone every ~100 ms for `span` (traffic around a reload).
fn churn(site: &Site, backend: &FakeBackend, tag: &str, span: Duration) -> Vec<(String, u64)> {
    let end = Instant::now() + span;
    let mut out = Vec::new();
    let mut i = 0;
    while Instant::now() < end {
        out.push(register(site, backend, &format!("{tag}-{i}")));
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    out
}

/// Waits until B holds every flow in `want` on the same relay port (mirrored).
fn expect_mirrored(b: &mut Host, want: &[(String, u64)], what: &str) {
    let mut missing = Vec::new();
    let ok = wait_until(Duration::from_secs(5), || {
        let have = b.flows();
        missing = want.iter().filter(|w| !have.contains(w)).cloned().collect();
        missing.is_empty()
    });
    assert!(
        ok,
        "{what}: {} of {} flows registered on A are not on B (same relay port): {missing:?}\n\
         B's sync metrics:\n{}\nB's log:\n{}",
        missing.len(),
        want.len(),
        b.sync_state(),
        b.sf.proc.log_tail(25)
    );
}

/// Polls `sipfront_sync_peer_up` of both hosts every 100 ms from a thread of its own and
/// records every scrape that shows the link down (the hosts also log `sync peer silent`
/// when it goes down, which the tests check as well).
struct LinkWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl LinkWatch {
    fn start(hosts: &[&Host], t0: Instant) -> LinkWatch {
        let hosts: Vec<(&'static str, SocketAddr)> =
            hosts.iter().map(|h| (h.name, h.admin())).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut down = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                for (name, admin) in &hosts {
                    if let Ok((200, text)) = http_get(*admin, "/metrics") {
                        let up = metric(&text, "sipfront_sync_peer_up", &[]);
                        if up != 1.0 {
                            down.push(format!("{name} at {} ms: peer_up {up}", ms(t0)));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            down
        });
        LinkWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops watching; the scrapes that saw the link down.
    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("link watch thread"))
            .unwrap_or_default()
    }
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reloads `host` 300 ms into `span` while phones keep registering through A (on this
/// thread: the fake backend is not shared across threads), so flows are created before,
/// while and after the host applies the new key.
fn reload_under_churn(
    site: &Site,
    backend: &FakeBackend,
    host: &mut Host,
    tag: &str,
) -> Vec<(String, u64)> {
    std::thread::scope(|s| {
        let reload = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            host.reload();
        });
        let flows = churn(site, backend, tag, Duration::from_millis(1500));
        if let Err(e) = reload.join() {
            std::panic::resume_unwind(e);
        }
        flows
    })
}

fn ms(t0: Instant) -> u128 {
    t0.elapsed().as_millis()
}

#[test]
fn rotating_the_sync_key_on_both_hosts_keeps_the_link_and_the_mirror() {
    let t0 = Instant::now();
    let site = Site {
        net: "127.0.53.",
        base: 13000,
    };
    let (_dir_a, _dir_b, backend, mut a, mut b) = start_pair(&site, None);
    eprintln!("[{} ms] pair in sync", ms(t0));
    let mut flows = Vec::new();
    for i in 0..3 {
        flows.push(register(&site, &backend, &format!("before-{i}")));
    }
    expect_mirrored(&mut b, &flows, "before the rotation");
    let full = (a.last_full(), b.last_full());
    let full_lines = (a.lines(FULL_TABLE), b.lines(FULL_TABLE));

    let watch = LinkWatch::start(&[&a, &b], t0);

    // 1. The new key on both hosts, then A is reloaded: A opens with both keys and keeps
    //    sealing with the old one B still has.
    write_key(&a.key_file, NEW_KEY);
    write_key(&b.key_file, NEW_KEY);
    let first = reload_under_churn(&site, &backend, &mut a, "a-reload");
    eprintln!(
        "[{} ms] A reloaded, {} phones registered around it",
        ms(t0),
        first.len()
    );
    assert_eq!(
        a.lines(PEER_HAS_NEW),
        0,
        "A cannot know B has the new key yet"
    );
    assert_eq!(b.lines(ROTATED), 0);
    expect_mirrored(&mut b, &first, "A reloaded, B not yet");
    flows.extend(first);

    // 2. B is reloaded: it heard A announce the new key, so it seals with it at once; A
    //    follows on B's first message; each refuses the old key 3 s after the peer
    //    sealed with the new one.
    let second = reload_under_churn(&site, &backend, &mut b, "b-reload");
    eprintln!(
        "[{} ms] B reloaded, {} phones registered around it",
        ms(t0),
        second.len()
    );
    b.expect_log(PEER_HAS_NEW, Duration::from_secs(2));
    a.expect_log(PEER_HAS_NEW, Duration::from_secs(3));
    expect_mirrored(&mut b, &second, "after B's reload");
    flows.extend(second);
    a.expect_log(COMPLETE, Duration::from_secs(6));
    b.expect_log(COMPLETE, Duration::from_secs(6));
    eprintln!("[{} ms] rotation complete on both hosts", ms(t0));

    // 3. Only the new key now: the link still carries new flows, and every flow is there.
    let after: Vec<_> = (0..3)
        .map(|i| register(&site, &backend, &format!("after-{i}")))
        .collect();
    flows.extend(after);
    expect_mirrored(&mut b, &flows, "after the rotation");
    // Two hellos each way under the new key only.
    std::thread::sleep(Duration::from_millis(2200));
    let down = watch.finish();
    assert!(down.is_empty(), "the sync link went down: {down:?}");

    for h in [&mut a, &mut b] {
        let drops = h.sf.metrics();
        let refused: Vec<_> = parse_metrics(&drops)
            .into_iter()
            .filter(|s| s.name == "sipfront_sync_dropped_total" && s.value != 0.0)
            .map(|s| (s.labels.get("reason").cloned().unwrap_or_default(), s.value))
            .collect();
        assert!(
            refused.is_empty(),
            "{}: sync messages dropped during the rotation: {refused:?}",
            h.name
        );
        let value = |name: &str, label: &str, v: &str| {
            parse_metrics(&drops)
                .into_iter()
                .find(|s| s.name == name && s.labels.get(label).map(String::as_str) == Some(v))
                .map(|s| s.value)
        };
        assert_eq!(
            value("sipfront_socket_drops_total", "socket", "sync"),
            Some(0.0),
            "{}: the sync socket dropped datagrams",
            h.name
        );
        for q in ["turn", "pending"] {
            assert_eq!(
                value("sipfront_sync_queue_overflows_total", "queue", q),
                Some(0.0),
                "{}: the {q} queue overflowed",
                h.name
            );
        }
        for dir in ["sent", "received"] {
            let n = value("sipfront_sync_full_tables_total", "dir", dir);
            assert!(
                n.is_some_and(|n| n >= 1.0),
                "{}: full tables {dir}: {n:?}",
                h.name
            );
        }
        assert_eq!(h.lines(PEER_SILENT), 0, "{}: the link went down", h.name);
        assert_eq!(h.lines(GRACE_RAN_OUT), 0, "{}", h.name);
        assert_eq!(h.lines(COMPLETE), 1, "{}", h.name);
        assert!(
            log_lines(&h.sf.proc, &["KEEPING THE PREVIOUS SYNC KEY"]).is_empty(),
            "{}: the new key file was refused",
            h.name
        );
        h.sf.assert_running();
    }
    assert_eq!(
        (a.last_full(), b.last_full()),
        full,
        "a full table was received again during the rotation"
    );
    assert_eq!(
        (a.lines(FULL_TABLE), b.lines(FULL_TABLE)),
        full_lines,
        "a full table was received again during the rotation"
    );
    // A phone's socket closes after its REGISTER, so the kernel may hand a later phone the
    // same ephemeral port: that is the same flow, refreshed, and A counts it once.
    let distinct: std::collections::BTreeSet<_> = flows.iter().map(|(phone, _)| phone).collect();
    let n = distinct.len() as f64;
    let peer_flows = b.sf.wait_metric(
        "sipfront_sync_peer_flows",
        &[],
        Duration::from_secs(3),
        |v| v == n,
    );
    assert_eq!(peer_flows, n, "A's flow count as B hears it");
    eprintln!(
        "[{} ms] {} flows mirrored, no drop, no full table",
        ms(t0),
        distinct.len()
    );
}

#[test]
fn a_half_done_rotation_breaks_the_link_after_the_grace_and_heals_on_the_second_reload() {
    let t0 = Instant::now();
    let site = Site {
        net: "127.0.54.",
        base: 13500,
    };
    let (_dir_a, _dir_b, backend, mut a, mut b) = start_pair(&site, Some("2s"));
    let before = vec![register(&site, &backend, "before")];
    expect_mirrored(&mut b, &before, "before the rotation");
    eprintln!("[{} ms] pair in sync", ms(t0));

    // Both files get the new key, but only A is reloaded.
    write_key(&a.key_file, NEW_KEY);
    write_key(&b.key_file, NEW_KEY);
    a.reload();
    let reloaded = Instant::now();
    // Within the grace A still seals with the old key: B takes A's flows.
    let within = vec![register(&site, &backend, "within-grace")];
    expect_mirrored(&mut b, &within, "within the grace");
    assert_eq!(b.bad_mac(), 0.0, "B refused A within the grace");

    // The grace runs out: A refuses the old key and seals with the new one; each side
    // refuses the other's messages, and the link goes down after the peer timeout (3 s).
    a.expect_log(GRACE_RAN_OUT, Duration::from_secs(4));
    eprintln!(
        "[{} ms] A's grace ran out {} ms after the reload",
        ms(t0),
        reloaded.elapsed().as_millis()
    );
    for h in [&mut a, &mut b] {
        h.expect(
            "the link should be down with bad_mac counted",
            Duration::from_secs(6),
            |h| h.bad_mac() > 0.0 && h.peer_up() == 0.0,
        );
    }
    eprintln!("[{} ms] link down on both hosts, bad_mac counted", ms(t0));
    // And said in the log (a line per 10 s at most), with the reason.
    for h in [&mut a, &mut b] {
        h.expect(
            "a log line of sync datagrams dropped, naming bad_mac",
            Duration::from_secs(12),
            |h| h.lines("bad_mac=") > 0,
        );
    }
    // A's flows no longer reach B.
    let (lost_client, _) = register(&site, &backend, "while-down");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !b.flows().iter().any(|(c, _)| *c == lost_client),
        "a flow reached B while the keys differ"
    );

    // B reloaded with the new key: the link heals, B takes A's full table (messages
    // were lost while it was down), and new flows reach B again.
    let full_b = b.last_full();
    b.reload();
    for h in [&mut a, &mut b] {
        h.expect(
            "the link did not come back after B's reload",
            Duration::from_secs(5),
            |h| h.peer_up() == 1.0,
        );
    }
    b.expect_log(PEER_HAS_NEW, Duration::from_secs(2));
    b.expect(
        "B did not resync with A's full table after the link came back",
        Duration::from_secs(5),
        |b| b.last_full() > full_b,
    );
    eprintln!("[{} ms] link up again after B's reload", ms(t0));
    let after = vec![register(&site, &backend, "after-heal")];
    expect_mirrored(&mut b, &after, "after the heal");
    // The full table brought the flow created while the link was down too.
    assert!(
        b.flows().iter().any(|(c, _)| *c == lost_client),
        "the flow created while the link was down did not reach B with the full table"
    );
    b.expect_log(COMPLETE, Duration::from_secs(6));

    // No refusals any more: the counters stand still while hellos go both ways.
    let drops = (a.bad_mac(), b.bad_mac());
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(
        (a.bad_mac(), b.bad_mac()),
        drops,
        "bad_mac still counted after both hosts have the new key"
    );
    for h in [&mut a, &mut b] {
        assert_eq!(h.peer_up(), 1.0, "{}", h.name);
        h.sf.assert_running();
    }
    eprintln!("[{} ms] healed, drops stopped at {drops:?}", ms(t0));
}

#[test]
fn a_host_restarted_after_a_rotation_reports_other_dialog_keys() {
    let site = Site {
        net: "127.0.56.",
        base: 27200,
    };
    let (_dir_a, dir_b, _backend, mut a, b) = start_pair(&site, None);
    let mismatch = |h: &mut Host| {
        h.sf.metric(
            "sipfront_sync_dropped_total",
            &[("reason", "dialog_key_mismatch")],
        )
    };
    assert_eq!(mismatch(&mut a), 0.0, "same key from the start");
    // The rotation, then B restarts (an upgrade, say) with the new key.
    write_key(&a.key_file, NEW_KEY);
    write_key(&b.key_file, NEW_KEY);
    a.reload();
    drop(b);
    let mut b = start_host(&dir_b, &site, 2, "sfB", None, NEW_KEY);
    for h in [&mut a, &mut b] {
        h.expect(
            "dialog_key_mismatch not counted",
            Duration::from_secs(10),
            |h| mismatch(h) == 1.0,
        );
        h.expect_log(
            "sync peer hashes Call-IDs with other keys",
            Duration::from_secs(1),
        );
        assert_eq!(h.peer_up(), 1.0, "{}: the link itself is fine", h.name);
    }
    // A holds both keys. B refuses what A seals with the old key until A switches:
    // once B's previous run has been silent for 3 s (the peer timeout) and a message
    // of the restarted B opens with the new key; none after that.
    assert_eq!(a.bad_mac(), 0.0);
    let refused = b.bad_mac();
    // Counted once per onset, not per hello.
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!((mismatch(&mut a), mismatch(&mut b)), (1.0, 1.0));
    assert_eq!(b.bad_mac(), refused, "B still refuses A's messages");
    assert!(refused <= 20.0, "B refused {refused} of A's messages");
    eprintln!("B refused {refused} of A's messages sealed with the old key, then none");
    // A restarted too: both derive from the new key; nothing more is reported.
    drop(a);
    let dir_a2 = TestDir::new("rot-a2");
    let mut a = start_host(&dir_a2, &site, 1, "sfA", None, NEW_KEY);
    a.expect("A did not come back", Duration::from_secs(10), |a| {
        a.peer_up() == 1.0 && a.last_full() > 0.0
    });
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(mismatch(&mut a), 0.0, "A after its restart");
    assert_eq!(mismatch(&mut b), 1.0, "B: no new onset");
}
