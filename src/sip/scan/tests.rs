use super::*;
use proptest::prelude::*;

// -----------------------------------------------------------------------------------------
// Helpers
// -----------------------------------------------------------------------------------------

/// Join lines with CRLF and close the header section.
fn crlf(lines: &[&str]) -> Vec<u8> {
    let mut v = lines.join("\r\n").into_bytes();
    v.extend_from_slice(b"\r\n\r\n");
    v
}

/// A minimal valid request with the given extra header lines (CRLF).
fn req_with(extra: &[&str]) -> Vec<u8> {
    let mut lines = vec![
        "OPTIONS sip:a@b SIP/2.0",
        "Via: SIP/2.0/UDP h;branch=z9hG4bK1",
    ];
    lines.extend_from_slice(extra);
    crlf(&lines)
}

fn view(buf: &[u8]) -> SipView<'_> {
    match scan(buf) {
        Scan::Sip(v) => v,
        other => panic!(
            "expected Sip for {:?}, got {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

fn err(buf: &[u8]) -> ScanError {
    match scan(buf) {
        Scan::Invalid(e) => e,
        other => panic!(
            "expected Invalid for {:?}, got {other:?}",
            String::from_utf8_lossy(buf)
        ),
    }
}

fn within(buf: &[u8], s: &[u8]) -> bool {
    let b = buf.as_ptr() as usize;
    let p = s.as_ptr() as usize;
    !s.is_empty() && p >= b && p + s.len() <= b + buf.len()
}

/// Every slice in the result is a non-empty sub-slice of `buf`.
fn check_slices(buf: &[u8], r: &Scan<'_>) -> Result<(), TestCaseError> {
    if let Scan::Sip(v) = r {
        prop_assert!(within(buf, v.call_id), "call_id outside input");
        if let Kind::Request { method, uri } = v.kind {
            prop_assert!(within(buf, method), "method outside input");
            prop_assert!(within(buf, uri), "uri outside input");
        }
        if let Some((_, m)) = v.cseq {
            prop_assert!(within(buf, m), "cseq method outside input");
        }
        if let Some(ua) = v.user_agent {
            prop_assert!(within(buf, ua), "user_agent outside input");
            prop_assert!(!ua.is_empty(), "empty user_agent");
        }
    }
    Ok(())
}

/// The files of tests/corpus/sip, read once.
fn corpus() -> &'static [(String, Vec<u8>)] {
    static CORPUS: std::sync::OnceLock<Vec<(String, Vec<u8>)>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/sip");
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .expect("corpus dir")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sip"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect();
        out.sort();
        assert!(out.len() >= 10, "corpus too small");
        out
    })
}

// -----------------------------------------------------------------------------------------
// Table-driven unit tests
// -----------------------------------------------------------------------------------------

