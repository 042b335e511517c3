//! Prefix-mode relay sockets: one wildcard socket per relay port receives for every
//! address of the prefix (the destination arrives as an `IP_PKTINFO` /
//! `IPV6_PKTINFO` control message, see `mmsg.rs`) and sends from any of them
//! (`sendmsg` with the source address in the same control message).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::SockaddrStorage;
use socket2::{Domain, Protocol, Socket, Type};

/// Binds `[::]:port` or `0.0.0.0:port` with destination reporting on. IPv6 also
/// needs `IPV6_FREEBIND` to send from an AnyIP address (it is a route, not an
/// address on an interface).
pub fn bind_wildcard(v6: bool, port: u16, rcvbuf: usize) -> io::Result<StdUdpSocket> {
    let (domain, any) = if v6 {
        (Domain::IPV6, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    } else {
        (Domain::IPV4, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    let on: libc::c_int = 1;
    if v6 {
        s.set_only_v6(true)?;
        s.set_freebind_v6(true)?;
        setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            on,
        )?;
    } else {
        setsockopt(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, on)?;
    }
    super::socket::set_recv_buffer(&s, rcvbuf);
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::new(any, port).into())?;
    Ok(s.into())
}

fn setsockopt(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: an int option; pointer and length describe `v`, which outlives the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Control buffer space for one pktinfo message (either family), 8-byte aligned.
pub const CMSG_BUF: usize = 64;

/// Room for control messages, aligned as `cmsghdr` needs.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct CmsgBuf(pub [u8; CMSG_BUF]);

/// Sends `data` to `to` from `src` (an address of the socket's family) without
/// allocating: the headers live on the stack.
pub fn send_from(
    sock: &StdUdpSocket,
    data: &[u8],
    to: SocketAddr,
    src: IpAddr,
) -> io::Result<usize> {
    let mut name = SockaddrStorage::from(to);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut ctrl = CmsgBuf([0; CMSG_BUF]);
    // SAFETY: msghdr is plain C data; all-zero is valid and the fields used are set.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut SockaddrStorage).cast();
    msg.msg_namelen = match to {
        SocketAddr::V4(_) => size_of::<libc::sockaddr_in>(),
        SocketAddr::V6(_) => size_of::<libc::sockaddr_in6>(),
    } as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    set_source(&mut msg, &mut ctrl, src);
    // SAFETY: every pointer in `msg` refers to a live local above.
    let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Makes `msg` send from `src` (an `IP_PKTINFO` / `IPV6_PKTINFO` control message in
/// `ctrl`, which must outlive the send).
pub fn set_source(msg: &mut libc::msghdr, ctrl: &mut CmsgBuf, src: IpAddr) {
    msg.msg_control = ctrl.0.as_mut_ptr().cast();
    // SAFETY: CMSG_* compute sizes and walk the buffer `msg` points at (CMSG_BUF
    // bytes, larger than one cmsg of either pktinfo); the writes stay within it.
    unsafe {
        let (level, ty, len) = match src {
            IpAddr::V4(_) => (
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                size_of::<libc::in_pktinfo>(),
            ),
            IpAddr::V6(_) => (
                libc::IPPROTO_IPV6,
                libc::IPV6_PKTINFO,
                size_of::<libc::in6_pktinfo>(),
            ),
        };
        msg.msg_controllen = libc::CMSG_SPACE(len as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(msg);
        (*c).cmsg_level = level;
        (*c).cmsg_type = ty;
        (*c).cmsg_len = libc::CMSG_LEN(len as u32) as usize;
        let d = libc::CMSG_DATA(c);
        match src {
            IpAddr::V4(a) => {
                let pi = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(a).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(d.cast::<libc::in_pktinfo>(), pi);
            }
            IpAddr::V6(a) => {
                let pi = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                std::ptr::write_unaligned(d.cast::<libc::in6_pktinfo>(), pi);
            }
        }
    }
}

/// The destination address in the control messages of a received `msghdr`.
///
/// # Safety
/// `msg` must be a header the kernel filled in by `recvmsg`/`recvmmsg`, its
/// `msg_control` pointing at a live buffer of at least `msg_controllen` bytes.
pub unsafe fn destination(msg: &libc::msghdr) -> Option<IpAddr> {
    if msg.msg_control.is_null() || msg.msg_controllen == 0 {
        return None;
    }
    // SAFETY: per the contract, the kernel wrote well-formed cmsgs within the buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            let d = libc::CMSG_DATA(c);
            // A message too short for its payload (the kernel never writes one) is
            // passed over rather than read past.
            let fits = |n: usize| (*c).cmsg_len as usize >= libc::CMSG_LEN(n as u32) as usize;
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) if fits(size_of::<libc::in_pktinfo>()) => {
                    let pi = std::ptr::read_unaligned(d.cast::<libc::in_pktinfo>());
                    return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(pi.ipi_addr.s_addr))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if fits(size_of::<libc::in6_pktinfo>()) => {
                    let pi = std::ptr::read_unaligned(d.cast::<libc::in6_pktinfo>());
                    return Some(IpAddr::V6(Ipv6Addr::from(pi.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mmsg::RecvBatch;

    #[test]
    fn receives_for_and_sends_from_any_loopback_address() {
        let rx = bind_wildcard(false, 0, 1 << 16).unwrap();
        let port = rx.local_addr().unwrap().port();
        let peer = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        for last in [2u8, 200] {
            let dst = SocketAddr::from(([127, 31, 4, last], port));
            peer.send_to(b"hi", dst).unwrap();
            let mut b = RecvBatch::default();
            assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 1);
            let (d, from) = b.get(0).unwrap();
            assert_eq!((d, from), (&b"hi"[..], peer.local_addr().unwrap()));
            assert_eq!(b.destination(0), Some(dst.ip()));
            send_from(&rx, b"back", from, dst.ip()).unwrap();
            let mut buf = [0u8; 16];
            let (n, src) = peer.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], src), (&b"back"[..], dst));
        }
    }

    #[test]
    fn ipv6_reports_the_destination_and_sends_from_the_given_source() {
        let rx = bind_wildcard(true, 0, 1 << 16).unwrap();
        let port = rx.local_addr().unwrap().port();
        let peer = StdUdpSocket::bind("[::1]:0").unwrap();
        let dst = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        peer.send_to(b"six", dst).unwrap();
        let mut b = RecvBatch::default();
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 1);
        assert_eq!(b.destination(0), Some(dst.ip()));
        let (_, from) = b.get(0).unwrap();
        send_from(&rx, b"back", from, dst.ip()).unwrap();
        let mut buf = [0u8; 16];
        let (n, src) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], src), (&b"back"[..], dst));
    }
}
