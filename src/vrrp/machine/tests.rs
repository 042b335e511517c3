//! Unit tests of one machine. Elections in a simulated network with virtual time
//! are in `network` (driven by `sim`).

mod network;
mod sim;

use super::*;

pub(super) const MS: Duration = Duration::from_millis(1);
pub(super) const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

pub(super) fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, last)
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn settings(priority: u8, last: u8) -> Settings {
    Settings {
        vrid: 51,
        priority,
        advert_interval: ms(1000),
        preempt: true,
        preempt_delay: Duration::ZERO,
        primary_ip: ip(last),
        accept_mode: false,
        vips: vec![VIP],
    }
}

pub(super) fn advert(priority: u8, interval_cs: u16) -> Repr {
    Repr {
        vrid: 51,
        priority,
        max_advert_int_cs: interval_cs,
        addrs: vec![VIP],
    }
}

fn drain(m: &mut Machine) -> (Vec<Event>, Vec<Repr>) {
    let events = std::iter::from_fn(|| m.poll_event()).collect();
    let tx = std::iter::from_fn(|| m.poll_transmit()).collect();
    (events, tx)
}

fn started(s: Settings, now: Instant) -> Machine {
    let mut m = Machine::new(s, now);
    m.handle_input(now, Input::Startup);
    drain(&mut m);
    m
}

fn master(s: Settings, now: Instant) -> Machine {
    let mut m = started(s, now);
    let t = m.poll_timeout().unwrap();
    m.handle_timeout(t);
    assert_eq!(m.state(), State::Master);
    drain(&mut m);
    m
}

#[test]
fn timer_formulas_table() {
    // (priority, Master_Adver_Interval cs, Skew_Time cs, Master_Down_Interval cs),
    // worked by hand from RFC 5798 §6.1 with integer division.
    let rows: [(u8, u16, u32, u32); 9] = [
        (100, 100, 60, 360), // 156 * 100 / 256 = 60.9
        (200, 100, 21, 321), // 56 * 100 / 256 = 21.9
        (150, 100, 41, 341),
        (255, 100, 0, 300),
        (1, 100, 99, 399),
        (100, 3, 1, 10), // 30 ms adverts: 468 / 256 = 1.8
        (200, 3, 0, 9),
        (1, 4095, 4079, 16364),
        (254, 1, 0, 3),
    ];
    for (prio, int, skew, mdi) in rows {
        assert_eq!(skew_time_cs(prio, int), skew, "skew {prio} {int}");
        assert_eq!(master_down_interval_cs(prio, int), mdi, "mdi {prio} {int}");
        let s = Settings {
            advert_interval: ms(u64::from(int) * 10),
            ..settings(prio, 1)
        };
        let m = started(s, Instant::now());
        assert_eq!(m.skew_time(), ms(u64::from(skew) * 10));
        assert_eq!(m.master_down_interval(), ms(u64::from(mdi) * 10));
    }
}

#[test]
fn settings_interval_and_validation_table() {
    let rows: [(Duration, u16, bool); 7] = [
        (ms(1000), 100, true),
        (ms(30), 3, true),
        (ms(10), 1, true),
        (ms(40_950), 4095, true),
        (ms(35), 4, false), // not whole centiseconds: rounds to nearest
        (ms(5), 1, false),
        (ms(60_000), 4095, false),
    ];
    for (d, cs, valid) in rows {
        let s = Settings {
            advert_interval: d,
            ..settings(100, 1)
        };
        assert_eq!(s.advert_interval_cs(), cs, "{d:?}");
        assert_eq!(s.validate().is_ok(), valid, "{d:?}");
    }
    let bad = [
        (
            Settings {
                vrid: 0,
                ..settings(100, 1)
            },
            SettingsError::Vrid,
        ),
        (settings(0, 1), SettingsError::Priority),
        (
            Settings {
                vips: vec![VIP; 256],
                ..settings(100, 1)
            },
            SettingsError::TooManyVips,
        ),
    ];
    for (s, e) in bad {
        assert_eq!(s.validate(), Err(e));
    }
}

