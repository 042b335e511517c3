//! UDP sockets that speak for many client addresses at once. A socket bound to
//! `0.0.0.0:PORT` sends with an `IP_PKTINFO` control message naming the source
//! address (any 127.x.y.z is local on `lo`), and on receive `IP_PKTINFO` tells which
//! of those addresses a datagram was sent to. So one socket holds thousands of client
//! flows `(127.x.y.z, PORT)` without one file descriptor each.
//!
//! Receive also asks for the kernel's arrival time (`SO_TIMESTAMPNS`, `CLOCK_REALTIME`),
//! so a round trip does not include the wake-up of the bench's own thread.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use socket2::{Domain, Protocol, Socket, Type};

/// Receive and send buffers: the flows phase keeps hundreds of datagrams in flight.
const SOCK_BUF: usize = 4 << 20;

pub struct Sock {
    fd: OwnedFd,
    pub port: u16,
}

/// One received datagram.
pub struct Recvd {
    pub len: usize,
    pub from: SocketAddrV4,
    /// The destination address of the datagram (which client it is for).
    pub to: Ipv4Addr,
    /// Kernel arrival time, ns of `CLOCK_REALTIME`.
    pub stamp_ns: Option<u64>,
}

impl Sock {
    /// A non-blocking UDP socket on `0.0.0.0:port` with `IP_PKTINFO` and receive
    /// timestamps on.
    pub fn bind_wildcard(port: u16) -> io::Result<Sock> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // Best effort: capped by net.core.{r,w}mem_max.
        let _ = s.set_recv_buffer_size(SOCK_BUF);
        let _ = s.set_send_buffer_size(SOCK_BUF);
        s.set_nonblocking(true)?;
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
        let fd: OwnedFd = s.into();
        set_int(&fd, libc::IPPROTO_IP, libc::IP_PKTINFO)?;
        set_int(&fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS)?;
        Ok(Sock { fd, port })
    }

    /// Sends `data` to `dst` from `src:self.port`.
    pub fn send_from(&self, src: Ipv4Addr, dst: SocketAddrV4, data: &[u8]) -> io::Result<usize> {
        let mut name = sockaddr_in(dst);
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // u64 elements: cmsg headers need their alignment.
        let mut control = [0u64; 8];
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from(src).to_be(),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        // SAFETY: msghdr is plain data; every pointer in it refers to a local that
        // outlives the sendmsg call, and the control buffer holds CMSG_SPACE(in_pktinfo).
        let n = unsafe {
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = (&raw mut name).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as _;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::IPPROTO_IP;
            (*c).cmsg_type = libc::IP_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
            libc::sendmsg(self.fd.as_raw_fd(), &msg, 0)
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Receives one datagram if one is queued; `Ok(None)` when there is none.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Recvd>> {
        // SAFETY: zeroed sockaddr_in is a valid value; recvmsg writes at most
        // msg_namelen bytes into it.
        let mut name: libc::sockaddr_in = unsafe { zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16];
        let mut to = Ipv4Addr::UNSPECIFIED;
        let mut stamp_ns = None;
        // SAFETY: as in send_from; the cmsg walk stays within msg_controllen as
        // returned by the kernel, and reads the payloads unaligned.
        let n = unsafe {
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = (&raw mut name).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&control) as _;
            let n = libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT);
            if n >= 0 {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    let data = libc::CMSG_DATA(c);
                    match ((*c).cmsg_level, (*c).cmsg_type) {
                        (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                            let i = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                            to = Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr));
                        }
                        (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                            let t = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                            stamp_ns = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
                        }
                        _ => {}
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            n
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        let from = SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
            u16::from_be(name.sin_port),
        );
        Ok(Some(Recvd {
            len: n as usize,
            from,
            to,
            stamp_ns,
        }))
    }
}

fn set_int(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Sleeps until one of `socks` is readable or `until` passes (`ppoll`, ns precision).
pub fn wait_readable(socks: &[Sock], until: Instant) {
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let d = until.saturating_duration_since(Instant::now());
    let ts = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: fds and ts are live locals; a null sigmask keeps the current one.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
}

/// Now, as ns of `CLOCK_REALTIME` (the clock of `SO_TIMESTAMPNS`).
pub fn realtime_ns() -> u64 {
    // SAFETY: zeroed timespec is valid; clock_gettime writes it.
    let mut t: libc::timespec = unsafe { zeroed() };
    // SAFETY: t is a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Lets this thread's sleeps end on time (default timer slack is 50 µs).
pub fn precise_timers() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
}
