//! HEPv3 (the Homer encapsulation protocol, as Kamailio `siptrace`/`sipcapture`, OpenSIPS
//! `proto_hep` and heplify speak it), in smoltcp's shape: a checked view over bytes
//! ([`Packet`]) that walks the chunks, and a high-level [`Repr`] with `parse` and `emit`.
//! Pure: no sockets, no clock (the timestamp is a field), no allocation.
//!
//! ```text
//! "HEP3" | total length (u16, whole packet) | chunk*
//! chunk:  vendor id (u16) | type id (u16) | length (u16, header included) | value
//! ```
//!
//! All integers are big-endian. Generic chunks (vendor 0) written by [`Repr::emit`]:
//! 0x01 IP family (2 = IPv4, 10 = IPv6), 0x02 IP protocol (17 = UDP), 0x03/0x04 IPv4
//! source/destination or 0x05/0x06 IPv6 source/destination, 0x07/0x08 ports, 0x09/0x0a
//! timestamp seconds/microseconds, 0x0b payload type (1 = SIP), 0x0c capture agent id, 0x0e
//! auth key (optional), 0x11 correlation id (optional: Homer and `sipcapture` tie records
//! with it; sipfront puts the Call-ID there, so the client and backend legs of one message
//! share it) and 0x0f the payload. An IPv4 and an IPv6 end in one packet are both written
//! as IPv6 (the IPv4 one mapped).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const MAGIC: &[u8; 4] = b"HEP3";
pub const HEADER_LEN: usize = 6;
pub const CHUNK_HEADER_LEN: usize = 6;
/// Payload type of SIP.
pub const PROTO_SIP: u8 = 1;

pub const CHUNK_FAMILY: u16 = 0x01;
pub const CHUNK_PROTO: u16 = 0x02;
pub const CHUNK_SRC_IP4: u16 = 0x03;
pub const CHUNK_DST_IP4: u16 = 0x04;
pub const CHUNK_SRC_IP6: u16 = 0x05;
pub const CHUNK_DST_IP6: u16 = 0x06;
pub const CHUNK_SRC_PORT: u16 = 0x07;
pub const CHUNK_DST_PORT: u16 = 0x08;
pub const CHUNK_TS_SEC: u16 = 0x09;
pub const CHUNK_TS_USEC: u16 = 0x0a;
pub const CHUNK_PROTO_TYPE: u16 = 0x0b;
pub const CHUNK_CAPTURE_ID: u16 = 0x0c;
pub const CHUNK_AUTH_KEY: u16 = 0x0e;
pub const CHUNK_PAYLOAD: u16 = 0x0f;
pub const CHUNK_CORRELATION: u16 = 0x11;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_UDP: u8 = 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HepError {
    #[error("shorter than its header or its length field")]
    Truncated,
    #[error("does not start with HEP3")]
    BadMagic,
    #[error("a chunk length is below 6 or runs past the packet")]
    BadChunk,
    #[error("a required chunk is missing or has the wrong size")]
    Missing,
}

/// A checked view over a HEPv3 packet.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the magic, the total length and that every chunk lies inside it.
    pub fn new_checked(buf: T) -> Result<Packet<T>, HepError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(HepError::Truncated);
        }
        if &b[..4] != MAGIC {
            return Err(HepError::BadMagic);
        }
        let total = usize::from(u16::from_be_bytes([b[4], b[5]]));
        if total < HEADER_LEN || total > b.len() {
            return Err(HepError::Truncated);
        }
        let p = Packet { buf };
        for c in p.chunks() {
            c?;
        }
        Ok(p)
    }

    pub fn total_len(&self) -> usize {
        let b = self.buf.as_ref();
        usize::from(u16::from_be_bytes([b[4], b[5]]))
    }

    /// The chunks in order: `(vendor, type, value)`.
    pub fn chunks(&self) -> Chunks<'_> {
        Chunks {
            rest: &self.buf.as_ref()[HEADER_LEN..self.total_len()],
        }
    }

    /// The value of the first generic (vendor 0) chunk of type `t`.
    pub fn chunk(&self, t: u16) -> Option<&[u8]> {
        self.chunks()
            .filter_map(Result::ok)
            .find(|&(v, ty, _)| v == 0 && ty == t)
            .map(|(_, _, val)| val)
    }
}

pub struct Chunks<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Chunks<'a> {
    type Item = Result<(u16, u16, &'a [u8]), HepError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.rest;
        if r.len() < CHUNK_HEADER_LEN {
            self.rest = &[];
            return Some(Err(HepError::BadChunk));
        }
        let vendor = u16::from_be_bytes([r[0], r[1]]);
        let ty = u16::from_be_bytes([r[2], r[3]]);
        let len = usize::from(u16::from_be_bytes([r[4], r[5]]));
        if len < CHUNK_HEADER_LEN || len > r.len() {
            self.rest = &[];
            return Some(Err(HepError::BadChunk));
        }
        self.rest = &r[len..];
        Some(Ok((vendor, ty, &r[CHUNK_HEADER_LEN..len])))
    }
}

