//! HEPv3 capture export against a real collector: Kamailio's `sipcapture` module
//! (tests/hep/collector.cfg) stores every HEP packet it receives into a db_text table. A
//! sipp call through sipfront must show up there on both legs: client ↔ public SIP
//! address with the true client address, relay endpoint ↔ backend, every record with the
//! Call-ID as correlation id. With the collector gone, relaying is unaffected and the
//! drops are counted.
//!
//! The same over HEP's TCP transport (Kamailio `tcp_accept_hep3`), including a collector
//! that goes away and comes back.
//!
//! Ports: 127.0.46.1:30060 (SIP), 127.0.46.2 relay ports 15000-15099, 127.0.0.1:30070
//! (UAS), 127.0.46.3:30080 (UAC), 127.0.46.9:30090 (collector), admin 127.0.46.1:30091;
//! the collector-down test: 30160/30170/30180/30191, relay ports 15100-15199; the TCP
//! test: 30260/30270/30280/30290/30291, relay ports 15200-15299; the include_local test:
//! 30360/30370/30380/30390/30391, relay ports 15300-15399; the prefix-mode test:
//! 30460/30470/30480/30490/30491, 127.46.0.0/16 port 15400.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;
use std::time::Duration;

use testkit::*;

const CALLS: u64 = 10;

