//! Table-driven tests of the routing decision, with virtual time.

mod admission;
mod held_bucket;
mod lifetime;
mod peers;
mod prepared;
mod source_limits;
mod split_brain;
mod standby_dialogs;

use super::*;
use crate::config::{Config, EphemeralPorts};
use crate::relay::Item;
use crate::relay::port::RelayPort;

const A: &str = "10.0.0.21:5060";
const B: &str = "10.0.0.22:5060";

fn config(extra: &str) -> Config {
    let text = format!(
        r#"
[listen]
sip = ["192.0.2.10:5060"]
relay = "10.0.0.10"
relay_ports = "20000-20003"

[[backend]]
name = "a"
addr = "{A}"

[[backend]]
name = "b"
addr = "{B}"

[timeouts]
flow_idle = "30s"
register_grace = "10s"
dialog_idle = "600s"
transaction = "32s"
{extra}
"#
    );
    parse(&text)
}

/// `text` as a config, with the kernel's default ephemeral range.
fn parse(text: &str) -> Config {
    Config::parse(text, &EphemeralPorts::default()).unwrap()
}

/// A router built from `cfg`.
fn router(cfg: &Config) -> Router {
    Router::new(RouterConfig::new(cfg, None), &cfg.backends, Instant::now())
}

/// A router with a sync peer: both ends of a pair share the dialog keys.
fn synced(cfg: &Config) -> Router {
    let rc = RouterConfig {
        sync_queue: Some(crate::config::DEFAULT_SYNC_TURN_CHANGES),
        ..RouterConfig::new(cfg, Some([1, 2]))
    };
    Router::new(rc, &cfg.backends, Instant::now())
}

fn req(method: &str, call_id: &str) -> Vec<u8> {
    format!(
        "{method} sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@y>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn resp(code: u16, call_id: &str, method: &str, extra: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@y>;tag=1\r\nTo: <sip:x@y>;tag=2\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The other of the two test backends.
fn other_of(id: BackendId) -> BackendId {
    BackendId::new(1 - id.index() as u16)
}

fn addr_of(id: BackendId) -> SocketAddr {
    sa(if id == BackendId::new(0) { A } else { B })
}

/// Sends from a client; returns (relay_port, backend) of the forward.
fn client(r: &mut Router, now: Instant, from: &str, msg: &[u8]) -> (RelayPort, BackendId) {
    match r.from_client(now, sa(from), 0, msg) {
        ClientAction::Forward {
            relay_port,
            backend,
            to,
            ..
        } => {
            assert_eq!(to, addr_of(backend));
            (relay_port, backend)
        }
        other => panic!("expected forward, got {other:?}"),
    }
}

#[test]
fn new_client_gets_a_flow_and_keeps_its_home() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    let first = r.from_client(t0, sa("198.51.100.7:40000"), 0, &req("REGISTER", "r1"));
    let ClientAction::Forward {
        relay_port,
        backend,
        new_flow: true,
        ..
    } = first
    else {
        panic!("{first:?}")
    };
    for i in 0..10 {
        let (p, b) = client(
            &mut r,
            t0,
            "198.51.100.7:40000",
            &req("OPTIONS", &format!("o{i}")),
        );
        assert_eq!((p, b), (relay_port, backend));
    }
    assert_eq!(r.flow_count(), 1);
    assert_eq!(r.counters().flows_created, 1);
}

#[test]
fn a_backend_request_pins_the_dialog_to_that_backend() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    let phone = "198.51.100.7:40000";
    let (port, home) = client(&mut r, t0, phone, &req("REGISTER", "reg"));
    let other = other_of(home);
    // The other backend sends an INVITE to the phone through the phone's relay port.
    let a = r.from_backend(t0, port, addr_of(other), &req("INVITE", "call-1"));
    assert_eq!(
        a,
        BackendAction::Forward {
            to: sa(phone),
            ingress: 0,
            backend: other
        }
    );
    // The phone's answers and its in-dialog requests go to the INVITE's sender.
    for msg in [
        resp(180, "call-1", "INVITE", ""),
        resp(200, "call-1", "INVITE", ""),
        req("ACK", "call-1"),
        req("BYE", "call-1"),
    ] {
        assert_eq!(client(&mut r, t0, phone, &msg), (port, other));
    }
    // Anything else still goes home.
    assert_eq!(
        client(&mut r, t0, phone, &req("OPTIONS", "x")),
        (port, home)
    );
}

