//! Wires a validated config into a running proxy: SIP sockets bound first (so bind
//! errors stop startup), then the dataplane thread, then the admin endpoint, then the
//! VRRP speaker on a thread of its own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{oneshot, watch};

use crate::admin::{self, ApiState, Token, conn::ConnLimits};
use crate::config::{Admin, Config};
use crate::dataplane::{self, Control, ControlTx, DataplaneError, Handles, MetricsHandles, Status};
use crate::vrrp::shell::{Tracked, VrrpHandle};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("cannot listen on admin address {addr}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the dataplane thread ended during its setup without an error")]
    DataplaneGone,
    #[error("cannot start the dataplane thread: {0}")]
    Thread(std::io::Error),
    #[error("the dataplane is not running")]
    Stopped,
    #[error(transparent)]
    Vrrp(#[from] crate::vrrp::shell::VrrpError),
    #[error(
        "refused with what a reload keeps (the running [listen], [[peer]], [hep], sync addresses): {0}"
    )]
    Config(#[from] crate::config::ConfigError),
}

pub struct Running {
    pub admin_addr: SocketAddr,
    pub status: Arc<Mutex<Status>>,
    control: ControlTx,
    shutdown: watch::Sender<bool>,
    dataplane: Option<JoinHandle<Result<(), DataplaneError>>>,
    /// Fires when the dataplane thread ends (see [`Running::take_ended`]).
    ended: Option<tokio::sync::oneshot::Receiver<()>>,
    vrrp: Option<VrrpHandle>,
    /// The admin API token, rotated by [`Running::reload`].
    admin_token: Token,
    /// The admin settings the endpoint was started with (listen and limits need a restart).
    admin_cfg: Admin,
    /// The config as started: a reload keeps `[listen]`, `[[peer]]`, `[hep]` and the
    /// sync addresses as they are here, so a reloaded config is checked with them.
    started: Config,
}

/// Resolves when `rx`'s sender is gone (or has sent); never without one.
async fn closed(rx: Option<tokio::sync::oneshot::Receiver<()>>) {
    match rx {
        Some(rx) => {
            let _ = rx.await;
        }
        None => std::future::pending().await,
    }
}

