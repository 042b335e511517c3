//! Kamailio, sipp (and its message traces), plain UDP backends and load clients in
//! namespaces.

use super::*;

/// Starts deploy/kamailio/kamailio.cfg in `host`'s namespace on `host.addr:5060` with the
/// extra `-A` defines, waits until it is bound and its ctl socket exists.
pub fn start_kamailio(dir: &TestDir, host: &Host, name: &str, defines: &[String]) -> Kamailio {
    let kdir = dir.join(name);
    fs::create_dir_all(&kdir).expect("create kamailio dir");
    let ctl = format!("unix:{}", kdir.join("ctl").display());
    let mut cmd = host.ns.command("kamailio");
    cmd.args(["-DD", "-E", "-f"])
        .arg(kamailio_cfg())
        .arg("-P")
        .arg(kdir.join("kamailio.pid"))
        .arg("-Y")
        .arg(&kdir)
        .args(["-m", "32", "-M", "4"])
        .args(["-A", &format!("SIP_IP={}", host.addr)])
        .args(["-A", "SIP_PORT=5060"])
        .args(["-A", &format!("CTL_SOCK=\"{ctl}\"")]);
    for d in defines {
        cmd.args(["-A", d]);
    }
    let mut proc = Proc::spawn_group(name, &mut cmd, &kdir.join("kamailio.log"));
    let pid = proc.pid();
    let ok = wait_until(Duration::from_secs(20), || {
        proc.assert_running();
        udp_bound_in(pid, 5060)
    });
    assert!(
        ok,
        "{name}: kamailio did not bind 5060: {}",
        proc.log_tail(30)
    );
    let sock = kdir.join("ctl");
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()),
        "kamailio {name}: no ctl socket at {}",
        sock.display()
    );
    Kamailio {
        proc,
        dir: kdir,
        ctl,
        port: 5060,
    }
}

/// The sent SIP requests with `method` in a sipp message trace, as distinct
/// (Call-ID, CSeq) transactions (retransmissions count once).
pub fn sent_transactions(trace: &str, method: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    // sipp's -trace_msg separates messages with "----" lines and announces each with
    // "UDP message sent (N bytes):" / "UDP message received [N] bytes :".
    for block in trace.split("\n----") {
        let Some(sent) = block.find("message sent") else {
            continue;
        };
        let msg = block[sent..]
            .split_once('\n')
            .map(|(_, m)| m.trim_start())
            .unwrap_or("");
        if !msg.starts_with(&format!("{method} ")) {
            continue;
        }
        let msg = msg.replace("\r\n", "\n").replace('\n', "\r\n");
        if let (Some(c), Some(s)) = (sip_header(&msg, "Call-ID"), sip_header(&msg, "CSeq")) {
            out.insert((c, s));
        }
    }
    out
}

/// Status codes of the responses to `method` requests received in a sipp message trace.
pub fn received_responses(trace: &str, method: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for block in trace.split("\n----") {
        let Some(at) = block.find("message received") else {
            continue;
        };
        let msg = block[at..]
            .split_once('\n')
            .map(|(_, m)| m.trim_start())
            .unwrap_or("");
        let msg = msg.replace("\r\n", "\n").replace('\n', "\r\n");
        let Some(code) = sip_status(&msg) else {
            continue;
        };
        if sip_header(&msg, "CSeq").is_some_and(|c| c.ends_with(&format!(" {method}"))) {
            out.push(code);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Plain UDP backends and clients in a namespace
// ---------------------------------------------------------------------------------------------

/// A SIP "server" made of one UDP socket in a namespace: a thread answers every request
/// (health probes included) with 200 and ignores responses.
pub struct UdpBackend {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub requests: Arc<AtomicU64>,
}

impl UdpBackend {
    pub fn start(host: &Host, port: u16) -> UdpBackend {
        let addr = SocketAddr::from((host.addr, port));
        let sock = host
            .ns
            .enter(|| UdpSocket::bind(addr))
            .expect("bind backend");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4 << 20);
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (stop2, req2) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let d = &buf[..n];
                if d.starts_with(b"SIP/2.0 ") || n < 8 {
                    continue;
                }
                req2.fetch_add(1, Ordering::Relaxed);
                let _ = sock.send_to(&sip_reply_to(d, "200 OK"), from);
            }
        });
        UdpBackend {
            stop,
            thread: Some(thread),
            requests,
        }
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `n` UDP sockets bound in `host`'s namespace on `host.addr` (kernel-chosen ports): one
/// client flow each at sipfront.
pub fn client_sockets(host: &Host, n: usize) -> Vec<UdpSocket> {
    let ip = host.addr;
    host.ns.enter(move || {
        (0..n)
            .map(|i| {
                let s = UdpSocket::bind((ip, 0))
                    .unwrap_or_else(|e| panic!("bind client socket #{i}: {e}"));
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect()
    })
}

/// A SIP OPTIONS from `local` to sipfront's VIP, one transaction per `tag`.
pub fn options_request(local: SocketAddr, tag: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:{VIP}:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{tag};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:load@{VIP}>;tag=f-{tag}\r\n\
         To: <sip:{VIP}>\r\n\
         Call-ID: {tag}@sync-test\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// True if a 200 arrived on non-blocking `s` (drains what is queued).
pub fn got_200(s: &UdpSocket) -> bool {
    let mut buf = [0u8; 2048];
    let mut ok = false;
    while let Ok((n, _)) = s.recv_from(&mut buf) {
        ok |= buf[..n].starts_with(b"SIP/2.0 200");
    }
    ok
}
