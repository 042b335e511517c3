//! The floor: a bare recv/send UDP forwarder with no SIP parsing, run as a child process
//! (the bench binary re-executed with [`ENV`] set).
//!
//! One socket for clients; per client ip:port a new upstream socket bound to
//! 127.0.0.1:0 and connected to a backend picked by hashing the client address; replies
//! on that socket go back to the client from the client socket. One thread, blocking in
//! `epoll_wait` (level-triggered), each ready socket drained until it would block.
//! epoll rather than poll(2): with `-t un` there are hundreds of upstream sockets and a
//! poll over all of them on every wake-up would cost more than the forwarding itself,
//! which is not what a floor should measure.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// `listen,upstream1,upstream2,...`
pub const ENV: &str = "SIPFRONT_BARE_FORWARDER";

const CLIENT_KEY: u64 = u64::MAX;

/// Runs the forwarder described by `spec` until killed.
pub fn run(spec: &str) -> ! {
    serve(ENV, "bare forwarder", spec, |l, b| {
        forward(l, b, Upstream::Connected, |_| {})
    })
}

/// How a client's upstream socket talks to its backend.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// Connected to the backend: its route is looked up once, and only the backend's
    /// datagrams are received on it (the floor).
    Connected,
    /// Not connected: each send names the backend (a route lookup per send), and any
    /// source's datagrams are received on it, as a relay socket must (any backend may
    /// reach a flow).
    Unconnected,
}

/// Parses `spec` (`listen,upstream1,...`, from the environment variable `env`) and
/// runs `forward` on it until killed; a forwarder that fails exits 1 naming `name`.
pub fn serve(
    env: &str,
    name: &str,
    spec: &str,
    forward: fn(SocketAddr, &[SocketAddr]) -> io::Result<Infallible>,
) -> ! {
    let addrs: Vec<SocketAddr> = spec
        .split(',')
        .map(|a| {
            a.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{env}: bad address `{a}`: {e}"))
        })
        .collect();
    assert!(
        addrs.len() >= 2,
        "{env}: need listen,upstream[,upstream...]"
    );
    match forward(addrs[0], &addrs[1..]) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
    }
}

/// `inspect` sees each datagram before it is sent on; a closure, so the plain forwarder's
/// `|_| {}` compiles to nothing.
pub fn forward(
    listen: SocketAddr,
    backends: &[SocketAddr],
    how: Upstream,
    inspect: impl Fn(&[u8]),
) -> io::Result<Infallible> {
    let client = UdpSocket::bind(listen)?;
    let ep = epoll()?;
    watch(ep, &client, CLIENT_KEY)?;
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let mut flows: HashMap<SocketAddr, usize> = HashMap::new();
    // (socket, its client, its backend)
    let mut upstreams: Vec<(UdpSocket, SocketAddr, SocketAddr)> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
        for ev in wait(ep, &mut events)? {
            let key = ev.u64;
            if key == CLIENT_KEY {
                drain(&client, &mut buf, |data, from| {
                    let idx = match flows.get(&from) {
                        Some(&i) => i,
                        None => {
                            let (up, backend) = upstream(from, backends, how, &hasher)?;
                            watch(ep, &up, upstreams.len() as u64)?;
                            upstreams.push((up, from, backend));
                            flows.insert(from, upstreams.len() - 1);
                            upstreams.len() - 1
                        }
                    };
                    inspect(data);
                    let (up, _, backend) = &upstreams[idx];
                    let _ = match how {
                        Upstream::Connected => up.send(data),
                        Upstream::Unconnected => up.send_to(data, backend),
                    };
                    Ok(())
                })?;
            } else if how == Upstream::Unconnected {
                let (up, to, _) = &upstreams[key as usize];
                drain(up, &mut buf, |data, _from| {
                    inspect(data);
                    let _ = client.send_to(data, to);
                    Ok(())
                })?;
            } else {
                let (up, to, _) = &upstreams[key as usize];
                loop {
                    match up.recv(&mut buf) {
                        Ok(len) => {
                            inspect(&buf[..len]);
                            let _ = client.send_to(&buf[..len], to);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        // An ICMP error queued for an earlier send: consumed, go on.
                        Err(_) => continue,
                    }
                }
            }
        }
    }
}

/// A new client's upstream socket, bound on loopback, and the backend its address
/// hashes to (connected to it if `how` says so).
pub fn upstream(
    from: SocketAddr,
    backends: &[SocketAddr],
    how: Upstream,
    hasher: &impl BuildHasher,
) -> io::Result<(UdpSocket, SocketAddr)> {
    let backend = backends[(hasher.hash_one(from) % backends.len() as u64) as usize];
    let up = UdpSocket::bind("127.0.0.1:0")?;
    if how == Upstream::Connected {
        up.connect(backend)?;
    }
    Ok((up, backend))
}

/// A new epoll set.
pub fn epoll() -> io::Result<libc::c_int> {
    // SAFETY: epoll_create1 has no memory preconditions.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ep)
}

/// Blocks until sockets of `ep` are ready (again after a signal) and returns their events.
pub fn wait(ep: libc::c_int, events: &mut [libc::epoll_event]) -> io::Result<&[libc::epoll_event]> {
    loop {
        // SAFETY: `events` is a valid buffer of the length passed.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n >= 0 {
            return Ok(&events[..n as usize]);
        }
        let e = io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives from `sock` until it would block, handing each datagram and its source to
/// `each`; a failed receive (an ICMP error queued for an earlier send) is skipped.
pub fn drain(
    sock: &UdpSocket,
    buf: &mut [u8],
    mut each: impl FnMut(&[u8], SocketAddr) -> io::Result<()>,
) -> io::Result<()> {
    loop {
        match sock.recv_from(buf) {
            Ok((len, from)) => each(&buf[..len], from)?,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(_) => continue,
        }
    }
}

/// Adds `sock` to `ep` under `key`, made non-blocking: the loop drains each ready
/// socket until it would block.
pub fn watch(ep: libc::c_int, sock: &UdpSocket, key: u64) -> io::Result<()> {
    sock.set_nonblocking(true)?;
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: key,
    };
    // SAFETY: a valid epoll fd, an open socket fd and an initialised event.
    let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, sock.as_raw_fd(), &mut ev) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
