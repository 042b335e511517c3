//! The routing decision per datagram, without sockets: client -> backend and
//! backend -> client for an existing flow, with 10,000 flows in the table, and in
//! relay prefix mode with 1,000 and 1,000,000 flows (the cost should not grow with
//! the table); and the periodic sweep (expiry, per-backend counts) over 100,000 flows
//! and dialogs, and over 1,000,000 flows in prefix mode, which runs on the dataplane
//! thread between datagrams. Printed besides criterion's table (whatever the filter):
//! the 1M / 1k ratio of a batched decision measured in turns (`prefix/ratio_1m_1k/`:
//! INVITEs of one Call-ID, so the dialog entry is always cached; two flows per
//! source; `invite_own_call` and `180_own_call`, each flow's INVITE or 180 with the
//! Call-ID of its own call, n flows and n dialogs), next to what a decision's memory traffic costs at
//! the least (`prefix/memory_floor`), and the longest sweep calls.
//!
//! `cargo bench --bench routing` (`-- prefix` for the prefix-mode ones only)

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sipfront::config::{Config, EphemeralPorts};
use sipfront::relay::prefetch::prefetch_line;
use sipfront::relay::router::RouterConfig;
use sipfront::relay::{BackendAction, ClientAction, Prepared, Router};

#[path = "common/call_msgs.rs"]
mod call_msgs;
#[path = "common/router_config.rs"]
mod router_config;
use call_msgs::CallMsgs;
use router_config::CONFIG;

const INVITE: &[u8] = include_bytes!("../tests/corpus/sip/sipp_uac_invite.sip");
const OK_REGISTER: &[u8] = include_bytes!("../tests/corpus/sip/kamailio_200_register.sip");
const RINGING: &[u8] = include_bytes!("../tests/corpus/sip/sipp_uas_180_ringing.sip");

