//! VRRPv3 (RFC 5798) for the HA tier, wire-compatible with keepalived's
//! `vrrp_version 3`.
//!
//! - [`packet`]: the advertisement for IPv4 — a checked view over bytes and a
//!   [`Repr`] with `parse`/`emit`; accepts the RFC 5798 pseudo-header checksum, the
//!   VRRPv2-style one (`v3_checksum_as_v2`, RFC 9568) and old keepalived's unicast
//!   variant, and always sends the pseudo-header form.
//! - [`check`]: the §7.1 receive checks left after parsing (TTL 255, VRID, own
//!   packets, address list).
//! - [`machine`]: the §6.4 state machine of one virtual router, sans-IO: inputs and
//!   the time go in, advertisements to send and events (become master/backup, add or
//!   remove VIPs, send gratuitous ARP) come out.
//!
//! Both are pure: no sockets, no clock. The speaker (raw socket, protocol 112,
//! TTL 255 to 224.0.0.18 or unicast peers), VIP handling (netlink) and gratuitous ARP
//! are the shell's.

pub mod check;
pub mod garp;
pub mod iface;
pub mod machine;
pub mod packet;
pub mod shell;
pub mod speaker;
pub mod throttle;
pub mod vip;

pub use check::{Discard, check_advert};
pub use machine::{Cause, Event, Input, Machine, PRIORITY_OWNER, Settings, SettingsError, State};
pub use packet::{ChecksumKind, MCAST_GROUP, Packet, PacketError, Repr};
