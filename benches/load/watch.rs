//! What the sweep (`--sweep`) watches besides the proxy's CPU, to tell the proxy's limit
//! from the load generator's and the machine's: datagrams each process's UDP sockets
//! dropped (the `drops` column of `/proc/net/udp`, by socket inode, matched to the
//! processes through `/proc/PID/fd`), the CPU time of the exited sipp UAC
//! (`getrusage(RUSAGE_CHILDREN)`), and how busy all CPUs of the host were (`/proc/stat`).

use std::collections::HashMap;
use std::fs;

/// Every UDP socket in this network namespace by inode: (local port, drops).
pub fn udp_sockets() -> HashMap<u64, (u16, u64)> {
    let mut out = HashMap::new();
    for f in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = fs::read_to_string(f) else {
            continue;
        };
        for l in text.lines().skip(1) {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            let cols: Vec<&str> = l.split_whitespace().collect();
            let port = cols
                .get(1)
                .and_then(|a| u16::from_str_radix(a.rsplit(':').next()?, 16).ok());
            let inode = cols.get(9).and_then(|i| i.parse().ok());
            let drops = cols.get(12).and_then(|d| d.parse().ok());
            if let (Some(p), Some(i), Some(d)) = (port, inode, drops) {
                out.insert(i, (p, d));
            }
        }
    }
    out
}

/// Inodes of the sockets process `pid` has open.
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    l.to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Datagrams dropped by the UDP sockets of some processes, remembered per socket so that
/// a socket closed before the last look still counts with what it had dropped by then.
#[derive(Debug, Default, Clone)]
pub struct SocketDrops(HashMap<u64, (u16, u64)>);

impl SocketDrops {
    /// The sockets `pids` have open now.
    pub fn of(pids: &[u32]) -> SocketDrops {
        let mut d = SocketDrops::default();
        d.sample(pids);
        d
    }

    /// Looks at the sockets `pids` have open now.
    pub fn sample(&mut self, pids: &[u32]) {
        let table = udp_sockets();
        for &pid in pids {
            for inode in socket_inodes(pid) {
                if let Some(&(port, d)) = table.get(&inode) {
                    let e = self.0.entry(inode).or_insert((port, 0));
                    e.1 = e.1.max(d);
                }
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().map(|v| v.1).sum()
    }

    /// Drops of the sockets bound to local `port`.
    pub fn on_port(&self, port: u16) -> u64 {
        self.0.values().filter(|v| v.0 == port).map(|v| v.1).sum()
    }

    /// Drops since `earlier`, socket by socket.
    pub fn since(&self, earlier: &SocketDrops) -> SocketDrops {
        SocketDrops(
            self.0
                .iter()
                .map(|(i, &(p, d))| {
                    (
                        *i,
                        (p, d.saturating_sub(earlier.0.get(i).map_or(0, |e| e.1))),
                    )
                })
                .collect(),
        )
    }
}

/// Datagrams dropped on full receive buffers during a run, by whose sockets.
#[derive(Debug, Default, Clone, Copy)]
pub struct Drops {
    pub uac: u64,
    pub uas: u64,
    pub proxy: u64,
    /// Of `proxy`: at the socket the clients send to.
    pub proxy_listen: u64,
}

/// User + system CPU of this process's waited-for children, in ms.
pub fn children_cpu_ms() -> f64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// The `cpu` line of `/proc/stat`: busy, of that niced, and all clock ticks over all CPUs
/// since boot.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostCpu {
    busy: u64,
    nice: u64,
    total: u64,
}

impl HostCpu {
    pub fn now() -> HostCpu {
        let text = fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
            return HostCpu::default();
        };
        // user nice system idle iowait irq softirq steal (guest time is inside user)
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let total: u64 = v.iter().sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        HostCpu {
            busy: total - idle,
            nice: v.get(1).copied().unwrap_or(0),
            total,
        }
    }

    /// Shares of all CPUs' time between `earlier` and `self` (0 to 1): busy, and busy in
    /// niced processes (a build at a lower priority, not one of the bench's programs).
    pub fn since(&self, earlier: HostCpu) -> (f64, f64) {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return (0.0, 0.0);
        }
        let share = |a: u64, b: u64| a.saturating_sub(b) as f64 / total as f64;
        (
            share(self.busy, earlier.busy),
            share(self.nice, earlier.nice),
        )
    }
}

/// The host's CPUs (for "% of the machine").
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `net.core.rmem_max`: the largest receive buffer sipp's `-buff_size` can get.
pub fn rmem_max() -> Option<u64> {
    fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()?
        .trim()
        .parse()
        .ok()
}
