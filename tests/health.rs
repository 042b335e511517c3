//! Backend health and failover with real programs: two Kamailio backends behind sipfront
//! under sipp registration load, one killed with `kill -9` (ICMP fast path) and restarted,
//! and the `[affinity] failback` policy seen from a phone whose home was the killed one;
//! backends that go silent without ICMP (a socket that stops answering, a SIGSTOPped
//! Kamailio) and are marked down only after `fall` unanswered probes; all backends down,
//! where sipfront answers requests itself with a stateless 503.
//!
//! Ports (SIP, backends, admin, phones) and relay ports, one block per test:
//!   failback never        17000-17019, relay 18000-18199
//!   failback on-register  17020-17039, relay 18200-18399
//!   failback immediate    17040-17059, relay 18400-18599
//!   silent socket         17060-17079, relay 18600-18649
//!   stopped Kamailio      17080-17099, relay 18650-18699
//!   all backends down     17100-17119, relay 18700-18749
//!   one dead, others up   17120-17139, relay 18750-18799
//!   ICMP on relayed data  17140-17159, relay 19200-19249
//!   reply-code policy     17160-17179, relay 19250-19299

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use testkit::*;

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn datagrams(text: &str, direction: &str, backend: &str) -> f64 {
    metric(
        text,
        "sipfront_datagrams_total",
        &[("direction", direction), ("backend", backend)],
    )
}

/// `sipfront_backend_transitions_total` for one backend and target state, summed over
/// reasons unless `reason` is given.
fn transitions(text: &str, backend: &str, to: &str, reason: Option<&str>) -> f64 {
    let mut labels = vec![("backend", backend), ("to", to)];
    if let Some(r) = reason {
        labels.push(("reason", r));
    }
    metric(text, "sipfront_backend_transitions_total", &labels)
}

/// The transition series, for assertion messages.
fn transition_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("sipfront_backend_transitions_total"))
        .map(str::to_string)
        .collect()
}

/// The `Received:` addresses of `aor`'s contacts at a Kamailio, from `ul.lookup` (the
/// harness's `received_of` uses `ul.dump`, whose reply is too big for kamcmd once a few
/// hundred users are registered).
fn received_at(k: &Kamailio, aor: &str) -> Vec<String> {
    k.kamcmd(&["ul.lookup", "location", aor])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Received:"))
        .map(|r| r.trim().to_string())
        .collect()
}

fn register(phone: &SipClient, cseq: u32) -> String {
    let req = phone.request("REGISTER", "phone-registration", cseq, "Expires: 300\r\n");
    phone.expect(&req, 200, Duration::from_secs(15))
}

fn options(phone: &SipClient, call_id: &str) -> String {
    let req = phone.request("OPTIONS", call_id, 1, "");
    phone.expect(&req, 200, Duration::from_secs(15))
}

/// sipp registration load through sipfront: `calls` REGISTERs of users PREFIX1..N at
/// `rate`/s from up to `sockets` client sockets (one sipfront flow each); each call holds
/// its socket for `hold_ms` after its 200, so concurrent calls share those sockets.
#[allow(clippy::too_many_arguments)]
fn start_load(
    dir: &TestDir,
    name: &str,
    prefix: &str,
    port: u16,
    target: SocketAddr,
    calls: u32,
    rate: u32,
    sockets: u32,
    hold_ms: u32,
) -> Sipp {
    let sf = scenario("register_load.xml");
    let (p, m, r, s, t, d) = (
        port.to_string(),
        calls.to_string(),
        rate.to_string(),
        sockets.to_string(),
        target.to_string(),
        hold_ms.to_string(),
    );
    Sipp::start(
        dir,
        name,
        &[
            "-sf",
            &sf,
            "-s",
            prefix,
            "-i",
            "127.0.0.1",
            "-p",
            &p,
            "-t",
            "un",
            "-max_socket",
            &s,
            "-r",
            &r,
            "-m",
            &m,
            "-d",
            &d,
            "-timeout",
            "60s",
            "-timeout_error",
            &t,
        ],
    )
}

