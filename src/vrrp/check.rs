//! The RFC 5798 §7.1 receive checks that [`Repr::parse`](super::Repr::parse) leaves
//! to the receiver: IP TTL, VRID, our own packets, and the address list.

use std::net::Ipv4Addr;

use super::machine::{PRIORITY_OWNER, Settings};
use super::packet::{Repr, TTL};

/// Why a received advertisement is not for the machine (RFC 5798 §7.1). `as_str`
/// values are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Discard {
    #[error("IP TTL is not 255")]
    BadTtl,
    #[error("advertisement for another VRID")]
    OtherVrid,
    #[error("our own advertisement looped back")]
    OwnAdvert,
    #[error("address list differs from ours and the sender is not the owner")]
    AddrMismatch,
}

impl Discard {
    pub fn as_str(self) -> &'static str {
        match self {
            Discard::BadTtl => "bad_ttl",
            Discard::OtherVrid => "other_vrid",
            Discard::OwnAdvert => "own_advert",
            Discard::AddrMismatch => "addr_mismatch",
        }
    }
}

/// The RFC 5798 §7.1 receive checks left after [`Repr::parse`]: TTL 255, our VRID,
/// not our own packet, and the same VIPs (in any order) unless the sender is the
/// address owner.
pub fn check_advert(
    settings: &Settings,
    src: Ipv4Addr,
    ttl: u8,
    repr: &Repr,
) -> Result<(), Discard> {
    if ttl != TTL {
        return Err(Discard::BadTtl);
    }
    if repr.vrid != settings.vrid {
        return Err(Discard::OtherVrid);
    }
    if src == settings.primary_ip {
        return Err(Discard::OwnAdvert);
    }
    let same = repr.addrs.len() == settings.vips.len()
        && settings.vips.iter().all(|v| repr.addrs.contains(v));
    if !same && repr.priority != PRIORITY_OWNER {
        return Err(Discard::AddrMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 1, 0, last)
    }

    fn settings() -> Settings {
        Settings {
            vrid: 51,
            priority: 100,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary_ip: ip(1),
            accept_mode: false,
            vips: vec![VIP],
        }
    }

    fn advert(priority: u8, interval_cs: u16) -> Repr {
        Repr {
            vrid: 51,
            priority,
            max_advert_int_cs: interval_cs,
            addrs: vec![VIP],
        }
    }

    /// (name, source, TTL, advert, verdict)
    type Row = (&'static str, Ipv4Addr, u8, Repr, Result<(), Discard>);

    #[test]
    fn check_advert_table() {
        let s = settings();
        let other = Ipv4Addr::new(203, 0, 113, 11);
        let rows: Vec<Row> = vec![
            ("ok", ip(2), 255, advert(100, 100), Ok(())),
            ("ttl", ip(2), 254, advert(100, 100), Err(Discard::BadTtl)),
            (
                "vrid",
                ip(2),
                255,
                Repr {
                    vrid: 1,
                    ..advert(100, 100)
                },
                Err(Discard::OtherVrid),
            ),
            ("own", ip(1), 255, advert(100, 100), Err(Discard::OwnAdvert)),
            (
                "vips differ",
                ip(2),
                255,
                Repr {
                    addrs: vec![other],
                    ..advert(100, 100)
                },
                Err(Discard::AddrMismatch),
            ),
            (
                "no vips",
                ip(2),
                255,
                Repr {
                    addrs: vec![],
                    ..advert(100, 100)
                },
                Err(Discard::AddrMismatch),
            ),
            (
                "owner may differ",
                ip(2),
                255,
                Repr {
                    addrs: vec![other],
                    ..advert(255, 100)
                },
                Ok(()),
            ),
        ];
        for (name, src, ttl, repr, want) in rows {
            assert_eq!(check_advert(&s, src, ttl, &repr), want, "{name}");
        }
        let two = Settings {
            vips: vec![VIP, other],
            ..s
        };
        let swapped = Repr {
            addrs: vec![other, VIP],
            ..advert(100, 100)
        };
        assert_eq!(
            check_advert(&two, ip(2), 255, &swapped),
            Ok(()),
            "order does not matter"
        );
    }
}
