//! Harness shared by the integration tests that run the real `sipfront` binary against real
//! programs from Debian packages: `sipp` (package `sip-tester`), `kamailio` and `tcpdump`.
//!
//! Every external process is held in a [`Proc`] guard that kills it (and, for Kamailio, its
//! worker processes) when dropped, so a failing test leaves nothing running. When a test panics,
//! the guards print the tail of each process's log and the test directory is kept for
//! inspection. Missing programs fail the test with a message naming the Debian package.
//!
//! Only std is used: HTTP/1.0 over `TcpStream` for the admin endpoint, `/proc/net/udp` to see
//! when a program has bound its port, `/usr/bin/kill` (procps) for signals other than SIGKILL.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Path of the binary under test, built by cargo for integration tests.
pub const SIPFRONT: &str = env!("CARGO_BIN_EXE_sipfront");

/// Directory with the sipp scenarios of these tests.
pub fn scenario(name: &str) -> String {
    format!("{}/tests/sipp/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The Kamailio backend config shipped in deploy/.
pub fn kamailio_cfg() -> String {
    format!(
        "{}/deploy/kamailio/kamailio.cfg",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Debian package that provides a program, for the failure message when it is missing.
fn package_of(program: &str) -> &'static str {
    match program {
        "sipp" => "sip-tester",
        "kamailio" | "kamcmd" => "kamailio",
        "tcpdump" => "tcpdump",
        "kill" => "procps",
        _ => "(unknown package)",
    }
}

fn spawn_error(program: &str, e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::NotFound {
        panic!(
            "program `{program}` not found: install the Debian package `{}` \
             (apt-get install -y {}); the integration tests need it",
            package_of(program),
            package_of(program)
        );
    }
    panic!("cannot start `{program}`: {e}");
}

/// Sends a signal by name (`TERM`, `USR1`, `INT`, ...) to one pid, or to a process group when
/// `pid` is negative, through `/usr/bin/kill`. Errors are ignored (the process may be gone).
pub fn send_signal(pid: i64, sig: &str) {
    let target = pid.to_string();
    match Command::new("kill")
        .args([&format!("-{sig}"), "--", &target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) => spawn_error("kill", e),
    }
}

// ---------------------------------------------------------------------------------------------
// Test directory
// ---------------------------------------------------------------------------------------------

/// A temporary directory for one test: configs, logs, sipp statistics, captures. Removed when
/// the test passes, kept (and its path printed) when it fails. Declare it first in a test so it
/// is dropped last, after the processes that write into it.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("sipfront-{name}-"))
            .tempdir()
            .expect("create temp dir");
        let path = dir.path().to_path_buf();
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(d) = self.dir.take() {
                let kept = d.keep();
                eprintln!("test failed: files kept in {}", kept.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Process guard
// ---------------------------------------------------------------------------------------------

/// A running external process. Dropping it kills it: SIGKILL through `Child::kill`, then
/// `wait`. A process started with [`Proc::spawn_group`] (Kamailio, which forks workers that
/// survive a SIGKILL of the main process) is asked to stop with SIGTERM first, and then its
/// whole process group gets SIGKILL.
pub struct Proc {
    pub name: String,
    child: Child,
    group: bool,
    exited: Option<ExitStatus>,
    /// Files whose tails are printed when the test fails.
    logs: Vec<PathBuf>,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout+stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        Self::start(name, cmd, log, false)
    }

    /// Like [`Proc::spawn`], in a new process group that is killed as a whole on drop.
    pub fn spawn_group(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        cmd.process_group(0);
        Self::start(name, cmd, log, true)
    }

    fn start(name: &str, cmd: &mut Command, log: &Path, group: bool) -> Proc {
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file");
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| spawn_error(&program, e));
        Proc {
            name: name.to_string(),
            child,
            group,
            exited: None,
            logs: vec![log.to_path_buf()],
        }
    }

    /// Also print the tail of `path` if the test fails.
    pub fn add_log(&mut self, path: &Path) {
        self.logs.push(path.to_path_buf());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal by name to the process (not its group).
    pub fn signal(&mut self, sig: &str) {
        if self.is_running() {
            send_signal(self.child.id() as i64, sig);
        }
    }

    /// Last `lines` lines of the process's main log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.logs[0], lines)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.logs[0]).unwrap_or_default()
    }

    /// Panics with the log tail if the process is no longer running.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.try_wait() {
            panic!(
                "{} exited unexpectedly ({st}); log tail:\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }

    fn kill_now(&mut self) {
        let pid = self.child.id() as i64;
        if self.exited.is_none() {
            if self.group {
                // Kamailio's main process stops and reaps its workers on SIGTERM; if that
                // takes too long, SIGKILL the whole group while its leader (not yet reaped)
                // still holds the group id.
                send_signal(pid, "TERM");
                if self.wait_timeout(Duration::from_secs(3)).is_none() {
                    send_signal(-pid, "KILL");
                }
            }
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        if self.group {
            // Workers that outlived their main process (it crashed, or was killed): they
            // keep the group id; kill them one by one.
            for member in group_members(self.child.id()) {
                send_signal(member as i64, "KILL");
            }
        }
    }
}

/// Live (non-zombie) processes whose process group is `pgid`, from `/proc/*/stat`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[0] != "Z" && f[2].parse::<u32>().ok() == Some(pgid)
        })
        .collect()
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
        if std::thread::panicking() {
            for log in &self.logs {
                eprintln!(
                    "----- {} ({}) last lines -----\n{}",
                    self.name,
                    log.display(),
                    tail(log, 40)
                );
            }
        }
    }
}

/// Last `lines` lines of a text file (lossy UTF-8), or a note that it cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            all[from..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

// ---------------------------------------------------------------------------------------------
// Readiness helpers
// ---------------------------------------------------------------------------------------------

/// True if some socket is bound to UDP `port` on IPv4 or IPv6 (read from `/proc/net/udp*`,
/// so checking never takes the port away from the program that is starting).
pub fn udp_port_bound(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|local| local.ends_with(&want))
            })
        })
    })
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes. Returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
}

