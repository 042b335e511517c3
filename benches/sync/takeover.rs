//! `--takeover`: reachability of every phone after a takeover in relay prefix mode
//! (issue 15: "every phone is reachable within 1 s of the VIP move, no binding").
//!
//! Namespaces of the bench's own on one bridge (10.79.0.0/24): phones (`cl`, .2), the
//! sipfront pair h1 (.11, VRRP priority 150) and h2 (.12, 100) with `[vrrp]` (VIP .100,
//! adverts every 100 ms) and `[sync]`, and the backend (`be`, .5:5060). Both hosts: SIP on
//! the VIP, `relay_prefix = "10.200.0.0/15"` (sipfront makes it local itself),
//! `relay_port = 5062`; the backend routes the prefix via the VIP, the hosts route the
//! phones' 10.96.0.0/12 via `cl`, which makes it local (AnyIP) so one wildcard socket with
//! `IP_PKTINFO` is every phone (10.96.0.1 and up, port 5060).
//!
//! 1. N phones REGISTER through the VIP (h1); the backend answers 200 (`Expires: 3600`) and
//!    notes each phone's relay endpoint (the REGISTER's source). h2 mirrors every flow.
//! 2. Baseline: the backend sends an OPTIONS to every relay endpoint (a window in flight,
//!    retransmission after 300 ms), the phones answer 200: time until all answered
//!    through h1 (what this machine needs to push N round trips through sipfront).
//! 3. h1's sipfront is SIGKILLed (the VIP stays on its interface, like a hung host); when
//!    h2 holds the VIP (polled with `ip addr`, a few ms resolution) the backend starts
//!    the same round: time from the VIP move until the first answer, 50 %, 99.9 % and
//!    all phones answered, retransmissions, h2's open files. With `--stride K` this round
//!    asks every K-th phone only: a sample spread over the whole table that this machine
//!    can push through in well under a second (the full round is bound by its rate, see
//!    the baseline); a second round through h2 then asks every other phone.
//!
//! With `--offsets` too, K takeovers run one after the other, each with fresh processes
//! and the same phones, the j-th asking phones j, j + K, j + 2K, ... first: over the K
//! runs every phone is in one sample, asked right at the VIP move. The summary gives,
//! per run, when the last phone of its sample answered, and how many of the N phones
//! answered within 1 s of the VIP move in the run whose sample held them (a run counts
//! only if its whole sample answered within 1 s).

use super::*;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use testkit::{Lan, Netns};

use crate::pktinfo::{Sock, wait_readable};
use crate::prefix::{Phones, answer_200, call_id_index, fast_backend, register_many};

const VIP: &str = "10.79.0.100";
const CL_ADDR: &str = "10.79.0.2";
const HOSTS: [&str; 2] = ["10.79.0.11", "10.79.0.12"];
const PRIORITIES: [u8; 2] = [150, 100];
const BE_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 79, 0, 5), 5060);
const PHONE_NET: &str = "10.96.0.0/12";
const RELAY_PREFIX: &str = "10.200.0.0/15";
pub const TAKEOVER_CAPACITY: usize = 1 << 17;
const PHONE_PORT: u16 = 5060;
const ADMIN: &str = "127.0.0.1:9090";
/// Probe Call-IDs are `P{round × ROUND + i}`.
const ROUND: usize = 10_000_000;
const RETRANSMIT: Duration = Duration::from_millis(300);

fn phone_ip(i: usize) -> Ipv4Addr {
    let i = i as u32;
    let net = i / 254;
    Ipv4Addr::new(
        10,
        (96 + net / 256) as u8,
        (net % 256) as u8,
        (1 + i % 254) as u8,
    )
}

const PHONES: Phones = Phones {
    ip: phone_ip,
    port: PHONE_PORT,
    to: SocketAddrV4::new(Ipv4Addr::new(10, 79, 0, 100), 5060),
};

