//! What a peer's frame may claim. A peer holds the cluster secret, so TLS lets it in; this is
//! where a broken or hostile one is caught before anything it says is stored, answered or
//! believed. A frame that breaks a rule is dropped and its link closed with the reason
//! (`herald_mesh_peer_violations_total{reason}`); the peer may reconnect, and is closed again
//! at its next lie.
//!
//! Rules:
//! - every seq is at most [`MAX_SEQ`] (2^53), and an event's seq is at least 1;
//! - the events of a `Range` are all of the range's origin;
//! - an event's seq is at most [`MAX_SEQ_AHEAD`] past the highest position anyone reported for
//!   its origin (this node, the sender's last `Position`, gossip), when anyone did;
//! - no peer holds more of this node's own origin than it committed, give or take
//!   [`MAX_SEQ_AHEAD`];
//! - no hybrid-clock stamp (events, snapshot rows, snapshot ends) is more than the allowed
//!   drift ahead of the local clock, so a peer's clock cannot drag this node's forward;
//! - a pull asks for at most [`MAX_PULL`] events, forwards;
//! - an interest update names at most [`MAX_INTEREST_KEYS`] channels and prefixes (each a
//!   valid channel name, so at most 128 bytes, which the decoder already checked: about
//!   530 KiB a frame at most), and its seq is at most [`MAX_SEQ`];
//! - a presence update carries at most `presence::wire::MAX_CHANGES_PER_MESSAGE` changes, each
//!   user id and name at most 128 bytes (about 400 KiB a frame), and its seq is at most
//!   [`MAX_SEQ`].

use std::fmt;

use crate::event::{Hlc, NodeId, SharedEvent, VersionVector};
use crate::mesh::{Frame, InterestMessage, PresenceMessage};
use crate::store::snapshot::SnapshotPart;

/// The largest seq any frame may carry: far beyond any real log, far below overflow.
pub const MAX_SEQ: u64 = 1 << 53;
/// How far past every known position an event's seq may be.
pub const MAX_SEQ_AHEAD: u64 = 1_000_000;
/// The most events one pull may ask for (an honest node asks for a window of 20,000).
pub const MAX_PULL: u64 = 20_000;
/// The most interest keys (added plus removed) one frame may carry; an honest node sends
/// larger snapshots and deltas in parts of this many.
pub const MAX_INTEREST_KEYS: usize = 4_096;

/// A broken rule, with what the frame claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    SeqOutOfRange {
        origin: NodeId,
        seq: u64,
    },
    ForeignEventInRange {
        range: NodeId,
        event: NodeId,
    },
    SeqFarAhead {
        origin: NodeId,
        seq: u64,
        known: u64,
    },
    OwnOriginAhead {
        claimed: u64,
        committed: u64,
    },
    FutureTimestamp {
        ahead_ms: u64,
    },
    OversizedPull {
        after: u64,
        upto: u64,
    },
    OversizedInterest {
        keys: usize,
    },
    BadPresence {
        reason: String,
    },
}

impl Violation {
    pub fn label(&self) -> &'static str {
        match self {
            Self::SeqOutOfRange { .. } => "seq_out_of_range",
            Self::ForeignEventInRange { .. } => "foreign_event_in_range",
            Self::SeqFarAhead { .. } => "seq_far_ahead",
            Self::OwnOriginAhead { .. } => "own_origin_ahead",
            Self::FutureTimestamp { .. } => "future_timestamp",
            Self::OversizedPull { .. } => "oversized_pull",
            Self::OversizedInterest { .. } => "oversized_interest",
            Self::BadPresence { .. } => "bad_presence",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SeqOutOfRange { origin, seq } => {
                write!(f, "seq {seq} of {origin} is out of range")
            }
            Self::ForeignEventInRange { range, event } => {
                write!(f, "a range of {range} carries an event of {event}")
            }
            Self::SeqFarAhead { origin, seq, known } => {
                write!(
                    f,
                    "seq {seq} of {origin} is far beyond any known position ({known})"
                )
            }
            Self::OwnOriginAhead { claimed, committed } => write!(
                f,
                "claims {claimed} of this node's own events; it committed {committed}"
            ),
            Self::FutureTimestamp { ahead_ms } => {
                write!(f, "a timestamp {ahead_ms} ms ahead of the local clock")
            }
            Self::OversizedPull { after, upto } => {
                write!(f, "a pull of ({after}, {upto}]")
            }
            Self::OversizedInterest { keys } => {
                write!(f, "an interest update of {keys} keys")
            }
            Self::BadPresence { reason } => write!(f, "a presence update with {reason}"),
        }
    }
}

