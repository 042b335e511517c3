//! Network namespaces and programs for the state-sync tests (tests/sync_netns.rs): a LAN
//! (a bridge in a namespace of its own) with one namespace per host, a NAT router with a
//! phone behind it, sipfront hosts with `[vrrp]` and `[sync]`, Kamailio registrars, sipp,
//! plain UDP backends, `tcpdump -w` captures and a raw socket that sends UDP with a forged
//! source address (an attacker on the LAN).
//!
//! The namespaces, the LAN, hosts, sipfront, sipp and tcpdump in a namespace come from
//! the testkit crate (tests/testkit, shared with the VRRP tests): every
//! namespace is created by the test (unique name `sfsync<PID>x<N>-<role>`) and held by a
//! [`Netns`] guard that SIGKILLs, by pid, whatever still runs in it (only our own programs
//! can) and deletes it, also when a test fails. The veth pairs are created inside the
//! namespaces, so nothing is configured in the host's own namespace. Programs are started
//! with `ip netns exec NS PROGRAM`, which execs the program (no fork), so a [`Proc`] guard's
//! pid is the program's own.

use testkit::*;

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
