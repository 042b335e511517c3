//! Table-driven elections, preemption, failover timing and split brain in a
//! simulated network with virtual time: one link delay of 1 ms, adverts every 1 s
//! unless a row says otherwise. Instants are asserted exactly, from the RFC 5798
//! formulas worked by hand.

use super::sim::Sim;
use super::{MS, ip, ms, settings};
use crate::vrrp::machine::{Cause, Event, Input, Settings, State};
use std::time::Duration;

fn sim() -> Sim {
    Sim::new(MS)
}

/// One election: every node starts at once.
struct Election {
    /// (priority, last octet of the address)
    nodes: Vec<(u8, u8)>,
    winner: usize,
    /// When the winner becomes master, ms after the start.
    at: u64,
    cause: Cause,
    /// Why the others left Master if they got there: equal Master_Down_Intervals
    /// make several nodes master for the link delay.
    loser_cause: Option<Cause>,
}

#[test]
fn election_table() {
    let e = |nodes: &[(u8, u8)], winner, at, cause, loser_cause| Election {
        nodes: nodes.to_vec(),
        winner,
        at,
        cause,
        loser_cause,
    };
    let rows = [
        e(
            &[(100, 1), (200, 2), (150, 3)],
            1,
            3210,
            Cause::MasterDown,
            None,
        ),
        e(
            &[(100, 1), (100, 2)],
            1,
            3600,
            Cause::MasterDown,
            Some(Cause::SplitBrain),
        ),
        e(
            &[(100, 3), (100, 2), (100, 1)],
            0,
            3600,
            Cause::MasterDown,
            Some(Cause::SplitBrain),
        ),
        e(&[(254, 2), (255, 1)], 1, 0, Cause::StartupOwner, None),
        // Skew_Time truncation: priorities 1 and 2 both get 99 cs at 1 s.
        e(
            &[(1, 1), (2, 2)],
            1,
            3990,
            Cause::MasterDown,
            Some(Cause::HigherPrioritySeen),
        ),
    ];
    for Election {
        nodes,
        winner,
        at,
        cause,
        loser_cause,
    } in rows
    {
        let mut s = sim();
        let ids: Vec<usize> = nodes.iter().map(|&(p, a)| s.add(settings(p, a))).collect();
        for &i in &ids {
            s.start(i);
        }
        s.run_for(ms(20_000));
        assert_eq!(s.masters(), [winner], "{nodes:?}");
        assert_eq!(
            s.transitions(winner, State::Master),
            [(s.at(ms(at)), cause)],
            "{nodes:?}"
        );
        for &i in ids.iter().filter(|&&i| i != winner) {
            assert_eq!(s.state(i), State::Backup, "{nodes:?}");
            let left: Vec<Cause> = s.transitions(i, State::Backup)[1..]
                .iter()
                .map(|t| t.1)
                .collect();
            assert_eq!(
                left,
                loser_cause.into_iter().collect::<Vec<_>>(),
                "{nodes:?}"
            );
        }
    }
}

#[test]
fn higher_priority_joining_late_table() {
    for preempt in [true, false] {
        let mut s = sim();
        let a = s.add(settings(100, 1));
        let b = s.add(Settings {
            preempt,
            ..settings(200, 2)
        });
        s.start(a);
        s.run_until(s.at(ms(10_000)));
        assert_eq!(s.masters(), [a]);
        s.start(b);
        s.run_for(ms(20_000));
        if preempt {
            // B discards A's adverts from the start: its first Master_Down_Timer
            // (3 * 100 + 21 cs) runs out.
            assert_eq!(
                s.transitions(b, State::Master),
                [(s.at(ms(13_210)), Cause::Preempt)]
            );
            let yielded = s.transitions(a, State::Backup);
            assert_eq!(
                yielded.last(),
                Some(&(s.at(ms(13_211)), Cause::HigherPrioritySeen))
            );
            assert_eq!(s.masters(), [b]);
        } else {
            assert_eq!(s.masters(), [a]);
            assert!(s.transitions(b, State::Master).is_empty());
        }
    }
}

