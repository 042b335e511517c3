//! Prefix-mode relay sockets: one wildcard socket per relay port receives for every
//! address of the prefix (the destination arrives as an `IP_PKTINFO` /
//! `IPV6_PKTINFO` control message, see `mmsg.rs`) and sends from any of them
//! (`sendmsg` with the source address in the same control message).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::SockaddrStorage;
use socket2::{Domain, Protocol, SockFilter, Socket, Type};

/// Binds `[::]:port` or `0.0.0.0:port` with destination reporting on. IPv6 also
/// needs `IPV6_FREEBIND` to send from an AnyIP address (it is a route, not an
/// address on an interface). With `only_to` (a prefix), the kernel keeps every
/// datagram to another address out of the socket's queue, see [`prefix_filter`].
pub fn bind_wildcard(
    v6: bool,
    port: u16,
    rcvbuf: usize,
    only_to: Option<(IpAddr, u8)>,
) -> io::Result<StdUdpSocket> {
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
    if let Some((net, len)) = only_to {
        // Before the bind: no datagram reaches the queue unfiltered.
        let prog: Vec<SockFilter> = prefix_filter(net, len)
            .iter()
            .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
            .collect();
        s.attach_filter(&prog)?;
    }
    s.bind(&SocketAddr::new(any, port).into())?;
    Ok(s.into())
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// An instruction without jumps (`prefix_filter` sets the compares' targets after).
fn insn(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A socket filter that passes only datagrams whose destination lies in `net/len`.
/// A wildcard socket receives for every local address, the public SIP address
/// included: without it, anyone could fill the queue that every flow's backend
/// traffic shares, and each such datagram would cost a read before being dropped.
/// Loads are relative to the network header (`SKF_NET_OFF`): the destination is at
/// byte 16 of an IPv4 header, 24 of an IPv6 one, read a 32-bit word at a time, big
/// endian, and compared under the prefix's mask.
pub fn prefix_filter(net: IpAddr, len: u8) -> Vec<libc::sock_filter> {
    let (words, at): (Vec<u32>, i32) = match net {
        IpAddr::V4(a) => (vec![u32::from(a)], 16),
        IpAddr::V6(a) => (
            a.octets()
                .chunks(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            24,
        ),
    };
    let mut prog = Vec::new();
    // (position of a compare, to point at the final "drop")
    let mut jumps = Vec::new();
    for (i, &w) in words.iter().enumerate() {
        let bits = u32::from(len).saturating_sub(32 * i as u32).min(32);
        if bits == 0 {
            break;
        }
        let mask = u32::MAX << (32 - bits);
        let off = libc::SKF_NET_OFF + at + 4 * i as i32;
        prog.push(insn(LD_W_ABS, off as u32));
        if mask != u32::MAX {
            prog.push(insn(AND_K, mask));
        }
        jumps.push(prog.len());
        prog.push(insn(JEQ_K, w & mask));
    }
    prog.push(insn(RET_K, u32::MAX));
    let drop = prog.len();
    prog.push(insn(RET_K, 0));
    for j in jumps {
        // At most 4 × 3 instructions apart.
        prog[j].jf = (drop - j - 1) as u8;
    }
    prog
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
    sock: &impl AsRawFd,
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
        let rx = bind_wildcard(false, 0, 1 << 16, None).unwrap();
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
    fn the_prefix_filter_keeps_datagrams_to_other_addresses_out() {
        let rx = bind_wildcard(false, 0, 1 << 16, Some(([127, 200, 0, 0].into(), 16))).unwrap();
        let port = rx.local_addr().unwrap().port();
        let peer = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        // Outside first: were it let through, it would be read first.
        peer.send_to(b"out", ("127.0.0.1", port)).unwrap();
        peer.send_to(b"out", ("127.201.0.1", port)).unwrap();
        peer.send_to(b"in", ("127.200.255.254", port)).unwrap();
        let mut b = RecvBatch::default();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 1);
        assert_eq!(b.get(0).unwrap().0, b"in");
        assert_eq!(b.destination(0), Some([127, 200, 255, 254].into()));
    }

    #[test]
    fn the_ipv6_prefix_filter_reads_the_whole_destination() {
        let rx = bind_wildcard(true, 0, 1 << 16, Some(("::1".parse().unwrap(), 128))).unwrap();
        let port = rx.local_addr().unwrap().port();
        let peer = StdUdpSocket::bind("[::1]:0").unwrap();
        peer.send_to(b"in", ("::1", port)).unwrap();
        let mut b = RecvBatch::default();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 1);
        let other = bind_wildcard(true, 0, 1 << 16, Some(("::2".parse().unwrap(), 128))).unwrap();
        let port = other.local_addr().unwrap().port();
        peer.send_to(b"out", ("::1", port)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(b.recv(other.as_raw_fd()).is_err(), "::1 is not in ::2/128");
    }

    /// Runs `prog` over an IP header whose destination is `dst` (what the kernel does
    /// with the four instructions the filter uses).
    fn run(prog: &[libc::sock_filter], dst: IpAddr) -> u32 {
        let mut hdr = [0u8; 40];
        match dst {
            IpAddr::V4(a) => hdr[16..20].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => hdr[24..40].copy_from_slice(&a.octets()),
        }
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    let off = (i.k as i32 - libc::SKF_NET_OFF) as usize;
                    a = u32::from_be_bytes(hdr[off..off + 4].try_into().unwrap());
                }
                AND_K => a &= i.k,
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                RET_K => return i.k,
                c => panic!("unexpected instruction {c:#x}"),
            }
        }
    }

    fn within(net: IpAddr, len: u8, ip: IpAddr) -> bool {
        let (n, a, total) = match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(a)), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            _ => unreachable!(),
        };
        len == 0 || (n ^ a) >> (total - u32::from(len)) == 0
    }

    proptest::proptest! {
        #[test]
        fn the_filter_passes_exactly_the_prefix(
            v6 in proptest::bool::ANY,
            raw_net: u128,
            len_frac in 0.0f64..=1.0,
            near: u128,
            flip in 0u32..128,
        ) {
            let total = if v6 { 128u32 } else { 32 };
            let len = (len_frac * f64::from(total)).round() as u8;
            let mask = if len == 0 { 0 } else { u128::MAX << (total - u32::from(len)) };
            let to_ip = |x: u128| -> IpAddr {
                if v6 { Ipv6Addr::from(x).into() } else { Ipv4Addr::from(x as u32).into() }
            };
            let keep = if v6 { u128::MAX } else { u128::from(u32::MAX) };
            let net = raw_net & keep & mask;
            // Addresses inside, just outside (one bit of the prefix flipped), and anywhere.
            let inside = net | (near & keep & !mask);
            let outside = inside ^ (1u128 << (flip % total));
            let prog = prefix_filter(to_ip(net), len);
            for a in [inside, outside, near & keep] {
                let ip = to_ip(a);
                let pass = run(&prog, ip) != 0;
                proptest::prop_assert_eq!(pass, within(to_ip(net), len, ip), "{}/{} {}", to_ip(net), len, ip);
            }
        }
    }

    #[test]
    fn ipv6_reports_the_destination_and_sends_from_the_given_source() {
        let rx = bind_wildcard(true, 0, 1 << 16, None).unwrap();
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
