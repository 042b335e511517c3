//! Batched receive (`recvmmsg`) into buffers allocated once; one datagram sent at
//! once ([`send_direct`]), and batched send ([`SendBatch`], `sendmmsg`, grouped per
//! socket) of what queues behind a refused send. Besides
//! fewer syscalls under load, a receive batch that comes back short proves the socket
//! queue empty, so the turn can end without the extra `EAGAIN` receive a plain read
//! loop needs: at low rates that is one syscall in four. (With IP_RECVERR an ICMP
//! error arriving mid-batch also ends it short, with data still queued; the
//! level-triggered epoll set reports the socket again, so nothing is stranded.)

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use nix::sys::socket::{SockaddrLike, SockaddrStorage};

use std::mem::MaybeUninit;

use super::pktinfo::{self, CMSG_BUF, CmsgBuf};

/// Large enough for any UDP datagram (65,507 bytes over IPv4, 65,527 over IPv6).
pub const BUF_LEN: usize = 65536;
/// Datagrams per `recvmmsg`.
pub const BATCH: usize = 16;

/// Receive buffers and the kernel's per-message headers for one batch.
///
/// Why not nix's `recvmmsg` (nix is the crate for the rest of `sys`): it does not
/// allocate per call with `MultiHeaders::preallocate`, but it sets each header's
/// `msg_namelen` only once, at preallocation. The kernel overwrites it with the
/// sender's address length, so after a batch from an IPv4 socket (16 bytes) a batch
/// from an IPv6 socket gets its senders cut to 16 bytes, and one batch serves every
/// public and relay socket of both families here
/// (`one_batch_serves_both_families` below). So the headers are built once, on the
/// heap, pointing at the buffers (also on the heap: moving the batch moves none of
/// them), and each call restores only the lengths the kernel overwrote. (Building
/// all 16 headers per call showed in the profile at low rates, where a call
/// returns one datagram.)
pub struct RecvBatch {
    /// `BATCH` buffers of `BUF_LEN`, back to back. Only pages the kernel writes to
    /// become resident, so unused tail space costs address space, not memory.
    bufs: Box<[u8]>,
    addrs: Box<[SockaddrStorage; BATCH]>,
    /// Control buffers: the destination address on sockets with `IP_PKTINFO` /
    /// `IPV6_RECVPKTINFO` (prefix-mode relay sockets); empty on the others. Read
    /// through the headers only, like the iovecs.
    _ctrl: Box<[CmsgBuf; BATCH]>,
    _iovs: Box<[libc::iovec; BATCH]>,
    /// Point at `_iovs` (so at `bufs`), `addrs` and `_ctrl`; set once in `default`.
    hdrs: Box<[libc::mmsghdr; BATCH]>,
    lens: [usize; BATCH],
    dsts: [Option<IpAddr>; BATCH],
    n: usize,
}

const NAME_LEN: libc::socklen_t = size_of::<SockaddrStorage>() as libc::socklen_t;

