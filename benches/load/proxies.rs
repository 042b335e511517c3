//! The four proxies under test, each started in the foreground in its own directory and
//! ready (its SIP port bound) when `start` returns.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::procs::{Proc, wait_udp_bound};
use crate::{bare, bare_router, bare_scan, bare_unconnected, bare_uring};

const NGINX_CONF: &str = include_str!("nginx.conf");
const KAMAILIO_CFG: &str = include_str!("kamailio.cfg");
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sipfront,
    /// sipfront with HEPv3 capture export of both legs to a local sink (not in `ALL`:
    /// `--proxies sipfront,sipfront-hep` compares capture off and on in one run).
    SipfrontHep,
    /// The same over HEP's TCP transport (batched writes).
    SipfrontHepTcp,
    /// sipfront in relay prefix mode (127.200.0.0/16 on loopback, one relay port): one
    /// socket for every flow's backend side.
    SipfrontPrefix,
    Nginx,
    Kamailio,
    Bare,
    /// The bare forwarder over io_uring (not in `ALL`).
    BareUring,
    /// The bare forwarder with unconnected upstream sockets, as a relay socket must be
    /// (not in `ALL`).
    BareUnconnected,
    /// The bare forwarder running sipfront's SIP scanner over each datagram (not in `ALL`).
    BareScan,
    /// The bare forwarder deciding each datagram with sipfront's `Router` (not in `ALL`).
    BareRouter,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Sipfront, Kind::Nginx, Kind::Kamailio, Kind::Bare];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Sipfront => "sipfront",
            Kind::SipfrontHep => "sipfront-hep",
            Kind::SipfrontHepTcp => "sipfront-hep-tcp",
            Kind::SipfrontPrefix => "sipfront-prefix",
            Kind::Nginx => "nginx",
            Kind::Kamailio => "kamailio",
            Kind::Bare => "bare",
            Kind::BareUring => "bare-uring",
            Kind::BareUnconnected => "bare-unconnected",
            Kind::BareScan => "bare-scan",
            Kind::BareRouter => "bare-router",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .chain([
                Kind::SipfrontHep,
                Kind::SipfrontHepTcp,
                Kind::SipfrontPrefix,
                Kind::BareUring,
                Kind::BareUnconnected,
                Kind::BareScan,
                Kind::BareRouter,
            ])
            .find(|k| k.name() == s)
    }
}

/// Addresses of one run.
pub struct Ports {
    pub listen: u16,
    pub uas: [u16; 2],
    pub admin: u16,
    pub relay_ports: &'static str,
}

pub struct Proxy {
    pub proc: Proc,
    /// sipfront's admin endpoint.
    pub admin: Option<SocketAddr>,
}

