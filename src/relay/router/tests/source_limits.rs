//! Per-CIDR overrides of the per-source limits (`[[limits.source]]`), table-driven:
//! higher and lower than `[limits]`, the longest prefix winning, IPv6 /64 sources, and
//! a reload.

use super::*;

/// A table of 1000 relay ports, so flow limits are not the table's.
fn cfg(limits: &str) -> Config {
    let text = format!(
        r#"
[listen]
sip = ["192.0.2.10:5060"]
relay = "10.0.0.10"
relay_ports = "20000-20999"

[[backend]]
name = "a"
addr = "{A}"

[limits]
{limits}
"#
    );
    parse(&text)
}

/// Port `1000 + i` of `source`.
fn at(source: &str, i: u32) -> SocketAddr {
    SocketAddr::new(source.parse().unwrap(), (1000 + i) as u16)
}

/// How many of `n` new flows (one REGISTER each, from ports of `source`) get in.
fn flows_admitted(r: &mut Router, now: Instant, source: &str, n: u32) -> usize {
    (0..n)
        .filter(|i| {
            matches!(
                r.from_client(
                    now,
                    at(source, *i),
                    0,
                    &req("REGISTER", &format!("{source}-{i}"))
                ),
                ClientAction::Forward { .. }
            )
        })
        .count()
}

/// How many of `n` datagrams one client of `source` sends at once get through.
fn datagrams_admitted(r: &mut Router, now: Instant, source: &str, n: u32) -> usize {
    (0..n)
        .filter(|i| {
            matches!(
                r.from_client(
                    now,
                    at(source, 0),
                    0,
                    &req("OPTIONS", &format!("{source}-o{i}"))
                ),
                ClientAction::Forward { .. }
            )
        })
        .count()
}

const OVERRIDES: &str = r#"max_flows_per_ip = 2
datagrams_per_ip = 10
datagrams_burst = 20

# An office NAT: more.
[[limits.source]]
cidr = "198.51.100.0/24"
max_flows_per_ip = 6
datagrams_per_ip = 100

# Inside it, a suspicious half: less (the longer prefix wins).
[[limits.source]]
cidr = "198.51.100.128/25"
max_flows_per_ip = 1
datagrams_per_ip = 2
datagrams_burst = 3

# A single address, lower than the global limit.
[[limits.source]]
cidr = "203.0.113.9"
max_flows_per_ip = 1

# A carrier's IPv6 /48: each /64 in it gets 4 flows and 50/s.
[[limits.source]]
cidr = "2001:db8:1::/48"
max_flows_per_ip = 4
datagrams_per_ip = 50
"#;

#[test]
fn overrides_raise_and_lower_max_flows_per_ip_by_longest_prefix() {
    let t0 = Instant::now();
    let mut r = router(&cfg(OVERRIDES));
    // (source, flows tried, flows admitted)
    let table: &[(&str, u32, usize)] = &[
        ("192.0.2.99", 10, 2),          // no override: [limits]
        ("198.51.100.1", 10, 6),        // higher
        ("198.51.100.2", 10, 6),        // each source its own, not one for the /24
        ("198.51.100.200", 10, 1),      // the /25 inside the /24: lower
        ("203.0.113.9", 10, 1),         // a /32, lower
        ("203.0.113.10", 10, 2),        // next to it: [limits]
        ("2001:db8:1:5::1", 10, 4),     // IPv6 in the /48
        ("2001:db8:1:5::2", 10, 0),     // same /64: same source, full
        ("2001:db8:1:6::1", 10, 4),     // another /64 in the /48
        ("2001:db8:2::1", 10, 2),       // outside: [limits]
        ("::ffff:198.51.100.3", 10, 6), // an IPv4 client on a dual-stack socket
    ];
    for &(source, tried, want) in table {
        let got = flows_admitted(&mut r, t0, source, tried);
        assert_eq!(got, want, "{source}");
    }
}

