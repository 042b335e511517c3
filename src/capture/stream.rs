//! HEP over TCP: packets written back to back on one connection, in batches.
//!
//! Why: over UDP every packet is a system call and a trip through the loopback or NIC
//! stack, two per relayed datagram with both legs on, which costs about as much as
//! relaying it. Here the thread waits for a first packet, naps so the packets the
//! dataplane queues meanwhile join it, and writes them all at once. The nap is as long
//! as the last batches say a quarter of the ring takes to fill, between [`NAP_MIN`] and
//! [`NAP_MAX`]: long at low rates (few writes), short at high ones (no `queue_full`). The dataplane's
//! side is the same ring as for UDP: it never waits on the connection.
//!
//! A write error, or a batch not written within [`TIMEOUT`] plus its size at
//! [`MIN_RATE`] (a collector reading a trickle), closes the connection (a partly written packet would break the stream's
//! framing); the packets in flight count as `send_failed`. Without a
//! connection, packets are dropped as `unreachable` and a new one is tried at most once
//! per [`RETRY`].

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sender::{DropLog, HepDrop, HepStats, Ring};

/// How long the thread lets packets gather before writing them.
const NAP_MIN: Duration = Duration::from_millis(1);
const NAP_MAX: Duration = Duration::from_millis(20);
/// Bytes written per system call at most (the batch buffer, allocated once).
const BATCH: usize = 256 * 1024;
/// Connect attempts at most this often.
const RETRY: Duration = Duration::from_secs(1);
/// The slowest collector kept (bytes/s): a batch may take [`TIMEOUT`] plus its size
/// at this rate (256 KiB: 5 s) before the connection is given up.
const MIN_RATE: f64 = 64.0 * 1024.0;

/// How long writing `len` bytes may take.
fn batch_time(len: usize) -> Duration {
    TIMEOUT + Duration::from_secs_f64(len as f64 / MIN_RATE)
}

/// A connect taking longer than this gives the connection up; a batch's write gets
/// this plus its size at [`MIN_RATE`].
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
            self.failed(1, HepDrop::Unreachable, &io::ErrorKind::NotConnected.into());
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
            Some(s) => write_within(
                s,
                &self.batch,
                Instant::now() + batch_time(self.batch.len()),
            ),
            None => Err(io::ErrorKind::NotConnected.into()),
        };
        match res {
            Ok(()) => self.stats.count_sent(n, self.batch.len()),
            Err(e) => {
                self.stream = None;
                self.failed(n, HepDrop::SendFailed, &e);
            }
        }
        self.batch.clear();
    }

    fn failed(&mut self, n: u64, why: HepDrop, e: &io::Error) {
        self.stats.count_drops(why, n);
        if let Some(dropped) = self.log.note(n, Instant::now()) {
            tracing::warn!(collector = %self.collector, error = %e, dropped, "HEP collector unreachable; packets dropped");
        }
    }
}

