//! Network namespaces for the HA-tier tests (tests/vrrp_netns.rs; the state-sync tests in
//! tests/netns_sync/ build on these too): a "lan" namespace holding a bridge, and one
//! namespace per host joined to that bridge by a veth pair. The veth pairs are created
//! directly inside the namespaces (`ip -n LAN link add pX type veth peer name eth0 netns
//! HOST`), so nothing ever appears in, or is changed in, the host's own namespace.
//!
//! Everything is held by guards: [`Lan`] deletes its namespaces when dropped (after killing,
//! by pid, whatever still runs inside them, which can only be ours), also when a test fails;
//! programs run in a namespace are [`Proc`] guards. On failure the `Lan` prints every host's
//! addresses and neighbour table, and the process guards print their log tails.
//!
//! Programs are started with `ip netns exec NS PROGRAM ...`, which execs the program itself
//! (no fork), so the guard's pid is the program's pid: signals reach it directly. Code that
//! must talk to a namespace's loopback (sipfront's admin endpoint on 127.0.0.1:9090, which
//! every namespace has for itself) runs on a short-lived thread that `setns(2)`s into it.

#![allow(dead_code)]

use crate::common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The virtual address the tests move around, and its prefix.
pub const VIP: &str = "10.77.0.100";
pub const VIP_CIDR: &str = "10.77.0.100/24";
/// The subnet every host of a [`Lan`] is on: `10.77.0.<octet>/24`.
pub const NET: &str = "10.77.0";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

/// The tests of one file run one at a time: each starts several daemons with 100 ms
/// timers, and the machine has two cores shared with builds. Hold the guard for the
/// whole test (a failed test poisons the lock; the next one takes it anyway).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails (never skips) unless we are root, `ip netns` works and sipp, tcpdump and
/// keepalived are installed.
pub fn require_netns() {
    require(&["sipp", "tcpdump", "keepalived"]);
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

/// Runs `ip ARGS`; Ok(stdout) or Err(stderr).
pub fn try_ip(args: &[&str]) -> Result<String, String> {
    let o = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
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

/// Runs `f` on a thread that has joined network namespace `ns` (`/run/netns/NS`). Sockets
/// created there stay in that namespace when used later from any thread.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: a valid namespace fd; setns only changes this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Wall-clock seconds since the epoch (sipp's `[timestamp]` uses the same clock).
pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
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

/// True if some socket of the process `pid` (hence in its namespace) is bound to UDP `port`.
pub fn udp_bound_in(pid: u32, port: u16) -> bool {
    udp_ports_bound(pid, None).contains(&port)
}

/// Waits until the sipp (or other program) `proc` has bound UDP `port`.
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

// ---------------------------------------------------------------------------------------------
// Namespaces, hosts, the LAN
// ---------------------------------------------------------------------------------------------

/// One network namespace, deleted on drop (after SIGKILLing, by pid, what still runs in it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend_from_slice(args);
        ip(&v)
    }

    pub fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend_from_slice(args);
        try_ip(&v)
    }

    /// `ip netns exec NS PROGRAM` (add arguments to the returned command).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
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

    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Only our own processes can be in a namespace we created.
        let left = self.pids();
        for pid in &left {
            send_signal(i64::from(*pid), "KILL");
        }
        if !left.is_empty() {
            wait_until(Duration::from_secs(3), || self.pids().is_empty());
        }
        if let Err(e) = try_ip(&["netns", "del", &self.name]) {
            eprintln!("cannot delete namespace {}: {e}", self.name);
        }
    }
}

/// A host: a namespace with `eth0` (a fixed MAC `<LAN MAC prefix>:<octet>`) on the LAN.
pub struct Host {
    pub role: String,
    pub ns: Netns,
    pub addr: Ipv4Addr,
    /// Empty for a host that is not on the LAN itself (e.g. behind a router).
    pub mac: String,
    /// The bridge port (the veth peer) in the LAN namespace; empty if not on the LAN.
    pub port: String,
}

