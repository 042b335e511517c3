//! Sync messages on the wire: a postcard-encoded envelope (version, sender epoch,
//! sequence number, body), then its extension ([`Ext`]), followed by an HMAC-SHA256
//! tag over both. Items carry no
//! heap data, so the dataplane can queue them without allocating. Which epochs and
//! sequence numbers are accepted is the link's business ([`super::link`]).

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub use crate::relay::Item;

/// 2: relay endpoints carry the relay address's position (several relay addresses).
/// 3: random epochs, admitted by a challenge in the hello (`challenge`, `echo`,
/// `acked_epoch`).
pub const VERSION: u8 = 3;
pub const TAG_LEN: usize = 32;
/// Keeps every datagram under a typical 1500-byte MTU. Larger datagrams are dropped
/// before their tag is computed, so spoofed junk costs no hashing.
pub const MAX_DATAGRAM: usize = 1400;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Heartbeat, once a second: who we are, what we have, what we got.
    Hello {
        backends_hash: u64,
        flows: u32,
        dialogs: u32,
        /// The peer epoch `acked` counts in (0: none admitted yet).
        acked_epoch: u64,
        /// Highest sequence number received from the peer (for lag).
        acked: u64,
        /// True until we hold a full table from the peer.
        want_full: bool,
        /// A fresh value the peer must echo before we accept a new epoch of its (0: none).
        challenge: u64,
        /// The latest challenge we got from the peer (0: none).
        echo: u64,
    },
    Items(Vec<Item>),
    /// One chunk of a full table; `last` ends it.
    Full {
        chunk: u32,
        last: bool,
        items: Vec<Item>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u8,
    /// Random per process start: a restarted peer is a new sequence space. Epochs have
    /// no order (a clock step cannot lock a peer out).
    pub epoch: u64,
    pub seq: u64,
    pub body: Body,
    /// Encoded after the envelope, not in it (see [`Ext`]).
    #[serde(skip)]
    pub ext: Ext,
}

/// Fields added after version 3 shipped, encoded after the envelope and covered by the
/// tag. A receiver that does not know them decodes the envelope and ignores the bytes
/// after it (postcard does), so they need no version bump; a message without them
/// reads as the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ext {
    /// The id of the sender's newest key ([`Key::id`]; 0: not announced), so a peer
    /// rotating keys learns when it may send with the new one.
    pub key_id: u64,
    /// A public name for the keys the sender hashes Call-IDs with (derived from the
    /// sync key it started with; 0: not announced). The peers' dialog entries match
    /// only while both name the same keys.
    pub dialog_keys: u64,
    /// The sender's wall clock when it sealed the message, in ms since the Unix epoch
    /// (0: not announced). A hello from a run not admitted yet that is much older by
    /// it is a recording, and its challenge is not taken (see the link).
    pub sent_ms: u64,
}

