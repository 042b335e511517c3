//! Prefix mode across namespaces with real registrars: sipfront relays from addresses of
//! 10.200.0.0/16 (one wildcard socket on port 5062; sipfront installs the AnyIP route
//! `local 10.200.0.0/16 dev lo` itself and removes it on exit), the Kamailio registrars
//! route the prefix via sipfront's address, a phone behind a NAT registers through
//! sipfront, both registrars store its relay endpoint `10.200.x.y:5062` (DMQ), and calls
//! entered at either registrar reach the phone through that endpoint.

#[allow(dead_code)]
mod netns_sync;

use netns_sync::VIP;
use netns_sync::*;
use std::time::{Duration, Instant};
use testkit::*;

const SF_IP: &str = "10.88.0.11";
const PREFIX: &str = "10.200.0.0/16";
const RELAY_PORT: u16 = 5062;

fn registrar(dir: &TestDir, net: &Net, role: &str, peer: &str) -> Kamailio {
    registrar_via(dir, net, role, peer, SF_IP)
}

/// A registrar that routes the relay prefix via `via` and advertises `via` too.
fn registrar_via(dir: &TestDir, net: &Net, role: &str, peer: &str, via: &str) -> Kamailio {
    let host = net.host(role);
    // Replies and requests to relay endpoints go to sipfront.
    host.ns.ip(&["route", "add", PREFIX, "via", via]);
    let own = host.addr;
    start_kamailio(
        dir,
        host,
        role,
        &[
            format!("VIP_IP={via}"),
            "VIP_PORT=5060".into(),
            // Kamailio compares `src_ip == 10.200.0.0/16` as a subnet.
            format!("RELAY_IP={PREFIX}"),
            "WITH_DMQ".into(),
            "DMQ_PORT=5090".into(),
            format!("DMQ_SERVER=\"sip:{own}:5090\""),
            format!("DMQ_PEER=\"sip:{peer}:5090\""),
        ],
    )
}

/// The relay endpoint `k` stores for `aor` (`Received: sip:IP:PORT`).
fn received(k: &Kamailio, aor: &str) -> String {
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        last = k.received_of(aor);
        !last.is_empty()
    });
    assert!(ok, "{aor} not registered at {}", k.proc.name);
    assert_eq!(last.len(), 1, "{}: {last:?}", k.proc.name);
    last[0].trim_start_matches("sip:").to_string()
}

/// Starts the phone (REGISTER through `to`, then answering INVITEs).
fn start_phone(dir: &TestDir, net: &Net, to: &str) -> Sipp {
    let register = scenario("phone_register.xml");
    let answer = scenario("phone_answer.xml");
    let target = format!("{to}:5060");
    let args = [
        "-sf",
        &register,
        "-oocsf",
        &answer,
        "-s",
        "alice",
        "-t",
        "u1",
        "-i",
        "192.168.77.2",
        "-p",
        "5060",
        "-m",
        "1",
        "-d",
        "300000",
        &target,
    ];
    let mut phone = start_sipp(dir, net.host("phone"), "phone", &args, true);
    wait_bound(&mut phone.proc, 5060);
    phone
}

fn local_routes(host: &Host) -> String {
    host.ns.ip(&["route", "show", "table", "local", PREFIX])
}

