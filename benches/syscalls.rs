//! What the kernel charges for the system calls the dataplane chooses between, one
//! datagram at a time over loopback (the common case at low and middle rates): a
//! send as `sendto` or as a one-message `sendmmsg`, a receive as a 16-slot
//! `recvmmsg` that returns one datagram, a one-slot `recvmmsg`, or `recvfrom` (once,
//! or twice as a read loop does until `EAGAIN`); and, as the floor a proxy that always
//! had full batches would pay, 16 datagrams sent with one `sendmmsg` and received with
//! one `recvmmsg`; and sipfront's own send and receive (`sys::mmsg`) on the sockets
//! of each relay mode: port mode, and prefix mode's two directions, a send with a
//! source address of the prefix and a receive that learns its destination (`Sf*`).
//! Each variant sends and receives `--count` datagrams of
//! 400 bytes in one process; CPU time (user + system, `getrusage`) per datagram,
//! `--rounds` rounds with the variants in turns, median.
//!
//! ```text
//! unshare -n sh -c "ip link set lo up && cargo bench --bench syscalls"
//! cargo bench --bench syscalls -- --count 400000 --rounds 5
//! ```

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

const LEN: usize = 400;

#[derive(Clone, Copy, Debug)]
enum Variant {
    /// `sendto`, then `recvfrom` once.
    SendTo,
    /// A one-message `sendmmsg`, then `recvfrom` once.
    SendMmsg,
    /// `sendto`, then a 16-slot `recvmmsg` (returns one: the kernel tries a second).
    RecvMmsg,
    /// `sendto`, then a one-slot `recvmmsg` (the kernel stops at one).
    RecvMmsg1,
    /// `sendto`, then `recvfrom` until `EAGAIN` (two calls).
    RecvLoop,
    /// 16 datagrams in one `sendmmsg`, then one 16-slot `recvmmsg`: every system call
    /// shared by 16 datagrams.
    Batch16,
    /// sipfront's own calls as port mode makes them: `sys::mmsg::send_direct` without
    /// a source from a socket bound to an address, `sys::mmsg::RecvBatch` on a plain
    /// socket.
    SfPlain,
    /// Prefix mode towards a backend: `send_direct` with a source address of the
    /// prefix (an `IP_PKTINFO` control message) from a wildcard prefix socket
    /// (`sys::pktinfo::bind_wildcard`), received as in `SfPlain`.
    SfSendSrc,
    /// Prefix mode from a backend: sent as in `SfPlain` to an address of the prefix,
    /// received by `RecvBatch` on a wildcard prefix socket (`IP_PKTINFO` on, the
    /// prefix's socket filter attached).
    SfRecvDst,
}

