//! sipfront on the loopback: its config, the running instance and its metrics, and one-shot
//! commands (`ctl`, `check-config`).

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::bin;
use crate::http::http_get;
use crate::metrics::{metric, parse_metrics};
use crate::process::{Proc, TestDir, strip_ansi, wait_until};
use crate::udp::wait_udp_bound;

/// Settings for one sipfront instance; `toml()` renders the config file.
#[derive(Debug, Clone)]
pub struct SipfrontConfig {
    pub sip: SocketAddr,
    /// Relay addresses, comma-separated.
    pub relay: String,
    pub relay_ports: String,
    /// Prefix mode: `relay_prefix` and `relay_port` (then `relay`/`relay_ports` are unused).
    pub relay_prefix: Option<(String, String)>,
    pub backends: Vec<(String, SocketAddr)>,
    pub admin: SocketAddr,
    /// Extra TOML appended verbatim (e.g. `[timeouts]` or `[limits]` sections).
    pub extra: String,
    /// Extra `[listen]` keys.
    pub listen_extra: String,
    /// The open-file limit (soft and hard) sipfront starts with; else the test's.
    pub open_files: Option<u64>,
}

impl SipfrontConfig {
    pub fn new(sip: &str, relay_ports: &str, admin: &str) -> SipfrontConfig {
        let sip: SocketAddr = sip.parse().expect("sip addr");
        SipfrontConfig {
            sip,
            relay: sip.ip().to_string(),
            relay_ports: relay_ports.to_string(),
            relay_prefix: None,
            backends: Vec::new(),
            admin: admin.parse().expect("admin addr"),
            extra: String::new(),
            listen_extra: String::new(),
            open_files: None,
        }
    }

    /// Starts sipfront with this open-file limit, soft and hard (it raises its soft
    /// limit to the hard one): the same on every machine.
    pub fn open_files(mut self, n: u64) -> SipfrontConfig {
        self.open_files = Some(n);
        self
    }

    pub fn backend(mut self, name: &str, addr: &str) -> SipfrontConfig {
        self.backends
            .push((name.to_string(), addr.parse().expect("backend addr")));
        self
    }

    /// Prefix mode: `relay_prefix = PREFIX`, `relay_port = PORTS` (TOML: `5062`, `[5062, 5064]`).
    pub fn prefix(mut self, prefix: &str, ports: &str) -> SipfrontConfig {
        self.relay_prefix = Some((prefix.to_string(), ports.to_string()));
        self
    }

    /// Adds `[listen]` keys.
    pub fn listen(mut self, toml: &str) -> SipfrontConfig {
        self.listen_extra.push_str(toml);
        self.listen_extra.push('\n');
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
        if let Some((prefix, ports)) = &self.relay_prefix {
            writeln!(s, "relay_prefix = \"{prefix}\"\nrelay_port = {ports}").unwrap();
        } else {
            let relay: Vec<String> = self
                .relay
                .split(',')
                .map(|a| format!("\"{}\"", a.trim()))
                .collect();
            writeln!(s, "relay = [{}]", relay.join(", ")).unwrap();
            writeln!(s, "relay_ports = \"{}\"", self.relay_ports).unwrap();
        }
        s.push_str(&self.listen_extra);
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
        let mut cmd = Command::new(bin());
        cmd.args(["run", "-c"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1");
        if let Some(n) = cfg.open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child
            // between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let l = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
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
    /// `sipfront_peer_datagrams_total` of static peer `peer` in `direction`.
    pub fn peer_datagrams(&mut self, peer: &str, direction: &str) -> f64 {
        self.metric(
            "sipfront_peer_datagrams_total",
            &[("peer", peer), ("direction", direction)],
        )
    }

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
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()));
    CmdOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: strip_ansi(&String::from_utf8_lossy(&out.stdout)),
        stderr: strip_ansi(&String::from_utf8_lossy(&out.stderr)),
    }
}
