//! State-sync bench (issue 6): the sync traffic per new flow, and the time a (re)starting
//! peer takes to receive a full table and pre-bind every mirrored relay port.
//!
//! Two `sipfront run` processes on loopback addresses of a network namespace of the bench's
//! own: host A (SIP, relay and sync on 127.0.0.2) and host B (127.0.0.3), one in-bench UDP
//! backend (127.0.0.5:5060) that answers every request with 200 (REGISTERs with
//! `Expires: 3600`), clients on 127.0.1.1 (one socket, one flow each). No `[vrrp]`: sync
//! works without it, and A simply holds the flows.
//!
//! 1. Incremental: with B up and synced, N phones REGISTER through A (one new flow each,
//!    then a registration). A's sync datagrams to B are captured (`tcpdump -i lo -w`) and
//!    decoded with the shared key: datagrams, bytes and items per new flow.
//! 2. Full sync, repeated: B is killed (SIGKILL) and started again; measured from its spawn
//!    until `sipfront_sync_last_full_timestamp_seconds` appears, until `sipfront_flows`
//!    equals N and until `sipfront_relay_ports_in_use` equals N (every mirrored port bound),
//!    plus the span between B's log lines `state sync link up` and `full table received`,
//!    B's CPU time, and the captured full-table datagrams and bytes from A.
//! 3. In process, for 100 000 flows (no sockets): a `sync::link::Link` sealing a full
//!    table (`queue_full`, `poll_transmit`, pacing windows skipped) and another opening
//!    it (`handle_datagram`).
//!
//! One relay address holds at most the ports below the kernel's ephemeral range: the bench
//! namespace sets `net.ipv4.ip_local_port_range` to 60000-65535 (as an operator would, or
//! with `ip_local_reserved_ports`), so one host pair could hold 50 000 flows (relay_ports
//! 10000-59999). Each host also holds one socket per flow, so N is bounded by
//! RLIMIT_NOFILE's hard limit (the bench raises the soft one to it): by default N is 16384
//! (what the default relay range 16384-32767 holds), `--flows` takes up to what the limit
//! allows. A 100k-flow full sync is not run end to end: the report says what is measured
//! and what is extrapolated (per-flow cost × 100 000).
//!
//! ```text
//! cargo bench --bench sync                     # 16384 flows, 3 full syncs
//! cargo bench --bench sync -- --flows 19000 --reps 5 --keep
//! cargo bench --bench sync -- --prefix --flows 1000000 --reps 3
//! cargo bench --bench sync -- --takeover --flows 100000 [--reps 10] [--stride 10 [--offsets]]
//! ```
//!
//! `--prefix` (sync/prefix.rs): the same full sync with both hosts in relay prefix mode
//! (no socket per flow, so up to 1,048,576 flows; each host in a namespace of its own,
//! clients impersonated with `IP_PKTINFO`). `--takeover` (sync/takeover.rs): a VRRP pair
//! in prefix mode, N phones registered and mirrored, the master killed, and the time from
//! the VIP move until the backend has reached every phone through its relay endpoint.
//! `--window N`: REGISTERs (and OPTIONS) in flight (512). `SIPFRONT_BIN=path` runs that
//! sipfront binary instead of this build's (an A/B of two builds).
//!
//! Needs root (network namespace, raising RLIMIT_NOFILE: each host holds one socket per
//! flow) and tcpdump. Output: stdout and `target/sync-bench.txt`. Run without `--bench` (as
//! `cargo test --benches` does) it only prints a note.

#[path = "sync/capture.rs"]
mod capture;
#[path = "sync/host.rs"]
mod host;
#[path = "sync/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "flows/pktinfo.rs"]
mod pktinfo;
#[path = "sync/prefix.rs"]
mod prefix;
#[path = "sync/takeover.rs"]
mod takeover;

use capture::*;
use host::*;
use load::*;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use sipfront::sync::link::{ITEMS_PER_DATAGRAM, Link, LinkEvent, PACING_INTERVAL, backends_hash};
use sipfront::sync::message::{Body, Item, Key, MAX_DATAGRAM, open};

