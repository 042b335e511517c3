//! A call longer than `dialog_idle` on the standby's mirror: its in-dialog traffic keeps
//! the master's entry alive, and the sweep's re-sends keep the standby's.

use super::*;

/// One second of a pair's life: both sweep when due, and the master's changes reach
/// the standby. Returns the dialog items the master sent and whether the standby sent
/// any (it must not echo what it mirrors).
fn tick(master: &mut Router, standby: &mut Router, now: Instant) -> (usize, bool) {
    for r in [&mut *master, &mut *standby] {
        if r.poll_timeout().is_none_or(|t| t <= now) {
            r.handle_timeout(now);
        }
    }
    let mut items = vec![];
    master.take_sync(&mut items);
    let sent = items
        .iter()
        .filter(|i| matches!(i, Item::Dialog { .. }))
        .count();
    for it in items {
        standby.apply_sync(now, it);
    }
    let mut echo = vec![];
    standby.take_sync(&mut echo);
    (sent, echo.iter().any(|i| matches!(i, Item::Dialog { .. })))
}

/// A master and its standby (peer alive), and a registered phone the other backend
/// (not its home) has called: the call is established on the master.
struct Pair {
    t0: Instant,
    idle: Duration,
    master: Router,
    standby: Router,
    port: RelayPort,
    home: BackendId,
    other: BackendId,
}

const PHONE: &str = "198.51.100.7:40000";

impl Pair {
    fn new() -> Pair {
        let t0 = Instant::now();
        let cfg = config("");
        let (mut master, mut standby) = (synced(&cfg), synced(&cfg));
        standby.set_peer_alive(t0, true);
        let (port, home) = client(&mut master, t0, PHONE, &req("REGISTER", "reg"));
        let other = other_of(home);
        let mut p = Pair {
            t0,
            idle: cfg.timeouts.dialog_idle,
            master,
            standby,
            port,
            home,
            other,
        };
        p.register(t0);
        p.master
            .from_backend(t0, port, addr_of(other), &req("INVITE", "call"));
        assert_eq!(
            client(&mut p.master, t0, PHONE, &resp(200, "call", "INVITE", "")),
            (port, other)
        );
        p
    }

    /// The home backend's 200 to the phone's REGISTER (the flow stays registered).
    fn register(&mut self, t: Instant) {
        let ok = resp(200, "reg", "REGISTER", "Expires: 600\r\n");
        self.master
            .from_backend(t, self.port, addr_of(self.home), &ok);
    }

    /// One second of virtual time to `t`: the phone re-registers every 300 s, and
    /// [`tick`].
    fn second(&mut self, t: Instant) -> (usize, bool) {
        if (t - self.t0).as_secs() % 300 == 0 {
            client(&mut self.master, t, PHONE, &req("REGISTER", "reg"));
            self.register(t);
        }
        tick(&mut self.master, &mut self.standby, t)
    }
}

#[test]
fn a_call_longer_than_dialog_idle_stays_pinned_on_the_standby_and_ends_there_too() {
    let mut p = Pair::new();
    let (t0, idle, port, other) = (p.t0, p.idle, p.port, p.other);
    // Five times dialog_idle, a re-INVITE from the phone every 0.4 × dialog_idle.
    let long = idle * 5;
    let mut sent = 0;
    let mut t = t0;
    while t < t0 + long {
        t += Duration::from_secs(1);
        let s = (t - t0).as_secs();
        if s % (idle.as_secs() * 2 / 5) == 0 {
            assert_eq!(
                client(&mut p.master, t, PHONE, &req("INVITE", "call")),
                (port, other),
                "re-INVITE at {s} s on the master"
            );
            p.master
                .from_backend(t, port, addr_of(other), &resp(200, "call", "INVITE", ""));
        }
        let (n, echo) = p.second(t);
        assert!(!echo, "the standby echoed a dialog item at {s} s");
        sent += n;
    }
    // One re-send per refreshed period at most, not one per message or per sweep.
    let periods = (long.as_secs() / (idle.as_secs() / 4)) as usize;
    assert!(
        (1..=periods + 1).contains(&sent),
        "{sent} dialog items in {} periods",
        periods
    );
    assert_eq!(p.standby.dialog_count(), 1, "the standby holds the call");
    // The call goes quiet (no BYE, the far end is gone): the standby lets go too, at
    // most two re-send periods and the slack after the master (the last re-send comes
    // up to a period after the last traffic; the copy outlives it by a period more).
    let quiet = t;
    let period = idle / 4;
    while t < quiet + idle + period * 2 + Duration::from_secs(40) {
        t += Duration::from_secs(1);
        p.second(t);
        if t == quiet + idle + Duration::from_secs(1) {
            assert_eq!(
                p.master.dialog_count(),
                0,
                "the master let the quiet call go"
            );
        }
    }
    assert_eq!(
        p.standby.dialog_count(),
        0,
        "the standby let the quiet call go"
    );
}

#[test]
fn after_a_takeover_a_long_call_still_reaches_its_backend() {
    let mut p = Pair::new();
    let (t0, idle, port, other) = (p.t0, p.idle, p.port, p.other);
    // Three times dialog_idle with session refreshes from the far end.
    let mut t = t0;
    while t < t0 + idle * 3 {
        t += Duration::from_secs(1);
        if (t - t0).as_secs() % (idle.as_secs() / 2) == 0 {
            p.master
                .from_backend(t, port, addr_of(other), &req("UPDATE", "call"));
            client(&mut p.master, t, PHONE, &resp(200, "call", "UPDATE", ""));
        }
        p.second(t);
    }
    // The master dies; the standby takes the VIP and the phone hangs up.
    p.standby.set_peer_alive(t, false);
    assert_eq!(
        client(&mut p.standby, t, PHONE, &req("BYE", "call")),
        (port, other),
        "the BYE goes to the backend that has the call"
    );
}

