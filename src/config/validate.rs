//! [`raw::Raw`] -> [`Config`]: one `validate_*` per section, each error naming its key.
//! Defaults come from [`super::defaults`].

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use super::defaults::*;
use super::raw::{
    Raw, RawAdmin, RawAffinity, RawBackend, RawHealth, RawListen, RawSync, RawTimeouts,
};
use super::values::{Need, duration, parse_addr, socket_addr};
use super::{
    Admin, Backend, CaptureLimits, Config, ConfigError, EphemeralPorts, Failback, Health, Listen,
    Secret, SecretFiles, SyncConfig, Timeouts, format_duration, invalid, parse_port_range,
    parse_u16_range,
};

impl Raw {
    pub(super) fn validate(
        self,
        eph: &EphemeralPorts,
        secrets: SecretFiles,
    ) -> Result<Config, ConfigError> {
        let listen = validate_listen(self.listen, eph)?;
        let backends = validate_backends(&self.backend, &listen)?;
        let cfg = Config {
            failback: validate_affinity(self.affinity),
            limits: super::limits::validate_limits(self.limits.unwrap_or_default(), &listen)?,
            timeouts: validate_timeouts(self.timeouts.unwrap_or_default())?,
            admin: validate_admin(self.admin, secrets)?,
            health: validate_health(self.health.unwrap_or_default())?,
            vrrp: self.vrrp.map(super::vrrp::validate_vrrp).transpose()?,
            sync: self.sync.map(|s| validate_sync(s, secrets)).transpose()?,
            peers: super::peers::validate_peers(&self.peer, &listen, &backends)?,
            hep: self.hep.map(super::hep::validate_hep).transpose()?,
            access: super::access::validate_access(self.access.unwrap_or_default())?,
            listen,
            backends,
        };
        super::prefix::check_outside_prefix(&cfg)?;
        super::endpoints::check_own_endpoints(&cfg)?;
        Ok(cfg)
    }
}

/// The key of entry `i` of a list: `key[i]`.
pub(super) fn indexed(key: &str, i: usize) -> String {
    format!("{key}[{i}]")
}

// ---------------------------------------------------------------------------------------
// [listen]
// ---------------------------------------------------------------------------------------

fn validate_listen(raw: Option<RawListen>, eph: &EphemeralPorts) -> Result<Listen, ConfigError> {
    let listen = raw.ok_or_else(|| invalid("listen", "section is required"))?;
    if listen.sip.is_empty() {
        return Err(invalid("listen.sip", "needs at least one address"));
    }
    if listen.sip.len() > MAX_LISTEN_SIP {
        return Err(invalid(
            "listen.sip",
            format!("{} addresses: at most {MAX_LISTEN_SIP}", listen.sip.len()),
        ));
    }
    let mut sip = Vec::new();
    for (i, s) in listen.sip.iter().enumerate() {
        let key = indexed("listen.sip", i);
        let a = socket_addr(&key, s, Need::Port)?;
        if a.ip().is_unspecified() {
            // A wildcard socket sends from whichever address the kernel's route picks, not
            // from the one the phone sent to: its NAT would drop every reply.
            return Err(invalid(
                &key,
                "must be a concrete address (replies must leave from the address the phone \
                 sent to; list each public address, a floating one too)",
            ));
        }
        if sip.contains(&a) {
            return Err(invalid(&key, format!("`{a}` is listed twice")));
        }
        sip.push(a);
    }
    let forward_keepalives = listen
        .forward_keepalives
        .unwrap_or(DEFAULT_FORWARD_KEEPALIVES);
    let receive_buffer = bytes(
        "listen.receive_buffer",
        listen.receive_buffer,
        DEFAULT_RECEIVE_BUFFER,
    )?;
    let relay_receive_buffer = bytes(
        "listen.relay_receive_buffer",
        listen.relay_receive_buffer,
        DEFAULT_RELAY_RECEIVE_BUFFER,
    )?;
    if let Some(text) = listen.relay_prefix.as_deref() {
        if listen.relay.is_some() || listen.relay_ports.is_some() {
            return Err(invalid(
                "listen.relay_prefix",
                "set either listen.relay / relay_ports (port mode) or listen.relay_prefix / \
                 relay_port (prefix mode), not both",
            ));
        }
        let ports = match listen.relay_port.as_ref().map(|p| p.to_vec()) {
            Some(Err(e)) => return Err(invalid("listen.relay_port", e)),
            Some(Ok(v)) => Some(v),
            None => None,
        };
        let prefix = super::prefix::validate_relay_prefix(text, ports, &sip, eph)?;
        return Ok(Listen {
            sip,
            relay: Vec::new(),
            // Empty: prefix mode has no port range.
            relay_ports: RangeInclusive::new(1, 0),
            relay_prefix: Some(prefix),
            forward_keepalives,
            receive_buffer,
            relay_receive_buffer,
        });
    }
    if listen.relay_port.is_some() {
        return Err(invalid(
            "listen.relay_port",
            "only with listen.relay_prefix (prefix mode); port mode uses listen.relay_ports",
        ));
    }
    let relay = validate_relay(listen.relay.as_deref(), sip[0].ip())?;
    let relay_ports = validate_relay_ports(listen.relay_ports.as_deref(), &sip, &relay, eph)?;
    Ok(Listen {
        sip,
        relay,
        relay_ports,
        relay_prefix: None,
        forward_keepalives,
        receive_buffer,
        relay_receive_buffer,
    })
}

