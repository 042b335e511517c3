//! The capture hook: what the dataplane relays (and, optionally, what it answers itself)
//! goes to the HEP exporter, on the client leg and the backend leg. The router knows
//! nothing of it. HEP only with `[hep]`, allocation-free; live captures
//! (`sipfront ctl capture`) copy what they match, and cost one check when none runs.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use super::Shell;
use crate::capture::sender::Leg;
use crate::capture::{HepDrop, live};
use crate::relay::RelayPort;
use crate::sip::scan::{Scan, scan};

/// Which way a relayed datagram went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Way {
    ToBackend,
    ToClient,
}

impl Shell {
    /// A datagram relayed between `client` (via public socket `ingress`) and `backend`
    /// (via relay endpoint `relay`): exported on both legs, in the order it travelled,
    /// and offered to live captures. Called right after the router's decision on
    /// `data`.
    pub(super) fn tap(
        &mut self,
        way: Way,
        ingress: u16,
        client: SocketAddr,
        relay: RelayPort,
        backend: SocketAddr,
        data: &[u8],
    ) {
        if self.hep.is_none() && self.live.is_empty() {
            return;
        }
        // The router has just scanned `data`: no second scan per captured datagram.
        let call_id = self.router.last_call_id(data);
        let hep_wants = self
            .hep
            .as_ref()
            .is_some_and(|h| h.selector.wants(call_id, client.ip(), backend.ip()));
        if !hep_wants && self.live.is_empty() {
            return;
        }
        let (Some(&public), Some(relay)) = (
            self.cfg.listen.sip.get(usize::from(ingress)),
            self.relay_addrs.socket_addr(relay),
        ) else {
            return;
        };
        let now = SystemTime::now();
        let legs = match way {
            Way::ToBackend => [
                (live::Leg::Client, client, public),
                (live::Leg::Backend, relay, backend),
            ],
            Way::ToClient => [
                (live::Leg::Backend, backend, relay),
                (live::Leg::Client, public, client),
            ],
        };
        if !self.live.is_empty() {
            self.live.offer(
                Instant::now(),
                now,
                client,
                Some(backend),
                call_id,
                &legs,
                data,
            );
        }
        let Some(hep) = self.hep.as_mut().filter(|_| hep_wants) else {
            return;
        };
        let sel = hep.selector.legs;
        for (leg, src, dst) in legs {
            let on = match leg {
                live::Leg::Client => sel.client,
                live::Leg::Backend => sel.backend,
            };
            if on {
                hep.export(
                    now,
                    &Leg {
                        src,
                        dst,
                        call_id,
                        data,
                    },
                );
            }
        }
    }

    /// A reply sipfront sent itself (a stateless 503): client leg only; to HEP with
    /// `include_local`, and to live captures.
    pub(super) fn tap_local(&mut self, ingress: u16, client: SocketAddr, data: &[u8]) {
        let hep_on = self
            .hep
            .as_ref()
            .is_some_and(|h| h.include_local() && h.selector.legs.client);
        if !hep_on && self.live.is_empty() {
            return;
        }
        let Some(&public) = self.cfg.listen.sip.get(usize::from(ingress)) else {
            return;
        };
        let call_id = match scan(data) {
            Scan::Sip(v) => v.call_id,
            _ => &[],
        };
        let now = SystemTime::now();
        if !self.live.is_empty() {
            self.live.offer(
                Instant::now(),
                now,
                client,
                None,
                call_id,
                &[(live::Leg::Client, public, client)],
                data,
            );
        }
        let Some(hep) = self.hep.as_mut().filter(|_| hep_on) else {
            return;
        };
        if !hep.selector.wants(call_id, client.ip(), client.ip()) {
            return;
        }
        hep.export(
            now,
            &Leg {
                src: public,
                dst: client,
                call_id,
                data,
            },
        );
    }

    /// Health probes and their replies, taken from the prober: to HEP on the backend
    /// leg with `include_local` (the prober keeps them only then).
    pub(super) fn tap_probes(&mut self) {
        // More probe datagrams in one turn than the tap holds (junk replies flooding
        // the probe sockets): the oldest went, a HEP drop like a full queue.
        let evicted = self.prober.take_tap_evicted();
        if let Some(hep) = self.hep.as_ref().filter(|_| evicted > 0) {
            hep.count_lost(HepDrop::QueueFull, evicted);
        }
        while let Some(t) = self.prober.poll_tapped() {
            let Some(hep) = self.hep.as_mut() else {
                continue;
            };
            let call_id = match scan(&t.data) {
                Scan::Sip(v) => v.call_id,
                _ => &[],
            };
            let backend = if t.data.starts_with(b"SIP/2.0") {
                t.src
            } else {
                t.dst
            };
            if !hep.selector.wants(call_id, backend.ip(), backend.ip()) {
                continue;
            }
            hep.export(
                SystemTime::now(),
                &Leg {
                    src: t.src,
                    dst: t.dst,
                    call_id,
                    data: &t.data,
                },
            );
        }
    }
}