impl Host {
    /// IPv4 addresses on eth0 (without prefix).
    pub fn addrs(&self) -> Vec<String> {
        let out = self
            .ns
            .try_ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
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

    pub fn has_addr(&self, addr: &str) -> bool {
        self.addrs().iter().any(|a| a == addr)
    }

    /// The neighbour entry for `addr` on eth0: (lladdr if any, the whole line).
    pub fn neigh(&self, addr: &str) -> (Option<String>, String) {
        let line = self
            .ns
            .try_ip(&["neigh", "show", addr, "dev", "eth0"])
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut it = line.split_whitespace();
        let mut ll = None;
        while let Some(t) = it.next() {
            if t == "lladdr" {
                ll = it.next().map(str::to_string);
            }
        }
        (ll, line)
    }

    /// The MAC the client-side neighbour entry for `addr` points at, if any.
    pub fn neigh_mac(&self, addr: &str) -> Option<String> {
        self.neigh(addr).0
    }

    /// Sends one UDP datagram from this host to `to` (`IP:PORT`), e.g. to make the kernel
    /// resolve (and keep a neighbour entry for) an address.
    pub fn send_udp(&self, to: &str) {
        let to: SocketAddr = to.parse().expect("socket address");
        let from = SocketAddr::from((self.addr, 0));
        self.ns.enter(|| {
            let s = UdpSocket::bind(from).unwrap_or_else(|e| panic!("bind {from}: {e}"));
            let _ = s.send_to(b"neighbour probe from the test\r\n", to);
        });
    }

    /// Waits until a neighbour entry with a MAC exists for `addr`, poking it with UDP
    /// datagrams (to the discard port) meanwhile.
    pub fn resolve(&self, addr: &str, timeout: Duration) -> String {
        let to = format!("{addr}:9");
        let mut last = Instant::now() - Duration::from_secs(1);
        let ok = wait_until(timeout, || {
            if last.elapsed() >= Duration::from_millis(300) {
                self.send_udp(&to);
                last = Instant::now();
            }
            self.neigh_mac(addr).is_some()
        });
        assert!(
            ok,
            "{}: no neighbour entry for {addr}: {:?}",
            self.role,
            self.neigh(addr).1
        );
        self.neigh_mac(addr).unwrap()
    }

    /// `ip -n NS link set eth0 up|down`.
    pub fn link(&self, up: bool) {
        self.ns
            .ip(&["link", "set", "eth0", if up { "up" } else { "down" }]);
    }

    pub fn describe(&self) -> String {
        format!(
            "== {} ({}, {} {}) ==\n{}{}",
            self.role,
            self.ns.name,
            self.addr,
            self.mac,
            self.ns
                .try_ip(&["-4", "addr", "show"])
                .unwrap_or_else(|e| e),
            self.ns.try_ip(&["neigh", "show"]).unwrap_or_else(|e| e)
        )
    }
}

/// A LAN: a bridge `br0` in its own namespace and hosts attached to it.
pub struct Lan {
    /// Dropped before `lan` (declaration order).
    pub hosts: Vec<Host>,
    pub lan: Netns,
    pub prefix: String,
    /// Hosts get `<net>.<octet>/24` and MAC `<mac_prefix>:<octet>`.
    pub net: String,
    pub mac_prefix: String,
}

impl Lan {
    /// Creates the LAN and one host per `(role, last octet)`: `eth0` with
    /// `10.77.0.<octet>/24` and MAC `02:77:00:00:00:<octet>`.
    pub fn new(hosts: &[(&str, u8)]) -> Lan {
        require_netns();
        let me = Lan::create("sfvrrp", NET, "02:77:00:00:00", hosts);
        for h in &me.hosts {
            let link = h.ns.ip(&["-o", "link", "show", "dev", "eth0"]);
            assert!(
                link.contains(&format!("link/ether {} ", h.mac)),
                "{}: eth0 does not have the MAC {}: {link}",
                h.role,
                h.mac
            );
        }
        me
    }

