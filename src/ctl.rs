//! `sipfront ctl`: a small client of the admin API, for operators at a shell.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

pub struct Target {
    pub admin: SocketAddr,
    pub token: Option<String>,
}

/// Sends one HTTP/1.1 request; returns (status, body).
fn http(t: &Target, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&t.admin, Duration::from_secs(3)).with_context(|| {
            format!(
                "cannot reach the admin API at {} (is sipfront running? see --admin / -c)",
                t.admin
            )
        })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = t
        .token
        .as_ref()
        .map(|tok| format!("Authorization: Bearer {tok}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n",
        t.admin
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP response from the admin API")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn json(t: &Target, method: &str, path: &str) -> anyhow::Result<Value> {
    let (code, body) = http(t, method, path)?;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    if !(200..300).contains(&code) {
        let msg = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or(body.trim());
        if code == 401 {
            bail!("HTTP 401: {msg} (pass --token-file or -c with the config that names it)");
        }
        bail!("HTTP {code}: {msg}");
    }
    Ok(v)
}

pub fn status(t: &Target) -> anyhow::Result<()> {
    let v = json(t, "GET", "/api/v1/status")?;
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    println!(
        "ready: {}   flows: {}   dialogs: {}   relay ports: {}   503s sent: {}",
        v.get("ready").and_then(Value::as_bool).unwrap_or(false),
        n("flows"),
        n("dialogs"),
        n("relay_ports_in_use"),
        n("replies_503")
    );
    println!(
        "\n{:<16} {:<22} {:<8} {:<9} {:>8} {:>8} {:>12} {:>12}",
        "BACKEND", "ADDRESS", "HEALTH", "ADMIN", "RTT ms", "FLOWS", "DGRAMS OUT", "DGRAMS BACK"
    );
    for b in v
        .get("backends")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        let u = |k: &str| b.get(k).and_then(Value::as_u64).unwrap_or(0);
        let rtt = b
            .get("last_rtt_ms")
            .and_then(Value::as_f64)
            .map_or("-".into(), |r| format!("{r:.2}"));
        let mut admin = s("admin");
        if b.get("configured").and_then(Value::as_bool) == Some(false) {
            admin.push('*');
        }
        println!(
            "{:<16} {:<22} {:<8} {:<9} {:>8} {:>8} {:>12} {:>12}",
            s("name"),
            s("addr"),
            s("state"),
            admin,
            rtt,
            u("flows"),
            u("datagrams_to_backend"),
            u("datagrams_to_client")
        );
    }
    if let Some(d) = v.get("drops").and_then(Value::as_object)
        && !d.is_empty()
    {
        let parts: Vec<String> = d.iter().map(|(k, n)| format!("{k}={n}")).collect();
        println!("\ndrops: {}", parts.join(" "));
    }
    Ok(())
}

pub fn set_admin(t: &Target, name: &str, action: &str) -> anyhow::Result<()> {
    let path = format!("/api/v1/backends/{name}/{action}");
    let v = json(t, "POST", &path)?;
    println!(
        "{}: {}",
        v.get("backend").and_then(Value::as_str).unwrap_or(name),
        v.get("admin").and_then(Value::as_str).unwrap_or(action)
    );
    Ok(())
}

pub fn flows(t: &Target, client: Option<SocketAddr>, limit: usize) -> anyhow::Result<()> {
    let mut path = format!("/api/v1/flows?limit={limit}");
    if let Some(c) = client {
        path.push_str(&format!("&client={c}"));
    }
    let v = json(t, "GET", &path)?;
    let list = v
        .get("flows")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    println!(
        "{:<40} {:>6} {:<16} {:>8} {:>12}",
        "CLIENT", "PORT", "BACKEND", "IDLE s", "REGISTERED s"
    );
    for f in &list {
        let s = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        let reg = f
            .get("registered_secs")
            .and_then(Value::as_f64)
            .map_or("-".into(), |r| format!("{r:.0}"));
        println!(
            "{:<40} {:>6} {:<16} {:>8.1} {:>12}",
            s("client"),
            f.get("relay_port").and_then(Value::as_u64).unwrap_or(0),
            s("backend"),
            f.get("idle_secs").and_then(Value::as_f64).unwrap_or(0.0),
            reg
        );
    }
    let total = v.get("total").and_then(Value::as_u64).unwrap_or(0);
    println!("\n{} shown, {total} flows in all", list.len());
    if client.is_some() && list.is_empty() {
        bail!("no flow for that client");
    }
    Ok(())
}