#[test]
fn drops_are_counted_by_reason() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    let (port, _) = client(&mut r, t0, "198.51.100.7:1", &req("REGISTER", "r"));
    let cases: Vec<(ClientOrBackend, Vec<u8>, DropReason)> = vec![
        (
            Cl,
            b"\x16\x03\x01\x00\xa5binary".to_vec(),
            DropReason::NotSip,
        ),
        (
            Cl,
            b"INVITE sip:x SIP/2.0\r\nCall-ID: x\r\n".to_vec(),
            DropReason::Truncated,
        ),
        (
            Cl,
            b"INVITE sip:x SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n".to_vec(),
            DropReason::MissingCallId,
        ),
        (
            Bk("10.9.9.9:5060"),
            req("INVITE", "c"),
            DropReason::UnknownSource,
        ),
        (Bk(A), b"garbage garbage".to_vec(), DropReason::NotSip),
    ];
    for (from, msg, reason) in cases {
        let got = match from {
            Cl => match r.from_client(t0, sa("198.51.100.7:1"), 0, &msg) {
                ClientAction::Drop(d) => d,
                o => panic!("{o:?}"),
            },
            Bk(src) => match r.from_backend(t0, port, sa(src), &msg) {
                BackendAction::Drop(d) => d,
                o => panic!("{o:?}"),
            },
        };
        assert_eq!(got, reason);
        assert!(r.counters().dropped(reason) >= 1);
    }
    assert!(matches!(
        r.from_backend(t0, RelayPort::first(20003), sa(A), &req("INVITE", "c")),
        BackendAction::Drop(DropReason::NoFlow)
    ));
}

enum ClientOrBackend {
    Cl,
    Bk(&'static str),
}
use ClientOrBackend::*;

#[test]
fn keepalives_refresh_but_never_create_flows() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    assert_eq!(
        r.from_client(t0, sa("198.51.100.9:9"), 0, b"\r\n\r\n"),
        ClientAction::Absorbed
    );
    assert_eq!(r.flow_count(), 0);
    let (port, b) = client(&mut r, t0, "198.51.100.9:9", &req("OPTIONS", "o"));
    // Before a backend deals with it, keepalives do not hold the flow (see
    // `keepalives_do_not_hold_a_flow_no_backend_answered`); a backend's own request
    // (a qualify OPTIONS) does.
    r.from_backend(t0, port, addr_of(b), &req("OPTIONS", "q"));
    // Keepalives every 20 s keep a 30 s idle flow alive for two minutes.
    for s in (20..=120).step_by(20) {
        let now = t0 + Duration::from_secs(s);
        assert_eq!(
            r.from_client(now, sa("198.51.100.9:9"), 0, b"\r\n"),
            ClientAction::Absorbed
        );
        r.handle_timeout(now);
    }
    assert_eq!(r.flow_count(), 1);
    // A backend's NAT ping reaches the phone.
    assert!(matches!(
        r.from_backend(t0, port, sa(A), b"\r\n\r\n"),
        BackendAction::Forward { .. }
    ));
    assert_eq!(r.counters().keepalives, crate::relay::PerDirection([7, 1]));
}

#[test]
fn keepalives_do_not_hold_a_flow_no_backend_answered() {
    let t0 = Instant::now();
    let mut r = router(&config("unanswered_idle = \"5s\"\n"));
    client(&mut r, t0, "198.51.100.9:9", &req("INVITE", "x"));
    for s in 1..=8 {
        let now = t0 + Duration::from_secs(s);
        r.from_client(now, sa("198.51.100.9:9"), 0, b"\r\n");
        r.handle_timeout(now);
    }
    assert_eq!(
        r.flow_count(),
        0,
        "gone after unanswered_idle despite keepalives"
    );
}

#[test]
fn a_source_holds_at_most_max_flows_per_ip_and_an_ipv6_64_is_one_source() {
    let t0 = Instant::now();
    let mut r = router(&config("[limits]\nmax_flows_per_ip = 2\n"));
    client(&mut r, t0, "198.51.100.1:1", &req("REGISTER", "a"));
    client(&mut r, t0, "198.51.100.1:2", &req("REGISTER", "b"));
    assert_eq!(
        r.from_client(t0, sa("198.51.100.1:3"), 0, &req("REGISTER", "c")),
        ClientAction::Drop(DropReason::SourceFlowLimit)
    );
    client(&mut r, t0, "198.51.100.2:1", &req("REGISTER", "d"));
    // One flow expires (never answered): room for one more.
    r.handle_timeout(t0 + Duration::from_secs(40));
    client(
        &mut r,
        t0 + Duration::from_secs(40),
        "198.51.100.1:3",
        &req("REGISTER", "c"),
    );
    let mut r = router(&config("[limits]\nmax_flows_per_ip = 1\n"));
    client(&mut r, t0, "[2001:db8:1:2::1]:5060", &req("REGISTER", "a"));
    assert_eq!(
        r.from_client(t0, sa("[2001:db8:1:2::99]:5060"), 0, &req("REGISTER", "b")),
        ClientAction::Drop(DropReason::SourceFlowLimit)
    );
    client(&mut r, t0, "[2001:db8:1:3::1]:5060", &req("REGISTER", "c"));
}

#[test]
fn a_source_over_its_datagram_rate_is_dropped_and_others_are_not() {
    let t0 = Instant::now();
    let mut r = router(&config(
        "[limits]\ndatagrams_per_ip = 10\ndatagrams_burst = 20\n",
    ));
    let sent = (0..50)
        .filter(|i| {
            matches!(
                r.from_client(
                    t0,
                    sa("198.51.100.1:1"),
                    0,
                    &req("OPTIONS", &format!("o{i}"))
                ),
                ClientAction::Forward { .. }
            )
        })
        .count();
    assert_eq!(sent, 20);
    assert_eq!(r.counters().dropped(DropReason::SourceRateLimited), 30);
    client(&mut r, t0, "198.51.100.2:1", &req("OPTIONS", "other"));
    client(
        &mut r,
        t0 + Duration::from_millis(100),
        "198.51.100.1:1",
        &req("OPTIONS", "later"),
    );
}

