//! Requests from other threads (admin API, SIGHUP) into the dataplane thread. They
//! arrive on a channel whose sender also writes the dataplane's wake-up eventfd, and
//! are applied between datagrams, so the router is never shared or locked.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc::error::{SendError, TryRecvError};
use tokio::sync::{mpsc, oneshot};

use super::Shell;
use crate::capture::live::{Refused, Subscription};
use crate::config::{Cidr, Config};
use crate::relay::AdminState;
use crate::relay::top::source_name;
use crate::sys::wake::Wake;

/// One flow, as `/api/v1/flows` and `sipfront ctl flows` show it.
#[derive(Debug, Clone, Serialize)]
pub struct FlowInfo {
    pub client: SocketAddr,
    /// The flow's relay endpoint: where backends reach the client.
    pub relay: SocketAddr,
    pub relay_port: u16,
    pub backend: String,
    pub idle_secs: f64,
    /// Seconds until the registration (plus grace) ends, if registered.
    pub registered_secs: Option<f64>,
    pub age_secs: f64,
}

/// A part of the flows listing.
#[derive(Debug)]
pub struct FlowsPart {
    /// Flows held now.
    pub total: usize,
    pub flows: Vec<FlowInfo>,
    /// Where the next part starts, if the table goes on.
    pub next: Option<usize>,
}

/// Flows one part of a listing lists at most, and table slots it looks at at most:
/// each part is built on the dataplane thread between two turns of forwarding (a
/// listing of 100,000 flows in one go held it for tens of ms).
pub const LIST_PART_ROWS: usize = 1024;
pub const LIST_PART_SLOTS: usize = 16_384;

