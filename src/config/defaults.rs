//! Every default the parser fills in, in one place. deploy/sipfront.toml documents the same
//! values; `check-config` prints the effective ones.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

// [listen]
/// Below the kernel's usual ephemeral range (32768-60999).
pub const DEFAULT_RELAY_PORTS: &str = "16384-32767";
pub const DEFAULT_FORWARD_KEEPALIVES: bool = false;
// (`listen.relay` defaults to the IP of the first `listen.sip` address.)

// [limits]
// (`limits.max_flows` defaults to the number of relay endpoints: ports × addresses.)
pub const DEFAULT_MAX_DIALOGS: usize = 100_000;
pub const DEFAULT_NEW_FLOWS_PER_IP: u32 = 100;
/// `limits.new_flows_burst` defaults to this many times `new_flows_per_ip`.
pub const DEFAULT_NEW_FLOWS_BURST_FACTOR: u32 = 2;

// [timeouts]
pub const DEFAULT_FLOW_IDLE: Duration = Duration::from_secs(90);
pub const DEFAULT_REGISTER_GRACE: Duration = Duration::from_secs(32);
pub const DEFAULT_DIALOG_IDLE: Duration = Duration::from_secs(3600);
pub const DEFAULT_TRANSACTION: Duration = Duration::from_secs(32);

// [admin]
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);
/// Open admin connections; above it the oldest idle one is closed (or the new one refused).
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;
/// From connect (or the first byte after an idle keep-alive) to a complete request header.
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A keep-alive connection without a request, or a request with no byte moving, this long.
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

// [health]
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// `health.timeout` defaults to this, or to `health.interval` when that is shorter.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_millis(400);
pub const DEFAULT_HEALTH_RISE: u32 = 2;
pub const DEFAULT_HEALTH_FALL: u32 = 2;
/// Any final response means the backend's SIP stack is alive.
pub const DEFAULT_ALIVE_CODES: &str = "200-699";
pub const DEFAULT_REPLY_503: bool = true;
pub const DEFAULT_RETRY_AFTER: u32 = 30;
/// `limits.max_flows_per_ip` defaults to this share of `max_flows` (a carrier-grade NAT
/// puts thousands of phones behind one address), and to all of a table of up to 256.
pub const DEFAULT_MAX_FLOWS_PER_IP_DIVISOR: usize = 4;
pub const DEFAULT_DATAGRAMS_PER_IP: u32 = 20_000;
pub const DEFAULT_UNANSWERED_IDLE: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_REGISTRATION: Duration = Duration::from_secs(7200);
pub const DEFAULT_REPLY_503_RATE: u32 = 100;
/// Dialog-table entries a client flow may have opened at once (a phone has a few calls
/// and subscriptions; a flood of INVITEs with fresh Call-IDs hits this).
pub const DEFAULT_MAX_PINS_PER_FLOW: u32 = 256;
/// `limits.max_pins_per_ip` defaults to this share of `max_dialogs`: one source (its
/// flows from many ports together) cannot fill the dialog table with INVITEs nobody
/// answers.
pub const DEFAULT_MAX_PINS_PER_IP_DIVISOR: usize = 8;
/// `limits.max_lingering_records` defaults to `max_dialogs`, at most this (a record
/// holds a dialog entry at least when made; 65,536 records: ~4 MiB).
pub const DEFAULT_MAX_LINGERING_RECORDS: usize = 1 << 16;
/// `sync.previous_key_grace`: time to reload the other host after a key rotation.
pub const DEFAULT_PREVIOUS_KEY_GRACE: Duration = Duration::from_secs(300);
/// The longest `sync.previous_key_grace`: a retired key must not stay trusted for good.
pub const MAX_PREVIOUS_KEY_GRACE: Duration = Duration::from_secs(86_400);
/// `sync.max_turn_changes`: the table changes queued for the peer between two sync
/// turns (at most 20 ms apart; a sweep slice removes at most 2,048 flows, and dialog
/// re-sends leave a quarter free for decisions).
pub const DEFAULT_SYNC_TURN_CHANGES: usize = 8192;
/// `sync.max_pending_changes`: changes the link holds until paced out (~2,700 datagrams).
pub const DEFAULT_SYNC_PENDING_CHANGES: usize = 1 << 16;
/// `sync.receive_buffer`: a full table arrives paced (384 datagrams per 20 ms, ~540 KB),
/// but a peer busy elsewhere must not lose a chunk of it (a lost chunk costs a whole
/// new table).
pub const DEFAULT_SYNC_RECEIVE_BUFFER: usize = 8 << 20;

/// `admin.max_captures`, `admin.capture_queue` (frames), `admin.capture_queue_bytes`:
/// a stalled reader of each capture holds 4 MiB at most (16 MiB in all).
pub const DEFAULT_MAX_CAPTURES: usize = 4;
pub const DEFAULT_CAPTURE_QUEUE: usize = 1024;
pub const DEFAULT_CAPTURE_QUEUE_BYTES: usize = 4 << 20;

/// `listen.receive_buffer`: a public socket (and a prefix relay socket) carries every
/// flow; 8 MiB holds a stall of some tens of milliseconds at a core's relay rate.
pub const DEFAULT_RECEIVE_BUFFER: usize = 8 << 20;
/// `listen.relay_receive_buffer`: a trunk's flow carries as much as a public socket; the
/// kernel default (~208 KB, about 150 small datagrams with their overhead) overflowed at
/// 8000 calls/s on one flow during a few milliseconds' stall. Only queued datagrams use it.
pub const DEFAULT_RELAY_RECEIVE_BUFFER: usize = 2 << 20;
/// The range both receive buffers accept.
pub const RECEIVE_BUFFER_RANGE: std::ops::RangeInclusive<usize> = (64 << 10)..=(1 << 30);

// [vrrp]
pub const DEFAULT_VRRP_PRIORITY: u8 = 100;
pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_PREEMPT: bool = true;
pub const DEFAULT_PREEMPT_DELAY: Duration = Duration::ZERO;
pub const DEFAULT_TRACK_BACKENDS: u8 = 50;
pub const DEFAULT_GARP_REPEAT: u32 = 5;
pub const DEFAULT_GARP_DELAY: Duration = Duration::from_secs(5);
// (`vrrp.garp_refresh` defaults to off.)
