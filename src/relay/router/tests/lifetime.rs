//! Which events hold a flow and which release it (issue: long calls lose their way
//! back). Virtual time; `flow_idle` 30 s, `dialog_idle` 600 s, `transaction` 32 s.

use super::*;
use crate::relay::router::expiry::{SWEEP_EVERY, SWEEP_SLICES};

const CALLER: &str = "198.51.100.9:5070";

fn backend_req(method: &str, call_id: &str) -> Vec<u8> {
    req(method, call_id)
}

fn flow_alive(r: &Router, port: RelayPort) -> bool {
    r.flows().any(|f| f.relay_port == port)
}

fn dialogs_on(r: &Router, port: RelayPort) -> u32 {
    r.flows()
        .find(|f| f.relay_port == port)
        .map_or(0, |f| f.dialogs)
}

/// Sweeps the whole table at `t` (the sweep runs in slices every 500 ms).
fn sweep(r: &mut Router, t: Instant) {
    for i in 0..SWEEP_SLICES as u64 + 1 {
        r.handle_timeout(t + SWEEP_EVERY * i as u32);
    }
}

fn from_backend(r: &mut Router, t: Instant, port: RelayPort, b: BackendId, msg: &[u8]) {
    assert!(
        matches!(
            r.from_backend(t, port, addr_of(b), msg),
            BackendAction::Forward { .. }
        ),
        "backend datagram not forwarded"
    );
}

