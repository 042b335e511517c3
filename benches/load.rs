//! Side-by-side SIP load bench: sipp UAC → PROXY → two sipp UAS, for PROXY in turn
//! sipfront (the real binary), nginx stream UDP, a Kamailio stateless dispatcher and a bare
//! recv/send forwarder (the floor). For each it reports the proxy's CPU time per forwarded
//! datagram and the calls that failed.
//!
//! ```text
//! cargo bench --bench load
//! cargo bench --bench load -- --rate 500 --seconds 10 --modes u1,un --proxies sipfront,bare
//! ```
//!
//! Options: `--rate N` calls/s (500), `--seconds N` (10), `--calls N` (rate × seconds),
//! `--modes u1,un` (both), `--max-socket N` (200), `--proxies LIST` (all four; `sipfront-hep` adds sipfront with HEPv3 capture of both legs to a local UDP sink, `sipfront-hep-tcp` the same over TCP, `sipfront-prefix` sipfront in relay prefix mode on 127.200.0.0/16, `bare-uring` the bare forwarder over io_uring with multishot receives, `bare-unconnected` the bare forwarder with unconnected upstream sockets (any source received, each send naming the backend, as a relay socket must), `bare-scan` the bare forwarder running sipfront's SIP scanner over every datagram, `bare-router` the bare forwarder's loop deciding every datagram with sipfront's router),
//! `--repeat N` (1: rounds over all proxies, then a median/min/max summary), `--keep` (keep
//! the work directory with configs, logs and sipp statistics; it is also kept when a call
//! failed), `--pin` (the proxy on CPU 1, every sipp on CPU 0: where the scheduler puts
//! the proxy otherwise changes its CPU per datagram from run to run).
//!
//! - `u1`: one UAC socket, so one client flow; calls end right after the ACK.
//! - `un`: `-t un -max_socket N`, calls held for `-d` ≥ 1 s so that more calls are up
//!   than sockets and sipp shares its N sockets between them: N client flows, each
//!   carrying many calls. (With short calls sipp would open a new socket, a new flow,
//!   for nearly every call.)
//!
//! CPU is what the proxy used (utime + stime from `/proc/PID/stat`, all threads; for
//! Kamailio its main process and every worker), read just before and after the UAC run,
//! so the other programs on a busy machine do not count. A call through sipp's built-in
//! scenarios is 6 datagrams through the proxy: INVITE, 180, 200, ACK, BYE, 200. The
//! table goes to stdout and to `target/load-bench.txt`.
//!
//! `--sweep` instead finds, per proxy and mode, the highest call rate with under 0.1%
//! failed calls and the UAC on schedule (see `load/sweep.rs`): `--sweep-seconds N` (4) per
//! step, `--sweep-start R` (1000) doubled up to `--sweep-max R` (32000), then
//! `--sweep-bisect N` (3) bisection steps; `--sweep-retry N` (1) runs a failed step again
//! if other programs loaded the CPUs during it. It gives sipp 4 MiB socket buffers
//! (`--sipp-buff BYTES`, 0 for sipp's default of 64 KiB, which overflows at the UAC from
//! about 5000 calls/s). Its table is appended to `target/load-bench.txt`.
//!
//! ```text
//! cargo bench --bench load -- --sweep
//! cargo bench --bench load -- --sweep --proxies bare,sipfront --modes u1 --sweep-seconds 3
//! ```
//!
//! Run without `--bench` (as `cargo test --benches` does) it only prints a note.
//! Ports: proxies and UAS on 127.0.0.1:310xx, sipp media 312xx, sipfront relay ports
//! 24000-24999 and admin 31090.

