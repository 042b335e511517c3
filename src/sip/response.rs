//! Stateless responses built from a request (RFC 3261 8.2.6): Via, From, To, Call-ID
//! and CSeq copied, a To tag added. Used by the demo backends and the health probes'
//! answers ([`build_response`]), and for sipfront's own 503s on the forwarding path
//! ([`write_response`]: into a buffer the caller owns, no allocation).

use std::fmt::{self, Write as _};

/// The header names (long and compact) a response copies, and the bit that marks
/// each but Via as copied once (a request stuffed with `To` headers must not make a
/// larger answer). Every Via is copied.
fn copied(name: &[u8]) -> Option<(&'static str, u8)> {
    const NAMES: [(&[u8], &str, u8); 9] = [
        (b"via", "Via", 0),
        (b"v", "Via", 0),
        (b"from", "From", 1),
        (b"f", "From", 1),
        (b"to", "To", 2),
        (b"t", "To", 2),
        (b"call-id", "Call-ID", 4),
        (b"i", "Call-ID", 4),
        (b"cseq", "CSeq", 8),
    ];
    NAMES
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, long, bit)| (long, bit))
}

/// Why no response was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwritable {
    /// The request has no start line.
    NoStartLine,
    /// The response does not fit the buffer.
    TooLarge,
}

/// A response being written into a caller's buffer.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
    full: bool,
}

impl Out<'_> {
    fn put(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(dst) if !self.full => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            _ => self.full = true,
        }
    }

    /// Trims the whitespace around what was written since `from`.
    fn trim_since(&mut self, from: usize) {
        let v = &self.buf[from..self.len];
        let lead = v.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let kept = v[lead..].trim_ascii_end().len();
        self.buf.copy_within(from + lead..from + lead + kept, from);
        self.len = from + kept;
    }
}

impl fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes());
        Ok(())
    }
}

/// Writes `SIP/2.0 <code> <reason>` for `request` into `buf`; returns its length.
/// A copied header is trimmed after it is written, so `buf` may need room for its
/// whitespace too (`TooLarge` although the result would fit).
/// `to_tag` is added to To when it has none (required for all but 100). `extra`
/// headers are appended verbatim, and `body` with its Content-Type when given.
pub fn write_response<V: fmt::Display>(
    request: &[u8],
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, V)],
    body: Option<(&str, &[u8])>,
    buf: &mut [u8],
) -> Result<usize, Unwritable> {
    let mut out = Out {
        buf,
        len: 0,
        full: false,
    };
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    let mut lines = request
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .skip_while(|l| l.is_empty());
    lines.next().ok_or(Unwritable::NoStartLine)?;
    // The header being copied, and where its value starts in `out`.
    let mut current: Option<(&'static str, usize)> = None;
    let mut seen = 0u8;
    let end_header = |current: Option<(&'static str, usize)>, out: &mut Out| {
        let Some((name, value)) = current else {
            return;
        };
        if out.full {
            return;
        }
        out.trim_since(value);
        if name == "To"
            && let Some(tag) = to_tag
            && !out.buf[value..out.len]
                .windows(5)
                .any(|w| w.eq_ignore_ascii_case(b";tag="))
        {
            out.put(b";tag=");
            out.put(tag.as_bytes());
        }
        out.put(b"\r\n");
    };
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // A folded line continues the header.
            if current.is_some() {
                out.put(b" ");
                out.put(line.trim_ascii());
            }
            continue;
        }
        end_header(current.take(), &mut out);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let Some((name, bit)) = copied(line[..colon].trim_ascii())
            && seen & bit == 0
        {
            seen |= bit;
            out.put(name.as_bytes());
            out.put(b": ");
            current = Some((name, out.len));
            // Leading whitespace never stays: not written, so the buffer need not
            // hold it (`trim_since` takes the rest).
            out.put(line[colon + 1..].trim_ascii_start());
        }
    }
    end_header(current, &mut out);
    for (k, v) in extra {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    match body {
        Some((ctype, b)) => {
            let _ = write!(
                out,
                "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                b.len()
            );
            out.put(b);
        }
        None => out.put(b"Content-Length: 0\r\n\r\n"),
    }
    if out.full {
        return Err(Unwritable::TooLarge);
    }
    Ok(out.len)
}