/// Two Kamailio backends `a` and `b`; a phone registers (its home H is one of them);
/// sipp registration load runs; H is killed with SIGKILL (main process and workers) in
/// the middle of it, a second load starts right after the kill; H is restarted on the same
/// port; then the phone's traffic shows the failback policy.
fn failover_and_failback(policy: &str, base: u16, relay_ports: &str) {
    const LOAD_CALLS: u32 = 300;
    const AFTER_CALLS: u32 = 100;
    let dir = TestDir::new(&format!("failover-{policy}"));
    let t0 = Instant::now();
    let sip = base;
    let kam_ports = [base + 1, base + 2];
    let names = ["a", "b"];
    let defines: Vec<String> = vec![
        "VIP_IP=127.0.0.1".into(),
        format!("VIP_PORT={sip}"),
        "RELAY_IP=127.0.0.1".into(),
    ];
    let mut kams = [
        Some(Kamailio::start(&dir, "kam-a", kam_ports[0], &defines)),
        Some(Kamailio::start(&dir, "kam-b", kam_ports[1], &defines)),
    ];
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new(
            &local(sip).to_string(),
            relay_ports,
            &local(base + 3).to_string(),
        )
        .backend("a", &local(kam_ports[0]).to_string())
        .backend("b", &local(kam_ports[1]).to_string())
        .extra(&format!(
            "[health]\ninterval = \"500ms\"\ntimeout = \"400ms\"\nrise = 2\nfall = 2\n\n\
             [affinity]\nfailback = \"{policy}\"\n"
        )),
    );
    let admin = front.cfg.admin;

    // The phone's flow: its home is the backend that will be killed.
    let phone = SipClient::bind(local(base + 5), front.cfg.sip, "phone");
    register(&phone, 1);
    let home = flow_backend(admin, phone.local).expect("a flow for the phone");
    let h = names
        .iter()
        .position(|n| *n == home)
        .expect("home is a or b");
    let s = 1 - h;
    let (home, surv) = (names[h], names[s]);
    assert_eq!(
        received_at(kams[h].as_ref().unwrap(), "phone").len(),
        1,
        "the phone registered at its home {home}"
    );
    let flows = get_json(admin, &format!("/api/v1/flows?client={}", phone.local));
    let registered = flows["flows"][0]["registered_secs"].as_f64();
    assert!(
        registered.is_some_and(|r| r > 250.0),
        "the 200 to REGISTER (Expires 300) sets the flow's lifetime: {flows}"
    );

    // Load through sipfront; kill the phone's home in the middle of it.
    let mut before = start_load(
        &dir,
        "load-before",
        "load",
        base + 6,
        front.cfg.sip,
        LOAD_CALLS,
        40,
        40,
        2000,
    );
    let ok = wait_until(Duration::from_secs(40), || {
        before.proc.assert_running();
        before.stats().successful() >= 80
    });
    assert!(ok, "load did not get going: {:?}", before.stats());
    signal_group(&kams[h].as_ref().unwrap().proc, "KILL");
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || !udp_port_bound(kam_ports[h])),
        "kamailio {home}'s port {} still bound after kill -9 of its process group",
        kam_ports[h]
    );
    // Calls that start after the kill.
    let mut after = start_load(
        &dir,
        "load-after",
        "after",
        base + 7,
        front.cfg.sip,
        AFTER_CALLS,
        50,
        20,
        1000,
    );
    let down = front.wait_metric(
        "sipfront_backend_up",
        &[("backend", home)],
        Duration::from_secs(15),
        |v| v == 0.0,
    );
    assert_eq!(down, 0.0, "killed backend {home} not reported down");
    let detected = killed.elapsed();

    let r_before = before.wait(Duration::from_secs(120));
    let r_after = after.wait(Duration::from_secs(120));
    // Every call that started after the kill completes: the dead backend's flows move to
    // the survivor as soon as sipfront knows it is dead, and a REGISTER whose first copy
    // was still sent to the dead one (before the ICMP came back) completes on its
    // retransmission 500 ms later.
    assert!(r_after.ok(), "{}", after.describe(&r_after));
    assert_eq!(
        r_after.stats.successful(),
        u64::from(AFTER_CALLS),
        "{}",
        after.describe(&r_after)
    );
    assert_eq!(r_after.stats.failed(), 0, "{}", after.describe(&r_after));
    // The same holds for the calls in flight at the kill: the dead backend never answered
    // them, so the UAC retransmits (500 ms, 1 s, 2 s, 4 s...), and the retransmission goes
    // to the survivor once the dead backend is down (detected well within that window).
    assert!(r_before.ok(), "{}", before.describe(&r_before));
    assert_eq!(
        r_before.stats.successful(),
        u64::from(LOAD_CALLS),
        "{}",
        before.describe(&r_before)
    );
    // ...on the survivor, by its own account: each of those users is registered there, with
    // a relay port of sipfront as its path back.
    let missing: Vec<u32> = (1..=AFTER_CALLS)
        .filter(|n| {
            let r = received_at(kams[s].as_ref().unwrap(), &format!("after{n}"));
            r.len() != 1 || !r[0].starts_with("sip:127.0.0.1:")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "users after1..after{AFTER_CALLS} not registered at the survivor {surv}: {missing:?}"
    );

    // Reported down once, by the ICMP fast path; the survivor never.
    let text = front.metrics();
    assert_eq!(
        transitions(&text, home, "down", Some("icmp")),
        1.0,
        "{home} down by icmp: {:#?}",
        transition_lines(&text)
    );
    assert_eq!(
        transitions(&text, home, "down", None),
        1.0,
        "{:#?}",
        transition_lines(&text)
    );
    assert_eq!(
        transitions(&text, surv, "down", None),
        0.0,
        "{:#?}",
        transition_lines(&text)
    );
    let lines = log_lines(
        &front.proc,
        &[
            "backend down",
            &format!("backend={home} "),
            "reason=\"icmp\"",
        ],
    );
    assert_eq!(
        lines.len(),
        1,
        "one log line for the transition: {lines:#?}"
    );
    wait_backend_status(admin, home, "state", "down");

    // The phone, re-registering, is served by the survivor.
    register(&phone, 2);
    assert_eq!(
        flow_backend(admin, phone.local).as_deref(),
        Some(surv),
        "phone's flow after its home died"
    );
    assert_eq!(
        received_at(kams[s].as_ref().unwrap(), "phone").len(),
        1,
        "phone registered at the survivor {surv}"
    );

    // Restart the killed backend on the same port: it comes back up.
    kams[h] = None;
    kams[h] = Some(Kamailio::start(
        &dir,
        &format!("kam-{home}-restarted"),
        kam_ports[h],
        &defines,
    ));
    let up = front.wait_metric(
        "sipfront_backend_up",
        &[("backend", home)],
        Duration::from_secs(20),
        |v| v == 1.0,
    );
    assert_eq!(up, 1.0, "restarted backend {home} not reported up");
    let text = front.metrics();
    // Up at start (first probe) and after the restart.
    assert_eq!(
        transitions(&text, home, "up", Some("probe")),
        2.0,
        "{:#?}",
        transition_lines(&text)
    );
    let lines = log_lines(
        &front.proc,
        &[
            "backend up",
            &format!("backend={home} "),
            "reason=\"probe\"",
        ],
    );
    assert_eq!(lines.len(), 2, "log lines for {home} up: {lines:#?}");
    wait_backend_status(admin, home, "state", "up");

    // Failback, seen from the phone: an OPTIONS, then a REGISTER.
    let quiet = |front: &mut Sipfront| {
        front.settled_metrics(Duration::from_millis(600), Duration::from_secs(10))
    };
    let m0 = quiet(&mut front);
    options(&phone, "phone-options-1");
    let m1 = quiet(&mut front);
    let sent = |a: &str, b: &str, backend: &str| {
        datagrams(b, "to_backend", backend) - datagrams(a, "to_backend", backend)
    };
    let (to_home, to_surv) = (sent(&m0, &m1, home), sent(&m0, &m1, surv));
    let expect = if policy == "immediate" { home } else { surv };
    assert_eq!(
        flow_backend(admin, phone.local).as_deref(),
        Some(expect),
        "failback={policy}: the phone's flow after an OPTIONS"
    );
    assert!(
        to_home + to_surv >= 1.0 && (if expect == home { to_surv } else { to_home }) == 0.0,
        "failback={policy}: the OPTIONS should go to {expect}: to {home} {to_home}, to {surv} {to_surv}"
    );

    register(&phone, 3);
    let m2 = quiet(&mut front);
    let (to_home, to_surv) = (sent(&m1, &m2, home), sent(&m1, &m2, surv));
    let expect = if policy == "never" { surv } else { home };
    assert_eq!(
        flow_backend(admin, phone.local).as_deref(),
        Some(expect),
        "failback={policy}: the phone's flow after a REGISTER"
    );
    assert!(
        to_home + to_surv >= 1.0 && (if expect == home { to_surv } else { to_home }) == 0.0,
        "failback={policy}: the REGISTER should go to {expect}: to {home} {to_home}, to {surv} {to_surv}"
    );
    // The restarted home starts with an empty location table: the phone is there only if
    // its REGISTER went there.
    let at_home = received_at(kams[h].as_ref().unwrap(), "phone");
    assert_eq!(
        at_home.len(),
        usize::from(expect == home),
        "failback={policy}: phone registered at restarted {home}: {at_home:?}"
    );
    front.assert_running();
    eprintln!(
        "failback={policy}: home {home} killed, down after {detected:?}; {} + {} calls ok; \
         test took {:?}",
        r_before.stats.successful(),
        r_after.stats.successful(),
        t0.elapsed()
    );
}

