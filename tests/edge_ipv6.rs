//! Many addresses of one IPv6 /64 against a live sipfront, in network namespaces: the
//! /64 is one source, so rotating addresses (and ports) within it neither gets more
//! flows than `limits.max_flows_per_ip` nor more datagrams than `datagrams_per_ip`,
//! while an honest sipp phone in another /64 completes every call.
//!
//! A LAN (namespaces `sfedge<PID>x<N>-*`, 10.78.0.0/24, IPv6 2001:db8::/48 on-link):
//! front .10 / 2001:db8:0:ff::10 (SIP over IPv6, and IPv4 for the harness; relay on IPv4), backend .30 (sipp
//! UAS), phone 2001:db8:0:3::21 (sipp UAC), attacker 40 addresses of 2001:db8:0:2::/64.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use testkit::*;

const ATTACKER_ADDRS: u16 = 40;

fn options(call_id: &str, local: SocketAddr, to: SocketAddr) -> Vec<u8> {
    format!(
        "OPTIONS sip:probe@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}\r\n\
         From: <sip:a@{local}>;tag=a\r\nTo: <sip:probe@{to}>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn rotating_addresses_within_one_ipv6_64_is_one_source() {
    require(&["sipp"]);
    let _serial = serial();
    let dir = TestDir::new("edge-ipv6");
    let t0 = Instant::now();
    let lan = Lan::create(
        "sfedge",
        "10.78.0",
        "02:78:00:00:00",
        &[
            ("front", 10),
            ("backend", 30),
            ("phone", 21),
            ("attacker", 66),
        ],
    );
    let add6 = |role: &str, addr: &str| lan.host(role).add_ipv6(addr);
    add6("front", "2001:db8:0:ff::10");
    add6("phone", "2001:db8:0:3::21");
    for i in 1..=ATTACKER_ADDRS {
        add6("attacker", &format!("2001:db8:0:2::{i:x}"));
    }

    let mut uas = NsSipp::uas(&dir, lan.host("backend"), "uas");
    let toml = "[listen]\nsip = [\"[2001:db8:0:ff::10]:5060\", \"10.78.0.10:5060\"]\nrelay = \"10.78.0.10\"\n\
                relay_ports = \"20000-20199\"\n\n[[backend]]\nname = \"a\"\naddr = \"10.78.0.30:5060\"\n\n\
                [limits]\nmax_flows_per_ip = 10\ndatagrams_per_ip = 300\ndatagrams_burst = 600\n\n\
                [admin]\nlisten = \"127.0.0.1:9090\"\n";
    let mut front = NsSipfront::launch(
        &dir,
        lan.host("front"),
        "front",
        toml,
        Duration::from_secs(15),
        " with a backend up",
        |m| metric(m, "sipfront_backend_up", &[("backend", "a")]) == 1.0,
    );
    let sip: SocketAddr = "[2001:db8:0:ff::10]:5060".parse().unwrap();

    // The honest phone, in another /64: 100 calls at 20/s.
    let mut phone = start_sipp(
        &dir,
        lan.host("phone"),
        "phone",
        &[
            "-sn",
            "uac",
            "-i",
            "2001:db8:0:3::21",
            "-p",
            "5080",
            "-t",
            "u1",
            "-d",
            "200",
            "-m",
            "100",
            "-r",
            "20",
            "-timeout",
            "60s",
            "-timeout_error",
            "[2001:db8:0:ff::10]:5060",
        ],
        false,
    );

    // The attacker: 3 sockets on each of its 40 addresses, each an OPTIONS and a CRLF
    // every 200 ms for 3 s (about 3600 datagrams/s from the /64).
    let attacker_ns = lan.host("attacker").ns.name.clone();
    let sent = in_netns(&attacker_ns, || {
        let socks: Vec<UdpSocket> = (1..=ATTACKER_ADDRS)
            .flat_map(|i| {
                (0..3).map(move |_| {
                    let a: SocketAddr = format!("[2001:db8:0:2::{i:x}]:0").parse().unwrap();
                    let s = UdpSocket::bind(a).expect("bind an attacker address");
                    s.set_nonblocking(true).unwrap();
                    s
                })
            })
            .collect();
        let mut sent = 0u64;
        let end = Instant::now() + Duration::from_secs(3);
        let mut round = 0;
        while Instant::now() < end {
            for (k, s) in socks.iter().enumerate() {
                let local = s.local_addr().unwrap();
                let _ = s.send_to(&options(&format!("v6-{round}-{k}"), local, sip), sip);
                let _ = s.send_to(b"\r\n\r\n", sip);
                sent += 2;
                let mut buf = [0u8; 2048];
                while s.recv_from(&mut buf).is_ok() {}
            }
            round += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
        sent
    });
    let top = front.get("/api/v1/top?limit=3");
    phone.expect_all_ok(100, Duration::from_secs(60));

    let text = front.metrics();
    let flow_limit = metric(
        &text,
        "sipfront_drops_total",
        &[("reason", "source_flow_limit")],
    );
    let rate_limited = metric(
        &text,
        "sipfront_drops_total",
        &[("reason", "source_rate_limited")],
    );
    let flows = metric(&text, "sipfront_flows", &[]);
    assert!(flow_limit > 0.0, "source_flow_limit drops: {flow_limit}");
    assert!(
        rate_limited > 0.0,
        "source_rate_limited drops: {rate_limited}"
    );
    // 10 for the whole /64, 1 for the phone.
    assert!(flows <= 11.0, "flows: {flows}");
    let (code, body) = top.expect("/api/v1/top answered");
    assert_eq!(code, 200, "{body}");
    let top: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(top["by_flows"][0]["source"], "2001:db8:0:2::/64", "{top}");
    assert_eq!(top["by_flows"][0]["flows"], 10, "{top}");
    assert_eq!(top["by_drops"][0]["source"], "2001:db8:0:2::/64", "{top}");
    front.proc.assert_running();
    uas.stop(Duration::from_secs(5));
    eprintln!(
        "edge-ipv6: attacker sent {sent}, flow-limited {flow_limit}, rate-limited {rate_limited}, {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}
