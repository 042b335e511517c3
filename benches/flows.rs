//! Many-flows bench: the real sipfront binary holding thousands of client flows, what
//! each flow costs (sipfront's resident memory, the kernel's slab), and the latency
//! sipfront adds per request side by side with a bare recv/send forwarder and nginx
//! stream UDP, against two in-process stub backends.
//!
//! ```text
//! cargo bench --bench flows
//! cargo bench --bench flows -- --flows 5000 --rate 1000,4000 --seconds 5
//! cargo bench --bench flows -- --proxies sipfront,nginx --latency-flows 5000
//! cargo bench --bench flows -- --relays 127.0.0.2 --relays 127.0.0.2,127.0.0.3
//! cargo bench --bench flows -- --relays 127.0.0.2 --prefix 127.16.0.0/12
//! ```
//!
//! Options: `--flows N` (100000, capped as below), `--rate R[,R...]` requests/s in the
//! latency phase, one measurement per rate (2000), `--seconds S` per path and rate (5),
//! `--proxies LIST` (sipfront,bare,nginx), `--latency-flows N` client flows each proxy
//! carries in the latency phase (1000 when bare or nginx runs, else every flow sipfront
//! holds), `--relays LIST` relay addresses, comma separated (127.0.0.2; repeat the
//! option for several sipfront runs: one address is written `relay = "a"`, several
//! `relay = ["a", "b"]`, and a sipfront that rejects the config has its error printed
//! and that run skipped), `--prefix P` a sipfront run in prefix mode
//! (`relay_prefix = P`, `relay_port = 16384`: no socket per flow, so no open-file cap;
//! repeatable, after the `--relays` runs), `--listing` (through each rate, a thread
//! asks sipfront's admin API for 100,000-flow listings back to back; see
//! `flows/listing.rs`), `--keep` (keep the work directory).
//!
//! Clients are impersonated by source address: four sockets on `0.0.0.0:31370-31373`
//! send with `IP_PKTINFO` as `127.10.x.y` and up, so N flows need no N sockets here
//! (the container caps open files at 20,000 per process). sipfront has no such trick:
//! one relay socket per flow, so N is capped at its open-file limit minus a margin,
//! and at its relay endpoints (ports 16384-23999 × relay addresses). The bare forwarder
//! and nginx open one upstream socket per client, so `--latency-flows` is capped alike.
//!
//! 1. flows (sipfront only): every client REGISTERs once (retransmitting like a UAC)
//!    and must get its 200 back at its own address; sipfront's VmRSS and the host's
//!    Slab (/proc/meminfo) before and after give memory per flow.
//! 2. latency: the bare forwarder and nginx (started before phase 1, idle through it)
//!    get their client sessions opened the same way, one REGISTER per client, which
//!    also tells each client's home backend (the proxy's own choice). Then at each
//!    `--rate`, for `--seconds`: OPTIONS round robin over the same number of flows
//!    per proxy, through each proxy and straight to each flow's home backend, in turns
//!    of half-second slices (sipfront via, sipfront direct, bare via, bare direct,
//!    nginx via, nginx direct, again...; a burst of load from elsewhere hits all paths
//!    alike); percentiles of via and direct and their difference. Each proxy's CPU
//!    time (utime+stime, and schedstat ns; all threads, and all processes of nginx)
//!    over its via slices, divided by the datagrams it forwarded (a request and its
//!    reply are two), gives CPU per datagram; VmRSS after each rate.
//!
//! The tables go to stdout and `target/flows-bench.txt`. Run without `--bench` (as
//! `cargo test --benches` does) it only prints a note. Ports: sipfront 127.0.0.1:31360,
//! stub backends 31361-31362, bare forwarder 31363, nginx 31364, admin 31390, clients
//! 31370-31373, relay ports 16384-23999 on the relay addresses; the bare forwarder's
//! and nginx's upstream sockets take ephemeral ports on 127.0.0.1.

#[path = "flows/backend.rs"]
mod backend;
#[path = "load/bare.rs"]
mod bare;
#[path = "flows/clients.rs"]
mod clients;
#[path = "flows/latency.rs"]
mod latency;
#[path = "flows/listing.rs"]
mod listing;
#[path = "flows/pktinfo.rs"]
mod pktinfo;
#[path = "flows/procfs.rs"]
mod procfs;
#[allow(dead_code)]
#[path = "load/procs.rs"]
mod procs;
#[path = "flows/proxies.rs"]
mod proxies;
#[path = "flows/register.rs"]
mod register;
#[path = "flows/report.rs"]
mod report;
#[path = "flows/sipfront.rs"]
mod sipfront;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::thread::sleep;
use std::time::Duration;

