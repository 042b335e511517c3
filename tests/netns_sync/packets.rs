//! `tcpdump -w` captures, a pcap reader, and datagrams with a forged source address.

use super::*;

/// `tcpdump -i eth0 -U -w FILE FILTER` in a namespace (the raw datagrams, for replays).
pub struct PcapCapture {
    pub proc: Proc,
    pub file: PathBuf,
}

impl PcapCapture {
    pub fn start(dir: &TestDir, host: &Host, name: &str, filter: &str) -> PcapCapture {
        let file = dir.join(&format!("{name}.pcap"));
        let log = dir.join(&format!("{name}.log"));
        let mut cmd = host.ns.command("tcpdump");
        cmd.args(["-i", "eth0", "-nn", "-U", "--immediate-mode", "-w"])
            .arg(&file)
            .arg(filter);
        let proc = spawn_tcpdump(name, &mut cmd, &log);
        PcapCapture { proc, file }
    }

    /// Stops tcpdump (SIGINT: it flushes) and returns the UDP datagrams captured.
    pub fn stop(mut self) -> Vec<UdpDatagram> {
        stop_tcpdump(&mut self.proc);
        read_pcap(&self.file)
    }
}

/// One UDP datagram from a capture (its addresses are in the capture filter).
#[derive(Debug, Clone)]
pub struct UdpDatagram {
    pub payload: Vec<u8>,
}

/// The IPv4/UDP datagrams of a pcap file with Ethernet link type (others skipped).
pub fn read_pcap(path: &Path) -> Vec<UdpDatagram> {
    let data = fs::read(path).unwrap_or_default();
    if data.len() < 24 {
        return Vec::new();
    }
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let le = matches!(magic, 0xa1b2_c3d4 | 0xa1b2_3c4d);
    let u32_at = |b: &[u8], i: usize| {
        let a: [u8; 4] = b[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= data.len() {
        let incl = u32_at(&data, i + 8) as usize;
        let start = i + 16;
        let end = start + incl;
        if end > data.len() {
            break;
        }
        let frame = &data[start..end];
        i = end;
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 17 || ip.len() < ihl + 8 {
            continue;
        }
        let udp = &ip[ihl..];
        let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        if ulen < 8 || ulen > udp.len() {
            continue;
        }
        out.push(UdpDatagram {
            payload: udp[8..ulen].to_vec(),
        });
    }
    out
}

/// Sends one UDP datagram with a forged source address from `host`'s namespace through a
/// raw socket (`IPPROTO_RAW`, the IPv4 header written here; UDP checksum 0 = none): what an
/// attacker on the LAN can do to pose as the sync peer.
pub fn send_spoofed(host: &Host, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut pkt = Vec::with_capacity(total);
    pkt.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    pkt[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    pkt.extend_from_slice(&src.ip().octets());
    pkt.extend_from_slice(&dst.ip().octets());
    pkt.extend_from_slice(&src.port().to_be_bytes());
    pkt.extend_from_slice(&dst.port().to_be_bytes());
    pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(payload);
    let rc = host.ns.enter(move || {
        // SAFETY: plain socket calls on a descriptor we own and close; the address is a
        // valid sockaddr_in of the given length.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(dst.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            let n = libc::sendto(
                fd,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n < 0 { Err(err) } else { Ok(()) }
        }
    });
    rc.unwrap_or_else(|e| panic!("raw send {src} -> {dst}: {e}"));
}

/// Sends one ordinary UDP datagram from `host`'s own address.
pub fn send_plain(host: &Host, dst: SocketAddrV4, payload: &[u8]) {
    let from = SocketAddr::from((host.addr, 0));
    let payload = payload.to_vec();
    host.ns.enter(move || {
        let s = UdpSocket::bind(from).unwrap_or_else(|e| panic!("bind {from}: {e}"));
        s.send_to(&payload, dst).expect("send");
    });
}

/// Milliseconds since `t0`, for progress lines.
pub fn ms(t0: Instant) -> u128 {
    t0.elapsed().as_millis()
}
