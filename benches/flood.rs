//! Flood bench (issue 14): a hostile source floods the proxy with junk while sipp makes
//! honest calls through it, side by side for sipfront (its default limits) and Kamailio's
//! stateless dispatcher with `pike` + `htable` bans (`flood/kamailio-pike.cfg`), in front
//! of the same two sipp UAS (`load/uas.xml`).
//!
//! ```text
//! unshare -n sh -c "ip link set lo up && cargo bench --bench flood"
//! cargo bench --bench flood -- --steps 2000,5000,10000 --step-seconds 3 --proxies sipfront
//! ```
//!
//! Per step (hostile rate), with a fresh proxy and fresh UAS: the sipp UAC starts
//! `--rate` (100) calls/s for `--step-seconds` (4) from 127.0.0.1 and at the same time the
//! hostile source sends that many datagrams/s from 127.0.0.2 (`--hostile-ports` (8)
//! source ports): three INVITEs with fresh Call-IDs, then a CRLF-CRLF keepalive, over and
//! over, for the same time. Reported per step: honest calls failed (sipp's count, calls
//! that got no final answer within 5 s), what the hostile source achieved, the proxy's CPU
//! (utime+stime of all its processes, from /proc) during the step, its drops by reason
//! (sipfront's `sipfront_drops_total`; for Kamailio none are exported) and the datagrams
//! the kernel dropped on full socket buffers (Udp RcvbufErrors, every socket), and the
//! junk INVITEs that reached the UAS; at the end, per proxy, the highest hostile rate with
//! 0 failed honest calls. `--steps LIST` (2000,5000,10000,20000,50000),
//! `--pike-density N` (Kamailio's requests per 2 s unit before a ban; 2000, room for the
//! honest 3 × rate requests/s), `--proxies LIST` (sipfront,kamailio), `--keep`.
//!
//! The table goes to stdout and to `target/flood-bench.txt`. Ports: as the load bench
//! (proxy 127.0.0.1:31060, UAS 31070/31071, admin 31090): run it in a fresh network
//! namespace. Run without `--bench` (as `cargo test --benches` does) it only prints a note.

#[path = "flood/hostile.rs"]
mod hostile;
#[allow(dead_code)]
#[path = "load/procs.rs"]
mod procs;
#[path = "flood/proxies.rs"]
mod proxies;
#[allow(dead_code)]
#[path = "load/sipp.rs"]
mod sipp;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use procs::{Cpu, assert_udp_free, udp_rcvbuf_errors};
use proxies::{Kind, Ports, Proxy};
use sipp::Sipp;

const PORTS: Ports = Ports {
    listen: 31060,
    uas: [31070, 31071],
    admin: 31090,
    relay_ports: "24000-24999",
};
const UAC_PORT: u16 = 31080;
const UAC_MEDIA: u16 = 31200;
const UAS_MEDIA: [u16; 2] = [31210, 31220];
const HOSTILE_IP: &str = "127.0.0.2";

struct Args {
    steps: Vec<u64>,
    step_seconds: u64,
    rate: u64,
    hostile_ports: usize,
    pike_density: u64,
    proxies: Vec<Kind>,
    keep: bool,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        steps: vec![2000, 5000, 10000, 20000, 50000],
        step_seconds: 4,
        rate: 100,
        hostile_ports: 8,
        pike_density: 2000,
        proxies: Kind::ALL.to_vec(),
        keep: false,
    };
    let mut filters = Vec::new();
    let mut it = argv.iter();
    while let Some(f) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{f} needs a value"))
        };
        let num = |v: String| v.parse::<u64>().map_err(|_| format!("{f}: `{v}`"));
        match f.as_str() {
            "--bench" => {}
            "--keep" => a.keep = true,
            "--step-seconds" => a.step_seconds = num(value()?)?.max(1),
            "--rate" => a.rate = num(value()?)?.max(1),
            "--hostile-ports" => a.hostile_ports = num(value()?)?.clamp(1, 1000) as usize,
            "--pike-density" => a.pike_density = num(value()?)?.max(1),
            "--steps" => {
                a.steps = value()?
                    .split(',')
                    .map(|s| s.parse::<u64>().map_err(|_| format!("--steps: `{s}`")))
                    .collect::<Result<_, _>>()?;
            }
            "--proxies" => {
                a.proxies = value()?
                    .split(',')
                    .map(|p| Kind::parse(p).ok_or_else(|| format!("--proxies: `{p}`")))
                    .collect::<Result<_, _>>()?;
            }
            flag if flag.starts_with('-') => {
                eprintln!("flood bench: ignoring `{flag}` (not an option of this bench)");
            }
            filter => filters.push(filter.to_string()),
        }
    }
    if !filters.is_empty() && !filters.iter().any(|f| "flood".contains(f.as_str())) {
        a.proxies
            .retain(|k| filters.iter().any(|f| k.name().contains(f.as_str())));
    }
    Ok(a)
}