#[test]
fn nated_phone_registers_and_is_called_through_a_relay_prefix() {
    let _serial = serial();
    require(&["sipp", "kamailio", "kamcmd", "nft"]);
    let t0 = Instant::now();
    let dir = TestDir::new("prefix-netns");
    let mut net = sync_net(&[("sf", 11), ("kamA", 21), ("kamB", 22), ("caller", 30)]);
    net.add_nat_phone("nat", 2, "phone", 120);
    let kam_a = registrar(&dir, &net, "kamA", "10.88.0.22");
    let kam_b = registrar(&dir, &net, "kamB", "10.88.0.21");
    wait_dmq_peer(&kam_a, "10.88.0.22");
    wait_dmq_peer(&kam_b, "10.88.0.21");
    eprintln!("[{} ms] registrars up", ms(t0));

    assert_eq!(
        local_routes(net.host("sf")).trim(),
        "",
        "no AnyIP route before sipfront"
    );
    let toml = format!(
        "[listen]\nsip = [\"{SF_IP}:5060\"]\nrelay_prefix = \"{PREFIX}\"\nrelay_port = {RELAY_PORT}\n\n\
         [[backend]]\nname = \"kamA\"\naddr = \"10.88.0.21:5060\"\n\n\
         [[backend]]\nname = \"kamB\"\naddr = \"10.88.0.22:5060\"\n\n\
         [admin]\nlisten = \"{ADMIN}\"\n\n[health]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n"
    );
    let mut sf = NsSipfront::launch(
        &dir,
        net.host("sf"),
        "sf",
        &toml,
        Duration::from_secs(20),
        "",
        |m| {
            metric(m, "sipfront_backend_up", &[("backend", "kamA")]) == 1.0
                && metric(m, "sipfront_backend_up", &[("backend", "kamB")]) == 1.0
        },
    );
    let routes = local_routes(net.host("sf"));
    assert!(
        routes.contains("local 10.200.0.0/16 dev lo"),
        "sipfront did not add the AnyIP route: {routes:?}"
    );
    eprintln!("[{} ms] sipfront up, {}", ms(t0), routes.trim());

    let mut phone = start_phone(&dir, &net, SF_IP);
    let flow = sf.wait_registered_flow("10.88.0.2:", &mut phone);
    assert_eq!(flow.relay_port, RELAY_PORT);
    let (home, other) = if flow.backend == "kamA" {
        (&kam_a, &kam_b)
    } else {
        (&kam_b, &kam_a)
    };
    let endpoint = received(home, "alice");
    assert!(
        endpoint.starts_with("10.200.") && endpoint.ends_with(&format!(":{RELAY_PORT}")),
        "relay endpoint {endpoint}"
    );
    assert_eq!(received(other, "alice"), endpoint, "replicated by DMQ");
    eprintln!(
        "[{} ms] phone {} registered via {endpoint} at {}",
        ms(t0),
        flow.client,
        flow.backend
    );

    for (name, port, registrar) in [
        (
            "call-home",
            5061,
            if flow.backend == "kamA" {
                "10.88.0.21"
            } else {
                "10.88.0.22"
            },
        ),
        (
            "call-other",
            5063,
            if flow.backend == "kamA" {
                "10.88.0.22"
            } else {
                "10.88.0.21"
            },
        ),
    ] {
        let invites = phone.messages().matches("INVITE sip:alice@").count();
        let (caller, r) = call(&dir, &net, name, port, registrar);
        assert!(
            r.ok(),
            "{name} via {registrar} failed: {}\nphone trace tail:\n{}",
            caller.describe(&r),
            tail(&phone.message_file, 60)
        );
        assert!(phone.messages().matches("INVITE sip:alice@").count() > invites);
        eprintln!("[{} ms] {name} entered at {registrar}: completed", ms(t0));
    }
    let m = sf.metrics();
    let drops = nonzero_drops(&m);
    assert!(drops.is_empty(), "sipfront dropped datagrams: {drops:?}");
    // No socket per flow: one relay socket, in the relay set.
    assert_eq!(
        metric(&m, "sipfront_relay_ports_in_use", &[]),
        metric(&m, "sipfront_flows", &[])
    );

    drop(phone);
    let st = sf.terminate(Duration::from_secs(10));
    assert!(st.success(), "sipfront exit: {st:?}\n{}", sf.log_tail(20));
    assert_eq!(
        local_routes(net.host("sf")).trim(),
        "",
        "the AnyIP route stays after exit"
    );
    eprintln!("[{} ms] sipfront stopped, route removed", ms(t0));
}

/// sipfront in prefix mode with one backend (nobody answers its probes: these tests
/// look at routes and sockets only), started on `host` as `name` once its admin answers.
fn start_one_backend(dir: &TestDir, host: &Host, name: &str) -> NsSipfront {
    NsSipfront::launch(
        dir,
        host,
        name,
        &one_backend_toml(&format!("{SF_IP}:5060"), RELAY_PORT, ADMIN),
        Duration::from_secs(20),
        "",
        |_| true,
    )
}

