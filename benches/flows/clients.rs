//! The simulated clients: client `i` is `(127.A.B.C, CLIENT_PORT0 + i % SOCKETS)`,
//! a distinct address each (so sipfront's per-IP new-flow limit never bites), and the
//! SIP requests they send. Replies are matched by Call-ID, which carries the index.

use std::net::Ipv4Addr;

/// Wildcard sockets the clients share; client `i` uses socket `i % SOCKETS`.
pub const SOCKETS: usize = 4;
/// First client port; the sockets bind `CLIENT_PORT0..CLIENT_PORT0 + SOCKETS`.
pub const CLIENT_PORT0: u16 = 31370;
/// Clients live in 127.10.0.0 and up: away from 127.0.0.1 (sipfront, backends) and
/// the relay addresses 127.0.0.x.
const FIRST_OCTET2: u32 = 10;
/// Host numbers 1..=254 per /24: no .0 or .255 look-alikes.
const PER_24: u32 = 254;

/// Most clients the address plan holds (up to 127.255.x.y).
pub const MAX_CLIENTS: usize = ((256 - FIRST_OCTET2) * 256 * PER_24) as usize;

pub fn ip(i: usize) -> Ipv4Addr {
    let i = i as u32;
    let net = i / PER_24;
    Ipv4Addr::new(
        127,
        (FIRST_OCTET2 + net / 256) as u8,
        (net % 256) as u8,
        (1 + i % PER_24) as u8,
    )
}

pub fn sock(i: usize) -> usize {
    i % SOCKETS
}

pub fn port(i: usize) -> u16 {
    CLIENT_PORT0 + sock(i) as u16
}

/// The REGISTER that opens client `i`'s flow. Retransmissions resend the same bytes.
pub fn register(i: usize) -> Vec<u8> {
    let (ip, port) = (ip(i), port(i));
    format!(
        "REGISTER sip:flows.invalid SIP/2.0\r\n\
         Via: SIP/2.0/UDP {ip}:{port};rport;branch=z9hG4bK-r{i}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:u{i}@flows.invalid>;tag=f{i}\r\n\
         To: <sip:u{i}@flows.invalid>\r\n\
         Call-ID: R{i}@flows\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:u{i}@{ip}:{port}>;expires=3600\r\n\
         Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Request `seq` of a latency run tagged `tag` (one letter), from client `i`.
pub fn options(i: usize, tag: char, seq: usize) -> Vec<u8> {
    let (ip, port) = (ip(i), port(i));
    format!(
        "OPTIONS sip:flows.invalid SIP/2.0\r\n\
         Via: SIP/2.0/UDP {ip}:{port};rport;branch=z9hG4bK-{tag}{seq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:u{i}@flows.invalid>;tag=f{i}\r\n\
         To: <sip:flows.invalid>\r\n\
         Call-ID: {tag}{seq}@flows\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// What the bench needs from a reply.
pub struct Reply<'a> {
    pub status: u16,
    /// Call-ID tag letter and number (`R12@flows` → ('R', 12)).
    pub tag: char,
    pub n: usize,
    /// The stub backend that answered (its `Server` header).
    pub server: Option<&'a [u8]>,
}

/// Parses a reply from the stub backends (whose header names are canonical).
pub fn parse_reply(data: &[u8]) -> Option<Reply<'_>> {
    let rest = data.strip_prefix(b"SIP/2.0 ")?;
    let status = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    let call_id = header(data, b"Call-ID")?;
    let (&tag, digits) = call_id.split_first()?;
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    let n = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
    Some(Reply {
        status,
        tag: tag as char,
        n,
        server: header(data, b"Server"),
    })
}

/// Value of the first `name: value` header line (exact name).
fn header<'a>(data: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    data.split(|&b| b == b'\n').find_map(|line| {
        let v = line.strip_prefix(name)?.strip_prefix(b":")?;
        Some(v.trim_ascii())
    })
}