impl Default for RecvBatch {
    fn default() -> Self {
        let unspecified = SockaddrStorage::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
        let mut bufs = vec![0u8; BATCH * BUF_LEN].into_boxed_slice();
        let mut addrs = Box::new([unspecified; BATCH]);
        let mut ctrl = Box::new([CmsgBuf([0; CMSG_BUF]); BATCH]);
        let base = bufs.as_mut_ptr();
        let mut iovs: Box<[libc::iovec; BATCH]> = Box::new(std::array::from_fn(|i| libc::iovec {
            iov_base: base.wrapping_add(i * BUF_LEN).cast(),
            iov_len: BUF_LEN,
        }));
        // SAFETY: mmsghdr is plain C data (pointers, lengths, flags); all-zero is a
        // valid value, and every field the kernel reads is set below.
        let mut hdrs: Box<[libc::mmsghdr; BATCH]> = Box::new(unsafe { std::mem::zeroed() });
        for (((h, iov), addr), c) in hdrs
            .iter_mut()
            .zip(iovs.iter_mut())
            .zip(addrs.iter_mut())
            .zip(ctrl.iter_mut())
        {
            h.msg_hdr.msg_control = c.0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CMSG_BUF;
            h.msg_hdr.msg_name = (addr as *mut SockaddrStorage).cast();
            h.msg_hdr.msg_namelen = NAME_LEN;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        RecvBatch {
            bufs,
            addrs,
            _ctrl: ctrl,
            _iovs: iovs,
            hdrs,
            lens: [0; BATCH],
            dsts: [None; BATCH],
            n: 0,
        }
    }
}

impl RecvBatch {
    /// Receives up to `BATCH` datagrams without blocking; returns how many. `Ok(0)`
    /// never happens: an empty queue is `WouldBlock`.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.n = 0;
        // The kernel overwrote the sender's and the control data's lengths in the
        // headers it filled: all 16 get their full sizes back (two stores each, less
        // than remembering which).
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = NAME_LEN;
            h.msg_hdr.msg_controllen = CMSG_BUF;
        }
        // SAFETY: each header points at one iovec of `self._iovs` (a BUF_LEN chunk of
        // `self.bufs`), at one `SockaddrStorage` of `self.addrs` (a repr(C) union the
        // size of sockaddr_storage) and at one control buffer of `self._ctrl`, with
        // matching lengths (restored above); all are heap allocations owned by
        // `self`, alive for the call, and the kernel writes only within those
        // lengths.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = r as usize;
        for ((len, dst), h) in self
            .lens
            .iter_mut()
            .zip(&mut self.dsts)
            .zip(self.hdrs.iter())
            .take(n)
        {
            *len = h.msg_len as usize;
            // SAFETY: the kernel filled this header in; its control buffer is one of
            // `self._ctrl`, alive and at least `msg_controllen` long.
            *dst = unsafe { pktinfo::destination(&h.msg_hdr) };
        }
        self.n = n;
        Ok(n)
    }

    /// The address datagram `i` of the last batch was sent to, on sockets that
    /// report it (prefix-mode relay sockets).
    pub fn destination(&self, i: usize) -> Option<IpAddr> {
        if i >= self.n {
            return None;
        }
        self.dsts[i]
    }

    /// Datagram `i` of the last batch: its bytes and sender.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.n {
            return None;
        }
        let a = &self.addrs[i];
        let from = match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
            (Some(v4), _) => SocketAddr::V4(SocketAddrV4::from(*v4)),
            (None, Some(v6)) => SocketAddr::V6(SocketAddrV6::from(*v6)),
            _ => return None,
        };
        let start = i * BUF_LEN;
        Some((&self.bufs[start..start + self.lens[i]], from))
    }
}

/// Datagrams queued for [`SendBatch::flush`].
pub const SEND_MAX: usize = 64;
// `flush` keeps queue indices in bytes.
const _: () = assert!(SEND_MAX <= 256);
/// Sends of one failed message again at most, each after `failed` found an error.
const MAX_RETRIES: u32 = 8;
/// Bytes of queued datagrams: the arena is allocated once; a datagram that does not
/// fit makes the caller flush first.
const SEND_ARENA: usize = 256 * 1024;

/// Sends queued during a turn, copied into buffers allocated once, then sent with
/// one `sendmmsg` per socket: a batch's datagrams through the same socket (a public
/// socket's replies from many relay sockets, a busy flow's relay socket) cost one
/// system call. Order is kept per socket. The dataplane queues here only behind a
/// send the kernel refused (see [`send_direct`]): copying every datagram here cost
/// more than the system calls it saved in port mode at low and middle rates, and no
/// less elsewhere (the journal, session 19).
pub struct SendBatch {
    arena: Box<[u8]>,
    used: usize,
    fds: [RawFd; SEND_MAX],
    spans: [(usize, usize); SEND_MAX],
    tos: [SockaddrStorage; SEND_MAX],
    /// The source address to send from (prefix-mode relay sockets), else `None`.
    srcs: [Option<IpAddr>; SEND_MAX],
    ctrl: [CmsgBuf; SEND_MAX],
    n: usize,
}

impl Default for SendBatch {
    fn default() -> Self {
        let unspecified = SockaddrStorage::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
        SendBatch {
            arena: vec![0u8; SEND_ARENA].into_boxed_slice(),
            used: 0,
            fds: [-1; SEND_MAX],
            spans: [(0, 0); SEND_MAX],
            tos: [unspecified; SEND_MAX],
            srcs: [None; SEND_MAX],
            ctrl: [CmsgBuf([0; CMSG_BUF]); SEND_MAX],
            n: 0,
        }
    }
}

