//! Many-flows bench: the real sipfront binary holding thousands of client flows, what
//! each flow costs (sipfront's resident memory, the kernel's slab) and the latency
//! sipfront adds per request, against two in-process stub backends.
//!
//! ```text
//! cargo bench --bench flows
//! cargo bench --bench flows -- --flows 5000 --rate 2000 --seconds 5
//! cargo bench --bench flows -- --relays 127.0.0.2 --relays 127.0.0.2,127.0.0.3
//! ```
//!
//! Options: `--flows N` (100000, capped as below), `--rate R` requests/s in the latency
//! phase (2000), `--seconds S` (5), `--relays LIST` relay addresses, comma separated
//! (127.0.0.2; repeat the option for several runs: one address is written
//! `relay = "a"`, several `relay = ["a", "b"]`, and a sipfront that rejects the config
//! has its error printed and that run skipped), `--keep` (keep the work directory).
//!
//! Clients are impersonated by source address: four sockets on `0.0.0.0:31370-31373`
//! send with `IP_PKTINFO` as `127.10.x.y` and up, so N flows need no N sockets here
//! (the container caps open files at 20,000 per process). sipfront has no such trick:
//! one relay socket per flow, so N is capped at its open-file limit minus a margin,
//! and at its relay endpoints (ports 16384-23999 × relay addresses).
//!
//! 1. flows: every client REGISTERs once (retransmitting like a UAC) and must get its
//!    200 back at its own address; sipfront's VmRSS and the host's Slab (/proc/meminfo)
//!    before and after give memory per flow.
//! 2. latency: OPTIONS at `--rate` for `--seconds`, round robin over the flows, through
//!    sipfront and straight to each flow's home backend, in alternating half-second
//!    slices (a burst of load from elsewhere hits both paths alike); percentiles of
//!    both and the difference. sipfront's CPU time (utime+stime, and schedstat ns)
//!    over the via slices, divided by the datagrams it forwarded (a request and its
//!    reply are two), gives CPU per datagram.
//!
//! The table goes to stdout and `target/flows-bench.txt`. Run without `--bench` (as
//! `cargo test --benches` does) it only prints a note. Ports: sipfront 127.0.0.1:31360,
//! stub backends 31361-31362, admin 31390, clients 31370-31373, relay ports
//! 16384-23999 on the relay addresses.

#[path = "flows/backend.rs"]
mod backend;
#[path = "flows/clients.rs"]
mod clients;
#[path = "flows/latency.rs"]
mod latency;
#[path = "flows/pktinfo.rs"]
mod pktinfo;
#[path = "flows/procfs.rs"]
mod procfs;
#[path = "flows/register.rs"]
mod register;
#[path = "flows/report.rs"]
mod report;
#[path = "flows/sipfront.rs"]
mod sipfront;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::thread::sleep;
use std::time::Duration;

use backend::Backend;
use latency::Latency;
use pktinfo::Sock;
use procfs::Cpu;
use register::Registered;
use sipfront::{Setup, Sipfront};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
const SIP: SocketAddrV4 = SocketAddrV4::new(LOCALHOST, 31360);
const BACKENDS: [SocketAddrV4; 2] = [
    SocketAddrV4::new(LOCALHOST, 31361),
    SocketAddrV4::new(LOCALHOST, 31362),
];
const ADMIN: SocketAddrV4 = SocketAddrV4::new(LOCALHOST, 31390);
/// Below the load bench's 24000-24999 and this bench's own 313xx (the client sockets
/// bind 0.0.0.0, which would take their ports from every relay address), and below
/// the ephemeral range (32768-).
const RELAY_PORTS: (u16, u16) = (16384, 23999);
const DEFAULT_FLOWS: usize = 100_000;
/// Open files sipfront needs besides its relay sockets (public, probe, admin, epoll...).
const FD_MARGIN: u64 = 300;
/// CPU sampled while idle (flows held, no traffic), for housekeeping's share.
const IDLE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Args {
    flows: Option<usize>,
    pub rate: u64,
    pub seconds: u64,
    runs: Vec<Vec<Ipv4Addr>>,
    keep: bool,
    /// Positional name filters matched nothing here.
    skip: bool,
}

