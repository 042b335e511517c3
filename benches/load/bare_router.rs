//! The bare forwarder's loop (bare.rs: epoll, one datagram per `recv`/`send`) deciding
//! each datagram with sipfront's own [`Router`] (scan, flow and dialog tables, limiters,
//! counters): sipfront's protocol logic without its dataplane shell (batched receives
//! and sends, timers, sweeps, health probes, metrics publishing, the other threads).
//! Between `bare-scan` and `sipfront`, it tells which side of that line a cost is on.
//!
//! As in sipfront's port mode, a flow's relay socket is opened when the router says
//! `new_flow` (here on an ephemeral port, unconnected: the router names the backend of
//! every datagram) and replies on it are decided by `from_backend`. Not done: the
//! router's timers (sweeps, expiry, table growth; nothing expires in a bench run), a
//! 503 for `Reject503` (backends are never probed, so never down), `bind_failed` (a
//! socket that cannot be opened ends the forwarder, seen as failed calls).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use sipfront::config::{Config, EphemeralPorts};
use sipfront::relay::router::RouterConfig;
use sipfront::relay::{BackendAction, ClientAction, RelayPort, Router};

use crate::bare;

/// `listen,upstream1,upstream2,...`
pub const ENV: &str = "SIPFRONT_BARE_ROUTER_FORWARDER";

const CLIENT_KEY: u64 = u64::MAX;

/// Runs the forwarder described by `spec` until killed.
pub fn run(spec: &str) -> ! {
    bare::serve(ENV, "bare router forwarder", spec, forward)
}

/// A router with the load bench's sipfront config, whose backends must be `backends`.
fn router(backends: &[SocketAddr]) -> io::Result<Router> {
    let toml = crate::proxies::sipfront_toml(&crate::PORTS);
    let cfg = Config::parse(&toml, &EphemeralPorts::default())
        .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e.to_string()))?;
    let named: Vec<SocketAddr> = cfg.backends.iter().map(|b| b.addr).collect();
    if named != backends {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("the router's backends {named:?} are not the forwarder's {backends:?}"),
        ));
    }
    Ok(Router::new(
        RouterConfig::new(&cfg, None),
        &cfg.backends,
        Instant::now(),
    ))
}

fn forward(listen: SocketAddr, backends: &[SocketAddr]) -> io::Result<Infallible> {
    let mut router = router(backends)?;
    let client = UdpSocket::bind(listen)?;
    let ep = bare::epoll()?;
    bare::watch(ep, &client, CLIENT_KEY)?;
    let mut relays: HashMap<RelayPort, usize> = HashMap::new();
    let mut sockets: Vec<(UdpSocket, RelayPort)> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    loop {
        let ready = bare::wait(ep, &mut events)?;
        // One clock read per wake-up, as sipfront's loop does.
        let now = Instant::now();
        for ev in ready {
            let key = ev.u64;
            if key == CLIENT_KEY {
                bare::drain(&client, &mut buf, |data, from| {
                    let ClientAction::Forward { relay_port, to, .. } =
                        router.from_client(now, from, 0, data)
                    else {
                        return Ok(());
                    };
                    let idx = match relays.get(&relay_port) {
                        Some(&i) => i,
                        None => {
                            let s = UdpSocket::bind("127.0.0.1:0")?;
                            bare::watch(ep, &s, sockets.len() as u64)?;
                            sockets.push((s, relay_port));
                            relays.insert(relay_port, sockets.len() - 1);
                            sockets.len() - 1
                        }
                    };
                    let _ = sockets[idx].0.send_to(data, to);
                    Ok(())
                })?;
            } else {
                let (s, relay_port) = &sockets[key as usize];
                bare::drain(s, &mut buf, |data, src| {
                    if let BackendAction::Forward { to, .. } =
                        router.from_backend(now, *relay_port, src, data)
                    {
                        let _ = client.send_to(data, to);
                    }
                    Ok(())
                })?;
            }
        }
    }
}
