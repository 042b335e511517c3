//! Zero-allocation SIP scanner for the relay hot path.
//!
//! [`scan`] looks at one received UDP datagram and returns a borrowed [`SipView`] of the few
//! things the relay routes on: request or response, method / status code, `Call-ID`, `CSeq`,
//! `Expires` and the Contact `expires` parameters. It never allocates, never panics on any
//! input and reads each header byte about once. Everything it returns borrows from the input.
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

/// Position of the first `needle` in `hay[from..]` (as an index into `hay`). Word-at-a-time.
#[inline]
fn find_byte(hay: &[u8], from: usize, needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let s = hay.get(from..)?;
    let pat = LO.wrapping_mul(u64::from(needle));
    let mut chunks = s.chunks_exact(8);
    let mut base = from;
    for c in &mut chunks {
        let Ok(arr) = <[u8; 8]>::try_from(c) else {
            continue; // unreachable: chunks_exact yields 8-byte chunks
        };
        let x = u64::from_le_bytes(arr) ^ pat;
        // Exact for the lowest matching byte (borrows only propagate upwards).
        let t = x.wrapping_sub(LO) & !x & HI;
        if t != 0 {
            return Some(base + (t.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|p| base + p)
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
        if ver.eq_ignore_ascii_case(b"SIP/2.0 ") {
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
    let uri_len = rest.iter().position(|&b| b <= b' ' || b == 0x7f)?;
    let (uri, rest) = rest.split_at_checked(uri_len)?;
    let version = rest.strip_prefix(b" ")?;
    let version_len = version
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |p| p + 1);
    if method.is_empty() || uri.is_empty() {
        return None;
    }
    if !version.get(..version_len)?.eq_ignore_ascii_case(b"SIP/2.0") {
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
    if !name.eq_ignore_ascii_case(b"expires") {
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
    while let Some(&b) = v.get(i) {
        match b {
            b'"' => i = skip_quoted(v, i + 1),
            b'<' => i = find_byte(v, i + 1, b'>').map_or(v.len(), |p| p + 1),
            b';' => {
                let (e, next) = contact_param_expires(v, i + 1);
                if let Some(e) = e {
                    best = Some(best.map_or(e, |b| b.max(e)));
                }
                i = next;
            }
            _ => i += 1,
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
        (4, b'c') if name.eq_ignore_ascii_case(b"cseq") => Hdr::CSeq,
        (7, b'c') if name.eq_ignore_ascii_case(b"call-id") => Hdr::CallId,
        (7, b'c') if name.eq_ignore_ascii_case(b"contact") => Hdr::Contact,
        (7, b'e') if name.eq_ignore_ascii_case(b"expires") => Hdr::Expires,
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
        let name_start = pos;
        let mut i = pos;
        while let Some(&b) = buf.get(i) {
            if !is_token(b) {
                break;
            }
            i += 1;
        }
        let name_end = i;
        while let Some(&b) = buf.get(i) {
            if b != b' ' && b != b'\t' {
                break;
            }
            i += 1;
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
    })
}

#[cfg(test)]
mod tests {
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
}
