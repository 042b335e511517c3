//! Table-driven tests with virtual time: a scripted backend answers each probe.

use super::*;

#[derive(Debug, Clone, Copy)]
enum B {
    /// Final reply with this code after this many ms.
    Reply(u16, u64),
    /// 100 Trying at once, then 200 after this many ms.
    Trying(u64),
    Silent,
    Icmp,
}

fn settings(fall: u32, rise: u32) -> ProbeSettings {
    ProbeSettings {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(50),
        rise,
        fall,
        alive: vec![200..=499, 600..=699],
    }
}

/// Runs one backend through `script` (probe n gets `script[n % len]`) for `ms`
/// milliseconds of virtual time; returns (time ms, event) pairs.
fn run(s: ProbeSettings, script: &[B], ms: u64) -> (Vec<(u64, Event)>, Checker) {
    let t0 = Instant::now();
    let at = |m: u64| t0 + Duration::from_millis(m);
    let mut c = Checker::new(s, 1, t0);
    let mut pending: Vec<(u64, u32, u16)> = vec![]; // (due ms, seq, code)
    let mut icmp: Vec<u64> = vec![];
    let mut probes = 0usize;
    let mut out = vec![];
    for now in 0..=ms {
        for &(_, seq, code) in pending.iter().filter(|p| p.0 == now) {
            c.handle_reply(at(now), BackendId::new(0), seq, code);
        }
        pending.retain(|p| p.0 != now);
        if icmp.contains(&now) {
            c.handle_icmp(at(now), BackendId::new(0), true);
            icmp.retain(|&t| t != now);
        }
        if c.poll_timeout().is_some_and(|t| t <= at(now)) {
            c.handle_timeout(at(now));
        }
        while let Some(p) = c.poll_transmit() {
            match script[probes % script.len()] {
                B::Reply(code, d) => pending.push((now + d, p.seq, code)),
                B::Trying(d) => {
                    pending.push((now, p.seq, 100));
                    pending.push((now + d, p.seq, 200));
                }
                B::Silent => {}
                B::Icmp => icmp.push(now + 1),
            }
            probes += 1;
        }
        while let Some(e) = c.poll_event() {
            out.push((now, e));
        }
    }
    (out, c)
}

fn up(r: Reason) -> Event {
    Event::Up {
        backend: BackendId::new(0),
        reason: r,
    }
}
fn down(r: Reason) -> Event {
    Event::Down {
        backend: BackendId::new(0),
        reason: r,
    }
}

#[test]
fn scripted_backends() {
    use B::*;
    #[allow(clippy::type_complexity)]
    let table: &[(&str, u32, u32, &[B], u64, &[(u64, Event)])] = &[
        (
            "first reply decides at once",
            2,
            2,
            &[Reply(200, 3)],
            1000,
            &[(3, up(Reason::Probe))],
        ),
        (
            "404 counts as alive",
            2,
            2,
            &[Reply(404, 1)],
            300,
            &[(1, up(Reason::Probe))],
        ),
        (
            "provisional then final",
            2,
            2,
            &[Trying(10)],
            300,
            &[(10, up(Reason::Probe))],
        ),
        (
            "silent from the start: down at first timeout",
            2,
            2,
            &[Silent],
            300,
            &[(50, down(Reason::Timeout))],
        ),
        (
            "goes silent: down after fall timeouts; rise 1 returns it",
            3,
            1,
            &[Reply(200, 1), Silent, Silent, Silent, Silent],
            800,
            &[
                (1, up(Reason::Probe)),
                (350, down(Reason::Timeout)),
                (501, up(Reason::Probe)),
            ],
        ),
        (
            "answers every other probe: never goes down",
            2,
            2,
            &[Reply(200, 1), Silent],
            2000,
            &[(1, up(Reason::Probe))],
        ),
        (
            "late replies are failures, and do not count when they arrive",
            2,
            2,
            &[Reply(200, 1), Reply(200, 70), Reply(200, 70)],
            1000,
            &[(1, up(Reason::Probe)), (250, down(Reason::Timeout))],
        ),
        (
            "503 is down when 5xx is not alive; rise needs two",
            2,
            2,
            &[
                Reply(200, 1),
                Reply(503, 1),
                Reply(503, 1),
                Reply(200, 1),
                Reply(200, 1),
            ],
            450,
            &[
                (1, up(Reason::Probe)),
                (201, down(Reason::ReplyCode(503))),
                (401, up(Reason::Probe)),
            ],
        ),
        (
            "ICMP on a probe is decisive",
            5,
            2,
            &[Reply(200, 1), Icmp, Reply(200, 1), Reply(200, 1)],
            350,
            &[
                (1, up(Reason::Probe)),
                (101, down(Reason::Icmp)),
                (301, up(Reason::Probe)),
            ],
        ),
    ];
    for (name, fall, rise, script, ms, want) in table {
        let (got, _) = run(settings(*fall, *rise), script, *ms);
        assert_eq!(&got, want, "{name}");
    }
}

