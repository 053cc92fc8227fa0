//! Materialized broadcast state: the broadcasts, the active-broadcast register and the
//! acknowledgement set.
//!
//! The register records which event wrote it. Once every live node holds that event no older
//! broadcast can become active again anywhere, so the acknowledgements of every other
//! broadcast are collected, and the broadcasts themselves a day later (the daily stats count
//! them).

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::event::Event;

/// The `broadcast` object of a `new_broadcast` event, as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastRecord {
    pub id: String,
    pub message: String,
    pub message_type: String,
    /// The creator's user id.
    pub created_by: String,
    /// The creator's username.
    pub created_by_name: String,
    pub created_at: String,
    pub created_ms: u64,
}

/// Payload of `new_broadcast`: `{"type":"new_broadcast","broadcast":{...}}`, where the
/// broadcast carries the seeds' fields (`created_by` is the username) plus `created_by_id`.
#[derive(Deserialize)]
struct NewBroadcastPayload {
    broadcast: WireBroadcast,
}

#[derive(Deserialize)]
struct WireBroadcast {
    id: String,
    message: String,
    message_type: String,
    created_by: String,
    created_by_id: String,
    created_at: String,
}

#[derive(Deserialize)]
struct AckPayload {
    broadcast_id: String,
    user_id: String,
}

fn corrupt(error: serde_json::Error) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

pub(super) fn apply_new_broadcast(
    connection: &Connection,
    event: &Event,
) -> Result<(), StoreError> {
    let payload: NewBroadcastPayload = serde_json::from_str(&event.payload).map_err(corrupt)?;
    let wire = payload.broadcast;
    let row = BroadcastRow {
        record: BroadcastRecord {
            id: wire.id,
            message: wire.message,
            message_type: wire.message_type,
            created_by: wire.created_by_id,
            created_by_name: wire.created_by,
            created_at: wire.created_at,
            created_ms: event.hlc.millis(),
        },
        hlc: event.hlc.0 as i64,
        origin: event.origin.to_string(),
    };
    merge_broadcast(connection, &row)?;
    write_active_register(connection, Some(&row.record.id), event)
}

pub(super) fn apply_clear(connection: &Connection, event: &Event) -> Result<(), StoreError> {
    write_active_register(connection, None, event)
}

/// Last-writer-wins on `(hlc, origin)`: the write lands only if it is newer than the stored one.
fn write_active_register(
    connection: &Connection,
    broadcast_id: Option<&str>,
    event: &Event,
) -> Result<(), StoreError> {
    write_register(
        connection,
        &ActiveRow {
            broadcast_id: broadcast_id.map(str::to_string),
            hlc: event.hlc.0 as i64,
            origin: event.origin.to_string(),
            seq: event.seq as i64,
        },
    )
}

/// Writes the register if `row` is the later write; it records which event wrote it.
fn write_register(connection: &Connection, row: &ActiveRow) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT INTO active_broadcast (slot, broadcast_id, hlc, origin, seq)
             VALUES (0, ?1, ?2, ?3, ?4)
             ON CONFLICT (slot) DO UPDATE SET
                broadcast_id = excluded.broadcast_id, hlc = excluded.hlc,
                origin = excluded.origin, seq = excluded.seq
             WHERE (excluded.hlc, excluded.origin) > (active_broadcast.hlc, active_broadcast.origin)",
        )?
        .execute(rusqlite::params![row.broadcast_id, row.hlc, row.origin, row.seq])?;
    Ok(())
}

pub(super) fn apply_acknowledgement(
    connection: &Connection,
    event: &Event,
) -> Result<(), StoreError> {
    let payload: AckPayload = serde_json::from_str(&event.payload).map_err(corrupt)?;
    connection
        .prepare_cached(
            "INSERT OR IGNORE INTO broadcast_acks (broadcast_id, user_id, hlc) VALUES (?1, ?2, ?3)",
        )?
        .execute(rusqlite::params![
            payload.broadcast_id,
            payload.user_id,
            event.hlc.0 as i64
        ])?;
    Ok(())
}

// ---- reads ----

/// A broadcast from the first seven columns: id, message, message_type, created_by,
/// created_by_name, created_at, created_ms.
fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<BroadcastRecord> {
    Ok(BroadcastRecord {
        id: row.get(0)?,
        message: row.get(1)?,
        message_type: row.get(2)?,
        created_by: row.get(3)?,
        created_by_name: row.get(4)?,
        created_at: row.get(5)?,
        created_ms: row.get::<_, i64>(6)? as u64,
    })
}

pub fn active_broadcast(connection: &Connection) -> Result<Option<BroadcastRecord>, StoreError> {
    let record = connection
        .prepare_cached(
            "SELECT b.id, b.message, b.message_type, b.created_by, b.created_by_name, b.created_at, b.created_ms
             FROM active_broadcast a JOIN broadcasts b ON b.id = a.broadcast_id WHERE a.slot = 0",
        )?
        .query_row([], read_record)
        .optional()?;
    Ok(record)
}

