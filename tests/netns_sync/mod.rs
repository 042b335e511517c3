//! Network namespaces and programs for the state-sync tests (tests/sync_netns.rs): a LAN
//! (a bridge in a namespace of its own) with one namespace per host, a NAT router with a
//! phone behind it, sipfront hosts with `[vrrp]` and `[sync]`, Kamailio registrars, sipp,
//! plain UDP backends, `tcpdump -w` captures and a raw socket that sends UDP with a forged
//! source address (an attacker on the LAN).
//!
//! Every namespace is created by the test (unique name `sfsync<PID>x<N>-<role>`) and held by
//! an [`Ns`] guard that SIGKILLs, by pid, whatever still runs in it (only our own programs
//! can) and deletes it, also when a test fails. The veth pairs are created inside the
//! namespaces, so nothing is configured in the host's own namespace. Programs are started
//! with `ip netns exec NS PROGRAM`, which execs the program (no fork), so a [`Proc`] guard's
//! pid is the program's own.

#![allow(dead_code)]

use crate::common::*;

mod e2e;
mod packets;
mod pair;
mod programs;
mod sipfront;

pub use e2e::*;
pub use packets::*;
pub use pair::*;
pub use programs::*;
pub use sipfront::*;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The LAN every host is on: `10.88.0.<octet>/24`.
pub const NET: &str = "10.88.0";
/// The address the sipfront pair moves around (SIP and relay address).
pub const VIP: &str = "10.88.0.100";
pub const VIP_CIDR: &str = "10.88.0.100/24";
/// The phone's private network behind the NAT router.
pub const PRIVATE_NET: &str = "192.168.77";
/// Sync port of every sipfront host (on its own LAN address).
pub const SYNC_PORT: u16 = 7400;
/// Admin endpoint of sipfront, on each namespace's own loopback.
pub const ADMIN: &str = "127.0.0.1:9090";
/// The shared sync key the tests write to `sync.key` (the key file holds it as text).
pub const SYNC_KEY: &str = "sync-test-key-7f3a9c1e5b2d4f6a8c0e";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

/// The tests of this file run one at a time: each starts several daemons with fast timers
/// on a small machine. Hold the guard for the whole test (a failed test poisons the lock;
/// the next one takes it anyway).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
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

/// Runs `ip ARGS`; Ok(stdout) or Err(message with stderr).
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

