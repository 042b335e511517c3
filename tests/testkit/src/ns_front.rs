//! sipfront in a network namespace, as one host of a VRRP (and state-sync) pair in a
//! [`Lan`](crate::lan::Lan): its config, the running instance, its `sipfront_vrrp_state`,
//! `vrrp transition` log lines, flow table and sync metrics.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::bin;
use crate::http::http_get;
use crate::lan::{Host, VIP, VIP_CIDR};
use crate::metrics::{metric, parse_metrics};
use crate::netns::{in_netns, udp_bound_in};
use crate::process::{Proc, TestDir, strip_ansi, wait_until};
use crate::sipp::Sipp;

/// Writes `toml` to `NAME.toml`, runs sipfront with it in `host`'s namespace and waits
/// up to 15 s for it to exit, which it must, with a failure; returns its log.
pub fn start_expecting_failure(dir: &TestDir, host: &Host, name: &str, toml: &str) -> String {
    let config = dir.join(&format!("{name}.toml"));
    fs::write(&config, toml).expect("write sipfront config");
    let mut cmd = host.ns.command(bin());
    cmd.args(["run", "-c"]).arg(&config).env("NO_COLOR", "1");
    let mut proc = Proc::spawn(name, &mut cmd, &dir.join(&format!("{name}.log")));
    let mut exit = None;
    assert!(
        wait_until(Duration::from_secs(15), || {
            exit = proc.try_wait();
            exit.is_some()
        }),
        "{name} kept running; log:\n{}",
        proc.log_text()
    );
    assert!(!exit.unwrap().success(), "{name} exit: {exit:?}");
    proc.log_text()
}

/// Config of one sipfront of the HA pair: SIP on VIP:5060, relay on the VIP, admin on the
/// namespace's own 127.0.0.1:9090, fast health probes, and `[vrrp]` on eth0.
pub fn sipfront_toml(priority: u8, backends: &[(&str, &str)], vrrp_extra: &str) -> String {
    let mut s = format!(
        "[listen]\nsip = [\"{VIP}:5060\"]\nrelay = \"{VIP}\"\nrelay_ports = \"20000-20999\"\n"
    );
    for (name, addr) in backends {
        s.push_str(&format!(
            "\n[[backend]]\nname = \"{name}\"\naddr = \"{addr}\"\n"
        ));
    }
    s.push_str("\n[admin]\nlisten = \"127.0.0.1:9090\"\n");
    s.push_str("\n[health]\ninterval = \"100ms\"\n");
    s.push_str(&format!(
        "\n[vrrp]\ninterface = \"eth0\"\nvrid = 51\npriority = {priority}\n\
         advert_interval = \"100ms\"\nvips = [\"{VIP_CIDR}\"]\ngarp_delay = \"1s\"\n{vrrp_extra}\n"
    ));
    s
}

/// VRRP state as sipfront publishes it in the gauge `sipfront_vrrp_state` (the values of
/// `state_value` in src/vrrp/shell.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VrrpState {
    Initialize,
    Backup,
    Master,
}

impl VrrpState {
    /// The gauge value of this state.
    pub fn value(self) -> f64 {
        match self {
            VrrpState::Initialize => 0.0,
            VrrpState::Backup => 1.0,
            VrrpState::Master => 2.0,
        }
    }

    /// The state a gauge value stands for; `None` for a value that is no state.
    pub fn from_value(v: f64) -> Option<VrrpState> {
        [VrrpState::Initialize, VrrpState::Backup, VrrpState::Master]
            .into_iter()
            .find(|s| s.value() == v)
    }
}

/// A sipfront running in a host's namespace.
pub struct NsSipfront {
    pub proc: Proc,
    pub name: String,
    pub ns: String,
    pub log: PathBuf,
    pub config: PathBuf,
}

pub const ADMIN: &str = "127.0.0.1:9090";

impl NsSipfront {
    /// Writes `toml` to `NAME.toml`, starts sipfront in `host`'s namespace (log `NAME.log`)
    /// and waits until its admin endpoint answers with VRRP metrics and its SIP port is bound.
    pub fn start(dir: &TestDir, host: &Host, name: &str, toml: &str) -> NsSipfront {
        Self::launch(
            dir,
            host,
            name,
            toml,
            Duration::from_secs(15),
            " with VRRP metrics",
            |m| m.contains("sipfront_vrrp_state"),
        )
    }

