//! A routing decision with cold caches: what one datagram costs the router when, as
//! at low call rates, every wake-up finds the caches filled by other programs. Before
//! each timed decision the bench reads an eviction block (8 MiB by default: more than
//! this machine's L2, as the sipp processes between two datagrams would) and then
//! times one decision of a random flow, in four ways, in turn on the same flow:
//!
//! - `plain`: `from_client` (an INVITE with the Call-ID of the flow's own call) or
//!   `from_backend` (its 180), as the dataplane decides a datagram that came alone;
//! - `warmed`: the batch path on that one datagram (`prefetch_*`, `warm_*`,
//!   `prepare_*`, `warm_dialog`, then `from_*_with`), so that the misses of lines
//!   that do not depend on each other overlap;
//!
//! next to two floors measured the same way: one look-up in a `HashMap` of the flows
//! (what the bare forwarder does per datagram) and the SIP scan alone.
//!
//! Reading a block evicts data and the unified caches, not the first-level instruction
//! cache, which other programs' code would also have evicted: more code on a path
//! (the warming passes) is cheaper here than in the dataplane. Session 18 took the
//! batch path for lone datagrams on this bench's word (a cold client decision 17 %
//! cheaper) and the load bench at 500 calls/s u1 found it 7 % dearer; see the journal.
//!
//! ```text
//! cargo bench --bench cold [-- --flows 200 --samples 3000 --evict-mib 8]
//! ```
//!
//! Prints the median and the 10th / 90th percentiles in ns. Run without `--bench` (as
//! `cargo test --benches` does) it only prints a note.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use sipfront::config::{Config, EphemeralPorts};
use sipfront::relay::router::RouterConfig;
use sipfront::relay::{BackendAction, ClientAction, RelayPort, Router};
use sipfront::sip::scan;

#[path = "common/call_msgs.rs"]
mod call_msgs;
#[path = "common/router_config.rs"]
mod router_config;
use call_msgs::CallMsgs;
use router_config::CONFIG;

const INVITE: &[u8] = include_bytes!("../tests/corpus/sip/sipp_uac_invite.sip");
const RINGING: &[u8] = include_bytes!("../tests/corpus/sip/sipp_uas_180_ringing.sip");

/// What is timed, in `ALL`'s order (the index into the results).
#[derive(Clone, Copy)]
enum Way {
    ClientPlain,
    ClientWarmed,
    BackendPlain,
    BackendWarmed,
    HashmapGet,
    Scan,
}

impl Way {
    const ALL: [Way; 6] = [
        Way::ClientPlain,
        Way::ClientWarmed,
        Way::BackendPlain,
        Way::BackendWarmed,
        Way::HashmapGet,
        Way::Scan,
    ];

    fn name(self) -> &'static str {
        match self {
            Way::ClientPlain => "client plain",
            Way::ClientWarmed => "client warmed",
            Way::BackendPlain => "backend plain",
            Way::BackendWarmed => "backend warmed",
            Way::HashmapGet => "hashmap get",
            Way::Scan => "scan",
        }
    }

    /// Whether it takes the client's INVITE (else the backend's 180).
    fn decides_invite(self) -> bool {
        matches!(self, Way::ClientPlain | Way::ClientWarmed | Way::Scan)
    }
}

struct Args {
    flows: u32,
    samples: usize,
    evict_mib: usize,
}

fn args() -> Option<Args> {
    let mut a = Args {
        flows: 200,
        samples: 3000,
        evict_mib: 8,
    };
    let mut bench = false;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut num = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match k.as_str() {
            "--bench" => bench = true,
            "--flows" => a.flows = num("--flows") as u32,
            "--samples" => a.samples = num("--samples"),
            "--evict-mib" => a.evict_mib = num("--evict-mib"),
            _ => {}
        }
    }
    bench.then_some(a)
}

fn client(i: u32) -> SocketAddr {
    SocketAddr::from(([198, 51, (i >> 8) as u8, i as u8], 5060))
}

