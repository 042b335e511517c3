//! The AnyIP route that makes a relay prefix local (`ip route add local PREFIX dev lo`),
//! through rtnetlink. Added unless a route not ours already makes the whole prefix local
//! (127.0.0.0/8 does for 127.16.0.0/12); removed on exit only if this process added it,
//! or took it over from a run of ours that was killed before it could remove it.
//!
//! Which run owns a route of ours: the owner holds an abstract Unix socket named after
//! the prefix ([`Lock`]) for as long as it runs. The kernel lets it go when the process
//! dies, however it dies, so a route of ours whose name is free is a killed run's
//! leftover, and one whose name is held belongs to a running instance (another sipfront
//! on this host or namespace), which a second start must neither take nor remove.
//!
//! Any local user can bind an abstract name, so a held name is checked: ours is a
//! listening stream socket, whose holder a connection names (`SO_PEERCRED`). A name held
//! by another user, by a socket that does not take connections, or by a listener whose
//! queue is full (its holder unknown) is squatted: the start
//! goes on without the lock (warning), adds the route if it is missing and then removes
//! it on exit, but leaves an existing route (a running instance's, perhaps) and other
//! prefixes' leftovers alone.

use std::io;
use std::net::IpAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};

use futures_util::TryStreamExt;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};

/// The kernel's `local` routing table, where iproute2 puts `local` routes too.
const RT_TABLE_LOCAL: u32 = 255;

/// The protocol number our routes carry (`ip route` shows `proto 245`; no routing daemon
/// has it): a start after a crash or a SIGKILL tells its own leftover route from an
/// operator's, takes it over and removes it on exit, instead of leaving it for good.
const RTPROT_SIPFRONT: u8 = 245;

/// A prefix as the routing table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub len: u8,
}

impl Net {
    /// The address left-aligned in 128 bits (an IPv4 address in the top 32), so that
    /// one mask of `len` top bits serves both families; and the family's width.
    fn bits(self) -> (u128, u32) {
        match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    /// Whether every address of `other` is in `self` (same family).
    fn covers(self, other: Net) -> bool {
        let ((a, fa), (b, fb)) = (self.bits(), other.bits());
        if fa != fb || self.len > other.len {
            return false;
        }
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.len))
            .unwrap_or(0);
        a & mask == b & mask
    }

    fn overlaps(self, other: Net) -> bool {
        self.covers(other) || other.covers(self)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A `local` route found in the routing tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub net: Net,
    /// Carries our protocol number.
    pub ours: bool,
}

/// What [`ensure`] does about the routes it found.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// A route not ours makes the whole prefix local: use it, add nothing.
    Covered(Net),
    /// Add (or adopt, if `exact`) our route, after removing each of `stale` whose owner
    /// is gone (routes of ours for other prefixes that overlap this one).
    Own { exact: bool, stale: Vec<Net> },
}

/// The decision, without I/O: `found` are the `local` routes of the prefix's family.
pub fn plan(want: Net, found: &[Found]) -> Plan {
    if let Some(f) = found.iter().find(|f| !f.ours && f.net.covers(want)) {
        return Plan::Covered(f.net);
    }
    Plan::Own {
        exact: found.iter().any(|f| f.ours && f.net == want),
        stale: found
            .iter()
            .filter(|f| f.ours && f.net != want && f.net.overlaps(want))
            .map(|f| f.net)
            .collect(),
    }
}

/// The running owner's claim on a prefix's route (see the module's text).
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] UnixListener);

/// What taking a prefix's lock found.
#[derive(Debug)]
enum Claim {
    Ours(Lock),
    /// A sipfront of this user holds it: it runs.
    Running,
    /// Held by something else (who, as far as known).
    Squatted(String),
}

impl Lock {
    fn name(net: Net) -> String {
        format!("sipfront-relay-prefix {net}")
    }

    fn take(net: Net) -> io::Result<Claim> {
        let name = Self::name(net);
        let addr = UnixAddr::from_abstract_name(name.as_bytes())?;
        match UnixListener::bind_addr(&addr) {
            Ok(s) => Ok(Claim::Ours(Lock(s))),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(holder(&name)),
            Err(e) => Err(e),
        }
    }
}