fn one_backend_toml(sip: &str, relay_port: u16, admin: &str) -> String {
    format!(
        "[listen]\nsip = [\"{sip}\"]\nrelay_prefix = \"{PREFIX}\"\nrelay_port = {relay_port}\n\n\
         [[backend]]\nname = \"kamA\"\naddr = \"10.88.0.21:5060\"\n\n[admin]\nlisten = \"{admin}\"\n"
    )
}

/// The AnyIP route: sipfront adds it; a SIGKILL leaves it, and the next start takes it
/// over and removes it on exit, also a killed run's route for a narrower prefix inside
/// this one (the prefix widened in between); a second instance on the host fails and
/// leaves the running one's route alone, on the same relay port or another; an
/// operator's route for the prefix is used and left alone. With and without
/// `ip_nonlocal_bind` (on on many VRRP hosts: every address binds, so a bind says
/// nothing about which addresses are local).
fn prefix_route_ownership(nonlocal_bind: bool) {
    let _serial = serial();
    let dir = TestDir::new("prefix-route");
    let net = sync_net(&[("sf", 11)]);
    let host = net.host("sf");
    let sysctl = format!("net.ipv4.ip_nonlocal_bind={}", u8::from(nonlocal_bind));
    host.ns.must("sysctl", &["-qw", &sysctl]);
    let start = |name: &str| start_one_backend(&dir, host, name);
    let added = |sf: &NsSipfront| {
        let lines = sf.log_lines("relay prefix is local");
        assert_eq!(lines.len(), 1, "{lines:?}");
        field(&lines[0], "added")
    };
    let ours = format!("local {PREFIX} dev lo proto 245");
    let all_local = || {
        host.ns
            .ip(&["route", "show", "table", "local", "type", "local"])
    };
    // A policy table's local default route (TPROXY's) makes nothing local for ordinary
    // lookups: not a route over the prefix.
    host.ns.ip(&[
        "route",
        "add",
        "local",
        "0.0.0.0/0",
        "dev",
        "lo",
        "table",
        "100",
    ]);

    let mut sf = start("sf1");
    let routes = local_routes(host);
    assert!(routes.contains(&ours), "{routes:?}\n{}", sf.log_tail(20));
    assert_eq!(added(&sf), "true");
    sf.kill9();
    assert!(
        local_routes(host).contains(&ours),
        "a SIGKILL leaves the route"
    );

    let mut sf = start("sf2");
    assert_eq!(added(&sf), "true", "the leftover is taken over");
    // A second instance on this host (another SIP address, the same prefix and relay
    // port) fails on the relay port and leaves the running one's route alone.
    let second = one_backend_toml("127.0.0.1:5060", RELAY_PORT, "127.0.0.1:9091");
    let log = start_expecting_failure(&dir, host, "second", &second);
    assert!(
        log.contains(&format!("0.0.0.0:{RELAY_PORT}")),
        "the error names the relay port: {log}"
    );
    // On another relay port its sockets bind: it fails on the route, which a running
    // sipfront owns.
    let third = one_backend_toml("127.0.0.1:5060", RELAY_PORT + 2, "127.0.0.1:9091");
    let log = start_expecting_failure(&dir, host, "third", &third);
    assert!(
        log.contains("another running sipfront") && log.contains(PREFIX),
        "the error says whose route it is: {log}"
    );
    assert!(
        local_routes(host).contains(&ours),
        "a failed second start removed the running instance's route"
    );
    assert!(sf.terminate(Duration::from_secs(10)).success());
    assert_eq!(
        local_routes(host).trim(),
        "",
        "the taken-over route stays after exit"
    );

    // A killed run's route for a narrower prefix (the config widened since): removed,
    // the whole prefix made local.
    let narrow = "10.200.7.0/24";
    host.ns.ip(&[
        "route", "add", "local", narrow, "dev", "lo", "table", "local", "proto", "245",
    ]);
    let mut sf = start("sf3");
    assert_eq!(added(&sf), "true");
    let routes = all_local();
    assert!(
        routes.contains(&ours) && !routes.contains(narrow),
        "the leftover /24 goes, the /16 comes: {routes:?}"
    );
    assert!(sf.terminate(Duration::from_secs(10)).success());
    assert!(!all_local().contains("proto 245"), "{}", all_local());

    host.ns.ip(&[
        "route", "add", "local", PREFIX, "dev", "lo", "table", "local",
    ]);
    let mut sf = start("sf4");
    assert_eq!(added(&sf), "false", "an operator's route is not ours");
    assert!(sf.terminate(Duration::from_secs(10)).success());
    let routes = local_routes(host);
    assert!(
        routes.contains(&format!("local {PREFIX} dev lo")) && !routes.contains("proto 245"),
        "the operator's route must stay as it was: {routes:?}"
    );

    // Another user's socket holds the lock name (any local user can bind it): sipfront
    // starts anyway, adds the missing route and removes it on exit; a route of ours that
    // is there already (whose owner cannot be told now) is used and left in place.
    host.ns
        .ip(&["route", "del", "local", PREFIX, "table", "local"]);
    let squatter = host.ns.enter(|| {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
        let s = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let name = format!("sipfront-relay-prefix {PREFIX}");
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            &UnixAddr::new_abstract(name.as_bytes()).unwrap(),
        )
        .unwrap();
        s
    });
    let mut sf = start("sf5");
    assert_eq!(added(&sf), "true", "squatted: the missing route is added");
    assert_eq!(
        sf.log_lines("lock name is held by something that is not a running")
            .len(),
        1
    );
    assert!(local_routes(host).contains(&ours));
    assert!(sf.terminate(Duration::from_secs(10)).success());
    assert!(
        !all_local().contains("proto 245"),
        "the route it added goes on exit: {}",
        all_local()
    );
    host.ns.ip(&[
        "route", "add", "local", PREFIX, "dev", "lo", "table", "local", "proto", "245",
    ]);
    let mut sf = start("sf6");
    assert_eq!(
        added(&sf),
        "false",
        "squatted: an existing route is not taken over"
    );
    assert!(sf.terminate(Duration::from_secs(10)).success());
    assert!(
        local_routes(host).contains(&ours),
        "the existing route stays: {}",
        all_local()
    );
    drop(squatter);
}