fn host_toml(i: usize, key_file: &Path) -> String {
    format!(
        "[listen]\nsip = [\"{VIP}:5060\"]\nrelay_prefix = \"{RELAY_PREFIX}\"\nrelay_port = 5062\n\n\
         [[backend]]\nname = \"be\"\naddr = \"{BE_ADDR}\"\n\n\
         [limits]\nnew_flows_per_ip = 100000\nnew_flows_burst = 100000\n\
         max_flows_per_ip = 10000000\ndatagrams_per_ip = 100000000\ndatagrams_burst = 100000000\n\n\
         [health]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\n\
         [admin]\nlisten = \"{ADMIN}\"\n\n\
         [vrrp]\ninterface = \"eth0\"\nvrid = 52\npriority = {}\nadvert_interval = \"100ms\"\n\
         vips = [\"{VIP}/24\"]\ntrack_backends = 0\n\n\
         [sync]\nlisten = \"{}:{SYNC_PORT}\"\npeer = \"{}:{SYNC_PORT}\"\nkey_file = \"{}\"\n",
        PRIORITIES[i],
        HOSTS[i],
        HOSTS[1 - i],
        key_file.display()
    )
}

/// The backend's shared state: relay endpoints learnt from REGISTERs, probe answers.
struct Be {
    sock: Arc<UdpSocket>,
    base: Instant,
    endpoints: Mutex<Vec<Option<SocketAddrV4>>>,
    round: AtomicUsize,
    /// ns since `base` of the first answer of the current round per phone (0: none).
    answered_at: Vec<AtomicU64>,
    answered: AtomicUsize,
    stop: AtomicBool,
}

