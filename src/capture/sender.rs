//! The HEP sender: the dataplane encodes into a buffer from a fixed ring and queues it;
//! a thread sends it to the collector (UDP: [`super::datagram`], TCP: [`super::stream`])
//! and returns the buffer. The dataplane never waits: no free buffer (collector slow or
//! gone, queue full) is a counted drop. Nothing allocates per packet on either side.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::hep::{PROTO_SIP, Repr};
use super::select::Selector;
use crate::config::{HepConfig, HepTransport};
use crate::throttle::LogThrottle;

/// Bytes per ring buffer: a HEP packet of a datagram up to ~8 KiB. Larger ones are
/// dropped (`too_large`).
pub const BUF_LEN: usize = 8192;
/// How often an unreachable collector is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a HEP packet was not sent. `as_str` values are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HepDrop {
    /// No free buffer: the sender is behind (collector slow, or the queue full).
    QueueFull,
    /// The datagram does not fit a buffer.
    TooLarge,
    /// The collector answered with ICMP unreachable.
    Unreachable,
    /// Another send error.
    SendFailed,
}

impl HepDrop {
    pub const ALL: [HepDrop; 4] = [
        HepDrop::QueueFull,
        HepDrop::TooLarge,
        HepDrop::Unreachable,
        HepDrop::SendFailed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            HepDrop::QueueFull => "queue_full",
            HepDrop::TooLarge => "too_large",
            HepDrop::Unreachable => "unreachable",
            HepDrop::SendFailed => "send_failed",
        }
    }
}

/// Totals, shared with the metrics publisher.
#[derive(Debug, Default)]
pub struct HepStats {
    pub sent: AtomicU64,
    pub bytes: AtomicU64,
    pub dropped: [AtomicU64; 4],
}

impl HepStats {
    pub(super) fn count_sent(&self, packets: u64, bytes: usize) {
        self.sent.fetch_add(packets, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub(super) fn count_drop(&self, r: HepDrop) {
        self.count_drops(r, 1);
    }
    pub(super) fn count_drops(&self, r: HepDrop, n: u64) {
        self.dropped[r as usize].fetch_add(n, Ordering::Relaxed);
    }
    pub fn dropped(&self, r: HepDrop) -> u64 {
        self.dropped[r as usize].load(Ordering::Relaxed)
    }
}

pub(super) struct Buf {
    data: Box<[u8]>,
    len: usize,
}

impl Buf {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// The sender thread's ends of the ring: packets to send, and where buffers go back.
pub(super) struct Ring {
    pub queue: Receiver<Buf>,
    pub free: SyncSender<Buf>,
}

/// A warning at most once per [`LOG_EVERY`], with the number of packets dropped since
/// the last one.
pub(super) struct DropLog {
    lines: LogThrottle,
    unlogged: u64,
}

impl Default for DropLog {
    fn default() -> DropLog {
        DropLog {
            lines: LogThrottle::new(LOG_EVERY),
            unlogged: 0,
        }
    }
}

impl DropLog {
    /// Counts `n` dropped packets; `Some(dropped)` when a line is due, with the packets
    /// dropped since the last line (this one's included).
    pub(super) fn note(&mut self, n: u64, now: Instant) -> Option<u64> {
        self.unlogged += n;
        self.lines.allow(now)?;
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// The dataplane's side: owned by the dataplane thread.
pub struct HepExporter {
    pub selector: Selector,
    capture_id: u32,
    password: Option<Box<[u8]>>,
    include_local: bool,
    queue: SyncSender<Buf>,
    free: Receiver<Buf>,
    /// A buffer taken but not queued (encoding failed): used first next time.
    spare: Option<Buf>,
    stats: Arc<HepStats>,
}

/// One datagram as a leg sees it.
pub struct Leg<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub call_id: &'a [u8],
    pub data: &'a [u8],
}

impl HepExporter {
    /// Starts the sender thread (a UDP socket is opened first: its errors are the
    /// caller's; a TCP connection is made, and remade, by the thread).
    /// `seed`: see [`Selector::new`].
    pub fn start(cfg: &HepConfig, seed: u64) -> io::Result<(HepExporter, Arc<HepStats>)> {
        let (queue_tx, queue_rx) = sync_channel::<Buf>(cfg.queue);
        let (free_tx, free_rx) = sync_channel::<Buf>(cfg.queue);
        for _ in 0..cfg.queue {
            let _ = free_tx.try_send(Buf {
                data: vec![0u8; BUF_LEN].into_boxed_slice(),
                len: 0,
            });
        }
        let stats = Arc::new(HepStats::default());
        let st = stats.clone();
        let collector = cfg.collector;
        let ring = Ring {
            queue: queue_rx,
            free: free_tx,
        };
        let thread = std::thread::Builder::new().name("sipfront-hep".into());
        match cfg.transport {
            HepTransport::Udp => {
                let sock = super::datagram::connect(collector)?;
                thread.spawn(move || super::datagram::send_loop(sock, collector, ring, st))?;
            }
            HepTransport::Tcp => {
                let queue = cfg.queue;
                thread.spawn(move || super::stream::send_loop(collector, ring, queue, st))?;
            }
        }
        Ok((
            HepExporter {
                selector: Selector::new(cfg, seed),
                capture_id: cfg.capture_id,
                password: cfg.password.as_ref().map(|p| p.as_bytes().into()),
                include_local: cfg.include_local,
                queue: queue_tx,
                free: free_rx,
                spare: None,
                stats: stats.clone(),
            },
            stats,
        ))
    }

    /// `n` packets lost before they reached the exporter (counted as `reason`).
    pub fn count_lost(&self, reason: HepDrop, n: u64) {
        self.stats.count_drops(reason, n);
    }

    pub fn include_local(&self) -> bool {
        self.include_local
    }

    /// Encodes one leg and queues it; never blocks, never allocates.
    pub fn export(&mut self, ts: SystemTime, leg: &Leg<'_>) {
        let Some(mut buf) = self.spare.take().or_else(|| self.free.try_recv().ok()) else {
            self.stats.count_drop(HepDrop::QueueFull);
            return;
        };
        let d = ts.duration_since(UNIX_EPOCH).unwrap_or_default();
        let repr = Repr {
            src: leg.src,
            dst: leg.dst,
            ts_sec: d.as_secs() as u32,
            ts_usec: d.subsec_micros(),
            proto_type: PROTO_SIP,
            capture_id: self.capture_id,
            auth_key: self.password.as_deref(),
            correlation_id: (!leg.call_id.is_empty()).then_some(leg.call_id),
            payload: leg.data,
        };
        match repr.emit(&mut buf.data) {
            Some(n) => buf.len = n,
            None => {
                self.stats.count_drop(HepDrop::TooLarge);
                self.spare = Some(buf);
                return;
            }
        }
        match self.queue.try_send(buf) {
            Ok(()) => {}
            Err(TrySendError::Full(b)) => {
                self.stats.count_drop(HepDrop::QueueFull);
                self.spare = Some(b);
            }
            Err(TrySendError::Disconnected(b)) => {
                self.stats.count_drop(HepDrop::SendFailed);
                self.spare = Some(b);
            }
        }
    }
}
