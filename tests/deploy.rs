//! The deployment files in deploy/ against the real binary and the real tools:
//!
//! - the example config passes `sipfront check-config`;
//! - every metric name (and label) that the Grafana dashboard and the Prometheus alerts use is
//!   exported by a running `sipfront demo` that has relayed some SIP, or is one of the few
//!   series that only exist with a `[vrrp]`, `[hep]` or `[sync]` section, which must then at
//!   least be named in src/;
//! - the keepalived track script follows `/ready`;
//! - the systemd unit has the required keys and `systemd-analyze verify` accepts it;
//! - `promtool` accepts the alert rules and the scrape config and passes the rule unit tests;
//! - keepalived accepts its example config (in a network namespace with eth0/eth1);
//! - `cargo deb` builds a package with the binary, unit, config, docs and a postinst that
//!   creates the `sipfront` user.
//!
//! Missing tools fail the test with the Debian package (or crate) to install; tests/run.sh
//! installs them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const SIPFRONT: &str = env!("CARGO_BIN_EXE_sipfront");

/// Metrics the dashboard and the alerts use that a running `sipfront demo` cannot show: the
/// demo has no `[vrrp]` section, so the VRRP speaker and its series do not exist. Each must be
/// used by the dashboard or the alerts, must not be exported by the demo (else it belongs in
/// the runtime check), and must be named in src/ (`situational_metrics_are_in_the_source`).
const ONLY_WITH_VRRP: &[&str] = &[
    "sipfront_vrrp_state",
    "sipfront_vrrp_transitions_total",
    "sipfront_vrrp_adverts_total",
    "sipfront_vrrp_adverts_dropped_total",
    "sipfront_vrrp_other_master_total",
];

/// Metrics that exist only with a `[hep]` section (HEP capture export), which the demo does
/// not have; the same rules as [`ONLY_WITH_VRRP`].
const ONLY_WITH_HEP: &[&str] = &[
    "sipfront_hep_sent_total",
    "sipfront_hep_bytes_total",
    "sipfront_hep_dropped_total",
];

/// Metrics that exist only with a `[sync]` section (state sync with the peer host), which
/// the demo does not have; the same rules as [`ONLY_WITH_VRRP`].
const ONLY_WITH_SYNC: &[&str] = &[
    "sipfront_sync_peer_up",
    "sipfront_sync_lag",
    "sipfront_sync_peer_flows",
    "sipfront_sync_peer_dialogs",
    "sipfront_sync_messages_total",
    "sipfront_sync_dropped_total",
    "sipfront_sync_items_rejected_total",
    "sipfront_sync_endpoint_conflicts_total",
];

/// Every metric that only a section absent from the demo exports.
fn situational() -> impl Iterator<Item = &'static str> {
    ONLY_WITH_VRRP
        .iter()
        .chain(ONLY_WITH_HEP)
        .chain(ONLY_WITH_SYNC)
        .copied()
}

/// Labels Prometheus adds to every series of a target (prometheus.yml), not sipfront.
const TARGET_LABELS: &[&str] = &["instance", "job", "pair"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Runs a program; a missing program fails with the package that provides it.
fn run(cmd: &mut Command, package: &str) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "program `{program}` not found: install {package} (tests/run.sh does); \
             this test needs it"
        ),
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// ---------------------------------------------------------------------------------------
// (a) the example config
// ---------------------------------------------------------------------------------------

