//! keepalived (`--vrrp` only) as the VRRP peer of sipfront in a [`Lan`](crate::lan::Lan).

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::lan::{Host, VIP_CIDR};
use crate::process::{Proc, TestDir, send_signal, tail, wait_until};

/// keepalived (`--vrrp` only, foreground, logging to its console) in a host's namespace,
/// with its config, pid files and statistics file (`TMPDIR`) in its own directory.
pub struct Keepalived {
    pub proc: Proc,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub vrrp_pid_file: PathBuf,
}

impl Keepalived {
    /// VRRPv3, VRID 51, `advert_int 0.1` (100 ms, as the sipfront configs), the VIP, no
    /// `nopreempt`.
    pub fn start(dir: &TestDir, host: &Host, name: &str, priority: u8) -> Keepalived {
        Self::start_with(dir, host, name, priority, "")
    }

    /// Like [`Keepalived::start`], with extra lines in the `vrrp_instance` block (e.g.
    /// `unicast_peer { 10.77.0.12 }`, `old_unicast_checksum`).
    pub fn start_with(
        dir: &TestDir,
        host: &Host,
        name: &str,
        priority: u8,
        instance_extra: &str,
    ) -> Keepalived {
        let kdir = dir.join(name);
        fs::create_dir_all(&kdir).expect("create keepalived dir");
        let conf = kdir.join("keepalived.conf");
        fs::write(
            &conf,
            format!(
                "global_defs {{\n    router_id {name}\n    vrrp_version 3\n    \
                 vrrp_garp_master_delay 1\n}}\n\n\
                 vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    \
                 virtual_router_id 51\n    priority {priority}\n    advert_int 0.1\n    \
                 virtual_ipaddress {{\n        {VIP_CIDR}\n    }}\n{instance_extra}\n}}\n"
            ),
        )
        .expect("write keepalived.conf");
        let check = host.ns.run(
            "keepalived",
            &["--config-test", "-f", conf.to_str().unwrap()],
        );
        assert!(
            !check.to_ascii_lowercase().contains("error"),
            "keepalived --config-test: {check}"
        );
        let log = kdir.join("keepalived.log");
        let vrrp_pid_file = kdir.join("vrrp.pid");
        let mut cmd = host.ns.command("keepalived");
        cmd.args(["--dont-fork", "--log-console", "--log-detail", "--vrrp"])
            // no respawn: a SIGKILLed VRRP child stays dead, like a crashed daemon
            .arg("--dont-respawn")
            .arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg(kdir.join("keepalived.pid"))
            .arg("-r")
            .arg(&vrrp_pid_file)
            // keepalived.stats (SIGUSR2) goes to $TMPDIR, not the global /tmp
            .env("TMPDIR", &kdir);
        let mut proc = Proc::spawn_group(name, &mut cmd, &log);
        let ok = wait_until(Duration::from_secs(10), || {
            proc.assert_running();
            fs::read_to_string(&log).is_ok_and(|t| t.contains("Entering BACKUP STATE"))
        });
        assert!(ok, "{name}: keepalived did not start: {}", tail(&log, 30));
        Keepalived {
            proc,
            dir: kdir,
            log,
            vrrp_pid_file,
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log_text().matches(needle).count()
    }

    pub fn wait_log(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.count(needle) >= n)
    }

    /// Log lines that report a received packet keepalived did not like (bad TTL, checksum,
    /// version, VRID, address list, length, interval, ...).
    pub fn packet_complaints(&self) -> Vec<String> {
        const BAD: [&str; 9] = [
            "invalid",
            "checksum",
            "ttl",
            "mismatch",
            "too short",
            "not present",
            "ignoring received",
            "expect",
            "bogus",
        ];
        self.log_text()
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                BAD.iter().any(|b| l.contains(b))
            })
            .map(str::to_string)
            .collect()
    }

    pub fn vrrp_pid(&self) -> Option<u32> {
        fs::read_to_string(&self.vrrp_pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Asks for statistics (SIGUSR2: the VRRP process writes `$TMPDIR/keepalived.stats`) and
    /// returns them as "section/key" -> value, e.g. "Advertisements/Received",
    /// "Packet Errors/TTL".
    pub fn stats(&mut self) -> BTreeMap<String, u64> {
        let file = self.dir.join("keepalived.stats");
        let _ = fs::remove_file(&file);
        self.proc.signal("USR2");
        let ok = wait_until(Duration::from_secs(5), || {
            fs::read_to_string(&file).is_ok_and(|t| t.contains("Priority Zero"))
        });
        assert!(ok, "keepalived wrote no statistics to {}", file.display());
        // The file is complete once the last section is there; read again after a moment
        // in case the last lines were still being written.
        std::thread::sleep(Duration::from_millis(50));
        parse_keepalived_stats(&fs::read_to_string(&file).unwrap_or_default())
    }

    /// SIGKILLs the VRRP process and then the parent: a crash, nothing cleaned up.
    pub fn kill9(&mut self) {
        if let Some(pid) = self.vrrp_pid() {
            send_signal(i64::from(pid), "KILL");
        }
        self.proc.signal("KILL");
        self.proc.wait_timeout(Duration::from_secs(5));
    }

    /// SIGTERM (keepalived sends a priority 0 advert and removes its VIPs), then waits.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.signal("TERM");
        self.proc.wait_timeout(timeout)
    }
}

/// Parses keepalived.stats: indented "Key: value" lines under section headers.
pub fn parse_keepalived_stats(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let Some((k, v)) = line.trim().split_once(':') else {
            continue;
        };
        let v = v.trim();
        if v.is_empty() {
            if indent > 0 {
                section = k.to_string();
            }
            continue;
        }
        if let Ok(n) = v.parse::<u64>() {
            let key = if indent >= 4 {
                format!("{section}/{k}")
            } else {
                k.to_string()
            };
            out.insert(key, n);
        }
    }
    out
}
