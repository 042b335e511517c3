//! Static peers (trunks): a flow from the config on a fixed relay endpoint.

use super::*;

const CARRIER: &str = "203.0.113.5:5060";
const CARRIER_2: &str = "203.0.113.6:5060";

fn with_peer(backends: &str) -> Config {
    config(&format!(
        "[[peer]]\nname = \"carrier\"\naddr = [\"{CARRIER}\", \"{CARRIER_2}\"]\nrelay = \"10.0.0.10:5100\"\n{backends}"
    ))
}

const ENDPOINT: RelayPort = RelayPort {
    addr: 0,
    port: 5100,
};

#[test]
fn a_peer_has_its_fixed_endpoint_from_start_and_never_expires() {
    let t0 = Instant::now();
    let mut r = router(&with_peer(""));
    assert_eq!(r.static_endpoints().collect::<Vec<_>>(), [ENDPOINT]);
    assert_eq!(r.flow_count(), 1);
    // Both of its addresses come in through the same endpoint.
    assert_eq!(
        client(&mut r, t0, CARRIER, &req("INVITE", "c1")).0,
        ENDPOINT
    );
    assert_eq!(
        client(&mut r, t0, CARRIER_2, &req("OPTIONS", "c2")).0,
        ENDPOINT
    );
    for h in 1..48 {
        r.handle_timeout(t0 + Duration::from_secs(3600 * h));
    }
    assert_eq!(r.flow_count(), 1, "two days of silence: still there");
    assert_eq!(r.counters().peers[0][Direction::ToBackend], 2);
}

#[test]
fn a_peers_requests_go_only_to_its_backends() {
    let t0 = Instant::now();
    let mut r = router(&with_peer("backends = [\"b\"]"));
    let b = BackendId::new(1);
    for i in 0..20 {
        let (_, to) = client(&mut r, t0, CARRIER, &req("INVITE", &format!("i{i}")));
        assert_eq!(to, b);
    }
    // Its only backend is down: nothing else may take its calls.
    r.set_backend_up(b, false);
    assert_eq!(
        r.from_client(t0, sa(CARRIER), 0, &req("INVITE", "late")),
        ClientAction::Reject503
    );
}

#[test]
fn outbound_calls_leave_for_the_peer_and_answers_return_to_the_sender() {
    let t0 = Instant::now();
    let mut r = router(&with_peer(""));
    for (i, sender) in [BackendId::new(0), BackendId::new(1)]
        .into_iter()
        .enumerate()
    {
        let call = format!("out{i}");
        // The backend sends the INVITE to the peer's relay endpoint...
        let BackendAction::Forward { to, ingress, .. } =
            r.from_backend(t0, ENDPOINT, addr_of(sender), &req("INVITE", &call))
        else {
            panic!("not forwarded");
        };
        assert_eq!(
            (to, ingress),
            (sa(CARRIER), 0),
            "sent to the carrier from the public socket"
        );
        // ...and the carrier's answers and in-dialog requests go back to it.
        assert_eq!(
            client(&mut r, t0, CARRIER, &resp(200, &call, "INVITE", "")).1,
            sender
        );
        assert_eq!(client(&mut r, t0, CARRIER, &req("BYE", &call)).1, sender);
    }
    assert_eq!(r.counters().peers[0][Direction::ToClient], 2);
}

#[test]
fn peer_flows_are_never_synced_and_peer_items_are_ignored() {
    let t0 = Instant::now();
    let mut r = synced(&with_peer(""));
    client(&mut r, t0, CARRIER, &req("OPTIONS", "o"));
    let mut items = Vec::new();
    r.take_sync(&mut items);
    assert!(
        !items
            .iter()
            .any(|i| matches!(i, Item::Flow { .. } | Item::FlowGone { .. })),
        "{items:?}"
    );
    let mut full = Vec::new();
    r.sync_full(t0, &mut full);
    assert!(full.is_empty(), "{full:?}");
    let eff = r.apply_sync(
        t0,
        Item::FlowGone {
            relay_port: ENDPOINT,
        },
    );
    assert_eq!(eff, SyncEffect::default());
    assert_eq!(r.flow_count(), 1);
}

/// The other host of a pair may not have a trunk in its config yet (a rolling change)
/// and mirror the trunk's addresses as ordinary flows: our static flow stays, and its
/// second address keeps naming it (replaced, its slot would have gone to the next flow).
#[test]
fn a_synced_flow_never_replaces_a_peers_flow() {
    let t0 = Instant::now();
    let mut r = synced(&with_peer(""));
    let carrier_flow = r.flow_of(&CARRIER.parse().unwrap()).unwrap().relay_port;
    // The other host, without the trunk: both addresses are ordinary clients there.
    let mut other = synced(&config(""));
    for addr in [CARRIER, CARRIER_2] {
        client(&mut other, t0, addr, &req("OPTIONS", addr));
    }
    let mut items = Vec::new();
    other.take_sync(&mut items);
    let flows: Vec<Item> = items
        .into_iter()
        .filter(|i| matches!(i, Item::Flow { .. }))
        .collect();
    assert_eq!(flows.len(), 2, "{flows:?}");
    for it in flows {
        assert_eq!(r.apply_sync(t0, it), SyncEffect::default(), "{it:?}");
    }
    assert_eq!(r.sync_rejected[SyncReject::StaticPeer as usize], 2);
    assert_eq!(r.sync_rejected.iter().sum::<u64>(), 2);
    assert_eq!(r.flow_count(), 1);
    client(&mut r, t0, "198.51.100.9:5060", &req("OPTIONS", "x"));
    for addr in [CARRIER, CARRIER_2] {
        let f = r.flow_of(&addr.parse().unwrap()).unwrap();
        assert_eq!((f.relay_port, f.peer), (carrier_flow, Some(0)), "{addr}");
    }
}
