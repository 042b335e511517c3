use std::collections::BTreeSet;

use super::*;

fn eph() -> EphemeralPorts {
    EphemeralPorts::default()
}

const GOOD: &str = r#"
[listen]
sip = ["127.0.0.1:5060"]
relay_ports = "20000-20999"

[[backend]]
name = "a"
addr = "127.0.0.1:5070"

[[backend]]
name = "b"
addr = "127.0.0.1:5071"
"#;

/// A secret file as operators must write them: mode 0600.
fn write_secret(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn err(text: &str) -> String {
    Config::parse(text, &eph()).unwrap_err().to_string()
}

#[test]
fn good_config_gets_defaults() {
    let c = Config::parse(GOOD, &eph()).unwrap();
    assert_eq!(c.listen.relay, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(c.backends.len(), 2);
    assert_eq!(c.failback, Failback::OnRegister);
    assert_eq!(c.limits.max_flows, 1000);
    assert_eq!(
        (c.limits.max_dialogs, c.limits.max_pins_per_ip),
        (100_000, 12_500),
        "a source may hold an eighth of the dialog table in unanswered entries"
    );
    assert_eq!(c.admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.admin.max_connections, 64);
    assert_eq!(c.admin.header_timeout, Duration::from_secs(5));
    assert_eq!(c.admin.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.relay_port_count(), 1000);
}

#[test]
fn display_round_trips() {
    let c = Config::parse(GOOD, &eph()).unwrap();
    let again = Config::parse(&c.to_string(), &eph()).unwrap();
    assert_eq!(c, again);
}

#[test]
fn errors_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("[listen]\nsip=[]\n", "listen.sip"),
        ("[listen]\nsip=[\"nonsense\"]\n", "listen.sip[0]"),
        (
            "[listen]\nsip=[\"127.0.0.1:5060\", \"0.0.0.0:5060\"]\n",
            "listen.sip[1]: must be a concrete address",
        ),
        (
            "[listen]\nsip=[\"[::]:5060\"]\n",
            "listen.sip[0]: must be a concrete",
        ),
        (
            &format!("{GOOD}\n[access]\nmax_bans = 1000001\n"),
            "access.max_bans: must be at most",
        ),
        (
            &GOOD.replace("20000-20999", "20999-20000"),
            "listen.relay_ports",
        ),
        (
            &GOOD.replace("20000-20999", "5000-6000"),
            "listen.relay_ports: range 5000-6000 contains the listen port 5060",
        ),
        (&GOOD.replace("20000-20999", "30000-40000"), "ephemeral"),
        (
            &GOOD.replace("name = \"b\"", "name = \"a\""),
            "backend[1].name",
        ),
        (&GOOD.replace("5071", "5070"), "backend[1].addr"),
        (
            &GOOD.replace("127.0.0.1:5071", "10.0.0.300:5060"),
            "backend[1].addr",
        ),
        (
            "[listen]\nsip=[\"127.0.0.1:5060\"]\nrelay_ports=\"20000-20010\"\n",
            "backend: at least one",
        ),
        (
            &format!("{GOOD}\n[limits]\nmax_flows = 5000\n"),
            "limits.max_flows",
        ),
        (
            &format!("{GOOD}\n[limits]\nmax_pins_per_ip = 0\n"),
            "limits.max_pins_per_ip: must be at least 1",
        ),
        (
            &format!("{GOOD}\n[limits]\nmax_pins_per_ipv6_48 = 0\n"),
            "limits.max_pins_per_ipv6_48: must be at least 1",
        ),
        (
            &format!("{GOOD}\n[timeouts]\nflow_idle = \"5 parsecs\"\n"),
            "timeouts.flow_idle",
        ),
        (
            &format!("{GOOD}\n[affinity]\nfailback = \"sometimes\"\n"),
            "failback",
        ),
        (
            &format!("{GOOD}\n[admin]\nlisten = \"localhost\"\n"),
            "admin.listen",
        ),
        (&GOOD.replace("relay_ports", "relay_portz"), "relay_portz"),
        (
            &GOOD.replace("relay_ports", "relay = [\"127.0.0.2\", \"x\"]\nrelay_ports"),
            "listen.relay[1]: `x` is not an IP address",
        ),
        (
            &GOOD.replace(
                "relay_ports",
                "relay = [\"127.0.0.2\", \"127.0.0.2\"]\nrelay_ports",
            ),
            "listen.relay[1]: `127.0.0.2` is listed twice",
        ),
        (
            &GOOD.replace(
                "relay_ports",
                "relay = [\"127.0.0.2\", \"::1\"]\nrelay_ports",
            ),
            "listen.relay[1]: all relay addresses must be of one IP family",
        ),
        (
            &GOOD.replace("127.0.0.1:5071", "[::1]:5071"),
            "backend[1].addr: an IPv6 backend, but the relay addresses",
        ),
        (
            &GOOD.replace("relay_ports", "relay = [\"::1\"]\nrelay_ports"),
            "backend[0].addr: an IPv4 backend, but the relay addresses",
        ),
        (
            &GOOD.replace("relay_ports", "relay = []\nrelay_ports"),
            "listen.relay: needs at least one",
        ),
        (
            &GOOD.replace("relay_ports", "relay = 7\nrelay_ports"),
            "listen.relay: invalid type: integer `7`, expected an IP address or a list",
        ),
        (
            &GOOD.replace("relay_ports", "relay = \"0.0.0.0\"\nrelay_ports"),
            "listen.relay: must be a concrete address",
        ),
    ];
    for (text, want) in cases {
        let e = err(text);
        assert!(e.contains(want), "error `{e}` should mention `{want}`");
    }
}