    /// Creates the LAN (namespaces `<tag><PID>x<N>-lan`, `...-<role>`) and one host per
    /// `(role, last octet)`: `eth0` with `<net>.<octet>/24` and MAC `<mac_prefix>:<octet>`.
    pub fn create(tag: &str, net: &str, mac_prefix: &str, hosts: &[(&str, u8)]) -> Lan {
        let prefix = format!(
            "{tag}{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let lan = Netns::create(format!("{prefix}-lan"));
        lan.ip(&["link", "add", "br0", "type", "bridge"]);
        lan.ip(&["link", "set", "br0", "up"]);
        let mut me = Lan {
            hosts: Vec::new(),
            lan,
            prefix,
            net: net.to_string(),
            mac_prefix: mac_prefix.to_string(),
        };
        for (role, octet) in hosts {
            me.add_host(role, *octet);
        }
        me
    }

    /// Adds host `role` with `eth0` (`<net>.<octet>/24`) on the bridge.
    pub fn add_host(&mut self, role: &str, octet: u8) {
        let ns = Netns::create(format!("{}-{role}", self.prefix));
        let mac = format!("{}:{octet:02x}", self.mac_prefix);
        let port = format!("p{octet}");
        self.lan.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            "address", &mac,
        ]);
        self.lan.ip(&["link", "set", &port, "master", "br0"]);
        self.lan.ip(&["link", "set", &port, "up"]);
        let addr: Ipv4Addr = format!("{}.{octet}", self.net).parse().unwrap();
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        self.hosts.push(Host {
            role: role.to_string(),
            ns,
            addr,
            mac,
            port,
        });
    }

    pub fn host(&self, role: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .unwrap_or_else(|| panic!("no host {role}"))
    }

    /// Takes `role`'s cable out of the switch: its bridge port leaves the bridge. The
    /// host's own link stays up (carrier on): it just hears nobody and nobody hears it.
    pub fn unplug(&self, role: &str) {
        let port = self.host(role).port.clone();
        self.lan.ip(&["link", "set", &port, "nomaster"]);
    }

    /// Plugs `role`'s cable back in.
    pub fn plug(&self, role: &str) {
        let port = self.host(role).port.clone();
        self.lan.ip(&["link", "set", &port, "master", "br0"]);
        self.lan.ip(&["link", "set", &port, "up"]);
    }

