//! The admin HTTP endpoint: `/metrics` (Prometheus), `/live`, `/ready` and a JSON API.
//!
//! - `/metrics`, `/live`, `/ready` are open: Prometheus and keepalived need them.
//! - With a token (`admin.token_file`, required unless the endpoint listens on loopback),
//!   every `/api/v1/*` call needs `Authorization: Bearer <token>`, reads too: the flow
//!   list maps clients to relay ports.
//! - Without a token the API is read-only: changing calls answer 403, so a browser page
//!   (CSRF) or another local user cannot drain a backend; and it answers only requests
//!   whose Host names the loopback, so a page cannot read it by DNS rebinding.
//!
//! `/api/v1/capture` streams a live capture (see [`crate::capture::live`]): a chunked body
//! of frames, bounded in time and frames, at most a few at once (429 beyond).
//!
//! The token is shared with the SIGHUP reload ([`Token`]): a new one applies at once.
//! Connections are capped and timed out ([`conn`]).

mod bans;
pub mod conn;
pub mod refused;

use refused::Refusal;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router as HttpRouter;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::dataplane::{BackendInfo, Control, FlowInfo, PeerInfo, Readiness, Status};
use crate::relay::AdminState as BackendAdmin;

/// Installs the process-wide Prometheus recorder. Call once, before registering handles.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// The API token, shared between the endpoint and the reload that rotates it.
#[derive(Clone, Default)]
pub struct Token(Arc<RwLock<Option<Arc<str>>>>);

impl Token {
    pub fn new(token: Option<&str>) -> Token {
        Token(Arc::new(RwLock::new(token.map(Arc::from))))
    }

    pub fn get(&self) -> Option<Arc<str>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the token; true when it changed.
    pub fn set(&self, token: Option<&str>) -> bool {
        let mut t = self.0.write().unwrap_or_else(|e| e.into_inner());
        if t.as_deref() == token {
            return false;
        }
        *t = token.map(Arc::from);
        true
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub prom: PrometheusHandle,
    pub status: Arc<Mutex<Status>>,
    pub control: crate::dataplane::ControlTx,
    pub token: Token,
    /// `admin.max_captures` and the captures' queue bounds.
    pub capture: crate::config::CaptureLimits,
    /// One listing (flows, top) at a time: each is built on the dataplane thread.
    pub listing: Arc<tokio::sync::Semaphore>,
    pub refused: Arc<refused::Refusals>,
}

pub fn routes(state: ApiState) -> HttpRouter {
    let api = HttpRouter::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/peers", get(peers))
        .route("/api/v1/capture", get(capture))
        .route("/api/v1/backends/{name}/{action}", post(backend_action))
        .route("/api/v1/bans", get(bans::list).post(bans::add))
        .route("/api/v1/bans/{*cidr}", delete(bans::remove))
        .route("/api/v1/top", get(bans::top))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    HttpRouter::new()
        .route("/metrics", get(metrics_text))
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .merge(api)
        .with_state(state)
}

/// Serves the admin API until the listener fails, with `limits` on its connections.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    limits: conn::ConnLimits,
) -> std::io::Result<()> {
    conn::serve(listener, routes(state), limits).await
}

/// The API's access rule (see the module docs).
async fn authorize(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let changing = !matches!(*req.method(), Method::GET | Method::HEAD);
    match s.token.get() {
        Some(t) if token_ok(&t, req.headers()) => next.run(req).await,
        Some(_) => {
            s.refused.note(Refusal::Token);
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(serde_json::json!({ "error": "missing or wrong bearer token" })),
            )
                .into_response()
        }
        None if from_a_web_page(req.headers()) => refuse(
            &s,
            Refusal::WebPage,
            StatusCode::FORBIDDEN,
            "without admin.token_file the API does not answer web pages (the request \
             carries Origin or Sec-Fetch-Site): a page could start captures and listings \
             it cannot even read",
        ),
        None if !host_is_loopback(req.headers()) => refuse(
            &s,
            Refusal::Host,
            StatusCode::FORBIDDEN,
            "without admin.token_file the API answers only requests addressed to the \
             loopback by name or address (Host: localhost, 127.0.0.1, [::1]); set a token \
             to reach it by another name",
        ),
        None if changing => refuse(
            &s,
            Refusal::ReadOnly,
            StatusCode::FORBIDDEN,
            "the admin API is read-only: no admin.token_file is configured; set one \
             (and run `sipfront ctl -c CONFIG`, which reads it) to drain, enable or \
             disable backends",
        ),
        None => next.run(req).await,
    }
}

async fn metrics_text(State(s): State<ApiState>) -> impl IntoResponse {
    s.prom.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.prom.render(),
    )
}

fn snapshot(s: &ApiState) -> Option<Status> {
    s.status.lock().ok().map(|g| g.clone())
}

