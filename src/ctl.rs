//! `sipfront ctl`: a small client of the admin API, for operators at a shell.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use ureq::Error;

pub struct Target {
    pub admin: SocketAddr,
    pub token: Option<String>,
}

/// An answer's body at most (100,000 listed flows are ~25 MB of JSON): whatever
/// listens on the admin address cannot make ctl read without end.
const MAX_ANSWER: u64 = 256 << 20;

/// Sends one HTTP/1.1 request, with an optional JSON body; returns (status, body).
fn http_body(
    t: &Target,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, String)> {
    let mut res = send(t, method, path, body)?;
    let code = res.status().as_u16();
    let body = res
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec()
        .context("reading the admin API's answer")?;
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends one HTTP/1.1 request (with an optional JSON body); the response with its body
/// unread.
fn send(
    t: &Target,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(3)))
        // A capture streams for minutes, with a heartbeat each second.
        .timeout_per_read(Some(Duration::from_secs(10)))
        // The status is ours to report (401 and 404 have their own messages).
        .http_status_as_error(false)
        // The admin API is local: no $http_proxy detour, no redirects.
        .proxy(None)
        .max_redirects(0)
        .build()
        .into();
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", t.admin));
    if let Some(tok) = &t.token {
        req = req.header("Authorization", format!("Bearer {tok}"));
    }
    let sent = match body {
        Some(b) => agent.run(
            req.header("Content-Type", "application/json")
                .body(serde_json::to_vec(b)?)?,
        ),
        None => agent.run(req.body(())?),
    };
    sent.map_err(|e| {
        let unreachable = match &e {
            Error::Timeout(ureq::Timeout::Connect) | Error::ConnectionFailed => true,
            Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::AddrNotAvailable
            ),
            _ => false,
        };
        let e = anyhow::Error::new(e);
        if unreachable {
            e.context(format!(
                "cannot reach the admin API at {} (is sipfront running? see --admin / -c)",
                t.admin
            ))
        } else {
            e.context(format!("admin API at {}", t.admin))
        }
    })
}

fn json(t: &Target, method: &str, path: &str) -> anyhow::Result<Value> {
    json_body(t, method, path, None)
}

fn json_body(t: &Target, method: &str, path: &str, send: Option<&Value>) -> anyhow::Result<Value> {
    let (code, body) = http_body(t, method, path, send)?;
    check(code, body)
}

/// Control characters written as `\x{..}`: what the admin address answers goes to
/// a terminal, and whatever listens there (not necessarily sipfront) must not drive it.
fn defang(text: &str) -> String {
    defang_but(text, '\n')
}

