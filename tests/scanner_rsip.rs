//! Differential test: `sipfront::sip::scan` against `rsip` on the corpus in tests/corpus/sip.
//!
//! Every corpus file has an entry in `EXPECTED` (the values `scan` must report). Files whose name
//! ends in `.lenient.sip` use syntax that rsip 0.4 cannot parse (bare LF, folded lines, leading
//! CRLF, whitespace before the colon, quoted/spaced contact params); for those only the table is
//! checked. For all other files rsip must parse the message and agree with `scan` on request vs.
//! response, method, Request-URI, status code, Call-ID, CSeq, Expires, User-Agent and the maximum
//! Contact `expires` parameter (where rsip can parse every contact of the message).
//!
//! Harness adaptations (rsip 0.4 limitations, not scanner behaviour):
//! * rsip does not know compact header names; `Header::Other("i" | "m", ..)` are mapped to
//!   Call-ID / Contact here.
//! * rsip's typed Contact holds one contact; multi-contact values are split on top-level commas
//!   here and each piece is parsed on its own. `*` has no expiry.
//! * rsip keeps trailing whitespace in header values; the Call-ID is compared trimmed.

use rsip::prelude::*;
use rsip::{Header, SipMessage};
use sipfront::sip::{Scan, SipView, scan};

struct Expect {
    file: &'static str,
    /// Request method, or None for a response.
    method: Option<&'static str>,
    /// Status code, or None for a request.
    status: Option<u16>,
    call_id: &'static str,
    cseq: Option<(u32, &'static str)>,
    expires: Option<u32>,
    contact_expires: Option<u32>,
}

const fn req(
    file: &'static str,
    method: &'static str,
    call_id: &'static str,
    cseq: (u32, &'static str),
    expires: Option<u32>,
    contact_expires: Option<u32>,
) -> Expect {
    Expect {
        file,
        method: Some(method),
        status: None,
        call_id,
        cseq: Some(cseq),
        expires,
        contact_expires,
    }
}

const fn resp(
    file: &'static str,
    status: u16,
    call_id: &'static str,
    cseq: (u32, &'static str),
    expires: Option<u32>,
    contact_expires: Option<u32>,
) -> Expect {
    Expect {
        file,
        method: None,
        status: Some(status),
        call_id,
        cseq: Some(cseq),
        expires,
        contact_expires,
    }
}

const SIPP_CID: &str = "1-31337@127.0.1.1";
const LINPHONE_CID: &str = "4fGhIj0k9L";
const ZOIPER_CID: &str = "NmQ0ZTFmYjMxOGY5NTg4MzYwNDQ1NDBjMDU0ZDJhYmE";
const DISPATCHER_CID: &str = "1f2a3b4c5d6e7f80-12345@10.0.0.5";

const EXPECTED: &[Expect] = &[
    // sipp -sn uac / -sn uas call flow
    req(
        "sipp_uac_invite.sip",
        "INVITE",
        SIPP_CID,
        (1, "INVITE"),
        None,
        None,
    ),
    resp(
        "sipp_uas_100_trying.sip",
        100,
        SIPP_CID,
        (1, "INVITE"),
        None,
        None,
    ),
    resp(
        "sipp_uas_180_ringing.sip",
        180,
        SIPP_CID,
        (1, "INVITE"),
        None,
        None,
    ),
    resp(
        "sipp_uas_200_invite.sip",
        200,
        SIPP_CID,
        (1, "INVITE"),
        None,
        None,
    ),
    req("sipp_uac_ack.sip", "ACK", SIPP_CID, (1, "ACK"), None, None),
    req("sipp_uac_bye.sip", "BYE", SIPP_CID, (2, "BYE"), None, None),
    resp(
        "sipp_uas_200_bye.sip",
        200,
        SIPP_CID,
        (2, "BYE"),
        None,
        None,
    ),
    // registration
    req(
        "register.sip",
        "REGISTER",
        LINPHONE_CID,
        (20, "REGISTER"),
        Some(3600),
        None,
    ),
    req(
        "register_contact_expires.sip",
        "REGISTER",
        ZOIPER_CID,
        (1, "REGISTER"),
        Some(3600),
        Some(600),
    ),
    req(
        "register_unregister_star.sip",
        "REGISTER",
        LINPHONE_CID,
        (22, "REGISTER"),
        Some(0),
        None,
    ),
    resp(
        "kamailio_200_register.sip",
        200,
        LINPHONE_CID,
        (20, "REGISTER"),
        Some(3600),
        Some(3600),
    ),
    resp(
        "kamailio_200_register_multi.sip",
        200,
        ZOIPER_CID,
        (1, "REGISTER"),
        None,
        Some(1200),
    ),
    resp(
        "mixedcase_200_register.sip",
        200,
        "mc-1@192.0.2.30",
        (7, "REGISTER"),
        Some(3600),
        Some(300),
    ),
    // Kamailio replies and pings
    resp(
        "kamailio_100_trying.sip",
        100,
        "7bD1c3c2e@192.0.2.10",
        (102, "INVITE"),
        None,
        None,
    ),
    resp(
        "kamailio_404.sip",
        404,
        "8cE2d4d3f@192.0.2.10",
        (103, "INVITE"),
        None,
        None,
    ),
    resp(
        "kamailio_503.sip",
        503,
        "9dF3e5e4a@192.0.2.10",
        (104, "INVITE"),
        None,
        None,
    ),
    req(
        "kamailio_options_ping.sip",
        "OPTIONS",
        DISPATCHER_CID,
        (10, "OPTIONS"),
        None,
        None,
    ),
    resp(
        "options_200.sip",
        200,
        DISPATCHER_CID,
        (10, "OPTIONS"),
        None,
        None,
    ),
    // compact / mixed case / large
    req(
        "compact_mixedcase_invite.sip",
        "INVITE",
        "a84b4c76e66710@pc33.example.org",
        (314159, "INVITE"),
        None,
        None,
    ),
    req(
        "pbx_invite_large.sip",
        "INVITE",
        "5b1c9f2e-7d3a-4e8b-a6c4-0f9e8d7c6b5a",
        (26534, "INVITE"),
        None,
        None,
    ),
    // lenient: scan only
    resp(
        "folded_headers.lenient.sip",
        200,
        "folded-1@192.0.2.10",
        (5, "REGISTER"),
        Some(3600),
        Some(900),
    ),
    req(
        "bare_lf.lenient.sip",
        "REGISTER",
        "bare-lf-1@192.0.2.50",
        (3, "REGISTER"),
        Some(3600),
        Some(1800),
    ),
    req(
        "leading_crlf.lenient.sip",
        "OPTIONS",
        "leading-crlf-1",
        (1, "OPTIONS"),
        None,
        None,
    ),
    req(
        "space_before_colon.lenient.sip",
        "BYE",
        "space-colon-1@192.0.2.71",
        (4711, "BYE"),
        None,
        None,
    ),
    resp(
        "contact_quoted_params.lenient.sip",
        200,
        "quoted-1@192.0.2.80",
        (9, "REGISTER"),
        Some(3600),
        Some(240),
    ),
];

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/sip");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("tests/corpus/sip")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "sip"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&p).expect("read corpus file");
            (name, bytes)
        })
        .collect();
    out.sort();
    out
}

