//! Tables grow on the timer, not in a routing decision: a counting allocator
//! watches every `from_client` call while one trunk opens 200,000 calls at 20,000
//! calls/s of virtual time (the dialog table past its initial room), and while
//! 100,000 phones register at 5,000 new sources/s (the per-source limiters' shards).
//! The router is driven the way the dataplane drives it: `handle_timeout` whenever
//! `poll_timeout` is due.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipfront::config::{Config, EphemeralPorts};
use sipfront::relay::router::RouterConfig;
use sipfront::relay::{ClientAction, Router};

#[global_allocator]
static GLOBAL: testkit::alloc::Counting = testkit::alloc::Counting;

const TRUNK_CONFIG: &str = r#"
[listen]
sip = ["192.0.2.10:5060"]
relay_ports = "10000-10999"
[[backend]]
name = "a"
addr = "10.0.0.21:5060"
[limits]
max_dialogs = 1000000
max_pins_per_flow = 1000000
max_pins_per_ip = 1000000
datagrams_per_ip = 100000000
datagrams_burst = 100000000
"#;

/// Prefix mode for 100,000 flows. A new flow's token takes a second to come back,
/// a datagram's half a second (strict, so that thousands of sources are still
/// limited at a time in both limiters; with the shipped rates the tokens are back
/// within 10 ms and nothing stays in the tables to grow them).
const PHONES_CONFIG: &str = r#"
[listen]
sip = ["192.0.2.10:5060"]
relay_prefix = "10.16.0.0/12"
relay_port = 5062
[[backend]]
name = "a"
addr = "10.0.0.21:5060"
[limits]
max_flows = 200000
new_flows_per_ip = 1
new_flows_burst = 2
datagrams_per_ip = 2
datagrams_burst = 4
[timeouts]
unanswered_idle = "1h"
"#;

const INVITE: &str = include_str!("corpus/sip/sipp_uac_invite.sip");
const REGISTER: &str = include_str!("corpus/sip/register.sip");

/// Allocations made inside routing decisions and inside timer calls.
#[derive(Default)]
struct Allocs {
    in_decisions: u64,
    in_timers: u64,
}

/// Sends `n` requests from `from(i)`, each `template` with its own Call-ID, at `rate`
/// per second of virtual time (timer calls as the dataplane makes them unless
/// `timers` is false); the first request's allocations (the router's first flow and
/// source) are not counted.
fn drive(
    config: &str,
    template: &str,
    n: u32,
    rate: u32,
    timers: bool,
    from: impl Fn(u32) -> SocketAddr,
) -> (Router, Allocs) {
    let cfg = Config::parse(config, &EphemeralPorts::default()).unwrap();
    let t0 = Instant::now();
    let mut r = Router::new(RouterConfig::new(&cfg, None), &cfg.backends, t0);
    let (head, tail) = template.split_once("Call-ID: ").unwrap();
    let step = Duration::from_secs(1) / rate;
    let mut msg = Vec::with_capacity(template.len() + 16);
    let mut allocs = Allocs::default();
    let mut now = t0;
    for i in 0..n {
        msg.clear();
        msg.extend_from_slice(head.as_bytes());
        msg.extend_from_slice(format!("Call-ID: {i}-").as_bytes());
        msg.extend_from_slice(tail.as_bytes());
        let before = testkit::alloc::on_this_thread();
        let a = r.from_client(now, from(i), 0, &msg);
        if i > 0 {
            allocs.in_decisions += testkit::alloc::on_this_thread() - before;
        }
        assert!(
            matches!(a, ClientAction::Forward { .. }),
            "request {i}: {a:?}"
        );
        now += step;
        if timers && r.poll_timeout().is_some_and(|t| t <= now) {
            let before = testkit::alloc::on_this_thread();
            r.handle_timeout(now);
            allocs.in_timers += testkit::alloc::on_this_thread() - before;
        }
    }
    (r, allocs)
}

fn trunk(_: u32) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 7], 5060))
}

/// Phone `i` of a carrier-grade NAT pool (100.64.0.0/10).
fn phone(i: u32) -> SocketAddr {
    SocketAddr::from((std::net::Ipv4Addr::from(0x6440_0000 + i), 5060))
}

#[test]
fn dialog_table_grows_on_the_timer_not_in_a_decision() {
    let (r, a) = drive(TRUNK_CONFIG, INVITE, 200_000, 20_000, true, trunk);
    // Past the table's initial room (256 shards of 448: 114,688).
    assert_eq!(r.dialog_count(), 200_000);
    let (d, t) = (a.in_decisions, a.in_timers);
    assert_eq!(d, 0, "a routing decision allocated ({t} in timers)");
    assert_eq!(r.grown_in_decisions(), 0);
    assert!(t >= 256, "the shards grew on the timer: {t}");
}

#[test]
fn limiter_shards_grow_on_the_timer_not_in_a_decision() {
    let (r, a) = drive(PHONES_CONFIG, REGISTER, 100_000, 5_000, true, phone);
    assert_eq!(r.flow_count(), 100_000);
    let (d, t) = (a.in_decisions, a.in_timers);
    assert_eq!(d, 0, "a routing decision allocated ({t} in timers)");
    assert_eq!(r.grown_in_decisions(), 0);
    assert!(t > 0, "no shard grew: the test shows nothing");
}

#[test]
fn without_the_timer_decisions_grow_the_tables() {
    // What the tests above guard against: the same traffic with no timer calls
    // grows shards inside decisions.
    for (r, a) in [
        drive(TRUNK_CONFIG, INVITE, 200_000, 20_000, false, trunk),
        drive(PHONES_CONFIG, REGISTER, 100_000, 5_000, false, phone),
    ] {
        assert!(a.in_decisions > 0);
        assert!(r.grown_in_decisions() > 0);
    }
}