/// Ready: the dataplane is alive (status fresh) and at least one backend takes
/// traffic. keepalived's `track_script` and load balancers use this.
async fn ready(State(s): State<ApiState>) -> impl IntoResponse {
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

async fn status(State(s): State<ApiState>) -> Response {
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

#[derive(Serialize)]
struct PeersBody {
    peers: Vec<PeerInfo>,
}

async fn peers(State(s): State<ApiState>) -> Response {
    match s.status.lock() {
        Ok(st) => axum::Json(PeersBody {
            peers: st.peers.clone(),
        })
        .into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "status unavailable"),
    }
}

/// Flows one `/api/v1/flows` answer lists at most (`total` still counts them all):
/// the dataplane builds the list a part at a time, but the answer is held here
/// whole (100,000 rows: ~20 MB of JSON).
const MAX_FLOWS_LISTED: usize = 100_000;

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

async fn flows(State(s): State<ApiState>, Query(q): Query<FlowQuery>) -> Response {
    // Held until the answer is back: listings reach the dataplane one by one.
    let Ok(_one) = s.listing.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "dataplane not running");
    };
    let limit = q.limit.unwrap_or(1000).min(MAX_FLOWS_LISTED);
    let mut body = FlowsBody {
        total: 0,
        flows: Vec::new(),
    };
    // Part by part, each one request: the dataplane forwards between them. A flow
    // made or removed meanwhile may be listed or not, as in any walk of a live table.
    let mut from = 0;
    loop {
        let (reply, rx) = oneshot::channel();
        let msg = Control::Flows {
            client: q.client,
            from,
            limit: limit - body.flows.len(),
            reply,
        };
        if s.control.send(msg).await.is_err() {
            return error(StatusCode::SERVICE_UNAVAILABLE, "dataplane not running");
        }
        let Ok(part) = rx.await else {
            return error(StatusCode::SERVICE_UNAVAILABLE, "dataplane not running");
        };
        body.total = part.total;
        body.flows.extend(part.flows);
        match part.next {
            Some(next) if body.flows.len() < limit => from = next,
            _ => break,
        }
    }
    axum::Json(body).into_response()
}

/// A refused request: counted by `why`, answered `code` with `msg`.
fn refuse(s: &ApiState, why: Refusal, code: StatusCode, msg: &str) -> Response {
    s.refused.note(why);
    error(code, msg)
}

pub(crate) fn error(code: StatusCode, msg: &str) -> Response {
    (code, axum::Json(serde_json::json!({ "error": msg }))).into_response()
}