#[test]
fn relay_addresses_multiply_the_ports() {
    let one = Config::parse(
        &GOOD.replace("relay_ports", "relay = \"127.0.0.2\"\nrelay_ports"),
        &eph(),
    )
    .unwrap();
    assert_eq!(one.listen.relay, vec![IpAddr::from([127, 0, 0, 2])]);
    let text = GOOD.replace(
        "relay_ports",
        "relay = [\"127.0.0.2\", \"127.0.0.3\", \"127.0.0.4\"]\nrelay_ports",
    );
    let c = Config::parse(&text, &eph()).unwrap();
    assert_eq!(c.listen.relay.len(), 3);
    assert_eq!(c.relay_port_count(), 3000);
    assert_eq!(
        c.limits.max_flows, 3000,
        "max_flows defaults to every endpoint"
    );
    assert_eq!(Config::parse(&c.to_string(), &eph()).unwrap(), c);
    let too_many = format!("{text}\n[limits]\nmax_flows = 3001\n");
    assert!(err(&too_many).contains("limits.max_flows"));
}

#[test]
fn reserved_ports_lift_the_ephemeral_conflict() {
    let text = GOOD.replace("20000-20999", "40000-40999");
    let mut e = eph();
    assert!(Config::parse(&text, &e).is_err());
    e.reserved = parse_port_list("39000-41000,50000");
    assert!(Config::parse(&text, &e).is_ok());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("10").is_err());
    assert!(parse_duration("s").is_err());
    assert!(parse_duration("99999999999999999h").is_err());
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
}

#[test]
fn health_and_admin_keys() {
    let c = Config::parse(GOOD, &eph()).unwrap();
    assert_eq!(c.health.interval, Duration::from_millis(500));
    assert!(c.health.is_alive_code(404) && c.health.is_alive_code(503));
    assert!(!c.health.is_alive_code(180));
    let text = format!("{GOOD}\n[health]\nalive_codes = [\"200-499\", \"600-699\"]\nfall = 3\n");
    let c = Config::parse(&text, &eph()).unwrap();
    assert!(!c.health.is_alive_code(503) && c.health.is_alive_code(603));
    assert_eq!(c.health.fall, 3);
    let cases: &[(&str, &str)] = &[
        (
            "[health]\ninterval = \"100ms\"\ntimeout = \"200ms\"\n",
            "health.timeout",
        ),
        ("[health]\nrise = 0\n", "health.rise"),
        (
            "[health]\nalive_codes = [\"99-200\"]\n",
            "health.alive_codes[0]",
        ),
        ("[health]\nalive_codes = []\n", "health.alive_codes"),
        (
            "[health]\nalive_codes = [\"0-699\"]\n",
            "health.alive_codes[0]: `0-699` is outside the SIP codes 100-699",
        ),
        (
            "[health]\nalive_codes = [\"2xx\"]\n",
            "health.alive_codes[0]: `2xx` is not a status code",
        ),
        (
            "[admin]\nlisten = \"0.0.0.0:9090\"\n",
            "admin.token_file: required",
        ),
        (
            "[admin]\ntoken_file = \"/nonexistent/token\"\n",
            "admin.token_file: cannot read",
        ),
        ("[admin]\nmax_connections = 0\n", "admin.max_connections"),
        (
            "[admin]\nheader_timeout = \"10ms\"\n",
            "admin.header_timeout: must be at least",
        ),
        ("[admin]\nidle_timeout = \"5\"\n", "admin.idle_timeout"),
    ];
    for (extra, want) in cases {
        let e = err(&format!("{GOOD}\n{extra}"));
        assert!(e.contains(want), "error `{e}` should mention `{want}`");
    }
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("token");
    write_secret(&tf, "s3cret-s3cret-s3cret\n");
    let text = format!(
        "{GOOD}\n[admin]\nlisten = \"0.0.0.0:9090\"\ntoken_file = \"{}\"\n",
        tf.display()
    );
    let c = Config::parse(&text, &eph()).unwrap();
    assert_eq!(c.admin.token.as_deref(), Some("s3cret-s3cret-s3cret"));
    assert!(!format!("{c:?} {c}").contains("s3cret"), "token leaks");
}