#[test]
fn a_granted_registration_is_capped() {
    let t0 = Instant::now();
    let mut r = router(&config("max_registration = \"60s\"\n"));
    let (p, h) = client(&mut r, t0, "198.51.100.1:1", &req("REGISTER", "r"));
    r.from_backend(
        t0,
        p,
        addr_of(h),
        &resp(200, "r", "REGISTER", "Expires: 86400\r\n"),
    );
    // 60 s cap + 10 s grace, not a day.
    r.handle_timeout(t0 + Duration::from_secs(69));
    assert_eq!(r.flow_count(), 1);
    r.handle_timeout(t0 + Duration::from_secs(71));
    assert_eq!(r.flow_count(), 0);
}

#[test]
fn registration_keeps_a_flow_past_idle_and_expiry_frees_the_port() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    let (p1, h1) = client(&mut r, t0, "198.51.100.1:1", &req("REGISTER", "r1"));
    let (p2, _) = client(&mut r, t0, "198.51.100.2:2", &req("OPTIONS", "o2"));
    let ok = resp(
        200,
        "r1",
        "REGISTER",
        "Contact: <sip:u@198.51.100.1:1>;expires=120\r\n",
    );
    assert!(matches!(
        r.from_backend(t0, p1, addr_of(h1), &ok),
        BackendAction::Forward { .. }
    ));
    let t = t0 + Duration::from_secs(31);
    r.handle_timeout(t);
    assert_eq!(
        r.poll_event(),
        Some(RouterEvent::FlowRemoved { relay_port: p2 })
    );
    assert_eq!(r.poll_event(), None);
    assert_eq!(r.flow_count(), 1, "registered flow outlives idle");
    // 120 s granted + 10 s grace.
    r.handle_timeout(t0 + Duration::from_secs(129));
    assert_eq!(r.flow_count(), 1);
    r.handle_timeout(t0 + Duration::from_secs(131));
    assert_eq!(
        r.poll_event(),
        Some(RouterEvent::FlowRemoved { relay_port: p1 })
    );
    assert_eq!(r.counters().flows_expired, 2);
    // Un-REGISTER (expires=0) returns a flow to idle expiry.
    let t = t0 + Duration::from_secs(200);
    let (p3, h3) = client(&mut r, t, "198.51.100.3:3", &req("REGISTER", "r3"));
    let ok = resp(200, "r3", "REGISTER", "Expires: 3600\r\n");
    r.from_backend(t, p3, addr_of(h3), &ok);
    let bye = resp(200, "r3", "REGISTER", "Expires: 0\r\n");
    r.from_backend(t, p3, addr_of(h3), &bye);
    r.handle_timeout(t + Duration::from_secs(31));
    assert_eq!(r.flow_count(), 0);
}

/// A flow whose endpoint cannot be opened again (another process took the port) goes,
/// so its client's next datagram gets another endpoint: kept, every datagram of the
/// client would refresh a flow nothing can be sent from.
#[test]
fn a_flow_whose_endpoint_is_lost_goes_and_its_client_gets_another() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    let phone = "198.51.100.1:1";
    let (p1, _) = client(&mut r, t0, phone, &req("REGISTER", "r1"));
    let ClientAction::Forward { flow, .. } =
        r.from_client(t0, sa(phone), 0, &req("REGISTER", "r2"))
    else {
        panic!("forwarded");
    };
    r.relay_lost(flow, t0);
    assert!(r.flow_of(&sa(phone)).is_none());
    assert_eq!(r.counters().dropped(DropReason::BindFailed), 1);
    let (p2, _) = client(&mut r, t0, phone, &req("REGISTER", "r3"));
    assert_ne!(p2, p1, "another endpoint");
}

#[test]
fn a_full_flow_table_refuses_new_clients_and_keeps_old_ones() {
    let t0 = Instant::now();
    let mut r = router(&config("[limits]\nmax_flows = 2\n"));
    let (p, h) = client(&mut r, t0, "198.51.100.1:1", &req("REGISTER", "r"));
    client(&mut r, t0, "198.51.100.2:1", &req("REGISTER", "r"));
    assert_eq!(
        r.from_client(t0, sa("198.51.100.3:1"), 0, &req("REGISTER", "r")),
        ClientAction::Drop(DropReason::FlowTableFull)
    );
    assert_eq!(
        client(&mut r, t0, "198.51.100.1:1", &req("OPTIONS", "o")),
        (p, h)
    );
    assert_eq!(r.counters().dropped(DropReason::FlowTableFull), 1);
}

