//! Counters the routing logic keeps as plain integers. The shell publishes their
//! deltas to the metrics registry a few times a second, so the forwarding path
//! touches no atomics shared with other threads and never looks up a metric by name.

use crate::sip::ScanError;

/// Why a datagram was not forwarded. The `as_str` values are metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    NotSip,
    BadStartLine,
    Truncated,
    MissingCallId,
    BadHeader,
    UnknownSource,
    NoFlow,
    FlowTableFull,
    DialogTableFull,
    RateLimited,
    NoRelayPort,
    BindFailed,
    SendFailed,
    NoBackend,
    /// The source holds `limits.max_flows_per_ip` flows already.
    SourceFlowLimit,
    /// The source sends more than `limits.datagrams_per_ip`.
    SourceRateLimited,
    /// In `access.deny`, or outside a non-empty `access.allow`.
    Denied,
    /// On the ban list.
    Banned,
    /// A scanner's User-Agent (`access.drop_user_agents`).
    Scanner,
    /// The flow has `limits.max_pins_per_flow` dialog entries open already.
    PinQuota,
    /// The source's flows have `limits.max_pins_per_ip` dialog entries open already.
    SourcePinQuota,
    /// From source port 0: nothing can be sent back to it.
    BadSource,
}

impl DropReason {
    pub const ALL: [DropReason; 22] = [
        DropReason::NotSip,
        DropReason::BadStartLine,
        DropReason::Truncated,
        DropReason::MissingCallId,
        DropReason::BadHeader,
        DropReason::UnknownSource,
        DropReason::NoFlow,
        DropReason::FlowTableFull,
        DropReason::DialogTableFull,
        DropReason::RateLimited,
        DropReason::NoRelayPort,
        DropReason::BindFailed,
        DropReason::SendFailed,
        DropReason::NoBackend,
        DropReason::SourceFlowLimit,
        DropReason::SourceRateLimited,
        DropReason::Denied,
        DropReason::Banned,
        DropReason::Scanner,
        DropReason::PinQuota,
        DropReason::SourcePinQuota,
        DropReason::BadSource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NotSip => "not_sip",
            DropReason::BadStartLine => "bad_start_line",
            DropReason::Truncated => "truncated",
            DropReason::MissingCallId => "missing_call_id",
            DropReason::BadHeader => "bad_header",
            DropReason::UnknownSource => "unknown_source",
            DropReason::NoFlow => "no_flow",
            DropReason::FlowTableFull => "flow_table_full",
            DropReason::DialogTableFull => "dialog_table_full",
            DropReason::RateLimited => "rate_limited",
            DropReason::NoRelayPort => "no_relay_port",
            DropReason::BindFailed => "bind_failed",
            DropReason::SendFailed => "send_failed",
            DropReason::NoBackend => "no_backend",
            DropReason::SourceFlowLimit => "source_flow_limit",
            DropReason::SourceRateLimited => "source_rate_limited",
            DropReason::Denied => "denied",
            DropReason::Banned => "banned",
            DropReason::Scanner => "scanner",
            DropReason::PinQuota => "pin_quota",
            DropReason::SourcePinQuota => "source_pin_quota",
            DropReason::BadSource => "bad_source",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<ScanError> for DropReason {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::NotSip => DropReason::NotSip,
            ScanError::BadStartLine => DropReason::BadStartLine,
            ScanError::Truncated => DropReason::Truncated,
            ScanError::MissingCallId => DropReason::MissingCallId,
            ScanError::BadHeader => DropReason::BadHeader,
        }
    }
}

/// Which way a datagram went.
/// Why a stateless 503 was not sent; `as_str` values are the `reason` labels of
/// `sipfront_local_replies_suppressed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// Over `reply_503_rate`.
    Rate,
    /// It would be larger than the request (never an amplifier).
    LargerThanRequest,
    /// It would not fit the send buffer.
    TooLarge,
}

impl Suppressed {
    pub const ALL: [Suppressed; 3] = [
        Suppressed::Rate,
        Suppressed::LargerThanRequest,
        Suppressed::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Suppressed::Rate => "rate",
            Suppressed::LargerThanRequest => "larger_than_request",
            Suppressed::TooLarge => "too_large",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToBackend = 0,
    ToClient = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::ToBackend, Direction::ToClient];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToBackend => "to_backend",
            Direction::ToClient => "to_client",
        }
    }
}

/// One value per [`Direction`], indexed by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerDirection<T>(pub [T; 2]);

impl<T> std::ops::Index<Direction> for PerDirection<T> {
    type Output = T;
    fn index(&self, d: Direction) -> &T {
        &self.0[d as usize]
    }
}

impl<T> std::ops::IndexMut<Direction> for PerDirection<T> {
    fn index_mut(&mut self, d: Direction) -> &mut T {
        &mut self.0[d as usize]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendCounters {
    pub datagrams: PerDirection<u64>,
    pub bytes: PerDirection<u64>,
}

/// Monotonic counters; a snapshot minus an older snapshot gives the deltas to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub drops: [u64; DropReason::ALL.len()],
    pub backends: Vec<BackendCounters>,
    /// Keepalives absorbed or relayed, by the way they were going (from a client:
    /// `ToBackend`).
    pub keepalives: PerDirection<u64>,
    pub flows_created: u64,
    pub flows_expired: u64,
    /// Stateless 503s sent because no backend was up.
    pub replies_503: u64,
    /// 503s not sent, by [`Suppressed`] reason.
    pub replies_503_suppressed: [u64; Suppressed::ALL.len()],
    /// Datagrams of each static peer, by config index.
    pub peers: Vec<PerDirection<u64>>,
    /// Backend requests relayed without the dialog entry that sends their answers
    /// back to that backend: the dialog table was full (the answers go to the flow's
    /// home backend).
    pub unpinned: u64,
}

impl Counters {
    pub fn new(backends: usize, peers: usize) -> Self {
        Counters {
            backends: vec![BackendCounters::default(); backends],
            peers: vec![PerDirection::default(); peers],
            ..Default::default()
        }
    }

    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r.index()] += 1;
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }

    #[inline]
    pub fn suppress(&mut self, why: Suppressed) {
        self.replies_503_suppressed[why as usize] += 1;
    }

    pub fn suppressed(&self, why: Suppressed) -> u64 {
        self.replies_503_suppressed[why as usize]
    }

    #[inline]
    pub fn forwarded(&mut self, backend: usize, dir: Direction, len: usize) {
        if let Some(b) = self.backends.get_mut(backend) {
            b.datagrams[dir] += 1;
            b.bytes[dir] += len as u64;
        }
    }

    #[inline]
    pub fn peer_forwarded(&mut self, peer: u16, dir: Direction) {
        if let Some(p) = self.peers.get_mut(usize::from(peer)) {
            p[dir] += 1;
        }
    }

    /// Copies `other` into `self`, reusing this vector's storage: the derived
    /// `clone_from` would allocate a new one every time.
    pub fn copy_from(&mut self, other: &Counters) {
        self.drops = other.drops;
        self.backends.clear();
        self.backends.extend_from_slice(&other.backends);
        self.keepalives = other.keepalives;
        self.flows_created = other.flows_created;
        self.flows_expired = other.flows_expired;
        self.replies_503 = other.replies_503;
        self.replies_503_suppressed = other.replies_503_suppressed;
        self.unpinned = other.unpinned;
        self.peers.clear();
        self.peers.extend_from_slice(&other.peers);
    }

    /// Keeps the per-backend vector in step with a changed backend list.
    pub fn resize_backends(&mut self, n: usize) {
        self.backends.resize(n, BackendCounters::default());
    }
}