#[test]
fn the_prefix_route_is_owned_and_a_killed_runs_taken_over() {
    prefix_route_ownership(false);
}

#[test]
fn the_prefix_route_is_owned_and_a_killed_runs_taken_over_where_any_address_binds() {
    prefix_route_ownership(true);
}

/// The wildcard relay socket receives for every local address, the public one too: the
/// socket's filter keeps datagrams to addresses outside the prefix out of the queue that
/// every flow's backend traffic shares (each would cost a read and a drop), while the
/// prefix's own addresses still reach sipfront.
#[test]
fn the_relay_port_takes_only_datagrams_to_the_prefix() {
    let _serial = serial();
    let dir = TestDir::new("prefix-filter");
    let net = sync_net(&[("sf", 11), ("out", 30)]);
    let out = net.host("out");
    out.ns.ip(&["route", "add", PREFIX, "via", SF_IP]);
    let mut sf = start_one_backend(&dir, net.host("sf"), "sf");
    let public: std::net::SocketAddrV4 = format!("{SF_IP}:{RELAY_PORT}").parse().unwrap();
    let prefix: std::net::SocketAddrV4 = format!("10.200.0.9:{RELAY_PORT}").parse().unwrap();
    for _ in 0..50 {
        send_plain(out, public, b"not for the relay socket");
        send_plain(out, prefix, b"from no backend");
    }
    let unknown = |sf: &mut NsSipfront| {
        metric(
            &sf.metrics(),
            "sipfront_drops_total",
            &[("reason", "unknown_source")],
        )
    };
    assert!(
        wait_until(Duration::from_secs(5), || unknown(&mut sf) >= 50.0),
        "datagrams to the prefix did not reach sipfront: {:?}",
        nonzero_drops(&sf.metrics())
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        unknown(&mut sf),
        50.0,
        "only the 50 datagrams to the prefix may reach the relay socket"
    );
    assert!(sf.terminate(Duration::from_secs(10)).success());
}

