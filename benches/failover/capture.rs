//! A packet socket in the client's namespace that timestamps the frames a failover is
//! made of: VRRP adverts (who advertised, with what priority) and gratuitous ARPs (which
//! MAC claimed which address). With them a gap splits into "until the backup took over"
//! and "until the client's traffic went to it".

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testkit::spawn_in_netns;

#[derive(Debug, Clone)]
pub enum Frame {
    /// A VRRP advert from `src` (dotted IPv4).
    Advert { src: String, priority: u8 },
    /// An ARP with sender address == target address, from `mac`.
    Garp { mac: String, addr: String },
}

pub struct Capture {
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Vec<(Instant, Frame)>>>,
    thread: Option<JoinHandle<()>>,
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ipv4(b: &[u8]) -> String {
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

/// Parses an Ethernet frame.
fn parse(f: &[u8]) -> Option<Frame> {
    let ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let p = f.get(14..)?;
    match ethertype {
        0x0806 if p.len() >= 28 => {
            let (spa, tpa) = (&p[14..18], &p[24..28]);
            (spa == tpa).then(|| Frame::Garp {
                mac: mac(&p[8..14]),
                addr: ipv4(spa),
            })
        }
        0x0800 if p.len() >= 20 && p[9] == 112 => {
            let ihl = ((p[0] & 0x0f) as usize) * 4;
            let vrrp = p.get(ihl..)?;
            Some(Frame::Advert {
                src: ipv4(&p[12..16]),
                priority: *vrrp.get(2)?,
            })
        }
        _ => None,
    }
}

impl Capture {
    pub fn start(ns_path: String) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let (s, fr) = (stop.clone(), frames.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = spawn_in_netns(ns_path, move || {
            let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
            // SAFETY: plain socket(2); the fd is owned right after.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: fd is a fresh descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: setsockopt with a timeval of the right size.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                );
            }
            let _ = ready_tx.send(());
            let mut buf = vec![0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                // SAFETY: recv into a buffer we own, with its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    continue;
                }
                let at = Instant::now();
                if let Some(f) = parse(&buf[..n as usize]) {
                    fr.lock().unwrap().push((at, f));
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("capture thread did not start");
        Capture {
            stop,
            frames,
            thread: Some(thread),
        }
    }

    /// Frames seen in `[from, to)`.
    pub fn between(&self, from: Instant, to: Instant) -> Vec<(Instant, Frame)> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .cloned()
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
