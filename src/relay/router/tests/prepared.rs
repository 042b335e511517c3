//! A batch's client datagrams scanned ahead (`prepare_client`) are decided as if they
//! were scanned in the decision.

use super::*;

/// Two routers with the same dialog keys, fed the same datagrams: one decides each
/// as `from_client` does, the other through `prepare_client` (when the client has a
/// flow) and `from_client_with`.
#[test]
fn prepared_datagrams_get_the_decisions_unprepared_ones_get() {
    let cfg = config("");
    let keys = Some([7, 9]);
    let mut plain = Router::new(RouterConfig::new(&cfg, keys), &cfg.backends, Instant::now());
    let mut ahead = Router::new(RouterConfig::new(&cfg, keys), &cfg.backends, Instant::now());
    let t0 = Instant::now();
    let phone = sa("198.51.100.7:40000");
    let stranger = sa("203.0.113.9:5060");
    let folded =
        b"OPTIONS sip:x@y SIP/2.0\r\nCall-ID: call\r\n -1\r\nCSeq: 2 OPTIONS\r\n\r\n".to_vec();
    let steps: Vec<(SocketAddr, Vec<u8>)> = vec![
        (phone, req("REGISTER", "reg")),
        // The other backend calls the phone (below, after the REGISTER): the
        // phone's answers go to that backend, found by their Call-ID's key.
        (phone, resp(180, "from-b", "INVITE", "")),
        (phone, resp(200, "from-b", "INVITE", "")),
        (phone, req("BYE", "from-b")),
        (phone, req("INVITE", "call-1")),
        (phone, req("ACK", "call-1")),
        (phone, b"\r\n\r\n".to_vec()),
        (phone, b"\x16\x03\x01 junk".to_vec()),
        (phone, folded),
        (phone, req("BYE", "call-1")),
        (stranger, req("INVITE", "call-2")),
        (stranger, req("BYE", "call-2")),
        (phone, req("OPTIONS", "call -1")),
    ];
    let mut prepared_any = false;
    for (k, (from, msg)) in steps.iter().enumerate() {
        let now = t0 + Duration::from_millis(10 * k as u64);
        let want = plain.from_client(now, *from, 0, msg);
        let got = match ahead.prepare_client(*from, msg) {
            Some(p) => {
                prepared_any = true;
                ahead.warm_dialog(&p);
                ahead.from_client_with(now, *from, 0, msg, Some(p))
            }
            None => ahead.from_client(now, *from, 0, msg),
        };
        assert_eq!(got, want, "step {k}");
        assert_eq!(ahead.last_call_id(msg), plain.last_call_id(msg), "step {k}");
        assert_eq!(ahead.dialog_count(), plain.dialog_count(), "step {k}");
        if k == 0 {
            let ClientAction::Forward {
                relay_port,
                backend,
                ..
            } = want
            else {
                panic!("{want:?}")
            };
            let other = addr_of(other_of(backend));
            for r in [&mut plain, &mut ahead] {
                let a = r.from_backend(now, relay_port, other, &req("INVITE", "from-b"));
                assert!(matches!(a, BackendAction::Forward { .. }), "{a:?}");
            }
        }
    }
    assert!(prepared_any);
    assert_eq!(ahead.counters().drops, plain.counters().drops);
    assert_eq!(ahead.flow_count(), plain.flow_count());
}

#[test]
fn a_client_without_a_flow_is_not_scanned_ahead() {
    let r = router(&config(""));
    assert!(
        r.prepare_client(sa("198.51.100.7:40000"), &req("INVITE", "c"))
            .is_none()
    );
}

/// The same for datagrams from backends (`prepare_backend`, `from_backend_with`):
/// what a backend's request pins must be found by the phone's answer.
#[test]
fn prepared_backend_datagrams_get_the_decisions_unprepared_ones_get() {
    let cfg = config("");
    let keys = Some([7, 9]);
    let mut plain = Router::new(RouterConfig::new(&cfg, keys), &cfg.backends, Instant::now());
    let mut ahead = Router::new(RouterConfig::new(&cfg, keys), &cfg.backends, Instant::now());
    let t0 = Instant::now();
    let phone = "198.51.100.7:40000";
    let (port, home) = client(&mut plain, t0, phone, &req("REGISTER", "reg"));
    assert_eq!(
        client(&mut ahead, t0, phone, &req("REGISTER", "reg")),
        (port, home)
    );
    let (home_addr, other) = (addr_of(home), addr_of(other_of(home)));
    for r in [&mut plain, &mut ahead] {
        client(r, t0, phone, &req("INVITE", "c1"));
    }
    let steps: Vec<(SocketAddr, Vec<u8>)> = vec![
        (home_addr, resp(180, "c1", "INVITE", "")),
        (home_addr, resp(200, "c1", "INVITE", "")),
        (other, req("INVITE", "c2")),
        (other, b"\r\n\r\n".to_vec()),
        (other, b"\x16\x03\x01 junk".to_vec()),
        (sa("10.9.9.9:5060"), req("INVITE", "c3")),
    ];
    let mut prepared_any = false;
    for (k, (from, msg)) in steps.iter().enumerate() {
        let want = plain.from_backend(t0, port, *from, msg);
        let got = match ahead.prepare_backend(port, *from, msg) {
            Some(p) => {
                prepared_any = true;
                ahead.warm_dialog(&p);
                ahead.from_backend_with(t0, port, *from, msg, Some(p))
            }
            None => ahead.from_backend(t0, port, *from, msg),
        };
        assert_eq!(got, want, "step {k}");
        assert_eq!(ahead.dialog_count(), plain.dialog_count(), "step {k}");
    }
    assert!(prepared_any);
    // The phone answers the other backend's call: both send it there.
    for r in [&mut plain, &mut ahead] {
        let (_, to) = client(r, t0, phone, &resp(200, "c2", "INVITE", ""));
        assert_eq!(to, other_of(home));
    }
    assert_eq!(ahead.counters().drops, plain.counters().drops);
}
