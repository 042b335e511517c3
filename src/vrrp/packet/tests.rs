//! Known-answer, error-table and property tests of the VRRPv3 packet.

use super::*;
use proptest::prelude::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A real keepalived VRRPv3 advertisement, as Wireshark decoded it in keepalived
/// issue #1490 (https://github.com/acassen/keepalived/issues/1490): VRID 2, priority
/// 150, Adver Int 100 cs, addresses 185.203.112.1, 10.0.0.1, 10.0.8.1, checksum
/// 0x082d, sent by 10.0.0.3 (keepalived's maintainer confirmed the checksum is right
/// for that source) to 224.0.0.18.
const KEEPALIVED_ADVERT: [u8; 20] = [
    0x31, 0x02, 0x96, 0x03, 0x00, 0x64, 0x08, 0x2d, // header
    185, 203, 112, 1, // 185.203.112.1
    10, 0, 0, 1, // 10.0.0.1
    10, 0, 8, 1, // 10.0.8.1
];

/// The naive RFC 1071 sum, written apart from `checksum` to check it independently:
/// add every 16-bit word into a u64, fold at the end, invert.
fn reference_checksum(words_source: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = words_source.concat();
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        let hi = u64::from(pair[0]) << 8;
        let lo = pair.get(1).copied().map_or(0, u64::from);
        sum += hi | lo;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, len: u16) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    v.extend_from_slice(&[0, PROTOCOL]);
    v.extend_from_slice(&len.to_be_bytes());
    v
}

fn keepalived_repr() -> Repr {
    Repr {
        vrid: 2,
        priority: 150,
        max_advert_int_cs: 100,
        addrs: vec![ip("185.203.112.1"), ip("10.0.0.1"), ip("10.0.8.1")],
    }
}

#[test]
fn keepalived_advert_parses_with_pseudo_header_checksum() {
    let p = Packet::new_checked(&KEEPALIVED_ADVERT[..]).unwrap();
    assert_eq!(p.version(), 3);
    assert_eq!(p.msg_type(), 1);
    assert_eq!(p.vrid(), 2);
    assert_eq!(p.priority(), 150);
    assert_eq!(p.count_ip_addrs(), 3);
    assert_eq!(p.reserved(), 0);
    assert_eq!(p.max_advert_int(), 100);
    assert_eq!(p.checksum(), 0x082d);
    let (repr, kind) = Repr::parse(&p, ip("10.0.0.3"), MCAST_GROUP).unwrap();
    assert_eq!(repr, keepalived_repr());
    assert_eq!(kind, ChecksumKind::PseudoHeader);
}

#[test]
fn keepalived_checksum_verified_independently() {
    let mut msg = KEEPALIVED_ADVERT;
    msg[6] = 0;
    msg[7] = 0;
    let ph = pseudo(ip("10.0.0.3"), MCAST_GROUP, 20);
    assert_eq!(reference_checksum(&[&ph, &msg]), 0x082d);
    assert_eq!(checksum(&msg, Some((ip("10.0.0.3"), MCAST_GROUP))), 0x082d);
    // The VRRPv2-style sum of the same message (computed by hand with the reference
    // sum and, separately, in Python): 0xf2c6.
    assert_eq!(reference_checksum(&[&msg]), 0xf2c6);
    assert_eq!(checksum(&msg, None), 0xf2c6);
}

#[test]
fn emit_reproduces_keepalived_bytes() {
    let mut buf = [0xaau8; 64];
    let n = keepalived_repr().emit(&mut buf, ip("10.0.0.3"), MCAST_GROUP);
    assert_eq!(n, 20);
    assert_eq!(&buf[..n], &KEEPALIVED_ADVERT[..]);
}

#[test]
fn message_only_checksum_is_accepted_and_reported() {
    let mut b = KEEPALIVED_ADVERT;
    b[6..8].copy_from_slice(&0xf2c6u16.to_be_bytes());
    let p = Packet::new_checked(&b[..]).unwrap();
    let (repr, kind) = Repr::parse(&p, ip("10.0.0.3"), MCAST_GROUP).unwrap();
    assert_eq!(repr, keepalived_repr());
    assert_eq!(kind, ChecksumKind::MessageOnly);
}

