//! The hostile source: junk INVITEs, each with a fresh Call-ID, and CRLF keepalives, at a
//! fixed rate from one IP address (a few source ports), paced in 1 ms slices, for a
//! bounded time.

use std::net::{SocketAddr, UdpSocket};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant};

/// What the hostile source sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    pub datagrams: u64,
    pub invites: u64,
    pub errors: u64,
    /// Answers that came back to the hostile sockets (read and discarded, so that full
    /// socket buffers here do not count as drops).
    pub answers: u64,
    pub wall: Duration,
}

impl Sent {
    pub fn pps(&self) -> f64 {
        self.datagrams as f64 / self.wall.as_secs_f64().max(1e-3)
    }
}

fn invite(n: u64, from: SocketAddr, to: SocketAddr) -> Vec<u8> {
    format!(
        "INVITE sip:{n}@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bKflood{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:flood@{from}>;tag=f{n}\r\n\
         To: <sip:{n}@{to}>\r\n\
         Call-ID: flood-{n}-{:x}@{from}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:flood@{from}>\r\n\
         Content-Length: 0\r\n\r\n",
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
    .into_bytes()
}

/// Sends `pps` datagrams per second from `ports` sockets on `src` to `dst` for `dur`:
/// three INVITEs with fresh Call-IDs, then one CRLF-CRLF keepalive, round-robin over the
/// sockets. Returns when done.
pub fn start(
    src: &str,
    ports: usize,
    dst: SocketAddr,
    pps: u64,
    dur: Duration,
) -> JoinHandle<Sent> {
    let socks: Vec<UdpSocket> = (0..ports.max(1))
        .map(|_| {
            let s = UdpSocket::bind((src, 0)).expect("bind hostile socket");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    std::thread::spawn(move || {
        let mut sent = Sent::default();
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < dur {
            // Datagrams due by now.
            let due = (t0.elapsed().as_secs_f64() * pps as f64) as u64;
            while sent.datagrams < due {
                let s = &socks[(n as usize) % socks.len()];
                let from = s.local_addr().expect("local addr");
                let msg = if n % 4 == 3 {
                    b"\r\n\r\n".to_vec()
                } else {
                    sent.invites += 1;
                    invite(n, from, dst)
                };
                n += 1;
                sent.datagrams += 1;
                if s.send_to(&msg, dst).is_err() {
                    sent.errors += 1;
                }
            }
            let mut buf = [0u8; 2048];
            for s in &socks {
                while s.recv(&mut buf).is_ok() {
                    sent.answers += 1;
                }
            }
            sleep(Duration::from_millis(1));
        }
        sent.wall = t0.elapsed();
        sent
    })
}