/// A secret file that is not a regular file (a FIFO would block the start), or far
/// larger than a key, is refused naming the key; so are more public addresses or
/// static peers than the dataplane numbers.
#[test]
fn secret_files_must_be_small_regular_files_and_lists_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = dir.path().join("big");
    write_secret(&big, &"k".repeat(5000));
    let spaced = dir.path().join("spaced");
    write_secret(&spaced, "a token with spaces in it");
    let accented = dir.path().join("accented");
    write_secret(&accented, "jeton-d'accès-0123456789");
    for (file, want) in [
        (&fifo, "is not a regular file"),
        (&big, "is larger than 4096 bytes"),
        (&spaced, "must hold printable ASCII without spaces"),
        (&accented, "must hold printable ASCII without spaces"),
    ] {
        let text = format!(
            "{GOOD}\n[admin]\nlisten = \"0.0.0.0:9090\"\ntoken_file = \"{}\"\n",
            file.display()
        );
        let e = err(&text);
        assert!(
            e.starts_with("admin.token_file: ") && e.contains(want),
            "{e}"
        );
    }
    let sips: Vec<String> = (0..1025)
        .map(|i| format!("\"127.1.{}.{}:5060\"", i / 250, i % 250 + 1))
        .collect();
    let text = GOOD.replace(
        "sip = [\"127.0.0.1:5060\"]",
        &format!("sip = [{}]", sips.join(", ")),
    );
    assert!(err(&text).starts_with("listen.sip: 1025 addresses: at most 1024"));
    let peers: String = (0..10_001)
        .map(|i| format!("\n[[peer]]\nname = \"p{i}\"\naddr = \"10.9.{}.{}:5060\"\nrelay = \"127.0.0.1:5100\"\n", i / 250, i % 250 + 1))
        .collect();
    let e = err(&format!("{GOOD}{peers}"));
    assert!(
        e.starts_with("peer: 10001 [[peer]] entries: at most 10000"),
        "{e}"
    );
}

/// Token and key files readable or writable by group or others are refused, naming the key
/// and the mode; a reload keeps going without the token and says why.
#[test]
fn secret_files_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("token");
    write_secret(&tf, "s3cret-s3cret-s3cret\n");
    let admin = format!(
        "{GOOD}\n[admin]\nlisten = \"0.0.0.0:9090\"\ntoken_file = \"{}\"\n",
        tf.display()
    );
    let kf = dir.path().join("key");
    write_secret(&kf, "a-shared-secret-of-32-bytes-long\n");
    let sync = format!(
        "{GOOD}\n[sync]\nlisten = \"10.0.0.1:7400\"\npeer = \"10.0.0.2:7400\"\nkey_file = \"{}\"\n",
        kf.display()
    );
    Config::parse(&admin, &eph()).unwrap();
    Config::parse(&sync, &eph()).unwrap();
    for (file, text, key) in [
        (&tf, &admin, "admin.token_file"),
        (&kf, &sync, "sync.key_file"),
    ] {
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = err(text);
            let want = format!("{key}: `{}` has mode {mode:04o}", file.display());
            assert!(e.contains(&want), "error `{e}` should contain `{want}`");
            assert!(e.contains("chmod 600"), "{e}");
        }
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o400)).unwrap();
        Config::parse(text, &eph()).unwrap_or_else(|e| panic!("0400 {key}: {e}"));
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // A reload keeps going: the problem is reported, the token left unset.
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cf = dir.path().join("sipfront.toml");
    std::fs::write(&cf, &admin).unwrap();
    assert!(Config::load(&cf).is_err());
    let c = Config::load_for_reload(&cf).unwrap();
    assert_eq!(c.admin.token, None);
    let why = c.admin.token_error.unwrap();
    assert!(
        why.contains("admin.token_file") && why.contains("0644"),
        "{why}"
    );
    std::fs::remove_file(&tf).unwrap();
    let c = Config::load_for_reload(&cf).unwrap();
    assert!(c.admin.token_error.unwrap().contains("cannot read"));
    // The sync key the same: a reload goes on, the running key stays, and says why.
    std::fs::write(&cf, &sync).unwrap();
    for (mode, want) in [(0o640, "has mode 0640"), (0o600, "at least 16 bytes")] {
        if mode == 0o600 {
            write_secret(&kf, "short");
        }
        std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(mode)).unwrap();
        assert!(Config::load(&cf).is_err());
        let s = Config::load_for_reload(&cf).unwrap().sync.unwrap();
        let why = s.key_error.unwrap();
        assert!(why.contains("sync.key_file") && why.contains(want), "{why}");
        assert!(s.key.as_bytes().is_empty());
    }
    std::fs::remove_file(&kf).unwrap();
    let s = Config::load_for_reload(&cf).unwrap().sync.unwrap();
    assert!(s.key_error.unwrap().contains("cannot read"));
}

