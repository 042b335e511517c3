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

use std::io;
use std::net::IpAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

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
pub struct Lock(#[allow(dead_code)] UnixDatagram);

impl Lock {
    /// `Ok(None)`: a running process holds it.
    fn take(net: Net) -> io::Result<Option<Lock>> {
        let name = format!("sipfront-relay-prefix {net}");
        let addr = UnixAddr::from_abstract_name(name.as_bytes())?;
        match UnixDatagram::bind_addr(&addr) {
            Ok(s) => Ok(Some(Lock(s))),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(None),
            Err(e) => Err(e),
        }
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
    _lock: Lock,
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
    let Some(lock) = Lock::take(net)? else {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another running sipfront on this host owns the route of {net}"),
        ));
    };
    // Looked at again with the lock held: an owner that exited between the first look
    // and the lock took its route away.
    let (exact, stale) = match plan(net, &local_routes(handle, v4).await?) {
        Plan::Covered(_) => return Ok(None),
        Plan::Own { exact, stale } => (exact, stale),
    };
    for old in stale {
        // A leftover of a killed run for another prefix: its name is free, and held
        // until the route is gone. (Held by another: a running instance's, left alone;
        // both routes make their addresses local.)
        if let Some(_old_lock) = Lock::take(old)? {
            tracing::info!(route = %old, "removing a killed run's relay prefix route");
            set_route(handle, old, false).await?;
        }
    }
    if !exact {
        set_route(handle, net, true).await?;
    }
    Ok(Some(LocalRoute { net, _lock: lock }))
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
        let held = Lock::take(net).unwrap().expect("free");
        assert!(Lock::take(net).unwrap().is_none(), "held by the first");
        drop(held);
        assert!(Lock::take(net).unwrap().is_some(), "free again");
    }
}
