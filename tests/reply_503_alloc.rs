//! A flood while every backend is down: the router's decision (a stateless 503) and
//! the 503 itself (`Router::write_503`, as the dataplane calls it, into a buffer the
//! caller owns) allocate nothing; a per-thread counting allocator watches both for
//! 20,000 requests from 2,000 endpoints on 200 addresses, in virtual time, the timer
//! driven as the dataplane drives it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipfront::config::{Config, EphemeralPorts};
use sipfront::relay::backends::BackendId;
use sipfront::relay::router::RouterConfig;
use sipfront::relay::{ClientAction, Router};

#[global_allocator]
static GLOBAL: testkit::alloc::Counting = testkit::alloc::Counting;

const CONFIG: &str = r#"
[listen]
sip = ["192.0.2.10:5060"]
relay_ports = "10000-10999"
[[backend]]
name = "a"
addr = "10.0.0.21:5060"
[[backend]]
name = "b"
addr = "10.0.0.22:5060"
[health]
reply_503_rate = 100000
"#;

const INVITE: &[u8] = include_bytes!("corpus/sip/sipp_uac_invite.sip");

#[test]
fn a_flood_with_every_backend_down_allocates_nothing() {
    let cfg = Config::parse(CONFIG, &EphemeralPorts::default()).unwrap();
    let t0 = Instant::now();
    let mut r = Router::new(RouterConfig::new(&cfg, None), &cfg.backends, t0);
    for i in 0..2 {
        r.set_backend_up(BackendId::new(i), false);
    }
    let mut buf = vec![0u8; 2 * 65_536];
    let (mut replies, mut now) = (0, t0);
    let before = testkit::alloc::on_this_thread();
    for i in 0..20_000u32 {
        let from = SocketAddr::from(([198, 51, 100, (i % 200) as u8], 5060 + (i % 10) as u16));
        let a = r.from_client(now, from, 0, INVITE);
        assert!(matches!(a, ClientAction::Reject503), "request {i}: {a:?}");
        // The dataplane's own writer (no larger than the request, within the rate).
        if let Some(reply) = r.write_503(now, INVITE, cfg.health.retry_after, &mut buf) {
            assert!(reply.len() <= INVITE.len());
            assert!(reply.starts_with(b"SIP/2.0 503 Service Unavailable\r\n"));
            replies += 1;
        }
        now += Duration::from_micros(50);
        if r.poll_timeout().is_some_and(|t| t <= now) {
            r.handle_timeout(now);
        }
    }
    assert_eq!(testkit::alloc::on_this_thread() - before, 0);
    assert!(replies > 10_000, "{replies}");
    assert_eq!(r.counters().replies_503, replies);
}

/// New flows refused on their first datagram (here the source's quota of unanswered
/// calls) hand their endpoint back at once, inside the decision: that allocates
/// nothing either, from the first refusal on.
#[test]
fn refused_new_flows_allocate_nothing() {
    let cfg = Config::parse(
        &format!("{CONFIG}\n[limits]\nmax_pins_per_ip = 1\n"),
        &EphemeralPorts::default(),
    )
    .unwrap();
    let t0 = Instant::now();
    let mut r = Router::new(RouterConfig::new(&cfg, None), &cfg.backends, t0);
    // Each call its own Call-ID (built before counting).
    let text = String::from_utf8_lossy(INVITE).into_owned();
    let invites: Vec<Vec<u8>> = (0..800)
        .map(|k| {
            text.replace("Call-ID: 1-31337@", &format!("Call-ID: {k:05}-31337@"))
                .into_bytes()
        })
        .collect();
    let (mut refused, mut now) = (0, t0);
    let before = testkit::alloc::on_this_thread();
    for i in 0..400u32 {
        let ip = [198, 51, 100, (i % 200) as u8];
        // The first call of each source is pinned; a second one from another port
        // (a new flow) finds the source's quota taken and is refused.
        for (j, port) in [5060, 5061].into_iter().enumerate() {
            let from = SocketAddr::from((ip, port + 2 * (i / 200) as u16));
            let invite = &invites[2 * i as usize + j];
            if matches!(r.from_client(now, from, 0, invite), ClientAction::Drop(_)) {
                refused += 1;
            }
        }
        now += Duration::from_micros(50);
        if r.poll_timeout().is_some_and(|t| t <= now) {
            r.handle_timeout(now);
        }
    }
    assert_eq!(testkit::alloc::on_this_thread() - before, 0);
    assert!(refused >= 200, "{refused}");
}