/// Decodes the fields of an [`Ext`] one by one, in the order they were added: a sender
/// that knows fewer stops early (the rest read as 0), one that knows more leaves bytes
/// this reader skips.
fn decode_ext(mut rest: &[u8]) -> Result<Ext, SyncDrop> {
    let mut ext = Ext::default();
    for field in [&mut ext.key_id, &mut ext.dialog_keys, &mut ext.sent_ms] {
        if rest.is_empty() {
            break;
        }
        let (v, r) = postcard::take_from_bytes::<u64>(rest).map_err(|_| SyncDrop::Decode)?;
        *field = v;
        rest = r;
    }
    Ok(ext)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyncDrop {
    #[error("too short")]
    Short,
    #[error("bad MAC")]
    BadMac,
    #[error("undecodable")]
    Decode,
    #[error("unknown version")]
    Version,
    #[error("replayed or stale sequence number, or a retired epoch")]
    Replay,
    #[error("not from the configured peer")]
    NotPeer,
    /// Reported (not dropped) when the peer's hello announces other backends.
    #[error("peer has a different backend list")]
    BackendMismatch,
    #[error("larger than a sync datagram can be")]
    Oversize,
    /// From a peer epoch not admitted yet (a restarted peer before its handshake, or
    /// a replay from a run we never admitted).
    #[error("from an epoch not admitted yet")]
    UnverifiedEpoch,
    /// Ours, not sent: the socket refused it.
    #[error("send failed")]
    SendFailed,
    /// Reported (not dropped) when the peer hashes Call-IDs with other keys.
    #[error("peer hashes Call-IDs with other keys")]
    DialogKeyMismatch,
    /// Our own datagram (our epoch) sent back to us from the peer's address: both
    /// directions share the key, so without this check a reflected hello of ours
    /// could answer our own challenge and lock the real peer out.
    #[error("our own datagram sent back")]
    Reflected,
    /// A hello from an epoch not admitted, sent long ago by the sender's own clock
    /// while a recent one is around: a recording, whose challenge must not replace
    /// the live peer's in our hellos.
    #[error("a stale hello from an epoch not admitted")]
    StaleHello,
    /// From an epoch not admitted, authentic only under the previous key (during
    /// `previous_key_grace`): a holder of the retired key must not pose as a new
    /// run of the peer; a restarted peer reads the new key from its file.
    #[error("a new epoch under the previous key")]
    PreviousKeyNewEpoch,
}

impl SyncDrop {
    pub const ALL: [SyncDrop; 14] = [
        SyncDrop::Short,
        SyncDrop::BadMac,
        SyncDrop::Decode,
        SyncDrop::Version,
        SyncDrop::Replay,
        SyncDrop::NotPeer,
        SyncDrop::BackendMismatch,
        SyncDrop::Oversize,
        SyncDrop::UnverifiedEpoch,
        SyncDrop::SendFailed,
        SyncDrop::DialogKeyMismatch,
        SyncDrop::Reflected,
        SyncDrop::StaleHello,
        SyncDrop::PreviousKeyNewEpoch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncDrop::Short => "short",
            SyncDrop::BadMac => "bad_mac",
            SyncDrop::Decode => "decode",
            SyncDrop::Version => "version",
            SyncDrop::Replay => "replay",
            SyncDrop::NotPeer => "not_peer",
            SyncDrop::BackendMismatch => "backend_mismatch",
            SyncDrop::Oversize => "oversize",
            SyncDrop::UnverifiedEpoch => "unverified_epoch",
            SyncDrop::SendFailed => "send_failed",
            SyncDrop::DialogKeyMismatch => "dialog_key_mismatch",
            SyncDrop::Reflected => "reflected",
            SyncDrop::StaleHello => "stale_hello",
            SyncDrop::PreviousKeyNewEpoch => "previous_key_new_epoch",
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The shared key; never printed. The keyed HMAC state is made once: a datagram's
/// check clones it rather than hashing the key again (a flood of forged datagrams
/// costs only the message's own hashing).
#[derive(Clone)]
pub struct Key {
    bytes: Vec<u8>,
    keyed: HmacSha256,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    pub fn new(bytes: &[u8]) -> Key {
        Key {
            bytes: bytes.to_vec(),
            // HMAC takes keys of any length.
            keyed: <HmacSha256 as KeyInit>::new_from_slice(bytes)
                .expect("HMAC accepts any key length"),
        }
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// A public name for the key (never 0), announced in [`Ext::key_id`]: it tells
    /// which key the sender holds without revealing anything about it.
    pub fn id(&self) -> u64 {
        self.derive("sipfront sync key id").max(1)
    }

    /// A 64-bit value derived from the key for `label` (e.g. the dialog table's
    /// hash keys, which both peers must share).
    pub fn derive(&self, label: &str) -> u64 {
        let mut m = self.mac();
        m.update(label.as_bytes());
        let out = m.finalize().into_bytes();
        u64::from_le_bytes(out[..8].try_into().unwrap_or([0; 8]))
    }
}

/// Encodes and authenticates `env` into `out`; returns the datagram length, at most
/// [`MAX_DATAGRAM`] (what does not fit is an error: the peer would drop it).
pub fn seal(key: &Key, env: &Envelope, out: &mut [u8]) -> Result<usize, postcard::Error> {
    let cap = out.len().min(MAX_DATAGRAM);
    let out = &mut out[..cap];
    let env_len = postcard::to_slice(env, out)?.len();
    let body_len = env_len + postcard::to_slice(&env.ext, &mut out[env_len..])?.len();
    let tag_end = body_len + TAG_LEN;
    if out.len() < tag_end {
        return Err(postcard::Error::SerializeBufferFull);
    }
    let mut m = key.mac();
    m.update(&out[..body_len]);
    out[body_len..tag_end].copy_from_slice(&m.finalize().into_bytes());
    Ok(tag_end)
}

/// Checks the size, then the tag (in constant time), then decodes.
pub fn open(key: &Key, datagram: &[u8]) -> Result<Envelope, SyncDrop> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(SyncDrop::Oversize);
    }
    if datagram.len() < TAG_LEN + 3 {
        return Err(SyncDrop::Short);
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    let mut m = key.mac();
    m.update(body);
    m.verify_slice(tag).map_err(|_| SyncDrop::BadMac)?;
    let (mut env, rest) =
        postcard::take_from_bytes::<Envelope>(body).map_err(|_| SyncDrop::Decode)?;
    if env.version != VERSION {
        return Err(SyncDrop::Version);
    }
    env.ext = decode_ext(rest)?;
    Ok(env)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::relay::RelayPort;
    use crate::relay::{Side, Span};
    use proptest::prelude::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef0123456789abcdef")
    }

    fn item() -> impl Strategy<Value = Item> {
        prop_oneof![
            (
                any::<[u8; 4]>(),
                any::<u16>(),
                (any::<u32>(), any::<u16>()).prop_map(|(addr, port)| RelayPort { addr, port }),
                any::<u16>(),
                any::<u64>(),
                any::<Option<u32>>()
            )
                .prop_map(|(ip, port, relay_port, ingress, home, registered_secs)| {
                    Item::Flow {
                        client: SocketAddr::from((ip, port)),
                        relay_port,
                        ingress,
                        home,
                        registered_secs,
                    }
                }),
            any::<u16>().prop_map(|p| Item::FlowGone {
                relay_port: RelayPort::first(p)
            }),
            (any::<u128>(), any::<u64>(), any::<bool>(), any::<u16>()).prop_map(
                |(key, backend, long, port)| Item::Dialog {
                    key,
                    backend,
                    span: if long {
                        Span::Dialog
                    } else {
                        Span::Transaction
                    },
                    opener: if long { Side::Backend } else { Side::Client },
                    flow: RelayPort::first(port),
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(epoch: u64, seq: u64, key_id: u64, dialog_keys: u64, sent_ms: u64, items in proptest::collection::vec(item(), 0..30)) {
            let env = Envelope { version: VERSION, epoch, seq, body: Body::Items(items), ext: Ext { key_id, dialog_keys, sent_ms } };
            let mut buf = [0u8; 4096];
            let n = seal(&key(), &env, &mut buf).unwrap();
            prop_assert_eq!(open(&key(), &buf[..n]).unwrap(), env);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = open(&key(), &data);
        }
    }

    #[test]
    fn tampering_wrong_key_and_replay_are_rejected() {
        let env = Envelope {
            version: VERSION,
            epoch: 7,
            seq: 1,
            body: Body::Items(vec![Item::FlowGone {
                relay_port: RelayPort::first(20000),
            }]),
            ext: Ext::default(),
        };
        let mut buf = [0u8; 512];
        let n = seal(&key(), &env, &mut buf).unwrap();
        for i in 0..n {
            let mut t = buf;
            t[i] ^= 0x01;
            assert_eq!(open(&key(), &t[..n]), Err(SyncDrop::BadMac), "flip at {i}");
        }
        assert_eq!(
            open(&Key::new(b"another key"), &buf[..n]),
            Err(SyncDrop::BadMac)
        );
        assert_eq!(open(&key(), &buf[..10]), Err(SyncDrop::Short));
        let bad = Envelope {
            version: 9,
            ..env.clone()
        };
        let m = seal(&key(), &bad, &mut buf).unwrap();
        assert_eq!(open(&key(), &buf[..m]), Err(SyncDrop::Version));
        // Oversized junk is refused by its size alone, valid tag or not.
        assert_eq!(
            open(&key(), &[0u8; MAX_DATAGRAM + 1]),
            Err(SyncDrop::Oversize)
        );
        let big = Envelope {
            body: Body::Items(vec![
                Item::FlowGone {
                    relay_port: RelayPort::first(1)
                };
                1000
            ]),
            ..env
        };
        let mut large = vec![0u8; 8192];
        assert!(seal(&key(), &big, &mut large).is_err(), "too big to send");
        for (i, d) in SyncDrop::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "ALL is in declaration order");
        }
    }

    /// An empty item list from epoch 7, sequence number 3, with `ext`.
    fn empty_items(ext: Ext) -> Envelope {
        Envelope {
            version: VERSION,
            epoch: 7,
            seq: 3,
            body: Body::Items(vec![]),
            ext,
        }
    }

    /// Peers from before [`Ext`] interoperate: their messages (no extension) read as
    /// the default, and they read ours (the envelope first, the extension ignored).
    #[test]
    fn the_extension_is_compatible_with_version_3_peers() {
        let env = empty_items(Ext {
            key_id: key().id(),
            dialog_keys: 9,
            sent_ms: 1_800_000_000_000,
        });
        let mut buf = [0u8; 512];
        let n = seal(&key(), &env, &mut buf).unwrap();
        let old: Envelope = postcard::from_bytes(&buf[..n - TAG_LEN]).unwrap();
        assert_eq!(old.ext, Ext::default(), "an old reader skips it");
        assert_eq!((old.epoch, old.seq), (7, 3));
        // An old writer: the envelope alone, then the tag.
        let mut old_buf = [0u8; 512];
        let len = postcard::to_slice(&env, &mut old_buf).unwrap().len();
        let mut m = key().mac();
        m.update(&old_buf[..len]);
        old_buf[len..len + TAG_LEN].copy_from_slice(&m.finalize().into_bytes());
        let got = open(&key(), &old_buf[..len + TAG_LEN]).unwrap();
        assert_eq!(got.ext, Ext::default());
        assert_eq!(got.body, env.body);
        assert_eq!(open(&key(), &buf[..n]).unwrap(), env);
        assert_ne!(key().id(), Key::new(b"another key, 16+").id());
    }

    /// A peer that knows only `key_id` (session 4's build): it reads our key id and
    /// skips the dialog key name; its messages read with `dialog_keys` 0 (unknown).
    #[test]
    fn the_extension_grows_compatibly() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct ExtKeyIdOnly {
            key_id: u64,
        }
        let env = empty_items(Ext {
            key_id: 5,
            dialog_keys: 9,
            sent_ms: 77,
        });
        let mut buf = [0u8; 512];
        let n = seal(&key(), &env, &mut buf).unwrap();
        let (_, rest) = postcard::take_from_bytes::<Envelope>(&buf[..n - TAG_LEN]).unwrap();
        let theirs: ExtKeyIdOnly = postcard::from_bytes(rest).unwrap();
        assert_eq!(theirs, ExtKeyIdOnly { key_id: 5 });
        // Theirs: the envelope and a key id only.
        let mut old = [0u8; 512];
        let len = postcard::to_slice(&env, &mut old).unwrap().len();
        let len = len
            + postcard::to_slice(&ExtKeyIdOnly { key_id: 5 }, &mut old[len..])
                .unwrap()
                .len();
        let mut m = key().mac();
        m.update(&old[..len]);
        old[len..len + TAG_LEN].copy_from_slice(&m.finalize().into_bytes());
        let got = open(&key(), &old[..len + TAG_LEN]).unwrap();
        assert_eq!(
            got.ext,
            Ext {
                key_id: 5,
                dialog_keys: 0,
                sent_ms: 0
            }
        );
        // A peer of session 22 (no `sent_ms`) reads ours, and its messages read with
        // `sent_ms` 0 (not announced: never stale).
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct ExtTwo {
            key_id: u64,
            dialog_keys: u64,
        }
        let theirs: ExtTwo = postcard::from_bytes(rest).unwrap();
        assert_eq!(
            theirs,
            ExtTwo {
                key_id: 5,
                dialog_keys: 9
            }
        );
        let mut two = [0u8; 512];
        let len = postcard::to_slice(&env, &mut two).unwrap().len();
        let two_ext = ExtTwo {
            key_id: 5,
            dialog_keys: 9,
        };
        let len = len + postcard::to_slice(&two_ext, &mut two[len..]).unwrap().len();
        let mut m = key().mac();
        m.update(&two[..len]);
        two[len..len + TAG_LEN].copy_from_slice(&m.finalize().into_bytes());
        let got = open(&key(), &two[..len + TAG_LEN]).unwrap();
        assert_eq!((got.ext.dialog_keys, got.ext.sent_ms), (9, 0));
    }

    #[test]
    fn derived_values_depend_on_key_and_label() {
        assert_eq!(key().derive("a"), key().derive("a"));
        assert_ne!(key().derive("a"), key().derive("b"));
        assert_ne!(key().derive("a"), Key::new(b"x").derive("a"));
        assert_eq!(format!("{:?}", key()), "Key(<redacted>)");
    }
}