    /// Roles of the hosts that have `addr` on eth0.
    pub fn holders(&self, addr: &str) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| h.has_addr(addr))
            .map(|h| h.role.clone())
            .collect()
    }

    /// Every host's addresses and neighbour table (printed when a test fails).
    pub fn describe(&self) -> String {
        self.hosts
            .iter()
            .map(Host::describe)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- network state at failure -----\n{}", self.describe());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sipfront in a namespace
// ---------------------------------------------------------------------------------------------

/// Config of one sipfront of the HA pair: SIP on VIP:5060, relay on the VIP, admin on the
/// namespace's own 127.0.0.1:9090, fast health probes, and `[vrrp]` on eth0.
pub fn sipfront_toml(priority: u8, backends: &[(&str, &str)], vrrp_extra: &str) -> String {
    let mut s = format!(
        "[listen]\nsip = [\"{VIP}:5060\"]\nrelay = \"{VIP}\"\nrelay_ports = \"20000-20999\"\n"
    );
    for (name, addr) in backends {
        s.push_str(&format!(
            "\n[[backend]]\nname = \"{name}\"\naddr = \"{addr}\"\n"
        ));
    }
    s.push_str("\n[admin]\nlisten = \"127.0.0.1:9090\"\n");
    s.push_str("\n[health]\ninterval = \"100ms\"\n");
    s.push_str(&format!(
        "\n[vrrp]\ninterface = \"eth0\"\nvrid = 51\npriority = {priority}\n\
         advert_interval = \"100ms\"\nvips = [\"{VIP_CIDR}\"]\ngarp_delay = \"1s\"\n{vrrp_extra}\n"
    ));
    s
}

/// A sipfront running in a host's namespace.
pub struct NsSipfront {
    pub proc: Proc,
    pub name: String,
    pub ns: String,
    pub log: PathBuf,
    pub config: PathBuf,
}

pub const ADMIN: &str = "127.0.0.1:9090";

impl NsSipfront {
    /// Writes `toml` to `NAME.toml`, starts sipfront in `host`'s namespace (log `NAME.log`)
    /// and waits until its admin endpoint answers with VRRP metrics and its SIP port is bound.
    pub fn start(dir: &TestDir, host: &Host, name: &str, toml: &str) -> NsSipfront {
        Self::launch(
            dir,
            host,
            name,
            toml,
            Duration::from_secs(15),
            " with VRRP metrics",
            |m| m.contains("sipfront_vrrp_state"),
        )
    }

    /// Writes `toml` to `NAME.toml`, starts sipfront in `host`'s namespace (log `NAME.log`),
    /// waits up to `timeout` until its admin endpoint answers with metrics for which `ready`
    /// holds (`what` describes that in the failure message), then until its SIP port is bound.
    pub fn launch(
        dir: &TestDir,
        host: &Host,
        name: &str,
        toml: &str,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&str) -> bool,
    ) -> NsSipfront {
        let config = dir.join(&format!("{name}.toml"));
        fs::write(&config, toml).expect("write sipfront config");
        let log = dir.join(&format!("{name}.log"));
        let mut cmd = host.ns.command(SIPFRONT);
        cmd.args(["run", "-c"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1");
        let proc = Proc::spawn(name, &mut cmd, &log);
        let mut sf = NsSipfront {
            proc,
            name: name.to_string(),
            ns: host.ns.name.clone(),
            log,
            config,
        };
        let ok = wait_until(timeout, || {
            sf.proc.assert_running();
            sf.try_metrics().is_some_and(|m| ready(&m))
        });
        assert!(
            ok,
            "{name}: admin endpoint did not answer{what} within {timeout:?}; config:\n{toml}\n\
             log:\n{}",
            sf.log_tail(40)
        );
        let pid = sf.proc.pid();
        let ok = wait_until(Duration::from_secs(5), || udp_bound_in(pid, 5060));
        assert!(
            ok,
            "{name}: SIP port 5060 not bound; log:\n{}",
            sf.log_tail(40)
        );
        sf
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `GET PATH` at the admin endpoint (inside the namespace): (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr: SocketAddr = ADMIN.parse().unwrap();
        let path = path.to_string();
        in_netns(&self.ns, move || http_get(addr, &path).ok())
    }

    pub fn try_metrics(&self) -> Option<String> {
        match self.get("/metrics") {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    /// Current metrics; panics (with the log) if they cannot be fetched.
    pub fn metrics(&mut self) -> String {
        match self.try_metrics() {
            Some(m) => m,
            None => {
                self.proc.assert_running();
                panic!(
                    "{}: GET /metrics failed; log:\n{}",
                    self.name,
                    self.log_tail(30)
                )
            }
        }
    }

    pub fn metric(&mut self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics(), name, labels)
    }

    /// `sipfront_vrrp_state`: 0 initialize, 1 backup, 2 master.
    pub fn state(&mut self) -> f64 {
        self.metric("sipfront_vrrp_state", &[])
    }

    /// The log without colour codes.
    pub fn log_text(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.log).unwrap_or_default())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The `vrrp transition` log lines as (state, cause), in order.
    pub fn transitions(&self) -> Vec<(String, String)> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("vrrp transition"))
            .map(|l| (field(l, "state"), field(l, "cause")))
            .collect()
    }

    /// Waits until a transition to `state` with `cause` has been logged.
    pub fn wait_transition(&mut self, state: &str, cause: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.transitions()
                .iter()
                .any(|(s, c)| s == state && c == cause)
        })
    }

    /// Waits until `sipfront_vrrp_state` equals `want`; panics with the log otherwise.
    pub fn expect_state(&mut self, want: f64, timeout: Duration) {
        let mut last = -1.0;
        let ok = wait_until(timeout, || {
            last = self.state();
            last == want
        });
        assert!(
            ok,
            "{}: sipfront_vrrp_state is {last}, expected {want} within {timeout:?}; \
             transitions {:?}; log:\n{}",
            self.name,
            self.transitions(),
            self.log_tail(30)
        );
    }

    pub fn kill9(&mut self) {
        self.proc.signal("KILL");
        let st = self.proc.wait_timeout(Duration::from_secs(5));
        assert!(st.is_some(), "{} did not die on SIGKILL", self.name);
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.proc.signal("TERM");
        self.proc.wait_timeout(timeout).unwrap_or_else(|| {
            panic!(
                "{} still running {timeout:?} after SIGTERM; log:\n{}",
                self.name,
                self.log_tail(30)
            )
        })
    }
}

