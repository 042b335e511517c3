//! The sipfront pair of the tests: configs, start-up, VIP holders, counters, client flows.

use super::*;

pub const A_IP: &str = "10.88.0.11";
pub const KAM_BACKENDS: [(&str, &str); 2] =
    [("kamA", "10.88.0.21:5060"), ("kamB", "10.88.0.22:5060")];
pub const B_IP: &str = "10.88.0.12";
/// The plain UDP backends of the load tests ([`udp_pair_net`]).
pub const UDP_BACKENDS: [(&str, &str); 2] =
    [("beA", "10.88.0.21:5060"), ("beB", "10.88.0.22:5060")];
/// Per-source limits lifted (every load client is one address) and flows kept 10 min.
pub const LOAD_LIMITS: &str = "[limits]\nnew_flows_per_ip = 1000000\nmax_flows_per_ip = 1000000\n\
                               datagrams_per_ip = 1000000\n\n[timeouts]\nflow_idle = \"600s\"\n";

/// The LAN of the load tests (client .10, sfA .11, sfB .12, beA .21, beB .22) with a plain
/// UDP backend on each backend host ([`UDP_BACKENDS`]).
pub fn udp_pair_net() -> (Net, [UdpBackend; 2]) {
    let net = sync_net(&[
        ("client", 10),
        ("sfA", 11),
        ("sfB", 12),
        ("beA", 21),
        ("beB", 22),
    ]);
    let backends = [
        UdpBackend::start(net.host("beA"), 5060),
        UdpBackend::start(net.host("beB"), 5060),
    ];
    (net, backends)
}

/// The config of one host of the pair: `own` and `peer` LAN addresses, VRRP `priority`,
/// `backends` (name, addr), the shared key of the test directory, relay ports 20000-29999.
pub fn spec(
    own: &str,
    peer: &str,
    priority: u8,
    backends: &[(&str, &str)],
    dir: &TestDir,
) -> SfSpec {
    SfSpec {
        own: own.parse().unwrap(),
        peer: peer.parse().unwrap(),
        priority: Some(priority),
        backends: backends
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect(),
        key_file: write_key(dir),
        relay_ports: "20000-29999".into(),
        relay_prefix: None,
        extra: String::new(),
    }
}

/// The configs of A (150) and B (100), with the same `backends` and `extra` TOML.
pub fn pair_specs(backends: &[(&str, &str)], extra: &str, dir: &TestDir) -> (SfSpec, SfSpec) {
    let mut spec_a = spec(A_IP, B_IP, 150, backends, dir);
    spec_a.extra = extra.into();
    let mut spec_b = spec(B_IP, A_IP, 100, backends, dir);
    spec_b.extra = extra.into();
    (spec_a, spec_b)
}

/// Starts A (150) and waits until it is master, then B (100) and waits until it is backup
/// and both hold each other's full table.
pub fn start_pair(
    dir: &TestDir,
    net: &Net,
    spec_a: &SfSpec,
    spec_b: &SfSpec,
) -> (NsSipfront, NsSipfront) {
    let mut a = start_spec(dir, net.host("sfA"), "sfA", spec_a);
    a.expect_state(VrrpState::Master, Duration::from_secs(15));
    let mut b = start_spec(dir, net.host("sfB"), "sfB", spec_b);
    b.expect_state(VrrpState::Backup, Duration::from_secs(15));
    b.wait_synced(Duration::from_secs(15));
    a.wait_synced(Duration::from_secs(15));
    wait_holders(net, &["sfA"], Duration::from_secs(5));
    (a, b)
}

pub fn wait_holders(net: &Net, want: &[&str], timeout: Duration) {
    let mut last = Vec::new();
    let ok = wait_until(timeout, || {
        last = net.holders(VIP);
        last == want
    });
    assert!(ok, "{VIP} held by {last:?}, expected {want:?}");
}

pub fn datagrams(text: &str, direction: &str, backend: &str) -> f64 {
    metric(
        text,
        "sipfront_datagrams_total",
        &[("direction", direction), ("backend", backend)],
    )
}

/// Counters are published a few times a second: the metrics once `sipfront_datagrams_total`
/// has not changed for 600 ms (or after 10 s).
pub fn settled(sf: &mut NsSipfront) -> String {
    let counters = |t: &str| -> Vec<(String, u64)> {
        let mut v: Vec<_> = parse_metrics(t)
            .into_iter()
            .filter(|s| s.name == "sipfront_datagrams_total")
            .map(|s| (format!("{:?}", s.labels), s.value.to_bits()))
            .collect();
        v.sort();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = sf.metrics();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(150));
        let now = sf.metrics();
        if counters(&now) != counters(&last) {
            since = Instant::now();
        }
        last = now;
        if since.elapsed() >= Duration::from_millis(600) || Instant::now() >= deadline {
            return last;
        }
    }
}

/// Creates `n` client flows through the VIP from the client host (one socket each).
pub fn make_flows(net: &Net, n: usize, tag: &str) -> Vec<UdpSocket> {
    let socks = client_sockets(net.host("client"), n);
    let vip: std::net::SocketAddr = format!("{VIP}:5060").parse().unwrap();
    for (i, s) in socks.iter().enumerate() {
        let _ = s.send_to(
            &options_request(s.local_addr().unwrap(), &format!("{tag}{i}")),
            vip,
        );
    }
    socks
}

pub fn wait_flow_count(sf: &mut NsSipfront, n: usize) {
    let mut total = 0;
    let ok = wait_until(Duration::from_secs(15), || {
        total = sf.flows().0;
        total == n
    });
    assert!(ok, "{}: {total} flows, expected {n}", sf.name);
}
