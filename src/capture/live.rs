//! Live capture (`sipfront ctl capture`, `GET /api/v1/capture`): a few short-lived
//! subscriptions, each a filter (client, Call-ID, backend) and a bounded queue of frames
//! that the admin endpoint streams as an HTTP body.
//!
//! - [`Filter`], the frame format ([`encode`], [`decode`]), pcap and text output: pure.
//! - [`Taps`]: the dataplane's side. Without a subscription it is an empty `Vec` and the
//!   hot path checks only [`Taps::is_empty`]; with one, a matching datagram is copied into
//!   a new frame and offered to the subscription's bounded queue, and a full queue is a
//!   counted drop (`sipfront_capture_dropped_total`), never a wait.
//!
//! Frame on the wire: `u32` big-endian length of what follows, then the body. Length 0 is
//! a heartbeat (sent every second, so an idle capture keeps its connection and notices a
//! client that went away). Body: kind `0` (datagram): `u64` microseconds since the Unix
//! epoch, leg (`0` client, `1` backend), source, destination (each: `4` or `6`, the
//! address, `u16` port), then the datagram; kind `1` (note): UTF-8 text, the last frame.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Capture length when none is asked for, and the longest allowed.
pub const DEFAULT_SECONDS: u64 = 10;
pub const MAX_SECONDS: u64 = 300;
/// Frames (a datagram on one leg) per capture when none is asked for, and the most.
pub const DEFAULT_MAX: u64 = 1000;
pub const MAX_MAX: u64 = 100_000;
// How many captures run at once, and how much each may queue (frames and bytes: frames
// of large datagrams, up to 64 KiB, reach the byte bound first), are `[admin]` keys
// (`crate::config::CaptureLimits`).

const KIND_DATAGRAM: u8 = 0;
const KIND_NOTE: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Client ↔ the public SIP address.
    Client,
    /// Relay endpoint ↔ backend.
    Backend,
}

impl Leg {
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Client => "client",
            Leg::Backend => "backend",
        }
    }
}

/// What a capture takes: every given criterion must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The client's address; any port when `client_port` is `None`.
    pub client_ip: Option<IpAddr>,
    pub client_port: Option<u16>,
    pub call_id: Option<Box<[u8]>>,
    /// The backend's address (the API takes a name; the dataplane resolves it).
    pub backend: Option<SocketAddr>,
}

impl Filter {
    /// `IP` or `IP:PORT` (`[v6]:PORT`).
    pub fn parse_client(s: &str) -> Option<(IpAddr, Option<u16>)> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Some((a.ip(), Some(a.port())));
        }
        let s = s.trim_start_matches('[').trim_end_matches(']');
        s.parse::<IpAddr>().ok().map(|ip| (ip, None))
    }

    pub fn is_empty(&self) -> bool {
        self.client_ip.is_none() && self.call_id.is_none() && self.backend.is_none()
    }

    /// A datagram of the flow of `client`, relayed to or from `backend` (`None`: one
    /// sipfront answered itself).
    pub fn matches(&self, client: SocketAddr, backend: Option<SocketAddr>, call_id: &[u8]) -> bool {
        let ip = |a: IpAddr| a.to_canonical();
        self.client_ip.is_none_or(|c| {
            ip(c) == ip(client.ip()) && self.client_port.is_none_or(|p| p == client.port())
        }) && self.call_id.as_deref().is_none_or(|c| c == call_id)
            && self.backend.is_none_or(|b| {
                backend.is_some_and(|x| ip(x.ip()) == ip(b.ip()) && x.port() == b.port())
            })
    }
}

/// One captured datagram on one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Microseconds since the Unix epoch.
    pub ts_us: u64,
    pub leg: Leg,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: &'a [u8],
}