impl Args {
    /// Unknown `--flags` are for other benches; positional arguments are name filters
    /// (`cargo bench -- NAME` passes them to every bench).
    fn parse(argv: &[String]) -> Result<Args, String> {
        let mut a = Args {
            flows: None,
            rate: 2000,
            seconds: 5,
            runs: Vec::new(),
            keep: false,
            skip: false,
        };
        let mut filters = Vec::new();
        let mut it = argv.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            let num = |v: &String| v.parse::<u64>().map_err(|_| format!("{flag}: `{v}`"));
            match flag.as_str() {
                "--bench" => {}
                "--keep" => a.keep = true,
                "--flows" => a.flows = Some(num(value()?)? as usize),
                "--rate" => a.rate = num(value()?)?,
                "--seconds" => a.seconds = num(value()?)?,
                "--relays" => a.runs.push(
                    value()?
                        .split(',')
                        .map(|r| r.trim().parse().map_err(|_| format!("--relays: `{r}`")))
                        .collect::<Result<_, _>>()?,
                ),
                f if f.starts_with('-') => {
                    eprintln!("flows bench: ignoring `{f}` (not an option of this bench)");
                }
                f => filters.push(f.to_string()),
            }
        }
        if a.rate == 0 || a.seconds == 0 || a.flows == Some(0) {
            return Err("--flows, --rate and --seconds must be > 0".into());
        }
        if a.rate * a.seconds > 10_000_000 {
            return Err("--rate × --seconds: at most 10,000,000 requests".into());
        }
        if a.runs.is_empty() {
            a.runs.push(vec![Ipv4Addr::new(127, 0, 0, 2)]);
        }
        a.skip = !filters.is_empty() && !filters.iter().any(|f| "flows".contains(f.as_str()));
        Ok(a)
    }
}

/// One sipfront run: its relay addresses, and what it measured or why it stopped.
pub struct Run {
    pub relays: Vec<Ipv4Addr>,
    pub result: Result<Measured, String>,
}

pub struct Measured {
    pub relay_capacity: usize,
    /// Flows asked for, and why fewer were tried.
    pub wanted: usize,
    pub caps: Vec<String>,
    /// Relay endpoints other sockets held before the run, as (address, port).
    pub taken: Vec<(Ipv4Addr, u16)>,
    pub reg: Registered,
    /// sipfront_flows, sipfront_relay_ports_in_use, sipfront_drops_total.
    pub counters: [f64; 3],
    pub fds: usize,
    pub rss_kb: (u64, u64),
    pub slab_kb: (u64, u64),
    pub load: Option<Load>,
}

pub struct Load {
    pub via: Latency,
    pub direct: Latency,
    /// sipfront's CPU over the via slices, and over `IDLE` before them.
    pub cpu: Cpu,
    pub idle: Cpu,
    /// sipfront_datagrams_total over the latency phase (direct requests skip it).
    pub forwarded: f64,
}

fn run_one(idx: usize, relays: &[Ipv4Addr], args: &Args, socks: &[Sock], root: &Path) -> Run {
    let result = measure(idx, relays, args, socks, root);
    if let Err(e) = &result {
        eprintln!("flows bench: run {idx} (relay {relays:?}) stopped: {e}");
    }
    Run {
        relays: relays.to_vec(),
        result,
    }
}

