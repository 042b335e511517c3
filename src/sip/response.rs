//! Stateless responses built from a request (RFC 3261 8.2.6): Via, From, To, Call-ID
//! and CSeq copied, a To tag added. Used by the demo backends and for local replies;
//! never on the forwarding path.

/// The header names (long and compact, lower case) a response copies. Every Via is
/// copied; the others once (a request stuffed with `To` headers must not make a
/// larger answer).
fn copied(name: &[u8]) -> Option<&'static str> {
    let lower: Vec<u8> = name.iter().map(|b| b.to_ascii_lowercase()).collect();
    match lower.as_slice() {
        b"via" | b"v" => Some("Via"),
        b"from" | b"f" => Some("From"),
        b"to" | b"t" => Some("To"),
        b"call-id" | b"i" => Some("Call-ID"),
        b"cseq" => Some("CSeq"),
        _ => None,
    }
}

/// Builds `SIP/2.0 <code> <reason>` for `request`. `to_tag` is added to To when it
/// has none (required for all but 100). `extra` headers are appended verbatim, and
/// `body` with its Content-Type when given. None if `request` has no start line.
pub fn build_response(
    request: &[u8],
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(512 + body.map_or(0, |b| b.1.len()));
    out.extend_from_slice(format!("SIP/2.0 {code} {reason}\r\n").as_bytes());
    let mut lines = request
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .skip_while(|l| l.is_empty());
    lines.next()?;
    let mut current: Option<&'static str> = None;
    let mut seen: Vec<&'static str> = Vec::with_capacity(4);
    let mut pending: Vec<u8> = Vec::new();
    let flush = |name: Option<&'static str>, value: &mut Vec<u8>, out: &mut Vec<u8>| {
        if let Some(n) = name {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.trim_ascii());
            if n == "To"
                && let Some(tag) = to_tag
                && !value.to_ascii_lowercase().windows(5).any(|w| w == b";tag=")
            {
                out.extend_from_slice(format!(";tag={tag}").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        value.clear();
    };
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            pending.push(b' ');
            pending.extend_from_slice(line.trim_ascii());
            continue;
        }
        flush(current, &mut pending, &mut out);
        current = None;
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            current =
                copied(line[..colon].trim_ascii()).filter(|&n| n == "Via" || !seen.contains(&n));
            if let Some(n) = current {
                seen.push(n);
            }
            pending.extend_from_slice(&line[colon + 1..]);
        }
    }
    flush(current, &mut pending, &mut out);
    for (k, v) in extra {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    match body {
        Some((ctype, b)) => {
            out.extend_from_slice(
                format!(
                    "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Scan, scan};

    #[test]
    fn copies_the_transaction_headers() {
        let req = b"INVITE sip:bob@b SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nv: SIP/2.0/UDP p;branch=z9hG4bK2\r\nf: <sip:a@a>;tag=1\r\nTo: <sip:bob@b>\r\ni: abc\r\nCSeq: 1 INVITE\r\nSubject: x\r\n folded\r\nContent-Length: 0\r\n\r\n";
        let r = build_response(
            req,
            200,
            "OK",
            Some("t9"),
            &[("Contact", "<sip:b@b>")],
            None,
        )
        .unwrap();
        let text = String::from_utf8(r.clone()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(text.contains(
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP p;branch=z9hG4bK2\r\n"
        ));
        assert!(text.contains("To: <sip:bob@b>;tag=t9\r\n"));
        assert!(!text.contains("Subject"));
        let Scan::Sip(v) = scan(&r) else {
            panic!("{text}")
        };
        assert_eq!(v.status(), Some(200));
        assert_eq!(v.call_id, b"abc");
        assert_eq!(v.cseq, Some((1, &b"INVITE"[..])));
        assert!(build_response(b"", 200, "OK", None, &[], None).is_none());
    }
}