impl Running {
    /// A future that resolves when the dataplane thread or the VRRP speaker has ended
    /// on its own, naming which: that is a fatal error, and the process must exit rather
    /// than answer on its admin endpoint without forwarding, or hold (or wait for) the
    /// addresses without taking part in the election.
    pub fn take_ended(&mut self) -> impl std::future::Future<Output = &'static str> + use<> {
        let dataplane = closed(self.ended.take());
        let vrrp = closed(self.vrrp.as_mut().and_then(VrrpHandle::take_ended));
        async move {
            tokio::select! {
                () = dataplane => "the dataplane",
                () = vrrp => "the VRRP speaker",
            }
        }
    }

    /// Stops the dataplane and waits for its thread.
    pub fn stop(mut self) -> Result<(), DataplaneError> {
        self.halt()
    }

    /// Graceful stop: the VRRP speaker hands the address over first (priority 0,
    /// VIPs removed) while the dataplane still forwards, then the dataplane stops.
    pub async fn shutdown(mut self) -> Result<(), DataplaneError> {
        if let Some(v) = self.vrrp.take() {
            v.stop().await;
        }
        self.halt()
    }

    fn halt(&mut self) -> Result<(), DataplaneError> {
        let _ = self.shutdown.send(true);
        self.control.wake();
        match self.dataplane.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => {
                tracing::error!("dataplane thread panicked");
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Applies a new config (backends, health, timeouts, failback); flows and
    /// dialogs stay. Returns notes on what changed or was kept.
    pub async fn reload(&self, cfg: Config) -> Result<Vec<String>, ServerError> {
        // Checked with what the reload keeps (the running [listen] and the rest) before
        // anything applies: a backend the new file puts outside its own relay prefix can
        // be inside the running one.
        cfg.check_with_kept(&self.started)?;
        let mut notes = self.reload_admin(&cfg.admin);
        let (reply, rx) = oneshot::channel();
        self.control
            .send(Control::Reload {
                config: Box::new(cfg),
                reply,
            })
            .await
            .map_err(|_| ServerError::Stopped)?;
        notes.extend(rx.await.map_err(|_| ServerError::Stopped)?);
        Ok(notes)
    }

    /// The admin part of a reload: the token from the re-read `token_file` applies at once;
    /// an unusable file keeps the running token (loudly). Listen and limits need a restart.
    fn reload_admin(&self, new: &Admin) -> Vec<String> {
        let mut notes = Vec::new();
        match token_reload(self.admin_cfg.listen, new) {
            Err(why) => {
                tracing::warn!(
                    error = %why,
                    "reload: admin token not changed; KEEPING THE PREVIOUS TOKEN"
                );
                notes.push(format!(
                    "admin token not rotated, the previous one stays: {why}"
                ));
            }
            Ok(token) if self.admin_token.set(token) => {
                let what = match token {
                    Some(_) => {
                        "admin token rotated: the new one applies now, the old one is refused"
                    }
                    None => "admin token removed: the API is read-only (changing calls answer 403)",
                };
                tracing::info!("{what}");
                notes.push(what.to_string());
            }
            Ok(_) => {}
        }
        let old = &self.admin_cfg;
        if new.listen != old.listen {
            notes.push(format!(
                "admin.listen changed to {}: restart to apply; still on {}",
                new.listen, old.listen
            ));
        }
        if ConnLimits::from_config(new) != ConnLimits::from_config(old) {
            notes.push(
                "admin.max_connections/header_timeout/idle_timeout changed: restart to apply"
                    .to_string(),
            );
        }
        if new.capture != old.capture {
            notes.push(
                "admin.max_captures/capture_queue/capture_queue_bytes changed: restart to apply"
                    .to_string(),
            );
        }
        notes
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// Starts sipfront for `cfg`. Must be called inside a tokio runtime (for the admin
/// endpoint); the dataplane gets a thread of its own.
pub async fn start(cfg: Config, prom: PrometheusHandle) -> Result<Running, ServerError> {
    let public = dataplane::bind_public(&cfg)?;
    for a in &cfg.listen.sip {
        // Before IPV6_V6ONLY, "[::]" took IPv4 clients as well: say so once at start.
        if a.ip().is_unspecified()
            && a.is_ipv6()
            && !cfg
                .listen
                .sip
                .iter()
                .any(|b| b.is_ipv4() && b.port() == a.port())
        {
            tracing::warn!(listen = %a, "an IPv6 listen address takes IPv6 clients only; add \"0.0.0.0:{}\" to listen.sip for IPv4 ones", a.port());
        }
    }
    let listener = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .map_err(|source| ServerError::Admin {
            addr: cfg.admin.listen,
            source,
        })?;
    let admin_addr = listener.local_addr().map_err(|source| ServerError::Admin {
        addr: cfg.admin.listen,
        source,
    })?;
    let names: Vec<String> = cfg.backends.iter().map(|b| b.name.clone()).collect();
    let status = Arc::new(Mutex::new(Status::new()));
    let peers: Vec<String> = cfg.peers.iter().map(|p| p.name.clone()).collect();
    let metrics = MetricsHandles::register(&names, &peers);
    let (tx, rx) = watch::channel(false);
    let (ctl_tx, ctl_rx) = dataplane::channel(64).map_err(ServerError::Thread)?;
    let dp_status = status.clone();
    let admin_token = Token::new(cfg.admin.token.as_deref());
    let admin_cfg = cfg.admin.clone();
    let started = cfg.clone();
    let vrrp_cfg = cfg.vrrp.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let handle = std::thread::Builder::new()
        .name("sipfront-dataplane".into())
        .spawn(move || {
            let r = dataplane::run(
                cfg,
                public,
                metrics,
                dp_status,
                Handles {
                    shutdown: rx,
                    control: ctl_rx,
                    ready: ready_tx,
                },
            );
            let _ = ended_tx.send(());
            r
        })
        .map_err(ServerError::Thread)?;
    // A setup error (a relay port taken, the sync socket, the prefix route) stops the
    // start here, with the error, instead of leaving a process without a dataplane.
    if ready_rx.await.is_err() {
        return Err(match handle.join() {
            Ok(Err(e)) => ServerError::Dataplane(e),
            Ok(Ok(())) | Err(_) => ServerError::DataplaneGone,
        });
    }
    let state = ApiState {
        prom,
        status: status.clone(),
        control: ctl_tx.clone(),
        token: admin_token.clone(),
        capture: admin_cfg.capture,
        listing: Arc::new(tokio::sync::Semaphore::new(1)),
        refused: Arc::default(),
    };
    let limits = ConnLimits::from_config(&admin_cfg);
    tokio::spawn(async move {
        if let Err(e) = admin::serve(listener, state, limits).await {
            tracing::error!(error = %e, "admin endpoint failed");
        }
    });
    tracing::info!(admin = %admin_addr, "admin endpoint listening");
    let mut running = Running {
        admin_addr,
        status: status.clone(),
        control: ctl_tx,
        shutdown: tx,
        dataplane: Some(handle),
        ended: Some(ended_rx),
        vrrp: None,
        admin_token,
        admin_cfg,
        started,
    };
    match vrrp_cfg {
        // Sockets are already bound (IP_FREEBIND): forwarding works the moment the
        // speaker adds the VIP. The speaker gets a thread of its own.
        Some(v) => {
            // try_lock: the speaker never waits for the dataplane (busy reads are
            // skipped; a long run of them counts as unhealthy).
            let track = Box::new(move |now| match status.try_lock() {
                Ok(s) => Some(Tracked {
                    healthy: s.is_healthy(now),
                    synced: s.synced,
                }),
                Err(std::sync::TryLockError::WouldBlock) => None,
                Err(std::sync::TryLockError::Poisoned(_)) => Some(Tracked {
                    healthy: false,
                    synced: false,
                }),
            });
            running.vrrp = Some(crate::vrrp::shell::start(v, track).await?);
        }
        None => tracing::info!("no [vrrp]: external mode, /ready is the health check"),
    }
    Ok(running)
}

/// The admin token a reload applies, or why the running one stays: the re-read
/// `token_file` is unusable, or the new config has none while the running listener
/// (which only a restart moves) is not on loopback, where a token is required: the
/// config's check saw only the new `admin.listen`.
fn token_reload(running_listen: SocketAddr, new: &Admin) -> Result<Option<&str>, String> {
    if let Some(why) = &new.token_error {
        return Err(why.clone());
    }
    if new.token.is_none() && !running_listen.ip().is_loopback() {
        return Err(format!(
            "admin.token_file is required while the API listens on {running_listen} (a new \
             admin.listen applies after a restart)"
        ));
    }
    Ok(new.token.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EphemeralPorts};

    fn admin(extra: &str) -> Admin {
        let text = format!(
            "[listen]\nsip = [\"192.0.2.10:5060\"]\nrelay_ports = \"20000-20003\"\n\
             [[backend]]\nname = \"a\"\naddr = \"10.0.0.21:5060\"\n[admin]\n{extra}"
        );
        Config::parse(&text, &EphemeralPorts::default())
            .unwrap()
            .admin
    }

    #[test]
    fn a_reload_keeps_the_token_of_a_listener_off_loopback() {
        let public: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        // The new config moves the API to loopback and drops the token: valid as a
        // config, but the running listener stays public until a restart.
        let moved = admin("listen = \"127.0.0.1:9090\"");
        assert!(moved.token.is_none());
        let why = token_reload(public, &moved).unwrap_err();
        assert!(why.contains("0.0.0.0:9090"), "{why}");
        // On loopback already: removing the token is allowed.
        assert_eq!(token_reload(local, &moved), Ok(None));
    }
}
