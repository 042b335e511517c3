//! The stub backends: one thread each, answering every SIP request (REGISTERs,
//! sipfront's OPTIONS probes, the latency OPTIONS) with a minimal `200 OK` that copies
//! Via, From, To, Call-ID and CSeq. A `Server` header names the stub, so the bench
//! learns each flow's home backend; 2xx to REGISTER grants 3600 s like a registrar.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sipfront::sip::response::build_response;

pub struct Backend {
    /// Requests answered.
    pub answered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        let _ = sock.set_recv_buffer_size(4 << 20);
        sock.bind(&addr.into())?;
        let sock: UdpSocket = sock.into();
        // Wakes up now and then to notice `stop`.
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let answered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (answered.clone(), stop.clone());
        let server = format!("flows-stub-{name}");
        let thread = std::thread::Builder::new()
            .name(format!("stub-{name}"))
            .spawn(move || serve(&sock, &server, &a, &s))?;
        Ok(Backend {
            answered,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(sock: &UdpSocket, server: &str, answered: &AtomicU64, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let req = &buf[..n];
        // Requests only: a response (or keepalive) gets no answer.
        if req.starts_with(b"SIP/2.0") || req.trim_ascii().is_empty() {
            continue;
        }
        let mut extra = vec![("Server", server)];
        if req.starts_with(b"REGISTER ") {
            extra.push(("Expires", "3600"));
        }
        if let Some(resp) = build_response(req, 200, "OK", Some("stub"), &extra, None)
            && sock.send_to(&resp, from).is_ok()
        {
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}
