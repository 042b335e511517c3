//! SIP messages for byte-level tests: requests, replies, header lookup, and [`SipClient`], a
//! UAC on a plain UDP socket.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::udp::recv;

/// A response with `status` ("200 OK") to the request `req`, copying Via, From, To, Call-ID
/// and CSeq (a To tag is added).
pub fn sip_reply_to(req: &[u8], status: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(req);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in head.lines().skip(1) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                out.push_str(line.trim_end());
                out.push_str("\r\n");
            }
            "to" | "t" => {
                out.push_str(line.trim_end());
                if !line.contains(";tag=") {
                    out.push_str(";tag=fake-backend");
                }
                out.push_str("\r\n");
            }
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// A minimal SIP request with the given method and Call-ID and an optional body.
pub fn sip_request(method: &str, call_id: &str, from_port: u16, body: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "{method} sip:service@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{from_port};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:test@127.0.0.1:{from_port}>;tag=t-{call_id}\r\n\
         To: <sip:service@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:test@127.0.0.1:{from_port}>\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

/// A SIP user agent on a plain UDP socket with a chosen address (a "phone" whose flow
/// at sipfront is exactly that address): builds requests, retransmits them like a UAC
/// (every 500 ms) and waits for the final response with the same Call-ID and CSeq.
pub struct SipClient {
    pub sock: UdpSocket,
    pub local: SocketAddr,
    /// Where requests go (sipfront's public address).
    pub server: SocketAddr,
    pub user: String,
}

impl SipClient {
    pub fn bind(local: SocketAddr, server: SocketAddr, user: &str) -> SipClient {
        let sock = UdpSocket::bind(local).unwrap_or_else(|e| panic!("bind udp {local}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        SipClient {
            local: sock.local_addr().unwrap(),
            sock,
            server,
            user: user.to_string(),
        }
    }

    /// A request to sipfront's address (no user part, so a SIP server answers OPTIONS
    /// itself and takes REGISTER for `user`); `extra` headers end in `\r\n`.
    pub fn request(&self, method: &str, call_id: &str, cseq: u32, extra: &str) -> Vec<u8> {
        let (srv, local, user) = (self.server, self.local, &self.user);
        format!(
            "{method} sip:{srv} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id}-{cseq};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{srv}>;tag=from-{call_id}\r\n\
             To: <sip:{user}@{srv}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:{user}@{local}>\r\n\
             {extra}\
             User-Agent: sipfront-test\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// An INVITE with user part `user` in its Request-URI.
    pub fn invite_to(&self, user: &str, call_id: &str) -> Vec<u8> {
        let req = String::from_utf8(self.request("INVITE", call_id, 1, "")).unwrap();
        let srv = self.server;
        req.replacen(
            &format!("INVITE sip:{srv} SIP/2.0"),
            &format!("INVITE sip:{user}@{srv} SIP/2.0"),
            1,
        )
        .into_bytes()
    }

    pub fn send(&self, msg: &[u8]) {
        self.sock
            .send_to(msg, self.server)
            .unwrap_or_else(|e| panic!("send from {} to {}: {e}", self.local, self.server));
    }

    /// Sends `msg` and waits up to `timeout` for its final response (status >= 200,
    /// same Call-ID and CSeq), retransmitting every 500 ms. Other datagrams are skipped.
    pub fn transact(&self, msg: &[u8], timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let text = String::from_utf8_lossy(msg).into_owned();
        let call_id = sip_header(&text, "Call-ID").expect("request has a Call-ID");
        let cseq = sip_header(&text, "CSeq").expect("request has a CSeq");
        let deadline = Instant::now() + timeout;
        let mut next_send = Instant::now();
        while Instant::now() < deadline {
            if Instant::now() >= next_send {
                self.send(msg);
                next_send = Instant::now() + Duration::from_millis(500);
            }
            let Some((d, from)) = recv(&self.sock) else {
                continue;
            };
            let r = String::from_utf8_lossy(&d);
            if sip_status(&r).is_some_and(|c| c >= 200)
                && sip_header(&r, "Call-ID").as_deref() == Some(call_id.as_str())
                && sip_header(&r, "CSeq").as_deref() == Some(cseq.as_str())
            {
                return Some((d, from));
            }
        }
        None
    }

    /// Like [`SipClient::transact`], panicking unless the final response is `code`.
    pub fn expect(&self, msg: &[u8], code: u16, timeout: Duration) -> String {
        let what = String::from_utf8_lossy(msg)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let Some((d, from)) = self.transact(msg, timeout) else {
            panic!(
                "{}: no final response to `{what}` within {timeout:?}",
                self.local
            );
        };
        let r = String::from_utf8_lossy(&d).into_owned();
        assert_eq!(
            sip_status(&r),
            Some(code),
            "{}: response to `{what}` from {from}:\n{r}",
            self.local
        );
        r
    }
}

/// Status code of a SIP response (`None` for a request).
pub fn sip_status(msg: &str) -> Option<u16> {
    msg.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// Value of the first header `name` (case-insensitive; compact forms of Via, From, To,
/// Call-ID accepted), trimmed.
pub fn sip_header(msg: &str, name: &str) -> Option<String> {
    let compact = match name.to_ascii_lowercase().as_str() {
        "via" => "v",
        "from" => "f",
        "to" => "t",
        "call-id" => "i",
        "contact" => "m",
        "content-length" => "l",
        _ => "",
    };
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case(name) || (!compact.is_empty() && n.eq_ignore_ascii_case(compact)))
            .then(|| v.trim().to_string())
    })
}
