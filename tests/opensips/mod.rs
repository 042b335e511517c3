//! OpenSIPS backends for the integration tests: deploy/opensips/opensips.cfg itself, with only
//! the lines it marks for editing (`# SITE`, `# NODE B:`) rewritten for the test's addresses,
//! run by an OpenSIPS 3.x built from source (tests/run.sh builds 3.6.8 with
//! ../shared/opensips/build.sh and exports `OPENSIPS_PREFIX`), and its MI over the `mi_fifo`
//! FIFO (JSON-RPC) for the location table and the cluster state.
//!
//! Without `OPENSIPS_PREFIX` (no OpenSIPS build on this machine) every OpenSIPS test prints one
//! line saying how to enable it and passes: OpenSIPS is not packaged for Debian 12.
//!
//! The module also has [`Registrar`], what the tests need from a registrar (Kamailio or
//! OpenSIPS): its process and the `received` addresses stored for an AoR.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use testkit::*;

/// How long a test waits for a node's cluster link and usrloc sync. Twice in clean-clone
/// runs (sessions 7 and 18) one node's link stayed "Probe" for 20 s while its peer had
/// already logged it up, once after a restart, once at the pair's first start; more than
/// clusterer's `node_timeout` (60 s by default), after which a node pings again a
/// neighbour it gave up on. A pair started together is synced about 5 s after its
/// start (`opensips_failover`'s log line).
pub const CLUSTER_READY: Duration = Duration::from_secs(75);

/// How long [`OpenSips::start_linked`] gives one start of a node to link and sync before it
/// starts the node again. In the clean-clone run of session 21 a restarted node stayed
/// "Probe" for all of [`CLUSTER_READY`] and logged nothing after its start-up: none of
/// clusterer's "ping reply not received" or "node timeout passed" lines, as if its pinger
/// had stopped. A restarted node is normally synced 1-2 s after its start.
pub const CLUSTER_TRY: Duration = Duration::from_secs(20);

/// Starts [`OpenSips::start_linked`] tries before the test fails.
const CLUSTER_STARTS: u32 = 3;

