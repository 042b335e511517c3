//! `--sweep`: the highest call rate each proxy sustains, per mode.
//!
//! A step is one [`run_one`] at a fixed rate for `--sweep-seconds` (calls = rate ×
//! seconds). It passes when under 0.1% of the calls failed, the sipp UAC started calls at
//! 97% or more of the requested rate (from its per-second statistics), sipp ended by
//! itself and the proxy is still alive. The rate doubles from `--sweep-start` until a
//! step fails or `--sweep-max` passes, then `--sweep-bisect` steps halve the interval
//! between the last pass and the first fail. One step per rate, except that a step that
//! failed while programs outside the bench used a quarter of a core or more is run again
//! (`--sweep-retry`, 1): on a shared machine a single bad second can fail a step, so the
//! result is a lower bound that varies between runs.
//!
//! For each failed step the sweep also tells where it broke: datagrams dropped on a full
//! receive buffer at the UAC's, the UAS's or the proxy's own sockets, CPU per second of
//! load of each process (a sipp process or a single-threaded proxy at ~100% of a core
//! cannot go faster) and how busy the host's CPUs were. When sipp is what gave out, the
//! number is the load generator's limit on this machine, not the proxy's; the table says so.
//!
//! When the bare forwarder is among the proxies, it is also run at each other proxy's
//! best rate if its own sweep did not try that rate, so that `x_bare` compares CPU per
//! datagram at the same rate (it falls as the rate rises: more datagrams per wake-up).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::args::{Args, Sweep};
use crate::proxies::Kind;
use crate::{Outcome, fmt_us, run_dir, run_one};

/// Failed calls a passing step may have, as a share of its calls.
const MAX_FAILED: f64 = 0.001;
/// Share of the requested rate the UAC has to reach.
const MIN_ACHIEVED: f64 = 0.97;
/// CPU per second of load (of one core) at which one process counts as saturated: sipp
/// and every proxy here run one thread (Kamailio: one worker plus helpers).
const SATURATED: f64 = 0.9;
/// Host CPUs this busy: everything waits for a CPU.
const HOST_FULL: f64 = 0.95;
/// Other programs (not niced) using this much of a core during a failed step: the step
/// is run again, up to `--sweep-retry` times.
const OTHERS_RETRY: f64 = 0.25;

struct Step {
    o: Outcome,
    pass: bool,
    /// Why it failed (empty if it passed).
    why: Vec<String>,
    /// Run only for `x_bare` at another proxy's best rate.
    fill: bool,
    /// Failed while other programs were busy, and run again (the next step).
    retried: bool,
}

/// One proxy in one mode.
struct Group {
    kind: Kind,
    mode: String,
    /// Indices into the steps: the highest passing rate, the lowest failing one.
    best: Option<usize>,
    first_fail: Option<usize>,
}

/// Rates of the ramp: `start`, doubled while below `max`, then `max`.
fn ramp(sw: &Sweep) -> Vec<u64> {
    let mut v = Vec::new();
    let mut r = sw.start;
    while r < sw.max {
        v.push(r);
        r = r.saturating_mul(2);
    }
    v.push(sw.max);
    v
}

/// The next rate between a pass at `lo` (0: none) and a fail at `hi`, rounded to two
/// significant digits of the interval; `None` when the interval is under 5% of `hi`.
fn midpoint(lo: u64, hi: u64) -> Option<u64> {
    let d = hi.checked_sub(lo)?;
    if d * 20 < hi || d < 20 {
        return None;
    }
    let grain = 10u64.pow(d.ilog10().saturating_sub(1)).max(10);
    let mid = ((lo + hi) / 2 + grain / 2) / grain * grain;
    (mid > lo && mid < hi).then_some(mid)
}

/// Seconds of load the step was meant to have (CPU "per second of load" divides by this,
/// not by the wall time, which also holds the tail of retransmissions and timeouts).
fn load_secs(o: &Outcome) -> f64 {
    (o.calls as f64 / o.rate as f64).max(0.001)
}

/// CPU of the proxy, the UAC and the busier UAS per second of load, in shares of a core.
fn cpu_shares(o: &Outcome) -> [f64; 3] {
    let s = load_secs(o) * 1000.0;
    let uas = o.uas_cpu[0].ms().max(o.uas_cpu[1].ms());
    [o.cpu.ms() / s, o.uac_cpu_ms / s, uas / s]
}