/// The count in `key`: `default` when absent, and within `range`.
fn in_range(
    key: &str,
    v: Option<usize>,
    default: usize,
    range: RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    let n = v.unwrap_or(default);
    if range.contains(&n) {
        return Ok(n);
    }
    Err(invalid(
        key,
        format!("{n} is not between {} and {}", range.start(), range.end()),
    ))
}

/// A socket receive buffer in `key`, in bytes ([`RECEIVE_BUFFER_RANGE`]).
fn bytes(key: &str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    in_range(key, v, default, RECEIVE_BUFFER_RANGE)
}

/// Relay addresses default to the first SIP address; a flow's endpoint stores the
/// address's position in one byte.
fn validate_relay(list: Option<&[String]>, default: IpAddr) -> Result<Vec<IpAddr>, ConfigError> {
    let Some(list) = list else {
        return Ok(vec![default]);
    };
    if list.is_empty() {
        return Err(invalid("listen.relay", "needs at least one address"));
    }
    if list.len() > usize::from(u8::MAX) + 1 {
        return Err(invalid("listen.relay", "at most 256 addresses"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let key = if list.len() == 1 {
            "listen.relay".to_string()
        } else {
            indexed("listen.relay", i)
        };
        let ip: IpAddr = parse_addr(&key, s)?;
        if ip.is_unspecified() {
            return Err(invalid(
                &key,
                "must be a concrete address (backends store it as the phone's path back)",
            ));
        }
        if out.contains(&ip) {
            return Err(invalid(&key, format!("`{ip}` is listed twice")));
        }
        if out
            .first()
            .is_some_and(|f: &IpAddr| f.is_ipv4() != ip.is_ipv4())
        {
            // A flow's slot would decide whether it can reach an IPv4 backend.
            return Err(invalid(
                &key,
                "all relay addresses must be of one IP family",
            ));
        }
        out.push(ip);
    }
    Ok(out)
}

fn validate_relay_ports(
    text: Option<&str>,
    sip: &[SocketAddr],
    relay: &[IpAddr],
    eph: &EphemeralPorts,
) -> Result<RangeInclusive<u16>, ConfigError> {
    const KEY: &str = "listen.relay_ports";
    let rp_text = text.unwrap_or(DEFAULT_RELAY_PORTS);
    let relay_ports = parse_port_range(rp_text).map_err(|r| invalid(KEY, r))?;
    for a in sip {
        if relay_ports.contains(&a.port()) && relay.contains(&a.ip()) {
            return Err(invalid(
                KEY,
                format!("range {rp_text} contains the listen port {}", a.port()),
            ));
        }
    }
    if let Some(p) = eph.first_conflict(&relay_ports) {
        return Err(invalid(
            KEY,
            format!(
                "range {rp_text} overlaps the kernel's ephemeral range {}-{} (first: {p}); \
                 any socket could take a relay port a flow needs. Move the range below {} \
                 or reserve it in net.ipv4.ip_local_reserved_ports",
                eph.range.start(),
                eph.range.end(),
                eph.range.start()
            ),
        ));
    }
    Ok(relay_ports)
}

// ---------------------------------------------------------------------------------------
// [[backend]]
// ---------------------------------------------------------------------------------------

/// What a backend's address must not be, given `[listen]`: one of sipfront's own
/// public addresses or relay endpoints (a loop), or of the other family than the relay addresses
/// (nothing could be sent to it). Also run by a reload against the running `[listen]`.
pub(super) fn check_backend_against_listen(
    i: usize,
    addr: SocketAddr,
    listen: &Listen,
) -> Result<(), ConfigError> {
    let addr_key = || format!("backend[{i}].addr");
    if listen.sip.contains(&addr) {
        return Err(invalid(
            addr_key(),
            "is one of sipfront's own listen addresses",
        ));
    }
    if super::endpoints::reaches_a_relay_endpoint(listen, addr) {
        return Err(invalid(
            addr_key(),
            format!("{addr} is one of sipfront's own relay endpoints"),
        ));
    }
    // Relayed datagrams leave from the relay addresses (or the prefix): a backend of
    // the other family could be probed (the prober has sockets of both) but never
    // sent to.
    let relay_v4 = match &listen.relay_prefix {
        Some(p) => p.net.is_ipv4(),
        None => listen.relay.first().is_none_or(IpAddr::is_ipv4),
    };
    if let IpAddr::V6(a) = addr.ip()
        && let Some(v4) = a.to_ipv4_mapped()
    {
        // Relay sockets of IPv6 are IPv6-only: every send to it would fail, while the
        // prober's dual-stack socket reaches it over IPv4 and reports it up.
        return Err(invalid(
            addr_key(),
            format!("{a} is IPv4-mapped: write the IPv4 address ({v4})"),
        ));
    }
    if addr.is_ipv4() != relay_v4 {
        let (have, relays) = if relay_v4 {
            ("IPv6", "IPv4")
        } else {
            ("IPv4", "IPv6")
        };
        return Err(invalid(
            addr_key(),
            format!(
                "an {have} backend, but the relay addresses (listen.relay or \
                 listen.relay_prefix) are {relays}: nothing could be sent to it"
            ),
        ));
    }
    Ok(())
}

fn validate_backends(raw: &[RawBackend], listen: &Listen) -> Result<Vec<Backend>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid("backend", "at least one [[backend]] is required"));
    }
    if raw.len() > usize::from(u16::MAX) {
        return Err(invalid("backend", "too many backends"));
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut backends = Vec::with_capacity(raw.len());
    for (i, b) in raw.iter().enumerate() {
        let name_key = format!("backend[{i}].name");
        let name_ok = !b.name.is_empty()
            && b.name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
        if !name_ok {
            return Err(invalid(
                name_key,
                format!(
                    "`{}` must be non-empty letters, digits, `-`, `_` or `.`",
                    b.name
                ),
            ));
        }
        if !names.insert(b.name.as_str()) {
            return Err(invalid(name_key, format!("`{}` is used twice", b.name)));
        }
        let addr_key = format!("backend[{i}].addr");
        let addr = socket_addr(&addr_key, &b.addr, Need::Concrete)?;
        if !addrs.insert(addr) {
            return Err(invalid(
                addr_key,
                format!("`{addr}` is used by two backends"),
            ));
        }
        check_backend_against_listen(i, addr, listen)?;
        backends.push(Backend {
            name: b.name.clone(),
            addr,
        });
    }
    Ok(backends)
}

