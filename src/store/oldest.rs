//! A channel's oldest events, found through `events_by_channel` (channel, origin, seq) alone.
//!
//! An origin numbers its events and stamps them with its hybrid clock in the same step (its
//! writer thread), so within one origin seq order is time order, and an origin's oldest
//! events in a channel are its lowest seqs there. A channel's oldest events are those
//! prefixes merged by time: no index on (channel, time) is needed, which spares every insert
//! and every delete a b-tree. The merge takes each origin's events in seq order whatever
//! their stamps say, so what a channel loses of an origin is always a prefix (what its floor
//! records), even if a peer's clock went backwards.

use rusqlite::Connection;

use super::StoreError;

macro_rules! event_bytes_sql {
    () => {
        "length(payload) + length(channel) + length(kind) + coalesce(length(users), 0) + 64"
    };
}
/// The bytes an event row counts for in `channel_stats.bytes` (see `super::prune::event_bytes`).
pub(super) const EVENT_BYTES_SQL: &str = event_bytes_sql!();

/// The first origin after `?2` holding events of channel `?1`: one seek of the index per
/// origin, never a read of the channel's events.
///
/// Text compared with `=` in a query that sorts or takes a minimum is marked `COLLATE BINARY`
/// (the columns' own collation), and a bound `LIMIT` is written `+?`: the plan is the same,
/// but without them SQLite (built with STAT4) plans the statement again each time it is
/// taken from the statement cache (whose bindings it clears) and bound.
pub(super) const NEXT_ORIGIN_SQL: &str = "SELECT origin FROM events INDEXED BY events_by_channel
     WHERE channel = ?1 COLLATE BINARY AND origin > ?2 COLLATE BINARY ORDER BY origin LIMIT 1";

/// An origin's events of a channel from its lowest seq: time, seq and bytes. The index is
/// named: the primary key (origin, seq) gives the same order, and without statistics SQLite
/// takes it and reads every event of the origin to find the channel's.
pub(super) const ORIGIN_OLDEST_SQL: &str = concat!(
    "SELECT hlc, seq, ",
    event_bytes_sql!(),
    " FROM events INDEXED BY events_by_channel
     WHERE channel = ?1 COLLATE BINARY AND origin = ?2 COLLATE BINARY ORDER BY seq LIMIT +?3"
);

/// One of a channel's oldest events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct OldEvent {
    pub hlc: i64,
    pub origin: String,
    pub seq: u64,
    pub bytes: i64,
}

/// The origins holding events of `channel`, in order.
fn origins(connection: &Connection, channel: &str) -> Result<Vec<String>, StoreError> {
    let mut statement = connection.prepare_cached(NEXT_ORIGIN_SQL)?;
    let mut origins: Vec<String> = Vec::new();
    loop {
        let after = origins.last().map(String::as_str).unwrap_or("");
        let mut rows = statement.query(rusqlite::params![channel, after])?;
        match rows.next()? {
            Some(row) => {
                let origin: String = row.get(0)?;
                drop(rows);
                origins.push(origin);
            }
            None => return Ok(origins),
        }
    }
}

/// `origin`'s first events of `channel` in seq order, at most `limit`, stopping at the first
/// stamped at or after `before`.
fn origin_oldest(
    connection: &Connection,
    channel: &str,
    origin: &str,
    before: i64,
    limit: usize,
) -> Result<Vec<OldEvent>, StoreError> {
    let mut statement = connection.prepare_cached(ORIGIN_OLDEST_SQL)?;
    let mut rows = statement.query(rusqlite::params![channel, origin, limit as i64])?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        let hlc: i64 = row.get(0)?;
        if hlc >= before {
            break;
        }
        events.push(OldEvent {
            hlc,
            origin: origin.to_string(),
            seq: row.get::<_, i64>(1)? as u64,
            bytes: row.get(2)?,
        });
    }
    Ok(events)
}

/// The oldest events of `channel`, at most `limit`, stamped before `before` if given: each
/// origin's lowest seqs, merged by (time, origin).
pub(super) fn oldest_events(
    connection: &Connection,
    channel: &str,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<OldEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let before = before.unwrap_or(i64::MAX);
    let mut runs: Vec<std::collections::VecDeque<OldEvent>> = Vec::new();
    for origin in origins(connection, channel)? {
        let run = origin_oldest(connection, channel, &origin, before, limit)?;
        if !run.is_empty() {
            runs.push(run.into());
        }
    }
    let mut merged = Vec::with_capacity(limit);
    while merged.len() < limit {
        // The run whose next event is the oldest (runs are in origin order: ties go to the
        // lower origin). Few origins hold events of one channel: a scan of their heads is
        // cheaper than a heap.
        let next = runs
            .iter()
            .enumerate()
            .filter_map(|(index, run)| run.front().map(|event| (event.hlc, index)))
            .min();
        let Some((_, index)) = next else { break };
        if let Some(event) = runs[index].pop_front() {
            merged.push(event);
        }
    }
    Ok(merged)
}