/// Who holds the lock name `name`: a connection to it names the listener's user.
fn holder(name: &str) -> Claim {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, UnixAddr as NixUnixAddr, connect, getsockopt, socket,
        sockopt,
    };
    let probe = || -> nix::Result<nix::sys::socket::UnixCredentials> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &NixUnixAddr::new_abstract(name.as_bytes())?,
        )?;
        getsockopt(&fd, sockopt::PeerCredentials)
    };
    match probe() {
        Ok(c) if c.uid() == nix::unistd::geteuid().as_raw() => Claim::Running,
        Ok(c) => Claim::Squatted(format!("pid {}, uid {}", c.pid(), c.uid())),
        // Its queue of connections is full: whose it is cannot be told, and anyone
        // can fill a queue of their own (listen(0), connect once). Squatted is the
        // safe reading: that path removes no route it did not add, and a second
        // sipfront fails on its relay port anyway.
        Err(nix::errno::Errno::EAGAIN) => {
            Claim::Squatted("a listener whose queue is full (holder unknown)".into())
        }
        Err(e) => Claim::Squatted(format!("a socket that takes no connection ({e})")),
    }
}

fn message(net: Net) -> io::Result<RouteMessage> {
    let lo = nix::net::if_::if_nametoindex("lo").map_err(io::Error::from)?;
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(net.addr, net.len)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:?}")))?
        .output_interface(lo)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .table_id(RT_TABLE_LOCAL)
        .protocol(RouteProtocol::Other(RTPROT_SIPFRONT))
        .build())
}

/// A local route this process owns; [`LocalRoute::remove`] takes it away again.
#[derive(Debug)]
pub struct LocalRoute {
    net: Net,
    /// `None` when the lock name was squatted (see the module's text).
    _lock: Option<Lock>,
}

/// Makes `net` local. `Ok(None)`: a route not ours makes it local already (nothing
/// to undo). An error if a running sipfront owns the route of this very prefix.
pub async fn ensure(net: Net) -> io::Result<Option<LocalRoute>> {
    with_netlink(async |handle| ensure_with(handle, net).await).await
}

/// `f` with a netlink connection of its own, closed after it.
async fn with_netlink<T>(
    f: impl AsyncFnOnce(&rtnetlink::Handle) -> io::Result<T>,
) -> io::Result<T> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let driver = tokio::spawn(conn);
    let r = f(&handle).await;
    driver.abort();
    r
}

/// Adds our route for `net`, or deletes it.
async fn set_route(handle: &rtnetlink::Handle, net: Net, add: bool) -> io::Result<()> {
    let m = message(net)?;
    let r = if add {
        handle.route().add(m).execute().await
    } else {
        handle.route().del(m).execute().await
    };
    r.map_err(to_io)
}

async fn ensure_with(handle: &rtnetlink::Handle, net: Net) -> io::Result<Option<LocalRoute>> {
    let v4 = net.addr.is_ipv4();
    if let Plan::Covered(by) = plan(net, &local_routes(handle, v4).await?) {
        tracing::debug!(prefix = %net, route = %by, "relay prefix already local");
        return Ok(None);
    }
    let lock = match Lock::take(net)? {
        Claim::Ours(l) => Some(l),
        Claim::Running => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another running sipfront on this host owns the route of {net}"),
            ));
        }
        Claim::Squatted(who) => {
            tracing::warn!(
                prefix = %net,
                name = %Lock::name(net),
                holder = %who,
                "the relay prefix's lock name is held by something that is not a running \
                 sipfront of this user: going on \
                 without it (an existing route is used and left in place)"
            );
            None
        }
    };
    // Looked at again with the lock held: an owner that exited between the first look
    // and the lock took its route away.
    let (exact, stale) = match plan(net, &local_routes(handle, v4).await?) {
        Plan::Covered(_) => return Ok(None),
        Plan::Own { exact, stale } => (exact, stale),
    };
    let Some(lock) = lock else {
        // Squatted: whose the routes are cannot be told. One already there stays as
        // it is (nothing to undo); a missing one is added and ours.
        if exact {
            return Ok(None);
        }
        set_route(handle, net, true).await?;
        return Ok(Some(LocalRoute { net, _lock: None }));
    };
    for old in stale {
        // A leftover of a killed run for another prefix: its name is free, and held
        // until the route is gone. (Held by another: a running instance's, left alone;
        // both routes make their addresses local.)
        if let Claim::Ours(_old_lock) = Lock::take(old)? {
            tracing::info!(route = %old, "removing a killed run's relay prefix route");
            set_route(handle, old, false).await?;
        }
    }
    if !exact {
        set_route(handle, net, true).await?;
    }
    Ok(Some(LocalRoute {
        net,
        _lock: Some(lock),
    }))
}

