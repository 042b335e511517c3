//! Prefix mode: `listen.relay_prefix` + `listen.relay_port`.

use super::*;

fn eph() -> EphemeralPorts {
    EphemeralPorts::default()
}

fn conf(listen: &str) -> String {
    format!(
        "[listen]\nsip = [\"127.0.0.1:5060\"]\n{listen}\n\n[[backend]]\nname = \"a\"\naddr = \"127.0.0.1:5070\"\n"
    )
}

fn err(listen: &str) -> String {
    Config::parse(&conf(listen), &eph())
        .unwrap_err()
        .to_string()
}

#[test]
fn prefix_mode_holds_addresses_times_ports() {
    let c = Config::parse(
        &conf("relay_prefix = \"127.16.0.0/16\"\nrelay_port = [5062, 5064]"),
        &eph(),
    )
    .unwrap();
    let p = c.listen.relay_prefix.clone().unwrap();
    assert_eq!(
        (p.to_string(), p.ports.clone()),
        ("127.16.0.0/16".into(), vec![5062, 5064])
    );
    assert_eq!(c.relay_port_count(), 131_072);
    assert_eq!(
        c.limits.max_flows, 131_072,
        "max_flows defaults to every endpoint"
    );
    assert!(c.listen.relay.is_empty());
    assert_eq!(
        Config::parse(&c.to_string(), &eph()).unwrap(),
        c,
        "check-config output reparses"
    );
    let one = Config::parse(
        &conf("relay_prefix = \"127.16.0.0/24\"\nrelay_port = 5062"),
        &eph(),
    )
    .unwrap();
    assert_eq!(one.relay_port_count(), 256);
    let v6 = Config::parse(
        "[listen]\nsip = [\"[::1]:5060\"]\nrelay_prefix = \"fd00:200::/64\"\nrelay_port = \"5062\"\n\n[[backend]]\nname = \"a\"\naddr = \"[::1]:5070\"\n",
        &eph(),
    )
    .unwrap();
    assert_eq!(v6.relay_port_count(), 1 << 20, "a /64 uses 2^20 addresses");
}

#[test]
fn prefix_mode_errors_name_the_key() {
    let cases = [
        (
            "relay_prefix = \"127.16.0.0/24\"\nrelay_port = 5062\n\n[limits]\nmax_flows = 1000",
            "listen.relay_prefix: 127.16.0.0/24 × 1 relay port(s) holds 256 flows, fewer than limits.max_flows = 1000",
        ),
        (
            "relay_prefix = \"127.0.0.0/12\"\nrelay_port = 5062",
            "listen.relay_prefix: overlaps the listen.sip address 127.0.0.1",
        ),
        (
            "relay_prefix = \"10.0.0.0/11\"\nrelay_port = 5062",
            "listen.relay_prefix: `10.0.0.0/11` is larger than the 2^20 addresses",
        ),
        (
            "relay_prefix = \"fd00:200::/64\"\nrelay_port = 5062",
            "listen.relay_prefix: mixed families",
        ),
        (
            "relay = \"127.0.0.1\"\nrelay_prefix = \"127.16.0.0/16\"\nrelay_port = 5062",
            "listen.relay_prefix: set either listen.relay / relay_ports (port mode) or",
        ),
        (
            "relay_ports = \"20000-20999\"\nrelay_prefix = \"127.16.0.0/16\"\nrelay_port = 5062",
            "listen.relay_prefix: set either",
        ),
        (
            "relay_port = 5062",
            "listen.relay_port: only with listen.relay_prefix",
        ),
        (
            "relay_prefix = \"127.16.0.0/16\"",
            "listen.relay_port: required",
        ),
        (
            "relay_prefix = \"127.16.0.1/16\"\nrelay_port = 5062",
            "listen.relay_prefix: `127.16.0.1/16` has host bits set",
        ),
        (
            "relay_prefix = \"127.16.0.0\"\nrelay_port = 5062",
            "listen.relay_prefix: `127.16.0.0` is not ADDRESS/LENGTH",
        ),
        (
            "relay_prefix = \"127.16.0.0/33\"\nrelay_port = 5062",
            "listen.relay_prefix: `33` is not a prefix length",
        ),
        (
            "relay_prefix = \"127.16.0.0/16\"\nrelay_port = 5060",
            "listen.relay_port: port 5060 is a listen.sip port",
        ),
        (
            "relay_prefix = \"127.16.0.0/16\"\nrelay_port = [5062, 5062]",
            "listen.relay_port: port 5062 is listed twice",
        ),
        (
            "relay_prefix = \"127.16.0.0/16\"\nrelay_port = 40000",
            "listen.relay_port: port 40000 is in the kernel's ephemeral range",
        ),
        (
            "relay_prefix = \"127.16.0.0/16\"\nrelay_port = 70000",
            "listen.relay_port: 70000 is not a port",
        ),
        (
            "relay_prefix = \"127.16.0.0/16\"\nrelay_port = []",
            "listen.relay_port: needs 1 to 16 ports",
        ),
    ];
    for (listen, want) in cases {
        let e = err(listen);
        assert!(e.contains(want), "error `{e}` should contain `{want}`");
    }
}

