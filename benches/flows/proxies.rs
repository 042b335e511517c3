//! The proxies beside sipfront in the latency phase: the load bench's bare recv/send
//! forwarder (benches/load/bare.rs, run as this bench binary re-executed with
//! `bare::ENV` set) and nginx stream UDP. Both open one upstream socket per client
//! address and port, and relay a backend's replies to the client from that socket, so
//! the stub backends answer each datagram's source address (they do: `send_to(from)`).
//! A proxy is ready (its UDP port bound) when `start` returns; dropping it kills it by
//! pid.

use std::fs::{self, File};
use std::net::SocketAddrV4;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::bare;
use crate::procfs;

pub const NGINX: &str = "/usr/sbin/nginx";
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sipfront,
    Bare,
    Nginx,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Sipfront, Kind::Bare, Kind::Nginx];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Sipfront => "sipfront",
            Kind::Bare => "bare",
            Kind::Nginx => "nginx",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Sipfront => "sipfront",
            Kind::Bare => "bare forwarder",
            Kind::Nginx => "nginx stream UDP",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Call-ID tag letters of its via and direct requests: distinct per proxy, so a
    /// reply can only ever count for the path that asked.
    pub fn tags(self) -> (char, char) {
        match self {
            Kind::Sipfront => ('V', 'D'),
            Kind::Bare => ('B', 'b'),
            Kind::Nginx => ('N', 'n'),
        }
    }
}

/// Why nginx stream UDP cannot run here, if it cannot.
pub fn nginx_missing() -> Option<String> {
    [NGINX, NGINX_STREAM_MODULE]
        .into_iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} missing (apt-get install nginx libnginx-mod-stream)"))
}

/// nginx as the load bench runs it (benches/load/nginx.conf): one process, no master,
/// sessions keyed by client address and port, hashed onto the two backends. Each UDP
/// session takes two connections (client side, upstream socket).
fn nginx_conf(
    dir: &Path,
    listen: SocketAddrV4,
    backends: [SocketAddrV4; 2],
    flows: usize,
) -> String {
    let dir = dir.display();
    format!(
        "# Written by benches/flows.rs (after benches/load/nginx.conf).
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
load_module {NGINX_STREAM_MODULE};

events {{
    worker_connections {conns};
}}

stream {{
    upstream stubs {{
        hash $remote_addr$remote_port consistent;
        server {a};
        server {b};
    }}

    server {{
        listen {listen} udp;
        proxy_pass stubs;
        # proxy_responses unset: every reply of a session gets through. Sessions
        # outlive the whole bench.
        proxy_timeout 1h;
    }}
}}
",
        conns = 2 * flows + 64,
        a = backends[0],
        b = backends[1],
    )
}

pub struct Proxy {
    pub kind: Kind,
    child: Child,
    log: PathBuf,
    error_log: Option<PathBuf>,
}

impl Proxy {
    /// Starts `kind` (bare or nginx) on `addr` in front of `backends`, sized for `flows`
    /// sessions, and waits (bounded) until its port is bound.
    pub fn start(
        kind: Kind,
        addr: SocketAddrV4,
        backends: [SocketAddrV4; 2],
        flows: usize,
        dir: &Path,
    ) -> Result<Proxy, String> {
        let dir = dir.join(kind.name());
        fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let log = dir.join("proxy.log");
        let (mut cmd, error_log) = match kind {
            Kind::Bare => {
                let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
                let mut cmd = Command::new(exe);
                cmd.env(bare::ENV, format!("{addr},{},{}", backends[0], backends[1]));
                (cmd, None)
            }
            Kind::Nginx => {
                if let Some(why) = nginx_missing() {
                    return Err(why);
                }
                let conf = dir.join("nginx.conf");
                fs::write(&conf, nginx_conf(&dir, addr, backends, flows))
                    .map_err(|e| format!("write {}: {e}", conf.display()))?;
                let error_log = dir.join("error.log");
                let mut cmd = Command::new(NGINX);
                cmd.arg("-e")
                    .arg(&error_log)
                    .arg("-c")
                    .arg(&conf)
                    .arg("-p")
                    .arg(&dir);
                (cmd, Some(error_log))
            }
            Kind::Sipfront => return Err("sipfront is started by sipfront.rs".into()),
        };
        let out = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        // The proxy gets SIGTERM if the bench dies without running its destructors.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", kind.label()))?;
        let mut p = Proxy {
            kind,
            child,
            log,
            error_log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(format!("{} exited ({st}):\n{}", kind.label(), p.log_tail()));
            }
            if !procfs::udp_ports_taken(&[*addr.ip()], (addr.port(), addr.port())).is_empty() {
                return Ok(p);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} has not bound {addr} after 10 s:\n{}",
                    kind.label(),
                    p.log_tail()
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its output (and nginx's error log).
    pub fn log_tail(&self) -> String {
        let mut text = fs::read_to_string(&self.log).unwrap_or_default();
        if let Some(e) = &self.error_log {
            text += &fs::read_to_string(e).unwrap_or_default();
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Our own child, by pid (Child::kill), then reaped. nginx runs without a master
        // (master_process off), so there is no worker to leave behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