fn view<'a>(name: &str, bytes: &'a [u8]) -> SipView<'a> {
    match scan(bytes) {
        Scan::Sip(v) => v,
        other => panic!("{name}: scan gave {other:?}"),
    }
}

fn check_expected(e: &Expect, v: &SipView<'_>) {
    let name = e.file;
    assert_eq!(v.method(), e.method.map(str::as_bytes), "{name}: method");
    assert_eq!(v.status(), e.status, "{name}: status");
    assert_eq!(v.is_request(), e.method.is_some(), "{name}: is_request");
    assert_eq!(v.call_id, e.call_id.as_bytes(), "{name}: Call-ID");
    assert_eq!(
        v.cseq,
        e.cseq.map(|(n, m)| (n, m.as_bytes())),
        "{name}: CSeq"
    );
    assert_eq!(v.expires, e.expires, "{name}: Expires");
    assert_eq!(
        v.contact_expires, e.contact_expires,
        "{name}: contact expires"
    );
}

/// Split a Contact value on commas outside quoted strings and `<...>`.
fn split_contacts(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in v.char_indices() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' if !angle => quoted = true,
            '<' => angle = true,
            '>' => angle = false,
            ',' if !angle => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(v[start..].trim());
    out
}

/// First line of an rsip error, at most 100 characters (rsip quotes the whole input).
fn short(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(100)
        .collect()
}

/// What rsip says about one message.
#[derive(Debug)]
struct RsipFacts {
    method: Option<String>,
    uri: Option<String>,
    status: Option<u16>,
    call_id: Option<String>,
    cseq: Option<(u32, String)>,
    expires: Option<u32>,
    /// Max contact expires; `Err` lists contacts rsip could not parse.
    contact_expires: Result<Option<u32>, String>,
    /// First non-empty User-Agent, trimmed.
    user_agent: Option<String>,
}

