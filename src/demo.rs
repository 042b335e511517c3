//! `sipfront demo`: the proxy on an embedded config in front of two in-process demo
//! backends, with a status line per second. Needs no file and no other program.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use sipfront::config::{Config, EphemeralPorts};
use sipfront::dataplane::Status;
use sipfront::sip::response::build_response;
use sipfront::sip::{Scan, scan};

/// The embedded config; `{sip}`, `{admin}`, `{a}` and `{b}` are filled in.
pub const DEMO_CONFIG: &str = r#"
[listen]
sip = ["{sip}"]
relay_ports = "20000-29999"

[[backend]]
name = "demo-a"
addr = "{a}"

[[backend]]
name = "demo-b"
addr = "{b}"

[limits]
new_flows_per_ip = 5000
new_flows_burst = 10000

[admin]
listen = "{admin}"
"#;

/// The demo's config for a SIP and admin address; backends on the next two ports.
pub fn demo_config(
    sip: SocketAddr,
    admin: SocketAddr,
) -> Result<Config, sipfront::config::ConfigError> {
    let a = SocketAddr::new(sip.ip(), sip.port().wrapping_add(10));
    let b = SocketAddr::new(sip.ip(), sip.port().wrapping_add(11));
    let text = DEMO_CONFIG
        .replace("{sip}", &sip.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{a}", &a.to_string())
        .replace("{b}", &b.to_string());
    Config::parse(&text, &EphemeralPorts::from_system())
}

/// A minimal stateless UAS: 200 to everything but ACK, 100 + 180 + 200 to INVITE.
pub async fn demo_backend(sock: UdpSocket, name: String) {
    let local = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let contact = format!("<sip:{name}@{local}>");
    let mut buf = vec![0u8; 65536];
    let mut tag_seq: u64 = 0;
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let req = &buf[..n];
        let Scan::Sip(msg) = scan(req) else { continue };
        let Some(method) = msg.method() else { continue };
        tag_seq += 1;
        let tag = format!("{name}-{tag_seq}");
        let mut replies: Vec<Vec<u8>> = Vec::new();
        match method {
            b"ACK" => {}
            b"INVITE" => {
                replies.extend(build_response(req, 100, "Trying", None, &[], None));
                replies.extend(build_response(
                    req,
                    180,
                    "Ringing",
                    Some(&tag),
                    &[("Contact", &contact)],
                    None,
                ));
                let sdp = format!(
                    "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
                    ip = from.ip()
                );
                replies.extend(build_response(
                    req,
                    200,
                    "OK",
                    Some(&tag),
                    &[("Contact", &contact)],
                    Some(("application/sdp", sdp.as_bytes())),
                ));
            }
            b"REGISTER" => {
                let granted = msg.granted_expiry().unwrap_or(3600).min(3600).to_string();
                replies.extend(build_response(
                    req,
                    200,
                    "OK",
                    Some(&tag),
                    &[("Expires", &granted)],
                    None,
                ));
            }
            _ => replies.extend(build_response(req, 200, "OK", Some(&tag), &[], None)),
        }
        for r in replies {
            let _ = sock.send_to(&r, from).await;
        }
    }
}

/// One status line: datagrams per second per backend since `prev`, tables, drops.
pub fn status_line(now: &Status, prev: &Status, secs: f64) -> String {
    let mut line = String::new();
    for b in &now.backends {
        let total = |s: &Status| -> u64 {
            s.backends
                .iter()
                .find(|x| x.name == b.name)
                .map_or(0, |x| x.datagrams_to_backend + x.datagrams_to_client)
        };
        let rate = total(now).saturating_sub(total(prev)) as f64 / secs.max(0.001);
        line.push_str(&format!("{} ({}): {rate:>7.0} dgram/s  ", b.name, b.state));
    }
    let drops: u64 = now.counters.drops.iter().sum();
    line.push_str(&format!(
        "| flows {:>6} | dialogs {:>6} | drops {drops}",
        now.flows, now.dialogs
    ));
    line
}

/// Prints a status line every second until the future is dropped.
pub async fn print_status(status: Arc<Mutex<Status>>) {
    let mut prev = status.lock().map(|s| s.clone()).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let Ok(now) = status.lock().map(|s| s.clone()) else {
            return;
        };
        if let Some(p) = &prev {
            println!("{}", status_line(&now, p, 1.0));
        }
        prev = Some(now);
    }
}
