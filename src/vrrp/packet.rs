//! VRRPv3 advertisement for IPv4 (RFC 5798 §5.1), in smoltcp's shape: a checked
//! view over bytes ([`Packet`]) with field accessors, and a high-level [`Repr`] with
//! `parse` and `emit`.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IPv4 Address(es)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The bytes are the VRRP message only: the IP header is the kernel's (raw socket,
//! protocol 112, TTL 255). The shell passes the IP source and destination because the
//! checksum may cover an IPv4 pseudo-header.
//!
//! # Checksums
//!
//! Implementations disagree on the IPv4 checksum of VRRPv3, so [`Repr::parse`] accepts
//! three forms and says which one matched ([`ChecksumKind`]):
//!
//! - [`ChecksumKind::PseudoHeader`]: RFC 5798 §5.2.8 read literally — the Internet
//!   checksum over a pseudo-header (source, destination, zero, protocol 112, VRRP
//!   length) and the message. keepalived's default; Wireshark's default check.
//! - [`ChecksumKind::MessageOnly`]: the message alone, as in VRRPv2. Cisco's reading,
//!   keepalived's `v3_checksum_as_v2`, FRR without `checksum-with-ipv4-pseudoheader`,
//!   and the text of RFC 9568 §5.2.8 (which obsoletes RFC 5798).
//! - [`ChecksumKind::McastPseudoHeader`]: the pseudo-header form with 224.0.0.18 as
//!   destination although the packet was unicast. keepalived before 1.4 put the
//!   multicast group in the pseudo-header for unicast peers too (keepalived issue #642,
//!   fixed by PR #929; newer keepalived auto-detects it).
//!
//! [`Repr::emit`] always writes the pseudo-header form, which is what keepalived
//! expects by default.

use std::net::Ipv4Addr;

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// The IPv4 multicast group of VRRP (RFC 5798 §5.1.1.2).
pub const MCAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IP TTL a sender sets and a receiver requires (RFC 5798 §5.1.1.3, §7.1).
pub const TTL: u8 = 255;
/// VRRP version this module speaks.
pub const VERSION: u8 = 3;
/// The only message type: ADVERTISEMENT.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Length of the fixed header, before the addresses.
pub const HEADER_LEN: usize = 8;
/// Most addresses one advertisement carries (the count is one octet).
pub const MAX_ADDRS: usize = 255;
/// Largest Max Adver Int: 12 bits of centiseconds (40.95 s).
pub const MAX_ADVERT_INT_CS: u16 = 0x0fff;

/// Why bytes are not a valid advertisement. `as_str` values are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("shorter than the {HEADER_LEN}-byte VRRP header")]
    Truncated,
    #[error("VRRP version is not 3")]
    BadVersion,
    #[error("VRRP type is not ADVERTISEMENT (1)")]
    BadType,
    #[error("length does not match the address count")]
    BadLength,
    #[error("checksum matches none of the accepted forms")]
    BadChecksum,
    #[error("Max Adver Int is zero")]
    BadInterval,
}

impl PacketError {
    pub fn as_str(self) -> &'static str {
        match self {
            PacketError::Truncated => "truncated",
            PacketError::BadVersion => "bad_version",
            PacketError::BadType => "bad_type",
            PacketError::BadLength => "bad_length",
            PacketError::BadChecksum => "bad_checksum",
            PacketError::BadInterval => "bad_interval",
        }
    }
}

/// Which checksum form a received advertisement carried (see the module docs).
/// `as_str` values are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumKind {
    /// RFC 5798 pseudo-header with the packet's own source and destination.
    PseudoHeader,
    /// VRRPv2 style, the message alone (`v3_checksum_as_v2`, RFC 9568).
    MessageOnly,
    /// Pseudo-header with 224.0.0.18 as destination on a unicast packet (old keepalived).
    McastPseudoHeader,
}

impl ChecksumKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumKind::PseudoHeader => "pseudo_header",
            ChecksumKind::MessageOnly => "message_only",
            ChecksumKind::McastPseudoHeader => "mcast_pseudo_header",
        }
    }
}

mod field {
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    pub const ADVER_INT: std::ops::Range<usize> = 4..6;
    pub const CHECKSUM: std::ops::Range<usize> = 6..8;
}

