//! Zero-allocation SIP scanner for the relay hot path.
//!
//! [`scan`] looks at one received UDP datagram and returns a borrowed [`SipView`] of the few
//! things the relay routes on: request or response, method / status code, `Call-ID`, `CSeq`,
//! `Expires`, the Contact `expires` parameters and `User-Agent`. It never allocates, never
//! panics on any input and reads each header byte about once. Everything it returns borrows
//! from the input.
//!
//! # What is accepted
//!
//! * **Keepalives** (RFC 5626 / common practice): an empty datagram, a datagram made only of
//!   whitespace (SP, HT, CR, LF; CRLF and CRLFCRLF being the usual ones), and any datagram of at
//!   most 4 bytes made only of whitespace and NUL bytes → [`Scan::Keepalive`].
//! * **Leading CR/LF** before the start line are skipped (RFC 3261 §7.5).
//! * **Start line**: `Method SP Request-URI SP SIP/2.0` or `SIP/2.0 SP 3DIGIT [SP Reason]`. The
//!   version is compared case-insensitively (RFC 3261 §7.1); elements are separated by exactly one
//!   SP; trailing SP/HT after the request line's version are tolerated; the status code must be
//!   100..=699; the reason phrase is not examined (may be empty or missing).
//! * **Line endings**: CRLF or bare LF, mixed freely.
//! * **Header names** are matched case-insensitively, with optional SP/HT before the colon.
//!   Compact forms `i` (Call-ID) and `m` (Contact) are understood; every other header (including
//!   compact `e`, which is Content-Encoding, not Expires) is skipped.
//! * **Folded lines** (a line starting with SP or HT continues the previous header) are part of
//!   the previous header's value; CR and LF inside a value count as whitespace.
//! * The header section ends at the first empty line; the body is never examined.
//!
//! # Extracted values
//!
//! * `call_id`: value of the first non-empty `Call-ID` / `i` header with surrounding whitespace
//!   trimmed (a value folded across lines is returned as the raw span, trimmed).
//! * `cseq`: first `CSeq` header, `1*DIGIT LWS token` (the number must fit in a `u32`).
//! * `expires`: first `Expires` header whose value is all digits (values above `u32::MAX`
//!   saturate); a non-numeric value (e.g. an RFC 2543 SIP-date) is ignored.
//! * `user_agent`: value of the first non-empty `User-Agent` header, trimmed like `call_id`
//!   (used only to drop known scanners).
//! * `contact_expires`: maximum of every `expires=delta-seconds` *contact* parameter in every
//!   `Contact` / `m` header (comma-separated or repeated). Text inside quoted strings (display
//!   names, quoted parameter values) and inside `<...>` (URI parameters) is skipped; parameter
//!   names are case-insensitive and SP/HT/folding around `=` is allowed; values that are not pure
//!   digits are ignored, values above `u32::MAX` saturate. `Contact: *` yields no expiry.
//!
//! # Errors ([`ScanError`])
//!
//! * `NotSip`: the first line is not a SIP start line and does not contain `SIP/2.0`
//!   (case-insensitive) — binary junk, HTTP, ...
//! * `BadStartLine`: the first line contains `SIP/2.0` but is malformed (bad status code, missing
//!   or doubled separators, non-token method, control bytes in the Request-URI, ...).
//! * `Truncated`: the datagram ends before the empty line that closes the header section. This
//!   includes a datagram ending exactly after the last header line's line break: a UDP datagram
//!   must carry a whole message (RFC 3261 §18.3), so a missing blank line means it was cut.
//! * `MissingCallId`: the header section is complete but has no non-empty `Call-ID` / `i`.
//! * `BadHeader`: a header line has no `:` after its name, its name is not a token, the first
//!   header line starts with whitespace (a fold with nothing to continue), a bare CR starts a
//!   line, or a `CSeq` header is malformed (no number, number > `u32::MAX`, missing method,
//!   trailing junk). Malformed `Expires` values are ignored rather than rejected.
//!
//! Errors are reported in the order they are met while reading the datagram front to back.

mod bytes;
use bytes::{find_byte, find_contact_mark, find_uri_end};