use backend::Backend;
use latency::{Latency, Pair};
use pktinfo::Sock;
use procfs::Cpu;
use proxies::{Kind, Proxy};
use register::Registered;
use sipfront::{Setup, Sipfront};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
const SIP: SocketAddrV4 = SocketAddrV4::new(LOCALHOST, 31360);
const BACKENDS: [SocketAddrV4; 2] = [
    SocketAddrV4::new(LOCALHOST, 31361),
    SocketAddrV4::new(LOCALHOST, 31362),
];
const ADMIN: SocketAddrV4 = SocketAddrV4::new(LOCALHOST, 31390);
const BARE: SocketAddrV4 = SocketAddrV4::new(LOCALHOST, 31363);
const NGINX: SocketAddrV4 = SocketAddrV4::new(LOCALHOST, 31364);
/// Below the load bench's 24000-24999 and this bench's own 313xx (the client sockets
/// bind 0.0.0.0, which would take their ports from every relay address), and below
/// the ephemeral range (32768-).
const RELAY_PORTS: (u16, u16) = (16384, 23999);
const DEFAULT_FLOWS: usize = 100_000;
/// Open files sipfront needs besides its relay sockets (public, probe, admin, epoll...).
const FD_MARGIN: u64 = 300;
/// CPU sampled while idle (flows held, no traffic), for housekeeping's share.
const IDLE: Duration = Duration::from_secs(1);
/// Latency flows per proxy when the bare forwarder or nginx runs (one upstream socket
/// per client each).
const DEFAULT_LATENCY_FLOWS: usize = 1000;
/// Open files the bare forwarder and nginx need besides their upstream sockets.
const PROXY_FD_MARGIN: u64 = 100;
/// Most requests per path and rate; requests of rate `i` are numbered from
/// `i × PER_RATE`.
const PER_RATE: u64 = 10_000_000;

#[derive(Debug)]
pub struct Args {
    flows: Option<usize>,
    pub rates: Vec<u64>,
    pub seconds: u64,
    pub proxies: Vec<Kind>,
    latency_flows: Option<usize>,
    runs: Vec<Vec<Ipv4Addr>>,
    /// Prefix-mode runs, after `runs`.
    prefixes: Vec<String>,
    /// Flow listings through each rate (`--listing`).
    pub listing: bool,
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
            rates: Vec::new(),
            seconds: 5,
            proxies: Kind::ALL.to_vec(),
            latency_flows: None,
            runs: Vec::new(),
            prefixes: Vec::new(),
            listing: false,
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
                "--listing" => a.listing = true,
                "--flows" => a.flows = Some(num(value()?)? as usize),
                "--rate" => {
                    for r in value()?.split(',') {
                        a.rates.push(num(&r.trim().to_string())?);
                    }
                }
                "--seconds" => a.seconds = num(value()?)?,
                "--latency-flows" => a.latency_flows = Some(num(value()?)? as usize),
                "--proxies" => {
                    let named = value()?
                        .split(',')
                        .map(|p| Kind::parse(p.trim()).ok_or(format!("--proxies: `{p}`")))
                        .collect::<Result<Vec<_>, _>>()?;
                    a.proxies = Kind::ALL
                        .into_iter()
                        .filter(|k| named.contains(k))
                        .collect();
                }
                "--prefix" => a.prefixes.push(value()?.clone()),
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
        if a.rates.is_empty() {
            a.rates.push(2000);
        }
        if a.rates.contains(&0)
            || a.seconds == 0
            || a.flows == Some(0)
            || a.latency_flows == Some(0)
            || a.proxies.is_empty()
        {
            return Err(
                "--flows, --latency-flows, --rate, --seconds and --proxies must be > 0".into(),
            );
        }
        if a.rates
            .iter()
            .any(|&r| r.saturating_mul(a.seconds) > PER_RATE)
        {
            return Err(format!("--rate × --seconds: at most {PER_RATE} requests"));
        }
        if a.runs.is_empty() && a.prefixes.is_empty() {
            a.runs.push(vec![Ipv4Addr::new(127, 0, 0, 2)]);
        }
        a.skip = !filters.is_empty() && !filters.iter().any(|f| "flows".contains(f.as_str()));
        Ok(a)
    }
}

