//! Snapshots: how a node whose position is below what its peers still keep catches up.
//!
//! A node that was away longer than the retention window (or is new, or was wiped) cannot be
//! sent the events it lacks: they were pruned. It asks a peer for a snapshot instead, saying
//! what it holds (`since`, and `since_hlc`: the oldest hybrid-clock stamp among its
//! positions). The peer answers, from one read transaction, as of its own position `upto`:
//!
//! 1. the materialized state that changed after `since_hlc` (every event the asker lacks is
//!    stamped later than that, since each origin's stamps increase): comment rows, collected
//!    comment tombstones, broadcasts, the active-broadcast register, acknowledgements; all of
//!    it when the asker lacks an origin entirely;
//! 2. the channel floors the asker does not cover;
//! 3. the retained events in `(since, upto]`;
//! 4. the end: `upto`, the stamps at `upto`, and the peer's prune points.
//!
//! Each part is merged in its own transaction by rules that make merging idempotent and
//! order-independent (last-writer-wins registers, grow-only sets, tombstones that win,
//! floors that only rise), so a snapshot cut short by a crash is simply asked for again. The
//! position only moves at the end, in one transaction: then the asker holds what the peer
//! held at `upto`, its history windows match, and what arrived live meanwhile (held back behind
//! the gap) is handed on.

use std::path::Path;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::broadcasts::{self, AckRow, ActiveRow, BroadcastRow};
use super::comments::{self, CollectedTombstone, CommentRow};
use super::floors::{self, FloorRow};
use super::{StoreError, log, prune, schema};
use crate::event::{Event, NodeId, SharedEvent, VersionVector};

/// Rows of materialized state per part.
const ROWS_PER_PART: usize = 200;
/// Event bytes per part (well under a mesh frame).
const EVENT_BYTES_PER_PART: i64 = 1024 * 1024;
/// Events read per query.
const EVENTS_PER_QUERY: usize = 2000;

/// One bounded piece of a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SnapshotPart {
    Comments(Vec<CommentRow>),
    Broadcasts(Vec<BroadcastRow>),
    Active(ActiveRow),
    Acks(Vec<AckRow>),
    Floors(Vec<FloorRow>),
    Events(Vec<SharedEvent>),
    /// Deleted comments whose rows were collected: the receiver drops them too.
    Collected(Vec<CollectedTombstone>),
}

/// The last piece: the position the snapshot is as of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEnd {
    pub upto: VersionVector,
    /// The hybrid-clock stamp of each origin's event at `upto`.
    pub upto_hlc: Vec<(NodeId, u64)>,
    /// The sender's prune points: below them it could not answer a pull either.
    pub pruned: VersionVector,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SnapshotItem {
    Part(SnapshotPart),
    End(SnapshotEnd),
}

/// What a node asking for a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotBasis {
    pub since: VersionVector,
    /// The oldest stamp among `since`'s positions (0 when unknown: send everything).
    pub since_hlc: u64,
}

pub(super) fn basis(connection: &Connection) -> Result<SnapshotBasis, StoreError> {
    let since = log::version_vector(connection)?;
    let since_hlc = log::position_hlcs(connection)?
        .into_iter()
        .filter(|(origin, _)| since.get(origin) > 0)
        .map(|(_, hlc)| hlc)
        .min()
        .unwrap_or(0);
    Ok(SnapshotBasis { since, since_hlc })
}

