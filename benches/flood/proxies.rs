//! The two proxies of the flood bench, in front of the same two sipp UAS: sipfront with
//! its default limits (only the addresses set) and Kamailio's stateless dispatcher with
//! pike + htable bans (`kamailio-pike.cfg`).

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::procs::{Proc, wait_udp_bound};

const KAMAILIO_CFG: &str = include_str!("kamailio-pike.cfg");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sipfront,
    Kamailio,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Sipfront, Kind::Kamailio];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Sipfront => "sipfront",
            Kind::Kamailio => "kamailio",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

pub struct Ports {
    pub listen: u16,
    pub uas: [u16; 2],
    pub admin: u16,
    pub relay_ports: &'static str,
}

pub struct Proxy {
    pub proc: Proc,
    pub admin: Option<SocketAddr>,
}

impl Proxy {
    /// `density`: pike's requests per 2-second unit (Kamailio only).
    pub fn start(kind: Kind, dir: &Path, p: &Ports, density: u64) -> Proxy {
        fs::create_dir_all(dir).expect("create proxy dir");
        let log = dir.join("proxy.log");
        let (mut proc, admin) = match kind {
            Kind::Sipfront => {
                let cfg = dir.join("sipfront.toml");
                fs::write(
                    &cfg,
                    format!(
                        "[listen]\nsip = [\"127.0.0.1:{}\"]\nrelay_ports = \"{}\"\n\n\
                         [[backend]]\nname = \"a\"\naddr = \"127.0.0.1:{}\"\n\n\
                         [[backend]]\nname = \"b\"\naddr = \"127.0.0.1:{}\"\n\n\
                         # [limits]: the defaults.\n\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
                        p.listen, p.relay_ports, p.uas[0], p.uas[1], p.admin
                    ),
                )
                .expect("write sipfront.toml");
                let mut cmd = Command::new(testkit::bench_bin(env!("CARGO_BIN_EXE_sipfront")));
                cmd.arg("run").arg("-c").arg(&cfg).env("RUST_LOG", "warn");
                let admin = SocketAddr::from(([127, 0, 0, 1], p.admin));
                (Proc::spawn("sipfront", &mut cmd, &log, false), Some(admin))
            }
            Kind::Kamailio => {
                let cfg = dir.join("kamailio.cfg");
                let list = dir.join("dispatcher.list");
                fs::write(
                    &list,
                    format!(
                        "1 sip:127.0.0.1:{}\n1 sip:127.0.0.1:{}\n",
                        p.uas[0], p.uas[1]
                    ),
                )
                .expect("write dispatcher.list");
                let text = KAMAILIO_CFG
                    .replace("@PORT@", &p.listen.to_string())
                    .replace("@LIST@", &list.display().to_string())
                    .replace("@DENSITY@", &density.to_string());
                fs::write(&cfg, text).expect("write kamailio.cfg");
                let out = Command::new("kamailio")
                    .arg("-c")
                    .arg("-f")
                    .arg(&cfg)
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run kamailio: {e}"));
                assert!(
                    out.status.success(),
                    "kamailio -c -f {} failed:\n{}",
                    cfg.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                let mut cmd = Command::new("kamailio");
                cmd.args(["-DD", "-E", "-m", "64", "-M", "8", "-f"])
                    .arg(&cfg)
                    .arg("-P")
                    .arg(dir.join("kamailio.pid"))
                    .arg("-Y")
                    .arg(dir);
                (Proc::spawn("kamailio", &mut cmd, &log, true), None)
            }
        };
        wait_udp_bound(&mut proc, p.listen);
        if let Some(addr) = admin {
            let deadline = Instant::now() + Duration::from_secs(10);
            while testkit::http_body(addr, "/metrics").is_none() {
                proc.assert_running();
                assert!(Instant::now() < deadline, "sipfront admin not answering");
                sleep(Duration::from_millis(20));
            }
        } else {
            sleep(Duration::from_millis(700));
        }
        Proxy { proc, admin }
    }

    /// sipfront's `sipfront_drops_total` by reason (non-zero ones), after the counters
    /// settle (they are published every 200 ms).
    pub fn drops(&self) -> Option<std::collections::BTreeMap<String, f64>> {
        let addr = self.admin?;
        sleep(Duration::from_millis(500));
        testkit::http_body(addr, "/metrics").map(|t| testkit::nonzero_drops(&t))
    }
}