/// One step: one proxy under one hostile rate.
struct Step {
    kind: Kind,
    pps: u64,
    calls: u64,
    successful: u64,
    sipp_failed: u64,
    exit: Option<i32>,
    sent: hostile::Sent,
    cpu: Cpu,
    wall: Duration,
    drops: Option<BTreeMap<String, f64>>,
    rcvbuf: u64,
    /// INVITEs the two UAS received (honest and junk).
    uas_invites: u64,
    proxy_alive: bool,
}

impl Step {
    fn failed(&self) -> u64 {
        self.calls
            .saturating_sub(self.successful)
            .max(self.sipp_failed)
    }
}

fn run_step(kind: Kind, pps: u64, args: &Args, root: &Path) -> Step {
    let dir = root.join(format!("{}-{pps}", kind.name()));
    std::fs::create_dir_all(&dir).expect("create step dir");
    for p in [PORTS.listen, PORTS.uas[0], PORTS.uas[1], UAC_PORT] {
        assert_udp_free(p);
    }
    let mut uas_a = Sipp::uas(&dir, "uas-a", PORTS.uas[0], UAS_MEDIA[0], &[]);
    let mut uas_b = Sipp::uas(&dir, "uas-b", PORTS.uas[1], UAS_MEDIA[1], &[]);
    let mut proxy = Proxy::start(kind, &dir.join(kind.name()), &PORTS, args.pike_density);
    let calls = args.rate * args.step_seconds;
    let uac_args: Vec<String> = [
        "-sn",
        "uac",
        &format!("127.0.0.1:{}", PORTS.listen),
        "-i",
        "127.0.0.1",
        "-p",
        &UAC_PORT.to_string(),
        "-mp",
        &UAC_MEDIA.to_string(),
        "-r",
        &args.rate.to_string(),
        "-m",
        &calls.to_string(),
        "-t",
        "u1",
        "-recv_timeout",
        "5000",
        "-timeout",
        &format!("{}s", args.step_seconds + 20),
        "-timeout_error",
    ]
    .map(String::from)
    .to_vec();
    let rcvbuf0 = udp_rcvbuf_errors();
    let before = proxy.proc.cpu();
    let t0 = Instant::now();
    let dst = SocketAddr::from(([127, 0, 0, 1], PORTS.listen));
    let flood = (pps > 0).then(|| {
        hostile::start(
            HOSTILE_IP,
            args.hostile_ports,
            dst,
            pps,
            Duration::from_secs(args.step_seconds),
        )
    });
    let mut uac = Sipp::start(&dir, "uac", &uac_args);
    let status = uac.wait(Duration::from_secs(args.step_seconds + 30));
    let sent = flood
        .map(|h| h.join().expect("hostile thread"))
        .unwrap_or_default();
    let after = proxy.proc.cpu();
    let wall = t0.elapsed();
    let rcvbuf = udp_rcvbuf_errors().saturating_sub(rcvbuf0);
    let proxy_alive = proxy.proc.try_wait().is_none();
    let drops = proxy.drops();
    let stats = uac.stats();
    sleep(Duration::from_millis(1200));
    uas_a.kill();
    uas_b.kill();
    let s = Step {
        kind,
        pps,
        calls,
        successful: stats.successful(),
        sipp_failed: stats.failed(),
        exit: status.and_then(|s| s.code()),
        sent,
        cpu: after - before,
        wall,
        drops,
        rcvbuf,
        uas_invites: uas_a.received("INVITE") + uas_b.received("INVITE"),
        proxy_alive,
    };
    eprintln!(
        "  {:<8} {:>6}/s hostile (sent {:.0}/s): {}/{} honest calls ok, cpu {:.0} ms, \
         UAS INVITEs {}, rcvbuf drops {}{}",
        kind.name(),
        pps,
        s.sent.pps(),
        s.successful,
        s.calls,
        s.cpu.ms(),
        s.uas_invites,
        s.rcvbuf,
        if proxy_alive { "" } else { ", PROXY EXITED" }
    );
    drop(proxy);
    s
}

