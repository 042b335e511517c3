//! `listen.forward_keepalives` is applied by a reload (the router decides per
//! datagram), while the rest of `[listen]` (sockets, addresses) and `[[peer]]` need a
//! restart and the reload says so.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use sipfront::config::{Config, EphemeralPorts};

/// The public SIP port the test starts sipfront on.
const SIP_PORT: u16 = 28071;

/// Relay ports of the test's config.
const RELAY: std::ops::RangeInclusive<u16> = 23200..=23209;

/// The test's config on `sip_port`, with `extra` (TOML) at its end.
fn config(sip_port: u16, backend: SocketAddr, forward: bool, extra: &str) -> Config {
    let text = format!(
        "[listen]\nsip = [\"127.0.0.1:{sip_port}\"]\nrelay_ports = \"{}-{}\"\n\
         forward_keepalives = {forward}\n\
         [[backend]]\nname = \"only\"\naddr = \"{backend}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [health]\ninterval = \"1h\"\n{extra}",
        RELAY.start(),
        RELAY.end()
    );
    Config::parse(&text, &EphemeralPorts::from_system()).unwrap()
}

/// The next datagram `s` receives from a relay port (or any, for the client), or None
/// within `wait`; sipfront's OPTIONS health probes (from its probe socket) are
/// answered on the way.
fn recv(s: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = s.recv_from(&mut buf).ok()?;
        if from.port() == SIP_PORT || RELAY.contains(&from.port()) {
            return Some((buf[..n].to_vec(), from));
        }
        let reply =
            sipfront::sip::response::build_response(&buf[..n], 200, "OK", Some("t"), &[], None)
                .unwrap();
        s.send_to(&reply, from).unwrap();
    }
}

#[test]
fn a_reload_turns_keepalive_forwarding_on_and_names_what_needs_a_restart() {
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = backend.local_addr().unwrap();
    let sip_port = SIP_PORT;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let prom = sipfront::admin::install_recorder().unwrap();
    let running = rt
        .block_on(sipfront::server::start(
            config(sip_port, b, false, ""),
            prom,
        ))
        .unwrap();
    let proxy = SocketAddr::from(([127, 0, 0, 1], sip_port));

    // A flow the backend has answered (keepalives refresh only those; a 200 to
    // OPTIONS would not count: a forged source gets that too).
    let invite = "MESSAGE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-1\r\n\
                  From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: ka@test\r\nCSeq: 1 MESSAGE\r\n\
                  Content-Length: 0\r\n\r\n";
    client.send_to(invite.as_bytes(), proxy).unwrap();
    let (_, relay) = recv(&backend, Duration::from_secs(5)).expect("the request relayed");
    let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-1\r\n\
              From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: ka@test\r\nCSeq: 1 MESSAGE\r\n\
              Content-Length: 0\r\n\r\n";
    backend.send_to(ok.as_bytes(), relay).unwrap();
    recv(&client, Duration::from_secs(5)).expect("the answer relayed");

    // Absorbed by default.
    client.send_to(b"\r\n\r\n", proxy).unwrap();
    assert_eq!(recv(&backend, Duration::from_millis(500)), None);

    // Reloaded with forwarding on and another SIP address: the first applies, the
    // second is kept (and the reload says so).
    let notes = rt
        .block_on(running.reload(config(sip_port + 1, b, true, "")))
        .unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("listen changes need a restart (forward_keepalives applies now)")),
        "{notes:?}"
    );
    client.send_to(b"\r\n\r\n", proxy).unwrap();
    let (got, from) = recv(&backend, Duration::from_secs(5)).expect("the keepalive relayed");
    assert_eq!(got, b"\r\n\r\n");
    assert_eq!(from, relay, "from the flow's relay endpoint");

    // Only the keepalive setting changed: nothing to say about [listen], and it is
    // off again. A trunk added by a reload is named as needing a restart.
    let with_peer = config(
        sip_port,
        b,
        false,
        "[[peer]]\nname = \"pbx\"\naddr = \"127.0.0.1:5999\"\nrelay = \"127.0.0.1:23300\"\n",
    );
    let notes = rt.block_on(running.reload(with_peer)).unwrap();
    assert!(!notes.iter().any(|n| n.contains("listen")), "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("peer changes need a restart")),
        "{notes:?}"
    );
    client.send_to(b"\r\n\r\n", proxy).unwrap();
    assert_eq!(recv(&backend, Duration::from_millis(500)), None);

    rt.block_on(running.shutdown()).unwrap();
}