#[test]
fn new_flows_are_rate_limited_per_source_ip() {
    let t0 = Instant::now();
    let mut r = router(&config(
        "[limits]\nnew_flows_per_ip = 1\nnew_flows_burst = 2\nmax_flows_per_ip = 4\n",
    ));
    client(&mut r, t0, "198.51.100.1:1", &req("OPTIONS", "a"));
    client(&mut r, t0, "198.51.100.1:2", &req("OPTIONS", "b"));
    assert_eq!(
        r.from_client(t0, sa("198.51.100.1:3"), 0, &req("OPTIONS", "c")),
        ClientAction::Drop(DropReason::RateLimited)
    );
    // Another address is not affected, and the bucket refills.
    client(&mut r, t0, "198.51.100.2:1", &req("OPTIONS", "d"));
    client(
        &mut r,
        t0 + Duration::from_secs(1),
        "198.51.100.1:3",
        &req("OPTIONS", "c"),
    );
}

#[test]
fn a_full_dialog_table_refuses_new_dialogs() {
    let t0 = Instant::now();
    // One source may fill it here (its share would be a few by default).
    let mut r = router(&config(
        "[limits]\nmax_dialogs = 1\nmax_pins_per_ip = 1000\n",
    ));
    let (port, h) = client(&mut r, t0, "198.51.100.1:1", &req("INVITE", "c1"));
    assert_eq!(
        r.from_client(t0, sa("198.51.100.1:1"), 0, &req("INVITE", "c2")),
        ClientAction::Drop(DropReason::DialogTableFull)
    );
    // A backend's request still reaches the phone (an incoming call, a NAT ping),
    // without the entry that would send its answer back to that backend: counted.
    for (from, cid) in [(h, "c3"), (other_of(h), "c4")] {
        assert!(
            matches!(
                r.from_backend(t0, port, addr_of(from), &req("INVITE", cid)),
                BackendAction::Forward { .. }
            ),
            "{cid}"
        );
    }
    assert_eq!(r.counters().unpinned, 2);
    assert_eq!(r.counters().dropped(DropReason::DialogTableFull), 1);
    // Non-dialog traffic still flows; the old dialog is still routed.
    client(&mut r, t0, "198.51.100.1:1", &req("OPTIONS", "o"));
    assert_eq!(
        client(&mut r, t0, "198.51.100.1:1", &req("BYE", "c1")),
        (port, h)
    );
    assert_eq!(r.dialog_count(), 1);
    // BYE shortened the dialog to the transaction time.
    client(
        &mut r,
        t0 + Duration::from_secs(20),
        "198.51.100.1:1",
        &req("OPTIONS", "o2"),
    );
    r.handle_timeout(t0 + Duration::from_secs(33));
    assert_eq!(r.dialog_count(), 0);
    // A backend's ACK is never answered: it takes no entry, even with room.
    let t = t0 + Duration::from_secs(34);
    assert!(matches!(
        r.from_backend(t, port, addr_of(h), &req("ACK", "c5")),
        BackendAction::Forward { .. }
    ));
    assert_eq!(r.dialog_count(), 0);
    assert_eq!(r.counters().unpinned, 2);
}

#[test]
fn failover_moves_only_the_dead_backends_flows_and_failback_follows_policy() {
    // (policy, REGISTER after recovery moves back?, any message moves back?)
    let table = [
        ("never", false, false),
        ("on-register", true, false),
        ("immediate", true, true),
    ];
    for (policy, on_register, on_any) in table {
        let t0 = Instant::now();
        let mut r = router(&config(&format!("[affinity]\nfailback = \"{policy}\"\n")));
        let phones = [
            "198.51.100.1:1",
            "198.51.100.2:2",
            "198.51.100.3:3",
            "198.51.100.4:4",
        ];
        let homes: Vec<BackendId> = phones
            .iter()
            .map(|p| client(&mut r, t0, p, &req("REGISTER", p)).1)
            .collect();
        assert!(
            homes.contains(&BackendId::new(0)) && homes.contains(&BackendId::new(1)),
            "{homes:?}"
        );
        r.set_backend_up(BackendId::new(0), false);
        for (p, &h) in phones.iter().zip(&homes) {
            assert_eq!(
                client(&mut r, t0, p, &req("OPTIONS", "o")).1,
                BackendId::new(1),
                "{policy}: {p} home {h}"
            );
        }
        r.set_backend_up(BackendId::new(0), true);
        for (p, &h) in phones.iter().zip(&homes) {
            let b = client(&mut r, t0, p, &req("OPTIONS", "o")).1;
            assert_eq!(
                b,
                if on_any { h } else { BackendId::new(1) },
                "{policy}: OPTIONS {p}"
            );
            let b = client(&mut r, t0, p, &req("REGISTER", p)).1;
            assert_eq!(
                b,
                if on_register { h } else { BackendId::new(1) },
                "{policy}: REGISTER {p}"
            );
        }
        r.set_backend_up(BackendId::new(0), false);
        r.set_backend_up(BackendId::new(1), false);
        // No backend: a request is answered with a 503, an ACK only dropped.
        assert_eq!(
            r.from_client(t0, sa(phones[0]), 0, &req("OPTIONS", "o")),
            ClientAction::Reject503
        );
        assert_eq!(
            r.from_client(t0, sa(phones[0]), 0, &req("ACK", "o")),
            ClientAction::Drop(DropReason::NoBackend)
        );
        assert_eq!(r.counters().dropped(DropReason::NoBackend), 2);
    }
}

