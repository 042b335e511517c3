//! The sipfront under test: the real release binary with a config written for this
//! bench, checked first (`check-config`), started in the foreground and ready (both
//! stub backends up) when `start` returns. Dropping it kills it by pid.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The sipfront binary: this build, or `SIPFRONT_BIN` (see `testkit::bench_bin`).
pub fn bin() -> String {
    testkit::bench_bin(env!("CARGO_BIN_EXE_sipfront"))
        .display()
        .to_string()
}

/// Addresses and limits of one run.
pub struct Setup {
    pub sip: SocketAddr,
    pub admin: SocketAddr,
    pub backends: [SocketAddr; 2],
    pub relays: Vec<Ipv4Addr>,
    pub relay_ports: (u16, u16),
    /// Prefix mode: `relay_prefix`, on the first relay port.
    pub prefix: Option<String>,
}

impl Setup {
    /// Flows the relay endpoints hold: ports × addresses.
    pub fn relay_capacity(&self) -> usize {
        if let Some(p) = &self.prefix {
            let len: u32 = p
                .rsplit('/')
                .next()
                .and_then(|l| l.parse().ok())
                .unwrap_or(32);
            return 1usize << (32 - len).min(20);
        }
        usize::from(self.relay_ports.1 - self.relay_ports.0 + 1) * self.relays.len()
    }

    /// One relay address is written as a string (the form every sipfront reads), more
    /// as a list (`relay = ["a", "b"]`, newer sipfront only).
    pub fn toml(&self) -> String {
        let relay = match self.relays.as_slice() {
            [one] => format!("\"{one}\""),
            many => format!(
                "[{}]",
                many.iter()
                    .map(|r| format!("\"{r}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let relay = match &self.prefix {
            Some(p) => format!(
                "relay_prefix = \"{p}\"\nrelay_port = {}",
                self.relay_ports.0
            ),
            None => format!(
                "relay = {relay}\nrelay_ports = \"{}-{}\"",
                self.relay_ports.0, self.relay_ports.1
            ),
        };
        format!(
            r#"# Written by benches/flows.rs.
[listen]
sip = ["{sip}"]
{relay}

[[backend]]
name = "a"
addr = "{a}"

[[backend]]
name = "b"
addr = "{b}"

[limits]
max_flows = {max_flows}
max_dialogs = 1000000
# Every client has its own IP, but be generous anyway.
new_flows_per_ip = 100000
new_flows_burst = 100000
# Load from one address on loopback: lift the per-source limits.
max_flows_per_ip = 10000000
datagrams_per_ip = 100000000
datagrams_burst = 100000000

[timeouts]
flow_idle = "10m"

[admin]
listen = "{admin}"
"#,
            sip = self.sip,
            a = self.backends[0],
            b = self.backends[1],
            max_flows = self.relay_capacity(),
            admin = self.admin,
        )
    }
}

/// Runs `sipfront check-config`; Err holds its complaint.
pub fn check_config(cfg: &Path) -> Result<(), String> {
    let bin = bin();
    let out = Command::new(&bin)
        .arg("check-config")
        .arg(cfg)
        .output()
        .map_err(|e| format!("cannot run {bin}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let code = out
        .status
        .code()
        .map_or("a signal".into(), |c| c.to_string());
    Err(format!("check-config exited with {code}: {}", text.trim()))
}

pub struct Sipfront {
    child: Child,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Sipfront {
    /// Starts sipfront on `cfg` and waits (bounded) until it is ready and both
    /// backends are up.
    pub fn start(cfg: &Path, admin: SocketAddr, dir: &Path) -> Result<Sipfront, String> {
        let log = dir.join("sipfront.log");
        let out = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let bin = bin();
        let mut cmd = Command::new(&bin);
        cmd.arg("run")
            .arg("-c")
            .arg(cfg)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        // sipfront gets SIGTERM if the bench dies without running its destructors.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
        let mut s = Sipfront { child, admin, log };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = s.child.try_wait() {
                return Err(format!("sipfront exited ({st}):\n{}", s.log_tail()));
            }
            let up = s
                .metrics()
                .map(|m| testkit::metric(&m, "sipfront_backend_up", &[]))
                .unwrap_or(0.0);
            if up >= 2.0 && testkit::http_body(admin, "/ready").is_some() {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "sipfront not ready with both backends up after 15 s:\n{}",
                    s.log_tail()
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn metrics(&self) -> Option<String> {
        testkit::http_body(self.admin, "/metrics")
    }

    /// `metric` (summed over its labels) once it stops moving: sipfront publishes
    /// every 200 ms. Bounded to about 6 s.
    pub fn settled(&self, names: &[&str]) -> Vec<f64> {
        let mut last: Option<Vec<f64>> = None;
        for _ in 0..20 {
            sleep(Duration::from_millis(300));
            let Some(text) = self.metrics() else { break };
            let now: Vec<f64> = names
                .iter()
                .map(|n| testkit::metric(&text, n, &[]))
                .collect();
            if last.as_ref() == Some(&now) {
                break;
            }
            last = Some(now);
        }
        last.unwrap_or_else(|| vec![f64::NAN; names.len()])
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Sipfront {
    fn drop(&mut self) {
        // Our own child, by pid (Child::kill), then reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