/// CPU that programs other than the bench's (and not niced) used during the run, in
/// cores: the host's busy time less the proxy's, the UAC's and the UAS's.
fn others(o: &Outcome) -> f64 {
    let wall = o.wall.as_secs_f64().max(0.001) * 1000.0;
    let ours = o.cpu.ms() + o.uac_cpu_ms + o.uas_cpu[0].ms() + o.uas_cpu[1].ms();
    ((o.host_busy - o.host_nice) * crate::watch::cpu_count() as f64 - ours / wall).max(0.0)
}

fn judge(o: &Outcome) -> (bool, Vec<String>) {
    let mut why = Vec::new();
    let failed = o.failed() as f64 / o.calls.max(1) as f64;
    if failed >= MAX_FAILED {
        why.push(format!("failed {:.2}%", failed * 100.0));
    }
    if let Some(a) = o
        .achieved_rate
        .filter(|a| *a < MIN_ACHIEVED * o.rate as f64)
    {
        why.push(format!(
            "UAC short: {a:.0}/s = {:.1}%",
            a * 100.0 / o.rate as f64
        ));
    }
    if o.exit.is_none() {
        why.push("UAC killed after its timeout".into());
    }
    if !o.proxy_alive {
        why.push("proxy exited".into());
    }
    (why.is_empty(), why)
}

/// Datagrams dropped during a step, by whose sockets (UAC, both UAS, the proxy and of
/// that its listening socket; sipfront's own drops), and the host-wide RcvbufErrors.
fn drops_text(o: &Outcome) -> String {
    let mut t = String::new();
    if let Some(d) = o.drops {
        let _ = write!(t, "drops uac {}, uas {}, proxy {}", d.uac, d.uas, d.proxy);
        if d.proxy > 0 {
            let _ = write!(t, " (listen {})", d.proxy_listen);
        }
        t.push_str("; ");
    }
    if let Some([_, d, _, _]) = o.sipfront.filter(|s| s[1] > 0.0) {
        let _ = write!(t, "sipfront drops {d:.0} ({}); ", o.sipfront_drops);
    }
    let _ = write!(t, "rcvbuf {}", o.rcvbuf_errors);
    t
}

/// Where a failed step broke, from the evidence.
struct Diagnosis {
    /// What gave out, most telling first: whose sockets dropped most, the UAC behind its
    /// schedule, processes at a full core, a full or shared host.
    signs: Vec<String>,
    /// sipp was at its limit too (the UAC behind schedule, sipp's sockets dropping more
    /// than the proxy's, or a sipp process at a full core): the proxy's own limit may be
    /// higher than the sweep found.
    sipp_limit: bool,
}

fn diagnose(o: &Outcome) -> Diagnosis {
    let d = o.drops.unwrap_or_default();
    let px_d = d.proxy + o.sipfront.map_or(0, |s| s[1] as u64);
    let [px_cpu, uac_cpu, uas_cpu] = cpu_shares(o);
    let behind = o
        .achieved_rate
        .is_some_and(|a| a < MIN_ACHIEVED * o.rate as f64);
    let mut signs = Vec::new();
    if !o.proxy_alive {
        signs.push("proxy exited".to_string());
    }
    let most = px_d.max(d.uac).max(d.uas);
    if most > 0 {
        signs.push(
            if most == px_d {
                "proxy drops"
            } else if most == d.uas {
                "UAS drops"
            } else {
                "UAC drops"
            }
            .to_string(),
        );
    }
    if behind {
        signs.push("UAC behind".into());
    }
    for (who, c) in [("proxy", px_cpu), ("UAC", uac_cpu), ("UAS", uas_cpu)] {
        if c >= SATURATED {
            signs.push(format!("{who} cpu {:.0}%", c * 100.0));
        }
    }
    if o.host_busy >= HOST_FULL {
        signs.push("host full".into());
    }
    let busy = others(o);
    if busy >= OTHERS_RETRY {
        signs.push(format!("others {:.0}%", busy * 100.0));
    }
    Diagnosis {
        signs,
        sipp_limit: behind || d.uac + d.uas > px_d || uac_cpu.max(uas_cpu) >= SATURATED,
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}", x * 100.0)
}