impl Be {
    fn handle(&self, d: &[u8], from: SocketAddrV4) -> Option<Vec<u8>> {
        if d.starts_with(b"SIP/2.0 200") {
            let v = call_id_index(d, b"Call-ID: P")?;
            let (round, i) = (v / ROUND, v % ROUND);
            if round == self.round.load(Ordering::Relaxed) && i < self.answered_at.len() {
                let t = self.base.elapsed().as_nanos() as u64;
                if self.answered_at[i]
                    .compare_exchange(0, t.max(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    self.answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            return None;
        }
        if d.starts_with(b"REGISTER ")
            && let Some(i) = call_id_index(d, b"Call-ID: R")
            && let Some(e) = self.endpoints.lock().unwrap().get_mut(i)
        {
            *e = Some(from);
        }
        answer_200(d)
    }
}

fn options(i: usize, v: usize, ep: SocketAddrV4) -> Vec<u8> {
    format!(
        "OPTIONS sip:u{i}@{ep} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {BE_ADDR};branch=z9hG4bK-p{v}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:be@{BE_ADDR}>;tag=be{v}\r\n\
         To: <sip:u{i}@{ep}>\r\n\
         Call-ID: P{v}@be\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

struct Probe {
    /// Answer times (ms after `from`), sorted; phones that never answered are missing.
    times_ms: Vec<f64>,
    wanted: usize,
    sends: u64,
    retransmits: u64,
    elapsed: Duration,
}

impl Probe {
    /// When the last phone answered, if all did.
    fn all_ms(&self) -> Option<f64> {
        (self.times_ms.len() == self.wanted)
            .then(|| self.times_ms.last().copied())
            .flatten()
    }

    fn pct(&self, p: f64) -> Option<f64> {
        let k = ((self.wanted as f64 * p / 100.0).ceil() as usize).max(1);
        self.times_ms.get(k - 1).copied()
    }
}

/// One OPTIONS to every relay endpoint in `eps` (phone index, endpoint), `window` in flight,
/// unanswered ones again every 300 ms; answer times are taken from `from`.
fn probe_round(
    be: &Be,
    round: usize,
    eps: &[(usize, SocketAddrV4)],
    window: usize,
    from: Instant,
    limit: Duration,
) -> Probe {
    for a in &be.answered_at {
        a.store(0, Ordering::Relaxed);
    }
    be.answered.store(0, Ordering::Relaxed);
    be.round.store(round, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut last_sent = vec![t0; eps.len()];
    let (mut next, mut sends, mut retransmits) = (0, 0u64, 0u64);
    let mut last_scan = t0;
    let send = |k: usize| {
        let (i, ep) = eps[k];
        let _ = be.sock.send_to(&options(i, round * ROUND + i, ep), ep);
    };
    loop {
        let answered = be.answered.load(Ordering::Relaxed);
        if answered >= eps.len() || t0.elapsed() >= limit {
            break;
        }
        let mut burst = 0;
        while next < eps.len() && next - answered.min(next) < window && burst < 256 {
            send(next);
            last_sent[next] = Instant::now();
            next += 1;
            sends += 1;
            burst += 1;
        }
        let now = Instant::now();
        if now.duration_since(last_scan) >= Duration::from_millis(50) {
            last_scan = now;
            for k in 0..next {
                let (i, _) = eps[k];
                if be.answered_at[i].load(Ordering::Relaxed) == 0
                    && now.duration_since(last_sent[k]) >= RETRANSMIT
                {
                    send(k);
                    last_sent[k] = now;
                    sends += 1;
                    retransmits += 1;
                }
            }
        }
        if burst == 0 {
            sleep(Duration::from_micros(200));
        }
    }
    let elapsed = t0.elapsed();
    // Late answers still count until the limit.
    let off = from.duration_since(be.base).as_nanos() as f64;
    let mut times_ms: Vec<f64> = eps
        .iter()
        .filter_map(|&(i, _)| {
            let t = be.answered_at[i].load(Ordering::Relaxed);
            (t != 0).then(|| (t as f64 - off) / 1e6)
        })
        .collect();
    times_ms.sort_by(f64::total_cmp);
    Probe {
        times_ms,
        wanted: eps.len(),
        sends,
        retransmits,
        elapsed,
    }
}

/// Whole milliseconds, or `-`.
fn fmt_ms(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.0}"))
}

fn fmt_probe(p: &Probe) -> String {
    let f = fmt_ms;
    format!(
        "{} of {} answered; first {} ms, 50 % {} ms, 99 % {} ms, 99.9 % {} ms, all {} ms; \
         {} OPTIONS sent ({} retransmissions), round {:.0} ms",
        p.times_ms.len(),
        p.wanted,
        f(p.times_ms.first().copied()),
        f(p.pct(50.0)),
        f(p.pct(99.0)),
        f(p.pct(99.9)),
        f(p.all_ms()),
        p.sends,
        p.retransmits,
        p.elapsed.as_secs_f64() * 1000.0
    )
}

/// The pair's LAN (testkit's bridge): the phones' side `cl`, hosts `h1` and `h2`, the
/// backend `be`.
struct Topo(Lan);

impl Topo {
    fn new() -> Topo {
        let lan = Lan::create(
            "sfto",
            "10.79.0",
            "02:79:00:00:00",
            &[("cl", 2), ("h1", 11), ("h2", 12), ("be", 5)],
        );
        let t = Topo(lan);
        t.cl()
            .ip(&["route", "add", "local", PHONE_NET, "dev", "lo"]);
        for i in 0..2 {
            t.host(i).ip(&["route", "add", PHONE_NET, "via", CL_ADDR]);
        }
        t.be().ip(&["route", "add", RELAY_PREFIX, "via", VIP]);
        t
    }

    fn cl(&self) -> &Netns {
        &self.0.host("cl").ns
    }

    /// Host `i` (0: h1, 1: h2).
    fn host(&self, i: usize) -> &Netns {
        &self.0.host(["h1", "h2"][i]).ns
    }

    fn be(&self) -> &Netns {
        &self.0.host("be").ns
    }
}

/// What one takeover run showed (times from the VIP move).
pub struct Takeover {
    /// Kill → VIP held by h2.
    pub vip_ms: f64,
    /// Phones asked first (the sample), answered, and when the last of them answered.
    pub sample: usize,
    pub sample_answered: Vec<usize>,
    pub sample_all_ms: Option<f64>,
    /// The phones asked after the sample: how many, answered, and when the last did.
    pub rest: usize,
    pub rest_answered: usize,
    pub rest_all_ms: Option<f64>,
    /// The round through h1 before the kill: when the last phone answered (ms after
    /// the first send).
    pub baseline_all_ms: Option<f64>,
}

/// One takeover; with `stride` > 1 the phones `offset`, `offset + stride`, ... are
/// asked first, the others after them.
pub fn run_takeover(n: usize, window: usize, stride: usize, offset: usize, keep: bool) -> Takeover {
    let work = tempfile::Builder::new()
        .prefix("sipfront-sync-takeover-bench-")
        .tempdir()
        .expect("temp dir");
    let dir = work.path().to_path_buf();
    let topo = Topo::new();
    let key_file = write_key(&dir);

    // The backend: its socket lives in `be`, its thread anywhere.
    let sock = topo
        .be()
        .enter(|| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
            let _ = s.set_recv_buffer_size(16 << 20);
            let _ = s.set_send_buffer_size(16 << 20);
            s.bind(&SocketAddr::V4(BE_ADDR).into())?;
            std::io::Result::Ok(UdpSocket::from(s))
        })
        .expect("bind backend");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let be = Arc::new(Be {
        sock: Arc::new(sock),
        base: Instant::now(),
        endpoints: Mutex::new(vec![None; n]),
        round: AtomicUsize::new(0),
        answered_at: (0..n).map(|_| AtomicU64::new(0)).collect(),
        answered: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let be_thread = {
        let be = be.clone();
        std::thread::spawn(move || {
            let s = be.sock.clone();
            fast_backend(&s, Some(&be.stop), |d, from| be.handle(d, from))
        })
    };

    let start = |i: usize, tag: &str| -> Host {
        let cfg = dir.join(format!("h{}.toml", i + 1));
        fs::write(&cfg, host_toml(i, &key_file)).expect("write config");
        let (d, log) = (dir.clone(), format!("sipfront-h{}-{tag}.log", i + 1));
        let mut h = topo
            .host(i)
            .enter(move || Host::start(&d, "127.0.0.1", &cfg, &log));
        h.ns = Some(topo.host(i).name.clone());
        h
    };
    let mut h1 = start(0, "1");
    assert!(
        h1.wait_metric("sipfront_backend_up", Duration::from_secs(15), |v| v == 1.0),
        "h1: backend not up; log:\n{}",
        h1.proc.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(10), || topo
            .host(0)
            .has_addr("eth0", VIP)),
        "h1 never held the VIP; log:\n{}",
        h1.proc.log_text()
    );
    let mut h2 = start(1, "1");
    for h in [&mut h1, &mut h2] {
        assert!(
            h.wait_metric(
                "sipfront_sync_last_full_timestamp_seconds",
                Duration::from_secs(15),
                |v| v > 0.0
            ),
            "not synced; log:\n{}",
            h.proc.log_text()
        );
    }
    assert!(!topo.host(1).has_addr("eth0", VIP), "h2 holds the VIP too");

    // 1. Registration through h1.
    eprintln!("registering {n} phones through the VIP (h1), window {window}");
    let reg = topo
        .cl()
        .enter(|| register_many(&PHONES, n, window, Duration::from_secs(600)));
    let nf = reg.ok as f64;
    let ok1 = h1.wait_metric("sipfront_flows", Duration::from_secs(30), |v| v >= nf);
    let ok2 = h2.wait_metric("sipfront_flows", Duration::from_secs(30), |v| v >= nf);
    let f1 = h1.metric("sipfront_flows", &[]).unwrap_or(0.0);
    let f2 = h2.metric("sipfront_flows", &[]).unwrap_or(0.0);
    eprintln!(
        "registered {} of {n} ({} retransmits) in {:.1} s; flows h1 {f1}, h2 {f2}",
        reg.ok,
        reg.retransmits,
        reg.elapsed.as_secs_f64()
    );
    assert!(ok1 && ok2, "flows: h1 {f1}, h2 {f2}, registered {}", reg.ok);
    let eps: Vec<(usize, SocketAddrV4)> = be
        .endpoints
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.map(|e| (i, e)))
        .collect();
    // `--stride K`: the takeover round asks every K-th phone first (spread over the
    // table), the rest after them.
    let stride = stride.max(1);
    let (sample, rest): (Vec<_>, Vec<_>) = eps
        .iter()
        .copied()
        .partition(|&(i, _)| i % stride == offset % stride);
    let distinct: std::collections::HashSet<_> = eps.iter().map(|e| e.1).collect();

    // The phones answer requests from now on.
    let phones_stop = Arc::new(AtomicBool::new(false));
    let phones = {
        let stop = phones_stop.clone();
        topo.cl().spawn_in(move || {
            let sock = Sock::bind_wildcard(PHONE_PORT).expect("bind phones");
            let mut buf = vec![0u8; 4096];
            let mut answered = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut got = false;
                while let Ok(Some(d)) = sock.recv(&mut buf) {
                    got = true;
                    if let Some(resp) = answer_200(&buf[..d.len]) {
                        let _ = sock.send_from(d.to, d.from, &resp);
                        answered += 1;
                    }
                }
                if !got {
                    wait_readable(
                        std::slice::from_ref(&sock),
                        Instant::now() + Duration::from_millis(50),
                    );
                }
            }
            answered
        })
    };

    // 2. Baseline through h1.
    sleep(Duration::from_millis(300));
    let t = Instant::now();
    let base = probe_round(&be, 1, &eps, window, t, Duration::from_secs(30));
    eprintln!("baseline via h1: {}", fmt_probe(&base));
    sleep(Duration::from_millis(500));

    // 3. Takeover.
    let h2_cpu0 = cpu_ms(h2.proc.pid());
    let t_kill = Instant::now();
    h1.proc.kill();
    let moved = wait_until(Duration::from_secs(5), || {
        topo.host(1).has_addr("eth0", VIP)
    });
    let t_vip = Instant::now();
    let vip_ms = t_vip.duration_since(t_kill).as_secs_f64() * 1000.0;
    assert!(moved, "h2 never took the VIP; log:\n{}", h2.proc.log_text());
    let after = probe_round(&be, 2, &sample, window, t_vip, Duration::from_secs(30));
    let sample_answered: Vec<usize> = sample
        .iter()
        .filter(|&&(i, _)| be.answered_at[i].load(Ordering::Relaxed) != 0)
        .map(|&(i, _)| i)
        .collect();
    eprintln!("after takeover via h2: {}", fmt_probe(&after));
    let later = (!rest.is_empty())
        .then(|| probe_round(&be, 3, &rest, window, t_vip, Duration::from_secs(30)));
    if let Some(l) = &later {
        eprintln!("the other phones via h2: {}", fmt_probe(l));
    }
    let h2_cpu = cpu_ms(h2.proc.pid()) - h2_cpu0;
    let h2_fds = fs::read_dir(format!("/proc/{}/fd", h2.proc.pid()))
        .map(|d| d.count())
        .unwrap_or(0);
    let h2_state = h2.metric("sipfront_vrrp_state", &[]);
    let h2_flows = h2.metric("sipfront_flows", &[]);
    let neigh = topo.be().neighbour(VIP);
    let h2_mac = topo.host(1).mac("eth0");

    phones_stop.store(true, Ordering::Relaxed);
    let phone_answers = phones.join().unwrap_or(0);
    be.stop.store(true, Ordering::Relaxed);
    let _ = be_thread.join();

    let mut r = String::new();
    let _ = writeln!(
        r,
        "sipfront takeover bench, relay prefix mode ({RELAY_PREFIX}, relay_port 5062), a VRRP \
         pair (adverts 100 ms, priorities 150/100) with [sync], {n} phones (10.96.0.1 and up, \
         one socket with IP_PKTINFO), OPTIONS window {window}"
    );
    let _ = writeln!(
        r,
        "1. registration through h1: {} answered, {} failed, {} retransmits in {:.1} s ({:.0}/s); \
         flows h1 {f1}, h2 {f2}; {} relay endpoints learnt by the backend, {} distinct",
        reg.ok,
        reg.failed,
        reg.retransmits,
        reg.elapsed.as_secs_f64(),
        nf / reg.elapsed.as_secs_f64(),
        eps.len(),
        distinct.len()
    );
    let _ = writeln!(
        r,
        "2. baseline, OPTIONS from the backend to every relay endpoint through h1 (times from \
         the first send): {}",
        fmt_probe(&base)
    );
    let _ = writeln!(
        r,
        "3. h1's sipfront SIGKILLed; h2 held the VIP {:.0} ms later (polled); OPTIONS to every \
         relay endpoint{} from then, through h2 (times from the VIP move): {}",
        vip_ms,
        if stride > 1 {
            format!(" of every {stride}th phone from phone {}", offset % stride)
        } else {
            String::new()
        },
        fmt_probe(&after)
    );
    if let Some(l) = &later {
        let _ = writeln!(
            r,
            "   then the other {} phones through h2 (times from the VIP move): {}",
            rest.len(),
            fmt_probe(l)
        );
    }
    let _ = writeln!(
        r,
        "   h2 after: vrrp_state {h2_state:?}, flows {h2_flows:?}, {h2_fds} open files, CPU \
         {h2_cpu:.0} ms from the kill to the end of the rounds; backend's neighbour entry \
         for the VIP: {neigh:?} (h2's MAC {h2_mac}); phones answered {phone_answers} requests in all"
    );
    publish(&r, &format!("sync-takeover-bench-{}.txt", offset % stride));
    drop(h1);
    drop(h2);
    drop(topo);
    keep_work(work, keep);
    Takeover {
        vip_ms,
        sample: sample.len(),
        sample_answered,
        sample_all_ms: after.all_ms(),
        rest: rest.len(),
        rest_answered: later.as_ref().map_or(0, |l| l.times_ms.len()),
        rest_all_ms: later.as_ref().and_then(Probe::all_ms),
        baseline_all_ms: base.all_ms(),
    }
}

/// `--reps N` (without `--offsets`): N takeovers, each asking the same phones in the
/// same order, and a summary of when all of them answered.
pub fn run_reps(n: usize, window: usize, stride: usize, reps: usize, keep: bool) {
    let mut runs = Vec::new();
    for k in 0..reps {
        eprintln!("takeover {} of {reps}", k + 1);
        runs.push(run_takeover(n, window, stride, 0, keep));
    }
    if reps < 2 {
        return;
    }
    let f = fmt_ms;
    let mut r = String::new();
    let _ = writeln!(
        r,
        "sipfront takeover bench, {reps} takeovers with {n} phones each (times from the VIP \
         move, ms):"
    );
    for (k, t) in runs.iter().enumerate() {
        let _ = writeln!(
            r,
            "   run {k}: VIP held {:.0} ms after the kill; the asked {} of {} answered, all by {}; \
             baseline round through h1 before the kill: all by {}",
            t.vip_ms,
            t.sample_answered.len(),
            t.sample,
            f(t.sample_all_ms),
            f(t.baseline_all_ms)
        );
    }
    publish(&r, "sync-takeover-reps.txt");
}

/// `--offsets`: `stride` takeovers, the j-th asking phones j, j + stride, ... first;
/// a summary of when each run's sample answered and how many phones were shown
/// reachable within 1 s of a VIP move.
pub fn run_offsets(n: usize, window: usize, stride: usize, keep: bool) {
    let mut runs = Vec::new();
    let mut within_1s = vec![false; n];
    for j in 0..stride {
        eprintln!(
            "takeover {} of {stride}: phones {j}, {}, ... first",
            j + 1,
            j + stride
        );
        let t = run_takeover(n, window, stride, j, keep);
        if t.sample_all_ms.is_some_and(|ms| ms <= 1000.0) {
            for &i in &t.sample_answered {
                if let Some(w) = within_1s.get_mut(i) {
                    *w = true;
                }
            }
        }
        runs.push(t);
    }
    let f = fmt_ms;
    let mut r = String::new();
    let _ = writeln!(
        r,
        "sipfront takeover bench, {stride} takeovers with {n} phones each; run j asks phones \
         j, j + {stride}, ... first (times from the VIP move, ms):"
    );
    for (j, t) in runs.iter().enumerate() {
        let _ = writeln!(
            r,
            "   run {j}: VIP held {:.0} ms after the kill; sample {} of {} answered, all by {}; \
             the other phones {} of {} answered, all by {}",
            t.vip_ms,
            t.sample_answered.len(),
            t.sample,
            f(t.sample_all_ms),
            t.rest_answered,
            t.rest,
            f(t.rest_all_ms)
        );
    }
    let last = runs
        .iter()
        .filter_map(|t| t.sample_all_ms)
        .max_by(f64::total_cmp);
    let _ = writeln!(
        r,
        "   every phone in its run's sample: {} of {n} phones answered within 1 s of the VIP \
         move (the last sample done {} ms after its VIP move)",
        within_1s.iter().filter(|&&w| w).count(),
        f(last)
    );
    publish(&r, "sync-takeover-offsets.txt");
}
