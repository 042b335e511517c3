//! Network namespaces and programs for the state-sync tests (tests/sync_netns.rs): a LAN
//! (a bridge in a namespace of its own) with one namespace per host, a NAT router with a
//! phone behind it, sipfront hosts with `[vrrp]` and `[sync]`, Kamailio registrars, sipp,
//! plain UDP backends, `tcpdump -w` captures and a raw socket that sends UDP with a forged
//! source address (an attacker on the LAN).
//!
//! The namespaces, the LAN, hosts, sipfront, sipp and tcpdump in a namespace come from
//! tests/netns/ (shared with the VRRP tests; `mod netns;` in tests/sync_netns.rs): every
//! namespace is created by the test (unique name `sfsync<PID>x<N>-<role>`) and held by a
//! [`Netns`] guard that SIGKILLs, by pid, whatever still runs in it (only our own programs
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

pub use crate::netns::{
    ADMIN, Host, Lan, Netns, NsSipfront, require, serial, spawn_tcpdump, start_sipp, stop_tcpdump,
    udp_bound_in, udp_ports_bound, wait_bound,
};

use std::collections::BTreeSet;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// The shared sync key the tests write to `sync.key` (the key file holds it as text).
pub const SYNC_KEY: &str = "sync-test-key-7f3a9c1e5b2d4f6a8c0e";

/// The LAN of the sync tests (see [`Lan`]), and optionally a NAT router with a phone on a
/// private network behind it ([`Lan::add_nat_phone`]).
pub type Net = Lan;

/// The LAN and one host per `(role, last octet)` on it: `eth0` with `10.88.0.<octet>/24` and
/// MAC `02:88:00:00:00:<octet>`.
pub fn sync_net(hosts: &[(&str, u8)]) -> Net {
    Lan::create("sfsync", NET, "02:88:00:00:00", hosts)
}

impl Lan {
    /// A NAT router `nat_role` on the LAN (`10.88.0.<octet>`) and a phone host `phone_role`
    /// behind it: phone `eth0` 192.168.77.2/24, router `eth1` 192.168.77.1/24, default route
    /// via the router, IPv4 forwarding on, and `nft` masquerade of everything that leaves
    /// the router's `eth0` (the LAN side). `udp_timeout`: conntrack's timeout for UDP
    /// mappings without replies-in-both-directions history (kernel default 30 s).
    pub fn add_nat_phone(&mut self, nat_role: &str, octet: u8, phone_role: &str, udp_timeout: u32) {
        self.add_host(nat_role, octet);
        let phone = Netns::create(format!("{}-{phone_role}", self.prefix));
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
        let out = nat.run_status("nft", &["-f", file.to_str().unwrap()]);
        let _ = fs::remove_file(&file);
        assert!(out.0, "nft masquerade rules in {}: {}", nat.name, out.1);
        // The conntrack sysctls exist once the NAT rules loaded nf_conntrack.
        let (ok, out) = nat.run_status(
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
            mac: String::new(),
            port: String::new(),
        });
    }
}
