//! Batched receive (`recvmmsg`) into buffers allocated once. Besides fewer syscalls
//! under load, a batch that comes back short proves the socket queue empty, so the
//! edge-triggered reactor's readiness can be cleared without the extra `EAGAIN`
//! receive a plain read loop needs: at low rates that is one syscall in four. (With
//! IP_RECVERR an ICMP error arriving mid-batch also ends it short, with data still
//! queued; that error's arrival wakes the reactor again, so nothing is stranded.)

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::errqueue::sockaddr_to_std;

/// Large enough for any UDP datagram (65,507 bytes over IPv4, 65,527 over IPv6).
pub const BUF_LEN: usize = 65536;
/// Datagrams per `recvmmsg`.
pub const BATCH: usize = 16;

/// Receive buffers and the kernel's per-message headers for one batch.
pub struct RecvBatch {
    /// `BATCH` buffers of `BUF_LEN`, back to back. Only pages the kernel writes to
    /// become resident, so unused tail space costs address space, not memory.
    bufs: Box<[u8]>,
    addrs: [libc::sockaddr_storage; BATCH],
    lens: [usize; BATCH],
    n: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![0u8; BATCH * BUF_LEN].into_boxed_slice(),
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
            addrs: unsafe { std::mem::zeroed() },
            lens: [0; BATCH],
            n: 0,
        }
    }
}

impl RecvBatch {
    /// Receives up to `BATCH` datagrams without blocking; returns how many. `Ok(0)`
    /// never happens: an empty queue is `WouldBlock`.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.n = 0;
        // SAFETY: iovec/mmsghdr are plain data; zero is a valid starting value.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let base = self.bufs.as_mut_ptr();
        for (i, (iov, h)) in iovs.iter_mut().zip(hdrs.iter_mut()).enumerate() {
            // SAFETY: i < BATCH, so the offset stays inside the BATCH * BUF_LEN buffer.
            iov.iov_base = unsafe { base.add(i * BUF_LEN) }.cast();
            iov.iov_len = BUF_LEN;
            h.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points into buffers and addresses owned by `self` (or
        // the iovecs above), valid for the duration of the call and of the sizes given.
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
        for (len, h) in self.lens.iter_mut().zip(&hdrs).take(n) {
            *len = h.msg_len as usize;
        }
        self.n = n;
        Ok(n)
    }

    /// Datagram `i` of the last batch: its bytes and sender.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.n {
            return None;
        }
        let from = sockaddr_to_std(&self.addrs[i])?;
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
}
