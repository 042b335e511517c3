//! Admission rules, table-driven with virtual time: allow/deny lists, bans, scanner
//! User-Agents, the pin quota per flow and the top sources.

use super::*;
use crate::relay::top::source_name;

const CARRIER: &str = "203.0.113.5:5060";

fn with_access(access: &str) -> Config {
    config(&format!(
        "[[peer]]\nname = \"carrier\"\naddr = \"{CARRIER}\"\nrelay = \"10.0.0.10:5100\"\n\n[access]\n{access}"
    ))
}

fn with_ua(method: &str, call_id: &str, ua: &str) -> Vec<u8> {
    let plain = String::from_utf8(req(method, call_id)).unwrap();
    plain
        .replacen(
            "Content-Length",
            &format!("User-Agent: {ua}\r\nContent-Length"),
            1,
        )
        .into_bytes()
}

fn action(r: &mut Router, now: Instant, from: &str, msg: &[u8]) -> Option<DropReason> {
    match r.from_client(now, sa(from), 0, msg) {
        ClientAction::Forward { .. } | ClientAction::Absorbed => None,
        ClientAction::Drop(d) => Some(d),
        ClientAction::Reject503 => Some(DropReason::NoBackend),
    }
}

#[test]
fn allow_and_deny_lists() {
    let t0 = Instant::now();
    let denied = Some(DropReason::Denied);
    // (access section, source, expected drop)
    let table: &[(&str, &str, Option<DropReason>)] = &[
        ("", "198.51.100.7:5060", None),
        ("deny = [\"198.51.100.0/24\"]", "198.51.100.7:5060", denied),
        ("deny = [\"198.51.100.0/24\"]", "198.51.101.7:5060", None),
        ("deny = [\"203.0.113.5\"]", CARRIER, denied),
        ("allow = [\"10.0.0.0/8\"]", "198.51.100.7:5060", denied),
        ("allow = [\"10.0.0.0/8\"]", "10.1.2.3:5060", None),
        ("allow = [\"10.0.0.0/8\"]", CARRIER, None),
        (
            "allow = [\"10.0.0.0/8\"]\ndeny = [\"10.1.0.0/16\"]",
            "10.1.2.3:5060",
            denied,
        ),
        (
            "deny = [\"2001:db8:1:2::/64\"]",
            "[2001:db8:1:2::99]:5060",
            denied,
        ),
        (
            "deny = [\"2001:db8:1:2::/64\"]",
            "[2001:db8:1:3::99]:5060",
            None,
        ),
    ];
    for (access, from, want) in table {
        let mut r = router(&with_access(access));
        let got = action(&mut r, t0, from, &req("OPTIONS", "o1"));
        assert_eq!(got, *want, "[access] {access} from {from}");
        let counted = r.counters().dropped(DropReason::Denied);
        assert_eq!(counted, u64::from(want.is_some()), "{access} {from}");
        // A refused source never gets a flow (only the peer's own one exists).
        if want.is_some() {
            assert_eq!(r.flow_count(), 1);
        }
    }
}

#[test]
fn bans_take_effect_at_once_expire_and_survive_a_reload() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let cfg = with_access("");
    let mut r = router(&cfg);
    let phone = "198.51.100.7:5060";
    assert_eq!(action(&mut r, t0, phone, &req("OPTIONS", "o1")), None);
    r.ban("198.51.100.0/24".parse().unwrap(), s(60), t0)
        .unwrap();
    r.ban("203.0.113.5".parse().unwrap(), s(30), t0).unwrap();
    let banned = Some(DropReason::Banned);
    // (time, source, expected)
    let table: &[(u64, &str, Option<DropReason>)] = &[
        (0, phone, banned),
        (0, "198.51.100.200:7000", banned),
        (0, CARRIER, banned),
        (0, "198.51.101.1:5060", None),
        (29, CARRIER, banned),
        (30, CARRIER, None),
        (59, phone, banned),
        (60, phone, None),
    ];
    for &(at, from, want) in table {
        if at == 29 {
            // A reload in the middle keeps the bans.
            r.set_access(&with_access("deny = [\"192.0.2.0/24\"]").access);
        }
        r.handle_timeout(t0 + s(at));
        assert_eq!(
            action(&mut r, t0 + s(at), from, &req("OPTIONS", "o2")),
            want,
            "t+{at}s {from}"
        );
    }
    assert_eq!(r.counters().dropped(DropReason::Banned), 5);
    assert!(r.bans(t0 + s(60)).is_empty());
    // Unban lifts at once; bans are bounded by access.max_bans.
    let mut small = router(&with_access("max_bans = 1"));
    small.ban("192.0.2.1".parse().unwrap(), s(60), t0).unwrap();
    assert!(small.ban("192.0.2.2".parse().unwrap(), s(60), t0).is_err());
    assert!(small.unban(&"192.0.2.1".parse().unwrap()));
    assert_eq!(
        action(&mut small, t0, "192.0.2.1:5060", &req("OPTIONS", "o")),
        None
    );
}

