//! Network namespaces (`ip netns`, root): the one [`Netns`] guard the tests and benches
//! share, `ip` itself, and code run inside a namespace.
//!
//! Programs start in a namespace through `ip netns exec NS PROGRAM ...`, which execs the
//! program itself (no fork), so the guard's pid is the program's pid. Code that must open
//! sockets in a namespace runs on a thread that `setns(2)`s into it ([`Netns::enter`],
//! [`Netns::spawn_in`]): sockets created there stay in that namespace when used later from
//! any thread.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::process::{Proc, send_signal, wait_until};

/// Runs `ip ARGS`; Ok(stdout) or Err(stderr).
pub fn try_ip(args: &[&str]) -> Result<String, String> {
    let o = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip` (package iproute2): {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Runs `ip ARGS`, panicking on failure.
pub fn ip(args: &[&str]) -> String {
    try_ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Fails (never skips) unless we are root, `ip netns` works and `programs` are installed.
pub fn require(programs: &[&str]) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests create network namespaces and must run as root (euid is {euid})"
    );
    if let Err(e) = try_ip(&["netns", "list"]) {
        panic!("network namespaces are required ({e}); install iproute2 and run as root");
    }
    for program in programs {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let pkg = match *program {
            "sipp" => "sip-tester",
            "kamcmd" => "kamailio",
            "nft" => "nftables",
            p => p,
        };
        assert!(
            found,
            "program `{program}` not found: install the Debian package `{pkg}`"
        );
    }
}

/// Makes the calling thread join the namespace at `path` (`/run/netns/NS`).
fn setns(path: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: a valid namespace fd; setns only changes this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

/// Runs `f` on a thread that has joined network namespace `ns` (`/run/netns/NS`).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&path);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// A network namespace with its loopback up. Dropping it SIGKILLs, by pid, whatever still
/// runs inside (only our own programs can be in a namespace we created; never this process
/// itself) and deletes it, also when a test fails.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up. Panics (root is needed) if it cannot.
    pub fn create(name: impl Into<String>) -> Netns {
        let name = name.into();
        if let Err(e) = try_ip(&["netns", "add", &name]) {
            panic!("{e} (network namespaces need root)");
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A namespace with a name unique to this process, `sf-TAG-PID-N`.
    pub fn unique(tag: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        Netns::create(format!(
            "sf-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NS ARGS`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ip -n NS ARGS`.
    pub fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend_from_slice(args);
        try_ip(&v)
    }

    /// `ip netns exec NS PROGRAM` (add arguments to the returned command).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `PROGRAM ARGS` in the namespace to completion: (success, stdout+stderr).
    pub fn run_status(&self, program: &str, args: &[&str]) -> (bool, String) {
        let o = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program} in {}: {e}", self.name));
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    }

    /// Runs `PROGRAM ARGS` in the namespace to completion; returns stdout+stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        self.run_status(program, args).1
    }

    /// Runs `PROGRAM ARGS` in the namespace; panics unless it succeeds.
    pub fn must(&self, program: &str, args: &[&str]) -> String {
        let (ok, out) = self.run_status(program, args);
        assert!(ok, "{program} {args:?} in {} failed: {out}", self.name);
        out
    }

    /// Pids of the processes in this namespace.
    pub fn pids(&self) -> Vec<u32> {
        try_ip(&["netns", "pids", &self.name])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Runs `f` on a thread that has entered the namespace and returns its result.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f)
    }

    /// Starts `f` on a new thread that has entered the namespace.
    pub fn spawn_in<T, F>(&self, f: F) -> JoinHandle<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        spawn_in_netns(self.path(), f)
    }

    /// Makes the calling thread join the namespace for good (threads and programs it starts
    /// later are in it too).
    pub fn enter_this_thread(&self) {
        setns(&self.path());
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

    /// IPv4 addresses on `dev` (without prefix); none if it cannot be listed.
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let out = self
            .try_ip(&["-4", "-o", "addr", "show", "dev", dev])
            .unwrap_or_default();
        let mut v = Vec::new();
        for line in out.lines() {
            let mut it = line.split_whitespace();
            while let Some(t) = it.next() {
                if t == "inet"
                    && let Some(a) = it.next()
                {
                    v.push(a.split('/').next().unwrap_or(a).to_string());
                }
            }
        }
        v
    }

    /// True if `dev` holds IPv4 address `addr`.
    pub fn has_addr(&self, dev: &str, addr: &str) -> bool {
        self.addrs(dev).iter().any(|a| a == addr)
    }

    /// The neighbour entry for `addr` (on `dev` if given): (lladdr if any, the whole line).
    pub fn neigh(&self, addr: &str, dev: Option<&str>) -> (Option<String>, String) {
        let mut args = vec!["neigh", "show", addr];
        if let Some(dev) = dev {
            args.extend(["dev", dev]);
        }
        let line = self.try_ip(&args).unwrap_or_default().trim().to_string();
        let mut it = line.split_whitespace();
        let mut ll = None;
        while let Some(t) = it.next() {
            if t == "lladdr" {
                ll = it.next().map(str::to_string);
            }
        }
        (ll, line)
    }

    /// The neighbour entry for `addr` on any device: (MAC, state), if it has a MAC.
    pub fn neighbour(&self, addr: &str) -> Option<(String, String)> {
        let (mac, line) = self.neigh(addr, None);
        Some((mac?, line.split_whitespace().last()?.to_string()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let me = std::process::id();
        let left: Vec<u32> = self.pids().into_iter().filter(|p| *p != me).collect();
        for pid in &left {
            send_signal(i64::from(*pid), "KILL");
        }
        if !left.is_empty() {
            wait_until(Duration::from_secs(3), || {
                self.pids().iter().all(|p| *p == me)
            });
        }
        if let Err(e) = try_ip(&["netns", "del", &self.name]) {
            eprintln!("cannot delete namespace {}: {e}", self.name);
        }
    }
}

/// Starts `f` on a new thread that has entered the namespace at `path` (`/run/netns/NS`).
pub fn spawn_in_netns<T, F>(path: String, f: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    std::thread::spawn(move || {
        setns(&path);
        f()
    })
}

/// Deletes namespaces named `{base}PID…` left by an earlier run that was killed before its
/// guards ran (PID no longer alive). Others are left alone.
pub fn remove_stale(base: &str) {
    let Ok(list) = try_ip(&["netns", "list"]) else {
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
        match try_ip(&["netns", "del", name]) {
            Ok(_) => eprintln!("removed stale namespace {name}"),
            Err(e) => eprintln!("{e}"),
        }
    }
}

/// Local UDP ports bound by sockets of process `pid` (hence in its namespace) on `addr`
/// (any address if `None`), from `/proc/PID/net/udp`.
pub fn udp_ports_bound(pid: u32, addr: Option<Ipv4Addr>) -> BTreeSet<u16> {
    let want_ip = addr.map(|a| format!("{:08X}", u32::from_le_bytes(a.octets())));
    let text = fs::read_to_string(format!("/proc/{pid}/net/udp")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let local = l.split_whitespace().nth(1)?;
            let (ip, port) = local.split_once(':')?;
            if want_ip.as_deref().is_some_and(|w| w != ip) {
                return None;
            }
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

/// True if some socket of the process `pid` (hence in its namespace) is bound to UDP
/// `port`, over IPv4 or IPv6.
pub fn udp_bound_in(pid: u32, port: u16) -> bool {
    if udp_ports_bound(pid, None).contains(&port) {
        return true;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/net/udp6")).unwrap_or_default();
    text.lines().skip(1).any(|l| {
        l.split_whitespace()
            .nth(1)
            .and_then(|local| local.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            == Some(port)
    })
}

/// Waits until the sipp (or other program) `proc` has bound UDP `port` in its namespace.
pub fn wait_bound(proc: &mut Proc, port: u16) {
    let pid = proc.pid();
    let ok = wait_until(Duration::from_secs(10), || {
        proc.assert_running();
        udp_bound_in(pid, port)
    });
    assert!(
        ok,
        "{} did not bind udp {port}: {}",
        proc.name,
        proc.log_tail(20)
    );
}