/// One sipfront run: its relay addresses, and what it measured or why it stopped.
pub struct Run {
    pub relays: Vec<Ipv4Addr>,
    /// Prefix mode: `relay_prefix` (then `relays` is empty).
    pub prefix: Option<String>,
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
    pub load: Option<Side>,
}

/// A proxy in the latency phase: where the clients send, its processes, the clients
/// that hold a flow (session) through it and each client's home backend (an index
/// into `BACKENDS`, by client).
#[derive(Clone)]
pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddrV4,
    pub pids: Vec<u32>,
    pub clients: Vec<usize>,
    pub home: Vec<u8>,
    /// How its flows were opened, for the table.
    pub opened: String,
}

/// One latency phase: every proxy at every rate, over the same number of flows.
pub struct Side {
    pub flows: usize,
    /// Per proxy: how its flows were opened, and its CPU over `IDLE` before any load.
    pub targets: Vec<(Kind, String, Cpu)>,
    pub rates: Vec<AtRate>,
}

pub struct AtRate {
    pub rate: u64,
    /// Flow listings made through this rate (`--listing`, sipfront's runs).
    pub listed: Option<listing::Listed>,
    /// In the order of `Side::targets`.
    pub loads: Vec<Load>,
}

pub struct Load {
    pub via: Latency,
    pub direct: Latency,
    /// The proxy's CPU over its via slices.
    pub cpu: Cpu,
    /// sipfront_datagrams_total over this rate (direct requests skip it); sipfront only.
    pub forwarded: Option<f64>,
    /// VmRSS after this rate, summed over the proxy's processes, and their number.
    pub rss_kb: u64,
    pub procs: usize,
}

impl Load {
    /// Datagrams the proxy forwarded by the client's count: a request and its 200 are
    /// two; a lost request counts one (it may have died on either leg).
    pub fn counted(&self) -> usize {
        2 * self.via.answered() + self.via.lost()
    }
}

/// Measures every target at every rate, in turns of slices. `sf` (when sipfront is
/// one of the targets) gives its forwarded datagrams.
fn latency_phase(socks: &[Sock], targets: &[Target], sf: Option<&Sipfront>, args: &Args) -> Side {
    let flows = targets.iter().map(|t| t.clients.len()).min().unwrap_or(0);
    let c0: Vec<Cpu> = targets.iter().map(|t| Cpu::of_all(&t.pids)).collect();
    sleep(IDLE);
    let idle: Vec<Cpu> = targets
        .iter()
        .zip(&c0)
        .map(|(t, &c)| Cpu::of_all(&t.pids) - c)
        .collect();
    let homes: Vec<Box<dyn Fn(usize) -> SocketAddrV4 + '_>> = targets
        .iter()
        .map(|t| Box::new(|c: usize| BACKENDS[usize::from(t.home[c])]) as Box<dyn Fn(_) -> _>)
        .collect();
    let pairs: Vec<Pair> = targets
        .iter()
        .zip(&homes)
        .map(|(t, home)| Pair {
            tags: t.kind.tags(),
            clients: &t.clients[..flows],
            via: t.addr,
            direct: home.as_ref(),
            pids: &t.pids,
        })
        .collect();
    let names: Vec<&str> = targets.iter().map(|t| t.kind.name()).collect();
    let mut rates = Vec::new();
    for (i, &rate) in args.rates.iter().enumerate() {
        let forwarded = || sf.map(|s| s.settled(&["sipfront_datagrams_total"])[0]);
        let d0 = forwarded();
        eprintln!(
            "  latency at {rate}/s: {} requests per path over {flows} flows each, via {} \
             and straight to the backends, in turns of half-second slices ({:.0} s)",
            rate * args.seconds,
            names.join(", "),
            (2 * targets.len()) as f64 * args.seconds as f64
        );
        let lister = (args.listing && sf.is_some()).then(|| listing::Lister::start(ADMIN));
        let paths = latency::rotate(socks, &pairs, rate, args.seconds, i * PER_RATE as usize);
        let listed = lister.map(listing::Lister::stop);
        let d1 = forwarded();
        let loads = targets
            .iter()
            .zip(paths)
            .map(|(t, p)| Load {
                via: p.via,
                direct: p.direct,
                cpu: p.via_cpu,
                forwarded: match (t.kind, d0, d1) {
                    (Kind::Sipfront, Some(a), Some(b)) => Some(b - a),
                    _ => None,
                },
                rss_kb: t.pids.iter().map(|&p| procfs::rss_kb(p)).sum(),
                procs: t.pids.len(),
            })
            .collect();
        rates.push(AtRate {
            rate,
            listed,
            loads,
        });
    }
    Side {
        flows,
        targets: targets
            .iter()
            .zip(idle)
            .map(|(t, c)| (t.kind, t.opened.clone(), c))
            .collect(),
        rates,
    }
}

