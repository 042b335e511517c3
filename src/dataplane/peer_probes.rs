//! OPTIONS probes of static peers (`[[peer]] probe = true`): sent from the peer's
//! public SIP address, answered to it. The health checker is the backends' one; only
//! the transport differs (the public socket, not a probe socket per backend).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use metrics::{Gauge, Histogram, gauge, histogram};

use super::Shell;
use crate::config::Config;
use crate::health::checker::{Checker, Event, ProbeSettings};
use crate::relay::PeerId;
use crate::sip::probe::ProbeIds;
use crate::sys::mmsg::send_direct;

/// One probed peer: where probes go and come from, and its metric handles.
struct Probed {
    name: String,
    addr: SocketAddr,
    ingress: u16,
    up: Gauge,
    rtt: Histogram,
    state: Option<bool>,
    last_rtt: Option<Duration>,
}

pub(super) struct PeerProbes {
    /// Slot `i` is `probed[i]` (only peers with `probe = true` have one).
    checker: Checker<PeerId>,
    probed: Vec<Probed>,
    ids: ProbeIds,
    /// `sfp-NONCE-`: a reply's Call-ID starts with it (a cheap filter before parsing).
    marker: Vec<u8>,
}

impl PeerProbes {
    pub(super) fn new(cfg: &Config, nonce: u64, now: Instant) -> Option<PeerProbes> {
        let probed: Vec<Probed> = cfg
            .peers
            .iter()
            .filter(|p| p.probe)
            .map(|p| {
                let addr = p.addrs[0];
                let ingress = cfg
                    .listen
                    .sip
                    .iter()
                    .position(|s| s.is_ipv4() == addr.is_ipv4())
                    .unwrap_or(0) as u16;
                Probed {
                    name: p.name.clone(),
                    addr,
                    ingress,
                    up: gauge!("sipfront_peer_up", "peer" => p.name.clone()),
                    rtt: histogram!("sipfront_peer_probe_rtt_seconds", "peer" => p.name.clone()),
                    state: None,
                    last_rtt: None,
                }
            })
            .collect();
        if probed.is_empty() {
            return None;
        }
        let ids = ProbeIds::new(nonce);
        Some(PeerProbes {
            checker: Checker::new(ProbeSettings::from(&cfg.health), probed.len(), now),
            marker: ids.call_id_prefix().into_bytes(),
            ids,
            probed,
        })
    }

    /// A reply to one of our probes from the peer it went to: consumed here, never
    /// relayed to a backend.
    pub(super) fn handle_reply(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        // Cheapest first: only a response from a probed peer can be a reply.
        if !self.probed.iter().any(|p| p.addr == from)
            || !data.starts_with(b"SIP/2.0 ")
            || !data.windows(self.marker.len()).any(|w| w == self.marker)
        {
            return false;
        }
        if let Some((i, seq, code)) = self.ids.parse_reply(data)
            && self.probed.get(i).is_some_and(|p| p.addr == from)
            && let Some(rtt) = self.checker.handle_reply(now, PeerId(i as u16), seq, code)
        {
            self.probed[i].rtt.record(rtt.as_secs_f64());
            self.probed[i].last_rtt = Some(rtt);
        }
        true
    }

    /// `[health]` reloaded.
    pub(super) fn set_settings(&mut self, s: ProbeSettings, now: Instant) {
        self.checker.set_settings(s, now);
    }

    /// `(up, last RTT)` of each peer by name, for the status snapshot.
    pub(super) fn state(&self, name: &str) -> Option<(Option<bool>, Option<Duration>)> {
        self.probed
            .iter()
            .find(|p| p.name == name)
            .map(|p| (p.state, p.last_rtt))
    }
}

impl Shell {
    /// Sends due peer probes and applies verdicts; returns when to come back.
    pub(super) fn peer_probe_tick(&mut self, now: Instant) -> Option<Instant> {
        let pp = self.peer_probes.as_mut()?;
        pp.checker.handle_timeout(now);
        while let Some(tx) = pp.checker.poll_transmit() {
            let Some(p) = pp.probed.get(usize::from(tx.backend.0)) else {
                continue;
            };
            let local = self.cfg.listen.sip[usize::from(p.ingress)];
            let msg = pp
                .ids
                .build(usize::from(tx.backend.0), tx.seq, p.addr, local);
            if let Some(sock) = self.public.get(usize::from(p.ingress)) {
                // A lost probe is a failed probe: the timeout counts it.
                let _ = send_direct(sock.as_raw_fd(), &msg, p.addr, None);
            }
        }
        while let Some(ev) = pp.checker.poll_event() {
            let (id, up, reason) = match ev {
                Event::Up { backend, reason } => (backend, true, reason),
                Event::Down { backend, reason } => (backend, false, reason),
            };
            if let Some(p) = pp.probed.get_mut(usize::from(id.0)) {
                p.up.set(if up { 1.0 } else { 0.0 });
                p.state = Some(up);
                if up {
                    tracing::info!(peer = %p.name, addr = %p.addr, "peer up");
                } else {
                    tracing::warn!(peer = %p.name, addr = %p.addr, reason = reason.as_str(), "peer down");
                }
            }
        }
        pp.checker.poll_timeout()
    }
}
