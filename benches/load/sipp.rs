//! sipp as load generator (`-sn uac`) and as the two backends (sipp's built-in UAS that
//! also answers OPTIONS, `uas.xml`), in the foreground under a [`Proc`] guard, with
//! statistics in CSV files (`-trace_stat`, `-trace_counts`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::procs::{Proc, tail, wait_udp_bound};

/// sipp's built-in UAS plus an answer to OPTIONS (sipfront's health probes).
const UAS_XML: &str = include_str!("uas.xml");

/// The last row of a sipp `-trace_stat` CSV (`;`-separated, header in the first line).
#[derive(Debug, Clone, Default)]
pub struct Stats(HashMap<String, String>);

impl Stats {
    pub fn read(path: &Path) -> Stats {
        let text = fs::read_to_string(path).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            return Stats::default();
        };
        let Some(last) = lines.next_back() else {
            return Stats::default();
        };
        Stats(
            header
                .split(';')
                .zip(last.split(';'))
                .map(|(h, v)| (h.trim().to_string(), v.trim().to_string()))
                .collect(),
        )
    }

    /// Every row of a `-trace_stat` CSV, oldest first.
    pub fn rows(path: &Path) -> Vec<Stats> {
        let text = fs::read_to_string(path).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            return Vec::new();
        };
        let header: Vec<String> = header.split(';').map(|h| h.trim().to_string()).collect();
        lines
            .map(|l| {
                Stats(
                    header
                        .iter()
                        .cloned()
                        .zip(l.split(';').map(|v| v.trim().to_string()))
                        .collect(),
                )
            })
            .collect()
    }

    /// A time column (`2026-01-01<TAB>10:00:00.123456<TAB>1767261600.123456`) as Unix
    /// seconds.
    pub fn time(&self, column: &str) -> Option<f64> {
        self.0.get(column)?.split_whitespace().last()?.parse().ok()
    }

    /// Seconds from sipp's start to this row.
    pub fn elapsed(&self) -> Option<f64> {
        Some(self.time("CurrentTime")? - self.time("StartTime")?)
    }

    /// A cumulative counter, e.g. `SuccessfulCall(C)`; 0 if absent.
    pub fn get(&self, column: &str) -> u64 {
        self.0.get(column).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    pub fn successful(&self) -> u64 {
        self.get("SuccessfulCall(C)")
    }
    pub fn failed(&self) -> u64 {
        self.get("FailedCall(C)")
    }
    pub fn retransmissions(&self) -> u64 {
        self.get("Retransmissions(C)")
    }
}

pub struct Sipp {
    pub proc: Proc,
    dir: PathBuf,
    stat_file: PathBuf,
    error_file: PathBuf,
    screen_file: PathBuf,
}