/// Flows per proxy in the latency phase, as asked.
fn latency_flows(args: &Args) -> usize {
    args.latency_flows
        .unwrap_or(if args.proxies.iter().any(|&k| k != Kind::Sipfront) {
            DEFAULT_LATENCY_FLOWS
        } else {
            usize::MAX
        })
}

/// Starts the bare forwarder or nginx and opens `n` client sessions through it (one
/// REGISTER each, which also tells the home backend).
fn start_other(
    kind: Kind,
    n: usize,
    socks: &[Sock],
    root: &Path,
) -> Result<(Proxy, Target), String> {
    let addr = match kind {
        Kind::Bare => BARE,
        Kind::Nginx => NGINX,
        Kind::Sipfront => unreachable!("sipfront runs in measure()"),
    };
    let mut p = Proxy::start(kind, addr, BACKENDS, n, root)?;
    let pids = procfs::family(p.pid());
    eprintln!(
        "flows bench: opening {n} client sessions through {} (pid {:?})",
        kind.label(),
        pids
    );
    let reg = register::register_all(socks, n, addr, Duration::from_secs(30));
    if !p.running() {
        return Err(format!("{} exited:\n{}", kind.label(), p.log_tail()));
    }
    let opened = format!(
        "{}/{n}; {} retrans, {} misdeliv",
        reg.ok, reg.retransmits, reg.misdelivered
    );
    eprintln!(
        "  {opened}, {} failed, in {:.2} s",
        reg.failed,
        reg.elapsed.as_secs_f64()
    );
    let clients = reg.clients();
    if clients.is_empty() {
        return Err(format!("no session opened through {}", kind.label()));
    }
    let target = Target {
        kind,
        addr,
        pids,
        clients,
        home: reg.home,
        opened,
    };
    Ok((p, target))
}

fn run_one(
    idx: usize,
    (relays, prefix): (&[Ipv4Addr], Option<&str>),
    args: &Args,
    socks: &[Sock],
    root: &Path,
    others: &[Target],
) -> Run {
    let result = measure(idx, (relays, prefix), args, socks, root, others);
    if let Err(e) = &result {
        eprintln!("flows bench: run {idx} (relay {relays:?} {prefix:?}) stopped: {e}");
    }
    Run {
        relays: relays.to_vec(),
        prefix: prefix.map(str::to_string),
        result,
    }
}