fn fmt_dur(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

struct Runner<'a> {
    args: &'a Args,
    sw: &'a Sweep,
    root: &'a Path,
    steps: Vec<Step>,
    planned: usize,
    t0: Instant,
}

impl Runner<'_> {
    /// Runs `kind` in `mode` at `rate`, again (up to `--sweep-retry` times) when it failed
    /// while other programs used the CPUs; returns the index of the last run.
    fn step(&mut self, kind: Kind, mode: &str, rate: u64, fill: bool) -> usize {
        let mut tries = 0;
        loop {
            let i = self.run(kind, mode, rate, fill);
            let s = &self.steps[i];
            let busy = others(&s.o);
            if s.pass || tries >= self.sw.retry || busy < OTHERS_RETRY {
                return i;
            }
            eprintln!(
                "  other programs used {:.0}% of a core during that step: once more",
                busy * 100.0
            );
            self.steps[i].retried = true;
            tries += 1;
        }
    }

    fn run(&mut self, kind: Kind, mode: &str, rate: u64, fill: bool) -> usize {
        let mut a = self.args.clone();
        a.rate = rate;
        a.calls = rate * self.sw.seconds;
        let n = self.steps.len() + 1;
        eprintln!(
            "sweep step {n} (of at most {}): {} {mode} at {rate}/s{}",
            self.planned,
            kind.name(),
            if fill { " (for x_bare)" } else { "" }
        );
        let o = run_one(kind, mode, n as u64, &a, self.root);
        if !self.args.keep {
            // sipp's error logs of a failed step at 10,000 calls/s run to tens of MB.
            let _ = std::fs::remove_dir_all(run_dir(self.root, kind, mode, n as u64));
        }
        let (pass, why) = judge(&o);
        let [px, uac, uas] = cpu_shares(&o);
        eprintln!(
            "  -> {} [{}]; achieved {}/s; {}; cpu/s proxy {}% uac {}% uas {}%; host {}% \
             (niced {}%, others {}% of a core); {} us/dgram; {} elapsed",
            if pass { "pass" } else { "FAIL" },
            why.join(", "),
            o.achieved_rate.map_or("-".into(), |a| format!("{a:.0}")),
            drops_text(&o),
            pct(px),
            pct(uac),
            pct(uas),
            pct(o.host_busy),
            pct(o.host_nice),
            pct(others(&o)),
            fmt_us(o.us_per_dgram()),
            fmt_dur(self.t0.elapsed())
        );
        self.steps.push(Step {
            o,
            pass,
            why,
            fill,
            retried: false,
        });
        self.steps.len() - 1
    }

    fn group(&mut self, kind: Kind, mode: &str) -> Group {
        let mut best = None;
        let mut first_fail = None;
        for rate in ramp(self.sw) {
            let i = self.step(kind, mode, rate, false);
            if self.steps[i].pass {
                best = Some(i);
            } else {
                first_fail = Some(i);
                break;
            }
        }
        if let Some(mut hi) = first_fail {
            for _ in 0..self.sw.bisect {
                let lo_rate = best.map_or(0, |i| self.steps[i].o.rate);
                let Some(mid) = midpoint(lo_rate, self.steps[hi].o.rate) else {
                    break;
                };
                let i = self.step(kind, mode, mid, false);
                if self.steps[i].pass {
                    best = Some(i);
                } else {
                    hi = i;
                }
            }
            first_fail = Some(hi);
        }
        Group {
            kind,
            mode: mode.to_string(),
            best,
            first_fail,
        }
    }

    /// The bare forwarder's step in `mode` at `rate`, if one ran.
    fn bare_at(&self, mode: &str, rate: u64) -> Option<&Step> {
        self.steps
            .iter()
            .rfind(|s| s.o.kind == Kind::Bare && s.o.mode == mode && s.o.rate == rate && !s.retried)
    }
}