impl SendBatch {
    /// Whether `len` more bytes can be queued now (else flush first).
    pub fn has_room(&self, len: usize) -> bool {
        self.n < SEND_MAX && self.used + len <= self.arena.len()
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Queues `data` for `to` on `fd`; false (nothing queued) when full or too
    /// large for the arena: flush, then queue again or send directly.
    pub fn push(&mut self, fd: RawFd, data: &[u8], to: SocketAddr) -> bool {
        self.push_from(fd, data, to, None)
    }

    /// [`SendBatch::push`], sent from address `src` (`IP_PKTINFO` / `IPV6_PKTINFO`)
    /// if given.
    pub fn push_from(
        &mut self,
        fd: RawFd,
        data: &[u8],
        to: SocketAddr,
        src: Option<IpAddr>,
    ) -> bool {
        if !self.has_room(data.len()) {
            return false;
        }
        let start = self.used;
        self.arena[start..start + data.len()].copy_from_slice(data);
        self.used += data.len();
        self.fds[self.n] = fd;
        self.spans[self.n] = (start, data.len());
        self.tos[self.n] = SockaddrStorage::from(to);
        self.srcs[self.n] = src;
        self.n += 1;
        true
    }

    /// Sends everything queued, one `sendmmsg` per socket (more when the kernel
    /// takes only part). A message the kernel refuses: `failed(fd)` is told (read the
    /// error queue) and returns whether it found an error there (an ICMP error is
    /// pending: it failed the send); then the message is sent again, up to
    /// [`MAX_RETRIES`] times. Returns the messages that could not be sent.
    pub fn flush(&mut self, mut failed: impl FnMut(RawFd) -> bool) -> usize {
        // One queued datagram (most turns at low rates): no grouping to do.
        let lost = if self.n == 1 {
            self.send_group(self.fds[0], &[0], &mut failed)
        } else {
            self.send_groups(&mut failed)
        };
        self.n = 0;
        self.used = 0;
        lost
    }

    /// The queue's messages grouped per socket, in order, each group sent with
    /// [`SendBatch::send_group`]; returns how many were lost.
    fn send_groups(&mut self, failed: &mut impl FnMut(RawFd) -> bool) -> usize {
        let mut lost = 0;
        let mut done = [false; SEND_MAX];
        // Indices into the queue (< SEND_MAX, so a byte each: zeroing 64 words per
        // flush showed in the profile).
        let mut group = [0u8; SEND_MAX];
        for first in 0..self.n {
            if done[first] {
                continue;
            }
            let fd = self.fds[first];
            let mut g = 0;
            for (i, d) in done.iter_mut().enumerate().take(self.n).skip(first) {
                if !*d && self.fds[i] == fd {
                    *d = true;
                    group[g] = i as u8;
                    g += 1;
                }
            }
            lost += self.send_group(fd, &group[..g], failed);
        }
        lost
    }

    /// Sends the queued messages `group` (in order) on `fd`; returns how many were
    /// lost (see [`SendBatch::flush`]).
    fn send_group(
        &mut self,
        fd: RawFd,
        group: &[u8],
        failed: &mut impl FnMut(RawFd) -> bool,
    ) -> usize {
        let mut lost = 0;
        let mut at = 0;
        let g = group.len();
        while at < g {
            match self.send(fd, &group[at..]) {
                Ok(sent) if sent > 0 => at += sent,
                // The socket or the device is full: the rest would fail the same
                // way, one error-queue read and retry each.
                Err(e) if is_full(&e) => {
                    lost += g - at;
                    at = g;
                }
                r => {
                    // The first message of the rest failed. A pending ICMP error
                    // fails one send whatever its destination, and forged ones can
                    // come between two sends: while `failed` finds one, send again.
                    // The kernel queues the error before it sets the pending one, so
                    // a refused send with nothing queued (yet) earns one resend too.
                    let icmp = r.as_ref().err().is_some_and(is_icmp_errno);
                    let one = &group[at..=at];
                    let sent = (0..MAX_RETRIES)
                        .take_while(|i| failed(fd) || (*i == 0 && icmp))
                        .any(|_| matches!(self.send(fd, one), Ok(1)));
                    if !sent {
                        lost += 1;
                    }
                    at += 1;
                }
            }
        }
        lost
    }

    /// One `sendmmsg` of the queued messages `which` (at most `SEND_MAX`) on `fd`;
    /// a lone message without a source address goes out with `sendto`, which the
    /// kernel takes for less (no header or iovec to copy in; `cargo bench --bench
    /// syscalls`).
    fn send(&mut self, fd: RawFd, which: &[u8]) -> io::Result<usize> {
        if let &[i] = which
            && self.srcs[usize::from(i)].is_none()
        {
            let i = usize::from(i);
            let (start, len) = self.spans[i];
            return sendto(fd, &self.arena[start..start + len], &self.tos[i]).map(|()| 1);
        }
        // Only the headers and iovecs of `which` are written (zeroing all 64 each
        // flush showed in the profile at low rates, where a flush sends one).
        // The headers past SEND_MAX do not exist: the kernel must not be told of them.
        assert!(which.len() <= SEND_MAX);
        let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; SEND_MAX];
        let mut hdrs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; SEND_MAX];
        // One pointer to the arena for all messages (a reborrow per message would
        // invalidate the earlier ones' pointers under Rust's aliasing rules).
        let arena = self.arena.as_mut_ptr();
        for ((&i, iov), h) in which.iter().zip(&mut iovs).zip(&mut hdrs) {
            let i = usize::from(i);
            let (start, len) = self.spans[i];
            let iov = iov.write(libc::iovec {
                // `start + len` lies within the arena (`push_from` checked it).
                iov_base: arena.wrapping_add(start).cast(),
                iov_len: len,
            });
            // SAFETY: mmsghdr is plain C data (pointers, lengths, flags); all-zero is
            // a valid value, and every field the kernel reads is set below.
            let h = h.write(unsafe { std::mem::zeroed() });
            h.msg_hdr.msg_name = (&mut self.tos[i] as *mut SockaddrStorage).cast();
            h.msg_hdr.msg_namelen = self.tos[i].len();
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            if let Some(src) = self.srcs[i] {
                pktinfo::set_source(&mut h.msg_hdr, &mut self.ctrl[i], src);
            }
        }
        // SAFETY: the first `which.len()` headers are initialised above (the kernel
        // reads no further); each points at one iovec above (a span of `self.arena`),
        // at one `SockaddrStorage` with its length and, with a source, at its control
        // buffer; all of them outlive the call, and the kernel only reads them (it
        // writes `msg_len` into the headers).
        let r = unsafe {
            libc::sendmmsg(
                fd,
                hdrs.as_mut_ptr().cast::<libc::mmsghdr>(),
                which.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }
}

/// Sends `data` to `to` on `fd` at once, from the caller's buffer (no copy into a
/// [`SendBatch`]), from `src` if given: `sendto`, or `sendmsg` with a pktinfo control
/// message. Without waiting for write readiness: a UDP send either fits the socket
/// buffer now or is dropped (and counted), and a just-opened relay socket has no
/// readiness event yet. See `Shell::send_relayed` for why relayed datagrams go out this
/// way, and [`worth_resending`] for a refused one.
pub fn send_direct(fd: RawFd, data: &[u8], to: SocketAddr, src: Option<IpAddr>) -> io::Result<()> {
    if let Some(src) = src {
        return pktinfo::send_from(&fd, data, to, src).map(drop);
    }
    sendto(fd, data, &SockaddrStorage::from(to))
}

/// One datagram with `sendto`, not waiting.
fn sendto(fd: RawFd, data: &[u8], to: &SockaddrStorage) -> io::Result<()> {
    // SAFETY: `data` is a live slice with its length, `to` a sockaddr of `to.len()`
    // bytes; the kernel only reads both.
    let r = unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT,
            to.as_ptr(),
            to.len(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// After [`send_direct`] failed with `e`: whether to send the datagram again, as
/// [`SendBatch::flush`] would. Not when the socket or the device is full (lost, as in a
/// flush); else when `failed` (reading the socket's error queue) finds an ICMP error,
/// which fails one send whatever its destination, or when only a pending ICMP error
/// gives `e`'s errno (its error may not be queued yet). A send that fails by itself
/// (too large, say) is not sent again.
pub fn worth_resending(e: &io::Error, failed: impl FnOnce() -> bool) -> bool {
    !is_full(e) && (failed() || is_icmp_errno(e))
}

/// EAGAIN or ENOBUFS: the socket or the device is full, and a send right after would
/// fail the same way.
pub fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// ECONNREFUSED: only a pending ICMP port unreachable turns a UDP send into it, never
/// the send's own fault (the other ICMP errnos, EHOSTUNREACH and the like, are also
/// what a local route refuses with), so sending again can succeed.
fn is_icmp_errno(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECONNREFUSED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batches_come_back_short_when_the_queue_empties() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let rx = UdpSocket::bind(local).unwrap();
            let tx = UdpSocket::bind(local).unwrap();
            let to = rx.local_addr().unwrap();
            for i in 0..BATCH + 3 {
                tx.send_to(&vec![i as u8; 100 + i], to).unwrap();
            }
            // Large datagrams arrive intact in any slot.
            tx.send_to(&vec![7u8; 65_000], to).unwrap();
            let mut b = RecvBatch::default();
            let mut got = Vec::new();
            loop {
                match b.recv(rx.as_raw_fd()) {
                    Ok(n) => {
                        for i in 0..n {
                            let (d, from) = b.get(i).unwrap();
                            assert_eq!(from, tx.local_addr().unwrap());
                            got.push(d.to_vec());
                        }
                        assert!(b.get(n).is_none());
                        if n < BATCH {
                            break;
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(got.len(), BATCH + 4);
            for (i, d) in got.iter().take(BATCH + 3).enumerate() {
                assert_eq!(d, &vec![i as u8; 100 + i]);
            }
            assert_eq!(got.last().unwrap().len(), 65_000);
            let e = b.recv(rx.as_raw_fd()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        }
    }

    #[test]
    fn one_batch_serves_both_families() {
        let mut b = RecvBatch::default();
        for local in ["127.0.0.1:0", "[::1]:0", "127.0.0.1:0", "[::1]:0"] {
            let rx = UdpSocket::bind(local).unwrap();
            let tx = UdpSocket::bind(local).unwrap();
            tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
            assert_eq!(b.recv(rx.as_raw_fd()).unwrap(), 1);
            let (d, from) = b.get(0).unwrap();
            assert_eq!((d, from), (&b"x"[..], tx.local_addr().unwrap()));
        }
    }

    #[test]
    fn a_send_batch_groups_per_socket_and_keeps_each_sockets_order() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("[::1]:0").unwrap();
        let rx4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx6 = UdpSocket::bind("[::1]:0").unwrap();
        rx4.set_nonblocking(true).unwrap();
        rx6.set_nonblocking(true).unwrap();
        let mut out = SendBatch::default();
        for i in 0..10u8 {
            if i % 3 == 0 {
                assert!(out.push(b.as_raw_fd(), &[i; 900], rx6.local_addr().unwrap()));
            } else {
                assert!(out.push(a.as_raw_fd(), &[i; 100], rx4.local_addr().unwrap()));
            }
        }
        assert!(!out.push(a.as_raw_fd(), &[0; SEND_ARENA], rx4.local_addr().unwrap()));
        assert_eq!(out.flush(|_| panic!("no failure")), 0);
        assert!(out.is_empty());
        let mut rb = RecvBatch::default();
        let n = rb.recv(rx4.as_raw_fd()).unwrap();
        let got: Vec<u8> = (0..n).map(|i| rb.get(i).unwrap().0[0]).collect();
        assert_eq!(got, [1, 2, 4, 5, 7, 8]);
        assert_eq!(rb.get(0).unwrap().1, a.local_addr().unwrap());
        let n = rb.recv(rx6.as_raw_fd()).unwrap();
        let got: Vec<(u8, usize)> = (0..n)
            .map(|i| rb.get(i).map(|(d, _)| (d[0], d.len())).unwrap())
            .collect();
        assert_eq!(got, [(0, 900), (3, 900), (6, 900), (9, 900)]);
        // A full batch refuses more until flushed.
        for _ in 0..SEND_MAX {
            assert!(out.push(a.as_raw_fd(), b"x", rx4.local_addr().unwrap()));
        }
        assert!(!out.push(a.as_raw_fd(), b"x", rx4.local_addr().unwrap()));
        // A socket that cannot send (an IPv4 destination on an IPv6 socket) reports
        // each message once, and sends it again only while told an error was found,
        // a bounded number of times.
        let bad = UdpSocket::bind("[::1]:0").unwrap();
        out.flush(|_| true);
        for (found, asks) in [(false, 1), (true, MAX_RETRIES)] {
            let mut asked = 0;
            assert!(out.push(bad.as_raw_fd(), b"y", rx4.local_addr().unwrap()));
            assert!(out.push(bad.as_raw_fd(), b"z", rx4.local_addr().unwrap()));
            let lost = out.flush(|_| {
                asked += 1;
                found
            });
            assert_eq!((lost, asked), (2, 2 * asks));
        }
    }

    /// A sender with the error queue on, a receiver, and a closed port on loopback
    /// whose datagrams bounce at once (an ICMP port unreachable for the sender).
    struct Bouncing {
        s: UdpSocket,
        rx: UdpSocket,
        closed: SocketAddr,
    }

    impl Bouncing {
        fn new() -> Bouncing {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            crate::sys::errqueue::enable(&s, false).unwrap();
            let closed = UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            rx.set_read_timeout(Some(std::time::Duration::from_secs(1)))
                .unwrap();
            Bouncing { s, rx, closed }
        }

        /// One datagram to the closed port, and time for its ICMP error to come back.
        fn bounce(&self) {
            self.s.send_to(b"x", self.closed).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }

        /// A one-byte message `y` queued for the receiver on the sender.
        fn queued(&self) -> SendBatch {
            let mut out = SendBatch::default();
            assert!(out.push(self.s.as_raw_fd(), b"y", self.rx.local_addr().unwrap()));
            out
        }

        fn assert_received(&self) {
            let mut buf = [0u8; 4];
            assert_eq!(self.rx.recv(&mut buf).unwrap(), 1);
            assert_eq!(&buf[..1], b"y");
        }
    }

    /// Forged ICMP errors can arrive faster than one retry: each fails the next send
    /// on the socket, whatever its destination. Here each of the first three calls of
    /// `failed` makes one more (a datagram to a closed port on loopback bounces at
    /// once); the message still goes out.
    #[test]
    fn a_send_is_retried_while_icmp_errors_keep_failing_it() {
        let b = Bouncing::new();
        let mut out = b.queued();
        b.bounce();
        let mut asked = 0;
        let lost = out.flush(|_| {
            asked += 1;
            if asked <= 3 {
                b.bounce();
            }
            true
        });
        assert_eq!((lost, asked), (0, 4));
        b.assert_received();
    }

    /// A send refused with an ICMP errno (ECONNREFUSED from an earlier datagram's
    /// port unreachable) while nothing is found in the error queue yet still earns one
    /// resend: the message goes out.
    #[test]
    fn a_refused_send_with_an_empty_error_queue_is_sent_once_more() {
        let b = Bouncing::new();
        b.bounce();
        let mut out = b.queued();
        let mut asked = 0;
        let lost = out.flush(|_| {
            asked += 1;
            false
        });
        assert_eq!((lost, asked), (0, 1));
        b.assert_received();
    }

    /// The dataplane's first try ([`send_direct`]) under the flush's rule: refused by a
    /// pending ICMP error it is worth sending again, with the error found in the
    /// queue or not yet (its errno tells), and the next try goes out; refused for
    /// being too large, it is not.
    #[test]
    fn a_direct_send_is_resent_only_after_an_icmp_error() {
        let b = Bouncing::new();
        let (fd, to) = (b.s.as_raw_fd(), b.rx.local_addr().unwrap());
        let found = || crate::sys::errqueue::drain(&fd, |_| {}) > 0;
        b.bounce();
        let e = send_direct(fd, b"y", to, None).unwrap_err();
        assert!(worth_resending(&e, found));
        b.bounce();
        let e = send_direct(fd, b"y", to, None).unwrap_err();
        assert!(worth_resending(&e, || false));
        send_direct(fd, b"y", to, None).unwrap();
        b.assert_received();
        found();
        let big = vec![b'x'; 65_508];
        let e = send_direct(fd, &big, to, None).unwrap_err();
        assert!(!worth_resending(&e, found));
    }

    /// A send that fails by itself (an IPv4 datagram larger than IPv4 allows: the
    /// kernel queues a local EMSGSIZE error) is not sent again: only errors from an
    /// ICMP message count (it was sent nine times).
    #[test]
    fn a_send_failing_by_itself_is_not_retried() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        crate::sys::errqueue::enable(&s, false).unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut out = SendBatch::default();
        let big = vec![b'x'; 65_508];
        assert!(out.push(s.as_raw_fd(), &big, rx.local_addr().unwrap()));
        let mut asked = 0;
        let lost = out.flush(|fd| {
            asked += 1;
            crate::sys::errqueue::drain(&fd, |_| {}) > 0
        });
        assert_eq!((lost, asked), (1, 1));
    }
}
