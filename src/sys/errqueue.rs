//! ICMP errors for UDP sockets (`IP_RECVERR`): which destination was unreachable.
//!
//! With `IP_RECVERR` set, an ICMP port/host unreachable for a datagram we sent is
//! queued on the sending socket; `recvmsg(MSG_ERRQUEUE)` returns the original
//! destination, so the health checker learns *which* backend bounced within a
//! millisecond of the send, instead of waiting for probe timeouts.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
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

/// An unreachable destination reported by ICMP, with what the ICMP quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable<'a> {
    /// The quoted datagram's destination (address and port from the quoted headers).
    pub dest: SocketAddr,
    /// Who sent the ICMP error (`SO_EE_OFFENDER`), when the kernel names it.
    pub offender: Option<IpAddr>,
    /// ICMP(v6) type and code, for logs.
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The quoted UDP payload: the first bytes of the datagram that bounced, as far
    /// as the ICMP error quoted it (see the measurement below); empty when the ICMP
    /// quoted only the IP and UDP headers. At most [`QUOTE_MAX`] bytes.
    pub quote: &'a [u8],
}

impl Unreachable<'_> {
    /// A port unreachable (ICMP type 3 code 3, ICMPv6 type 1 code 4) sent by the
    /// destination host itself: its port is closed. Other unreachables (net, host,
    /// administratively prohibited) come from routers and may pass with a route change.
    pub fn is_port_closed_at_dest(&self) -> bool {
        let port = match self.dest {
            SocketAddr::V4(_) => (self.icmp_type, self.icmp_code) == (3, 3),
            SocketAddr::V6(_) => (self.icmp_type, self.icmp_code) == (1, 4),
        };
        port && self.offender == Some(self.dest.ip())
    }
}

/// Room for the quoted payload: all an ICMPv6 error can carry (1280-byte minimum MTU).
pub const QUOTE_MAX: usize = 1280;

