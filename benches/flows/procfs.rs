//! What `/proc` says about the proxies and the kernel: CPU time, resident memory, open
//! files, the slab, and the open-file limit that bounds how many flows fit.

use std::fs;
use std::net::Ipv4Addr;

pub use crate::procs::Cpu;

/// A `Name:   123 kB` line of a /proc file, in kB; 0 if absent.
fn kb(path: &str, key: &str) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn rss_kb(pid: u32) -> u64 {
    kb(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// `pid` and its descendants (nginx's master and workers), from `/proc/*/stat`.
pub fn family(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| {
                    let s = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
                    // After the command name: state, then ppid.
                    let ppid = s[s.rfind(')')? + 1..].split_whitespace().nth(1)?;
                    Some((p, ppid.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|&&(_, pp)| pp == parent)
                .map(|&(p, _)| p),
        );
        i += 1;
    }
    out
}

/// Kernel slab memory of the whole host (sockets, inodes, dentries, epoll items...).
pub fn slab_kb() -> u64 {
    kb("/proc/meminfo", "Slab:")
}

pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// `Max open files` of a running process: (soft, hard).
pub fn nofile_of(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut v = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| s.and_then(|s| s.parse().ok()).or(Some(u64::MAX));
    Some((parse(v.next())?, parse(v.next())?))
}

/// Raises this process's soft open-file limit to its hard limit (children inherit it,
/// and sipfront does not raise its own). Returns the hard limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a live local.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &want);
        }
        r.rlim_max
    }
}

/// UDP ports in `range` that some socket holds on one of `ips` or on 0.0.0.0 (which
/// blocks the port on every address), from `/proc/net/udp`.
pub fn udp_ports_taken(ips: &[Ipv4Addr], range: (u16, u16)) -> Vec<(Ipv4Addr, u16)> {
    let text = fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let mut out: Vec<(Ipv4Addr, u16)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (ip, port) = l.split_whitespace().nth(1)?.split_once(':')?;
            // The address is printed as the raw network-order word in host order.
            let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_ne_bytes());
            let port = u16::from_str_radix(port, 16).ok()?;
            let here = ip.is_unspecified() || ips.contains(&ip);
            (here && (range.0..=range.1).contains(&port)).then_some((ip, port))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