/// Writes all of `buf` by `deadline`, or fails. The socket's write timeout bounds one
/// `write` only, and a collector that reads a trickle makes every write partial but
/// quick: without a deadline for the whole batch it would hold the sender for minutes.
fn write_within<W: Write + WriteTimeout>(
    s: &mut W,
    mut buf: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    // The first write keeps the connection's timeout; only a batch that needs more
    // than one shortens it to what is left (and puts it back when done).
    let mut first = true;
    let mut shortened = false;
    while !buf.is_empty() {
        if !first {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            s.set_timeout(left)?;
            shortened = true;
        }
        first = false;
        match s.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => buf = buf.get(k..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if shortened {
        s.set_timeout(TIMEOUT)?;
    }
    Ok(())
}

/// A writer whose single writes can be given a timeout.
trait WriteTimeout {
    fn set_timeout(&mut self, t: Duration) -> io::Result<()>;
}

impl WriteTimeout for TcpStream {
    fn set_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.set_write_timeout(Some(t))
    }
}

/// How long to nap for a quarter of a `queue`-packet ring to fill at `rate` packets/s.
fn nap_for(queue: usize, rate: f64) -> Duration {
    if rate <= 0.0 {
        return NAP_MAX;
    }
    Duration::from_secs_f64(queue as f64 / 4.0 / rate).clamp(NAP_MIN, NAP_MAX)
}

pub(super) fn send_loop(collector: SocketAddr, ring: Ring, queue: usize, stats: Arc<HepStats>) {
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
    // Packets per second, smoothed over the last batches.
    let mut rate = 0.0f64;
    // Blocks while idle; at load, one wake-up and one write per nap.
    while let Ok(first) = ring.queue.recv() {
        let woke = Instant::now();
        conn.ensure(woke);
        if conn.stream.is_some() {
            std::thread::sleep(nap_for(queue, rate));
        }
        let mut n = 0u64;
        let mut next = Some(first);
        while let Some(buf) = next {
            n += 1;
            conn.push(buf.bytes());
            if ring.free.send(buf).is_err() {
                return;
            }
            next = ring.queue.try_recv().ok();
        }
        conn.flush();
        let secs = woke.elapsed().as_secs_f64().max(1e-3);
        rate = 0.5 * rate + 0.5 * (n as f64 / secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes `per_write` bytes per write, `delay` each.
    struct Trickle {
        per_write: usize,
        delay: Duration,
        got: Vec<u8>,
        timeouts: Vec<Duration>,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            std::thread::sleep(self.delay);
            let k = b.len().min(self.per_write);
            self.got.extend_from_slice(&b[..k]);
            Ok(k)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl WriteTimeout for Trickle {
        fn set_timeout(&mut self, t: Duration) -> io::Result<()> {
            self.timeouts.push(t);
            Ok(())
        }
    }

    fn trickle(per_write: usize, delay: Duration) -> Trickle {
        Trickle {
            per_write,
            delay,
            got: Vec::new(),
            timeouts: Vec::new(),
        }
    }

    #[test]
    fn a_collector_reading_a_trickle_costs_the_batch_not_the_sender() {
        // 100 writes of 20 ms each would take 2 s; the batch has 60 ms (the bound on
        // the time is loose: a loaded machine oversleeps).
        let mut w = trickle(1, Duration::from_millis(20));
        let t = Instant::now();
        let r = write_within(&mut w, &[7u8; 100], t + Duration::from_millis(60));
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(w.got.len() < 100);
        // Each later write had only what was left of the 60 ms.
        assert!(w.timeouts.iter().all(|&d| d <= Duration::from_millis(60)));
    }

    #[test]
    fn a_full_batch_may_take_seconds_on_a_slow_link() {
        // 256 KiB over a 1 Mbit/s link takes about 2 s: within its time.
        assert!(batch_time(BATCH) > Duration::from_secs_f64(BATCH as f64 / 125_000.0));
        assert_eq!(batch_time(0), TIMEOUT);
    }

    #[test]
    fn a_batch_in_pieces_arrives_whole_and_the_timeout_is_put_back() {
        let mut w = trickle(30, Duration::ZERO);
        let data: Vec<u8> = (0..100).collect();
        write_within(&mut w, &data, Instant::now() + TIMEOUT).unwrap();
        assert_eq!(w.got, data);
        assert_eq!(w.timeouts.last(), Some(&TIMEOUT));
        // One write, nothing touched.
        let mut w = trickle(1000, Duration::ZERO);
        write_within(&mut w, &data, Instant::now() + TIMEOUT).unwrap();
        assert!(w.timeouts.is_empty());
    }

    #[test]
    fn the_nap_shortens_as_the_rate_grows() {
        assert_eq!(nap_for(1024, 0.0), NAP_MAX);
        assert_eq!(nap_for(1024, 6_000.0), NAP_MAX, "500 calls/s, both legs");
        let at_3000_calls = nap_for(1024, 42_000.0);
        assert!(at_3000_calls > NAP_MIN && at_3000_calls < Duration::from_millis(7));
        assert_eq!(nap_for(1024, 1e7), NAP_MIN);
    }
}