/// One row of db_text's `sip_capture` table: fields split on unescaped `:`.
fn fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut esc = false;
    for c in line.chars() {
        match (esc, c) {
            (true, c) => {
                out.last_mut().unwrap().push(c);
                esc = false;
            }
            (false, '\\') => esc = true,
            (false, ':') => out.push(String::new()),
            (false, c) => out.last_mut().unwrap().push(c),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    call_id: String,
    cseq: String,
    what: String,
    src: String,
    dst: String,
    correlation: String,
}

fn read_rows(table: &std::path::Path) -> Vec<Row> {
    let text = fs::read_to_string(table).expect("read sip_capture table");
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("table header")
        .split(' ')
        .map(|c| c.split('(').next().unwrap().to_string())
        .collect();
    let col = |n: &str| header.iter().position(|h| h == n).expect(n);
    let (method, reason, callid, cseq) = (
        col("method"),
        col("reply_reason"),
        col("callid"),
        col("cseq"),
    );
    let (sip, spt, dip, dpt, corr) = (
        col("source_ip"),
        col("source_port"),
        col("destination_ip"),
        col("destination_port"),
        col("correlation_id"),
    );
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f = fields(l);
            Row {
                call_id: f[callid].clone(),
                cseq: f[cseq].clone(),
                what: format!("{}{}", f[method], f[reason]),
                src: format!("{}:{}", f[sip], f[spt]),
                dst: format!("{}:{}", f[dip], f[dpt]),
                correlation: f[corr].clone(),
            }
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Udp,
    Tcp,
    /// UDP, with sipfront in relay prefix mode (127.46.0.0/16, relay port 15400).
    UdpPrefix,
}

fn start_collector(
    dir: &TestDir,
    name: &str,
    listen: &str,
    transport: Transport,
) -> (Proc, std::path::PathBuf) {
    let db = dir.join(&format!("{name}-db"));
    fs::create_dir_all(&db).unwrap();
    for f in ["sip_capture", "version"] {
        fs::copy(repo_path(&format!("tests/hep/{f}")), db.join(f)).unwrap();
    }
    let mut cmd = Command::new("kamailio");
    cmd.args(["-DD", "-E", "-f"])
        .arg(repo_path("tests/hep/collector.cfg"))
        .arg("-Y")
        .arg(dir.path())
        .args(["-m", "32", "-M", "4"])
        .args(["-A", &format!("DB_URL=\"text://{}\"", db.display())]);
    match transport {
        Transport::Udp | Transport::UdpPrefix => {
            cmd.args(["-A", &format!("HEP_LISTEN=udp:{listen}")])
        }
        Transport::Tcp => cmd
            .args(["-A", &format!("HEP_LISTEN=tcp:{listen}")])
            .args(["-A", "HEP_TCP"]),
    };
    let mut p = Proc::spawn_group(name, &mut cmd, &dir.join(&format!("{name}.log")));
    match transport {
        Transport::Udp | Transport::UdpPrefix => {
            let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
            wait_udp_bound(&mut p, port, Duration::from_secs(15));
        }
        Transport::Tcp => assert!(
            wait_until(Duration::from_secs(15), || {
                std::net::TcpStream::connect(listen).is_ok()
            }),
            "the collector listens on tcp:{listen}"
        ),
    }
    (p, db.join("sip_capture"))
}

fn uac(dir: &TestDir, ip: &str, port: &str, target: &str) -> Sipp {
    let calls = CALLS.to_string();
    Sipp::start(
        dir,
        "uac",
        &[
            "-sn",
            "uac",
            "-i",
            ip,
            "-p",
            port,
            "-m",
            &calls,
            "-r",
            "20",
            "-timeout",
            "30s",
            "-timeout_error",
            target,
        ],
    )
}

#[test]
fn both_legs_reach_a_kamailio_sipcapture_collector() {
    both_legs_reach(Transport::Udp, 30000, "15000-15099");
}

#[test]
fn both_legs_are_captured_in_relay_prefix_mode() {
    both_legs_reach(Transport::UdpPrefix, 30400, "15400");
}

#[test]
fn both_legs_reach_a_collector_over_tcp_and_a_lost_collector_is_reconnected() {
    let (dir, mut front) = both_legs_reach(Transport::Tcp, 30200, "15200-15299");
    // The collector is gone (stopped by `both_legs_reach`): calls go on, packets are
    // dropped and counted.
    let mut uas = sipp_uas(&dir, "uas2", 30270);
    front.wait_backends_up(Duration::from_secs(10));
    // CALLS calls through sipfront, none failed.
    let calls_ok = || {
        let mut phone = uac(&dir, "127.0.46.3", "30280", "127.0.46.1:30260");
        let r = phone.expect_all_ok(CALLS, Duration::from_secs(30));
        assert_eq!(r.stats.failed(), 0);
    };
    calls_ok();
    let text = front.settled_metrics(Duration::from_millis(600), Duration::from_secs(5));
    let lost = metric(
        &text,
        "sipfront_hep_dropped_total",
        &[("reason", "unreachable")],
    ) + metric(
        &text,
        "sipfront_hep_dropped_total",
        &[("reason", "send_failed")],
    );
    assert!(
        lost > 0.0,
        "packets without a collector are counted as dropped"
    );
    // A collector is back: the sender reconnects (at most once a second) by itself.
    let (mut again, table) =
        start_collector(&dir, "collector2", "127.0.46.9:30290", Transport::Tcp);
    std::thread::sleep(Duration::from_millis(1500));
    calls_ok();
    uas.stop(Duration::from_secs(5));
    front.settled_metrics(Duration::from_millis(600), Duration::from_secs(5));
    again.signal("TERM");
    again.wait_timeout(Duration::from_secs(10));
    let rows = read_rows(&table);
    let calls: BTreeSet<&String> = rows.iter().map(|r| &r.call_id).collect();
    assert!(
        calls.len() as u64 >= CALLS - 1,
        "the calls after the reconnection are captured: {} calls in {} rows",
        calls.len(),
        rows.len()
    );
}

/// A sipp call through sipfront with HEP to a Kamailio collector on `base+90` (SIP on
/// `base+60`, UAS `base+70`, UAC `base+80`, admin `base+91`); checks both legs of every
/// message. Returns with the collector stopped and sipfront running.
fn both_legs_reach(transport: Transport, base: u16, relay_ports: &str) -> (TestDir, Sipfront) {
    let name = match transport {
        Transport::Udp => "hep-kamailio",
        Transport::Tcp => "hep-kamailio-tcp",
        Transport::UdpPrefix => "hep-kamailio-prefix",
    };
    // Where relay endpoints are: the relay address, or addresses of the prefix.
    let relay_at = match transport {
        Transport::UdpPrefix => "127.46.",
        _ => "127.0.46.2:",
    };
    let dir = TestDir::new(name);
    let port = |n: u16| (base + n).to_string();
    let collector_addr = format!("127.0.46.9:{}", port(90));
    let (mut collector, table) = start_collector(&dir, "collector", &collector_addr, transport);
    let mut uas = sipp_uas(&dir, "uas", base + 70);
    let public = format!("127.0.46.1:{}", port(60));
    let backend = format!("127.0.0.1:{}", port(70));
    let tcp = if transport == Transport::Tcp {
        "transport = \"tcp\"\n"
    } else {
        ""
    };
    let mut sf = SipfrontConfig {
        relay: "127.0.46.2".into(),
        ..SipfrontConfig::new(&public, relay_ports, &format!("127.0.46.1:{}", port(91)))
    };
    if transport == Transport::UdpPrefix {
        sf = SipfrontConfig::new(&public, "1-1", &format!("127.0.46.1:{}", port(91)))
            .prefix("127.46.0.0/16", relay_ports);
    }
    let mut front = Sipfront::start(
        &dir,
        sf.backend("a", &backend)
        .extra(&format!(
            "[hep]\ncollector = \"{collector_addr}\"\n{tcp}capture_id = 46\npassword = \"pw\"\nlegs = [\"client\", \"backend\"]\n",
        )),
    );
    let mut phone = uac(&dir, "127.0.46.3", &port(80), &public);
    phone.expect_all_ok(CALLS, Duration::from_secs(30));
    uas.stop(Duration::from_secs(5));

    let text = front.settled_metrics(Duration::from_millis(600), Duration::from_secs(5));
    let sent = metric(&text, "sipfront_hep_sent_total", &[]);
    let relayed = metric(
        &text,
        "sipfront_datagrams_total",
        &[("direction", "to_backend"), ("backend", "a")],
    ) + metric(
        &text,
        "sipfront_datagrams_total",
        &[("direction", "to_client"), ("backend", "a")],
    );
    assert_eq!(sent, 2.0 * relayed, "two HEP packets per relayed datagram");
    assert!(metric(&text, "sipfront_hep_bytes_total", &[]) > 0.0);

    // db_text writes on shutdown at the latest.
    collector.signal("TERM");
    collector.wait_timeout(Duration::from_secs(10));
    let rows = read_rows(&table);
    assert_eq!(rows.len() as f64, sent, "rows stored by sipcapture");

    let client = format!("127.0.46.3:{}", port(80));
    let mut relay_ends = BTreeSet::new();
    // (call, cseq, message) -> legs seen
    let mut legs: BTreeMap<(String, String, String), Vec<&'static str>> = BTreeMap::new();
    for r in &rows {
        assert_eq!(
            r.correlation, r.call_id,
            "correlation id is the Call-ID: {r:?}"
        );
        let leg = if (r.src == client && r.dst == public) || (r.src == public && r.dst == client) {
            "client"
        } else if r.dst == backend && r.src.starts_with(relay_at) {
            relay_ends.insert(r.src.clone());
            "backend"
        } else if r.src == backend && r.dst.starts_with(relay_at) {
            relay_ends.insert(r.dst.clone());
            "backend"
        } else {
            panic!("a record on neither leg: {r:?}");
        };
        legs.entry((r.call_id.clone(), r.cseq.clone(), r.what.clone()))
            .or_default()
            .push(leg);
    }
    assert_eq!(
        relay_ends.len(),
        1,
        "one flow, one relay endpoint: {relay_ends:?}"
    );
    let calls: BTreeSet<&String> = legs.keys().map(|k| &k.0).collect();
    assert_eq!(calls.len() as u64, CALLS, "calls captured");
    for (k, v) in &legs {
        let c = v.iter().filter(|l| **l == "client").count();
        let b = v.len() - c;
        assert!(c > 0 && c == b, "{k:?}: client leg {c}, backend leg {b}");
    }
    let whats: BTreeSet<&str> = legs.keys().map(|k| k.2.as_str()).collect();
    for w in ["INVITE", "ACK", "BYE", "200OK"] {
        assert!(whats.contains(w), "{w} captured: {whats:?}");
    }
    (dir, front)
}

#[test]
fn relaying_goes_on_with_the_collector_gone() {
    let dir = TestDir::new("hep-down");
    let mut uas = sipp_uas(&dir, "uas", 30170);
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig {
            relay: "127.0.46.2".into(),
            ..SipfrontConfig::new("127.0.46.1:30160", "15100-15199", "127.0.46.1:30191")
        }
        .backend("a", "127.0.0.1:30170")
        // Nothing listens there: ICMP port unreachable.
        .extra("[hep]\ncollector = \"127.0.46.9:30195\"\n"),
    );
    let mut phone = uac(&dir, "127.0.46.3", "30180", "127.0.46.1:30160");
    let r = phone.expect_all_ok(CALLS, Duration::from_secs(30));
    assert_eq!(r.stats.failed(), 0);
    uas.stop(Duration::from_secs(5));
    let text = front.settled_metrics(Duration::from_millis(600), Duration::from_secs(5));
    let unreachable = metric(
        &text,
        "sipfront_hep_dropped_total",
        &[("reason", "unreachable")],
    );
    assert!(unreachable > 0.0, "unreachable drops counted");
    let logged = log_lines(&front.proc, &["HEP collector unreachable"]);
    assert!(
        logged.len() == 1,
        "logged once per interval, not per packet: {logged:?}"
    );
}