/// Start line of a SIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    Request { method: &'a [u8], uri: &'a [u8] },
    Response { code: u16 },
}

/// Borrowed view of the parts of a SIP message the relay cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipView<'a> {
    pub kind: Kind<'a>,
    /// Trimmed value of the first non-empty `Call-ID` / `i` header (always non-empty).
    pub call_id: &'a [u8],
    /// Number and method of the first `CSeq` header.
    pub cseq: Option<(u32, &'a [u8])>,
    /// Value of the first numeric `Expires` header.
    pub expires: Option<u32>,
    /// Maximum of all `;expires=` contact parameters over all `Contact` / `m` headers.
    pub contact_expires: Option<u32>,
    /// Trimmed value of the first non-empty `User-Agent` header (no compact form).
    pub user_agent: Option<&'a [u8]>,
}

impl<'a> SipView<'a> {
    /// True for requests, false for responses.
    pub fn is_request(&self) -> bool {
        matches!(self.kind, Kind::Request { .. })
    }

    /// Request method, `None` for responses.
    pub fn method(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Request { method, .. } => Some(method),
            Kind::Response { .. } => None,
        }
    }

    /// Request-URI, `None` for responses.
    pub fn uri(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Request { uri, .. } => Some(uri),
            Kind::Response { .. } => None,
        }
    }

    /// Response status code, `None` for requests.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            Kind::Response { code } => Some(code),
            Kind::Request { .. } => None,
        }
    }

    /// Method of the `CSeq` header, if there is one.
    pub fn cseq_method(&self) -> Option<&'a [u8]> {
        self.cseq.map(|(_, m)| m)
    }

    /// True if this is a request whose method equals `m` (case-sensitive, as SIP methods are).
    pub fn is_method(&self, m: &[u8]) -> bool {
        self.method() == Some(m)
    }

    /// True if the `CSeq` method equals `m` (case-sensitive).
    pub fn cseq_is(&self, m: &[u8]) -> bool {
        self.cseq_method() == Some(m)
    }

    /// The registration lifetime a 2xx to REGISTER grants: `contact_expires`, else `expires`.
    pub fn granted_expiry(&self) -> Option<u32> {
        self.contact_expires.or(self.expires)
    }
}

/// Why a datagram was not accepted as SIP. See the module docs for the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// First line is not a SIP start line and does not mention `SIP/2.0`; binary junk.
    NotSip,
    /// First line mentions `SIP/2.0` but is malformed.
    BadStartLine,
    /// No empty line closing the header section: the datagram was cut.
    Truncated,
    /// Complete header section without a (non-empty) `Call-ID`.
    MissingCallId,
    /// Header line without `:`, non-token header name, stray fold or CR, malformed `CSeq`.
    BadHeader,
}

impl ScanError {
    /// Stable snake_case name, used as a metric label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            ScanError::NotSip => "not_sip",
            ScanError::BadStartLine => "bad_start_line",
            ScanError::Truncated => "truncated",
            ScanError::MissingCallId => "missing_call_id",
            ScanError::BadHeader => "bad_header",
        }
    }
}

impl core::fmt::Display for ScanError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for ScanError {}

/// Result of scanning one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan<'a> {
    /// CRLF / CRLFCRLF / empty datagram / whitespace-only payload (RFC 5626 keepalive; any
    /// length of SP, HT, CR, LF), or any datagram of <= 4 bytes that is all whitespace or zero
    /// bytes.
    Keepalive,
    Sip(SipView<'a>),
    Invalid(ScanError),
}