fn bench_routing(c: &mut Criterion) {
    let cfg = Config::parse(CONFIG, &EphemeralPorts::default()).unwrap();
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

/// Prefix mode: a /12, one relay port, `max_flows` a million, nothing expires (the
/// sweeps measured walk a full table); `limits` goes into `[limits]`, and the text
/// ends inside `[timeouts]`.
fn prefix_config_text(limits: &str) -> String {
    CONFIG.replace(
        "relay_ports = \"10000-29999\"",
        "relay_prefix = \"10.16.0.0/12\"\nrelay_port = 5062",
    ) + "max_flows = 1000000\n"
        + limits
        + "[timeouts]\nflow_idle = \"1000h\"\nunanswered_idle = \"1000h\"\n"
}

/// [`prefix_config_text`], parsed.
fn prefix_config() -> Config {
    let text = prefix_config_text("");
    Config::parse(&text, &EphemeralPorts::default()).unwrap()
}

/// This process's VmRSS in KiB (0 if unknown).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// This thread's CPU time: a stall measured in it does not count the time other
/// processes on a busy machine took the core.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Client `i` of up to 2^22: an address of 100.64.0.0/10 each.
fn cgnat_client(i: u32) -> SocketAddr {
    let [_, b, c, d] = i.to_be_bytes();
    SocketAddr::from(([100, 64 + b, c, d], 5060))
}

/// Client `i` of up to 2^23 as two flows per source: an address of 100.64.0.0/10 per
/// pair, ports 5060 and 5061. A source with more than one flow keeps its datagram
/// bucket in the limiter's table, not in a flow.
fn paired_client(i: u32) -> SocketAddr {
    let a = cgnat_client(i / 2);
    SocketAddr::new(a.ip(), 5060 + (i % 2) as u16)
}

/// A prefix-mode router holding `n` flows (one INVITE each), and their endpoints.
fn prefix_router(n: u32) -> (Router, Vec<(sipfront::relay::RelayPort, SocketAddr)>) {
    prefix_router_of(n, cgnat_client)
}

/// [`prefix_router`] with the flows of `client(0..n)`.
fn prefix_router_of(
    n: u32,
    client: fn(u32) -> SocketAddr,
) -> (Router, Vec<(sipfront::relay::RelayPort, SocketAddr)>) {
    let cfg = prefix_config();
    let mut r = Router::new(RouterConfig::new(&cfg, None), &cfg.backends, Instant::now());
    // As the dataplane does.
    for (at, len) in r.table_memory() {
        sipfront::sys::mem::advise_huge_pages(at, len);
    }
    let now = Instant::now();
    let ports = (0..n)
        .map(|i| match r.from_client(now, client(i), 0, INVITE) {
            ClientAction::Forward { relay_port, to, .. } => (relay_port, to),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(r.flow_count(), n as usize);
    (r, ports)
}

/// A prefix-mode router holding `n` flows, each with a call of its own in the dialog
/// table (`n` dialogs): the table a decision meets when every phone is in a call.
fn prefix_router_with_calls(n: u32) -> (Router, Vec<(sipfront::relay::RelayPort, SocketAddr)>) {
    let text = prefix_config_text("max_dialogs = 1000000\n") + "transaction = \"1000h\"\n";
    let cfg = Config::parse(&text, &EphemeralPorts::default()).unwrap();
    let mut r = Router::new(RouterConfig::new(&cfg, None), &cfg.backends, Instant::now());
    for (at, len) in r.table_memory() {
        sipfront::sys::mem::advise_huge_pages(at, len);
    }
    let now = Instant::now();
    let mut inv = CallMsgs::of_template(INVITE, BATCH as usize);
    let ports = (0..n)
        .map(
            |i| match r.from_client(now, cgnat_client(i), 0, inv.of(i)) {
                ClientAction::Forward { relay_port, to, .. } => (relay_port, to),
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(r.flow_count(), n as usize);
    assert_eq!(r.dialog_count(), n as usize);
    (r, ports)
}

/// [`backend_batch`] of 180s, each with the Call-ID of its endpoint's call (`calls`:
/// the endpoints of [`prefix_router_with_calls`] in walk order with their call's
/// number, see [`scattered_calls`]), as the dataplane's `take_batch` runs a prefix
/// socket's batch.
fn call_backend_batch(
    r: &mut Router,
    now: Instant,
    calls: &[(sipfront::relay::RelayPort, SocketAddr, u32)],
    j: &mut usize,
    msgs: &mut CallMsgs,
) {
    let batch: [(sipfront::relay::RelayPort, SocketAddr); BATCH as usize] =
        std::array::from_fn(|k| {
            *j = (*j + 1) % calls.len();
            let (port, src, call) = calls[*j];
            msgs.set(k, call);
            (port, src)
        });
    batch.iter().for_each(|&(port, _)| r.prefetch_backend(port));
    batch.iter().for_each(|&(port, _)| r.warm_backend(port));
    let prepared: [Option<Prepared<'_>>; BATCH as usize] = std::array::from_fn(|k| {
        let (port, src) = batch[k];
        r.prepare_backend(port, src, black_box(&msgs.msgs[k]))
    });
    prepared.iter().flatten().for_each(|p| r.warm_dialog(p));
    for ((k, &(port, src)), p) in batch.iter().enumerate().zip(prepared) {
        black_box(r.from_backend_with(now, port, src, &msgs.msgs[k], p));
    }
}

/// [`client_batch`] where each client's INVITE carries its own call's Call-ID.
fn call_batch(r: &mut Router, now: Instant, i: &mut u64, step: u64, n: u32, inv: &mut CallMsgs) {
    let first = *i;
    for _ in 0..BATCH {
        *i = (*i + step) % u64::from(n);
        r.prefetch_client(cgnat_client(*i as u32));
    }
    *i = first;
    for _ in 0..BATCH {
        *i = (*i + step) % u64::from(n);
        r.warm_client(cgnat_client(*i as u32));
    }
    *i = first;
    let clients: [SocketAddr; BATCH as usize] = std::array::from_fn(|k| {
        *i = (*i + step) % u64::from(n);
        inv.set(k, *i as u32);
        cgnat_client(*i as u32)
    });
    let batch: [(SocketAddr, &[u8]); BATCH as usize] =
        std::array::from_fn(|k| (clients[k], inv.msgs[k].as_slice()));
    decide(r, now, &batch);
}

/// Datagrams per warmed batch: what one `recvmmsg` returns at most.
const BATCH: u64 = 16;

/// One batch of client INVITEs as the dataplane runs a received batch: every
/// datagram's lines prefetched, then the flows', then the decisions. `i` walks the
/// clients by `step` (see [`bench_prefix`]).
fn client_batch(r: &mut Router, now: Instant, i: &mut u64, step: u64, n: u32) {
    client_batch_of(r, now, i, step, n, cgnat_client)
}

/// [`client_batch`] for the clients `client(0..n)`.
fn client_batch_of(
    r: &mut Router,
    now: Instant,
    i: &mut u64,
    step: u64,
    n: u32,
    client: fn(u32) -> SocketAddr,
) {
    let first = *i;
    for _ in 0..BATCH {
        *i = (*i + step) % u64::from(n);
        r.prefetch_client(client(*i as u32));
    }
    *i = first;
    for _ in 0..BATCH {
        *i = (*i + step) % u64::from(n);
        r.warm_client(client(*i as u32));
    }
    *i = first;
    let batch: [(SocketAddr, &[u8]); BATCH as usize] = std::array::from_fn(|_| {
        *i = (*i + step) % u64::from(n);
        (client(*i as u32), INVITE)
    });
    decide(r, now, &batch);
}

/// The last passes and the decisions of a warmed client batch, as the dataplane's
/// `take_batch`: each datagram of a known flow scanned and its dialog entry looked
/// up, all before the first decision.
fn decide(r: &mut Router, now: Instant, batch: &[(SocketAddr, &[u8]); BATCH as usize]) {
    let prepared: [Option<Prepared<'_>>; BATCH as usize] =
        std::array::from_fn(|k| r.prepare_client(batch[k].0, black_box(batch[k].1)));
    prepared.iter().flatten().for_each(|p| r.warm_dialog(p));
    for (&(client, data), p) in batch.iter().zip(prepared) {
        black_box(r.from_client_with(now, client, 0, data, p));
    }
}

/// [`client_batch`] for 200s to REGISTER from the backend, the endpoints in `ports`'
/// order.
fn backend_batch(
    r: &mut Router,
    now: Instant,
    ports: &[(sipfront::relay::RelayPort, SocketAddr)],
    j: &mut u64,
) {
    let n = ports.len() as u64;
    let first = *j;
    for _ in 0..BATCH {
        *j = (*j + 1) % n;
        r.prefetch_backend(ports[*j as usize].0);
    }
    *j = first;
    for _ in 0..BATCH {
        *j = (*j + 1) % n;
        r.warm_backend(ports[*j as usize].0);
    }
    *j = first;
    for _ in 0..BATCH {
        *j = (*j + 1) % n;
        let (port, src) = ports[*j as usize];
        black_box(r.from_backend(now, port, src, black_box(OK_REGISTER)));
    }
}

/// The endpoints of `prefix_router(n)` in the scattered order of the walk by `step`.
fn scattered(
    ports: &[(sipfront::relay::RelayPort, SocketAddr)],
    step: u64,
) -> Vec<(sipfront::relay::RelayPort, SocketAddr)> {
    let n = ports.len() as u64;
    (1..=n).map(|k| ports[(k * step % n) as usize]).collect()
}

/// [`scattered`] with each endpoint's number in `ports` (its call's, in
/// [`prefix_router_with_calls`]): a datagram's endpoint comes in the received batch,
/// and the walk must not add a miss of its own.
fn scattered_calls(
    ports: &[(sipfront::relay::RelayPort, SocketAddr)],
    step: u64,
) -> Vec<(sipfront::relay::RelayPort, SocketAddr, u32)> {
    let n = ports.len() as u64;
    (1..=n)
        .map(|k| {
            let i = (k * step % n) as usize;
            (ports[i].0, ports[i].1, i as u32)
        })
        .collect()
}

/// The walk's step over `n` clients: odd, and `n` not a multiple of it.
fn walk_step(n: u32) -> u64 {
    (2_654_435_761u64 % u64::from(n)) | 1
}

/// What a client decision's memory traffic costs at the least on this machine: items
/// of random lines of a 512 MiB block, batches of 16 prefetched, then read, as the
/// router warms a received batch. At a million flows a client decision reads four to
/// five lines (the source's bucket, one or two; the index line; the flow, two or
/// three) and writes two (the bucket, the flow's `last_seen`).
struct MemoryFloor {
    block: Vec<u8>,
    lines: Vec<usize>,
}

impl MemoryFloor {
    fn new() -> Self {
        const SIZE: usize = 512 << 20;
        let block = vec![1u8; SIZE];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let lines = (0..5 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x as usize % (SIZE / 64)) * 64
            })
            .collect();
        MemoryFloor { block, lines }
    }

    /// One batch of 16 items of `per_item` lines from `*k`, the first `writes` of
    /// each item's lines written.
    fn batch(&mut self, k: &mut usize, per_item: usize, writes: usize) -> u64 {
        let n = BATCH as usize * per_item;
        if *k + n > self.lines.len() {
            *k = 0;
        }
        let batch = &self.lines[*k..*k + n];
        *k += n;
        for &o in batch {
            prefetch_line(self.block.as_ptr().wrapping_add(o));
        }
        let mut sum = 0u64;
        for (i, &o) in batch.iter().enumerate() {
            sum += u64::from(self.block[o]);
            if i % per_item < writes {
                self.block[o + 8] = sum as u8;
            }
        }
        sum
    }
}

/// The 1M / 1k cost ratio of a batched decision, both routers measured in turns
/// (50 ms each, 25 rounds) so that what else the machine does lands on both alike;
/// criterion measures them 20 s apart, and its two means often drift apart more
/// than the effect looked for. Prints the median ratio per direction and its range.
fn bench_prefix_ratio(_c: &mut Criterion) {
    let (mut small, p_small) = prefix_router(1_000);
    let (mut large, p_large) = prefix_router(1_000_000);
    let (mut small_pairs, _) = prefix_router_of(1_000, paired_client);
    let (mut large_pairs, _) = prefix_router_of(1_000_000, paired_client);
    let (mut i_sp, mut i_lp) = (0u64, 0u64);
    let mut pairs = Vec::new();
    let ((mut small_calls, sc_ports), (mut large_calls, lc_ports)) = (
        prefix_router_with_calls(1_000),
        prefix_router_with_calls(1_000_000),
    );
    let (mut i_sc, mut i_lc, mut inv) = (0u64, 0u64, CallMsgs::of_template(INVITE, BATCH as usize));
    let (mut j_sc, mut j_lc, mut ringing) = (
        0usize,
        0usize,
        CallMsgs::of_template(RINGING, BATCH as usize),
    );
    let (mut calls, mut b2c_calls) = (Vec::new(), Vec::new());
    let (s_small, s_large) = (walk_step(1_000), walk_step(1_000_000));
    let (p_small, p_large) = (scattered(&p_small, s_small), scattered(&p_large, s_large));
    let (sc_calls, lc_calls) = (
        scattered_calls(&sc_ports, s_small),
        scattered_calls(&lc_ports, s_large),
    );
    let now = Instant::now();
    // Every call rung once first: a first 180 makes its entry a dialog (the caller's
    // pin count changes), which a 1k table would do only in its first batches; the
    // rounds measure the steady state at both sizes.
    for (r, ports) in [(&mut small_calls, &sc_ports), (&mut large_calls, &lc_ports)] {
        for (i, &(port, src)) in ports.iter().enumerate() {
            let a = r.from_backend(now, port, src, ringing.of(i as u32));
            assert!(matches!(a, BackendAction::Forward { .. }), "{a:?}");
        }
    }
    let slice = Duration::from_millis(50);
    // ns per decision of `batch` run for `slice`.
    let time = |batch: &mut dyn FnMut()| {
        let t = Instant::now();
        let mut batches = 0u64;
        while t.elapsed() < slice {
            for _ in 0..64 {
                batch();
            }
            batches += 64;
        }
        t.elapsed().as_nanos() as f64 / (batches * BATCH) as f64
    };
    let (mut i_s, mut i_l, mut j_s, mut j_l) = (0u64, 0u64, 0u64, 0u64);
    let (mut c2b, mut b2c) = (Vec::new(), Vec::new());
    let mut floor = MemoryFloor::new();
    let (mut k, mut three, mut five) = (0usize, Vec::new(), Vec::new());
    for _ in 0..25 {
        three.push(time(&mut || {
            black_box(floor.batch(&mut k, 3, 0));
        }));
        five.push(time(&mut || {
            black_box(floor.batch(&mut k, 5, 2));
        }));
        // The clock as the dataplane reads it, once per batch: the datagram buckets
        // refill as time passes.
        let a = time(&mut || client_batch(&mut small, Instant::now(), &mut i_s, s_small, 1_000));
        let b =
            time(&mut || client_batch(&mut large, Instant::now(), &mut i_l, s_large, 1_000_000));
        c2b.push((b / a, a, b));
        let a = time(&mut || {
            client_batch_of(
                &mut small_pairs,
                Instant::now(),
                &mut i_sp,
                s_small,
                1_000,
                paired_client,
            )
        });
        let b = time(&mut || {
            let n = 1_000_000;
            client_batch_of(
                &mut large_pairs,
                Instant::now(),
                &mut i_lp,
                s_large,
                n,
                paired_client,
            )
        });
        pairs.push((b / a, a, b));
        let a = time(&mut || {
            call_batch(
                &mut small_calls,
                Instant::now(),
                &mut i_sc,
                s_small,
                1_000,
                &mut inv,
            )
        });
        let b = time(&mut || {
            let n = 1_000_000;
            call_batch(
                &mut large_calls,
                Instant::now(),
                &mut i_lc,
                s_large,
                n,
                &mut inv,
            )
        });
        calls.push((b / a, a, b));
        let a = time(&mut || {
            call_backend_batch(&mut small_calls, now, &sc_calls, &mut j_sc, &mut ringing)
        });
        let b = time(&mut || {
            call_backend_batch(&mut large_calls, now, &lc_calls, &mut j_lc, &mut ringing)
        });
        b2c_calls.push((b / a, a, b));
        let a = time(&mut || backend_batch(&mut small, now, &p_small, &mut j_s));
        let b = time(&mut || backend_batch(&mut large, now, &p_large, &mut j_l));
        b2c.push((b / a, a, b));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let small_c2b = median(c2b.iter().map(|x| x.1).collect());
    println!(
        "prefix/memory_floor: random lines of 512 MiB, batches of {BATCH} prefetched then \
         read: {:.0} ns per item of three lines read, {:.0} ns per item of five lines, two \
         of them written (a client decision's at 1M flows); the 1.2x goal leaves {:.0} ns \
         over the 1k client decision (medians of the same rounds)",
        median(three),
        median(five),
        small_c2b * 0.2
    );
    for (name, mut v) in [
        ("client_to_backend/invite", c2b),
        ("client_to_backend/invite_two_flows_per_source", pairs),
        ("client_to_backend/invite_own_call", calls),
        ("backend_to_client/200_register", b2c),
        ("backend_to_client/180_own_call", b2c_calls),
    ] {
        v.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (r, a, b) = v[v.len() / 2];
        println!(
            "prefix/ratio_1m_1k/{name}: median {r:.2}x ({a:.0} vs {b:.0} ns per decision), \
             range {:.2}-{:.2}x over {} rounds, batches of {BATCH}",
            v[0].0,
            v[v.len() - 1].0,
            v.len()
        );
    }
}

/// The routing decision in prefix mode at 1k and 1M flows: clients and endpoints are
/// visited in a random order, so a large table is not walked through the cache.
fn bench_prefix(c: &mut Criterion) {
    let mut g = c.benchmark_group("prefix");
    for (label, n) in [("1k", 1_000u32), ("1m", 1_000_000)] {
        let rss0 = rss_kib();
        let (mut r, ports) = prefix_router(n);
        let grown = rss_kib().saturating_sub(rss0) * 1024;
        println!(
            "prefix/memory/{label}: RSS grew {} KiB building the router, {} bytes per flow",
            grown / 1024,
            grown / u64::from(n)
        );
        let now = Instant::now();
        // A multiplicative walk over 0..n (odd step, n not a multiple of it) visits
        // every flow in a scattered order without a table of indexes.
        let step = walk_step(n);
        // The endpoints in that order, read one after the other below: a datagram's
        // endpoint is in the received batch, not a miss of its own.
        let ports = scattered(&ports, step);
        let mut i = 0u64;
        g.bench_function(format!("client_to_backend/invite/{label}"), |b| {
            b.iter(|| {
                i = (i + step) % u64::from(n);
                black_box(r.from_client(now, cgnat_client(i as u32), 0, black_box(INVITE)))
            })
        });
        g.throughput(criterion::Throughput::Elements(BATCH));
        g.bench_function(format!("client_to_backend/invite_batch16/{label}"), |b| {
            b.iter(|| client_batch(&mut r, now, &mut i, step, n))
        });
        g.throughput(criterion::Throughput::Elements(1));
        let mut j = 0u64;
        g.bench_function(format!("backend_to_client/200_register/{label}"), |b| {
            b.iter(|| {
                j = (j + 1) % u64::from(n);
                let (port, src) = ports[j as usize];
                let a = r.from_backend(now, port, src, black_box(OK_REGISTER));
                debug_assert!(matches!(a, BackendAction::Forward { .. }));
                black_box(a)
            })
        });
        g.throughput(criterion::Throughput::Elements(BATCH));
        g.bench_function(
            format!("backend_to_client/200_register_batch16/{label}"),
            |b| b.iter(|| backend_batch(&mut r, now, &ports, &mut j)),
        );
        g.throughput(criterion::Throughput::Elements(1));
        if n == 1_000_000 {
            // The longest single timer call, called at each deadline as the dataplane
            // does (sweep slices, each with a prune step of the per-source limiters,
            // and growth steps), after the decisions above filled the limiters: the
            // stall a datagram can meet with a million flows.
            let mut t = now + Duration::from_secs(1);
            let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
            let calls = 600;
            for _ in 0..calls {
                t = r.poll_timeout().map_or(t, |d| d.max(t));
                let (s, c) = (Instant::now(), thread_cpu());
                r.handle_timeout(black_box(t));
                cpu = cpu.max(thread_cpu().saturating_sub(c));
                wall = wall.max(s.elapsed());
            }
            assert_eq!(r.flow_count(), 1_000_000);
            println!(
                "prefix/sweep/1m_flows: longest single timer call of {calls} (sweep slices, \
                 growth steps): {wall:?} ({cpu:?} of this thread's CPU time: without \
                 preemption by other work)"
            );
            // What the master's dataplane does in one step when the standby restarts:
            // it adopts the flows mirrored for the peer (none here) and, once the
            // standby's (empty) full table is in, drops the mirrored flows it lacked:
            // each a walk over every flow slot.
            let (s, c) = (Instant::now(), thread_cpu());
            black_box(r.adopt_peer_flows(t));
            let (adopt, adopt_cpu) = (s.elapsed(), thread_cpu().saturating_sub(c));
            r.begin_full();
            let (s, c) = (Instant::now(), thread_cpu());
            black_box(r.end_full(t));
            let (end, end_cpu) = (s.elapsed(), thread_cpu().saturating_sub(c));
            assert_eq!(r.flow_count(), 1_000_000);
            println!(
                "prefix/sync_walks/1m_flows: adopting the peer's flows {adopt:?} ({adopt_cpu:?} \
                 CPU), ending an empty full table {end:?} ({end_cpu:?} CPU), each one step"
            );
        }
    }
    g.finish();
}

/// 100,000 flows over five relay addresses, each with a call in the dialog table.
fn bench_sweep(c: &mut Criterion) {
    let text = CONFIG.replace(
        "relay_ports",
        "relay = [\"192.0.2.11\", \"192.0.2.12\", \"192.0.2.13\", \"192.0.2.14\", \"192.0.2.15\"]\nrelay_ports",
    ) + "max_dialogs = 200000\n[timeouts]\nflow_idle = \"1000h\"\nunanswered_idle = \"1000h\"\ntransaction = \"1000h\"\n";
    let cfg = Config::parse(&text, &EphemeralPorts::default()).unwrap();
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
    let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..80 {
        now += Duration::from_secs(1);
        let (t, c) = (Instant::now(), thread_cpu());
        r.handle_timeout(black_box(now));
        cpu = cpu.max(thread_cpu().saturating_sub(c));
        wall = wall.max(t.elapsed());
    }
    println!("sweep/100k_flows_100k_dialogs: longest single call of 80: {wall:?} ({cpu:?} CPU)");
}

/// The longest sweep call with a million flows in prefix mode, each with a call in the
/// dialog table (a million dialogs): the stall a datagram can meet at that scale.
fn bench_prefix_calls(_c: &mut Criterion) {
    let text = prefix_config_text("max_dialogs = 1000000\n") + "transaction = \"1000h\"\n";
    let cfg = Config::parse(&text, &EphemeralPorts::default()).unwrap();
    let t0 = Instant::now();
    let mut r = Router::new(RouterConfig::new(&cfg, None), &cfg.backends, t0);
    let invite = String::from_utf8_lossy(INVITE).into_owned();
    let (head, tail) = invite.split_once("Call-ID: ").unwrap();
    let mut msg = String::new();
    // The longest new call while the tables fill at 50,000 calls/s of virtual time,
    // the timer driven as the dataplane drives it: dialog shards short of room grow
    // there (a table twice the size, every entry re-placed), not in a decision.
    let (mut longest, mut longest_cpu) = (Duration::ZERO, Duration::ZERO);
    let (mut timer, mut timer_cpu) = (Duration::ZERO, Duration::ZERO);
    let mut now = t0;
    for i in 0..1_000_000u32 {
        msg.clear();
        msg.push_str(head);
        msg.push_str("Call-ID: ");
        msg.push_str(&i.to_string());
        msg.push('-');
        msg.push_str(tail);
        let (t, c) = (Instant::now(), thread_cpu());
        let a = r.from_client(now, cgnat_client(i), 0, msg.as_bytes());
        longest_cpu = longest_cpu.max(thread_cpu().saturating_sub(c));
        longest = longest.max(t.elapsed());
        assert!(matches!(a, ClientAction::Forward { .. }), "{a:?}");
        now += Duration::from_micros(20);
        if r.poll_timeout().is_some_and(|t| t <= now) {
            let (t, c) = (Instant::now(), thread_cpu());
            r.handle_timeout(now);
            timer_cpu = timer_cpu.max(thread_cpu().saturating_sub(c));
            timer = timer.max(t.elapsed());
        }
    }
    assert_eq!(r.flow_count(), 1_000_000);
    assert_eq!(r.dialog_count(), 1_000_000);
    println!(
        "prefix/fill/1m_flows_1m_dialogs: longest single new call (flow and dialog) of \
         1,000,000: {longest:?} ({longest_cpu:?} CPU); longest timer call (sweep or \
         growth): {timer:?} ({timer_cpu:?} CPU); decisions that grew a table shard: {}",
        r.grown_in_decisions()
    );
    let (mut wall, mut cpu) = (Duration::ZERO, Duration::ZERO);
    let calls = 400;
    for _ in 0..calls {
        now += Duration::from_millis(500);
        let (t, c) = (Instant::now(), thread_cpu());
        r.handle_timeout(black_box(now));
        cpu = cpu.max(thread_cpu().saturating_sub(c));
        wall = wall.max(t.elapsed());
    }
    assert_eq!(r.flow_count(), 1_000_000);
    assert_eq!(r.dialog_count(), 1_000_000);
    println!(
        "prefix/sweep/1m_flows_1m_dialogs: longest single call of {calls}: {wall:?} ({cpu:?} CPU)"
    );
}

/// With a sync peer: a million established calls, each refreshed by in-dialog traffic (an
/// ACK), so the sweep re-sends every one of them to the peer over a re-send period
/// (`dialog_idle / 4`, 15 min by default): the longest timer call while it does, next to
/// the longest before the ACKs (nothing to re-send), the queue taken after every call as
/// the dataplane takes it each turn.
fn bench_prefix_resend(_c: &mut Criterion) {
    let text = prefix_config_text("max_dialogs = 1000000\n") + "transaction = \"1000h\"\n";
    let cfg = Config::parse(&text, &EphemeralPorts::default()).unwrap();
    let t0 = Instant::now();
    let rc = RouterConfig {
        sync_queue: Some(sipfront::config::DEFAULT_SYNC_TURN_CHANGES),
        ..RouterConfig::new(&cfg, Some([1, 2]))
    };
    let mut r = Router::new(rc, &cfg.backends, t0);
    let with_id = |msg: &[u8], i: u32| {
        let text = String::from_utf8_lossy(msg).into_owned();
        let (head, tail) = text.split_once("Call-ID: ").unwrap();
        format!("{head}Call-ID: {i}-{tail}").into_bytes()
    };
    const OK_INVITE: &[u8] = include_bytes!("../tests/corpus/sip/sipp_uas_200_invite.sip");
    const ACK: &[u8] = include_bytes!("../tests/corpus/sip/sipp_uac_ack.sip");
    let mut items = Vec::new();
    let mut now = t0;
    for i in 0..1_000_000u32 {
        match r.from_client(now, cgnat_client(i), 0, &with_id(INVITE, i)) {
            ClientAction::Forward { relay_port, to, .. } => {
                let a = r.from_backend(now, relay_port, to, &with_id(OK_INVITE, i));
                assert!(matches!(a, BackendAction::Forward { .. }), "{a:?}");
            }
            other => panic!("{other:?}"),
        }
        if i % 4096 == 0 {
            r.take_sync(&mut items);
            items.clear();
            now += Duration::from_millis(100);
            if r.poll_timeout().is_some_and(|t| t <= now) {
                r.handle_timeout(now);
            }
        }
    }
    assert_eq!(r.dialog_count(), 1_000_000);
    let sweep = |r: &mut Router, now: &mut Instant, items: &mut Vec<_>, calls: usize| {
        let (mut wall, mut cpu, mut sent, mut overflow) =
            (Duration::ZERO, Duration::ZERO, 0, false);
        for _ in 0..calls {
            *now += Duration::from_millis(500);
            let (t, c) = (Instant::now(), thread_cpu());
            r.handle_timeout(black_box(*now));
            cpu = cpu.max(thread_cpu().saturating_sub(c));
            wall = wall.max(t.elapsed());
            items.clear();
            overflow |= r.take_sync(items);
            sent += items.len();
        }
        (wall, cpu, sent, overflow)
    };
    // A re-send period of sweep calls every 500 ms, before any call is refreshed.
    let calls = 1800;
    let (wall, cpu, _, _) = sweep(&mut r, &mut now, &mut items, calls);
    println!(
        "prefix/resend/1m_dialogs: longest single timer call of {calls}, nothing refreshed: \
         {wall:?} ({cpu:?} CPU)"
    );
    for i in 0..1_000_000u32 {
        let a = r.from_client(now, cgnat_client(i), 0, &with_id(ACK, i));
        assert!(matches!(a, ClientAction::Forward { .. }), "{a:?}");
        if i % 4096 == 0 {
            r.take_sync(&mut items);
            items.clear();
        }
    }
    let (wall, cpu, sent, overflow) = sweep(&mut r, &mut now, &mut items, calls + 4);
    println!(
        "prefix/resend/1m_dialogs: longest single timer call of {} while a million refreshed \
         calls are re-sent: {wall:?} ({cpu:?} CPU); items sent {sent}, queue overflowed: \
         {overflow}",
        calls + 4
    );
}

criterion_group!(
    benches,
    bench_routing,
    bench_prefix,
    bench_prefix_ratio,
    bench_prefix_calls,
    bench_prefix_resend,
    bench_sweep
);
criterion_main!(benches);