const PBX: &str = "198.51.100.9:5060";

/// A call from the PBX that a backend answers: established on `r`.
fn pbx_call(r: &mut Router, t: Instant, cid: &str) {
    let (port, b) = client(r, t, PBX, &req("INVITE", cid));
    r.from_backend(t, port, addr_of(b), &resp(200, cid, "INVITE", ""));
}

/// The re-sends are a trickle over the period, one shard at a time, not a burst that
/// would overflow the sync queue (and cost the peer a full table) with many calls.
#[test]
fn refreshed_calls_are_re_sent_once_per_period_spread_over_it() {
    let t0 = Instant::now();
    let cfg = config("");
    let period = cfg.timeouts.dialog_idle / 4;
    let mut master = synced(&cfg);
    const CALLS: usize = 2560;
    for i in 0..CALLS {
        pbx_call(&mut master, t0, &format!("call-{i}"));
    }
    let mut items = vec![];
    master.take_sync(&mut items);
    // In-dialog traffic on every call (an ACK each) refreshes without an item.
    let t1 = t0 + Duration::from_secs(1);
    for i in 0..CALLS {
        client(&mut master, t1, PBX, &req("ACK", &format!("call-{i}")));
    }
    items.clear();
    master.take_sync(&mut items);
    assert!(items.iter().all(|i| !matches!(i, Item::Dialog { .. })));
    let (mut total, mut most) = (0, 0);
    let mut t = t1;
    while t < t1 + period + Duration::from_secs(2) {
        t += Duration::from_millis(250);
        if master.poll_timeout().is_none_or(|d| d <= t) {
            master.handle_timeout(t);
        }
        items.clear();
        assert!(!master.take_sync(&mut items), "the sync queue overflowed");
        let n = items
            .iter()
            .filter(|i| matches!(i, Item::Dialog { .. }))
            .count();
        total += n;
        most = most.max(n);
    }
    assert_eq!(total, CALLS, "each refreshed call once in a period");
    // About CALLS / 256 per shard; a sweep call takes one or two shards' turns.
    assert!(most <= CALLS / 256 * 5, "{most} items in one sweep call");
}

/// Refreshed calls all due at once (a sweep a round late) while the queue already holds
/// other changes: the re-sends take at most `RESEND_PER_CALL` per call and leave a
/// quarter of the queue for the decisions before its flush, so neither they nor the
/// decisions overflow it (the peer would need a full table); each call goes out once.
#[test]
fn re_sends_wait_for_room_in_the_sync_queue() {
    let t0 = Instant::now();
    let cfg = config("");
    let period = cfg.timeouts.dialog_idle / 4;
    let mut master = synced(&cfg);
    const CALLS: usize = 9000;
    let mut items = vec![];
    for i in 0..CALLS {
        let cid = format!("call-{i}");
        pbx_call(&mut master, t0, &cid);
        client(&mut master, t0, PBX, &req("ACK", &cid));
        if i % 1000 == 0 {
            master.take_sync(&mut items);
        }
    }
    master.take_sync(&mut items);
    let refreshed: std::collections::HashSet<_> = (0..CALLS)
        .map(|i| master.dialogs.key(format!("call-{i}").as_bytes()))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut t = t0 + period * 2;
    for round in 0..20 {
        if round == 0 {
            // 6,000 changes queued before the timer call (two per new call) and 1,500
            // after it, before the flush.
            for i in 0..3000 {
                pbx_call(&mut master, t, &format!("new-{i}"));
            }
            master.handle_timeout(t);
            for i in 3000..3750 {
                pbx_call(&mut master, t, &format!("new-{i}"));
            }
        } else {
            master.handle_timeout(t);
        }
        items.clear();
        assert!(!master.take_sync(&mut items), "the sync queue overflowed");
        for it in &items {
            if let Item::Dialog { key, .. } = it
                && refreshed.contains(key)
            {
                assert!(seen.insert(*key), "sent twice");
            }
        }
        t += Duration::from_millis(500);
    }
    assert_eq!(seen.len(), CALLS, "each refreshed call once");
}

/// The worst case: a call quiet for nearly `dialog_idle`, then refreshed just when its
/// shard's turn may have passed, so the re-send comes up to a quarter of `dialog_idle`
/// later. The standby's copy (from the call's set-up) must last until then: at no
/// moment may a takeover find the call gone.
#[test]
fn a_refresh_after_a_long_quiet_reaches_the_standby_before_its_copy_expires() {
    let mut p = Pair::new();
    let (t0, idle, port, other) = (p.t0, p.idle, p.port, p.other);
    let refresh_at = t0 + idle - Duration::from_secs(1);
    let end = refresh_at + idle / 4 + Duration::from_secs(2);
    let mut t = t0;
    while t < end {
        t += Duration::from_secs(1);
        if t == refresh_at {
            client(&mut p.master, t, PHONE, &req("INFO", "call"));
            p.master
                .from_backend(t, port, addr_of(other), &resp(200, "call", "INFO", ""));
        }
        p.second(t);
        assert_eq!(
            p.standby.dialog_count(),
            1,
            "the standby lost the call {} s in",
            (t - t0).as_secs()
        );
    }
}