/// A VRRP pair in prefix mode with state sync: the backup mirrors the phone's flow and
/// binds nothing for it (its one wildcard socket already serves the prefix); after the
/// master is killed, calls entered at either registrar reach the phone through the
/// backup via the same relay endpoint, without a re-registration.
#[test]
fn prefix_pair_takes_over_a_registered_phone_without_binding_anything() {
    let _serial = serial();
    require(&["sipp", "kamailio", "kamcmd", "nft"]);
    let t0 = Instant::now();
    let dir = TestDir::new("prefix-pair");
    let mut net = sync_net(&[
        ("sfA", 11),
        ("sfB", 12),
        ("kamA", 21),
        ("kamB", 22),
        ("caller", 30),
    ]);
    net.add_nat_phone("nat", 2, "phone", 120);
    let kam_a = registrar_via(&dir, &net, "kamA", "10.88.0.22", VIP);
    let kam_b = registrar_via(&dir, &net, "kamB", "10.88.0.21", VIP);
    wait_dmq_peer(&kam_a, "10.88.0.22");
    wait_dmq_peer(&kam_b, "10.88.0.21");
    let (mut spec_a, mut spec_b) = pair_specs(&KAM_BACKENDS, "", &dir);
    spec_a.relay_prefix = Some(PREFIX.into());
    spec_b.relay_prefix = Some(PREFIX.into());
    let (mut a, mut b) = start_pair(&dir, &net, &spec_a, &spec_b);
    for h in ["sfA", "sfB"] {
        let r = local_routes(net.host(h));
        assert!(r.contains("local 10.200.0.0/16 dev lo"), "{h}: {r:?}");
    }
    eprintln!("[{} ms] pair up (A master), AnyIP route on both", ms(t0));

    let mut phone = start_phone(&dir, &net, VIP);
    let flow = a.wait_registered_flow("10.88.0.2:", &mut phone);
    let (home_ip, other_ip) = if flow.backend == "kamA" {
        ("10.88.0.21", "10.88.0.22")
    } else {
        ("10.88.0.22", "10.88.0.21")
    };
    let endpoint = received(&kam_a, "alice");
    assert_eq!(received(&kam_b, "alice"), endpoint);
    assert!(endpoint.starts_with("10.200."), "{endpoint}");
    let mut mirrored = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        mirrored = b.flows_of(&flow.client);
        mirrored.len() == 1 && mirrored[0].key() == flow.key()
    });
    assert!(ok, "sfB does not mirror {flow:?}: {mirrored:?}");
    let fds_b = std::fs::read_dir(format!("/proc/{}/fd", b.pid()))
        .unwrap()
        .count();
    assert!(fds_b < 64, "sfB holds {fds_b} descriptors");
    // The mirrored flow holds its endpoint (published by the next housekeeping tick).
    let ok = wait_until(Duration::from_secs(5), || {
        b.metric("sipfront_relay_ports_in_use", &[]) == 1.0
    });
    assert!(
        ok,
        "sfB: relay endpoints in use {}",
        b.metric("sipfront_relay_ports_in_use", &[])
    );
    eprintln!(
        "[{} ms] phone registered via {endpoint}; sfB mirrors it ({fds_b} fds)",
        ms(t0)
    );

    a.kill9();
    b.expect_state(VrrpState::Master, Duration::from_secs(10));
    assert!(wait_until(Duration::from_secs(10), || net
        .host("sfB")
        .has_addr(VIP)));
    eprintln!("[{} ms] sfA killed, sfB master", ms(t0));
    for (name, port, registrar) in [("call-home", 5061, home_ip), ("call-other", 5063, other_ip)] {
        let (caller, r) = call(&dir, &net, name, port, registrar);
        assert!(
            r.ok(),
            "{name} via {registrar} failed: {}\nphone trace tail:\n{}",
            caller.describe(&r),
            tail(&phone.message_file, 60)
        );
        eprintln!(
            "[{} ms] {name} via {registrar} completed through sfB",
            ms(t0)
        );
    }
    let registers = sent_transactions(&phone.messages(), "REGISTER");
    assert_eq!(registers.len(), 1, "the phone re-registered: {registers:?}");
    let m = b.metrics();
    assert_eq!(metric(&m, "sipfront_flows_created_total", &[]), 0.0);
    let drops = nonzero_drops(&m);
    assert!(drops.is_empty(), "sfB dropped: {drops:?}");
}