#[test]
fn overrides_raise_and_lower_the_datagram_rate_by_longest_prefix() {
    let t0 = Instant::now();
    let mut r = router(&cfg(OVERRIDES));
    // (source, datagrams sent at once, datagrams through): the burst.
    let table: &[(&str, u32, usize)] = &[
        ("192.0.2.99", 300, 20),       // [limits]: burst 20
        ("198.51.100.1", 300, 200),    // rate 100: burst follows it, 200
        ("198.51.100.200", 300, 3),    // the /25: burst 3
        ("203.0.113.9", 300, 20),      // overrides only max_flows_per_ip: rate is global
        ("2001:db8:1:5::1", 300, 100), // IPv6 /64 in the /48: burst 100
        ("2001:db8:2::1", 300, 20),    // outside
    ];
    for &(source, sent, want) in table {
        assert_eq!(
            datagrams_admitted(&mut r, t0, source, sent),
            want,
            "{source}"
        );
    }
    // And they refill at their own rate: 0.1 s is 10 for the office, 0.2 for the /25.
    let t1 = t0 + Duration::from_millis(100);
    assert_eq!(datagrams_admitted(&mut r, t1, "198.51.100.1", 50), 10);
    assert_eq!(datagrams_admitted(&mut r, t1, "198.51.100.200", 50), 0);
    assert_eq!(datagrams_admitted(&mut r, t1, "192.0.2.99", 50), 1);
}

#[test]
fn overrides_raise_and_lower_the_pins_a_source_may_hold_and_reload() {
    let t0 = Instant::now();
    let limits = |global: u32| {
        format!(
            "max_pins_per_flow = 100\nmax_pins_per_ip = {global}\n\n[[limits.source]]\ncidr = \"198.51.100.0/24\"\nmax_pins_per_ip = 10\n\n[[limits.source]]\ncidr = \"203.0.113.9\"\nmax_pins_per_ip = 1\n"
        )
    };
    let mut r = router(&cfg(&limits(4)));
    // Unanswered INVITEs over three ports of each source.
    let invites = |r: &mut Router, source: &str, tag: &str, n: u32| {
        (0..n)
            .filter(|i| {
                let msg = req("INVITE", &format!("{source}-{tag}{i}"));
                matches!(
                    r.from_client(t0, at(source, i % 3), 0, &msg),
                    ClientAction::Forward { .. }
                )
            })
            .count()
    };
    for (source, want) in [("192.0.2.99", 4), ("198.51.100.1", 10), ("203.0.113.9", 1)] {
        assert_eq!(invites(&mut r, source, "a", 12), want, "{source}");
    }
    // A reload applies at once (entries already open count).
    r.set_source_limits(&cfg(&limits(6)).limits);
    assert_eq!(invites(&mut r, "192.0.2.99", "b", 12), 2);
    assert_eq!(invites(&mut r, "198.51.100.1", "b", 12), 0);
}

#[test]
fn the_ipv6_sources_of_a_48_hold_at_most_its_flows_together() {
    let t0 = Instant::now();
    let mut r = router(&cfg("max_flows_per_ipv6_48 = 3\n"));
    let table: &[(&str, usize)] = &[
        ("2001:db8:1:1::1", 1),
        ("2001:db8:1:2::1", 1),
        ("2001:db8:1:ff::1", 1),
        // The fourth /64 of the same /48: refused.
        ("2001:db8:1:4::1", 0),
        // Another /48, and IPv4: their own.
        ("2001:db8:2:1::1", 1),
        ("192.0.2.1", 1),
    ];
    for &(source, want) in table {
        assert_eq!(flows_admitted(&mut r, t0, source, 1), want, "{source}");
    }
    assert_eq!(r.counters().dropped(DropReason::SourceFlowLimit), 1);
    // A reload raises it.
    r.set_source_limits(&cfg("max_flows_per_ipv6_48 = 4\n").limits);
    assert_eq!(flows_admitted(&mut r, t0, "2001:db8:1:4::1", 1), 1);
    assert_eq!(flows_admitted(&mut r, t0, "2001:db8:1:5::1", 1), 0);
    // An override's max_flows_per_ip lifts it for its sources.
    r.set_source_limits(
        &cfg("max_flows_per_ipv6_48 = 4\n[[limits.source]]\ncidr = \"2001:db8:1::/48\"\nmax_flows_per_ip = 6\n").limits,
    );
    assert_eq!(flows_admitted(&mut r, t0, "2001:db8:1:5::1", 3), 2);
}