// ---------------------------------------------------------------------------------------
// [affinity]
// ---------------------------------------------------------------------------------------

fn validate_affinity(raw: Option<RawAffinity>) -> Failback {
    raw.and_then(|a| a.failback).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// [timeouts]
// ---------------------------------------------------------------------------------------

fn validate_timeouts(t: RawTimeouts) -> Result<Timeouts, ConfigError> {
    Ok(Timeouts {
        flow_idle: duration(
            "timeouts.flow_idle",
            t.flow_idle.as_deref(),
            DEFAULT_FLOW_IDLE,
            Duration::from_secs(1),
        )?,
        register_grace: duration(
            "timeouts.register_grace",
            t.register_grace.as_deref(),
            DEFAULT_REGISTER_GRACE,
            Duration::ZERO,
        )?,
        dialog_idle: duration(
            "timeouts.dialog_idle",
            t.dialog_idle.as_deref(),
            DEFAULT_DIALOG_IDLE,
            Duration::from_secs(1),
        )?,
        transaction: duration(
            "timeouts.transaction",
            t.transaction.as_deref(),
            DEFAULT_TRANSACTION,
            Duration::from_millis(100),
        )?,
        unanswered_idle: duration(
            "timeouts.unanswered_idle",
            t.unanswered_idle.as_deref(),
            DEFAULT_UNANSWERED_IDLE,
            Duration::from_secs(1),
        )?,
        max_registration: duration(
            "timeouts.max_registration",
            t.max_registration.as_deref(),
            DEFAULT_MAX_REGISTRATION,
            Duration::from_secs(60),
        )?,
    })
}

// ---------------------------------------------------------------------------------------
// [admin]
// ---------------------------------------------------------------------------------------

fn validate_admin(raw: Option<RawAdmin>, mode: SecretFiles) -> Result<Admin, ConfigError> {
    let a = raw.unwrap_or(RawAdmin {
        listen: None,
        token_file: None,
        max_connections: None,
        header_timeout: None,
        idle_timeout: None,
        max_captures: None,
        capture_queue: None,
        capture_queue_bytes: None,
    });
    let listen = match a.listen {
        Some(s) => socket_addr("admin.listen", &s, Need::Any)?,
        None => DEFAULT_ADMIN_LISTEN,
    };
    let max_connections = match a.max_connections {
        None => DEFAULT_ADMIN_MAX_CONNECTIONS,
        Some(n) if (1..=10_000).contains(&n) => n,
        Some(n) => {
            return Err(invalid(
                "admin.max_connections",
                format!("{n} is not between 1 and 10000"),
            ));
        }
    };
    let header_timeout = duration(
        "admin.header_timeout",
        a.header_timeout.as_deref(),
        DEFAULT_ADMIN_HEADER_TIMEOUT,
        Duration::from_millis(100),
    )?;
    let idle_timeout = duration(
        "admin.idle_timeout",
        a.idle_timeout.as_deref(),
        DEFAULT_ADMIN_IDLE_TIMEOUT,
        Duration::from_millis(100),
    )?;
    let capture = CaptureLimits {
        sessions: in_range(
            "admin.max_captures",
            a.max_captures,
            DEFAULT_MAX_CAPTURES,
            1..=64,
        )?,
        frames: in_range(
            "admin.capture_queue",
            a.capture_queue,
            DEFAULT_CAPTURE_QUEUE,
            16..=1 << 20,
        )?,
        // A frame is a datagram of up to 64 KiB: the queue holds one at least.
        bytes: in_range(
            "admin.capture_queue_bytes",
            a.capture_queue_bytes,
            DEFAULT_CAPTURE_QUEUE_BYTES,
            1 << 17..=1 << 30,
        )?,
    };
    if capture.sessions.saturating_mul(capture.bytes) > 1 << 30 {
        return Err(invalid(
            "admin.capture_queue_bytes",
            format!(
                "{} × admin.max_captures ({}) is more than 1 GiB of queued captures",
                capture.bytes, capture.sessions
            ),
        ));
    }
    let token_file = a.token_file;
    let (token, token_error) = match (token_file.as_deref().map(read_token), mode) {
        (None, _) => (None, None),
        (Some(Ok(t)), _) => (Some(t), None),
        (Some(Err(e)), SecretFiles::Required) => return Err(e),
        (Some(Err(e)), SecretFiles::KeepOnError) => (None, Some(e.to_string())),
    };
    if token_file.is_none() && !listen.ip().is_loopback() {
        return Err(invalid(
            "admin.token_file",
            format!("required when admin.listen ({listen}) is not a loopback address"),
        ));
    }
    Ok(Admin {
        listen,
        token,
        token_file,
        token_error,
        max_connections,
        header_timeout,
        idle_timeout,
        capture,
    })
}

/// The admin token in `path`: private, UTF-8, at least 16 characters.
fn read_token(path: &str) -> Result<String, ConfigError> {
    let t = read_secret("admin.token_file", path)?;
    let t = String::from_utf8(t).map_err(|_| {
        invalid(
            "admin.token_file",
            format!("`{path}` does not hold UTF-8 text"),
        )
    })?;
    if t.len() < 16 {
        return Err(invalid(
            "admin.token_file",
            format!("`{path}` must hold a token of at least 16 characters"),
        ));
    }
    // It travels in an HTTP header: anything else could never match.
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "admin.token_file",
            format!(
                "`{path}` must hold printable ASCII without spaces (it travels in the \
                 Authorization header)"
            ),
        ));
    }
    Ok(t)
}