#[test]
fn vrrp_section() {
    let text = format!(
        "{GOOD}\n[vrrp]\ninterface = \"eth0\"\nvrid = 51\npriority = 150\nadvert_interval = \"30ms\"\nvips = [\"203.0.113.10/24\", \"10.1.0.10/24 dev eth1\"]\npeers = [\"10.0.0.2\"]\n"
    );
    let c = Config::parse(&text, &eph()).unwrap();
    let v = c.vrrp.as_ref().unwrap();
    assert_eq!((v.vrid, v.priority, v.track_backends), (51, 150, 50));
    assert_eq!(v.advert_interval, Duration::from_millis(30));
    assert_eq!(v.vips[1].dev.as_deref(), Some("eth1"));
    assert_eq!(Config::parse(&c.to_string(), &eph()).unwrap(), c);
    let cases: &[(&str, &str)] = &[
        (
            "[vrrp]\nvrid = 1\nvips = [\"10.0.0.1/24\"]\n",
            "vrrp.interface",
        ),
        (
            "[vrrp]\ninterface = \"e\"\nvips = [\"10.0.0.1/24\"]\n",
            "vrrp.vrid",
        ),
        (
            "[vrrp]\ninterface = \"a-name-of-16-chr\"\nvrid = 1\nvips = [\"10.0.0.1/24\"]\n",
            "vrrp.interface: `a-name-of-16-chr` is not an interface name",
        ),
        (
            "[vrrp]\ninterface = \"eth0:1\"\nvrid = 1\nvips = [\"10.0.0.1/24\"]\n",
            "vrrp.interface: `eth0:1` is not an interface name",
        ),
        (
            "[vrrp]\ninterface = \"e\"\nvrid = 1\nvips = [\"10.0.0.1/24 dev ../x\"]\n",
            "vrrp.vips[0]: `../x` is not an interface name",
        ),
        (
            "[vrrp]\ninterface = \"e\"\nvrid = 0\nvips = [\"10.0.0.1/24\"]\n",
            "vrrp.vrid",
        ),
        (
            "[vrrp]\ninterface = \"e\"\nvrid = 1\nvips = []\n",
            "vrrp.vips",
        ),
        (
            "[vrrp]\ninterface = \"e\"\nvrid = 1\nvips = [\"10.0.0.1\"]\n",
            "vrrp.vips[0]",
        ),
        (
            "[vrrp]\ninterface = \"e\"\nvrid = 1\nvips = [\"10.0.0.1/24\"]\nadvert_interval = \"15ms\"\n",
            "vrrp.advert_interval",
        ),
        (
            "[vrrp]\ninterface = \"e\"\nvrid = 1\nvips = [\"10.0.0.1/24\"]\npeers = [\"x\"]\n",
            "vrrp.peers[0]",
        ),
        (
            "[vrrp]\ninterface = \"e\"\nvrid = 1\nvips = [\"10.0.0.1/24\"]\npeers = [\"10.0.0.2\", \"10.0.0.2\"]\n",
            "vrrp.peers[1]: 10.0.0.2 is listed twice",
        ),
        (
            "[vrrp]\ninterface = \"e\"\nvrid = 1\nvips = [\"10.0.0.1/24\"]\nprio = 3\n",
            "vrrp.prio",
        ),
    ];
    for (extra, want) in cases {
        let e = err(&format!("{GOOD}\n{extra}"));
        assert!(e.contains(want), "error `{e}` should mention `{want}`");
    }
    // One advert lists every address: 255 at most (was refused only at start, with
    // exit 1 and no key named); bursts and refreshes have bounds of their own.
    let vips = |n: usize| {
        let v: Vec<String> = (0..n)
            .map(|i| format!("\"10.{}.{}.1/24\"", i / 256, i % 256))
            .collect();
        format!(
            "[vrrp]\ninterface = \"e\"\nvrid = 1\nvips = [{}]\n",
            v.join(", ")
        )
    };
    assert!(Config::parse(&format!("{GOOD}\n{}", vips(255)), &eph()).is_ok());
    let e = err(&format!("{GOOD}\n{}", vips(256)));
    assert!(e.starts_with("vrrp.vips: at most 255"), "{e}");
    let one = vips(1);
    for (extra, want) in [
        ("garp_refresh = \"1ms\"\n", "vrrp.garp_refresh: at least 1s"),
        ("garp_repeat = 0\n", "vrrp.garp_repeat"),
        ("garp_repeat = 101\n", "vrrp.garp_repeat"),
    ] {
        let e = err(&format!("{GOOD}\n{one}{extra}"));
        assert!(
            e.starts_with(want),
            "error `{e}` should start with `{want}`"
        );
    }
}

