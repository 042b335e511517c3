//! The end-to-end setup: Kamailio registrars sharing registrations (DMQ), the pair, and a
//! phone behind the NAT router registered through the master and mirrored by the backup.

use super::*;

/// A registrar on `role`'s address advertising the VIP, replicating usrloc with DMQ to `peer`.
fn kamailio_node(dir: &TestDir, net: &Net, role: &str, peer: &str) -> Kamailio {
    let own = net.host(role).addr;
    start_kamailio(
        dir,
        net.host(role),
        role,
        &[
            format!("VIP_IP={VIP}"),
            "VIP_PORT=5060".into(),
            format!("RELAY_IP={VIP}"),
            "WITH_DMQ".into(),
            "DMQ_PORT=5090".into(),
            format!("DMQ_SERVER=\"sip:{own}:5090\""),
            format!("DMQ_PEER=\"sip:{peer}:5090\""),
        ],
    )
}

/// Waits until `k` lists the DMQ node at `peer` as active.
pub fn wait_dmq_peer(k: &Kamailio, peer: &str) {
    let mut nodes = String::new();
    let ok = wait_until(Duration::from_secs(30), || {
        nodes = k.kamcmd(&["dmq.list_nodes"]);
        nodes.split('}').any(|node| {
            node.contains(&format!("host: {peer}"))
                && node.contains("status: active")
                && node.contains("local: 0")
        })
    });
    assert!(ok, "{}: DMQ peer {peer} not active:\n{nodes}", k.proc.name);
}

/// The relay port `k` stores as the path back to `aor` (`Received: sip:VIP:PORT`).
pub fn registered_port(k: &Kamailio, aor: &str) -> u16 {
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        last = k.received_of(aor);
        !last.is_empty()
    });
    assert!(
        ok,
        "{aor} not registered at {}: {}",
        k.proc.name,
        k.kamcmd(&["ul.dump"])
    );
    assert_eq!(
        last.len(),
        1,
        "one contact for {aor} at {}: {last:?}",
        k.proc.name
    );
    let received = last[0].trim_start_matches("sip:");
    let (ip, port) = received.rsplit_once(':').expect("received ip:port");
    assert_eq!(
        ip, VIP,
        "{}: received address is the relay VIP",
        k.proc.name
    );
    port.parse().expect("received port")
}

/// One call from the caller host to `aor` entered at registrar `registrar`.
pub fn call(
    dir: &TestDir,
    net: &Net,
    name: &str,
    port: u16,
    registrar: &str,
) -> (Sipp, SippResult) {
    let mut sipp = start_caller(
        dir,
        net,
        name,
        &scenario("caller.xml"),
        port,
        registrar,
        "30s",
    );
    let r = sipp.wait(Duration::from_secs(45));
    (sipp, r)
}

/// sipp on the caller host (10.88.0.30:`port`) running scenario file `sf` once towards
/// user alice at registrar `registrar`, failing after `timeout`.
pub fn start_caller(
    dir: &TestDir,
    net: &Net,
    name: &str,
    sf: &str,
    port: u16,
    registrar: &str,
    timeout: &str,
) -> Sipp {
    let p = port.to_string();
    let to = format!("{registrar}:5060");
    start_sipp(
        dir,
        net.host("caller"),
        name,
        &[
            "-sf",
            sf,
            "-s",
            "alice",
            "-t",
            "u1",
            "-i",
            "10.88.0.30",
            "-p",
            &p,
            "-m",
            "1",
            "-timeout",
            timeout,
            "-timeout_error",
            &to,
        ],
        true,
    )
}

/// Registrars, the sipfront pair and a phone registered through the master and mirrored by
/// the backup: the common start of the end-to-end tests.
pub struct E2e {
    // Dropped in this order: programs first, the network last.
    pub phone: Sipp,
    pub a: NsSipfront,
    pub b: NsSipfront,
    pub kam_a: Kamailio,
    pub kam_b: Kamailio,
    pub net: Net,
    pub phone_args: Vec<String>,
    /// The phone's flow on A: (NAT's public address, relay port, home backend).
    pub flow: FlowRow,
    pub home: &'static str,
    pub other: &'static str,
    pub home_ip: &'static str,
    pub other_ip: &'static str,
}

impl E2e {
    pub fn home_kam(&self) -> &Kamailio {
        if self.home == "kamA" {
            &self.kam_a
        } else {
            &self.kam_b
        }
    }

    pub fn other_kam(&self) -> &Kamailio {
        if self.home == "kamA" {
            &self.kam_b
        } else {
            &self.kam_a
        }
    }
}

/// Builds the LAN with the NAT'd phone, starts both registrars (DMQ), the pair (A master),
/// and the phone (REGISTER through the VIP, then `answer` as its out-of-call scenario);
/// waits until A has the phone's registered flow, both registrars store its relay port, and
/// B mirrors the flow with the port pre-bound.
pub fn e2e_setup(dir: &TestDir, t0: Instant, answer: &str) -> E2e {
    e2e_setup_with(dir, t0, answer, "")
}