/// `include_local`: what sipfront sends itself reaches the collector too: its OPTIONS
/// probes and the backend's replies (backend leg), and a stateless 503 (client leg).
#[test]
fn probes_and_local_503s_are_exported_with_include_local() {
    let dir = TestDir::new("hep-local");
    let (mut collector, table) =
        start_collector(&dir, "collector", "127.0.46.9:30390", Transport::Udp);
    let mut uas = sipp_uas(&dir, "uas", 30370);
    let public = "127.0.46.1:30360";
    let backend = "127.0.0.1:30370";
    let mut front = Sipfront::start(
        &dir,
        SipfrontConfig {
            relay: "127.0.46.2".into(),
            ..SipfrontConfig::new(public, "15300-15399", "127.0.46.1:30391")
        }
        .backend("a", backend)
        .extra(
            "[health]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\n\
             [hep]\ncollector = \"127.0.46.9:30390\"\ninclude_local = true\n",
        ),
    );
    front.wait_backends_up(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(600));
    // No backend: sipfront answers an INVITE itself.
    uas.stop(Duration::from_secs(5));
    front.wait_metric(
        "sipfront_backend_up",
        &[("backend", "a")],
        Duration::from_secs(10),
        |v| v == 0.0,
    );
    let phone = std::net::UdpSocket::bind("127.0.46.3:30380").unwrap();
    phone
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    phone
        .send_to(&sip_request("INVITE", "local-503", 30380, b""), public)
        .unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = phone.recv_from(&mut buf).expect("a reply from sipfront");
    assert!(
        buf[..n].starts_with(b"SIP/2.0 503"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    front.settled_metrics(Duration::from_millis(600), Duration::from_secs(5));
    collector.signal("TERM");
    collector.wait_timeout(Duration::from_secs(10));

    let rows = read_rows(&table);
    let probes = rows
        .iter()
        .filter(|r| r.what == "OPTIONS" && r.dst == backend && r.src.starts_with("127.0.0.1:"))
        .count();
    let replies = rows
        .iter()
        .filter(|r| r.what.starts_with("200") && r.src == backend)
        .count();
    assert!(probes >= 2, "probes exported: {rows:?}");
    assert!(replies >= 2, "probe replies exported: {rows:?}");
    let local = rows
        .iter()
        .find(|r| r.call_id == "local-503")
        .unwrap_or_else(|| panic!("the 503 exported: {rows:?}"));
    assert!(local.what.starts_with("503"), "{local:?}");
    assert_eq!(
        (local.src.as_str(), local.dst.as_str()),
        (public, "127.0.46.3:30380")
    );
}