#[test]
fn dialogs_pinned_to_a_dead_backend_follow_the_flow() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    let phone = "198.51.100.7:40000";
    let (port, home) = client(&mut r, t0, phone, &req("REGISTER", "reg"));
    let other = other_of(home);
    r.from_backend(t0, port, addr_of(other), &req("INVITE", "c"));
    r.set_backend_up(other, false);
    assert_eq!(client(&mut r, t0, phone, &req("BYE", "c")).1, home);
}

#[test]
fn sync_items_mirror_a_table_and_the_mirror_keeps_its_ports() {
    let t0 = Instant::now();
    let mut master = synced(&config(""));
    let mut backup = synced(&config(""));
    let phone = "198.51.100.7:40000";
    let (port, home) = client(&mut master, t0, phone, &req("REGISTER", "reg"));
    let ok = resp(200, "reg", "REGISTER", "Expires: 600\r\n");
    master.from_backend(t0, port, addr_of(home), &ok);
    let other = other_of(home);
    master.from_backend(t0, port, addr_of(other), &req("INVITE", "call"));
    let mut items = vec![];
    assert!(!master.take_sync(&mut items));
    assert_eq!(items.len(), 3, "flow, registration, dialog: {items:?}");
    backup.set_peer_alive(t0, true);
    let mut bound = vec![];
    for it in items.drain(..) {
        bound.extend(backup.apply_sync(t0, it).bind);
    }
    assert_eq!(bound, vec![port], "the mirrored port is pre-bound");
    // The backup's copy routes exactly like the master: same port, same home, and
    // the dialog pinned to the backend that sent the INVITE (shared dialog keys).
    assert_eq!(
        client(&mut backup, t0, phone, &req("OPTIONS", "o")),
        (port, home)
    );
    assert_eq!(
        client(&mut backup, t0, phone, &resp(200, "call", "INVITE", "")),
        (port, other)
    );
    // Serving it made the flow the backup's own: the change goes back to the peer.
    backup.take_sync(&mut items);
    assert!(matches!(items[0], Item::Flow { relay_port, .. } if relay_port == port));
    // A full table for a rejoining peer holds the flow and the dialog.
    let mut full = vec![];
    master.sync_full(t0, &mut full);
    assert_eq!(full.len(), 2);
    // Mirrored flows do not expire on the backup while the peer lives...
    let mut mirror = synced(&config(""));
    mirror.set_peer_alive(t0, true);
    for it in full.iter().copied() {
        mirror.apply_sync(t0, it);
    }
    mirror.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!(mirror.flow_count(), 1);
    // ...and once it is gone they are ours: idle from then on.
    let t1 = t0 + Duration::from_secs(3601);
    mirror.set_peer_alive(t1, false);
    mirror.handle_timeout(t1 + Duration::from_secs(31));
    assert_eq!(mirror.flow_count(), 0);
    // The master's expiry removes the mirror's copy.
    master.handle_timeout(t0 + Duration::from_secs(700));
    master.take_sync(&mut items);
    assert!(items.contains(&Item::FlowGone { relay_port: port }));
}

/// The count of mirrored flows the table keeps (its walks stop at it, and a host that
/// mirrors none skips them) follows every way a flow becomes or stops being mirrored.
#[test]
fn the_mirrored_count_follows_mirroring_touching_removal_and_adoption() {
    let t0 = Instant::now();
    let mut master = synced(&config(""));
    let mut backup = synced(&config(""));
    backup.set_peer_alive(t0, true);
    let phones = ["198.51.100.1:1", "198.51.100.2:2", "198.51.100.3:3"];
    for (i, p) in phones.iter().enumerate() {
        client(&mut master, t0, p, &req("REGISTER", &format!("r{i}")));
    }
    let mut items = vec![];
    master.take_sync(&mut items);
    let flows: Vec<Item> = items
        .iter()
        .copied()
        .filter(|i| matches!(i, Item::Flow { .. }))
        .collect();
    for it in items.drain(..) {
        backup.apply_sync(t0, it);
    }
    assert_eq!(backup.flows.mirrored_count(), 3);
    assert_eq!(master.flows.mirrored_count(), 0);
    // A phone's datagram reaches the backup: that flow is the backup's now.
    let _ = backup.from_client(t0, sa(phones[0]), 0, &req("OPTIONS", "o"));
    assert_eq!(backup.flows.mirrored_count(), 2);
    // The master restates it: mirrored again (an update in place).
    backup.apply_sync(t0, flows[0]);
    assert_eq!(backup.flows.mirrored_count(), 3);
    // A full table with one of them: the other two are stale and go.
    backup.begin_full();
    backup.apply_sync(t0, flows[1]);
    assert_eq!(backup.end_full(t0).len(), 2);
    assert_eq!(backup.flows.mirrored_count(), 1);
    // The peer falls silent: the last one is adopted.
    assert_eq!(backup.set_peer_alive(t0, false), 1);
    assert_eq!(backup.flows.mirrored_count(), 0);
    assert_eq!(backup.flow_count(), 1);
    // Nothing mirrored: nothing to adopt or drop, without a walk.
    assert_eq!(master.adopt_peer_flows(t0), 0);
    master.begin_full();
    assert!(master.end_full(t0).is_empty());
    assert_eq!(master.flow_count(), 3);
}