/// Scan one datagram. Never allocates, never panics; see the module docs for the grammar.
pub fn scan(buf: &[u8]) -> Scan<'_> {
    if is_keepalive(buf) {
        return Scan::Keepalive;
    }
    match scan_message(buf) {
        Ok(view) => Scan::Sip(view),
        Err(e) => Scan::Invalid(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Byte classes and small helpers
// ---------------------------------------------------------------------------------------------

const fn token_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
}

/// RFC 3261 `token` characters.
static TOKEN: [bool; 256] = token_table();

#[inline(always)]
fn is_token(b: u8) -> bool {
    TOKEN[b as usize]
}

/// Linear whitespace as it appears inside a (possibly folded) header value.
#[inline(always)]
fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

#[inline]
fn is_keepalive(buf: &[u8]) -> bool {
    if buf.len() <= 4 {
        buf.iter().all(|&b| is_lws(b) || b == 0)
    } else {
        buf.iter().all(|&b| is_lws(b))
    }
}

/// `v` equals `lower` (lowercase letters and other bytes) with letters in any case.
/// Without an early exit, and with `lower` a constant, it compiles to a few word
/// operations instead of a loop per byte (the names it compares are on every line).
#[inline(always)]
fn eq_lower<const N: usize>(v: &[u8], lower: &[u8; N]) -> bool {
    let Ok(v) = <&[u8; N]>::try_from(v) else {
        return false;
    };
    let mut diff = 0;
    for (&a, &b) in v.iter().zip(lower) {
        // Bit 5 is the case bit of letters only: other bytes must match exactly.
        let fold = if b.is_ascii_lowercase() { 0x20 } else { 0 };
        diff |= (a | fold) ^ b;
    }
    diff == 0
}

/// `v` without leading and trailing SP / HT / CR / LF.
#[inline]
fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| !is_lws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|&b| !is_lws(b)).map_or(start, |p| p + 1);
    v.get(start..end).unwrap_or_default()
}

#[inline]
fn skip_lws(v: &[u8], mut i: usize) -> usize {
    while let Some(&b) = v.get(i) {
        if !is_lws(b) {
            break;
        }
        i += 1;
    }
    i
}

/// Leading ASCII digits of `v`: (value saturated at `u64::MAX`, number of digits).
#[inline]
fn digits(v: &[u8]) -> (u64, usize) {
    let mut n: u64 = 0;
    let mut count = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        count += 1;
    }
    (n, count)
}

#[inline]
fn saturate_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Whether `line` contains `SIP/2.0` (case-insensitive). Only used on the error path; linear
/// with a small constant for any input (the `/` test rejects almost every window at once).
fn mentions_sip20(line: &[u8]) -> bool {
    line.windows(7)
        .any(|w| w.get(3) == Some(&b'/') && w.eq_ignore_ascii_case(b"SIP/2.0"))
}

// ---------------------------------------------------------------------------------------------
// Start line
// ---------------------------------------------------------------------------------------------

fn parse_start_line(line: &[u8]) -> Result<Kind<'_>, ScanError> {
    if let Some((ver, rest)) = line.split_at_checked(8) {
        if eq_lower(ver, b"sip/2.0 ") {
            return parse_status(rest).ok_or(ScanError::BadStartLine);
        }
    }
    parse_request_line(line).ok_or_else(|| {
        if mentions_sip20(line) {
            ScanError::BadStartLine
        } else {
            ScanError::NotSip
        }
    })
}

/// `3DIGIT [SP reason]` after `SIP/2.0 `.
fn parse_status(rest: &[u8]) -> Option<Kind<'static>> {
    let (code, tail) = rest.split_at_checked(3)?;
    let &[a, b, c] = code else { return None };
    if !(b'1'..=b'6').contains(&a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return None;
    }
    if !matches!(tail.first(), None | Some(b' ')) {
        return None;
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    Some(Kind::Response { code })
}

/// `Method SP Request-URI SP SIP/2.0` (trailing SP/HT tolerated). One pass, stops at the first
/// byte that cannot belong to a request line.
fn parse_request_line(line: &[u8]) -> Option<Kind<'_>> {
    let method_len = line.iter().position(|&b| !is_token(b))?;
    let (method, rest) = line.split_at_checked(method_len)?;
    let rest = rest.strip_prefix(b" ")?;
    let uri_len = find_uri_end(rest)?;
    let (uri, rest) = rest.split_at_checked(uri_len)?;
    let version = rest.strip_prefix(b" ")?;
    let version_len = version
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |p| p + 1);
    if method.is_empty() || uri.is_empty() {
        return None;
    }
    if !eq_lower(version.get(..version_len)?, b"sip/2.0") {
        return None;
    }
    Some(Kind::Request { method, uri })
}

// ---------------------------------------------------------------------------------------------
// Header values
// ---------------------------------------------------------------------------------------------

