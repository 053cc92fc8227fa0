//! The event log: inserts, log positions, and history queries for resume.
//!
//! A row that cannot be decoded into an event (a column of the wrong type, an invalid origin,
//! channel or id, users that are not JSON) is skipped wherever rows are read, with an error
//! log and `herald_store_undecodable_rows_total`: a history page, a replay, a pull served to a
//! peer or a snapshot goes on without it instead of failing (and being retried) for ever. The
//! writer's walk over held-back events counts such a row as present, so that the origin's
//! position moves past it rather than waiting for ever for an event it already has.

use rusqlite::{Connection, OptionalExtension, params_from_iter, types::Value};

use super::StoreError;
use crate::event::{ChannelName, Cursor, Event, Hlc, IdempotencyKey, NodeId, VersionVector};

const INSERT_EVENT: &str = "INSERT OR IGNORE INTO events
    (origin, seq, id, hlc, channel, kind, payload, users, idempotency_key)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// Inserts an event; a second insert of the same `(origin, seq)` is ignored.
/// Answers whether the event was new.
pub(super) fn insert_event(connection: &Connection, event: &Event) -> Result<bool, StoreError> {
    let users = match &event.users {
        Some(users) => {
            Some(serde_json::to_string(users).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        }
        None => None,
    };
    let mut statement = connection.prepare_cached(INSERT_EVENT)?;
    let inserted = statement.execute(rusqlite::params![
        event.origin.as_str(),
        event.seq as i64,
        event.id.to_string(),
        event.hlc.0 as i64,
        event.channel.as_str(),
        event.kind,
        event.payload,
        users,
        event.idempotency_key.as_ref().map(|key| key.as_str()),
    ])?;
    Ok(inserted == 1)
}

/// The id of the event held under `(origin, seq)`, if it is held.
pub(super) fn id_at(
    connection: &Connection,
    origin: &NodeId,
    seq: u64,
) -> Result<Option<uuid::Uuid>, StoreError> {
    use rusqlite::OptionalExtension;
    let mut statement =
        connection.prepare_cached("SELECT id FROM events WHERE origin = ?1 AND seq = ?2")?;
    let id: Option<String> = statement
        .query_row(rusqlite::params![origin.as_str(), seq as i64], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(id.and_then(|id| uuid::Uuid::parse_str(&id).ok()))
}

// `COLLATE BINARY` on text compared with `=` in sorting or aggregating queries, and `LIMIT
// +?`: the same plan, prepared once (see `super::oldest::NEXT_ORIGIN_SQL`).

pub(super) const BY_IDEMPOTENCY_KEY_SQL: &str =
    "SELECT origin, seq, id, hlc, channel, kind, payload, users, idempotency_key FROM events
     WHERE channel = ?1 COLLATE BINARY AND idempotency_key = ?2 COLLATE BINARY
     ORDER BY hlc, origin";
pub(super) const RANGE_ROWS_SQL: &str =
    "SELECT origin, seq, id, hlc, channel, kind, payload, users, idempotency_key FROM events
     WHERE origin = ?1 COLLATE BINARY AND seq > ?2 AND seq <= ?3 ORDER BY seq LIMIT +?4";
pub(super) const HIGHEST_SEQ_SQL: &str =
    "SELECT max(seq) FROM events WHERE origin = ?1 COLLATE BINARY";

/// Records the position this node answered its keyed event `(origin, seq)` with.
pub(super) fn set_answered_at(
    connection: &Connection,
    origin: &NodeId,
    seq: u64,
    position: &VersionVector,
) -> Result<(), StoreError> {
    connection
        .prepare_cached("UPDATE events SET answered_at = ?3 WHERE origin = ?1 AND seq = ?2")?
        .execute(rusqlite::params![
            origin.as_str(),
            seq as i64,
            Cursor::encode(position)
        ])?;
    Ok(())
}

/// The position this node first answered the event `(origin, seq)` with, if it took the event
/// itself (a replica, or a row that does not decode, answers `None`).
pub(super) fn answered_at(
    connection: &Connection,
    origin: &NodeId,
    seq: u64,
) -> Result<Option<VersionVector>, StoreError> {
    let text: Option<String> = connection
        .prepare_cached("SELECT answered_at FROM events WHERE origin = ?1 AND seq = ?2")?
        .query_row(rusqlite::params![origin.as_str(), seq as i64], |row| {
            row.get(0)
        })
        .optional()?
        .flatten();
    Ok(text.and_then(|text| Cursor::decode(&text).ok()))
}

/// The event published on `channel` under idempotency key `key`, if this node holds one. When
/// it holds several (retries that reached two nodes before either had the other's event), the
/// first by `(hlc, origin)`: the same one on every node that holds both. An undecodable row is
/// skipped (logged and counted).
pub(super) fn by_idempotency_key(
    connection: &Connection,
    channel: &ChannelName,
    key: &IdempotencyKey,
) -> Result<Option<Event>, StoreError> {
    let mut statement = connection.prepare_cached(BY_IDEMPOTENCY_KEY_SQL)?;
    let rows = statement.query_map(
        rusqlite::params![channel.as_str(), key.as_str()],
        read_event,
    )?;
    for row in rows {
        match row? {
            Ok(event) => return Ok(Some(event)),
            Err(undecodable) => undecodable.skip(),
        }
    }
    Ok(None)
}

/// Raises `origin`'s contiguous position to `seq`, whose event is stamped `hlc`.
pub(super) fn set_position(
    connection: &Connection,
    origin: &NodeId,
    seq: u64,
    hlc: Hlc,
) -> Result<(), StoreError> {
    connection
        .prepare_cached(
            "INSERT INTO log_positions (origin, contiguous, position_hlc) VALUES (?1, ?2, ?3)
             ON CONFLICT (origin) DO UPDATE SET
                position_hlc = CASE WHEN excluded.contiguous > contiguous
                                    THEN excluded.position_hlc ELSE position_hlc END,
                contiguous = max(contiguous, excluded.contiguous)",
        )?
        .execute(rusqlite::params![origin.as_str(), seq as i64, hlc.0 as i64])?;
    Ok(())
}

/// Per origin, the hybrid-clock stamp of the event at its contiguous position (0 unknown).
pub(super) fn position_hlcs(connection: &Connection) -> Result<Vec<(NodeId, u64)>, StoreError> {
    origin_numbers(connection, "SELECT origin, position_hlc FROM log_positions")
}

pub(super) fn version_vector(connection: &Connection) -> Result<VersionVector, StoreError> {
    let rows = origin_numbers(connection, "SELECT origin, contiguous FROM log_positions")?;
    Ok(rows.into_iter().collect())
}

/// The `(origin, number)` rows `sql` selects.
pub(super) fn origin_numbers(
    connection: &Connection,
    sql: &str,
) -> Result<Vec<(NodeId, u64)>, StoreError> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut numbers = Vec::new();
    for row in rows {
        let (origin, number) = row?;
        let origin = NodeId::new(&origin).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        numbers.push((origin, number as u64));
    }
    Ok(numbers)
}

pub(super) fn highest_hlc(connection: &Connection) -> Result<Option<Hlc>, StoreError> {
    let highest: Option<i64> = connection
        .query_row("SELECT max(hlc) FROM events", [], |row| row.get(0))
        .optional()?
        .flatten();
    Ok(highest.map(|h| Hlc(h as u64)))
}

/// What a walk over held-back events found: the events present without a gap after the
/// position, and how far that reaches (past undecodable rows too) with the stamp to record.
pub(super) struct Walked {
    pub events: Vec<Event>,
    /// The highest seq reached (the position it started from when nothing followed it).
    pub reached: u64,
    /// The hybrid-clock stamp of the row at `reached`, when one was read.
    pub stamp: Option<Hlc>,
}

/// The events of `origin` right after `after` that are present without a gap, in seq order.
/// An undecodable row counts as present (it is logged, counted and not handed on).
pub(super) fn contiguous_after(
    connection: &Connection,
    origin: &NodeId,
    after: u64,
    page: usize,
) -> Result<Walked, StoreError> {
    let mut walked = Walked {
        events: Vec::new(),
        reached: after,
        stamp: None,
    };
    loop {
        let rows = range_rows(connection, origin, walked.reached, u64::MAX >> 1, page)?;
        let full = rows.len() == page;
        for row in rows {
            let (seq, stamp) = match &row {
                Ok(event) => (event.seq, Some(event.hlc)),
                Err(bad) => (bad.seq, bad.hlc.map(|h| Hlc(h as u64))),
            };
            if seq != walked.reached + 1 {
                return Ok(walked);
            }
            walked.reached = seq;
            walked.stamp = stamp.or(walked.stamp);
            match row {
                Ok(event) => walked.events.push(event),
                Err(bad) => bad.skip(),
            }
        }
        if !full {
            return Ok(walked);
        }
    }
}

/// Events of `origin` with `after < seq <= upto`, in seq order, at most `limit` rows read
/// (an undecodable row is skipped, so fewer events may come back).
pub fn range(
    connection: &Connection,
    origin: &NodeId,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    Ok(range_scanned(connection, origin, after, upto, limit)?.0)
}

/// [`range`], and the highest seq among the rows read (`after` when none was): where to go
/// on from even when every row of the page was undecodable.
pub fn range_scanned(
    connection: &Connection,
    origin: &NodeId,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<(Vec<Event>, u64), StoreError> {
    let mut scanned = after;
    let mut events = Vec::new();
    for row in range_rows(connection, origin, after, upto, limit)? {
        match row {
            Ok(event) => {
                scanned = scanned.max(event.seq);
                events.push(event);
            }
            Err(bad) => {
                scanned = scanned.max(bad.seq);
                bad.skip();
            }
        }
    }
    Ok((events, scanned))
}

/// The rows of `origin` with `after < seq <= upto`, in seq order, at most `limit`, decoded
/// or not.
fn range_rows(
    connection: &Connection,
    origin: &NodeId,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<Decoded>, StoreError> {
    let mut statement = connection.prepare_cached(RANGE_ROWS_SQL)?;
    let rows = statement.query_map(
        rusqlite::params![origin.as_str(), after as i64, upto as i64, limit as i64],
        read_event,
    )?;
    let mut decoded = Vec::new();
    for row in rows {
        decoded.push(row?);
    }
    Ok(decoded)
}

pub(super) fn highest_seq(
    connection: &Connection,
    origin: &NodeId,
) -> Result<Option<u64>, StoreError> {
    let highest: Option<i64> = connection
        .prepare_cached(HIGHEST_SEQ_SQL)?
        .query_row([origin.as_str()], |row| row.get(0))?;
    Ok(highest.map(|h| h as u64))
}

/// Which events a resuming subscription needs: those of its channels (exact names or name
/// prefixes) with `after[origin] < seq <= upto[origin]`, at most `limit` of them.
#[derive(Clone, Debug)]
pub struct LogQuery {
    pub channels: Vec<ChannelName>,
    pub prefixes: Vec<String>,
    pub after: VersionVector,
    pub upto: VersionVector,
    pub limit: usize,
}

/// Events in an order that keeps each origin's events in seq order (by hybrid clock, then
/// origin); `complete` is false when `limit` cut the page short.
#[derive(Clone, Debug)]
pub struct HistoryPage {
    pub events: Vec<Event>,
    pub complete: bool,
}

/// The query of [`LogQuery::run`] for `channels` exact names and `prefixes` name prefixes
/// (bound in that order, each prefix as its lower and upper bound), then origin, after, upto
/// and limit.
pub(super) fn history_sql(channels: usize, prefixes: usize) -> String {
    let mut filter = Vec::new();
    if channels > 0 {
        filter.push(format!("channel IN ({})", vec!["?"; channels].join(",")));
    }
    filter.extend((0..prefixes).map(|_| "(channel >= ? AND channel < ?)".to_string()));
    format!(
        "SELECT origin, seq, id, hlc, channel, kind, payload, users, idempotency_key FROM events
         WHERE ({}) AND origin = ? COLLATE BINARY AND seq > ? AND seq <= ?
         ORDER BY seq LIMIT +?",
        filter.join(" OR ")
    )
}

impl LogQuery {
    /// Runs the query up to everything committed (contiguously) in the log, whatever `upto`
    /// says: a history read sees every publish that was answered before it.
    pub fn run_committed(mut self, connection: &Connection) -> Result<HistoryPage, StoreError> {
        self.upto = version_vector(connection)?;
        self.run(connection)
    }

    pub fn run(&self, connection: &Connection) -> Result<HistoryPage, StoreError> {
        let mut events = Vec::new();
        let mut complete = true;
        if self.channels.is_empty() && self.prefixes.is_empty() {
            return Ok(HistoryPage { events, complete });
        }
        let mut channel_args: Vec<Value> = self
            .channels
            .iter()
            .map(|c| Value::Text(c.as_str().to_string()))
            .collect();
        for prefix in &self.prefixes {
            channel_args.push(Value::Text(prefix.clone()));
            channel_args.push(Value::Text(prefix_upper_bound(prefix)));
        }
        let sql = history_sql(self.channels.len(), self.prefixes.len());
        let mut statement = connection.prepare(&sql)?;
        for (origin, upto) in self.upto.iter() {
            // Events of this origin taken; an undecodable row is skipped and the scan goes on
            // past it, so that a page always moves forward.
            let mut after = self.after.get(origin);
            let mut taken = 0;
            'origin: while upto > after {
                let wanted = self.limit + 1 - taken;
                let mut args = channel_args.clone();
                args.push(Value::Text(origin.as_str().to_string()));
                args.push(Value::Integer(after as i64));
                args.push(Value::Integer(upto as i64));
                args.push(Value::Integer(wanted as i64));
                let rows = statement.query_map(params_from_iter(args), read_event)?;
                let (mut read, page_start) = (0, after);
                for row in rows {
                    read += 1;
                    match row? {
                        Ok(event) => {
                            taken += 1;
                            if taken > self.limit {
                                complete = false;
                                break 'origin;
                            }
                            after = event.seq;
                            events.push(event);
                        }
                        Err(bad) => {
                            after = after.max(bad.seq);
                            bad.skip();
                        }
                    }
                }
                // Everything was read, or rows without a readable seq stop the scan.
                if read < wanted || after == page_start {
                    break;
                }
            }
        }
        events.sort_by(|a, b| (a.hlc, &a.origin, a.seq).cmp(&(b.hlc, &b.origin, b.seq)));
        if events.len() > self.limit {
            events.truncate(self.limit);
            complete = false;
        }
        Ok(HistoryPage { events, complete })
    }
}

/// The smallest string greater than every string that starts with `prefix`
/// (channel names are ASCII, and `~` sorts above every allowed byte).
fn prefix_upper_bound(prefix: &str) -> String {
    let mut bound = prefix.to_string();
    bound.push('~');
    bound
}

/// A row read from `events`: the event, or why it cannot be one.
type Decoded = Result<Event, Undecodable>;

/// A row of `events` that is not an event any more.
#[derive(Debug)]
pub(super) struct Undecodable {
    origin: String,
    pub seq: u64,
    /// Its hybrid-clock stamp, when that column at least reads.
    pub hlc: Option<i64>,
    reason: String,
}

impl Undecodable {
    /// Logs and counts the row, which the caller goes on without.
    pub fn skip(self) {
        metrics::counter!("herald_store_undecodable_rows_total").increment(1);
        tracing::error!(
            origin = %self.origin,
            seq = self.seq,
            reason = %self.reason,
            "skipping an undecodable row of the event log"
        );
    }
}

/// Reads one row of `SELECT origin, seq, id, hlc, channel, kind, payload, users,
/// idempotency_key`. Only a failure to read the row at all is an error; a row whose columns do
/// not make an event is an [`Undecodable`].
fn read_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Decoded> {
    use rusqlite::types::ValueRef;
    let text = |index: usize| -> Result<Option<String>, String> {
        match row.get_ref(index) {
            Ok(ValueRef::Text(bytes)) => std::str::from_utf8(bytes)
                .map(|text| Some(text.to_string()))
                .map_err(|_| format!("column {index} is not UTF-8")),
            Ok(ValueRef::Null) => Ok(None),
            Ok(other) => Err(format!(
                "column {index} is {:?}, not text",
                other.data_type()
            )),
            Err(error) => Err(error.to_string()),
        }
    };
    let integer = |index: usize| match row.get_ref(index) {
        Ok(ValueRef::Integer(value)) => Some(value),
        _ => None,
    };
    let origin = text(0).ok().flatten().unwrap_or_default();
    let seq = integer(1).unwrap_or(-1);
    let hlc = integer(3);
    let bad = |reason: String| Undecodable {
        origin: origin.clone(),
        seq: seq.max(0) as u64,
        hlc,
        reason,
    };
    if seq < 1 {
        return Ok(Err(bad("bad seq".into())));
    }
    let Some(hlc_value) = hlc else {
        return Ok(Err(bad("bad hlc".into())));
    };
    let required = |index: usize, name: &str| -> Result<String, Undecodable> {
        match text(index) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(bad(format!("{name} is NULL"))),
            Err(reason) => Err(bad(format!("{name}: {reason}"))),
        }
    };
    let decoded = (|| {
        let id = required(2, "id")?;
        let channel = required(4, "channel")?;
        let kind = required(5, "kind")?;
        let payload = required(6, "payload")?;
        let users = text(7).map_err(|reason| bad(format!("users: {reason}")))?;
        let key = text(8).map_err(|reason| bad(format!("idempotency_key: {reason}")))?;
        Ok(Event {
            origin: NodeId::new(&origin).map_err(|_| bad("bad origin".into()))?,
            seq: seq as u64,
            id: id.parse().map_err(|_| bad("bad id".into()))?,
            hlc: Hlc(hlc_value as u64),
            channel: ChannelName::new(&channel).map_err(|_| bad("bad channel".into()))?,
            kind,
            payload,
            users: match users {
                Some(text) => {
                    Some(serde_json::from_str(&text).map_err(|_| bad("bad users".into()))?)
                }
                None => None,
            },
            ephemeral: false,
            idempotency_key: match key {
                Some(key) => {
                    Some(IdempotencyKey::new(&key).map_err(|_| bad("bad idempotency_key".into()))?)
                }
                None => None,
            },
        })
    })();
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bound_excludes_other_channels() {
        let bound = prefix_upper_bound("forum:thread:");
        assert!("forum:thread:zzz" < bound.as_str());
        assert!("forum:thread:~" >= bound.as_str() || "forum:thread:~" == bound);
        assert!("forum:threadx" > bound.as_str());
        assert!("forum" < "forum:thread:");
    }
}
