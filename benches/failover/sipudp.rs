//! The bench's own SIP endpoints, threads with plain UDP sockets:
//!
//! - [`Backend`]: answers every request with a 200 (`To` tag = its name, `X-Relay` = the
//!   address the request came from, so the client can tell which proxy relayed it) and
//!   records when client requests (MESSAGE) arrive. It can be killed two ways: close its
//!   socket (the next datagram bounces with ICMP port unreachable) or go silent (stop
//!   reading, socket left open: no ICMP, nothing answered).
//! - [`Client`]: one socket (one flow), a MESSAGE with a fresh Call-ID every `period`,
//!   and a log of the answers.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testkit::spawn_in_netns;

const RUN: u8 = 0;
const SILENT: u8 = 1;
const CLOSE: u8 = 2;

/// How a backend dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// Socket closed: the kernel answers with ICMP port unreachable.
    Icmp,
    /// Stops reading, socket stays open: no ICMP, no answer.
    Silent,
}

impl Kill {
    pub fn name(self) -> &'static str {
        match self {
            Kill::Icmp => "icmp (socket closed)",
            Kill::Silent => "silent (no ICMP)",
        }
    }
}

#[derive(Default)]
struct BackendLog {
    /// Arrival times of client requests (not probes).
    requests: Vec<Instant>,
    probes: u64,
    /// When the socket was closed or reading stopped.
    killed_at: Option<Instant>,
}

/// A UDP SIP responder thread.
pub struct Backend {
    cmd: Arc<AtomicU8>,
    log: Arc<Mutex<BackendLog>>,
    thread: Option<JoinHandle<()>>,
}

/// Method of a request, `None` for a response or junk.
fn method(d: &[u8]) -> Option<&[u8]> {
    if d.starts_with(b"SIP/2.0") {
        return None;
    }
    let end = d.iter().position(|&b| b == b' ')?;
    Some(&d[..end])
}