/// Reads a snapshot for a node at `basis`, handing each item to `send` (which answers false
/// when the receiver is gone). One read transaction: every part is as of the same position.
pub(super) fn read(
    path: &Path,
    basis: &SnapshotBasis,
    mut send: impl FnMut(SnapshotItem) -> bool,
) -> Result<(), StoreError> {
    let mut connection = schema::open_reader(path)?;
    let tx = connection.transaction()?;
    let upto = log::version_vector(&tx)?;
    // An origin the asker has never heard of: all state may be new to it.
    let knows_every_origin = upto.iter().all(|(origin, _)| basis.since.get(origin) > 0);
    let since_hlc = if knows_every_origin {
        basis.since_hlc as i64
    } else {
        0
    };
    macro_rules! send_or_stop {
        ($item:expr) => {
            if !send($item) {
                return Ok(());
            }
        };
    }

    let mut after = String::new();
    loop {
        let rows = comments::rows_changed_since(&tx, since_hlc, &after, ROWS_PER_PART)?;
        let Some(last) = rows.last() else { break };
        after = last.id.clone();
        send_or_stop!(SnapshotItem::Part(SnapshotPart::Comments(rows)));
    }
    let mut after = String::new();
    loop {
        let rows = comments::collected_since(&tx, since_hlc, &after, ROWS_PER_PART * 10)?;
        let Some(last) = rows.last() else { break };
        after = last.id.clone();
        send_or_stop!(SnapshotItem::Part(SnapshotPart::Collected(rows)));
    }
    let mut after = String::new();
    loop {
        let rows = broadcasts::rows_since(&tx, since_hlc, &after, ROWS_PER_PART)?;
        let Some(last) = rows.last() else { break };
        after = last.record.id.clone();
        send_or_stop!(SnapshotItem::Part(SnapshotPart::Broadcasts(rows)));
    }
    if let Some(active) = broadcasts::active_row(&tx)? {
        send_or_stop!(SnapshotItem::Part(SnapshotPart::Active(active)));
    }
    let mut after = (String::new(), String::new());
    loop {
        let rows = broadcasts::acks_since(&tx, since_hlc, (&after.0, &after.1), ROWS_PER_PART)?;
        let Some(last) = rows.last() else { break };
        after = (last.broadcast_id.clone(), last.user_id.clone());
        send_or_stop!(SnapshotItem::Part(SnapshotPart::Acks(rows)));
    }
    for chunk in floors::floors_above(&tx, &basis.since)?.chunks(ROWS_PER_PART * 10) {
        send_or_stop!(SnapshotItem::Part(SnapshotPart::Floors(chunk.to_vec())));
    }
    for (origin, upto_seq) in upto.iter() {
        let mut next = basis.since.get(origin);
        let mut part: Vec<SharedEvent> = Vec::new();
        let mut bytes = 0;
        while next < upto_seq {
            let events = log::range(&tx, origin, next, upto_seq, EVENTS_PER_QUERY)?;
            let Some(last) = events.last() else { break };
            next = last.seq;
            for event in events {
                bytes += prune::event_bytes(&event);
                part.push(std::sync::Arc::new(event));
                if bytes >= EVENT_BYTES_PER_PART {
                    send_or_stop!(SnapshotItem::Part(SnapshotPart::Events(std::mem::take(
                        &mut part
                    ))));
                    bytes = 0;
                }
            }
        }
        if !part.is_empty() {
            send_or_stop!(SnapshotItem::Part(SnapshotPart::Events(part)));
        }
    }
    let upto_hlc = log::position_hlcs(&tx)?;
    let pruned = prune::pruned_positions(&tx)?;
    tx.commit()?;
    send(SnapshotItem::End(SnapshotEnd {
        upto,
        upto_hlc,
        pruned,
    }));
    Ok(())
}

/// Merges one part of materialized state or floors (events are stored by the writer itself).
pub(super) fn merge_state(connection: &Connection, part: &SnapshotPart) -> Result<(), StoreError> {
    match part {
        SnapshotPart::Comments(rows) => {
            for row in rows {
                comments::merge_row(connection, row)?;
            }
        }
        SnapshotPart::Broadcasts(rows) => {
            for row in rows {
                broadcasts::merge_broadcast(connection, row)?;
            }
        }
        SnapshotPart::Active(row) => broadcasts::merge_active(connection, row)?,
        SnapshotPart::Acks(rows) => {
            for row in rows {
                broadcasts::merge_ack(connection, row)?;
            }
        }
        SnapshotPart::Floors(rows) => {
            for (channel, origin, seq) in rows {
                floors::raise(connection, channel, origin, *seq)?;
            }
        }
        SnapshotPart::Collected(rows) => {
            for row in rows {
                comments::merge_collected(connection, row)?;
            }
        }
        SnapshotPart::Events(_) => {}
    }
    Ok(())
}

/// Plain events for storing (the parts share them).
pub(super) fn events_of(part: &SnapshotPart) -> Option<impl Iterator<Item = &Event>> {
    match part {
        SnapshotPart::Events(events) => Some(events.iter().map(|e| e.as_ref())),
        _ => None,
    }
}
