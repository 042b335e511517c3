//! After warm-up, forwarding allocates nothing: a counting global allocator watches
//! every thread of the process while tens of thousands of datagrams cross the real
//! dataplane (real sockets on 127.0.0.1).

use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sipfront::config::{Config, EphemeralPorts};

#[global_allocator]
static GLOBAL: testkit::alloc::Counting = testkit::alloc::Counting;

fn msg(first_line: &str, call_id: &str, cseq: &str, out: &mut [u8]) -> usize {
    use std::io::Write;
    let mut c = std::io::Cursor::new(out);
    write!(
        c,
        "{first_line}\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{call_id}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    c.position() as usize
}

/// Receives the next relayed datagram at the backend, answering sipfront's OPTIONS
/// health probes (they come from the probe socket, not a relay port) on the way.
/// Probes build with rsip and allocate; the health interval is set to an hour so
/// only the first one falls in the warm-up.
fn backend_recv(
    backend: &UdpSocket,
    rx: &mut [u8; 2048],
    relay: &std::ops::RangeInclusive<u16>,
) -> (usize, std::net::SocketAddr) {
    loop {
        let (n, from) = backend.recv_from(rx).unwrap();
        if relay.contains(&from.port()) {
            return (n, from);
        }
        let reply =
            sipfront::sip::response::build_response(&rx[..n], 200, "OK", Some("t"), &[], None)
                .unwrap();
        backend.send_to(&reply, from).unwrap();
    }
}

/// The counter is process-wide: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn forwarding_allocates_nothing_after_warm_up() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    forward_and_count(28060, "relay_ports = \"23000-23099\"", 23000..=23099);
}

/// Prefix mode: the relay endpoint is an address of the prefix on one wildcard
/// socket; receives carry IP_PKTINFO, sends `sendmsg` with the source address.
#[test]
fn prefix_mode_forwarding_allocates_nothing_after_warm_up() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    forward_and_count(
        28061,
        "relay_prefix = \"127.19.0.0/16\"\nrelay_port = 23150",
        23150..=23150,
    );
}

fn forward_and_count(sip_port: u16, relay_keys: &str, relay: std::ops::RangeInclusive<u16>) {
    // A HEP collector: every relayed datagram is also encoded and sent on both legs
    // (HEPv3 export on), drained here into a fixed buffer.
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let collector_addr = collector.local_addr().unwrap();
    // Per test (both run in this process, one after the other).
    let hep_seen = std::sync::Arc::new(AtomicU64::new(0));
    let hep_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (seen, stop) = (hep_seen.clone(), hep_stop.clone());
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 9000];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = collector.recv(&mut buf)
                && n > 4
                && &buf[..4] == b"HEP3"
            {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&backend, &client] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let text = format!(
        "[listen]\nsip = [\"127.0.0.1:{sip_port}\"]\n{relay_keys}\n\
         [[backend]]\nname = \"only\"\naddr = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [health]\ninterval = \"1h\"\n\
         [[limits.source]]\ncidr = \"127.0.0.0/8\"\ndatagrams_per_ip = 1000000\n\
         [[limits.source]]\ncidr = \"10.1.0.0/16\"\nmax_flows_per_ip = 1\n\
         [hep]\ncollector = \"{collector_addr}\"\npassword = \"pw\"\n",
        backend.local_addr().unwrap()
    );
    let cfg = Config::parse(&text, &EphemeralPorts::from_system()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The recorder is process-wide too: installed once, shared by both tests.
    static PROM: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    let prom = PROM
        .get_or_init(|| sipfront::admin::install_recorder().unwrap())
        .clone();
    let running = rt.block_on(sipfront::server::start(cfg, prom)).unwrap();
    // A parsed address: `send_to(&str)` would allocate a Vec in the resolver.
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], sip_port));

    // Pre-built messages: the test's own loop must not allocate either.
    let mut bufs = vec![[0u8; 512]; 4];
    let mut lens = [0usize; 4];
    let mut ids: Vec<String> = (0..30_000).map(|i| format!("new-{i}@test")).collect();
    lens[0] = msg(
        "REGISTER sip:x SIP/2.0",
        "reg@test",
        "1 REGISTER",
        &mut bufs[0],
    );
    lens[1] = msg("SIP/2.0 200 OK", "reg@test", "1 REGISTER", &mut bufs[1]);
    lens[2] = msg(
        "OPTIONS sip:x SIP/2.0",
        "opt@test",
        "2 OPTIONS",
        &mut bufs[2],
    );
    let mut rx = [0u8; 2048];
    let mut scratch = [0u8; 512];

    let round = |i: usize, scratch: &mut [u8; 512], rx: &mut [u8; 2048], ids: &mut Vec<String>| {
        // client -> proxy -> backend
        client
            .send_to(&bufs[i % 3 / 2 * 2][..lens[i % 3 / 2 * 2]], proxy)
            .unwrap();
        let (n, relay) = backend_recv(&backend, rx, &relay);
        assert!(n > 0);
        // backend -> relay port -> client: alternately a response and a new request
        // from the backend (which pins a new Call-ID in the dialog table).
        if i % 2 == 0 {
            backend.send_to(&bufs[1][..lens[1]], relay).unwrap();
        } else {
            let id = &ids[i / 2 % ids.len()];
            let l = msg("OPTIONS sip:phone SIP/2.0", id, "1 OPTIONS", scratch);
            backend.send_to(&scratch[..l], relay).unwrap();
        }
        let (m, _) = client.recv_from(rx).unwrap();
        assert!(m > 0);
        let _ = ids;
    };

    for i in 0..2_000 {
        round(i, &mut scratch, &mut rx, &mut ids);
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = testkit::alloc::total();
    for i in 2_000..22_000 {
        round(i, &mut scratch, &mut rx, &mut ids);
    }
    let after = testkit::alloc::total();
    // The status is published by the housekeeping tick: wait for the last one.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let forwarded = loop {
        let st = running.status.lock().unwrap().clone();
        let n: u64 = st.counters.backends[0].datagrams.0.iter().sum();
        if n >= 40_000 || std::time::Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(running);
    std::thread::sleep(Duration::from_millis(300));
    hep_stop.store(true, Ordering::Relaxed);
    drain.join().unwrap();
    let hep = hep_seen.load(Ordering::Relaxed);
    assert!(forwarded >= 40_000, "forwarded {forwarded}");
    // Every datagram is encoded (two legs); a sender thread starved on a busy machine
    // drops some (counted, by design), so at least half of them must have arrived.
    assert!(
        hep >= forwarded / 2,
        "HEP packets {hep} for {forwarded} datagrams"
    );
    assert_eq!(
        after - before,
        0,
        "{} allocations while forwarding 40,000 datagrams",
        after - before
    );
}