fn rsip_facts(msg: &SipMessage) -> RsipFacts {
    let (method, uri, status) = match msg {
        SipMessage::Request(r) => (Some(r.method.to_string()), Some(r.uri.to_string()), None),
        SipMessage::Response(r) => (None, None, Some(r.status_code.code())),
    };
    let mut call_id = None;
    let mut cseq = None;
    let mut expires = None;
    let mut contact_values: Vec<String> = Vec::new();
    let mut user_agent = None;
    for h in msg.headers().iter() {
        match h {
            Header::UserAgent(u) if user_agent.is_none() && !u.value().trim().is_empty() => {
                user_agent = Some(u.value().trim().to_string())
            }
            Header::CallId(c) if call_id.is_none() => call_id = Some(c.value().trim().to_string()),
            Header::Other(n, v) if n.eq_ignore_ascii_case("i") && call_id.is_none() => {
                call_id = Some(v.trim().to_string())
            }
            Header::CSeq(c) if cseq.is_none() => {
                let t = c.typed().expect("rsip typed CSeq");
                cseq = Some((t.seq, t.method.to_string()));
            }
            Header::Expires(e) if expires.is_none() => expires = e.seconds().ok(),
            Header::Contact(c) => contact_values.push(c.value().to_string()),
            Header::Other(n, v) if n.eq_ignore_ascii_case("m") => contact_values.push(v.clone()),
            _ => {}
        }
    }
    let mut contact_expires: Result<Option<u32>, String> = Ok(None);
    for value in &contact_values {
        for piece in split_contacts(value) {
            if piece == "*" {
                continue;
            }
            match rsip::headers::Contact::new(piece).typed() {
                Ok(c) => {
                    let e = c.expires().map(|e| e.seconds().expect("numeric expires"));
                    if let (Ok(best), Some(e)) = (&mut contact_expires, e) {
                        *best = Some(best.map_or(e, |b: u32| b.max(e)));
                    }
                }
                Err(err) => {
                    contact_expires = Err(format!("{piece:?}: {}", short(&err.to_string())))
                }
            }
        }
    }
    RsipFacts {
        method,
        uri,
        status,
        call_id,
        cseq,
        expires,
        contact_expires,
        user_agent,
    }
}

#[test]
fn every_corpus_file_has_expectations() {
    let files = corpus();
    assert!(files.len() >= 20, "corpus has only {} files", files.len());
    for (name, _) in &files {
        assert!(
            EXPECTED.iter().any(|e| e.file == name),
            "{name}: no entry in EXPECTED"
        );
    }
    for e in EXPECTED {
        assert!(
            files.iter().any(|(n, _)| n == e.file),
            "{}: listed in EXPECTED but missing from the corpus",
            e.file
        );
    }
}

#[test]
fn scan_matches_expected_table() {
    for (name, bytes) in corpus() {
        let Some(e) = EXPECTED.iter().find(|e| e.file == name) else {
            continue; // reported by every_corpus_file_has_expectations
        };
        check_expected(e, &view(&name, &bytes));
    }
}

#[test]
fn scan_agrees_with_rsip() {
    let mut compared = 0;
    let mut contact_compared = 0;
    let mut notes = Vec::new();
    for (name, bytes) in corpus() {
        let v = view(&name, &bytes);
        let parsed = SipMessage::try_from(&bytes[..]);
        if name.ends_with(".lenient.sip") {
            notes.push(format!(
                "{name}: lenient, rsip {}",
                match &parsed {
                    Ok(_) => "parses it (not compared)".to_string(),
                    Err(e) => format!("rejects it: {}", short(&e.to_string())),
                }
            ));
            continue;
        }
        let msg = parsed.unwrap_or_else(|e| panic!("{name}: rsip failed to parse: {e}"));
        let r = rsip_facts(&msg);
        assert_eq!(v.is_request(), msg.is_request(), "{name}: request/response");
        assert_eq!(
            v.method().map(|m| String::from_utf8_lossy(m).into_owned()),
            r.method,
            "{name}: method"
        );
        assert_eq!(
            v.uri().map(|u| String::from_utf8_lossy(u).into_owned()),
            r.uri,
            "{name}: Request-URI"
        );
        assert_eq!(v.status(), r.status, "{name}: status");
        assert_eq!(
            Some(String::from_utf8_lossy(v.call_id).into_owned()),
            r.call_id,
            "{name}: Call-ID"
        );
        assert_eq!(
            v.cseq
                .map(|(n, m)| (n, String::from_utf8_lossy(m).into_owned())),
            r.cseq,
            "{name}: CSeq"
        );
        assert_eq!(v.expires, r.expires, "{name}: Expires");
        assert_eq!(
            v.user_agent
                .map(|u| String::from_utf8_lossy(u).into_owned()),
            r.user_agent,
            "{name}: User-Agent"
        );
        match r.contact_expires {
            Ok(ce) => {
                assert_eq!(v.contact_expires, ce, "{name}: contact expires");
                contact_compared += 1;
            }
            Err(why) => notes.push(format!(
                "{name}: rsip cannot parse a contact ({why}); contact expires not compared"
            )),
        }
        compared += 1;
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    eprintln!("compared {compared} files with rsip ({contact_compared} incl. contact expires)");
    assert!(compared >= 15, "only {compared} files compared with rsip");
    assert!(
        contact_compared >= 12,
        "only {contact_compared} files had contact expires compared"
    );
}