/// `CSeq` value: `1*DIGIT LWS token`, number within `u32`.
fn parse_cseq(v: &[u8]) -> Option<(u32, &[u8])> {
    let v = trim(v);
    let (n, count) = digits(v);
    if count == 0 {
        return None;
    }
    let n = u32::try_from(n).ok()?;
    let rest = v.get(count..)?;
    let ws = rest.iter().position(|&b| !is_lws(b))?;
    if ws == 0 {
        return None;
    }
    let method = rest.get(ws..)?;
    if !method.iter().all(|&b| is_token(b)) {
        return None;
    }
    Some((n, method))
}

/// `Expires` value: all digits (saturating), anything else ignored.
fn parse_expires(v: &[u8]) -> Option<u32> {
    let v = trim(v);
    let (n, count) = digits(v);
    (count > 0 && count == v.len()).then(|| saturate_u32(n))
}

/// Index just past the closing quote of a quoted string whose body starts at `i`.
fn skip_quoted(v: &[u8], mut i: usize) -> usize {
    while let Some(&b) = v.get(i) {
        match b {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    v.len()
}

/// One contact parameter starting at `i` (just after `;`). Returns the `expires` value if this
/// parameter is a numeric `expires`, and the index where the caller should continue.
fn contact_param_expires(v: &[u8], i: usize) -> (Option<u32>, usize) {
    let name_start = skip_lws(v, i);
    let mut name_end = name_start;
    while let Some(&b) = v.get(name_end) {
        if !is_token(b) {
            break;
        }
        name_end += 1;
    }
    let name = v.get(name_start..name_end).unwrap_or_default();
    if !eq_lower(name, b"expires") {
        return (None, name_end);
    }
    let eq = skip_lws(v, name_end);
    if v.get(eq) != Some(&b'=') {
        return (None, eq);
    }
    let val = skip_lws(v, eq + 1);
    let (n, count) = digits(v.get(val..).unwrap_or_default());
    if count == 0 {
        return (None, val);
    }
    let end = val + count;
    match v.get(end) {
        None | Some(b' ' | b'\t' | b'\r' | b'\n' | b';' | b',') => (Some(saturate_u32(n)), end),
        Some(_) => (None, end),
    }
}

/// Maximum `expires` contact parameter in one Contact header value (all comma-separated
/// contacts), skipping quoted strings and `<...>` URIs.
fn contact_max_expires(v: &[u8]) -> Option<u32> {
    let mut best: Option<u32> = None;
    let mut i = 0;
    while let Some(at) = find_contact_mark(v, i) {
        match v.get(at) {
            Some(b'"') => i = skip_quoted(v, at + 1),
            Some(b'<') => i = find_byte(v, at + 1, b'>').map_or(v.len(), |p| p + 1),
            _ => {
                let (e, next) = contact_param_expires(v, at + 1);
                if let Some(e) = e {
                    best = Some(best.map_or(e, |b| b.max(e)));
                }
                i = next;
            }
        }
    }
    best
}

// ---------------------------------------------------------------------------------------------
// Message
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Hdr {
    CallId,
    CSeq,
    Contact,
    Expires,
    UserAgent,
    Other,
}

/// Classify a header name: length and first byte first, full comparison only on a hit.
#[inline]
fn classify(name: &[u8]) -> Hdr {
    let Some(&first) = name.first() else {
        return Hdr::Other;
    };
    match (name.len(), first | 0x20) {
        (1, b'i') => Hdr::CallId,
        (1, b'm') => Hdr::Contact,
        (4, b'c') if eq_lower(name, b"cseq") => Hdr::CSeq,
        (7, b'c') if eq_lower(name, b"call-id") => Hdr::CallId,
        (7, b'c') if eq_lower(name, b"contact") => Hdr::Contact,
        (7, b'e') if eq_lower(name, b"expires") => Hdr::Expires,
        (10, b'u') if eq_lower(name, b"user-agent") => Hdr::UserAgent,
        _ => Hdr::Other,
    }
}

fn scan_message(buf: &[u8]) -> Result<SipView<'_>, ScanError> {
    // Leading CRLFs (RFC 3261 7.5).
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());

    // Start line.
    let lf = find_byte(buf, start, b'\n');
    let line_end = lf.unwrap_or(buf.len());
    let mut line = buf.get(start..line_end).unwrap_or_default();
    if let Some(l) = line.strip_suffix(b"\r") {
        line = l;
    }
    let kind = parse_start_line(line)?;
    let Some(lf) = lf else {
        return Err(ScanError::Truncated);
    };

    let mut call_id: Option<&[u8]> = None;
    let mut cseq: Option<(u32, &[u8])> = None;
    let mut expires: Option<u32> = None;
    let mut contact_expires: Option<u32> = None;
    let mut user_agent: Option<&[u8]> = None;

    let mut pos = lf + 1;
    loop {
        // Empty line ends the header section; a blank check first.
        match buf.get(pos) {
            None => return Err(ScanError::Truncated),
            Some(b'\n') => break,
            Some(b'\r') => match buf.get(pos + 1) {
                Some(b'\n') => break,
                None => return Err(ScanError::Truncated),
                Some(_) => return Err(ScanError::BadHeader),
            },
            // Folds are consumed with their header below, so a line starting with whitespace
            // here is a fold of the start line.
            Some(b' ' | b'\t') => return Err(ScanError::BadHeader),
            Some(_) => {}
        }

        // Header name: token, optional SP/HT, ':'.
        // (An iterator over the rest: one bounds check for the run, not one per byte.)
        let name_start = pos;
        let rest = buf.get(pos..).unwrap_or_default();
        let name_end = pos
            + rest
                .iter()
                .position(|&b| !is_token(b))
                .unwrap_or(rest.len());
        let mut i = name_end;
        // Nearly always the colon follows the name at once.
        if buf.get(i) != Some(&b':') {
            while let Some(&b) = buf.get(i) {
                if b != b' ' && b != b'\t' {
                    break;
                }
                i += 1;
            }
        }
        match buf.get(i) {
            Some(b':') if name_end > name_start => {}
            None => return Err(ScanError::Truncated),
            Some(_) => return Err(ScanError::BadHeader),
        }
        let value_start = i + 1;

        // Value: up to the line break, plus any folded continuation lines.
        let mut lf = find_byte(buf, value_start, b'\n').ok_or(ScanError::Truncated)?;
        while matches!(buf.get(lf + 1), Some(b' ' | b'\t')) {
            lf = find_byte(buf, lf + 2, b'\n').ok_or(ScanError::Truncated)?;
        }
        let value_end = if lf > value_start && buf.get(lf - 1) == Some(&b'\r') {
            lf - 1
        } else {
            lf
        };
        pos = lf + 1;

        let name = buf.get(name_start..name_end).unwrap_or_default();
        match classify(name) {
            Hdr::Other => {}
            Hdr::CallId => {
                if call_id.is_none() {
                    let v = trim(buf.get(value_start..value_end).unwrap_or_default());
                    if !v.is_empty() {
                        call_id = Some(v);
                    }
                }
            }
            Hdr::CSeq => {
                let v = buf.get(value_start..value_end).unwrap_or_default();
                let parsed = parse_cseq(v).ok_or(ScanError::BadHeader)?;
                if cseq.is_none() {
                    cseq = Some(parsed);
                }
            }
            Hdr::Expires => {
                if expires.is_none() {
                    expires = parse_expires(buf.get(value_start..value_end).unwrap_or_default());
                }
            }
            Hdr::UserAgent => {
                if user_agent.is_none() {
                    let v = trim(buf.get(value_start..value_end).unwrap_or_default());
                    if !v.is_empty() {
                        user_agent = Some(v);
                    }
                }
            }
            Hdr::Contact => {
                let v = buf.get(value_start..value_end).unwrap_or_default();
                if let Some(e) = contact_max_expires(v) {
                    contact_expires = Some(contact_expires.map_or(e, |c| c.max(e)));
                }
            }
        }
    }

    let call_id = call_id.ok_or(ScanError::MissingCallId)?;
    Ok(SipView {
        kind,
        call_id,
        cseq,
        expires,
        contact_expires,
        user_agent,
    })
}

#[cfg(test)]
mod tests;
