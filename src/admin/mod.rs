//! The admin HTTP endpoint: `/metrics` (Prometheus), `/live`, `/ready` and a JSON API.

pub mod metrics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router as HttpRouter;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

pub use metrics::{MetricsHandles, Status};

use crate::relay::Direction;

/// Installs the process-wide Prometheus recorder. Call once, before registering handles.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| e.to_string())
}

#[derive(Clone)]
pub struct AdminState {
    pub prom: PrometheusHandle,
    pub status: Arc<Mutex<Status>>,
    /// Set once the SIP sockets are bound and the dataplane runs.
    pub ready: Arc<AtomicBool>,
}

pub fn routes(state: AdminState) -> HttpRouter {
    HttpRouter::new()
        .route("/metrics", get(metrics_text))
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/api/v1/status", get(status))
        .with_state(state)
}

/// Serves the admin API until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) -> std::io::Result<()> {
    axum::serve(listener, routes(state)).await
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    s.prom.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.prom.render(),
    )
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[derive(Serialize)]
struct BackendStatus {
    name: String,
    datagrams_to_backend: u64,
    datagrams_to_client: u64,
}

#[derive(Serialize)]
struct StatusBody {
    flows: usize,
    dialogs: usize,
    relay_ports_in_use: usize,
    flows_created: u64,
    backends: Vec<BackendStatus>,
}

async fn status(State(s): State<AdminState>) -> impl IntoResponse {
    let st = match s.status.lock() {
        Ok(g) => g.clone(),
        Err(_) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "status lock poisoned").into_response();
        }
    };
    let backends = st
        .backend_names
        .iter()
        .zip(&st.counters.backends)
        .map(|(name, c)| BackendStatus {
            name: name.clone(),
            datagrams_to_backend: c.datagrams[Direction::ToBackend as usize],
            datagrams_to_client: c.datagrams[Direction::ToClient as usize],
        })
        .collect();
    axum::Json(StatusBody {
        flows: st.flows,
        dialogs: st.dialogs,
        relay_ports_in_use: st.ports_in_use,
        flows_created: st.counters.flows_created,
        backends,
    })
    .into_response()
}
