//! ICMP errors for UDP sockets (`IP_RECVERR`): which destination was unreachable.
//!
//! With `IP_RECVERR` set, an ICMP port/host unreachable for a datagram we sent is
//! queued on the sending socket; `recvmsg(MSG_ERRQUEUE)` returns the original
//! destination, so the health checker learns *which* backend bounced within a
//! millisecond of the send, instead of waiting for probe timeouts.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};

/// Turns on extended error reporting for a socket.
pub fn enable(fd: &impl AsFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        setsockopt(fd, sockopt::Ipv6RecvErr, &true)?;
    } else {
        setsockopt(fd, sockopt::Ipv4RecvErr, &true)?;
    }
    Ok(())
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
    while let Some(e) = read_one(fd) {
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

/// Room for one `IP_RECVERR` control message (the extended error and the offender's
/// address), on the stack and aligned for the `cmsghdr` the kernel writes into it.
#[repr(C, align(8))]
struct Control([u8; 256]);

/// One entry of the error queue: None when the queue is empty, Some(None) for an
/// entry that is not an ICMP unreachable.
fn read_one(fd: &impl AsRawFd) -> Option<Option<Unreachable>> {
    let mut data = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut data)];
    let mut control = Control([0; 256]);
    let msg = recvmsg::<SockaddrStorage>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut control.0),
        MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    // The queued datagram's destination: the backend that bounced it.
    let dest = msg.address.as_ref().and_then(storage_to_std)?;
    let Ok(cmsgs) = msg.cmsgs() else {
        return Some(None);
    };
    for c in cmsgs {
        // ICMP type 3 / ICMPv6 type 1: destination unreachable.
        let ee = match c {
            ControlMessageOwned::Ipv4RecvErr(ee, _)
                if ee.ee_origin == libc::SO_EE_ORIGIN_ICMP && ee.ee_type == 3 =>
            {
                ee
            }
            ControlMessageOwned::Ipv6RecvErr(ee, _)
                if ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6 && ee.ee_type == 1 =>
            {
                ee
            }
            _ => continue,
        };
        return Some(Some(Unreachable {
            dest,
            icmp_type: ee.ee_type,
            icmp_code: ee.ee_code,
        }));
    }
    Some(None)
}

/// A kernel socket address (IPv4 or IPv6) as a std one.
fn storage_to_std(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        Some(SocketAddr::V4(SocketAddrV4::from(*a)))
    } else {
        s.as_sockaddr_in6()
            .map(|a| SocketAddr::V6(SocketAddrV6::from(*a)))
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
