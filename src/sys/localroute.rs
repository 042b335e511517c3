//! The AnyIP route that makes a relay prefix local (`ip route add local PREFIX dev lo`),
//! through rtnetlink. Added only when the prefix is not local already (127.0.0.0/8 is),
//! removed on exit only if this process added it, or took it over from a run of ours
//! that was killed before it could remove it.

use std::io;
use std::net::{IpAddr, SocketAddr};

use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope, RouteType};

/// The kernel's `local` routing table, where iproute2 puts `local` routes too.
const RT_TABLE_LOCAL: u32 = 255;

/// The protocol number our routes carry (`ip route` shows `proto 245`; no routing daemon
/// has it): a start after a crash or a SIGKILL tells its own leftover route from an
/// operator's, takes it over and removes it on exit, instead of leaving it for good.
const RTPROT_SIPFRONT: u8 = 245;

/// Whether `ip` is already local: a plain bind (no IP_FREEBIND) succeeds. Says nothing
/// where the host lets any address bind, see [`binds_any`].
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// `net.ipv4.ip_nonlocal_bind` (or the IPv6 one) is on, as it often is on VRRP hosts:
/// every address binds, local or not.
fn binds_any(ip: IpAddr) -> bool {
    let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    std::fs::read_to_string(format!("/proc/sys/net/{family}/ip_nonlocal_bind"))
        .is_ok_and(|v| v.trim() != "0")
}

fn message(net: IpAddr, len: u8) -> io::Result<RouteMessage> {
    let lo = nix::net::if_::if_nametoindex("lo").map_err(io::Error::from)?;
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(net, len)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e:?}")))?
        .output_interface(lo)
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .table_id(RT_TABLE_LOCAL)
        .protocol(RouteProtocol::Other(RTPROT_SIPFRONT))
        .build())
}

/// A local route this process added; [`LocalRoute::remove`] takes it away again.
#[derive(Debug, Clone)]
pub struct LocalRoute {
    net: IpAddr,
    len: u8,
}

/// Makes `net/len` local. `Ok(None)`: it was local already, by a route not ours
/// (nothing to undo).
pub async fn ensure(net: IpAddr, len: u8, probe: IpAddr) -> io::Result<Option<LocalRoute>> {
    if !binds_any(probe) && is_local(probe) {
        return Ok(None);
    }
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let driver = tokio::spawn(conn);
    let r = add_or_take_over(&handle, net, len).await;
    driver.abort();
    r
}

async fn add_or_take_over(
    handle: &rtnetlink::Handle,
    net: IpAddr,
    len: u8,
) -> io::Result<Option<LocalRoute>> {
    match handle.route().add(message(net, len)?).execute().await {
        Ok(()) => return Ok(Some(LocalRoute { net, len })),
        // The prefix has a route (IPv6 AnyIP addresses do not bind without FREEBIND, so
        // the bind above never finds them local).
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
        Err(e) => return Err(to_io(e)),
    }
    // A delete that names our protocol removes only a route of ours: a leftover, made
    // ours again by adding it anew. Any other route is someone else's to keep.
    if handle
        .route()
        .del(message(net, len)?)
        .execute()
        .await
        .is_err()
    {
        return Ok(None);
    }
    handle
        .route()
        .add(message(net, len)?)
        .execute()
        .await
        .map_err(to_io)?;
    Ok(Some(LocalRoute { net, len }))
}

fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(e) => e.to_io(),
        e => io::Error::other(e.to_string()),
    }
}

impl LocalRoute {
    pub async fn remove(self) -> io::Result<()> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        let driver = tokio::spawn(conn);
        let r = handle
            .route()
            .del(message(self.net, self.len)?)
            .execute()
            .await;
        driver.abort();
        r.map_err(to_io)
    }
}
