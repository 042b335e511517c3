//! Bench 2 (issue 5): VRRP failover, sipfront's built-in VRRPv3 against keepalived moving
//! the same VIP in front of sipfront in external mode, in one run.
//!
//! Namespaces: a bridge, a client, two proxy hosts (h1 priority 150, h2 priority 100) and
//! a backend (an in-bench responder), all on one /24. The client sends a MESSAGE to the VIP
//! every 5 ms. Each repetition waits until h1 is master and the client's answers and
//! neighbour entry for the VIP go through h1, then kills h1 with SIGKILL (case A: its
//! sipfront; case B: keepalived's VRRP process, keepalived's parent and sipfront: the
//! whole host) and measures the time until answers resume through h2. The killed host
//! keeps the VIP on its interface (nobody removes it after a SIGKILL), as a hung host
//! would; the bench removes it after the measurement and restarts h1, which preempts.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backend::ms;
use crate::capture::{Capture, Frame};
use crate::procs::{Proc, tail};
use crate::sipudp::Client;
use crate::{Stats, rand_ms, sipfront_log};
use testkit::{Netns, VrrpState, find_metric, wait_until};

const NET: &str = "10.77.5";
const VIP: &str = "10.77.5.100";
const HOST_ADDRS: [&str; 2] = ["10.77.5.11", "10.77.5.12"];
const PRIORITIES: [u8; 2] = [150, 100];
const ADVERT_MS: u64 = 30;
const VRID: u8 = 51;
const SEND_EVERY: Duration = Duration::from_millis(5);
const ADMIN: &str = "127.0.0.1:9090";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Sipfront,
    Keepalived,
}

impl Case {
    pub fn name(self) -> &'static str {
        match self {
            Case::Sipfront => "sipfront built-in VRRPv3",
            Case::Keepalived => "keepalived + sipfront external",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Case::Sipfront => "sipfront",
            Case::Keepalived => "keepalived",
        }
    }
}

pub struct Sample {
    pub case: Case,
    /// Kill → first answer through the backup.
    pub gap: Duration,
    /// Last answer before the kill → first answer after it.
    pub outage: Duration,
    /// Kill → first advert from the backup (it became master).
    pub takeover: Option<Duration>,
    /// Last advert of the old master → first advert of the new one.
    pub adverts_gap: Option<Duration>,
    /// Kill → first gratuitous ARP for the VIP from the backup's MAC.
    pub garp: Option<Duration>,
    pub lost: u64,
    /// The client's neighbour entry for the VIP now has the backup's MAC.
    pub neigh_moved: bool,
}

/// The namespaces and their wiring. Dropped last.
pub struct Topo {
    /// Holds the bridge; deleted with the rest.
    #[allow(dead_code)]
    pub br: Netns,
    pub cl: Netns,
    pub hosts: [Netns; 2],
    pub be: Netns,
    macs: [String; 2],
}

