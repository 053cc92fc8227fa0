//! Materialized track comments.
//!
//! Rules (order-independent, DESIGN.md section 2 point 4): the content (with its track
//! position) is a last-writer-wins register on `(hlc, origin)` written by `new_comment` and
//! `comment_edited`; `comment_deleted` is a tombstone that wins over any edit; the author and
//! creation time come from `new_comment` whenever it arrives.
//!
//! Tombstones are collected once every live node holds both the comment's creation and its
//! deletion: the row goes, and its id is remembered (`collected_tombstones`, for
//! [`super::retire::RETIRED_KEPT`]) so that a late edit or a replayed creation changes nothing
//! and a snapshot tells a node that was away to drop the comment too.

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::event::Event;

/// A comment as clients see it (the seeds' comment object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommentRecord {
    pub id: String,
    pub track_id: String,
    pub user_id: String,
    pub username: String,
    pub content: String,
    pub timestamp: f64,
    pub created_at: String,
    pub is_edited: bool,
    pub last_edited_at: Option<String>,
}

#[derive(Deserialize)]
struct NewCommentPayload {
    comment: CommentRecord,
}

#[derive(Deserialize)]
struct EditedPayload {
    track_id: String,
    comment_id: String,
    content: String,
    timestamp: f64,
    last_edited_at: Option<String>,
}

#[derive(Deserialize)]
struct DeletedPayload {
    track_id: String,
    comment_id: String,
}

/// The content register's update on conflict: the later `(content_hlc, content_origin)`
/// writes content, position and edit time (a creation never outranks an edit of it: the edit
/// saw the creation, so its stamp is later).
const CONTENT_REGISTER: &str = "
    content = CASE WHEN (excluded.content_hlc, excluded.content_origin) > (content_hlc, content_origin)
                   THEN excluded.content ELSE content END,
    position = CASE WHEN (excluded.content_hlc, excluded.content_origin) > (content_hlc, content_origin)
                    THEN excluded.position ELSE position END,
    last_edited_at = CASE WHEN (excluded.content_hlc, excluded.content_origin) > (content_hlc, content_origin)
                          THEN excluded.last_edited_at ELSE last_edited_at END,
    content_origin = CASE WHEN (excluded.content_hlc, excluded.content_origin) > (content_hlc, content_origin)
                          THEN excluded.content_origin ELSE content_origin END,
    content_hlc = max(content_hlc, excluded.content_hlc)";

fn corrupt(error: serde_json::Error) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

pub(super) fn apply_new(connection: &Connection, event: &Event) -> Result<(), StoreError> {
    let comment = serde_json::from_str::<NewCommentPayload>(&event.payload)
        .map_err(corrupt)?
        .comment;
    if is_collected(connection, &comment.id)? {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO comments (id, track_id, author_id, author_name, created_at, created_hlc,
                                   content, position, content_hlc, content_origin, touched_hlc,
                                   created_origin, created_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?6, ?9, ?6, ?9, ?10)
             ON CONFLICT (id) DO UPDATE SET
                author_id = excluded.author_id,
                author_name = excluded.author_name,
                created_at = excluded.created_at,
                created_hlc = excluded.created_hlc,
                created_origin = excluded.created_origin,
                created_seq = excluded.created_seq,
                touched_hlc = max(touched_hlc, excluded.touched_hlc),
                {CONTENT_REGISTER}"
    );
    connection.prepare_cached(&sql)?.execute(rusqlite::params![
        comment.id,
        comment.track_id,
        comment.user_id,
        comment.username,
        comment.created_at,
        event.hlc.0 as i64,
        comment.content,
        comment.timestamp,
        event.origin.as_str(),
        event.seq as i64,
    ])?;
    Ok(())
}

pub(super) fn apply_edited(connection: &Connection, event: &Event) -> Result<(), StoreError> {
    let edit: EditedPayload = serde_json::from_str(&event.payload).map_err(corrupt)?;
    if is_collected(connection, &edit.comment_id)? {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO comments (id, track_id, content, position, content_hlc, content_origin, is_edited, last_edited_at, touched_hlc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?5)
             ON CONFLICT (id) DO UPDATE SET
                is_edited = 1,
                touched_hlc = max(touched_hlc, excluded.touched_hlc),
                {CONTENT_REGISTER}"
    );
    connection.prepare_cached(&sql)?.execute(rusqlite::params![
        edit.comment_id,
        edit.track_id,
        edit.content,
        edit.timestamp,
        event.hlc.0 as i64,
        event.origin.as_str(),
        edit.last_edited_at,
    ])?;
    Ok(())
}

