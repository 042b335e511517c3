//! Child processes, the admin endpoint and the two sipfront hosts (the namespace and the
//! Prometheus text parser come from testkit).

#![allow(dead_code)]

use super::*;

/// A child process killed (SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, log: &Path) -> Proc {
        let out = File::create(log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        sleep(Duration::from_millis(5));
    }
}

/// utime + stime of a process, in milliseconds.
pub fn cpu_ms(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / hz
}

/// Seconds of the day of a tracing log line's RFC 3339 timestamp (`...T14:42:44.571322Z`).
pub fn log_secs(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?.split_once('T')?.1;
    let t = t.trim_end_matches('Z');
    let mut it = t.split(':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Milliseconds between the first log lines containing `from` and `to`.
pub fn log_span_ms(log: &str, from: &str, to: &str) -> Option<f64> {
    let find = |n: &str| log.lines().find(|l| l.contains(n)).and_then(log_secs);
    let (a, b) = (find(from)?, find(to)?);
    let mut d = b - a;
    if d < 0.0 {
        d += 86400.0;
    }
    Some(d * 1000.0)
}

/// The sync key file in `dir`, mode 0600 (sipfront refuses a key file that group or
/// others can read or write).
pub fn write_key(dir: &Path) -> PathBuf {
    let key_file = dir.join("sync.key");
    fs::write(&key_file, format!("{KEY}\n")).expect("write key");
    fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod 600 key file");
    key_file
}

pub fn write_config(dir: &Path, own: &str, peer: &str, n_ports: usize) -> PathBuf {
    let key_file = write_key(dir);
    let last = PORT_BASE as usize + n_ports - 1;
    let toml = format!(
        "[listen]\nsip = [\"{own}:5060\"]\nrelay = \"{own}\"\nrelay_ports = \"{PORT_BASE}-{last}\"\n\n\
         [[backend]]\nname = \"be\"\naddr = \"{BACKEND}\"\n\n\
         [limits]\nnew_flows_per_ip = 100000000\nmax_flows_per_ip = 10000000\ndatagrams_per_ip = 100000000\ndatagrams_burst = 100000000\n\n\
         [health]\ninterval = \"1s\"\n\n\
         [admin]\nlisten = \"{own}:9090\"\n\n\
         [sync]\nlisten = \"{own}:{SYNC_PORT}\"\npeer = \"{peer}:{SYNC_PORT}\"\nkey_file = \"{}\"\n",
        key_file.display()
    );
    let path = dir.join(format!("sipfront-{own}.toml"));
    fs::write(&path, toml).expect("write config");
    path
}

pub struct Host {
    pub proc: Proc,
    pub admin: String,
    /// The namespace to reach the admin endpoint in (prefix mode: B's), if not this
    /// thread's.
    pub ns: Option<String>,
}

impl Host {
    pub fn start(dir: &Path, own: &str, config: &Path, log_name: &str) -> Host {
        let mut cmd = Command::new(testkit::bench_bin(SIPFRONT));
        cmd.args(["run", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        Host {
            proc: Proc::spawn(&mut cmd, &dir.join(log_name)),
            admin: format!("{own}:9090"),
            ns: None,
        }
    }

    pub fn metrics(&mut self) -> Option<String> {
        assert!(
            self.proc.running(),
            "sipfront {} exited; log:\n{}",
            self.admin,
            self.proc.log_text()
        );
        let addr: SocketAddr = self.admin.parse().ok()?;
        match &self.ns {
            Some(ns) => testkit::in_netns(ns, || testkit::http_body(addr, "/metrics")),
            None => testkit::http_body(addr, "/metrics"),
        }
    }

    pub fn metric(&mut self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metrics()
            .and_then(|t| testkit::find_metric(&t, name, labels))
    }

    pub fn wait_metric(
        &mut self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> bool {
        wait_until(timeout, || self.metric(name, &[]).is_some_and(&pred))
    }
}