/// The unanswered calls of all IPv6 sources in one /48 count together: one flow per
/// /64 (each a phone's only flow, whose pins are otherwise its own) does not add up
/// past `max_pins_per_ipv6_48`; another /48 and IPv4 have their own; an override's
/// `max_pins_per_ip` lifts it for its sources.
#[test]
fn the_ipv6_sources_of_a_48_open_at_most_its_pins_together() {
    let t0 = Instant::now();
    let mut r = router(&cfg("max_pins_per_ip = 4\nmax_pins_per_ipv6_48 = 6\n"));
    let invites = |r: &mut Router, source: &str, tag: &str, n: u32| {
        (0..n)
            .filter(|i| {
                let msg = req("INVITE", &format!("{source}-{tag}{i}"));
                matches!(
                    r.from_client(t0, at(source, 5060), 0, &msg),
                    ClientAction::Forward { .. }
                )
            })
            .count()
    };
    assert_eq!(invites(&mut r, "2001:db8:1:1::1", "a", 3), 3);
    assert_eq!(invites(&mut r, "2001:db8:1:2::1", "a", 3), 3);
    // The /48 has its 6: a third /64 gets none.
    assert_eq!(invites(&mut r, "2001:db8:1:3::1", "a", 3), 0);
    assert_eq!(r.counters().dropped(DropReason::SourcePinQuota), 3);
    assert_eq!(invites(&mut r, "2001:db8:2:1::1", "a", 3), 3);
    assert_eq!(invites(&mut r, "192.0.2.1", "a", 5), 4);
    // An override for the /48 lifts it to its max_pins_per_ip.
    r.set_source_limits(
        &cfg("max_pins_per_ip = 4\nmax_pins_per_ipv6_48 = 6\n[[limits.source]]\ncidr = \"2001:db8:1::/48\"\nmax_pins_per_ip = 8\n").limits,
    );
    assert_eq!(invites(&mut r, "2001:db8:1:3::1", "b", 3), 2);
}

#[test]
fn overrides_apply_to_the_new_flow_rate() {
    let t0 = Instant::now();
    let mut r = router(&cfg(
        "new_flows_per_ip = 5\nnew_flows_burst = 5\n\n[[limits.source]]\ncidr = \"198.51.100.0/24\"\nnew_flows_per_ip = 1\nnew_flows_burst = 2\n\n[[limits.source]]\ncidr = \"2001:db8::/32\"\nnew_flows_per_ip = 20\n",
    ));
    assert_eq!(flows_admitted(&mut r, t0, "198.51.100.1", 10), 2);
    assert_eq!(
        r.counters().dropped(DropReason::RateLimited),
        8,
        "lower: the rate, not the flow count, refused them"
    );
    assert_eq!(flows_admitted(&mut r, t0, "192.0.2.1", 10), 5);
    // Higher, IPv6: burst 40 follows the rate (max_flows_per_ip is 250 here).
    assert_eq!(flows_admitted(&mut r, t0, "2001:db8:0:1::1", 60), 40);
}

#[test]
fn a_reload_applies_new_overrides() {
    let t0 = Instant::now();
    let mut r = router(&cfg("max_flows_per_ip = 1\n"));
    assert_eq!(flows_admitted(&mut r, t0, "198.51.100.1", 5), 1);
    let c = cfg(
        "max_flows_per_ip = 1\n\n[[limits.source]]\ncidr = \"198.51.100.0/24\"\nmax_flows_per_ip = 3\n",
    );
    r.set_source_limits(&c.limits);
    // Its first flow again, and two new ones: 3 in all now.
    assert_eq!(flows_admitted(&mut r, t0, "198.51.100.1", 5), 3);
    assert_eq!(r.flows.from_source("198.51.100.1".parse().unwrap()), 3);
    r.set_source_limits(&cfg("max_flows_per_ip = 1\n").limits);
    assert_eq!(flows_admitted(&mut r, t0, "198.51.100.7", 5), 1);
}