/// What the frame is checked against.
pub struct Bounds<'a> {
    /// This node's own origin and how far it committed it.
    pub own_origin: &'a NodeId,
    pub own_committed: u64,
    /// The highest position anyone reported for an origin, if anyone did.
    pub known: &'a dyn Fn(&NodeId) -> Option<u64>,
    /// The latest hybrid-clock stamp accepted: the local clock plus the allowed drift.
    pub latest_stamp: Hlc,
    /// The local wall clock, in milliseconds (for the reported drift).
    pub now_ms: u64,
}

impl Bounds<'_> {
    fn seq(&self, origin: &NodeId, seq: u64) -> Result<(), Violation> {
        if seq > MAX_SEQ {
            return Err(Violation::SeqOutOfRange {
                origin: origin.clone(),
                seq,
            });
        }
        Ok(())
    }

    fn stamp(&self, stamp: u64) -> Result<(), Violation> {
        if stamp > self.latest_stamp.0 {
            return Err(Violation::FutureTimestamp {
                ahead_ms: Hlc(stamp).millis().saturating_sub(self.now_ms),
            });
        }
        Ok(())
    }

    fn signed_stamp(&self, stamp: i64) -> Result<(), Violation> {
        self.stamp(u64::try_from(stamp).unwrap_or(0))
    }

    fn events(&self, events: &[SharedEvent]) -> Result<(), Violation> {
        for event in events {
            if event.seq == 0 || event.seq > MAX_SEQ {
                return Err(Violation::SeqOutOfRange {
                    origin: event.origin.clone(),
                    seq: event.seq,
                });
            }
            if let Some(known) = (self.known)(&event.origin) {
                if event.seq > known.saturating_add(MAX_SEQ_AHEAD) {
                    return Err(Violation::SeqFarAhead {
                        origin: event.origin.clone(),
                        seq: event.seq,
                        known,
                    });
                }
            }
            self.stamp(event.hlc.0)?;
        }
        Ok(())
    }

    fn vector(&self, vector: &VersionVector) -> Result<(), Violation> {
        for (origin, seq) in vector.iter() {
            self.seq(origin, seq)?;
        }
        Ok(())
    }
}

