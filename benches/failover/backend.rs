//! Bench 1 (issue 4): backend failover. In a namespace of its own (loopback only):
//! sipfront in front of two in-bench backends; one client socket sends a MESSAGE every
//! 2 ms, so one flow with one home backend; the home is killed (socket closed → ICMP, or
//! silent), and the bench measures the time from the kill to the first request that
//! reaches the survivor and to the first answer from the survivor at the client.
//! Between repetitions the dead backend comes back and the bench waits until sipfront has
//! it up again; the flow stays on the survivor (failback on-register, and the client
//! never registers), so the next kill hits the other backend.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::procs::Proc;
use crate::sipudp::{Backend, Client, Kill};
use crate::{Stats, rand_ms, sipfront_log};
use testkit::{Netns, find_metric, wait_until};

pub const INTERVAL_MS: u64 = 100;
pub const TIMEOUT_MS: u64 = 80;
pub const RISE: u32 = 2;
pub const FALL: u32 = 2;
const SEND_EVERY: Duration = Duration::from_millis(2);
const NAMES: [&str; 2] = ["a", "b"];

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
const LISTEN: u16 = 5060;
const BACKEND_PORTS: [u16; 2] = [5071, 5072];
const CLIENT: u16 = 5080;
const ADMIN: u16 = 9090;

/// One kill and what followed.
pub struct Sample {
    pub path: Kill,
    pub victim: String,
    /// Kill → sipfront's "backend down" log line for the victim (its detection).
    pub detected: Option<Duration>,
    /// Kill → first client request at the survivor.
    pub to_survivor: Duration,
    /// Kill → first answer from the survivor at the client.
    pub to_answer: Duration,
    /// Requests sent after the kill that were never answered.
    pub lost: u64,
    /// `sipfront_backend_transitions_total{to="down"}` increments of the victim, by reason.
    pub reasons: String,
    /// From the kill until 300 ms after the victim is up again: the survivor's down
    /// transitions, datagrams sipfront failed to send, and 503s it answered itself.
    pub survivor_downs: f64,
    pub send_failed: f64,
    pub local_503: f64,
}

pub struct Outcome {
    pub samples: Vec<Sample>,
    pub probes_answered: u64,
}

fn config() -> String {
    format!(
        "[listen]\nsip = [\"127.0.0.1:{LISTEN}\"]\nrelay = \"127.0.0.1\"\nrelay_ports = \"20000-20099\"\n\n\
         [[backend]]\nname = \"a\"\naddr = \"127.0.0.1:{}\"\n\n\
         [[backend]]\nname = \"b\"\naddr = \"127.0.0.1:{}\"\n\n\
         [health]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{TIMEOUT_MS}ms\"\nrise = {RISE}\nfall = {FALL}\n\n\
         [admin]\nlisten = \"127.0.0.1:{ADMIN}\"\n",
        BACKEND_PORTS[0], BACKEND_PORTS[1]
    )
}

pub fn probe_settings() -> String {
    format!(
        "[health] interval = {INTERVAL_MS} ms, timeout = {TIMEOUT_MS} ms, rise = {RISE}, \
         fall = {FALL} (silent-path goal: interval x fall + timeout = {} ms); client sends \
         every {} ms",
        INTERVAL_MS * FALL as u64 + TIMEOUT_MS,
        SEND_EVERY.as_millis()
    )
}

fn metrics(ns: &Netns) -> Option<String> {
    ns.enter(|| testkit::http_body(addr(ADMIN), "/metrics"))
}

fn down_by_reason(text: &str, backend: &str) -> Vec<(String, f64)> {
    ["icmp", "timeout", "reply_code", "probe"]
        .iter()
        .map(|r| {
            let v = find_metric(
                text,
                "sipfront_backend_transitions_total",
                &[("backend", backend), ("to", "down"), ("reason", r)],
            )
            .unwrap_or(0.0);
            (r.to_string(), v)
        })
        .collect()
}

fn all_up(ns: &Netns) -> bool {
    metrics(ns).is_some_and(|t| {
        NAMES
            .iter()
            .all(|b| find_metric(&t, "sipfront_backend_up", &[("backend", b)]) == Some(1.0))
    })
}

