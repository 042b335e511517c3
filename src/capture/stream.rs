//! HEP over TCP: packets written back to back on one connection, in batches.
//!
//! Why: over UDP every packet is a system call and a trip through the loopback or NIC
//! stack, two per relayed datagram with both legs on, which costs about as much as
//! relaying it. Here the thread waits for a first packet, naps [`NAP`] so the packets
//! the dataplane queues meanwhile join it, and writes them all at once. The dataplane's
//! side is the same ring as for UDP: it never waits on the connection.
//!
//! A write error or timeout closes the connection (a partly written packet would break
//! the stream's framing); the packets in flight count as `send_failed`. Without a
//! connection, packets are dropped as `unreachable` and a new one is tried at most once
//! per [`RETRY`].

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sender::{DropLog, HepDrop, HepStats, Ring};

/// How long the thread lets packets gather before writing them.
const NAP: Duration = Duration::from_millis(5);
/// Bytes written per system call at most (the batch buffer, allocated once).
const BATCH: usize = 256 * 1024;
/// Connect attempts at most this often.
const RETRY: Duration = Duration::from_secs(1);
/// A connect or a write taking longer than this gives the connection up.
const TIMEOUT: Duration = Duration::from_secs(1);

struct Conn {
    collector: SocketAddr,
    stream: Option<TcpStream>,
    next_try: Instant,
    stats: Arc<HepStats>,
    log: DropLog,
    batch: Vec<u8>,
    /// Packets in `batch`.
    batched: u64,
}

impl Conn {
    fn ensure(&mut self, now: Instant) {
        if self.stream.is_some() || now < self.next_try {
            return;
        }
        self.next_try = now + RETRY;
        let made = TcpStream::connect_timeout(&self.collector, TIMEOUT).and_then(|s| {
            // Batches are written whole; Nagle would only add delay.
            s.set_nodelay(true)?;
            s.set_write_timeout(Some(TIMEOUT))?;
            Ok(s)
        });
        match made {
            Ok(s) => {
                tracing::info!(collector = %self.collector, "HEP collector connected (tcp)");
                self.stream = Some(s);
            }
            Err(e) => self.failed(0, HepDrop::Unreachable, &e),
        }
    }

    /// Adds one packet to the batch (writing the batch first when it is full), or drops
    /// it without a connection.
    fn push(&mut self, packet: &[u8]) {
        if self.stream.is_none() {
            self.stats.count_drop(HepDrop::Unreachable);
            if self.log.note(1, Instant::now()) {
                let dropped = self.log.take();
                tracing::warn!(collector = %self.collector, dropped, "HEP collector unreachable; packets dropped");
            }
            return;
        }
        if self.batch.len() + packet.len() > BATCH {
            self.flush();
        }
        self.batch.extend_from_slice(packet);
        self.batched += 1;
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = std::mem::take(&mut self.batched);
        let res = match self.stream.as_mut() {
            Some(s) => s.write_all(&self.batch),
            None => Err(io::ErrorKind::NotConnected.into()),
        };
        match res {
            Ok(()) => {
                self.stats
                    .sent
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                self.stats.bytes.fetch_add(
                    self.batch.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            Err(e) => {
                self.stream = None;
                self.failed(n, HepDrop::SendFailed, &e);
            }
        }
        self.batch.clear();
    }

    fn failed(&mut self, n: u64, why: HepDrop, e: &io::Error) {
        for _ in 0..n {
            self.stats.count_drop(why);
        }
        if self.log.note(n, Instant::now()) {
            let dropped = self.log.take();
            tracing::warn!(collector = %self.collector, error = %e, dropped, "HEP collector unreachable; packets dropped");
        }
    }
}

pub(super) fn send_loop(collector: SocketAddr, ring: Ring, stats: Arc<HepStats>) {
    let mut conn = Conn {
        collector,
        stream: None,
        next_try: Instant::now(),
        stats,
        log: DropLog::default(),
        batch: Vec::with_capacity(BATCH),
        batched: 0,
    };
    conn.ensure(Instant::now());
    // Blocks while idle; at load, one wake-up and one write per NAP.
    while let Ok(first) = ring.queue.recv() {
        conn.ensure(Instant::now());
        if conn.stream.is_some() {
            std::thread::sleep(NAP);
        }
        let mut next = Some(first);
        while let Some(buf) = next {
            conn.push(buf.bytes());
            if ring.free.send(buf).is_err() {
                return;
            }
            next = ring.queue.try_recv().ok();
        }
        conn.flush();
    }
}
