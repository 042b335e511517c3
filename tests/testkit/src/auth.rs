//! Digest authentication checks of a registrar behind sipfront (the example configs with
//! authentication on; accounts `alice`/`alice-secret` and `caller`/`caller-secret`).

use std::net::SocketAddr;
use std::time::Duration;

use crate::process::{TestDir, wait_until};
use crate::sip::SipClient;
use crate::sipp::Sipp;

/// Password of each test account: `<user>-secret`.
pub fn account(user: &str) -> (String, String) {
    (user.to_string(), format!("{user}-secret"))
}

/// Registrations that must not be stored, all through sipfront at `sipfront`, from
/// 127.0.0.1:`base`..`base + 2`: a REGISTER without credentials and one with forged
/// credentials for alice (both 401 with a challenge), and sipp registering `caller` with
/// alice's credentials (403). The caller checks that its registrar stored none of them.
pub fn refused_registrations(dir: &TestDir, sipfront: SocketAddr, base: u16) {
    let secs = Duration::from_secs(5);
    let local = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let stranger = SipClient::bind(local(base), sipfront, "mallory");
    let r = stranger.expect(&stranger.request("REGISTER", "r1", 1, ""), 401, secs);
    assert!(r.contains("WWW-Authenticate: Digest"), "no challenge: {r}");
    let forger = SipClient::bind(local(base + 1), sipfront, "alice");
    let forged = format!(
        "Authorization: Digest username=\"alice\", realm=\"127.0.0.1\", nonce=\"forged\", \
         uri=\"sip:{sipfront}\", response=\"00000000000000000000000000000000\"\r\n"
    );
    forger.expect(&forger.request("REGISTER", "r2", 1, &forged), 401, secs);
    let (user, password) = account("alice");
    let mut thief = Sipp::phone_auth(
        dir,
        "thief",
        "caller",
        (&user, &password),
        base + 2,
        &sipfront.to_string(),
        "phone_answer.xml",
        3_000,
    );
    assert!(
        wait_until(Duration::from_secs(10), || thief
            .messages()
            .contains("SIP/2.0 403")),
        "no 403 for caller registered with alice's credentials:\n{}",
        thief.messages()
    );
    let _ = thief.stop(secs);
}

/// A call to alice entered at `registrar` without credentials, from 127.0.0.1:`port`:
/// answered 407, never completed.
pub fn unauthenticated_call_is_challenged(dir: &TestDir, port: u16, registrar: &str) {
    let (caller, r) = Sipp::call(dir, "caller-noauth", "alice", port, registrar);
    assert!(!r.ok(), "an unauthenticated call went through");
    assert!(
        caller.messages().contains("SIP/2.0 407"),
        "no 407:\n{}",
        caller.messages()
    );
}

/// Forged "in-dialog" requests (a BYE and an OPTIONS with a To-tag, a Route naming
/// `route`, the registrar's own record-routed address, an unknown Call-ID) sent through
/// `sipfront` from 127.0.0.1:`port`, whose Request-URI names a listener at
/// 127.0.0.1:`victim`: each answered 481, and nothing reaches the listener (relayed, it
/// would have).
pub fn forged_in_dialog_requests_are_refused(
    sipfront: SocketAddr,
    route: &str,
    port: u16,
    victim: u16,
) {
    let listener = std::net::UdpSocket::bind(("127.0.0.1", victim)).expect("bind victim");
    listener
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let client = SipClient::bind(
        SocketAddr::from(([127, 0, 0, 1], port)),
        sipfront,
        "mallory",
    );
    let local = client.local;
    for method in ["BYE", "OPTIONS"] {
        let req = format!(
            "{method} sip:victim@127.0.0.1:{victim} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-forged-{method};rport\r\n\
             Max-Forwards: 70\r\n\
             Route: <sip:{route};lr>\r\n\
             From: <sip:mallory@{sipfront}>;tag=forged-from\r\n\
             To: <sip:alice@{sipfront}>;tag=forged-to\r\n\
             Call-ID: forged-{method}@nowhere\r\n\
             CSeq: 1 {method}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        client.expect(req.as_bytes(), 481, Duration::from_secs(5));
    }
    let mut buf = [0u8; 2048];
    if let Ok(n) = listener.recv(&mut buf) {
        panic!(
            "a forged in-dialog request was relayed:\n{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

/// An in-dialog OPTIONS of the call (`call_id`, caller tag, callee tag), with a Route
/// naming `route` (the registrars' record-routed address), sent straight to the registrar
/// at `to` from 127.0.0.1:`port`, its Request-URI naming a listener at
/// 127.0.0.1:`listener`: asserts the registrar relayed it there (it knows the call), rather
/// than refusing it.
pub fn in_dialog_request_is_relayed(
    to: SocketAddr,
    route: &str,
    (call_id, from_tag, to_tag): (&str, &str, &str),
    port: u16,
    listener: u16,
) {
    let sink = std::net::UdpSocket::bind(("127.0.0.1", listener)).expect("bind listener");
    sink.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let probe = format!(
        "OPTIONS sip:probe@127.0.0.1:{listener} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-known-call;rport\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:{route};lr>\r\n\
         From: <sip:caller@127.0.0.1>;tag={from_tag}\r\n\
         To: <sip:callee@127.0.0.1>;tag={to_tag}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 5 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let sender = std::net::UdpSocket::bind(("127.0.0.1", port)).expect("bind sender");
    sender.send_to(probe.as_bytes(), to).unwrap();
    let mut buf = [0u8; 2048];
    let got = sink.recv(&mut buf).map(|n| buf[..n].to_vec());
    assert!(
        got.as_ref()
            .is_ok_and(|d| d.starts_with(b"OPTIONS sip:probe@")),
        "{to} did not relay a request of a call it should know: {got:?}"
    );
}
