//! Child processes of the load bench and what `/proc` says about them: a guard that kills
//! what it started (by pid, also on panic), CPU time and memory of a process and its
//! descendants, and readiness checks that do not disturb the program being watched.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// What a started program is, for `--pin`: the proxy runs on CPU 1, the load (sipp) on
/// CPU 0, so the scheduler cannot move the proxy between the two or stack it on a sipp.
#[derive(Debug, Clone, Copy)]
enum Role {
    Proxy,
    Load,
}

static PIN: AtomicBool = AtomicBool::new(false);

/// From here on, programs are started pinned to their role's CPU.
pub fn pin_cpus() {
    PIN.store(true, Ordering::Relaxed);
}

/// A started program. Dropping it kills it (and, with `family`, the processes it forked).
pub struct Proc {
    pub name: String,
    child: Child,
    /// Count and kill the descendants too (Kamailio's workers).
    family: bool,
    exited: Option<ExitStatus>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd`, the program under test (on the proxy's CPU with `--pin`), with stdin
    /// closed and stdout+stderr in `log`. The child gets SIGTERM if the bench dies
    /// without running its destructors (`PR_SET_PDEATHSIG`).
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path, family: bool) -> Proc {
        Self::start(name, cmd, log, family, Role::Proxy)
    }

    /// [`Proc::spawn`] for the load (sipp: the load's CPU with `--pin`).
    pub fn spawn_load(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        Self::start(name, cmd, log, false, Role::Load)
    }

    fn start(name: &str, cmd: &mut Command, log: &Path, family: bool, role: Role) -> Proc {
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file");
        let program = cmd.get_program().to_string_lossy().into_owned();
        let cpu = PIN.load(Ordering::Relaxed).then_some(match role {
            Role::Proxy => 1,
            Role::Load => 0,
        });
        // SAFETY: prctl and sched_setaffinity are async-signal-safe system calls, the CPU
        // set a local value; nothing else runs between fork and exec. Threads and
        // processes the program starts inherit the affinity.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if let Some(cpu) = cpu {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{program}`: {e} (the load bench needs sipp from sip-tester, \
                     kamailio, nginx with libnginx-mod-stream)"
                )
            });
        Proc {
            name: name.to_string(),
            child,
            family,
            exited: None,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
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

    /// Sends `sig` to this process only, if it still runs.
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.try_wait().is_none() {
            // SAFETY: plain kill(2) on the pid of our own unreaped child.
            unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        }
    }

    /// Panics with the log tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(st) = self.try_wait() {
            panic!(
                "{} exited unexpectedly ({st}); log tail:\n{}",
                self.name,
                tail(&self.log, 30)
            );
        }
    }

    /// The process, and its descendants when `family` is set.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid()];
        if self.family {
            pids.extend(descendants(self.pid()));
        }
        pids
    }

    /// CPU time used so far by the process(es), all threads.
    pub fn cpu(&self) -> Cpu {
        Cpu::of_all(&self.pids())
    }

    /// Resident memory now, summed over the process(es): (VmRSS kB, Pss kB). Kamailio's
    /// workers share its memory pools, so their VmRSS sum counts shared pages several
    /// times; Pss splits shared pages between the processes that map them.
    pub fn memory_kb(&self) -> (u64, u64) {
        self.pids().into_iter().fold((0, 0), |(rss, pss), pid| {
            let rss_kb = proc_kb(&format!("/proc/{pid}/status"), "VmRSS:");
            let pss_kb = proc_kb(&format!("/proc/{pid}/smaps_rollup"), "Pss:");
            (rss + rss_kb, pss + pss_kb)
        })
    }

    fn kill_now(&mut self) {
        if self.try_wait().is_some() {
            return;
        }
        let pid = self.pid();
        if self.family {
            // Kamailio's main process stops its workers on SIGTERM; any that outlive it are
            // killed by pid (only pids that were our descendants a moment ago).
            let kids = descendants(pid);
            self.signal(libc::SIGTERM);
            if self.wait_timeout(Duration::from_secs(3)).is_none() {
                let _ = self.child.kill();
            }
            for k in kids {
                if parent_of(k).is_some_and(|pp| pp == pid || pp == 1) {
                    // SAFETY: kill(2) on a pid that was a descendant of our child.
                    unsafe { libc::kill(k as libc::pid_t, libc::SIGKILL) };
                }
            }
        }
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
        if std::thread::panicking() {
            eprintln!(
                "----- {} ({}) last lines -----\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 30)
            );
        }
    }
}

