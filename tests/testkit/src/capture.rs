//! tcpdump captures: UDP datagrams on the loopback (addresses only), and link-level text
//! in a namespace (to see source MACs and gratuitous ARP).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use crate::lan::Host;
use crate::process::{Proc, TestDir, spawn_error, tail, wait_until};

/// One captured UDP datagram's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Packet {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// A `tcpdump -i lo` capture of UDP datagrams, written to a pcap file in the test
/// directory and read back as text when stopped.
pub struct Capture {
    proc: Proc,
    out: PathBuf,
    err: PathBuf,
}

impl Capture {
    /// Starts capturing `udp and (FILTER)` on the loopback interface and waits until tcpdump
    /// is listening.
    pub fn start(test: &TestDir, name: &str, filter: &str) -> Capture {
        let out = test.join(&format!("{name}.pcap"));
        let err = test.join(&format!("{name}.err"));
        let mut cmd = Command::new("tcpdump");
        // Written raw (`-w`) and turned into text after the capture: formatting text
        // while tens of thousands of datagrams a second arrive on a busy machine lost
        // some to the kernel's buffer.
        cmd.args([
            "-i",
            "lo",
            "-nn",
            "-U",
            "--immediate-mode",
            "-B",
            "16384",
            "-Q",
            "in",
            "-w",
        ])
        .arg(&out)
        .arg(format!("udp and ({filter})"));
        let stdout = File::create(test.join(&format!("{name}.out"))).expect("create capture file");
        let stderr = File::create(&err).expect("create capture err file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| spawn_error("tcpdump", e));
        let mut proc = Proc {
            name: format!("tcpdump {name}"),
            child,
            group: false,
            exited: None,
            logs: vec![err.clone()],
        };
        let ok = wait_until(Duration::from_secs(10), || {
            proc.assert_running();
            fs::read_to_string(&err).is_ok_and(|t| t.contains("listening on"))
        });
        assert!(ok, "tcpdump did not start listening: {}", tail(&err, 10));
        Capture { proc, out, err }
    }

    /// Stops the capture (SIGINT, so tcpdump flushes and reports its counters) and returns
    /// the captured datagrams. Panics if the kernel dropped packets (incomplete capture).
    pub fn stop(mut self) -> Vec<Packet> {
        // Let packets still in flight reach the capture buffer.
        sleep(Duration::from_millis(300));
        self.proc.signal("INT");
        if self.proc.wait_timeout(Duration::from_secs(5)).is_none() {
            self.proc.kill_now();
        }
        let err = fs::read_to_string(&self.err).unwrap_or_default();
        if let Some(line) = err.lines().find(|l| l.contains("dropped by kernel")) {
            let n: u64 = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            assert_eq!(n, 0, "tcpdump capture incomplete: {err}");
        }
        let text = Command::new("tcpdump")
            .args(["-nn", "-r"])
            .arg(&self.out)
            .output()
            .unwrap_or_else(|e| spawn_error("tcpdump", e));
        assert!(
            text.status.success(),
            "tcpdump -r {}: {}",
            self.out.display(),
            String::from_utf8_lossy(&text.stderr)
        );
        String::from_utf8_lossy(&text.stdout)
            .lines()
            .filter_map(parse_tcpdump_line)
            .collect()
    }
}

/// Parses `12:00:00.000000 IP 127.0.0.1.20001 > 127.0.0.1.25070: ...`.
pub fn parse_tcpdump_line(line: &str) -> Option<Packet> {
    let mut it = line.split_whitespace();
    it.find(|t| *t == "IP")?;
    let src = it.next()?;
    if it.next()? != ">" {
        return None;
    }
    let dst = it.next()?.trim_end_matches(':');
    Some(Packet {
        src: dotted_addr(src)?,
        dst: dotted_addr(dst)?,
    })
}

/// `127.0.0.1.5060` -> `127.0.0.1:5060`.
fn dotted_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.rsplit_once('.')?;
    format!("{ip}:{port}").parse().ok()
}

/// Splits datagrams sent to backends into those from sipfront's relay ports and the rest,
/// asserting that the rest come from at most `max_probe_sockets` source ports (sipfront's
/// OPTIONS health-probe socket(s), the only other sender to a backend in these tests).
pub fn split_relay_traffic(
    packets: &[Packet],
    relay_ports: std::ops::RangeInclusive<u16>,
    max_probe_sockets: usize,
) -> (Vec<Packet>, Vec<Packet>) {
    let (relayed, other): (Vec<Packet>, Vec<Packet>) = packets
        .iter()
        .partition(|p| relay_ports.contains(&p.src.port()));
    let probe_ports: BTreeSet<u16> = other.iter().map(|p| p.src.port()).collect();
    assert!(
        probe_ports.len() <= max_probe_sockets,
        "datagrams to backends from outside relay_ports {relay_ports:?} other than the health \
         probe socket: source ports {probe_ports:?}"
    );
    (relayed, other)
}

/// For each source port, the set of destination ports it sent to.
/// Backend ports each relay endpoint (source address) sent to.
pub fn destinations_by_source(packets: &[Packet]) -> BTreeMap<SocketAddr, BTreeSet<u16>> {
    let mut m: BTreeMap<SocketAddr, BTreeSet<u16>> = BTreeMap::new();
    for p in packets {
        m.entry(p.src).or_default().insert(p.dst.port());
    }
    m
}

/// `tcpdump -e -nn -l -i eth0 FILTER` in a namespace, text output (with the link-level
/// header, to see source MACs) in the test directory.
pub struct NsCapture {
    pub proc: Proc,
    pub out: PathBuf,
}

impl NsCapture {
    pub fn start(dir: &TestDir, host: &Host, name: &str, filter: &str) -> NsCapture {
        let out = dir.join(&format!("{name}.txt"));
        let mut cmd = host.ns.command("tcpdump");
        cmd.args(["-i", "eth0", "-e", "-nn", "-l", "--immediate-mode", "-vv"])
            .arg(filter);
        let proc = spawn_tcpdump(name, &mut cmd, &out);
        NsCapture { proc, out }
    }

    pub fn text(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Gratuitous ARP requests for `vip` (sender = target = vip) seen from `mac`.
    pub fn garps_from(&self, mac: &str, vip: &str) -> usize {
        let who = format!("who-has {vip} ");
        let tell = format!("tell {vip},");
        self.text()
            .lines()
            .filter(|l| {
                l.contains(&format!(" {mac} > ff:ff:ff:ff:ff:ff"))
                    && l.contains("Request")
                    && l.contains(&who)
                    && l.contains(&tell)
            })
            .count()
    }

    pub fn stop(&mut self) {
        stop_tcpdump(&mut self.proc);
    }
}

/// Starts the tcpdump command `cmd` (its console output in `log`) and waits until it listens.
pub fn spawn_tcpdump(name: &str, cmd: &mut Command, log: &Path) -> Proc {
    let mut proc = Proc::spawn(&format!("tcpdump {name}"), cmd, log);
    let ok = wait_until(Duration::from_secs(10), || {
        proc.assert_running();
        fs::read_to_string(log).is_ok_and(|t| t.contains("listening on"))
    });
    assert!(ok, "tcpdump {name} did not start: {}", tail(log, 5));
    proc
}

/// Gives tcpdump a moment for the last packets, then stops it (SIGINT: it flushes).
pub fn stop_tcpdump(proc: &mut Proc) {
    std::thread::sleep(Duration::from_millis(200));
    proc.signal("INT");
    proc.wait_timeout(Duration::from_secs(5));
}