#[test]
fn a_full_table_drops_mirrored_flows_the_peer_no_longer_has() {
    let t0 = Instant::now();
    let mut master = synced(&config(""));
    let mut backup = synced(&config(""));
    backup.set_peer_alive(t0, true);
    let (p1, _) = client(&mut master, t0, "198.51.100.1:1", &req("OPTIONS", "a"));
    let (p2, _) = client(&mut master, t0, "198.51.100.2:2", &req("OPTIONS", "b"));
    let mut items = vec![];
    master.take_sync(&mut items);
    for it in items.drain(..) {
        backup.apply_sync(t0, it);
    }
    assert_eq!(backup.flow_count(), 2);
    // The master's flow 1 goes away, but its FlowGone is lost.
    master.handle_timeout(t0 + Duration::from_secs(31));
    client(
        &mut master,
        t0 + Duration::from_secs(31),
        "198.51.100.2:2",
        &req("OPTIONS", "c"),
    );
    let mut full = vec![];
    master.sync_full(t0, &mut full);
    backup.begin_full();
    for it in full {
        backup.apply_sync(t0, it);
    }
    assert_eq!(backup.end_full(t0), vec![p1], "the stale mirror is closed");
    assert_eq!(backup.flow_count(), 1);
    let _ = p2;
}

#[test]
fn draining_the_only_backend_keeps_its_flows_under_any_failback() {
    for policy in ["never", "on-register", "immediate"] {
        let t0 = Instant::now();
        let mut r = router(&config(&format!("[affinity]\nfailback = \"{policy}\"\n")));
        let (port, home) = client(&mut r, t0, "198.51.100.1:1", &req("REGISTER", "r"));
        r.set_admin(
            if home == BackendId::new(0) { "a" } else { "b" },
            crate::relay::AdminState::Draining,
        );
        r.set_backend_up(other_of(home), false);
        assert_eq!(
            client(&mut r, t0, "198.51.100.1:1", &req("REGISTER", "r")),
            (port, home),
            "{policy}"
        );
        assert_eq!(
            client(&mut r, t0, "198.51.100.1:1", &req("OPTIONS", "o")),
            (port, home),
            "{policy}"
        );
    }
}

#[test]
fn unanswered_client_invites_hold_the_dialog_table_only_for_a_transaction() {
    let t0 = Instant::now();
    let mut r = router(&config(
        "[limits]\nmax_dialogs = 10\nmax_pins_per_ip = 1000\n",
    ));
    for i in 0..10 {
        client(
            &mut r,
            t0,
            "198.51.100.1:1",
            &req("INVITE", &format!("junk{i}")),
        );
    }
    assert!(matches!(
        r.from_client(t0, sa("198.51.100.1:1"), 0, &req("INVITE", "real")),
        ClientAction::Drop(DropReason::DialogTableFull)
    ));
    let t1 = t0 + Duration::from_secs(33);
    r.handle_timeout(t1);
    let (port, home) = client(&mut r, t1, "198.51.100.1:1", &req("INVITE", "real"));
    // Answered calls become dialogs that outlive the transaction time.
    r.from_backend(t1, port, addr_of(home), &resp(180, "real", "INVITE", ""));
    r.handle_timeout(t1 + Duration::from_secs(300));
    assert_eq!(r.dialog_count(), 1);
}

#[test]
fn sync_names_backends_by_seed_not_by_position() {
    let t0 = Instant::now();
    let mut master = synced(&config(""));
    // The backup lists the same two backends in the other order, plus a third.
    let text = config("")
        .to_string()
        .replace("name = \"a\"", "name = \"x\"")
        .replace("name = \"b\"", "name = \"a\"")
        .replace("name = \"x\"", "name = \"b\"")
        .replace("10.0.0.21:5060", "10.0.0.99:5060")
        .replace("10.0.0.22:5060", "10.0.0.21:5060")
        .replace("10.0.0.99:5060", "10.0.0.22:5060");
    let mut backup = synced(&parse(&text));
    let (port, home) = client(&mut master, t0, "198.51.100.7:1", &req("OPTIONS", "o"));
    let home_name = master.backends().get(home).unwrap().name.clone();
    let mut items = vec![];
    master.take_sync(&mut items);
    for it in items {
        backup.apply_sync(t0, it);
    }
    let f = backup.flows().next().unwrap();
    assert_eq!(f.relay_port, port);
    assert_eq!(backup.backends().get(f.home).unwrap().name, home_name);
}