/// One step of a table: who sends what, and whether the flow is held after it.
enum Step {
    Client(u16, &'static str),
    ClientReq(&'static str),
    Backend(u16, &'static str),
    BackendReq(&'static str),
}

#[test]
fn what_holds_a_flow_and_what_releases_it() {
    use Step::*;
    // (name, steps after the client's INVITE, dialogs holding the flow afterwards)
    let cases: &[(&str, &[Step], u32)] = &[
        ("unanswered", &[], 0),
        (
            "client retransmits and sends itself a 180",
            &[ClientReq("INVITE"), Client(180, "INVITE")],
            0,
        ),
        ("backend rings", &[Backend(180, "INVITE")], 1),
        (
            "answered",
            &[
                Backend(180, "INVITE"),
                Backend(200, "INVITE"),
                ClientReq("ACK"),
            ],
            1,
        ),
        (
            "rejected",
            &[Backend(180, "INVITE"), Backend(486, "INVITE")],
            0,
        ),
        (
            "callee hangs up",
            &[
                Backend(200, "INVITE"),
                BackendReq("BYE"),
                Client(200, "BYE"),
            ],
            0,
        ),
        (
            "caller hangs up",
            &[
                Backend(200, "INVITE"),
                ClientReq("BYE"),
                Backend(200, "BYE"),
            ],
            0,
        ),
        (
            "re-INVITE from the backend keeps it",
            &[
                Backend(200, "INVITE"),
                BackendReq("INVITE"),
                Client(200, "INVITE"),
            ],
            1,
        ),
    ];
    for (name, steps, held) in cases {
        let t0 = Instant::now();
        let mut r = router(&config(""));
        let call = format!("call-{name}");
        let (port, b) = client(&mut r, t0, CALLER, &req("INVITE", &call));
        for (i, step) in steps.iter().enumerate() {
            let t = t0 + Duration::from_millis(10 * (i as u64 + 1));
            match step {
                Client(code, m) => {
                    client(&mut r, t, CALLER, &resp(*code, &call, m, ""));
                }
                ClientReq(m) => {
                    client(&mut r, t, CALLER, &req(m, &call));
                }
                Backend(code, m) => from_backend(&mut r, t, port, b, &resp(*code, &call, m, "")),
                BackendReq(m) => from_backend(&mut r, t, port, b, &backend_req(m, &call)),
            }
        }
        assert_eq!(
            dialogs_on(&r, port),
            *held,
            "{name}: dialogs holding the flow"
        );
        // Long after flow_idle with no traffic: only a held flow is still there.
        sweep(&mut r, t0 + Duration::from_secs(300));
        assert_eq!(
            flow_alive(&r, port),
            *held > 0,
            "{name}: flow alive at 300 s"
        );
    }
}

#[test]
fn a_held_flow_carries_the_backends_bye_hours_later_then_expires() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    let (port, b) = client(&mut r, t0, CALLER, &req("INVITE", "long"));
    from_backend(&mut r, t0, port, b, &resp(200, "long", "INVITE", ""));
    // In-dialog traffic (a session refresh every 500 s) keeps the dialog past its
    // idle time; no datagram from the caller for two hours.
    let mut t = t0;
    for _ in 0..14 {
        t += Duration::from_secs(500);
        sweep(&mut r, t);
        from_backend(&mut r, t, port, b, &backend_req("UPDATE", "long"));
    }
    assert!(flow_alive(&r, port), "held for the whole call");
    from_backend(&mut r, t, port, b, &backend_req("BYE", "long"));
    client(&mut r, t, CALLER, &resp(200, "long", "BYE", ""));
    assert_eq!(dialogs_on(&r, port), 0);
    sweep(&mut r, t + Duration::from_secs(20));
    assert!(
        flow_alive(&r, port),
        "flow_idle counts from the last datagram"
    );
    sweep(&mut r, t + Duration::from_secs(61));
    assert!(
        !flow_alive(&r, port),
        "released after the BYE and flow_idle"
    );
}

#[test]
fn a_silent_dialog_lets_go_after_dialog_idle() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    let (port, b) = client(&mut r, t0, CALLER, &req("INVITE", "quiet"));
    from_backend(&mut r, t0, port, b, &resp(200, "quiet", "INVITE", ""));
    sweep(&mut r, t0 + Duration::from_secs(590));
    assert!(flow_alive(&r, port));
    // dialog_idle (600 s) passes: the dialog expires, then the idle flow.
    sweep(&mut r, t0 + Duration::from_secs(610));
    sweep(&mut r, t0 + Duration::from_secs(620));
    assert!(!flow_alive(&r, port));
}

#[test]
fn a_backend_opened_dialog_holds_once_the_client_answers() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    // The client registers (its flow), the registration lapses, a call comes in.
    let (port, b) = client(&mut r, t0, CALLER, &req("OPTIONS", "o"));
    from_backend(&mut r, t0, port, b, &backend_req("INVITE", "in"));
    assert_eq!(dialogs_on(&r, port), 0, "not before the client answers");
    client(&mut r, t0, CALLER, &resp(180, "in", "INVITE", ""));
    client(&mut r, t0, CALLER, &resp(200, "in", "INVITE", ""));
    assert_eq!(dialogs_on(&r, port), 1);
    sweep(&mut r, t0 + Duration::from_secs(300));
    assert!(flow_alive(&r, port));
}

#[test]
fn the_standby_holds_mirrored_flows_of_live_calls() {
    let t0 = Instant::now();
    let mut master = synced(&config(""));
    let mut standby = synced(&config(""));
    let (port, b) = client(&mut master, t0, CALLER, &req("INVITE", "m"));
    from_backend(&mut master, t0, port, b, &resp(200, "m", "INVITE", ""));
    let mut items = Vec::new();
    master.take_sync(&mut items);
    for it in items {
        standby.apply_sync(t0, it);
    }
    assert_eq!(dialogs_on(&standby, port), 1);
    // The master is gone: its flows are the standby's and expire by its clock.
    standby.set_peer_alive(t0, true);
    standby.set_peer_alive(t0, false);
    sweep(&mut standby, t0 + Duration::from_secs(300));
    assert!(
        flow_alive(&standby, port),
        "held on the standby after a takeover"
    );
    // The callee hangs up through the new master.
    assert!(matches!(
        standby.from_backend(
            t0 + Duration::from_secs(300),
            port,
            addr_of(b),
            &backend_req("BYE", "m")
        ),
        BackendAction::Forward { .. }
    ));
}

#[test]
fn a_peers_registration_is_capped_as_a_backends_grant_is() {
    let t0 = Instant::now();
    // register_grace 10 s (the tests' config).
    let cfg = config("max_registration = \"600s\"");
    let mut master = synced(&cfg);
    let mut standby = synced(&cfg);
    let (port, _) = client(&mut master, t0, CALLER, &req("OPTIONS", "r"));
    let mut items = Vec::new();
    master.take_sync(&mut items);
    let Some(&Item::Flow {
        client,
        ingress,
        home,
        ..
    }) = items.first()
    else {
        panic!("{items:?}")
    };
    // A peer (or a forged item) that says the phone is registered for 136 years.
    standby.apply_sync(
        t0,
        Item::Flow {
            client,
            relay_port: port,
            ingress,
            home,
            registered_secs: Some(u32::MAX),
        },
    );
    let until = standby.flow_of(&sa(CALLER)).unwrap().registered_until;
    assert_eq!(until, Some(t0 + Duration::from_secs(610)));
    // Taken over, it expires by our clock like any flow.
    standby.set_peer_alive(t0, true);
    standby.set_peer_alive(t0, false);
    sweep(&mut standby, t0 + Duration::from_secs(610 + 60));
    assert!(!flow_alive(&standby, port));
}

/// A client answers requests the backend sends it (a NAT ping, a MESSAGE it had sent
/// itself through the backend) with `180` and `CSeq: 1 INVITE`: the entries stay
/// transactions, hold nothing and expire, so one client cannot fill the dialog table
/// with hour-long entries that count against no quota. A backend's INVITE answered
/// so becomes a dialog, as ever.
#[test]
fn an_answer_that_only_claims_an_invite_makes_no_dialog() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    let (port, b) = client(&mut r, t0, CALLER, &req("REGISTER", "reg"));
    for (i, m) in ["OPTIONS", "MESSAGE", "NOTIFY", "INFO"].iter().enumerate() {
        let call = format!("fake-{i}");
        from_backend(&mut r, t0, port, b, &backend_req(m, &call));
        client(&mut r, t0, CALLER, &resp(180, &call, "INVITE", ""));
        client(&mut r, t0, CALLER, &resp(200, &call, "INVITE", ""));
    }
    assert_eq!(dialogs_on(&r, port), 0);
    // A real incoming call.
    from_backend(&mut r, t0, port, b, &backend_req("INVITE", "real"));
    client(&mut r, t0, CALLER, &resp(180, "real", "INVITE", ""));
    assert_eq!(dialogs_on(&r, port), 1);
    // The transactions are gone after their time, the call's dialog is not.
    sweep(&mut r, t0 + Duration::from_secs(120));
    assert_eq!(r.dialog_count(), 1);
}

