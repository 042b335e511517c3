//! Requests from other threads (admin API, SIGHUP) into the dataplane thread. They
//! arrive on a channel and are applied between datagrams, so the router is never
//! shared or locked.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::Shell;
use crate::config::Config;
use crate::relay::AdminState;

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
    Flows {
        client: Option<SocketAddr>,
        limit: usize,
        reply: oneshot::Sender<(usize, Vec<FlowInfo>)>,
    },
}

pub(super) async fn serve(shell: Rc<RefCell<Shell>>, mut rx: mpsc::Receiver<Control>) {
    while let Some(msg) = rx.recv().await {
        let mut s = shell.borrow_mut();
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
            Control::Flows {
                client,
                limit,
                reply,
            } => {
                let now = Instant::now();
                let r = &s.router;
                let total = r.flow_count();
                let list = r
                    .flows()
                    .filter(|f| client.is_none_or(|c| c == f.client))
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
                let _ = reply.send((total, list));
            }
        }
    }
}
