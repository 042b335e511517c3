//! The in-bench UDP backend and the REGISTERing clients.

#![allow(dead_code)]

use super::*;

/// Answers every request with 200; REGISTERs get `Expires: 3600`.
pub fn start_backend() -> std::thread::JoinHandle<()> {
    let sock = UdpSocket::bind(BACKEND).expect("bind backend");
    let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(8 << 20);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            if req.starts_with("SIP/2.0") || n < 8 {
                continue;
            }
            let mut out = String::from("SIP/2.0 200 OK\r\n");
            let mut register = false;
            for line in req.split("\r\n").skip(1) {
                if line.is_empty() {
                    break;
                }
                let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
                match name.as_str() {
                    "via" | "from" | "call-id" => {
                        out.push_str(line);
                        out.push_str("\r\n");
                    }
                    "cseq" => {
                        register = line.ends_with("REGISTER");
                        out.push_str(line);
                        out.push_str("\r\n");
                    }
                    "to" => {
                        out.push_str(line);
                        out.push_str(";tag=bench\r\n");
                    }
                    "contact" if register || req.starts_with("REGISTER") => {
                        out.push_str(line);
                        out.push_str(";expires=3600\r\n");
                    }
                    _ => {}
                }
            }
            if register {
                out.push_str("Expires: 3600\r\n");
            }
            out.push_str("Content-Length: 0\r\n\r\n");
            let _ = sock.send_to(out.as_bytes(), from);
        }
    })
}

pub fn register(local: SocketAddr, to: &str, i: usize) -> Vec<u8> {
    format!(
        "REGISTER sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-b{i};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:u{i}@{to}>;tag=f{i}\r\n\
         To: <sip:u{i}@{to}>\r\n\
         Call-ID: reg{i}@bench\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:u{i}@{local}>\r\n\
         Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// N phones REGISTER through `sip` (batches of 1000 sockets, one retransmission); returns
/// how many got their 200.
pub fn create_flows(n: usize, sip: &str) -> usize {
    let to: SocketAddr = sip.parse().unwrap();
    let mut answered = 0;
    let mut buf = [0u8; 2048];
    for start in (0..n).step_by(1000) {
        let end = (start + 1000).min(n);
        let socks: Vec<UdpSocket> = (start..end)
            .map(|i| {
                let s = UdpSocket::bind((CLIENT_IP, PORT_BASE + i as u16))
                    .unwrap_or_else(|e| panic!("bind client {i}: {e}"));
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                s
            })
            .collect();
        for (k, s) in socks.iter().enumerate() {
            let _ = s.send_to(&register(s.local_addr().unwrap(), sip, start + k), to);
        }
        for (k, s) in socks.iter().enumerate() {
            let mut ok =
                matches!(s.recv_from(&mut buf), Ok((m, _)) if buf[..m].starts_with(b"SIP/2.0 200"));
            if !ok {
                let _ = s.send_to(&register(s.local_addr().unwrap(), sip, start + k), to);
                ok = matches!(s.recv_from(&mut buf), Ok((m, _)) if buf[..m].starts_with(b"SIP/2.0 200"));
            }
            answered += usize::from(ok);
        }
    }
    answered
}