#[test]
fn large_tables_are_swept_in_slices() {
    // 2 addresses × 20,000 ports; 20,000 flows → slices of 4096 slots (the minimum).
    let text = config("")
        .to_string()
        .replace(
            "relay = [\"10.0.0.10\"]\nrelay_ports = \"20000-20003\"",
            "relay = [\"10.0.0.10\", \"10.0.0.11\"]\nrelay_ports = \"10000-29999\"",
        )
        .replace("max_flows = 4\n", "max_flows = 40000\n");
    let cfg = parse(&text);
    assert_eq!(cfg.relay_port_count(), 40_000);
    let mut r = synced(&cfg);
    let t0 = Instant::now();
    for i in 0..20_000u32 {
        let from = format!("198.51.{}.{}:5060", i >> 8, i & 255);
        client(&mut r, t0, &from, &req("OPTIONS", &format!("o{i}")));
    }
    let mut items = vec![];
    r.take_sync(&mut items);
    assert_eq!(
        r.flows_per_backend().iter().sum::<usize>(),
        0,
        "no sweep yet"
    );
    // Before the idle timeout: one round of five slices counts every flow by home.
    for k in 0..5 {
        r.handle_timeout(t0 + Duration::from_secs(1 + k));
        let counted: usize = r.flows_per_backend().iter().sum();
        assert_eq!(counted, if k < 4 { 0 } else { 20_000 }, "after slice {k}");
    }
    // After it: each slice expires only its own part of the table, at most 2048
    // flows (one sync item each: the queue never overflows), and the next slice
    // comes sooner then.
    let t = t0 + Duration::from_secs(100);
    r.handle_timeout(t);
    assert_eq!(r.flow_count(), 20_000 - 2048);
    assert!(r.poll_timeout() <= Some(t + Duration::from_millis(50)));
    let mut at = t;
    while r.flow_count() > 0 && at < t + Duration::from_secs(2) {
        assert!(!r.take_sync(&mut items), "no overflow");
        at += Duration::from_millis(50);
        r.handle_timeout(at);
    }
    assert_eq!(r.flow_count(), 0, "all gone within 2 s");
    assert!(
        !r.take_sync(&mut items),
        "no overflow at the last slice either"
    );
    assert_eq!(r.counters().flows_expired, 20_000);
    let mut removed = 0;
    while let Some(ev) = r.poll_event() {
        assert!(matches!(ev, RouterEvent::FlowRemoved { .. }));
        removed += 1;
    }
    assert_eq!(removed, 20_000);
    assert_eq!(r.flows_per_backend().iter().sum::<usize>(), 0);
}

