//! The thin tokio shell around [`Router`]: it owns the public and relay sockets and
//! the clock, feeds datagrams in, and sends what the router decides.
//!
//! Everything runs on one thread (a current-thread runtime with a `LocalSet`): the
//! router needs no lock, and a datagram is received, routed and sent without a
//! hand-off between threads. One receive buffer serves all sockets, so a flow costs
//! its socket and a small task, not 64 KiB.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::{AbortHandle, LocalSet};

use super::router::{BackendAction, ClientAction, Router, RouterEvent};
use crate::admin::metrics::{MetricsHandles, Status};
use crate::config::Config;

/// Large enough for any UDP datagram (65,507 bytes over IPv4, 65,527 over IPv6).
const BUF_LEN: usize = 65536;
/// Datagrams handled per wake-up before other sockets get a turn.
const BATCH: usize = 64;
const PUBLIC_RCVBUF: usize = 8 << 20;
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("cannot bind SIP socket {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot start the dataplane runtime: {0}")]
    Runtime(io::Error),
}

/// Opens a UDP socket with `IP_FREEBIND`, so it can bind an address (a VIP) that is
/// not on the host yet; traffic flows the moment the address arrives.
pub fn bind_udp(addr: SocketAddr, rcvbuf: Option<usize>) -> io::Result<StdUdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    match addr.ip() {
        IpAddr::V4(_) => s.set_freebind_v4(true)?,
        IpAddr::V6(_) => s.set_freebind_v6(true)?,
    }
    if let Some(n) = rcvbuf {
        // Best effort: capped by net.core.rmem_max.
        let _ = s.set_recv_buffer_size(n);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Binds every `listen.sip` address; done before the dataplane starts so that a
/// bind error stops startup with a clear message.
pub fn bind_public(cfg: &Config) -> Result<Vec<StdUdpSocket>, DataplaneError> {
    cfg.listen
        .sip
        .iter()
        .map(|&addr| {
            bind_udp(addr, Some(PUBLIC_RCVBUF))
                .map_err(|source| DataplaneError::Bind { addr, source })
        })
        .collect()
}

struct RelaySock {
    sock: Rc<UdpSocket>,
    task: AbortHandle,
}

struct Shell {
    router: Router,
    relay_ip: IpAddr,
    port_base: u16,
    public: Vec<Rc<UdpSocket>>,
    relays: Vec<Option<RelaySock>>,
    buf: Box<[u8]>,
}

type Shared = Rc<RefCell<Shell>>;

/// Runs the dataplane on the current thread until `shutdown` turns true.
pub fn run(
    cfg: &Config,
    public: Vec<StdUdpSocket>,
    metrics: MetricsHandles,
    status: Arc<Mutex<Status>>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), DataplaneError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DataplaneError::Runtime)?;
    let local = LocalSet::new();
    local.block_on(&rt, serve(cfg, public, metrics, status, shutdown))
}