fn table(steps: &[Step], args: &Args) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<8} {:>7} {:>8} {:>7} {:>6} {:>7} {:>6} {:>9} {:>8} {:>8} {:>6}  drops by reason",
        "proxy",
        "hostile",
        "sent/s",
        "calls",
        "failed",
        "cpu_ms",
        "cpu%",
        "uas_inv",
        "answers",
        "rcvbuf",
        "exit"
    );
    for s in steps {
        let drops = s.drops.as_ref().map_or("-".to_string(), |d| {
            if d.is_empty() {
                return "none".to_string();
            }
            d.iter()
                .map(|(k, v)| format!("{k}={v:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        });
        let _ = writeln!(
            t,
            "{:<8} {:>7} {:>8.0} {:>7} {:>6} {:>7.0} {:>6.0} {:>9} {:>8} {:>8} {:>6}  {drops}{}",
            s.kind.name(),
            s.pps,
            s.sent.pps(),
            s.calls,
            s.failed(),
            s.cpu.ms(),
            s.cpu.ms() / 10.0 / s.wall.as_secs_f64(),
            s.uas_invites,
            s.sent.answers,
            s.rcvbuf,
            s.exit.map_or("killed".into(), |c| c.to_string()),
            if s.proxy_alive { "" } else { "  PROXY EXITED" }
        );
    }
    let _ = writeln!(t);
    for &k in &args.proxies {
        let best = steps
            .iter()
            .filter(|s| s.kind == k && s.failed() == 0 && s.exit == Some(0))
            .map(|s| s.pps)
            .max();
        let first_fail = steps
            .iter()
            .filter(|s| s.kind == k && (s.failed() > 0 || s.exit != Some(0)))
            .map(|s| s.pps)
            .min();
        let _ = writeln!(
            t,
            "{}: highest hostile rate with 0 failed honest calls: {}{}",
            k.name(),
            best.map_or("none".to_string(), |b| format!("{b}/s")),
            first_fail.map_or(String::new(), |f| format!(" (first failing step {f}/s)"))
        );
    }
    let _ = write!(
        t,
        "\nhostile: datagrams/s asked from {HOSTILE_IP} ({} source ports; 3 junk INVITEs with \
         fresh Call-IDs per CRLF-CRLF keepalive); sent/s: achieved. calls: honest sipp calls \
         at {}/s from 127.0.0.1 during the {} s flood; failed: without a final answer in 5 s.\n\
         cpu_ms / cpu%: the proxy (all processes, utime+stime) from the start of the step to \
         the end of the honest calls (% of one core). uas_inv: INVITEs the two UAS received \
         (honest + junk let through); answers: SIP answers that came back to the hostile \
         source. rcvbuf: datagrams dropped on full socket buffers (any \
         socket). drops: sipfront_drops_total by reason (Kamailio exports none: pike/htable \
         drop silently). Kamailio: pike density {} requests per 2 s unit, then a 300 s \
         htable ban.\n",
        args.hostile_ports, args.rate, args.step_seconds, args.pike_density
    );
    t
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if !argv.iter().any(|a| a == "--bench") {
        println!(
            "flood bench: not run (needs `cargo bench --bench flood`, sipp and kamailio; \
             about a minute; run it in a fresh network namespace)"
        );
        return;
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("flood bench: {e}");
            std::process::exit(2);
        }
    };
    if args.proxies.is_empty() || args.steps.is_empty() {
        println!("flood bench: nothing to run");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("sipfront-flood-")
        .tempdir()
        .expect("create temp dir");
    eprintln!(
        "flood bench: steps {:?} datagrams/s × {} s, honest {} calls/s, work dir {}",
        args.steps,
        args.step_seconds,
        args.rate,
        dir.path().display()
    );
    let mut steps = Vec::new();
    for &k in &args.proxies {
        for &pps in &args.steps {
            steps.push(run_step(k, pps, &args, dir.path()));
        }
    }
    let t = table(&steps, &args);
    println!("\n{t}");
    if args.keep || steps.iter().any(|s| s.failed() > 0) {
        eprintln!("flood bench: work dir kept at {}", dir.keep().display());
    }
    let out = procs::target_dir().join("flood-bench.txt");
    let header = format!(
        "sipfront flood bench: honest {} calls/s, steps of {} s\n\n",
        args.rate, args.step_seconds
    );
    match std::fs::write(&out, header + &t) {
        Ok(()) => eprintln!("written to {}", out.display()),
        Err(e) => eprintln!("cannot write {}: {e}", out.display()),
    }
}