#[path = "load/args.rs"]
mod args;
#[path = "load/bare.rs"]
mod bare;
#[path = "load/bare_router.rs"]
mod bare_router;
#[path = "load/bare_scan.rs"]
mod bare_scan;
#[path = "load/bare_unconnected.rs"]
mod bare_unconnected;
#[path = "load/bare_uring.rs"]
mod bare_uring;
#[path = "load/procs.rs"]
mod procs;
#[path = "load/proxies.rs"]
mod proxies;
#[path = "load/sipp.rs"]
mod sipp;
#[path = "load/sweep.rs"]
mod sweep;
#[path = "load/watch.rs"]
mod watch;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use args::Args;
use procs::{Cpu, assert_udp_free, udp_rcvbuf_errors};
use proxies::{Kind, Ports, Proxy};
use sipp::Sipp;
use watch::{Drops, HostCpu, SocketDrops, children_cpu_ms};

const PORTS: Ports = Ports {
    listen: 31060,
    uas: [31070, 31071],
    admin: 31090,
    relay_ports: "24000-24999",
};
/// Size of `PORTS.relay_ports`.
const RELAY_PORT_COUNT: u64 = 1000;
const UAC_PORT: u16 = 31080;
const UAC_MEDIA: u16 = 31200;
const UAS_MEDIA: [u16; 2] = [31210, 31220];
/// Datagrams through the proxy per call of sipp's built-in uac/uas scenarios.
const DGRAMS_PER_CALL: u64 = 6;
const IDLE: Duration = Duration::from_secs(1);

/// The bench's working directory (configs, logs, sipp statistics). Removed at the end
/// unless asked to keep it, some call failed, or the bench panics.
struct WorkDir {
    dir: Option<tempfile::TempDir>,
    keep: bool,
}

impl WorkDir {
    fn path(&self) -> &Path {
        self.dir.as_ref().expect("work dir").path()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            if self.keep || std::thread::panicking() {
                eprintln!("load bench: work dir kept at {}", d.keep().display());
            }
        }
    }
}

/// What one proxy did under one load run.
struct Outcome {
    kind: Kind,
    round: u64,
    mode: String,
    rate: u64,
    calls: u64,
    successful: u64,
    /// sipp's exit code (0: every call succeeded), `None` if it had to be killed.
    exit: Option<i32>,
    cpu: Cpu,
    idle: Cpu,
    wall: Duration,
    rss_kb: u64,
    pss_kb: u64,
    proxy_alive: bool,
    uac_retrans: u64,
    /// INVITEs each UAS received.
    uas_calls: [u64; 2],
    uas_retrans: u64,
    /// OPTIONS (sipfront's health probes) the UAS answered, during the whole run.
    probes: u64,
    /// UDP datagrams dropped on full receive buffers during the UAC run (all sockets).
    rcvbuf_errors: u64,
    /// sipfront's own counts: datagrams, drops, flows created.
    sipfront: Option<[f64; 4]>,
    /// sipfront's drops by reason, `reason n, ...` (empty: none).
    sipfront_drops: String,
    /// CPU time of the sipp UAC (it has exited: from `getrusage`), in ms.
    uac_cpu_ms: f64,
    /// CPU time of each UAS during the UAC run.
    uas_cpu: [Cpu; 2],
    /// How busy all the host's CPUs were during the UAC run, 0 to 1, and of that the
    /// share of niced programs (other builds).
    host_busy: f64,
    host_nice: f64,
    /// Calls per second the UAC started (from its statistics).
    achieved_rate: Option<f64>,
    /// Datagrams the sockets of the UAC, the two UAS and the proxy dropped during the UAC
    /// run (only with `--sweep`, which watches the UAC's sockets while it runs).
    drops: Option<Drops>,
}

impl Outcome {
    fn failed(&self) -> u64 {
        self.calls.saturating_sub(self.successful)
    }
    fn datagrams(&self) -> u64 {
        self.successful * DGRAMS_PER_CALL
    }
    fn us_per_dgram(&self) -> Option<f64> {
        (self.datagrams() > 0).then(|| self.cpu.ms() * 1000.0 / self.datagrams() as f64)
    }
    fn sched_us_per_dgram(&self) -> Option<f64> {
        (self.datagrams() > 0).then(|| self.cpu.sched_ms() * 1000.0 / self.datagrams() as f64)
    }
}