/// A secret file's size at most (a key or token is tens of bytes).
const MAX_SECRET_BYTES: usize = 4096;

/// `listen.sip` addresses at most (each a socket; the dataplane numbers them in 16 bits).
const MAX_LISTEN_SIP: usize = 1024;

/// Reads a secret file named by `key`, surrounding whitespace trimmed; read at parse time, so
/// a missing or unreadable file is a config error that names the key. The file must not be
/// readable or writable by group or others (mode & 0o077 == 0): a secret other local users
/// can read is no secret.
fn read_secret(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let cannot = |e: std::io::Error| invalid(key, format!("cannot read `{path}`: {e}"));
    // Non-blocking: opening a FIFO for reading would wait for a writer.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    // The mode of the file opened (fstat), not of whatever the path names a moment later.
    let meta = f.metadata().map_err(cannot)?;
    if !meta.is_file() {
        // A FIFO would block the start (or a reload) until someone writes to it.
        return Err(invalid(key, format!("`{path}` is not a regular file")));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(invalid(
            key,
            format!(
                "`{path}` has mode {mode:04o}: a secret must not be readable or writable by \
                 group or others; `chmod 600` it (owned by the user sipfront runs as)"
            ),
        ));
    }
    let mut bytes = Vec::new();
    f.take(MAX_SECRET_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(invalid(
            key,
            format!("`{path}` is larger than {MAX_SECRET_BYTES} bytes: not a key or token"),
        ));
    }
    Ok(bytes.trim_ascii().to_vec())
}