/// Reads every queued error; calls `f` for each ICMP unreachable. Returns how many of
/// the errors read came from an ICMP(v6) message: those fail the socket's next send
/// whatever its destination, so that send is worth repeating. Errors of the send
/// itself (`SO_EE_ORIGIN_LOCAL`, e.g. EMSGSIZE for a datagram too large for the
/// family) are read and not counted: the same send would fail again.
///
/// What Linux hands back (measured by the tests here and in `tests/icmp_forged.rs`,
/// kernel 6.x): `recvmsg(MSG_ERRQUEUE)` returns as data the *UDP payload* part of
/// the datagram quoted inside the ICMP error (the kernel strips the quoted IP and
/// UDP headers), as `msg_name` the quoted destination address and port, and in the
/// `IP_RECVERR` control message the ICMP type/code and the ICMP sender (offender).
/// - An error Linux itself generates (port unreachable from a closed port, host
///   unreachable from a router) quotes as much of the original as fits in 576
///   bytes (IPv4: up to 520 payload bytes; ICMPv6: up to the 1280-byte minimum
///   MTU), so the OPTIONS request line, Via branch and Call-ID come back verbatim.
/// - An error that quotes only the IP header and 8 bytes (RFC 792 minimum, and what
///   a blind forger needs) comes back with zero data bytes.
/// - The kernel only queues an error on a socket whose local address/port equal the
///   quoted source, and, for a connected socket, whose peer equals the quoted
///   destination; it checks nothing else (not the ICMP sender, not the payload).
pub fn drain(fd: &impl AsRawFd, mut f: impl FnMut(&Unreachable<'_>)) -> usize {
    let mut n = 0;
    let mut data = [0u8; QUOTE_MAX];
    let mut read = 0;
    while let Some((icmp, e)) = read_one(fd, &mut data) {
        read += 1;
        n += usize::from(icmp);
        if let Some(u) = e {
            f(&u);
        }
        if read > 1024 {
            break;
        }
    }
    n
}

/// Room for one `IP_RECVERR` control message (the extended error and the offender's
/// address), on the stack and aligned for the `cmsghdr` the kernel writes into it.
#[repr(C, align(8))]
struct Control([u8; 256]);

/// ICMP "fragmentation needed" (type 3, code 4).
const FRAG_NEEDED: u8 = 4;

/// An IPv4 error-queue entry that says the destination cannot be reached.
fn is_unreachable_v4(origin: u8, icmp_type: u8, code: u8) -> bool {
    origin == libc::SO_EE_ORIGIN_ICMP && icmp_type == 3 && code != FRAG_NEEDED
}

/// One entry of the error queue: None when the queue is empty; else whether it came
/// from an ICMP(v6) message, and the unreachable it reports (None for other entries).
fn read_one<'a>(fd: &impl AsRawFd, data: &'a mut [u8]) -> Option<(bool, Option<Unreachable<'a>>)> {
    let mut control = Control([0; 256]);
    let (len, dest, found, icmp) = {
        let mut iov = [IoSliceMut::new(&mut *data)];
        let msg = recvmsg::<SockaddrStorage>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut control.0),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        )
        .ok()?;
        // The queued datagram's destination: the backend that bounced it.
        let dest = msg.address.as_ref().and_then(storage_to_std);
        let mut found = None;
        let mut icmp = false;
        if let Ok(cmsgs) = msg.cmsgs() {
            // ICMP type 3 / ICMPv6 type 1: destination unreachable; not type 3 code 4,
            // "fragmentation needed" (a path MTU report, queued with EMSGSIZE: the
            // destination is there, as with ICMPv6's Packet Too Big).
            for c in cmsgs {
                match c {
                    ControlMessageOwned::Ipv4RecvErr(ee, off) => {
                        icmp |= ee.ee_origin == libc::SO_EE_ORIGIN_ICMP;
                        if is_unreachable_v4(ee.ee_origin, ee.ee_type, ee.ee_code) {
                            let off = off.map(|a| {
                                IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(
                                    a.sin_addr.s_addr,
                                )))
                            });
                            found = Some((ee.ee_type, ee.ee_code, off));
                            break;
                        }
                    }
                    ControlMessageOwned::Ipv6RecvErr(ee, off) => {
                        icmp |= ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6;
                        if ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6 && ee.ee_type == 1 {
                            let off = off
                                .map(|a| IpAddr::V6(std::net::Ipv6Addr::from(a.sin6_addr.s6_addr)));
                            found = Some((ee.ee_type, ee.ee_code, off));
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        (msg.bytes.min(data.len()), dest, found, icmp)
    };
    let (Some(dest), Some((icmp_type, icmp_code, offender))) = (dest, found) else {
        return Some((icmp, None));
    };
    Some((
        icmp,
        Some(Unreachable {
            dest,
            offender,
            icmp_type,
            icmp_code,
            quote: &data[..len],
        }),
    ))
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
    fn fragmentation_needed_is_no_unreachable() {
        let icmp = libc::SO_EE_ORIGIN_ICMP;
        for code in [0, 1, 2, 3, 9, 10, 13] {
            assert!(is_unreachable_v4(icmp, 3, code), "code {code}");
        }
        assert!(!is_unreachable_v4(icmp, 3, FRAG_NEEDED));
        assert!(!is_unreachable_v4(icmp, 11, 0), "time exceeded");
        assert!(!is_unreachable_v4(libc::SO_EE_ORIGIN_LOCAL, 3, 3));
    }

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
            drain(&s, |u| {
                got.push((
                    u.dest,
                    u.offender,
                    u.icmp_type,
                    u.icmp_code,
                    u.quote.to_vec(),
                ))
            });
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got.len(), 1);
        let (dest, offender, t, c, quote) = &got[0];
        assert_eq!(*dest, closed);
        assert_eq!(
            *offender,
            Some(closed.ip()),
            "the closed port's host sent it"
        );
        assert_eq!((*t, *c), (3, 3));
        let u = Unreachable {
            dest: *dest,
            offender: *offender,
            icmp_type: *t,
            icmp_code: *c,
            quote,
        };
        assert!(u.is_port_closed_at_dest());
        let router = Unreachable {
            offender: Some("192.0.2.1".parse().unwrap()),
            ..u
        };
        assert!(!router.is_port_closed_at_dest(), "not from the host itself");
        let host = Unreachable { icmp_code: 1, ..u };
        assert!(!host.is_port_closed_at_dest(), "host unreachable");
        // Measured: Linux quotes the whole (short) datagram; the kernel hands back its
        // UDP payload, headers stripped.
        assert_eq!(quote.as_slice(), b"OPTIONS");
        assert_eq!(drain(&s, |_| {}), 0, "queue drained");
    }

    /// Measures how much of a long datagram Linux quotes back: the ICMP error carries
    /// at most 576 bytes, so of a 1000-byte payload the first 520 come back (576 - 20
    /// IP - 8 ICMP - 20 quoted IP - 8 quoted UDP), on a connected socket too.
    #[test]
    fn long_datagram_is_quoted_up_to_576_bytes_of_icmp() {
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(closed).unwrap();
        enable(&s, false).unwrap();
        let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        s.send(&payload).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = vec![];
        while got.is_empty() && Instant::now() < deadline {
            drain(&s, |u| got.push((u.dest, u.quote.to_vec())));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, closed);
        assert_eq!(got[0].1.as_slice(), &payload[..520]);
    }
}
