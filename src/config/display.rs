//! The effective config as TOML, defaults filled in (what `check-config` prints).
//! Secrets are never printed: only the files that hold them.

use std::fmt;

use super::{Config, Failback, format_duration};

/// The effective config as TOML, defaults filled in (what `check-config` prints).
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.listen;
        let sip: Vec<String> = l.sip.iter().map(|a| format!("\"{a}\"")).collect();
        writeln!(f, "[listen]")?;
        writeln!(f, "sip = [{}]", sip.join(", "))?;
        if let Some(p) = &l.relay_prefix {
            let ports: Vec<String> = p.ports.iter().map(u16::to_string).collect();
            writeln!(f, "relay_prefix = \"{p}\"")?;
            writeln!(f, "relay_port = [{}]", ports.join(", "))?;
        } else {
            let relay: Vec<String> = l.relay.iter().map(|a| format!("\"{a}\"")).collect();
            writeln!(f, "relay = [{}]", relay.join(", "))?;
            writeln!(
                f,
                "relay_ports = \"{}-{}\"",
                l.relay_ports.start(),
                l.relay_ports.end()
            )?;
        }
        writeln!(f, "forward_keepalives = {}", l.forward_keepalives)?;
        writeln!(f, "receive_buffer = {}", l.receive_buffer)?;
        writeln!(f, "relay_receive_buffer = {}", l.relay_receive_buffer)?;
        for b in &self.backends {
            writeln!(
                f,
                "\n[[backend]]\nname = \"{}\"\naddr = \"{}\"",
                b.name, b.addr
            )?;
        }
        for p in &self.peers {
            let q = |v: &[String]| {
                v.iter()
                    .map(|x| format!("\"{x}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let addrs: Vec<String> = p.addrs.iter().map(|a| a.to_string()).collect();
            write!(
                f,
                "\n[[peer]]\nname = \"{}\"\naddr = [{}]\nrelay = \"{}\"\nbackends = [{}]\nprobe = {}\n",
                p.name,
                q(&addrs),
                p.relay,
                q(&p.backends),
                p.probe
            )?;
        }
        let fb = match self.failback {
            Failback::Never => "never",
            Failback::OnRegister => "on-register",
            Failback::Immediate => "immediate",
        };
        writeln!(f, "\n[affinity]\nfailback = \"{fb}\"")?;
        let m = &self.limits;
        writeln!(
            f,
            "\n[limits]\nmax_flows = {}\nmax_dialogs = {}\nnew_flows_per_ip = {}\nnew_flows_burst = {}\nmax_flows_per_ip = {}\ndatagrams_per_ip = {}\ndatagrams_burst = {}\nmax_pins_per_flow = {}\nmax_pins_per_ip = {}\nmax_flows_per_ipv6_48 = {}\nmax_pins_per_ipv6_48 = {}\nmax_lingering_records = {}",
            m.max_flows,
            m.max_dialogs,
            m.new_flows_per_ip,
            m.new_flows_burst,
            m.max_flows_per_ip,
            m.datagrams_per_ip,
            m.datagrams_burst,
            m.max_pins_per_flow,
            m.max_pins_per_ip,
            m.max_flows_per_ipv6_48,
            m.max_pins_per_ipv6_48,
            m.max_lingering_records
        )?;
        for o in &m.source {
            let l = &o.limits;
            writeln!(
                f,
                "\n[[limits.source]]\ncidr = \"{}\"\nmax_flows_per_ip = {}\nnew_flows_per_ip = {}\nnew_flows_burst = {}\ndatagrams_per_ip = {}\ndatagrams_burst = {}\nmax_pins_per_ip = {}",
                o.cidr,
                l.max_flows_per_ip,
                l.new_flows_per_ip,
                l.new_flows_burst,
                l.datagrams_per_ip,
                l.datagrams_burst,
                l.max_pins_per_ip
            )?;
        }
        let t = &self.timeouts;
        writeln!(
            f,
            "\n[timeouts]\nflow_idle = \"{}\"\nregister_grace = \"{}\"\ndialog_idle = \"{}\"\ntransaction = \"{}\"\nunanswered_idle = \"{}\"\nmax_registration = \"{}\"",
            format_duration(t.flow_idle),
            format_duration(t.register_grace),
            format_duration(t.dialog_idle),
            format_duration(t.transaction),
            format_duration(t.unanswered_idle),
            format_duration(t.max_registration)
        )?;
        let h = &self.health;
        let codes: Vec<String> = h
            .alive_codes
            .iter()
            .map(|r| format!("\"{}-{}\"", r.start(), r.end()))
            .collect();
        writeln!(
            f,
            "\n[health]\ninterval = \"{}\"\ntimeout = \"{}\"\nrise = {}\nfall = {}\nalive_codes = [{}]\nreply_503 = {}\nretry_after = {}\nreply_503_rate = {}",
            format_duration(h.interval),
            format_duration(h.timeout),
            h.rise,
            h.fall,
            codes.join(", "),
            h.reply_503,
            h.retry_after,
            h.reply_503_rate
        )?;
        write!(f, "\n[admin]\nlisten = \"{}\"", self.admin.listen)?;
        if let Some(tf) = &self.admin.token_file {
            write!(f, "\ntoken_file = \"{tf}\"")?;
        }
        write!(
            f,
            "\nmax_connections = {}\nheader_timeout = \"{}\"\nidle_timeout = \"{}\"\n\
             max_captures = {}\ncapture_queue = {}\ncapture_queue_bytes = {}",
            self.admin.max_connections,
            format_duration(self.admin.header_timeout),
            format_duration(self.admin.idle_timeout),
            self.admin.capture.sessions,
            self.admin.capture.frames,
            self.admin.capture.bytes
        )?;
        let a = &self.access;
        let list = |v: Vec<String>| v.join(", ");
        write!(
            f,
            "\n\n[access]\nallow = [{}]\ndeny = [{}]\nmax_bans = {}\ndrop_user_agents = [{}]",
            list(a.allow.iter().map(|c| format!("\"{c}\"")).collect()),
            list(a.deny.iter().map(|c| format!("\"{c}\"")).collect()),
            a.max_bans,
            list(
                a.drop_user_agents
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect()
            )
        )?;
        if let Some(v) = &self.vrrp {
            writeln!(f)?;
            v.write_toml(f)?;
        }
        if let Some(s) = &self.sync {
            write!(
                f,
                "\n[sync]\nlisten = \"{}\"\npeer = \"{}\"\nkey_file = \"{}\"\nprevious_key_grace = \"{}\"\nmax_turn_changes = {}\nmax_pending_changes = {}\nreceive_buffer = {}",
                s.listen,
                s.peer,
                s.key_file,
                format_duration(s.previous_key_grace),
                s.max_turn_changes,
                s.max_pending_changes,
                s.receive_buffer
            )?;
        }
        if let Some(h) = &self.hep {
            write!(f, "\n{h}")?;
        }
        Ok(())
    }
}