#[test]
fn scanner_user_agents_are_dropped_but_not_from_peers() {
    let t0 = Instant::now();
    let scanner = Some(DropReason::Scanner);
    // (access section, source, User-Agent, expected)
    let table: &[(&str, &str, &str, Option<DropReason>)] = &[
        ("", "198.51.100.7:5060", "friendly-scanner", scanner),
        ("", "198.51.100.7:5060", "SIPVicious 0.3", scanner),
        ("", "198.51.100.7:5060", "Linphone/5.2", None),
        ("", CARRIER, "friendly-scanner", None),
        (
            "drop_user_agents = []",
            "198.51.100.7:5060",
            "friendly-scanner",
            None,
        ),
        (
            "drop_user_agents = [\"evil\"]",
            "198.51.100.7:5060",
            "x-EVIL-x",
            scanner,
        ),
    ];
    for (access, from, ua, want) in table {
        let mut r = router(&with_access(access));
        let got = action(&mut r, t0, from, &with_ua("REGISTER", "r1", ua));
        assert_eq!(got, *want, "[access] {access} from {from} UA {ua}");
        if want.is_some() {
            assert_eq!(r.flow_count(), 1, "a scanner gets no flow");
            assert_eq!(r.counters().dropped(DropReason::Scanner), 1);
        }
    }
}

#[test]
fn a_flow_opens_at_most_its_quota_of_pins() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut r = router(&config("[limits]\nmax_pins_per_flow = 3"));
    let phone = "198.51.100.7:5060";
    for i in 0..3 {
        client(&mut r, t0, phone, &req("INVITE", &format!("c{i}")));
    }
    // The fourth is refused; retransmissions and in-dialog requests of the three pass,
    // and so do requests that open nothing.
    let table: &[(&str, &str, Option<DropReason>)] = &[
        ("INVITE", "c3", Some(DropReason::PinQuota)),
        ("SUBSCRIBE", "c4", Some(DropReason::PinQuota)),
        ("INVITE", "c0", None),
        ("BYE", "c1", None),
        ("OPTIONS", "o1", None),
        ("REGISTER", "r1", None),
    ];
    for (m, cid, want) in table {
        assert_eq!(action(&mut r, t0, phone, &req(m, cid)), *want, "{m} {cid}");
    }
    assert_eq!(r.counters().dropped(DropReason::PinQuota), 2);
    // Another flow has its own quota.
    client(&mut r, t0, "198.51.100.8:5060", &req("INVITE", "d0"));
    // Forged answers from the client itself do not promote its pins to dialogs,
    // so they expire with the transaction and free the quota.
    for i in 0..3 {
        let cid = format!("c{i}");
        let _ = r.from_client(t0, sa(phone), 0, &resp(180, &cid, "INVITE", ""));
    }
    for k in 1..=40 {
        r.handle_timeout(t0 + s(k));
    }
    let later = t0 + s(40);
    assert_eq!(action(&mut r, later, phone, &req("INVITE", "c5")), None);
    // Backend-opened transactions never count against the client's quota.
    let mut r = router(&config("[limits]\nmax_pins_per_flow = 1"));
    let (port, b) = client(&mut r, t0, phone, &req("REGISTER", "r1"));
    for i in 0..5 {
        let sent = r.from_backend(t0, port, addr_of(b), &req("INVITE", &format!("in{i}")));
        assert!(matches!(sent, BackendAction::Forward { .. }), "{sent:?}");
    }
    assert_eq!(action(&mut r, t0, phone, &req("INVITE", "out")), None);
}

