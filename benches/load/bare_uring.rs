//! The floor over io_uring: the same forwarding as [`crate::bare`] (one client socket, a
//! connected upstream socket per client address, backend by hash), but every receive
//! and send is a submission to one io_uring, so a wake-up costs one `io_uring_enter`
//! that also submits the sends and re-arms the receives. Run as a child process (the
//! bench binary re-executed with [`ENV`] set). It answers one question for issue 15:
//! whether a different system-call interface goes below the epoll floor here.
//!
//! Receives are multishot (armed once per socket, re-armed only when the kernel ends
//! one) into a ring of provided buffers; a datagram is sent from the buffer it arrived
//! in, and the send's completion hands the buffer back to the ring. `BARE_URING_DEFER=1`
//! sets the ring up with `SINGLE_ISSUER` and `DEFER_TASKRUN` (completions are processed
//! only when the thread asks for them).

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use io_uring::types::BufRingEntry;
use io_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::bare::Upstream;

/// `listen,upstream1,upstream2,...`
pub const ENV: &str = "SIPFRONT_BARE_URING_FORWARDER";

const BUFS: u16 = 2048;
const BUF: usize = 4096;
const BGID: u16 = 0;
const OP_SHIFT: u64 = 56;
const RECV_CLIENT: u64 = 1;
const RECV_UP: u64 = 2;
const SEND: u64 = 3;
/// `io_uring_recvmsg_out`: the header a multishot `recvmsg` writes before the address.
const RECVMSG_OUT: usize = 16;
const NAME: usize = size_of::<libc::sockaddr_in>();

/// Runs the forwarder described by `spec` until killed.
pub fn run(spec: &str) -> ! {
    crate::bare::serve(ENV, "bare io_uring forwarder", spec, forward)
}

/// The provided-buffer ring: `BUFS` buffers the kernel fills as datagrams arrive; a
/// buffer comes back to it once the send that forwards its datagram has completed.
struct Buffers {
    ring: *mut BufRingEntry,
    data: Box<[u8]>,
    /// Per buffer: where its datagram goes (replies to clients are sent unconnected).
    dest: Box<[libc::sockaddr_in]>,
    tail: u16,
}

impl Buffers {
    fn new() -> io::Result<Buffers> {
        let bytes = usize::from(BUFS) * size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping; the ring must be page-aligned.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut b = Buffers {
            ring: ring.cast(),
            data: vec![0u8; usize::from(BUFS) * BUF].into_boxed_slice(),
            // SAFETY: all-zero is a valid sockaddr_in.
            dest: vec![unsafe { zeroed::<libc::sockaddr_in>() }; usize::from(BUFS)]
                .into_boxed_slice(),
            tail: 0,
        };
        for bid in 0..BUFS {
            b.give(bid);
        }
        Ok(b)
    }

