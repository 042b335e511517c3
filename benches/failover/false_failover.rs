//! False failover (issue 14): a sipfront VRRP pair at 10 ms adverts whose master is kept
//! busy, but alive, for a bounded time: its dataplane saturated by new flows into a full
//! flow table (INVITEs to the VIP from a fresh source port each, as fast as one thread
//! sends) and its admin API hammered (threads dumping `/api/v1/flows?limit=100000` in a
//! loop, and one opening connection after connection that each ask for the same dump and
//! never read it). The backup must not take over: counted as its
//! `sipfront_vrrp_transitions_total{to="master"}` and its adverts on the wire. Reported next
//! to the real-failover gap at 10 ms adverts (SIGKILL of the master) measured in the same
//! run by `vrrp::run`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Stats;
use crate::capture::{Capture, Frame};
use crate::procs::Cpu;
use crate::sipudp::Client;
use crate::vrrp::{self, Case, HostCfg, Run, Topo};

pub const ADVERT_MS: u64 = 10;
const FLOW_TABLE: &str = "20000-23999";
const ADMIN: &str = "127.0.0.1:9090";
const VIP: &str = "10.77.5.100:5060";
const H1: &str = "10.77.5.11";
const H2: &str = "10.77.5.12";
const DUMP_THREADS: usize = 3;
/// Connections the connection hammer holds open at once.
const HELD_CONNECTIONS: usize = 200;
/// Quiet time after the master took over (0.3 s after it started), before the first round: takeovers in it (no load)
/// are counted apart from the rounds'. It covers the new master's GARP bursts (the second
/// comes `garp_delay`, 5 s, after the takeover).
pub const QUIET: Duration = Duration::from_secs(8);

/// Both hosts (and the 10 ms real-failover runs): 10 ms adverts, a 4000-flow table and no
/// per-source limits, so that one client address fills the table.
pub const HOST: HostCfg = HostCfg {
    label: "10ms-",
    advert_ms: ADVERT_MS,
    relay_ports: FLOW_TABLE,
    extra: "\n[limits]\nnew_flows_per_ip = 1000000\nnew_flows_burst = 1000000\n\
            max_flows_per_ip = 4000\ndatagrams_per_ip = 100000000\n\
            datagrams_burst = 100000000\n",
};

pub struct Round {
    pub seconds: f64,
    /// h2's transitions to master during the round (takeovers; goal 0).
    pub takeovers: f64,
    /// h1's transitions to backup.
    pub master_lost: f64,
    /// Adverts from h2 the client's capture saw during the round.
    pub h2_adverts: usize,
    /// The backup's transitions to master by cause (`master_down`...), during the round.
    pub causes: String,
    /// The longest gap between two adverts of the master on the wire (client's capture).
    pub max_advert_gap_ms: f64,
    pub flood_sent: u64,
    pub flows: f64,
    pub table_full: f64,
    pub dumps: u64,
    pub dump_mb: f64,
    pub dump_errors: u64,
    pub conns: u64,
    pub master_cpu_pct: f64,
    /// The client's requests answered during the round, of those sent.
    pub answered: f64,
}

fn sum_metric(text: &str, name: &str, label: (&str, &str)) -> f64 {
    testkit::parse_metrics(text)
        .into_iter()
        .filter(|s| s.name == name && s.labels.get(label.0).is_some_and(|v| v == label.1))
        .map(|s| s.value)
        .sum()
}

/// The backup's transitions to master by cause.
fn causes(topo: &Topo) -> std::collections::BTreeMap<String, f64> {
    let m2 = vrrp::metrics(&topo.hosts[1]).unwrap_or_default();
    testkit::parse_metrics(&m2)
        .into_iter()
        .filter(|s| {
            s.name == "sipfront_vrrp_transitions_total"
                && s.labels.get("to").is_some_and(|v| v == "master")
        })
        .map(|s| (s.labels.get("cause").cloned().unwrap_or_default(), s.value))
        .collect()
}