fn measure(
    idx: usize,
    relays: &[Ipv4Addr],
    args: &Args,
    socks: &[Sock],
    root: &Path,
) -> Result<Measured, String> {
    let dir = root.join(format!("run{idx}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let setup = Setup {
        sip: SIP.into(),
        admin: ADMIN.into(),
        backends: BACKENDS.map(SocketAddr::V4),
        relays: relays.to_vec(),
        relay_ports: RELAY_PORTS,
    };
    let cfg = dir.join("sipfront.toml");
    std::fs::write(&cfg, setup.toml()).map_err(|e| format!("write {}: {e}", cfg.display()))?;
    sipfront::check_config(&cfg).map_err(|e| format!("sipfront rejected the config: {e}"))?;
    let mut sf = Sipfront::start(&cfg, setup.admin, &dir)?;
    let pid = sf.pid();

    let relay_capacity = setup.relay_capacity();
    let wanted = args.flows.unwrap_or(DEFAULT_FLOWS);
    let (soft, hard) = procfs::nofile_of(pid).ok_or("cannot read sipfront's limits")?;
    let mut n = wanted;
    let mut caps = Vec::new();
    let fd_cap = soft.saturating_sub(FD_MARGIN) as usize;
    if n > fd_cap {
        n = fd_cap;
        caps.push(format!(
            "{fd_cap}: sipfront may open {soft} files (RLIMIT_NOFILE soft {soft}, hard {hard}), \
             one relay socket per flow, {FD_MARGIN} kept for its other files"
        ));
    }
    if n > relay_capacity {
        n = relay_capacity;
        caps.push(format!(
            "{relay_capacity}: relay endpoints = ports {}-{} × {} relay address(es)",
            RELAY_PORTS.0,
            RELAY_PORTS.1,
            relays.len()
        ));
    }
    if n > clients::MAX_CLIENTS {
        n = clients::MAX_CLIENTS;
        caps.push(format!(
            "{n}: client addresses in 127.10.0.0-127.255.255.255"
        ));
    }
    for c in &caps {
        eprintln!("flows bench: flows capped at {c}");
    }
    let taken = procfs::udp_ports_taken(relays, RELAY_PORTS);
    if !taken.is_empty() {
        eprintln!(
            "flows bench: {} relay endpoints are held by other sockets (expect bind_failed \
             drops and retransmissions): {}",
            taken.len(),
            port_ranges(&taken)
        );
    }

    let rss0 = procfs::rss_kb(pid);
    let slab0 = procfs::slab_kb();
    eprintln!("flows bench: run {idx}: registering {n} flows through sipfront (pid {pid})");
    let limit = Duration::from_secs(60) + Duration::from_millis(n as u64);
    let reg = register::register_all(socks, n, SIP, limit);
    eprintln!(
        "  {}/{n} registered in {:.1} s ({} failed, {} retransmissions, {} misdelivered)",
        reg.ok,
        reg.elapsed.as_secs_f64(),
        reg.failed,
        reg.retransmits,
        reg.misdelivered
    );
    let c = sf.settled(&[
        "sipfront_flows",
        "sipfront_relay_ports_in_use",
        "sipfront_drops_total",
    ]);
    let counters = [c[0], c[1], c[2]];
    let rss1 = procfs::rss_kb(pid);
    let slab1 = procfs::slab_kb();
    let fds = procfs::open_fds(pid);
    if !sf.running() {
        return Err(format!("sipfront exited:\n{}", sf.log_tail()));
    }

    let held = reg.clients();
    let load = (!held.is_empty()).then(|| {
        let c0 = Cpu::of(pid);
        sleep(IDLE);
        let idle = Cpu::of(pid) - c0;
        let d0 = sf.settled(&["sipfront_datagrams_total"])[0];
        eprintln!(
            "  latency: {} requests at {}/s over {} flows, through sipfront and straight \
             to the backends in alternating half-second slices",
            args.rate * args.seconds,
            args.rate,
            held.len()
        );
        let home = |c: usize| BACKENDS[usize::from(reg.home[c])];
        let p = latency::alternate(socks, &held, &|_| SIP, &home, args.rate, args.seconds, pid);
        let forwarded = sf.settled(&["sipfront_datagrams_total"])[0] - d0;
        Load {
            via: p.via,
            direct: p.direct,
            cpu: p.via_cpu,
            idle,
            forwarded,
        }
    });
    if !sf.running() {
        return Err(format!("sipfront exited:\n{}", sf.log_tail()));
    }
    Ok(Measured {
        relay_capacity,
        wanted,
        caps,
        taken,
        reg,
        counters,
        fds,
        rss_kb: (rss0, rss1),
        slab_kb: (slab0, slab1),
        load,
    })
}

/// `[(a, 1), (a, 2), (a, 3), (b, 7)]` as `a:1-3 b:7`.
pub fn port_ranges(v: &[(Ipv4Addr, u16)]) -> String {
    let mut out: Vec<(Ipv4Addr, u16, u16)> = Vec::new();
    for &(ip, p) in v {
        match out.last_mut() {
            Some(r) if r.0 == ip && r.2.checked_add(1) == Some(p) => r.2 = p,
            _ => out.push((ip, p, p)),
        }
    }
    out.iter()
        .map(|&(ip, a, b)| {
            if a == b {
                format!("{ip}:{a}")
            } else {
                format!("{ip}:{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn target_dir() -> PathBuf {
    // .../target/release/deps/flows-HASH
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
        .filter(|t| t.is_dir())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if !argv.iter().any(|a| a == "--bench") {
        println!(
            "flows bench: not run (needs `cargo bench --bench flows`; it starts sipfront \
             and holds up to ~20,000 client flows for about a minute)"
        );
        return;
    }
    let args = match Args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("flows bench: {e}");
            std::process::exit(2);
        }
    };
    if args.skip {
        println!("flows bench: the name filter does not match `flows`; nothing to run");
        return;
    }
    // sipfront inherits the limit; it does not raise its own.
    procfs::raise_nofile();
    let dir = tempfile::Builder::new()
        .prefix("sipfront-flows-")
        .tempdir()
        .expect("create temp dir");
    let socks: Vec<Sock> = (0..clients::SOCKETS)
        .map(|s| {
            let port = clients::CLIENT_PORT0 + s as u16;
            Sock::bind_wildcard(port)
                .unwrap_or_else(|e| panic!("client socket 0.0.0.0:{port}: {e}"))
        })
        .collect();
    // Stopped at the end of main, after every run.
    let stubs: [Backend; 2] = std::array::from_fn(|i| {
        Backend::start(["a", "b"][i], BACKENDS[i].into())
            .unwrap_or_else(|e| panic!("stub backend {}: {e}", BACKENDS[i]))
    });
    let runs: Vec<Run> = args
        .runs
        .iter()
        .enumerate()
        .map(|(i, relays)| run_one(i, relays, &args, &socks, dir.path()))
        .collect();
    let failed = runs.iter().any(|r| match &r.result {
        Err(_) => true,
        Ok(m) => m.reg.failed > 0 || m.load.as_ref().is_some_and(|l| l.via.lost() > 0),
    });
    let answered = stubs.each_ref().map(|b| b.answered.load(Ordering::Relaxed));
    let t = report::table(&runs, &args, answered);
    println!("\n{t}");
    let out = target_dir().join("flows-bench.txt");
    match std::fs::write(&out, &t) {
        Ok(()) => eprintln!("written to {}", out.display()),
        Err(e) => eprintln!("cannot write {}: {e}", out.display()),
    }
    if args.keep || failed {
        eprintln!("flows bench: work dir kept at {}", dir.keep().display());
    }
}