impl Proxy {
    pub fn start(kind: Kind, dir: &Path, p: &Ports) -> Proxy {
        let dir = dir.join(kind.name());
        fs::create_dir_all(&dir).expect("create proxy dir");
        let log = dir.join("proxy.log");
        let (mut proc, admin) = match kind {
            Kind::Sipfront | Kind::SipfrontHep | Kind::SipfrontHepTcp | Kind::SipfrontPrefix => {
                let cfg = dir.join("sipfront.toml");
                let mut toml = sipfront_toml(p);
                if kind == Kind::SipfrontPrefix {
                    // 127.0.0.0/8 is local already: nothing to route.
                    let first = p.relay_ports.split('-').next().unwrap_or("20000");
                    toml = toml.replace(
                        &format!("relay_ports = \"{}\"", p.relay_ports),
                        &format!("relay_prefix = \"127.200.0.0/16\"\nrelay_port = {first}"),
                    );
                }
                let sink = match kind {
                    Kind::SipfrontHep => Some((hep_sink(), "udp")),
                    Kind::SipfrontHepTcp => Some((hep_sink_tcp(), "tcp")),
                    _ => None,
                };
                if let Some((sink, transport)) = sink {
                    toml.push_str(&format!(
                        "\n[hep]\ncollector = \"{sink}\"\ntransport = \"{transport}\"\nlegs = [\"client\", \"backend\"]\n"
                    ));
                }
                fs::write(&cfg, toml).expect("write sipfront.toml");
                let mut cmd = Command::new(testkit::bench_bin(env!("CARGO_BIN_EXE_sipfront")));
                cmd.arg("run").arg("-c").arg(&cfg).env("RUST_LOG", "warn");
                let admin = SocketAddr::from(([127, 0, 0, 1], p.admin));
                (Proc::spawn("sipfront", &mut cmd, &log, false), Some(admin))
            }
            Kind::Nginx => {
                let conf = dir.join("nginx.conf");
                let text = NGINX_CONF
                    .replace("@DIR@", &dir.display().to_string())
                    .replace("@PORT@", &p.listen.to_string())
                    .replace("@UAS1@", &p.uas[0].to_string())
                    .replace("@UAS2@", &p.uas[1].to_string());
                fs::write(&conf, text).expect("write nginx.conf");
                assert!(
                    Path::new(NGINX_STREAM_MODULE).exists(),
                    "{NGINX_STREAM_MODULE} missing: apt-get install libnginx-mod-stream"
                );
                let mut cmd = Command::new("nginx");
                cmd.arg("-e")
                    .arg(dir.join("error.log"))
                    .arg("-c")
                    .arg(&conf)
                    .arg("-p")
                    .arg(&dir);
                (Proc::spawn("nginx", &mut cmd, &log, false), None)
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
                    .replace("@LIST@", &list.display().to_string());
                fs::write(&cfg, text).expect("write kamailio.cfg");
                check_kamailio_cfg(&cfg);
                let mut cmd = Command::new("kamailio");
                cmd.args(["-DD", "-E", "-m", "64", "-M", "8", "-f"])
                    .arg(&cfg)
                    .arg("-P")
                    .arg(dir.join("kamailio.pid"))
                    .arg("-Y")
                    .arg(&dir);
                (Proc::spawn("kamailio", &mut cmd, &log, true), None)
            }
            Kind::Bare
            | Kind::BareUring
            | Kind::BareUnconnected
            | Kind::BareScan
            | Kind::BareRouter => {
                let spec = format!(
                    "127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}",
                    p.listen, p.uas[0], p.uas[1]
                );
                let exe = std::env::current_exe().expect("current_exe");
                let mut cmd = Command::new(exe);
                let env = match kind {
                    Kind::Bare => bare::ENV,
                    Kind::BareUnconnected => bare_unconnected::ENV,
                    Kind::BareScan => bare_scan::ENV,
                    Kind::BareRouter => bare_router::ENV,
                    _ => bare_uring::ENV,
                };
                cmd.env(env, spec);
                (Proc::spawn(kind.name(), &mut cmd, &log, false), None)
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
        }
        if kind == Kind::Kamailio {
            // The workers fork after the main process binds; let them all come up.
            sleep(Duration::from_millis(700));
        }
        Proxy { proc, admin }
    }

    /// sipfront's own counts, once they stop moving (they are published every 200 ms):
    /// `sipfront_datagrams_total`, `sipfront_drops_total` (each summed over its labels)
    /// `sipfront_flows_created_total` and `sipfront_hep_dropped_total`; and, from the
    /// same settled scrape, the drops by reason (`reason n, ...`, empty if none).
    pub fn sipfront_counters(&self) -> Option<([f64; 4], String)> {
        let addr = self.admin?;
        let mut last: Option<([f64; 4], String)> = None;
        for _ in 0..20 {
            sleep(Duration::from_millis(300));
            let text = testkit::http_body(addr, "/metrics")?;
            let now = [
                testkit::metric(&text, "sipfront_datagrams_total", &[]),
                testkit::metric(&text, "sipfront_drops_total", &[]),
                testkit::metric(&text, "sipfront_flows_created_total", &[]),
                testkit::metric(&text, "sipfront_hep_dropped_total", &[]),
            ];
            let settled = last.as_ref().is_some_and(|(l, _)| *l == now);
            last = Some((now, drop_reasons(&text)));
            if settled {
                break;
            }
        }
        last
    }
}

/// The nonzero `sipfront_drops_total` samples of a scrape: `reason n, ...`.
fn drop_reasons(metrics: &str) -> String {
    testkit::parse_metrics(metrics)
        .into_iter()
        .filter(|s| s.name == "sipfront_drops_total" && s.value > 0.0)
        .map(|s| {
            let reason = s.labels.get("reason").map_or("?", String::as_str);
            format!("{reason} {:.0}", s.value)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A HEP collector that reads and discards: a thread of the bench process.
fn hep_sink() -> SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind HEP sink");
    let addr = sock.local_addr().expect("HEP sink address");
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while sock.recv(&mut buf).is_ok() {}
    });
    addr
}

/// The same over TCP: accepts connections and reads and discards.
fn hep_sink_tcp() -> SocketAddr {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind HEP sink");
    let addr = listener.local_addr().expect("HEP sink address");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
            });
        }
    });
    addr
}

/// The sipfront config of a load-bench run (also bare-router's router config).
pub fn sipfront_toml(p: &Ports) -> String {
    format!(
        r#"[listen]
sip = ["127.0.0.1:{listen}"]
relay_ports = "{relay}"

[[backend]]
name = "a"
addr = "127.0.0.1:{a}"

[[backend]]
name = "b"
addr = "127.0.0.1:{b}"

[limits]
new_flows_per_ip = 100000
new_flows_burst = 100000
# Load from one address on loopback: lift the per-source limits.
max_flows_per_ip = 10000000
datagrams_per_ip = 100000000
datagrams_burst = 100000000

[admin]
listen = "127.0.0.1:{admin}"
"#,
        listen = p.listen,
        relay = p.relay_ports,
        a = p.uas[0],
        b = p.uas[1],
        admin = p.admin,
    )
}

fn check_kamailio_cfg(cfg: &Path) {
    let out = Command::new("kamailio")
        .arg("-c")
        .arg("-f")
        .arg(cfg)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kamailio (package kamailio): {e}"));
    assert!(
        out.status.success(),
        "kamailio -c -f {} failed:\n{}{}",
        cfg.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
