//! Processes of a test: the temporary [`TestDir`], the [`Proc`] guard that kills a program
//! (and, for Kamailio and keepalived, its process group) when dropped and prints its log tail
//! when the test fails, signals, polling and log text.
//!
//! Missing programs fail the test with a message naming the Debian package.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Debian package that provides a program, for the failure message when it is missing.
fn package_of(program: &str) -> &'static str {
    match program {
        "sipp" => "sip-tester",
        "kamailio" | "kamcmd" => "kamailio",
        "tcpdump" => "tcpdump",
        "kill" => "procps",
        _ => "(unknown package)",
    }
}

pub(crate) fn spawn_error(program: &str, e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::NotFound {
        panic!(
            "program `{program}` not found: install the Debian package `{}` \
             (apt-get install -y {}); the integration tests need it",
            package_of(program),
            package_of(program)
        );
    }
    panic!("cannot start `{program}`: {e}");
}

/// Sends a signal by name (`TERM`, `USR1`, `INT`, ...) to one pid, or to a process group when
/// `pid` is negative, through `/usr/bin/kill`. Errors are ignored (the process may be gone).
pub fn send_signal(pid: i64, sig: &str) {
    let target = pid.to_string();
    match Command::new("kill")
        .args([&format!("-{sig}"), "--", &target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) => spawn_error("kill", e),
    }
}

/// A temporary directory for one test: configs, logs, sipp statistics, captures. Removed when
/// the test passes, kept (and its path printed) when it fails. Declare it first in a test so it
/// is dropped last, after the processes that write into it.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("sipfront-{name}-"))
            .tempdir()
            .expect("create temp dir");
        let path = dir.path().to_path_buf();
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(d) = self.dir.take()
        {
            let kept = d.keep();
            eprintln!("test failed: files kept in {}", kept.display());
        }
    }
}

/// A running external process. Dropping it kills it: SIGKILL through `Child::kill`, then
/// `wait`. A process started with [`Proc::spawn_group`] (Kamailio, which forks workers that
/// survive a SIGKILL of the main process) is asked to stop with SIGTERM first, and then its
/// whole process group gets SIGKILL.
pub struct Proc {
    pub name: String,
    pub(crate) child: Child,
    pub(crate) group: bool,
    pub(crate) exited: Option<ExitStatus>,
    /// Files whose tails are printed when the test fails.
    pub(crate) logs: Vec<PathBuf>,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout+stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        Self::start(name, cmd, log, false)
    }

    /// Like [`Proc::spawn`], in a new process group that is killed as a whole on drop.
    pub fn spawn_group(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        cmd.process_group(0);
        Self::start(name, cmd, log, true)
    }

    fn start(name: &str, cmd: &mut Command, log: &Path, group: bool) -> Proc {
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file");
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| spawn_error(&program, e));
        Proc {
            name: name.to_string(),
            child,
            group,
            exited: None,
            logs: vec![log.to_path_buf()],
        }
    }

    /// Also print the tail of `path` if the test fails.
    pub fn add_log(&mut self, path: &Path) {
        self.logs.push(path.to_path_buf());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal by name to the process (not its group).
    pub fn signal(&mut self, sig: &str) {
        if self.is_running() {
            send_signal(self.child.id() as i64, sig);
        }
    }

    /// Last `lines` lines of the process's main log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.logs[0], lines)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.logs[0]).unwrap_or_default()
    }

    /// Panics with the log tail if the process is no longer running.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.try_wait() {
            panic!(
                "{} exited unexpectedly ({st}); log tail:\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }

    pub(crate) fn kill_now(&mut self) {
        let pid = self.child.id() as i64;
        if self.exited.is_none() {
            if self.group {
                // Kamailio's main process stops and reaps its workers on SIGTERM; if that
                // takes too long, SIGKILL the whole group while its leader (not yet reaped)
                // still holds the group id.
                send_signal(pid, "TERM");
                if self.wait_timeout(Duration::from_secs(3)).is_none() {
                    send_signal(-pid, "KILL");
                }
            }
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        if self.group {
            // Workers that outlived their main process (it crashed, or was killed): they
            // keep the group id; kill them one by one.
            for member in group_members(self.child.id()) {
                send_signal(member as i64, "KILL");
            }
        }
    }
}

/// Live (non-zombie) processes whose process group is `pgid`, from `/proc/*/stat`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[0] != "Z" && f[2].parse::<u32>().ok() == Some(pgid)
        })
        .collect()
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
        if std::thread::panicking() {
            for log in &self.logs {
                eprintln!(
                    "----- {} ({}) last lines -----\n{}",
                    self.name,
                    log.display(),
                    tail(log, 40)
                );
            }
        }
    }
}

/// Last `lines` lines of a text file (lossy UTF-8), or a note that it cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            all[from..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// `text` without ANSI escape sequences (tracing colours its log lines).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // parameters and intermediates, then one final byte in '@'..='~'
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Lines of a process's log (colours removed) that contain every one of `needles`.
pub fn log_lines(proc: &Proc, needles: &[&str]) -> Vec<String> {
    strip_ansi(&proc.log_text())
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// Sends a signal to the whole process group of a process started with
/// [`Proc::spawn_group`] (Kamailio and its workers).
pub fn signal_group(proc: &Proc, sig: &str) {
    send_signal(-(proc.pid() as i64), sig);
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes. Returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
}
