//! The admin endpoint's accept loop: a cap on open connections, a header-read timeout and
//! an idle timeout, so a slowloris or a connection flood neither keeps `/ready` from
//! answering nor takes the file descriptors the relay sockets need.
//!
//! - At most `max_connections` are open. A new one beyond the cap closes the open
//!   connection that is not serving a request (waiting for its header, or idle keep-alive)
//!   and was opened first; when every open connection is serving a request, the new one is
//!   closed at once. Half-open connections therefore cannot lock out `/ready`.
//! - `header_timeout`: from connect, or from the first byte after an idle keep-alive
//!   period, to the complete request header.
//! - `idle_timeout`: a keep-alive connection without a request, or a request during which
//!   no byte moves (body upload, a client that does not read the response).
//!
//! Each closing is counted in `sipfront_admin_rejected_total{reason}` (`evicted`,
//! `max_connections`, `header_timeout`, `idle_timeout`) and logged, at most one line per
//! [`LOG_EVERY`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::throttle::LogThrottle;

/// At most one log line about closed admin connections per this period.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Connection limits of the admin endpoint (`[admin]` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl ConnLimits {
    pub fn from_config(a: &crate::config::Admin) -> ConnLimits {
        ConnLimits {
            max_connections: a.max_connections,
            header_timeout: a.header_timeout,
            idle_timeout: a.idle_timeout,
        }
    }
}

/// Why the endpoint closed or refused a connection (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// An idle or header-waiting connection closed to make room for a new one.
    Evicted,
    /// A new connection closed at once: every open one was serving a request.
    MaxConnections,
    HeaderTimeout,
    IdleTimeout,
}

impl Closed {
    const ALL: [Closed; 4] = [
        Closed::Evicted,
        Closed::MaxConnections,
        Closed::HeaderTimeout,
        Closed::IdleTimeout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Closed::Evicted => "evicted",
            Closed::MaxConnections => "max_connections",
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
        }
    }
}

/// One open connection's state, updated by its I/O and its requests.
struct Conn {
    opened: Instant,
    /// Requests being served (service called, response body not yet finished).
    inflight: AtomicUsize,
    /// True from connect, and from the first byte after an idle period, until a request
    /// header is complete: the header timeout runs.
    waiting_head: AtomicBool,
    /// Milliseconds after `opened`: when the current header wait or idle period began.
    phase_start: AtomicU64,
    /// Milliseconds after `opened`: the last read or write that moved bytes.
    last_io: AtomicU64,
    kill: Notify,
    /// The connection began waiting for a request head (the first byte of the next
    /// request on a keep-alive connection): its deadline is the header timeout now,
    /// sooner than the idle one its task sleeps on.
    head_started: Notify,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            opened: Instant::now(),
            inflight: AtomicUsize::new(0),
            waiting_head: AtomicBool::new(true),
            phase_start: AtomicU64::new(0),
            last_io: AtomicU64::new(0),
            kill: Notify::new(),
            head_started: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    fn on_read(&self) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if self.inflight.load(Ordering::Acquire) == 0 && !self.waiting_head.load(Ordering::Acquire)
        {
            // The first byte of the next request on a keep-alive connection.
            self.phase_start.store(now, Ordering::Relaxed);
            self.waiting_head.store(true, Ordering::Release);
            self.head_started.notify_one();
        }
    }

    fn on_write(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    fn begin_request(self: &Arc<Conn>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.waiting_head.store(false, Ordering::Release);
        InFlight(self.clone())
    }

    /// Not serving a request: may be closed to make room.
    fn evictable(&self) -> bool {
        self.inflight.load(Ordering::Acquire) == 0
    }

    /// When this connection times out, and why.
    fn deadline(&self, l: &ConnLimits) -> (Instant, Closed) {
        if self.inflight.load(Ordering::Acquire) > 0 {
            let last = self.last_io.load(Ordering::Relaxed);
            (self.at(last) + l.idle_timeout, Closed::IdleTimeout)
        } else if self.waiting_head.load(Ordering::Acquire) {
            let start = self.phase_start.load(Ordering::Relaxed);
            (self.at(start) + l.header_timeout, Closed::HeaderTimeout)
        } else {
            let start = self.phase_start.load(Ordering::Relaxed);
            (self.at(start) + l.idle_timeout, Closed::IdleTimeout)
        }
    }
}

