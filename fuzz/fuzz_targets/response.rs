//! Fuzz `sipfront::sip::response::write_response`, what answers a hostile request
//! with a 503 on the forwarding path: it must never panic; what it writes is the
//! same whatever the buffer's size, once it fits (a buffer of three times the
//! request always does: a 3-byte `v:` line is the largest growth, to 7 bytes); the
//! scanner reads it as a 503 with the request's Call-ID when the request has one.
//!
//! Run from the crate root (nightly, or stable with RUSTC_BOOTSTRAP=1):
//!   mkdir -p fuzz/corpus/response && cp tests/corpus/sip/*.sip fuzz/corpus/response/
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run response -- -dict=fuzz/scan.dict -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipfront::sip::response::{Unwritable, write_response};
use sipfront::sip::{Scan, scan};

fuzz_target!(|data: &[u8]| {
    let extra = [("Retry-After", 30u32)];
    let write = |buf: &mut [u8]| {
        write_response(
            data,
            503,
            "Service Unavailable",
            Some("f"),
            &extra,
            None,
            buf,
        )
    };
    let mut small = vec![0u8; data.len()];
    let mut big = vec![0u8; data.len() * 3 + 512];
    let fits = write(&mut small);
    let all = write(&mut big);
    match (fits, all) {
        (Ok(n), Ok(m)) => {
            assert_eq!(n, m);
            assert_eq!(small[..n], big[..m]);
        }
        (Err(Unwritable::TooLarge), Ok(_)) => {}
        (Err(Unwritable::NoStartLine), Err(Unwritable::NoStartLine)) => {}
        other => panic!("{other:?}"),
    }
    if let Ok(m) = all {
        let out = &big[..m];
        assert!(out.starts_with(b"SIP/2.0 503 Service Unavailable\r\n"));
        assert!(out.ends_with(b"\r\n\r\n"));
        if let (Scan::Sip(req), Scan::Sip(resp)) = (scan(data), scan(out)) {
            assert_eq!(resp.status(), Some(503));
            if !req.call_id.iter().any(|b| b.is_ascii_whitespace()) {
                assert_eq!(req.call_id, resp.call_id);
            }
        }
    }
});