pub fn ip(args: &[&str]) -> String {
    try_ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `f` on a thread that has joined network namespace `ns`. Sockets created there stay
/// in that namespace when used later from any thread.
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

pub fn udp_bound_in(pid: u32, port: u16) -> bool {
    udp_ports_bound(pid, None).contains(&port)
}

// ---------------------------------------------------------------------------------------------
// Namespaces, hosts, the LAN
// ---------------------------------------------------------------------------------------------

/// One network namespace, deleted on drop (after SIGKILLing, by pid, what still runs in it).
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn create(name: String) -> Ns {
        ip(&["netns", "add", &name]);
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS`, panicking on failure.
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

    /// `ip netns exec NS PROGRAM` (add the arguments to the returned command).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `PROGRAM ARGS` in the namespace to completion: (success, stdout+stderr).
    pub fn run(&self, program: &str, args: &[&str]) -> (bool, String) {
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

    /// Runs `PROGRAM ARGS` in the namespace; panics unless it succeeds.
    pub fn must(&self, program: &str, args: &[&str]) -> String {
        let (ok, out) = self.run(program, args);
        assert!(ok, "{program} {args:?} in {} failed: {out}", self.name);
        out
    }

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

impl Drop for Ns {
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

/// A host: a namespace with `eth0` (MAC `02:88:00:00:00:<octet>`) and one IPv4 address.
pub struct Host {
    pub role: String,
    pub ns: Ns,
    pub addr: Ipv4Addr,
}

impl Host {
    /// IPv4 addresses on `dev`, without prefix.
    pub fn addrs(&self, dev: &str) -> Vec<String> {
        let out = self
            .ns
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

    pub fn has_addr(&self, addr: &str) -> bool {
        self.addrs("eth0").iter().any(|a| a == addr)
    }

    pub fn describe(&self) -> String {
        format!(
            "== {} ({}, {}) ==\n{}{}",
            self.role,
            self.ns.name,
            self.addr,
            self.ns
                .try_ip(&["-4", "addr", "show"])
                .unwrap_or_else(|e| e),
            self.ns.try_ip(&["neigh", "show"]).unwrap_or_else(|e| e)
        )
    }
}

/// A LAN (bridge `br0` in its own namespace) with hosts, and optionally a NAT router with a
/// phone on a private network behind it.
pub struct Net {
    /// Dropped before `lan` (declaration order).
    pub hosts: Vec<Host>,
    pub lan: Ns,
    pub prefix: String,
}

impl Net {
    /// The LAN and one host per `(role, last octet)` on it: `eth0` with `10.88.0.<octet>/24`.
    pub fn new(hosts: &[(&str, u8)]) -> Net {
        let prefix = format!(
            "sfsync{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let lan = Ns::create(format!("{prefix}-lan"));
        lan.ip(&["link", "add", "br0", "type", "bridge"]);
        lan.ip(&["link", "set", "br0", "up"]);
        let mut net = Net {
            hosts: Vec::new(),
            lan,
            prefix,
        };
        for (role, octet) in hosts {
            net.add_host(role, *octet);
        }
        net
    }

    fn add_host(&mut self, role: &str, octet: u8) {
        let ns = Ns::create(format!("{}-{role}", self.prefix));
        let mac = format!("02:88:00:00:00:{octet:02x}");
        let port = format!("p{octet}");
        self.lan.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            "address", &mac,
        ]);
        self.lan.ip(&["link", "set", &port, "master", "br0"]);
        self.lan.ip(&["link", "set", &port, "up"]);
        let addr: Ipv4Addr = format!("{NET}.{octet}").parse().unwrap();
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        self.hosts.push(Host {
            role: role.to_string(),
            ns,
            addr,
        });
    }

    /// A NAT router `nat_role` on the LAN (`10.88.0.<octet>`) and a phone host `phone_role`
    /// behind it: phone `eth0` 192.168.77.2/24, router `eth1` 192.168.77.1/24, default route
    /// via the router, IPv4 forwarding on, and `nft` masquerade of everything that leaves
    /// the router's `eth0` (the LAN side). `udp_timeout`: conntrack's timeout for UDP
    /// mappings without replies-in-both-directions history (kernel default 30 s).
    pub fn add_nat_phone(&mut self, nat_role: &str, octet: u8, phone_role: &str, udp_timeout: u32) {
        self.add_host(nat_role, octet);
        let phone = Ns::create(format!("{}-{phone_role}", self.prefix));
        let nat = &self.host(nat_role).ns;
        nat.ip(&[
            "link",
            "add",
            "eth1",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &phone.name,
        ]);
        nat.ip(&["addr", "add", &format!("{PRIVATE_NET}.1/24"), "dev", "eth1"]);
        nat.ip(&["link", "set", "eth1", "up"]);
        phone.ip(&["addr", "add", &format!("{PRIVATE_NET}.2/24"), "dev", "eth0"]);
        phone.ip(&["link", "set", "eth0", "up"]);
        phone.ip(&[
            "route",
            "add",
            "default",
            "via",
            &format!("{PRIVATE_NET}.1"),
        ]);
        nat.must("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        let rules = "table ip nat {\n\
             \tchain postrouting {\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\toifname \"eth0\" masquerade\n\
             \t}\n\
             }\n";
        let file = std::env::temp_dir().join(format!("{}-nat.nft", self.prefix));
        fs::write(&file, rules).expect("write nft rules");
        let out = nat.run("nft", &["-f", file.to_str().unwrap()]);
        let _ = fs::remove_file(&file);
        assert!(out.0, "nft masquerade rules in {}: {}", nat.name, out.1);
        // The conntrack sysctls exist once the NAT rules loaded nf_conntrack.
        let (ok, out) = nat.run(
            "sysctl",
            &[
                "-q",
                "-w",
                &format!("net.netfilter.nf_conntrack_udp_timeout={udp_timeout}"),
            ],
        );
        if !ok {
            eprintln!("note: cannot set the NAT's conntrack UDP timeout: {out}");
        }
        self.hosts.push(Host {
            role: phone_role.to_string(),
            ns: phone,
            addr: format!("{PRIVATE_NET}.2").parse().unwrap(),
        });
    }

    pub fn host(&self, role: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .unwrap_or_else(|| panic!("no host {role}"))
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

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- network state at failure -----\n{}", self.describe());
        }
    }
}
