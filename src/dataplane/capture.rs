//! The capture hook: what the dataplane relays (and, optionally, what it answers itself)
//! goes to the HEP exporter, on the client leg and the backend leg. The router knows
//! nothing of it. Only with `[hep]`; allocation-free.

use std::net::SocketAddr;
use std::time::SystemTime;

use super::Shell;
use crate::capture::sender::Leg;
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
    /// (via relay endpoint `relay`): exported on both legs, in the order it travelled.
    pub(super) fn tap(
        &mut self,
        way: Way,
        ingress: u16,
        client: SocketAddr,
        relay: RelayPort,
        backend: SocketAddr,
        data: &[u8],
    ) {
        let Some(hep) = self.hep.as_mut() else {
            return;
        };
        let call_id = match scan(data) {
            Scan::Sip(v) => v.call_id,
            _ => &[],
        };
        if !hep.selector.wants(call_id, client.ip(), backend.ip()) {
            return;
        }
        let (Some(&public), Some(relay)) = (
            self.cfg.listen.sip.get(usize::from(ingress)),
            self.relay_addrs.socket_addr(relay),
        ) else {
            return;
        };
        let legs = hep.selector.legs;
        let now = SystemTime::now();
        let client_leg = |src, dst| Leg {
            src,
            dst,
            call_id,
            data,
        };
        match way {
            Way::ToBackend => {
                if legs.client {
                    hep.export(now, &client_leg(client, public));
                }
                if legs.backend {
                    hep.export(now, &client_leg(relay, backend));
                }
            }
            Way::ToClient => {
                if legs.backend {
                    hep.export(now, &client_leg(backend, relay));
                }
                if legs.client {
                    hep.export(now, &client_leg(public, client));
                }
            }
        }
    }

    /// A reply sipfront sent itself (a stateless 503): client leg only, with
    /// `include_local`.
    pub(super) fn tap_local(&mut self, ingress: u16, client: SocketAddr, data: &[u8]) {
        let Some(hep) = self.hep.as_mut() else {
            return;
        };
        if !hep.include_local() || !hep.selector.legs.client {
            return;
        }
        let call_id = match scan(data) {
            Scan::Sip(v) => v.call_id,
            _ => &[],
        };
        if !hep.selector.wants(call_id, client.ip(), client.ip()) {
            return;
        }
        let Some(&public) = self.cfg.listen.sip.get(usize::from(ingress)) else {
            return;
        };
        hep.export(
            SystemTime::now(),
            &Leg {
                src: public,
                dst: client,
                call_id,
                data,
            },
        );
    }
}
