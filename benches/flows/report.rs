//! The result table: one row per figure, one column per run (relay address set).

use std::fmt::Write as _;

use crate::latency::Latency;
use crate::{Args, AtRate, Measured, Run, Side};

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
fn rows(m: &Measured) -> Vec<(String, String)> {
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
    if m.load.is_none() {
        v.push(("latency".into(), "not run (no flow)".into()));
    }
    v
}

/// Rows of one rate of a latency phase, one column per proxy.
fn latency_rows(side: &Side, at: &AtRate) -> (Vec<String>, Vec<Vec<String>>) {
    let mut labels: Vec<String> = vec!["proxy".into(), "flows opened".into()];
    let mut cols: Vec<Vec<String>> = side
        .targets
        .iter()
        .map(|(k, opened, _)| vec![k.label().to_string(), opened.clone()])
        .collect();
    for (col, (l, (_, _, idle))) in cols.iter_mut().zip(at.loads.iter().zip(&side.targets)) {
        let quality = |x: &Latency| {
            format!(
                "{} / {} / {} / {}",
                x.lost(),
                x.non_200,
                x.misdelivered,
                x.unstamped
            )
        };
        let mut v: Vec<(String, String)> = vec![
            (
                "requests sent; answered via / direct".into(),
                format!(
                    "{}; {} / {}",
                    l.via.sent,
                    l.via.answered(),
                    l.direct.answered()
                ),
            ),
            ("via lost/non200/misdeliv/unstamped".into(), quality(&l.via)),
            (
                "direct lost/non200/misdeliv/unstamped".into(),
                quality(&l.direct),
            ),
        ];
        for (name, q) in QUANTILES {
            let (a, b) = (l.via.pct_us(q), l.direct.pct_us(q));
            v.push((
                format!("{name} µs via / direct / added"),
                format!("{} / {} / {}", us(a), us(b), added(a, b)),
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
        let dgrams = l.counted() as f64;
        v.push((
            "forwarded dgrams (client count)".into(),
            match l.forwarded {
                Some(f) => format!("{dgrams:.0} (/metrics {f:.0})"),
                None => format!("{dgrams:.0}"),
            },
        ));
        let secs = l.via.elapsed.as_secs_f64();
        let idle_ms_s = idle.sched_ms() / crate::IDLE.as_secs_f64();
        v.push((
            "cpu sched / ticks over via slices".into(),
            format!(
                "{:.1} / {:.0} ms in {secs:.1} s (idle {idle_ms_s:.2} ms/s)",
                l.cpu.sched_ms(),
                l.cpu.ms()
            ),
        ));
        let per = |ms: f64| {
            if dgrams > 0.0 {
                format!("{:.2}", ms * 1e3 / dgrams)
            } else {
                "-".into()
            }
        };
        v.push((
            "cpu µs/dgram sched / ticks".into(),
            format!("{} / {}", per(l.cpu.sched_ms()), per(l.cpu.ms())),
        ));
        v.push((
            "cpu µs/dgram net of idle".into(),
            per((l.cpu.sched_ms() - idle_ms_s * secs).max(0.0)),
        ));
        v.push((
            "VmRSS after (processes)".into(),
            format!("{:.1} MiB ({})", l.rss_kb as f64 / 1024.0, l.procs),
        ));
        for (label, cell) in v {
            place(&mut labels, col, label, cell);
        }
    }
    (labels, cols)
}

fn added(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:+.1}", a - b),
        _ => "-".into(),
    }
}

/// Puts `cell` in `col` at `label`'s row, adding the label if new.
fn place(labels: &mut Vec<String>, col: &mut Vec<String>, label: String, cell: String) {
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

/// Labels down the left, one column per `cols`.
fn grid(t: &mut String, labels: &[String], cols: &[Vec<String>]) {
    let lw = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let cw: Vec<usize> = cols
        .iter()
        .map(|c| c.iter().map(|s| s.chars().count()).max().unwrap_or(1))
        .collect();
    for (i, label) in labels.iter().enumerate() {
        let _ = write!(t, "{label:<lw$}");
        for (c, col) in cols.iter().enumerate() {
            let cell = col.get(i).map_or("-", String::as_str);
            let _ = write!(t, "  {cell:<w$}", w = cw[c]);
        }
        t.truncate(t.trim_end().len());
        t.push('\n');
    }
}

/// The latency tables of one phase, one per rate, and a summary of them.
fn side_tables(t: &mut String, side: &Side, what: &str, args: &Args) {
    for at in &side.rates {
        let _ = writeln!(
            t,
            "\nlatency{what} at {}/s, {} s per path, {} client flows per proxy:\n",
            at.rate, args.seconds, side.flows
        );
        let (labels, cols) = latency_rows(side, at);
        grid(t, &labels, &cols);
        if let Some(l) = at.listed {
            let _ = writeln!(
                t,
                "\nflow listings through this rate (--listing): {} answered ({} rows \
                 the last), {} failed, longest answer {:.1} ms",
                l.answered,
                l.rows,
                l.failed,
                l.longest.as_secs_f64() * 1e3
            );
        }
    }
    let _ = writeln!(
        t,
        "\nsummary{what} (µs; added = via − direct at each percentile):\n"
    );
    let mut labels: Vec<String> = vec!["rate".into(), "proxy".into()];
    for (name, _) in QUANTILES {
        labels.push(format!("added {name}"));
    }
    labels.extend(["via p50 / p99".into(), "direct p50 / p99".into()]);
    labels.extend(["lost".into(), "cpu µs/dgram".into(), "VmRSS MiB".into()]);
    let mut rows: Vec<Vec<String>> = Vec::new();
    for at in &side.rates {
        for (l, (k, _, _)) in at.loads.iter().zip(&side.targets) {
            let mut r = vec![format!("{}/s", at.rate), k.label().to_string()];
            for (_, q) in QUANTILES {
                r.push(added(l.via.pct_us(q), l.direct.pct_us(q)));
            }
            r.push(format!(
                "{} / {}",
                us(l.via.pct_us(0.5)),
                us(l.via.pct_us(0.99))
            ));
            r.push(format!(
                "{} / {}",
                us(l.direct.pct_us(0.5)),
                us(l.direct.pct_us(0.99))
            ));
            r.push(l.via.lost().to_string());
            let d = l.counted();
            r.push(if d > 0 {
                format!("{:.2}", l.cpu.sched_ms() * 1e3 / d as f64)
            } else {
                "-".into()
            });
            r.push(format!("{:.1}", l.rss_kb as f64 / 1024.0));
            rows.push(r);
        }
    }
    // Rows of the summary are proxies: transpose into columns of the same renderer
    // with a header row.
    let w: Vec<usize> = (0..labels.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([labels[i].chars().count()])
                .max()
                .unwrap_or(1)
        })
        .collect();
    for r in std::iter::once(&labels).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(&w)
            .enumerate()
            .map(|(i, (c, &w))| {
                // Numbers right-aligned, names left.
                if i < 2 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        let _ = writeln!(t, "{}", line.join("  ").trim_end());
    }
}

pub fn table(
    runs: &[Run],
    side: Option<&Side>,
    notes: &[String],
    args: &Args,
    stub_answered: [u64; 2],
) -> String {
    let mut labels: Vec<String> = vec!["relay".into(), "status".into()];
    let mut cols: Vec<Vec<String>> = Vec::new();
    for run in runs {
        let relays = match &run.prefix {
            Some(p) => format!("prefix {p}"),
            None => run
                .relays
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        };
        let status = match &run.result {
            Ok(_) => "ok",
            Err(_) => "STOPPED (see below)",
        };
        let mut col = vec![relays, status.to_string()];
        if let Ok(m) = &run.result {
            for (label, cell) in rows(m) {
                place(&mut labels, &mut col, label, cell);
            }
        }
        cols.push(col);
    }
    let rates = args
        .rates
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let proxies = args
        .proxies
        .iter()
        .map(|k| k.label())
        .collect::<Vec<_>>()
        .join(", ");
    let mut t = String::new();
    let _ = writeln!(
        t,
        "sipfront flows bench: {} on {SIP} → stub backends {} {}, relay ports {}-{}; \
         latency: {proxies} (bare on {BARE}, nginx on {NGINX}), OPTIONS at {rates}/s for {} s \
         per path and rate",
        crate::sipfront::bin(),
        crate::BACKENDS[0],
        crate::BACKENDS[1],
        crate::RELAY_PORTS.0,
        crate::RELAY_PORTS.1,
        args.seconds,
        SIP = crate::SIP,
        BARE = crate::BARE,
        NGINX = crate::NGINX,
    );
    for n in notes {
        let _ = writeln!(t, "{n}");
    }
    for run in runs {
        if let Ok(m) = &run.result {
            for c in &m.caps {
                let _ = writeln!(t, "{}: flows capped at {c}", run.label());
            }
            if !m.taken.is_empty() {
                let _ = writeln!(
                    t,
                    "{:?}: relay endpoints held by other sockets before the run: {}",
                    run.label(),
                    crate::port_ranges(&m.taken)
                );
            }
        }
    }
    if !runs.is_empty() {
        let _ = writeln!(t, "\nflows (sipfront):\n");
        grid(&mut t, &labels, &cols);
    }
    for run in runs {
        if let Err(e) = &run.result {
            let _ = writeln!(t, "\nrelay {} stopped: {e}", run.label());
        }
    }
    for run in runs {
        if let Ok(Measured { load: Some(s), .. }) = &run.result {
            let what = if runs.len() > 1 {
                format!(" (sipfront relay {})", run.label())
            } else {
                String::new()
            };
            side_tables(&mut t, s, &what, args);
        }
    }
    if let Some(s) = side {
        side_tables(&mut t, s, "", args);
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
         of the 200; via = client → proxy → backend → proxy → client; direct = client → \
         its home backend (the one that proxy picked for it) → client; all paths in turns \
         of 0.5 s slices; added = via − direct at each percentile. Every proxy carries \
         the same number of flows (sipfront may hold more, from the flows phase).\n\
         flows opened: sessions the bare forwarder and nginx opened, one REGISTER per \
         client sent 256 at a time (retrans: REGISTERs resent after 0.5 s without an \
         answer, such a burst can overflow a proxy's default receive buffer).\n\
         cpu: the proxy's utime+stime (ticks) and schedstat run time, all threads and \
         processes, over its via slices, per datagram forwarded by the client's count \
         (request in+out = 1, reply = 1); idle = its CPU per second holding the flows \
         without traffic (sipfront: health probes, housekeeping).\n",
    );
    t
}