#[test]
fn startup_non_owner_enters_backup_with_master_down_timer() {
    let t = Instant::now();
    let mut m = Machine::new(settings(100, 1), t);
    assert_eq!(m.state(), State::Initialize);
    assert_eq!(m.poll_timeout(), None);
    m.handle_input(t, Input::Startup);
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.poll_timeout(), Some(t + ms(3600)));
    let (ev, tx) = drain(&mut m);
    assert_eq!(
        ev,
        [Event::BecameBackup {
            cause: Cause::Startup
        }]
    );
    assert!(tx.is_empty());
}

#[test]
fn owner_startup_goes_master_at_once() {
    let t = Instant::now();
    let mut m = Machine::new(settings(255, 1), t);
    m.handle_input(t, Input::Startup);
    assert_eq!(m.state(), State::Master);
    let (ev, tx) = drain(&mut m);
    assert_eq!(
        ev,
        [
            Event::BecameMaster {
                cause: Cause::StartupOwner
            },
            Event::AddVips,
            Event::SendGarp
        ]
    );
    assert_eq!(tx, [advert(255, 100)]);
    assert_eq!(m.poll_timeout(), Some(t + ms(1000)));
    m.handle_timeout(t + ms(1000));
    assert_eq!(drain(&mut m).1, [advert(255, 100)]);
    assert_eq!(m.poll_timeout(), Some(t + ms(2000)));
}

#[test]
fn backup_adopts_the_masters_interval() {
    let t = Instant::now();
    let mut m = started(settings(100, 1), t);
    m.handle_input(
        t + ms(500),
        Input::Advert {
            src: ip(2),
            repr: &advert(200, 200),
        },
    );
    assert_eq!(m.master_adver_interval(), ms(2000));
    // 3 * 200 + 156 * 200 / 256 (= 121.875) = 721 cs.
    assert_eq!(m.master_down_interval(), ms(7210));
    assert_eq!(m.poll_timeout(), Some(t + ms(500) + ms(7210)));
    assert_eq!(m.master_ip(), Some(ip(2)));
}

#[test]
fn backup_priority_zero_sets_skew_time() {
    let t = Instant::now();
    let mut m = started(settings(100, 1), t);
    m.handle_input(
        t + ms(10),
        Input::Advert {
            src: ip(2),
            repr: &advert(0, 100),
        },
    );
    assert_eq!(m.poll_timeout(), Some(t + ms(10) + ms(600)));
    m.handle_timeout(t + ms(610));
    assert_eq!(m.state(), State::Master);
    let (ev, _) = drain(&mut m);
    assert_eq!(
        ev[0],
        Event::BecameMaster {
            cause: Cause::PriorityZero
        }
    );
}

/// Priority-0 adverts that keep coming (forged with the master's address, say) do not
/// push the takeover out: the first one's Skew_Time holds.
#[test]
fn repeated_priority_zero_does_not_postpone_the_takeover() {
    let t = Instant::now();
    let mut m = started(settings(100, 1), t);
    for k in 0..5 {
        m.handle_input(
            t + ms(10 + 100 * k),
            Input::Advert {
                src: ip(2),
                repr: &advert(0, 100),
            },
        );
    }
    assert_eq!(m.poll_timeout(), Some(t + ms(10) + ms(600)));
    m.handle_timeout(t + ms(610));
    assert_eq!(m.state(), State::Master);
}

#[test]
fn backup_takes_priority_zero_only_from_the_master_it_follows() {
    let t = Instant::now();
    let mut m = started(settings(100, 1), t);
    let rx = |m: &mut Machine, at, src, p| {
        m.handle_input(
            at,
            Input::Advert {
                src,
                repr: &advert(p, 100),
            },
        )
    };
    rx(&mut m, t + ms(10), ip(2), 200);
    drain(&mut m);
    let down = m.poll_timeout();
    // A third host's "leaving" advert changes nothing, and is reported.
    rx(&mut m, t + ms(20), ip(9), 0);
    assert_eq!(m.poll_timeout(), down);
    assert_eq!(drain(&mut m).0, [Event::ZeroFromNonMaster { src: ip(9) }]);
    m.handle_timeout(t + ms(700));
    assert_eq!(m.state(), State::Backup);
    // The master's own hands over after Skew_Time.
    rx(&mut m, t + ms(800), ip(2), 0);
    assert_eq!(m.poll_timeout(), Some(t + ms(800) + ms(600)));
}

