//! `--prefix`: the full sync of a large table in relay prefix mode (issue 15).
//!
//! A and B each in a network namespace of the bench's own (both bind the wildcard relay
//! socket `0.0.0.0:5062`, so they cannot share one), joined by a veth pair: sync and admin
//! on `10.251.0.2` (A) and `10.251.0.3` (B). Both hosts have the same `[listen]`: SIP on
//! `127.0.0.2:5060`, `relay_prefix = "127.16.0.0/12"`, `relay_port = 5062` (127/8 is
//! local on lo, so no route is needed), backend `127.0.0.5:5060` (in each namespace a
//! backend answering 200, `Expires: 3600`; A's with `recvmmsg`/`sendmmsg`).
//!
//! Clients: one wildcard socket in A's namespace sends every REGISTER with `IP_PKTINFO`
//! from its own address, `127.64.0.1` and up (254 per /24, outside the relay prefix), so N
//! flows need neither N sockets on the clients' side nor on sipfront's.
//!
//! 1. N phones REGISTER through A (a window of requests in flight, retransmission after
//!    1 s, 3 sends at most) while B is synced: the registration rate, A's and B's flows.
//! 2. B is killed (SIGKILL) and started again, `--reps` times: from B's spawn until
//!    `sipfront_sync_last_full_timestamp_seconds` is set and `sipfront_flows` = N, the span
//!    between B's log lines `state sync link up` and `full table received`, B's CPU time
//!    and RSS, and A's full-table datagrams and bytes captured on the veth.

use super::*;

use std::os::fd::AsRawFd;

use crate::pktinfo::Sock;

const NS_A_ADDR: &str = "10.251.0.2";
const NS_B_ADDR: &str = "10.251.0.3";
const SIP_ADDR: &str = "127.0.0.2:5060";
const PREFIX: &str = "127.16.0.0/12";
const RELAY_PORT: u16 = 5062;
const CLIENT_PORT: u16 = 31500;
/// Each host's admin endpoint, on the loopback of its namespace.
const ADMIN: &str = "127.0.0.1:9090";
/// Addresses in 127.16.0.0/12.
pub const PREFIX_CAPACITY: usize = 1 << 20;
/// Clients: 127.64.0.0 and up, host numbers 1..=254 of each /24.
const PER_24: u32 = 254;

pub fn client_ip(i: usize) -> Ipv4Addr {
    let i = i as u32;
    let net = i / PER_24;
    Ipv4Addr::new(
        127,
        (64 + net / 256) as u8,
        (net % 256) as u8,
        (1 + i % PER_24) as u8,
    )
}

/// Where phones live and whom they REGISTER with.
#[derive(Clone, Copy)]
pub struct Phones {
    pub ip: fn(usize) -> Ipv4Addr,
    pub port: u16,
    pub to: SocketAddrV4,
}

pub const BENCH_PHONES: Phones = Phones {
    ip: client_ip,
    port: CLIENT_PORT,
    to: SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 5060),
};

