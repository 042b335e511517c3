//! sipfront hosts of the pair in their namespaces: config, admin API, logs.

use super::*;

/// One host of the sipfront pair.
#[derive(Debug, Clone)]
pub struct SfSpec {
    /// Own LAN address (sync listen), and the peer's.
    pub own: Ipv4Addr,
    pub peer: Ipv4Addr,
    /// VRRP priority; `None`: no `[vrrp]` section.
    pub priority: Option<u8>,
    pub backends: Vec<(String, String)>,
    pub key_file: PathBuf,
    pub relay_ports: String,
    /// Prefix mode: `relay_prefix` on relay port 5062 (then `relay_ports` is unused).
    pub relay_prefix: Option<String>,
    /// Extra TOML appended verbatim (`[timeouts]`, `[limits]` ...).
    pub extra: String,
}

impl SfSpec {
    pub fn toml(&self) -> String {
        let mut s = match &self.relay_prefix {
            Some(p) => format!(
                "[listen]\nsip = [\"{VIP}:5060\"]\nrelay_prefix = \"{p}\"\nrelay_port = 5062\n"
            ),
            None => format!(
                "[listen]\nsip = [\"{VIP}:5060\"]\nrelay = \"{VIP}\"\nrelay_ports = \"{}\"\n",
                self.relay_ports
            ),
        };
        for (name, addr) in &self.backends {
            s.push_str(&format!(
                "\n[[backend]]\nname = \"{name}\"\naddr = \"{addr}\"\n"
            ));
        }
        s.push_str(&format!("\n[admin]\nlisten = \"{ADMIN}\"\n"));
        s.push_str("\n[health]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n");
        if let Some(p) = self.priority {
            // 100 ms adverts: Master_Down ~ 0.35 s; faster timers flap on a loaded 2-core
            // machine and these tests are about sync, not takeover speed.
            s.push_str(&format!(
                "\n[vrrp]\ninterface = \"eth0\"\nvrid = 51\npriority = {p}\n\
                 advert_interval = \"100ms\"\nvips = [\"{VIP_CIDR}\"]\ntrack_backends = 0\n"
            ));
        }
        s.push_str(&format!(
            "\n[sync]\nlisten = \"{}:{SYNC_PORT}\"\npeer = \"{}:{SYNC_PORT}\"\nkey_file = \"{}\"\n",
            self.own,
            self.peer,
            self.key_file.display()
        ));
        s.push('\n');
        s.push_str(&self.extra);
        s
    }
}

/// Writes the shared sync key file into the test directory; returns its path.
pub fn write_key(dir: &TestDir) -> PathBuf {
    let p = dir.join("sync.key");
    fs::write(&p, format!("{SYNC_KEY}\n")).expect("write key file");
    // sipfront refuses a key file that group or others can read or write.
    fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod 600 key file");
    p
}

/// Writes `NAME.toml` from `spec`, starts sipfront in `host`'s namespace (log
/// `NAME.log`) and waits until its admin endpoint answers and its SIP port is bound.
pub fn start_spec(dir: &TestDir, host: &Host, name: &str, spec: &SfSpec) -> NsSipfront {
    NsSipfront::launch(
        dir,
        host,
        name,
        &spec.toml(),
        Duration::from_secs(20),
        "",
        |_| true,
    )
}
