//! Phase "latency": OPTIONS requests at a fixed rate, round robin over the clients
//! that hold a flow, each timed from just before `sendmsg` to the kernel's arrival
//! stamp of its 200 (both `CLOCK_REALTIME`). The loop sleeps (`ppoll`) until the next
//! send time or a reply, so it neither spins nor delays replies.
//!
//! The paths (through each proxy, straight to the backend) run in turns of half a
//! second each, so a burst of load from other programs on the host hits all of them
//! alike instead of one whole run; each proxy's via slice is followed by its own
//! direct slice.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use crate::clients;
use crate::pktinfo::{Sock, precise_timers, realtime_ns, wait_readable};
use crate::procfs::Cpu;

/// How long to wait for a slice's last replies after its last send.
const DRAIN: Duration = Duration::from_secs(1);
/// A send this much after its slot counts as late (the pacing fell behind).
const LATE: Duration = Duration::from_millis(1);
const SLICE: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct Latency {
    pub sent: usize,
    /// Round trips in ns, sorted once all slices are in.
    pub rtt_ns: Vec<u64>,
    pub misdelivered: u64,
    pub non_200: u64,
    pub late_sends: usize,
    pub max_late: Duration,
    /// Replies without a kernel timestamp (timed by the clock when read instead).
    pub unstamped: u64,
    /// Time spent in this path's slices.
    pub elapsed: Duration,
}

impl Latency {
    pub fn answered(&self) -> usize {
        self.rtt_ns.len()
    }

    pub fn lost(&self) -> usize {
        self.sent - self.answered() - self.non_200 as usize
    }

    /// The `q` quantile (0..=1) in µs, nearest rank.
    pub fn pct_us(&self, q: f64) -> Option<f64> {
        let n = self.rtt_ns.len();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        Some(self.rtt_ns[rank - 1] as f64 / 1e3)
    }
}

/// One proxy's two paths: via the proxy at `via`, and straight to each client's home
/// backend, `direct(client)`. Requests carry the proxy's `tags` (via, direct) in their
/// Call-ID; `pids` are the proxy's processes, whose CPU is summed over its via slices.
pub struct Pair<'a> {
    pub tags: (char, char),
    pub clients: &'a [usize],
    pub via: SocketAddrV4,
    pub direct: &'a dyn Fn(usize) -> SocketAddrV4,
    pub pids: &'a [u32],
}

/// Both paths of one proxy, and its CPU time during the via slices.
#[derive(Default)]
pub struct Paths {
    pub via: Latency,
    pub direct: Latency,
    pub via_cpu: Cpu,
}

/// Sends `rate × seconds` requests on each path of each pair, one slice at a time in
/// turn (pair 0 via, pair 0 direct, pair 1 via, ...): request `k` of a path goes from
/// `clients[k % len]`. Requests are numbered from `base` (a distinct range per call,
/// so a straggler of an earlier call can never pass for an answer of this one).
pub fn rotate(socks: &[Sock], pairs: &[Pair], rate: u64, seconds: u64, base: usize) -> Vec<Paths> {
    precise_timers();
    let total = (rate * seconds) as usize;
    let per_slice = ((rate as f64 * SLICE.as_secs_f64()) as usize).max(1);
    let mut out: Vec<Paths> = pairs.iter().map(|_| Paths::default()).collect();
    let mut done = 0;
    while done < total {
        let n = per_slice.min(total - done);
        let first = base + done;
        for (pair, p) in pairs.iter().zip(&mut out) {
            let c0 = Cpu::of_all(pair.pids);
            let via = |_| pair.via;
            slice(
                socks,
                pair.clients,
                &via,
                pair.tags.0,
                rate,
                first,
                n,
                &mut p.via,
            );
            p.via_cpu = p.via_cpu + (Cpu::of_all(pair.pids) - c0);
            let (tag, direct) = (pair.tags.1, pair.direct);
            slice(
                socks,
                pair.clients,
                direct,
                tag,
                rate,
                first,
                n,
                &mut p.direct,
            );
        }
        done += n;
    }
    for p in &mut out {
        p.via.rtt_ns.sort_unstable();
        p.direct.rtt_ns.sort_unstable();
    }
    out
}

/// Requests `first..first + n` of one path, paced at `rate`, added to `l`.
#[allow(clippy::too_many_arguments)]
fn slice(
    socks: &[Sock],
    clients: &[usize],
    dest: &dyn Fn(usize) -> SocketAddrV4,
    tag: char,
    rate: u64,
    first: usize,
    n: usize,
    l: &mut Latency,
) {
    let mut sent_at = vec![0u64; n];
    let mut got = vec![false; n];
    let mut answered = 0;
    let start = Instant::now() + Duration::from_millis(5);
    let due = |j: usize| start + Duration::from_nanos((j as u64 * 1_000_000_000) / rate);
    let drain_end = due(n - 1) + DRAIN;
    let client = |j: usize| clients[(first + j) % clients.len()];
    let mut buf = vec![0u8; 65536];
    let mut j = 0;
    loop {
        let mut now = Instant::now();
        while j < n && due(j) <= now {
            let c = client(j);
            let pkt = clients::options(c, tag, first + j);
            let late = now - due(j);
            if late > LATE {
                l.late_sends += 1;
            }
            l.max_late = l.max_late.max(late);
            sent_at[j] = realtime_ns();
            // A failed send is a lost request, as on a real network.
            let _ = socks[clients::sock(c)].send_from(clients::ip(c), dest(c), &pkt);
            j += 1;
            l.sent += 1;
            now = Instant::now();
        }
        for s in socks {
            while let Ok(Some(d)) = s.recv(&mut buf) {
                let read_at = realtime_ns();
                let Some(rep) = clients::parse_reply(&buf[..d.len]) else {
                    continue;
                };
                // Late replies of an earlier slice are not this slice's.
                let Some(k) = rep.n.checked_sub(first).filter(|&k| k < j) else {
                    continue;
                };
                if rep.tag != tag || got[k] {
                    continue;
                }
                let c = client(k);
                if d.to != clients::ip(c) || s.port != clients::port(c) || d.from != dest(c) {
                    l.misdelivered += 1;
                    continue;
                }
                got[k] = true;
                answered += 1;
                if rep.status != 200 {
                    l.non_200 += 1;
                    continue;
                }
                let at = d.stamp_ns.unwrap_or_else(|| {
                    l.unstamped += 1;
                    read_at
                });
                l.rtt_ns.push(at.saturating_sub(sent_at[k]));
            }
        }
        if j == n && (answered == n || Instant::now() >= drain_end) {
            break;
        }
        wait_readable(socks, if j < n { due(j) } else { drain_end });
    }
    l.elapsed += start.elapsed();
}