#[test]
fn sync_section() {
    let dir = tempfile::tempdir().unwrap();
    let kf = dir.path().join("key");
    write_secret(&kf, "a-shared-secret-of-32-bytes-long\n");
    let text = format!(
        "{GOOD}\n[sync]\nlisten = \"10.0.0.1:7400\"\npeer = \"10.0.0.2:7400\"\nkey_file = \"{}\"\n",
        kf.display()
    );
    let c = Config::parse(&text, &eph()).unwrap();
    let s = c.sync.as_ref().unwrap();
    assert_eq!(s.peer, "10.0.0.2:7400".parse().unwrap());
    assert_eq!(s.previous_key_grace, Duration::from_secs(300));
    assert_eq!(s.key_error, None);
    let c2 = Config::parse(&format!("{text}previous_key_grace = \"30s\"\n"), &eph()).unwrap();
    assert_eq!(
        c2.sync.as_ref().unwrap().previous_key_grace,
        Duration::from_secs(30)
    );
    assert_eq!(Config::parse(&c2.to_string(), &eph()).unwrap(), c2);
    let e = err(&format!("{text}previous_key_grace = \"10ms\"\n"));
    assert!(e.contains("sync.previous_key_grace"), "{e}");
    let e = err(&format!("{text}previous_key_grace = \"25h\"\n"));
    assert!(
        e.contains("sync.previous_key_grace: must be at most 1d"),
        "{e}"
    );
    assert_eq!(
        (s.max_turn_changes, s.max_pending_changes, s.receive_buffer),
        (8192, 65_536, 8 << 20),
        "the queue bounds' defaults"
    );
    let e = err(&format!("{text}receive_buffer = 1000\n"));
    assert!(
        e.contains("sync.receive_buffer: 1000 is not between"),
        "{e}"
    );
    let c4 = Config::parse(&format!("{text}receive_buffer = 65536\n"), &eph()).unwrap();
    assert_eq!(c4.sync.as_ref().unwrap().receive_buffer, 65_536);
    let c3 = Config::parse(&format!("{text}max_turn_changes = 100000\n"), &eph()).unwrap();
    let s3 = c3.sync.as_ref().unwrap();
    assert_eq!(
        (s3.max_turn_changes, s3.max_pending_changes),
        (100_000, 100_000),
        "the pending bound follows a larger turn bound"
    );
    assert_eq!(Config::parse(&c3.to_string(), &eph()).unwrap(), c3);
    for (extra, want) in [
        (
            "max_turn_changes = 8191",
            "sync.max_turn_changes: must be between 8192",
        ),
        (
            "max_turn_changes = 1048577",
            "sync.max_turn_changes: must be between 8192",
        ),
        (
            "max_pending_changes = 8191",
            "sync.max_pending_changes: must be at least sync.max_turn_changes",
        ),
        (
            "max_pending_changes = 4194305",
            "sync.max_pending_changes: must be at least",
        ),
    ] {
        let e = err(&format!("{text}{extra}\n"));
        assert!(e.contains(want), "{extra}: {e}");
    }
    assert!(
        !format!("{c:?} {c}").contains("a-shared-secret"),
        "key leaks"
    );
    assert_eq!(Config::parse(&c.to_string(), &eph()).unwrap(), c);
    let short = dir.path().join("short");
    write_secret(&short, "tiny");
    let cases = [
        (
            "[sync]\nlisten = \"10.0.0.1:7400\"\npeer = \"10.0.0.2:7400\"\n".to_string(),
            "sync.key_file: is required",
        ),
        (
            format!(
                "[sync]\nlisten = \"10.0.0.1:7400\"\npeer = \"10.0.0.2:7400\"\nkey_file = \"{}\"\n",
                short.display()
            ),
            "at least 16 bytes",
        ),
        (
            format!(
                "[sync]\nlisten = \"10.0.0.1:7400\"\nkey_file = \"{}\"\n",
                kf.display()
            ),
            "sync.peer",
        ),
        (
            "[sync]\nlisten = \"0.0.0.0:7400\"\npeer = \"10.0.0.2:7400\"\n".to_string(),
            "sync.listen",
        ),
        (
            format!(
                "[sync]\nlisten = \"10.0.0.1:7400\"\npeer = \"10.0.0.1:7400\"\nkey_file = \"{}\"\n",
                kf.display()
            ),
            "sync.peer: is sync.listen itself",
        ),
        (
            "[sync]\nlisten = \"10.0.0.1:7400\"\npeer = \"10.0.0.2:7400\"\nkey_file = \"/nonexistent/key\"\n".to_string(),
            "sync.key_file: cannot read `/nonexistent/key`",
        ),
        (
            format!(
                "[sync]\nlisten = \"10.0.0.1:7400\"\npeer = \"10.0.0.2:7400\"\nkey_file = \"{}\"\n",
                short.display()
            ),
            "sync.key_file: ",
        ),
    ];
    for (extra, want) in cases {
        let e = err(&format!("{GOOD}\n{extra}"));
        assert!(e.contains(want), "error `{e}` should mention `{want}`");
    }
}

