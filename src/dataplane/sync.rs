//! The state-sync peer link inside the dataplane thread: it sends our table
//! changes, applies the peer's (pre-binding mirrored relay ports), answers full-table
//! requests and heartbeats once a second.

use std::cell::RefCell;
use std::io;
use std::net::UdpSocket as StdUdpSocket;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use tokio::net::UdpSocket;

use super::{Shell, Status};
use crate::config::{Config, SyncConfig};
use crate::sync::link::{Link, backends_hash, full_bodies, item_bodies};
use crate::sync::{Body, Item, Key, SyncDrop};

const FLUSH_EVERY: Duration = Duration::from_millis(20);
const HELLO_EVERY: Duration = Duration::from_secs(1);
/// Datagrams sent per flush (20 ms): a full table of 100k flows takes ~0.35 s and
/// never floods the peer's socket buffer.
const SEND_PER_FLUSH: usize = 256;
const SYNC_RCVBUF: usize = 4 << 20;
const RECV_PER_WAKE: usize = 256;

pub struct Opened {
    sock: UdpSocket,
    link: Link,
}

/// Binds the sync socket; called inside the dataplane runtime.
pub fn open(sc: &SyncConfig, cfg: &Config) -> io::Result<Opened> {
    let std = StdUdpSocket::bind(sc.listen)?;
    std.set_nonblocking(true)?;
    let _ = socket2::SockRef::from(&std).set_recv_buffer_size(SYNC_RCVBUF);
    let names: Vec<&str> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
    // The start time: a restarted host has a larger epoch, so the peer can tell its
    // new messages from replays of the old run.
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    Ok(Opened {
        sock: UdpSocket::from_std(std)?,
        link: Link::new(
            Key::new(sc.key.as_bytes()),
            sc.peer,
            epoch,
            backends_hash(&names),
        ),
    })
}

fn send_all(sock: &UdpSocket, link: &Link, dgrams: Vec<Vec<u8>>) {
    for d in dgrams {
        if sock.try_send_to(&d, link.peer).is_ok() {
            counter!("sipfront_sync_messages_total", "dir" => "sent").increment(1);
        } else {
            counter!("sipfront_sync_dropped_total", "reason" => "send_failed").increment(1);
        }
    }
}