/// Someone who learned a call's Call-ID sends a BYE (or anything) with it from
/// another address: the call's entry is not ended, refreshed or moved, so the
/// caller's flow stays held; the caller's own BYE still ends it.
#[test]
fn another_flow_cannot_end_or_keep_a_call_by_its_call_id() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    let (port, b) = client(&mut r, t0, CALLER, &req("INVITE", "v"));
    from_backend(&mut r, t0, port, b, &resp(200, "v", "INVITE", ""));
    assert_eq!(dialogs_on(&r, port), 1);
    let stranger = "203.0.113.66:5060";
    let (sp, sb) = client(&mut r, t0, stranger, &req("BYE", "v"));
    client(&mut r, t0, stranger, &resp(486, "v", "INVITE", ""));
    // The backend's answer to the stranger's BYE comes back on the stranger's own
    // endpoint: it answers the stranger, not the call.
    from_backend(&mut r, t0, sp, sb, &resp(481, "v", "BYE", ""));
    assert_eq!(
        dialogs_on(&r, port),
        1,
        "a stranger's BYE released the call"
    );
    // The caller hangs up: released.
    client(&mut r, t0, CALLER, &req("BYE", "v"));
    assert_eq!(dialogs_on(&r, port), 0);
    // A stranger's traffic, and the backend's answers to it, do not keep the ended
    // entry alive either.
    for k in 1..=60 {
        let t = t0 + Duration::from_secs(k);
        client(&mut r, t, stranger, &req("INFO", "v"));
        from_backend(&mut r, t, sp, sb, &resp(200, "v", "INFO", ""));
        if r.poll_timeout().is_some_and(|d| d <= t) {
            r.handle_timeout(t);
        }
    }
    sweep(&mut r, t0 + Duration::from_secs(61));
    assert_eq!(r.dialog_count(), 0, "kept by a stranger");
}