/// A full table built in steps while the tables change (new flows and calls, ended
/// calls, all queued as changes too): applied with the changes made since it began
/// behind it, the peer ends with exactly the master's flows and calls.
#[test]
fn a_full_table_built_in_steps_with_changes_behind_it_is_exact() {
    let t0 = Instant::now();
    let cfg = parse(&format!(
        "[listen]\nsip = [\"192.0.2.10:5060\"]\nrelay = \"10.0.0.10\"\nrelay_ports = \"20000-21999\"\n\
         [[backend]]\nname = \"a\"\naddr = \"{A}\"\n[[backend]]\nname = \"b\"\naddr = \"{B}\"\n[limits]\nmax_flows = 1500\n"
    ));
    let mut master = synced(&cfg);
    let phone = |i: usize| format!("198.51.{}.{}:5060", 100 + i / 250, 1 + i % 250);
    let call = |master: &mut Router, i: usize| {
        let (port, b) = client(master, t0, &phone(i), &req("INVITE", &format!("c{i}")));
        let ringing = resp(180, &format!("c{i}"), "INVITE", "");
        assert!(matches!(
            master.from_backend(t0, port, addr_of(b), &ringing),
            BackendAction::Forward { .. }
        ));
    };
    for i in 0..600 {
        client(&mut master, t0, &phone(i), &req("OPTIONS", "o"));
        if i % 2 == 0 {
            call(&mut master, i);
        }
    }
    let mut older = vec![];
    master.take_sync(&mut older);
    let (mut table, mut since, mut at, mut steps) = (vec![], vec![], FullCursor::default(), 0);
    while !master.sync_full_step(t0, &mut at, &mut table, 50) {
        steps += 1;
        // Between steps: a new phone with a call, an ended call, a new call on an
        // old phone.
        let (new, old) = (600 + steps, steps * 7 % 600);
        client(&mut master, t0, &phone(new), &req("OPTIONS", "o"));
        call(&mut master, new);
        client(
            &mut master,
            t0,
            &phone(old),
            &req("BYE", &format!("c{old}")),
        );
        call(&mut master, (old + 1) % 600);
        assert!(!master.take_sync(&mut since), "the change queue overflowed");
    }
    assert!(steps > 10, "{steps} steps");
    let mut mirror = synced(&cfg);
    mirror.set_peer_alive(t0, true);
    mirror.begin_full();
    for it in table {
        mirror.apply_sync(t0, it);
    }
    mirror.end_full(t0);
    for it in since {
        mirror.apply_sync(t0, it);
    }
    // The same flows, each held by as many calls (a call's entry names its flow by
    // endpoint and generation: one pinned before its flow arrived must still hold it).
    let flows = |r: &Router| {
        let mut v: Vec<_> = r
            .flows()
            .map(|f| (f.client, f.relay_port, f.dialogs))
            .collect();
        v.sort_unstable_by_key(|&(c, p, _)| (c, p.port));
        v
    };
    assert_eq!(flows(&mirror), flows(&master));
    let dialogs = |r: &Router| {
        let mut all = vec![];
        r.sync_full(t0, &mut all);
        let mut v: Vec<_> = all
            .into_iter()
            .filter_map(|i| match i {
                Item::Dialog {
                    key,
                    backend,
                    span,
                    flow,
                    ..
                } => Some((key, backend, span == Span::Dialog, flow.port)),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(dialogs(&mirror), dialogs(&master));
    // And stepwise is the same table as at once.
    let (mut once, mut stepped, mut at) = (vec![], vec![], FullCursor::default());
    master.sync_full(t0, &mut once);
    while !master.sync_full_step(t0, &mut at, &mut stepped, 7) {}
    assert_eq!(once, stepped);
}

/// A forged source gets a backend's challenge, refusal or 200 to OPTIONS too: none of
/// those makes its flow answered (held `flow_idle`, 90 s by default, plus the
/// endpoint's quarantine). A 2xx to REGISTER, a 180, a backend's request do.
#[test]
fn challenges_refusals_and_options_answers_do_not_make_a_flow_answered() {
    let t0 = Instant::now();
    let answers: [(&str, Vec<u8>, bool); 6] = [
        ("REGISTER", resp(401, "x", "REGISTER", ""), false),
        ("INVITE", resp(407, "x", "INVITE", ""), false),
        ("OPTIONS", resp(200, "x", "OPTIONS", ""), false),
        ("INVITE", resp(100, "x", "INVITE", ""), false),
        (
            "REGISTER",
            resp(200, "x", "REGISTER", "Expires: 60\r\n"),
            true,
        ),
        ("INVITE", resp(180, "x", "INVITE", ""), true),
    ];
    for (i, (method, answer, answered)) in answers.iter().enumerate() {
        let mut r = router(&config(""));
        let from = format!("198.51.100.{}:5060", 10 + i);
        let (port, b) = client(&mut r, t0, &from, &req(method, &format!("c{i}")));
        let answer =
            String::from_utf8_lossy(answer).replace("Call-ID: x", &format!("Call-ID: c{i}"));
        r.from_backend(t0, port, addr_of(b), answer.as_bytes());
        assert_eq!(
            r.flow_of(&sa(&from)).map(|f| f.answered),
            Some(*answered),
            "{method} answered {}",
            answer.lines().next().unwrap_or("")
        );
    }
}

/// The router's change queue holds `sync.max_turn_changes` between two takes; one
/// more change is not queued, and the take reports the overflow (the peer then gets a
/// full table).
#[test]
fn the_turn_queue_holds_the_configured_changes() {
    let cfg = parse(&format!(
        "[listen]\nsip = [\"192.0.2.10:5060\"]\nrelay = \"10.0.0.10\"\nrelay_ports = \"20000-29999\"\n\
         [[backend]]\nname = \"a\"\naddr = \"{A}\"\n[limits]\nmax_flows = 9000\n"
    ));
    let rc = RouterConfig {
        sync_queue: Some(4096),
        ..RouterConfig::new(&cfg, Some([1, 2]))
    };
    let mut r = Router::new(rc, &cfg.backends, Instant::now());
    let t0 = Instant::now();
    let phone = |i: u32| format!("198.51.{}.{}:5060", i >> 8, i & 255);
    for i in 0..4096 {
        client(&mut r, t0, &phone(i), &req("OPTIONS", "o"));
    }
    let mut items = vec![];
    assert!(!r.take_sync(&mut items), "4096 changes fit");
    assert_eq!(items.len(), 4096);
    items.clear();
    for i in 4096..4096 * 2 + 1 {
        client(&mut r, t0, &phone(i), &req("OPTIONS", "o"));
    }
    assert!(r.take_sync(&mut items), "the 4097th change overflowed");
    assert_eq!(items.len(), 4096);
}

/// The router's queue is `sync.max_turn_changes` with a `[sync]` section, none without.
#[test]
fn the_turn_queue_comes_from_the_sync_section() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let kf = dir.path().join("key");
    std::fs::write(&kf, "a-shared-secret-of-32-bytes-long\n").unwrap();
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let base = format!(
        "[listen]\nsip = [\"192.0.2.10:5060\"]\nrelay = \"10.0.0.10\"\nrelay_ports = \"20000-29999\"\n\
         [[backend]]\nname = \"a\"\naddr = \"{A}\"\n"
    );
    assert_eq!(RouterConfig::new(&parse(&base), None).sync_queue, None);
    let with_sync = format!(
        "{base}[sync]\nlisten = \"10.0.0.1:7400\"\npeer = \"10.0.0.2:7400\"\nkey_file = \"{}\"\nmax_turn_changes = 20000\n",
        kf.display()
    );
    assert_eq!(
        RouterConfig::new(&parse(&with_sync), None).sync_queue,
        Some(20_000)
    );
}