/// [`e2e_setup`] with `extra` TOML in both hosts' configs.
pub fn e2e_setup_with(dir: &TestDir, t0: Instant, answer: &str, extra: &str) -> E2e {
    let mut net = sync_net(&[
        ("sfA", 11),
        ("sfB", 12),
        ("kamA", 21),
        ("kamB", 22),
        ("caller", 30),
    ]);
    // Real phones refresh their NAT binding with keepalives every 15-30 s; this sipp phone
    // stays silent, so the NAT keeps UDP mappings 120 s instead of the kernel's 30 s (the
    // failover itself does not touch the NAT's mapping phone -> VIP:5060).
    net.add_nat_phone("nat", 2, "phone", 120);

    let kam_a = kamailio_node(dir, &net, "kamA", "10.88.0.22");
    let kam_b = kamailio_node(dir, &net, "kamB", "10.88.0.21");
    wait_dmq_peer(&kam_a, "10.88.0.22");
    wait_dmq_peer(&kam_b, "10.88.0.21");
    eprintln!("[{} ms] registrars up, DMQ peers active", ms(t0));

    let (spec_a, spec_b) = pair_specs(&KAM_BACKENDS, extra, dir);
    let (mut a, b) = start_pair(dir, &net, &spec_a, &spec_b);
    eprintln!("[{} ms] sfA master, sfB backup, synced", ms(t0));

    // The phone: REGISTER through the VIP, then answer INVITEs on the same socket.
    let phone_args: Vec<String> = [
        "-sf",
        &scenario("phone_register.xml"),
        "-oocsf",
        answer,
        "-s",
        "alice",
        "-t",
        "u1",
        "-i",
        "192.168.77.2",
        "-p",
        "5060",
        "-m",
        "1",
        "-d",
        "300000",
        "10.88.0.100:5060",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let args: Vec<&str> = phone_args.iter().map(String::as_str).collect();
    let mut phone = start_sipp(dir, net.host("phone"), "phone", &args, true);
    wait_bound(&mut phone.proc, 5060);

    // A's flow for the phone's public (masqueraded) address, registered.
    let flow = a.wait_registered_flow("10.88.0.2:", &mut phone);
    let (home, other, home_ip, other_ip) = if flow.backend == "kamA" {
        ("kamA", "kamB", "10.88.0.21", "10.88.0.22")
    } else {
        ("kamB", "kamA", "10.88.0.22", "10.88.0.21")
    };
    let e = E2e {
        phone,
        a,
        b,
        kam_a,
        kam_b,
        net,
        phone_args,
        flow,
        home,
        other,
        home_ip,
        other_ip,
    };
    let (client, relay_port) = (e.flow.client.clone(), e.flow.relay_port);
    assert_eq!(
        registered_port(e.home_kam(), "alice"),
        relay_port,
        "home registrar"
    );
    assert_eq!(
        registered_port(e.other_kam(), "alice"),
        relay_port,
        "registration replicated by DMQ"
    );
    eprintln!(
        "[{} ms] phone {client} registered at {home} via relay port {relay_port}",
        ms(t0)
    );
    let mut e = e;

    // The backup mirrors the flow (same client, relay port, home; registered) and has the
    // relay port bound on the VIP.
    let mut mirrored = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        mirrored = e.b.flows_of(&client);
        mirrored.len() == 1
            && mirrored[0].key() == e.flow.key()
            && mirrored[0].registered_secs.is_some()
    });
    assert!(ok, "sfB does not mirror {:?}: {mirrored:?}", e.flow);
    let vip: std::net::Ipv4Addr = VIP.parse().unwrap();
    assert!(
        udp_ports_bound(e.b.pid(), Some(vip)).contains(&relay_port),
        "sfB has not pre-bound {VIP}:{relay_port}"
    );
    let reg_a = e.flow.registered_secs.unwrap();
    let reg_b = mirrored[0].registered_secs.unwrap();
    assert!(
        (reg_a - reg_b).abs() < 30.0,
        "registered_secs on A {reg_a} and on B {reg_b}"
    );
    eprintln!("[{} ms] sfB mirrors the flow, port pre-bound", ms(t0));
    e
}

/// Kills A with SIGKILL and waits until B is master and holds the VIP.
pub fn kill_master(e: &mut E2e, t0: Instant) {
    let kill_at = Instant::now();
    e.a.kill9();
    e.b.expect_state(VrrpState::Master, Duration::from_secs(10));
    let ok = wait_until(Duration::from_secs(10), || e.net.host("sfB").has_addr(VIP));
    assert!(ok, "sfB did not add the VIP");
    eprintln!(
        "[{} ms] sfA killed; sfB master with the VIP after {:?}",
        ms(t0),
        kill_at.elapsed()
    );
}
