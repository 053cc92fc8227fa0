//! Channel floors: per channel and origin, the highest seq whose event was pruned.
//!
//! Pruning removes a channel's oldest events first, and one origin's events carry increasing
//! hybrid-clock stamps, so what a channel lost of an origin is always a prefix: floor `f` means
//! that origin's events of the channel at or below `f` are gone and every one above it is kept.
//! A reader whose cursor covers `f` for every origin lost nothing of that channel; one below it
//! for some origin did (and is told so: `recovered:false`, `truncated:true`).
//!
//! An origin that was retired (no longer a member, no events left) has no place in new cursors:
//! a cursor that does not name it is taken to have seen all of it.

use std::collections::BTreeSet;

use rusqlite::{Connection, params_from_iter, types::Value};

use super::StoreError;
use crate::event::{ChannelName, NodeId, VersionVector};

/// Raises `channel`'s floor for `origin` to `seq`.
pub(super) fn raise(
    connection: &Connection,
    channel: &str,
    origin: &str,
    seq: u64,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT INTO channel_floors (channel, origin, seq) VALUES (?1, ?2, ?3)
             ON CONFLICT (channel, origin) DO UPDATE SET seq = max(seq, excluded.seq)",
        )?
        .execute(rusqlite::params![channel, origin, seq as i64])?;
    Ok(())
}

/// One floor row: `(channel, origin, seq)`.
pub type FloorRow = (String, String, u64);

/// The floors of the channels named in `channels` or starting with one of `prefixes`.
pub fn floors_of(
    connection: &Connection,
    channels: &[ChannelName],
    prefixes: &[String],
) -> Result<Vec<FloorRow>, StoreError> {
    if channels.is_empty() && prefixes.is_empty() {
        return Ok(Vec::new());
    }
    let mut filter = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    if !channels.is_empty() {
        filter.push(format!(
            "channel IN ({})",
            vec!["?"; channels.len()].join(",")
        ));
        args.extend(channels.iter().map(|c| Value::Text(c.as_str().to_string())));
    }
    for prefix in prefixes {
        filter.push("(channel >= ? AND channel < ?)".into());
        args.push(Value::Text(prefix.clone()));
        args.push(Value::Text(format!("{prefix}~")));
    }
    let sql = format!(
        "SELECT channel, origin, seq FROM channel_floors WHERE {}",
        filter.join(" OR ")
    );
    let mut statement = connection.prepare(&sql)?;
    let rows = statement.query_map(params_from_iter(args), |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)? as u64,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Origins retired here (dropped from version vectors once nothing of them was left).
pub fn retired(connection: &Connection) -> Result<BTreeSet<String>, StoreError> {
    let mut statement = connection.prepare_cached("SELECT origin FROM retired_origins")?;
    let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The channels (named, or under a prefix) whose history no longer reaches back to `since`:
/// some origin lost events there that `since` does not cover. Sorted, without repeats.
pub fn channels_lost(
    connection: &Connection,
    channels: &[ChannelName],
    prefixes: &[String],
    since: &VersionVector,
) -> Result<Vec<String>, StoreError> {
    let retired = retired(connection)?;
    let mut lost = BTreeSet::new();
    for (channel, origin, seq) in floors_of(connection, channels, prefixes)? {
        let Ok(origin_id) = NodeId::new(&origin) else {
            continue;
        };
        let seen = since.get(&origin_id);
        let forgotten = seen == 0 && retired.contains(&origin);
        if seq > seen && !forgotten {
            lost.insert(channel);
        }
    }
    Ok(lost.into_iter().collect())
}
/// Every floor row, for a snapshot: those naming an origin at a seq the receiver, at `since`,
/// does not cover.
pub(super) fn floors_above(
    connection: &Connection,
    since: &VersionVector,
) -> Result<Vec<FloorRow>, StoreError> {
    let mut statement =
        connection.prepare_cached("SELECT channel, origin, seq FROM channel_floors")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)? as u64,
        ))
    })?;
    let mut above = Vec::new();
    for row in rows {
        let (channel, origin, seq) = row?;
        let covered = NodeId::new(&origin)
            .map(|o| since.covers(&o, seq))
            .unwrap_or(true);
        if !covered {
            above.push((channel, origin, seq));
        }
    }
    Ok(above)
}