pub fn broadcast_exists(connection: &Connection, broadcast_id: &str) -> Result<bool, StoreError> {
    let found = connection
        .prepare_cached("SELECT 1 FROM broadcasts WHERE id = ?1")?
        .query_row([broadcast_id], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

pub fn is_acknowledged(
    connection: &Connection,
    broadcast_id: &str,
    user_id: &str,
) -> Result<bool, StoreError> {
    let found = connection
        .prepare_cached("SELECT 1 FROM broadcast_acks WHERE broadcast_id = ?1 AND user_id = ?2")?
        .query_row([broadcast_id, user_id], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

/// Broadcasts `creator` made at or after `since_ms` (Unix milliseconds).
pub fn broadcasts_by_creator_since(
    connection: &Connection,
    creator: &str,
    since_ms: u64,
) -> Result<u64, StoreError> {
    let count: i64 = connection
        .prepare_cached(
            "SELECT count(*) FROM broadcasts WHERE created_by = ?1 AND created_ms >= ?2",
        )?
        .query_row(rusqlite::params![creator, since_ms as i64], |row| {
            row.get(0)
        })?;
    Ok(count as u64)
}

// ---- snapshots ----

/// A stored broadcast, every column: what a snapshot carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastRow {
    pub record: BroadcastRecord,
    pub hlc: i64,
    pub origin: String,
}

/// The active-broadcast register: `None` when cleared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRow {
    pub broadcast_id: Option<String>,
    pub hlc: i64,
    pub origin: String,
    /// The seq of the event that wrote it (with `origin`).
    pub seq: i64,
}

/// One acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRow {
    pub broadcast_id: String,
    pub user_id: String,
    pub hlc: i64,
}

/// Broadcasts created after `since_hlc`, in id order after `after_id`.
pub(super) fn rows_since(
    connection: &Connection,
    since_hlc: i64,
    after_id: &str,
    limit: usize,
) -> Result<Vec<BroadcastRow>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT id, message, message_type, created_by, created_by_name, created_at, created_ms,
                hlc, origin
         FROM broadcasts WHERE hlc > ?1 AND id > ?2 ORDER BY id LIMIT +?3",
    )?;
    let rows = statement.query_map(
        rusqlite::params![since_hlc, after_id, limit as i64],
        |row| {
            Ok(BroadcastRow {
                record: read_record(row)?,
                hlc: row.get(7)?,
                origin: row.get(8)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn active_row(connection: &Connection) -> Result<Option<ActiveRow>, StoreError> {
    Ok(connection
        .prepare_cached(
            "SELECT broadcast_id, hlc, origin, seq FROM active_broadcast WHERE slot = 0",
        )?
        .query_row([], |row| {
            Ok(ActiveRow {
                broadcast_id: row.get(0)?,
                hlc: row.get(1)?,
                origin: row.get(2)?,
                seq: row.get(3)?,
            })
        })
        .optional()?)
}

/// Acknowledgements made after `since_hlc`, in key order after `after`.
pub(super) fn acks_since(
    connection: &Connection,
    since_hlc: i64,
    after: (&str, &str),
    limit: usize,
) -> Result<Vec<AckRow>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT broadcast_id, user_id, hlc FROM broadcast_acks
         WHERE hlc > ?1 AND (broadcast_id, user_id) > (?2, ?3)
         ORDER BY broadcast_id, user_id LIMIT +?4",
    )?;
    let rows = statement.query_map(
        rusqlite::params![since_hlc, after.0, after.1, limit as i64],
        |row| {
            Ok(AckRow {
                broadcast_id: row.get(0)?,
                user_id: row.get(1)?,
                hlc: row.get(2)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Merges snapshot rows: broadcasts and acknowledgements are grow-only, the register keeps
/// the later `(hlc, origin)`. Merging twice changes nothing.
pub(super) fn merge_broadcast(
    connection: &Connection,
    row: &BroadcastRow,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT OR IGNORE INTO broadcasts
             (id, message, message_type, created_by, created_by_name, created_at, created_ms, hlc, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(rusqlite::params![
            row.record.id,
            row.record.message,
            row.record.message_type,
            row.record.created_by,
            row.record.created_by_name,
            row.record.created_at,
            row.record.created_ms as i64,
            row.hlc,
            row.origin,
        ])?;
    Ok(())
}

pub(super) fn merge_active(connection: &Connection, row: &ActiveRow) -> Result<(), StoreError> {
    write_register(connection, row)
}

pub(super) fn merge_ack(connection: &Connection, row: &AckRow) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT OR IGNORE INTO broadcast_acks (broadcast_id, user_id, hlc) VALUES (?1, ?2, ?3)",
        )?
        .execute(rusqlite::params![row.broadcast_id, row.user_id, row.hlc])?;
    Ok(())
}

// ---- collection ----

/// How long a broadcast that is no longer active is kept (the daily stats count it).
pub const SUPERSEDED_KEPT_MS: u64 = 25 * 3600 * 1000;

/// Once every live node holds the write that made the register what it is (`held` says so),
/// no older broadcast can be active again anywhere (last writer wins): the acknowledgements of
/// the others are dead state, and so are the broadcasts themselves once past
/// [`SUPERSEDED_KEPT_MS`]. Removes up to `limit` of each; answers how many went.
pub(super) fn collect_superseded(
    connection: &Connection,
    held: impl Fn(&str, u64) -> bool,
    now_ms: u64,
    limit: usize,
) -> Result<usize, StoreError> {
    let Some(active) = active_row(connection)? else {
        return Ok(0);
    };
    if active.seq <= 0 || !held(&active.origin, active.seq as u64) {
        return Ok(0);
    }
    let current = active.broadcast_id.unwrap_or_default();
    let acks = connection
        .prepare_cached(
            "DELETE FROM broadcast_acks WHERE (broadcast_id, user_id) IN (
                SELECT broadcast_id, user_id FROM broadcast_acks
                WHERE broadcast_id != ?1 LIMIT +?2)",
        )?
        .execute(rusqlite::params![current, limit as i64])?;
    let before = now_ms.saturating_sub(SUPERSEDED_KEPT_MS) as i64;
    let broadcasts = connection
        .prepare_cached(
            "DELETE FROM broadcasts WHERE id IN (
                SELECT id FROM broadcasts WHERE id != ?1 AND created_ms < ?2 LIMIT +?3)",
        )?
        .execute(rusqlite::params![current, before, limit as i64])?;
    Ok(acks + broadcasts)
}
