//! Prefix mode: `listen.relay_prefix` + `listen.relay_port`.

use super::*;

fn eph() -> EphemeralPorts {
    EphemeralPorts {
        range: 32768..=60999,
        reserved: vec![],
    }
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
            "relay_prefix = \"127.0.0.0/8\"\nrelay_port = 5062",
            "listen.relay_prefix: overlaps the listen.sip address 127.0.0.1",
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