pub(super) async fn run(shell: Rc<RefCell<Shell>>, opened: Opened, status: Arc<Mutex<Status>>) {
    let Opened { sock, mut link } = opened;
    tracing::info!(listen = ?sock.local_addr().ok(), peer = %link.peer, "state sync link up");
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_hello: Option<Instant> = None;
    let mut pending: Vec<Item> = Vec::with_capacity(8192);
    let mut buf = vec![0u8; 65536];
    let mut was_alive = false;
    let mut mismatch_logged = false;
    let mut rejected_seen = 0u64;
    // Everything for the peer goes through one queue, sealed as it leaves, so
    // sequence numbers stay in order and a big full table is paced.
    let mut out: std::collections::VecDeque<Body> = Default::default();
    loop {
        tokio::select! {
            r = sock.readable() => { if r.is_err() { return; } }
            _ = flush.tick() => {}
        }
        let now = Instant::now();
        {
            let mut guard = shell.borrow_mut();
            let s = &mut *guard;
            // Receive (bounded per wake-up: the shell is borrowed, forwarding waits).
            for _ in 0..RECV_PER_WAKE {
                let (n, from) = match sock.try_recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => continue,
                };
                let r = match link.receive(now, from, &buf[..n]) {
                    Ok(r) => r,
                    Err(e) => {
                        counter!("sipfront_sync_dropped_total", "reason" => e.as_str())
                            .increment(1);
                        continue;
                    }
                };
                counter!("sipfront_sync_messages_total", "dir" => "received").increment(1);
                if r.backend_mismatch && !mismatch_logged {
                    mismatch_logged = true;
                    counter!("sipfront_sync_dropped_total", "reason" => SyncDrop::BackendMismatch.as_str())
                    .increment(1);
                    tracing::warn!(peer = %from, "sync peer has a different backend list; flows homed on backends one side lacks are not mirrored");
                } else if !r.backend_mismatch {
                    mismatch_logged = false;
                }
                if r.peer_restarted {
                    let n = s.router.adopt_peer_flows(now);
                    if n > 0 {
                        tracing::warn!(
                            adopted = n,
                            "sync peer restarted; its flows are ours until it has them back"
                        );
                    }
                }
                if r.full_started {
                    s.router.begin_full();
                }
                for item in r.items {
                    let eff = s.router.apply_sync(now, item);
                    for p in eff.close {
                        s.close_relay(p);
                    }
                    if let Some(p) = eff.bind
                        && let Err(e) = s.open_relay(p)
                    {
                        tracing::warn!(addr = p.addr, port = p.port, error = %e, "cannot pre-bind a mirrored relay port");
                    }
                }
                if r.full_done {
                    for p in s.router.end_full() {
                        s.close_relay(p);
                    }
                    gauge!("sipfront_sync_last_full_timestamp_seconds").set(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64()),
                    );
                    tracing::info!(
                        flows = s.router.flow_count(),
                        "full table received from the sync peer"
                    );
                }
                // A peer repeats its request every second until the last chunk arrives:
                // a transfer already under way is not restarted.
                let in_progress = out.iter().any(|b| matches!(b, Body::Full { .. }));
                if r.send_full && !in_progress {
                    let mut all = Vec::new();
                    s.router.sync_full(now, &mut all);
                    // Changes queued so far are part of the full table.
                    pending.clear();
                    s.router.take_sync(&mut pending);
                    pending.clear();
                    out.clear();
                    out.extend(full_bodies(&all));
                }
            }
            // Send our changes.
            let overflow = s.router.take_sync(&mut pending);
            if overflow {
                // Some changes were not queued: the peer gets the whole table instead.
                let mut all = Vec::new();
                s.router.sync_full(now, &mut all);
                out.clear();
                out.extend(full_bodies(&all));
            } else if !pending.is_empty() {
                out.extend(item_bodies(&pending));
            }
            pending.clear();
            let n = out.len().min(SEND_PER_FLUSH);
            let batch: Vec<Vec<u8>> = out.drain(..n).filter_map(|b| link.seal_body(b)).collect();
            send_all(&sock, &link, batch);
            // Heartbeat; peer liveness.
            if last_hello.is_none_or(|t| now.duration_since(t) >= HELLO_EVERY) {
                last_hello = Some(now);
                let names: Vec<&str> = s
                    .router
                    .backends()
                    .iter()
                    .filter(|(_, b)| b.is_configured())
                    .map(|(_, b)| b.name.as_str())
                    .collect();
                link.set_backends_hash(backends_hash(&names));
                if let Some(h) = link.hello(s.router.flow_count(), s.router.dialog_count()) {
                    send_all(&sock, &link, vec![h]);
                }
                gauge!("sipfront_sync_lag").set(link.lag() as f64);
                gauge!("sipfront_sync_peer_flows").set(f64::from(link.peer_flows));
                gauge!("sipfront_sync_peer_dialogs").set(f64::from(link.peer_dialogs));
            }
            let alive = link.alive(now);
            if alive != was_alive {
                was_alive = alive;
                let adopted = s.router.set_peer_alive(now, alive);
                gauge!("sipfront_sync_peer_up").set(if alive { 1.0 } else { 0.0 });
                if alive {
                    tracing::info!(peer = %link.peer, "sync peer up");
                } else {
                    tracing::warn!(peer = %link.peer, adopted, "sync peer silent; its flows are ours now");
                }
            }
            // Peer items that did not fit (a full table, an unknown backend).
            let rejected = s.router.sync_rejected;
            if rejected > rejected_seen {
                counter!("sipfront_sync_items_rejected_total").increment(rejected - rejected_seen);
                rejected_seen = rejected;
            }
            if let Ok(mut st) = status.lock() {
                st.synced = link.synced;
            }
        }
        // A readable socket does not use up tokio's task budget: after a bounded
        // receive, let the other tasks run even if junk keeps arriving.
        tokio::task::yield_now().await;
    }
}
