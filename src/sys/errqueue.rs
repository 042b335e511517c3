//! ICMP errors for UDP sockets (`IP_RECVERR`): which destination was unreachable.
//!
//! With `IP_RECVERR` set, an ICMP port/host unreachable for a datagram we sent is
//! queued on the sending socket; `recvmsg(MSG_ERRQUEUE)` returns the original
//! destination, so the health checker learns *which* backend bounced within a
//! millisecond of the send, instead of waiting for probe timeouts.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

/// Turns on extended error reporting for a socket.
pub fn enable(fd: &impl AsRawFd, ipv6: bool) -> io::Result<()> {
    let one: libc::c_int = 1;
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::IPPROTO_IP, libc::IP_RECVERR)
    };
    // SAFETY: a valid fd and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An unreachable destination reported by ICMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable {
    pub dest: SocketAddr,
    /// ICMP(v6) type and code, for logs.
    pub icmp_type: u8,
    pub icmp_code: u8,
}

/// Reads every queued error; calls `f` for each ICMP unreachable. Returns how many
/// errors were read (of any kind).
pub fn drain(fd: &impl AsRawFd, mut f: impl FnMut(Unreachable)) -> usize {
    let mut n = 0;
    while let Some(e) = read_one(fd.as_raw_fd()) {
        n += 1;
        if let Some(u) = e {
            f(u);
        }
        if n > 1024 {
            break;
        }
    }
    n
}

/// One entry of the error queue: None when the queue is empty, Some(None) for an
/// entry that is not an ICMP unreachable.
fn read_one(fd: RawFd) -> Option<Option<Unreachable>> {
    // SAFETY: plain C structs, zero-initialised, with lengths that match the buffers
    // handed to recvmsg; the kernel writes within those lengths.
    unsafe {
        let mut name: libc::sockaddr_storage = zeroed();
        let mut data = [0u8; 64];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let mut control = [0u64; 64];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 64]>() as _;
        let rc = libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT);
        if rc < 0 {
            return None;
        }
        let dest = sockaddr_to_std(&name)?;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            let v4 = c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_RECVERR;
            let v6 = c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_RECVERR;
            if v4 || v6 {
                let ee = &*(libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err);
                let icmp = (v4 && ee.ee_origin == libc::SO_EE_ORIGIN_ICMP)
                    || (v6 && ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6);
                // ICMP type 3 / ICMPv6 type 1: destination unreachable.
                let unreachable = (v4 && ee.ee_type == 3) || (v6 && ee.ee_type == 1);
                if icmp && unreachable {
                    return Some(Some(Unreachable {
                        dest,
                        icmp_type: ee.ee_type,
                        icmp_code: ee.ee_code,
                    }));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Some(None)
    }
}

/// A kernel socket address (IPv4 or IPv6) as a std one.
pub(super) fn sockaddr_to_std(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    #[test]
    fn reports_port_unreachable_with_the_destination() {
        // A port nobody listens on: bind, note the port, close.
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable(&s, false).unwrap();
        s.send_to(b"OPTIONS", closed).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = vec![];
        while got.is_empty() && Instant::now() < deadline {
            drain(&s, |u| got.push(u));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].dest, closed);
        assert_eq!((got[0].icmp_type, got[0].icmp_code), (3, 3));
        assert_eq!(drain(&s, |_| {}), 0, "queue drained");
    }
}