    /// Writes `toml` to `NAME.toml`, starts sipfront in `host`'s namespace (log `NAME.log`),
    /// waits up to `timeout` until its admin endpoint answers with metrics for which `ready`
    /// holds (`what` describes that in the failure message), then until its SIP port is bound.
    pub fn launch(
        dir: &TestDir,
        host: &Host,
        name: &str,
        toml: &str,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&str) -> bool,
    ) -> NsSipfront {
        let config = dir.join(&format!("{name}.toml"));
        fs::write(&config, toml).expect("write sipfront config");
        let log = dir.join(&format!("{name}.log"));
        let mut cmd = host.ns.command(bin());
        cmd.args(["run", "-c"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1");
        let proc = Proc::spawn(name, &mut cmd, &log);
        let mut sf = NsSipfront {
            proc,
            name: name.to_string(),
            ns: host.ns.name.clone(),
            log,
            config,
        };
        let ok = wait_until(timeout, || {
            sf.proc.assert_running();
            sf.try_metrics().is_some_and(|m| ready(&m))
        });
        assert!(
            ok,
            "{name}: admin endpoint did not answer{what} within {timeout:?}; config:\n{toml}\n\
             log:\n{}",
            sf.log_tail(40)
        );
        let pid = sf.proc.pid();
        let ok = wait_until(Duration::from_secs(5), || udp_bound_in(pid, 5060));
        assert!(
            ok,
            "{name}: SIP port 5060 not bound; log:\n{}",
            sf.log_tail(40)
        );
        sf
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `GET PATH` at the admin endpoint (inside the namespace): (status, body).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr: SocketAddr = ADMIN.parse().unwrap();
        let path = path.to_string();
        in_netns(&self.ns, move || http_get(addr, &path).ok())
    }

    pub fn try_metrics(&self) -> Option<String> {
        match self.get("/metrics") {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    /// Current metrics; panics (with the log) if they cannot be fetched.
    pub fn metrics(&mut self) -> String {
        match self.try_metrics() {
            Some(m) => m,
            None => {
                self.proc.assert_running();
                panic!(
                    "{}: GET /metrics failed; log:\n{}",
                    self.name,
                    self.log_tail(30)
                )
            }
        }
    }

    pub fn metric(&mut self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics(), name, labels)
    }

    /// `sipfront_vrrp_state` (0 when not published yet, so `Initialize`); `None` for a value
    /// that is no state.
    pub fn state(&mut self) -> Option<VrrpState> {
        VrrpState::from_value(self.metric("sipfront_vrrp_state", &[]))
    }

    /// The log without colour codes.
    pub fn log_text(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.log).unwrap_or_default())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The `vrrp transition` log lines as (state, cause), in order.
    pub fn transitions(&self) -> Vec<(String, String)> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("vrrp transition"))
            .map(|l| (field(l, "state"), field(l, "cause")))
            .collect()
    }

    /// Waits until a transition to `state` with `cause` has been logged.
    pub fn wait_transition(&mut self, state: &str, cause: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.transitions()
                .iter()
                .any(|(s, c)| s == state && c == cause)
        })
    }

    /// Waits until `sipfront_vrrp_state` is `want`; panics with the log otherwise.
    pub fn expect_state(&mut self, want: VrrpState, timeout: Duration) {
        let mut last = None;
        let ok = wait_until(timeout, || {
            last = self.state();
            last == Some(want)
        });
        assert!(
            ok,
            "{}: sipfront_vrrp_state is {last:?}, expected {want:?} within {timeout:?}; \
             transitions {:?}; log:\n{}",
            self.name,
            self.transitions(),
            self.log_tail(30)
        );
    }

    pub fn kill9(&mut self) {
        self.proc.signal("KILL");
        let st = self.proc.wait_timeout(Duration::from_secs(5));
        assert!(st.is_some(), "{} did not die on SIGKILL", self.name);
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.proc.signal("TERM");
        self.proc.wait_timeout(timeout).unwrap_or_else(|| {
            panic!(
                "{} still running {timeout:?} after SIGTERM; log:\n{}",
                self.name,
                self.log_tail(30)
            )
        })
    }
}

/// Value of `key="value"` (or `key=value`) in a tracing log line.
pub fn field(line: &str, key: &str) -> String {
    let pat = format!(" {key}=");
    let Some(i) = line.find(&pat) else {
        return String::new();
    };
    let rest = &line[i + pat.len()..];
    if let Some(r) = rest.strip_prefix('"') {
        r.split('"').next().unwrap_or("").to_string()
    } else {
        rest.split_whitespace().next().unwrap_or("").to_string()
    }
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
    /// Every flow (`/api/v1/flows?limit=1000000`): (total, rows).
    pub fn flows(&mut self) -> (usize, Vec<FlowRow>) {
        self.flows_query("limit=1000000")
    }

    /// Waits (15 s at most) for a registered flow of a client whose address starts
    /// with `client_prefix` (e.g. a NAT's public `"10.88.0.2:"`), while `phone` runs;
    /// fails with the flows and the phone's trace.
    pub fn wait_registered_flow(&mut self, client_prefix: &str, phone: &mut Sipp) -> FlowRow {
        let mut flow = None;
        let ok = wait_until(Duration::from_secs(15), || {
            phone.proc.assert_running();
            flow = self
                .flows()
                .1
                .into_iter()
                .find(|f| f.client.starts_with(client_prefix) && f.registered_secs.is_some());
            flow.is_some()
        });
        if !ok {
            let flows = self.flows();
            panic!(
                "no registered flow for {client_prefix} on {}: {flows:?}\nphone trace:\n{}",
                self.name,
                phone.messages()
            );
        }
        flow.unwrap()
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
