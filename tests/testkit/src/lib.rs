//! Harness shared by sipfront's integration tests (`tests/`) and benches (`benches/`): they run
//! the real `sipfront` binary against real programs from Debian packages: `sipp` (package
//! `sip-tester`), `kamailio`, `keepalived` and `tcpdump`, on the loopback or in network
//! namespaces.
//!
//! Every external process is held in a [`Proc`] guard that kills it when dropped, so a failing
//! test leaves nothing running; when a test panics, the guards print the tail of each
//! process's log and the [`TestDir`] is kept for inspection. Network namespaces are
//! [`Netns`] guards, deleted on drop.
//!
//! Only std (plus `libc` for `setns(2)`) is used: HTTP/1.0 over `TcpStream` for the admin
//! endpoint, `/proc/net/udp` to see when a program has bound its port, `/usr/bin/kill`
//! (procps) for signals other than SIGKILL.
//!
//! The sipfront binary is only known to the test and bench crates (`CARGO_BIN_EXE_sipfront`):
//! see [`bin`].

pub mod alloc;
pub mod auth;
pub mod backend;
pub mod capture;
pub mod front;
pub mod http;
pub mod kamailio;
pub mod keepalived;
pub mod lan;
pub mod metrics;
pub mod netns;
pub mod ns_front;
pub mod process;
pub mod sip;
pub mod sipp;
pub mod udp;

pub use auth::*;
pub use backend::*;
pub use capture::*;
pub use front::*;
pub use http::*;
pub use kamailio::*;
pub use keepalived::*;
pub use lan::*;
pub use metrics::*;
pub use netns::*;
pub use ns_front::*;
pub use process::*;
pub use sip::*;
pub use sipp::*;
pub use udp::*;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static BIN: OnceLock<PathBuf> = OnceLock::new();

/// Tells the harness where the sipfront binary under test is:
/// `testkit::set_bin(env!("CARGO_BIN_EXE_sipfront"))`. Only needed where cargo does not pass
/// `CARGO_BIN_EXE_sipfront` in the environment when it runs the test (see [`bin`]).
pub fn set_bin(path: impl Into<PathBuf>) {
    let path = path.into();
    let set = BIN.get_or_init(|| path.clone());
    assert_eq!(*set, path, "testkit::set_bin called with two binaries");
}

/// The sipfront binary under test: the one given to [`set_bin`], else
/// `CARGO_BIN_EXE_sipfront` from the environment, which cargo sets when it runs an
/// integration test or bench (as it does at build time for `env!`).
pub fn bin() -> &'static Path {
    BIN.get_or_init(|| {
        std::env::var_os("CARGO_BIN_EXE_sipfront")
            .map(PathBuf::from)
            .expect(
                "CARGO_BIN_EXE_sipfront is not set: run through cargo, or call \
                 testkit::set_bin(env!(\"CARGO_BIN_EXE_sipfront\")) first",
            )
    })
}

/// The sipfront a bench runs: `SIPFRONT_BIN` when set, to compare another build (A/B)
/// in the same harness, else `built` (the bench's `env!("CARGO_BIN_EXE_sipfront")`).
pub fn bench_bin(built: &str) -> PathBuf {
    std::env::var_os("SIPFRONT_BIN").map_or_else(|| built.into(), PathBuf::from)
}

/// A path in the sipfront checkout (`tests/sipp/uas.xml`, `deploy/kamailio/kamailio.cfg`).
pub fn repo_path(rel: &str) -> PathBuf {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    // tests/testkit -> the checkout
    testkit.ancestors().nth(2).expect("checkout root").join(rel)
}