#[test]
fn kamailio_killed_failover_then_failback_never() {
    failover_and_failback("never", 17000, "18000-18199");
}

#[test]
fn kamailio_killed_failover_then_failback_on_register() {
    failover_and_failback("on-register", 17020, "18200-18399");
}

#[test]
fn kamailio_killed_failover_then_failback_immediate() {
    failover_and_failback("immediate", 17040, "18400-18599");
}

// ---------------------------------------------------------------------------------------------
// Silent backends
// ---------------------------------------------------------------------------------------------

/// A backend that answers sipfront's OPTIONS probes with 200 (or another code) until told
/// to go silent. It keeps reading its socket, so the port stays open and no ICMP error
/// comes back: only probe timeouts can tell. Records every probe it got and whether it
/// answered it.
struct SilentBackend {
    /// Status code of the answers; 0: silent.
    answer: Arc<AtomicU16>,
    probes: Arc<Mutex<Vec<bool>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentBackend {
    fn start(port: u16, relay_ports: RangeInclusive<u16>) -> SilentBackend {
        let sock = udp(port, Duration::from_millis(50));
        let answer = Arc::new(AtomicU16::new(200));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, p, st) = (answer.clone(), probes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Some((d, from)) = recv(&sock) else {
                    continue;
                };
                if !d.starts_with(b"OPTIONS ") || relay_ports.contains(&from.port()) {
                    continue; // relayed client traffic: not a probe
                }
                let code = a.load(Ordering::SeqCst);
                p.lock().unwrap().push(code != 0);
                if code != 0 {
                    let _ = sock.send_to(&sip_reply_to(&d, &format!("{code} Whatever")), from);
                }
            }
        });
        SilentBackend {
            answer,
            probes,
            stop,
            thread: Some(thread),
        }
    }

    /// Starts or stops answering; returns the number of probes seen so far (a mark).
    fn set_answering(&self, on: bool) -> usize {
        self.set_code(if on { 200 } else { 0 })
    }

    /// Answers with `code` from now on (0: silent); returns a mark like `set_answering`.
    fn set_code(&self, code: u16) -> usize {
        let p = self.probes.lock().unwrap();
        self.answer.store(code, Ordering::SeqCst);
        p.len()
    }

    /// Probes since `mark` that were (`answered`) or were not answered.
    fn since(&self, mark: usize, answered: bool) -> usize {
        self.probes.lock().unwrap()[mark..]
            .iter()
            .filter(|a| **a == answered)
            .count()
    }
}