pub enum Control {
    SetAdmin {
        backend: String,
        state: AdminState,
        reply: oneshot::Sender<bool>,
    },
    Reload {
        config: Box<Config>,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// A part of the flows listing: up to `limit` flows from slot `from` on, at most
    /// [`LIST_PART_ROWS`] of them from [`LIST_PART_SLOTS`] slots (or `client`'s flow).
    Flows {
        client: Option<SocketAddr>,
        from: usize,
        limit: usize,
        reply: oneshot::Sender<FlowsPart>,
    },
    /// Starts a live capture; `backend` (a name) narrows `sub.filter` to its address.
    Capture {
        sub: Subscription,
        backend: Option<String>,
        reply: oneshot::Sender<Result<(), Refused>>,
    },
    /// Refuse a prefix for a while (`Err`: the ban table is full).
    Ban {
        cidr: Cidr,
        duration: Duration,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Lift a ban; false if there was none.
    Unban {
        cidr: Cidr,
        reply: oneshot::Sender<bool>,
    },
    Bans {
        reply: oneshot::Sender<Vec<BanInfo>>,
    },
    /// The top sources by drops and by flows.
    Top {
        limit: usize,
        reply: oneshot::Sender<TopInfo>,
    },
}

/// One ban, as `/api/v1/bans` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BanInfo {
    pub cidr: Cidr,
    pub remaining_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopDrops {
    /// An IPv4 address or an IPv6 /64.
    pub source: String,
    /// Datagrams dropped (over-estimated by at most `error`).
    pub drops: u64,
    pub error: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopFlows {
    pub source: String,
    pub flows: u32,
}

/// `/api/v1/top`: the heaviest sources, by drops since start (a 64-slot
/// space-saving sketch) and by flows held now (exact).
#[derive(Debug, Clone, Serialize)]
pub struct TopInfo {
    pub by_drops: Vec<TopDrops>,
    pub by_flows: Vec<TopFlows>,
}

/// The sending side of the control channel: each request also wakes the dataplane
/// thread out of `epoll_wait`.
#[derive(Clone)]
pub struct ControlTx {
    tx: mpsc::Sender<Control>,
    wake: Arc<Wake>,
}

impl ControlTx {
    pub async fn send(&self, msg: Control) -> Result<(), SendError<Control>> {
        self.tx.send(msg).await?;
        self.wake.wake();
        Ok(())
    }

    /// Wakes the dataplane without a request (shutdown: it checks its watch then).
    pub fn wake(&self) {
        self.wake.wake();
    }
}

/// The dataplane's end: requests and the eventfd that says some may be waiting.
pub struct ControlRx {
    pub(super) rx: mpsc::Receiver<Control>,
    pub(super) wake: Arc<Wake>,
}

/// A control channel of `capacity` requests.
pub fn channel(capacity: usize) -> io::Result<(ControlTx, ControlRx)> {
    let wake = Arc::new(Wake::new()?);
    let (tx, rx) = mpsc::channel(capacity);
    Ok((
        ControlTx {
            tx,
            wake: wake.clone(),
        },
        ControlRx { rx, wake },
    ))
}

/// Requests applied per wake at most: the rest wait for the next turn of the loop,
/// so a burst of them (a flows listing takes milliseconds) never holds forwarding for
/// all of them at once.
const SERVE_PER_WAKE: usize = 4;

/// Applies waiting requests, at most [`SERVE_PER_WAKE`]; false once every sender is
/// gone.
pub(super) fn serve(s: &mut Shell, rx: &mut ControlRx) -> bool {
    rx.wake.clear();
    for _ in 0..SERVE_PER_WAKE {
        match rx.rx.try_recv() {
            Ok(msg) => s.control(msg),
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
    // More may wait: the next turn comes back for them.
    rx.wake.wake();
    true
}

impl Shell {
    fn control(&mut self, msg: Control) {
        let s = self;
        match msg {
            Control::SetAdmin {
                backend,
                state,
                reply,
            } => {
                let ok = s.router.set_admin(&backend, state);
                if ok {
                    tracing::info!(backend = %backend, state = state.as_str(), reason = "admin", "backend admin state changed");
                    s.metrics.transition(&backend, state.as_str(), "admin");
                }
                let _ = reply.send(ok);
            }
            Control::Reload { config, reply } => {
                let notes = s.reload(*config);
                let _ = reply.send(notes);
            }
            // Its asker gave up (a closed connection): the listing is not built.
            Control::Flows { reply, .. } if reply.is_closed() => {}
            Control::Top { reply, .. } if reply.is_closed() => {}
            Control::Flows {
                client,
                from,
                limit,
                reply,
            } => {
                let now = Instant::now();
                let r = &s.router;
                let total = r.flow_count();
                let limit = limit.min(LIST_PART_ROWS);
                let (rows, next) = match client {
                    // One client: its flow from the index, not a walk of the table.
                    // (A static peer's other addresses find its flow too: not listed.)
                    Some(c) => (
                        r.flow_of(&c)
                            .filter(|f| f.client == c)
                            .into_iter()
                            .collect(),
                        None,
                    ),
                    None => r.flows_part(from, limit, LIST_PART_SLOTS),
                };
                let list = rows
                    .into_iter()
                    .take(limit)
                    .map(|f| FlowInfo {
                        client: f.client,
                        relay: s
                            .relay_addrs
                            .socket_addr(f.relay_port)
                            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                        relay_port: f.relay_port.port,
                        backend: r
                            .backends()
                            .get(f.home)
                            .map_or_else(String::new, |b| b.name.clone()),
                        idle_secs: now.saturating_duration_since(f.last_seen).as_secs_f64(),
                        registered_secs: f
                            .registered_until
                            .map(|t| t.saturating_duration_since(now).as_secs_f64()),
                        age_secs: now.saturating_duration_since(f.created).as_secs_f64(),
                    })
                    .collect();
                let _ = reply.send(FlowsPart {
                    total,
                    flows: list,
                    next,
                });
            }
            Control::Ban {
                cidr,
                duration,
                reply,
            } => {
                let r = s.router.ban(cidr, duration, Instant::now());
                match &r {
                    Ok(()) => tracing::info!(cidr = %cidr, seconds = duration.as_secs(), "banned"),
                    Err(e) => tracing::warn!(cidr = %cidr, error = %e, "ban refused"),
                }
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            Control::Unban { cidr, reply } => {
                let ok = s.router.unban(&cidr);
                if ok {
                    tracing::info!(cidr = %cidr, "ban lifted");
                }
                let _ = reply.send(ok);
            }
            Control::Bans { reply } => {
                let list = s
                    .router
                    .bans(Instant::now())
                    .into_iter()
                    .map(|(cidr, left)| BanInfo {
                        cidr,
                        remaining_secs: left.as_secs_f64(),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Control::Top { limit, reply } => {
                let r = &s.router;
                let info = TopInfo {
                    by_drops: r
                        .top_drops(limit)
                        .into_iter()
                        .map(|e| TopDrops {
                            source: source_name(e.source),
                            drops: e.count,
                            error: e.error,
                        })
                        .collect(),
                    by_flows: r
                        .top_flows(limit)
                        .into_iter()
                        .map(|(k, n)| TopFlows {
                            source: source_name(k),
                            flows: n,
                        })
                        .collect(),
                };
                let _ = reply.send(info);
            }
            Control::Capture {
                mut sub,
                backend,
                reply,
            } => {
                let r = match backend {
                    Some(name) => match s.router.backends().by_name(&name) {
                        Some(id) => {
                            sub.filter.backend = s.router.backends().get(id).map(|b| b.addr);
                            Ok(())
                        }
                        None => Err(Refused::NoBackend(name)),
                    },
                    None => Ok(()),
                };
                let r = r.and_then(|()| s.live.add(sub, Instant::now()));
                let _ = reply.send(r);
            }
        }
    }
}