/// The shipped OpenSIPS config.
pub fn opensips_cfg() -> String {
    format!(
        "{}/deploy/opensips/opensips.cfg",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The OpenSIPS install prefix from `OPENSIPS_PREFIX` (`PREFIX/sbin/opensips`,
/// `PREFIX/lib64/opensips/modules/`), if it holds a build.
pub fn prefix() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("OPENSIPS_PREFIX")?);
    p.join("sbin/opensips").exists().then_some(p)
}

/// True (after printing why and how to enable the test) when there is no OpenSIPS build.
pub fn skip(test: &str) -> bool {
    if let Some(p) = prefix() {
        // The shipped config loads auth_db, which build.sh does not build.
        let m = p.join("lib64/opensips/modules/auth_db.so");
        assert!(
            m.exists(),
            "{test}: {} missing: tests/run.sh builds it from the OpenSIPS source in \
             ../shared/opensips (make modules=modules/auth_db modules)",
            m.display()
        );
        return false;
    }
    eprintln!(
        "SKIPPED {test}: no OpenSIPS build. Set OPENSIPS_PREFIX to a prefix built by \
         ../shared/opensips/build.sh PREFIX (tests/run.sh does both when ../shared/opensips \
         exists)"
    );
    true
}

pub fn binary() -> PathBuf {
    prefix().expect("OPENSIPS_PREFIX").join("sbin/opensips")
}

pub fn module_dir() -> String {
    format!(
        "{}/lib64/opensips/modules/",
        prefix().expect("OPENSIPS_PREFIX").display()
    )
}

// ---------------------------------------------------------------------------------------------
// The config: only the marked lines are rewritten
// ---------------------------------------------------------------------------------------------

/// One node of the two-node cluster of the shipped config.
#[derive(Debug, Clone)]
pub struct Node {
    /// 1 (node A, the clusterer seed) or 2 (node B).
    pub id: u8,
    /// Its SIP socket (sipfront's backend address for it).
    pub sip: SocketAddrV4,
    /// Its clusterer (BIN) socket, and the other node's.
    pub bin: SocketAddrV4,
    pub peer_bin: SocketAddrV4,
    /// sipfront's public address (advertised in Via / Record-Route) and relay address.
    pub vip: SocketAddrV4,
    pub relay: Ipv4Addr,
    /// Trunks on (`route(trunks)` enabled): the port of the carrier's `[[peer]]` relay
    /// endpoint on `relay`, the only entry of the permissions address table (group 1,
    /// context "carrier"). `None`: trunks off as shipped (anyone may call a registered user).
    pub trunk: Option<u16>,
    /// Digest authentication on (`route(auth)` enabled, the nonce secret set): these
    /// accounts (user, password) in the db_text `subscriber` table. `None`: off as
    /// shipped.
    pub auth: Option<Vec<(String, String)>>,
    /// Requests of a call only for calls the node knows (`route(known_call)` and
    /// `create_dialog()` enabled). `false`: off as shipped.
    pub dialog_check: bool,
}

impl Node {
    /// Nodes A (id 1) and B (id 2) at `ip_a:sip_a` / `ip_b:sip_b`, BIN on `bin_a` / `bin_b`.
    pub fn pair(
        (ip_a, sip_a, bin_a): (Ipv4Addr, u16, u16),
        (ip_b, sip_b, bin_b): (Ipv4Addr, u16, u16),
        vip: SocketAddrV4,
        relay: Ipv4Addr,
    ) -> [Node; 2] {
        let a = SocketAddrV4::new(ip_a, bin_a);
        let b = SocketAddrV4::new(ip_b, bin_b);
        [
            Node {
                id: 1,
                sip: SocketAddrV4::new(ip_a, sip_a),
                bin: a,
                peer_bin: b,
                vip,
                relay,
                trunk: None,
                auth: None,
                dialog_check: false,
            },
            Node {
                id: 2,
                sip: SocketAddrV4::new(ip_b, sip_b),
                bin: b,
                peer_bin: a,
                vip,
                relay,
                trunk: None,
                auth: None,
                dialog_check: false,
            },
        ]
    }
}

/// deploy/opensips/opensips.cfg for `node`, logging to stderr, modules from `mpath`, MI FIFO
/// at `fifo`, the db_text directory `dbtext` next to it ([`write_dbtext`]). Only lines marked `# SITE` or `# NODE B:` change (the test of the file's own
/// promise to users); panics if an example address is left on any other line.
pub fn render_cfg(node: &Node, mpath: &str, fifo: &Path) -> String {
    let template = fs::read_to_string(opensips_cfg()).expect("read deploy/opensips/opensips.cfg");
    render(&template, node, mpath, fifo)
}

pub fn render(template: &str, node: &Node, mpath: &str, fifo: &Path) -> String {
    let peer_id = 3 - node.id;
    let dbtext = fifo.with_file_name("dbtext");
    let mut out = String::new();
    for line in template.lines() {
        let marked = line.contains("# SITE") || line.contains("# NODE B:");
        let code = line.split('#').next().unwrap_or("");
        if !marked {
            for example in ["10.1.0.", "203.0.113."] {
                assert!(
                    !code.contains(example),
                    "deploy/opensips/opensips.cfg: an address to edit on a line not marked \
                     `# SITE`/`# NODE B:`:\n{line}"
                );
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut l = line.to_string();
        let subst: Vec<(String, String)> = vec![
            ("stderror_enabled=no".into(), "stderror_enabled=yes".into()),
            ("syslog_enabled=yes".into(), "syslog_enabled=no".into()),
            (
                "/usr/lib/x86_64-linux-gnu/opensips/modules/".into(),
                mpath.to_string(),
            ),
            (
                "/run/opensips/opensips_fifo".into(),
                fifo.display().to_string(),
            ),
            (
                "\"my_node_id\", 1)".into(),
                format!("\"my_node_id\", {})", node.id),
            ),
            (
                "node_id=2, url=bin:10.1.0.22:5566".into(),
                format!("node_id={peer_id}, url=bin:{}", node.peer_bin),
            ),
            ("10.1.0.21:5566".into(), node.bin.to_string()),
            ("10.1.0.21:5060".into(), node.sip.to_string()),
            ("203.0.113.10:5060".into(), node.vip.to_string()),
            ("\"10.1.0.10\"".into(), format!("\"{}\"", node.relay)),
            (
                "text:///etc/opensips/dbtext".into(),
                format!("text://{}", dbtext.display()),
            ),
            (
                "10.1.0.10:5100".into(),
                format!("{}:{}", node.relay, node.trunk.unwrap_or(5100)),
            ),
        ];
        for (from, to) in &subst {
            l = l.replace(from, to);
        }
        if node.id == 2 {
            l = l.replace(", flags=seed", "");
        }
        if node.trunk.is_some() {
            l = l.replace("#route(trunks);", "route(trunks);");
        }
        if node.dialog_check {
            l = l
                .replace("#route(known_call);", "route(known_call);")
                .replace(
                    "#if (is_method(\"INVITE\")) create_dialog();",
                    "if (is_method(\"INVITE\")) create_dialog();",
                );
        }
        if node.auth.is_some() {
            l = l.replace("#route(auth);", "route(auth);").replace(
                "#modparam(\"auth\", \"secret\", \"exactly 32 random characters!!!!\")",
                "modparam(\"auth\", \"secret\", \"both test nodes share the secret\")",
            );
        }
        let code = l.split('#').next().unwrap_or("");
        assert!(
            !code.contains("10.1.0.") && !code.contains("203.0.113."),
            "example address left on a marked line (the test's rewrite rules do not know it):\n{line}"
        );
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// The db_text directory of a node whose MI FIFO is `fifo` (`dbtext` next to it): the
/// permissions `address` table (the carrier's relay endpoint when trunks are on, else empty),
/// the auth_db `subscriber` table (the node's accounts when auth is on, else empty) and the
/// `version` table.
pub fn write_dbtext(node: &Node, fifo: &Path) {
    let dir = fifo.with_file_name("dbtext");
    fs::create_dir_all(&dir).expect("create dbtext dir");
    let mut address = String::from(
        "id(int,auto) grp(int) ip(string) mask(int) port(int) proto(string) \
         pattern(string,null) context_info(string,null)\n",
    );
    if let Some(port) = node.trunk {
        address.push_str(&format!("1:1:{}:32:{port}:any:NULL:carrier\n", node.relay));
    }
    fs::write(dir.join("address"), address).expect("write dbtext address");
    // The shipped (empty) subscriber table, with the node's accounts.
    let mut subscriber =
        fs::read_to_string(testkit::repo_path("deploy/opensips/dbtext/subscriber"))
            .expect("read deploy/opensips/dbtext/subscriber");
    for (i, (user, password)) in node.auth.iter().flatten().enumerate() {
        subscriber.push_str(&format!("{}:{user}::{password}:::\n", i + 1));
    }
    fs::write(dir.join("subscriber"), subscriber).expect("write dbtext subscriber");
    fs::write(
        dir.join("version"),
        "table_name(string) table_version(int)\naddress:5\nsubscriber:8\n",
    )
    .expect("write dbtext version");
}

/// `opensips -C -f CFG`: (success, output).
pub fn check_config(cfg: &Path) -> (bool, String) {
    let out = Command::new(binary())
        .arg("-C")
        .arg("-f")
        .arg(cfg)
        .output()
        .expect("run opensips -C");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

// ---------------------------------------------------------------------------------------------
// A running node
// ---------------------------------------------------------------------------------------------

/// A running OpenSIPS node (`opensips -F`: the main process in the foreground, its workers in
/// its process group), its rendered config, pid file and MI FIFO in its own directory.
pub struct OpenSips {
    pub proc: Proc,
    pub dir: PathBuf,
    pub fifo: PathBuf,
    pub node: Node,
}

impl OpenSips {
    /// Starts node `node` in the host's namespace (`ns` `None`) or with `ip netns exec NS`,
    /// and waits until its SIP port is bound and its MI answers.
    pub fn start(test: &TestDir, name: &str, node: &Node, ns: Option<&str>) -> OpenSips {
        let dir = test.join(name);
        fs::create_dir_all(&dir).expect("create opensips dir");
        let fifo = dir.join("mi_fifo");
        let _ = fs::remove_file(&fifo);
        let cfg = dir.join("opensips.cfg");
        fs::write(&cfg, render_cfg(node, &module_dir(), &fifo)).expect("write opensips.cfg");
        write_dbtext(node, &fifo);
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.arg("-F")
            .arg("-f")
            .arg(&cfg)
            .arg("-P")
            .arg(dir.join("opensips.pid"))
            .arg("-w")
            .arg(&dir)
            // small shared/private memory: several nodes on a small test machine
            .args(["-m", "64", "-M", "8"]);
        let mut proc = Proc::spawn_group(name, &mut cmd, &dir.join("opensips.log"));
        let pid = proc.pid();
        let port = node.sip.port();
        let ok = wait_until(Duration::from_secs(20), || {
            proc.assert_running();
            udp_bound_by(pid, port)
        });
        assert!(
            ok,
            "opensips {name} did not bind udp {port}: {}",
            proc.log_tail(30)
        );
        let o = OpenSips {
            proc,
            dir,
            fifo,
            node: node.clone(),
        };
        let mut last = Err(String::new());
        let ok = wait_until(Duration::from_secs(10), || {
            last = o.mi("version", json!([]));
            last.is_ok()
        });
        assert!(ok, "opensips {name}: MI does not answer: {last:?}");
        o
    }

    /// Starts node `node` like [`OpenSips::start`] and waits until its link to `peer` is up
    /// and usrloc is synced. A start that is not within [`CLUSTER_TRY`] is reported on
    /// stderr with both nodes' states and logs, stopped, and started again (as `NAME-2`,
    /// `NAME-3`): the tests check sipfront, and an operator restarts a wedged node too.
    pub fn start_linked(
        test: &TestDir,
        name: &str,
        node: &Node,
        ns: Option<&str>,
        peer: &OpenSips,
    ) -> OpenSips {
        for attempt in 1..=CLUSTER_STARTS {
            let this = if attempt == 1 {
                name.to_string()
            } else {
                format!("{name}-{attempt}")
            };
            let o = OpenSips::start(test, &this, node, ns);
            let mut last = Default::default();
            if wait_until(CLUSTER_TRY, || {
                last = o.cluster_state();
                last.0 == "Up" && last.1 == "Ok"
            }) {
                return o;
            }
            eprintln!(
                "{this}: cluster link / usrloc sync state {last:?} after {CLUSTER_TRY:?} \
                 (start {attempt} of {CLUSTER_STARTS}); {} has {:?}\n\
                 ----- {this} -----\n{}\n----- {} -----\n{}",
                peer.name(),
                peer.cluster_state(),
                o.proc.log_tail(40),
                peer.name(),
                peer.proc.log_tail(40)
            );
            let pgid = o.proc.pid();
            drop(o);
            // Its sockets are free once every process of its group is gone.
            assert!(
                wait_until(Duration::from_secs(10), || group_members(pgid).is_empty()),
                "{this}: processes left after the stop: {:?}",
                group_members(pgid)
            );
        }
        panic!(
            "{name}: cluster link to {} not up after {CLUSTER_STARTS} starts",
            peer.name()
        );
    }

    pub fn name(&self) -> &str {
        &self.proc.name
    }

    /// One MI command over the FIFO (JSON-RPC): its `result`, or the error.
    pub fn mi(&self, method: &str, params: Value) -> Result<Value, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        // mi_fifo writes replies to reply_dir (default /tmp/) + a name without '.' or '/'.
        let reply_name = format!("sipfront_mi_{}_{n}", std::process::id());
        let reply = Path::new("/tmp").join(&reply_name);
        let _ = fs::remove_file(&reply);
        let c = CString::new(reply.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(format!("mkfifo {}", reply.display()));
        }
        let result = (|| {
            // Read end opened read-write: opening never blocks, and OpenSIPS's non-blocking
            // open for writing finds a reader. The reply is complete when it parses.
            let mut rd = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&reply)
                .map_err(|e| format!("open reply fifo: {e}"))?;
            let req = json!({"jsonrpc": "2.0", "method": method, "id": n, "params": params});
            // Non-blocking: fails at once (ENXIO) when no OpenSIPS reads the FIFO.
            let mut w = fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.fifo)
                .map_err(|e| format!("open {}: {e}", self.fifo.display()))?;
            w.write_all(format!(":{reply_name}:{req}\n").as_bytes())
                .map_err(|e| format!("write MI command: {e}"))?;
            drop(w);
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                match rd.read(&mut chunk) {
                    Ok(k) if k > 0 => {
                        buf.extend_from_slice(&chunk[..k]);
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            return Ok(v);
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(format!("read reply: {e}")),
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "no MI reply to {method} within 10 s (got {:?})",
                        String::from_utf8_lossy(&buf)
                    ));
                }
                let mut pfd = libc::pollfd {
                    fd: rd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 100) };
            }
        })();
        let _ = fs::remove_file(&reply);
        let v = result?;
        if let Some(e) = v.get("error") {
            return Err(format!("MI {method}: {e}"));
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }

    /// The `Received` addresses (`sip:IP:PORT`) of `aor`'s contacts (`ul_show_contact`).
    pub fn received_of(&self, aor: &str) -> Vec<String> {
        match self.mi(
            "ul_show_contact",
            json!({"table_name": "location", "aor": aor}),
        ) {
            Ok(v) => v["Contacts"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c["Received"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            // 404 "AOR not found"
            Err(_) => Vec::new(),
        }
    }

    /// The link state to the other node (`clusterer_list`) and the state of the usrloc
    /// replication capability (`clusterer_list_cap`), e.g. `("Up", "Ok")`.
    pub fn cluster_state(&self) -> (String, String) {
        let link = self
            .mi("clusterer_list", json!([]))
            .ok()
            .and_then(|v| {
                v["Clusters"][0]["Nodes"]
                    .as_array()?
                    .iter()
                    .find(|n| n["node_id"].as_u64() == Some(u64::from(3 - self.node.id)))
                    .and_then(|n| n["link_state"].as_str().map(str::to_string))
            })
            .unwrap_or_default();
        let cap = self
            .mi("clusterer_list_cap", json!([]))
            .ok()
            .and_then(|v| {
                v["Clusters"][0]["Capabilities"]
                    .as_array()?
                    .iter()
                    .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with("usrloc")))
                    .and_then(|c| c["state"].as_str().map(str::to_string))
            })
            .unwrap_or_default();
        (link, cap)
    }

    /// Waits until the link to the other node is up and usrloc's data is synced ("Ok").
    /// A wait past 10 s is reported on stderr (see [`CLUSTER_READY`]).
    pub fn wait_cluster_ready(&self) {
        let mut last = Default::default();
        let t0 = Instant::now();
        let ok = wait_until(CLUSTER_READY, || {
            last = self.cluster_state();
            last.0 == "Up" && last.1 == "Ok"
        });
        if t0.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "{}: cluster link / usrloc sync state {last:?} after {:?}",
                self.name(),
                t0.elapsed()
            );
        }
        assert!(
            ok,
            "{}: cluster link / usrloc sync state {last:?}\n{}",
            self.name(),
            self.proc.log_tail(30)
        );
    }

    /// The number of AoRs in the location table (`ul_dump brief`).
    pub fn aor_count(&self) -> usize {
        self.mi("ul_dump", json!({"brief": 1}))
            .ok()
            .and_then(|v| {
                v["Domains"].as_array().map(|ds| {
                    ds.iter()
                        .map(|d| d["AORs"].as_array().map_or(0, Vec::len))
                        .sum()
                })
            })
            .unwrap_or(0)
    }
}

