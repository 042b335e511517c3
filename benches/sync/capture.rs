//! tcpdump captures of A's sync datagrams, a pcap reader, and their decoding with the key.

#![allow(dead_code)]

use super::*;

pub struct Capture {
    pub proc: Proc,
    pub file: PathBuf,
}

impl Capture {
    /// tcpdump on lo: UDP datagrams to B's sync port (A's messages).
    pub fn start(dir: &Path, name: &str) -> Capture {
        Capture::start_on(dir, name, "lo", B)
    }

    /// tcpdump on `iface`: UDP datagrams to `dst`'s sync port.
    pub fn start_on(dir: &Path, name: &str, iface: &str, dst: &str) -> Capture {
        let file = dir.join(format!("{name}.pcap"));
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new("tcpdump");
        cmd.args([
            "-i",
            iface,
            "-nn",
            "-U",
            "--immediate-mode",
            "-B",
            "65536",
            "-w",
        ])
        .arg(&file)
        .arg(format!("udp and dst host {dst} and dst port {SYNC_PORT}"));
        let proc = Proc::spawn(&mut cmd, &log);
        let ok = wait_until(Duration::from_secs(10), || {
            fs::read_to_string(&log).is_ok_and(|t| t.contains("listening on"))
        });
        assert!(
            ok,
            "tcpdump did not start: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        Capture { proc, file }
    }

    /// Stops tcpdump and returns (seconds, UDP payload) of the captured datagrams; panics if
    /// the kernel dropped packets.
    pub fn stop(mut self) -> Vec<(f64, Vec<u8>)> {
        sleep(Duration::from_millis(300));
        self.proc.signal("INT");
        let _ = wait_until(Duration::from_secs(5), || !self.proc.running());
        let log = self.proc.log_text();
        if let Some(l) = log.lines().find(|l| l.contains("dropped by kernel")) {
            assert!(l.starts_with("0 "), "capture incomplete: {log}");
        }
        read_pcap(&self.file)
    }
}

pub fn read_pcap(path: &Path) -> Vec<(f64, Vec<u8>)> {
    let data = fs::read(path).unwrap_or_default();
    if data.len() < 24 {
        return Vec::new();
    }
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let le = matches!(magic, 0xa1b2_c3d4 | 0xa1b2_3c4d);
    let nano = matches!(magic, 0xa1b2_3c4d | 0x4d3c_b2a1);
    let rd = |i: usize| {
        let a: [u8; 4] = data[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= data.len() {
        let t = f64::from(rd(i)) + f64::from(rd(i + 4)) / if nano { 1e9 } else { 1e6 };
        let incl = rd(i + 8) as usize;
        let (s, e) = (i + 16, i + 16 + incl);
        if e > data.len() {
            break;
        }
        i = e;
        let f = &data[s..e];
        if f.len() < 42 || f[12..14] != [8, 0] {
            continue;
        }
        let ihl = usize::from(f[14] & 15) * 4;
        let udp = &f[14 + ihl..];
        if f[14 + 9] != 17 || udp.len() < 8 {
            continue;
        }
        let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        if ulen >= 8 && ulen <= udp.len() {
            out.push((t, udp[8..ulen].to_vec()));
        }
    }
    out
}

/// What A sent to B, decoded with the shared key.
#[derive(Default, Debug)]
pub struct Traffic {
    pub hello: (usize, usize),
    pub items: (usize, usize),
    pub full: (usize, usize),
    pub undecodable: usize,
    pub flow_items: usize,
    pub other_items: usize,
    /// Full tables started (chunk 0 seen).
    pub full_tables: usize,
    /// Seconds from the first to the last full-table datagram.
    pub full_span: f64,
}

pub fn classify(dgrams: &[(f64, Vec<u8>)]) -> Traffic {
    let key = Key::new(KEY.as_bytes());
    let mut t = Traffic::default();
    let (mut first, mut last) = (None, 0.0);
    for (ts, d) in dgrams {
        let Ok(env) = open(&key, d) else {
            t.undecodable += 1;
            continue;
        };
        let items: &[Item] = match &env.body {
            Body::Hello { .. } => {
                t.hello.0 += 1;
                t.hello.1 += d.len();
                &[]
            }
            Body::Items(v) => {
                t.items.0 += 1;
                t.items.1 += d.len();
                v
            }
            Body::Full { chunk, items, .. } => {
                t.full.0 += 1;
                t.full.1 += d.len();
                if *chunk == 0 {
                    t.full_tables += 1;
                }
                first.get_or_insert(*ts);
                last = *ts;
                items
            }
        };
        for it in items {
            if matches!(it, Item::Flow { .. }) {
                t.flow_items += 1;
            } else {
                t.other_items += 1;
            }
        }
    }
    t.full_span = first.map_or(0.0, |f| last - f);
    t
}