impl Backend {
    /// Binds `addr` in the namespace at `ns_path` and starts answering.
    pub fn start(ns_path: String, name: &str, addr: SocketAddr) -> Backend {
        let cmd = Arc::new(AtomicU8::new(RUN));
        let log = Arc::new(Mutex::new(BackendLog::default()));
        let (c, l, n) = (cmd.clone(), log.clone(), name.to_string());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = spawn_in_netns(ns_path, move || {
            let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            sock.set_read_timeout(Some(Duration::from_millis(2)))
                .expect("timeout");
            let _ = ready_tx.send(());
            serve(sock, &n, &c, &l);
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("backend thread did not bind");
        Backend {
            cmd,
            log,
            thread: Some(thread),
        }
    }

    /// Kills the backend; returns the instant its socket closed or it stopped reading.
    pub fn kill(&self, how: Kill) -> Instant {
        let c = if how == Kill::Icmp { CLOSE } else { SILENT };
        self.cmd.store(c, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(t) = self.log.lock().unwrap().killed_at {
                return t;
            }
            assert!(Instant::now() < deadline, "backend thread does not stop");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// First client request that arrived at or after `t`.
    pub fn first_request_since(&self, t: Instant) -> Option<Instant> {
        let log = self.log.lock().unwrap();
        log.requests.iter().copied().find(|&a| a >= t)
    }

    pub fn probes(&self) -> u64 {
        self.log.lock().unwrap().probes
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.cmd.store(CLOSE, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(sock: UdpSocket, name: &str, cmd: &AtomicU8, log: &Mutex<BackendLog>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match cmd.load(Ordering::SeqCst) {
            RUN => {}
            SILENT => {
                log.lock()
                    .unwrap()
                    .killed_at
                    .get_or_insert_with(Instant::now);
                while cmd.load(Ordering::SeqCst) == SILENT {
                    std::thread::sleep(Duration::from_millis(2));
                }
                continue;
            }
            _ => {
                let mut l = log.lock().unwrap();
                if l.killed_at.is_none() {
                    drop(sock);
                    l.killed_at = Some(Instant::now());
                }
                return;
            }
        }
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let at = Instant::now();
        let d = &buf[..n];
        let Some(m) = method(d) else { continue };
        {
            let mut l = log.lock().unwrap();
            if m == b"OPTIONS" {
                l.probes += 1;
            } else {
                l.requests.push(at);
            }
        }
        if m == b"ACK" {
            continue;
        }
        let relay = from.to_string();
        if let Some(r) = sipfront::sip::response::build_response(
            d,
            200,
            "OK",
            Some(name),
            &[("X-Relay", relay.as_str())],
            None,
        ) {
            let _ = sock.send_to(&r, from);
        }
    }
}

/// An answer the client received.
#[derive(Debug, Clone)]
pub struct Answer {
    pub seq: u64,
    pub at: Instant,
    /// The backend's To tag.
    pub tag: String,
    /// The relay address the backend saw (`X-Relay`).
    pub relay: String,
}

#[derive(Default)]
struct ClientLog {
    /// Send time of request `seq` at index `seq`.
    sent: Vec<Instant>,
    answers: Vec<Answer>,
}

/// One client socket sending a MESSAGE every `period`.
pub struct Client {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<ClientLog>>,
    threads: Vec<JoinHandle<()>>,
}

fn header<'a>(text: &'a str, names: &[&str]) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        names
            .iter()
            .any(|x| n.trim().eq_ignore_ascii_case(x))
            .then(|| v.trim())
    })
}

impl Client {
    pub fn start(
        ns_path: String,
        bind: SocketAddr,
        target: SocketAddr,
        period: Duration,
    ) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(ClientLog::default()));
        let sock = spawn_in_netns(ns_path, move || {
            UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"))
        })
        .join()
        .expect("client bind");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let rx = sock.try_clone().expect("clone socket");
        let (s1, l1) = (stop.clone(), log.clone());
        let sender = std::thread::spawn(move || {
            let mut next = Instant::now();
            let mut seq = 0u64;
            while !s1.load(Ordering::Relaxed) {
                let msg = format!(
                    "MESSAGE sip:bench@{target} SIP/2.0\r\n\
                     Via: SIP/2.0/UDP {bind};branch=z9hG4bK-fo-{seq}\r\n\
                     Max-Forwards: 70\r\n\
                     From: <sip:client@{bind}>;tag=fo-client\r\n\
                     To: <sip:bench@{target}>\r\n\
                     Call-ID: fo-{seq}@failover.bench\r\n\
                     CSeq: 1 MESSAGE\r\n\
                     Content-Length: 0\r\n\r\n"
                );
                let t = Instant::now();
                let _ = sock.send_to(msg.as_bytes(), target);
                l1.lock().unwrap().sent.push(t);
                seq += 1;
                next += period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else if now - next > period {
                    next = now;
                }
            }
        });
        let (s2, l2) = (stop.clone(), log.clone());
        let receiver = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s2.load(Ordering::Relaxed) {
                let Ok(n) = rx.recv(&mut buf) else { continue };
                let at = Instant::now();
                let text = String::from_utf8_lossy(&buf[..n]);
                if !text.starts_with("SIP/2.0 200") {
                    continue;
                }
                let seq = header(&text, &["Call-ID", "i"])
                    .and_then(|c| c.strip_prefix("fo-"))
                    .and_then(|c| c.split('@').next())
                    .and_then(|s| s.parse().ok());
                let tag = header(&text, &["To", "t"])
                    .and_then(|t| t.split(";tag=").nth(1))
                    .map(|t| t.split(';').next().unwrap_or(t).to_string());
                let relay = header(&text, &["X-Relay"]).unwrap_or("").to_string();
                if let (Some(seq), Some(tag)) = (seq, tag) {
                    l2.lock().unwrap().answers.push(Answer {
                        seq,
                        at,
                        tag,
                        relay,
                    });
                }
            }
        });
        Client {
            stop,
            log,
            threads: vec![sender, receiver],
        }
    }

    /// The answers received at or after `since`.
    pub fn answers_since(&self, since: Instant) -> Vec<Answer> {
        let log = self.log.lock().unwrap();
        let start = log.answers.partition_point(|a| a.at < since);
        log.answers[start..].to_vec()
    }

    /// The last answer received before `t`.
    pub fn last_answer_before(&self, t: Instant) -> Option<Answer> {
        let log = self.log.lock().unwrap();
        let i = log.answers.partition_point(|a| a.at < t);
        i.checked_sub(1).map(|i| log.answers[i].clone())
    }

    /// First request sequence number sent at or after `t`.
    pub fn first_seq_since(&self, t: Instant) -> u64 {
        let log = self.log.lock().unwrap();
        log.sent.partition_point(|&s| s < t) as u64
    }

    /// Requests with `from <= seq < to` that never got an answer.
    pub fn unanswered(&self, from: u64, to: u64) -> u64 {
        let log = self.log.lock().unwrap();
        let mut got = vec![false; to.saturating_sub(from) as usize];
        for a in &log.answers {
            if (from..to).contains(&a.seq) {
                got[(a.seq - from) as usize] = true;
            }
        }
        got.iter().filter(|g| !**g).count() as u64
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
