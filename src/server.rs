//! Wires a validated config into a running proxy: SIP sockets bound first (so bind
//! errors stop startup), then the dataplane thread, then the admin endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::admin::{self, AdminState, MetricsHandles, Status};
use crate::config::Config;
use crate::relay::dataplane::{self, DataplaneError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("cannot listen on admin address {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the dataplane thread: {0}")]
    Thread(std::io::Error),
}

pub struct Running {
    pub admin_addr: SocketAddr,
    pub status: Arc<Mutex<Status>>,
    shutdown: watch::Sender<bool>,
    dataplane: Option<JoinHandle<Result<(), DataplaneError>>>,
}

impl Running {
    /// Stops the dataplane and waits for its thread.
    pub fn stop(mut self) -> Result<(), DataplaneError> {
        self.halt()
    }

    fn halt(&mut self) -> Result<(), DataplaneError> {
        let _ = self.shutdown.send(true);
        match self.dataplane.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => {
                tracing::error!("dataplane thread panicked");
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// True while the dataplane thread runs.
    pub fn is_running(&self) -> bool {
        self.dataplane.as_ref().is_some_and(|h| !h.is_finished())
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
    let status = Arc::new(Mutex::new(Status::new(names.clone())));
    let metrics = MetricsHandles::register(&names);
    let (tx, rx) = watch::channel(false);
    let dp_status = status.clone();
    let handle = std::thread::Builder::new()
        .name("sipfront-dataplane".into())
        .spawn(move || dataplane::run(&cfg, public, metrics, dp_status, rx))
        .map_err(ServerError::Thread)?;
    let ready = Arc::new(AtomicBool::new(true));
    let state = AdminState {
        prom,
        status: status.clone(),
        ready: ready.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = admin::serve(listener, state).await {
            tracing::error!(error = %e, "admin endpoint failed");
        }
    });
    ready.store(true, Ordering::Release);
    tracing::info!(admin = %admin_addr, "admin endpoint listening");
    Ok(Running {
        admin_addr,
        status,
        shutdown: tx,
        dataplane: Some(handle),
    })
}