/// Reads one byte of every line of `block`: what other programs leave in the caches.
fn evict(block: &[u8]) -> u64 {
    block.iter().step_by(64).map(|&b| u64::from(b)).sum()
}

/// Median, 10th and 90th percentile.
fn summary(v: &mut [u64]) -> (u64, u64, u64) {
    v.sort_unstable();
    let at = |q: usize| v[(v.len() - 1) * q / 100];
    (at(50), at(10), at(90))
}

fn main() {
    let Some(a) = args() else {
        println!("cold: a benchmark; run it with `cargo bench --bench cold`");
        return;
    };
    let cfg = Config::parse(CONFIG, &EphemeralPorts::default()).expect("config");
    let start = Instant::now();
    let mut r = Router::new(RouterConfig::new(&cfg, None), &cfg.backends, start);
    let (mut invite, mut ringing) = (
        CallMsgs::of_template(INVITE, 1),
        CallMsgs::of_template(RINGING, 1),
    );
    // Each flow with its own call, rung once (a dialog, as during a call).
    let mut flows: Vec<(RelayPort, SocketAddr)> = Vec::new();
    let mut bare: HashMap<SocketAddr, usize> = HashMap::new();
    for i in 0..a.flows {
        match r.from_client(start, client(i), 0, invite.of(i)) {
            ClientAction::Forward { relay_port, to, .. } => {
                let a = r.from_backend(start, relay_port, to, ringing.of(i));
                assert!(matches!(a, BackendAction::Forward { .. }), "{a:?}");
                flows.push((relay_port, to));
            }
            other => panic!("flow {i}: {other:?}"),
        }
        bare.insert(client(i), i as usize);
    }
    let block = vec![1u8; a.evict_mib << 20];
    let mut times: Vec<Vec<u64>> = vec![Vec::with_capacity(a.samples); Way::ALL.len()];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut sink = 0u64;
    for s in 0..a.samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % u64::from(a.flows)) as u32;
        let (port, backend) = flows[i as usize];
        let src = client(i);
        let now = Instant::now();
        // A different order each sample: no way lands always first after another.
        for w in 0..Way::ALL.len() {
            let way = Way::ALL[(w + s) % Way::ALL.len()];
            // The message is hot in the real path too (the kernel just wrote it).
            let msg: &[u8] = if way.decides_invite() {
                invite.of(i)
            } else {
                ringing.of(i)
            };
            sink = sink.wrapping_add(evict(black_box(&block)));
            let t = Instant::now();
            match way {
                Way::ClientPlain => {
                    black_box(r.from_client(now, src, 0, msg));
                }
                Way::ClientWarmed => {
                    r.prefetch_client(src);
                    r.warm_client(src);
                    let p = r.prepare_client(src, msg);
                    if let Some(p) = &p {
                        r.warm_dialog(p);
                    }
                    black_box(r.from_client_with(now, src, 0, msg, p));
                }
                Way::BackendPlain => {
                    black_box(r.from_backend(now, port, backend, msg));
                }
                Way::BackendWarmed => {
                    r.prefetch_backend(port);
                    r.warm_backend(port);
                    let p = r.prepare_backend(port, backend, msg);
                    if let Some(p) = &p {
                        r.warm_dialog(p);
                    }
                    black_box(r.from_backend_with(now, port, backend, msg, p));
                }
                Way::HashmapGet => {
                    black_box(bare.get(black_box(&src)));
                }
                Way::Scan => {
                    black_box(scan(black_box(msg)));
                }
            }
            times[way as usize].push(t.elapsed().as_nanos() as u64);
        }
    }
    black_box(sink);
    println!(
        "cold routing decisions: {} flows, each with a call; {} samples; {} MiB read before each",
        a.flows, a.samples, a.evict_mib
    );
    println!("{:<15} {:>8} {:>8} {:>8}", "way", "median", "p10", "p90");
    for (way, v) in Way::ALL.iter().zip(&mut times) {
        let (m, lo, hi) = summary(v);
        let name = way.name();
        println!("{name:<15} {m:>8} {lo:>8} {hi:>8}");
    }
}
