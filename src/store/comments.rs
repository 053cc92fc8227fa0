//! Materialized track comments.
//!
//! Rules (order-independent, DESIGN.md section 2 point 4): the content (with its track
//! position) is a last-writer-wins register on `(hlc, origin)` written by `new_comment` and
//! `comment_edited`; `comment_deleted` is a tombstone that wins over any edit; the author and
//! creation time come from `new_comment` whenever it arrives.

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

fn corrupt(error: serde_json::Error) -> StoreError {
    StoreError::Corrupt(error.to_string())
}

pub(super) fn apply_new(connection: &Connection, event: &Event) -> Result<(), StoreError> {
    let comment = serde_json::from_str::<NewCommentPayload>(&event.payload)
        .map_err(corrupt)?
        .comment;
    connection
        .prepare_cached(
            "INSERT INTO comments (id, track_id, author_id, author_name, created_at, created_hlc,
                                   content, position, content_hlc, content_origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?6, ?9)
             ON CONFLICT (id) DO UPDATE SET
                author_id = excluded.author_id,
                author_name = excluded.author_name,
                created_at = excluded.created_at,
                created_hlc = excluded.created_hlc,
                content = CASE WHEN (excluded.content_hlc, excluded.content_origin) > (content_hlc, content_origin)
                               THEN excluded.content ELSE content END,
                position = CASE WHEN (excluded.content_hlc, excluded.content_origin) > (content_hlc, content_origin)
                                THEN excluded.position ELSE position END,
                content_origin = CASE WHEN (excluded.content_hlc, excluded.content_origin) > (content_hlc, content_origin)
                                      THEN excluded.content_origin ELSE content_origin END,
                content_hlc = max(content_hlc, excluded.content_hlc)",
        )?
        .execute(rusqlite::params![
            comment.id,
            comment.track_id,
            comment.user_id,
            comment.username,
            comment.created_at,
            event.hlc.0 as i64,
            comment.content,
            comment.timestamp,
            event.origin.as_str(),
        ])?;
    Ok(())
}

pub(super) fn apply_edited(connection: &Connection, event: &Event) -> Result<(), StoreError> {
    let edit: EditedPayload = serde_json::from_str(&event.payload).map_err(corrupt)?;
    connection
        .prepare_cached(
            "INSERT INTO comments (id, track_id, content, position, content_hlc, content_origin, is_edited, last_edited_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7)
             ON CONFLICT (id) DO UPDATE SET
                is_edited = 1,
                content = CASE WHEN (excluded.content_hlc, excluded.content_origin) > (content_hlc, content_origin)
                               THEN excluded.content ELSE content END,
                position = CASE WHEN (excluded.content_hlc, excluded.content_origin) > (content_hlc, content_origin)
                                THEN excluded.position ELSE position END,
                last_edited_at = CASE WHEN (excluded.content_hlc, excluded.content_origin) > (content_hlc, content_origin)
                                      THEN excluded.last_edited_at ELSE last_edited_at END,
                content_origin = CASE WHEN (excluded.content_hlc, excluded.content_origin) > (content_hlc, content_origin)
                                      THEN excluded.content_origin ELSE content_origin END,
                content_hlc = max(content_hlc, excluded.content_hlc)",
        )?
        .execute(rusqlite::params![
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
    connection
        .prepare_cached(
            "INSERT INTO comments (id, track_id, deleted) VALUES (?1, ?2, 1)
             ON CONFLICT (id) DO UPDATE SET deleted = 1",
        )?
        .execute(rusqlite::params![deleted.comment_id, deleted.track_id])?;
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
        "{SELECT_COMMENT} WHERE track_id = ?1 AND deleted = 0 AND created_hlc IS NOT NULL
         ORDER BY position, created_hlc LIMIT ?2"
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