/// [`write_response`] into a new vector. None if `request` has no start line.
pub fn build_response(
    request: &[u8],
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Option<Vec<u8>> {
    // A copied header grows by at most 4 bytes (`v:` + LF to `Via: ` + CRLF), and
    // whitespace inside a header is held until it is trimmed; the start line, a tag,
    // the extra headers and the body come on top. A first guess, doubled if short.
    let mut room = request.len() + 128 + reason.len() + to_tag.map_or(0, str::len);
    room += extra
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum::<usize>();
    room += body.map_or(0, |(c, b)| c.len() + b.len() + 64);
    let mut buf = vec![0; room];
    loop {
        match write_response(request, code, reason, to_tag, extra, body, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Some(buf);
            }
            Err(Unwritable::NoStartLine) => return None,
            Err(Unwritable::TooLarge) => buf.resize(buf.len() * 2, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Scan, scan};
    use proptest::prelude::*;

    /// The builder as it was before it wrote into a buffer (allocating freely): the
    /// model the buffer-writing one is checked against.
    fn model(
        request: &[u8],
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Option<Vec<u8>> {
        fn name_of(name: &[u8]) -> Option<&'static str> {
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
        let mut out = Vec::new();
        out.extend_from_slice(format!("SIP/2.0 {code} {reason}\r\n").as_bytes());
        let mut lines = request
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .skip_while(|l| l.is_empty());
        lines.next()?;
        let mut current: Option<&'static str> = None;
        let mut seen: Vec<&'static str> = Vec::new();
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
                current = name_of(line[..colon].trim_ascii())
                    .filter(|&n| n == "Via" || !seen.contains(&n));
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
        out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        Some(out)
    }

    /// Requests made of SIP-like pieces: the copied headers in long, compact and odd
    /// case, others, folds, stray whitespace, lines without a colon, bare LFs, tags.
    fn request() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop::sample::select(vec![
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1",
            "v:SIP/2.0/UDP b",
            "VIA :  x  ",
            "From: <sip:a@a>;tag=1",
            "f: a",
            "To: <sip:b@b>",
            "t: <sip:b@b>;TAG=x",
            "TO:\t<sip:c@c> ;tag=",
            "Call-ID: abc",
            "i: def",
            "CSeq: 1 INVITE",
            "cseq : 2 BYE",
            "Subject: x",
            " folded  more ",
            "\tfolded tab",
            "   ",
            "no colon here",
            ":",
            "To",
            "",
            "\r",
            ";tag=",
        ]);
        let start = prop::sample::select(vec!["", "\r\n", "INVITE sip:b@b SIP/2.0", "\n\n"]);
        (
            start,
            prop::collection::vec(piece, 0..14),
            prop::collection::vec(any::<u8>(), 0..6),
            prop::sample::select(vec!["\r\n", "\n"]),
        )
            .prop_map(|(start, pieces, noise, eol)| {
                let mut r = start.as_bytes().to_vec();
                for p in pieces {
                    r.extend_from_slice(eol.as_bytes());
                    r.extend_from_slice(p.as_bytes());
                }
                r.extend_from_slice(&noise);
                r
            })
    }

    proptest! {
        #[test]
        fn writes_what_the_allocating_builder_built(
            req in request(),
            tag in prop::option::of(prop::sample::select(vec!["t1", "sipfront-503"])),
        ) {
            let extra = [("Retry-After", "30")];
            let want = model(&req, 503, "Service Unavailable", tag, &extra);
            let got = build_response(&req, 503, "Service Unavailable", tag, &extra, None);
            prop_assert_eq!(&got, &want);
            // Into a buffer of exactly its size, and one byte short.
            if let Some(w) = want {
                let mut buf = vec![0; w.len()];
                let r = write_response(&req, 503, "Service Unavailable", tag, &extra, None, &mut buf);
                prop_assert_eq!(r, Ok(w.len()));
                prop_assert_eq!(&buf, &w);
                let r = write_response(&req, 503, "Service Unavailable", tag, &extra, None, &mut buf[..w.len() - 1]);
                prop_assert_eq!(r, Err(Unwritable::TooLarge));
            }
        }

        #[test]
        fn random_bytes_never_panic(req in prop::collection::vec(any::<u8>(), 0..300), n in 0usize..400) {
            let mut buf = vec![0; n];
            let _ = write_response(&req, 503, "x", Some("t"), &[("A", 1)], None, &mut buf);
        }
    }

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