/// A request being served; dropped with its response body, which starts the idle period.
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let c = &self.0;
        c.phase_start.store(c.now_ms(), Ordering::Relaxed);
        c.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's [`InFlight`] until it is sent (or dropped).
struct Guarded {
    inner: Body,
    _request: InFlight,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The TCP stream with every byte that moves recorded in its [`Conn`].
struct Tracked {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.on_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.on_write();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.conn.on_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct Table {
    next_id: u64,
    open: BTreeMap<u64, Arc<Conn>>,
}

/// Counters and the rate-limited log line.
struct Report {
    counters: [metrics::Counter; 4],
    open: metrics::Gauge,
    /// Closings since the last log line.
    pending: Mutex<crate::throttle::ReasonTally<4>>,
}

impl Report {
    fn new() -> Report {
        Report {
            counters: Closed::ALL.map(
                |r| metrics::counter!("sipfront_admin_rejected_total", "reason" => r.as_str()),
            ),
            open: metrics::gauge!("sipfront_admin_connections"),
            pending: Mutex::new(crate::throttle::ReasonTally::new(
                Closed::ALL.map(Closed::as_str),
                LOG_EVERY,
            )),
        }
    }

    fn closed(&self, why: Closed, limits: &ConnLimits) {
        let i = Closed::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.counters[i].increment(1);
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        let Some(counts) = p.note(i, Instant::now().into_std()) else {
            return;
        };
        tracing::warn!(
            closed = %counts,
            max_connections = limits.max_connections,
            "admin endpoint closed connections (slow or too many clients?); \
             next report in {}s at the earliest",
            LOG_EVERY.as_secs()
        );
    }
}

struct Shared {
    limits: ConnLimits,
    table: Mutex<Table>,
    report: Report,
}

impl Shared {
    /// Admits a new connection: makes room by closing the oldest connection not serving a
    /// request, or refuses (None) when all are.
    fn admit(&self) -> Option<(u64, Arc<Conn>)> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if t.open.len() >= self.limits.max_connections {
            let victim = t
                .open
                .iter()
                .find(|(_, c)| c.evictable())
                .map(|(id, _)| *id);
            match victim.and_then(|id| t.open.remove(&id)) {
                Some(c) => {
                    c.kill.notify_one();
                    self.report.closed(Closed::Evicted, &self.limits);
                }
                None => {
                    drop(t);
                    self.report.closed(Closed::MaxConnections, &self.limits);
                    return None;
                }
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        let c = Arc::new(Conn::new());
        t.open.insert(id, c.clone());
        self.report.open.set(t.open.len() as f64);
        Some((id, c))
    }

    fn remove(&self, id: u64) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        t.open.remove(&id);
        self.report.open.set(t.open.len() as f64);
    }
}

/// Accepts and serves admin connections until the listener fails for good.
pub async fn serve(listener: TcpListener, router: Router, limits: ConnLimits) -> io::Result<()> {
    let shared = Arc::new(Shared {
        limits,
        table: Mutex::new(Table::default()),
        report: Report::new(),
    });
    let mut accept_failed = LogThrottle::new(LOG_EVERY);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE/ENFILE and the like: the connection waits in the backlog; do not spin.
                if let Some(suppressed) = accept_failed.allow(Instant::now().into_std()) {
                    tracing::warn!(error = %e, suppressed, "admin endpoint: accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some((id, conn)) = shared.admit() else {
            // Closed at once: dropping the stream sends FIN.
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_one(stream, id, conn, router.clone(), shared.clone()));
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_one(
    stream: TcpStream,
    id: u64,
    conn: Arc<Conn>,
    router: Router,
    shared: Arc<Shared>,
) {
    let svc_conn = conn.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        let request = svc_conn.begin_request();
        async move {
            let resp = match router.oneshot(req.map(Body::new)).await {
                Ok(r) => r,
                Err(e) => match e {},
            };
            Ok::<_, Infallible>(resp.map(|b| {
                Body::new(Guarded {
                    inner: b,
                    _request: request,
                })
            }))
        }
    });
    let io = TokioIo::new(Tracked {
        inner: stream,
        conn: conn.clone(),
    });
    let served = hyper::server::conn::http1::Builder::new()
        // Our own header timeout (below) also covers a connection that sends nothing.
        .header_read_timeout(None)
        .max_buf_size(64 * 1024)
        .serve_connection(io, svc);
    tokio::pin!(served);
    let limits = shared.limits;
    loop {
        let (deadline, why) = conn.deadline(&limits);
        tokio::select! {
            r = &mut served => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "admin connection ended");
                }
                break;
            }
            // Evicted: already counted and out of the table.
            () = conn.kill.notified() => return,
            // A sooner deadline: computed again at the top.
            () = conn.head_started.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                // Progress may have moved the deadline while we slept.
                let (deadline, why2) = conn.deadline(&limits);
                if deadline <= Instant::now() && why2 == why {
                    shared.report.closed(why, &limits);
                    break;
                }
            }
        }
    }
    shared.remove(id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(max: usize, header_ms: u64, idle_ms: u64) -> std::net::SocketAddr {
        let router = Router::new()
            .route("/ok", get(|| async { "ok\n" }))
            .route("/hang", get(std::future::pending::<&'static str>));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ConnLimits {
            max_connections: max,
            header_timeout: Duration::from_millis(header_ms),
            idle_timeout: Duration::from_millis(idle_ms),
        };
        tokio::spawn(serve(listener, router, limits));
        addr
    }

    async fn connect(addr: std::net::SocketAddr, send: &str) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(send.as_bytes()).await.unwrap();
        s
    }

    /// True when the server closes `s` within `d` (whatever it sent before).
    async fn closed_within(s: &mut TcpStream, d: Duration) -> bool {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(d, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    async fn response(s: &mut TcpStream) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("a response within 2 s")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    const FULL: &str = "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n";
    const HALF: &str = "GET /ok HTTP/1.1\r\nHost: x\r\n";

    #[tokio::test]
    async fn a_new_connection_evicts_the_oldest_idle_one() {
        let addr = start(2, 5000, 5000).await;
        let mut first = connect(addr, HALF).await;
        let mut second = connect(addr, HALF).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = connect(addr, FULL).await;
        assert!(response(&mut third).await.starts_with("HTTP/1.1 200"));
        assert!(closed_within(&mut first, Duration::from_secs(1)).await);
        assert!(!closed_within(&mut second, Duration::from_millis(200)).await);
    }

    #[tokio::test]
    async fn when_all_are_busy_a_new_connection_is_closed_at_once() {
        let addr = start(2, 5000, 5000).await;
        let mut busy1 = connect(addr, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut busy2 = connect(addr, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = connect(addr, FULL).await;
        assert!(closed_within(&mut third, Duration::from_secs(1)).await);
        assert!(!closed_within(&mut busy1, Duration::from_millis(100)).await);
        assert!(!closed_within(&mut busy2, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn header_timeout_closes_silent_and_trickling_connections() {
        let addr = start(8, 300, 5000).await;
        let t0 = Instant::now();
        let mut silent = connect(addr, "").await;
        let mut half = connect(addr, HALF).await;
        let mut trickle = connect(addr, "GET /ok HTTP/1.1\r\n").await;
        // Bytes that keep coming do not extend the header deadline.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = trickle.write_all(b"X-A: b\r\n").await;
        }
        assert!(closed_within(&mut silent, Duration::from_secs(1)).await);
        assert!(closed_within(&mut half, Duration::from_secs(1)).await);
        assert!(closed_within(&mut trickle, Duration::from_secs(1)).await);
        assert!(
            t0.elapsed() >= Duration::from_millis(290),
            "{:?}",
            t0.elapsed()
        );
    }

    #[tokio::test]
    async fn the_next_request_on_a_keepalive_connection_gets_the_header_timeout() {
        let addr = start(8, 200, 3000).await;
        let mut s = connect(addr, FULL).await;
        assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A head that never ends: closed after the header timeout, not the idle one.
        let started = Instant::now();
        s.write_all(b"GET /ok HTTP/1.1\r\n").await.unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(1)).await);
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn idle_keepalive_lasts_the_idle_timeout_not_the_header_timeout() {
        let addr = start(8, 200, 800).await;
        let mut s = connect(addr, FULL).await;
        assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
        let idle = Instant::now();
        assert!(!closed_within(&mut s, Duration::from_millis(400)).await);
        // A second request on the same connection, then idle again until closed.
        s.write_all(FULL.as_bytes()).await.unwrap();
        assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
        assert!(closed_within(&mut s, Duration::from_secs(2)).await);
        assert!(
            idle.elapsed() >= Duration::from_millis(1100),
            "{:?}",
            idle.elapsed()
        );
    }
}