/// One's complement sum of big-endian 16-bit words, folded, not yet inverted.
fn ones_sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for w in &mut chunks {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u32 {
    let mut ph = [0u8; 12];
    ph[0..4].copy_from_slice(&src.octets());
    ph[4..8].copy_from_slice(&dst.octets());
    ph[9] = PROTOCOL;
    // The VRRP message is at most 8 + 4 * 255 bytes, so the length fits in 16 bits.
    ph[10..12].copy_from_slice(&(len.min(0xffff) as u16).to_be_bytes());
    ones_sum(0, &ph)
}

/// Internet checksum (RFC 1071) of `msg`, with the IPv4 pseudo-header of RFC 5798
/// §5.2.8 when `pseudo` gives source and destination. Over a message whose checksum
/// field is filled in, a correct checksum yields 0.
pub fn checksum(msg: &[u8], pseudo: Option<(Ipv4Addr, Ipv4Addr)>) -> u16 {
    let acc = pseudo.map_or(0, |(s, d)| pseudo_header_sum(s, d, msg.len()));
    !(ones_sum(acc, msg) as u16)
}

/// A read/write view of a VRRPv3 advertisement in a buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks: accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view whose accessors cannot panic: the header is complete, version 3, type
    /// ADVERTISEMENT, and the length is exactly the header plus `count` addresses.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, PacketError> {
        let p = Packet::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// The checks of [`Packet::new_checked`].
    pub fn check(&self) -> Result<(), PacketError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(PacketError::Truncated);
        }
        if self.version() != VERSION {
            return Err(PacketError::BadVersion);
        }
        if self.msg_type() != TYPE_ADVERTISEMENT {
            return Err(PacketError::BadType);
        }
        if len != HEADER_LEN + 4 * usize::from(self.count_ip_addrs()) {
            return Err(PacketError::BadLength);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Length of the message: the header and `count` addresses.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + 4 * usize::from(self.count_ip_addrs())
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    pub fn count_ip_addrs(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// The 4 reserved bits before Max Adver Int (sent as zero, ignored on receipt).
    pub fn reserved(&self) -> u8 {
        self.buffer.as_ref()[field::ADVER_INT.start] >> 4
    }

    /// Max Adver Int in centiseconds (12 bits).
    pub fn max_advert_int(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ADVER_INT];
        u16::from_be_bytes([b[0], b[1]]) & MAX_ADVERT_INT_CS
    }

    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Address number `i` (from 0); panics past the buffer.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        let at = HEADER_LEN + 4 * i;
        let b = &self.buffer.as_ref()[at..at + 4];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The addresses the packet carries.
    pub fn addrs(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (0..usize::from(self.count_ip_addrs())).map(|i| self.addr(i))
    }

    /// Which accepted checksum form matches, trying the RFC 5798 pseudo-header form
    /// first, then the message-only form, then the multicast pseudo-header form (only
    /// when `dst` is not the multicast group already).
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Option<ChecksumKind> {
        let msg = &self.buffer.as_ref()[..self.total_len()];
        if checksum(msg, Some((src, dst))) == 0 {
            Some(ChecksumKind::PseudoHeader)
        } else if checksum(msg, None) == 0 {
            Some(ChecksumKind::MessageOnly)
        } else if dst != MCAST_GROUP && checksum(msg, Some((src, MCAST_GROUP))) == 0 {
            Some(ChecksumKind::McastPseudoHeader)
        } else {
            None
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version_type(&mut self, version: u8, msg_type: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = (version << 4) | (msg_type & 0x0f);
    }

    pub fn set_vrid(&mut self, vrid: u8) {
        self.buffer.as_mut()[field::VRID] = vrid;
    }

    pub fn set_priority(&mut self, priority: u8) {
        self.buffer.as_mut()[field::PRIORITY] = priority;
    }

    pub fn set_count_ip_addrs(&mut self, count: u8) {
        self.buffer.as_mut()[field::COUNT] = count;
    }

    /// Sets Max Adver Int (masked to 12 bits) and clears the reserved bits.
    pub fn set_max_advert_int(&mut self, cs: u16) {
        let v = (cs & MAX_ADVERT_INT_CS).to_be_bytes();
        self.buffer.as_mut()[field::ADVER_INT].copy_from_slice(&v);
    }

    pub fn set_checksum(&mut self, sum: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }

    pub fn set_addr(&mut self, i: usize, addr: Ipv4Addr) {
        let at = HEADER_LEN + 4 * i;
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&addr.octets());
    }

    /// Computes and stores the RFC 5798 pseudo-header checksum.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.total_len();
        let sum = checksum(&self.buffer.as_ref()[..len], Some((src, dst)));
        self.set_checksum(sum);
    }
}

/// A VRRPv3 advertisement, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    pub vrid: u8,
    /// 0 means the sender stops being master (RFC 5798 §5.2.4), 255 the address owner.
    pub priority: u8,
    /// Max Adver Int in centiseconds, 1..=4095.
    pub max_advert_int_cs: u16,
    /// The virtual addresses (at most [`MAX_ADDRS`] are emitted).
    pub addrs: Vec<Ipv4Addr>,
}

impl Repr {
    /// Parses a checked packet received from `src` to `dst` (the IP header's
    /// addresses), verifying the checksum. Returns the form the checksum had.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<(Repr, ChecksumKind), PacketError> {
        packet.check()?;
        let kind = packet
            .verify_checksum(src, dst)
            .ok_or(PacketError::BadChecksum)?;
        // RFC 9568 erratum 8301: an interval of zero is discarded (it would make
        // Master_Down_Interval zero).
        if packet.max_advert_int() == 0 {
            return Err(PacketError::BadInterval);
        }
        let repr = Repr {
            vrid: packet.vrid(),
            priority: packet.priority(),
            max_advert_int_cs: packet.max_advert_int(),
            addrs: packet.addrs().collect(),
        };
        Ok((repr, kind))
    }

    /// Bytes [`Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + 4 * self.addrs.len().min(MAX_ADDRS)
    }

    /// Writes the message to `buf` with the RFC 5798 pseudo-header checksum for an
    /// IP packet from `src` to `dst`, and returns its length. The interval is masked
    /// to 12 bits; addresses past [`MAX_ADDRS`] are left out.
    ///
    /// # Panics
    /// If `buf` is shorter than [`Repr::buffer_len`].
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) -> usize {
        let len = self.buffer_len();
        assert!(
            buf.len() >= len,
            "VRRP emit needs {len} bytes, got {}",
            buf.len()
        );
        let mut p = Packet::new_unchecked(&mut buf[..len]);
        p.set_version_type(VERSION, TYPE_ADVERTISEMENT);
        p.set_vrid(self.vrid);
        p.set_priority(self.priority);
        let n = self.addrs.len().min(MAX_ADDRS);
        p.set_count_ip_addrs(n as u8);
        p.set_max_advert_int(self.max_advert_int_cs);
        for (i, a) in self.addrs.iter().take(n).enumerate() {
            p.set_addr(i, *a);
        }
        p.fill_checksum(src, dst);
        len
    }
}

#[cfg(test)]
mod tests;
