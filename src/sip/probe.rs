//! OPTIONS health probes, built and parsed with `rsip` (not on the forwarding path).
//!
//! The Call-ID carries the backend index and a per-probe sequence number behind a
//! per-process nonce, so a reply maps back to its probe without a lookup table and a
//! reply meant for another process is recognised as stray.

use std::net::SocketAddr;

use rsip::headers::{
    CSeq, CallId, ContentLength, From, MaxForwards, To, UntypedHeader, UserAgent, Via,
};
use rsip::message::HeadersExt;
use rsip::{Header, Headers, Method, Request, SipMessage, Uri, Version};

/// Identifies this process' probes.
#[derive(Debug, Clone)]
pub struct ProbeIds {
    nonce: String,
}

impl ProbeIds {
    pub fn new(nonce: u64) -> Self {
        ProbeIds {
            nonce: format!("{nonce:016x}"),
        }
    }

    /// What every Call-ID of this process' probes starts with.
    pub fn call_id_prefix(&self) -> String {
        format!("sfp-{}-", self.nonce)
    }

    fn call_id(&self, backend: usize, seq: u32) -> String {
        format!("sfp-{}-{backend}-{seq}", self.nonce)
    }

    /// (backend, seq) of a Call-ID this process made.
    fn parse_call_id(&self, call_id: &str) -> Option<(usize, u32)> {
        let rest = call_id
            .strip_prefix("sfp-")?
            .strip_prefix(self.nonce.as_str())?;
        let mut parts = rest.strip_prefix('-')?.split('-');
        let backend = parts.next()?.parse().ok()?;
        let seq = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some((backend, seq))
    }

    /// An OPTIONS request to `target` for probe `seq` of backend `backend`, sent
    /// from `local` (the probe socket's address).
    pub fn build(
        &self,
        backend: usize,
        seq: u32,
        target: SocketAddr,
        local: SocketAddr,
    ) -> Vec<u8> {
        let call_id = self.call_id(backend, seq);
        let host = |a: SocketAddr| match a {
            SocketAddr::V4(v4) => v4.to_string(),
            SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
        };
        let uri = Uri::try_from(format!("sip:{}", host(target)).as_str())
            .unwrap_or_else(|_| Uri::default());
        let mut headers = Headers::default();
        let push = |h: &mut Headers, x: Header| h.push(x);
        push(
            &mut headers,
            Via::new(format!(
                "SIP/2.0/UDP {};branch=z9hG4bK-{call_id};rport",
                host(local)
            ))
            .into(),
        );
        push(&mut headers, MaxForwards::new("70").into());
        push(
            &mut headers,
            From::new(format!(
                "\"sipfront health\" <sip:sipfront@{}>;tag={}",
                local.ip(),
                self.nonce
            ))
            .into(),
        );
        push(
            &mut headers,
            To::new(format!("<sip:{}>", host(target))).into(),
        );
        push(&mut headers, CallId::new(call_id).into());
        push(&mut headers, CSeq::new(format!("{seq} OPTIONS")).into());
        push(
            &mut headers,
            UserAgent::new(concat!("sipfront/", env!("CARGO_PKG_VERSION"))).into(),
        );
        push(&mut headers, ContentLength::new("0").into());
        Request {
            method: Method::Options,
            uri,
            version: Version::V2,
            headers,
            body: vec![],
        }
        .to_string()
        .into_bytes()
    }

    /// Whether `quote`, the payload an ICMP error quoted back (see
    /// `sys::errqueue::drain`), is the start of probe `sent` (probe `seq` of backend
    /// `backend`) and long enough to prove it: it must run through the first
    /// occurrence of the probe's Call-ID (the Via branch), whose per-process nonce
    /// and sequence number an off-path forger does not know. A shorter quote (the
    /// request line alone, or none) proves nothing.
    pub fn quote_proves(&self, sent: &[u8], backend: usize, seq: u32, quote: &[u8]) -> bool {
        let id = self.call_id(backend, seq);
        let Some(at) = sent.windows(id.len()).position(|w| w == id.as_bytes()) else {
            return false;
        };
        quote.len() >= at + id.len() && sent.starts_with(quote)
    }