#[test]
fn preempt_delay_waits_then_preempts() {
    let mut s = sim();
    let a = s.add(settings(100, 1));
    let b = s.add(Settings {
        preempt_delay: ms(5000),
        ..settings(200, 2)
    });
    s.start(a);
    s.run_until(s.at(ms(10_000)));
    s.start(b);
    s.run_until(s.at(ms(15_000)));
    assert_eq!(s.masters(), [a], "still following during the delay");
    s.run_for(ms(20_000));
    let (became, cause) = s.transitions(b, State::Master)[0];
    assert_eq!(cause, Cause::Preempt);
    // The last advert B accepted is the last one before the delay ended; the timer
    // it set (Master_Down_Interval = 3.21 s) runs out.
    let (last, _) = s.last_received_before(b, s.at(ms(15_000))).unwrap();
    assert_eq!(last, s.at(ms(14_601)));
    assert_eq!(became, last + ms(3210));
    assert_eq!(s.masters(), [b]);
}

#[test]
fn master_death_table() {
    // (A's interval ms, B's priority, B's own interval ms, B's Master_Down_Interval ms
    // after adopting A's interval)
    let rows: [(u64, u8, u64, u64); 5] = [
        (1000, 100, 1000, 3600),
        (2000, 100, 1000, 7210),
        (30, 100, 30, 100),
        (30, 200, 1000, 90),
        (40_950, 1, 40_950, 163_640),
    ];
    for (a_int, b_prio, b_int, mdi) in rows {
        let mut s = sim();
        let a = s.add(Settings {
            advert_interval: ms(a_int),
            ..settings(250, 1)
        });
        let b = s.add(Settings {
            advert_interval: ms(b_int),
            ..settings(b_prio, 2)
        });
        s.start(a);
        s.run_for(ms(4 * a_int));
        assert_eq!(s.masters(), [a]);
        s.start(b);
        s.run_for(ms(10 * a_int + a_int / 2));
        assert_eq!(s.nodes[b].m.master_down_interval(), ms(mdi), "row {a_int}");
        s.crash(a);
        s.run_for(ms(10 * mdi));
        let (became, cause) = s.transitions(b, State::Master)[0];
        assert_eq!(cause, Cause::MasterDown);
        let (last, _) = s.last_received_before(b, became).unwrap();
        assert_eq!(became, last + ms(mdi), "row {a_int}");
        let ev = s.events_since(b, became);
        assert_eq!(
            &ev[..3],
            [
                Event::BecameMaster { cause },
                Event::AddVips,
                Event::SendGarp
            ]
        );
        assert_eq!(s.nodes[b].sent.first(), Some(&(became, b_prio)));
    }
}

#[test]
fn priority_zero_handover_after_skew_time() {
    let mut s = sim();
    let a = s.add(settings(200, 1));
    let b = s.add(settings(100, 2));
    s.start(a);
    s.start(b);
    s.run_until(s.at(ms(10_000)));
    assert_eq!(s.masters(), [a]);
    s.input(a, Input::Shutdown);
    assert_eq!(
        s.events_since(a, s.now),
        [Event::RemoveVips, Event::Stopped]
    );
    assert_eq!(s.nodes[a].sent.last(), Some(&(s.now, 0)));
    s.run_for(ms(5000));
    // Arrives after 1 ms; Skew_Time of priority 100 at 1 s is 60 cs.
    assert_eq!(
        s.transitions(b, State::Master),
        [(s.at(ms(10_601)), Cause::PriorityZero)]
    );
    assert_eq!(s.state(a), State::Initialize);
    assert_eq!(s.masters(), [b]);
}

#[test]
fn split_then_heal_table() {
    // (A = the rightful master, B): (priority, ip) each, and why B yields on heal.
    let rows = [
        ((200, 1), (100, 2), Cause::HigherPrioritySeen),
        ((100, 2), (100, 1), Cause::SplitBrain),
        ((255, 1), (254, 2), Cause::HigherPrioritySeen),
    ];
    for ((pa, ia), (pb, ib), cause) in rows {
        let mut s = sim();
        let a = s.add(settings(pa, ia));
        let b = s.add(settings(pb, ib));
        s.start(a);
        s.start(b);
        s.run_until(s.at(ms(10_000)));
        assert_eq!(s.masters(), [a]);
        let cut_at = s.at(ms(10_500));
        s.run_until(cut_at);
        s.cut(a, b);
        s.run_for(ms(10_000));
        assert_eq!(s.masters(), [a, b], "both masters during the split");
        let (became, c) = *s.transitions(b, State::Master).last().unwrap();
        assert_eq!(c, Cause::MasterDown);
        let (last, _) = s.last_received_before(b, cut_at).unwrap();
        assert_eq!(became, last + s.nodes[b].m.master_down_interval());

        // Heal just before B's next advert, so both hear each other.
        let next_b = s.nodes[b].m.poll_timeout().unwrap();
        s.run_until(next_b - Duration::from_nanos(1));
        let healed = s.now;
        s.heal();
        s.run_for(ms(10_000));
        assert_eq!(s.masters(), [a], "one master after the heal");
        let eb = s.events_since(b, healed);
        assert_eq!(eb, [Event::RemoveVips, Event::BecameBackup { cause }]);
        let ea = s.events_since(a, healed);
        let seen = Event::OtherMasterSeen {
            src: ip(ib),
            priority: pb,
        };
        // A re-asserts on B's adverts (including the one B sends as it yields), with an
        // advert and GARP at most once per interval: the first one does.
        assert_eq!(ea.get(..2), Some(&[seen, Event::SendGarp][..]), "{ea:?}");
        assert!(
            ea.iter().all(|e| [seen, Event::SendGarp].contains(e)),
            "{ea:?}"
        );
    }
}