pub(super) fn apply_deleted(connection: &Connection, event: &Event) -> Result<(), StoreError> {
    let deleted: DeletedPayload = serde_json::from_str(&event.payload).map_err(corrupt)?;
    if is_collected(connection, &deleted.comment_id)? {
        return Ok(());
    }
    connection
        .prepare_cached(
            "INSERT INTO comments (id, track_id, deleted, touched_hlc, deleted_origin, deleted_seq)
             VALUES (?1, ?2, 1, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET
                deleted = 1,
                touched_hlc = max(touched_hlc, excluded.touched_hlc),
                deleted_origin = coalesce(deleted_origin, excluded.deleted_origin),
                deleted_seq = coalesce(deleted_seq, excluded.deleted_seq)",
        )?
        .execute(rusqlite::params![
            deleted.comment_id,
            deleted.track_id,
            event.hlc.0 as i64,
            event.origin.as_str(),
            event.seq as i64
        ])?;
    Ok(())
}

const SELECT_COMMENT: &str =
    "SELECT id, track_id, author_id, author_name, content, position, created_at,
        is_edited, last_edited_at FROM comments";

fn read_comment(row: &rusqlite::Row<'_>) -> rusqlite::Result<CommentRecord> {
    Ok(CommentRecord {
        id: row.get(0)?,
        track_id: row.get(1)?,
        user_id: row.get(2)?,
        username: row.get(3)?,
        content: row.get(4)?,
        timestamp: row.get(5)?,
        created_at: row.get(6)?,
        is_edited: row.get::<_, i64>(7)? != 0,
        last_edited_at: row.get(8)?,
    })
}

/// A live (created, not deleted) comment.
pub fn comment(connection: &Connection, id: &str) -> Result<Option<CommentRecord>, StoreError> {
    let sql = format!("{SELECT_COMMENT} WHERE id = ?1 AND deleted = 0 AND created_hlc IS NOT NULL");
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([id], read_comment)
        .optional()?)
}