/// A decoded frame body.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    Heartbeat,
    Datagram(Frame<'a>),
    Note(&'a str),
}

pub fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

/// Appends a datagram frame, length prefix included.
pub fn encode(f: &Frame<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(KIND_DATAGRAM);
    out.extend_from_slice(&f.ts_us.to_be_bytes());
    out.push(match f.leg {
        Leg::Client => 0,
        Leg::Backend => 1,
    });
    put_addr(out, f.src);
    put_addr(out, f.dst);
    out.extend_from_slice(f.payload);
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A note frame (the capture's last), length prefix included.
pub fn note(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 5);
    out.extend_from_slice(&u32::try_from(text.len() + 1).unwrap_or(0).to_be_bytes());
    out.push(KIND_NOTE);
    out.extend_from_slice(text.as_bytes());
    out
}

pub const HEARTBEAT: [u8; 4] = [0; 4];

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Some(h)
}

fn get_addr(b: &mut &[u8]) -> Option<SocketAddr> {
    let ip = match take(b, 1)?[0] {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(take(b, 4)?).ok()?)),
        6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(take(b, 16)?).ok()?)),
        _ => return None,
    };
    let port = u16::from_be_bytes(take(b, 2)?.try_into().ok()?);
    Some(SocketAddr::new(ip, port))
}

/// Decodes one frame body (after its length prefix); `None` when malformed.
pub fn decode(mut b: &[u8]) -> Option<Item<'_>> {
    let Some((&kind, rest)) = b.split_first() else {
        return Some(Item::Heartbeat);
    };
    b = rest;
    match kind {
        KIND_DATAGRAM => {
            let ts_us = u64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?);
            let leg = match take(&mut b, 1)?[0] {
                0 => Leg::Client,
                1 => Leg::Backend,
                _ => return None,
            };
            let src = get_addr(&mut b)?;
            let dst = get_addr(&mut b)?;
            Some(Item::Datagram(Frame {
                ts_us,
                leg,
                src,
                dst,
                payload: b,
            }))
        }
        KIND_NOTE => std::str::from_utf8(b).ok().map(Item::Note),
        _ => None,
    }
}

/// Reads one frame body into `buf`; false at a clean end of stream.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > 1 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "capture frame too large",
        ));
    }
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(true)
}

/// `YYYY-MM-DD HH:MM:SS.uuuuuu` (UTC).
pub fn format_ts(ts_us: u64) -> String {
    let secs = ts_us / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ts_us % 1_000_000
    )
}

/// sngrep's raw view: a header line, the message, a blank line.
pub fn write_text(w: &mut impl Write, f: &Frame<'_>) -> io::Result<()> {
    writeln!(
        w,
        "{} {:<7} {} -> {} ({} bytes)",
        format_ts(f.ts_us),
        f.leg.as_str(),
        f.src,
        f.dst,
        f.payload.len()
    )?;
    let text = String::from_utf8_lossy(f.payload);
    // One blank line after each message, whatever it ends with.
    for line in text.trim_end_matches(['\r', '\n']).split_inclusive('\n') {
        let line = line.trim_end_matches(['\r', '\n']);
        // The bytes come from the internet and go to an operator's terminal: control
        // characters (ESC sequences set the title, the clipboard, move the cursor) are
        // written as escapes, and a backslash doubled, so the two cannot be confused.
        for c in line.chars() {
            if c.is_control() && c != '\t' {
                write!(w, "\\x{{{:02x}}}", u32::from(c))?;
            } else if c == '\\' {
                w.write_all(b"\\\\")?;
            } else {
                write!(w, "{c}")?;
            }
        }
        writeln!(w)?;
    }
    writeln!(w)
}

/// LINKTYPE_RAW: each record is an IPv4 or IPv6 packet.
const LINKTYPE_RAW: u32 = 101;
const SNAPLEN: u32 = 65_535;

/// The classic libpcap file header (microsecond timestamps, little-endian).
pub fn pcap_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_RAW.to_le_bytes());
    h
}

