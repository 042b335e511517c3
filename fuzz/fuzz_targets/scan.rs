//! Fuzz `sipfront::sip::scan`: it must never panic, must be deterministic, and every slice it
//! returns must lie inside the input.
//!
//! Run from the crate root (nightly, or stable with RUSTC_BOOTSTRAP=1):
//!   mkdir -p fuzz/corpus/scan && cp tests/corpus/sip/*.sip fuzz/corpus/scan/
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run scan -- -dict=fuzz/scan.dict -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipfront::sip::{Kind, Scan, scan};

/// `s` is a non-empty sub-slice of `buf` (by address).
fn inside(buf: &[u8], s: &[u8]) -> bool {
    let start = buf.as_ptr() as usize;
    let p = s.as_ptr() as usize;
    !s.is_empty() && p >= start && p + s.len() <= start + buf.len()
}

fuzz_target!(|data: &[u8]| {
    let result = scan(data);
    if let Scan::Sip(v) = result {
        assert!(inside(data, v.call_id), "call_id outside input");
        if let Kind::Request { method, uri } = v.kind {
            assert!(inside(data, method), "method outside input");
            assert!(inside(data, uri), "uri outside input");
        }
        if let Some((_, m)) = v.cseq {
            assert!(inside(data, m), "cseq method outside input");
        }
        if let Kind::Response { code } = v.kind {
            assert!((100..=699).contains(&code), "status code {code}");
        }
        assert_eq!(v.granted_expiry(), v.contact_expires.or(v.expires));
    }
    assert_eq!(scan(data), result, "scan is not deterministic");
});