/// Value of `key="value"` (or `key=value`) in a tracing log line.
pub fn field(line: &str, key: &str) -> String {
    let pat = format!(" {key}=");
    let Some(i) = line.find(&pat) else {
        return String::new();
    };
    let rest = &line[i + pat.len()..];
    if let Some(r) = rest.strip_prefix('"') {
        r.split('"').next().unwrap_or("").to_string()
    } else {
        rest.split_whitespace().next().unwrap_or("").to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// sipp in a namespace
// ---------------------------------------------------------------------------------------------

pub struct NsSipp {
    pub proc: Proc,
    pub dir: PathBuf,
    pub stat_file: PathBuf,
    pub error_file: PathBuf,
}

/// Starts sipp in `host`'s namespace with `args`, in its own subdirectory `name` of the test
/// directory (statistics every second in `stats.csv`, errors in `errors.log` and, with
/// `trace`, every message in `messages.log`).
pub fn start_sipp(dir: &TestDir, host: &Host, name: &str, args: &[&str], trace: bool) -> Sipp {
    let sdir = dir.join(name);
    fs::create_dir_all(&sdir).expect("create sipp dir");
    let stat_file = sdir.join("stats.csv");
    let error_file = sdir.join("errors.log");
    let message_file = sdir.join("messages.log");
    let mut cmd = host.ns.command("sipp");
    cmd.current_dir(&sdir)
        .args(args)
        .args(["-nostdin", "-trace_stat", "-fd", "1", "-stf"])
        .arg(&stat_file)
        .args(["-trace_err", "-error_file"])
        .arg(&error_file);
    if trace {
        cmd.args(["-trace_msg", "-message_file"]).arg(&message_file);
    }
    let mut proc = Proc::spawn(name, &mut cmd, &sdir.join("sipp.log"));
    proc.add_log(&error_file);
    Sipp {
        proc,
        dir: sdir,
        stat_file,
        error_file,
        message_file,
    }
}

impl NsSipp {
    /// Starts sipp in `host`'s namespace with `args`, in its own subdirectory `name` of the
    /// test directory (statistics every second in `stats.csv`, errors in `errors.log`).
    pub fn start(dir: &TestDir, host: &Host, name: &str, args: &[&str]) -> NsSipp {
        let Sipp {
            proc,
            dir,
            stat_file,
            error_file,
            ..
        } = start_sipp(dir, host, name, args, false);
        NsSipp {
            proc,
            dir,
            stat_file,
            error_file,
        }
    }

    /// A UAS backend (tests/sipp/uas.xml, answers OPTIONS too) on `host`:5060.
    pub fn uas(dir: &TestDir, host: &Host, name: &str) -> NsSipp {
        let ip = host.addr.to_string();
        let sf = scenario("uas.xml");
        let mut s = NsSipp::start(dir, host, name, &["-sf", &sf, "-i", &ip, "-p", "5060"]);
        wait_bound(&mut s.proc, 5060);
        s
    }

    pub fn stats(&self) -> SippStats {
        SippStats::read(&self.stat_file).unwrap_or_default()
    }

    /// SIGUSR1 (no new calls; exit when the current ones end), then waits; kills after
    /// `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.signal("USR1");
        let st = self.proc.wait_timeout(timeout);
        if st.is_none() {
            self.proc.signal("KILL");
            self.proc.wait_timeout(Duration::from_secs(5));
        }
        st
    }
}

/// The per-call lines of tests/sipp/uac_timed.xml: call number -> epoch seconds.
#[derive(Debug, Default)]
pub struct CallLog {
    pub started: BTreeMap<u64, f64>,
    pub ok: BTreeMap<u64, f64>,
}

impl CallLog {
    pub fn read(path: &Path) -> CallLog {
        let mut log = CallLog::default();
        let text = fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            // "start N DATE TIME EPOCH" / "ok N DATE TIME EPOCH"
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                continue;
            }
            let (Ok(n), Ok(t)) = (f[1].parse::<u64>(), f[f.len() - 1].parse::<f64>()) else {
                continue;
            };
            match f[0] {
                "start" => {
                    log.started.insert(n, t);
                }
                "ok" => {
                    log.ok.insert(n, t);
                }
                _ => {}
            }
        }
        log
    }

    /// Calls whose first INVITE was sent at or after `t` (epoch seconds).
    pub fn started_after(&self, t: f64) -> Vec<u64> {
        self.started
            .iter()
            .filter(|(_, s)| **s >= t)
            .map(|(n, _)| *n)
            .collect()
    }

    pub fn failed_among(&self, calls: &[u64]) -> Vec<u64> {
        calls
            .iter()
            .copied()
            .filter(|n| !self.ok.contains_key(n))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// tcpdump in a namespace
// ---------------------------------------------------------------------------------------------

/// `tcpdump -e -nn -l -i eth0 FILTER` in a namespace, text output (with the link-level
/// header, to see source MACs) in the test directory.
pub struct NsCapture {
    pub proc: Proc,
    pub out: PathBuf,
}

impl NsCapture {
    pub fn start(dir: &TestDir, host: &Host, name: &str, filter: &str) -> NsCapture {
        let out = dir.join(&format!("{name}.txt"));
        let mut cmd = host.ns.command("tcpdump");
        cmd.args(["-i", "eth0", "-e", "-nn", "-l", "--immediate-mode", "-vv"])
            .arg(filter);
        let proc = spawn_tcpdump(name, &mut cmd, &out);
        NsCapture { proc, out }
    }

    pub fn text(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Gratuitous ARP requests for `vip` (sender = target = vip) seen from `mac`.
    pub fn garps_from(&self, mac: &str, vip: &str) -> usize {
        let who = format!("who-has {vip} ");
        let tell = format!("tell {vip},");
        self.text()
            .lines()
            .filter(|l| {
                l.contains(&format!(" {mac} > ff:ff:ff:ff:ff:ff"))
                    && l.contains("Request")
                    && l.contains(&who)
                    && l.contains(&tell)
            })
            .count()
    }

    pub fn stop(&mut self) {
        stop_tcpdump(&mut self.proc);
    }
}

/// Starts the tcpdump command `cmd` (its console output in `log`) and waits until it listens.
pub fn spawn_tcpdump(name: &str, cmd: &mut Command, log: &Path) -> Proc {
    let mut proc = Proc::spawn(&format!("tcpdump {name}"), cmd, log);
    let ok = wait_until(Duration::from_secs(10), || {
        proc.assert_running();
        fs::read_to_string(log).is_ok_and(|t| t.contains("listening on"))
    });
    assert!(ok, "tcpdump {name} did not start: {}", tail(log, 5));
    proc
}

/// Gives tcpdump a moment for the last packets, then stops it (SIGINT: it flushes).
pub fn stop_tcpdump(proc: &mut Proc) {
    std::thread::sleep(Duration::from_millis(200));
    proc.signal("INT");
    proc.wait_timeout(Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------
// keepalived in a namespace
// ---------------------------------------------------------------------------------------------

/// keepalived (`--vrrp` only, foreground, logging to its console) in a host's namespace,
/// with its config, pid files and statistics file (`TMPDIR`) in its own directory.
pub struct Keepalived {
    pub proc: Proc,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub vrrp_pid_file: PathBuf,
}

impl Keepalived {
    /// VRRPv3, VRID 51, `advert_int 0.1` (100 ms, as the sipfront configs), the VIP, no
    /// `nopreempt`.
    pub fn start(dir: &TestDir, host: &Host, name: &str, priority: u8) -> Keepalived {
        Self::start_with(dir, host, name, priority, "")
    }

    /// Like [`Keepalived::start`], with extra lines in the `vrrp_instance` block (e.g.
    /// `unicast_peer { 10.77.0.12 }`, `old_unicast_checksum`).
    pub fn start_with(
        dir: &TestDir,
        host: &Host,
        name: &str,
        priority: u8,
        instance_extra: &str,
    ) -> Keepalived {
        let kdir = dir.join(name);
        fs::create_dir_all(&kdir).expect("create keepalived dir");
        let conf = kdir.join("keepalived.conf");
        fs::write(
            &conf,
            format!(
                "global_defs {{\n    router_id {name}\n    vrrp_version 3\n    \
                 vrrp_garp_master_delay 1\n}}\n\n\
                 vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    \
                 virtual_router_id 51\n    priority {priority}\n    advert_int 0.1\n    \
                 virtual_ipaddress {{\n        {VIP_CIDR}\n    }}\n{instance_extra}\n}}\n"
            ),
        )
        .expect("write keepalived.conf");
        let check = host.ns.run(
            "keepalived",
            &["--config-test", "-f", conf.to_str().unwrap()],
        );
        assert!(
            !check.to_ascii_lowercase().contains("error"),
            "keepalived --config-test: {check}"
        );
        let log = kdir.join("keepalived.log");
        let vrrp_pid_file = kdir.join("vrrp.pid");
        let mut cmd = host.ns.command("keepalived");
        cmd.args(["--dont-fork", "--log-console", "--log-detail", "--vrrp"])
            // no respawn: a SIGKILLed VRRP child stays dead, like a crashed daemon
            .arg("--dont-respawn")
            .arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg(kdir.join("keepalived.pid"))
            .arg("-r")
            .arg(&vrrp_pid_file)
            // keepalived.stats (SIGUSR2) goes to $TMPDIR, not the global /tmp
            .env("TMPDIR", &kdir);
        let mut proc = Proc::spawn_group(name, &mut cmd, &log);
        let ok = wait_until(Duration::from_secs(10), || {
            proc.assert_running();
            fs::read_to_string(&log).is_ok_and(|t| t.contains("Entering BACKUP STATE"))
        });
        assert!(ok, "{name}: keepalived did not start: {}", tail(&log, 30));
        Keepalived {
            proc,
            dir: kdir,
            log,
            vrrp_pid_file,
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    pub fn wait_log(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.count(needle) >= n)
    }

    /// Log lines that report a received packet keepalived did not like (bad TTL, checksum,
    /// version, VRID, address list, length, interval, ...).
    pub fn packet_complaints(&self) -> Vec<String> {
        const BAD: [&str; 9] = [
            "invalid",
            "checksum",
            "ttl",
            "mismatch",
            "too short",
            "not present",
            "ignoring received",
            "expect",
            "bogus",
        ];
        self.log_text()
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                BAD.iter().any(|b| l.contains(b))
            })
            .map(str::to_string)
            .collect()
    }

    pub fn vrrp_pid(&self) -> Option<u32> {
        fs::read_to_string(&self.vrrp_pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Asks for statistics (SIGUSR2: the VRRP process writes `$TMPDIR/keepalived.stats`) and
    /// returns them as "section/key" -> value, e.g. "Advertisements/Received",
    /// "Packet Errors/TTL".
    pub fn stats(&mut self) -> BTreeMap<String, u64> {
        let file = self.dir.join("keepalived.stats");
        let _ = fs::remove_file(&file);
        self.proc.signal("USR2");
        let ok = wait_until(Duration::from_secs(5), || {
            fs::read_to_string(&file).is_ok_and(|t| t.contains("Priority Zero"))
        });
        assert!(ok, "keepalived wrote no statistics to {}", file.display());
        // The file is complete once the last section is there; read again after a moment
        // in case the last lines were still being written.
        std::thread::sleep(Duration::from_millis(50));
        parse_keepalived_stats(&fs::read_to_string(&file).unwrap_or_default())
    }

    /// SIGKILLs the VRRP process and then the parent: a crash, nothing cleaned up.
    pub fn kill9(&mut self) {
        if let Some(pid) = self.vrrp_pid() {
            send_signal(i64::from(pid), "KILL");
        }
        self.proc.signal("KILL");
        self.proc.wait_timeout(Duration::from_secs(5));
    }

    /// SIGTERM (keepalived sends a priority 0 advert and removes its VIPs), then waits.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.signal("TERM");
        self.proc.wait_timeout(timeout)
    }
}

/// Parses keepalived.stats: indented "Key: value" lines under section headers.
pub fn parse_keepalived_stats(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let Some((k, v)) = line.trim().split_once(':') else {
            continue;
        };
        let v = v.trim();
        if v.is_empty() {
            if indent > 0 {
                section = k.to_string();
            }
            continue;
        }
        if let Ok(n) = v.parse::<u64>() {
            let key = if indent >= 4 {
                format!("{section}/{k}")
            } else {
                k.to_string()
            };
            out.insert(key, n);
        }
    }
    out
}
