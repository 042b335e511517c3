//! sipp (Debian package `sip-tester`): runs, their statistics and per-message counters, on
//! the loopback or in a network namespace, and the per-call log of `uac_timed.xml`.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::lan::Host;
use crate::netns::wait_bound;
use crate::process::{Proc, TestDir, tail};
use crate::udp::wait_udp_bound;

/// Directory with the sipp scenarios of these tests.
pub fn scenario(name: &str) -> String {
    crate::repo_path("tests/sipp")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Statistics of one sipp run: the last row of its `-trace_stat` CSV file.
#[derive(Debug, Clone, Default)]
pub struct SippStats {
    pub fields: HashMap<String, String>,
}

impl SippStats {
    /// Reads the last row of a sipp statistics CSV (`;`-separated, header in the first line).
    pub fn read(path: &Path) -> Option<SippStats> {
        let text = fs::read_to_string(path).ok()?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next()?.split(';').collect();
        let last: Vec<&str> = lines.next_back()?.split(';').collect();
        let fields = header
            .iter()
            .zip(last.iter())
            .map(|(h, v)| (h.trim().to_string(), v.trim().to_string()))
            .collect();
        Some(SippStats { fields })
    }

    /// Integer counter by column name, e.g. `SuccessfulCall(C)`; 0 if absent.
    pub fn get(&self, name: &str) -> u64 {
        self.fields
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
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
    pub fn outgoing(&self) -> u64 {
        self.get("OutgoingCall(C)")
    }
    pub fn created(&self) -> u64 {
        self.get("TotalCallCreated")
    }
    pub fn retransmissions(&self) -> u64 {
        self.get("Retransmissions(C)")
    }
}

/// Result of a finished sipp run.
#[derive(Debug)]
pub struct SippResult {
    pub status: ExitStatus,
    pub stats: SippStats,
    /// sipp's error trace (`-trace_err`), empty if there were no errors.
    pub errors: String,
}

impl SippResult {
    /// sipp exits 0 when every call succeeded.
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// A running sipp. Started with `-nostdin`, `-trace_stat` (CSV every second, `stats.csv`),
/// `-trace_err` (`errors.log`) and with its screen output in `sipp.log`, all in its own
/// subdirectory of the test directory.
pub struct Sipp {
    pub proc: Proc,
    pub dir: PathBuf,
    pub stat_file: PathBuf,
    pub error_file: PathBuf,
    pub message_file: PathBuf,
}

impl Sipp {
    /// Starts sipp with `args` (scenario, ports, remote address...). `name` names the
    /// subdirectory and the guard.
    pub fn start(test: &TestDir, name: &str, args: &[&str]) -> Sipp {
        Self::start_opts(test, name, args, false)
    }

    /// Like [`Sipp::start`], also tracing every message to `messages.log` (`-trace_msg`).
    pub fn start_traced(test: &TestDir, name: &str, args: &[&str]) -> Sipp {
        Self::start_opts(test, name, args, true)
    }

    /// One call (tests/sipp/caller.xml) from 127.0.0.1:`port` to `user` entered at
    /// `registrar`: INVITE, ACK and BYE along the route set. Waits for it (30 s at most).
    pub fn call(
        test: &TestDir,
        name: &str,
        user: &str,
        port: u16,
        registrar: &str,
    ) -> (Sipp, SippResult) {
        Sipp::call_with(test, name, user, port, registrar, None)
    }

    /// [`Sipp::call`] with an account: answers the registrar's 407 with the
    /// credentials `auth_user`/`password` (tests/sipp/caller_auth.xml).
    pub fn call_auth(
        test: &TestDir,
        name: &str,
        user: &str,
        port: u16,
        registrar: &str,
        auth: (&str, &str),
    ) -> (Sipp, SippResult) {
        Sipp::call_with(test, name, user, port, registrar, Some(auth))
    }

    fn call_with(
        test: &TestDir,
        name: &str,
        user: &str,
        port: u16,
        registrar: &str,
        auth: Option<(&str, &str)>,
    ) -> (Sipp, SippResult) {
        let sf = scenario(if auth.is_some() {
            "caller_auth.xml"
        } else {
            "caller.xml"
        });
        let mut head = vec!["-sf", &sf, "-s", user];
        head.extend(auth_args(&auth));
        let mut sipp = Sipp::once(
            test,
            name,
            port,
            &head,
            &["-timeout", "20s", "-timeout_error", registrar],
        );
        let r = sipp.wait(Duration::from_secs(30));
        (sipp, r)
    }

    /// A phone: REGISTERs `user` from 127.0.0.1:`port` through `sip` (tests/sipp/
    /// phone_register.xml), keeps its one socket open for `hold_ms` and answers INVITEs
    /// out of call with the tests/sipp scenario `answer`. Returns once the port is bound.
    pub fn phone(
        test: &TestDir,
        name: &str,
        user: &str,
        port: u16,
        sip: &str,
        answer: &str,
        hold_ms: u32,
    ) -> Sipp {
        Sipp::phone_with(test, name, (user, None), port, sip, answer, hold_ms)
    }

    /// [`Sipp::phone`] with an account: answers the registrar's 401 with the
    /// credentials `auth` (user, password; tests/sipp/phone_register_auth.xml).
    #[allow(clippy::too_many_arguments)]
    pub fn phone_auth(
        test: &TestDir,
        name: &str,
        user: &str,
        auth: (&str, &str),
        port: u16,
        sip: &str,
        answer: &str,
        hold_ms: u32,
    ) -> Sipp {
        Sipp::phone_with(test, name, (user, Some(auth)), port, sip, answer, hold_ms)
    }

    fn phone_with(
        test: &TestDir,
        name: &str,
        (user, auth): (&str, Option<(&str, &str)>),
        port: u16,
        sip: &str,
        answer: &str,
        hold_ms: u32,
    ) -> Sipp {
        let d = hold_ms.to_string();
        let register = scenario(if auth.is_some() {
            "phone_register_auth.xml"
        } else {
            "phone_register.xml"
        });
        let answer = scenario(answer);
        let mut head = vec!["-sf", &register, "-oocsf", &answer, "-s", user];
        head.extend(auth_args(&auth));
        let mut phone = Sipp::once(test, name, port, &head, &["-d", &d, sip]);
        phone.wait_bound(port);
        phone
    }

    /// One call: tests/sipp scenario `sf` from 127.0.0.1:`port` to `to`, `-s service`,
    /// `-key user user`, held `hold_ms`. Returns once the port is bound.
    #[allow(clippy::too_many_arguments)]
    pub fn call_as(
        test: &TestDir,
        name: &str,
        sf: &str,
        port: u16,
        service: &str,
        user: &str,
        hold_ms: u32,
        to: &str,
    ) -> Sipp {
        let (sf, d) = (scenario(sf), hold_ms.to_string());
        let mut sipp = Sipp::once(
            test,
            name,
            port,
            &["-sf", &sf, "-s", service, "-key", "user", user],
            &["-d", &d, "-timeout", "60s", "-timeout_error", to],
        );
        sipp.wait_bound(port);
        sipp
    }

    /// A carrier as a UAS on 127.0.0.1:`port` (`-s carrier`), answering one call with
    /// the tests/sipp scenario `sf`. Returns once the port is bound.
    pub fn carrier_uas(test: &TestDir, name: &str, sf: &str, port: u16) -> Sipp {
        let sf = scenario(sf);
        let mut sipp = Sipp::once(
            test,
            name,
            port,
            &["-sf", &sf, "-s", "carrier"],
            &["-timeout", "60s", "-timeout_error"],
        );
        sipp.wait_bound(port);
        sipp
    }

    /// One call's worth of sipp on its own socket, 127.0.0.1:`port` (`-t u1 -m 1`),
    /// with `head` before and `tail` after those options.
    fn once(test: &TestDir, name: &str, port: u16, head: &[&str], tail: &[&str]) -> Sipp {
        let p = port.to_string();
        let own = ["-t", "u1", "-i", "127.0.0.1", "-p", &p, "-m", "1"];
        Sipp::start_traced(test, name, &[head, &own[..], tail].concat())
    }

    fn start_opts(test: &TestDir, name: &str, args: &[&str], trace_msg: bool) -> Sipp {
        Self::start_cmd(test, name, Command::new("sipp"), args, trace_msg)
    }

    /// Starts `cmd` (`sipp`, or `ip netns exec NS sipp`) with `args` in its own subdirectory
    /// `name` of the test directory (statistics every second in `stats.csv`, errors in
    /// `errors.log` and, with `trace_msg`, every message in `messages.log`).
    pub fn start_cmd(
        test: &TestDir,
        name: &str,
        mut cmd: Command,
        args: &[&str],
        trace_msg: bool,
    ) -> Sipp {
        let dir = test.join(name);
        fs::create_dir_all(&dir).expect("create sipp dir");
        let stat_file = dir.join("stats.csv");
        let error_file = dir.join("errors.log");
        let message_file = dir.join("messages.log");
        cmd.current_dir(&dir)
            .args(args)
            .args(["-nostdin", "-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat_file)
            .args(["-trace_err", "-error_file"])
            .arg(&error_file);
        if trace_msg {
            cmd.args(["-trace_msg", "-message_file"]).arg(&message_file);
        }
        let mut proc = Proc::spawn(name, &mut cmd, &dir.join("sipp.log"));
        proc.add_log(&error_file);
        Sipp {
            proc,
            dir,
            stat_file,
            error_file,
            message_file,
        }
    }

    /// Waits until sipp has bound its main UDP port (`-p`).
    pub fn wait_bound(&mut self, port: u16) {
        wait_udp_bound(&mut self.proc, port, Duration::from_secs(10));
    }

    /// Statistics written so far (sipp dumps them every second and at exit).
    pub fn stats(&self) -> SippStats {
        SippStats::read(&self.stat_file).unwrap_or_default()
    }

    /// Per-message counters so far (only when started with `-trace_counts`).
    pub fn counts(&self) -> SippCounts {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return SippCounts::default();
        };
        let Some(path) = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("_counts.csv"))
        else {
            return SippCounts::default();
        };
        let text = fs::read_to_string(path).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let (Some(header), Some(last)) = (lines.next(), lines.next_back()) else {
            return SippCounts::default();
        };
        let fields = header
            .split(';')
            .zip(last.split(';'))
            .filter_map(|(h, v)| Some((h.trim().to_string(), v.trim().parse().ok()?)))
            .collect();
        SippCounts { fields }
    }

    /// Messages traced so far (only with [`Sipp::start_traced`]).
    pub fn messages(&self) -> String {
        fs::read_to_string(&self.message_file).unwrap_or_default()
    }

    /// Waits for sipp to exit by itself; panics (killing it) after `timeout`.
    /// Waits for a UAC run and asserts that it ended well with all `calls` calls
    /// successful and none failed.
    /// Waits (60 s at most) for a one-call run; `what` names it in the failure.
    pub fn expect_one_ok(&mut self, what: &str) {
        let r = self.wait(Duration::from_secs(60));
        assert!(
            r.ok() && r.stats.successful() == 1,
            "{what}: {}",
            self.describe(&r)
        );
    }

    pub fn expect_all_ok(&mut self, calls: u64, timeout: Duration) -> SippResult {
        let r = self.wait(timeout);
        assert!(r.ok(), "UAC failed: {}", self.describe(&r));
        assert_eq!(r.stats.successful(), calls, "{}", self.describe(&r));
        assert_eq!(r.stats.failed(), 0, "{}", self.describe(&r));
        r
    }

    pub fn wait(&mut self, timeout: Duration) -> SippResult {
        let Some(status) = self.proc.wait_timeout(timeout) else {
            panic!(
                "sipp `{}` still running after {timeout:?}; screen tail:\n{}\nerrors:\n{}",
                self.proc.name,
                self.proc.log_tail(40),
                tail(&self.error_file, 20)
            );
        };
        self.result(status)
    }

    /// Asks sipp to stop (SIGUSR1: no new calls, exit once the current calls end) and waits
    /// for its final statistics; after `timeout` it is killed and the last dump is used.
    pub fn stop(&mut self, timeout: Duration) -> SippResult {
        self.proc.signal("USR1");
        let status = match self.proc.wait_timeout(timeout) {
            Some(st) => st,
            None => {
                self.proc.kill_now();
                self.proc.try_wait().expect("sipp killed")
            }
        };
        self.result(status)
    }

    fn result(&self, status: ExitStatus) -> SippResult {
        SippResult {
            status,
            stats: self.stats(),
            errors: fs::read_to_string(&self.error_file).unwrap_or_default(),
        }
    }

    /// A short description for assertion messages.
    pub fn describe(&self, r: &SippResult) -> String {
        format!(
            "sipp `{}`: {} created={} successful={} failed={} retrans={}\nscreen tail:\n{}\nerrors (head):\n{}",
            self.proc.name,
            r.status,
            r.stats.created(),
            r.stats.successful(),
            r.stats.failed(),
            r.stats.retransmissions(),
            self.proc.log_tail(30),
            r.errors.lines().take(40).collect::<Vec<_>>().join("\n")
        )
    }
}

/// Starts a UAS backend on `127.0.0.1:port` (mono socket): `tests/sipp/uas.xml`, sipp's
/// built-in UAS that also answers sipfront's OPTIONS health probes. Probes are calls too, so
/// count INVITE calls with [`Sipp::counts`] (`-trace_counts`), e.g. `counts.recv("INVITE")`.
/// Waits until it is bound.
pub fn sipp_uas(test: &TestDir, name: &str, port: u16) -> Sipp {
    let p = port.to_string();
    let sf = scenario("uas.xml");
    let mut s = Sipp::start(
        test,
        name,
        &[
            "-sf",
            &sf,
            "-i",
            "127.0.0.1",
            "-p",
            &p,
            "-t",
            "u1",
            "-trace_counts",
        ],
    );
    s.wait_bound(port);
    s
}

/// Per-message counters of a sipp scenario (the last row of its `-trace_counts` CSV), with
/// columns like `1_INVITE_Recv`, `3_200_Sent`, `5_BYE_Recv`.
#[derive(Debug, Clone, Default)]
pub struct SippCounts {
    pub fields: Vec<(String, u64)>,
}

impl SippCounts {
    /// Sum of the `N_<what>_Recv` columns (e.g. `recv("INVITE")`).
    pub fn recv(&self, what: &str) -> u64 {
        self.sum(&format!("_{what}_Recv"))
    }

    /// Sum of the `N_<what>_Sent` columns (e.g. `sent("200")`).
    pub fn sent(&self, what: &str) -> u64 {
        self.sum(&format!("_{what}_Sent"))
    }

    fn sum(&self, suffix: &str) -> u64 {
        self.fields
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Wall-clock seconds since the epoch (sipp's `[timestamp]` uses the same clock).
pub fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

pub struct NsSipp {
    pub proc: Proc,
    pub dir: PathBuf,
    pub stat_file: PathBuf,
    pub error_file: PathBuf,
}

/// Starts sipp in `host`'s namespace with `args`, in its own subdirectory `name` of the test
/// directory (statistics every second in `stats.csv`, errors in `errors.log` and, with
/// `trace`, every message in `messages.log`).
pub fn start_sipp(dir: &TestDir, host: &Host, name: &str, args: &[&str], trace: bool) -> Sipp {
    Sipp::start_cmd(dir, name, host.ns.command("sipp"), args, trace)
}

impl NsSipp {
    /// Starts sipp in `host`'s namespace with `args`, in its own subdirectory `name` of the
    /// test directory (statistics every second in `stats.csv`, errors in `errors.log`).
    pub fn start(dir: &TestDir, host: &Host, name: &str, args: &[&str]) -> NsSipp {
        let Sipp {
            proc,
            dir,
            stat_file,
            error_file,
            ..
        } = start_sipp(dir, host, name, args, false);
        NsSipp {
            proc,
            dir,
            stat_file,
            error_file,
        }
    }

    /// A UAS backend (tests/sipp/uas.xml, answers OPTIONS too) on `host`:5060.
    pub fn uas(dir: &TestDir, host: &Host, name: &str) -> NsSipp {
        let ip = host.addr.to_string();
        let sf = scenario("uas.xml");
        let mut s = NsSipp::start(dir, host, name, &["-sf", &sf, "-i", &ip, "-p", "5060"]);
        wait_bound(&mut s.proc, 5060);
        s
    }

    pub fn stats(&self) -> SippStats {
        SippStats::read(&self.stat_file).unwrap_or_default()
    }

    /// SIGUSR1 (no new calls; exit when the current ones end), then waits; kills after
    /// `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.signal("USR1");
        let st = self.proc.wait_timeout(timeout);
        if st.is_none() {
            self.proc.signal("KILL");
            self.proc.wait_timeout(Duration::from_secs(5));
        }
        st
    }
}

/// The per-call lines of tests/sipp/uac_timed.xml: call number -> epoch seconds.
#[derive(Debug, Default)]
pub struct CallLog {
    pub started: BTreeMap<u64, f64>,
    pub ok: BTreeMap<u64, f64>,
}

impl CallLog {
    pub fn read(path: &Path) -> CallLog {
        let mut log = CallLog::default();
        let text = fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            // "start N DATE TIME EPOCH" / "ok N DATE TIME EPOCH"
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                continue;
            }
            let (Ok(n), Ok(t)) = (f[1].parse::<u64>(), f[f.len() - 1].parse::<f64>()) else {
                continue;
            };
            match f[0] {
                "start" => {
                    log.started.insert(n, t);
                }
                "ok" => {
                    log.ok.insert(n, t);
                }
                _ => {}
            }
        }
        log
    }

    /// Calls whose first INVITE was sent at or after `t` (epoch seconds).
    pub fn started_after(&self, t: f64) -> Vec<u64> {
        self.started
            .iter()
            .filter(|(_, s)| **s >= t)
            .map(|(n, _)| *n)
            .collect()
    }

    pub fn failed_among(&self, calls: &[u64]) -> Vec<u64> {
        calls
            .iter()
            .copied()
            .filter(|n| !self.ok.contains_key(n))
            .collect()
    }
}

/// Asserts that the file at `path` (e.g. a sipp message trace) contains `needle`.
pub fn assert_file_contains(path: &std::path::Path, needle: &str, what: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(text.contains(needle), "{what}: no `{needle}` in {path:?}");
}

/// sipp's digest credentials options for `auth` (user, password), if any.
fn auth_args<'a>(auth: &Option<(&'a str, &'a str)>) -> Vec<&'a str> {
    match auth {
        Some((user, password)) => vec!["-au", user, "-ap", password],
        None => Vec::new(),
    }
}