impl Sipp {
    /// Starts sipp with `args`, writing statistics every second, errors and (at exit) the
    /// final screen to files in `dir/name/`.
    pub fn start(dir: &Path, name: &str, args: &[String]) -> Sipp {
        let dir = dir.join(name);
        fs::create_dir_all(&dir).expect("create sipp dir");
        let stat_file = dir.join("stats.csv");
        let error_file = dir.join("errors.log");
        let screen_file = dir.join("screen.log");
        let mut cmd = Command::new("sipp");
        cmd.current_dir(&dir)
            .args(args)
            .args(["-nostdin", "-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat_file)
            .args(["-trace_err", "-error_file"])
            .arg(&error_file)
            .args(["-trace_screen", "-screen_file"])
            .arg(&screen_file);
        let proc = Proc::spawn_load(name, &mut cmd, &dir.join("sipp.log"));
        Sipp {
            proc,
            dir,
            stat_file,
            error_file,
            screen_file,
        }
    }

    /// A UAS on 127.0.0.1:`port`, one socket, media port `mp`, counting messages by type
    /// (`-trace_counts`), with `extra` arguments; returns once bound.
    pub fn uas(dir: &Path, name: &str, port: u16, mp: u16, extra: &[String]) -> Sipp {
        let xml = dir.join("uas.xml");
        fs::write(&xml, UAS_XML).expect("write uas.xml");
        let args: Vec<String> = [
            "-sf",
            &xml.display().to_string(),
            "-trace_counts",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mp",
            &mp.to_string(),
            "-t",
            "u1",
        ]
        .map(String::from)
        .into_iter()
        .chain(extra.iter().cloned())
        .collect();
        let mut s = Sipp::start(dir, name, &args);
        wait_udp_bound(&mut s.proc, port);
        s
    }

    pub fn stats(&self) -> Stats {
        Stats::read(&self.stat_file)
    }

    /// Message counts (`-trace_counts`, a file sipp names `SCENARIO_PID_counts.csv`).
    /// `received("INVITE")` is the number of INVITEs the scenario took in.
    pub fn received(&self, method: &str) -> u64 {
        let suffix = format!("_{method}_Recv");
        let Some(file) = fs::read_dir(&self.dir).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with("_counts.csv"))
        }) else {
            return 0;
        };
        let counts = Stats::read(&file);
        counts
            .0
            .iter()
            .filter(|(k, _)| k.ends_with(&suffix))
            .filter_map(|(_, v)| v.parse::<u64>().ok())
            .sum()
    }

    /// Calls per second the UAC started (see [`achieved_rate`]) on its way to `calls`.
    pub fn achieved_rate(&self, calls: u64) -> Option<f64> {
        achieved_rate(&Stats::rows(&self.stat_file), calls)
    }

    /// Like [`Sipp::wait`], calling `look` with sipp's pid every `every` while it runs.
    pub fn wait_looking(
        &mut self,
        timeout: Duration,
        every: Duration,
        mut look: impl FnMut(u32),
    ) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some(st) = self.proc.wait_timeout(every.min(left)) {
                return Some(st);
            }
            if left.is_zero() {
                return self.wait(Duration::ZERO);
            }
            look(self.proc.pid());
        }
    }

    /// Waits for sipp to end by itself; `None` (and sipp killed) after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let st = self.proc.wait_timeout(timeout);
        if st.is_none() {
            self.proc.signal(libc::SIGKILL);
            let _ = self.proc.wait_timeout(Duration::from_secs(2));
        }
        st
    }

    /// Stops sipp (SIGTERM, then SIGKILL) and returns its statistics as last dumped. sipp
    /// dumps them every second (`-fd 1`): wait a second after the traffic before calling
    /// this. (SIGUSR1 would let it end its calls, and the UAS holds each call 4 s after
    /// the BYE in case it is retransmitted.)
    pub fn kill(&mut self) -> Stats {
        self.proc.signal(libc::SIGTERM);
        if self.proc.wait_timeout(Duration::from_secs(1)).is_none() {
            self.proc.signal(libc::SIGKILL);
            let _ = self.proc.wait_timeout(Duration::from_secs(2));
        }
        self.stats()
    }

    /// Errors and the final screen, for a report when calls failed.
    pub fn evidence(&self) -> String {
        let errors = split_entries(&fs::read_to_string(&self.error_file).unwrap_or_default());
        let kinds = error_kinds(&errors);
        let first: Vec<String> = errors
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(6)
            .map(|l| l.chars().take(200).collect())
            .collect();
        format!(
            "  {} errors; most common: {kinds:?}\n  first errors:\n{}\n  final screen (tail):\n{}",
            errors.lines().filter(|l| !l.trim().is_empty()).count(),
            indent(&first.join("\n")),
            indent(&tail(&self.screen_file, 30)),
        )
    }
}

/// The rate at which a UAC started calls on its way to `calls`, from its per-second
/// statistics: calls created ÷ time since the start, at the last dump before all were
/// created (sipp catches up on its schedule when it falls behind, so this is the rate it
/// sustained). Runs that created every call within the first dump give a lower bound:
/// `calls` ÷ the time of that dump. `None` without rows.
pub fn achieved_rate(rows: &[Stats], calls: u64) -> Option<f64> {
    let created = |r: &Stats| r.get("TotalCallCreated");
    let during = rows
        .iter()
        .rfind(|r| created(r) < calls && r.elapsed().is_some_and(|e| e >= 0.9));
    let row = during.or_else(|| rows.iter().find(|r| created(r) >= calls))?;
    let e = row.elapsed().filter(|e| *e > 0.0)?;
    Some(created(row) as f64 / e)
}

/// sipp writes its error entries (`2026-01-01<TAB>10:00:00.123456<TAB>...: text`) without
/// line breaks between them: put each on a line of its own.
fn split_entries(text: &str) -> String {
    let b = text.as_bytes();
    let is_date = |i: usize| {
        b.len() >= i + 11
            && b[i..i + 10].iter().enumerate().all(|(k, c)| {
                if k == 4 || k == 7 {
                    *c == b'-'
                } else {
                    c.is_ascii_digit()
                }
            })
            && b[i + 10] == b'\t'
    };
    let mut out = String::with_capacity(text.len() + 64);
    for (i, c) in text.char_indices() {
        if i > 0 && is_date(i) && !text[..i].ends_with('\n') {
            out.push('\n');
        }
        out.push(c);
    }
    out
}

/// Counts sipp error lines by their text with numbers blanked out.
fn error_kinds(errors: &str) -> Vec<(String, usize)> {
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for l in errors.lines().filter(|l| !l.trim().is_empty()) {
        // "2026-01-01<TAB>10:00:00.123456<TAB>1767261600.123456: Aborting call on ..."
        let msg = l.split_once(": ").map_or(l, |(_, m)| m);
        let key: String = msg
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .take(120)
            .collect();
        *kinds.entry(key).or_default() += 1;
    }
    let mut v: Vec<_> = kinds.into_iter().collect();
    v.sort_by_key(|k| std::cmp::Reverse(k.1));
    v.truncate(5);
    v
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