#[test]
fn answered_calls_do_not_count_against_the_pin_quota() {
    // A PBX on one flow places many calls at once: each is answered, none is refused.
    let t0 = Instant::now();
    let mut r = router(&config("[limits]\nmax_pins_per_flow = 3"));
    let pbx = "198.51.100.9:5060";
    for i in 0..50 {
        let cid = format!("call{i}");
        let (port, b) = client(&mut r, t0, pbx, &req("INVITE", &cid));
        r.from_backend(t0, port, addr_of(b), &resp(180, &cid, "INVITE", ""));
    }
    assert_eq!(r.counters().dropped(DropReason::PinQuota), 0);
    // Calls the backend rejects still count until they expire.
    let mut r = router(&config("[limits]\nmax_pins_per_flow = 3"));
    for i in 0..5 {
        let cid = format!("rej{i}");
        let got = action(&mut r, t0, pbx, &req("INVITE", &cid));
        if i < 3 {
            let (port, b) = (
                r.flows().next().unwrap().relay_port,
                r.flows().next().unwrap().home,
            );
            r.from_backend(t0, port, addr_of(b), &resp(407, &cid, "INVITE", ""));
        } else {
            assert_eq!(got, Some(DropReason::PinQuota), "{cid}");
        }
    }
}

/// One address opening flows from many ports cannot fill the dialog table: its flows'
/// unanswered entries together are held to `max_pins_per_ip`, other sources keep
/// theirs, answered calls and expiry give room back, and a removed flow's entries stop
/// counting.
#[test]
fn a_source_opens_at_most_its_quota_of_pins_over_all_its_flows() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut r = router(&config(
        "[limits]\nmax_pins_per_flow = 3\nmax_pins_per_ip = 5",
    ));
    let port_of = |i: u16| format!("198.51.100.7:{}", 5060 + i);
    // Flows 0 and 1 open three each: the sixth entry is refused, on either flow.
    let mut got = vec![];
    for (flow, cid) in [
        (0, "a0"),
        (0, "a1"),
        (0, "a2"),
        (1, "b0"),
        (1, "b1"),
        (1, "b2"),
    ] {
        got.push(action(&mut r, t0, &port_of(flow), &req("INVITE", cid)));
    }
    assert_eq!(got[..5], [None; 5]);
    assert_eq!(got[5], Some(DropReason::SourcePinQuota));
    // A third flow of the same address gets nothing either (nor keeps the flow made
    // for the refused INVITE); another address does.
    let flows = r.flow_count();
    assert_eq!(
        action(&mut r, t0, &port_of(2), &req("INVITE", "c0")),
        Some(DropReason::SourcePinQuota)
    );
    assert_eq!(r.flow_count(), flows, "the refused INVITE's new flow stays");
    assert_eq!(
        action(&mut r, t0, "198.51.100.8:5060", &req("INVITE", "d0")),
        None
    );
    assert_eq!(r.counters().dropped(DropReason::SourcePinQuota), 2);
    // A backend takes one call (180): room for one more.
    let f0 = r.flow_of(&sa(&port_of(0))).unwrap();
    let (port, home) = (f0.relay_port, f0.home);
    r.from_backend(t0, port, addr_of(home), &resp(180, "a0", "INVITE", ""));
    assert_eq!(action(&mut r, t0, &port_of(1), &req("INVITE", "b2")), None);
    assert_eq!(
        action(&mut r, t0, &port_of(2), &req("INVITE", "c1")),
        Some(DropReason::SourcePinQuota)
    );
    // The unanswered ones expire with their transaction: room again (the endpoints
    // of the flows that went with them after their quarantine).
    for k in 1..=80 {
        r.handle_timeout(t0 + s(k));
    }
    let later = t0 + s(80);
    for (flow, cid) in [(0, "e0"), (1, "e1"), (2, "e2")] {
        assert_eq!(
            action(&mut r, later, &port_of(flow), &req("INVITE", cid)),
            None,
            "{cid}"
        );
    }
}

