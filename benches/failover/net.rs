//! Network namespaces for the failover bench. Each is created with `ip netns add` under a
//! name unique to this run and deleted when its guard is dropped, also on panic.
//! [`in_ns`] / [`spawn_in_ns`] run code on a thread that has entered a namespace, so the
//! sockets it opens live there (setns(2) with CLONE_NEWNET changes only the calling
//! thread); programs start in one through `ip netns exec`, which execs them in place (the
//! pid we get is the program's).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs `ip ARGS`; `Err` with its stderr if it fails.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace; dropping it deletes it (and with it its interfaces).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `name` with its loopback up. Panics if it exists already.
    pub fn new(name: &str) -> Netns {
        ip(&["netns", "add", name]).unwrap_or_else(|e| {
            panic!("{e} (the failover bench needs root for network namespaces)")
        });
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `ip netns exec NAME PROGRAM`; add the program's arguments to it.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// The MAC address of `dev`.
    pub fn mac(&self, dev: &str) -> String {
        let out = self.ip(&["-o", "link", "show", "dev", dev]);
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC for {dev} in {}: {out}", self.name))
            .to_string()
    }

    /// True if `dev` holds IPv4 address `addr`.
    pub fn has_addr(&self, dev: &str, addr: &str) -> bool {
        let out = self.ip(&["-4", "-o", "addr", "show", "dev", dev]);
        out.split_whitespace()
            .any(|w| w.split('/').next() == Some(addr))
    }

    /// The neighbour entry for `addr`: (MAC, state), if any.
    pub fn neighbour(&self, addr: &str) -> Option<(String, String)> {
        let out = self.ip(&["neigh", "show", addr]);
        let words: Vec<&str> = out.split_whitespace().collect();
        let mac = words
            .iter()
            .position(|w| *w == "lladdr")
            .and_then(|i| words.get(i + 1))?;
        Some((mac.to_string(), words.last()?.to_string()))
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("failover bench: {e}");
        }
    }
}

/// Runs `f` on a new thread that has entered the namespace at `path`.
pub fn spawn_in_ns<T, F>(path: String, f: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns(2) on an fd we own; CLONE_NEWNET affects only this thread.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Runs `f` in the namespace `ns` and returns its result.
pub fn in_ns<T, F>(ns: &Netns, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    spawn_in_ns(ns.path(), f)
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Polls `cond` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Value of the Prometheus sample `name{labels}` in `text` (labels: a subset that must
/// match), summed over the samples that match.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (lbl, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        if labels
            .iter()
            .all(|(k, v)| lbl.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
            && let Some(v) = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// Deletes namespaces named `{base}PID…` left by an earlier run of this bench that was
/// killed before its guards ran (PID no longer alive). Others are left alone.
pub fn remove_stale(base: &str) {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(base) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if pid.is_empty() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match ip(&["netns", "del", name]) {
            Ok(_) => eprintln!("failover bench: removed stale namespace {name}"),
            Err(e) => eprintln!("failover bench: {e}"),
        }
    }
}