#[test]
fn late_and_stray_replies_are_counted_not_used() {
    let (_, c) = run(settings(2, 2), &[B::Reply(200, 70)], 1000);
    assert!(c.stale_replies >= 9, "{}", c.stale_replies);
    let t0 = Instant::now();
    let mut c = Checker::new(settings(2, 2), 1, t0);
    c.handle_timeout(t0);
    let p = c.poll_transmit().unwrap();
    assert_eq!(
        c.handle_reply(t0, BackendId::new(0), p.seq + 1, 200),
        None,
        "wrong seq"
    );
    assert_eq!(
        c.handle_reply(t0, BackendId::new(7), p.seq, 200),
        None,
        "no such backend"
    );
    assert_eq!(c.stale_replies, 2);
    assert_eq!(c.state(BackendId::new(0)), Health::Unknown);
    let rtt = c.handle_reply(t0 + Duration::from_millis(4), BackendId::new(0), p.seq, 200);
    assert_eq!(rtt, Some(Duration::from_millis(4)));
    assert_eq!(
        c.last_rtt(BackendId::new(0)),
        Some(Duration::from_millis(4))
    );
    assert_eq!(
        c.handle_reply(t0, BackendId::new(0), p.seq, 200),
        None,
        "duplicate"
    );
}

#[test]
fn icmp_on_relayed_traffic_probes_at_once_and_the_probes_icmp_decides() {
    let t0 = Instant::now();
    let ms = |m| t0 + Duration::from_millis(m);
    let mut c = Checker::new(settings(3, 2), 1, t0);
    c.handle_timeout(t0);
    let p = c.poll_transmit().unwrap();
    c.handle_reply(ms(1), BackendId::new(0), p.seq, 200);
    assert_eq!(c.poll_event(), Some(up(Reason::Probe)));
    assert_eq!(c.poll_timeout(), Some(ms(100)));
    // Relayed traffic bounced at 30 ms: a probe goes out now, not at 100 ms.
    c.handle_icmp(ms(30), BackendId::new(0), false);
    assert_eq!(c.poll_timeout(), Some(ms(30)));
    c.handle_timeout(ms(30));
    let p = c.poll_transmit().unwrap();
    c.handle_icmp(ms(31), BackendId::new(0), true);
    assert_eq!(c.poll_event(), Some(down(Reason::Icmp)));
    let _ = p;
    // A backend made suspect that answers stays up.
    let mut c = Checker::new(settings(3, 2), 1, t0);
    c.handle_timeout(t0);
    let p = c.poll_transmit().unwrap();
    c.handle_reply(ms(1), BackendId::new(0), p.seq, 200);
    c.poll_event();
    c.handle_icmp(ms(30), BackendId::new(0), false);
    c.handle_timeout(ms(30));
    let p = c.poll_transmit().unwrap();
    c.handle_reply(ms(31), BackendId::new(0), p.seq, 200);
    assert_eq!(c.poll_event(), None);
    assert_eq!(c.state(BackendId::new(0)), Health::Up);
}

