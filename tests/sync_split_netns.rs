//! A split pair on a real (virtual) network: the two sipfront hosts cannot hear each other
//! (nft drops everything between them: VRRP adverts and sync), both hold the VIP, and each
//! serves new clients. Each hands out relay endpoints of its own half of the pool (the host
//! with the lower `[sync] listen` the even positions), so when they hear each other again
//! both tables hold every flow on the same endpoint and no endpoint went to two clients.
//!
//! The pool is small (60 endpoints) and each host serves 29 clients during the split:
//! without the halves, two runs of 29 endpoints from random places of a 60-endpoint ring
//! overlap unless the places lie 29-31 apart; each endpoint both handed out then keeps one
//! flow (on both hosts alike) and the other is lost. Checked: with the halves off, three
//! runs ended with 56, 34 and 45 flows on both hosts.
//!
//! Needs root, `ip netns`, `nft`; fails, never skips, without them. Addresses as in
//! tests/sync_netns.rs (LAN 10.88.0.0/24, VIP 10.88.0.100, client .10, sfA .11, sfB .12,
//! backends .21 and .22).

// Shared with tests/sync_netns.rs, which uses all of it; this test a part.
#[allow(dead_code, unused_imports)]
mod netns_sync;

use netns_sync::VIP;
use netns_sync::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use testkit::*;

const CLIENTS_EACH: usize = 29;
const POOL_FIRST: u16 = 20000;

/// `host` drops every packet from `other` (adverts, sync) until [`join`].
fn cut_off(host: &Host, other: &str) {
    for args in [
        vec!["add", "table", "inet", "split"],
        vec![
            "add",
            "chain",
            "inet",
            "split",
            "in",
            "{ type filter hook input priority 0 ; }",
        ],
        vec![
            "add", "rule", "inet", "split", "in", "ip", "saddr", other, "drop",
        ],
    ] {
        host.ns.must("nft", &args);
    }
}

fn join(host: &Host) {
    host.ns.must("nft", &["delete", "table", "inet", "split"]);
}

/// The client sends to the VIP at `mac` (a fixed neighbour entry), whoever else holds it.
fn client_sends_to(net: &Net, mac: &str) {
    net.host("client").ns.ip(&[
        "neigh",
        "replace",
        VIP,
        "lladdr",
        mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
}

/// The relay ports of `sf`'s flows, once it holds `n`.
fn ports_of(sf: &mut NsSipfront, n: usize) -> BTreeSet<u16> {
    wait_flow_count(sf, n);
    sf.flows().1.iter().map(|f| f.relay_port).collect()
}

#[test]
fn a_split_pair_serves_from_its_own_half_and_the_tables_merge() {
    let _serial = serial();
    require(&["nft"]);
    let t0 = Instant::now();
    let dir = TestDir::new("sync-split");
    let (net, _backends) = udp_pair_net();
    // During the split the backends' replies go to whichever host their ARP entry for the
    // VIP names (B's, after its GARPs), so A's flows stay unanswered: keep them anyway.
    let extra = format!("{LOAD_LIMITS}unanswered_idle = \"600s\"\n");
    let (mut spec_a, mut spec_b) = pair_specs(&UDP_BACKENDS, &extra, &dir);
    let pool = format!("{POOL_FIRST}-{}", POOL_FIRST + 59);
    (spec_a.relay_ports, spec_b.relay_ports) = (pool.clone(), pool);
    let (mut a, mut b) = start_pair(&dir, &net, &spec_a, &spec_b);
    eprintln!("[{} ms] pair up and synced", ms(t0));

    cut_off(net.host("sfA"), B_IP);
    cut_off(net.host("sfB"), A_IP);
    b.expect_state(VrrpState::Master, Duration::from_secs(10));
    a.expect_state(VrrpState::Master, Duration::from_secs(1));
    // Long enough for each to count the other gone (sync peer timeout 3 s).
    for sf in [&a, &b] {
        assert!(
            sf.wait_log("sync peer silent", Duration::from_secs(10)),
            "{} still hears its peer",
            sf.name
        );
    }
    eprintln!(
        "[{} ms] split: both masters, sync peer silent on both",
        ms(t0)
    );

    client_sends_to(&net, &net.host("sfA").mac);
    let _on_a = make_flows(&net, CLIENTS_EACH, "a");
    let ports_a = ports_of(&mut a, CLIENTS_EACH);
    client_sends_to(&net, &net.host("sfB").mac);
    let _on_b = make_flows(&net, CLIENTS_EACH, "b");
    let ports_b = ports_of(&mut b, CLIENTS_EACH);
    eprintln!("[{} ms] {CLIENTS_EACH} clients on each host", ms(t0));
    // A's [sync] listen (.11) is the lower: the even positions of the pool are its half.
    let half =
        |ports: &BTreeSet<u16>, parity: u16| ports.iter().all(|p| (p - POOL_FIRST) % 2 == parity);
    assert!(half(&ports_a, 0), "A outside its half: {ports_a:?}");
    assert!(half(&ports_b, 1), "B outside its half: {ports_b:?}");

    join(net.host("sfA"));
    join(net.host("sfB"));
    net.host("client")
        .ns
        .ip(&["neigh", "del", VIP, "dev", "eth0"]);
    b.expect_state(VrrpState::Backup, Duration::from_secs(10));
    a.expect_state(VrrpState::Master, Duration::from_secs(1));
    b.wait_synced(Duration::from_secs(20));
    a.wait_synced(Duration::from_secs(20));
    eprintln!("[{} ms] healed: A master, B backup, synced", ms(t0));

    // Both tables hold all 58 flows, each on the endpoint its host gave it.
    let key = |f: &FlowRow| (f.client.clone(), f.relay_port);
    let (mut ta, mut tb) = (BTreeSet::new(), BTreeSet::new());
    let ok = wait_until(Duration::from_secs(20), || {
        ta = a.flows().1.iter().map(key).collect();
        tb = b.flows().1.iter().map(key).collect();
        ta.len() == 2 * CLIENTS_EACH && ta == tb
    });
    assert!(
        ok,
        "after the heal A holds {} flows, B {} (want {} on both); only on A: {:?}; only on B: \
         {:?}",
        ta.len(),
        tb.len(),
        2 * CLIENTS_EACH,
        ta.difference(&tb).collect::<Vec<_>>(),
        tb.difference(&ta).collect::<Vec<_>>()
    );
    let ports: BTreeSet<u16> = ta.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        ports.len(),
        2 * CLIENTS_EACH,
        "an endpoint with two clients"
    );
    let all: BTreeSet<u16> = ports_a.union(&ports_b).copied().collect();
    assert_eq!(ports, all, "every flow kept the endpoint its host gave it");
    for sf in [&mut a, &mut b] {
        assert_eq!(
            sf.metric("sipfront_sync_endpoint_conflicts_total", &[]),
            0.0,
            "{}",
            sf.name
        );
        // Each client was served by one host only (exported, and zero).
        assert_eq!(
            find_metric(&sf.metrics(), "sipfront_sync_client_conflicts_total", &[]),
            Some(0.0),
            "{}",
            sf.name
        );
    }
    eprintln!(
        "[{} ms] both tables hold the same {} flows",
        ms(t0),
        ports.len()
    );
}