#[test]
fn keepalives() {
    let cases: &[(&[u8], Scan<'_>)] = &[
        (b"", Scan::Keepalive),
        (b"\r\n", Scan::Keepalive),
        (b"\r\n\r\n", Scan::Keepalive),
        (b"\n", Scan::Keepalive),
        (b"\n\n", Scan::Keepalive),
        (b" ", Scan::Keepalive),
        (b"\t\r\n", Scan::Keepalive),
        (b"\0", Scan::Keepalive),
        (b"\0\0\0\0", Scan::Keepalive),
        (b"\r\n\0\0", Scan::Keepalive),
        (b"\r\n\r\n\r\n\r\n", Scan::Keepalive),
        (b"   \t \r\n  ", Scan::Keepalive),
        (b"\0\0\0\0\0", Scan::Invalid(ScanError::NotSip)),
        (b"\r\n\r\n\0", Scan::Invalid(ScanError::NotSip)),
        (b"x", Scan::Invalid(ScanError::NotSip)),
        (b"\r\nx", Scan::Invalid(ScanError::NotSip)),
        (b"ping", Scan::Invalid(ScanError::NotSip)),
    ];
    for (i, (input, want)) in cases.iter().enumerate() {
        assert_eq!(
            scan(input),
            *want,
            "case {i}: {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn start_lines() {
    let hdrs = "\r\nCall-ID: c\r\n\r\n";
    let req = |m: &'static str, u: &'static str| {
        Ok(Kind::Request {
            method: m.as_bytes(),
            uri: u.as_bytes(),
        })
    };
    let resp = |code| Ok(Kind::Response { code });
    let cases: &[(&str, Result<Kind<'static>, ScanError>)] = &[
        (
            "INVITE sip:bob@example.com SIP/2.0",
            req("INVITE", "sip:bob@example.com"),
        ),
        (
            "REGISTER sip:example.com SIP/2.0",
            req("REGISTER", "sip:example.com"),
        ),
        (
            "FOO-BAR.x sips:h:5061;transport=tls SIP/2.0",
            req("FOO-BAR.x", "sips:h:5061;transport=tls"),
        ),
        ("OPTIONS sip:h sip/2.0", req("OPTIONS", "sip:h")),
        ("OPTIONS sip:h SIP/2.0  \t", req("OPTIONS", "sip:h")),
        ("SIP/2.0 200 OK", resp(200)),
        (
            "SIP/2.0 100 trying -- your call is important to us",
            resp(100),
        ),
        ("SIP/2.0 699 Whatever", resp(699)),
        ("sip/2.0 486 Busy Here", resp(486)),
        ("SIP/2.0 183", resp(183)),
        ("SIP/2.0 200 ", resp(200)),
        ("SIP/2.0 200 \u{00e9}t\u{00e9}", resp(200)),
        ("SIP/2.0 099 Bad", Err(ScanError::BadStartLine)),
        ("SIP/2.0 700 Bad", Err(ScanError::BadStartLine)),
        ("SIP/2.0 20 OK", Err(ScanError::BadStartLine)),
        ("SIP/2.0 2000 OK", Err(ScanError::BadStartLine)),
        ("SIP/2.0 abc OK", Err(ScanError::BadStartLine)),
        ("SIP/2.0 200OK", Err(ScanError::BadStartLine)),
        ("SIP/2.0  200 OK", Err(ScanError::BadStartLine)),
        ("SIP/2.0", Err(ScanError::BadStartLine)),
        ("SIP/2.0 ", Err(ScanError::BadStartLine)),
        ("INVITE  sip:a SIP/2.0", Err(ScanError::BadStartLine)),
        ("INVITE sip:a  SIP/2.0", Err(ScanError::BadStartLine)),
        ("INVITE sip:a", Err(ScanError::NotSip)),
        ("INVITE SIP/2.0", Err(ScanError::BadStartLine)),
        (" INVITE sip:a SIP/2.0", Err(ScanError::BadStartLine)),
        ("INV(TE sip:a SIP/2.0", Err(ScanError::BadStartLine)),
        ("INVITE sip:\u{7f}a SIP/2.0", Err(ScanError::BadStartLine)),
        ("INVITE sip:a SIP/2.0 extra", Err(ScanError::BadStartLine)),
        ("INVITE sip:a SIP/3.0", Err(ScanError::NotSip)),
        ("GET / HTTP/1.1", Err(ScanError::NotSip)),
        ("HTTP/1.1 200 OK", Err(ScanError::NotSip)),
        ("\u{1}\u{2}\u{3}binary", Err(ScanError::NotSip)),
    ];
    for (line, want) in cases {
        let buf = format!("{line}{hdrs}");
        let got = match scan(buf.as_bytes()) {
            Scan::Sip(v) => Ok(v.kind),
            Scan::Invalid(e) => Err(e),
            Scan::Keepalive => panic!("keepalive for {line:?}"),
        };
        assert_eq!(got, *want, "start line {line:?}");
    }
}

#[test]
fn binary_junk_is_not_sip() {
    let junk: Vec<u8> = (0u8..=255).rev().cycle().take(600).collect();
    assert_eq!(scan(&junk), Scan::Invalid(ScanError::NotSip));
    assert_eq!(
        scan(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]),
        Scan::Invalid(ScanError::NotSip)
    );
    // STUN binding request header
    assert_eq!(
        scan(&[
            0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
        ]),
        Scan::Invalid(ScanError::NotSip)
    );
}

#[test]
fn leading_crlf_skipped() {
    for prefix in ["\r\n", "\r\n\r\n", "\n", "\n\r\n\n"] {
        let buf = format!("{prefix}OPTIONS sip:x SIP/2.0\r\nCall-ID: lc\r\n\r\n");
        let v = view(buf.as_bytes());
        assert!(v.is_method(b"OPTIONS"));
        assert_eq!(v.call_id, b"lc");
    }
}

#[test]
fn call_id_variants() {
    type Want = Result<&'static [u8], ScanError>;
    let cases: &[(&[&str], Want)] = &[
        (&["Call-ID: abc@host"], Ok(b"abc@host")),
        (&["call-id: abc"], Ok(b"abc")),
        (&["CALL-ID: abc"], Ok(b"abc")),
        (&["cAlL-iD: abc"], Ok(b"abc")),
        (&["i: short"], Ok(b"short")),
        (&["I: short"], Ok(b"short")),
        (&["Call-ID:nospace"], Ok(b"nospace")),
        (&["Call-ID  :  spaced  "], Ok(b"spaced")),
        (&["Call-ID\t:\tx\t"], Ok(b"x")),
        (&["i : y"], Ok(b"y")),
        (&["Call-ID:", " folded@host"], Ok(b"folded@host")),
        (&["Call-ID: a", "\tb"], Ok(b"a\r\n\tb")),
        (&["Call-ID: first", "i: second"], Ok(b"first")),
        (&["Call-ID:", "i: second"], Ok(b"second")),
        (&["Call-ID:   "], Err(ScanError::MissingCallId)),
        (&["To: <sip:x>"], Err(ScanError::MissingCallId)),
        (&[], Err(ScanError::MissingCallId)),
        (&["Call-Id2: x"], Err(ScanError::MissingCallId)),
        (&["Call-IDx: x"], Err(ScanError::MissingCallId)),
        (&["X-Call-ID: x"], Err(ScanError::MissingCallId)),
        (&["j: x"], Err(ScanError::MissingCallId)),
    ];
    for (hdrs, want) in cases {
        let buf = req_with(hdrs);
        let got = match scan(&buf) {
            Scan::Sip(v) => Ok(v.call_id),
            Scan::Invalid(e) => Err(e),
            Scan::Keepalive => panic!(),
        };
        assert_eq!(got, *want, "headers {hdrs:?}");
    }
}

#[test]
fn cseq_variants() {
    type Want = Result<Option<(u32, &'static [u8])>, ScanError>;
    let cases: &[(&[&str], Want)] = &[
        (&["CSeq: 314159 INVITE"], Ok(Some((314159, b"INVITE")))),
        (&["cseq: 1 REGISTER"], Ok(Some((1, b"REGISTER")))),
        (&["CSEQ:2 BYE"], Ok(Some((2, b"BYE")))),
        (&["CSeq :  7\t\tACK  "], Ok(Some((7, b"ACK")))),
        (&["CSeq: 5", "\tREGISTER"], Ok(Some((5, b"REGISTER")))),
        (&["CSeq: 0 OPTIONS"], Ok(Some((0, b"OPTIONS")))),
        (&["CSeq: 4294967295 INFO"], Ok(Some((u32::MAX, b"INFO")))),
        (
            &["CSeq: 00000000000000000009 PRACK"],
            Ok(Some((9, b"PRACK"))),
        ),
        (&["CSeq: 1 invite"], Ok(Some((1, b"invite")))),
        (&["CSeq: 1 INVITE", "CSeq: 2 BYE"], Ok(Some((1, b"INVITE")))),
        (&[], Ok(None)),
        (&["X-CSeq: nonsense"], Ok(None)),
        (&["CSeq: 4294967296 INVITE"], Err(ScanError::BadHeader)),
        (
            &["CSeq: 99999999999999999999999 INVITE"],
            Err(ScanError::BadHeader),
        ),
        (&["CSeq: INVITE"], Err(ScanError::BadHeader)),
        (&["CSeq: 1"], Err(ScanError::BadHeader)),
        (&["CSeq: 1INVITE"], Err(ScanError::BadHeader)),
        (&["CSeq: -1 INVITE"], Err(ScanError::BadHeader)),
        (&["CSeq: 1 INVITE BYE"], Err(ScanError::BadHeader)),
        (&["CSeq: 1 INV/TE"], Err(ScanError::BadHeader)),
        (&["CSeq:"], Err(ScanError::BadHeader)),
    ];
    for (hdrs, want) in cases {
        let mut all = vec!["Call-ID: c"];
        all.extend_from_slice(hdrs);
        let buf = req_with(&all);
        let got = match scan(&buf) {
            Scan::Sip(v) => Ok(v.cseq),
            Scan::Invalid(e) => Err(e),
            Scan::Keepalive => panic!(),
        };
        assert_eq!(got, *want, "headers {hdrs:?}");
    }
}

#[test]
fn expires_header_variants() {
    let cases: &[(&[&str], Option<u32>)] = &[
        (&["Expires: 3600"], Some(3600)),
        (&["expires:0"], Some(0)),
        (&["EXPIRES :  120  "], Some(120)),
        (&["Expires:", " 60"], Some(60)),
        (&["Expires: 4294967295"], Some(u32::MAX)),
        (&["Expires: 4294967296"], Some(u32::MAX)),
        (&["Expires: 123456789012345678901234567890"], Some(u32::MAX)),
        (&["Expires: Thu, 01 Dec 1994 16:00:00 GMT"], None),
        (&["Expires: 12abc"], None),
        (&["Expires: -5"], None),
        (&["Expires:"], None),
        (&["Expires: 10", "Expires: 20"], Some(10)),
        (&["Expires: soon", "Expires: 20"], Some(20)),
        (&["e: gzip"], None),
        (&["e: 5"], None),
        (&["Min-Expires: 60"], None),
        (&["Session-Expires: 1800"], None),
        (&["X-Expires: 5"], None),
        (&[], None),
    ];
    for (hdrs, want) in cases {
        let mut all = vec!["Call-ID: c"];
        all.extend_from_slice(hdrs);
        let buf = req_with(&all);
        assert_eq!(view(&buf).expires, *want, "headers {hdrs:?}");
    }
}

#[test]
fn contact_expires_variants() {
    let cases: &[(&[&str], Option<u32>)] = &[
        (&["Contact: <sip:a@b>;expires=60"], Some(60)),
        (&["Contact: sip:a@b;expires=60"], Some(60)),
        (&["m: <sip:a@b>;expires=61"], Some(61)),
        (&["M: <sip:a@b>;expires=62"], Some(62)),
        (&["contact: <sip:a@b>;EXPIRES=63"], Some(63)),
        (&["CONTACT: <sip:a@b>;Expires=64"], Some(64)),
        (&["Contact: <sip:a@b>;q=0.5;expires=65;reg-id=1"], Some(65)),
        (&["Contact: <sip:a@b>;expires = 66 ;q=1"], Some(66)),
        (&["Contact: <sip:a@b> ; expires\t=\t67"], Some(67)),
        (
            &["Contact: <sip:a@b>;expires=5, <sip:c@d>;expires=10"],
            Some(10),
        ),
        (
            &["Contact: <sip:a@b>;expires=50,<sip:c@d>;expires=10"],
            Some(50),
        ),
        (
            &[
                "Contact: <sip:a@b>;expires=5",
                "Contact: <sip:c@d>;expires=10",
            ],
            Some(10),
        ),
        (
            &["Contact: <sip:a@b>;expires=15", "m: <sip:c@d>;expires=10"],
            Some(15),
        ),
        (&["Contact: <sip:a@b>, <sip:c@d>;expires=7"], Some(7)),
        (&["Contact: <sip:a@b>;expires=0"], Some(0)),
        (&["Contact: <sip:a@b;expires=5>"], None),
        (&["Contact: <sip:a@b;expires=5>;expires=6"], Some(6)),
        (&["Contact: \"x;expires=5\" <sip:a@b>"], None),
        (&["Contact: \"x;expires=5\" <sip:a@b>;expires=9"], Some(9)),
        (
            &["Contact: \"x\\\";expires=5\" <sip:a@b>;expires=9"],
            Some(9),
        ),
        (&["Contact: \"a, b <c>\" <sip:a@b>;expires=8"], Some(8)),
        (
            &["Contact: <sip:a@b>;+sip.instance=\"<urn:x;expires=5>\";expires=11"],
            Some(11),
        ),
        (&["Contact: <sip:a@b>;x=\"expires=5\""], None),
        (&["Contact: <sip:a@b>;expires=\"5\""], None),
        (&["Contact: <sip:a@b>;expires=12abc"], None),
        (&["Contact: <sip:a@b>;expires="], None),
        (&["Contact: <sip:a@b>;expires"], None),
        (&["Contact: <sip:a@b>;x-expires=5"], None),
        (&["Contact: <sip:a@b>;expiresx=5"], None),
        (&["Contact: <sip:a@b>;expires=99999999999"], Some(u32::MAX)),
        (&["Contact: *"], None),
        (&["Contact: <sip:a@b>"], None),
        (
            &[
                "Contact: <sip:a@b>;expires=30,",
                " <sip:c@d>",
                "\t;expires=900",
            ],
            Some(900),
        ),
        (&["Contact: <sip:a@b>;expires=", " 31"], Some(31)),
        (&["Contact: <sip:a@b", " ;expires=5"], None),
        (&["Contact: \"unterminated;expires=5"], None),
        (&["X-Contact: <sip:a@b>;expires=5"], None),
        (&["Record-Route: <sip:a@b>;expires=5"], None),
    ];
    for (hdrs, want) in cases {
        let mut all = vec!["Call-ID: c"];
        all.extend_from_slice(hdrs);
        let buf = req_with(&all);
        assert_eq!(view(&buf).contact_expires, *want, "headers {hdrs:?}");
    }
}

#[test]
fn user_agent_variants() {
    let table: &[(&[&str], Option<&str>)] = &[
        (&[], None),
        (&["User-Agent: friendly-scanner"], Some("friendly-scanner")),
        (
            &["user-agent:   Linphone/5.2 (belle-sip)  "],
            Some("Linphone/5.2 (belle-sip)"),
        ),
        (&["USER-AGENT : x"], Some("x")),
        (&["User-Agent:", "User-Agent: second"], Some("second")),
        (&["User-Agent: first", "User-Agent: second"], Some("first")),
        (&["User-Agent: a", " folded"], Some("a\r\n folded")),
        (&["X-User-Agent: no", "Server: no"], None),
        (&["User-Agents: no"], None),
    ];
    for (hdrs, want) in table {
        let mut all = vec!["Call-ID: c"];
        all.extend_from_slice(hdrs);
        let buf = req_with(&all);
        assert_eq!(
            view(&buf).user_agent,
            want.map(str::as_bytes),
            "headers {hdrs:?}"
        );
    }
}

#[test]
fn body_is_not_examined() {
    let buf = b"SIP/2.0 200 OK\r\nCall-ID: b\r\nCSeq: 1 REGISTER\r\nContent-Length: 60\r\n\r\n\
Contact: <sip:a@b>;expires=999\r\nExpires: 999\r\nCall-ID: other\r\n";
    let v = view(buf);
    assert_eq!(
        (v.call_id, v.expires, v.contact_expires),
        (&b"b"[..], None, None)
    );
    // Body without a Call-ID in the header section does not help.
    assert_eq!(
        err(b"SIP/2.0 200 OK\r\nCSeq: 1 X\r\n\r\nCall-ID: x\r\n"),
        ScanError::MissingCallId
    );
}

#[test]
fn line_endings() {
    let lf = b"REGISTER sip:h SIP/2.0\nCall-ID: lf\nCSeq: 3 REGISTER\nContact: <sip:a@b>;expires=5\nExpires: 9\n\n";
    let v = view(lf);
    assert_eq!(
        (v.call_id, v.cseq, v.expires, v.contact_expires),
        (&b"lf"[..], Some((3, &b"REGISTER"[..])), Some(9), Some(5))
    );
    let mixed = b"REGISTER sip:h SIP/2.0\r\nCall-ID: mx\nCSeq: 4 REGISTER\r\nExpires: 9\n\r\n";
    let v = view(mixed);
    assert_eq!(
        (v.call_id, v.cseq, v.expires),
        (&b"mx"[..], Some((4, &b"REGISTER"[..])), Some(9))
    );
    let mixed2 = b"SIP/2.0 200 OK\nCall-ID: mx2\r\n\n";
    assert_eq!(view(mixed2).call_id, b"mx2");
}

#[test]
fn header_errors() {
    let cases: &[(&[u8], ScanError)] = &[
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\nNoColonHere\r\n\r\n",
            ScanError::BadHeader,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\nBad Name: x\r\nCall-ID: c\r\n\r\n",
            ScanError::BadHeader,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\n: novalue\r\nCall-ID: c\r\n\r\n",
            ScanError::BadHeader,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\n Call-ID: c\r\n\r\n",
            ScanError::BadHeader,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\n\tCall-ID: c\r\n\r\n",
            ScanError::BadHeader,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\n\rX: y\r\n\r\n",
            ScanError::BadHeader,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\nX\x00Y: y\r\n\r\n",
            ScanError::BadHeader,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\n\xff: y\r\n\r\n",
            ScanError::BadHeader,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\nCSeq: x\r\n\r\n",
            ScanError::BadHeader,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\nX-Y\r\n",
            ScanError::BadHeader,
        ),
        // Truncation.
        (b"OPTIONS sip:h SIP/2.0", ScanError::Truncated),
        (b"OPTIONS sip:h SIP/2.0\r", ScanError::Truncated),
        (b"SIP/2.0 200 OK", ScanError::Truncated),
        (b"OPTIONS sip:h SIP/2.0\r\n", ScanError::Truncated),
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\n",
            ScanError::Truncated,
        ),
        (b"OPTIONS sip:h SIP/2.0\nCall-ID: c\n", ScanError::Truncated),
        (b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c", ScanError::Truncated),
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\nCSeq: 1 OPT",
            ScanError::Truncated,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\nCSe",
            ScanError::Truncated,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\nCSeq  ",
            ScanError::Truncated,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\n\r",
            ScanError::Truncated,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\n  folded\r\n",
            ScanError::Truncated,
        ),
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\nX: y\r\n ",
            ScanError::Truncated,
        ),
        // Whitespace-only line is a fold, not the end of headers.
        (
            b"OPTIONS sip:h SIP/2.0\r\nCall-ID: c\r\n \r\n",
            ScanError::Truncated,
        ),
        // Missing Call-ID only once the header section is complete.
        (
            b"OPTIONS sip:h SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n",
            ScanError::MissingCallId,
        ),
        (b"SIP/2.0 200 OK\r\n\r\n", ScanError::MissingCallId),
    ];
    for (i, (input, want)) in cases.iter().enumerate() {
        assert_eq!(
            err(input),
            *want,
            "case {i}: {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn unknown_and_compact_headers_are_skipped() {
    let buf = crlf(&[
        "INVITE sip:x SIP/2.0",
        "v: SIP/2.0/UDP h",
        "f: <sip:a@b>;tag=1",
        "t: <sip:c@d>",
        "l: 0",
        "k: 100rel",
        "c: application/sdp",
        "s: subject",
        "e: tar",
        "x-weird_header.name~: whatever: with colons ;expires=5",
        "Content-Length: 0",
        "i: compact-id",
    ]);
    let v = view(&buf);
    assert_eq!(
        (v.call_id, v.cseq, v.expires, v.contact_expires),
        (&b"compact-id"[..], None, None, None)
    );
}

#[test]
fn view_accessors() {
    let buf = crlf(&[
        "REGISTER sip:example.com SIP/2.0",
        "Call-ID: acc",
        "CSeq: 2 REGISTER",
        "Expires: 300",
    ]);
    let v = view(&buf);
    assert!(v.is_request());
    assert_eq!(v.method(), Some(&b"REGISTER"[..]));
    assert_eq!(v.uri(), Some(&b"sip:example.com"[..]));
    assert_eq!(v.status(), None);
    assert!(v.is_method(b"REGISTER"));
    assert!(!v.is_method(b"register"));
    assert!(v.cseq_is(b"REGISTER"));
    assert!(!v.cseq_is(b"INVITE"));
    assert_eq!(v.cseq_method(), Some(&b"REGISTER"[..]));
    assert_eq!(v.granted_expiry(), Some(300));

    let buf = crlf(&[
        "SIP/2.0 200 OK",
        "Call-ID: acc",
        "CSeq: 2 REGISTER",
        "Contact: <sip:a@b>;expires=60",
        "Expires: 300",
    ]);
    let v = view(&buf);
    assert!(!v.is_request());
    assert_eq!(v.method(), None);
    assert_eq!(v.uri(), None);
    assert_eq!(v.status(), Some(200));
    assert!(!v.is_method(b"REGISTER"));
    assert!(v.cseq_is(b"REGISTER"));
    assert_eq!(v.granted_expiry(), Some(60));

    let buf = crlf(&["SIP/2.0 200 OK", "Call-ID: acc"]);
    let v = view(&buf);
    assert_eq!((v.cseq_method(), v.granted_expiry()), (None, None));
    assert!(!v.cseq_is(b""));
}

#[test]
fn error_labels() {
    let all = [
        (ScanError::NotSip, "not_sip"),
        (ScanError::BadStartLine, "bad_start_line"),
        (ScanError::Truncated, "truncated"),
        (ScanError::MissingCallId, "missing_call_id"),
        (ScanError::BadHeader, "bad_header"),
    ];
    for (e, s) in all {
        assert_eq!(e.as_str(), s);
        assert_eq!(e.to_string(), s);
    }
}

#[test]
fn mentions_sip20_cases() {
    let cases: &[(&[u8], bool)] = &[
        (b"SIP/2.0", true),
        (b"xx sip/2.0 yy", true),
        (b"//SIP/2.0//", true),
        (b"SIP/2.", false),
        (b"IP/2.0", false),
        (b"/SIP/2.0", true),
        (b"SIP/3.0 SIP/2.1", false),
        (b"", false),
        (b"////////////////", false),
    ];
    for (line, want) in cases {
        assert_eq!(
            mentions_sip20(line),
            *want,
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn find_byte_matches_naive() {
    let hay: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
    for needle in [0u8, 10, 13, 58, 200, 255] {
        for from in 0..=hay.len() + 2 {
            let naive = hay
                .get(from..)
                .and_then(|s| s.iter().position(|&b| b == needle))
                .map(|p| p + from);
            assert_eq!(
                find_byte(&hay, from, needle),
                naive,
                "needle {needle} from {from}"
            );
        }
    }
    // High bytes next to the needle must not produce false positives.
    let tricky = [0x80u8, 0x81, 0x0b, 0x8a, 0xff, 0x09, 0x0a, 0x0a, 0x01];
    assert_eq!(find_byte(&tricky, 0, b'\n'), Some(6));
}

#[test]
fn corpus_scans() {
    for (name, bytes) in corpus() {
        match scan(bytes) {
            Scan::Sip(v) => {
                assert!(within(bytes, v.call_id), "{name}");
                assert!(v.cseq.is_some(), "{name}: no CSeq");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

// -----------------------------------------------------------------------------------------
// Property tests
// -----------------------------------------------------------------------------------------

/// Bytes that tend to reach deep into the scanner.
fn sipish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(&b"\r\n"[..]),
        Just(&b"\n"[..]),
        Just(&b"\r"[..]),
        Just(&b" "[..]),
        Just(&b"\t"[..]),
        Just(&b":"[..]),
        Just(&b";"[..]),
        Just(&b","[..]),
        Just(&b"\""[..]),
        Just(&b"\\"[..]),
        Just(&b"<"[..]),
        Just(&b">"[..]),
        Just(&b"="[..]),
        Just(&b"SIP/2.0"[..]),
        Just(&b"SIP/2.0 200 OK\r\n"[..]),
        Just(&b"INVITE sip:a@b SIP/2.0\r\n"[..]),
        Just(&b"Call-ID"[..]),
        Just(&b"i"[..]),
        Just(&b"m"[..]),
        Just(&b"CSeq"[..]),
        Just(&b"Contact"[..]),
        Just(&b"Expires"[..]),
        Just(&b"expires"[..]),
        Just(&b"4294967296"[..]),
        Just(&b"12"[..]),
        Just(&b"INVITE"[..]),
    ]
    .prop_map(|s| s.to_vec());
    let chunk = prop_oneof![piece, proptest::collection::vec(any::<u8>(), 0..4)];
    proptest::collection::vec(chunk, 0..60).prop_map(|v| v.concat())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        any::<u8>(),
        Just(b'\r'),
        Just(b'\n'),
        Just(b' '),
        Just(b':'),
        Just(b';'),
        Just(b'"'),
        Just(b'<'),
        Just(b'>'),
        Just(b'9'),
    ];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<usize>(), interesting).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..32).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    let len = buf.len();
    let at = |i: usize| if len == 0 { 0 } else { i % (len + 1) };
    match m {
        Mutation::Flip(i, x) if len > 0 => buf[i % len] ^= x,
        Mutation::Set(i, b) if len > 0 => buf[i % len] = *b,
        Mutation::Truncate(i) => buf.truncate(at(*i)),
        Mutation::Insert(i, v) => {
            let p = at(*i);
            buf.splice(p..p, v.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let p = at(*i);
            let e = (p + n).min(len);
            buf.drain(p..e);
        }
        _ => {}
    }
}

/// A generated valid message and the values `scan` must report for it.
#[derive(Debug, Clone)]
struct Generated {
    bytes: Vec<u8>,
    request: Option<(String, String)>,
    status: Option<u16>,
    call_id: String,
    cseq: Option<(u32, String)>,
    expires: Option<u32>,
    contact_expires: Option<u32>,
    user_agent: Option<String>,
}

fn random_case(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn token(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9.!%*_+`'~-]{{1,{max}}}")).unwrap()
}

/// One contact: its rendering and its `expires` parameter if any.
fn contact() -> impl Strategy<Value = (String, Option<u32>)> {
    (
        token(12),
        prop::option::of(any::<u32>()),
        0u8..4,        // form
        any::<bool>(), // uri param expires decoy
        any::<bool>(), // extra params
        0u8..3,        // spacing around '='
    )
        .prop_map(|(user, exp, form, decoy, extra, sp)| {
            let uri = if decoy {
                format!("sip:{user}@192.0.2.1;expires=4000000000;transport=udp")
            } else {
                format!("sip:{user}@192.0.2.1:5060")
            };
            let mut params = String::new();
            if extra {
                params.push_str(";q=0.7;+sip.instance=\"<urn:uuid:1;expires=4000000001>\"");
            }
            if let Some(e) = exp {
                let eq = match sp {
                    0 => "=",
                    1 => " = ",
                    _ => "\t=",
                };
                params.push_str(&format!(";expires{eq}{e}"));
            }
            if extra {
                params.push_str(";reg-id=1");
            }
            let s = match form {
                // addr-spec: URI params would be contact params, so no decoy here.
                0 => format!("sip:{user}@192.0.2.1{params}"),
                1 => format!("<{uri}>{params}"),
                2 => format!("\"{user} ;expires=4000000002, x\" <{uri}>{params}"),
                _ => format!("{user} <{uri}>{params}"),
            };
            (s, exp)
        })
}

fn generated() -> impl Strategy<Value = Generated> {
    let methods = prop::sample::select(vec![
        "INVITE",
        "REGISTER",
        "ACK",
        "BYE",
        "OPTIONS",
        "CANCEL",
        "SUBSCRIBE",
        "NOTIFY",
        "X-CUSTOM",
    ]);
    let extra_header = (
        proptest::string::string_regex("X-[A-Za-z0-9-]{1,10}").unwrap(),
        proptest::string::string_regex("[ -~]{0,40}").unwrap(),
    )
        .prop_map(|(n, v)| format!("{n}: {v}"));
    (
        (prop::option::of((methods.clone(), token(20))), 100u16..700),
        (
            token(30),
            prop::option::of(proptest::string::string_regex("[a-z0-9.]{1,20}").unwrap()),
        ),
        prop::option::of((any::<u32>(), methods)),
        prop::option::of(any::<u32>()),
        proptest::collection::vec(contact(), 0..4),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<u64>(),
            0usize..3,
        ),
        proptest::collection::vec(extra_header, 0..6),
        any::<u64>(),
        prop::option::of(
            proptest::string::string_regex("[A-Za-z0-9.]([A-Za-z0-9./ -]{0,28}[A-Za-z0-9.])?")
                .unwrap(),
        ),
    )
        .prop_map(
            |(
                (req, code),
                (cid, cid_host),
                cseq,
                expires,
                contacts,
                (lf, compact, fold, case_mask, ws),
                extra,
                order_seed,
                user_agent,
            )| {
                let eol = if lf { "\n" } else { "\r\n" };
                let sp = ["", " ", "  \t"][ws];
                let call_id = match cid_host {
                    Some(h) => format!("{cid}@{h}"),
                    None => cid,
                };
                let mut headers: Vec<String> = vec![
                    format!("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{order_seed}"),
                    "From: <sip:a@example.com>;tag=1".to_string(),
                    "To: <sip:b@example.com>".to_string(),
                ];
                let cid_name = if compact {
                    "i".to_string()
                } else {
                    random_case("Call-ID", case_mask)
                };
                headers.push(format!("{cid_name}{sp}:{sp}{call_id}"));
                if let Some((n, m)) = &cseq {
                    let name = random_case("CSeq", case_mask.rotate_left(7));
                    if fold {
                        headers.push(format!("{name}: {n}{eol}\t{m}"));
                    } else {
                        headers.push(format!("{name}:{sp}{n} {m}"));
                    }
                }
                if let Some(e) = expires {
                    headers.push(format!(
                        "{}: {e}",
                        random_case("Expires", case_mask.rotate_left(13))
                    ));
                }
                // Contacts: split into headers of 1-2 contacts each.
                let cname = if compact {
                    "m".to_string()
                } else {
                    random_case("Contact", case_mask.rotate_left(21))
                };
                for (i, chunk) in contacts.chunks(2).enumerate() {
                    let sep = if fold && i == 0 {
                        format!(",{eol} ")
                    } else {
                        ", ".to_string()
                    };
                    let vals: Vec<&str> = chunk.iter().map(|(s, _)| s.as_str()).collect();
                    headers.push(format!("{cname}: {}", vals.join(&sep)));
                }
                if let Some(ua) = &user_agent {
                    let name = random_case("User-Agent", case_mask.rotate_left(29));
                    headers.push(format!("{name}:{sp}{ua}{sp}"));
                }
                headers.extend(extra);
                // Deterministic shuffle of everything but the first header.
                let mut seed = order_seed | 1;
                for i in (2..headers.len()).rev() {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    headers.swap(i, 1 + (seed as usize) % i);
                }
                let start = match &req {
                    Some((m, u)) => format!("{m} sip:{u}@example.com SIP/2.0"),
                    None => format!("SIP/2.0 {code} Reason Phrase"),
                };
                let mut text = start;
                for h in &headers {
                    text.push_str(eol);
                    text.push_str(h);
                }
                text.push_str(eol);
                text.push_str(eol);
                text.push_str(
                    "v=0\r\na=x;expires=4000000003\r\nContact: <sip:z>;expires=4000000004\r\n",
                );
                Generated {
                    bytes: text.into_bytes(),
                    request: req.map(|(m, u)| (m.to_string(), format!("sip:{u}@example.com"))),
                    status: Some(code),
                    call_id,
                    cseq: cseq.map(|(n, m)| (n, m.to_string())),
                    expires,
                    contact_expires: contacts.iter().filter_map(|(_, e)| *e).max(),
                    user_agent,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn prop_arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
        let r = scan(&buf);
        check_slices(&buf, &r)?;
    }

    #[test]
    fn prop_sipish_bytes_never_panic(buf in sipish_bytes()) {
        let r = scan(&buf);
        check_slices(&buf, &r)?;
    }

    #[test]
    fn prop_mentions_sip20_matches_naive(line in sipish_bytes()) {
        let naive = line.windows(7).any(|w| w.eq_ignore_ascii_case(b"SIP/2.0"));
        prop_assert_eq!(mentions_sip20(&line), naive);
    }

    #[test]
    fn prop_corpus_mutations_never_panic(
        idx in any::<prop::sample::Index>(),
        muts in proptest::collection::vec(mutation(), 1..6),
    ) {
        let corpus = corpus();
        let (_, base) = &corpus[idx.index(corpus.len())];
        let mut buf = base.clone();
        for m in &muts {
            apply(&mut buf, m);
        }
        let r = scan(&buf);
        check_slices(&buf, &r)?;
    }

    #[test]
    fn prop_generated_messages_scan_exactly(g in generated()) {
        let r = scan(&g.bytes);
        check_slices(&g.bytes, &r)?;
        let Scan::Sip(v) = r else {
            return Err(TestCaseError::fail(format!("not Sip: {r:?} for {:?}", String::from_utf8_lossy(&g.bytes))));
        };
        match &g.request {
            Some((m, u)) => {
                prop_assert_eq!(v.method(), Some(m.as_bytes()));
                prop_assert_eq!(v.uri(), Some(u.as_bytes()));
            }
            None => prop_assert_eq!(v.status(), g.status),
        }
        prop_assert_eq!(v.call_id, g.call_id.as_bytes());
        prop_assert_eq!(v.cseq, g.cseq.as_ref().map(|(n, m)| (*n, m.as_bytes())));
        prop_assert_eq!(v.expires, g.expires);
        prop_assert_eq!(v.contact_expires, g.contact_expires);
        prop_assert_eq!(v.granted_expiry(), g.contact_expires.or(g.expires));
        prop_assert_eq!(v.user_agent, g.user_agent.as_ref().map(|u| u.as_bytes()));
    }

    #[test]
    fn prop_generated_truncations_are_not_sip_views(g in generated(), cut in any::<prop::sample::Index>()) {
        // Cutting anywhere inside the header section never yields a successful scan.
        let hdr_end = g.bytes.windows(2).position(|w| w == b"\n\n")
            .or_else(|| g.bytes.windows(4).position(|w| w == b"\r\n\r\n"))
            .unwrap();
        let cut = cut.index(hdr_end + 1);
        let r = scan(&g.bytes[..cut]);
        check_slices(&g.bytes[..cut], &r)?;
        prop_assert!(!matches!(r, Scan::Sip(_)), "cut at {} of {:?} gave {:?}", cut, String::from_utf8_lossy(&g.bytes), r);
    }
}

#[test]
fn names_match_in_any_letter_case_and_other_bytes_exactly() {
    // Every byte value in every position of "call-id" and "sip/2.0": only the
    // same byte, or the same letter in the other case, matches.
    for target in [&b"call-id"[..], b"sip/2.0"] {
        for at in 0..target.len() {
            for b in 0..=255u8 {
                let mut v = target.to_vec();
                v[at] = b;
                let want = v.eq_ignore_ascii_case(target);
                let got = match target {
                    b"call-id" => eq_lower(&v, b"call-id"),
                    _ => eq_lower(&v, b"sip/2.0"),
                };
                assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&v));
            }
        }
    }
    assert!(!eq_lower(b"call-i", b"call-id"), "shorter");
    assert!(!eq_lower(b"call-idx", b"call-id"), "longer");
}