/// Sections and keys that a config file shows, as `section` and `section.key`: every
/// `[section]` / `[[section]]` header and every `key = value` line under it, whether active
/// or commented out (`# key = default`). Prose comments do not count: a line counts only if,
/// after an optional `#`, it is a header or one TOML `key = value` pair.
fn documented(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut tables, mut keys) = (BTreeSet::new(), BTreeSet::new());
    let mut section = String::new();
    for line in text.lines() {
        let l = line.trim_start();
        let l = l.strip_prefix('#').unwrap_or(l).trim_start();
        if let Some(h) = l.strip_prefix('[') {
            let h = h.strip_prefix('[').unwrap_or(h);
            let Some((name, rest)) = h.split_once(']') else {
                continue;
            };
            let rest = rest.trim_start_matches(']').trim();
            let is_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.');
            if is_name && (rest.is_empty() || rest.starts_with('#')) {
                section = name.to_string();
                tables.insert(section.clone());
            }
            continue;
        }
        // `key = value` exactly when the line is one TOML key-value pair.
        let Ok(kv) = l.parse::<toml::Table>() else {
            continue;
        };
        for k in kv.keys() {
            keys.insert(if section.is_empty() {
                k.to_string()
            } else {
                format!("{section}.{k}")
            });
        }
    }
    (tables, keys)
}

/// deploy/sipfront.toml claims to show every key: compare it with the keys the parser
/// accepts, which keys.rs derives from the serde types (not from a list kept by hand).
#[test]
fn example_config_documents_every_key() {
    let accepted = keys::accepted();
    // The probe really walks the types: a few keys from each kind of place.
    for k in [
        "listen.sip",
        "listen.relay",
        "backend.name",
        "affinity.failback",
        "vrrp.garp_refresh",
        "sync.key_file",
        "admin.token_file",
    ] {
        assert!(accepted.keys.contains(k), "probe missed {k}: {accepted:?}");
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/sipfront.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let (tables, keys) = documented(&text);
    let missing: Vec<_> = accepted
        .tables
        .difference(&tables)
        .chain(accepted.keys.difference(&keys))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/sipfront.toml does not show these accepted sections/keys \
         (add them, as `# key = default` if optional): {missing:?}"
    );
    let unknown: Vec<_> = tables
        .difference(&accepted.tables)
        .chain(keys.difference(&accepted.keys))
        .collect();
    assert!(
        unknown.is_empty(),
        "deploy/sipfront.toml shows sections/keys the parser rejects: {unknown:?}"
    );
}

/// The commented-out keys in the active sections of deploy/sipfront.toml show the defaults:
/// uncommenting them changes nothing. (`admin.token_file` has no default: its value is an
/// example path.)
#[test]
fn example_config_comments_show_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/sipfront.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut active = false;
    let mut uncommented = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            active = true;
        } else if line.starts_with("# [") {
            active = false;
        }
        let kv = line.strip_prefix("# ").filter(|l| {
            // Not defaults: a file to supply, and prefix mode (the alternative to
            // relay / relay_ports).
            active
                && !["token_file", "relay_prefix", "relay_port "]
                    .iter()
                    .any(|k| l.starts_with(k))
                && l.parse::<toml::Table>().is_ok()
        });
        uncommented.push_str(kv.unwrap_or(line));
        uncommented.push('\n');
    }
    assert_ne!(uncommented, text, "no commented-out defaults found");
    let as_shipped = Config::parse(&text, &eph()).unwrap();
    let spelled_out = Config::parse(&uncommented, &eph()).unwrap();
    assert_eq!(
        as_shipped, spelled_out,
        "a `# key = value` comment is not the default"
    );
}

#[test]
fn peers_are_checked_and_errors_name_the_key() {
    let peer = |body: &str| format!("{GOOD}\n[[peer]]\n{body}\n");
    let ok = peer(
        "name = \"c\"\naddr = [\"192.0.2.5:5060\", \"192.0.2.6:5060\"]\nrelay = \"127.0.0.1:5100\"\nbackends = [\"b\"]",
    );
    let c = Config::parse(&ok, &eph()).unwrap();
    assert_eq!(c.peers.len(), 1);
    assert_eq!(c.peers[0].addrs.len(), 2);
    assert_eq!(c.peers[0].backends, ["b"]);
    let two = format!(
        "{ok}\n[[peer]]\nname = \"d\"\naddr = \"192.0.2.7:5060\"\nrelay = \"127.0.0.1:5100\"\n"
    );
    let cases: &[(String, &str)] = &[
        (
            peer("name = \"c\"\naddr = \"192.0.2.5:5060\"\nrelay = \"127.0.0.9:5100\""),
            "peer[0].relay: 127.0.0.9 is not one of the listen.relay addresses",
        ),
        (
            peer("name = \"c\"\naddr = \"192.0.2.5:5060\"\nrelay = \"127.0.0.1:5060\""),
            "peer[0].relay: 127.0.0.1:5060 is a listen.sip address",
        ),
        (
            two.clone(),
            "peer[1].relay: 127.0.0.1:5100 is peer `c`'s relay endpoint too",
        ),
        (
            two.replace("name = \"d\"", "name = \"c\""),
            "peer[1].name: duplicate peer name `c`",
        ),
        (
            two.replace("192.0.2.7:5060", "192.0.2.6:5060"),
            "peer[1].addr: 192.0.2.6:5060 is listed for more than one peer",
        ),
        (
            peer(
                "name = \"c\"\naddr = \"192.0.2.5:5060\"\nrelay = \"127.0.0.1:5100\"\nbackends = [\"zz\"]",
            ),
            "peer[0].backends[0]: no backend named `zz`",
        ),
        (
            peer("name = \"c\"\naddr = \"0.0.0.0:5060\"\nrelay = \"127.0.0.1:5100\""),
            "peer[0].addr: needs a concrete IP and a non-zero port",
        ),
        (
            peer("name = \"c\"\naddr = \"[2001:db8::1]:5060\"\nrelay = \"127.0.0.1:5100\""),
            "peer[0].addr: no listen.sip address of its IP family",
        ),
        (
            peer("name = \"c\"\nrelay = \"127.0.0.1:5100\""),
            "peer[0].addr: needs at least one",
        ),
    ];
    for (text, want) in cases {
        let e = err(text);
        assert!(e.contains(want), "error `{e}` should mention `{want}`");
    }
}

