//! `--listing`: while a rate's latency is measured, one thread asks sipfront's admin
//! API for `/api/v1/flows?limit=100000` back to back, as an operator's script or a
//! dashboard might: what a listing costs the datagrams forwarded meanwhile shows in
//! sipfront's via latency (its direct paths and the other proxies' are timed in other
//! slices, with the same listings going on).

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Lister {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Listed>,
}

/// Listings answered, the rows of the last, and the longest answer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Listed {
    pub answered: u64,
    pub failed: u64,
    pub rows: usize,
    pub longest: Duration,
}

impl Lister {
    pub fn start(admin: SocketAddrV4) -> Lister {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut l = Listed::default();
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                match list(admin) {
                    Ok(rows) => {
                        l.answered += 1;
                        l.rows = rows;
                        l.longest = l.longest.max(t.elapsed());
                    }
                    Err(_) => {
                        l.failed += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            l
        });
        Lister { stop, thread }
    }

    pub fn stop(self) -> Listed {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// One listing; the rows it had (its `"client"` fields).
fn list(admin: SocketAddrV4) -> std::io::Result<usize> {
    match testkit::http_get(admin.into(), "/api/v1/flows?limit=100000")? {
        (200, body) => Ok(body.matches("\"client\":").count()),
        (code, _) => Err(std::io::Error::other(format!("answered {code}"))),
    }
}