/// A flow nobody answers goes after `unanswered_idle`, its entries live
/// `transaction`: they keep counting against the source meanwhile (for `transaction`
/// and 1 s after the removal, the latest they may expire), so a new flow does not
/// bring a fresh quota (which let a source hold about three at once).
#[test]
fn a_removed_flows_entries_count_against_its_source_until_they_may_have_expired() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut r = router(&config(
        "unanswered_idle = \"10s\"\n[limits]\nmax_pins_per_flow = 10\nmax_pins_per_ip = 4",
    ));
    let (a, b) = ("198.51.100.7:5060", "198.51.100.7:5061");
    for i in 0..4 {
        assert_eq!(
            action(&mut r, t0, a, &req("INVITE", &format!("a{i}"))),
            None
        );
    }
    let gone = (1..=15)
        .find(|&k| {
            r.handle_timeout(t0 + s(k));
            r.flow_of(&sa(a)).is_none()
        })
        .expect("unanswered: gone after 10 s");
    assert!((10..=11).contains(&gone), "{gone}");
    // Its four entries are open until 32 s, and count until 33 s after the removal:
    // neither a flow from another port nor one from the same gets room.
    let mut last = gone;
    for (k, from) in [(gone + 1, b), (20, a), (30, b), (gone + 32, a)] {
        for j in last + 1..=k {
            r.handle_timeout(t0 + s(j));
        }
        last = k;
        let cid = format!("n{k}");
        assert_eq!(
            action(&mut r, t0 + s(k), from, &req("INVITE", &cid)),
            Some(DropReason::SourcePinQuota),
            "at {k} s"
        );
    }
    // Another source is not held.
    assert_eq!(
        action(
            &mut r,
            t0 + s(last),
            "198.51.100.8:5060",
            &req("INVITE", "o")
        ),
        None
    );
    // Due: the room is back.
    let due = gone + 33;
    r.handle_timeout(t0 + s(due));
    assert_eq!(action(&mut r, t0 + s(due), b, &req("INVITE", "late")), None);
}

/// `limits.max_lingering_records` bounds the records: with room for one, the second
/// source's removal drops the first's record early (counted), so that source alone
/// gets its room back before its entries may have expired.
#[test]
fn lingering_records_are_bounded_by_their_key() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    for (records, let_in) in [("", 0), ("\nmax_lingering_records = 1", 1)] {
        let mut r = router(&config(&format!(
            "unanswered_idle = \"10s\"\n[limits]\nmax_pins_per_flow = 10\nmax_pins_per_ip = 2{records}"
        )));
        let sources = ["198.51.100.7", "198.51.100.8"];
        for ip in sources {
            for i in 0..2 {
                let cid = format!("{ip}-{i}");
                let from = format!("{ip}:5060");
                assert_eq!(action(&mut r, t0, &from, &req("INVITE", &cid)), None);
            }
        }
        for k in 1..=12 {
            r.handle_timeout(t0 + s(k));
        }
        assert!(
            sources
                .iter()
                .all(|ip| r.flow_of(&sa(&format!("{ip}:5060"))).is_none())
        );
        let at = t0 + s(13);
        let admitted = sources
            .iter()
            .filter(|ip| {
                let cid = format!("new-{ip}");
                action(&mut r, at, &format!("{ip}:5061"), &req("INVITE", &cid)).is_none()
            })
            .count();
        assert_eq!(admitted, let_in, "records: {records:?}");
        assert_eq!(r.lingering_dropped(), let_in as u64, "records: {records:?}");
    }
}

#[test]
fn a_peer_is_exempt_from_the_pin_quota() {
    let t0 = Instant::now();
    let mut cfg = with_access("");
    cfg.limits.max_pins_per_flow = 1;
    cfg.limits.max_pins_per_ip = 1;
    let mut r = router(&cfg);
    for i in 0..10 {
        client(&mut r, t0, CARRIER, &req("INVITE", &format!("p{i}")));
    }
    // Nor do its calls count against anyone else's: a phone on the carrier's address
    // (another port) still gets its one.
    let phone = "203.0.113.5:5062";
    client(&mut r, t0, phone, &req("INVITE", "own"));
}

/// A reload that removes a static peer's home backend moves the peer's next new
/// request to a backend that is still configured: a peer never registers, so the
/// default failback (on REGISTER) would keep it on the removed one for good.
#[test]
fn a_peer_leaves_a_removed_home() {
    let t0 = Instant::now();
    let cfg = with_access("");
    let mut r = router(&cfg);
    let (_, home) = client(&mut r, t0, CARRIER, &req("INVITE", "p0"));
    let kept: Vec<_> = cfg
        .backends
        .iter()
        .filter(|b| r.backends().by_name(&b.name) != Some(home))
        .cloned()
        .collect();
    r.reconfigure(RouterSettings::from(&cfg), &kept);
    let (_, next) = client(&mut r, t0, CARRIER, &req("INVITE", "p1"));
    assert_ne!(next, home);
    assert_eq!(r.backends().get(next).unwrap().name, kept[0].name);
}