/// A track's live comments, by position in the track, then creation.
pub fn track_comments(
    connection: &Connection,
    track_id: &str,
    limit: usize,
) -> Result<Vec<CommentRecord>, StoreError> {
    let sql = format!(
        "{SELECT_COMMENT} WHERE track_id = ?1 COLLATE BINARY AND deleted = 0
         AND created_hlc IS NOT NULL ORDER BY position, created_hlc LIMIT +?2"
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(rusqlite::params![track_id, limit as i64], read_comment)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The full state of one comment, deleted or not, for convergence checks.
pub fn comment_state(
    connection: &Connection,
    id: &str,
) -> Result<Option<(String, bool, bool)>, StoreError> {
    Ok(connection
        .prepare_cached("SELECT content, is_edited, deleted FROM comments WHERE id = ?1")?
        .query_row([id], |row| {
            Ok((
                row.get(0)?,
                row.get::<_, i64>(1)? != 0,
                row.get::<_, i64>(2)? != 0,
            ))
        })
        .optional()?)
}

// ---- snapshots ----

/// Every column of a comment row: what a snapshot carries, merged by the same rules as events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommentRow {
    pub id: String,
    pub track_id: String,
    pub author_id: Option<String>,
    pub author_name: Option<String>,
    pub created_at: Option<String>,
    pub created_hlc: Option<i64>,
    pub created_origin: Option<String>,
    pub created_seq: Option<i64>,
    pub content: String,
    pub position: f64,
    pub content_hlc: i64,
    pub content_origin: String,
    pub is_edited: bool,
    pub last_edited_at: Option<String>,
    pub deleted: bool,
    pub deleted_origin: Option<String>,
    pub deleted_seq: Option<i64>,
    pub touched_hlc: i64,
}

const COMMENT_ROW_COLUMNS: &str = "id, track_id, author_id, author_name, created_at, created_hlc,
    created_origin, created_seq, content, position, content_hlc, content_origin, is_edited,
    last_edited_at, deleted, deleted_origin, deleted_seq, touched_hlc";

/// Comment rows changed after `since_hlc`, in id order after `after_id`, at most `limit`.
pub(super) fn rows_changed_since(
    connection: &Connection,
    since_hlc: i64,
    after_id: &str,
    limit: usize,
) -> Result<Vec<CommentRow>, StoreError> {
    let sql = format!(
        "SELECT {COMMENT_ROW_COLUMNS} FROM comments WHERE touched_hlc > ?1 AND id > ?2
         ORDER BY id LIMIT +?3"
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(
        rusqlite::params![since_hlc, after_id, limit as i64],
        |row| {
            Ok(CommentRow {
                id: row.get(0)?,
                track_id: row.get(1)?,
                author_id: row.get(2)?,
                author_name: row.get(3)?,
                created_at: row.get(4)?,
                created_hlc: row.get(5)?,
                created_origin: row.get(6)?,
                created_seq: row.get(7)?,
                content: row.get(8)?,
                position: row.get(9)?,
                content_hlc: row.get(10)?,
                content_origin: row.get(11)?,
                is_edited: row.get::<_, i64>(12)? != 0,
                last_edited_at: row.get(13)?,
                deleted: row.get::<_, i64>(14)? != 0,
                deleted_origin: row.get(15)?,
                deleted_seq: row.get(16)?,
                touched_hlc: row.get(17)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Merges a row from a snapshot: creation facts fill in where unknown, the content register
/// keeps the later `(hlc, origin)`, the edited flag and the tombstone only ever turn on.
/// Merging the same row twice changes nothing.
pub(super) fn merge_row(connection: &Connection, row: &CommentRow) -> Result<(), StoreError> {
    if is_collected(connection, &row.id)? {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO comments ({COMMENT_ROW_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
         ON CONFLICT (id) DO UPDATE SET
            author_id = CASE WHEN created_hlc IS NULL THEN excluded.author_id ELSE author_id END,
            author_name = CASE WHEN created_hlc IS NULL THEN excluded.author_name ELSE author_name END,
            created_at = CASE WHEN created_hlc IS NULL THEN excluded.created_at ELSE created_at END,
            created_origin = CASE WHEN created_hlc IS NULL THEN excluded.created_origin ELSE created_origin END,
            created_seq = CASE WHEN created_hlc IS NULL THEN excluded.created_seq ELSE created_seq END,
            created_hlc = coalesce(created_hlc, excluded.created_hlc),
            {CONTENT_REGISTER},
            is_edited = max(is_edited, excluded.is_edited),
            deleted = max(deleted, excluded.deleted),
            deleted_origin = coalesce(deleted_origin, excluded.deleted_origin),
            deleted_seq = coalesce(deleted_seq, excluded.deleted_seq),
            touched_hlc = max(touched_hlc, excluded.touched_hlc)"
    );
    connection.prepare_cached(&sql)?.execute(rusqlite::params![
        row.id,
        row.track_id,
        row.author_id,
        row.author_name,
        row.created_at,
        row.created_hlc,
        row.created_origin,
        row.created_seq,
        row.content,
        row.position,
        row.content_hlc,
        row.content_origin,
        row.is_edited as i64,
        row.last_edited_at,
        row.deleted as i64,
        row.deleted_origin,
        row.deleted_seq,
        row.touched_hlc,
    ])?;
    Ok(())
}

// ---- tombstone collection ----

/// A deleted comment whose row was collected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectedTombstone {
    pub id: String,
    pub track_id: String,
    pub deleted_hlc: i64,
}

fn is_collected(connection: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(connection
        .prepare_cached("SELECT 1 FROM collected_tombstones WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Collects up to `limit` deleted comments whose creation and deletion `held` says every live
/// node holds. Answers how many went.
pub(super) fn collect_tombstones(
    connection: &Connection,
    held: impl Fn(&str, u64) -> bool,
    limit: usize,
) -> Result<usize, StoreError> {
    let candidates: Vec<(String, String, String, i64, String, i64, i64)> = {
        let mut statement = connection.prepare_cached(
            "SELECT id, track_id, created_origin, created_seq, deleted_origin, deleted_seq,
                    touched_hlc
             FROM comments WHERE deleted = 1 AND created_seq IS NOT NULL
                AND deleted_seq IS NOT NULL LIMIT +?1",
        )?;
        let rows = statement.query_map([limit as i64 * 4], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
            ))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut collected = 0;
    for (id, track_id, created_origin, created_seq, deleted_origin, deleted_seq, touched) in
        candidates
    {
        if collected >= limit
            || !held(&created_origin, created_seq as u64)
            || !held(&deleted_origin, deleted_seq as u64)
        {
            continue;
        }
        merge_collected(
            connection,
            &CollectedTombstone {
                id,
                track_id,
                deleted_hlc: touched,
            },
        )?;
        collected += 1;
    }
    Ok(collected)
}

/// Remembers a collected tombstone and drops the comment's row (idempotent).
pub(super) fn merge_collected(
    connection: &Connection,
    tombstone: &CollectedTombstone,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT OR IGNORE INTO collected_tombstones (id, track_id, deleted_hlc)
             VALUES (?1, ?2, ?3)",
        )?
        .execute(rusqlite::params![
            tombstone.id,
            tombstone.track_id,
            tombstone.deleted_hlc
        ])?;
    connection
        .prepare_cached("DELETE FROM comments WHERE id = ?1")?
        .execute([&tombstone.id])?;
    Ok(())
}

/// Forgets collected tombstones stamped before `before_hlc`.
pub(super) fn forget_collected(connection: &Connection, before_hlc: i64) -> Result<(), StoreError> {
    connection
        .prepare_cached("DELETE FROM collected_tombstones WHERE deleted_hlc < ?1")?
        .execute([before_hlc])?;
    Ok(())
}

/// Collected tombstones stamped after `since_hlc`, in id order after `after_id`.
pub(super) fn collected_since(
    connection: &Connection,
    since_hlc: i64,
    after_id: &str,
    limit: usize,
) -> Result<Vec<CollectedTombstone>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT id, track_id, deleted_hlc FROM collected_tombstones
         WHERE deleted_hlc > ?1 AND id > ?2 ORDER BY id LIMIT +?3",
    )?;
    let rows = statement.query_map(
        rusqlite::params![since_hlc, after_id, limit as i64],
        |row| {
            Ok(CollectedTombstone {
                id: row.get(0)?,
                track_id: row.get(1)?,
                deleted_hlc: row.get(2)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