impl Topo {
    pub fn new(prefix: &str) -> Topo {
        let br = Netns::create(format!("{prefix}br"));
        let cl = Netns::create(format!("{prefix}cl"));
        let hosts = [
            Netns::create(format!("{prefix}h1")),
            Netns::create(format!("{prefix}h2")),
        ];
        let be = Netns::create(format!("{prefix}be"));
        br.ip(&["link", "add", "br0", "type", "bridge"]);
        br.ip(&["link", "set", "br0", "up"]);
        for (ns, port, host) in [
            (&cl, "cl", 10),
            (&hosts[0], "h1", 11),
            (&hosts[1], "h2", 12),
            (&be, "be", 20),
        ] {
            br.ip(&[
                "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ]);
            br.ip(&["link", "set", port, "master", "br0", "up"]);
            ns.ip(&["addr", "add", &format!("{NET}.{host}/24"), "dev", "eth0"]);
            ns.ip(&["link", "set", "eth0", "up"]);
        }
        let macs = [hosts[0].mac("eth0"), hosts[1].mac("eth0")];
        Topo {
            br,
            cl,
            hosts,
            be,
            macs,
        }
    }
}

/// What a proxy host runs with: the VRRP advert interval, and for the false-failover
/// run (`false_failover.rs`) a relay port range (its flow table) and limits that let one
/// address fill it.
#[derive(Debug, Clone, Copy)]
pub struct HostCfg {
    /// Prefix of the config and log file names of this run's programs.
    pub label: &'static str,
    pub advert_ms: u64,
    pub relay_ports: &'static str,
    pub extra: &'static str,
}

pub const DEFAULT_HOST: HostCfg = HostCfg {
    label: "",
    advert_ms: ADVERT_MS,
    relay_ports: "20000-20099",
    extra: "",
};

fn sipfront_toml(i: usize, case: Case, hc: HostCfg) -> String {
    let mut s = format!(
        "[listen]\nsip = [\"{VIP}:5060\"]\nrelay = \"{}\"\nrelay_ports = \"{}\"\n\n\
         [[backend]]\nname = \"be\"\naddr = \"{NET}.20:5060\"\n\n\
         [health]\ninterval = \"100ms\"\ntimeout = \"80ms\"\nrise = 2\nfall = 2\n\n\
         [admin]\nlisten = \"{ADMIN}\"\n{}",
        HOST_ADDRS[i], hc.relay_ports, hc.extra
    );
    if case == Case::Sipfront {
        let _ = write!(
            s,
            "\n[vrrp]\ninterface = \"eth0\"\nvrid = {VRID}\npriority = {}\n\
             advert_interval = \"{}ms\"\nvips = [\"{VIP}/24\"]\ntrack_backends = 0\n",
            PRIORITIES[i], hc.advert_ms
        );
    }
    s
}

fn keepalived_conf(i: usize) -> String {
    format!(
        "global_defs {{\n  router_id fobench-h{}\n  vrrp_version 3\n}}\n\n\
         vrrp_instance fobench {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {VRID}\n  \
         priority {}\n  advert_int 0.{:02}\n  virtual_ipaddress {{\n    {VIP}/24 dev eth0\n  }}\n}}\n",
        i + 1,
        PRIORITIES[i],
        ADVERT_MS / 10
    )
}

/// `keepalived --version`'s first line, or None if it is not installed.
pub fn keepalived_version() -> Option<String> {
    let out = std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .ok()?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_string())
}

/// What runs on one proxy host.
#[derive(Default)]
struct Host {
    sipfront: Option<Proc>,
    keepalived: Option<Proc>,
    starts: u32,
}

pub struct Run<'a> {
    topo: &'a Topo,
    case: Case,
    dir: PathBuf,
    hosts: [Host; 2],
    hc: HostCfg,
}

pub fn metrics(ns: &Netns) -> Option<String> {
    let addr: SocketAddr = ADMIN.parse().expect("admin addr");
    ns.enter(move || testkit::http_body(addr, "/metrics"))
}