/// Runs the sweep over the selected proxies and modes; returns the table.
pub fn run(args: &Args, sw: &Sweep, root: &Path) -> String {
    let with_bare = args.proxies.contains(&Kind::Bare);
    let per_group = ramp(sw).len() + sw.bisect as usize;
    let groups_n = args.proxies.len() * args.modes.len();
    let fills = if with_bare {
        (args.proxies.len() - 1) * args.modes.len()
    } else {
        0
    };
    // Each proxy×mode fails at most bisect + 1 steps, and so do the bare runs for x_bare;
    // each failure may be run again `retry` times.
    let retries = (groups_n * (sw.bisect as usize + 1) + fills) * sw.retry as usize;
    let planned = groups_n * per_group + fills + retries;
    // A step is its load, about 5 s to start and stop the programs, 1 s more of held
    // calls in `un`; a failing one also waits out sipp's 5 s receive timeout, and each
    // proxy×mode has at most bisect + 1 failing steps.
    let un = u64::from(args.modes.iter().any(|m| m == "un"));
    let bound_s =
        planned as u64 * (sw.seconds + 5 + un) + groups_n as u64 * (u64::from(sw.bisect) + 1) * 6;
    eprintln!(
        "load bench sweep: rates {:?} then up to {} bisection steps, {} s per step, modes \
         {:?}, proxies {:?}, sipp -buff_size {}: at most {planned} steps ({groups_n} \
         proxy×mode × {per_group}{}{}), under about {} min; work dir {}",
        ramp(sw),
        sw.bisect,
        sw.seconds,
        args.modes,
        args.proxies.iter().map(|k| k.name()).collect::<Vec<_>>(),
        args.sipp_buff
            .map_or("(sipp's default)".into(), |b| b.to_string()),
        if fills > 0 {
            format!(" + {fills} bare runs for x_bare")
        } else {
            String::new()
        },
        if retries > 0 {
            format!(" + {retries} failed steps run again if others loaded the CPUs")
        } else {
            String::new()
        },
        bound_s.div_ceil(60),
        root.display()
    );
    let mut r = Runner {
        args,
        sw,
        root,
        steps: Vec::new(),
        planned,
        t0: Instant::now(),
    };
    let mut groups = Vec::new();
    for mode in &args.modes {
        let first = groups.len();
        for &kind in &args.proxies {
            groups.push(r.group(kind, mode));
        }
        if with_bare {
            let mut want: Vec<u64> = groups[first..]
                .iter()
                .filter(|g| g.kind != Kind::Bare)
                .filter_map(|g| g.best.map(|i| r.steps[i].o.rate))
                .collect();
            want.sort_unstable();
            want.dedup();
            for rate in want {
                if r.bare_at(mode, rate).is_none() {
                    r.step(Kind::Bare, mode, rate, true);
                }
            }
        }
    }
    let took = r.t0.elapsed();
    table(&r, &groups, took)
}