impl Drop for SilentBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A backend that stops answering (its socket open, so no ICMP) is marked down with
/// reason timeout, and only after `fall` probes went unanswered; its flows move to the
/// other backend; when it answers again it comes back after `rise` answered probes.
#[test]
fn silent_backend_down_after_fall_timeouts_and_back_after_rise() {
    const FALL: usize = 3;
    const RISE: usize = 2;
    let dir = TestDir::new("silent");
    let t0 = Instant::now();
    let relay = 18600..=18649;
    let silent = SilentBackend::start(17061, relay.clone());
    let other = FakeBackend::start(17062, relay.clone());
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:17060", "18600-18649", "127.0.0.1:17063")
            .backend("s", "127.0.0.1:17061")
            .backend("o", "127.0.0.1:17062")
            .extra(&format!(
                "[health]\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrise = {RISE}\nfall = {FALL}\n"
            )),
    );
    let admin = front.cfg.admin;

    // Client flows, some of them homed on `s`.
    let clients: Vec<SipClient> = (17064..17080)
        .map(|p| SipClient::bind(local(p), front.cfg.sip, "c"))
        .collect();
    for c in &clients {
        c.send(&c.request("OPTIONS", &format!("first-{}", c.local.port()), 1, ""));
    }
    let mut homes = Vec::new();
    for c in &clients {
        let mut home = None;
        wait_until(Duration::from_secs(5), || {
            home = flow_backend(admin, c.local);
            home.is_some()
        });
        homes.push(home.expect("flow for client"));
    }
    let on_s: Vec<&SipClient> = clients
        .iter()
        .zip(&homes)
        .filter(|(_, h)| *h == "s")
        .map(|(c, _)| c)
        .collect();
    assert!(!on_s.is_empty(), "no client flow homed on s: {homes:?}");
    while other.recv(Duration::from_millis(200)).is_some() {}

    // Silence: sipfront's view must not change before `fall` probes went unanswered.
    let mark = silent.set_answering(false);
    let silenced = Instant::now();
    let mut unanswered_at_down = None;
    let mut unanswered_seen_up = 0;
    while silenced.elapsed() < Duration::from_secs(20) {
        // Metric first, then the count: a down verdict implies its probes were received.
        let up = front.metric("sipfront_backend_up", &[("backend", "s")]);
        let unanswered = silent.since(mark, false);
        if up == 0.0 {
            unanswered_at_down = Some(unanswered);
            break;
        }
        unanswered_seen_up = unanswered_seen_up.max(unanswered);
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(unanswered) = unanswered_at_down else {
        panic!(
            "silent backend not marked down within 20 s ({} probes unanswered)",
            silent.since(mark, false)
        );
    };
    let down_after = silenced.elapsed();
    assert!(
        unanswered >= FALL,
        "marked down after only {unanswered} unanswered probes (fall = {FALL})"
    );
    let text = front.metrics();
    assert_eq!(
        transitions(&text, "s", "down", Some("timeout")),
        1.0,
        "{:#?}",
        transition_lines(&text)
    );
    assert_eq!(
        transitions(&text, "s", "down", None),
        1.0,
        "no other down transition (no ICMP from an open port): {:#?}",
        transition_lines(&text)
    );
    let lines = log_lines(
        &front.proc,
        &["backend down", "backend=s ", "reason=\"timeout\""],
    );
    assert_eq!(lines.len(), 1, "{lines:#?}");
    wait_backend_status(admin, "s", "state", "down");
    wait_backend_status(admin, "o", "state", "up");

    // Its flows now go to `o`.
    for c in &on_s {
        let call_id = format!("moved-{}", c.local.port());
        c.send(&c.request("OPTIONS", &call_id, 1, ""));
        let mut got = false;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !got && Instant::now() < deadline {
            if let Some((d, _)) = other.recv(Duration::from_millis(100)) {
                got = sip_header(&String::from_utf8_lossy(&d), "Call-ID").as_deref()
                    == Some(call_id.as_str());
            }
        }
        assert!(got, "{}'s OPTIONS did not reach o", c.local);
        assert_eq!(flow_backend(admin, c.local).as_deref(), Some("o"));
    }

    // Answering again: up after `rise` answered probes, not before.
    let mark = silent.set_answering(true);
    let mut answered_at_up = None;
    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_secs(20) {
        let up = front.metric("sipfront_backend_up", &[("backend", "s")]);
        let answered = silent.since(mark, true);
        if up == 1.0 {
            answered_at_up = Some(answered);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let answered = answered_at_up.expect("backend s not back up within 20 s");
    assert!(
        answered >= RISE,
        "up after only {answered} answered probes (rise = {RISE})"
    );
    let text = front.metrics();
    assert_eq!(
        transitions(&text, "s", "up", Some("probe")),
        2.0,
        "{:#?}",
        transition_lines(&text)
    );
    assert!(
        metric(
            &text,
            "sipfront_probe_rtt_seconds_count",
            &[("backend", "s")]
        ) > 0.0,
        "probe RTT histogram for s"
    );
    let st = wait_backend_status(admin, "s", "state", "up");
    assert!(
        st["last_rtt_ms"].is_number(),
        "status shows the last probe RTT: {st}"
    );
    front.assert_running();
    eprintln!(
        "silent backend: down after {down_after:?} and {unanswered} unanswered probes \
         (up seen with up to {unanswered_seen_up}); up again after {answered} answered; \
         test took {:?}",
        t0.elapsed()
    );
}

/// Sends SIGCONT to a stopped process group when dropped (also when the test fails).
struct ContinueOnDrop(i64);

impl Drop for ContinueOnDrop {
    fn drop(&mut self) {
        send_signal(-self.0, "CONT");
    }
}

/// A hung Kamailio (SIGSTOP to its main process and workers: its socket stays bound, so no
/// ICMP) is marked down by probe timeouts, and comes back after SIGCONT.
#[test]
fn stopped_kamailio_down_by_timeout_and_back_after_sigcont() {
    let dir = TestDir::new("sigstop");
    let t0 = Instant::now();
    let kam = Kamailio::start(
        &dir,
        "kam",
        17081,
        &[
            "VIP_IP=127.0.0.1".into(),
            "VIP_PORT=17080".into(),
            "RELAY_IP=127.0.0.1".into(),
        ],
    );
    let _other = FakeBackend::start(17082, 18650..=18699);
    // Draining needs the admin token (a token-less admin is read-only); the file must be 0600.
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, "sigstop-token-0123456789\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let auth = [("Authorization", "Bearer sigstop-token-0123456789")];
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:17080", "18650-18699", "127.0.0.1:17083")
            .backend("kam", "127.0.0.1:17081")
            .backend("o", "127.0.0.1:17082")
            .extra(&format!(
                "token_file = \"{}\"\n\n\
                 [health]\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrise = 2\nfall = 2\n",
                token_file.display()
            )),
    );
    let admin = front.cfg.admin;
    let phone = SipClient::bind(local(17085), front.cfg.sip, "phone");

    let _cont = ContinueOnDrop(i64::from(kam.proc.pid()));
    signal_group(&kam.proc, "STOP");
    let stopped = Instant::now();
    let down = front.wait_metric(
        "sipfront_backend_up",
        &[("backend", "kam")],
        Duration::from_secs(20),
        |v| v == 0.0,
    );
    assert_eq!(down, 0.0, "stopped Kamailio not marked down");
    let down_after = stopped.elapsed();
    assert!(
        udp_port_bound(17081),
        "the stopped Kamailio still holds its port"
    );
    let text = front.metrics();
    assert_eq!(
        transitions(&text, "kam", "down", Some("timeout")),
        1.0,
        "{:#?}",
        transition_lines(&text)
    );
    assert_eq!(
        transitions(&text, "kam", "down", None),
        1.0,
        "{:#?}",
        transition_lines(&text)
    );
    assert_eq!(
        log_lines(
            &front.proc,
            &["backend down", "backend=kam ", "reason=\"timeout\""]
        )
        .len(),
        1
    );

    signal_group(&kam.proc, "CONT");
    let up = front.wait_metric(
        "sipfront_backend_up",
        &[("backend", "kam")],
        Duration::from_secs(20),
        |v| v == 1.0,
    );
    assert_eq!(up, 1.0, "Kamailio not back up after SIGCONT");
    let text = front.metrics();
    assert_eq!(
        transitions(&text, "kam", "up", Some("probe")),
        2.0,
        "{:#?}",
        transition_lines(&text)
    );
    // It serves again: a new client whose home is Kamailio registers there. Use the only
    // backend that answers SIP for real: drain `o` so the phone's flow is homed on kam.
    let (code, body) = http_request(admin, "POST", "/api/v1/backends/o/drain", &auth).unwrap();
    assert_eq!(code, 200, "drain o with the token: {body}");
    register(&phone, 1);
    let (code, body) = http_request(
        admin,
        "GET",
        &format!("/api/v1/flows?client={}&limit=10", phone.local),
        &auth,
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["flows"][0]["backend"], "kam", "{v}");
    assert_eq!(v["flows"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(received_at(&kam, "phone").len(), 1);
    front.assert_running();
    eprintln!(
        "stopped kamailio: down after {down_after:?}; test took {:?}",
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// No backend up
// ---------------------------------------------------------------------------------------------

/// Receives the next datagram on `c`'s socket within `timeout`.
fn next_datagram(c: &SipClient, timeout: Duration) -> Option<(String, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some((d, from)) = recv(&c.sock) {
            return Some((String::from_utf8_lossy(&d).into_owned(), from));
        }
    }
    None
}

/// Waits until `backend` receives a relayed datagram with this Call-ID.
fn backend_gets(backend: &FakeBackend, call_id: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some((d, _)) = backend.recv(Duration::from_millis(100))
            && sip_header(&String::from_utf8_lossy(&d), "Call-ID").as_deref() == Some(call_id)
        {
            return true;
        }
    }
    false
}

/// With every backend down, sipfront answers requests itself: a stateless
/// `503 Service Unavailable` with `Retry-After` and the request's Via/From/To/Call-ID/CSeq,
/// from its public address; nothing for an ACK or a response. `/ready` says 503 meanwhile.
/// When a backend returns, requests flow to it again.
#[test]
fn all_backends_down_requests_get_503_from_sipfront() {
    let dir = TestDir::new("all-down");
    let relay = 18700..=18749;
    let a = FakeBackend::start(17101, relay.clone());
    let b = FakeBackend::start(17102, relay.clone());
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:17100", "18700-18749", "127.0.0.1:17103")
            .backend("a", "127.0.0.1:17101")
            .backend("b", "127.0.0.1:17102")
            .extra(
                "[health]\ninterval = \"300ms\"\ntimeout = \"250ms\"\nrise = 2\nfall = 2\n\
                 retry_after = 17\n",
            ),
    );
    let admin = front.cfg.admin;
    let sip = front.cfg.sip;
    assert_eq!(
        http_get(admin, "/ready").unwrap().0,
        200,
        "ready with backends up"
    );

    // While the backends are up, the client's REGISTER is relayed.
    let client = SipClient::bind(local(17105), sip, "alice");
    client.send(&client.request("REGISTER", "reg-1", 1, "Expires: 300\r\n"));
    let relayed = {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = false;
        while !got && Instant::now() < deadline {
            got = a.recv(Duration::from_millis(50)).is_some()
                || b.recv(Duration::from_millis(50)).is_some();
        }
        got
    };
    assert!(relayed, "REGISTER not relayed while backends are up");

    drop(a);
    drop(b);
    let all_down = wait_until(Duration::from_secs(15), || {
        let t = front.metrics();
        metric(&t, "sipfront_backend_up", &[("backend", "a")]) == 0.0
            && metric(&t, "sipfront_backend_up", &[("backend", "b")]) == 0.0
    });
    assert!(all_down, "backends not down after their sockets closed");
    let mut ready = 0;
    wait_until(Duration::from_secs(5), || {
        ready = http_get(admin, "/ready").map(|r| r.0).unwrap_or(0);
        ready == 503
    });
    assert_eq!(ready, 503, "/ready with no backend up");
    assert_eq!(
        front.metric("sipfront_local_replies_total", &[("code", "503")]),
        0.0
    );

    // A REGISTER from the existing flow: 503 from sipfront's address.
    let req = client.request("REGISTER", "reg-2", 2, "Expires: 300\r\n");
    client.send(&req);
    let (resp, from) = next_datagram(&client, Duration::from_secs(5)).expect("no 503 to REGISTER");
    assert_eq!(from, sip, "the 503 comes from sipfront's public address");
    assert!(
        resp.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
        "response:\n{resp}"
    );
    let reqs = String::from_utf8_lossy(&req).into_owned();
    for h in ["Via", "From", "Call-ID", "CSeq"] {
        assert_eq!(
            sip_header(&resp, h),
            sip_header(&reqs, h),
            "{h} copied from the request:\n{resp}"
        );
    }
    let to = sip_header(&resp, "To").expect("To in 503");
    assert!(
        to.starts_with(&sip_header(&reqs, "To").unwrap()) && to.contains(";tag="),
        "To copied with a tag added: {to}"
    );
    assert_eq!(sip_header(&resp, "Retry-After").as_deref(), Some("17"));

    // From a new client: an ACK and a response get nothing; the OPTIONS sent after them
    // gets its 503, and it is the first thing that comes back.
    let c2 = SipClient::bind(local(17106), sip, "bob");
    c2.send(&c2.request("ACK", "ack-1", 1, ""));
    c2.send(&sip_reply_to(
        &c2.request("INVITE", "resp-1", 1, ""),
        "200 OK",
    ));
    c2.send(&c2.request("OPTIONS", "opt-1", 1, ""));
    let (resp, from) = next_datagram(&c2, Duration::from_secs(5)).expect("no 503 to OPTIONS");
    assert_eq!(from, sip);
    assert_eq!(sip_status(&resp), Some(503), "{resp}");
    assert_eq!(
        sip_header(&resp, "Call-ID").as_deref(),
        Some("opt-1"),
        "the first reply answers the OPTIONS, not the ACK or the response:\n{resp}"
    );
    assert_eq!(sip_header(&resp, "CSeq").as_deref(), Some("1 OPTIONS"));

    let replies = front.wait_metric(
        "sipfront_local_replies_total",
        &[("code", "503")],
        Duration::from_secs(5),
        |v| v >= 2.0,
    );
    let text = front.settled_metrics(Duration::from_millis(600), Duration::from_secs(10));
    assert_eq!(replies, 2.0);
    assert_eq!(
        metric(&text, "sipfront_local_replies_total", &[("code", "503")]),
        2.0,
        "503s counted: REGISTER and OPTIONS only"
    );
    assert_eq!(
        metric(&text, "sipfront_drops_total", &[("reason", "no_backend")]),
        4.0,
        "REGISTER, ACK, response and OPTIONS counted as no_backend: {:?}",
        nonzero_drops(&text)
    );
    assert_eq!(get_json(admin, "/api/v1/status")["replies_503"], 2);
    assert_eq!(get_json(admin, "/api/v1/status")["ready"], false);

    // A backend returns: requests are relayed again, no more 503s.
    let a = FakeBackend::start(17101, relay.clone());
    let up = front.wait_metric(
        "sipfront_backend_up",
        &[("backend", "a")],
        Duration::from_secs(15),
        |v| v == 1.0,
    );
    assert_eq!(up, 1.0, "restarted backend a not up");
    assert!(wait_until(Duration::from_secs(5), || http_get(
        admin, "/ready"
    )
    .is_ok_and(|r| r.0 == 200)));
    client.send(&client.request("REGISTER", "reg-3", 3, "Expires: 300\r\n"));
    assert!(
        backend_gets(&a, "reg-3", Duration::from_secs(5)),
        "REGISTER not relayed to the returning backend"
    );
    let text = front.settled_metrics(Duration::from_millis(600), Duration::from_secs(10));
    assert_eq!(
        metric(&text, "sipfront_local_replies_total", &[("code", "503")]),
        2.0
    );
    front.assert_running();
}

/// One backend dies (its port closes: ICMP port unreachable for every probe to it). The
/// other backends keep answering, and must stay up: probes to them are unaffected by the
/// errors that the dead one's probes bring back. Checked over many probe rounds (counted
/// at the healthy backends), not over a time span.
#[test]
fn one_dead_backend_does_not_take_the_others_down() {
    const ROUNDS: u64 = 12;
    let dir = TestDir::new("one-dead");
    let relay = 18750..=18799;
    let dead = FakeBackend::start(17121, relay.clone());
    let b = FakeBackend::start(17122, relay.clone());
    let c = FakeBackend::start(17123, relay.clone());
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:17120", "18750-18799", "127.0.0.1:17124")
            .backend("dead", "127.0.0.1:17121")
            .backend("b", "127.0.0.1:17122")
            .backend("c", "127.0.0.1:17123")
            .extra("[health]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 2\nfall = 2\n"),
    );
    drop(dead);
    let down = front.wait_metric(
        "sipfront_backend_up",
        &[("backend", "dead")],
        Duration::from_secs(15),
        |v| v == 0.0,
    );
    assert_eq!(down, 0.0, "closed backend not marked down");
    // ROUNDS more probes answered by both healthy backends, and neither ever down.
    let (b0, c0) = (b.probes(), c.probes());
    let mut seen = String::new();
    let ok = wait_until(Duration::from_secs(30), || {
        let t = front.metrics();
        let up = |n| metric(&t, "sipfront_backend_up", &[("backend", n)]);
        assert!(
            up("b") == 1.0 && up("c") == 1.0,
            "a healthy backend was marked down after another one died: {:#?}\n{:#?}",
            transition_lines(&t),
            log_lines(&front.proc, &["backend down"])
        );
        seen = format!("b +{}, c +{}", b.probes() - b0, c.probes() - c0);
        b.probes() >= b0 + ROUNDS && c.probes() >= c0 + ROUNDS
    });
    assert!(
        ok,
        "healthy backends answered too few probes in 30 s ({seen}): probes to them are lost"
    );
    let text = front.metrics();
    for n in ["b", "c"] {
        assert_eq!(
            transitions(&text, n, "down", None),
            0.0,
            "{:#?}",
            transition_lines(&text)
        );
    }
    // The closed port answers every probe with ICMP port unreachable.
    assert_eq!(
        transitions(&text, "dead", "down", Some("icmp")),
        1.0,
        "{:#?}",
        transition_lines(&text)
    );
    front.assert_running();
}

/// The ICMP fast path on relayed traffic: with probes far apart (interval 10 s), a backend
/// whose process is gone is found out by the first client datagram relayed to it (the ICMP
/// port unreachable it brings back triggers a probe at once), not by the next periodic
/// probe; the client's retransmission then reaches the other backend.
#[test]
fn icmp_on_relayed_datagram_finds_a_dead_backend_before_the_next_probe() {
    let dir = TestDir::new("relay-icmp");
    let relay = 19200..=19249;
    let a = FakeBackend::start(17141, relay.clone());
    let b = FakeBackend::start(17142, relay.clone());
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig::new("127.0.0.1:17140", "19200-19249", "127.0.0.1:17143")
            .backend("a", "127.0.0.1:17141")
            .backend("b", "127.0.0.1:17142")
            .extra("[health]\ninterval = \"20s\"\ntimeout = \"1s\"\nrise = 2\nfall = 2\n"),
    );
    // The first probes went out at start; the next ones are due 20 s later (an early probe
    // may go 5 s after the first, a quarter interval).
    let started = Instant::now();
    let admin = front.cfg.admin;
    // A client homed on `a`.
    let client = (17145..17160)
        .map(|p| SipClient::bind(local(p), front.cfg.sip, "c"))
        .find(|c| {
            c.send(&c.request("OPTIONS", &format!("home-{}", c.local.port()), 1, ""));
            let mut home = None;
            wait_until(Duration::from_secs(5), || {
                home = flow_backend(admin, c.local);
                home.is_some()
            });
            home.as_deref() == Some("a")
        })
        .expect("one of 15 clients homed on a");
    assert_eq!(a.probes(), 1, "only the probe at start so far");
    drop(a);
    // A datagram bounces off the dead backend: that alone must give it away. The
    // client retransmits like a SIP UAC (T1 = 500 ms) because ICMP is best effort: the
    // kernel's global ICMP rate limit (net.ipv4.icmp_msgs_per_sec) can swallow one when
    // other tests in this binary make ICMP storms at the same time.
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
    let text = front.metrics();
    assert!(
        started.elapsed() < Duration::from_secs(18),
        "test too slow to tell the fast path from the periodic probe; rerun"
    );
    assert_eq!(
        down,
        0.0,
        "dead backend not found out within 8 s of a datagram bouncing off it (next periodic \
         probe due 20 s after start): {:#?}",
        transition_lines(&text)
    );
    assert_eq!(
        transitions(&text, "a", "down", Some("icmp")),
        1.0,
        "{:#?}",
        transition_lines(&text)
    );
    // The client's retransmission goes to `b`.
    client.send(&req);
    assert!(
        backend_gets(&b, "after-death", Duration::from_secs(5)),
        "the client's retransmission never reached b"
    );
    assert_eq!(flow_backend(admin, client.local).as_deref(), Some("b"));
    front.assert_running();
}