/// [`defang`], keeping `keep` raw (a line break of a plain-text error; none in a JSON
/// string, where one would fake table rows).
fn defang_but(text: &str, keep: char) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != keep {
            out.push_str(&format!("\\x{{{:02x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Every string in `v`, keys included, defanged with its line breaks too.
fn defang_json(v: &mut Value) {
    match v {
        Value::String(s) => *s = defang_but(s, '\0'),
        Value::Array(a) => a.iter_mut().for_each(defang_json),
        Value::Object(o) => {
            *o = std::mem::take(o)
                .into_iter()
                .map(|(k, mut v)| {
                    defang_json(&mut v);
                    (defang_but(&k, '\0'), v)
                })
                .collect();
        }
        _ => {}
    }
}

/// The body as JSON when `code` is 2xx; else the API's error as a message. Strings are
/// defanged for the terminal.
fn check(code: u16, body: String) -> anyhow::Result<Value> {
    let mut v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    defang_json(&mut v);
    let body = defang(body.trim());
    if !(200..300).contains(&code) {
        let msg = v.get("error").and_then(Value::as_str).unwrap_or(&body);
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
    let path = format!("/api/v1/backends/{}/{action}", query_value(name));
    let v = json(t, "POST", &path)?;
    println!(
        "{}: {}",
        v.get("backend").and_then(Value::as_str).unwrap_or(name),
        v.get("admin").and_then(Value::as_str).unwrap_or(action)
    );
    Ok(())
}

pub fn peers(t: &Target) -> anyhow::Result<()> {
    let v = json(t, "GET", "/api/v1/peers")?;
    let list = v
        .get("peers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    println!(
        "{:<16} {:<24} {:<24} {:<16} {:>10} {:>10} {:>6} {:>5} {:>8}",
        "PEER", "ADDR", "RELAY", "BACKEND", "TO BACKEND", "TO PEER", "CALLS", "UP", "RTT ms"
    );
    for p in &list {
        let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
        // Known only for peers with `probe = true`.
        let up = match p.get("up").and_then(Value::as_bool) {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        let rtt = p
            .get("rtt_ms")
            .and_then(Value::as_f64)
            .map_or("-".to_string(), |r| format!("{r:.1}"));
        println!(
            "{:<16} {:<24} {:<24} {:<16} {:>10} {:>10} {:>6} {:>5} {:>8}",
            s("name"),
            s("addr"),
            s("relay"),
            s("backend"),
            n("datagrams_to_backend"),
            n("datagrams_to_client"),
            n("dialogs"),
            up,
            rtt
        );
    }
    if list.is_empty() {
        println!("(no [[peer]] configured)");
    }
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

pub fn ban(t: &Target, cidr: &str, seconds: u64) -> anyhow::Result<()> {
    let body = serde_json::json!({ "cidr": cidr, "seconds": seconds });
    let v = json_body(t, "POST", "/api/v1/bans", Some(&body))?;
    println!(
        "banned {} for {} s",
        v.get("cidr").and_then(Value::as_str).unwrap_or(cidr),
        v.get("seconds").and_then(Value::as_u64).unwrap_or(seconds)
    );
    Ok(())
}

pub fn unban(t: &Target, cidr: &str) -> anyhow::Result<()> {
    // One path segment: a prefix's `/` (and an IPv6 `:`) percent-encoded.
    let path = format!("/api/v1/bans/{}", query_value(cidr.trim()));
    let v = json(t, "DELETE", &path)?;
    println!(
        "unbanned {}",
        v.get("cidr").and_then(Value::as_str).unwrap_or(cidr)
    );
    Ok(())
}

pub fn bans(t: &Target) -> anyhow::Result<()> {
    let v = json(t, "GET", "/api/v1/bans")?;
    let list = v
        .get("bans")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    println!("{:<44} {:>12}", "CIDR", "REMAINING s");
    for b in &list {
        println!(
            "{:<44} {:>12.0}",
            b.get("cidr").and_then(Value::as_str).unwrap_or("-"),
            b.get("remaining_secs")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
        );
    }
    println!("\n{} bans", list.len());
    Ok(())
}

pub fn top(t: &Target, limit: usize) -> anyhow::Result<()> {
    let v = json(t, "GET", &format!("/api/v1/top?limit={limit}"))?;
    let rows = |k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    println!(
        "{:<44} {:>12} {:>10}",
        "SOURCE (BY DROPS)", "DROPS", "± ERROR"
    );
    for r in rows("by_drops") {
        println!(
            "{:<44} {:>12} {:>10}",
            r.get("source").and_then(Value::as_str).unwrap_or("-"),
            r.get("drops").and_then(Value::as_u64).unwrap_or(0),
            r.get("error").and_then(Value::as_u64).unwrap_or(0)
        );
    }
    println!("\n{:<44} {:>12}", "SOURCE (BY FLOWS)", "FLOWS");
    for r in rows("by_flows") {
        println!(
            "{:<44} {:>12}",
            r.get("source").and_then(Value::as_str).unwrap_or("-"),
            r.get("flows").and_then(Value::as_u64).unwrap_or(0)
        );
    }
    Ok(())
}

pub struct CaptureArgs {
    pub client: Option<String>,
    pub call_id: Option<String>,
    pub backend: Option<String>,
    pub seconds: u64,
    pub max: u64,
}

/// Percent-encodes a query value or path segment (Call-IDs hold `@`, `+`, `%`, `&`...;
/// a backend name or a CIDR goes in the path as one segment).
fn query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `sipfront ctl capture`: streams `/api/v1/capture` to stdout as text, or to a pcap file.
pub fn capture(t: &Target, a: &CaptureArgs, pcap: Option<&std::path::Path>) -> anyhow::Result<()> {
    use sipfront::capture::live::{self, Item};
    use std::io::Write;

    let mut path = format!("/api/v1/capture?seconds={}&max={}", a.seconds, a.max);
    for (k, v) in [
        ("client", &a.client),
        ("call_id", &a.call_id),
        ("backend", &a.backend),
    ] {
        if let Some(v) = v {
            path.push_str(&format!("&{k}={}", query_value(v)));
        }
    }
    let res = send(t, "GET", &path, None)?;
    let code = res.status().as_u16();
    if code != 200 {
        let body = res.into_body().read_to_string().unwrap_or_default();
        check(code, body)?;
        bail!("HTTP {code}");
    }
    let mut out: Box<dyn Write> = match pcap {
        Some(p) => {
            let mut f = std::fs::File::create(p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            f.write_all(&live::pcap_header())?;
            Box::new(io::BufWriter::new(f))
        }
        None => Box::new(io::BufWriter::new(io::stdout().lock())),
    };
    let mut reader = res.into_body().into_reader();
    let mut body = Vec::new();
    let mut rec = Vec::new();
    let mut n = 0u64;
    let mut ended = false;
    while live::read_frame(&mut reader, &mut body).context("reading the capture stream")? {
        match live::decode(&body) {
            Some(Item::Heartbeat) => {}
            Some(Item::Datagram(f)) => {
                n += 1;
                if pcap.is_some() {
                    rec.clear();
                    live::pcap_record(&f, &mut rec);
                    out.write_all(&rec)?;
                } else {
                    live::write_text(&mut out, &f)?;
                }
                // Each datagram on disk (or screen) at once: Ctrl-C keeps what came.
                out.flush()?;
            }
            Some(Item::Note(text)) => {
                eprintln!("{}", defang(text));
                ended = true;
            }
            None => bail!("the capture stream is malformed (a different sipfront version?)"),
        }
    }
    out.flush()?;
    if !ended {
        bail!("the capture stream ended early after {n} datagrams");
    }
    if let Some(p) = pcap {
        eprintln!("{n} datagrams written to {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod defang_tests {
    use super::*;

    #[test]
    fn server_strings_reach_the_terminal_without_control_characters() {
        let body = r#"{"backends":[{"name":"a\u001b]52;c;aGk=\u0007b\nready: x"}],"drops":{"k\u001b[2J":1},"n":1}"#.to_string();
        let v = check(200, body).unwrap();
        assert_eq!(
            v["backends"][0]["name"],
            "a\\x{1b}]52;c;aGk=\\x{07}b\\x{0a}ready: x"
        );
        assert_eq!(v["drops"]["k\\x{1b}[2J"], 1, "keys too: {v}");
        assert_eq!(v["n"], 1);
        let e = check(500, r#"{"error":"bad\u001b[2Jthing"}"#.to_string()).unwrap_err();
        assert_eq!(e.to_string(), "HTTP 500: bad\\x{1b}[2Jthing");
        let e = check(502, "not json \u{1b}[31m".to_string()).unwrap_err();
        assert_eq!(e.to_string(), "HTTP 502: not json \\x{1b}[31m");
    }
}