/// Where [`run_one`] keeps a run's configs, logs and sipp statistics.
fn run_dir(root: &Path, kind: Kind, mode: &str, round: u64) -> PathBuf {
    root.join(format!("{}-{mode}-{round}", kind.name()))
}

fn run_one(kind: Kind, mode: &str, round: u64, args: &Args, root: &Path) -> Outcome {
    let dir = run_dir(root, kind, mode, round);
    std::fs::create_dir_all(&dir).expect("create run dir");
    for p in [PORTS.listen, PORTS.uas[0], PORTS.uas[1], UAC_PORT] {
        assert_udp_free(p);
    }
    // Declared in this order so the proxy is dropped (killed) first, then the UAS.
    let buff: Vec<String> = args
        .sipp_buff
        .map(|b| vec!["-buff_size".to_string(), b.to_string()])
        .unwrap_or_default();
    let mut uas_a = Sipp::uas(&dir, "uas-a", PORTS.uas[0], UAS_MEDIA[0], &buff);
    let mut uas_b = Sipp::uas(&dir, "uas-b", PORTS.uas[1], UAS_MEDIA[1], &buff);
    let mut proxy = Proxy::start(kind, &dir, &PORTS);

    let c0 = proxy.proc.cpu();
    sleep(IDLE);
    let idle = proxy.proc.cpu() - c0;

    let secs = args.calls.div_ceil(args.rate);
    let mut uac_args: Vec<String> = vec![
        "-sn".into(),
        "uac".into(),
        format!("127.0.0.1:{}", PORTS.listen),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        UAC_PORT.to_string(),
        "-mp".into(),
        UAC_MEDIA.to_string(),
        "-r".into(),
        args.rate.to_string(),
        "-m".into(),
        args.calls.to_string(),
        "-t".into(),
        mode.into(),
        "-recv_timeout".into(),
        "5000".into(),
        "-timeout".into(),
        format!("{}s", secs + 30),
        "-timeout_error".into(),
    ];
    uac_args.extend(buff.iter().cloned());
    let mut hold_ms = 0;
    if mode == "un" {
        // Twice as many calls up as sockets: sockets stay shared, flows stay few.
        hold_ms = (2000 * args.max_socket / args.rate).max(1000);
        uac_args.extend([
            "-max_socket".into(),
            args.max_socket.to_string(),
            "-d".into(),
            hold_ms.to_string(),
        ]);
    }
    let watching = args.sweep.is_some();
    let uas_pids = [uas_a.proc.pid(), uas_b.proc.pid()];
    let drops0 = watching.then(|| {
        [
            SocketDrops::of(&uas_pids),
            SocketDrops::of(&proxy.proc.pids()),
        ]
    });
    let mut uac_drops = SocketDrops::default();
    let uas0 = [uas_a.proc.cpu(), uas_b.proc.cpu()];
    let children0 = children_cpu_ms();
    let host0 = HostCpu::now();
    let rcvbuf0 = udp_rcvbuf_errors();
    let before = proxy.proc.cpu();
    let t0 = Instant::now();
    let mut uac = Sipp::start(&dir, "uac", &uac_args);
    let timeout = Duration::from_secs(secs + 45) + Duration::from_millis(hold_ms);
    let status = if watching {
        uac.wait_looking(timeout, Duration::from_millis(250), |pid| {
            uac_drops.sample(&[pid])
        })
    } else {
        uac.wait(timeout)
    };
    let after = proxy.proc.cpu();
    let wall = t0.elapsed();
    let rcvbuf_errors = udp_rcvbuf_errors().saturating_sub(rcvbuf0);
    let (host_busy, host_nice) = HostCpu::now().since(host0);
    let uac_cpu_ms = children_cpu_ms() - children0;
    let uas_cpu = [uas_a.proc.cpu() - uas0[0], uas_b.proc.cpu() - uas0[1]];
    let drops = drops0.map(|[uas, px]| {
        let px = SocketDrops::of(&proxy.proc.pids()).since(&px);
        Drops {
            uac: uac_drops.total(),
            uas: SocketDrops::of(&uas_pids).since(&uas).total(),
            proxy: px.total(),
            proxy_listen: px.on_port(PORTS.listen),
        }
    });
    let proxy_alive = proxy.proc.try_wait().is_none();
    let (rss_kb, pss_kb) = proxy.proc.memory_kb();
    let stats = uac.stats();
    let (sipfront, sipfront_drops) = match proxy.sipfront_counters() {
        Some((counts, reasons)) => (Some(counts), reasons),
        None => (None, String::new()),
    };
    // The UAS dump their counters every second.
    sleep(Duration::from_millis(1200).saturating_sub(t0.elapsed().saturating_sub(wall)));
    let sa = uas_a.kill();
    let sb = uas_b.kill();
    let o = Outcome {
        kind,
        round,
        mode: mode.to_string(),
        rate: args.rate,
        calls: args.calls,
        successful: stats.successful(),
        exit: status.and_then(|s| s.code()),
        cpu: after - before,
        idle,
        wall,
        rss_kb,
        pss_kb,
        proxy_alive,
        uac_retrans: stats.retransmissions(),
        uas_calls: [uas_a.received("INVITE"), uas_b.received("INVITE")],
        uas_retrans: sa.retransmissions() + sb.retransmissions(),
        probes: uas_a.received("OPTIONS") + uas_b.received("OPTIONS"),
        rcvbuf_errors,
        sipfront,
        sipfront_drops,
        uac_cpu_ms,
        uas_cpu,
        host_busy,
        host_nice,
        achieved_rate: uac.achieved_rate(args.calls),
        drops,
    };
    eprintln!(
        "  {:<9} {mode}: {}/{} calls ok, sipp exit {:?}, cpu {:.0} ms (sched {:.1} ms), \
         UAS a/b {}/{}, {:.1} s{}",
        kind.name(),
        o.successful,
        o.calls,
        o.exit,
        o.cpu.ms(),
        o.cpu.sched_ms(),
        o.uas_calls[0],
        o.uas_calls[1],
        wall.as_secs_f64(),
        if proxy_alive { "" } else { ", PROXY EXITED" }
    );
    if !watching && (o.failed() > 0 || o.exit != Some(0) || stats.failed() > 0) {
        eprintln!(
            "  {} {mode}: sipp FailedCall(C)={} — evidence:\n{}",
            kind.name(),
            stats.failed(),
            uac.evidence()
        );
    }
    drop(proxy);
    o
}