#[test]
fn unicast_with_multicast_pseudo_header_is_accepted_and_reported() {
    // Old keepalived unicast: the pseudo-header named 224.0.0.18, the packet went to
    // the peer's address.
    let p = Packet::new_checked(&KEEPALIVED_ADVERT[..]).unwrap();
    let (_, kind) = Repr::parse(&p, ip("10.0.0.3"), ip("10.0.0.2")).unwrap();
    assert_eq!(kind, ChecksumKind::McastPseudoHeader);
    // The current form for that unicast packet is the pseudo-header with 10.0.0.2.
    let mut buf = [0u8; 20];
    keepalived_repr().emit(&mut buf, ip("10.0.0.3"), ip("10.0.0.2"));
    let p = Packet::new_checked(&buf[..]).unwrap();
    let (_, kind) = Repr::parse(&p, ip("10.0.0.3"), ip("10.0.0.2")).unwrap();
    assert_eq!(kind, ChecksumKind::PseudoHeader);
}

#[test]
fn wrong_source_fails_the_checksum() {
    let p = Packet::new_checked(&KEEPALIVED_ADVERT[..]).unwrap();
    assert_eq!(
        Repr::parse(&p, ip("10.0.0.4"), MCAST_GROUP).unwrap_err(),
        PacketError::BadChecksum
    );
}

fn with(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = KEEPALIVED_ADVERT.to_vec();
    f(&mut v);
    v
}

#[test]
fn malformed_packets_table() {
    let cases: Vec<(&str, Vec<u8>, PacketError)> = vec![
        ("empty", vec![], PacketError::Truncated),
        (
            "7 bytes",
            KEEPALIVED_ADVERT[..7].to_vec(),
            PacketError::Truncated,
        ),
        ("version 2", with(|v| v[0] = 0x21), PacketError::BadVersion),
        ("version 4", with(|v| v[0] = 0x41), PacketError::BadVersion),
        ("type 2", with(|v| v[0] = 0x32), PacketError::BadType),
        ("type 0", with(|v| v[0] = 0x30), PacketError::BadType),
        (
            "one address short",
            KEEPALIVED_ADVERT[..16].to_vec(),
            PacketError::BadLength,
        ),
        (
            "trailing bytes",
            with(|v| v.extend_from_slice(&[0; 4])),
            PacketError::BadLength,
        ),
        ("count too big", with(|v| v[3] = 4), PacketError::BadLength),
        (
            "count too small",
            with(|v| v[3] = 2),
            PacketError::BadLength,
        ),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(Packet::new_checked(&bytes[..]).unwrap_err(), want, "{name}");
        assert!(!want.as_str().is_empty());
    }
}

#[test]
fn parse_errors_table() {
    let src = ip("10.0.0.3");
    let zero_interval = {
        let r = Repr {
            max_advert_int_cs: 0,
            ..keepalived_repr()
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b, src, MCAST_GROUP);
        b
    };
    let cases: Vec<(&str, Vec<u8>, PacketError)> = vec![
        (
            "flipped priority",
            with(|v| v[2] ^= 1),
            PacketError::BadChecksum,
        ),
        (
            "flipped address",
            with(|v| v[19] ^= 0x80),
            PacketError::BadChecksum,
        ),
        (
            "zeroed checksum",
            with(|v| v[6..8].fill(0)),
            PacketError::BadChecksum,
        ),
        ("zero interval", zero_interval, PacketError::BadInterval),
    ];
    for (name, bytes, want) in cases {
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            Repr::parse(&p, src, MCAST_GROUP).unwrap_err(),
            want,
            "{name}"
        );
    }
}

#[test]
fn reserved_bits_are_ignored_on_receipt_and_cleared_on_emit() {
    let r = keepalived_repr();
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut b, ip("10.0.0.3"), MCAST_GROUP);
    b[4] |= 0xf0;
    let mut p = Packet::new_unchecked(&mut b[..]);
    p.fill_checksum(ip("10.0.0.3"), MCAST_GROUP);
    let p = Packet::new_checked(&b[..]).unwrap();
    assert_eq!(p.reserved(), 0xf);
    let (parsed, _) = Repr::parse(&p, ip("10.0.0.3"), MCAST_GROUP).unwrap();
    assert_eq!(parsed.max_advert_int_cs, 100);
}