#[test]
fn backup_lower_priority_advert_table() {
    // (preempt, held, timer reset?)
    let rows = [
        (true, false, false),
        (false, false, true),
        (true, true, true),
    ];
    for (preempt, held, reset) in rows {
        let t = Instant::now();
        let s = Settings {
            preempt,
            ..settings(200, 1)
        };
        let mut m = started(s, t);
        m.handle_input(t, Input::HoldPreempt(held));
        let before = m.poll_timeout();
        let at = t + ms(1000);
        m.handle_input(
            at,
            Input::Advert {
                src: ip(2),
                repr: &advert(100, 100),
            },
        );
        let want = if reset { Some(at + ms(3210)) } else { before };
        assert_eq!(m.poll_timeout(), want, "preempt {preempt} held {held}");
        m.handle_timeout(m.poll_timeout().unwrap());
        let cause = if reset {
            Cause::MasterDown
        } else {
            Cause::Preempt
        };
        assert_eq!(drain(&mut m).0[0], Event::BecameMaster { cause });
    }
}

#[test]
fn master_answers_priority_zero_at_once() {
    let t = Instant::now();
    let mut m = master(settings(100, 1), t);
    let at = t + ms(3700);
    m.handle_input(
        at,
        Input::Advert {
            src: ip(2),
            repr: &advert(0, 100),
        },
    );
    assert_eq!(m.state(), State::Master);
    let (ev, tx) = drain(&mut m);
    assert!(ev.is_empty());
    assert_eq!(tx, [advert(100, 100)]);
    assert_eq!(m.poll_timeout(), Some(at + ms(1000)));
}

#[test]
fn master_receiving_other_masters_table() {
    // (our priority, our ip, their priority, their ip, yield cause or None)
    let rows = [
        (100, 1, 200, 2, Some(Cause::HigherPrioritySeen)),
        (100, 3, 200, 2, Some(Cause::HigherPrioritySeen)),
        (100, 1, 100, 2, Some(Cause::SplitBrain)),
        (100, 3, 100, 2, None),
        (200, 1, 100, 2, None),
        (255, 1, 254, 2, None),
        // The address owner never yields, not even to another owner's advert from a
        // higher address (a stray, or forged: adverts are unauthenticated).
        (255, 1, 255, 2, None),
    ];
    for (ours, our_ip, theirs, their_ip, yields) in rows {
        let t = Instant::now();
        let mut m = master(settings(ours, our_ip), t);
        let at = t + ms(5000);
        let repr = advert(theirs, 50);
        m.handle_input(
            at,
            Input::Advert {
                src: ip(their_ip),
                repr: &repr,
            },
        );
        let (ev, tx) = drain(&mut m);
        match yields {
            Some(cause) => {
                assert_eq!(m.state(), State::Backup);
                assert_eq!(ev, [Event::RemoveVips, Event::BecameBackup { cause }]);
                // One last advert on the way out, so a winner that has not heard us
                // re-asserts (and re-sends GARP) after a healed split.
                assert_eq!(tx.len(), 1);
                assert_eq!(tx[0].priority, ours);
                assert_eq!(m.master_adver_interval(), ms(500), "adopts their interval");
                assert_eq!(m.poll_timeout(), Some(at + m.master_down_interval()));
            }
            None => {
                assert_eq!(m.state(), State::Master);
                let seen = Event::OtherMasterSeen {
                    src: ip(their_ip),
                    priority: theirs,
                };
                assert_eq!(ev, [seen, Event::SendGarp]);
                assert_eq!(tx, [advert(ours, 100)]);
            }
        }
    }
}