fn measure(
    idx: usize,
    (relays, prefix): (&[Ipv4Addr], Option<&str>),
    args: &Args,
    socks: &[Sock],
    root: &Path,
    others: &[Target],
) -> Result<Measured, String> {
    let dir = root.join(format!("run{idx}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let setup = Setup {
        sip: SIP.into(),
        admin: ADMIN.into(),
        backends: BACKENDS.map(SocketAddr::V4),
        relays: relays.to_vec(),
        relay_ports: RELAY_PORTS,
        prefix: prefix.map(str::to_string),
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
    if n > fd_cap && prefix.is_none() {
        n = fd_cap;
        caps.push(format!(
            "{fd_cap}: sipfront may open {soft} files (RLIMIT_NOFILE soft {soft}, hard {hard}), \
             one relay socket per flow, {FD_MARGIN} kept for its other files"
        ));
    }
    if n > relay_capacity {
        n = relay_capacity;
        caps.push(format!(
            "{relay_capacity}: relay endpoints = ports {}-{} × {} relay address(es) / prefix {prefix:?}",
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
    // Prefix mode binds the wildcard address on one port: nothing per endpoint to check.
    let taken = if prefix.is_some() {
        Vec::new()
    } else {
        procfs::udp_ports_taken(relays, RELAY_PORTS)
    };
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
        let mut targets = vec![Target {
            kind: Kind::Sipfront,
            addr: SIP,
            pids: vec![pid],
            clients: held[..held.len().min(latency_flows(args))].to_vec(),
            home: reg.home.clone(),
            opened: format!("{} held (flows phase)", held.len()),
        }];
        targets.extend(others.iter().cloned());
        latency_phase(socks, &targets, Some(&sf), args)
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

fn main() {
    // The bare forwarder: this binary re-executed by `Proxy::start`.
    if let Ok(spec) = std::env::var(bare::ENV) {
        bare::run(&spec);
    }
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
    // sipfront, the bare forwarder and nginx inherit the limit; none raises its own.
    let nofile = procfs::raise_nofile();
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

    // The other proxies first: idle while sipfront's flows are registered, and the
    // same processes beside every sipfront run.
    let mut notes: Vec<String> = Vec::new();
    let mut others: Vec<(Proxy, Target)> = Vec::new();
    let with_sipfront = args.proxies.contains(&Kind::Sipfront);
    let mut n_other = latency_flows(&args).min(clients::MAX_CLIENTS);
    if with_sipfront {
        n_other = n_other.min(args.flows.unwrap_or(DEFAULT_FLOWS));
    }
    let fd_cap = nofile.saturating_sub(PROXY_FD_MARGIN) as usize;
    for &kind in args.proxies.iter().filter(|&&k| k != Kind::Sipfront) {
        if kind == Kind::Nginx
            && let Some(why) = proxies::nginx_missing()
        {
            notes.push(format!("nginx skipped: {why}"));
            continue;
        }
        let mut n = n_other;
        if n > fd_cap {
            n = fd_cap;
            notes.push(format!(
                "{}: latency flows capped at {fd_cap}: it may open {nofile} files, one \
                 upstream socket per client, {PROXY_FD_MARGIN} kept for its other files",
                kind.label()
            ));
        }
        match start_other(kind, n, &socks, dir.path()) {
            Ok(o) => others.push(o),
            Err(e) => notes.push(format!("{} skipped: {e}", kind.label())),
        }
    }
    for n in &notes {
        eprintln!("flows bench: {n}");
    }
    let targets: Vec<Target> = others.iter().map(|(_, t)| t.clone()).collect();

    let (runs, side): (Vec<Run>, Option<Side>) = if with_sipfront {
        let runs = args
            .runs
            .iter()
            .map(|relays| (relays.as_slice(), None))
            .chain(args.prefixes.iter().map(|p| (&[][..], Some(p.as_str()))))
            .enumerate()
            .map(|(i, spec)| run_one(i, spec, &args, &socks, dir.path(), &targets))
            .collect();
        (runs, None)
    } else if targets.is_empty() {
        (Vec::new(), None)
    } else {
        (
            Vec::new(),
            Some(latency_phase(&socks, &targets, None, &args)),
        )
    };
    for (p, _) in &mut others {
        if !p.running() {
            notes.push(format!(
                "{} exited during the bench:\n{}",
                p.kind.label(),
                p.log_tail()
            ));
        }
    }
    let sides = runs
        .iter()
        .filter_map(|r| r.result.as_ref().ok()?.load.as_ref())
        .chain(side.as_ref());
    let lost = sides
        .flat_map(|s| &s.rates)
        .flat_map(|r| &r.loads)
        .any(|l| l.via.lost() > 0);
    let failed = lost
        || runs.iter().any(|r| match &r.result {
            Err(_) => true,
            Ok(m) => m.reg.failed > 0,
        });
    let answered = stubs.each_ref().map(|b| b.answered.load(Ordering::Relaxed));
    let t = report::table(&runs, side.as_ref(), &notes, &args, answered);
    println!("\n{t}");
    let out = procs::target_dir().join("flows-bench.txt");
    match std::fs::write(&out, &t) {
        Ok(()) => eprintln!("written to {}", out.display()),
        Err(e) => eprintln!("cannot write {}: {e}", out.display()),
    }
    // Proxies stopped before the work dir is kept or removed.
    drop(others);
    if args.keep || failed {
        eprintln!("flows bench: work dir kept at {}", dir.keep().display());
    }
}

impl Run {
    /// The relay addresses, or the prefix of a prefix-mode run.
    pub fn label(&self) -> String {
        match &self.prefix {
            Some(p) => format!("prefix {p}"),
            None => format!("{:?}", self.relays),
        }
    }
}
