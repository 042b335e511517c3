//! sipp as load generator (`-sn uac`) and as the two backends (`-sn uas`), in the
//! foreground under a [`Proc`] guard, with statistics in a CSV file (`-trace_stat`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::procs::{Proc, tail, wait_udp_bound};

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
        let Some(last) = lines.last() else {
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
    pub fn incoming(&self) -> u64 {
        self.get("IncomingCall(C)")
    }
    pub fn retransmissions(&self) -> u64 {
        self.get("Retransmissions(C)")
    }
}

pub struct Sipp {
    pub proc: Proc,
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
        let proc = Proc::spawn(name, &mut cmd, &dir.join("sipp.log"), false);
        Sipp {
            proc,
            stat_file,
            error_file,
            screen_file,
        }
    }

    /// A built-in UAS on 127.0.0.1:`port`, one socket, media port `mp`; returns once bound.
    pub fn uas(dir: &Path, name: &str, port: u16, mp: u16) -> Sipp {
        let args: Vec<String> = [
            "-sn",
            "uas",
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
        .to_vec();
        let mut s = Sipp::start(dir, name, &args);
        wait_udp_bound(&mut s.proc, port);
        s
    }

    pub fn stats(&self) -> Stats {
        Stats::read(&self.stat_file)
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

    /// Asks sipp to stop (SIGUSR1: no new calls, exit when the current ones end) and
    /// returns its final statistics.
    pub fn stop(&mut self) -> Stats {
        self.proc.signal(libc::SIGUSR1);
        if self.proc.wait_timeout(Duration::from_secs(5)).is_none() {
            self.proc.signal(libc::SIGKILL);
            let _ = self.proc.wait_timeout(Duration::from_secs(2));
        }
        self.stats()
    }

    /// Errors and the final screen, for a report when calls failed.
    pub fn evidence(&self) -> String {
        let errors = fs::read_to_string(&self.error_file).unwrap_or_default();
        let kinds = error_kinds(&errors);
        format!(
            "  {} error lines; kinds: {kinds:?}\n  first errors:\n{}\n  final screen:\n{}",
            errors.lines().count(),
            indent(&errors.lines().take(8).collect::<Vec<_>>().join("\n")),
            indent(&tail(&self.screen_file, 45)),
        )
    }
}

/// Counts sipp error lines by their text with numbers blanked out.
fn error_kinds(errors: &str) -> Vec<(String, usize)> {
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for l in errors.lines().filter(|l| !l.trim().is_empty()) {
        // "2026-01-01 10:00:00.123456 1767261600.123456: Aborting call on ..."
        let msg = l.splitn(2, ": ").nth(1).unwrap_or(l);
        let key: String = msg
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .take(90)
            .collect();
        *kinds.entry(key).or_default() += 1;
    }
    let mut v: Vec<_> = kinds.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1));
    v.truncate(5);
    v
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
