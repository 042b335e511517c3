//! The router config of the routing and cold benches: port mode, three backends, the
//! per-source limits lifted (all load comes from a few synthetic sources).

pub const CONFIG: &str = r#"
[listen]
sip = ["192.0.2.10:5060"]
relay_ports = "10000-29999"
[[backend]]
name = "a"
addr = "10.0.0.21:5060"
[[backend]]
name = "b"
addr = "10.0.0.22:5060"
[[backend]]
name = "c"
addr = "10.0.0.23:5060"
[limits]
new_flows_per_ip = 1000000
new_flows_burst = 1000000
# Load from one address on loopback: lift the per-source limits.
max_flows_per_ip = 10000000
datagrams_per_ip = 100000000
datagrams_burst = 100000000
"#;