#[test]
fn top_sources_by_drops_and_by_flows() {
    let t0 = Instant::now();
    let mut r = router(&with_access("deny = [\"192.0.2.66\"]"));
    for i in 0..50 {
        let _ = action(
            &mut r,
            t0,
            "192.0.2.66:5060",
            &req("OPTIONS", &format!("x{i}")),
        );
    }
    for i in 0..5 {
        let from = format!("[2001:db8:1:2::{i}]:5060");
        let _ = action(&mut r, t0, &from, b"junk that is not sip at all");
    }
    let (port, _) = client(&mut r, t0, "198.51.100.7:5060", &req("REGISTER", "a"));
    client(&mut r, t0, "198.51.100.7:5061", &req("REGISTER", "b"));
    // A stranger at a relay endpoint is named too.
    for i in 0..3 {
        r.from_backend(
            t0,
            port,
            sa("203.0.113.9:5060"),
            &req("INVITE", &format!("s{i}")),
        );
    }
    let drops = r.top_drops(10);
    let names: Vec<(String, u64)> = drops
        .iter()
        .map(|e| (source_name(e.source), e.count))
        .collect();
    assert_eq!(
        names,
        [
            ("192.0.2.66".to_string(), 50),
            ("2001:db8:1:2::/64".to_string(), 5),
            ("203.0.113.9".to_string(), 3)
        ]
    );
    let flows: Vec<(String, u32)> = r
        .top_flows(10)
        .into_iter()
        .map(|(k, n)| (source_name(k), n))
        .collect();
    assert_eq!(flows[0], ("198.51.100.7".to_string(), 2));
}

#[test]
fn the_503_budget_is_spent_only_on_replies_sent() {
    let t0 = Instant::now();
    let mut r = router(&config("[health]\nreply_503_rate = 3\nretry_after = 30"));
    r.set_backend_up(BackendId::new(0), false);
    r.set_backend_up(BackendId::new(1), false);
    let phone = "198.51.100.7:5060";
    let mut buf = vec![0u8; 2 * 65_536];
    // Requests whose 503 is not sent (larger than the request): the budget stays
    // whole.
    let tiny = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\r\nCSeq: 1 OPTIONS\r\n\r\n";
    for _ in 0..10 {
        let got = r.from_client(t0, sa(phone), 0, tiny);
        assert_eq!(got, ClientAction::Reject503);
        assert_eq!(r.write_503(t0, tiny, 30, &mut buf), None);
    }
    assert_eq!(r.counters().suppressed(Suppressed::LargerThanRequest), 10);
    assert_eq!(r.counters().suppressed(Suppressed::Rate), 0);
    // Sent ones take it: 3 per second.
    // (Headers a 503 does not copy make room for its Retry-After and To-tag.)
    let request = |call_id: &str| {
        let mut r = req("OPTIONS", call_id);
        r.truncate(r.len() - 2);
        r.extend_from_slice(b"Contact: <sip:a@198.51.100.7:5060>\r\nUser-Agent: phone/1.0\r\n\r\n");
        r
    };
    for i in 0..3 {
        let request = request(&format!("s{i}"));
        let got = r.from_client(t0, sa(phone), 0, &request);
        assert_eq!(got, ClientAction::Reject503);
        let reply = r.write_503(t0, &request, 30, &mut buf).expect("a 503");
        assert!(reply.starts_with(b"SIP/2.0 503 Service Unavailable\r\n"));
        assert!(reply.len() <= request.len());
        let text = String::from_utf8_lossy(reply);
        assert!(text.contains(&format!("Call-ID: s{i}\r\n")), "{text}");
        assert!(text.contains("Retry-After: 30\r\n"), "{text}");
    }
    assert_eq!(
        r.from_client(t0, sa(phone), 0, &req("OPTIONS", "over")),
        ClientAction::Drop(DropReason::NoBackend)
    );
    assert_eq!(r.counters().suppressed(Suppressed::Rate), 1);
    // A 503 the router granted but the budget spent meanwhile: not written.
    assert_eq!(r.write_503(t0, &request("x"), 30, &mut buf), None);
    assert_eq!(r.counters().suppressed(Suppressed::Rate), 2);
    let later = t0 + Duration::from_millis(400);
    assert_eq!(
        r.from_client(later, sa(phone), 0, &req("OPTIONS", "later")),
        ClientAction::Reject503
    );
    assert_eq!(r.counters().replies_503, 3);
    // A buffer too small for the answer gets none.
    let request = request("small");
    let n = request.len() / 2;
    assert_eq!(r.write_503(later, &request, 30, &mut buf[..n]), None);
    assert_eq!(r.counters().replies_503, 3);
    assert_eq!(r.counters().suppressed(Suppressed::TooLarge), 1);
    assert_eq!(r.counters().suppressed(Suppressed::LargerThanRequest), 10);
}