/// Checks one frame from a peer.
pub fn check(frame: &Frame, bounds: &Bounds<'_>) -> Result<(), Violation> {
    match frame {
        Frame::Hello { .. } => Ok(()),
        Frame::Events { events } => bounds.events(events),
        // Ephemeral events have no seq; only their stamps are checked.
        Frame::Ephemeral { events } => events.iter().try_for_each(|e| bounds.stamp(e.hlc.0)),
        Frame::Range { origin, events } => {
            if let Some(foreign) = events.iter().find(|e| &e.origin != origin) {
                return Err(Violation::ForeignEventInRange {
                    range: origin.clone(),
                    event: foreign.origin.clone(),
                });
            }
            bounds.events(events)
        }
        Frame::AskPosition { .. } => Ok(()),
        Frame::Position { vector } | Frame::PositionAnswer { vector, .. } => {
            bounds.vector(vector)?;
            let claimed = vector.get(bounds.own_origin);
            if claimed > bounds.own_committed.saturating_add(MAX_SEQ_AHEAD) {
                return Err(Violation::OwnOriginAhead {
                    claimed,
                    committed: bounds.own_committed,
                });
            }
            Ok(())
        }
        Frame::Pull {
            origin,
            after,
            upto,
        } => {
            bounds.seq(origin, *after)?;
            bounds.seq(origin, *upto)?;
            if upto < after || upto - after > MAX_PULL {
                return Err(Violation::OversizedPull {
                    after: *after,
                    upto: *upto,
                });
            }
            Ok(())
        }
        Frame::Pruned { origin, pruned } => bounds.seq(origin, *pruned),
        Frame::SnapshotRequest { basis, .. } => bounds.vector(&basis.since),
        Frame::SnapshotPart { part, .. } => match part {
            SnapshotPart::Events(events) => bounds.events(events),
            SnapshotPart::Comments(rows) => rows.iter().try_for_each(|row| {
                bounds.signed_stamp(row.content_hlc)?;
                row.created_hlc
                    .map_or(Ok(()), |stamp| bounds.signed_stamp(stamp))
            }),
            SnapshotPart::Broadcasts(rows) => {
                rows.iter().try_for_each(|row| bounds.signed_stamp(row.hlc))
            }
            SnapshotPart::Active(row) => bounds.signed_stamp(row.hlc),
            SnapshotPart::Acks(rows) => {
                rows.iter().try_for_each(|row| bounds.signed_stamp(row.hlc))
            }
            SnapshotPart::Floors(rows) => rows.iter().try_for_each(|(_, origin, seq)| {
                let origin = NodeId::new(origin).map_err(|_| Violation::SeqOutOfRange {
                    origin: bounds.own_origin.clone(),
                    seq: 0,
                })?;
                bounds.seq(&origin, *seq)
            }),
            SnapshotPart::Collected(rows) => rows
                .iter()
                .try_for_each(|row| bounds.signed_stamp(row.deleted_hlc)),
        },
        Frame::Interest(InterestMessage::Resync) => Ok(()),
        Frame::Interest(InterestMessage::Update {
            seq, add, remove, ..
        }) => {
            if *seq > MAX_SEQ {
                return Err(Violation::SeqOutOfRange {
                    origin: bounds.own_origin.clone(),
                    seq: *seq,
                });
            }
            let keys = add.len().saturating_add(remove.len());
            if keys > MAX_INTEREST_KEYS {
                return Err(Violation::OversizedInterest { keys });
            }
            Ok(())
        }
        Frame::Presence(message) => {
            if let PresenceMessage::Update { seq, .. } = message {
                if *seq > MAX_SEQ {
                    return Err(Violation::SeqOutOfRange {
                        origin: bounds.own_origin.clone(),
                        seq: *seq,
                    });
                }
            }
            match crate::presence::wire::invalid(message) {
                Some(reason) => Err(Violation::BadPresence { reason }),
                None => Ok(()),
            }
        }
        Frame::SnapshotEnd { end, .. } => {
            bounds.vector(&end.upto)?;
            bounds.vector(&end.pruned)?;
            end.upto_hlc
                .iter()
                .try_for_each(|(_, stamp)| bounds.stamp(*stamp))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{ChannelName, Event};

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn event(origin: &str, seq: u64, hlc: Hlc) -> SharedEvent {
        Arc::new(Event {
            origin: node(origin),
            seq,
            id: uuid::Uuid::new_v4(),
            hlc,
            channel: ChannelName::new("feed").unwrap(),
            kind: "item".into(),
            payload: "{}".into(),
            users: None,
            ephemeral: false,
            idempotency_key: None,
        })
    }

    const NOW_MS: u64 = 1_800_000_000_000;

    fn check_with(frame: &Frame, known: Option<u64>) -> Result<(), Violation> {
        let known = move |_: &NodeId| known;
        let own = node("self.1");
        check(
            frame,
            &Bounds {
                own_origin: &own,
                own_committed: 100,
                known: &known,
                latest_stamp: Hlc::from_parts(NOW_MS + 60_000, u16::MAX),
                now_ms: NOW_MS,
            },
        )
    }

    #[test]
    fn honest_frames_pass() {
        let now = Hlc::from_parts(NOW_MS, 0);
        let events = vec![event("p.1", 5, now), event("p.1", 6, now)];
        assert_eq!(
            check_with(
                &Frame::Events {
                    events: events.clone()
                },
                Some(4)
            ),
            Ok(())
        );
        let range = Frame::Range {
            origin: node("p.1"),
            events,
        };
        assert_eq!(check_with(&range, None), Ok(()));
        let pull = Frame::Pull {
            origin: node("p.1"),
            after: 10,
            upto: 10 + MAX_PULL,
        };
        assert_eq!(check_with(&pull, None), Ok(()));
    }

    #[test]
    fn each_lie_is_named() {
        let now = Hlc::from_parts(NOW_MS, 0);
        let range = Frame::Range {
            origin: node("p.1"),
            events: vec![event("p.1", 1, now), event("q.1", 2, now)],
        };
        assert_eq!(
            check_with(&range, None).unwrap_err().label(),
            "foreign_event_in_range"
        );
        let huge = Frame::Events {
            events: vec![event("p.1", u64::MAX, now)],
        };
        assert_eq!(
            check_with(&huge, None).unwrap_err().label(),
            "seq_out_of_range"
        );
        let far = Frame::Events {
            events: vec![event("p.1", 10 + MAX_SEQ_AHEAD + 1, now)],
        };
        assert_eq!(
            check_with(&far, Some(10)).unwrap_err().label(),
            "seq_far_ahead"
        );
        assert_eq!(
            check_with(&far, None),
            Ok(()),
            "no position known: no bound"
        );
        let future = Frame::Events {
            events: vec![event("p.1", 1, Hlc::from_parts(NOW_MS + 3_600_000, 0))],
        };
        let error = check_with(&future, None).unwrap_err();
        assert_eq!(
            error,
            Violation::FutureTimestamp {
                ahead_ms: 3_600_000
            }
        );
        let pull = Frame::Pull {
            origin: node("p.1"),
            after: 0,
            upto: u64::MAX,
        };
        assert_eq!(
            check_with(&pull, None).unwrap_err().label(),
            "seq_out_of_range"
        );
        let pull = Frame::Pull {
            origin: node("p.1"),
            after: 0,
            upto: MAX_PULL + 1,
        };
        assert_eq!(
            check_with(&pull, None).unwrap_err().label(),
            "oversized_pull"
        );
        let backwards = Frame::Pull {
            origin: node("p.1"),
            after: 9,
            upto: 3,
        };
        assert_eq!(
            check_with(&backwards, None).unwrap_err().label(),
            "oversized_pull"
        );
        let mut vector = VersionVector::new();
        vector.advance(&node("self.1"), 100 + MAX_SEQ_AHEAD + 1);
        let position = Frame::Position {
            vector: vector.clone(),
        };
        assert_eq!(
            check_with(&position, None).unwrap_err().label(),
            "own_origin_ahead"
        );
        let answer = Frame::PositionAnswer { nonce: 1, vector };
        assert_eq!(
            check_with(&answer, None).unwrap_err().label(),
            "own_origin_ahead"
        );
        let key = crate::hub::interest::InterestKey::Channel(ChannelName::new("c").unwrap());
        let interest = |keys: usize, seq: u64| {
            Frame::Interest(InterestMessage::Update {
                generation: 1,
                seq,
                reset: false,
                everything: false,
                add: vec![key.clone(); keys],
                remove: Vec::new(),
            })
        };
        assert_eq!(check_with(&interest(MAX_INTEREST_KEYS, 9), None), Ok(()));
        assert_eq!(
            check_with(&interest(MAX_INTEREST_KEYS + 1, 9), None),
            Err(Violation::OversizedInterest {
                keys: MAX_INTEREST_KEYS + 1
            })
        );
        assert_eq!(
            check_with(&interest(1, MAX_SEQ + 1), None)
                .unwrap_err()
                .label(),
            "seq_out_of_range"
        );
        assert_eq!(
            check_with(&Frame::Interest(InterestMessage::Resync), None),
            Ok(())
        );
    }
}