impl<'a> Run<'a> {
    pub fn new(topo: &'a Topo, case: Case, dir: &Path, hc: HostCfg) -> Run<'a> {
        Run {
            topo,
            case,
            dir: dir.to_path_buf(),
            hosts: Default::default(),
            hc,
        }
    }

    /// The pid of host `i`'s sipfront.
    pub fn sipfront_pid(&self, i: usize) -> Option<u32> {
        self.hosts[i].sipfront.as_ref().map(Proc::pid)
    }

    /// Panics (with the logs) if a program of either host has exited.
    pub fn assert_running(&mut self) {
        for h in &mut self.hosts {
            for p in [h.sipfront.as_mut(), h.keepalived.as_mut()]
                .into_iter()
                .flatten()
            {
                p.assert_running();
            }
        }
    }

    pub fn start(&mut self, i: usize) {
        let ns = &self.topo.hosts[i];
        let h = &mut self.hosts[i];
        h.starts += 1;
        let tag = format!(
            "{}{}-h{}-{}",
            self.hc.label,
            self.case.short(),
            i + 1,
            h.starts
        );
        let cfg = self.dir.join(format!("{tag}.toml"));
        std::fs::write(&cfg, sipfront_toml(i, self.case, self.hc)).expect("write config");
        let mut cmd = ns.command(testkit::bench_bin(env!("CARGO_BIN_EXE_sipfront")));
        cmd.arg("run")
            .arg("-c")
            .arg(&cfg)
            .env("RUST_LOG", sipfront_log());
        let mut sf = Proc::spawn(
            &format!("sipfront {tag}"),
            &mut cmd,
            &self.dir.join(format!("{tag}-sipfront.log")),
            false,
        );
        let up = wait_until(Duration::from_secs(15), || {
            sf.assert_running();
            metrics(ns).is_some_and(|t| {
                find_metric(&t, "sipfront_backend_up", &[("backend", "be")]) == Some(1.0)
            })
        });
        assert!(up, "{tag}: sipfront's backend not up in 15 s");
        h.sipfront = Some(sf);
        if self.case == Case::Keepalived {
            let conf = self.dir.join(format!("{tag}-keepalived.conf"));
            std::fs::write(&conf, keepalived_conf(i)).expect("write keepalived.conf");
            let mut cmd = ns.command("keepalived");
            // Foreground, log to the console (our log file), VRRP only, no respawn, our
            // own pid files.
            cmd.args(["-n", "-l", "-D", "-G", "-P", "-R", "-f"])
                .arg(&conf)
                .arg("-p")
                .arg(self.dir.join(format!("{tag}-keepalived.pid")))
                .arg("-r")
                .arg(self.dir.join(format!("{tag}-keepalived-vrrp.pid")));
            let ka = Proc::spawn(
                &format!("keepalived {tag}"),
                &mut cmd,
                &self.dir.join(format!("{tag}-keepalived.log")),
                true,
            );
            h.keepalived = Some(ka);
        }
    }

    /// Why h1 is not (yet) the settled master the client talks to, or Ok.
    fn settled(&mut self, client: &Client) -> Result<(), String> {
        for (i, h) in self.hosts.iter_mut().enumerate() {
            for p in [h.sipfront.as_mut(), h.keepalived.as_mut()]
                .into_iter()
                .flatten()
            {
                p.assert_running();
            }
            let ns = &self.topo.hosts[i];
            let want_vip = i == 0;
            if ns.has_addr("eth0", VIP) != want_vip {
                return Err(format!("h{} VIP held: {}", i + 1, !want_vip));
            }
            let m = metrics(ns).ok_or(format!("h{}: no /metrics", i + 1))?;
            if find_metric(&m, "sipfront_backend_up", &[("backend", "be")]) != Some(1.0) {
                return Err(format!("h{}: backend not up", i + 1));
            }
            if self.case == Case::Sipfront {
                let want = if want_vip {
                    VrrpState::Master
                } else {
                    VrrpState::Backup
                };
                let st =
                    find_metric(&m, "sipfront_vrrp_state", &[]).and_then(VrrpState::from_value);
                if st != Some(want) {
                    return Err(format!("h{}: sipfront_vrrp_state {st:?}", i + 1));
                }
            }
        }
        let now = Instant::now();
        let recent = client.answers_since(now - Duration::from_millis(200));
        let via_h1 = format!("{}:", HOST_ADDRS[0]);
        if recent.len() < 30 || !recent.iter().all(|a| a.relay.starts_with(&via_h1)) {
            return Err(format!(
                "{} answers in 200 ms, not all via h1",
                recent.len()
            ));
        }
        match self.topo.cl.neighbour(VIP) {
            Some((mac, _)) if mac == self.topo.macs[0] => Ok(()),
            other => Err(format!("client neighbour for the VIP: {other:?}")),
        }
    }

    pub fn wait_settled(&mut self, client: &Client, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let last;
            match self.settled(client) {
                Ok(()) => {
                    // Holds for half a second.
                    std::thread::sleep(Duration::from_millis(500));
                    match self.settled(client) {
                        Ok(()) => return,
                        Err(e) => last = e,
                    }
                }
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = self
                    .hosts
                    .iter()
                    .flat_map(|h| [h.sipfront.as_ref(), h.keepalived.as_ref()])
                    .flatten()
                    .map(|p| format!("--- {}:\n{}", p.name, tail(&p.log, 15)))
                    .collect();
                panic!(
                    "{} {what}: not settled in 20 s: {last}\n{}",
                    self.case.name(),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs everything on host `i`; returns the instant just before the first kill.
    fn kill_host(&mut self, i: usize) -> Instant {
        let h = &mut self.hosts[i];
        // keepalived's VRRP child (the one that advertises) first, then its parent, then
        // sipfront. The pids are read before the clock starts.
        let ka_pids = h.keepalived.as_ref().map(Proc::pids).unwrap_or_default();
        let t = Instant::now();
        for &pid in ka_pids.iter().skip(1) {
            // SAFETY: kill(2) on a descendant of a process this bench started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        if let Some(k) = h.keepalived.as_mut() {
            k.signal(libc::SIGKILL);
        }
        if let Some(s) = h.sipfront.as_mut() {
            s.signal(libc::SIGKILL);
        }
        t
    }

    pub fn stop_all(&mut self) {
        for h in &mut self.hosts {
            h.keepalived = None;
            h.sipfront = None;
        }
        for ns in &self.topo.hosts {
            let _ = ns.try_ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
        }
    }
}

pub fn run(
    topo: &Topo,
    case: Case,
    reps: usize,
    dir: &Path,
    client: &Client,
    cap: &Capture,
    hc: HostCfg,
) -> Vec<Sample> {
    let mut run = Run::new(topo, case, dir, hc);
    // h2 first, so h1 (the higher priority) takes over by preemption as after each kill.
    run.start(1);
    run.start(0);
    let mut samples = Vec::new();
    let via_h2 = format!("{}:", HOST_ADDRS[1]);
    for rep in 1..=reps {
        run.wait_settled(client, &format!("before rep {rep}"));
        // A random phase against the advert schedule.
        std::thread::sleep(Duration::from_millis(rand_ms(hc.advert_ms)));
        let t_kill = run.kill_host(0);
        let from_seq = client.first_seq_since(t_kill);
        let resumed = wait_until(Duration::from_secs(5), || {
            client
                .answers_since(t_kill)
                .iter()
                .any(|a| a.seq >= from_seq && a.relay.starts_with(&via_h2))
        });
        if !resumed {
            let logs: Vec<String> = run
                .hosts
                .iter()
                .flat_map(|h| [h.sipfront.as_ref(), h.keepalived.as_ref()])
                .flatten()
                .map(|p| format!("--- {}:\n{}", p.name, tail(&p.log, 15)))
                .collect();
            panic!(
                "{} rep {rep}: no answer through h2 within 5 s of the kill\n{}",
                case.name(),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        let first = client
            .answers_since(t_kill)
            .into_iter()
            .find(|a| a.seq >= from_seq && a.relay.starts_with(&via_h2))
            .expect("answer via h2");
        let last_before = client.last_answer_before(t_kill);
        let frames = cap.between(
            t_kill - Duration::from_secs(1),
            first.at + Duration::from_secs(1),
        );
        let adverts_from = |src: &str| -> Vec<Instant> {
            frames
                .iter()
                .filter(|(_, f)| matches!(f, Frame::Advert { src: s, priority } if s == src && *priority > 0))
                .map(|(t, _)| *t)
                .collect()
        };
        let old_last = adverts_from(HOST_ADDRS[0])
            .into_iter()
            .filter(|&t| t < t_kill)
            .max();
        let new_first = adverts_from(HOST_ADDRS[1])
            .into_iter()
            .find(|&t| t >= t_kill);
        let garp = frames
            .iter()
            .find(|(t, f)| {
                *t >= t_kill
                    && matches!(f, Frame::Garp { mac, addr } if *mac == topo.macs[1] && addr == VIP)
            })
            .map(|(t, _)| *t);
        let neigh = topo.cl.neighbour(VIP);
        let s = Sample {
            case,
            gap: first.at - t_kill,
            outage: last_before.map_or(first.at - t_kill, |a| first.at - a.at),
            takeover: new_first.map(|t| t - t_kill),
            adverts_gap: new_first.zip(old_last).map(|(n, o)| n - o),
            garp: garp.map(|t| t - t_kill),
            lost: client.unanswered(from_seq, first.seq),
            neigh_moved: neigh.as_ref().is_some_and(|(m, _)| *m == topo.macs[1]),
        };
        let o = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1}", ms(d)));
        eprintln!(
            "  vrrp {} rep {rep}: gap {:.1} ms (outage {:.1}), backup's first advert {} ms, \
             GARP {} ms after the kill, advert gap {} ms, {} lost, client neighbour {:?}",
            case.short(),
            ms(s.gap),
            ms(s.outage),
            o(s.takeover),
            o(s.garp),
            o(s.adverts_gap),
            s.lost,
            neigh
        );
        samples.push(s);
        // The dead host comes back: its VIP (left by the SIGKILL) is removed, then its
        // programs start again and h1 preempts.
        let _ = topo.hosts[0].try_ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
        run.hosts[0].sipfront = None;
        run.hosts[0].keepalived = None;
        run.start(0);
    }
    run.stop_all();
    samples
}

pub fn table(samples: &[Sample], ka_version: Option<&str>) -> String {
    let mut t = String::new();
    let skew = (256 - PRIORITIES[1] as u64) as f64 * ADVERT_MS as f64 / 256.0;
    let skew_cs = (256 - PRIORITIES[1] as u64) * (ADVERT_MS / 10) / 256;
    let _ = writeln!(
        t,
        "VRRP failover: SIGKILL of the master host (priority {}) until the client's requests \
         (one every {} ms to the VIP) are answered through the backup (priority {}); advert \
         interval {ADVERT_MS} ms. The backup's Master_Down_Interval = 3 x {ADVERT_MS} ms + \
         Skew_Time: {} ms with Skew_Time truncated to whole centiseconds ({skew_cs} cs, as \
         sipfront computes it), {:.1} ms with the fraction kept (keepalived: skew {skew:.1} ms)",
        PRIORITIES[0],
        SEND_EVERY.as_millis(),
        PRIORITIES[1],
        3 * ADVERT_MS + skew_cs * 10,
        3.0 * ADVERT_MS as f64 + skew
    );
    if let Some(v) = ka_version {
        let _ = writeln!(t, "keepalived: {v} (vrrp_version 3, advert_int 0.03)");
    }
    let _ = writeln!(
        t,
        "{:<32} {:>4} {:>22} {:>22} {:>22} {:>22} {:>9} {:>6}",
        "case",
        "reps",
        "gap ms min/med/max",
        "takeover ms",
        "GARP ms",
        "advert gap ms",
        "lost med",
        "neigh"
    );
    for case in [Case::Sipfront, Case::Keepalived] {
        let ss: Vec<&Sample> = samples.iter().filter(|s| s.case == case).collect();
        if ss.is_empty() {
            continue;
        }
        let st = |f: &dyn Fn(&Sample) -> Option<Duration>| {
            let v: Vec<f64> = ss.iter().filter_map(|s| f(s)).map(ms).collect();
            if v.is_empty() {
                "-".to_string()
            } else {
                Stats::of(v).fmt()
            }
        };
        let lost = Stats::of(ss.iter().map(|s| s.lost as f64).collect());
        let _ = writeln!(
            t,
            "{:<32} {:>4} {:>22} {:>22} {:>22} {:>22} {:>9.0} {:>6}",
            case.name(),
            ss.len(),
            st(&|s| Some(s.gap)),
            st(&|s| s.takeover),
            st(&|s| s.garp),
            st(&|s| s.adverts_gap),
            lost.med,
            format!(
                "{}/{}",
                ss.iter().filter(|s| s.neigh_moved).count(),
                ss.len()
            )
        );
    }
    for case in [Case::Sipfront, Case::Keepalived] {
        let gaps: Vec<String> = samples
            .iter()
            .filter(|s| s.case == case)
            .map(|s| format!("{:.0}", ms(s.gap)))
            .collect();
        if !gaps.is_empty() {
            let _ = writeln!(t, "gaps {} (ms): {}", case.short(), gaps.join(" "));
        }
    }
    let med = |c: Case| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.case == c)
            .map(|s| ms(s.gap))
            .collect();
        (!v.is_empty()).then(|| Stats::of(v).med)
    };
    if let Some(sf) = med(Case::Sipfront) {
        let _ = write!(
            t,
            "goal: sipfront median gap < 150 ms: {}",
            if sf < 150.0 { "met" } else { "MISSED" }
        );
        if let Some(ka) = med(Case::Keepalived) {
            let _ = write!(
                t,
                "; below keepalived's ({sf:.1} vs {ka:.1} ms): {}",
                if sf < ka { "yes" } else { "NO" }
            );
        }
        let _ = writeln!(t);
    }
    t.push_str(
        "gap: kill -> first answer through the backup (to a request sent after the kill). \
         takeover: kill -> the backup's first advert. GARP: kill -> its first gratuitous ARP \
         for the VIP. advert gap: the old master's last advert -> the new master's first \
         (Master_Down as the wire shows it). lost: requests sent after the kill and never \
         answered. neigh: reps after which the client's neighbour entry for the VIP held \
         the backup's MAC.\n",
    );
    t
}