/// CPU time of a set of processes: `utime + stime` in clock ticks from `/proc/PID/stat`
/// (all threads of a process), and for a finer cross-check the scheduler's run time in
/// nanoseconds from `/proc/PID/task/*/schedstat`, with the times a thread was put on a
/// CPU (its third field: at low rates a proxy's cost is mostly its wake-ups).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cpu {
    pub ticks: u64,
    pub sched_ns: u64,
    pub runs: u64,
}

impl std::ops::Add for Cpu {
    type Output = Cpu;
    fn add(self, o: Cpu) -> Cpu {
        Cpu {
            ticks: self.ticks + o.ticks,
            sched_ns: self.sched_ns + o.sched_ns,
            runs: self.runs + o.runs,
        }
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            ticks: self.ticks.saturating_sub(o.ticks),
            sched_ns: self.sched_ns.saturating_sub(o.sched_ns),
            runs: self.runs.saturating_sub(o.runs),
        }
    }
}

impl Cpu {
    pub fn of(pid: u32) -> Cpu {
        let ticks = stat_fields(pid)
            .map(|f| field(&f, 14) + field(&f, 15))
            .unwrap_or(0);
        let (mut sched_ns, mut runs) = (0, 0);
        for t in fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(s) = fs::read_to_string(t.path().join("schedstat")) else {
                continue;
            };
            let mut f = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
            sched_ns += f.next().unwrap_or(0);
            runs += f.nth(1).unwrap_or(0);
        }
        Cpu {
            ticks,
            sched_ns,
            runs,
        }
    }

    /// Summed over processes (a proxy and its descendants).
    pub fn of_all(pids: &[u32]) -> Cpu {
        pids.iter().fold(Cpu::default(), |c, &p| c + Cpu::of(p))
    }

    /// Milliseconds, from the clock ticks.
    pub fn ms(&self) -> f64 {
        self.ticks as f64 * 1000.0 / clk_tck()
    }

    /// Milliseconds, from the scheduler's nanoseconds.
    pub fn sched_ms(&self) -> f64 {
        self.sched_ns as f64 / 1e6
    }
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Fields of `/proc/PID/stat` from field 3 (state) on; the command name, which may hold
/// spaces and parentheses, is skipped.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Field `n` (1-based, as in proc(5)) of [`stat_fields`].
fn field(fields: &[String], n: usize) -> u64 {
    fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid).map(|f| field(&f, 4) as u32)
}

/// Every process whose chain of parents leads to `root`.
fn descendants(root: u32) -> Vec<u32> {
    let all: Vec<(u32, u32)> = fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| Some((pid, parent_of(pid)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found: BTreeSet<u32> = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &all {
            if ppid == p && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    found.into_iter().collect()
}

/// A `Name:   123 kB` line of a /proc file, in kB; 0 if absent.
fn proc_kb(path: &str, key: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `Udp: RcvbufErrors` from `/proc/net/snmp`: datagrams dropped because a socket's
/// receive buffer was full, in this network namespace (every program in it counts).
pub fn udp_rcvbuf_errors() -> u64 {
    let text = fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(head), Some(vals)) = (udp.next(), udp.next()) else {
        return 0;
    };
    head.split_whitespace()
        .zip(vals.split_whitespace())
        .find(|(h, _)| *h == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Last `lines` lines of a text file, lossy UTF-8.
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// True if a socket is bound to UDP `port` on 127.0.0.1 or a wildcard address (from
/// `/proc/net/udp`, so checking never takes the port from the program that is starting).
pub fn udp_port_bound(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|local| local.ends_with(&want))
            })
        })
    })
}

/// Waits until `proc` has bound UDP `port`; panics with its log if it exits or is slow.
pub fn wait_udp_bound(proc: &mut Proc, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !udp_port_bound(port) {
        proc.assert_running();
        if Instant::now() >= deadline {
            panic!(
                "{} did not bind udp port {port}; log tail:\n{}",
                proc.name,
                tail(&proc.log, 30)
            );
        }
        sleep(Duration::from_millis(20));
    }
}

/// Panics if something still holds UDP `port` after 2 s: a leftover from another run
/// would receive part of the traffic and spoil the numbers. (A killed process's io_uring
/// lets go of its sockets shortly after the process is gone, not at once.)
pub fn assert_udp_free(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while udp_port_bound(port) {
        assert!(
            Instant::now() < deadline,
            "udp port {port} is already in use; another load bench running?"
        );
        sleep(Duration::from_millis(20));
    }
}

/// The cargo target directory of the running bench binary
/// (`.../target/release/deps/NAME-HASH`), for its result files.
pub fn target_dir() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
        .filter(|t| t.is_dir())
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}
