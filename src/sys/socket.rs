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

/// Sets a socket's send buffer to `n` bytes, best effort, as [`set_recv_buffer`]
/// (`SO_SNDBUFFORCE`, else `SO_SNDBUF`, capped by `net.core.wmem_max`). A UDP socket's
/// send buffer holds what the device has not sent yet: on a real NIC a burst beyond it
/// is refused with EAGAIN.
pub fn set_send_buffer(s: &impl std::os::fd::AsFd, n: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(s, sockopt::SndBufForce, &n).is_err() {
        let _ = setsockopt(s, sockopt::SndBuf, &n);
    }
}

/// Datagrams the kernel dropped at this socket since it was opened, wrapping at 2^32:
/// a full receive buffer (or a socket filter's refusal), which no read of sipfront's
/// sees. `SO_MEMINFO`'s `SK_MEMINFO_DROPS`; None if the kernel does not say.
pub fn drops(s: &impl std::os::fd::AsRawFd) -> Option<u32> {
    const SK_MEMINFO_DROPS: usize = 8;
    let mut v = [0u32; SK_MEMINFO_DROPS + 1];
    let mut len = std::mem::size_of_val(&v) as libc::socklen_t;
    // SAFETY: `v` is writable for `len` bytes and the kernel writes at most `len`
    // (it sets `len` to what it wrote).
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            v.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (r == 0 && len as usize >= std::mem::size_of_val(&v)).then_some(v[SK_MEMINFO_DROPS])
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

    /// A socket nobody reads drops what its buffer cannot hold, and says so.
    #[test]
    fn drops_counts_a_full_receive_buffer() {
        let rx = bind_udp(SocketAddr::from(([127, 0, 0, 1], 0)), None).unwrap();
        socket2::SockRef::from(&rx)
            .set_recv_buffer_size(4096)
            .unwrap();
        assert_eq!(drops(&rx), Some(0));
        let tx = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..64 {
            tx.send_to(&[0u8; 1000], rx.local_addr().unwrap()).unwrap();
        }
        assert!(drops(&rx).is_some_and(|n| n > 0), "{:?}", drops(&rx));
    }
}
