//! The routing decision per datagram, without sockets: client -> backend and
//! backend -> client for an existing flow, with 10,000 flows in the table; and the
//! periodic sweep (expiry, per-backend counts) over 100,000 flows and dialogs, which
//! runs on the dataplane thread between datagrams.
//!
//! `cargo bench --bench routing`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sipfront::config::{Config, EphemeralPorts};
use sipfront::relay::router::RouterConfig;
use sipfront::relay::{BackendAction, ClientAction, Router};

const CONFIG: &str = r#"
[listen]
sip = ["192.0.2.10:5060"]
relay_ports = "10000-29999"
[[backend]]
name = "a"
addr = "10.0.0.21:5060"
[[backend]]
name = "b"
addr = "10.0.0.22:5060"
[[backend]]
name = "c"
addr = "10.0.0.23:5060"
[limits]
new_flows_per_ip = 1000000
new_flows_burst = 1000000
# Load from one address on loopback: lift the per-source limits.
max_flows_per_ip = 10000000
datagrams_per_ip = 100000000
datagrams_burst = 100000000
"#;

const INVITE: &[u8] = include_bytes!("../tests/corpus/sip/sipp_uac_invite.sip");
const OK_REGISTER: &[u8] = include_bytes!("../tests/corpus/sip/kamailio_200_register.sip");

fn bench_routing(c: &mut Criterion) {
    let cfg = Config::parse(
        CONFIG,
        &EphemeralPorts {
            range: 32768..=60999,
            reserved: vec![],
        },
    )
    .unwrap();
    let mut r = Router::new(RouterConfig::new(&cfg, None), &cfg.backends, Instant::now());
    let now = Instant::now();
    let client = |i: u32| SocketAddr::from(([198, 51, (i >> 8) as u8, i as u8], 5060));
    let mut ports = Vec::new();
    for i in 0..10_000 {
        match r.from_client(now, client(i), 0, INVITE) {
            ClientAction::Forward { relay_port, to, .. } => ports.push((relay_port, to)),
            other => panic!("{other:?}"),
        }
    }
    let mut g = c.benchmark_group("route");
    let mut i = 0u32;
    g.bench_function("client_to_backend/invite", |b| {
        b.iter(|| {
            i = (i + 1) % 10_000;
            black_box(r.from_client(now, client(i), 0, black_box(INVITE)))
        })
    });
    let mut j = 0usize;
    g.bench_function("backend_to_client/200_register", |b| {
        b.iter(|| {
            j = (j + 1) % ports.len();
            let (port, src) = ports[j];
            let a = r.from_backend(now, port, src, black_box(OK_REGISTER));
            debug_assert!(matches!(a, BackendAction::Forward { .. }));
            black_box(a)
        })
    });
    g.finish();
}

/// 100,000 flows over five relay addresses, each with a call in the dialog table.
fn bench_sweep(c: &mut Criterion) {
    let text = CONFIG.replace(
        "relay_ports",
        "relay = [\"192.0.2.11\", \"192.0.2.12\", \"192.0.2.13\", \"192.0.2.14\", \"192.0.2.15\"]\nrelay_ports",
    ) + "max_dialogs = 200000\n[timeouts]\nflow_idle = \"1000h\"\ntransaction = \"1000h\"\n";
    let eph = EphemeralPorts {
        range: 32768..=60999,
        reserved: vec![],
    };
    let cfg = Config::parse(&text, &eph).unwrap();
    let mut r = Router::new(RouterConfig::new(&cfg, None), &cfg.backends, Instant::now());
    let t0 = Instant::now();
    let invite = String::from_utf8_lossy(INVITE).into_owned();
    for i in 0..100_000u32 {
        let client =
            SocketAddr::from(([198, 51, (i >> 8) as u8, i as u8], 5060 + (i >> 16) as u16));
        let msg = invite.replacen("Call-ID: ", &format!("Call-ID: {i}-"), 1);
        let a = r.from_client(t0, client, 0, msg.as_bytes());
        assert!(matches!(a, ClientAction::Forward { .. }), "{a:?}");
    }
    assert_eq!(r.flow_count(), 100_000);
    assert!(r.dialog_count() >= 100_000);
    let mut now = t0;
    c.bench_function("sweep/100k_flows_100k_dialogs", |b| {
        b.iter(|| {
            // Each call is a due sweep; nothing expires (timeouts of 1000 h).
            now += Duration::from_secs(1);
            r.handle_timeout(black_box(now));
        })
    });
    assert_eq!(
        r.flow_count(),
        100_000,
        "the sweep must not have emptied the table"
    );
    // The longest single call is the stall a datagram can meet: the slice that ends a
    // round also sweeps the dialog table.
    let mut longest = Duration::ZERO;
    for _ in 0..80 {
        now += Duration::from_secs(1);
        let t = Instant::now();
        r.handle_timeout(black_box(now));
        longest = longest.max(t.elapsed());
    }
    println!("sweep/100k_flows_100k_dialogs: longest single call of 80: {longest:?}");
}

criterion_group!(benches, bench_routing, bench_sweep);
criterion_main!(benches);
