//! The admin HTTP endpoint: `/metrics` (Prometheus), `/live`, `/ready` and a JSON API.
//! Changing calls need `Authorization: Bearer <token>` when `admin.token_file` is set
//! (it must be, unless the endpoint listens on loopback only).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router as HttpRouter;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::dataplane::{BackendInfo, Control, FlowInfo, Readiness, Status};
use crate::relay::AdminState as BackendAdmin;

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
    pub control: mpsc::Sender<Control>,
    pub token: Option<Arc<str>>,
}

pub fn routes(state: AdminState) -> HttpRouter {
    HttpRouter::new()
        .route("/metrics", get(metrics_text))
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/api/v1/status", get(status))
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/backends/{name}/{action}", post(backend_action))
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

fn snapshot(s: &AdminState) -> Option<Status> {
    s.status.lock().ok().map(|g| g.clone())
}

/// Ready: the dataplane is alive (status fresh) and at least one backend takes
/// traffic. keepalived's `track_script` and load balancers use this.
async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    let now = std::time::Instant::now();
    let readiness = s
        .status
        .lock()
        .map_or(Readiness::Stalled, |st| st.readiness(now));
    match readiness {
        Readiness::Ready => (StatusCode::OK, "ready\n"),
        Readiness::NoBackend => (StatusCode::SERVICE_UNAVAILABLE, "no backend up\n"),
        Readiness::Stalled => (StatusCode::SERVICE_UNAVAILABLE, "dataplane not running\n"),
    }
}

#[derive(Serialize)]
struct StatusBody {
    ready: bool,
    flows: usize,
    dialogs: usize,
    relay_ports_in_use: usize,
    flows_created: u64,
    replies_503: u64,
    drops: std::collections::BTreeMap<&'static str, u64>,
    backends: Vec<BackendInfo>,
}

async fn status(State(s): State<AdminState>) -> Response {
    let Some(st) = snapshot(&s) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "status unavailable");
    };
    let drops = crate::relay::DropReason::ALL
        .iter()
        .map(|r| (r.as_str(), st.counters.dropped(*r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    axum::Json(StatusBody {
        ready: st.ready,
        flows: st.flows,
        dialogs: st.dialogs,
        relay_ports_in_use: st.ports_in_use,
        flows_created: st.counters.flows_created,
        replies_503: st.counters.replies_503,
        drops,
        backends: st.backends,
    })
    .into_response()
}

#[derive(Deserialize)]
struct FlowQuery {
    client: Option<SocketAddr>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct FlowsBody {
    total: usize,
    flows: Vec<FlowInfo>,
}

async fn flows(State(s): State<AdminState>, Query(q): Query<FlowQuery>) -> Response {
    let (reply, rx) = oneshot::channel();
    let msg = Control::Flows {
        client: q.client,
        limit: q.limit.unwrap_or(1000),
        reply,
    };
    if s.control.send(msg).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "dataplane not running");
    }
    match rx.await {
        Ok((total, flows)) => axum::Json(FlowsBody { total, flows }).into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "dataplane not running"),
    }
}

fn error(code: StatusCode, msg: &str) -> Response {
    (code, axum::Json(serde_json::json!({ "error": msg }))).into_response()
}

/// Constant-time comparison, so response timing does not leak the token.
fn token_ok(expected: &str, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (expected.as_bytes(), given.trim().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn backend_action(
    State(s): State<AdminState>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match &s.token {
        Some(t) if token_ok(t, &headers) => {}
        Some(_) => {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(serde_json::json!({ "error": "missing or wrong bearer token" })),
            )
                .into_response();
        }
        // No token: config validation allowed that only on a loopback listener,
        // which is as trusted as a local control socket.
        None => {}
    }
    let state = match action.as_str() {
        "drain" => BackendAdmin::Draining,
        "enable" => BackendAdmin::Enabled,
        "disable" => BackendAdmin::Disabled,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown action (use drain, enable or disable)",
            );
        }
    };
    let (reply, rx) = oneshot::channel();
    let msg = Control::SetAdmin {
        backend: name.clone(),
        state,
        reply,
    };
    if s.control.send(msg).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "dataplane not running");
    }
    match rx.await {
        Ok(true) => axum::Json(serde_json::json!({ "backend": name, "admin": state.as_str() }))
            .into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("no backend named `{name}`")),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "dataplane not running"),
    }
}
