//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// sipfront: a SIP-aware UDP front proxy.
///
/// Phones and carriers send SIP over UDP to sipfront's address; sipfront relays each
/// datagram unchanged to a backend SIP server (OpenSIPS, Kamailio), keeps each client
/// on its home backend, and lets any backend reach any client back through it.
#[derive(Debug, Parser)]
#[command(name = "sipfront", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy with a config file (see deploy/sipfront.toml for every key).
    Run {
        /// Path of the TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file and print the effective config (defaults filled in).
    /// Exits 2 with a message naming the bad key when the file is invalid.
    CheckConfig {
        /// Path of the TOML config file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Talk to a running sipfront's admin API.
    Ctl {
        /// Admin API address (default: from -c, else 127.0.0.1:9090).
        #[arg(long, global = true)]
        admin: Option<SocketAddr>,
        /// File holding the admin bearer token (default: from -c).
        #[arg(long, global = true, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Read the admin address and token file from this config.
        #[arg(short, long, global = true, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Run a self-contained demo: sipfront on 127.0.0.1:5060 in front of two built-in
    /// backends, /metrics on 127.0.0.1:9090, a status line per second.
    /// Drive it with: sipp -sn uac 127.0.0.1:5060 -r 100 -m 5000
    Demo {
        /// Public SIP address; the demo backends take the next ports +10 and +11.
        #[arg(long, default_value = "127.0.0.1:5060")]
        sip: SocketAddr,
        /// Admin (metrics) address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CtlAction {
    /// Backends with health, admin state, RTT, flows; totals and drops.
    Status,
    /// Stop sending new flows to a backend; its flows stay until they expire or move.
    Drain { name: String },
    /// Let a backend take new flows again.
    Enable { name: String },
    /// Take a backend out now: its flows move to the next choice.
    Disable { name: String },
    /// Static peers (trunks): relay endpoint, backend, datagrams, calls up.
    Peers,
    /// List flows (client, relay port, home backend, idle and registration time).
    Flows {
        /// Only this client (ip:port as sipfront sees it).
        #[arg(long)]
        client: Option<SocketAddr>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Refuse every datagram from a source (IP or CIDR prefix) for a while.
    Ban {
        /// e.g. 198.51.100.7, 198.51.100.0/24, 2001:db8:1:2::/64
        cidr: String,
        /// How long.
        #[arg(long, default_value_t = 3600)]
        seconds: u64,
    },
    /// Lift a ban (the exact prefix it was added with).
    Unban { cidr: String },
    /// The bans in force and the time each has left.
    Bans,
    /// The sources with the most dropped datagrams and the most flows.
    Top {
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
}