/// Which probe replies count as alive is configurable (`alive_codes`), and reloadable: by
/// default any final response is alive (a 404 to OPTIONS is a live SIP server); with
/// `alive_codes = ["200-299"]`, loaded by SIGHUP, a backend answering 404 goes down with
/// reason reply_code, and comes back once it answers 200 again.
#[test]
fn reply_code_policy_reloaded_by_sighup() {
    let dir = TestDir::new("reply-code");
    let relay = 19250..=19299;
    let a = SilentBackend::start(17161, relay.clone());
    a.set_code(404);
    let _b = FakeBackend::start(17162, relay.clone());
    let health = "[health]\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 2\nfall = 2\n";
    let cfg = SipfrontConfig::new("127.0.0.1:17160", "19250-19299", "127.0.0.1:17163")
        .backend("a", "127.0.0.1:17161")
        .backend("b", "127.0.0.1:17162");
    let mut front = Sipfront::start(&dir, cfg.clone().extra(health));
    let admin = front.cfg.admin;
    // A 404 counts as alive by default: still up after several 404s.
    let mark = a.set_code(404);
    assert!(wait_until(Duration::from_secs(10), || a.since(mark, true) >= 4));
    assert_eq!(
        front.metric("sipfront_backend_up", &[("backend", "a")]),
        1.0
    );

    let strict = cfg.extra(&format!("{health}alive_codes = [\"200-299\"]\n"));
    std::fs::write(&front.config_path, strict.toml()).unwrap();
    front.proc.signal("HUP");
    let down = front.wait_metric(
        "sipfront_backend_up",
        &[("backend", "a")],
        Duration::from_secs(15),
        |v| v == 0.0,
    );
    assert_eq!(
        down, 0.0,
        "a answering 404 with alive_codes 200-299 not marked down"
    );
    let text = front.metrics();
    assert_eq!(
        transitions(&text, "a", "down", Some("reply_code")),
        1.0,
        "{:#?}",
        transition_lines(&text)
    );
    let lines = log_lines(
        &front.proc,
        &["backend down", "backend=a ", "reason=\"reply_code\"", "404"],
    );
    assert_eq!(lines.len(), 1, "log line names the code: {lines:#?}");
    assert_eq!(log_lines(&front.proc, &["config reloaded"]).len(), 1);
    wait_backend_status(admin, "a", "state", "down");
    assert_eq!(
        front.metric("sipfront_backend_up", &[("backend", "b")]),
        1.0
    );

    let mark = a.set_code(200);
    let mut answered_at_up = 0;
    let up = wait_until(Duration::from_secs(15), || {
        let up = front.metric("sipfront_backend_up", &[("backend", "a")]) == 1.0;
        answered_at_up = a.since(mark, true);
        up
    });
    assert!(up, "a answering 200 again not back up");
    assert!(
        answered_at_up >= 2,
        "up after {answered_at_up} answers (rise 2)"
    );
    front.assert_running();
}
