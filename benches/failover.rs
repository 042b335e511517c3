//! Failover bench (issues 4 and 5). Two parts, each repeated several times:
//!
//! - `backend`: sipfront in front of two in-bench UDP backends (a network namespace of
//!   its own, loopback only); one client flow sends a MESSAGE every 2 ms; its home backend
//!   is killed by closing its socket (ICMP port unreachable follows) or by going silent
//!   (socket open, nothing read: no ICMP). Reported: kill → first request at the survivor
//!   and kill → first answer from the survivor at the client, with the probe settings.
//! - `vrrp`: namespaces for a bridge, a client, two proxy hosts and a backend; the client
//!   sends to the VIP every 5 ms; the master host is killed with SIGKILL; reported: the
//!   gap until answers come back through the backup, for sipfront's built-in VRRPv3 at a
//!   30 ms advert interval and, in the same run, keepalived (vrrp_version 3, advert_int
//!   0.03) moving the VIP in front of sipfront in external mode.
//!
//! ```text
//! cargo bench --bench failover
//! cargo bench --bench failover -- --reps 20 vrrp
//! ```
//!
//! - `false`: false failover (issue 14, `failover/false_failover.rs`): a sipfront pair at
//!   10 ms adverts whose master's dataplane is saturated (new flows into a full table) and
//!   whose admin API is hammered for `--false-seconds` (20) × `--false-rounds` (3);
//!   reported: the backup's takeovers (goal 0), next to the real-failover gap at 10 ms
//!   adverts (`--false-reps` (5) SIGKILLs of the master) in the same run.
//!
//! Options: `--reps N` (10 per path and case), `--keep` (keep the work directory with
//! configs and logs; it is also kept on panic); positional filters `backend` / `vrrp` /
//! `false` select a part. Needs root (network namespaces, raw sockets) and keepalived for the
//! comparison. The tables go to stdout and to `target/failover-bench.txt`.
//!
//! Run without `--bench` (as `cargo test --benches` does) it only prints a note.
//! Namespaces are named `sffo<PID>…` and deleted at the end, also on panic; every program
//! runs inside them, so nothing touches the host's ports.

#[path = "failover/backend.rs"]
mod backend;
#[path = "failover/capture.rs"]
mod capture;
#[path = "failover/false_failover.rs"]
mod false_failover;
#[allow(dead_code)]
#[path = "load/procs.rs"]
mod procs;
#[path = "failover/sipudp.rs"]
mod sipudp;
#[path = "failover/vrrp.rs"]
mod vrrp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// min / median / max of some numbers.
pub struct Stats {
    pub min: f64,
    pub med: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(mut v: Vec<f64>) -> Stats {
        assert!(!v.is_empty(), "no samples");
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let med = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stats {
            min: v[0],
            med,
            max: v[n - 1],
        }
    }

    pub fn fmt(&self) -> String {
        format!("{:.1} / {:.1} / {:.1}", self.min, self.med, self.max)
    }
}

static RNG: AtomicU64 = AtomicU64::new(0);

/// A pseudo-random number of milliseconds in `0..n` (xorshift, seeded from the clock):
/// kills land at random phases of the probe and advert schedules.
pub fn rand_ms(n: u64) -> u64 {
    let mut x = RNG.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    RNG.store(x, Ordering::Relaxed);
    x % n.max(1)
}

struct Args {
    reps: usize,
    keep: bool,
    backend: bool,
    vrrp: bool,
    /// The false-failover part (`false`): rounds, seconds per round, and repetitions of
    /// the real failover at the same advert interval.
    false_fo: bool,
    false_rounds: usize,
    false_seconds: u64,
    false_reps: usize,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut reps = 10;
    let mut keep = false;
    let mut false_rounds = 3;
    let mut false_seconds = 20;
    let mut false_reps = 5;
    let mut filters = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => {}
            "--keep" => keep = true,
            "--reps" => {
                let v = it.next().ok_or("--reps needs a value")?;
                reps = v
                    .parse::<usize>()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or(format!("--reps: `{v}`"))?;
            }
            "--false-rounds" | "--false-seconds" | "--false-reps" => {
                let v = it.next().ok_or(format!("{a} needs a value"))?;
                let n = v.parse::<u64>().map_err(|_| format!("{a}: `{v}`"))?;
                match a.as_str() {
                    "--false-rounds" => false_rounds = n as usize,
                    "--false-seconds" => false_seconds = n.max(1),
                    _ => false_reps = n as usize,
                }
            }
            f if f.starts_with('-') => {
                eprintln!("failover bench: ignoring `{f}` (not an option of this bench)");
            }
            f => filters.push(f.to_string()),
        }
    }
    let wants = |part: &str| {
        filters.is_empty()
            || filters
                .iter()
                .any(|f| part.contains(f.as_str()) || "failover".contains(f.as_str()))
    };
    Ok(Args {
        reps,
        keep,
        backend: wants("backend"),
        vrrp: wants("vrrp"),
        false_fo: wants("false") && false_rounds > 0,
        false_rounds,
        false_seconds,
        false_reps,
    })
}