#[test]
fn priority_drop_lets_the_peer_preempt() {
    let mut s = sim();
    let a = s.add(settings(150, 1));
    let b = s.add(settings(100, 2));
    s.start(a);
    s.start(b);
    s.run_until(s.at(ms(10_000)));
    assert_eq!(s.masters(), [a]);
    s.input(a, Input::SetPriority(50));
    assert_eq!(s.nodes[a].sent.last(), Some(&(s.now, 50)));
    s.run_for(ms(10_000));
    let (became, cause) = s.transitions(b, State::Master)[0];
    assert_eq!(cause, Cause::Preempt);
    let (last, _) = s.last_received_before(b, s.at(ms(10_000))).unwrap();
    assert_eq!(became, last + ms(3600));
    let yielded = s.transitions(a, State::Backup);
    assert_eq!(
        yielded.last(),
        Some(&(became + MS, Cause::HigherPrioritySeen))
    );
    assert!(s.events_since(a, became).contains(&Event::RemoveVips));
    assert_eq!(s.masters(), [b]);
}

#[test]
fn owner_takes_over_at_startup() {
    let mut s = sim();
    let b = s.add(settings(100, 2));
    let a = s.add(settings(255, 1));
    s.start(b);
    s.run_until(s.at(ms(10_000)));
    assert_eq!(s.masters(), [b]);
    s.start(a);
    assert_eq!(
        s.transitions(a, State::Master),
        [(s.now, Cause::StartupOwner)]
    );
    s.run_for(ms(10_000));
    let yielded = s.transitions(b, State::Backup);
    assert_eq!(
        yielded.last(),
        Some(&(s.at(ms(10_001)), Cause::HigherPrioritySeen))
    );
    assert_eq!(s.masters(), [a]);
}

#[test]
fn hold_preempt_table() {
    // Held B (higher priority) joins a running A. Then either the hold is released
    // (B preempts) or A dies (B takes over although held).
    for release in [true, false] {
        let mut s = sim();
        let a = s.add(settings(100, 1));
        let b = s.add(settings(200, 2));
        s.start(a);
        s.run_until(s.at(ms(10_000)));
        s.input(b, Input::HoldPreempt(true));
        s.start(b);
        s.run_until(s.at(ms(30_000)));
        assert_eq!(s.masters(), [a], "held: no preemption");
        if release {
            s.input(b, Input::HoldPreempt(false));
        } else {
            s.crash(a);
        }
        s.run_for(ms(10_000));
        let (became, cause) = s.transitions(b, State::Master)[0];
        let want = if release {
            Cause::Preempt
        } else {
            Cause::MasterDown
        };
        assert_eq!(cause, want);
        let (last, _) = s.last_received_before(b, s.at(ms(30_000))).unwrap();
        assert_eq!(became, last + ms(3210));
        assert_eq!(s.masters(), [b]);
    }
}

#[test]
fn three_nodes_highest_backup_takes_over() {
    let mut s = sim();
    let a = s.add(settings(250, 1));
    let b = s.add(settings(200, 2));
    let c = s.add(settings(100, 3));
    for i in [a, b, c] {
        s.start(i);
    }
    s.run_until(s.at(ms(10_000)));
    assert_eq!(s.masters(), [a]);
    s.crash(a);
    s.run_for(ms(10_000));
    // B's Master_Down_Interval (3.21 s) ends before C's (3.6 s); C hears B in time.
    let (became, _) = s.transitions(b, State::Master)[0];
    let (last, _) = s.last_received_before(b, s.at(ms(10_000))).unwrap();
    assert_eq!(became, last + ms(3210));
    assert!(s.transitions(c, State::Master).is_empty());
    assert_eq!(s.masters(), [b]);
}
