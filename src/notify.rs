//! systemd readiness (`Type=notify`): one datagram to `$NOTIFY_SOCKET` once the SIP
//! sockets are bound. A no-op when not started by systemd.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`, `RELOADING=1`, `STOPPING=1`) to systemd.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify_at(&path, state);
    }
}

/// Sends `state` to the notify socket at `path` (`@name`: abstract namespace).
fn notify_at(path: &std::ffi::OsStr, state: &str) {
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let r = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        // Abstract socket namespace (Linux): a leading NUL instead of '@'.
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), path)
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        notify_at(path.as_os_str(), "READY=1");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