fn cpu() -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn run(v: Variant, count: usize) -> f64 {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    rx.set_nonblocking(true).expect("nonblocking");
    let to: nix::sys::socket::SockaddrStorage = rx.local_addr().expect("addr").into();
    use nix::sys::socket::SockaddrLike;
    let data = [b'x'; LEN];
    let mut bufs = vec![[0u8; 2048]; 16];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain C data; all-zero is valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let one = iovs[0];
    let (txfd, rxfd) = (tx.as_raw_fd(), rx.as_raw_fd());
    if let Variant::Batch16 = v {
        return batch16(txfd, rxfd, &to, &data, &mut hdrs, count);
    }
    if let Variant::SfPlain | Variant::SfSendSrc | Variant::SfRecvDst = v {
        return sipfront_calls(v, count);
    }
    let start = cpu();
    for _ in 0..count {
        // SAFETY (all calls below): every pointer is to a live buffer or header of
        // the length passed; the kernel writes only within them.
        unsafe {
            if let Variant::SendMmsg = v {
                let mut iov = libc::iovec {
                    iov_base: data.as_ptr() as *mut _,
                    iov_len: LEN,
                };
                let mut h: libc::mmsghdr = std::mem::zeroed();
                h.msg_hdr.msg_name = to.as_ptr() as *mut _;
                h.msg_hdr.msg_namelen = to.len();
                h.msg_hdr.msg_iov = &mut iov;
                h.msg_hdr.msg_iovlen = 1;
                libc::sendmmsg(txfd, &mut h, 1, libc::MSG_DONTWAIT);
            } else {
                libc::sendto(
                    txfd,
                    data.as_ptr().cast(),
                    LEN,
                    libc::MSG_DONTWAIT,
                    to.as_ptr(),
                    to.len(),
                );
            }
            let recv_one = || {
                libc::recvfrom(
                    rxfd,
                    one.iov_base,
                    one.iov_len,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            match v {
                Variant::SendTo | Variant::SendMmsg => {
                    recv_one();
                }
                Variant::RecvLoop => while recv_one() > 0 {},
                Variant::Batch16 | Variant::SfPlain | Variant::SfSendSrc | Variant::SfRecvDst => {
                    unreachable!("measured by their own loops")
                }
                Variant::RecvMmsg | Variant::RecvMmsg1 => {
                    libc::recvmmsg(
                        rxfd,
                        hdrs.as_mut_ptr(),
                        if let Variant::RecvMmsg = v { 16 } else { 1 },
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    );
                }
            }
        }
    }
    (cpu() - start).as_secs_f64() * 1e6 / count as f64
}

/// [`Variant::Batch16`]: `count` datagrams in sends and receives of 16.
fn batch16(
    txfd: i32,
    rxfd: i32,
    to: &nix::sys::socket::SockaddrStorage,
    data: &[u8; LEN],
    rx_hdrs: &mut [libc::mmsghdr],
    count: usize,
) -> f64 {
    use nix::sys::socket::SockaddrLike;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: LEN,
    };
    let mut tx_hdrs: Vec<libc::mmsghdr> = (0..16)
        .map(|_| {
            // SAFETY: mmsghdr is plain C data; all-zero is valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = to.as_ptr() as *mut _;
            h.msg_hdr.msg_namelen = to.len();
            h.msg_hdr.msg_iov = &mut iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let start = cpu();
    let mut done = 0;
    while done < count {
        // SAFETY: the headers point to live buffers of the lengths they give.
        let got = unsafe {
            libc::sendmmsg(txfd, tx_hdrs.as_mut_ptr(), 16, libc::MSG_DONTWAIT);
            libc::recvmmsg(
                rxfd,
                rx_hdrs.as_mut_ptr(),
                16,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        done += got.max(1) as usize;
    }
    (cpu() - start).as_secs_f64() * 1e6 / done as f64
}

/// The `Sf*` variants: sipfront's `send_direct` and `RecvBatch`, one datagram at a
/// time, on the sockets each relay mode uses (the prefix is 127.200.0.0/16, local on
/// loopback already).
fn sipfront_calls(v: Variant, count: usize) -> f64 {
    use sipfront::sys::{mmsg, pktinfo};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let prefix = (IpAddr::V4(Ipv4Addr::new(127, 200, 0, 0)), 16);
    let src = IpAddr::V4(Ipv4Addr::new(127, 200, 1, 2));
    let plain = |addr: &str| {
        let s = UdpSocket::bind(addr).expect("bind");
        s.set_nonblocking(true).expect("nonblocking");
        s
    };
    let wildcard = || {
        // A free port for the wildcard socket: take one, let it go, bind it there.
        let port = plain("127.0.0.1:0").local_addr().expect("addr").port();
        pktinfo::bind_wildcard(false, port, 1 << 20, Some(prefix)).expect("bind wildcard")
    };
    let (tx, rx, to, from) = match v {
        Variant::SfSendSrc => {
            let rx = plain("127.0.0.1:0");
            let to = rx.local_addr().expect("addr");
            (wildcard(), rx, to, Some(src))
        }
        Variant::SfRecvDst => {
            let rx = wildcard();
            let port = rx.local_addr().expect("addr").port();
            (plain("127.0.0.2:0"), rx, SocketAddr::new(src, port), None)
        }
        _ => {
            let rx = plain("127.0.0.1:0");
            let to = rx.local_addr().expect("addr");
            (plain("127.0.0.2:0"), rx, to, None)
        }
    };
    let data = [b'x'; LEN];
    let mut batch: Box<mmsg::RecvBatch> = Box::default();
    let (txfd, rxfd) = (tx.as_raw_fd(), rx.as_raw_fd());
    let start = cpu();
    let mut got = 0;
    for _ in 0..count {
        mmsg::send_direct(txfd, &data, to, from).expect("send");
        got += batch.recv(rxfd).unwrap_or(0);
    }
    assert_eq!(got, count, "{v:?}: every datagram received");
    (cpu() - start).as_secs_f64() * 1e6 / count as f64
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if !argv.iter().any(|a| a == "--bench") {
        println!("syscalls bench: not run (needs `cargo bench --bench syscalls`; ~20 s)");
        return;
    }
    let opt = |name: &str, default: usize| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let (count, rounds) = (opt("--count", 200_000), opt("--rounds", 5));
    let variants = [
        Variant::SendTo,
        Variant::SendMmsg,
        Variant::RecvMmsg,
        Variant::RecvMmsg1,
        Variant::RecvLoop,
        Variant::Batch16,
        Variant::SfPlain,
        Variant::SfSendSrc,
        Variant::SfRecvDst,
    ];
    let mut got: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, &v) in variants.iter().enumerate() {
            got[i].push(run(v, count));
        }
    }
    println!("µs of CPU per datagram sent and received over loopback ({count} × {rounds} rounds):");
    println!(
        "{:<10} {:>8} {:>8} {:>8}",
        "variant", "median", "min", "max"
    );
    for (v, mut xs) in variants.iter().zip(got) {
        xs.sort_by(f64::total_cmp);
        println!(
            "{:<10} {:>8.3} {:>8.3} {:>8.3}",
            format!("{v:?}"),
            xs[xs.len() / 2],
            xs[0],
            xs[xs.len() - 1]
        );
    }
}
