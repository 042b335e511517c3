//! A LAN of network namespaces for the HA-tier tests: a "lan" namespace holding a bridge,
//! and one namespace per host joined to that bridge by a veth pair. The veth pairs are
//! created directly inside the namespaces (`ip -n LAN link add pX type veth peer name eth0
//! netns HOST`), so nothing ever appears in, or is changed in, the host's own namespace.
//!
//! Everything is held by guards: [`Lan`] deletes its namespaces when dropped, also when a test
//! fails, and then prints every host's addresses and neighbour table.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::netns::{Netns, require};
use crate::process::wait_until;

/// The virtual address the tests move around, and its prefix.
pub const VIP: &str = "10.77.0.100";
pub const VIP_CIDR: &str = "10.77.0.100/24";
/// The subnet every host of a [`Lan`] is on: `10.77.0.<octet>/24`.
pub const NET: &str = "10.77.0";

/// The private network behind the NAT router of [`Lan::add_nat_phone`].
pub const PRIVATE_NET: &str = "192.168.77";

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
    /// Adds IPv6 `addr`/48 on eth0, usable at once (no duplicate address detection).
    pub fn add_ipv6(&self, addr: &str) {
        self.ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{addr}/48"),
            "dev",
            "eth0",
            "nodad",
        ]);
    }

    /// IPv4 addresses on eth0 (without prefix).
    pub fn addrs(&self) -> Vec<String> {
        self.ns.addrs("eth0")
    }

    pub fn has_addr(&self, addr: &str) -> bool {
        self.ns.has_addr("eth0", addr)
    }

    /// The neighbour entry for `addr` on eth0: (lladdr if any, the whole line).
    pub fn neigh(&self, addr: &str) -> (Option<String>, String) {
        self.ns.neigh(addr, Some("eth0"))
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
