//! Plain UDP on the loopback: sockets with a receive timeout, and whether a program has
//! bound a port yet (from `/proc/net/udp*`, so checking never takes the port away).

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::process::{Proc, wait_until};

/// True if some socket is bound to UDP `port` on IPv4 or IPv6 (read from `/proc/net/udp*`,
/// so checking never takes the port away from the program that is starting).
pub fn udp_port_bound(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|local| local.ends_with(&want))
            })
        })
    })
}

/// Waits until `proc` has bound UDP `port`; panics (with its log) if it exits or is too slow.
pub fn wait_udp_bound(proc: &mut Proc, port: u16, timeout: Duration) {
    let ok = wait_until(timeout, || {
        proc.assert_running();
        udp_port_bound(port)
    });
    if !ok {
        panic!(
            "{} did not bind udp port {port} within {timeout:?}; log tail:\n{}",
            proc.name,
            proc.log_tail(40)
        );
    }
}

/// A UDP socket on 127.0.0.1 (given port, or any if 0) with a receive timeout.
pub fn udp(port: u16, timeout: Duration) -> UdpSocket {
    let s = UdpSocket::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("bind udp 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(timeout)).unwrap();
    s
}

/// Receives one datagram, or `None` on timeout.
pub fn recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70_000];
    loop {
        return match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                buf.truncate(n);
                Some((buf, from))
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                None
            }
            // A signal to the test process (a child exiting, say) interrupts a
            // blocking receive: not an error of the thing under test.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("recv_from: {e}"),
        };
    }
}
