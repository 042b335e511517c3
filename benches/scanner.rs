//! Throughput of the hot-path SIP scanner on typical datagrams.
//!
//! `cargo bench --bench scanner`; criterion reports time per scan and bytes/s.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sipfront::sip::{Scan, scan};

const INVITE_SDP: &[u8] = include_bytes!("../tests/corpus/sip/sipp_uac_invite.sip");
const OK_REGISTER: &[u8] = include_bytes!("../tests/corpus/sip/kamailio_200_register.sip");
const LARGE_INVITE: &[u8] = include_bytes!("../tests/corpus/sip/pbx_invite_large.sip");
const KEEPALIVE: &[u8] = b"\r\n\r\n";

fn bench_scan(c: &mut Criterion) {
    let cases: [(&str, &[u8]); 4] = [
        ("invite_sdp", INVITE_SDP),
        ("200_register", OK_REGISTER),
        ("keepalive", KEEPALIVE),
        ("invite_1_4kb", LARGE_INVITE),
    ];
    let mut group = c.benchmark_group("scan");
    for (name, msg) in cases {
        // Sanity: the bench measures the successful path, not an early error.
        match scan(msg) {
            Scan::Sip(_) | Scan::Keepalive => {}
            Scan::Invalid(e) => panic!("{name}: {e}"),
        }
        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_function(format!("{name}/{}B", msg.len()), |b| {
            b.iter(|| scan(black_box(msg)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
