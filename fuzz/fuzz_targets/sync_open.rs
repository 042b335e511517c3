//! Fuzz `sipfront::sync::message::open`, what every datagram from the sync peer goes
//! through. The fuzzer's bytes are the body and the target appends the right tag (HMAC
//! with the test key), so the decoder behind the tag check sees arbitrary input, as it
//! would from a peer holding the key. It must never panic; an envelope that opens seals
//! and opens again to the same envelope; the body alone (no tag) never opens.
//!
//! Run from the crate root (nightly, or stable with RUSTC_BOOTSTRAP=1):
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run sync_open -- -max_total_time=60
#![no_main]

use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use sipfront::sync::Key;
use sipfront::sync::message::{MAX_DATAGRAM, open, seal};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let key = Key::new(KEY);
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(KEY).expect("any key length");
    m.update(data);
    let mut datagram = data.to_vec();
    datagram.extend_from_slice(&m.finalize().into_bytes());
    if let Ok(env) = open(&key, &datagram) {
        let mut out = [0u8; MAX_DATAGRAM];
        if let Ok(n) = seal(&key, &env, &mut out) {
            assert_eq!(
                open(&key, &out[..n]).ok(),
                Some(env),
                "seal/open round trip"
            );
        }
    }
    assert!(open(&key, data).is_err(), "an untagged body opened");
});
