//! Prefix mode over IPv6, in network namespaces: sipfront relays from addresses of
//! fd00:200::/64 on one wildcard socket (it makes the /64 local itself: `local
//! fd00:200::/64 dev lo`, which needs `IPV6_FREEBIND` on the socket to send from it),
//! the backend routes the /64 via sipfront, and two sipp phones (two flows) complete
//! their calls through a sipp UAS, each flow with its own relay address of the /64.
//!
//! A LAN (namespaces `sfpx6<PID>x<N>-*`, 10.79.0.0/24, IPv6 2001:db8::/48 on-link):
//! front 2001:db8:0:ff::10, backend 2001:db8:0:30::30 (sipp UAS), phones
//! 2001:db8:0:3::21 ports 5080 and 5081.

use std::net::SocketAddr;
use std::time::Duration;
use testkit::*;

const PREFIX: &str = "fd00:200::/64";
const CALLS: u64 = 20;

fn phone(dir: &TestDir, lan: &Lan, name: &str, port: &str) -> Sipp {
    start_sipp(
        dir,
        lan.host("phone"),
        name,
        &[
            "-sn",
            "uac",
            "-i",
            "2001:db8:0:3::21",
            "-p",
            port,
            "-t",
            "u1",
            "-m",
            &CALLS.to_string(),
            "-r",
            "20",
            "-timeout",
            "30s",
            "-timeout_error",
            "[2001:db8:0:ff::10]:5060",
        ],
        false,
    )
}

#[test]
fn ipv6_phones_call_through_a_relay_prefix() {
    require(&["sipp"]);
    let _serial = serial();
    let dir = TestDir::new("prefix-ipv6");
    let lan = Lan::create(
        "sfpx6",
        "10.79.0",
        "02:79:00:00:00",
        &[("front", 10), ("backend", 30), ("phone", 21)],
    );
    for (role, addr) in [
        ("front", "2001:db8:0:ff::10"),
        ("backend", "2001:db8:0:30::30"),
        ("phone", "2001:db8:0:3::21"),
    ] {
        lan.host(role).add_ipv6(addr);
    }
    // The backend reaches relay endpoints through sipfront.
    lan.host("backend")
        .ns
        .ip(&["-6", "route", "add", PREFIX, "via", "2001:db8:0:ff::10"]);
    let uas = scenario("uas.xml");
    let _uas = NsSipp::start(
        &dir,
        lan.host("backend"),
        "uas",
        &["-sf", &uas, "-i", "2001:db8:0:30::30", "-p", "5060"],
    );

    let toml = format!(
        "[listen]\nsip = [\"[2001:db8:0:ff::10]:5060\"]\nrelay_prefix = \"{PREFIX}\"\nrelay_port = 5062\n\n\
         [[backend]]\nname = \"a\"\naddr = \"[2001:db8:0:30::30]:5060\"\n\n\
         [admin]\nlisten = \"127.0.0.1:9090\"\n\n[health]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n"
    );
    let mut front = NsSipfront::launch(
        &dir,
        lan.host("front"),
        "front",
        &toml,
        Duration::from_secs(15),
        " with the backend up",
        |m| metric(m, "sipfront_backend_up", &[("backend", "a")]) == 1.0,
    );
    let routes = lan
        .host("front")
        .ns
        .ip(&["-6", "route", "show", "table", "local", PREFIX]);
    assert!(
        routes.contains("local fd00:200::/64 dev lo"),
        "sipfront did not make the /64 local: {routes:?}"
    );

    let mut a = phone(&dir, &lan, "phone-a", "5080");
    let mut b = phone(&dir, &lan, "phone-b", "5081");
    a.expect_all_ok(CALLS, Duration::from_secs(40));
    b.expect_all_ok(CALLS, Duration::from_secs(40));

    // Two flows, each on its own address of the /64 and the one relay port.
    let (code, body) = front.get("/api/v1/flows").expect("flows");
    assert_eq!(code, 200, "{body}");
    let flows: serde_json::Value = serde_json::from_str(&body).expect("flows JSON");
    let list = flows
        .as_array()
        .or_else(|| flows.get("flows").and_then(|f| f.as_array()))
        .expect("a list of flows");
    let relays: Vec<SocketAddr> = list
        .iter()
        .filter(|f| {
            f["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("[2001:db8:0:3::21]"))
        })
        .map(|f| f["relay"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(relays.len(), 2, "one flow per phone: {body}");
    for r in &relays {
        assert_eq!(r.port(), 5062, "{r}");
        assert!(
            r.ip().to_string().starts_with("fd00:200::"),
            "relay endpoint {r} is in {PREFIX}"
        );
    }
    assert_ne!(relays[0].ip(), relays[1].ip(), "one relay address per flow");
    let text = front.metrics();
    assert_eq!(
        metric(&text, "sipfront_backend_up", &[("backend", "a")]),
        1.0,
        "the backend stayed up"
    );
    let st = front.terminate(Duration::from_secs(10));
    assert!(st.success(), "sipfront exit: {st:?}");
    let after = lan
        .host("front")
        .ns
        .ip(&["-6", "route", "show", "table", "local", PREFIX]);
    assert!(
        after.trim().is_empty(),
        "the /64 route is removed on exit: {after:?}"
    );
}

/// A start that fails (here the relay port is taken) leaves no route behind: the relay
/// sockets are bound before the /64 is made local, and a failure after that removes the
/// route it added.
#[test]
fn a_start_that_fails_removes_the_prefix_route() {
    let _serial = serial();
    let dir = TestDir::new("prefix-ipv6-fail");
    let lan = Lan::create("sfpx6f", "10.76.0", "02:76:00:00:00", &[("front", 10)]);
    let front = lan.host("front");
    front.add_ipv6("2001:db8:0:ff::10");
    let _taken = front
        .ns
        .enter(|| std::net::UdpSocket::bind("[::]:5062").expect("take the relay port"));
    let log = start_expecting_failure(
        &dir,
        front,
        "front",
        &format!(
            "[listen]\nsip = [\"[2001:db8:0:ff::10]:5060\"]\nrelay_prefix = \"{PREFIX}\"\nrelay_port = 5062\n\n\
             [[backend]]\nname = \"a\"\naddr = \"[2001:db8:0:30::30]:5060\"\n\n\
             [admin]\nlisten = \"127.0.0.1:9090\"\n"
        ),
    );
    assert!(
        log.contains("[::]:5062"),
        "the error names the relay port: {log}"
    );
    let routes = front
        .ns
        .ip(&["-6", "route", "show", "table", "local", PREFIX]);
    assert!(
        routes.trim().is_empty(),
        "the /64 route was left behind by the failed start: {routes:?}"
    );
}
