//! The VRRP raw socket: IP protocol 112 on one interface, TTL 255, multicast to
//! 224.0.0.18 (joined on that interface) or unicast to configured peers.

use std::io;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::iface::Iface;
use super::packet::{MCAST_GROUP, PROTOCOL, TTL};

/// One received IPv4 datagram of protocol 112, with the header fields VRRP checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub payload: &'a [u8],
}

/// Splits a raw IPv4 datagram (as a raw socket delivers it) into header fields and
/// payload. None for anything that is not a whole IPv4 datagram.
pub fn parse_ipv4(buf: &[u8]) -> Option<Received<'_>> {
    let first = *buf.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]));
    if ihl < 20 || total < ihl || buf.len() < total {
        return None;
    }
    let ip = |o: usize| {
        Some(Ipv4Addr::new(
            *buf.get(o)?,
            buf[o + 1],
            buf[o + 2],
            buf[o + 3],
        ))
    };
    Some(Received {
        ttl: buf[8],
        src: ip(12)?,
        dst: ip(16)?,
        payload: &buf[ihl..total],
    })
}

pub struct Speaker {
    sock: AsyncFd<Socket>,
    dests: Vec<Ipv4Addr>,
}

impl Speaker {
    /// Opens the socket on `iface`; `peers` empty = multicast.
    pub fn open(iface: &Iface, peers: &[Ipv4Addr]) -> io::Result<Speaker> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(PROTOCOL))),
        )?;
        s.set_nonblocking(true)?;
        s.bind_device(Some(iface.name.as_bytes()))?;
        // Not bound to an address: a raw socket bound to one only receives datagrams
        // sent to it, and adverts go to 224.0.0.18. Each send names its source
        // (`send_to`), the primary address its checksum covers.
        s.set_ttl_v4(u32::from(TTL))?;
        s.set_multicast_ttl_v4(u32::from(TTL))?;
        s.set_multicast_loop_v4(false)?;
        s.set_multicast_if_v4(&iface.primary)?;
        s.join_multicast_v4_n(&MCAST_GROUP, &InterfaceIndexOrAddress::Index(iface.index))?;
        let dests = if peers.is_empty() {
            vec![MCAST_GROUP]
        } else {
            peers.to_vec()
        };
        // SAFETY: the Socket owns its fd and is moved into the AsyncFd, which keeps
        // it open for as long as it is registered. (This tokio's AsyncFd::register
        // takes that as the caller's promise; no wrapper crate can make it for us.)
        let sock = unsafe { AsyncFd::register(s) }.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Speaker { sock, dests })
    }

    pub fn dests(&self) -> &[Ipv4Addr] {
        &self.dests
    }

    /// Sends one VRRP message to `dst` from `src` (`IP_PKTINFO`): the address its
    /// checksum covers, whichever source the route to a unicast peer would pick.
    pub fn send_to(&self, payload: &[u8], dst: Ipv4Addr, src: Ipv4Addr) -> io::Result<()> {
        crate::sys::pktinfo::send_from(
            self.sock.get_ref(),
            payload,
            SocketAddr::V4(SocketAddrV4::new(dst, 0)),
            src.into(),
        )
        .map(drop)
    }

    pub async fn readable(&self) -> io::Result<()> {
        let mut g = self.sock.readable().await?;
        g.clear_ready();
        Ok(())
    }

    /// Reads one datagram without waiting; Ok(None) when there is none.
    pub fn try_recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<Option<&'b [u8]>> {
        match (&mut self.sock.get_ref()).read(buf) {
            Ok(n) => Ok(Some(&buf[..n])),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_parse() {
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 255, 112, 0, 0, 10, 0, 0, 1, 224, 0, 0, 18,
        ];
        p.extend_from_slice(&[0x31, 1, 100, 1, 0, 100, 0, 0]);
        let r = parse_ipv4(&p).unwrap();
        assert_eq!(
            (r.ttl, r.src, r.dst),
            (255, Ipv4Addr::new(10, 0, 0, 1), MCAST_GROUP)
        );
        assert_eq!(r.payload.len(), 8);
        assert!(parse_ipv4(&p[..10]).is_none());
        assert!(parse_ipv4(&[0x65; 40]).is_none());
    }
}
