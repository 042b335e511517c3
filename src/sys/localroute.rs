//! The AnyIP route that makes a relay prefix local (`ip route add local PREFIX dev lo`),
//! through rtnetlink. Added only when the prefix is not local already (127.0.0.0/8 is),
//! removed on exit only if this process added it.

use std::io;
use std::net::{IpAddr, SocketAddr};

use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{RouteMessage, RouteScope, RouteType};

/// The kernel's `local` routing table, where iproute2 puts `local` routes too.
const RT_TABLE_LOCAL: u32 = 255;

/// Whether `ip` is already local: a plain bind (no IP_FREEBIND) succeeds.
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
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
        .build())
}

/// A local route this process added; [`LocalRoute::remove`] takes it away again.
#[derive(Debug, Clone)]
pub struct LocalRoute {
    net: IpAddr,
    len: u8,
}

/// Makes `net/len` local. `Ok(None)`: it was local already (nothing to undo).
pub async fn ensure(net: IpAddr, len: u8, probe: IpAddr) -> io::Result<Option<LocalRoute>> {
    if is_local(probe) {
        return Ok(None);
    }
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let driver = tokio::spawn(conn);
    let r = handle.route().add(message(net, len)?).execute().await;
    driver.abort();
    match r {
        Ok(()) => Ok(Some(LocalRoute { net, len })),
        // Someone else's route (IPv6 AnyIP addresses do not bind without FREEBIND).
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) => Err(e.to_io()),
        Err(e) => Err(io::Error::other(e.to_string())),
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
        r.map_err(|e| io::Error::other(e.to_string()))
    }
}