fn table(r: &Runner, groups: &[Group], took: Duration) -> String {
    let (args, sw) = (r.args, r.sw);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "sipfront load bench sweep: max sustained call rate per proxy, {} s per step, pass = \
         failed calls < {}% and UAC ≥ {:.0}% of the requested rate; ramp {:?}, {} bisection \
         steps, failed steps run again {} time(s) if other programs were busy; max_socket {}; \
         sipp -buff_size {}\n",
        sw.seconds,
        MAX_FAILED * 100.0,
        MIN_ACHIEVED * 100.0,
        ramp(sw),
        sw.bisect,
        sw.retry,
        args.max_socket,
        args.sipp_buff.map_or("default".into(), |b| b.to_string()),
    );
    let _ = writeln!(
        t,
        "{:<9} {:<4} {:>7} {:>8} {:>6} {:>7} {:>10} {:>10}  at first_fail",
        "proxy", "mode", "max_ok", "us/dgram", "x_bare", "rss_kb", "first_fail", "sipp_limit"
    );
    let mut generator_bound = Vec::new();
    for g in groups {
        let best = g.best.map(|i| &r.steps[i]);
        let fail = g.first_fail.map(|i| &r.steps[i]);
        let us = best.and_then(|s| s.o.us_per_dgram());
        let x = best
            .and_then(|s| {
                let b = r.bare_at(&g.mode, s.o.rate)?;
                let (u, bu) = (us?, b.o.us_per_dgram()?);
                (bu > 0.0).then(|| format!("{:.1}{}", u / bu, if b.pass { "" } else { "?" }))
            })
            .unwrap_or_else(|| "-".into());
        let (sipp_limit, why) = match fail {
            Some(s) => {
                let d = diagnose(&s.o);
                if d.sipp_limit {
                    generator_bound.push(format!("{} {}", g.kind.name(), g.mode));
                }
                let why = format!(
                    "{}; {}; {}",
                    s.why.join(", "),
                    drops_text(&s.o),
                    d.signs.join(", ")
                );
                (if d.sipp_limit { "yes" } else { "no" }, why)
            }
            None => ("-", format!("none failed up to {}/s", sw.max)),
        };
        let _ = writeln!(
            t,
            "{:<9} {:<4} {:>7} {:>8} {:>6} {:>7} {:>10} {:>10}  {}",
            g.kind.name(),
            g.mode,
            best.map_or("-".into(), |s| s.o.rate.to_string()),
            fmt_us(us),
            x,
            best.map_or("-".into(), |s| s.o.rss_kb.to_string()),
            fail.map_or("-".into(), |s| s.o.rate.to_string()),
            sipp_limit,
            why.trim_end_matches("; ")
        );
    }
    let _ = writeln!(
        t,
        "\nall steps (cpu: % of one core per second of load; host: % of all {} CPUs busy, \
         nice: of that niced programs; other: CPU of other programs, % of one core):\n\
         {:<9} {:<4} {:>6} {:>7} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>5} {:>5} {:>5} \
         {:>5} {:>5} {:>5} {:>8}  result",
        crate::watch::cpu_count(),
        "proxy",
        "mode",
        "rate",
        "calls",
        "failed%",
        "achieved",
        "rcvbuf",
        "d_uac",
        "d_uas",
        "d_proxy",
        "(listen)",
        "proxy",
        "uac",
        "uas",
        "host",
        "nice",
        "other",
        "us/dgram"
    );
    for s in &r.steps {
        let o = &s.o;
        let [px, uac, uas] = cpu_shares(o);
        let d = o.drops.unwrap_or_default();
        let _ = writeln!(
            t,
            "{:<9} {:<4} {:>6} {:>7} {:>8.3} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>5} {:>5} \
             {:>5} {:>5} {:>5} {:>5} {:>8}  {}{}{}",
            o.kind.name(),
            o.mode,
            o.rate,
            o.calls,
            o.failed() as f64 * 100.0 / o.calls.max(1) as f64,
            o.achieved_rate.map_or("-".into(), |a| format!("{a:.0}")),
            o.rcvbuf_errors,
            d.uac,
            d.uas,
            d.proxy,
            d.proxy_listen,
            pct(px),
            pct(uac),
            pct(uas),
            pct(o.host_busy),
            pct(o.host_nice),
            pct(others(o)),
            fmt_us(o.us_per_dgram()),
            if s.pass {
                "pass".to_string()
            } else {
                let d = diagnose(o);
                format!(
                    "FAIL: {}{}",
                    d.signs.join(", "),
                    if d.sipp_limit { " [sipp limit]" } else { "" }
                )
            },
            if s.retried { ", run again" } else { "" },
            if s.fill { " [for x_bare]" } else { "" }
        );
    }
    let _ = writeln!(
        t,
        "\nsweep took {}, {} steps (planned at most {}).",
        fmt_dur(took),
        r.steps.len(),
        r.planned
    );
    t.push_str(
        "max_ok: highest rate that passed; us/dgram: the proxy's CPU per datagram there; \
         x_bare: ÷ the bare forwarder's at the same rate and mode (`?`: bare failed that \
         step). first_fail: lowest rate that failed; what happened there: failed calls, \
         the UAC's shortfall, datagrams dropped on full receive buffers by whose sockets \
         (from /proc/net/udp: the UAC's, both UAS', the proxy's and of that its listening \
         socket; rcvbuf: the host-wide RcvbufErrors, which other programs add to), then \
         processes at ≥ 90% of a core, `host full` (all CPUs ≥ 95% busy), `others` (CPU \
         of programs outside the bench, % of a core; a step failing with others ≥ 25% is \
         run again, `--sweep-retry`). sipp_limit: the UAC fell behind, sipp's sockets \
         dropped more than the proxy's, or a sipp process ran at ≥ 90% of a core: the \
         load generator was at its limit too.\n",
    );
    if !generator_bound.is_empty() {
        let _ = writeln!(
            t,
            "NOTE: for {} sipp was at its limit at first_fail, so max_ok there is (also) a \
             limit of the load generator on this {}-CPU machine, not of the proxy alone.",
            generator_bound.join(", "),
            crate::watch::cpu_count()
        );
    }
    t
}
