//! Mesh frames: the wire format between nodes, in one place.
//!
//! Each frame on a QUIC stream is `HRLD` (4 bytes), a format version (1 byte), a body length
//! (u32, big endian), then the body: a [`Frame`] in bincode 2 (standard configuration, serde).
//! Bodies larger than [`MAX_FRAME_BYTES`] are refused before any allocation, and a frame that
//! does not decode closes the link; decoding never panics.

use serde::{Deserialize, Serialize};

use crate::event::{NodeId, SharedEvent, VersionVector};
pub use crate::hub::interest::InterestKey;
pub use crate::presence::PresenceMessage;
use crate::store::snapshot::{SnapshotBasis, SnapshotEnd, SnapshotPart};

pub const MAGIC: [u8; 4] = *b"HRLD";
/// 2: events carry their idempotency key. 3: presence.
pub const FORMAT_VERSION: u8 = 3;
pub const HEADER_LEN: usize = 9;
/// The largest frame body accepted or produced.
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;
/// Events are packed into frames of about this many payload bytes.
pub const TARGET_FRAME_BYTES: usize = 1024 * 1024;

/// New variants go at the end: bincode numbers them in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame on every link, both ways.
    Hello {
        node_id: NodeId,
        cluster_id: String,
        /// Grows on every restart of the node.
        generation: u64,
    },
    /// Committed events pushed live by the node that holds them, in log order per origin.
    Events { events: Vec<SharedEvent> },
    /// Ephemeral events (typing indicators): delivered, never stored.
    Ephemeral { events: Vec<SharedEvent> },
    /// The sender's log position; sent after storing pushed events (the replication ack) and
    /// periodically (so that peers notice what they are missing).
    Position { vector: VersionVector },
    /// Asks for the events of `origin` in `(after, upto]`.
    Pull {
        origin: NodeId,
        after: u64,
        upto: u64,
    },
    /// Events answering a pull, in seq order.
    Range {
        origin: NodeId,
        events: Vec<SharedEvent>,
    },
    /// Answers a pull that reaches below what the sender keeps: it pruned `origin`'s events up
    /// to `pruned`. The asker catches up through a snapshot instead.
    Pruned { origin: NodeId, pruned: u64 },
    /// Asks for a snapshot (see `crate::store::snapshot`) from what the sender holds.
    SnapshotRequest { id: u64, basis: SnapshotBasis },
    /// One bounded part of snapshot `id`.
    SnapshotPart { id: u64, part: SnapshotPart },
    /// The end of snapshot `id`: the position it is as of.
    SnapshotEnd { id: u64, end: SnapshotEnd },
    /// Which channels the sender has local subscribers of (`crate::backplane::mesh_interest`).
    Interest(InterestMessage),
    /// Who the sender holds on presence channels (`crate::backplane::mesh_presence`).
    Presence(PresenceMessage),
    /// Asks for the receiver's log position now; sent by a node that woke from a stall
    /// (`crate::backplane::mesh_rejoin`), whose inbound buffers hold positions from before.
    AskPosition { nonce: u64 },
    /// Answers `AskPosition { nonce }` with the sender's log position as it read the ask.
    PositionAnswer { nonce: u64, vector: VersionVector },
}

/// The interest protocol: a snapshot when a link comes up, then numbered deltas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum InterestMessage {
    /// One part of a snapshot (`reset` on its first part: forget what the sender said before)
    /// or a change. Numbered per link from the snapshot's first part; `everything` says the
    /// sender wants every channel (its interest is too large to list).
    Update {
        generation: u64,
        seq: u64,
        reset: bool,
        everything: bool,
        add: Vec<InterestKey>,
        remove: Vec<InterestKey>,
    },
    /// Asks for a snapshot: the receiver lost track of the sender's interest.
    Resync,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported frame format version {0}")]
    UnsupportedVersion(u8),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("frame does not decode: {0}")]
    Malformed(String),
}

fn codec() -> bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME_BYTES>,
> {
    bincode::config::standard()
        .with_big_endian()
        .with_limit::<MAX_FRAME_BYTES>()
}

/// Encodes a frame with its header.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let mut bytes = vec![0u8; HEADER_LEN];
    let body = bincode::serde::encode_to_vec(frame, codec())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(body.len()));
    }
    bytes[..4].copy_from_slice(&MAGIC);
    bytes[4] = FORMAT_VERSION;
    bytes[5..9].copy_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// Checks a header and answers the body length that follows.
pub fn decode_header(header: &[u8; HEADER_LEN]) -> Result<usize, FrameError> {
    if header[..4] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    if header[4] != FORMAT_VERSION {
        return Err(FrameError::UnsupportedVersion(header[4]));
    }
    let length = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(length));
    }
    Ok(length)
}

pub fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
    let (frame, read) = bincode::serde::decode_from_slice::<Frame, _>(body, codec())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if read != body.len() {
        return Err(FrameError::Malformed("trailing bytes".into()));
    }
    Ok(frame)
}

/// Decodes one whole frame (header and body) from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| FrameError::Malformed("short header".into()))?;
    let length = decode_header(header)?;
    let body = &bytes[HEADER_LEN..];
    if body.len() != length {
        return Err(FrameError::Malformed("length mismatch".into()));
    }
    decode_body(body)
}