const SIPFRONT: &str = env!("CARGO_BIN_EXE_sipfront");
const KEY: &str = "sync-bench-key-5d1e9a7c3b8f2046";
const A: &str = "127.0.0.2";
const B: &str = "127.0.0.3";
const BACKEND: &str = "127.0.0.5:5060";
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);
const SYNC_PORT: u16 = 7400;
const PORT_BASE: u16 = 10000;
/// Relay ports 10000-59999 on each host's address.
const MAX_FLOWS: usize = 50_000;
/// The default relay range (16384-32767) holds this many: the usual size of one host pair.
const DEFAULT_FLOWS: usize = 16_384;

struct Args {
    flows: Option<usize>,
    /// `--reps N`: 3 unless given, a takeover once.
    reps: Option<usize>,
    keep: bool,
    /// Relay prefix mode (sync/prefix.rs).
    prefix: bool,
    /// Takeover reachability in prefix mode (sync/takeover.rs).
    takeover: bool,
    /// REGISTERs in flight in prefix mode.
    window: usize,
    /// Takeover round: every K-th phone.
    stride: usize,
    /// Takeover: K runs, each phone in one run's sample.
    offsets: bool,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        flows: None,
        reps: None,
        keep: false,
        prefix: false,
        takeover: false,
        window: 512,
        stride: 1,
        offsets: false,
    };
    let mut it = argv.iter();
    while let Some(x) = it.next() {
        match x.as_str() {
            "--bench" => {}
            "--keep" => a.keep = true,
            "--prefix" => a.prefix = true,
            "--takeover" => a.takeover = true,
            "--offsets" => a.offsets = true,
            "--flows" | "--reps" | "--window" | "--stride" => {
                let v: usize = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("{x} needs a number"))?;
                match x.as_str() {
                    "--flows" => a.flows = Some(v),
                    "--window" => a.window = v.max(1),
                    "--stride" => a.stride = v.max(1),
                    _ => a.reps = Some(v.max(1)),
                }
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let max = if a.takeover {
        takeover::TAKEOVER_CAPACITY
    } else if a.prefix {
        prefix::PREFIX_CAPACITY
    } else {
        MAX_FLOWS
    };
    if a.flows.is_some_and(|f| f == 0 || f > max) {
        return Err(format!("--flows must be 1..={max}"));
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------------------
// The runs
// ---------------------------------------------------------------------------------------------

struct FullRun {
    to_full_ms: f64,
    to_flows_ms: f64,
    to_bound_ms: f64,
    log_span_ms: Option<f64>,
    cpu_ms: f64,
    traffic: Traffic,
}

fn full_sync_run(dir: &Path, b: &mut Host, b_config: &Path, n: usize, rep: usize) -> FullRun {
    b.proc.kill();
    // A notices nothing yet (peer timeout 3 s): like a crash and an immediate restart.
    let cap = Capture::start(dir, &format!("full-{rep}"));
    let t0 = Instant::now();
    *b = Host::start(dir, B, b_config, &format!("sipfront-B-{rep}.log"));
    let timeout = Duration::from_secs(120);
    let ok = b.wait_metric("sipfront_sync_last_full_timestamp_seconds", timeout, |v| {
        v > 0.0
    });
    assert!(ok, "B got no full table; log:\n{}", b.proc.log_text());
    let to_full_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let nf = n as f64;
    let ok = b.wait_metric("sipfront_flows", timeout, |v| v >= nf);
    assert!(ok, "B never listed {n} flows");
    let to_flows_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let ok = b.wait_metric("sipfront_relay_ports_in_use", timeout, |v| v >= nf);
    assert!(ok, "B never bound {n} relay ports");
    let to_bound_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let cpu = cpu_ms(b.proc.pid());
    sleep(Duration::from_millis(500));
    let traffic = classify(&cap.stop());
    FullRun {
        to_full_ms,
        to_flows_ms,
        to_bound_ms,
        log_span_ms: log_span_ms(
            &b.proc.log_text(),
            "state sync link up",
            "full table received",
        ),
        cpu_ms: cpu,
        traffic,
    }
}

/// Sealing and opening a full table of `n` flows in process (no sockets).
fn in_process(n: usize) -> (f64, f64, usize, usize) {
    let key = Key::new(KEY.as_bytes());
    let hash = backends_hash(&["be".to_string()]);
    let a_addr: SocketAddr = "10.0.0.1:7400".parse().unwrap();
    let b_addr: SocketAddr = "10.0.0.2:7400".parse().unwrap();
    let items: Vec<Item> = (0..n)
        .map(|i| Item::Flow {
            client: SocketAddr::from((
                [100, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8],
                1024 + (i % 60000) as u16,
            )),
            relay_port: sipfront::relay::port::RelayPort::first(1024 + (i % 64000) as u16),
            ingress: 0,
            home: (i % 2) as u64,
            registered_secs: Some(3600),
        })
        .collect();
    let t0 = Instant::now();
    let mut sender = Link::new(key.clone(), b_addr, 1, hash, t0);
    let mut receiver = Link::new(key, a_addr, 2, hash, t0);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // The handshake: hellos both ways until the receiver admits the sender's epoch.
    let mut now = t0;
    for _ in 0..4 {
        while let Some(t) = sender.poll_transmit(now, &mut buf) {
            receiver.handle_datagram(now, a_addr, &buf[..t.len]);
        }
        while let Some(t) = receiver.poll_transmit(now, &mut buf) {
            sender.handle_datagram(now, b_addr, &buf[..t.len]);
        }
        now += Duration::from_millis(50);
    }
    while receiver.poll_event().is_some() {}
    let t = Instant::now();
    sender.queue_full(items);
    let mut dgrams = Vec::new();
    while sender.queued() {
        while let Some(t) = sender.poll_transmit(now, &mut buf) {
            dgrams.push(buf[..t.len].to_vec());
        }
        now += PACING_INTERVAL;
    }
    let seal_ms = t.elapsed().as_secs_f64() * 1000.0;
    let bytes = dgrams.iter().map(Vec::len).sum();
    let t = Instant::now();
    let mut got = 0;
    for d in &dgrams {
        receiver.handle_datagram(now, a_addr, d);
        while let Some(e) = receiver.poll_event() {
            if let LinkEvent::Items { items, .. } = e {
                got += items.len();
            }
        }
    }
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(got, n);
    (seal_ms, open_ms, dgrams.len(), bytes)
}

fn med(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let m = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (v[0], m, v[n - 1])
}

/// Prints a report and writes it to target/`file`.
fn publish(report: &str, file: &str) {
    print!("{report}");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(file);
    if let Err(e) = fs::write(&out, report) {
        eprintln!("cannot write {}: {e}", out.display());
    } else {
        println!("written to {}", out.display());
    }
}

/// `--keep`: the work directory stays (its configs and logs), and says where.
fn keep_work(work: tempfile::TempDir, keep: bool) {
    if keep {
        let kept = work.keep();
        println!("work directory kept: {}", kept.display());
    }
}

/// One row of a report table: the label padded, then the value.
fn row(r: &mut String, label: &str, value: String) {
    let _ = writeln!(r, "   {label:<52} {value}");
}

fn fmt3((a, b, c): (f64, f64, f64)) -> String {
    format!("{a:.0} / {b:.0} / {c:.0}")
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if !argv.iter().any(|a| a == "--bench") {
        println!(
            "sync bench: not run (needs `cargo bench --bench sync`, root for a network \
             namespace, and tcpdump; about 20 seconds)"
        );
        return;
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sync bench: {e}");
            std::process::exit(2);
        }
    };
    if args.takeover {
        let n = args.flows.unwrap_or(100_000);
        if args.offsets {
            takeover::run_offsets(n, args.window, args.stride, args.keep);
        } else {
            let reps = args.reps.unwrap_or(1);
            takeover::run_reps(n, args.window, args.stride, reps, args.keep);
        }
        return;
    }
    let reps = args.reps.unwrap_or(3);
    if args.prefix {
        prefix::run_prefix(args.flows.unwrap_or(100_000), reps, args.window, args.keep);
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("sipfront-sync-bench-")
        .tempdir()
        .expect("temp dir");
    let dir = work.path().to_path_buf();

    // Each host holds one socket per flow (the clients up to 1000 at a time): the soft
    // RLIMIT_NOFILE goes up to the hard one (children inherit it), which bounds N.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let fd_max = (lim.rlim_max as usize).saturating_sub(300);
    let n = match args.flows {
        Some(f) if f > fd_max => {
            eprintln!(
                "sync bench: --flows {f} needs more file descriptors than RLIMIT_NOFILE allows \
                 ({}; one socket per flow and host)",
                lim.rlim_max
            );
            std::process::exit(2);
        }
        Some(f) => f,
        None => DEFAULT_FLOWS.min(fd_max),
    };

    // The main thread joins the bench's namespace (so do the threads and programs it starts
    // later); dropping the guard kills what still runs inside and deletes it.
    let ns = testkit::Netns::create(format!("sfsyncbench{}", std::process::id()));
    ns.enter_this_thread();
    let st = Command::new("sysctl")
        .args(["-q", "-w", "net.ipv4.ip_local_port_range=60000 65535"])
        .status()
        .expect("sysctl");
    assert!(
        st.success(),
        "cannot narrow the ephemeral range in the bench namespace"
    );
    let _backend = start_backend();

    let a_config = write_config(&dir, A, B, MAX_FLOWS);
    let b_config = write_config(&dir, B, A, MAX_FLOWS);
    let mut a = Host::start(&dir, A, &a_config, "sipfront-A.log");
    assert!(
        a.wait_metric("sipfront_backend_up", Duration::from_secs(15), |v| v == 1.0),
        "A: backend not up; log:\n{}",
        a.proc.log_text()
    );
    let mut b = Host::start(&dir, B, &b_config, "sipfront-B-0.log");
    for h in [&mut a, &mut b] {
        assert!(
            h.wait_metric(
                "sipfront_sync_last_full_timestamp_seconds",
                Duration::from_secs(15),
                |v| v > 0.0
            ),
            "{}: not synced; log:\n{}",
            h.admin,
            h.proc.log_text()
        );
    }

    // 1. Incremental.
    let cap = Capture::start(&dir, "incremental");
    let sent0 = a
        .metric("sipfront_sync_messages_total", &[("dir", "sent")])
        .unwrap_or(0.0);
    let t = Instant::now();
    let answered = create_flows(n, &format!("{A}:5060"));
    let create_s = t.elapsed().as_secs_f64();
    let nf = n as f64;
    let ok = a.wait_metric("sipfront_flows", Duration::from_secs(60), |v| v >= nf)
        && b.wait_metric("sipfront_flows", Duration::from_secs(120), |v| v >= nf);
    let mirror_s = t.elapsed().as_secs_f64();
    assert!(
        ok,
        "flows: A {:?}, B {:?}",
        a.metric("sipfront_flows", &[]),
        b.metric("sipfront_flows", &[])
    );
    sleep(Duration::from_millis(1500));
    let sent1 = a
        .metric("sipfront_sync_messages_total", &[("dir", "sent")])
        .unwrap_or(0.0);
    let inc = classify(&cap.stop());
    let a_drops = a
        .metrics()
        .map(|m| {
            m.lines()
                .filter(|l| l.starts_with("sipfront_sync_dropped_total") && !l.ends_with(" 0"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();

    // 2. Full syncs.
    let mut runs = Vec::new();
    for rep in 1..=reps {
        runs.push(full_sync_run(&dir, &mut b, &b_config, n, rep));
        eprintln!(
            "full sync {rep}/{}: {:.0} ms to full",
            reps,
            runs[rep - 1].to_full_ms
        );
    }
    let b_drops: BTreeMap<String, f64> = b
        .metrics()
        .map(|m| {
            m.lines()
                .filter(|l| l.starts_with("sipfront_sync_dropped_total"))
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    let v: f64 = v.parse().ok()?;
                    (v != 0.0).then(|| (k.to_string(), v))
                })
                .collect()
        })
        .unwrap_or_default();

    // 3. In process, 100k.
    let (seal_ms, open_ms, k_dgrams, k_bytes) = in_process(100_000);

    // Report.
    let mut r = String::new();
    let per = |x: usize| x as f64 / nf;
    let _ = writeln!(
        r,
        "sipfront sync bench: {n} flows (relay_ports {PORT_BASE}-{}, one relay address per host; \
         ephemeral range moved to 60000-65535 in the bench namespace; RLIMIT_NOFILE {} allows \
         at most {fd_max} flows, one socket per flow and host), {} full syncs",
        PORT_BASE as usize + MAX_FLOWS - 1,
        lim.rlim_max,
        reps
    );
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "1. incremental: {n} phones REGISTER through A with B synced ({answered} got their 200) \
         in {create_s:.1} s; B listed all {n} flows {mirror_s:.1} s after the first REGISTER"
    );
    let _ = writeln!(
        r,
        "   A -> B datagrams: items {} ({} B), hello {} ({} B), full {} ({} B), undecodable {}",
        inc.items.0, inc.items.1, inc.hello.0, inc.hello.1, inc.full.0, inc.full.1, inc.undecodable
    );
    let _ = writeln!(
        r,
        "   per new flow: {:.3} datagrams, {:.1} B of UDP payload ({:.1} B with IPv4+UDP headers), \
         {:.2} items (flow created + registration); sipfront_sync_messages_total{{dir=sent}} on A: +{}",
        per(inc.items.0 + inc.full.0),
        per(inc.items.1 + inc.full.1),
        per(inc.items.1 + inc.full.1 + 28 * (inc.items.0 + inc.full.0)),
        per(inc.flow_items + inc.other_items),
        sent1 - sent0
    );
    let _ = writeln!(r, "   A's sync drops: {a_drops:?}");
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "2. full sync: B killed and started again while A holds {n} flows (min / median / max of {})",
        reps
    );
    let col = |f: &dyn Fn(&FullRun) -> f64| fmt3(med(runs.iter().map(f).collect()));
    row(
        &mut r,
        "B spawn -> last_full_timestamp set (ms)",
        col(&|x| x.to_full_ms),
    );
    row(
        &mut r,
        "B spawn -> sipfront_flows = N (ms)",
        col(&|x| x.to_flows_ms),
    );
    row(
        &mut r,
        "B spawn -> relay_ports_in_use = N (ms)",
        col(&|x| x.to_bound_ms),
    );
    row(
        &mut r,
        "B log: `sync link up` -> `full table received` (ms)",
        col(&|x| x.log_span_ms.unwrap_or(f64::NAN)),
    );
    row(
        &mut r,
        "B CPU at ports bound (ms, incl. start-up)",
        col(&|x| x.cpu_ms),
    );
    row(
        &mut r,
        "A -> B full-table span, first -> last chunk (ms)",
        col(&|x| x.traffic.full_span * 1000.0),
    );
    for (i, x) in runs.iter().enumerate() {
        let _ = writeln!(
            r,
            "   run {}: full-table datagrams {} ({} B, {} table(s) started), flow items {}, \
             items datagrams {}, hello {}, undecodable {}",
            i + 1,
            x.traffic.full.0,
            x.traffic.full.1,
            x.traffic.full_tables,
            x.traffic.flow_items,
            x.traffic.items.0,
            x.traffic.hello.0,
            x.traffic.undecodable
        );
    }
    let _ = writeln!(r, "   B's sync drops (last run): {b_drops:?}");
    let (_, to_bound, _) = med(runs.iter().map(|x| x.to_bound_ms).collect());
    let (_, span_log, _) = med(runs
        .iter()
        .map(|x| x.log_span_ms.unwrap_or(f64::NAN))
        .collect());
    let (_, span, _) = med(runs.iter().map(|x| x.traffic.full_span * 1000.0).collect());
    let full_bytes = runs[0].traffic.full.1 as f64 / nf;
    let full_dgrams = runs[0].traffic.full.0 as f64 / nf;
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "3. 100 000 flows: in process (no sockets), Link::queue_full seals {k_dgrams} datagrams \
         ({k_bytes} B, {:.1} B/flow, {ITEMS_PER_DATAGRAM} items each) in {seal_ms:.1} ms; \
         Link::handle_datagram opens them in {open_ms:.1} ms",
        k_bytes as f64 / 100_000.0
    );
    let _ = writeln!(
        r,
        "   extrapolated linearly, NOT measured end to end (one relay address holds fewer than \
         65536 ports, and RLIMIT_NOFILE bounds N here): B's `sync link up` -> `full table \
         received` (every port bound) ~ {:.0} ms for 100 000 flows (median {span_log:.0} ms × \
         100000/{n}; this includes a fixed part: hello and flush ticks, tens of ms); A's \
         sending span ~ {:.0} ms; {:.0} datagrams, ~ {:.2} MB of UDP payload ({full_bytes:.1} \
         B/flow). Polled from B's spawn to relay_ports_in_use = N: median {to_bound:.0} ms \
         (includes process start and the gauges' publication period).",
        span_log * 100_000.0 / nf,
        span * 100_000.0 / nf,
        full_dgrams * 100_000.0,
        full_bytes * 100_000.0 / 1e6
    );
    publish(&r, "sync-bench.txt");
    drop(a);
    drop(b);
    drop(ns);
    keep_work(work, args.keep);
}