#[test]
fn zero_addresses_and_max_values() {
    let r = Repr {
        vrid: 255,
        priority: 0,
        max_advert_int_cs: MAX_ADVERT_INT_CS,
        addrs: vec![],
    };
    let mut b = [0u8; 8];
    assert_eq!(r.emit(&mut b, ip("192.0.2.1"), MCAST_GROUP), 8);
    let p = Packet::new_checked(&b[..]).unwrap();
    let (parsed, _) = Repr::parse(&p, ip("192.0.2.1"), MCAST_GROUP).unwrap();
    assert_eq!(parsed, r);
}

#[test]
fn more_than_255_addresses_are_cut_at_255() {
    let addrs: Vec<Ipv4Addr> = (0..300u32)
        .map(|i| Ipv4Addr::from(0x0a00_0000 + i))
        .collect();
    let r = Repr {
        vrid: 1,
        priority: 100,
        max_advert_int_cs: 100,
        addrs,
    };
    assert_eq!(r.buffer_len(), 8 + 4 * 255);
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut b, ip("192.0.2.1"), MCAST_GROUP);
    let p = Packet::new_checked(&b[..]).unwrap();
    let (parsed, _) = Repr::parse(&p, ip("192.0.2.1"), MCAST_GROUP).unwrap();
    assert_eq!(parsed.addrs[..], r.addrs[..255]);
}

#[test]
#[should_panic(expected = "VRRP emit needs")]
fn emit_into_short_buffer_panics() {
    keepalived_repr().emit(&mut [0u8; 19], ip("10.0.0.3"), MCAST_GROUP);
}

fn arb_repr() -> impl Strategy<Value = Repr> {
    (
        any::<u8>(),
        any::<u8>(),
        1..=MAX_ADVERT_INT_CS,
        prop::collection::vec(any::<u32>().prop_map(Ipv4Addr::from), 0..40),
    )
        .prop_map(|(vrid, priority, max_advert_int_cs, addrs)| Repr {
            vrid,
            priority,
            max_advert_int_cs,
            addrs,
        })
}

fn arb_ip() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

proptest! {
    #[test]
    fn emit_then_parse_round_trips(r in arb_repr(), src in arb_ip(), dst in arb_ip()) {
        let mut buf = vec![0u8; r.buffer_len()];
        let n = r.emit(&mut buf, src, dst);
        prop_assert_eq!(n, buf.len());
        let p = Packet::new_checked(&buf[..]).unwrap();
        let (parsed, kind) = Repr::parse(&p, src, dst).unwrap();
        prop_assert_eq!(parsed, r);
        prop_assert_eq!(kind, ChecksumKind::PseudoHeader);
        // An independent sum over pseudo-header and message agrees.
        let ph = pseudo(src, dst, n as u16);
        prop_assert_eq!(reference_checksum(&[&ph, &buf]), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..1100),
        src in arb_ip(),
        dst in arb_ip(),
    ) {
        if let Ok(p) = Packet::new_checked(&bytes[..]) {
            let _ = p.addrs().count();
            let _ = Repr::parse(&p, src, dst);
        }
        // Unchecked parse re-checks and must not panic either.
        let _ = Repr::parse(&Packet::new_unchecked(&bytes[..]), src, dst);
    }

    #[test]
    fn well_formed_header_with_random_body_never_panics(
        count in any::<u8>(),
        rest in prop::collection::vec(any::<u8>(), 0..1100),
        src in arb_ip(),
    ) {
        let mut bytes = vec![0x31, 1, 100, count, 0, 100, 0, 0];
        bytes.extend_from_slice(&rest);
        let ok = Packet::new_checked(&bytes[..]).is_ok();
        prop_assert_eq!(ok, rest.len() == 4 * usize::from(count));
        let _ = Repr::parse(&Packet::new_unchecked(&bytes[..]), src, MCAST_GROUP);
    }
}
