//! HTTP/1.0 over `TcpStream` for sipfront's admin endpoint, and its JSON API.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::process::wait_until;

/// `GET path` over HTTP/1.0. Returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, &[])
}
// Health, failover and admin helpers (tests/health.rs, tests/admin_ctl.rs, tests/spread.rs)

/// `GET path`: the body if the answer is 200, else `None` (not up yet, or an error).
pub fn http_body(addr: SocketAddr, path: &str) -> Option<String> {
    match http_get(addr, path) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// An HTTP/1.0 request with an empty body and extra headers (e.g. `Authorization`).
/// Returns (status code, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nConnection: close\r\nContent-Length: 0\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        let _ = write!(req, "Host: {addr}\r\n");
    }
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header end in {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((status, body.to_string()))
}

/// `GET path` of the admin API as JSON; panics if it does not answer 200 with JSON.
pub fn get_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    match http_get(admin, path) {
        Ok((200, body)) => serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}")),
        Ok((code, body)) => panic!("GET http://{admin}{path} answered {code}: {body}"),
        Err(e) => panic!("GET http://{admin}{path} failed: {e}"),
    }
}

/// The entry of backend `name` in `GET /api/v1/status`, if listed.
pub fn backend_status(admin: SocketAddr, name: &str) -> Option<serde_json::Value> {
    get_json(admin, "/api/v1/status")["backends"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == name)
        .cloned()
}

/// The backend sipfront routes `client`'s flow to, from `GET /api/v1/flows?client=`;
/// `None` when there is no flow for that client.
pub fn flow_backend(admin: SocketAddr, client: SocketAddr) -> Option<String> {
    let v = get_json(admin, &format!("/api/v1/flows?client={client}&limit=10"));
    let flows = v["flows"].as_array()?;
    assert!(flows.len() <= 1, "several flows for one client: {v}");
    flows
        .first()
        .and_then(|f| f["backend"].as_str())
        .map(str::to_string)
}
/// panics with the last entry after 10 s.
pub fn wait_backend_status(
    admin: SocketAddr,
    name: &str,
    key: &str,
    want: impl Into<serde_json::Value>,
) -> serde_json::Value {
    let want = want.into();
    let mut last = None;
    let ok = wait_until(Duration::from_secs(10), || {
        last = backend_status(admin, name);
        last.as_ref().is_some_and(|b| b[key] == want)
    });
    assert!(
        ok,
        "status of backend {name}: {key} should be {want}, last seen: {last:?}"
    );
    last.unwrap()
}