fn counts(topo: &Topo) -> [f64; 4] {
    let m1 = vrrp::metrics(&topo.hosts[0]).unwrap_or_default();
    let m2 = vrrp::metrics(&topo.hosts[1]).unwrap_or_default();
    [
        sum_metric(&m2, "sipfront_vrrp_transitions_total", ("to", "master")),
        sum_metric(&m1, "sipfront_vrrp_transitions_total", ("to", "backup")),
        sum_metric(&m1, "sipfront_drops_total", ("reason", "flow_table_full")),
        testkit::find_metric(&m1, "sipfront_flows", &[]).unwrap_or(f64::NAN),
    ]
}

/// One GET over HTTP/1.0, reading the whole answer; its length. (`Host: localhost`:
/// without a token the API answers only a loopback Host; with `Host: bench` every
/// dump was a 403 and the hammer ran empty.)
fn dump(addr: SocketAddr) -> std::io::Result<usize> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /api/v1/flows?limit=100000 HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    if !buf.starts_with(b"HTTP/1.1 200") && !buf.starts_with(b"HTTP/1.0 200") {
        return Err(std::io::Error::other("not 200"));
    }
    Ok(buf.len())
}

fn round(run: &mut Run, topo: &Topo, client: &Client, cap: &Capture, secs: u64, n: usize) -> Round {
    run.wait_settled(client, &format!("before false-failover round {n}"));
    let c0 = counts(topo);
    let causes0 = causes(topo);
    let pid = run.sipfront_pid(0).expect("h1 sipfront");
    let cpu0 = Cpu::of(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let seq0 = client.first_seq_since(t0);
    let dur = Duration::from_secs(secs);
    // New flows into a full table: a fresh source port per INVITE.
    let flood = {
        let stop = stop.clone();
        topo.cl.spawn_in(move || {
            let vip: SocketAddr = VIP.parse().expect("vip");
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(s) = UdpSocket::bind("10.77.5.10:0") else {
                    continue;
                };
                let msg = format!(
                    "INVITE sip:x@{VIP} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKff{sent}\r\n\
                     From: <sip:f@{a}>;tag=f{sent}\r\nTo: <sip:x@{VIP}>\r\n\
                     Call-ID: ff-{sent}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
                    a = s.local_addr().map_or("0.0.0.0:0".into(), |a| a.to_string())
                );
                if s.send_to(msg.as_bytes(), vip).is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    };
    let admin: SocketAddr = ADMIN.parse().expect("admin");
    let dumps = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicU64::new(0));
    let mut hammers = Vec::new();
    for _ in 0..DUMP_THREADS {
        let (stop, dumps, bytes, errors) =
            (stop.clone(), dumps.clone(), bytes.clone(), errors.clone());
        hammers.push(topo.hosts[0].spawn_in(move || {
            while !stop.load(Ordering::Relaxed) {
                match dump(admin) {
                    Ok(n) => {
                        dumps.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }));
    }
    {
        let (stop, conns) = (stop.clone(), conns.clone());
        hammers.push(topo.hosts[0].spawn_in(move || {
            let mut held = std::collections::VecDeque::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut s) = TcpStream::connect_timeout(&admin, Duration::from_millis(500)) {
                    let _ = s.write_all(
                        b"GET /api/v1/flows?limit=100000 HTTP/1.1\r\nHost: localhost\r\n\r\n",
                    );
                    conns.fetch_add(1, Ordering::Relaxed);
                    held.push_back(s);
                    if held.len() > HELD_CONNECTIONS {
                        held.pop_front();
                    }
                } else {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }));
    }
    while t0.elapsed() < dur {
        std::thread::sleep(Duration::from_millis(100));
        run.assert_running();
    }
    stop.store(true, Ordering::Relaxed);
    let flood_sent = flood.join().unwrap_or(0);
    for h in hammers {
        let _ = h.join();
    }
    let wall = t0.elapsed();
    let cpu = Cpu::of(pid) - cpu0;
    let seq1 = client.first_seq_since(Instant::now());
    std::thread::sleep(Duration::from_millis(300));
    let c1 = counts(topo);
    let causes = cause_delta(&causes0, causes(topo));
    let frames = cap.between(t0, t0 + wall + Duration::from_millis(300));
    let adverts = |host: &str| -> Vec<Instant> {
        frames
            .iter()
            .filter(|(_, f)| matches!(f, Frame::Advert { src, priority } if src == host && *priority > 0))
            .map(|(t, _)| *t)
            .collect()
    };
    let h2_adverts = adverts(H2).len();
    let max_advert_gap_ms = max_gap(&frames, H1);
    let answered = if seq1 > seq0 {
        1.0 - client.unanswered(seq0, seq1) as f64 / (seq1 - seq0) as f64
    } else {
        f64::NAN
    };
    let r = Round {
        seconds: wall.as_secs_f64(),
        takeovers: c1[0] - c0[0],
        master_lost: c1[1] - c0[1],
        h2_adverts,
        causes,
        max_advert_gap_ms,
        flood_sent,
        flows: c1[3],
        table_full: c1[2] - c0[2],
        dumps: dumps.load(Ordering::Relaxed),
        dump_mb: bytes.load(Ordering::Relaxed) as f64 / 1e6,
        dump_errors: errors.load(Ordering::Relaxed),
        conns: conns.load(Ordering::Relaxed),
        master_cpu_pct: cpu.sched_ms() / 10.0 / wall.as_secs_f64(),
        answered,
    };
    eprintln!(
        "  false-failover round {n}: {:.1} s, takeovers {} ({}; h1 to backup {}), h2 adverts {}, \
         master's longest advert gap {:.1} ms, \
         {} new-flow INVITEs sent, flows {}, flow_table_full drops {}, {} dumps ({:.1} MB, {} \
         failed), {} admin connections, master CPU {:.0} %, client answered {:.1} %",
        r.seconds,
        r.takeovers,
        r.causes,
        r.master_lost,
        r.h2_adverts,
        r.max_advert_gap_ms,
        r.flood_sent,
        r.flows,
        r.table_full,
        r.dumps,
        r.dump_mb,
        r.dump_errors,
        r.conns,
        r.master_cpu_pct,
        r.answered * 100.0
    );
    r
}

/// Takeovers by the backup in the [`QUIET`] time after the pair started (no load).
pub struct Quiet {
    pub takeovers: f64,
    pub causes: String,
    pub max_advert_gap_ms: f64,
}

/// `rounds` rounds of `secs` seconds each on a fresh sipfront pair at 10 ms adverts, after
/// [`QUIET`] without load.
pub fn run(
    topo: &Topo,
    dir: &Path,
    client: &Client,
    cap: &Capture,
    rounds: usize,
    secs: u64,
) -> (Quiet, Vec<Round>) {
    let mut run = Run::new(
        topo,
        Case::Sipfront,
        dir,
        HostCfg {
            label: "false-",
            ..HOST
        },
    );
    run.start(1);
    run.start(0);
    // h2 started alone and went master; h1 preempts within a few adverts. Counted from
    // then on.
    std::thread::sleep(Duration::from_millis(300));
    let c0 = counts(topo);
    let causes0 = causes(topo);
    let t0 = Instant::now();
    std::thread::sleep(QUIET);
    let c1 = counts(topo);
    let quiet = Quiet {
        takeovers: c1[0] - c0[0],
        causes: cause_delta(&causes0, causes(topo)),
        max_advert_gap_ms: max_gap(&cap.between(t0, Instant::now()), H1),
    };
    eprintln!(
        "  false-failover quiet {} s after start: takeovers {} ({}), master's longest advert \
         gap {:.1} ms",
        QUIET.as_secs(),
        quiet.takeovers,
        quiet.causes,
        quiet.max_advert_gap_ms
    );
    let out = (1..=rounds)
        .map(|n| round(&mut run, topo, client, cap, secs, n))
        .collect();
    run.stop_all();
    (quiet, out)
}

fn cause_delta(
    before: &std::collections::BTreeMap<String, f64>,
    after: std::collections::BTreeMap<String, f64>,
) -> String {
    after
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| format!("{k}={d}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The longest gap between two adverts from `host` among `frames`, in ms.
fn max_gap(frames: &[(Instant, Frame)], host: &str) -> f64 {
    let t: Vec<Instant> = frames
        .iter()
        .filter(
            |(_, f)| matches!(f, Frame::Advert { src, priority } if src == host && *priority > 0),
        )
        .map(|(t, _)| *t)
        .collect();
    t.windows(2)
        .map(|w| crate::backend::ms(w[1] - w[0]))
        .fold(0.0, f64::max)
}

pub fn table(quiet: &Quiet, rounds: &[Round], real: &[vrrp::Sample]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "False failover: sipfront VRRPv3 pair, {ADVERT_MS} ms adverts; the master's dataplane \
         saturated (INVITEs from a fresh source port each into a full {FLOW_TABLE} flow table) \
         and its admin API hammered ({DUMP_THREADS} threads dumping /api/v1/flows?limit=100000, \
         one opening connections that request it and never read, {HELD_CONNECTIONS} held)"
    );
    let _ = writeln!(
        t,
        "{:>5} {:>6} {:>9} {:>8} {:>10} {:>9} {:>10} {:>6} {:>11} {:>7} {:>6} {:>6} {:>8} {:>8}",
        "round",
        "secs",
        "takeovers",
        "h1->bk",
        "h2_adverts",
        "h1_gap_ms",
        "flood_sent",
        "flows",
        "table_full",
        "dumps",
        "dumpMB",
        "conns",
        "cpu%",
        "answered"
    );
    for (i, r) in rounds.iter().enumerate() {
        let _ = writeln!(
            t,
            "{:>5} {:>6.1} {:>9} {:>8} {:>10} {:>9.1} {:>10} {:>6} {:>11} {:>7} {:>6.0} {:>6} {:>8.0} {:>7.1}%{}",
            i + 1,
            r.seconds,
            r.takeovers,
            r.master_lost,
            r.h2_adverts,
            r.max_advert_gap_ms,
            r.flood_sent,
            r.flows,
            r.table_full,
            r.dumps,
            r.dump_mb,
            r.conns,
            r.master_cpu_pct,
            r.answered * 100.0,
            if r.causes.is_empty() {
                String::new()
            } else {
                format!("  backup to master: {}", r.causes)
            }
        );
    }
    let _ = writeln!(
        t,
        "no load, the first {} s after the pair started: {} takeovers{}, master's longest \
         advert gap {:.1} ms",
        QUIET.as_secs(),
        quiet.takeovers,
        if quiet.causes.is_empty() {
            String::new()
        } else {
            format!(" ({})", quiet.causes)
        },
        quiet.max_advert_gap_ms
    );
    let total: f64 = rounds.iter().map(|r| r.takeovers).sum();
    let adverts: usize = rounds.iter().map(|r| r.h2_adverts).sum();
    let _ = writeln!(
        t,
        "takeovers in {} rounds: {total} (goal 0: {}); backup adverts seen: {adverts}",
        rounds.len(),
        if total == 0.0 && adverts == 0 {
            "met"
        } else {
            "MISSED"
        }
    );
    let gaps: Vec<f64> = real.iter().map(|s| crate::backend::ms(s.gap)).collect();
    if !gaps.is_empty() {
        let _ = writeln!(
            t,
            "real failover at {ADVERT_MS} ms adverts, same run (SIGKILL of the master, {} reps): \
             gap ms min/med/max {}",
            gaps.len(),
            Stats::of(gaps).fmt()
        );
    }
    t.push_str(
        "takeovers: the backup's sipfront_vrrp_transitions_total{to=\"master\"} during the \
         round; h1->bk: the master's transitions to backup; h2_adverts: adverts from the \
         backup on the wire (client's capture); h1_gap_ms: the longest gap between two of the \
         master's adverts on the wire (the backup's Master_Down_Interval is 3 x 10 ms + skew). \
         flood_sent: INVITEs sent (one new source port \
         each); flows: the master's flow table at the end; table_full: its flow_table_full \
         drops. dumps: complete /api/v1/flows answers; conns: connections opened by the \
         connection hammer. cpu%: the master's sipfront (sched time, % of one core). \
         answered: the client's requests (one every 5 ms) answered during the round.\n",
    );
    t
}