/// True if a socket in the network namespace of process `pid` is bound to UDP `port`.
pub fn udp_bound_by(pid: u32, port: u16) -> bool {
    let want = format!(":{port:04X} ");
    fs::read_to_string(format!("/proc/{pid}/net/udp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| format!("{a} ").ends_with(&want))
        })
}

// ---------------------------------------------------------------------------------------------
// What the tests need from a registrar, Kamailio or OpenSIPS
// ---------------------------------------------------------------------------------------------

pub trait Registrar {
    fn proc(&self) -> &Proc;
    fn proc_mut(&mut self) -> &mut Proc;
    /// The `received` addresses (`sip:IP:PORT`) stored for `aor`.
    fn received(&self, aor: &str) -> Vec<String>;
    /// A dump of its location table for failure messages.
    fn dump(&self) -> String;
}

impl Registrar for OpenSips {
    fn proc(&self) -> &Proc {
        &self.proc
    }
    fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
    fn received(&self, aor: &str) -> Vec<String> {
        self.received_of(aor)
    }
    fn dump(&self) -> String {
        format!("{:?}", self.mi("ul_dump", json!([])))
    }
}

impl Registrar for Kamailio {
    fn proc(&self) -> &Proc {
        &self.proc
    }
    fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
    fn received(&self, aor: &str) -> Vec<String> {
        self.kamcmd(&["ul.lookup", "location", aor])
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Received:"))
            .map(|r| r.trim().to_string())
            .collect()
    }
    fn dump(&self) -> String {
        self.kamcmd(&["ul.dump"])
    }
}