/// The tables whose `local` routes make addresses local for every lookup: `local`
/// (255, where `ip route add local` puts them) and `main` (254). A `local` route in a
/// policy table (TPROXY's `local 0.0.0.0/0 dev lo table 100`) applies only to the
/// packets its rules select.
const RT_TABLE_MAIN: u32 = 254;

/// Every `local` route of one family in the `local` and `main` tables.
async fn local_routes(handle: &rtnetlink::Handle, v4: bool) -> io::Result<Vec<Found>> {
    let mut req = RouteMessage::default();
    req.header.address_family = if v4 {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let mut routes = handle.route().get(req).execute();
    let mut found = Vec::new();
    while let Some(m) = routes.try_next().await.map_err(to_io)? {
        // The table: the attribute (any id), else the header's byte (ids below 256).
        let table = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(m.header.table));
        if m.header.kind != RouteType::Local || !matches!(table, RT_TABLE_LOCAL | RT_TABLE_MAIN) {
            continue;
        }
        let addr = m.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
            _ => None,
        });
        let len = m.header.destination_prefix_length;
        let addr = match addr {
            Some(a) => a,
            // No destination: the default route's prefix, 0/0.
            None if v4 => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            None => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        found.push(Found {
            net: Net { addr, len },
            ours: m.header.protocol == RouteProtocol::Other(RTPROT_SIPFRONT),
        });
    }
    Ok(found)
}

fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(e) => e.to_io(),
        e => io::Error::other(e.to_string()),
    }
}