pub fn run(prefix: &str, reps: usize, dir: &Path) -> Outcome {
    let ns = Netns::create(format!("{prefix}lo"));
    let cfg = dir.join("backend-failover.toml");
    std::fs::write(&cfg, config()).expect("write config");
    let mut backends: Vec<Option<Backend>> = NAMES
        .iter()
        .zip(BACKEND_PORTS)
        .map(|(n, p)| Some(Backend::start(ns.path(), n, addr(p))))
        .collect();
    let mut cmd: Command = ns.command(env!("CARGO_BIN_EXE_sipfront"));
    cmd.arg("run")
        .arg("-c")
        .arg(&cfg)
        .env("RUST_LOG", sipfront_log());
    let mut sipfront = Proc::spawn(
        "sipfront",
        &mut cmd,
        &dir.join("backend-sipfront.log"),
        false,
    );
    let started = wait_until(Duration::from_secs(15), || {
        sipfront.assert_running();
        all_up(&ns)
    });
    assert!(started, "sipfront did not report both backends up in 15 s");
    let client = Client::start(ns.path(), addr(CLIENT), addr(LISTEN), SEND_EVERY);
    let mut samples = Vec::new();
    let mut probes_answered = 0;
    for path in [Kill::Icmp, Kill::Silent] {
        for rep in 1..=reps {
            // Both up and the flow settled on one home: the last 100 ms of answers all
            // from the same backend.
            let settled = wait_until(Duration::from_secs(10), || {
                sipfront.assert_running();
                let now = Instant::now();
                let recent = client.answers_since(now - Duration::from_millis(100));
                recent.len() >= 30 && recent.iter().all(|a| a.tag == recent[0].tag) && all_up(&ns)
            });
            assert!(settled, "{} rep {rep}: flow did not settle", path.name());
            // A random phase against the probe schedule.
            std::thread::sleep(Duration::from_millis(50 + rand_ms(INTERVAL_MS)));
            let home = client
                .answers_since(Instant::now() - Duration::from_millis(20))
                .last()
                .map(|a| a.tag.clone())
                .expect("recent answers");
            let (vi, si) = if home == NAMES[0] { (0, 1) } else { (1, 0) };
            let before = metrics(&ns).unwrap_or_default();
            let t_kill = backends[vi].as_ref().expect("victim").kill(path);
            let wall_kill = SystemTime::now() - t_kill.elapsed();
            let ok = wait_until(Duration::from_secs(3), || {
                client
                    .answers_since(t_kill)
                    .iter()
                    .any(|a| a.tag == NAMES[si])
            });
            assert!(
                ok,
                "{} rep {rep}: no answer from the survivor {} within 3 s of killing {home}",
                path.name(),
                NAMES[si]
            );
            std::thread::sleep(Duration::from_millis(100));
            let survivor = backends[si].as_ref().expect("survivor");
            let t_surv = survivor
                .first_request_since(t_kill)
                .expect("survivor got a request");
            let first = client
                .answers_since(t_kill)
                .into_iter()
                .find(|a| a.tag == NAMES[si])
                .expect("answer from the survivor");
            let lost = client.unanswered(client.first_seq_since(t_kill), first.seq);
            let after = metrics(&ns).unwrap_or_default();
            let reasons: Vec<String> = down_by_reason(&after, &home)
                .into_iter()
                .zip(down_by_reason(&before, &home))
                .filter(|((_, a), (_, b))| a > b)
                .map(|((r, a), (_, b))| format!("{r}+{}", a - b))
                .collect();
            // Bring the victim back (a fresh socket on the same port) and watch the
            // survivor until it is up again.
            let old = backends[vi].take().expect("victim");
            probes_answered += old.probes();
            drop(old);
            backends[vi] = Some(Backend::start(
                ns.path(),
                NAMES[vi],
                addr(BACKEND_PORTS[vi]),
            ));
            let back = wait_until(Duration::from_secs(10), || all_up(&ns));
            assert!(
                back,
                "{} rep {rep}: {home} not up again in 10 s",
                path.name()
            );
            std::thread::sleep(Duration::from_millis(300));
            let later = metrics(&ns).unwrap_or_default();
            let delta = |name: &str, labels: &[(&str, &str)]| {
                find_metric(&later, name, labels).unwrap_or(0.0)
                    - find_metric(&before, name, labels).unwrap_or(0.0)
            };
            let detected = down_logged(&sipfront.log, &home, wall_kill)
                .and_then(|t| t.duration_since(wall_kill).ok());
            let s = Sample {
                detected,
                survivor_downs: delta(
                    "sipfront_backend_transitions_total",
                    &[("backend", NAMES[si]), ("to", "down")],
                ),
                send_failed: delta("sipfront_drops_total", &[("reason", "send_failed")]),
                local_503: delta("sipfront_local_replies_total", &[("code", "503")]),
                path,
                victim: home.clone(),
                to_survivor: t_surv - t_kill,
                to_answer: first.at - t_kill,
                lost,
                reasons: if reasons.is_empty() {
                    "none".into()
                } else {
                    reasons.join(",")
                },
            };
            eprintln!(
                "  backend {} rep {rep}: killed {home}, down logged after {} ms, survivor got a request after {:.1} ms, \
                 client answered after {:.1} ms, {} lost, down reason {}; until {home} is \
                 back: survivor down {}x, send_failed {}, local 503 {}",
                path.name(),
                s.detected.map_or("?".into(), |d| format!("{:.1}", ms(d))),
                ms(s.to_survivor),
                ms(s.to_answer),
                s.lost,
                s.reasons,
                s.survivor_downs,
                s.send_failed,
                s.local_503
            );
            samples.push(s);
        }
    }
    drop(client);
    for b in backends.iter().flatten() {
        probes_answered += b.probes();
    }
    sipfront.assert_running();
    drop(sipfront);
    drop(backends);
    drop(ns);
    Outcome {
        samples,
        probes_answered,
    }
}

