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

#[test]
fn a_call_longer_than_dialog_idle_stays_pinned_on_the_standby_and_ends_there_too() {
    let t0 = Instant::now();
    let cfg = config("");
    let idle = cfg.timeouts.dialog_idle;
    let (mut master, mut standby) = (synced(&cfg), synced(&cfg));
    standby.set_peer_alive(t0, true);
    let phone = "198.51.100.7:40000";
    let (port, home) = client(&mut master, t0, phone, &req("REGISTER", "reg"));
    let ok = resp(200, "reg", "REGISTER", "Expires: 600\r\n");
    master.from_backend(t0, port, addr_of(home), &ok);
    // The other backend calls the phone; the phone answers.
    let other = other_of(home);
    master.from_backend(t0, port, addr_of(other), &req("INVITE", "call"));
    assert_eq!(
        client(&mut master, t0, phone, &resp(200, "call", "INVITE", "")),
        (port, other)
    );
    // Five times dialog_idle, a re-INVITE from the phone every 0.4 × dialog_idle (and
    // a REGISTER every 300 s).
    let long = idle * 5;
    let mut sent = 0;
    let mut t = t0;
    while t < t0 + long {
        t += Duration::from_secs(1);
        let s = (t - t0).as_secs();
        if s % (idle.as_secs() * 2 / 5) == 0 {
            assert_eq!(
                client(&mut master, t, phone, &req("INVITE", "call")),
                (port, other),
                "re-INVITE at {s} s on the master"
            );
            master.from_backend(t, port, addr_of(other), &resp(200, "call", "INVITE", ""));
        }
        if s % 300 == 0 {
            client(&mut master, t, phone, &req("REGISTER", "reg"));
            master.from_backend(t, port, addr_of(home), &ok);
        }
        let (n, echo) = tick(&mut master, &mut standby, t);
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
    assert_eq!(standby.dialog_count(), 1, "the standby holds the call");
    // The call goes quiet (no BYE, the far end is gone): the standby lets go too, at
    // most two re-send periods and the slack after the master (the last re-send comes
    // up to a period after the last traffic; the copy outlives it by a period more).
    let quiet = t;
    let period = idle / 4;
    while t < quiet + idle + period * 2 + Duration::from_secs(40) {
        t += Duration::from_secs(1);
        if (t - t0).as_secs() % 300 == 0 {
            client(&mut master, t, phone, &req("REGISTER", "reg"));
            master.from_backend(t, port, addr_of(home), &ok);
        }
        tick(&mut master, &mut standby, t);
        if t == quiet + idle + Duration::from_secs(1) {
            assert_eq!(master.dialog_count(), 0, "the master let the quiet call go");
        }
    }
    assert_eq!(
        standby.dialog_count(),
        0,
        "the standby let the quiet call go"
    );
}

#[test]
fn after_a_takeover_a_long_call_still_reaches_its_backend() {
    let t0 = Instant::now();
    let cfg = config("");
    let idle = cfg.timeouts.dialog_idle;
    let (mut master, mut standby) = (synced(&cfg), synced(&cfg));
    standby.set_peer_alive(t0, true);
    let phone = "198.51.100.7:40000";
    let (port, home) = client(&mut master, t0, phone, &req("REGISTER", "reg"));
    let ok = resp(200, "reg", "REGISTER", "Expires: 600\r\n");
    master.from_backend(t0, port, addr_of(home), &ok);
    let other = other_of(home);
    master.from_backend(t0, port, addr_of(other), &req("INVITE", "call"));
    client(&mut master, t0, phone, &resp(200, "call", "INVITE", ""));
    // Three times dialog_idle with session refreshes from the far end.
    let mut t = t0;
    while t < t0 + idle * 3 {
        t += Duration::from_secs(1);
        let s = (t - t0).as_secs();
        if s % (idle.as_secs() / 2) == 0 {
            master.from_backend(t, port, addr_of(other), &req("UPDATE", "call"));
            client(&mut master, t, phone, &resp(200, "call", "UPDATE", ""));
        }
        if s % 300 == 0 {
            client(&mut master, t, phone, &req("REGISTER", "reg"));
            master.from_backend(t, port, addr_of(home), &ok);
        }
        tick(&mut master, &mut standby, t);
    }
    // The master dies; the standby takes the VIP and the phone hangs up.
    standby.set_peer_alive(t, false);
    assert_eq!(
        client(&mut standby, t, phone, &req("BYE", "call")),
        (port, other),
        "the BYE goes to the backend that has the call"
    );
}

/// The re-sends are a trickle over the period, one shard at a time, not a burst that
/// would overflow the sync queue (and cost the peer a full table) with many calls.
#[test]
fn refreshed_calls_are_re_sent_once_per_period_spread_over_it() {
    let t0 = Instant::now();
    let cfg = config("");
    let period = cfg.timeouts.dialog_idle / 4;
    let mut master = synced(&cfg);
    let pbx = "198.51.100.9:5060";
    const CALLS: usize = 2560;
    for i in 0..CALLS {
        let cid = format!("call-{i}");
        let (port, b) = client(&mut master, t0, pbx, &req("INVITE", &cid));
        master.from_backend(t0, port, addr_of(b), &resp(200, &cid, "INVITE", ""));
    }
    let mut items = vec![];
    master.take_sync(&mut items);
    // In-dialog traffic on every call (an ACK each) refreshes without an item.
    let t1 = t0 + Duration::from_secs(1);
    for i in 0..CALLS {
        client(&mut master, t1, pbx, &req("ACK", &format!("call-{i}")));
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

/// More refreshed calls than the sync queue holds, all due at once (a sweep a round
/// late): the re-sends fill the queue only to its reserve and go on after the flush,
/// so the peer never needs a full table for them.
#[test]
fn re_sends_wait_for_room_in_the_sync_queue() {
    let t0 = Instant::now();
    let cfg = config("");
    let period = cfg.timeouts.dialog_idle / 4;
    let mut master = synced(&cfg);
    let pbx = "198.51.100.9:5060";
    const CALLS: usize = 9000;
    let mut items = vec![];
    for i in 0..CALLS {
        let cid = format!("call-{i}");
        let (port, b) = client(&mut master, t0, pbx, &req("INVITE", &cid));
        master.from_backend(t0, port, addr_of(b), &resp(200, &cid, "INVITE", ""));
        client(&mut master, t0, pbx, &req("ACK", &cid));
        if i % 1000 == 0 {
            master.take_sync(&mut items);
        }
    }
    master.take_sync(&mut items);
    let mut total = 0;
    let mut t = t0 + period * 2;
    for _ in 0..20 {
        master.handle_timeout(t);
        items.clear();
        assert!(!master.take_sync(&mut items), "the sync queue overflowed");
        assert!(items.len() <= SYNC_QUEUE, "{}", items.len());
        total += items.len();
        t += Duration::from_millis(500);
    }
    assert_eq!(total, CALLS, "each refreshed call once");
}