/// `[[limits.source]]`: resolved against `[limits]`, errors naming the entry's key.
#[test]
fn limits_source_overrides() {
    let text = format!(
        "{GOOD}\n[limits]\ndatagrams_per_ip = 10\n\n[[limits.source]]\ncidr = \"198.51.100.0/24\"\nmax_flows_per_ip = 900\ndatagrams_per_ip = 300\nmax_pins_per_ip = 77\n\n[[limits.source]]\ncidr = \"2001:db8::/48\"\nnew_flows_burst = 400\n"
    );
    let c = Config::parse(&text, &eph()).unwrap();
    let g = c.limits.per_source();
    let [a, b] = &c.limits.source[..] else {
        panic!("{:?}", c.limits.source)
    };
    assert_eq!(a.cidr.to_string(), "198.51.100.0/24");
    assert_eq!(
        (
            a.limits.max_flows_per_ip,
            a.limits.datagrams_per_ip,
            a.limits.datagrams_burst
        ),
        (900, 300, 600),
        "an omitted burst follows an overridden rate"
    );
    assert_eq!(a.limits.new_flows_per_ip, g.new_flows_per_ip);
    assert_eq!(a.limits.max_pins_per_ip, 77);
    assert_eq!(b.limits.max_pins_per_ip, g.max_pins_per_ip);
    assert_eq!(b.limits.new_flows_burst, 400);
    assert_eq!(
        (b.limits.datagrams_per_ip, b.limits.datagrams_burst),
        (10, 20),
        "the global ones"
    );
    assert_eq!(Config::parse(&c.to_string(), &eph()).unwrap(), c);
    let cases: &[(&str, &str)] = &[
        (
            "[[limits.source]]\nmax_flows_per_ip = 5\n",
            "limits.source[0].cidr: is required",
        ),
        (
            "[[limits.source]]\ncidr = \"10.0.0.0/8\"\n[[limits.source]]\ncidr = \"nonsense\"\n",
            "limits.source[1].cidr: `nonsense`",
        ),
        (
            "[[limits.source]]\ncidr = \"10.0.0.1/8\"\n",
            "limits.source[0].cidr",
        ),
        (
            "[[limits.source]]\ncidr = \"2001:db8::/96\"\n",
            "limits.source[0].cidr: `2001:db8::/96`: IPv6 sources are limited per /64",
        ),
        (
            "[[limits.source]]\ncidr = \"10.0.0.0/8\"\n[[limits.source]]\ncidr = \"10.0.0.0/8\"\n",
            "limits.source[1].cidr: `10.0.0.0/8` is listed twice",
        ),
        (
            "[[limits.source]]\ncidr = \"10.0.0.0/8\"\nmax_flows_per_ip = 0\n",
            "limits.source[0].max_flows_per_ip: must be at least 1",
        ),
        (
            "[[limits.source]]\ncidr = \"10.0.0.0/8\"\ndatagrams_per_ip = 0\n",
            "limits.source[0].datagrams_per_ip: must be at least 1",
        ),
        (
            "[[limits.source]]\ncidr = \"10.0.0.0/8\"\nmax_pins_per_ip = 0\n",
            "limits.source[0].max_pins_per_ip: must be at least 1",
        ),
        (
            "[[limits.source]]\ncidr = \"10.0.0.0/8\"\ndatagrams_burst = 5\n",
            "limits.source[0].datagrams_burst: 5 is less than the datagrams_per_ip that applies (20000)",
        ),
        (
            "[[limits.source]]\ncidr = \"10.0.0.0/8\"\nnew_flows_per_ip = 50\nnew_flows_burst = 10\n",
            "limits.source[0].new_flows_burst",
        ),
        (
            "[[limits.source]]\ncidr = \"10.0.0.0/8\"\nmax_flows = 5\n",
            "max_flows",
        ),
    ];
    for (extra, want) in cases {
        let e = err(&format!("{GOOD}\n{extra}"));
        assert!(e.contains(want), "error `{e}` should contain `{want}`");
    }
}