/// The time of `channel`'s oldest retained event, if it holds any.
pub(super) fn channel_oldest(
    connection: &Connection,
    channel: &str,
) -> Result<Option<i64>, StoreError> {
    let mut oldest: Option<i64> = None;
    for origin in origins(connection, channel)? {
        if let Some(first) = origin_oldest(connection, channel, &origin, i64::MAX, 1)?.first() {
            oldest = Some(oldest.map_or(first.hlc, |o| o.min(first.hlc)));
        }
    }
    Ok(oldest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SyncMode;
    use crate::store::schema::{self, Check};

    fn insert(connection: &Connection, origin: &str, seq: i64, hlc: i64, channel: &str) {
        connection
            .execute(
                "INSERT INTO events (origin, seq, id, hlc, channel, kind, payload)
                 VALUES (?1, ?2, ?1 || ?2, ?3, ?4, 't', '{}')",
                rusqlite::params![origin, seq, hlc, channel],
            )
            .unwrap();
    }

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let connection =
            schema::open_writer(&dir.path().join("h.db"), SyncMode::Normal, Check::Skip).unwrap();
        (dir, connection)
    }

    fn keys(events: &[OldEvent]) -> Vec<(&str, u64)> {
        events.iter().map(|e| (e.origin.as_str(), e.seq)).collect()
    }

    #[test]
    fn merges_the_origins_by_time_and_leaves_other_channels_alone() {
        let (_dir, connection) = store();
        // a: seqs 1..=3 at times 10, 30, 50; b: seqs 7..=9 at 20, 40, 60; c only elsewhere.
        for (seq, hlc) in [(1, 10), (2, 30), (3, 50)] {
            insert(&connection, "a", seq, hlc, "news");
        }
        for (seq, hlc) in [(7, 20), (8, 40), (9, 60)] {
            insert(&connection, "b", seq, hlc, "news");
        }
        insert(&connection, "c", 1, 1, "other");
        insert(&connection, "a", 4, 5_000, "other");
        let oldest = oldest_events(&connection, "news", None, 4).unwrap();
        assert_eq!(keys(&oldest), [("a", 1), ("b", 7), ("a", 2), ("b", 8)]);
        let all = oldest_events(&connection, "news", None, 100).unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(channel_oldest(&connection, "news").unwrap(), Some(10));
        assert_eq!(channel_oldest(&connection, "other").unwrap(), Some(1));
        assert_eq!(channel_oldest(&connection, "none").unwrap(), None);
        assert!(
            oldest_events(&connection, "none", None, 10)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn stops_at_the_cutoff() {
        let (_dir, connection) = store();
        for (seq, hlc) in [(1, 10), (2, 30), (3, 50)] {
            insert(&connection, "a", seq, hlc, "news");
        }
        insert(&connection, "b", 1, 20, "news");
        insert(&connection, "b", 2, 60, "news");
        let expired = oldest_events(&connection, "news", Some(30), 10).unwrap();
        assert_eq!(keys(&expired), [("a", 1), ("b", 1)]);
        assert!(
            oldest_events(&connection, "news", Some(10), 10)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_origin_loses_a_prefix_even_if_its_clock_went_backwards() {
        let (_dir, connection) = store();
        // b's seq 2 carries an earlier stamp than its seq 1.
        insert(&connection, "a", 1, 15, "news");
        insert(&connection, "b", 1, 20, "news");
        insert(&connection, "b", 2, 5, "news");
        let oldest = oldest_events(&connection, "news", None, 2).unwrap();
        assert_eq!(keys(&oldest), [("a", 1), ("b", 1)]);
    }

    #[test]
    fn the_lookups_go_through_the_channel_index() {
        let (_dir, connection) = store();
        for seq in 1..=50 {
            insert(&connection, "a", seq, seq, &format!("ch{}", seq % 5));
        }
        // As the store runs: no ANALYZE, no statistics.
        let next: &[&dyn rusqlite::ToSql] = &[&"ch1", &"a"];
        let first: &[&dyn rusqlite::ToSql] = &[&"ch1", &"a", &5];
        for (sql, params) in [(NEXT_ORIGIN_SQL, next), (ORIGIN_OLDEST_SQL, first)] {
            let mut statement = connection
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let plan: Vec<String> = statement
                .query_map(params, |row| row.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains("USING COVERING INDEX events_by_channel")
                    || plan.contains("USING INDEX events_by_channel"),
                "{sql}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
        }
    }
}