    /// (backend, seq, status code) of a reply to one of this process' probes.
    pub fn parse_reply(&self, datagram: &[u8]) -> Option<(usize, u32, u16)> {
        let SipMessage::Response(r) = SipMessage::try_from(datagram).ok()? else {
            return None;
        };
        let call_id = r.call_id_header().ok()?.value().trim().to_string();
        let (backend, seq) = self.parse_call_id(&call_id)?;
        Some((backend, seq, r.status_code.code()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::response::build_response;
    use crate::sip::{Scan, scan};

    #[test]
    fn probe_round_trip() {
        let ids = ProbeIds::new(0xfeed);
        let req = ids.build(
            3,
            42,
            "127.0.0.1:5070".parse().unwrap(),
            "127.0.0.1:40000".parse().unwrap(),
        );
        let text = String::from_utf8(req.clone()).unwrap();
        assert!(
            text.starts_with("OPTIONS sip:127.0.0.1:5070 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains("Max-Forwards: 70\r\n"));
        let Scan::Sip(v) = scan(&req) else {
            panic!("{text}")
        };
        assert_eq!(v.cseq, Some((42, &b"OPTIONS"[..])));
        let reply = build_response(&req, 200, "OK", Some("x"), &[], None).unwrap();
        assert_eq!(ids.parse_reply(&reply), Some((3, 42, 200)));
        let reply = build_response(&req, 404, "Not Found", Some("x"), &[], None).unwrap();
        assert_eq!(ids.parse_reply(&reply), Some((3, 42, 404)));
        // Another process' probe, a request, and junk are not ours.
        let other = ProbeIds::new(0xbeef);
        assert_eq!(other.parse_reply(&reply), None);
        assert_eq!(ids.parse_reply(&req), None);
        assert_eq!(ids.parse_reply(b"\x00\x01junk"), None);
    }

    #[test]
    fn a_quote_proves_a_probe_only_through_its_call_id() {
        let ids = ProbeIds::new(0xfeed);
        let sent = ids.build(
            1,
            7,
            "10.0.0.2:5060".parse().unwrap(),
            "10.0.0.1:40000".parse().unwrap(),
        );
        let id = "sfp-000000000000feed-1-7";
        let end = sent
            .windows(id.len())
            .position(|w| w == id.as_bytes())
            .unwrap()
            + id.len();
        // What Linux quotes back of a bounced probe: all of it (or its first 520 bytes).
        assert!(ids.quote_proves(&sent, 1, 7, &sent));
        assert!(ids.quote_proves(&sent, 1, 7, &sent[..end]));
        // Too short to carry the Call-ID: the request line, the RFC 792 minimum (none).
        assert!(!ids.quote_proves(&sent, 1, 7, &sent[..end - 1]));
        assert!(!ids.quote_proves(&sent, 1, 7, b"OPTIONS sip:10.0.0.2:5060 SIP/2.0\r\n"));
        assert!(!ids.quote_proves(&sent, 1, 7, b""));
        // Another probe (sequence, backend, process), or altered bytes.
        assert!(!ids.quote_proves(&sent, 1, 8, &sent));
        assert!(!ids.quote_proves(&sent, 2, 7, &sent));
        assert!(!ProbeIds::new(0xbeef).quote_proves(&sent, 1, 7, &sent));
        let mut forged = sent.clone();
        forged[end - 1] ^= 1;
        assert!(!ids.quote_proves(&sent, 1, 7, &forged));
        let mut longer = sent.clone();
        longer.push(b'x');
        assert!(!ids.quote_proves(&sent, 1, 7, &longer));
    }
}