/// Waits until `r` stores exactly one contact for `aor` with a `received` address of
/// `relay_ip`; returns its port (sipfront's relay port for the phone's flow).
pub fn wait_received_port(r: &dyn Registrar, aor: &str, relay_ip: &str) -> u16 {
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        last = r.received(aor);
        !last.is_empty()
    });
    assert!(
        ok,
        "{aor} not registered at {}: {}",
        r.proc().name,
        r.dump()
    );
    assert_eq!(
        last.len(),
        1,
        "one contact for {aor} at {}: {last:?}",
        r.proc().name
    );
    let received = last[0].trim_start_matches("sip:");
    let (ip, port) = received
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("received {received}"));
    assert_eq!(
        ip,
        relay_ip,
        "{}: the received address is sipfront's relay address",
        r.proc().name
    );
    port.parse().expect("received port")
}

impl OpenSips {
    /// The `ERROR`/`CRITICAL` lines of its log.
    pub fn error_lines(&self) -> Vec<String> {
        self.proc
            .log_text()
            .lines()
            .filter(|l| l.contains(" ERROR:") || l.contains(" CRITICAL:"))
            .map(str::to_string)
            .collect()
    }

    /// [`OpenSips::error_lines`] without the two that OpenSIPS 3.6.8 logs in normal operation
    /// of this config: the seed node's "no donor found" when it starts alone (by design,
    /// `flags=seed`), and usrloc's "store_deserialize: bad JSON input" on every replicated
    /// AoR insert whose key-value store is empty (cJSON_Parse of ""; the AoR is stored).
    pub fn unexpected_errors(&self) -> Vec<String> {
        self.error_lines()
            .into_iter()
            .filter(|l| {
                !l.contains("sync_check_timer: Sync request aborted! (no donor found")
                    && !l.contains("store_deserialize: bad JSON input")
            })
            .collect()
    }
}