#[test]
fn shutdown_table() {
    let t = Instant::now();
    let mut m = master(settings(100, 1), t);
    m.handle_input(t + ms(5000), Input::Shutdown);
    assert_eq!(m.state(), State::Initialize);
    let (ev, tx) = drain(&mut m);
    assert_eq!(ev, [Event::RemoveVips, Event::Stopped]);
    assert_eq!(tx, [advert(0, 100)]);
    assert_eq!(m.poll_timeout(), None);

    let mut b = started(settings(100, 1), t);
    b.handle_input(t, Input::Shutdown);
    assert_eq!(drain(&mut b), (vec![Event::Stopped], vec![]));
    assert_eq!(b.poll_timeout(), None);
    // Restart after shutdown works; shutdown twice is a no-op.
    b.handle_input(t, Input::Shutdown);
    assert!(drain(&mut b).0.is_empty());
    b.handle_input(t, Input::Startup);
    assert_eq!(b.state(), State::Backup);
}

#[test]
fn set_priority_clamps_and_master_readvertises() {
    let rows: [(u8, u8, u8); 5] = [
        (100, 0, 1),
        (100, 255, 254),
        (100, 50, 50),
        (255, 255, 255),
        (255, 0, 1),
    ];
    for (base, set, want) in rows {
        let t = Instant::now();
        let mut m = started(settings(base, 1), t);
        m.handle_input(t, Input::SetPriority(set));
        assert_eq!(m.effective_priority(), want, "{base} {set}");
    }
    let t = Instant::now();
    let mut m = master(settings(150, 1), t);
    m.handle_input(t + ms(4000), Input::SetPriority(50));
    assert_eq!(drain(&mut m).1, [advert(50, 100)]);
    m.handle_input(t + ms(4000), Input::SetPriority(50));
    assert!(drain(&mut m).1.is_empty(), "no change, no advert");
}

#[test]
fn own_and_foreign_adverts_are_ignored() {
    let t = Instant::now();
    let mut m = master(settings(100, 1), t);
    let other_vrid = Repr {
        vrid: 52,
        ..advert(200, 100)
    };
    m.handle_input(
        t,
        Input::Advert {
            src: ip(2),
            repr: &other_vrid,
        },
    );
    m.handle_input(
        t,
        Input::Advert {
            src: ip(1),
            repr: &advert(200, 100),
        },
    );
    assert_eq!(m.state(), State::Master);
    assert_eq!(drain(&mut m), (vec![], vec![]));
}

/// Anyone on the segment can send adverts: a master answers lower priority and priority
/// 0 adverts with an immediate advert (and GARP) at most once per interval, and its own
/// adverts still go out at least once per interval during the flood.
#[test]
fn a_flood_of_lower_priority_and_zero_adverts_gets_one_reply_per_interval() {
    let t = Instant::now();
    let mut m = master(settings(200, 1), t);
    let start = t + ms(5000);
    let mut sent = Vec::new();
    let mut garps = 0;
    let mut seen = 0;
    // 1 advert per ms for 10 s (10 intervals), alternating priority 100 and 0.
    for i in 0..10_000u64 {
        let now = start + ms(i);
        if m.poll_timeout().is_some_and(|d| d <= now) {
            m.handle_timeout(now);
        }
        let repr = advert(if i % 2 == 0 { 100 } else { 0 }, 100);
        m.handle_input(
            now,
            Input::Advert {
                src: ip(66),
                repr: &repr,
            },
        );
        let (ev, tx) = drain(&mut m);
        sent.extend(tx.iter().map(|r| (now, r.priority)));
        garps += ev.iter().filter(|e| **e == Event::SendGarp).count();
        seen += ev
            .iter()
            .filter(|e| matches!(e, Event::OtherMasterSeen { .. }))
            .count();
        assert_eq!(m.state(), State::Master);
    }
    assert_eq!(
        seen, 5000,
        "every lower priority advert is reported (metric)"
    );
    assert!(
        (10..=11).contains(&garps),
        "GARP asked for {garps} times in 10 s"
    );
    assert!(
        (10..=21).contains(&sent.len()),
        "{} adverts in 10 intervals",
        sent.len()
    );
    assert!(sent.iter().all(|(_, p)| *p == 200));
    assert!(
        sent.windows(2).all(|w| w[1].0 - w[0].0 <= ms(1000)),
        "an advert every interval"
    );
}
