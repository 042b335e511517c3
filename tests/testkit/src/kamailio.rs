//! Kamailio running deploy/kamailio/kamailio.cfg, and `kamcmd`.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{Proc, TestDir, spawn_error, wait_until};
use crate::udp::wait_udp_bound;

/// The Kamailio backend config shipped in deploy/.
pub fn kamailio_cfg() -> String {
    crate::repo_path("deploy/kamailio/kamailio.cfg")
        .to_string_lossy()
        .into_owned()
}

/// A running Kamailio (deploy/kamailio/kamailio.cfg) in the foreground, its pid file, runtime
/// dir and ctl socket in its own subdirectory of the test directory.
pub struct Kamailio {
    pub proc: Proc,
    pub dir: PathBuf,
    pub ctl: String,
    pub port: u16,
}

impl Kamailio {
    /// Starts Kamailio listening on `127.0.0.1:port` with the given extra `-A` defines
    /// (`"VIP_PORT=26060"`, `"WITH_DMQ"`, `"DMQ_PEER=\"sip:127.0.0.1:26173\""`...), and waits
    /// until its SIP port is bound.
    pub fn start(test: &TestDir, name: &str, port: u16, defines: &[String]) -> Kamailio {
        let dir = test.join(name);
        fs::create_dir_all(&dir).expect("create kamailio dir");
        let ctl = format!("unix:{}", dir.join("ctl").display());
        let mut cmd = Command::new("kamailio");
        cmd.args(["-DD", "-E", "-f"])
            .arg(kamailio_cfg())
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .arg("-Y")
            .arg(&dir)
            // small shared/private memory: several nodes on a small test machine
            .args(["-m", "32", "-M", "4"])
            .args(["-A", "SIP_IP=127.0.0.1"])
            .args(["-A", &format!("SIP_PORT={port}")])
            .args(["-A", &format!("CTL_SOCK=\"{ctl}\"")]);
        for d in defines {
            cmd.args(["-A", d]);
        }
        let mut proc = Proc::spawn_group(name, &mut cmd, &dir.join("kamailio.log"));
        wait_udp_bound(&mut proc, port, Duration::from_secs(15));
        let k = Kamailio {
            proc,
            dir,
            ctl,
            port,
        };
        // The ctl socket appears once the workers are up.
        let sock = k.dir.join("ctl");
        if !wait_until(Duration::from_secs(10), || sock.exists()) {
            panic!("kamailio {name}: no ctl socket at {}", sock.display());
        }
        k
    }

    /// Runs `kamcmd -s CTL args...` and returns its stdout.
    pub fn kamcmd(&self, args: &[&str]) -> String {
        let out = Command::new("kamcmd")
            .arg("-s")
            .arg(&self.ctl)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| spawn_error("kamcmd", e));
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// The `Received:` addresses (`sip:IP:PORT`) stored for `aor`, from `ul.dump`.
    pub fn received_of(&self, aor: &str) -> Vec<String> {
        let dump = self.kamcmd(&["ul.dump"]);
        let mut out = Vec::new();
        let mut in_aor = false;
        for line in dump.lines() {
            let l = line.trim();
            if let Some(a) = l.strip_prefix("AoR:") {
                in_aor = a.trim() == aor;
            } else if in_aor && let Some(r) = l.strip_prefix("Received:") {
                out.push(r.trim().to_string());
            }
        }
        out
    }
}
