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
