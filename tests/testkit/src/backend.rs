//! A fake backend: a plain UDP socket that answers sipfront's health probes.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::sip::sip_reply_to;
use crate::udp::{recv, udp};

/// A backend made of a plain UDP socket, for byte-level tests. A thread answers sipfront's
/// OPTIONS health probes (OPTIONS requests that do not come from a relay port) with 200, as a
/// real SIP server would, and hands every other datagram to the test through [`recv`].
pub struct FakeBackend {
    sock: UdpSocket,
    rx: std::sync::mpsc::Receiver<(Vec<u8>, SocketAddr)>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub probes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FakeBackend {
    /// Binds `127.0.0.1:port`; `relay_ports` is sipfront's relay port range.
    pub fn start(port: u16, relay_ports: std::ops::RangeInclusive<u16>) -> FakeBackend {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::{Arc, mpsc};
        let sock = udp(port, Duration::from_millis(50));
        let rsock = sock.try_clone().expect("clone socket");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(AtomicU64::new(0));
        let (stop2, probes2) = (stop.clone(), probes.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Some((d, from)) = recv(&rsock) else {
                    continue;
                };
                if d.starts_with(b"OPTIONS ") && !relay_ports.contains(&from.port()) {
                    probes2.fetch_add(1, Ordering::Relaxed);
                    let _ = rsock.send_to(&sip_reply_to(&d, "200 OK"), from);
                    continue;
                }
                if tx.send((d, from)).is_err() {
                    break;
                }
            }
        });
        FakeBackend {
            sock,
            rx,
            stop,
            thread: Some(thread),
            probes,
        }
    }

    /// The next datagram that is not a health probe, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        self.rx.recv_timeout(timeout).ok()
    }

    pub fn send_to(&self, d: &[u8], to: SocketAddr) {
        self.sock.send_to(d, to).expect("backend send_to");
    }

    /// Health probes answered so far.
    pub fn probes(&self) -> u64 {
        self.probes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The small set-up of the admin tests: a fake backend `a` on 127.0.0.1:`base + 1`, and a
/// config with sipfront's SIP address on `base`, its admin endpoint on `base + 2` and ten
/// relay ports from `relay`.
pub fn one_fake_backend(base: u16, relay: u16) -> (FakeBackend, crate::front::SipfrontConfig) {
    let backend = FakeBackend::start(base + 1, relay..=relay + 9);
    let cfg = crate::front::SipfrontConfig::new(
        &format!("127.0.0.1:{base}"),
        &format!("{relay}-{}", relay + 9),
        &format!("127.0.0.1:{}", base + 2),
    )
    .backend("a", &format!("127.0.0.1:{}", base + 1));
    (backend, cfg)
}
