//! sipfront's own UDP endpoints (public, relay, sync) must not be named as anything
//! else: a backend there would be a loop (checked with the backend's other rules,
//! `validate::check_backend_against_listen`), and a sync socket there would take a
//! relay endpoint (every flow handed it then fails) or fail to bind at start.

use std::net::SocketAddr;

use super::{Config, ConfigError, Listen, invalid};

/// Whether binding `a` here would take one of the relay sockets' endpoints: in port
/// mode a relay address on a relay port; in prefix mode any address of its family on
/// a relay port (the relay sockets bind the wildcard address).
fn binds_a_relay_endpoint(listen: &Listen, a: SocketAddr) -> bool {
    match &listen.relay_prefix {
        Some(p) => p.net.is_ipv4() == a.is_ipv4() && p.ports.contains(&a.port()),
        None => listen.relay.contains(&a.ip()) && listen.relay_ports.contains(&a.port()),
    }
}

/// Whether sending to `a` would reach one of the relay sockets: a relay address (port
/// mode) or a public address (whose host the wildcard relay sockets of prefix mode
/// listen on) on a relay port. Addresses inside the prefix are refused on their own
/// (`prefix::check_outside_prefix`); other hosts' addresses on those ports are not
/// ours.
pub(super) fn reaches_a_relay_endpoint(listen: &Listen, a: SocketAddr) -> bool {
    match &listen.relay_prefix {
        Some(p) => p.ports.contains(&a.port()) && listen.sip.iter().any(|s| s.ip() == a.ip()),
        None => binds_a_relay_endpoint(listen, a),
    }
}

/// `sync.listen` must be a port of its own.
pub(super) fn check_own_endpoints(cfg: &Config) -> Result<(), ConfigError> {
    let listen = &cfg.listen;
    if let Some(s) = &cfg.sync {
        let own = if listen.sip.contains(&s.listen) {
            Some("a listen.sip address")
        } else if binds_a_relay_endpoint(listen, s.listen) {
            Some("one of the relay endpoints (listen.relay / relay_ports, or relay_port)")
        } else {
            None
        };
        if let Some(what) = own {
            return Err(invalid(
                "sync.listen",
                format!(
                    "{} is {what}: give the sync socket a port of its own",
                    s.listen
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, EphemeralPorts};

    fn parse(listen: &str, rest: &str) -> Result<Config, String> {
        let text = format!(
            "[listen]\nsip = [\"127.0.0.1:5060\"]\n{listen}\n\n[[backend]]\nname = \"a\"\n\
             addr = \"127.0.0.2:5060\"\n{rest}"
        );
        Config::parse(&text, &EphemeralPorts::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_backend_or_the_sync_socket_on_an_own_endpoint_names_the_key() {
        let port_mode = "relay = \"127.0.0.1\"\nrelay_ports = \"20000-20999\"";
        let prefix = "relay_prefix = \"127.16.0.0/16\"\nrelay_port = 5062";
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "a-shared-secret-of-32-bytes-long\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let sync = |listen: &str| {
            format!(
                "[sync]\nlisten = \"{listen}\"\npeer = \"127.0.0.9:7000\"\nkey_file = \"{}\"\n",
                key.display()
            )
        };
        let backend = "[[backend]]\nname = \"b\"\naddr = \"127.0.0.1:20001\"\n";
        for (listen, rest, want) in [
            (
                port_mode,
                backend.to_string(),
                "backend[1].addr: 127.0.0.1:20001 is one of sipfront's own relay endpoints",
            ),
            (
                port_mode,
                sync("127.0.0.1:20500"),
                "sync.listen: 127.0.0.1:20500 is one of the relay endpoints",
            ),
            (
                port_mode,
                sync("127.0.0.1:5060"),
                "sync.listen: 127.0.0.1:5060 is a listen.sip address",
            ),
            (
                prefix,
                sync("127.0.0.5:5062"),
                "sync.listen: 127.0.0.5:5062 is one of the relay endpoints",
            ),
            (
                prefix,
                "[[backend]]\nname = \"b\"\naddr = \"127.0.0.1:5062\"\n".to_string(),
                "backend[1].addr: 127.0.0.1:5062 is one of sipfront's own relay endpoints",
            ),
        ] {
            let got = parse(listen, &rest).unwrap_err();
            assert!(got.contains(want), "{got}");
        }
        // A port of its own: accepted.
        parse(port_mode, &sync("127.0.0.1:7000")).unwrap();
        parse(prefix, &sync("127.0.0.1:7000")).unwrap();
        parse(
            port_mode,
            "[[backend]]\nname = \"b\"\naddr = \"127.0.0.3:20001\"\n",
        )
        .unwrap();
        // Another host listening on the relay port is not ours (prefix mode binds the
        // wildcard address here, not there).
        parse(
            prefix,
            "[[backend]]\nname = \"b\"\naddr = \"127.0.0.3:5062\"\n",
        )
        .unwrap();
    }
}