    fn give(&mut self, bid: u16) {
        let mask = BUFS - 1;
        // SAFETY: the index is within the mapping; the kernel reads entries only below
        // the tail, which is published after the entry is written.
        unsafe {
            let e = &mut *self.ring.add(usize::from(self.tail & mask));
            e.set_addr(self.data.as_ptr().add(usize::from(bid) * BUF) as u64);
            e.set_len(BUF as u32);
            e.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = BufRingEntry::tail(self.ring).cast_mut();
            std::sync::atomic::AtomicU16::from_ptr(tail)
                .store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        let at = usize::from(bid) * BUF;
        &self.data[at..at + len]
    }
}

fn user(op: u64, n: usize) -> u64 {
    (op << OP_SHIFT) | n as u64
}

/// The client socket's multishot receive (`template` gives the lengths only).
fn recv_client(fd: types::Fd, template: &libc::msghdr) -> squeue::Entry {
    opcode::RecvMsgMulti::new(fd, template, BGID)
        .build()
        .user_data(user(RECV_CLIENT, 0))
}

/// Upstream `i`'s multishot receive.
fn recv_up(fd: RawFd, i: usize) -> squeue::Entry {
    opcode::RecvMulti::new(types::Fd(fd), BGID)
        .build()
        .user_data(user(RECV_UP, i))
}

/// Re-arms a multishot receive the kernel ended with `res`: at once, or, when it ended
/// for want of a buffer, once a send returns one (at once it would fail again, and the
/// loop would spin).
fn rearm(
    res: i32,
    arm: squeue::Entry,
    pending: &mut Vec<squeue::Entry>,
    starved: &mut Vec<squeue::Entry>,
) {
    if res == -libc::ENOBUFS {
        starved.push(arm);
    } else {
        pending.push(arm);
    }
}

fn forward(listen: SocketAddr, backends: &[SocketAddr]) -> io::Result<Infallible> {
    // Addresses are read as `sockaddr_in` below.
    assert!(listen.is_ipv4(), "{ENV}: IPv4 only");
    let client = UdpSocket::bind(listen)?;
    // Declared before the ring, so dropped after it: the kernel may write into these
    // until the ring is gone.
    let mut bufs = Buffers::new()?;
    // SAFETY: all-zero is a valid msghdr; a multishot recvmsg reads only the lengths.
    let mut template: Box<libc::msghdr> = Box::new(unsafe { zeroed() });
    template.msg_namelen = NAME as u32;
    let mut builder = IoUring::builder();
    if std::env::var_os("BARE_URING_DEFER").is_some() {
        builder.setup_single_issuer().setup_defer_taskrun();
    }
    let mut ring: IoUring<squeue::Entry> = builder.build(4096)?;
    // SAFETY: the ring's memory lives as long as `bufs`, which outlives the io_uring.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.ring as u64, BUFS, BGID, 0)?
    };
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let mut flows: HashMap<SocketAddr, usize> = HashMap::new();
    let mut upstreams: Vec<(UdpSocket, libc::sockaddr_in)> = Vec::new();
    let mut pending: Vec<squeue::Entry> = Vec::with_capacity(4096);
    let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(4096);
    // Receives that ended for want of a buffer (see `rearm`).
    let mut starved: Vec<squeue::Entry> = Vec::new();
    let client_fd = types::Fd(client.as_raw_fd());
    pending.push(recv_client(client_fd, &template));
    let (mut enters, mut datagrams) = (0u64, 0u64);
    loop {
        enters += 1;
        {
            let (submitter, mut sq, _) = ring.split();
            for e in pending.drain(..) {
                // SAFETY: every buffer and address an entry points at lives in `bufs` or
                // `template`, and a buffer is not handed back before its send completed.
                while unsafe { sq.push(&e) }.is_err() {
                    // Full: hand the kernel what is queued, then go on.
                    sq.sync();
                    submitter.submit()?;
                    sq.sync();
                }
            }
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        done.clear();
        done.extend(
            ring.completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(data, res, flags) in &done {
            let op = data >> OP_SHIFT;
            let n = (data & ((1 << OP_SHIFT) - 1)) as usize;
            let bid = cqueue::buffer_select(flags);
            match op {
                RECV_CLIENT => {
                    if !cqueue::more(flags) {
                        let arm = recv_client(client_fd, &template);
                        rearm(res, arm, &mut pending, &mut starved);
                    }
                    let Some(bid) = bid else { continue };
                    if res < 0 {
                        bufs.give(bid);
                        continue;
                    }
                    let raw = bufs.buf(bid, res as usize);
                    // `io_uring_recvmsg_out.flags`: a datagram cut to the buffer is dropped.
                    let out_flags = u32::from_ne_bytes(raw[12..16].try_into().unwrap());
                    if out_flags & libc::MSG_TRUNC as u32 != 0 {
                        bufs.give(bid);
                        continue;
                    }
                    let name = &raw[RECVMSG_OUT..RECVMSG_OUT + NAME];
                    // SAFETY: the kernel wrote a sockaddr_in there (an IPv4 socket).
                    let sin: libc::sockaddr_in =
                        unsafe { std::ptr::read_unaligned(name.as_ptr().cast()) };
                    let from = sockaddr_to(&sin);
                    let idx = match flows.get(&from) {
                        Some(&i) => i,
                        None => {
                            let (up, _) = crate::bare::upstream(
                                from,
                                backends,
                                Upstream::Connected,
                                &hasher,
                            )?;
                            let fd = up.as_raw_fd();
                            upstreams.push((up, sin));
                            let i = upstreams.len() - 1;
                            flows.insert(from, i);
                            pending.push(recv_up(fd, i));
                            i
                        }
                    };
                    let payload = &raw[RECVMSG_OUT + NAME..];
                    pending.push(
                        opcode::Send::new(
                            types::Fd(upstreams[idx].0.as_raw_fd()),
                            payload.as_ptr(),
                            payload.len() as u32,
                        )
                        .build()
                        .user_data(user(SEND, usize::from(bid))),
                    );
                }
                RECV_UP => {
                    if !cqueue::more(flags) {
                        let arm = recv_up(upstreams[n].0.as_raw_fd(), n);
                        rearm(res, arm, &mut pending, &mut starved);
                    }
                    let Some(bid) = bid else { continue };
                    // A full buffer may hold a cut datagram (a plain recv does not say):
                    // dropped, as bare's 64 KiB buffer would not cut it.
                    if res < 0 || res as usize >= BUF {
                        bufs.give(bid);
                        continue;
                    }
                    bufs.dest[usize::from(bid)] = upstreams[n].1;
                    let payload = bufs.buf(bid, res as usize);
                    pending.push(
                        opcode::Send::new(client_fd, payload.as_ptr(), payload.len() as u32)
                            .dest_addr((&raw const bufs.dest[usize::from(bid)]).cast())
                            .dest_addr_len(NAME as u32)
                            .build()
                            .user_data(user(SEND, usize::from(bid))),
                    );
                }
                _ => {
                    bufs.give(n as u16);
                    pending.append(&mut starved);
                    if res >= 0 {
                        datagrams += 1;
                        if datagrams % 10000 == 0 {
                            eprintln!("{datagrams} sent, {enters} enters");
                        }
                    }
                }
            }
        }
    }
}

fn sockaddr_to(sin: &libc::sockaddr_in) -> SocketAddr {
    SocketAddr::from((
        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
        u16::from_be(sin.sin_port),
    ))
}