/// Forged ICMP errors on relayed traffic without a quote, one per millisecond: they
/// need no secret (only a relay port). One probe lost meanwhile is one failure of
/// `fall` (3), not a backend down.
#[test]
fn forged_relay_icmp_does_not_lower_fall() {
    let t0 = Instant::now();
    let at = |m: u64| t0 + Duration::from_millis(m);
    let b = BackendId::new(0);
    let mut c = Checker::new(settings(3, 2), 1, t0);
    c.handle_timeout(t0);
    let p = c.poll_transmit().unwrap();
    c.handle_reply(at(1), b, p.seq, 200);
    assert_eq!(c.poll_event(), Some(up(Reason::Probe)));
    let mut lost = false;
    for now in 2..=1000u64 {
        c.handle_icmp(at(now), b, false);
        if c.poll_timeout().is_some_and(|t| t <= at(now)) {
            c.handle_timeout(at(now));
        }
        while let Some(p) = c.poll_transmit() {
            // The first probe after the flood starts is lost; the others are answered.
            if lost {
                c.handle_reply(at(now), b, p.seq, 200);
            }
            lost = true;
        }
    }
    assert_eq!(c.state(b), Health::Up);
    assert_eq!(c.poll_event(), None);
}

/// Forged ICMP errors on relayed traffic, one per millisecond for a second, at a backend
/// that answers every probe in 1 ms: early probes go out at most every quarter interval
/// (without the pacing, one per round trip: 1001 here), the backend stays up, and a
/// real crash is still probed within a quarter interval.
#[test]
fn icmp_errors_call_for_early_probes_a_few_times_per_interval_at_most() {
    let t0 = Instant::now();
    let at = |m: u64| t0 + Duration::from_millis(m);
    let b = BackendId::new(0);
    let mut c = Checker::new(settings(3, 2), 1, t0);
    let mut pending: Vec<(u64, u32)> = vec![];
    let mut sent = vec![];
    for now in 0..=1000u64 {
        for &(_, seq) in pending.iter().filter(|p| p.0 == now) {
            c.handle_reply(at(now), b, seq, 200);
        }
        pending.retain(|p| p.0 != now);
        if now > 0 {
            c.handle_icmp(at(now), b, false);
        }
        if c.poll_timeout().is_some_and(|t| t <= at(now)) {
            c.handle_timeout(at(now));
        }
        while let Some(p) = c.poll_transmit() {
            pending.push((now + 1, p.seq));
            sent.push(now);
        }
    }
    assert_eq!(c.state(b), Health::Up);
    assert!(
        (40..=41).contains(&sent.len()),
        "{} probes: {sent:?}",
        sent.len()
    );
    assert!(sent.windows(2).all(|w| w[1] - w[0] >= 25), "{sent:?}");
    // Without a flood: an error probes at once, or a quarter interval after the last
    // probe if that was sooner.
    let mut c = Checker::new(settings(3, 2), 1, t0);
    c.handle_timeout(at(0));
    let p = c.poll_transmit().unwrap();
    c.handle_reply(at(1), b, p.seq, 200);
    c.handle_icmp(at(10), b, false);
    assert_eq!(c.poll_timeout(), Some(at(25)));
    c.handle_timeout(at(25));
    let p = c.poll_transmit().unwrap();
    c.handle_reply(at(26), b, p.seq, 200);
    c.handle_icmp(at(60), b, false);
    assert_eq!(c.poll_timeout(), Some(at(60)));
}

/// A reload that shortens the interval applies at once: the next probe comes within
/// the new interval, not at the end of the old one.
#[test]
fn a_shorter_interval_applies_at_once() {
    let t0 = Instant::now();
    let slow = ProbeSettings {
        interval: Duration::from_secs(600),
        ..settings(1, 1)
    };
    let mut c = Checker::new(slow, 1, t0);
    c.handle_timeout(t0);
    let p = c.poll_transmit().expect("first probe at once");
    c.handle_reply(t0, BackendId::new(0), p.seq, 200);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(600)));
    let t1 = t0 + Duration::from_secs(1);
    c.set_settings(settings(1, 1), t1);
    assert_eq!(c.poll_timeout(), Some(t1 + Duration::from_millis(100)));
}