async fn serve(
    cfg: &Config,
    public: Vec<StdUdpSocket>,
    metrics: MetricsHandles,
    status: Arc<Mutex<Status>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DataplaneError> {
    let public = public
        .into_iter()
        .zip(&cfg.listen.sip)
        .map(|(s, &addr)| {
            UdpSocket::from_std(s)
                .map(Rc::new)
                .map_err(|source| DataplaneError::Bind { addr, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ports = cfg.listen.relay_ports.clone();
    let shell: Shared = Rc::new(RefCell::new(Shell {
        router: Router::new(cfg),
        relay_ip: cfg.listen.relay,
        port_base: *ports.start(),
        public: public.clone(),
        relays: (0..ports.count()).map(|_| None).collect(),
        buf: vec![0u8; BUF_LEN].into_boxed_slice(),
    }));
    for (i, sock) in public.into_iter().enumerate() {
        tokio::task::spawn_local(public_loop(shell.clone(), i as u16, sock));
    }
    tokio::task::spawn_local(housekeeping(shell.clone(), metrics, status));
    tracing::info!(
        sip = ?cfg.listen.sip,
        relay = %cfg.listen.relay,
        relay_ports = ?cfg.listen.relay_ports,
        backends = cfg.backends.len(),
        "dataplane running"
    );
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    let s = shell.borrow();
    for r in s.relays.iter().flatten() {
        r.task.abort();
    }
    Ok(())
}

async fn public_loop(shell: Shared, ingress: u16, sock: Rc<UdpSocket>) {
    loop {
        if let Err(e) = sock.readable().await {
            tracing::error!(error = %e, "public socket failed");
            return;
        }
        let mut guard = shell.borrow_mut();
        let s = &mut *guard;
        let now = Instant::now();
        for _ in 0..BATCH {
            match sock.try_recv_from(&mut s.buf) {
                Ok((n, from)) => s.on_client(&shell, now, ingress, from, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Errors queued by ICMP for earlier sends; nothing to do for this socket.
                Err(_) => continue,
            }
        }
    }
}

async fn relay_loop(shell: Shared, port: u16, sock: Rc<UdpSocket>) {
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        let mut guard = shell.borrow_mut();
        let s = &mut *guard;
        let now = Instant::now();
        for _ in 0..BATCH {
            match sock.try_recv_from(&mut s.buf) {
                Ok((n, from)) => s.on_backend(now, port, from, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => continue,
            }
        }
    }
}

/// Sends without waiting for tokio's write readiness: a UDP send either fits the
/// socket buffer now or is dropped (and counted), and a just-opened relay socket has
/// no readiness event yet.
fn send_now(sock: &UdpSocket, data: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket2::SockRef::from(sock).send_to(data, &to.into())
}

impl Shell {
    fn on_client(
        &mut self,
        shell: &Shared,
        now: Instant,
        ingress: u16,
        from: SocketAddr,
        n: usize,
    ) {
        let data = &self.buf[..n];
        let ClientAction::Forward {
            flow,
            relay_port,
            to,
            new_flow,
            ..
        } = self.router.from_client(now, from, ingress, data)
        else {
            return;
        };
        let idx = usize::from(relay_port - self.port_base);
        if new_flow {
            match bind_udp(SocketAddr::new(self.relay_ip, relay_port), None)
                .and_then(UdpSocket::from_std)
            {
                Ok(sock) => {
                    let sock = Rc::new(sock);
                    let task = tokio::task::spawn_local(relay_loop(
                        shell.clone(),
                        relay_port,
                        sock.clone(),
                    ))
                    .abort_handle();
                    if let Some(old) = self.relays[idx].replace(RelaySock { sock, task }) {
                        old.task.abort();
                    }
                }
                Err(e) => {
                    tracing::debug!(port = relay_port, error = %e, "relay bind failed");
                    self.router.bind_failed(flow);
                    return;
                }
            }
        }
        let Some(relay) = &self.relays[idx] else {
            self.router.send_failed();
            return;
        };
        if send_now(&relay.sock, &self.buf[..n], to).is_err() {
            self.router.send_failed();
        }
    }

    fn on_backend(&mut self, now: Instant, port: u16, from: SocketAddr, n: usize) {
        let data = &self.buf[..n];
        if let BackendAction::Forward { to, ingress, .. } =
            self.router.from_backend(now, port, from, data)
        {
            let sent = self
                .public
                .get(usize::from(ingress))
                .map(|p| send_now(p, data, to));
            if !matches!(sent, Some(Ok(_))) {
                self.router.send_failed();
            }
        }
    }

    fn close_relay(&mut self, port: u16) {
        let idx = usize::from(port - self.port_base);
        if let Some(r) = self.relays.get_mut(idx).and_then(Option::take) {
            r.task.abort();
        }
    }
}

async fn housekeeping(shell: Shared, mut metrics: MetricsHandles, status: Arc<Mutex<Status>>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut guard = shell.borrow_mut();
        let s = &mut *guard;
        s.router.handle_timeout(now);
        while let Some(ev) = s.router.poll_event() {
            match ev {
                RouterEvent::FlowRemoved { relay_port } => s.close_relay(relay_port),
            }
        }
        let ports_in_use = s.relays.iter().filter(|r| r.is_some()).count();
        metrics.publish(
            s.router.counters(),
            s.router.flow_count(),
            s.router.dialog_count(),
            ports_in_use,
        );
        if let Ok(mut st) = status.lock() {
            st.update(&s.router, ports_in_use);
        }
    }
}