/// Whether `Authorization: Bearer <token>` names `expected` (the scheme in any case,
/// RFC 7235). The two are compared as SHA-256 digests in constant time, so response
/// timing leaks neither the token's bytes nor its length.
fn token_ok(expected: &str, headers: &HeaderMap) -> bool {
    use sha2::{Digest, Sha256};
    let Some((scheme, given)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
    else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (a, b) = (
        Sha256::digest(expected.as_bytes()),
        Sha256::digest(given.trim().as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A browser sent it on a web page's behalf: it says where from (`Origin`), or that it
/// was not typed by the user (`Sec-Fetch-Site` other than `none`). ctl, curl and
/// Prometheus send neither.
fn from_a_web_page(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN)
        || headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() != b"none")
}

/// The request names a loopback host (or none: not a browser). Without a token this is
/// what keeps a web page out: a name the page's site controls can be made to resolve to
/// 127.0.0.1 (DNS rebinding), but the browser still sends that name as the Host.
fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(ip, _)| ip),
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Changes a backend's admin state; [`authorize`] has checked the token.
async fn backend_action(
    State(s): State<ApiState>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
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

#[derive(Deserialize)]
struct CaptureQuery {
    client: Option<String>,
    call_id: Option<String>,
    backend: Option<String>,
    seconds: Option<u64>,
    max: Option<u64>,
}

/// A live capture: registers a subscription with the dataplane and streams its frames,
/// a heartbeat each second, and a last note; ends at the time or frame bound, or when
/// the client goes away (the body is dropped, which closes the subscription's queue).
async fn capture(State(s): State<ApiState>, Query(q): Query<CaptureQuery>) -> Response {
    use crate::capture::live::{self, Filter, Refused, Subscription};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    let mut filter = Filter::default();
    if let Some(c) = q.client.as_deref().filter(|c| !c.is_empty()) {
        let Some((ip, port)) = Filter::parse_client(c) else {
            return error(StatusCode::BAD_REQUEST, "client: expected IP or IP:PORT");
        };
        filter.client_ip = Some(ip);
        filter.client_port = port;
    }
    filter.call_id = q
        .call_id
        .filter(|c| !c.is_empty())
        .map(|c| c.into_bytes().into_boxed_slice());
    let backend = q.backend.filter(|b| !b.is_empty());
    if filter.is_empty() && backend.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "give client, call_id or backend (a capture of everything is what [hep] is for)",
        );
    }
    let seconds = q.seconds.unwrap_or(live::DEFAULT_SECONDS);
    if seconds == 0 || seconds > live::MAX_SECONDS {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("seconds: 1 to {}", live::MAX_SECONDS),
        );
    }
    let max = q.max.unwrap_or(live::DEFAULT_MAX);
    if max == 0 || max > live::MAX_MAX {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("max: 1 to {}", live::MAX_MAX),
        );
    }
    let until = std::time::Instant::now() + Duration::from_secs(seconds);
    let (tx, rx) = mpsc::channel(s.capture.frames);
    let dropped = Arc::new(AtomicU64::new(0));
    let queued = Arc::new(AtomicUsize::new(0));
    let (reply, answer) = oneshot::channel();
    let msg = Control::Capture {
        sub: Subscription {
            filter,
            until,
            remaining: max,
            tx,
            queued: queued.clone(),
            dropped: dropped.clone(),
            max_bytes: s.capture.bytes,
        },
        backend,
        reply,
    };
    if s.control.send(msg).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "dataplane not running");
    }
    match answer.await {
        Ok(Ok(())) => {}
        Ok(Err(Refused::Busy)) => {
            return refuse(
                &s,
                Refusal::CapturesBusy,
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "{} captures are running already (admin.max_captures); try again later",
                    s.capture.sessions
                ),
            );
        }
        Ok(Err(Refused::NoBackend(n))) => {
            return error(StatusCode::NOT_FOUND, &format!("no backend named `{n}`"));
        }
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "dataplane not running"),
    }
    struct St {
        rx: mpsc::Receiver<Vec<u8>>,
        tick: tokio::time::Interval,
        until: tokio::time::Instant,
        frames: u64,
        max: u64,
        queued: Arc<AtomicUsize>,
        dropped: Arc<AtomicU64>,
    }
    impl St {
        fn end(&self, why: &str) -> Vec<u8> {
            live::note(&format!(
                "capture ended ({why}): {} datagrams, {} dropped",
                self.frames,
                self.dropped.load(Ordering::Relaxed)
            ))
        }
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let st = St {
        rx,
        tick,
        until: tokio::time::Instant::from_std(until),
        frames: 0,
        max,
        queued,
        dropped,
    };
    let body = futures_util::stream::unfold(Some(st), |st| async move {
        let mut st = st?;
        let chunk = tokio::select! {
            biased;
            f = st.rx.recv() => match f {
                Some(f) => {
                    st.frames += 1;
                    st.queued.fetch_sub(f.len(), Ordering::Relaxed);
                    f
                }
                None => {
                    // The dataplane let go: at `max`, at the time limit (its clock
                    // can be ahead of this task's timer), or it stopped.
                    let why = if st.frames >= st.max {
                        "max reached"
                    } else if tokio::time::Instant::now() >= st.until {
                        "time limit"
                    } else {
                        "closed"
                    };
                    let last = st.end(why);
                    return Some((Ok::<_, std::convert::Infallible>(last), None));
                }
            },
            () = tokio::time::sleep_until(st.until) => {
                let last = st.end("time limit");
                return Some((Ok(last), None));
            }
            _ = st.tick.tick() => live::HEARTBEAT.to_vec(),
        };
        Some((Ok(chunk), Some(st)))
    });
    (
        [
            (header::CONTENT_TYPE, "application/vnd.sipfront.capture"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, h.parse().unwrap());
        m
    }

    fn with_auth(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::AUTHORIZATION, v.parse().unwrap());
        m
    }

    #[test]
    fn token_check_takes_the_exact_token_under_any_case_of_the_scheme() {
        let t = "the-admin-token-0123456789";
        for ok in [
            "Bearer the-admin-token-0123456789",
            "bearer the-admin-token-0123456789",
            "BEARER the-admin-token-0123456789 ",
        ] {
            assert!(token_ok(t, &with_auth(ok)), "{ok}");
        }
        for bad in [
            // Same length, last byte off.
            "Bearer the-admin-token-0123456788",
            "Bearer the-admin-token-012345678",
            "Bearer the-admin-token-01234567890",
            "Basic the-admin-token-0123456789",
            "Bearer",
            "Bearerthe-admin-token-0123456789",
        ] {
            assert!(!token_ok(t, &with_auth(bad)), "{bad}");
        }
        assert!(!token_ok(t, &HeaderMap::new()));
    }

    #[test]
    fn requests_from_web_pages_are_told_apart() {
        let mut h = HeaderMap::new();
        assert!(!from_a_web_page(&h), "curl, ctl");
        h.insert("sec-fetch-site", "none".parse().unwrap());
        assert!(!from_a_web_page(&h), "typed into the address bar");
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(from_a_web_page(&h));
        let mut o = HeaderMap::new();
        o.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(from_a_web_page(&o));
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "LocalHost:9090",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:9090",
            "[::1]",
        ] {
            assert!(host_is_loopback(&with_host(h)), "{h}");
        }
        for h in [
            "rebind.example",
            "localhost.rebind.example:9090",
            "127.0.0.1.rebind.example",
            "192.0.2.1:9090",
            "[2001:db8::1]:9090",
            "[::1",
            "::1",
            "",
        ] {
            assert!(!host_is_loopback(&with_host(h)), "{h}");
        }
        assert!(
            host_is_loopback(&HeaderMap::new()),
            "no Host: not a browser"
        );
    }
}