#[test]
fn example_config_passes_check_config() {
    let out = run(
        Command::new(SIPFRONT)
            .arg("check-config")
            .arg(repo("deploy/sipfront.toml")),
        "sipfront (built by cargo)",
    );
    assert!(
        out.status.success(),
        "check-config rejected deploy/sipfront.toml:\n{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------
// (b) metric names used by the dashboard and the alerts
// ---------------------------------------------------------------------------------------

/// A metric name and the label names one use of it mentions.
type Use = (String, BTreeSet<String>);

/// Every `sipfront_*` name in `s`, with the label names of a `{...}` selector right after it.
/// Label values are skipped (with their escapes); `{reason}` in prose counts as a label name.
fn metric_uses(s: &str) -> Vec<Use> {
    let b = s.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut uses = Vec::new();
    let mut i = 0;
    while let Some(off) = s[i..].find("sipfront_") {
        let start = i + off;
        i = start + "sipfront_".len();
        if start > 0 && (ident(b[start - 1]) || b[start - 1] == b':') {
            continue;
        }
        while i < b.len() && ident(b[i]) {
            i += 1;
        }
        let name = s[start..i].to_string();
        let mut labels = BTreeSet::new();
        if b.get(i) == Some(&b'{') {
            let mut j = i + 1;
            loop {
                while j < b.len() && (b[j] == b' ' || b[j] == b',') {
                    j += 1;
                }
                let k = j;
                while j < b.len() && ident(b[j]) {
                    j += 1;
                }
                if j == k {
                    break;
                }
                labels.insert(s[k..j].to_string());
                while j < b.len() && b[j] == b' ' {
                    j += 1;
                }
                while j < b.len() && matches!(b[j], b'=' | b'!' | b'~') {
                    j += 1;
                }
                while j < b.len() && b[j] == b' ' {
                    j += 1;
                }
                if b.get(j) == Some(&b'"') {
                    j += 1;
                    while j < b.len() && b[j] != b'"' {
                        j += if b[j] == b'\\' { 2 } else { 1 };
                    }
                    j += 1;
                }
            }
            i = j;
        }
        uses.push((name, labels));
    }
    uses
}

/// Names and label names of the series in a Prometheus text exposition.
fn exported_series(exposition: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            // Reuse the selector parser: `name{a="x",b="y"}` has the same shape.
            if let Some((_, l)) = metric_uses(line).into_iter().next() {
                labels.extend(l);
            }
        }
    }
    out
}