// ---------------------------------------------------------------------------------------
// [health]
// ---------------------------------------------------------------------------------------

fn validate_health(h: RawHealth) -> Result<Health, ConfigError> {
    let interval = duration(
        "health.interval",
        h.interval.as_deref(),
        DEFAULT_HEALTH_INTERVAL,
        Duration::from_millis(10),
    )?;
    let timeout = duration(
        "health.timeout",
        h.timeout.as_deref(),
        interval.min(DEFAULT_HEALTH_TIMEOUT),
        Duration::from_millis(5),
    )?;
    if timeout > interval {
        return Err(invalid(
            "health.timeout",
            format!(
                "{} is longer than health.interval ({}): one probe at a time",
                format_duration(timeout),
                format_duration(interval)
            ),
        ));
    }
    let count = |key: &str, v: Option<u32>, default: u32| match v {
        None => Ok(default),
        Some(n) if (1..=100).contains(&n) => Ok(n),
        Some(n) => Err(invalid(key, format!("{n} is not between 1 and 100"))),
    };
    let codes = h
        .alive_codes
        .unwrap_or_else(|| vec![DEFAULT_ALIVE_CODES.into()]);
    let mut alive_codes = Vec::with_capacity(codes.len());
    for (i, c) in codes.iter().enumerate() {
        let key = indexed("health.alive_codes", i);
        let r = parse_u16_range(c, "status code").map_err(|r| invalid(&key, r))?;
        if *r.start() < 100 || *r.end() > 699 {
            return Err(invalid(
                key,
                format!("`{c}` is outside the SIP codes 100-699"),
            ));
        }
        alive_codes.push(r);
    }
    if alive_codes.is_empty() {
        return Err(invalid(
            "health.alive_codes",
            "needs at least one code or range",
        ));
    }
    Ok(Health {
        interval,
        timeout,
        rise: count("health.rise", h.rise, DEFAULT_HEALTH_RISE)?,
        fall: count("health.fall", h.fall, DEFAULT_HEALTH_FALL)?,
        alive_codes,
        reply_503: h.reply_503.unwrap_or(DEFAULT_REPLY_503),
        retry_after: h.retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        reply_503_rate: match h.reply_503_rate {
            None => DEFAULT_REPLY_503_RATE,
            Some(n) if (1..=100_000).contains(&n) => n,
            Some(n) => {
                return Err(invalid(
                    "health.reply_503_rate",
                    format!("{n} is not between 1 and 100000"),
                ));
            }
        },
    })
}