/// The work directory; kept with `--keep` or on panic.
struct WorkDir {
    dir: Option<tempfile::TempDir>,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take()
            && (self.keep || std::thread::panicking())
        {
            eprintln!("failover bench: work dir kept at {}", d.keep().display());
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if !argv.iter().any(|a| a == "--bench") {
        println!(
            "failover bench: not run (needs `cargo bench --bench failover`, root for network \
             namespaces, and keepalived; about three minutes with the false-failover part)"
        );
        return;
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("failover bench: {e}");
            std::process::exit(2);
        }
    };
    if !args.backend && !args.vrrp && !args.false_fo {
        println!("failover bench: no part matches the filter; nothing to run");
        return;
    }
    let mut work = WorkDir {
        dir: Some(
            tempfile::Builder::new()
                .prefix("sipfront-fobench-")
                .tempdir()
                .expect("create temp dir"),
        ),
        keep: args.keep,
    };
    let dir = work.dir.as_ref().expect("work dir").path().to_path_buf();
    testkit::remove_stale("sffo");
    let prefix = format!("sffo{}", std::process::id());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    eprintln!(
        "failover bench: {} reps, namespaces {prefix}*, work dir {}",
        args.reps,
        dir.display()
    );
    let mut out = format!(
        "sipfront failover bench: {} repetitions per path/case, kernel {}, {} CPUs\n\n",
        args.reps,
        kernel.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if args.backend {
        eprintln!("backend failover: {}", backend::probe_settings());
        let o = backend::run(&prefix, args.reps, &dir);
        let t = backend::table(&o);
        println!("\nBackend failover\n{t}");
        out += &format!("Backend failover (issue 4)\n{t}\n");
    }
    if args.vrrp || args.false_fo {
        let ka = vrrp::keepalived_version();
        let topo = vrrp::Topo::new(&prefix);
        let backend = sipudp::Backend::start(
            topo.be.path(),
            "be",
            "10.77.5.20:5060".parse().expect("addr"),
        );
        let cap = capture::Capture::start(topo.cl.path());
        let client = sipudp::Client::start(
            topo.cl.path(),
            "10.77.5.10:5070".parse().expect("addr"),
            "10.77.5.100:5060".parse().expect("addr"),
            Duration::from_millis(5),
        );
        let mut samples = Vec::new();
        if args.vrrp {
            samples = vrrp::run(
                &topo,
                vrrp::Case::Sipfront,
                args.reps,
                &dir,
                &client,
                &cap,
                vrrp::DEFAULT_HOST,
            );
        }
        if args.vrrp && ka.is_some() {
            samples.extend(vrrp::run(
                &topo,
                vrrp::Case::Keepalived,
                args.reps,
                &dir,
                &client,
                &cap,
                vrrp::DEFAULT_HOST,
            ));
        } else if args.vrrp {
            eprintln!("failover bench: keepalived not installed; the comparison is skipped");
        }
        let mut false_table = None;
        if args.false_fo {
            eprintln!(
                "false failover: {} rounds of {} s, then {} real failovers, at {} ms adverts",
                args.false_rounds,
                args.false_seconds,
                args.false_reps,
                false_failover::ADVERT_MS
            );
            let (quiet, rounds) = false_failover::run(
                &topo,
                &dir,
                &client,
                &cap,
                args.false_rounds,
                args.false_seconds,
            );
            let real = if args.false_reps > 0 {
                vrrp::run(
                    &topo,
                    vrrp::Case::Sipfront,
                    args.false_reps,
                    &dir,
                    &client,
                    &cap,
                    false_failover::HOST,
                )
            } else {
                Vec::new()
            };
            if quiet.takeovers > 0.0 || rounds.iter().any(|r| r.takeovers > 0.0 || r.h2_adverts > 0)
            {
                // The logs of both hosts show what happened.
                work.keep = true;
            }
            false_table = Some(false_failover::table(&quiet, &rounds, &real));
        }
        drop(client);
        drop(cap);
        drop(backend);
        if args.vrrp {
            let t = vrrp::table(&samples, ka.as_deref());
            println!("\n{t}");
            out += &format!("VRRP failover (issue 5)\n{t}");
        }
        if let Some(t) = false_table {
            println!("\n{t}");
            out += &format!("\nFalse failover (issue 14)\n{t}");
        }
        drop(topo);
    }
    let path = procs::target_dir().join("failover-bench.txt");
    match std::fs::write(&path, out) {
        Ok(()) => eprintln!("written to {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
    drop(work);
}

/// `RUST_LOG` for the sipfront processes: `FAILOVER_SIPFRONT_LOG` or `info`.
pub fn sipfront_log() -> String {
    std::env::var("FAILOVER_SIPFRONT_LOG").unwrap_or_else(|_| "info".into())
}