/// Median of `v` (sorted in place); `None` if empty.
fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn fmt_us(u: Option<f64>) -> String {
    u.map_or("-".into(), |u| format!("{u:.2}"))
}

fn table(results: &[Outcome], repeat: u64) -> String {
    let mut t = String::new();
    let round_col = |o: &Outcome| {
        if repeat > 1 {
            format!(" {:>5}", o.round)
        } else {
            String::new()
        }
    };
    let round_head = if repeat > 1 { "  round" } else { "" };
    let _ = writeln!(
        t,
        "{:<9} {:<4} {:>5} {:>6} {:>6} {:>8} {:>8} {:>6} {:>7}{round_head}",
        "proxy", "mode", "rate", "calls", "failed", "cpu_ms", "us/dgram", "x_bare", "rss_kb"
    );
    for o in results {
        let bare = results
            .iter()
            .find(|b| b.kind == Kind::Bare && b.mode == o.mode && b.round == o.round)
            .and_then(Outcome::us_per_dgram);
        let us = o.us_per_dgram();
        let x = match (us, bare) {
            (Some(u), Some(b)) if b > 0.0 => format!("{:.1}", u / b),
            _ => "-".into(),
        };
        let _ = writeln!(
            t,
            "{:<9} {:<4} {:>5} {:>6} {:>6} {:>8.0} {:>8} {:>6} {:>7}{}",
            o.kind.name(),
            o.mode,
            o.rate,
            o.calls,
            o.failed(),
            o.cpu.ms(),
            fmt_us(us),
            x,
            o.rss_kb,
            round_col(o)
        );
    }
    if repeat > 1 {
        let _ = writeln!(
            t,
            "\nover {repeat} rounds (us/dgram from clock ticks):\n{:<9} {:<4} {:>8} {:>8} {:>8} {:>6} {:>6}",
            "proxy", "mode", "median", "min", "max", "x_bare", "failed"
        );
        let mut groups: Vec<(Kind, &str)> = Vec::new();
        for o in results {
            if !groups.contains(&(o.kind, o.mode.as_str())) {
                groups.push((o.kind, o.mode.as_str()));
            }
        }
        let per = |kind: Kind, mode: &str| -> Vec<f64> {
            results
                .iter()
                .filter(|o| o.kind == kind && o.mode == mode)
                .filter_map(Outcome::us_per_dgram)
                .collect()
        };
        for (kind, mode) in groups {
            let mut v = per(kind, mode);
            let med = median(&mut v);
            let bare = median(&mut per(Kind::Bare, mode));
            let x = match (med, bare) {
                (Some(m), Some(b)) if b > 0.0 => format!("{:.1}", m / b),
                _ => "-".into(),
            };
            let failed: u64 = results
                .iter()
                .filter(|o| o.kind == kind && o.mode == mode)
                .map(Outcome::failed)
                .sum();
            let _ = writeln!(
                t,
                "{:<9} {:<4} {:>8} {:>8} {:>8} {:>6} {:>6}",
                kind.name(),
                mode,
                fmt_us(med),
                fmt_us(v.first().copied()),
                fmt_us(v.last().copied()),
                x,
                failed
            );
        }
    }
    let _ = writeln!(
        t,
        "\n{:<9} {:<4} {:>8} {:>9} {:>8} {:>7} {:>7} {:>11} {:>5} {:>6} {:>7} {:>6} {:>5}{round_head}",
        "proxy",
        "mode",
        "dgrams",
        "sched_ms",
        "sched_us",
        "runs/dg",
        "idle_ms",
        "uas_a/b",
        "retr",
        "rcvbuf",
        "pss_kb",
        "exit",
        "wall"
    );
    for o in results {
        let _ = writeln!(
            t,
            "{:<9} {:<4} {:>8} {:>9.1} {:>8} {:>7} {:>7.1} {:>11} {:>5} {:>6} {:>7} {:>6} {:>5.1}{}{}",
            o.kind.name(),
            o.mode,
            o.datagrams(),
            o.cpu.sched_ms(),
            fmt_us(o.sched_us_per_dgram()),
            if o.datagrams() > 0 {
                format!("{:.3}", o.cpu.runs as f64 / o.datagrams() as f64)
            } else {
                "-".into()
            },
            o.idle.sched_ms() / IDLE.as_secs_f64(),
            format!("{}/{}", o.uas_calls[0], o.uas_calls[1]),
            o.uac_retrans + o.uas_retrans,
            o.rcvbuf_errors,
            o.pss_kb,
            o.exit.map_or("killed".into(), |c| c.to_string()),
            o.wall.as_secs_f64(),
            round_col(o),
            if o.proxy_alive { "" } else { "  proxy died" }
        );
    }
    for o in results {
        if let Some([dgrams, drops, flows, hep_dropped]) = o.sipfront {
            let per = if dgrams > 0.0 {
                format!("{:.2}", o.cpu.ms() * 1000.0 / dgrams)
            } else {
                "-".into()
            };
            let _ = writeln!(
                t,
                "{} {}{}: /metrics sipfront_datagrams_total = {dgrams:.0} \
                 (sipp: {} successful calls × {DGRAMS_PER_CALL} = {}), drops {drops:.0}{}, \
                 flows {flows:.0}, us/dgram by /metrics {per}; HEP dropped {hep_dropped:.0}; \
                 health probes answered: {}",
                o.kind.name(),
                o.mode,
                if repeat > 1 {
                    format!(" round {}", o.round)
                } else {
                    String::new()
                },
                o.successful,
                o.datagrams(),
                if o.sipfront_drops.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", o.sipfront_drops)
                },
                o.probes
            );
        }
    }
    t.push_str(
        "\ncpu_ms: utime+stime of the proxy (all threads; Kamailio: all its processes) \
         during the UAC run, in clock ticks.\n\
         us/dgram = cpu / (successful calls × 6); x_bare = us/dgram ÷ bare's in the same mode.\n\
         sched_*: the same from /proc/*/task/*/schedstat (ns). runs/dg: times the proxy's \
         threads were put on a CPU (schedstat), per datagram. idle_ms: CPU per second \
         before the load.\n\
         uas_a/b: INVITEs each UAS received; retr: sipp retransmissions (UAC + UAS); \
         rcvbuf: UDP datagrams dropped on a full socket receive buffer during the run \
         (Udp RcvbufErrors, any socket on the host).\n\
         rss_kb/pss_kb: after the run, summed over processes.\n",
    );
    t
}

