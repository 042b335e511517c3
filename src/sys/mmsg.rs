//! Batched receive (`recvmmsg`) into buffers allocated once. Besides fewer syscalls
//! under load, a batch that comes back short proves the socket queue empty, so the
//! edge-triggered reactor's readiness can be cleared without the extra `EAGAIN`
//! receive a plain read loop needs: at low rates that is one syscall in four. (With
//! IP_RECVERR an ICMP error arriving mid-batch also ends it short, with data still
//! queued; that error's arrival wakes the reactor again, so nothing is stranded.)

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use nix::sys::socket::SockaddrStorage;

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
/// (`one_batch_serves_both_families` below). So the headers are rebuilt on the stack
/// for each call, as nix's `recvmsg` does for one message.
pub struct RecvBatch {
    /// `BATCH` buffers of `BUF_LEN`, back to back. Only pages the kernel writes to
    /// become resident, so unused tail space costs address space, not memory.
    bufs: Box<[u8]>,
    addrs: [SockaddrStorage; BATCH],
    lens: [usize; BATCH],
    /// Control buffers: the destination address on sockets with `IP_PKTINFO` /
    /// `IPV6_RECVPKTINFO` (prefix-mode relay sockets); empty on the others.
    ctrl: [CmsgBuf; BATCH],
    dsts: [Option<IpAddr>; BATCH],
    n: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        let unspecified = SockaddrStorage::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
        RecvBatch {
            bufs: vec![0u8; BATCH * BUF_LEN].into_boxed_slice(),
            addrs: [unspecified; BATCH],
            lens: [0; BATCH],
            ctrl: [CmsgBuf([0; CMSG_BUF]); BATCH],
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
        let mut chunks = self.bufs.chunks_exact_mut(BUF_LEN);
        let mut iovs: [IoSliceMut<'_>; BATCH] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        // SAFETY: mmsghdr is plain C data (pointers, lengths, flags); all-zero is a
        // valid value, and every field the kernel reads is set below.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (((iov, addr), h), c) in iovs
            .iter_mut()
            .zip(&mut self.addrs)
            .zip(&mut hdrs)
            .zip(&mut self.ctrl)
        {
            h.msg_hdr.msg_control = c.0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CMSG_BUF;
            h.msg_hdr.msg_name = (addr as *mut SockaddrStorage).cast();
            h.msg_hdr.msg_namelen = size_of::<SockaddrStorage>() as libc::socklen_t;
            // IoSliceMut is ABI-compatible with iovec on Unix (std guarantees it).
            h.msg_hdr.msg_iov = (iov as *mut IoSliceMut<'_>).cast();
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each header points at one iovec above (a BUF_LEN chunk of
        // `self.bufs`) and at one `SockaddrStorage` of `self.addrs` (a repr(C) union
        // the size of sockaddr_storage) with matching lengths; all of them outlive
        // the call, and the kernel writes only within those lengths.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = r as usize;
        for ((len, dst), h) in self.lens.iter_mut().zip(&mut self.dsts).zip(&hdrs).take(n) {
            *len = h.msg_len as usize;
            // SAFETY: the kernel filled this header in; its control buffer is
            // `self.ctrl[i]`, alive and at least `msg_controllen` long.
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
}