/// Prefixes the kernel would not send from, or whose local route would take addresses
/// that are not ours, and addresses of the config inside the prefix: refused, naming
/// the key.
#[test]
fn unusable_prefixes_and_addresses_inside_the_prefix_are_refused() {
    let v4 = |prefix: &str| err(&format!("relay_prefix = \"{prefix}\"\nrelay_port = 5062"));
    let v6 = |prefix: &str| {
        Config::parse(
            &format!(
                "[listen]\nsip = [\"[::1]:5060\"]\nrelay_prefix = \"{prefix}\"\nrelay_port = 5062\n\n\
                 [[backend]]\nname = \"a\"\naddr = \"[::1]:5070\"\n"
            ),
            &eph(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    for (got, want) in [
        (v4("0.1.0.0/16"), "`0.1.0.0/16` is in 0.0.0.0/8"),
        (
            v4("255.255.255.0/24"),
            "`255.255.255.0/24` is in 224.0.0.0/3",
        ),
        (v4("240.0.0.0/8"), "`240.0.0.0/8` is in 224.0.0.0/3"),
    ] {
        assert!(
            got.starts_with("listen.relay_prefix: ") && got.contains(want),
            "{got}"
        );
    }
    for (prefix, want) in [
        ("8000::/1", "is too large"),
        ("2001:db8::/31", "is too large"),
        ("::1/128", "is the loopback address"),
        ("::ffff:0:0/96", "is IPv4-mapped"),
        ("fe80::/64", "is link-local"),
    ] {
        let got = v6(prefix).unwrap_err();
        assert!(
            got.starts_with("listen.relay_prefix: ") && got.contains(want),
            "{prefix}: {got}"
        );
    }
    assert_eq!(v6("2001:db8::/32"), Ok(()));
    assert_eq!(v6("fd00:200::/64"), Ok(()));
    assert!(
        Config::parse(
            &conf("relay_prefix = \"10.200.0.0/16\"\nrelay_port = 5062"),
            &eph()
        )
        .is_ok()
    );

    let with = |extra: &str, backend: &str| {
        Config::parse(
            &format!(
                "[listen]\nsip = [\"127.0.0.1:5060\"]\nrelay_prefix = \"127.16.0.0/16\"\nrelay_port = 5062\n\n\
                 [[backend]]\nname = \"a\"\naddr = \"127.0.0.1:5070\"\n\n\
                 [[backend]]\nname = \"b\"\naddr = \"{backend}\"\n{extra}"
            ),
            &eph(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    assert_eq!(with("", "127.17.0.1:5070"), Ok(()));
    let inside = "is inside listen.relay_prefix 127.16.0.0/16, which sipfront makes local";
    for (got, key) in [
        (with("", "127.16.0.5:5070"), "backend[1].addr: 127.16.0.5 "),
        (
            with(
                "\n[hep]\ncollector = \"127.16.9.9:9060\"\n",
                "127.17.0.1:5070",
            ),
            "hep.collector: 127.16.9.9 ",
        ),
        (
            with(
                "\n[[peer]]\nname = \"pbx\"\naddr = [\"127.0.0.9:5080\", \"127.16.1.1:5080\"]\nrelay = \"127.16.0.7:5062\"\n",
                "127.17.0.1:5070",
            ),
            "peer[0].addr[1]: 127.16.1.1 ",
        ),
        (
            with(
                "\n[vrrp]\ninterface = \"e\"\nvrid = 1\nvips = [\"192.0.2.1/24\", \"127.16.3.3/24\"]\n",
                "127.17.0.1:5070",
            ),
            "vrrp.vips[1]: 127.16.3.3 ",
        ),
        (
            with(
                "\n[vrrp]\ninterface = \"e\"\nvrid = 1\nvips = [\"192.0.2.1/24\"]\npeers = [\"127.16.4.4\"]\n",
                "127.17.0.1:5070",
            ),
            "vrrp.peers[0]: 127.16.4.4 ",
        ),
    ] {
        let got = got.unwrap_err();
        assert!(got.starts_with(key) && got.contains(inside), "{got}");
    }
}

#[test]
fn peers_in_prefix_mode_take_a_prefix_address_and_relay_port() {
    let base = conf("relay_prefix = \"127.16.0.0/16\"\nrelay_port = 5062");
    let peer = |relay: &str| {
        format!("{base}\n[[peer]]\nname = \"c\"\naddr = \"192.0.2.5:5060\"\nrelay = \"{relay}\"\n")
    };
    let c = Config::parse(&peer("127.16.9.9:5062"), &eph()).unwrap();
    assert_eq!(c.peers[0].relay, "127.16.9.9:5062".parse().unwrap());
    for (relay, want) in [
        (
            "127.17.0.1:5062",
            "peer[0].relay: 127.17.0.1 is not an address of listen.relay_prefix 127.16.0.0/16",
        ),
        (
            "127.16.0.1:5100",
            "peer[0].relay: port 5100 is not one of listen.relay_port",
        ),
    ] {
        let e = Config::parse(&peer(relay), &eph()).unwrap_err().to_string();
        assert!(e.contains(want), "error `{e}` should contain `{want}`");
    }
}

/// A reload keeps the running `[listen]`: the new file's backends are checked against
/// the running prefix too (one inside it would be routed to the host itself).
#[test]
fn a_reload_is_checked_against_the_running_prefix() {
    let running = Config::parse(
        &conf("relay_prefix = \"127.16.0.0/16\"\nrelay_port = 5062"),
        &eph(),
    )
    .unwrap();
    let new = Config::parse(
        &conf("relay_prefix = \"127.17.0.0/16\"\nrelay_port = 5062")
            .replace("127.0.0.1:5070", "127.16.5.5:5070"),
        &eph(),
    )
    .unwrap();
    let e = new.check_with_kept(&running).unwrap_err().to_string();
    assert!(e.starts_with("backend[0].addr"), "{e}");
    assert!(running.check_with_kept(&running).is_ok());
    // A backend at the running public address (the new file moved its own away).
    let looped = Config::parse(
        &conf("relay_prefix = \"127.17.0.0/16\"\nrelay_port = 5062")
            .replace("127.0.0.1:5060", "127.0.0.2:5060")
            .replace("127.0.0.1:5070", "127.0.0.1:5060"),
        &eph(),
    )
    .unwrap();
    let e = looped.check_with_kept(&running).unwrap_err().to_string();
    assert!(e.contains("own listen addresses"), "{e}");
}

/// An IPv4-mapped backend (`[::ffff:a.b.c.d]`) with IPv6 relays: every relayed send from
/// an IPv6-only relay socket would fail, while the prober reached it over IPv4.
#[test]
fn an_ipv4_mapped_backend_is_refused() {
    for relay in [
        "relay_prefix = \"fd00:200::/64\"\nrelay_port = 5062",
        "relay = \"::1\"",
    ] {
        let toml = |backend: &str| {
            format!(
                "[listen]\nsip = [\"[::1]:5060\"]\n{relay}\n\n\
                 [[backend]]\nname = \"a\"\naddr = \"{backend}\"\n"
            )
        };
        assert!(Config::parse(&toml("[fd00:1::5]:5070"), &eph()).is_ok());
        let e = Config::parse(&toml("[::ffff:10.0.0.5]:5070"), &eph())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("backend[0].addr: ::ffff:10.0.0.5 is IPv4-mapped")
                && e.contains("(10.0.0.5)"),
            "{e}"
        );
    }
}
