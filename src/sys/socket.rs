//! UDP sockets the way the dataplane needs them: bound before their address exists
//! (`IP_FREEBIND`) and sent on without waiting for readiness.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// Opens a UDP socket with `IP_FREEBIND`, so it can bind an address (a VIP) that is
/// not on the host yet; traffic flows the moment the address arrives.
pub fn bind_udp(addr: SocketAddr, rcvbuf: Option<usize>) -> io::Result<StdUdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    match addr.ip() {
        IpAddr::V4(_) => s.set_freebind_v4(true)?,
        IpAddr::V6(_) => {
            s.set_freebind_v6(true)?;
            // IPv6 only, whatever net.ipv6.bindv6only says: "[::]" must not take
            // IPv4 clients as mapped addresses (a configured IPv4 peer would not
            // match them) nor clash with an IPv4 socket on the same port.
            s.set_only_v6(true)?;
        }
    }
    if let Some(n) = rcvbuf {
        set_recv_buffer(&s, n);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Sets a socket's receive buffer to `n` bytes, best effort: `SO_RCVBUFFORCE` first
/// (with `CAP_NET_ADMIN`, which the unit grants, it is not capped by
/// `net.core.rmem_max`, 208 KiB on a stock kernel: a burst or a full sync table would
/// overflow that), else `SO_RCVBUF` (capped).
pub fn set_recv_buffer(s: &impl std::os::fd::AsFd, n: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(s, sockopt::RcvBufForce, &n).is_err() {
        let _ = setsockopt(s, sockopt::RcvBuf, &n);
    }
}

/// Sends without waiting for write readiness: a UDP send either fits the
/// socket buffer now or is dropped (and counted), and a just-opened relay socket has
/// no readiness event yet.
pub fn send_now(sock: &StdUdpSocket, data: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket2::SockRef::from(sock).send_to(data, &to.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    /// "[::]" is IPv6 only: an IPv4 socket on the same port still binds (with the
    /// kernel's default bindv6only=0 a dual-stack "[::]" would refuse it).
    #[test]
    fn ipv6_wildcard_leaves_ipv4_alone() {
        let v4 = bind_udp(SocketAddr::from(([0, 0, 0, 0], 0)), None).unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = bind_udp(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), None);
        assert!(v6.is_ok(), "{v6:?}");
    }
}