#[test]
fn lingering_records_default_to_the_dialog_table_capped() {
    let c = Config::parse(GOOD, &eph()).unwrap();
    assert_eq!(c.limits.max_lingering_records, 65_536);
    let small = Config::parse(&format!("{GOOD}[limits]\nmax_dialogs = 500\n"), &eph()).unwrap();
    assert_eq!(small.limits.max_lingering_records, 500);
    let set = Config::parse(
        &format!("{GOOD}[limits]\nmax_lingering_records = 1000\n"),
        &eph(),
    )
    .unwrap();
    assert_eq!(set.limits.max_lingering_records, 1000);
    assert_eq!(Config::parse(&set.to_string(), &eph()).unwrap(), set);
    for bad in [
        "max_lingering_records = 0",
        "max_dialogs = 500\nmax_lingering_records = 501",
        "max_dialogs = 2000000\nmax_lingering_records = 1048577",
    ] {
        let e = err(&format!("{GOOD}[limits]\n{bad}\n"));
        assert!(
            e.contains("limits.max_lingering_records: must be between 1 and limits.max_dialogs"),
            "{bad}: {e}"
        );
    }
    // A reload cannot resize the records: the running size stays, with a note.
    let mut reloaded = set.clone();
    let notes = reloaded.keep_restart_only(&c);
    assert!(
        notes.iter().any(|n| n.contains("max_lingering_records")),
        "{notes:?}"
    );
    assert_eq!(reloaded.limits.max_lingering_records, 65_536);
}

#[test]
fn capture_bounds_are_admin_keys() {
    let c = Config::parse(GOOD, &eph()).unwrap();
    assert_eq!(
        c.admin.capture,
        crate::config::CaptureLimits {
            sessions: 4,
            frames: 1024,
            bytes: 4 << 20
        }
    );
    let set = Config::parse(
        &format!(
            "{GOOD}[admin]\nmax_captures = 8\ncapture_queue = 4096\ncapture_queue_bytes = 1048576\n"
        ),
        &eph(),
    )
    .unwrap();
    assert_eq!(
        (
            set.admin.capture.sessions,
            set.admin.capture.frames,
            set.admin.capture.bytes
        ),
        (8, 4096, 1 << 20)
    );
    assert_eq!(Config::parse(&set.to_string(), &eph()).unwrap(), set);
    for (bad, key) in [
        (
            "max_captures = 0",
            "admin.max_captures: 0 is not between 1 and 64",
        ),
        ("max_captures = 65", "admin.max_captures"),
        (
            "capture_queue = 15",
            "admin.capture_queue: 15 is not between 16",
        ),
        (
            "capture_queue_bytes = 1000",
            "admin.capture_queue_bytes: 1000 is not between 131072",
        ),
        (
            "capture_queue_bytes = 1073741825",
            "admin.capture_queue_bytes",
        ),
        (
            "max_captures = 5\ncapture_queue_bytes = 268435456",
            "admin.capture_queue_bytes: 268435456 × admin.max_captures (5) is more than 1 GiB",
        ),
    ] {
        let e = err(&format!("{GOOD}[admin]\n{bad}\n"));
        assert!(e.contains(key), "{bad}: {e}");
    }
}

#[test]
fn receive_buffers_are_listen_keys() {
    let c = Config::parse(GOOD, &eph()).unwrap();
    assert_eq!(
        (c.listen.receive_buffer, c.listen.relay_receive_buffer),
        (8 << 20, 2 << 20)
    );
    let text = GOOD.replace(
        "relay_ports = \"20000-20999\"",
        "relay_ports = \"20000-20999\"\nreceive_buffer = 65536\nrelay_receive_buffer = 1073741824",
    );
    let set = Config::parse(&text, &eph()).unwrap();
    assert_eq!(
        (set.listen.receive_buffer, set.listen.relay_receive_buffer),
        (65_536, 1 << 30)
    );
    assert_eq!(Config::parse(&set.to_string(), &eph()).unwrap(), set);
    for (bad, want) in [
        (
            "receive_buffer = 65535",
            "listen.receive_buffer: 65535 is not between 65536 and 1073741824",
        ),
        (
            "relay_receive_buffer = 1073741825",
            "listen.relay_receive_buffer",
        ),
    ] {
        let e = err(&GOOD.replace(
            "relay_ports = \"20000-20999\"",
            &format!("relay_ports = \"20000-20999\"\n{bad}"),
        ));
        assert!(e.contains(want), "{bad}: {e}");
    }
}