// ---------------------------------------------------------------------------------------
// [sync]
// ---------------------------------------------------------------------------------------

fn validate_sync(r: RawSync, mode: SecretFiles) -> Result<SyncConfig, ConfigError> {
    let addr = |key: &str, v: Option<String>| {
        let s = v.ok_or_else(|| invalid(key, "is required in [sync]"))?;
        socket_addr(key, &s, Need::Concrete)
    };
    let listen = addr("sync.listen", r.listen)?;
    let peer = addr("sync.peer", r.peer)?;
    if peer == listen {
        return Err(invalid(
            "sync.peer",
            "is sync.listen itself: name the other host's [sync] listen",
        ));
    }
    let key_file = r.key_file.ok_or_else(|| {
        invalid(
            "sync.key_file",
            "is required: sync messages are authenticated",
        )
    })?;
    let previous_key_grace = duration(
        "sync.previous_key_grace",
        r.previous_key_grace.as_deref(),
        DEFAULT_PREVIOUS_KEY_GRACE,
        Duration::from_secs(1),
    )?;
    if previous_key_grace > MAX_PREVIOUS_KEY_GRACE {
        return Err(invalid(
            "sync.previous_key_grace",
            "must be at most 1d: the previous key stays trusted that long",
        ));
    }
    let max_turn_changes = r.max_turn_changes.unwrap_or(DEFAULT_SYNC_TURN_CHANGES);
    if !(8192..=1 << 20).contains(&max_turn_changes) {
        return Err(invalid(
            "sync.max_turn_changes",
            "must be between 8192 and 1048576 (a sweep slice alone removes up to 2048 flows, \
             and dialog re-sends leave a quarter free)",
        ));
    }
    let max_pending_changes = r
        .max_pending_changes
        .unwrap_or(DEFAULT_SYNC_PENDING_CHANGES.max(max_turn_changes));
    if max_pending_changes < max_turn_changes || max_pending_changes > 1 << 22 {
        return Err(invalid(
            "sync.max_pending_changes",
            "must be at least sync.max_turn_changes and at most 4194304",
        ));
    }
    let receive_buffer = bytes(
        "sync.receive_buffer",
        r.receive_buffer,
        DEFAULT_SYNC_RECEIVE_BUFFER,
    )?;
    let (key, key_error) = match (read_sync_key(&key_file), mode) {
        (Ok(k), _) => (k, None),
        (Err(e), SecretFiles::Required) => return Err(e),
        (Err(e), SecretFiles::KeepOnError) => (Secret::new(&[]), Some(e.to_string())),
    };
    Ok(SyncConfig {
        listen,
        peer,
        key,
        key_file,
        key_error,
        previous_key_grace,
        max_turn_changes,
        max_pending_changes,
        receive_buffer,
    })
}

/// The sync key in `path`: private, at least 16 bytes.
fn read_sync_key(path: &str) -> Result<Secret, ConfigError> {
    let key = read_secret("sync.key_file", path)?;
    if key.len() < 16 {
        return Err(invalid(
            "sync.key_file",
            format!("`{path}` must hold a key of at least 16 bytes"),
        ));
    }
    Ok(Secret::new(&key))
}
