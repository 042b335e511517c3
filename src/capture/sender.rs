//! The HEP sender: the dataplane encodes into a buffer from a fixed ring and queues it;
//! a thread sends it to the collector on a connected UDP socket and returns the buffer.
//! The dataplane never waits: no free buffer (collector slow or gone, queue full) is a
//! counted drop. Nothing allocates per packet on either side.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::hep::{PROTO_SIP, Repr};
use super::select::Selector;
use crate::config::HepConfig;

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
    fn count_drop(&self, r: HepDrop) {
        self.dropped[r as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn dropped(&self, r: HepDrop) -> u64 {
        self.dropped[r as usize].load(Ordering::Relaxed)
    }
}

struct Buf {
    data: Box<[u8]>,
    len: usize,
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
    /// Opens the socket and starts the sender thread.
    pub fn start(cfg: &HepConfig) -> io::Result<(HepExporter, Arc<HepStats>)> {
        let bind: SocketAddr = if cfg.collector.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind)?;
        sock.connect(cfg.collector)?;
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
        std::thread::Builder::new()
            .name("sipfront-hep".into())
            .spawn(move || send_loop(sock, collector, queue_rx, free_tx, st))?;
        Ok((
            HepExporter {
                selector: Selector::new(cfg),
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

fn send_loop(
    sock: UdpSocket,
    collector: SocketAddr,
    queue: Receiver<Buf>,
    free: SyncSender<Buf>,
    stats: Arc<HepStats>,
) {
    let mut last_log: Option<Instant> = None;
    let mut unlogged = 0u64;
    while let Ok(buf) = queue.recv() {
        match sock.send(&buf.data[..buf.len]) {
            Ok(n) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                let unreachable = e.kind() == io::ErrorKind::ConnectionRefused;
                stats.count_drop(if unreachable {
                    HepDrop::Unreachable
                } else {
                    HepDrop::SendFailed
                });
                unlogged += 1;
                let now = Instant::now();
                if last_log.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                    last_log = Some(now);
                    tracing::warn!(%collector, error = %e, dropped = unlogged, "HEP collector unreachable; packets dropped");
                    unlogged = 0;
                }
            }
        }
        if free.send(buf).is_err() {
            return;
        }
    }
}
