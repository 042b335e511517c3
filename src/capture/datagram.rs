//! HEP over UDP: one datagram per packet on a connected socket.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Instant;

use super::sender::{DropLog, HepDrop, HepStats, Ring};

/// A UDP socket connected to the collector.
pub(super) fn connect(collector: SocketAddr) -> io::Result<UdpSocket> {
    let bind: SocketAddr = if collector.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind)?;
    sock.connect(collector)?;
    Ok(sock)
}

pub(super) fn send_loop(sock: UdpSocket, collector: SocketAddr, ring: Ring, stats: Arc<HepStats>) {
    let mut log = DropLog::default();
    while let Ok(buf) = ring.queue.recv() {
        match sock.send(buf.bytes()) {
            Ok(n) => stats.count_sent(1, n),
            Err(e) => {
                let unreachable = e.kind() == io::ErrorKind::ConnectionRefused;
                stats.count_drop(if unreachable {
                    HepDrop::Unreachable
                } else {
                    HepDrop::SendFailed
                });
                if let Some(dropped) = log.note(1, Instant::now()) {
                    tracing::warn!(%collector, error = %e, dropped, "HEP collector unreachable; packets dropped");
                }
            }
        }
        if ring.free.send(buf).is_err() {
            return;
        }
    }
}