/// The time of sipfront's first "backend down" log line for `backend` at or after
/// `since` (the default tracing format: an RFC 3339 UTC timestamp first).
fn down_logged(log: &Path, backend: &str, since: SystemTime) -> Option<SystemTime> {
    let text = std::fs::read_to_string(log).ok()?;
    let want = format!("backend={backend} ");
    text.lines()
        .map(strip_ansi)
        .filter(|l| l.contains("backend down") && l.contains(&want))
        .filter_map(|l| parse_rfc3339(l.split_whitespace().next()?))
        .find(|t| *t + Duration::from_millis(1) >= since)
}

fn strip_ansi(l: &str) -> String {
    let mut out = String::with_capacity(l.len());
    let mut chars = l.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `2026-11-25T14:35:25.007743Z` → SystemTime.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: u32 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn table(o: &Outcome) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{}", probe_settings());
    let _ = writeln!(
        t,
        "{:<22} {:>4} {:>26} {:>29} {:>29} {:>10} {:>14} {:>11} {:>8}  victim down reasons",
        "path",
        "reps",
        "kill->down ms min/med/max",
        "kill->survivor ms min/med/max",
        "kill->answer ms min/med/max",
        "lost med",
        "survivor downs",
        "send_failed",
        "503s",
    );
    for path in [Kill::Icmp, Kill::Silent] {
        let ss: Vec<&Sample> = o.samples.iter().filter(|s| s.path == path).collect();
        if ss.is_empty() {
            continue;
        }
        let surv = Stats::of(ss.iter().map(|s| ms(s.to_survivor)).collect());
        let ans = Stats::of(ss.iter().map(|s| ms(s.to_answer)).collect());
        let lost = Stats::of(ss.iter().map(|s| s.lost as f64).collect());
        let det: Vec<f64> = ss.iter().filter_map(|s| s.detected).map(ms).collect();
        let detected = if det.is_empty() {
            "-".to_string()
        } else {
            Stats::of(det).fmt()
        };
        let mut reasons: Vec<String> = ss.iter().map(|s| s.reasons.clone()).collect();
        reasons.sort();
        reasons.dedup();
        let goal = match path {
            Kill::Icmp => 50,
            Kill::Silent => INTERVAL_MS * FALL as u64 + TIMEOUT_MS,
        };
        let sum = |f: fn(&Sample) -> f64| ss.iter().map(|s| f(s)).sum::<f64>();
        let _ = writeln!(
            t,
            "{:<22} {:>4} {:>26} {:>29} {:>29} {:>10} {:>14} {:>11} {:>8}  {} (goal < {goal} ms: {})",
            path.name(),
            ss.len(),
            detected,
            surv.fmt(),
            ans.fmt(),
            format!("{:.0}", lost.med),
            sum(|s| s.survivor_downs),
            sum(|s| s.send_failed),
            sum(|s| s.local_503),
            reasons.join(" "),
            if surv.max < goal as f64 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    t.push_str(
        "kill->down: the kill -> sipfront's \"backend down\" log line (wall clock). \
         kill->survivor: the kill -> first client request at the survivor; kill->answer: -> \
         first 200 from the survivor at the client. lost: requests sent after the kill never \
         answered (per kill). survivor downs, send_failed (sipfront_drops_total), 503s \
         (sipfront_local_replies_total): summed over the kills, each counted from the kill \
         until 300 ms after the victim is up again. victim down reasons: \
         sipfront_backend_transitions_total{to=\"down\"} of the killed backend.\n",
    );
    let _ = writeln!(
        t,
        "health probes the backends answered during the run: {}",
        o.probes_answered
    );
    let _ = writeln!(
        t,
        "per kill (ms to survivor / to answer): {}",
        o.samples
            .iter()
            .map(|s| format!(
                "{}:{}:{:.1}/{:.1}",
                if s.path == Kill::Icmp {
                    "icmp"
                } else {
                    "silent"
                },
                s.victim,
                ms(s.to_survivor),
                ms(s.to_answer)
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );
    t
}