/// A stranger who sends a call's Call-ID gets the backend's answers on its own
/// endpoint; a 180 there must not make the caller's unanswered INVITE a dialog (held
/// for `dialog_idle` instead of the transaction's 32 s).
#[test]
fn a_backend_answer_on_another_flow_does_not_promote_a_call() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    let (port, _) = client(&mut r, t0, CALLER, &req("INVITE", "v"));
    let (sp, sb) = client(&mut r, t0, "203.0.113.66:5060", &req("INVITE", "v"));
    from_backend(&mut r, t0, sp, sb, &resp(180, "v", "INVITE", ""));
    assert_eq!(dialogs_on(&r, port), 0, "a stranger's 180 made it a dialog");
    sweep(&mut r, t0 + Duration::from_secs(61));
    assert_eq!(r.dialog_count(), 0, "promoted by a stranger's 180");
}

/// A peer's items that cannot apply are counted by why.
#[test]
fn rejected_sync_items_are_counted_by_reason() {
    use crate::relay::{Side, Span};
    let t0 = Instant::now();
    let mut standby = synced(&config("[limits]\nmax_flows = 1\n"));
    let home = standby.backends().seed_of(BackendId::new(0));
    let flow = |client: &str, port: u16, home: u64| Item::Flow {
        client: sa(client),
        relay_port: RelayPort::first(port),
        ingress: 0,
        home,
        registered_secs: Some(60),
    };
    let count = |r: &Router, why: SyncReject| r.sync_rejected[why as usize];
    standby.apply_sync(t0, flow(CALLER, 20000, home ^ 1));
    assert_eq!(count(&standby, SyncReject::UnknownBackend), 1);
    standby.apply_sync(t0, flow(CALLER, 40000, home));
    assert_eq!(count(&standby, SyncReject::OutsidePool), 1);
    standby.apply_sync(t0, flow(CALLER, 20000, home));
    assert_eq!(standby.flow_count(), 1);
    standby.apply_sync(t0, flow("198.51.100.77:5060", 20001, home));
    assert_eq!(count(&standby, SyncReject::FlowTableFull), 1);
    let dialog = |backend| Item::Dialog {
        key: 9,
        backend,
        span: Span::Dialog,
        opener: Side::Client,
        flow: RelayPort::first(20000),
    };
    standby.apply_sync(t0, dialog(home ^ 1));
    assert_eq!(count(&standby, SyncReject::UnknownBackend), 2);
    standby.apply_sync(t0, dialog(home));
    assert_eq!(standby.sync_rejected.iter().sum::<u64>(), 4);
    assert_eq!(standby.dialog_count(), 1);
}

/// A phone whose NAT gave it a new port mid-call hangs up from a new flow: the far
/// end's 2xx to that BYE ends the call's entry (a stranger's BYE gets a 481, above).
/// And a 200 to REGISTER on another flow than a same-Call-ID entry's still registers.
#[test]
fn a_bye_answered_2xx_on_a_new_flow_ends_the_call_and_registers_still_count() {
    let t0 = Instant::now();
    let mut r = router(&config(""));
    let (port, b) = client(&mut r, t0, CALLER, &req("INVITE", "v"));
    from_backend(&mut r, t0, port, b, &resp(200, "v", "INVITE", ""));
    assert_eq!(dialogs_on(&r, port), 1);
    let (np, nb) = client(&mut r, t0, "198.51.100.1:40000", &req("BYE", "v"));
    assert_ne!(np, port);
    from_backend(&mut r, t0, np, nb, &resp(200, "v", "BYE", ""));
    assert_eq!(dialogs_on(&r, port), 0, "the call still holds the old flow");
    // A REGISTER answered on a flow whose Call-ID another flow's entry has.
    let (sp, sb) = client(&mut r, t0, "203.0.113.9:5060", &req("INVITE", "reg"));
    let (rp, rb) = client(&mut r, t0, "203.0.113.10:5060", &req("REGISTER", "reg"));
    assert_ne!(sp, rp);
    let ok = resp(200, "reg", "REGISTER", "Expires: 300\r\n");
    from_backend(&mut r, t0, rp, rb, &ok);
    let _ = sb;
    assert!(
        r.flow_of(&sa("203.0.113.10:5060"))
            .is_some_and(|f| f.registered_until.is_some()),
        "the 200 to REGISTER was not taken"
    );
}