/// One captured datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub ts_sec: u32,
    pub ts_usec: u32,
    pub proto_type: u8,
    pub capture_id: u32,
    pub auth_key: Option<&'a [u8]>,
    pub correlation_id: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn chunk(&mut self, ty: u16, val: &[u8]) {
        let len = CHUNK_HEADER_LEN + val.len();
        let b = &mut self.buf[self.at..self.at + len];
        b[0..2].copy_from_slice(&0u16.to_be_bytes());
        b[2..4].copy_from_slice(&ty.to_be_bytes());
        b[4..6].copy_from_slice(&(len as u16).to_be_bytes());
        b[6..].copy_from_slice(val);
        self.at += len;
    }
}

impl<'a> Repr<'a> {
    fn both_v4(&self) -> bool {
        self.src.is_ipv4() && self.dst.is_ipv4()
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        let ip = if self.both_v4() { 4 } else { 16 };
        let opt = |v: Option<&[u8]>| v.map_or(0, |v| CHUNK_HEADER_LEN + v.len());
        HEADER_LEN
            + 11 * CHUNK_HEADER_LEN
            + 1
            + 1
            + 2 * ip
            + 2
            + 2
            + 4
            + 4
            + 1
            + 4
            + opt(self.auth_key)
            + opt(self.correlation_id)
            + self.payload.len()
    }

