//! A flood while every backend is down: the router's decision (a stateless 503) and
//! the 503 itself, written into a buffer the caller owns, allocate nothing; a
//! per-thread counting allocator watches both for 20,000 requests from 2,000
//! endpoints on 200 addresses, in virtual time, the timer driven as the dataplane
//! drives it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sipfront::config::{Config, EphemeralPorts};
use sipfront::relay::backends::BackendId;
use sipfront::relay::router::RouterConfig;
use sipfront::relay::{ClientAction, Router};
use sipfront::sip::response::{Unwritable, write_response};

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
    let eph = EphemeralPorts {
        range: 32768..=60999,
        reserved: vec![],
    };
    let cfg = Config::parse(CONFIG, &eph).unwrap();
    let t0 = Instant::now();
    let mut r = Router::new(RouterConfig::new(&cfg, None), &cfg.backends, t0);
    for i in 0..2 {
        r.set_backend_up(BackendId::new(i), false);
    }
    let mut buf = vec![0u8; 65536];
    let (mut replies, mut now) = (0, t0);
    let before = testkit::alloc::on_this_thread();
    for i in 0..20_000u32 {
        let from = SocketAddr::from(([198, 51, 100, (i % 200) as u8], 5060 + (i % 10) as u16));
        let a = r.from_client(now, from, 0, INVITE);
        assert!(matches!(a, ClientAction::Reject503), "request {i}: {a:?}");
        // As the dataplane does: no larger than the request, within the rate.
        match write_response(
            INVITE,
            503,
            "Service Unavailable",
            Some("sipfront-503"),
            &[("Retry-After", cfg.health.retry_after)],
            None,
            &mut buf,
        ) {
            Ok(n) if n > INVITE.len() => panic!("a 503 larger than the INVITE"),
            Ok(n) if r.replied_503(now) => {
                assert!(buf[..n].starts_with(b"SIP/2.0 503 Service Unavailable\r\n"));
                replies += 1;
            }
            Ok(_) => {}
            Err(e) => panic!("{e:?}"),
        }
        now += Duration::from_micros(50);
        if r.poll_timeout().is_some_and(|t| t <= now) {
            r.handle_timeout(now);
        }
    }
    assert_eq!(testkit::alloc::on_this_thread() - before, 0);
    assert!(replies > 10_000, "{replies}");
    // A buffer too small for the answer gets none.
    let tiny = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\r\n\r\n";
    let r = write_response(
        tiny,
        503,
        "Service Unavailable",
        None,
        &[("Retry-After", 30)],
        None,
        &mut buf[..tiny.len()],
    );
    assert_eq!(r, Err(Unwritable::TooLarge));
}
