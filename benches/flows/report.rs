//! The result table: one row per figure, one column per run (relay address set).

use std::fmt::Write as _;

use crate::{Args, Measured, Run};

const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

fn per_flow_kib(kb: (u64, u64), flows: usize) -> String {
    if flows == 0 {
        return "-".into();
    }
    format!("{:.2} KiB", (kb.1 as f64 - kb.0 as f64) / flows as f64)
}

fn mib(kb: (u64, u64)) -> String {
    format!(
        "{:.1} → {:.1} MiB",
        kb.0 as f64 / 1024.0,
        kb.1 as f64 / 1024.0
    )
}

fn us(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// Label and cell of each row of a run that completed.
fn rows(m: &Measured, args: &Args) -> Vec<(String, String)> {
    let r = &m.reg;
    let mut v: Vec<(String, String)> = vec![
        ("relay endpoints".into(), m.relay_capacity.to_string()),
        ("held by other sockets".into(), m.taken.len().to_string()),
        (
            "flows asked → tried".into(),
            format!("{} → {}", m.wanted, r.wanted),
        ),
        ("flows registered".into(), format!("{}/{}", r.ok, r.wanted)),
        (
            "failed / retrans / misdeliv".into(),
            format!("{} / {} / {}", r.failed, r.retransmits, r.misdelivered),
        ),
        (
            "register time".into(),
            format!(
                "{:.2} s ({:.0}/s)",
                r.elapsed.as_secs_f64(),
                r.ok as f64 / r.elapsed.as_secs_f64().max(1e-9)
            ),
        ),
        ("sipfront_flows".into(), format!("{:.0}", m.counters[0])),
        ("relay ports in use".into(), format!("{:.0}", m.counters[1])),
        ("sipfront drops".into(), format!("{:.0}", m.counters[2])),
        ("sipfront open fds".into(), m.fds.to_string()),
        (
            "home backend a / b".into(),
            format!(
                "{} / {}",
                r.home.iter().filter(|&&h| h == 0).count(),
                r.home.iter().filter(|&&h| h == 1).count()
            ),
        ),
        ("sipfront VmRSS".into(), mib(m.rss_kb)),
        ("RSS per flow".into(), per_flow_kib(m.rss_kb, r.ok)),
        ("host Slab".into(), mib(m.slab_kb)),
        ("slab per flow".into(), per_flow_kib(m.slab_kb, r.ok)),
    ];
    let Some(l) = &m.load else {
        v.push(("latency".into(), "not run (no flow)".into()));
        return v;
    };
    v.push((
        "requests via / direct".into(),
        format!(
            "{} sent at {}/s; answered {} / {}",
            l.via.sent,
            args.rate,
            l.via.answered(),
            l.direct.answered()
        ),
    ));
    let quality = |x: &crate::latency::Latency| {
        format!(
            "{} / {} / {} / {}",
            x.lost(),
            x.non_200,
            x.misdelivered,
            x.unstamped
        )
    };
    v.push(("via lost/non200/misdeliv/unstamped".into(), quality(&l.via)));
    v.push((
        "direct lost/non200/misdeliv/unstamped".into(),
        quality(&l.direct),
    ));
    for (name, q) in QUANTILES {
        let (a, b) = (l.via.pct_us(q), l.direct.pct_us(q));
        let added = match (a, b) {
            (Some(a), Some(b)) => format!("{:+.1}", a - b),
            _ => "-".into(),
        };
        v.push((
            format!("{name} µs via / direct / added"),
            format!("{} / {} / {added}", us(a), us(b)),
        ));
    }
    v.push((
        "late sends >1ms via / direct".into(),
        format!(
            "{} / {} (max {:.1} / {:.1} ms)",
            l.via.late_sends,
            l.direct.late_sends,
            l.via.max_late.as_secs_f64() * 1e3,
            l.direct.max_late.as_secs_f64() * 1e3
        ),
    ));
    let counted = 2 * l.via.answered() + l.via.lost();
    v.push((
        "forwarded dgrams".into(),
        format!("{:.0} (/metrics; ≤{counted} by the client)", l.forwarded),
    ));
    let dgrams = if l.forwarded > 0.0 {
        l.forwarded
    } else {
        counted as f64
    };
    let secs = l.via.elapsed.as_secs_f64();
    let idle_ms_s = l.idle.sched_ms() / crate::IDLE.as_secs_f64();
    v.push((
        "sipfront cpu sched / ticks".into(),
        format!(
            "{:.1} / {:.0} ms in {secs:.1} s (idle {idle_ms_s:.2} ms/s)",
            l.cpu.sched_ms(),
            l.cpu.tick_ms()
        ),
    ));
    let per = |ms: f64| format!("{:.2}", ms * 1e3 / dgrams);
    v.push((
        "cpu µs/dgram sched / ticks".into(),
        format!("{} / {}", per(l.cpu.sched_ms()), per(l.cpu.tick_ms())),
    ));
    v.push((
        "cpu µs/dgram net of idle".into(),
        per((l.cpu.sched_ms() - idle_ms_s * secs).max(0.0)),
    ));
    v
}

pub fn table(runs: &[Run], args: &Args, stub_answered: [u64; 2]) -> String {
    let mut labels: Vec<String> = vec!["relay".into(), "status".into()];
    let mut cols: Vec<Vec<String>> = Vec::new();
    for run in runs {
        let relays = run
            .relays
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let status = match &run.result {
            Ok(_) => "ok",
            Err(_) => "STOPPED (see below)",
        };
        let mut col = vec![relays, status.to_string()];
        if let Ok(m) = &run.result {
            for (label, cell) in rows(m, args) {
                let at = match labels.iter().position(|l| *l == label) {
                    Some(p) => p,
                    None => {
                        labels.push(label);
                        labels.len() - 1
                    }
                };
                col.resize(col.len().max(at + 1), "-".into());
                col[at] = cell;
            }
        }
        cols.push(col);
    }
    let lw = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let cw: Vec<usize> = cols
        .iter()
        .map(|c| c.iter().map(|s| s.chars().count()).max().unwrap_or(1))
        .collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "sipfront flows bench: {} on {SIP} → stub backends {} {}, relay ports {}-{}, \
         latency: OPTIONS at {}/s for {} s per path",
        crate::sipfront::BIN,
        crate::BACKENDS[0],
        crate::BACKENDS[1],
        crate::RELAY_PORTS.0,
        crate::RELAY_PORTS.1,
        args.rate,
        args.seconds,
        SIP = crate::SIP,
    );
    for run in runs {
        if let Ok(m) = &run.result {
            for c in &m.caps {
                let _ = writeln!(t, "{:?}: flows capped at {c}", run.relays);
            }
            if !m.taken.is_empty() {
                let _ = writeln!(
                    t,
                    "{:?}: relay endpoints held by other sockets before the run: {}",
                    run.relays,
                    crate::port_ranges(&m.taken)
                );
            }
        }
    }
    t.push('\n');
    for (i, label) in labels.iter().enumerate() {
        let _ = write!(t, "{label:<lw$}");
        for (c, col) in cols.iter().enumerate() {
            let cell = col.get(i).map_or("-", String::as_str);
            let _ = write!(t, "  {cell:<w$}", w = cw[c]);
        }
        t.truncate(t.trim_end().len());
        t.push('\n');
    }
    for run in runs {
        if let Err(e) = &run.result {
            let _ = writeln!(t, "\nrelay {:?} stopped: {e}", run.relays);
        }
    }
    let _ = writeln!(
        t,
        "\nstub backends answered {} / {} requests in all (REGISTER, OPTIONS, sipfront's probes)",
        stub_answered[0], stub_answered[1]
    );
    t.push_str(
        "\nRSS per flow: sipfront's VmRSS growth over the flows phase / flows registered. \
         slab per flow: /proc/meminfo Slab growth over the same time, host-wide (sockets, \
         inodes, dentries, epoll items; other programs on the host add noise).\n\
         latency: from just before sendmsg to the kernel's receive stamp (SO_TIMESTAMPNS) \
         of the 200; via = client → sipfront → backend → sipfront → client; direct = \
         client → its home backend → client, in alternating 0.5 s slices; added = via − direct \
         at each percentile.\n\
         cpu: sipfront's utime+stime (ticks) and schedstat run time over the via slices, per \
         datagram it forwarded (request in+out = 1, reply = 1); idle = its CPU per second \
         holding the flows without traffic (health probes, housekeeping).\n",
    );
    t
}