fn sum16(mut acc: u32, b: &[u8]) -> u32 {
    let mut it = b.chunks_exact(2);
    for c in &mut it {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = it.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// One pcap record: the datagram in synthesized IP and UDP headers, with checksums.
/// Mixed families are written as IPv6 (IPv4-mapped).
pub fn pcap_record(f: &Frame<'_>, out: &mut Vec<u8>) {
    let (src, dst) = match (f.src.ip(), f.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
        (s, d) => (
            IpAddr::V6(match s {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            }),
            IpAddr::V6(match d {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            }),
        ),
    };
    // Larger than an IP packet can say: cut (pcap records the cut with caplen < len).
    let payload = &f.payload[..f.payload.len().min(65_000)];
    let udp_len = 8 + payload.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&f.src.port().to_be_bytes());
    udp.extend_from_slice(&f.dst.port().to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(40);
    let mut ip = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
            ip.extend_from_slice(&[0x45, 0]);
            ip.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = fold(sum16(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (s, d) => {
            let (s, d) = match (s, d) {
                (IpAddr::V6(s), IpAddr::V6(d)) => (s, d),
                _ => (Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED),
            };
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
            ip.extend_from_slice(&[0x60, 0, 0, 0]);
            ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
            ip.extend_from_slice(&[17, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
        }
    }
    let mut c = fold(sum16(sum16(0, &pseudo), &udp));
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let caplen = (ip.len() + udp.len()) as u32;
    let orig = (ip.len() + 8 + f.payload.len()) as u32;
    out.extend_from_slice(&((f.ts_us / 1_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&((f.ts_us % 1_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&caplen.to_le_bytes());
    out.extend_from_slice(&orig.to_le_bytes());
    out.extend_from_slice(&ip);
    out.extend_from_slice(&udp);
}

/// One running capture, as the dataplane holds it.
pub struct Subscription {
    pub filter: Filter,
    pub until: Instant,
    /// Frames still to deliver.
    pub remaining: u64,
    pub tx: mpsc::Sender<Vec<u8>>,
    /// Bytes of frames in `tx`'s queue: added here, taken off by the reader.
    pub queued: Arc<AtomicUsize>,
    /// Frames this capture lost to a full queue (reported in its last note).
    pub dropped: Arc<AtomicU64>,
    /// Bytes `queued` may reach (`admin.capture_queue_bytes`); `tx` bounds the frames.
    pub max_bytes: usize,
}

/// Why a capture was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Busy,
    NoBackend(String),
}

/// The dataplane's captures.
impl Subscription {
    /// Queues one frame, bounded by bytes as well as frames (a full queue either way
    /// is a drop): `Some(true)` queued, `Some(false)` dropped, `None` the reader is gone.
    fn enqueue(&self, frame: &Frame<'_>) -> Option<bool> {
        let len = frame.payload.len() + 64;
        if self.queued.load(Ordering::Relaxed) + len > self.max_bytes {
            return Some(false);
        }
        let mut buf = Vec::with_capacity(len);
        encode(frame, &mut buf);
        // Counted before the reader can take it off (and give it back).
        let len = buf.len();
        self.queued.fetch_add(len, Ordering::Relaxed);
        match self.tx.try_send(buf) {
            Ok(()) => Some(true),
            Err(TrySendError::Full(_)) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                Some(false)
            }
            Err(TrySendError::Closed(_)) => None,
        }
    }
}

pub struct Taps {
    subs: Vec<Subscription>,
    /// Captures at once (`admin.max_captures`).
    max: usize,
    dropped: metrics::Counter,
}

impl Taps {
    pub fn new(max: usize) -> Taps {
        Taps {
            subs: Vec::with_capacity(max),
            max,
            dropped: metrics::counter!("sipfront_capture_dropped_total"),
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Forgets captures whose time is up or whose reader went away.
    pub fn prune(&mut self, now: Instant) {
        self.subs.retain(|s| now < s.until && !s.tx.is_closed());
    }

    pub fn add(&mut self, sub: Subscription, now: Instant) -> Result<(), Refused> {
        self.prune(now);
        if self.subs.len() >= self.max {
            return Err(Refused::Busy);
        }
        self.subs.push(sub);
        Ok(())
    }

    /// A datagram of `client`'s flow (to or from `backend`), on the legs given in the
    /// order it travelled them: offered to every capture it matches.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &mut self,
        now: Instant,
        ts: SystemTime,
        client: SocketAddr,
        backend: Option<SocketAddr>,
        call_id: &[u8],
        legs: &[(Leg, SocketAddr, SocketAddr)],
        data: &[u8],
    ) {
        let ts_us = micros(ts);
        let dropped = &self.dropped;
        self.subs.retain_mut(|s| {
            if now >= s.until || s.tx.is_closed() {
                return false;
            }
            if !s.filter.matches(client, backend, call_id) {
                return true;
            }
            for &(leg, src, dst) in legs {
                if s.remaining == 0 {
                    break;
                }
                let frame = Frame {
                    ts_us,
                    leg,
                    src,
                    dst,
                    payload: data,
                };
                let Some(queued) = s.enqueue(&frame) else {
                    return false;
                };
                if queued {
                    s.remaining -= 1;
                } else {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                    dropped.increment(1);
                }
            }
            // Done: dropping the sender ends the stream once the queue is read.
            s.remaining > 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn text_output_escapes_control_characters() {
        let f = Frame {
            ts_us: 1_700_000_000_123_456,
            leg: Leg::Client,
            src: sa("192.0.2.1:5060"),
            dst: sa("127.0.0.1:5060"),
            payload: "MESSAGE sip:x SIP/2.0\r\nSubject: \x1b]52;c;aGk=\x07\tx\ry \u{9b}2J\r\nX: \\x{1b}\r\n\r\n"
                .as_bytes(),
        };
        let mut out = Vec::new();
        write_text(&mut out, &f).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{text:?}"
        );
        assert!(
            text.contains("Subject: \\x{1b}]52;c;aGk=\\x{07}\tx\\x{0d}y \\x{9b}2J\n"),
            "{text:?}"
        );
        // A literal backslash is doubled: it never reads as an escape.
        assert!(text.contains("X: \\\\x{1b}\n"), "{text:?}");
    }

    #[test]
    fn frames_round_trip() {
        let f = Frame {
            ts_us: 1_700_000_000_123_456,
            leg: Leg::Backend,
            src: sa("10.0.0.1:5060"),
            dst: sa("[2001:db8::1]:5070"),
            payload: b"OPTIONS sip:x SIP/2.0\r\n\r\n",
        };
        let mut buf = Vec::new();
        encode(&f, &mut buf);
        buf.extend_from_slice(&HEARTBEAT);
        buf.extend_from_slice(&note("end"));
        let mut r = &buf[..];
        let mut body = Vec::new();
        assert!(read_frame(&mut r, &mut body).unwrap());
        assert_eq!(decode(&body), Some(Item::Datagram(f.clone())));
        assert!(read_frame(&mut r, &mut body).unwrap());
        assert_eq!(decode(&body), Some(Item::Heartbeat));
        assert!(read_frame(&mut r, &mut body).unwrap());
        assert_eq!(decode(&body), Some(Item::Note("end")));
        assert!(!read_frame(&mut r, &mut body).unwrap());
        // Truncations never panic.
        let mut one = Vec::new();
        encode(&f, &mut one);
        for n in 4..one.len() {
            let _ = decode(&one[4..n]);
        }
    }

    #[test]
    fn filter_criteria_all_apply() {
        let (ip, port) = Filter::parse_client("192.0.2.7").unwrap();
        assert_eq!(port, None);
        let f = Filter {
            client_ip: Some(ip),
            ..Filter::default()
        };
        assert!(f.matches(sa("192.0.2.7:1234"), None, b""));
        assert!(!f.matches(sa("192.0.2.8:1234"), None, b""));
        let (ip, port) = Filter::parse_client("[::1]:5060").unwrap();
        let f = Filter {
            client_ip: Some(ip),
            client_port: port,
            call_id: Some(b"abc".to_vec().into()),
            backend: Some(sa("10.0.0.9:5060")),
        };
        assert!(f.matches(sa("[::1]:5060"), Some(sa("10.0.0.9:5060")), b"abc"));
        assert!(!f.matches(sa("[::1]:5061"), Some(sa("10.0.0.9:5060")), b"abc"));
        assert!(!f.matches(sa("[::1]:5060"), Some(sa("10.0.0.9:5060")), b"abd"));
        assert!(!f.matches(sa("[::1]:5060"), None, b"abc"));
        assert_eq!(Filter::parse_client("nope"), None);
    }

    #[test]
    fn timestamps_format_as_utc() {
        assert_eq!(format_ts(0), "1970-01-01 00:00:00.000000");
        assert_eq!(
            format_ts(1_709_251_199_000_001),
            "2024-02-29 23:59:59.000001"
        );
    }

    #[test]
    fn pcap_records_have_valid_checksums() {
        let f = Frame {
            ts_us: 5_000_001,
            leg: Leg::Client,
            src: sa("192.0.2.1:5060"),
            dst: sa("198.51.100.2:40000"),
            payload: b"SIP/2.0 200 OK\r\n\r\n",
        };
        let mut out = Vec::new();
        pcap_record(&f, &mut out);
        let pkt = &out[16..];
        assert_eq!(
            u32::from_le_bytes(out[8..12].try_into().unwrap()) as usize,
            pkt.len()
        );
        assert_eq!(pkt.len(), 20 + 8 + f.payload.len());
        assert_eq!(fold(sum16(0, &pkt[..20])), 0, "IPv4 header checksum");
        let mut pseudo = pkt[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&pkt[24..26]);
        assert_eq!(
            fold(sum16(sum16(0, &pseudo), &pkt[20..])),
            0,
            "UDP checksum"
        );
        let mut v6 = Vec::new();
        pcap_record(
            &Frame {
                src: sa("[2001:db8::1]:5060"),
                dst: sa("10.0.0.1:5060"),
                ..f
            },
            &mut v6,
        );
        assert_eq!(v6[16] >> 4, 6);
        assert_eq!(v6.len(), 16 + 40 + 8 + f.payload.len());
    }

    #[test]
    fn taps_bound_count_and_queue() {
        let mut t = Taps::new(4);
        let now = Instant::now();
        let (tx, mut rx) = mpsc::channel(2);
        let dropped = Arc::new(AtomicU64::new(0));
        t.add(
            Subscription {
                filter: Filter {
                    call_id: Some(b"c1".to_vec().into()),
                    ..Filter::default()
                },
                until: now + std::time::Duration::from_secs(5),
                remaining: 3,
                tx,
                queued: Arc::default(),
                dropped: dropped.clone(),
                max_bytes: 1 << 20,
            },
            now,
        )
        .unwrap();
        let (c, b) = (sa("192.0.2.1:5060"), sa("10.0.0.1:5060"));
        let legs = [(Leg::Client, c, c), (Leg::Backend, b, b)];
        t.offer(now, SystemTime::now(), c, Some(b), b"other", &legs, b"x");
        assert!(rx.try_recv().is_err());
        t.offer(now, SystemTime::now(), c, Some(b), b"c1", &legs, b"x");
        t.offer(now, SystemTime::now(), c, Some(b), b"c1", &legs, b"x");
        assert_eq!(dropped.load(Ordering::Relaxed), 2, "queue of 2 full");
        assert_eq!(t.len(), 1);
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok());
        t.offer(now, SystemTime::now(), c, Some(b), b"c1", &legs, b"x");
        assert!(t.is_empty(), "third frame delivered: done");
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn taps_bound_queued_bytes() {
        const QUEUE_BYTES: usize = 4 << 20;
        let mut t = Taps::new(4);
        let now = Instant::now();
        let (tx, mut rx) = mpsc::channel(1024);
        let (queued, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
        t.add(
            Subscription {
                filter: Filter::default(),
                until: now + std::time::Duration::from_secs(5),
                remaining: 100_000,
                tx,
                queued: queued.clone(),
                dropped: dropped.clone(),
                max_bytes: QUEUE_BYTES,
            },
            now,
        )
        .unwrap();
        let c = sa("192.0.2.1:5060");
        let legs = [(Leg::Client, c, c)];
        let big = vec![b'x'; 60_000];
        for _ in 0..200 {
            t.offer(now, SystemTime::now(), c, None, b"c", &legs, &big);
        }
        let held = queued.load(Ordering::Relaxed);
        assert!(held <= QUEUE_BYTES && held + 60_064 > QUEUE_BYTES, "{held}");
        let frames = held / 60_000;
        assert_eq!(dropped.load(Ordering::Relaxed), 200 - frames as u64);
        // The reader takes one off: room for one more.
        let f = rx.try_recv().unwrap();
        queued.fetch_sub(f.len(), Ordering::Relaxed);
        t.offer(now, SystemTime::now(), c, None, b"c", &legs, &big);
        assert_eq!(queued.load(Ordering::Relaxed), held);
    }
}