impl LocalRoute {
    pub async fn remove(self) -> io::Result<()> {
        // The lock goes with `self`, after the route.
        with_netlink(async |handle| set_route(handle, self.net, false).await).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Net {
        let (a, l) = s.split_once('/').unwrap();
        Net {
            addr: a.parse().unwrap(),
            len: l.parse().unwrap(),
        }
    }

    fn f(s: &str, ours: bool) -> Found {
        Found { net: n(s), ours }
    }

    #[test]
    fn covers_by_length_and_bits() {
        assert!(n("127.0.0.0/8").covers(n("127.16.0.0/12")));
        assert!(!n("127.16.0.0/12").covers(n("127.0.0.0/8")));
        assert!(n("10.200.0.0/16").covers(n("10.200.0.0/16")));
        assert!(!n("10.200.0.0/16").covers(n("10.201.0.0/24")));
        assert!(n("10.200.0.0/16").covers(n("10.200.255.255/32")));
        assert!(n("0.0.0.0/0").covers(n("10.0.0.0/8")));
        assert!(n("fd00:200::/48").covers(n("fd00:200:0:7::/64")));
        assert!(!n("fd00:200::/64").covers(n("fd00:200:0:1::/64")));
        assert!(n("::/0").covers(n("fd00::/64")));
        // Families never cover each other.
        assert!(!n("0.0.0.0/0").covers(n("::/128")));
        assert!(!n("::/0").covers(n("10.0.0.0/8")));
        assert!(n("10.200.0.0/24").overlaps(n("10.200.0.0/16")));
        assert!(!n("10.200.0.0/24").overlaps(n("10.201.0.0/16")));
    }

    #[test]
    fn a_route_not_ours_over_the_whole_prefix_is_used() {
        let want = n("127.16.0.0/12");
        assert_eq!(
            plan(want, &[f("127.0.0.1/32", false), f("127.0.0.0/8", false)]),
            Plan::Covered(n("127.0.0.0/8"))
        );
        // An operator's route for part of it, or one address (an interface address),
        // does not make the prefix local.
        let want = n("10.200.0.0/16");
        assert_eq!(
            plan(
                want,
                &[f("10.200.0.0/24", false), f("10.200.0.1/32", false)]
            ),
            Plan::Own {
                exact: false,
                stale: vec![]
            }
        );
    }

    #[test]
    fn our_routes_are_adopted_or_cleared() {
        let want = n("10.200.0.0/16");
        // A killed run's route of this prefix: adopted.
        assert_eq!(
            plan(want, &[f("10.200.0.0/16", true)]),
            Plan::Own {
                exact: true,
                stale: vec![]
            }
        );
        // A killed run's route of a narrower or wider prefix that overlaps: a candidate
        // to remove (if its owner is gone); one that does not overlap is not touched.
        assert_eq!(
            plan(
                want,
                &[
                    f("10.200.0.0/24", true),
                    f("10.0.0.0/8", true),
                    f("10.201.0.0/16", true)
                ]
            ),
            Plan::Own {
                exact: false,
                stale: vec![n("10.200.0.0/24"), n("10.0.0.0/8")]
            }
        );
        // Ours covering it is not "someone else's": still ours to own or clear.
        assert_ne!(
            plan(want, &[f("10.0.0.0/8", true)]),
            Plan::Covered(n("10.0.0.0/8"))
        );
    }

    #[test]
    fn the_lock_is_held_until_dropped() {
        let net = n("198.51.100.0/24");
        let Claim::Ours(held) = Lock::take(net).unwrap() else {
            panic!("free");
        };
        assert!(
            matches!(Lock::take(net).unwrap(), Claim::Running),
            "held by the first, of this user"
        );
        drop(held);
        assert!(
            matches!(Lock::take(net).unwrap(), Claim::Ours(_)),
            "free again"
        );
    }

    /// A stream socket bound to `net`'s lock name, not listening (any local user can
    /// make one).
    fn bound_stream(net: Net) -> std::os::fd::OwnedFd {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
        let s = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let addr = UnixAddr::new_abstract(Lock::name(net).as_bytes()).unwrap();
        bind(std::os::fd::AsRawFd::as_raw_fd(&s), &addr).unwrap();
        s
    }

    /// A name bound by a stream socket that takes no connection (any local user can
    /// bind one) is not taken for a running sipfront.
    #[test]
    fn a_squatted_lock_name_is_told_from_a_running_instance() {
        let net = n("198.51.100.0/25");
        let squatter = bound_stream(net);
        let claim = Lock::take(net).unwrap();
        assert!(
            matches!(&claim, Claim::Squatted(who) if who.contains("takes no connection")),
            "{claim:?}"
        );
        drop(squatter);
        assert!(matches!(Lock::take(net).unwrap(), Claim::Ours(_)));

        // A listener of this user whose queue is full (listen(0), one connection
        // waiting): its holder cannot be asked, so it is not taken for sipfront.
        let full = bound_stream(net);
        nix::sys::socket::listen(&full, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
        let _waiting = std::os::unix::net::UnixStream::connect_addr(
            &UnixAddr::from_abstract_name(Lock::name(net).as_bytes()).unwrap(),
        )
        .unwrap();
        let claim = Lock::take(net).unwrap();
        assert!(
            matches!(&claim, Claim::Squatted(who) if who.contains("queue is full")),
            "{claim:?}"
        );
    }

    /// A listener of another user on the name (as ours would be) is squatted too: a
    /// copy of this test binary runs as `nobody` and holds it.
    #[test]
    fn a_lock_name_held_by_another_user_is_squatted() {
        use std::io::BufRead;
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        const TEST: &str = "sys::localroute::tests::a_lock_name_held_by_another_user_is_squatted";
        if let Ok(name) = std::env::var("SIPFRONT_TEST_SQUAT") {
            // The child: holds the name until its parent kills it (30 s at most).
            let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
            let _held = UnixListener::bind_addr(&addr).unwrap();
            println!("squatting");
            std::thread::sleep(std::time::Duration::from_secs(30));
            return;
        }
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: running a child as another user needs root");
            return;
        }
        // Where `nobody` may run it from (a noexec /tmp, or a user namespace without
        // uid 65534, makes that impossible: the test is skipped then, saying so).
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.path().join("squatter");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let net = n("198.51.100.128/25");
        let spawned = std::process::Command::new(&exe)
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env("SIPFRONT_TEST_SQUAT", Lock::name(net))
            .uid(65534)
            .gid(65534)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "SKIPPED: cannot run a child as uid 65534 from {}: {e}",
                    exe.display()
                );
                return;
            }
        };
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let seen = std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains("squatting"));
            let _ = tx.send(seen);
        });
        let ready = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or(false);
        let claim = Lock::take(net);
        let _ = child.kill();
        let _ = child.wait();
        assert!(ready, "the child did not start");
        let claim = claim.unwrap();
        assert!(
            matches!(&claim, Claim::Squatted(who) if who.contains("uid 65534")),
            "{claim:?}"
        );
    }
}