    /// Writes the packet into `buf`; `None` if it does not fit there or in HEP's 16-bit
    /// lengths. Never allocates.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let total = self.buffer_len();
        if total > usize::from(u16::MAX) || total > buf.len() {
            return None;
        }
        buf[..4].copy_from_slice(MAGIC);
        buf[4..6].copy_from_slice(&(total as u16).to_be_bytes());
        let mut w = Writer {
            buf,
            at: HEADER_LEN,
        };
        if self.both_v4() {
            w.chunk(CHUNK_FAMILY, &[AF_INET]);
            w.chunk(CHUNK_PROTO, &[IPPROTO_UDP]);
            let (IpAddr::V4(s), IpAddr::V4(d)) = (self.src.ip(), self.dst.ip()) else {
                return None;
            };
            w.chunk(CHUNK_SRC_IP4, &s.octets());
            w.chunk(CHUNK_DST_IP4, &d.octets());
        } else {
            w.chunk(CHUNK_FAMILY, &[AF_INET6]);
            w.chunk(CHUNK_PROTO, &[IPPROTO_UDP]);
            w.chunk(CHUNK_SRC_IP6, &v6(self.src.ip()).octets());
            w.chunk(CHUNK_DST_IP6, &v6(self.dst.ip()).octets());
        }
        w.chunk(CHUNK_SRC_PORT, &self.src.port().to_be_bytes());
        w.chunk(CHUNK_DST_PORT, &self.dst.port().to_be_bytes());
        w.chunk(CHUNK_TS_SEC, &self.ts_sec.to_be_bytes());
        w.chunk(CHUNK_TS_USEC, &self.ts_usec.to_be_bytes());
        w.chunk(CHUNK_PROTO_TYPE, &[self.proto_type]);
        w.chunk(CHUNK_CAPTURE_ID, &self.capture_id.to_be_bytes());
        if let Some(k) = self.auth_key {
            w.chunk(CHUNK_AUTH_KEY, k);
        }
        if let Some(c) = self.correlation_id {
            w.chunk(CHUNK_CORRELATION, c);
        }
        w.chunk(CHUNK_PAYLOAD, self.payload);
        debug_assert_eq!(w.at, total);
        Some(total)
    }

    /// Reads the chunks sipfront writes (others are skipped).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &'a Packet<&'a T>) -> Result<Repr<'a>, HepError> {
        fn arr<const N: usize>(v: Option<&[u8]>) -> Result<[u8; N], HepError> {
            v.and_then(|v| v.try_into().ok()).ok_or(HepError::Missing)
        }
        let family = arr::<1>(p.chunk(CHUNK_FAMILY))?[0];
        let (src_ip, dst_ip) = match family {
            AF_INET => (
                IpAddr::V4(Ipv4Addr::from(arr::<4>(p.chunk(CHUNK_SRC_IP4))?)),
                IpAddr::V4(Ipv4Addr::from(arr::<4>(p.chunk(CHUNK_DST_IP4))?)),
            ),
            AF_INET6 => (
                IpAddr::V6(Ipv6Addr::from(arr::<16>(p.chunk(CHUNK_SRC_IP6))?)),
                IpAddr::V6(Ipv6Addr::from(arr::<16>(p.chunk(CHUNK_DST_IP6))?)),
            ),
            _ => return Err(HepError::Missing),
        };
        let port = |t| arr::<2>(p.chunk(t)).map(u16::from_be_bytes);
        let u32_of = |t| arr::<4>(p.chunk(t)).map(u32::from_be_bytes);
        Ok(Repr {
            src: SocketAddr::new(src_ip, port(CHUNK_SRC_PORT)?),
            dst: SocketAddr::new(dst_ip, port(CHUNK_DST_PORT)?),
            ts_sec: u32_of(CHUNK_TS_SEC)?,
            ts_usec: u32_of(CHUNK_TS_USEC)?,
            proto_type: arr::<1>(p.chunk(CHUNK_PROTO_TYPE))?[0],
            capture_id: u32_of(CHUNK_CAPTURE_ID)?,
            auth_key: p.chunk(CHUNK_AUTH_KEY),
            correlation_id: p.chunk(CHUNK_CORRELATION),
            payload: p.chunk(CHUNK_PAYLOAD).ok_or(HepError::Missing)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample<'a>(src: &str, dst: &str, payload: &'a [u8]) -> Repr<'a> {
        Repr {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            ts_sec: 1_700_000_000,
            ts_usec: 123_456,
            proto_type: PROTO_SIP,
            capture_id: 2001,
            auth_key: Some(b"secret"),
            correlation_id: Some(b"abc@host"),
            payload,
        }
    }

    #[test]
    fn emits_known_layout() {
        let r = sample("198.51.100.7:5060", "203.0.113.10:5060", b"OPTIONS");
        let mut buf = [0u8; 256];
        let n = r.emit(&mut buf).unwrap();
        assert_eq!(n, r.buffer_len());
        assert_eq!(&buf[..4], b"HEP3");
        assert_eq!(u16::from_be_bytes([buf[4], buf[5]]) as usize, n);
        // First chunk: vendor 0, type 1 (family), length 7, AF_INET.
        assert_eq!(&buf[6..13], &[0, 0, 0, 1, 0, 7, 2]);
        // The payload chunk comes last.
        assert_eq!(&buf[n - 7..n], b"OPTIONS");
        assert_eq!(&buf[n - 13..n - 7], &[0, 0, 0, 0x0f, 0, 13]);
        let p = Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), r);
    }

    #[test]
    fn mixed_families_become_v6() {
        let r = sample("[2001:db8::1]:5060", "203.0.113.10:5060", b"x");
        let mut buf = [0u8; 256];
        let n = r.emit(&mut buf).unwrap();
        let p = Packet::new_checked(&buf[..n]).unwrap();
        let back = Repr::parse(&p).unwrap();
        assert_eq!(
            back.dst.ip(),
            IpAddr::V6(Ipv4Addr::new(203, 0, 113, 10).to_ipv6_mapped())
        );
        assert_eq!(back.payload, b"x");
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let r = sample("1.2.3.4:1", "5.6.7.8:2", b"0123456789");
        let mut small = [0u8; 40];
        assert_eq!(r.emit(&mut small), None);
        let big = vec![0u8; 70_000];
        let r = sample("1.2.3.4:1", "5.6.7.8:2", &big);
        let mut buf = vec![0u8; 80_000];
        assert_eq!(r.emit(&mut buf), None);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            Packet::new_checked(&b"HEP"[..]).unwrap_err(),
            HepError::Truncated
        );
        assert_eq!(
            Packet::new_checked(&b"HEP2\0\x06"[..]).unwrap_err(),
            HepError::BadMagic
        );
        assert_eq!(
            Packet::new_checked(&b"HEP3\0\x0b\0\0\0\x01"[..]).unwrap_err(),
            HepError::Truncated
        );
        assert_eq!(
            Packet::new_checked(&b"HEP3\0\x0c\0\0\0\x01\0\x09"[..]).unwrap_err(),
            HepError::BadChunk
        );
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(a, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(a, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), p)),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(
            src in addr(), dst in addr(), ts_sec: u32, ts_usec: u32, capture_id: u32,
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            corr in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
            payload in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            let r = Repr {
                src, dst, ts_sec, ts_usec, proto_type: PROTO_SIP, capture_id,
                auth_key: key.as_deref(), correlation_id: corr.as_deref(), payload: &payload,
            };
            let mut buf = vec![0u8; r.buffer_len()];
            let n = r.emit(&mut buf).unwrap();
            let p = Packet::new_checked(&buf[..n]).unwrap();
            let back = Repr::parse(&p).unwrap();
            let same = |a: SocketAddr, b: SocketAddr| {
                if src.is_ipv4() && dst.is_ipv4() { a == b } else {
                    v6(a.ip()) == v6(b.ip()) && a.port() == b.port()
                }
            };
            prop_assert!(same(back.src, src) && same(back.dst, dst));
            prop_assert_eq!(back.ts_sec, ts_sec);
            prop_assert_eq!(back.ts_usec, ts_usec);
            prop_assert_eq!(back.capture_id, capture_id);
            prop_assert_eq!(back.auth_key, key.as_deref());
            prop_assert_eq!(back.correlation_id, corr.as_deref());
            prop_assert_eq!(back.payload, &payload[..]);
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = bytes.clone();
            if b.len() >= 6 && bytes[0] & 1 == 0 {
                b[..4].copy_from_slice(MAGIC);
            }
            if let Ok(p) = Packet::new_checked(&b[..]) {
                let _ = Repr::parse(&p);
            }
        }
    }
}
