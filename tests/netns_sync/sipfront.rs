//! sipfront hosts of the pair in their namespaces: config, admin API, logs.

#![allow(dead_code)]

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
    /// Extra TOML appended verbatim (`[timeouts]`, `[limits]` ...).
    pub extra: String,
}

impl SfSpec {
    pub fn toml(&self) -> String {
        let mut s = format!(
            "[listen]\nsip = [\"{VIP}:5060\"]\nrelay = \"{VIP}\"\nrelay_ports = \"{}\"\n",
            self.relay_ports
        );
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

/// One flow as listed by `GET /api/v1/flows`.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowRow {
    pub client: String,
    pub relay_port: u16,
    pub backend: String,
    pub registered_secs: Option<f64>,
    pub idle_secs: f64,
    pub age_secs: f64,
}

impl FlowRow {
    pub fn key(&self) -> (String, u16, String) {
        (self.client.clone(), self.relay_port, self.backend.clone())
    }
}

impl NsSipfront {
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

    /// Every flow (`/api/v1/flows?limit=1000000`): (total, rows).
    pub fn flows(&mut self) -> (usize, Vec<FlowRow>) {
        self.flows_query("limit=1000000")
    }

    /// Flows of one client.
    pub fn flows_of(&mut self, client: &str) -> Vec<FlowRow> {
        self.flows_query(&format!("client={client}&limit=10")).1
    }

    fn flows_query(&mut self, query: &str) -> (usize, Vec<FlowRow>) {
        let body = match self.get(&format!("/api/v1/flows?{query}")) {
            Some((200, b)) => b,
            other => {
                self.proc.assert_running();
                panic!("{}: GET /api/v1/flows?{query}: {other:?}", self.name)
            }
        };
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{}: flows not JSON ({e}): {body}", self.name));
        let total = v["total"].as_u64().unwrap_or(0) as usize;
        let rows = v["flows"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| FlowRow {
                        client: f["client"].as_str().unwrap_or("").to_string(),
                        relay_port: f["relay_port"].as_u64().unwrap_or(0) as u16,
                        backend: f["backend"].as_str().unwrap_or("").to_string(),
                        registered_secs: f["registered_secs"].as_f64(),
                        idle_secs: f["idle_secs"].as_f64().unwrap_or(-1.0),
                        age_secs: f["age_secs"].as_f64().unwrap_or(-1.0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        (total, rows)
    }

    /// Waits until this host holds a full table from its peer
    /// (`sipfront_sync_last_full_timestamp_seconds` set) and hears it.
    pub fn wait_synced(&mut self, timeout: Duration) {
        let mut text = String::new();
        let ok = wait_until(timeout, || {
            text = self.metrics();
            metric(&text, "sipfront_sync_last_full_timestamp_seconds", &[]) > 0.0
                && metric(&text, "sipfront_sync_peer_up", &[]) == 1.0
        });
        assert!(
            ok,
            "{}: no full table from the sync peer within {timeout:?}: {:?}; log:\n{}",
            self.name,
            sync_metrics(&text),
            self.log_tail(30)
        );
    }

    /// `sipfront_sync_dropped_total` by reason, non-zero only.
    pub fn sync_drops(&mut self) -> std::collections::BTreeMap<String, f64> {
        parse_metrics(&self.metrics())
            .into_iter()
            .filter(|s| s.name == "sipfront_sync_dropped_total" && s.value != 0.0)
            .map(|s| (s.labels.get("reason").cloned().unwrap_or_default(), s.value))
            .collect()
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_text().contains(needle))
    }
}

/// The `sipfront_sync_*` samples of a metrics text, for failure messages.
pub fn sync_metrics(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("sipfront_sync") || l.starts_with("sipfront_flows "))
        .map(str::to_string)
        .collect()
}