pub fn client_register(ph: &Phones, i: usize) -> Vec<u8> {
    let ip = (ph.ip)(i);
    let port = ph.port;
    format!(
        "REGISTER sip:sync.invalid SIP/2.0\r\n\
         Via: SIP/2.0/UDP {ip}:{port};rport;branch=z9hG4bK-r{i}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:u{i}@sync.invalid>;tag=f{i}\r\n\
         To: <sip:u{i}@sync.invalid>\r\n\
         Call-ID: R{i}@sync\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:u{i}@{ip}:{port}>;expires=3600\r\n\
         Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// The index in a reply's `Call-ID: R<i>@sync`, if it is a 200.
pub fn reply_index(d: &[u8]) -> Option<usize> {
    if !d.starts_with(b"SIP/2.0 200") {
        return None;
    }
    call_id_index(d, b"Call-ID: R")
}

/// The number after `marker` (e.g. `Call-ID: R`).
pub fn call_id_index(d: &[u8], marker: &[u8]) -> Option<usize> {
    let at = d.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let rest = &d[at..];
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

pub fn prefix_config(dir: &Path, own: &str, peer: &str, max_flows: usize) -> PathBuf {
    let key_file = write_key(dir);
    let toml = format!(
        "[listen]\nsip = [\"{SIP_ADDR}\"]\nrelay_prefix = \"{PREFIX}\"\nrelay_port = {RELAY_PORT}\n\n\
         [[backend]]\nname = \"be\"\naddr = \"{BACKEND}\"\n\n\
         [limits]\nmax_flows = {max_flows}\nnew_flows_per_ip = 100000\nnew_flows_burst = 100000\n\
         max_flows_per_ip = 10000000\ndatagrams_per_ip = 100000000\ndatagrams_burst = 100000000\n\n\
         [health]\ninterval = \"1s\"\n\n\
         [admin]\nlisten = \"{ADMIN}\"\n\n\
         [sync]\nlisten = \"{own}:{SYNC_PORT}\"\npeer = \"{peer}:{SYNC_PORT}\"\nkey_file = \"{}\"\n",
        key_file.display()
    );
    let path = dir.join(format!("sipfront-prefix-{own}.toml"));
    fs::write(&path, toml).expect("write config");
    path
}

// ---------------------------------------------------------------------------------------------
// A fast backend: recvmmsg in, sendmmsg out.
// ---------------------------------------------------------------------------------------------

const BATCH: usize = 64;

/// Answers every request with 200 (REGISTERs with `Expires: 3600`), in batches.
pub fn start_fast_backend() -> std::thread::JoinHandle<()> {
    let sock = UdpSocket::bind(BACKEND).expect("bind backend");
    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(16 << 20);
    let _ = socket2::SockRef::from(&sock).set_send_buffer_size(16 << 20);
    std::thread::spawn(move || fast_backend(&sock, None, |req, _| answer_200(req)))
}

/// A 200 to a request (REGISTERs with `Expires: 3600`); None for a response.
pub fn answer_200(req: &[u8]) -> Option<Vec<u8>> {
    if req.starts_with(b"SIP/2.0") || req.trim_ascii().is_empty() {
        return None;
    }
    let extra: &[(&str, &str)] = if req.starts_with(b"REGISTER ") {
        &[("Expires", "3600")]
    } else {
        &[]
    };
    sipfront::sip::response::build_response(req, 200, "OK", Some("stub"), extra, None)
}

/// Receives in batches (`recvmmsg`), hands each datagram and its source to `handle`, and
/// sends what it returns back to the source in batches (`sendmmsg`). Returns when the
/// socket fails or, checked at least every read timeout, `stop` is set.
pub fn fast_backend(
    sock: &UdpSocket,
    stop: Option<&std::sync::atomic::AtomicBool>,
    mut handle: impl FnMut(&[u8], SocketAddrV4) -> Option<Vec<u8>>,
) {
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; 2048]; BATCH];
    // SAFETY: zeroed sockaddr_storage/iovec/mmsghdr are valid values.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut outs: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let mut out_iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut out_hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut out_names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    loop {
        for k in 0..BATCH {
            iovs[k] = libc::iovec {
                iov_base: bufs[k].as_mut_ptr().cast(),
                iov_len: bufs[k].len(),
            };
            hdrs[k].msg_hdr.msg_name = (&raw mut names[k]).cast();
            hdrs[k].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[k].msg_hdr.msg_iov = &raw mut iovs[k];
            hdrs[k].msg_hdr.msg_iovlen = 1;
            hdrs[k].msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the stated sizes; blocking until
        // at least one datagram arrives (MSG_WAITFORONE returns what is queued after it).
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
            return;
        }
        if n <= 0 {
            let e = std::io::Error::last_os_error();
            if n < 0
                && !matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                )
            {
                return;
            }
            continue;
        }
        outs.clear();
        let mut dst = Vec::with_capacity(BATCH);
        for k in 0..n as usize {
            let req = &bufs[k][..hdrs[k].msg_len as usize];
            // SAFETY: an IPv4 socket's source addresses are sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read_unaligned((&raw const names[k]).cast()) };
            let from = SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            );
            if let Some(resp) = handle(req, from) {
                outs.push(resp);
                dst.push(names[k]);
            }
        }
        for (k, o) in outs.iter().enumerate() {
            out_names[k] = dst[k];
            out_iovs[k] = libc::iovec {
                iov_base: o.as_ptr() as *mut libc::c_void,
                iov_len: o.len(),
            };
            out_hdrs[k].msg_hdr.msg_name = (&raw mut out_names[k]).cast();
            out_hdrs[k].msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            out_hdrs[k].msg_hdr.msg_iov = &raw mut out_iovs[k];
            out_hdrs[k].msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < outs.len() {
            // SAFETY: headers sent..outs.len() point at live buffers and addresses.
            let m = unsafe {
                libc::sendmmsg(
                    fd,
                    out_hdrs[sent..].as_mut_ptr(),
                    (outs.len() - sent) as libc::c_uint,
                    0,
                )
            };
            if m <= 0 {
                break; // a full buffer: those replies are lost, the client retransmits
            }
            sent += m as usize;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Registering N phones through A from one socket.
// ---------------------------------------------------------------------------------------------

pub struct RegResult {
    pub ok: usize,
    pub failed: usize,
    pub retransmits: u64,
    pub elapsed: Duration,
}

/// Registers phones `0..n` through A's SIP address: `window` REGISTERs in flight, a
/// retransmission after 1 s, 3 sends at most; gives up after `limit`.
pub fn register_many(ph: &Phones, n: usize, window: usize, limit: Duration) -> RegResult {
    let sock = Sock::bind_wildcard(ph.port).expect("bind client socket");
    let to = ph.to;
    let ip = ph.ip;
    let t0 = Instant::now();
    let mut done = vec![false; n];
    // (client, sends, due)
    let mut inflight: std::collections::VecDeque<(usize, u32, Instant)> =
        std::collections::VecDeque::with_capacity(window);
    let mut r = RegResult {
        ok: 0,
        failed: 0,
        retransmits: 0,
        elapsed: Duration::ZERO,
    };
    let mut next = 0;
    let mut open = 0usize;
    let mut buf = vec![0u8; 4096];
    let rto = Duration::from_secs(1);
    let mut last_report = Instant::now();
    loop {
        let now = Instant::now();
        while open < window && next < n {
            let _ = sock.send_from(ip(next), to, &client_register(ph, next));
            inflight.push_back((next, 1, now + rto));
            next += 1;
            open += 1;
        }
        let mut got = 0;
        while let Ok(Some(d)) = sock.recv(&mut buf) {
            got += 1;
            if let Some(i) = reply_index(&buf[..d.len])
                && i < n
                && !done[i]
                && d.to == ip(i)
            {
                done[i] = true;
                r.ok += 1;
                open -= 1;
            }
            if got >= 4096 {
                break;
            }
        }
        let now = Instant::now();
        let over = now.duration_since(t0) >= limit;
        // Retransmissions: the queue is in send order, the due ones are at its front.
        while let Some(&(i, sends, due)) = inflight.front() {
            if done[i] {
                inflight.pop_front();
                continue;
            }
            if now < due && !over {
                break;
            }
            inflight.pop_front();
            if sends >= 3 || over {
                done[i] = true;
                r.failed += 1;
                open -= 1;
                continue;
            }
            let _ = sock.send_from(ip(i), to, &client_register(ph, i));
            r.retransmits += 1;
            inflight.push_back((i, sends + 1, now + rto * 2));
        }
        if over {
            r.failed += n - next;
            break;
        }
        if next == n && open == 0 {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "  registering: {} of {n} answered, {} retransmits, {:.0} s",
                r.ok,
                r.retransmits,
                t0.elapsed().as_secs_f64()
            );
        }
        if got == 0 {
            crate::pktinfo::wait_readable(
                std::slice::from_ref(&sock),
                Instant::now() + Duration::from_millis(2),
            );
        }
    }
    r.elapsed = t0.elapsed();
    r
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Polls a metric every 20 ms (an admin request costs the host a little: no tighter).
fn wait_metric_slow(
    h: &mut Host,
    name: &str,
    timeout: Duration,
    pred: impl Fn(f64) -> bool,
) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if h.metric(name, &[]).is_some_and(&pred) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
}

/// UDP `RcvbufErrors` of a namespace (/proc/net/snmp, read by a process inside it).
fn rcvbuf_errors(ns: &testkit::Netns) -> u64 {
    let snmp = ns.run("cat", &["/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

struct PrefixRun {
    /// Datagrams B's namespace dropped for a full receive buffer during the run.
    rcvbuf_errors: u64,
    to_full_ms: f64,
    to_flows_ms: f64,
    log_span_ms: Option<f64>,
    cpu_ms: f64,
    rss_kib: u64,
    traffic: Traffic,
}

pub fn run_prefix(n: usize, reps: usize, window: usize, keep: bool) {
    let work = tempfile::Builder::new()
        .prefix("sipfront-sync-prefix-bench-")
        .tempdir()
        .expect("temp dir");
    let dir = work.path().to_path_buf();
    let pid = std::process::id();
    let ns_a = testkit::Netns::create(format!("sfsyncpa{pid}"));
    let ns_b = testkit::Netns::create(format!("sfsyncpb{pid}"));
    ns_a.ip(&[
        "link", "add", "sa", "type", "veth", "peer", "name", "sb", "netns", &ns_b.name,
    ]);
    ns_a.ip(&["addr", "add", &format!("{NS_A_ADDR}/24"), "dev", "sa"]);
    ns_b.ip(&["addr", "add", &format!("{NS_B_ADDR}/24"), "dev", "sb"]);
    ns_a.ip(&["link", "set", "sa", "up"]);
    ns_b.ip(&["link", "set", "sb", "up"]);
    // This thread lives in A's namespace (the clients, A's backend, tcpdump, admin
    // requests to both hosts over the veth).
    ns_a.enter_this_thread();
    let _backend_a = start_fast_backend();
    let _backend_b = ns_b.enter(start_backend);

    let max_flows = n.clamp(1000, PREFIX_CAPACITY);
    let a_config = prefix_config(&dir, NS_A_ADDR, NS_B_ADDR, max_flows);
    let b_config = prefix_config(&dir, NS_B_ADDR, NS_A_ADDR, max_flows);
    let mut a = Host::start(&dir, "127.0.0.1", &a_config, "sipfront-A.log");
    assert!(
        a.wait_metric("sipfront_backend_up", Duration::from_secs(15), |v| v == 1.0),
        "A: backend not up; log:\n{}",
        a.proc.log_text()
    );
    let start_b = |name: &str| {
        let (d, c, name) = (dir.clone(), b_config.clone(), name.to_string());
        let mut h = ns_b.enter(move || Host::start(&d, "127.0.0.1", &c, &name));
        h.ns = Some(ns_b.name.clone());
        h
    };
    let mut b = start_b("sipfront-B-0.log");
    for h in [&mut a, &mut b] {
        assert!(
            h.wait_metric(
                "sipfront_sync_last_full_timestamp_seconds",
                Duration::from_secs(15),
                |v| v > 0.0
            ),
            "{}: not synced; log:\n{}",
            h.admin,
            h.proc.log_text()
        );
    }
    let a_rss0 = rss_kib(a.proc.pid());
    let b_rss0 = rss_kib(b.proc.pid());

    // 1. Registration through A, B mirroring.
    eprintln!("registering {n} phones through A (window {window})");
    let a_cpu0 = cpu_ms(a.proc.pid());
    let b_cpu0 = cpu_ms(b.proc.pid());
    let reg = register_many(&BENCH_PHONES, n, window, Duration::from_secs(1800));
    let a_cpu_reg = cpu_ms(a.proc.pid()) - a_cpu0;
    let nf = reg.ok as f64;
    let t = Instant::now();
    let a_ok = wait_metric_slow(&mut a, "sipfront_flows", Duration::from_secs(60), |v| {
        v >= nf
    });
    let b_ok = wait_metric_slow(&mut b, "sipfront_flows", Duration::from_secs(60), |v| {
        v >= nf
    });
    let mirror_wait_s = t.elapsed().as_secs_f64();
    let b_cpu_reg = cpu_ms(b.proc.pid()) - b_cpu0;
    let a_flows = a.metric("sipfront_flows", &[]).unwrap_or(0.0);
    let b_flows_inc = b.metric("sipfront_flows", &[]).unwrap_or(0.0);
    let a_rss = rss_kib(a.proc.pid());
    let b_rss_inc = rss_kib(b.proc.pid());
    let drops = |h: &mut Host| -> Vec<String> {
        h.metrics()
            .map(|m| {
                m.lines()
                    .filter(|l| l.starts_with("sipfront_sync_dropped_total") && !l.ends_with(" 0"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let a_drops = drops(&mut a);
    let b_drops_inc = drops(&mut b);
    eprintln!(
        "registered {} ({} failed, {} retransmits) in {:.1} s; A {a_flows}, B {b_flows_inc} flows",
        reg.ok,
        reg.failed,
        reg.retransmits,
        reg.elapsed.as_secs_f64()
    );
    assert!(a_ok, "A holds {a_flows} flows, {} registered", reg.ok);
    if !b_ok {
        eprintln!(
            "B mirrored only {b_flows_inc} of {} flows incrementally",
            reg.ok
        );
    }
    let nflows = a_flows as usize;
    let nf = a_flows;

    // 2. Full syncs.
    let mut runs = Vec::new();
    for rep in 1..=reps {
        b.proc.kill();
        let cap = Capture::start_on(&dir, &format!("prefix-full-{rep}"), "sa", NS_B_ADDR);
        let drops0 = rcvbuf_errors(&ns_b);
        let t0 = Instant::now();
        b = start_b(&format!("sipfront-B-{rep}.log"));
        let timeout = Duration::from_secs(120);
        let ok = wait_metric_slow(
            &mut b,
            "sipfront_sync_last_full_timestamp_seconds",
            timeout,
            |v| v > 0.0,
        );
        assert!(ok, "B got no full table; log:\n{}", b.proc.log_text());
        let to_full_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let ok = wait_metric_slow(&mut b, "sipfront_flows", timeout, |v| v >= nf);
        assert!(
            ok,
            "B never listed {nflows} flows (has {:?})",
            b.metric("sipfront_flows", &[])
        );
        let to_flows_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let cpu = cpu_ms(b.proc.pid());
        let rss = rss_kib(b.proc.pid());
        let rcvbuf = rcvbuf_errors(&ns_b) - drops0;
        sleep(Duration::from_millis(500));
        let traffic = classify(&cap.stop());
        let run = PrefixRun {
            rcvbuf_errors: rcvbuf,
            to_full_ms,
            to_flows_ms,
            log_span_ms: log_span_ms(
                &b.proc.log_text(),
                "state sync link up",
                "full table received",
            ),
            cpu_ms: cpu,
            rss_kib: rss,
            traffic,
        };
        eprintln!(
            "full sync {rep}/{reps}: {to_full_ms:.0} ms to full, {to_flows_ms:.0} ms to {nflows} flows, \
             log span {:?} ms",
            run.log_span_ms
        );
        runs.push(run);
    }
    let b_drops: Vec<String> = drops(&mut b);

    // Report.
    let mut r = String::new();
    let _ = writeln!(
        r,
        "sipfront sync bench, relay prefix mode ({PREFIX}, relay_port {RELAY_PORT}; A and B in \
         their own namespaces, sync over a veth): {n} phones from 127.64.0.1 and up, one \
         client socket with IP_PKTINFO, {reps} full syncs"
    );
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "1. registration through A (window {window}): {} answered, {} failed, {} retransmits in \
         {:.1} s = {:.0} REGISTERs/s ({:.1} µs each); A's CPU {:.1} s ({:.1} µs per REGISTER, \
         2 datagrams + sync items); B's CPU while mirroring {:.1} s ({:.1} µs per flow)",
        reg.ok,
        reg.failed,
        reg.retransmits,
        reg.elapsed.as_secs_f64(),
        reg.ok as f64 / reg.elapsed.as_secs_f64(),
        reg.elapsed.as_secs_f64() * 1e6 / reg.ok.max(1) as f64,
        a_cpu_reg / 1000.0,
        a_cpu_reg * 1000.0 / reg.ok.max(1) as f64,
        b_cpu_reg / 1000.0,
        b_cpu_reg * 1000.0 / reg.ok.max(1) as f64,
    );
    let _ = writeln!(
        r,
        "   flows: A {a_flows}, B {b_flows_inc} (incrementally, {mirror_wait_s:.1} s waited after \
         the last answer); RSS A {} → {} MiB ({:.0} B/flow), B {} → {} MiB",
        a_rss0 / 1024,
        a_rss / 1024,
        (a_rss.saturating_sub(a_rss0)) as f64 * 1024.0 / nf.max(1.0),
        b_rss0 / 1024,
        b_rss_inc / 1024
    );
    let _ = writeln!(r, "   sync drops: A {a_drops:?}, B {b_drops_inc:?}");
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "2. full sync: B killed and started again while A holds {nflows} flows (min / median / max of {reps})"
    );
    let col = |f: &dyn Fn(&PrefixRun) -> f64| fmt3(med(runs.iter().map(f).collect()));
    row(
        &mut r,
        "B spawn -> last_full_timestamp set (ms)",
        col(&|x| x.to_full_ms),
    );
    row(
        &mut r,
        "B spawn -> sipfront_flows = N (ms)",
        col(&|x| x.to_flows_ms),
    );
    row(
        &mut r,
        "B log: `sync link up` -> `full table received` (ms)",
        col(&|x| x.log_span_ms.unwrap_or(f64::NAN)),
    );
    row(
        &mut r,
        "B CPU at flows = N (ms, incl. start-up)",
        col(&|x| x.cpu_ms),
    );
    row(
        &mut r,
        "B RSS at flows = N (MiB)",
        col(&|x| x.rss_kib as f64 / 1024.0),
    );
    row(
        &mut r,
        "A -> B full-table span, first -> last chunk (ms)",
        col(&|x| x.traffic.full_span * 1000.0),
    );
    for (i, x) in runs.iter().enumerate() {
        let _ = writeln!(
            r,
            "   run {}: full-table datagrams {} ({} B = {:.1} B/flow, {} table(s) started), flow \
             items {}, items datagrams {}, hello {}, undecodable {}; UDP RcvbufErrors in B's \
             namespace {}",
            i + 1,
            x.traffic.full.0,
            x.traffic.full.1,
            x.traffic.full.1 as f64 / nf.max(1.0),
            x.traffic.full_tables,
            x.traffic.flow_items,
            x.traffic.items.0,
            x.traffic.hello.0,
            x.traffic.undecodable,
            x.rcvbuf_errors
        );
    }
    let _ = writeln!(r, "   B's sync drops (last run): {b_drops:?}");
    publish(&r, "sync-prefix-bench.txt");
    drop(a);
    drop(b);
    drop(ns_b);
    drop(ns_a);
    keep_work(work, keep);
}