fn main() {
    if let Ok(spec) = std::env::var(bare::ENV) {
        bare::run(&spec);
    }
    if let Ok(spec) = std::env::var(bare_unconnected::ENV) {
        bare_unconnected::run(&spec);
    }
    if let Ok(spec) = std::env::var(bare_router::ENV) {
        bare_router::run(&spec);
    }
    if let Ok(spec) = std::env::var(bare_scan::ENV) {
        bare_scan::run(&spec);
    }
    if let Ok(spec) = std::env::var(bare_uring::ENV) {
        bare_uring::run(&spec);
    }
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if !argv.iter().any(|a| a == "--bench") {
        println!(
            "load bench: not run (needs `cargo bench --bench load`; it drives sipp, nginx \
             and kamailio for about two minutes)"
        );
        return;
    }
    let args = match Args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("load bench: {e}");
            std::process::exit(2);
        }
    };
    if args.pin {
        procs::pin_cpus();
        println!("load bench: pinned, the proxy on CPU 1, sipp on CPU 0");
    }
    if args.proxies.is_empty() || args.modes.is_empty() {
        println!("load bench: no proxy matches the filter; nothing to run");
        return;
    }
    let mut root = WorkDir {
        dir: Some(
            tempfile::Builder::new()
                .prefix("sipfront-load-")
                .tempdir()
                .expect("create temp dir"),
        ),
        keep: args.keep,
    };
    if let Some(sw) = &args.sweep {
        let t = sweep::run(&args, sw, root.path());
        println!("\n{t}");
        // Appended: the file keeps the last fixed-rate table above it.
        let out = procs::target_dir().join("load-bench.txt");
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("\n{t}").as_bytes()));
        match r {
            Ok(()) => eprintln!("appended to {}", out.display()),
            Err(e) => eprintln!("cannot write {}: {e}", out.display()),
        }
        return;
    }
    eprintln!(
        "load bench: {} calls at {}/s per proxy, modes {:?} (un: up to {} client sockets), \
         work dir {}",
        args.calls,
        args.rate,
        args.modes,
        args.max_socket,
        root.path().display()
    );
    let mut results = Vec::new();
    for round in 1..=args.repeat {
        for mode in &args.modes {
            for &kind in &args.proxies {
                results.push(run_one(kind, mode, round, &args, root.path()));
            }
        }
    }
    if results.iter().any(|o| o.failed() > 0 || o.exit != Some(0)) {
        root.keep = true;
    }
    let t = table(&results, args.repeat);
    println!("\n{t}");
    let out = procs::target_dir().join("load-bench.txt");
    let header = format!(
        "sipfront load bench: {} calls at {}/s, modes {:?}, max_socket {}, rounds {}\n\n",
        args.calls, args.rate, args.modes, args.max_socket, args.repeat
    );
    match std::fs::write(&out, header + &t) {
        Ok(()) => eprintln!("written to {}", out.display()),
        Err(e) => eprintln!("cannot write {}: {e}", out.display()),
    }
}