/// Every string in a JSON document (expressions, variable queries, titles, descriptions).
fn json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// Metric uses of the dashboard and the alert rules, with the file each comes from.
fn dashboard_and_alert_uses() -> Vec<(&'static str, Use)> {
    let dash: serde_json::Value = serde_json::from_str(&read("deploy/grafana/sipfront.json"))
        .expect("deploy/grafana/sipfront.json is not valid JSON");
    let mut strings = Vec::new();
    json_strings(&dash, &mut strings);
    let mut uses: Vec<(&'static str, Use)> = strings
        .iter()
        .flat_map(|s| metric_uses(s))
        .map(|u| ("deploy/grafana/sipfront.json", u))
        .collect();
    uses.extend(
        metric_uses(&read("deploy/prometheus/alerts.yml"))
            .into_iter()
            .map(|u| ("deploy/prometheus/alerts.yml", u)),
    );
    uses
}

/// `sipfront demo` on its own ports, killed on drop.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET over HTTP/1.0: (status, body), or None if nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Sum of the samples of `name` whose label set contains every `key="value"` in `filter`.
fn sample_sum(exposition: &str, name: &str, filter: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| filter.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn sip_request(method: &str, sip: SocketAddr, local: SocketAddr, i: usize) -> String {
    format!(
        "{method} sip:demo@{sip} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-deploy-{i}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:deploy-test@{local}>;tag=dt{i}\r\n\
         To: <sip:demo@{sip}>\r\n\
         Call-ID: deploy-test-{i}@{local}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:deploy-test@{local}>\r\n\
         Expires: 60\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn dashboard_and_alerts_use_exported_metrics() {
    let sip: SocketAddr = "127.0.0.1:16060".parse().unwrap();
    let admin: SocketAddr = "127.0.0.1:16090".parse().unwrap();
    let demo = Demo(
        Command::new(SIPFRONT)
            .args([
                "demo",
                "--sip",
                "127.0.0.1:16060",
                "--admin",
                "127.0.0.1:16090",
            ])
            .args(["--duration", "60"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sipfront demo"),
    );

    // Ready = dataplane up and a backend probed up.
    let deadline = Instant::now() + Duration::from_secs(15);
    while http_get(admin, "/ready").map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "sipfront demo not ready on {admin} within 15 s"
        );
        sleep(Duration::from_millis(100));
    }

    // The keepalived track script agrees (called as keepalived.conf calls it).
    let check = || {
        run(
            Command::new(repo("deploy/keepalived/check_sipfront.sh")).arg(admin.to_string()),
            "curl",
        )
    };
    let out = check();
    assert!(
        out.status.success(),
        "check_sipfront.sh fails on a ready sipfront:\n{}",
        text(&out)
    );

    // Some SIP from a few clients (flows), a keepalive and a non-SIP datagram.
    let mut answered = 0;
    for c in 0..3 {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let local = sock.local_addr().unwrap();
        for (k, method) in ["REGISTER", "OPTIONS"].iter().enumerate() {
            let msg = sip_request(method, sip, local, c * 10 + k);
            sock.send_to(msg.as_bytes(), sip).unwrap();
            let mut buf = [0u8; 4096];
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                answered += usize::from(buf[..n].starts_with(b"SIP/2.0 200"));
            }
        }
        sock.send_to(b"\r\n\r\n", sip).unwrap();
        sock.send_to(b"hello, not SIP", sip).unwrap();
    }
    assert!(
        answered >= 5,
        "only {answered} of 6 requests through the demo were answered 200"
    );

    // Counters are published a few times a second: wait until the traffic shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (code, body) = http_get(admin, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200, "GET /metrics: {body}");
        let shown = sample_sum(
            &body,
            "sipfront_datagrams_total",
            &[r#"direction="to_backend""#],
        ) >= 6.0
            && sample_sum(
                &body,
                "sipfront_datagrams_total",
                &[r#"direction="to_client""#],
            ) >= 6.0
            && sample_sum(&body, "sipfront_drops_total", &[r#"reason="not_sip""#]) >= 1.0
            && sample_sum(&body, "sipfront_keepalives_total", &[]) >= 1.0
            && sample_sum(&body, "sipfront_flows_created_total", &[]) >= 3.0;
        if shown {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's /metrics does not show the traffic sent within 10 s:\n{body}"
        );
        sleep(Duration::from_millis(200));
    };

    let exported = exported_series(&metrics);
    let uses = dashboard_and_alert_uses();
    let mut problems = Vec::new();
    for (file, (name, labels)) in &uses {
        match exported.get(name) {
            Some(have) => {
                for l in labels {
                    if !have.contains(l) && !TARGET_LABELS.contains(&l.as_str()) {
                        problems.push(format!(
                            "{file}: {name} has no label `{l}` (exported labels: {have:?})"
                        ));
                    }
                }
            }
            None if situational().any(|n| n == name) => {}
            None => problems.push(format!(
                "{file}: {name} is not exported by a running sipfront and not in ONLY_WITH_VRRP"
            )),
        }
    }
    for name in situational() {
        if !uses.iter().any(|(_, (n, _))| n == name) {
            problems.push(format!(
                "ONLY_WITH_VRRP lists {name}, which neither the dashboard nor the alerts use: \
                 remove it from the list"
            ));
        }
        if exported.contains_key(name) {
            problems.push(format!(
                "{name} is exported without [vrrp]: remove it from ONLY_WITH_VRRP so that its \
                 labels are checked at run time"
            ));
        }
    }
    let unused: Vec<&String> = exported
        .keys()
        .filter(|n| n.starts_with("sipfront_") && !uses.iter().any(|(_, (u, _))| u == *n))
        .collect();
    if !unused.is_empty() {
        eprintln!("note: exported but not on the dashboard or in the alerts: {unused:?}");
    }
    assert!(
        problems.is_empty(),
        "metric names:\n  {}",
        problems.join("\n  ")
    );

    // Once sipfront is gone, the track script fails (keepalived would move the VIP).
    drop(demo);
    let out = check();
    assert!(
        !out.status.success(),
        "check_sipfront.sh succeeds with sipfront stopped"
    );
}

/// Every `.rs` file under `dir`, recursively.
fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}")) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn situational_metrics_are_in_the_source() {
    let mut files = Vec::new();
    rust_sources(&repo("src"), &mut files);
    let src: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let missing: Vec<&str> = situational()
        .filter(|n| !src.contains(&format!("\"{n}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard and the alerts use {missing:?}, which appear only with [vrrp]; \
         no file in src/ names them as a string literal, so nothing exports them"
    );
}

// ---------------------------------------------------------------------------------------
// Grafana dashboard shape
// ---------------------------------------------------------------------------------------

#[test]
fn grafana_dashboard_is_well_formed() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/sipfront.json")).expect("valid JSON");
    assert_eq!(dash["uid"], "sipfront-overview");
    let vars: BTreeSet<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mut ids = BTreeSet::new();
    let mut exprs = 0;
    for p in dash["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate panel id: {title}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {title} is wider than the grid");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {title}: datasource"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let e = t["expr"].as_str().expect("expr");
            assert!(t["refId"].is_string(), "panel {title}: refId");
            for var in ["instance", "backend", "datasource"] {
                if e.contains(&format!("${var}")) {
                    assert!(vars.contains(var), "panel {title} uses ${var}, not defined");
                }
            }
            assert_eq!(
                e.matches('(').count(),
                e.matches(')').count(),
                "panel {title}: unbalanced parentheses in {e}"
            );
            exprs += 1;
        }
    }
    assert!(exprs >= 20, "only {exprs} queries on the dashboard");
}

// ---------------------------------------------------------------------------------------
// (c) the systemd unit
// ---------------------------------------------------------------------------------------

/// A unit file as section -> key -> values (keys may repeat).
fn parse_unit(s: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in s.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        out.entry(section.clone())
            .or_default()
            .entry(k.trim().to_string())
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

#[test]
fn systemd_unit_has_required_keys() {
    let unit_text = read("deploy/systemd/sipfront.service");
    let unit = parse_unit(&unit_text);
    let service = &unit["Service"];
    let one = |k: &str| -> &str {
        let v = service
            .get(k)
            .unwrap_or_else(|| panic!("[Service] {k}= missing"));
        assert_eq!(v.len(), 1, "[Service] {k}= set {} times", v.len());
        &v[0]
    };
    let words = |k: &str| -> BTreeSet<&str> { one(k).split_whitespace().collect() };

    assert_eq!(one("Type"), "notify");
    assert_eq!(one("User"), "sipfront");
    assert_eq!(one("Group"), "sipfront");
    assert_eq!(
        one("ExecStartPre"),
        "/usr/bin/sipfront check-config /etc/sipfront/sipfront.toml"
    );
    assert_eq!(
        one("ExecStart"),
        "/usr/bin/sipfront run -c /etc/sipfront/sipfront.toml"
    );
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("Restart"), "on-failure");
    let caps: BTreeSet<&str> = ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"].into();
    assert_eq!(words("AmbientCapabilities"), caps);
    assert_eq!(words("CapabilityBoundingSet"), caps);
    let families: BTreeSet<&str> =
        ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_UNIX"].into();
    assert_eq!(words("RestrictAddressFamilies"), families);
    for (k, v) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(one(k), v, "[Service] {k}");
    }
    assert!(
        one("TimeoutStopSec").ends_with('s'),
        "TimeoutStopSec in seconds"
    );
    // sipfront reads /proc/sys/net/ipv4/ip_local_port_range when it loads its config.
    assert!(
        !service.contains_key("ProcSubset"),
        "ProcSubset=pid hides /proc/sys, which config loading reads"
    );
    // Not root, and nothing may raise privileges again.
    assert!(!service.contains_key("PermissionsStartOnly"));
    assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);

    // systemd's own verdict, with ExecStart pointing at the binary under test (verify
    // insists that the executables exist).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sipfront.service");
    std::fs::write(&path, unit_text.replace("/usr/bin/sipfront", SIPFRONT)).unwrap();
    let out = run(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .current_dir(dir.path()),
        "the Debian package `systemd` (systemd-analyze)",
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify:\n{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------
// Prometheus rules and scrape config
// ---------------------------------------------------------------------------------------

#[test]
fn prometheus_rules_and_config_pass_promtool() {
    let promtool = "the Debian package `prometheus` (promtool)";
    let dir = repo("deploy/prometheus");
    let out = run(
        Command::new("promtool")
            .args(["check", "rules", "alerts.yml"])
            .current_dir(&dir),
        promtool,
    );
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        text(&out)
    );
    let out = run(
        Command::new("promtool")
            .args(["test", "rules", "alerts_test.yml"])
            .current_dir(&dir),
        promtool,
    );
    assert!(out.status.success(), "promtool test rules:\n{}", text(&out));

    // The scrape config names the rules at their installed path: point it at ours.
    let tmp = tempfile::tempdir().unwrap();
    let conf = read("deploy/prometheus/prometheus.yml").replace(
        "/etc/prometheus/sipfront-alerts.yml",
        &dir.join("alerts.yml").to_string_lossy(),
    );
    std::fs::write(tmp.path().join("prometheus.yml"), conf).unwrap();
    let out = run(
        Command::new("promtool")
            .args(["check", "config", "prometheus.yml"])
            .current_dir(tmp.path()),
        promtool,
    );
    assert!(
        out.status.success(),
        "promtool check config:\n{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------
// keepalived (external mode)
// ---------------------------------------------------------------------------------------

#[test]
fn keepalived_config_passes_config_test() {
    assert!(
        is_root(),
        "this test needs root (network namespace for keepalived's interfaces)"
    );
    // keepalived checks that the configured interfaces exist: give it eth0 and eth1.
    let ns = testkit::Netns::create(format!("sfdeploy{}", std::process::id()));
    let out = run(
        Command::new("ip").args([
            "-n", &ns.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ]),
        "iproute2",
    );
    assert!(out.status.success(), "veth eth0/eth1:\n{}", text(&out));

    // The track script at its place in this checkout (keepalived checks it exists and
    // that no non-root user can change it).
    let tmp = tempfile::tempdir().unwrap();
    let conf = read("deploy/keepalived/keepalived.conf").replace(
        "/usr/lib/sipfront/check_sipfront.sh",
        &repo("deploy/keepalived/check_sipfront.sh").to_string_lossy(),
    );
    let path = tmp.path().join("keepalived.conf");
    std::fs::write(&path, conf).unwrap();
    let out = run(
        ns.command("keepalived")
            .args(["--config-test", "-f"])
            .arg(&path),
        "the Debian package `keepalived`",
    );
    // keepalived 2.2 reports problems on stderr and exits non-zero for fatal ones; a clean
    // config-test ends by SIGTERM to itself (exit 143 through ip-netns) with no output.
    let clean_exit = out.status.success()
        || out.status.signal() == Some(libc::SIGTERM)
        || out.status.code() == Some(128 + libc::SIGTERM);
    assert!(
        clean_exit && out.stderr.is_empty() && out.stdout.is_empty(),
        "keepalived --config-test on deploy/keepalived/keepalived.conf:\n{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------------
// OpenSIPS config: its parts (OpenSIPS itself runs it in tests/opensips_*.rs when built)
// ---------------------------------------------------------------------------------------

#[test]
fn opensips_snippet_has_required_parts() {
    let cfg = read("deploy/opensips/opensips.cfg");
    for needle in [
        "socket=udp:10.1.0.21:5060 as 203.0.113.10:5060",
        "loadmodule \"nathelper.so\"",
        "fix_nated_register();",
        "fix_nated_contact();",
        "modparam(\"nathelper\", \"received_avp\"",
        "modparam(\"registrar\", \"received_avp\"",
        "loadmodule \"clusterer.so\"",
        "loadmodule \"proto_bin.so\"",
        "modparam(\"usrloc\", \"cluster_mode\", \"full-sharing\")",
        "modparam(\"usrloc\", \"location_cluster\", 1)",
        "modparam(\"clusterer\", \"neighbor_node_info\"",
        "is_method(\"OPTIONS\") && $rU == NULL",
        "sl_send_reply(200, \"OK\")",
        "force_send_socket(\"udp:10.1.0.21:5060\")",
        // trunks: by relay endpoint (IP and port), registered phones by their flow
        "loadmodule \"permissions.so\"",
        "check_source_address(1, $var(trunk))",
        "is_ip_registered(\"location\", $fu, $si, $sp)",
        "$du = \"sip:10.1.0.10:5100\";",
    ] {
        assert!(
            cfg.contains(needle),
            "deploy/opensips/opensips.cfg lacks `{needle}`"
        );
    }
    assert!(
        !cfg.contains("cachedb"),
        "the snippet must not need a cachedb backend"
    );
    assert_eq!(
        cfg.matches('{').count(),
        cfg.matches('}').count(),
        "unbalanced braces"
    );
}

// ---------------------------------------------------------------------------------------
// (d) the Debian package
// ---------------------------------------------------------------------------------------

#[test]
fn debian_package_builds_and_has_the_files() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let have_deb = Command::new(&cargo)
        .args(["deb", "--version"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have_deb,
        "cargo-deb is not installed: `cargo install cargo-deb --locked --version 3.8.0` \
         (tests/run.sh does; about 2 minutes on 2 cores)"
    );

    // Package the binary cargo built for this test run, without a release build: cargo-deb
    // reads `target/release/sipfront` from $CARGO_TARGET_DIR/release.
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(SIPFRONT, target.join("release/sipfront")).unwrap();
    let outdir = tmp.path().join("out");
    let out = run(
        Command::new(&cargo)
            .args(["deb", "--no-build", "--strip", "--fast", "--output"])
            .arg(&outdir)
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        "cargo-deb",
    );
    assert!(out.status.success(), "cargo deb:\n{}", text(&out));
    let deb = std::fs::read_dir(&outdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("cargo deb wrote no .deb");

    // The file list.
    let out = run(Command::new("dpkg-deb").arg("-c").arg(&deb), "dpkg");
    assert!(out.status.success(), "dpkg-deb -c:\n{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let entry = |path: &str| -> Option<String> {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .map(str::to_string)
    };
    for (path, mode) in [
        ("usr/bin/sipfront", "-rwxr-xr-x"),
        ("etc/sipfront/sipfront.toml", "-rw-r-----"),
        ("usr/lib/sipfront/check_sipfront.sh", "-rwxr-xr-x"),
        ("usr/share/doc/sipfront/README.md", "-rw-r--r--"),
        (
            "usr/share/doc/sipfront/examples/keepalived/keepalived.conf",
            "-rw-r--r--",
        ),
        (
            "usr/share/doc/sipfront/examples/opensips/opensips.cfg",
            "-rw-r--r--",
        ),
        (
            "usr/share/doc/sipfront/examples/opensips/dbtext/address",
            "-rw-r--r--",
        ),
        (
            "usr/share/doc/sipfront/examples/opensips/dbtext/version",
            "-rw-r--r--",
        ),
        (
            "usr/share/doc/sipfront/examples/opensips/dbtext/subscriber",
            "-rw-r--r--",
        ),
        (
            "usr/share/doc/sipfront/examples/kamailio/kamailio.cfg",
            "-rw-r--r--",
        ),
        (
            "usr/share/doc/sipfront/examples/kamailio/trunks.list",
            "-rw-r--r--",
        ),
        (
            "usr/share/doc/sipfront/examples/kamailio/dbtext/subscriber",
            "-rw-r--r--",
        ),
        (
            "usr/share/doc/sipfront/examples/kamailio/dbtext/version",
            "-rw-r--r--",
        ),
        (
            "usr/share/doc/sipfront/examples/prometheus/alerts.yml",
            "-rw-r--r--",
        ),
        (
            "usr/share/doc/sipfront/examples/grafana/sipfront.json",
            "-rw-r--r--",
        ),
    ] {
        let line = entry(path).unwrap_or_else(|| panic!("{path} not in the package:\n{listing}"));
        assert!(line.starts_with(mode), "{path}: expected {mode}: {line}");
    }
    let unit_path = [
        "lib/systemd/system/sipfront.service",
        "usr/lib/systemd/system/sipfront.service",
    ]
    .into_iter()
    .find(|p| entry(p).is_some())
    .unwrap_or_else(|| panic!("no sipfront.service in the package:\n{listing}"));

    // Control: name, dependencies, conffile, maintainer scripts.
    let out = run(Command::new("dpkg-deb").arg("-I").arg(&deb), "dpkg");
    let info = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(info.contains("Package: sipfront"), "{info}");
    assert!(
        info.lines()
            .any(|l| l.trim_start().starts_with("Depends:") && l.contains("adduser")),
        "Depends lacks adduser:\n{info}"
    );
    let control = tmp.path().join("control");
    let out = run(
        Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control),
        "dpkg",
    );
    assert!(out.status.success(), "dpkg-deb -e:\n{}", text(&out));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/sipfront/sipfront.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("adduser --system") && postinst.contains("useradd --system"),
        "postinst does not create the system user:\n{postinst}"
    );
    assert!(postinst.contains("--ingroup sipfront") && postinst.contains(" sipfront\n"));
    assert!(
        !postinst.contains("deb-systemd-invoke start") && !postinst.contains("systemctl start"),
        "postinst must not start sipfront before its config is edited:\n{postinst}"
    );
    for script in ["postinst", "postrm", "prerm"] {
        let p = control.join(script);
        if p.exists() {
            let out = run(Command::new("sh").arg("-n").arg(&p), "dash");
            assert!(
                out.status.success(),
                "{script} is not valid sh:\n{}",
                text(&out)
            );
        }
    }

    // Contents: the unit and the config are ours, the binary runs.
    let root = tmp.path().join("root");
    let out = run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg",
    );
    assert!(out.status.success(), "dpkg-deb -x:\n{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(root.join(unit_path)).unwrap(),
        read("deploy/systemd/sipfront.service")
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/sipfront/sipfront.toml")).unwrap(),
        read("deploy/sipfront.toml")
    );
    let out = run(
        Command::new(root.join("usr/bin/sipfront")).arg("--version"),
        "sipfront",
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("sipfront "),
        "packaged binary --version:\n{}",
        text(&out)
    );
}