/// Splits events into frames of about [`TARGET_FRAME_BYTES`] each.
pub fn chunk_events(events: &[SharedEvent]) -> Vec<Vec<SharedEvent>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = event.payload.len() + event.channel.as_str().len() + event.kind.len() + 64;
        if !current.is_empty() && bytes + size > TARGET_FRAME_BYTES {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(std::sync::Arc::clone(event));
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChannelName, Event, Hlc};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn event(seq: u64, payload: &str) -> SharedEvent {
        Arc::new(Event {
            origin: NodeId::new("n1.abc").unwrap(),
            seq,
            id: uuid::Uuid::new_v4(),
            hlc: Hlc(seq * 7),
            channel: ChannelName::new("track:1").unwrap(),
            kind: "new_comment".into(),
            payload: payload.into(),
            users: if seq % 2 == 0 {
                Some(vec!["u1".into()])
            } else {
                None
            },
            ephemeral: false,
            idempotency_key: (seq % 2 == 0)
                .then(|| crate::event::IdempotencyKey::new(&format!("key-{seq}")).unwrap()),
        })
    }

    #[test]
    fn round_trips_every_frame_kind() {
        let mut vector = VersionVector::new();
        vector.advance(&NodeId::new("n1").unwrap(), 9);
        let frames = vec![
            Frame::Hello {
                node_id: NodeId::new("n1").unwrap(),
                cluster_id: "c".into(),
                generation: 7,
            },
            Frame::Events {
                events: vec![event(1, "{\"type\":\"x\"}"), event(2, "{}")],
            },
            Frame::Ephemeral {
                events: vec![event(0, "{\"type\":\"typing\"}")],
            },
            Frame::Position {
                vector: vector.clone(),
            },
            Frame::AskPosition { nonce: 5 },
            Frame::PositionAnswer { nonce: 5, vector },
            Frame::Pull {
                origin: NodeId::new("n2").unwrap(),
                after: 3,
                upto: 90,
            },
            Frame::Range {
                origin: NodeId::new("n2").unwrap(),
                events: vec![event(4, "{}")],
            },
            Frame::Pruned {
                origin: NodeId::new("n2").unwrap(),
                pruned: 40,
            },
            Frame::SnapshotRequest {
                id: 9,
                basis: SnapshotBasis {
                    since: VersionVector::new(),
                    since_hlc: 3,
                },
            },
            Frame::SnapshotPart {
                id: 9,
                part: SnapshotPart::Events(vec![event(5, "{}")]),
            },
            Frame::SnapshotPart {
                id: 9,
                part: SnapshotPart::Floors(vec![("track:1".into(), "n2".into(), 4)]),
            },
            Frame::SnapshotEnd {
                id: 9,
                end: SnapshotEnd {
                    upto: VersionVector::new(),
                    upto_hlc: vec![(NodeId::new("n2").unwrap(), 77)],
                    pruned: VersionVector::new(),
                },
            },
            Frame::Interest(InterestMessage::Update {
                generation: 3,
                seq: 1,
                reset: true,
                everything: false,
                add: vec![
                    InterestKey::Channel(ChannelName::new("track:1").unwrap()),
                    InterestKey::Prefix(ChannelName::new("forum:thread:").unwrap()),
                ],
                remove: vec![InterestKey::Channel(ChannelName::new("x").unwrap())],
            }),
            Frame::Interest(InterestMessage::Resync),
        ];
        for frame in frames {
            let bytes = encode(&frame).unwrap();
            assert_eq!(decode(&bytes).unwrap(), frame);
        }
    }

    #[test]
    fn interest_keys_must_be_channel_names() {
        let frame = Frame::Interest(InterestMessage::Update {
            generation: 1,
            seq: 0,
            reset: true,
            everything: false,
            add: vec![InterestKey::Channel(ChannelName::new("track:1").unwrap())],
            remove: Vec::new(),
        });
        let mut bytes = encode(&frame).unwrap();
        let at = bytes
            .windows(7)
            .position(|w| w == b"track:1")
            .expect("the key is in the frame");
        bytes[at + 5] = b' ';
        assert!(matches!(decode(&bytes), Err(FrameError::Malformed(_))));
    }

    #[test]
    fn refuses_bad_headers_and_oversized_lengths() {
        let mut bytes = encode(&Frame::Pull {
            origin: NodeId::new("n").unwrap(),
            after: 0,
            upto: 1,
        })
        .unwrap();
        bytes[0] = b'X';
        assert_eq!(decode(&bytes), Err(FrameError::BadMagic));
        bytes[0] = b'H';
        bytes[4] = 99;
        assert_eq!(decode(&bytes), Err(FrameError::UnsupportedVersion(99)));
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4] = FORMAT_VERSION;
        header[5..9].copy_from_slice(&(u32::MAX).to_be_bytes());
        assert_eq!(
            decode_header(&header),
            Err(FrameError::TooLarge(u32::MAX as usize))
        );
    }

    #[test]
    fn chunks_large_batches() {
        let big = "x".repeat(300 * 1024);
        let events: Vec<SharedEvent> = (1..=10).map(|seq| event(seq, &big)).collect();
        let chunks = chunk_events(&events);
        assert!(chunks.len() >= 3);
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 10);
        for chunk in &chunks {
            assert!(
                encode(&Frame::Events {
                    events: chunk.clone()
                })
                .is_ok()
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let _ = decode_body(&bytes);
        }

        #[test]
        fn decoding_mutated_frames_never_panics(flip in 0usize..200, value in any::<u8>()) {
            let frame = Frame::Events { events: vec![event(1, r#"{"type":"x"}"#), event(2, "{}")] };
            let mut bytes = encode(&frame).unwrap();
            let index = flip % bytes.len();
            bytes[index] = value;
            let _ = decode(&bytes);
        }
    }
}