#[test]
fn source_port_zero_gets_no_flow() {
    let t0 = Instant::now();
    let mut r = router(&with_access(""));
    // The static peer's flow exists from the start.
    let before = r.flow_count();
    for from in ["198.51.100.7:0", "[2001:db8::7]:0"] {
        assert_eq!(
            action(&mut r, t0, from, &req("REGISTER", "p0")),
            Some(DropReason::BadSource),
            "{from}"
        );
    }
    assert_eq!(r.flow_count(), before);
    assert_eq!(r.counters().dropped(DropReason::BadSource), 2);
    assert_eq!(
        action(&mut r, t0, "198.51.100.7:5060", &req("REGISTER", "p1")),
        None
    );
}

/// A flow's unanswered entries outlive it (they do not hold it); when they expire
/// they must not count against the next flow on its relay endpoint, whose own
/// entries would then be under-counted and its quota exceeded. The endpoint waits
/// out its quarantine before the next flow gets it (no flow gets it sooner: the pool
/// is exhausted meanwhile).
#[test]
fn entries_of_a_gone_flow_never_count_for_the_next_flow_on_its_endpoint() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut r = router(&config(
        "unanswered_idle = \"5s\"\n[limits]\nmax_pins_per_flow = 2\n",
    ));
    let a = "198.51.100.1:1000";
    assert_eq!(action(&mut r, t0, a, &req("INVITE", "a0")), None);
    let a_port = r.flow_of(&sa(a)).unwrap().relay_port;
    for k in 1..=6 {
        r.handle_timeout(t0 + s(k));
    }
    assert!(r.flow_of(&sa(a)).is_none(), "unanswered: gone after 5 s");
    // The three never-used endpoints go first; A's is in quarantine. (One source:
    // the new-flow limiter's table is as small as the flow table.)
    let t6 = t0 + s(6);
    for b in ["198.51.100.2:1", "198.51.100.2:2", "198.51.100.2:3"] {
        assert_eq!(action(&mut r, t6, b, &req("OPTIONS", b)), None);
    }
    let e = "198.51.100.2:4";
    assert_eq!(
        action(&mut r, t6, e, &req("INVITE", "e0")),
        Some(DropReason::NoRelayPort)
    );
    // After the quarantine the fourth flow gets A's endpoint.
    for k in 7..=40 {
        r.handle_timeout(t0 + s(k));
    }
    let t40 = t0 + s(40);
    assert_eq!(action(&mut r, t40, e, &req("INVITE", "e0")), None);
    let f = r.flow_of(&sa(e)).unwrap();
    let (e_port, home) = (f.relay_port, f.home);
    assert_eq!(e_port, a_port);
    // A backend reaches it: it lives `flow_idle` (30 s) from its last datagram.
    r.from_backend(t40, e_port, addr_of(home), &req("OPTIONS", "ping"));
    assert_eq!(action(&mut r, t40, e, &req("INVITE", "e1")), None);
    assert_eq!(
        action(&mut r, t40, e, &req("INVITE", "e2")),
        Some(DropReason::PinQuota)
    );
    // E's two are still open until 32 s after they were.
    for k in 41..=60 {
        r.handle_timeout(t0 + s(k));
    }
    assert_eq!(
        action(&mut r, t0 + s(60), e, &req("INVITE", "e3")),
        Some(DropReason::PinQuota)
    );
}