/// Waits until `proc` has bound UDP `port`; panics (with its log) if it exits or is too slow.
pub fn wait_udp_bound(proc: &mut Proc, port: u16, timeout: Duration) {
    let ok = wait_until(timeout, || {
        proc.assert_running();
        udp_port_bound(port)
    });
    if !ok {
        panic!(
            "{} did not bind udp port {port} within {timeout:?}; log tail:\n{}",
            proc.name,
            proc.log_tail(40)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP + Prometheus text
// ---------------------------------------------------------------------------------------------

/// `GET path` over HTTP/1.0. Returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[])
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format (comments skipped; timestamps ignored).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => (&line[..i], &line[i..]),
            None => continue,
        };
        let mut labels = BTreeMap::new();
        let rest = if let Some(r) = rest.strip_prefix('{') {
            // label="value",... with \" \\ \n escapes inside values
            let mut chars = r.char_indices().peekable();
            let mut end = r.len();
            loop {
                while let Some(&(_, c)) = chars.peek() {
                    if c == ',' || c == ' ' {
                        chars.next();
                    } else {
                        break;
                    }
                }
                match chars.peek() {
                    Some(&(i, '}')) => {
                        end = i + 1;
                        break;
                    }
                    None => break,
                    _ => {}
                }
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    break;
                }
                let mut val = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => val.push('\n'),
                            Some(o) => val.push(o),
                            None => break,
                        },
                        '"' => break,
                        o => val.push(o),
                    }
                }
                labels.insert(key.trim().to_string(), val);
            }
            &r[end.min(r.len())..]
        } else {
            rest
        };
        let Some(v) = rest.split_whitespace().next() else {
            continue;
        };
        let value = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse() {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// Sum of the samples called `name` whose labels include all of `labels` (so an empty or
/// partial label list adds up several series); 0 if there is none.
/// `metric(text, "sipfront_drops_total", &[("reason", "not_sip")])`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Whether any sample called `name` is present at all.
pub fn has_metric(text: &str, name: &str) -> bool {
    parse_metrics(text).iter().any(|s| s.name == name)
}

/// All `sipfront_drops_total` samples with a non-zero value, as `reason -> count`.
pub fn nonzero_drops(text: &str) -> BTreeMap<String, f64> {
    parse_metrics(text)
        .into_iter()
        .filter(|s| s.name == "sipfront_drops_total" && s.value != 0.0)
        .map(|s| (s.labels.get("reason").cloned().unwrap_or_default(), s.value))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// sipfront
// ---------------------------------------------------------------------------------------------

/// Settings for one sipfront instance; `toml()` renders the config file.
#[derive(Debug, Clone)]
pub struct SipfrontConfig {
    pub sip: SocketAddr,
    /// Relay addresses, comma-separated.
    pub relay: String,
    pub relay_ports: String,
    pub backends: Vec<(String, SocketAddr)>,
    pub admin: SocketAddr,
    /// Extra TOML appended verbatim (e.g. `[timeouts]` or `[limits]` sections).
    pub extra: String,
}

impl SipfrontConfig {
    pub fn new(sip: &str, relay_ports: &str, admin: &str) -> SipfrontConfig {
        let sip: SocketAddr = sip.parse().expect("sip addr");
        SipfrontConfig {
            sip,
            relay: sip.ip().to_string(),
            relay_ports: relay_ports.to_string(),
            backends: Vec::new(),
            admin: admin.parse().expect("admin addr"),
            extra: String::new(),
        }
    }

    pub fn backend(mut self, name: &str, addr: &str) -> SipfrontConfig {
        self.backends
            .push((name.to_string(), addr.parse().expect("backend addr")));
        self
    }

    pub fn extra(mut self, toml: &str) -> SipfrontConfig {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn toml(&self) -> String {
        let mut s = String::new();
        writeln!(s, "[listen]").unwrap();
        writeln!(s, "sip = [\"{}\"]", self.sip).unwrap();
        let relay: Vec<String> = self
            .relay
            .split(',')
            .map(|a| format!("\"{}\"", a.trim()))
            .collect();
        writeln!(s, "relay = [{}]", relay.join(", ")).unwrap();
        writeln!(s, "relay_ports = \"{}\"", self.relay_ports).unwrap();
        for (name, addr) in &self.backends {
            writeln!(s, "\n[[backend]]\nname = \"{name}\"\naddr = \"{addr}\"").unwrap();
        }
        writeln!(s, "\n[admin]\nlisten = \"{}\"\n", self.admin).unwrap();
        s.push_str(&self.extra);
        s
    }
}

/// A running `sipfront run -c FILE`, its log in the test directory.
pub struct Sipfront {
    pub proc: Proc,
    pub cfg: SipfrontConfig,
    pub config_path: PathBuf,
}

impl Sipfront {
    /// Writes the config, starts sipfront and waits until `/metrics` answers and the SIP port
    /// is bound.
    pub fn start(dir: &TestDir, cfg: SipfrontConfig) -> Sipfront {
        let config_path = dir.join("sipfront.toml");
        fs::write(&config_path, cfg.toml()).expect("write sipfront config");
        let log = dir.join("sipfront.log");
        let mut cmd = Command::new(SIPFRONT);
        cmd.args(["run", "-c"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1");
        let mut proc = Proc::spawn("sipfront", &mut cmd, &log);
        let admin = cfg.admin;
        let ok = wait_until(Duration::from_secs(15), || {
            proc.assert_running();
            matches!(http_get(admin, "/metrics"), Ok((200, _)))
        });
        if !ok {
            panic!(
                "sipfront admin http://{admin}/metrics did not answer within 15 s; config:\n{}\nlog tail:\n{}",
                cfg.toml(),
                proc.log_tail(40)
            );
        }
        wait_udp_bound(&mut proc, cfg.sip.port(), Duration::from_secs(5));
        let mut front = Sipfront {
            proc,
            cfg,
            config_path,
        };
        front.wait_backends_up(Duration::from_secs(10));
        front
    }

    /// Waits until the health checker reports every configured backend up
    /// (`sipfront_backend_up{backend=NAME} == 1`); panics with the metrics otherwise.
    pub fn wait_backends_up(&mut self, timeout: Duration) {
        let names: Vec<String> = self.cfg.backends.iter().map(|(n, _)| n.clone()).collect();
        let mut text = String::new();
        let ok = wait_until(timeout, || {
            text = self.metrics();
            names
                .iter()
                .all(|n| metric(&text, "sipfront_backend_up", &[("backend", n)]) == 1.0)
        });
        if !ok {
            let up: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with("sipfront_backend_up"))
                .map(str::to_string)
                .collect();
            panic!(
                "backends not all up within {timeout:?}: {up:?}; sipfront log tail:\n{}",
                self.proc.log_tail(30)
            );
        }
    }

    /// The current `/metrics` text; panics (with sipfront's log) if it cannot be fetched.
    pub fn metrics(&mut self) -> String {
        match http_get(self.cfg.admin, "/metrics") {
            Ok((200, body)) => body,
            Ok((code, body)) => panic!("GET /metrics answered {code}: {body}"),
            Err(e) => {
                self.proc.assert_running();
                panic!("GET http://{}/metrics failed: {e}", self.cfg.admin)
            }
        }
    }

    /// Value of one metric (sum over matching series), see [`metric`].
    pub fn metric(&mut self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics(), name, labels)
    }

    /// Counters are published a few times a second: polls until `pred(value)` holds or
    /// `timeout` passes, and returns the last value either way.
    pub fn wait_metric(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric(name, labels);
            if pred(v) || Instant::now() >= deadline {
                return v;
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the counters (`*_total`) stop changing for `quiet` (fully published), or
    /// `timeout` passes; returns the last metrics text.
    pub fn settled_metrics(&mut self, quiet: Duration, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        // Series order varies between scrapes: compare sorted counter samples.
        let counters = |t: &str| -> Vec<(String, String, u64)> {
            let mut v: Vec<_> = parse_metrics(t)
                .into_iter()
                .filter(|s| s.name.ends_with("_total"))
                .map(|s| (s.name, format!("{:?}", s.labels), s.value.to_bits()))
                .collect();
            v.sort();
            v
        };
        let mut last = self.metrics();
        let mut since = Instant::now();
        loop {
            sleep(Duration::from_millis(100));
            let now = self.metrics();
            if counters(&now) != counters(&last) {
                since = Instant::now();
            }
            last = now;
            if since.elapsed() >= quiet || Instant::now() >= deadline {
                return last;
            }
        }
    }

    pub fn assert_running(&mut self) {
        self.proc.assert_running();
    }
}

// ---------------------------------------------------------------------------------------------
// sipp
// ---------------------------------------------------------------------------------------------

/// Statistics of one sipp run: the last row of its `-trace_stat` CSV file.
#[derive(Debug, Clone, Default)]
pub struct SippStats {
    pub fields: HashMap<String, String>,
}

impl SippStats {
    /// Reads the last row of a sipp statistics CSV (`;`-separated, header in the first line).
    pub fn read(path: &Path) -> Option<SippStats> {
        let text = fs::read_to_string(path).ok()?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next()?.split(';').collect();
        let last: Vec<&str> = lines.next_back()?.split(';').collect();
        let fields = header
            .iter()
            .zip(last.iter())
            .map(|(h, v)| (h.trim().to_string(), v.trim().to_string()))
            .collect();
        Some(SippStats { fields })
    }

    /// Integer counter by column name, e.g. `SuccessfulCall(C)`; 0 if absent.
    pub fn get(&self, name: &str) -> u64 {
        self.fields
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn successful(&self) -> u64 {
        self.get("SuccessfulCall(C)")
    }
    pub fn failed(&self) -> u64 {
        self.get("FailedCall(C)")
    }
    pub fn incoming(&self) -> u64 {
        self.get("IncomingCall(C)")
    }
    pub fn outgoing(&self) -> u64 {
        self.get("OutgoingCall(C)")
    }
    pub fn created(&self) -> u64 {
        self.get("TotalCallCreated")
    }
    pub fn retransmissions(&self) -> u64 {
        self.get("Retransmissions(C)")
    }
}

/// Result of a finished sipp run.
#[derive(Debug)]
pub struct SippResult {
    pub status: ExitStatus,
    pub stats: SippStats,
    /// sipp's error trace (`-trace_err`), empty if there were no errors.
    pub errors: String,
}

impl SippResult {
    /// sipp exits 0 when every call succeeded.
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// A running sipp. Started with `-nostdin`, `-trace_stat` (CSV every second, `stats.csv`),
/// `-trace_err` (`errors.log`) and with its screen output in `sipp.log`, all in its own
/// subdirectory of the test directory.
pub struct Sipp {
    pub proc: Proc,
    pub dir: PathBuf,
    pub stat_file: PathBuf,
    pub error_file: PathBuf,
    pub message_file: PathBuf,
}

impl Sipp {
    /// Starts sipp with `args` (scenario, ports, remote address...). `name` names the
    /// subdirectory and the guard.
    pub fn start(test: &TestDir, name: &str, args: &[&str]) -> Sipp {
        Self::start_opts(test, name, args, false)
    }

    /// Like [`Sipp::start`], also tracing every message to `messages.log` (`-trace_msg`).
    pub fn start_traced(test: &TestDir, name: &str, args: &[&str]) -> Sipp {
        Self::start_opts(test, name, args, true)
    }

    fn start_opts(test: &TestDir, name: &str, args: &[&str], trace_msg: bool) -> Sipp {
        let dir = test.join(name);
        fs::create_dir_all(&dir).expect("create sipp dir");
        let stat_file = dir.join("stats.csv");
        let error_file = dir.join("errors.log");
        let message_file = dir.join("messages.log");
        let mut cmd = Command::new("sipp");
        cmd.current_dir(&dir)
            .args(args)
            .args(["-nostdin", "-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat_file)
            .args(["-trace_err", "-error_file"])
            .arg(&error_file);
        if trace_msg {
            cmd.args(["-trace_msg", "-message_file"]).arg(&message_file);
        }
        let mut proc = Proc::spawn(name, &mut cmd, &dir.join("sipp.log"));
        proc.add_log(&error_file);
        Sipp {
            proc,
            dir,
            stat_file,
            error_file,
            message_file,
        }
    }

    /// Waits until sipp has bound its main UDP port (`-p`).
    pub fn wait_bound(&mut self, port: u16) {
        wait_udp_bound(&mut self.proc, port, Duration::from_secs(10));
    }

    /// Statistics written so far (sipp dumps them every second and at exit).
    pub fn stats(&self) -> SippStats {
        SippStats::read(&self.stat_file).unwrap_or_default()
    }

    /// Per-message counters so far (only when started with `-trace_counts`).
    pub fn counts(&self) -> SippCounts {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return SippCounts::default();
        };
        let Some(path) = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("_counts.csv"))
        else {
            return SippCounts::default();
        };
        let text = fs::read_to_string(path).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let (Some(header), Some(last)) = (lines.next(), lines.next_back()) else {
            return SippCounts::default();
        };
        let fields = header
            .split(';')
            .zip(last.split(';'))
            .filter_map(|(h, v)| Some((h.trim().to_string(), v.trim().parse().ok()?)))
            .collect();
        SippCounts { fields }
    }

    /// Messages traced so far (only with [`Sipp::start_traced`]).
    pub fn messages(&self) -> String {
        fs::read_to_string(&self.message_file).unwrap_or_default()
    }

    /// Waits for sipp to exit by itself; panics (killing it) after `timeout`.
    /// Waits for a UAC run and asserts that it ended well with all `calls` calls
    /// successful and none failed.
    pub fn expect_all_ok(&mut self, calls: u64, timeout: Duration) -> SippResult {
        let r = self.wait(timeout);
        assert!(r.ok(), "UAC failed: {}", self.describe(&r));
        assert_eq!(r.stats.successful(), calls, "{}", self.describe(&r));
        assert_eq!(r.stats.failed(), 0, "{}", self.describe(&r));
        r
    }

    pub fn wait(&mut self, timeout: Duration) -> SippResult {
        let Some(status) = self.proc.wait_timeout(timeout) else {
            panic!(
                "sipp `{}` still running after {timeout:?}; screen tail:\n{}\nerrors:\n{}",
                self.proc.name,
                self.proc.log_tail(40),
                tail(&self.error_file, 20)
            );
        };
        self.result(status)
    }

    /// Asks sipp to stop (SIGUSR1: no new calls, exit once the current calls end) and waits
    /// for its final statistics; after `timeout` it is killed and the last dump is used.
    pub fn stop(&mut self, timeout: Duration) -> SippResult {
        self.proc.signal("USR1");
        let status = match self.proc.wait_timeout(timeout) {
            Some(st) => st,
            None => {
                self.proc.kill_now();
                self.proc.try_wait().expect("sipp killed")
            }
        };
        self.result(status)
    }

    fn result(&self, status: ExitStatus) -> SippResult {
        SippResult {
            status,
            stats: self.stats(),
            errors: fs::read_to_string(&self.error_file).unwrap_or_default(),
        }
    }

    /// A short description for assertion messages.
    pub fn describe(&self, r: &SippResult) -> String {
        format!(
            "sipp `{}`: {} created={} successful={} failed={} retrans={}\nscreen tail:\n{}\nerrors (head):\n{}",
            self.proc.name,
            r.status,
            r.stats.created(),
            r.stats.successful(),
            r.stats.failed(),
            r.stats.retransmissions(),
            self.proc.log_tail(30),
            r.errors.lines().take(40).collect::<Vec<_>>().join("\n")
        )
    }
}

/// Starts a UAS backend on `127.0.0.1:port` (mono socket): `tests/sipp/uas.xml`, sipp's
/// built-in UAS that also answers sipfront's OPTIONS health probes. Probes are calls too, so
/// count INVITE calls with [`Sipp::counts`] (`-trace_counts`), e.g. `counts.recv("INVITE")`.
/// Waits until it is bound.
pub fn sipp_uas(test: &TestDir, name: &str, port: u16) -> Sipp {
    let p = port.to_string();
    let sf = scenario("uas.xml");
    let mut s = Sipp::start(
        test,
        name,
        &[
            "-sf",
            &sf,
            "-i",
            "127.0.0.1",
            "-p",
            &p,
            "-t",
            "u1",
            "-trace_counts",
        ],
    );
    s.wait_bound(port);
    s
}

/// Per-message counters of a sipp scenario (the last row of its `-trace_counts` CSV), with
/// columns like `1_INVITE_Recv`, `3_200_Sent`, `5_BYE_Recv`.
#[derive(Debug, Clone, Default)]
pub struct SippCounts {
    pub fields: Vec<(String, u64)>,
}

impl SippCounts {
    /// Sum of the `N_<what>_Recv` columns (e.g. `recv("INVITE")`).
    pub fn recv(&self, what: &str) -> u64 {
        self.sum(&format!("_{what}_Recv"))
    }

    /// Sum of the `N_<what>_Sent` columns (e.g. `sent("200")`).
    pub fn sent(&self, what: &str) -> u64 {
        self.sum(&format!("_{what}_Sent"))
    }

    fn sum(&self, suffix: &str) -> u64 {
        self.fields
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| v)
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Kamailio
// ---------------------------------------------------------------------------------------------

/// A running Kamailio (deploy/kamailio/kamailio.cfg) in the foreground, its pid file, runtime
/// dir and ctl socket in its own subdirectory of the test directory.
pub struct Kamailio {
    pub proc: Proc,
    pub dir: PathBuf,
    pub ctl: String,
    pub port: u16,
}

impl Kamailio {
    /// Starts Kamailio listening on `127.0.0.1:port` with the given extra `-A` defines
    /// (`"VIP_PORT=26060"`, `"WITH_DMQ"`, `"DMQ_PEER=\"sip:127.0.0.1:26173\""`...), and waits
    /// until its SIP port is bound.
    pub fn start(test: &TestDir, name: &str, port: u16, defines: &[String]) -> Kamailio {
        let dir = test.join(name);
        fs::create_dir_all(&dir).expect("create kamailio dir");
        let ctl = format!("unix:{}", dir.join("ctl").display());
        let mut cmd = Command::new("kamailio");
        cmd.args(["-DD", "-E", "-f"])
            .arg(kamailio_cfg())
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .arg("-Y")
            .arg(&dir)
            // small shared/private memory: several nodes on a small test machine
            .args(["-m", "32", "-M", "4"])
            .args(["-A", "SIP_IP=127.0.0.1"])
            .args(["-A", &format!("SIP_PORT={port}")])
            .args(["-A", &format!("CTL_SOCK=\"{ctl}\"")]);
        for d in defines {
            cmd.args(["-A", d]);
        }
        let mut proc = Proc::spawn_group(name, &mut cmd, &dir.join("kamailio.log"));
        wait_udp_bound(&mut proc, port, Duration::from_secs(15));
        let k = Kamailio {
            proc,
            dir,
            ctl,
            port,
        };
        // The ctl socket appears once the workers are up.
        let sock = k.dir.join("ctl");
        if !wait_until(Duration::from_secs(10), || sock.exists()) {
            panic!("kamailio {name}: no ctl socket at {}", sock.display());
        }
        k
    }

    /// Runs `kamcmd -s CTL args...` and returns its stdout.
    pub fn kamcmd(&self, args: &[&str]) -> String {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(&self.ctl)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| spawn_error("kamcmd", e));
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// The `Received:` addresses (`sip:IP:PORT`) stored for `aor`, from `ul.dump`.
    pub fn received_of(&self, aor: &str) -> Vec<String> {
        let dump = self.kamcmd(&["ul.dump"]);
        let mut out = Vec::new();
        let mut in_aor = false;
        for line in dump.lines() {
            let l = line.trim();
            if let Some(a) = l.strip_prefix("AoR:") {
                in_aor = a.trim() == aor;
            } else if in_aor {
                if let Some(r) = l.strip_prefix("Received:") {
                    out.push(r.trim().to_string());
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// tcpdump
// ---------------------------------------------------------------------------------------------

/// One captured UDP datagram's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Packet {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// A `tcpdump -i lo` capture of UDP datagrams, text output in the test directory.
pub struct Capture {
    proc: Proc,
    out: PathBuf,
    err: PathBuf,
}

impl Capture {
    /// Starts capturing `udp and (FILTER)` on the loopback interface and waits until tcpdump
    /// is listening.
    pub fn start(test: &TestDir, name: &str, filter: &str) -> Capture {
        let out = test.join(&format!("{name}.txt"));
        let err = test.join(&format!("{name}.err"));
        let mut cmd = Command::new("tcpdump");
        cmd.args([
            "-i",
            "lo",
            "-nn",
            "-l",
            "--immediate-mode",
            "-B",
            "16384",
            "-Q",
            "in",
        ])
        .arg(format!("udp and ({filter})"));
        let stdout = File::create(&out).expect("create capture file");
        let stderr = File::create(&err).expect("create capture err file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| spawn_error("tcpdump", e));
        let mut proc = Proc {
            name: format!("tcpdump {name}"),
            child,
            group: false,
            exited: None,
            logs: vec![err.clone()],
        };
        let ok = wait_until(Duration::from_secs(10), || {
            proc.assert_running();
            fs::read_to_string(&err).is_ok_and(|t| t.contains("listening on"))
        });
        assert!(ok, "tcpdump did not start listening: {}", tail(&err, 10));
        Capture { proc, out, err }
    }

    /// Stops the capture (SIGINT, so tcpdump flushes and reports its counters) and returns
    /// the captured datagrams. Panics if the kernel dropped packets (incomplete capture).
    pub fn stop(mut self) -> Vec<Packet> {
        // Let packets still in flight reach the capture buffer.
        sleep(Duration::from_millis(300));
        self.proc.signal("INT");
        if self.proc.wait_timeout(Duration::from_secs(5)).is_none() {
            self.proc.kill_now();
        }
        let err = fs::read_to_string(&self.err).unwrap_or_default();
        if let Some(line) = err.lines().find(|l| l.contains("dropped by kernel")) {
            let n: u64 = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            assert_eq!(n, 0, "tcpdump capture incomplete: {err}");
        }
        let text = fs::read_to_string(&self.out).unwrap_or_default();
        text.lines().filter_map(parse_tcpdump_line).collect()
    }
}

/// Parses `12:00:00.000000 IP 127.0.0.1.20001 > 127.0.0.1.25070: ...`.
pub fn parse_tcpdump_line(line: &str) -> Option<Packet> {
    let mut it = line.split_whitespace();
    it.find(|t| *t == "IP")?;
    let src = it.next()?;
    if it.next()? != ">" {
        return None;
    }
    let dst = it.next()?.trim_end_matches(':');
    Some(Packet {
        src: dotted_addr(src)?,
        dst: dotted_addr(dst)?,
    })
}

/// `127.0.0.1.5060` -> `127.0.0.1:5060`.
fn dotted_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.rsplit_once('.')?;
    format!("{ip}:{port}").parse().ok()
}

/// Splits datagrams sent to backends into those from sipfront's relay ports and the rest,
/// asserting that the rest come from at most `max_probe_sockets` source ports (sipfront's
/// OPTIONS health-probe socket(s), the only other sender to a backend in these tests).
pub fn split_relay_traffic(
    packets: &[Packet],
    relay_ports: std::ops::RangeInclusive<u16>,
    max_probe_sockets: usize,
) -> (Vec<Packet>, Vec<Packet>) {
    let (relayed, other): (Vec<Packet>, Vec<Packet>) = packets
        .iter()
        .partition(|p| relay_ports.contains(&p.src.port()));
    let probe_ports: BTreeSet<u16> = other.iter().map(|p| p.src.port()).collect();
    assert!(
        probe_ports.len() <= max_probe_sockets,
        "datagrams to backends from outside relay_ports {relay_ports:?} other than the health \
         probe socket: source ports {probe_ports:?}"
    );
    (relayed, other)
}

/// For each source port, the set of destination ports it sent to.
/// Backend ports each relay endpoint (source address) sent to.
pub fn destinations_by_source(packets: &[Packet]) -> BTreeMap<SocketAddr, BTreeSet<u16>> {
    let mut m: BTreeMap<SocketAddr, BTreeSet<u16>> = BTreeMap::new();
    for p in packets {
        m.entry(p.src).or_default().insert(p.dst.port());
    }
    m
}

// ---------------------------------------------------------------------------------------------
// A plain UDP backend that answers health probes
// ---------------------------------------------------------------------------------------------

/// A backend made of a plain UDP socket, for byte-level tests. A thread answers sipfront's
/// OPTIONS health probes (OPTIONS requests that do not come from a relay port) with 200, as a
/// real SIP server would, and hands every other datagram to the test through [`recv`].
pub struct FakeBackend {
    sock: UdpSocket,
    rx: std::sync::mpsc::Receiver<(Vec<u8>, SocketAddr)>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub probes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FakeBackend {
    /// Binds `127.0.0.1:port`; `relay_ports` is sipfront's relay port range.
    pub fn start(port: u16, relay_ports: std::ops::RangeInclusive<u16>) -> FakeBackend {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::{Arc, mpsc};
        let sock = udp(port, Duration::from_millis(50));
        let rsock = sock.try_clone().expect("clone socket");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(AtomicU64::new(0));
        let (stop2, probes2) = (stop.clone(), probes.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Some((d, from)) = recv(&rsock) else {
                    continue;
                };
                if d.starts_with(b"OPTIONS ") && !relay_ports.contains(&from.port()) {
                    probes2.fetch_add(1, Ordering::Relaxed);
                    let _ = rsock.send_to(&sip_reply_to(&d, "200 OK"), from);
                    continue;
                }
                if tx.send((d, from)).is_err() {
                    break;
                }
            }
        });
        FakeBackend {
            sock,
            rx,
            stop,
            thread: Some(thread),
            probes,
        }
    }

    /// The next datagram that is not a health probe, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        self.rx.recv_timeout(timeout).ok()
    }

    pub fn send_to(&self, d: &[u8], to: SocketAddr) {
        self.sock.send_to(d, to).expect("backend send_to");
    }

    /// Health probes answered so far.
    pub fn probes(&self) -> u64 {
        self.probes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A response with `status` ("200 OK") to the request `req`, copying Via, From, To, Call-ID
/// and CSeq (a To tag is added).
pub fn sip_reply_to(req: &[u8], status: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(req);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in head.lines().skip(1) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                out.push_str(line.trim_end());
                out.push_str("\r\n");
            }
            "to" | "t" => {
                out.push_str(line.trim_end());
                if !line.contains(";tag=") {
                    out.push_str(";tag=fake-backend");
                }
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Plain UDP helpers
// ---------------------------------------------------------------------------------------------

/// A UDP socket on 127.0.0.1 (given port, or any if 0) with a receive timeout.
pub fn udp(port: u16, timeout: Duration) -> UdpSocket {
    let s = UdpSocket::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("bind udp 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(timeout)).unwrap();
    s
}

/// Receives one datagram, or `None` on timeout.
pub fn recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70_000];
    loop {
        return match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                buf.truncate(n);
                Some((buf, from))
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                None
            }
            // A signal to the test process (a child exiting, say) interrupts a
            // blocking receive: not an error of the thing under test.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("recv_from: {e}"),
        };
    }
}

/// A minimal SIP request with the given method and Call-ID and an optional body.
pub fn sip_request(method: &str, call_id: &str, from_port: u16, body: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "{method} sip:service@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{from_port};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:test@127.0.0.1:{from_port}>;tag=t-{call_id}\r\n\
         To: <sip:service@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:test@127.0.0.1:{from_port}>\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

// ---------------------------------------------------------------------------------------------
// Health, failover and admin helpers (tests/health.rs, tests/admin_ctl.rs, tests/spread.rs)
// ---------------------------------------------------------------------------------------------

/// An HTTP/1.0 request with an empty body and extra headers (e.g. `Authorization`).
/// Returns (status code, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header end in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// `GET path` of the admin API as JSON; panics if it does not answer 200 with JSON.
pub fn get_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    match http_get(admin, path) {
        Ok((200, body)) => serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}")),
        Ok((code, body)) => panic!("GET http://{admin}{path} answered {code}: {body}"),
        Err(e) => panic!("GET http://{admin}{path} failed: {e}"),
    }
}

/// The entry of backend `name` in `GET /api/v1/status`, if listed.
pub fn backend_status(admin: SocketAddr, name: &str) -> Option<serde_json::Value> {
    get_json(admin, "/api/v1/status")["backends"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
}

/// The backend sipfront routes `client`'s flow to, from `GET /api/v1/flows?client=`;
/// `None` when there is no flow for that client.
pub fn flow_backend(admin: SocketAddr, client: SocketAddr) -> Option<String> {
    let v = get_json(admin, &format!("/api/v1/flows?client={client}&limit=10"));
    let flows = v["flows"].as_array()?;
    assert!(flows.len() <= 1, "several flows for one client: {v}");
    flows
        .first()
        .and_then(|f| f["backend"].as_str())
        .map(str::to_string)
}

/// `text` without ANSI escape sequences (tracing colours its log lines).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // parameters and intermediates, then one final byte in '@'..='~'
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Lines of a process's log (colours removed) that contain every one of `needles`.
pub fn log_lines(proc: &Proc, needles: &[&str]) -> Vec<String> {
    strip_ansi(&proc.log_text())
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// Sends a signal to the whole process group of a process started with
/// [`Proc::spawn_group`] (Kamailio and its workers).
pub fn signal_group(proc: &Proc, sig: &str) {
    send_signal(-(proc.pid() as i64), sig);
}

/// Output of a finished `sipfront` command (`ctl ...`, `check-config ...`).
#[derive(Debug)]
pub struct CmdOutput {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `sipfront ARGS` to completion (e.g. `["ctl", "--admin", ADDR, "status"]`).
pub fn run_sipfront(args: &[&str]) -> CmdOutput {
    let out = Command::new(SIPFRONT)
        .args(args)
        .stdin(Stdio::null())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SIPFRONT}: {e}"));
    CmdOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: strip_ansi(&String::from_utf8_lossy(&out.stdout)),
        stderr: strip_ansi(&String::from_utf8_lossy(&out.stderr)),
    }
}

/// A SIP user agent on a plain UDP socket with a chosen address (a "phone" whose flow
/// at sipfront is exactly that address): builds requests, retransmits them like a UAC
/// (every 500 ms) and waits for the final response with the same Call-ID and CSeq.
pub struct SipClient {
    pub sock: UdpSocket,
    pub local: SocketAddr,
    /// Where requests go (sipfront's public address).
    pub server: SocketAddr,
    pub user: String,
}

impl SipClient {
    pub fn bind(local: SocketAddr, server: SocketAddr, user: &str) -> SipClient {
        let sock = UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind udp {local}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        SipClient {
            local: sock.local_addr().unwrap(),
            sock,
            server,
            user: user.to_string(),
        }
    }

    /// A request to sipfront's address (no user part, so a SIP server answers OPTIONS
    /// itself and takes REGISTER for `user`); `extra` headers end in `\r\n`.
    pub fn request(&self, method: &str, call_id: &str, cseq: u32, extra: &str) -> Vec<u8> {
        let (srv, local, user) = (self.server, self.local, &self.user);
        format!(
            "{method} sip:{srv} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{srv}>;tag=from-{call_id}\r\n\
             To: <sip:{user}@{srv}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{user}@{local}>\r\n\
             {extra}\
             User-Agent: sipfront-test\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    pub fn send(&self, msg: &[u8]) {
        self.sock
            .send_to(msg, self.server)
            .unwrap_or_else(|e| panic!("send from {} to {}: {e}", self.local, self.server));
    }

    /// Sends `msg` and waits up to `timeout` for its final response (status >= 200,
    /// same Call-ID and CSeq), retransmitting every 500 ms. Other datagrams are skipped.
    pub fn transact(&self, msg: &[u8], timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let text = String::from_utf8_lossy(msg).into_owned();
        let call_id = sip_header(&text, "Call-ID").expect("request has a Call-ID");
        let cseq = sip_header(&text, "CSeq").expect("request has a CSeq");
        let deadline = Instant::now() + timeout;
        let mut next_send = Instant::now();
        while Instant::now() < deadline {
            if Instant::now() >= next_send {
                self.send(msg);
                next_send = Instant::now() + Duration::from_millis(500);
            }
            let Some((d, from)) = recv(&self.sock) else {
                continue;
            };
            let r = String::from_utf8_lossy(&d);
            if sip_status(&r).is_some_and(|c| c >= 200)
                && sip_header(&r, "Call-ID").as_deref() == Some(call_id.as_str())
                && sip_header(&r, "CSeq").as_deref() == Some(cseq.as_str())
            {
                return Some((d, from));
            }
        }
        None
    }

    /// Like [`SipClient::transact`], panicking unless the final response is `code`.
    pub fn expect(&self, msg: &[u8], code: u16, timeout: Duration) -> String {
        let what = String::from_utf8_lossy(msg)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let Some((d, from)) = self.transact(msg, timeout) else {
            panic!(
                "{}: no final response to `{what}` within {timeout:?}",
                self.local
            );
        };
        let r = String::from_utf8_lossy(&d).into_owned();
        assert_eq!(
            sip_status(&r),
            Some(code),
            "{}: response to `{what}` from {from}:\n{r}",
            self.local
        );
        r
    }
}

/// Status code of a SIP response (`None` for a request).
pub fn sip_status(msg: &str) -> Option<u16> {
    msg.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// Value of the first header `name` (case-insensitive; compact forms of Via, From, To,
/// Call-ID accepted), trimmed.
pub fn sip_header(msg: &str, name: &str) -> Option<String> {
    let compact = match name.to_ascii_lowercase().as_str() {
        "via" => "v",
        "from" => "f",
        "to" => "t",
        "call-id" => "i",
        "contact" => "m",
        "content-length" => "l",
        _ => "",
    };
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case(name) || (!compact.is_empty() && n.eq_ignore_ascii_case(compact)))
            .then(|| v.trim().to_string())
    })
}

/// A network namespace (`ip netns add`) with its loopback up, deleted on drop. Programs
/// run in it through [`NetNs::command`]; test code runs in it through [`NetNs::run`]
/// (sockets created there stay in the namespace when used from other threads).
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A namespace with a unique name `sf-TAG-PID-N`. Needs root.
    pub fn new(tag: &str) -> NetNs {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "sf-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ip = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("cannot run `ip` (package iproute2): {e}"));
            assert!(
                out.status.success(),
                "ip {args:?} failed (root needed): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NAME program`: add the program's arguments to it.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that has entered the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: a valid namespace fd; setns affects only this thread.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `/api/v1/status` is a snapshot refreshed a few times a second: polls until backend
/// `name`'s `key` equals `want` (a JSON string, bool or number) and returns its entry;
/// panics with the last entry after 10 s.
pub fn wait_backend_status(
    admin: SocketAddr,
    name: &str,
    key: &str,
    want: impl Into<serde_json::Value>,
) -> serde_json::Value {
    let want = want.into();
    let mut last = None;
    let ok = wait_until(Duration::from_secs(10), || {
        last = backend_status(admin, name);
        last.as_ref().is_some_and(|b| b[key] == want)
    });
    assert!(
        ok,
        "status of backend {name}: {key} should be {want}, last seen: {last:?}"
    );
    last.unwrap()
}
