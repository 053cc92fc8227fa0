//! The event log: inserts, log positions, and history queries for resume.

use rusqlite::{Connection, OptionalExtension, params_from_iter, types::Value};

use super::StoreError;
use crate::event::{ChannelName, Event, Hlc, NodeId, VersionVector};

const INSERT_EVENT: &str = "INSERT OR IGNORE INTO events
    (origin, seq, id, hlc, channel, kind, payload, users) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

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
    ])?;
    Ok(inserted == 1)
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

/// The events of `origin` right after `after` that are present without a gap, in seq order.
pub(super) fn contiguous_after(
    connection: &Connection,
    origin: &NodeId,
    after: u64,
    page: usize,
) -> Result<Vec<Event>, StoreError> {
    let mut walked = Vec::new();
    let mut next = after + 1;
    loop {
        let batch = range(connection, origin, next - 1, u64::MAX >> 1, page)?;
        let full = batch.len() == page;
        for event in batch {
            if event.seq != next {
                return Ok(walked);
            }
            next += 1;
            walked.push(event);
        }
        if !full {
            return Ok(walked);
        }
    }
}

/// Events of `origin` with `after < seq <= upto`, in seq order, at most `limit`.
pub fn range(
    connection: &Connection,
    origin: &NodeId,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let mut statement = connection.prepare_cached(
        "SELECT origin, seq, id, hlc, channel, kind, payload, users FROM events
         WHERE origin = ?1 AND seq > ?2 AND seq <= ?3 ORDER BY seq LIMIT ?4",
    )?;
    let rows = statement.query_map(
        rusqlite::params![origin.as_str(), after as i64, upto as i64, limit as i64],
        read_event,
    )?;
    let mut events = Vec::new();
    for row in rows {
        events.push(row??);
    }
    Ok(events)
}

pub(super) fn highest_seq(
    connection: &Connection,
    origin: &NodeId,
) -> Result<Option<u64>, StoreError> {
    let highest: Option<i64> = connection
        .prepare_cached("SELECT max(seq) FROM events WHERE origin = ?1")?
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
        let mut filter = Vec::new();
        let mut channel_args: Vec<Value> = Vec::new();
        if !self.channels.is_empty() {
            let marks = vec!["?"; self.channels.len()].join(",");
            filter.push(format!("channel IN ({marks})"));
            channel_args.extend(
                self.channels
                    .iter()
                    .map(|c| Value::Text(c.as_str().to_string())),
            );
        }
        for prefix in &self.prefixes {
            filter.push("(channel >= ? AND channel < ?)".to_string());
            channel_args.push(Value::Text(prefix.clone()));
            channel_args.push(Value::Text(prefix_upper_bound(prefix)));
        }
        let sql = format!(
            "SELECT origin, seq, id, hlc, channel, kind, payload, users FROM events
             WHERE ({}) AND origin = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            filter.join(" OR ")
        );
        let mut statement = connection.prepare(&sql)?;
        for (origin, upto) in self.upto.iter() {
            let after = self.after.get(origin);
            if upto <= after {
                continue;
            }
            let mut args = channel_args.clone();
            args.push(Value::Text(origin.as_str().to_string()));
            args.push(Value::Integer(after as i64));
            args.push(Value::Integer(upto as i64));
            args.push(Value::Integer(self.limit as i64 + 1));
            let rows = statement.query_map(params_from_iter(args), read_event)?;
            let mut taken = 0;
            for row in rows {
                let event = row??;
                taken += 1;
                if taken > self.limit {
                    complete = false;
                    break;
                }
                events.push(event);
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

fn read_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Event, StoreError>> {
    let origin: String = row.get(0)?;
    let seq: i64 = row.get(1)?;
    let id: String = row.get(2)?;
    let hlc: i64 = row.get(3)?;
    let channel: String = row.get(4)?;
    let kind: String = row.get(5)?;
    let payload: String = row.get(6)?;
    let users: Option<String> = row.get(7)?;
    Ok(decode_event(
        origin, seq, id, hlc, channel, kind, payload, users,
    ))
}

#[allow(clippy::too_many_arguments)]
fn decode_event(
    origin: String,
    seq: i64,
    id: String,
    hlc: i64,
    channel: String,
    kind: String,
    payload: String,
    users: Option<String>,
) -> Result<Event, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("event {origin}:{seq}: bad {what}"));
    Ok(Event {
        origin: NodeId::new(&origin).map_err(|_| corrupt("origin"))?,
        seq: seq as u64,
        id: id.parse().map_err(|_| corrupt("id"))?,
        hlc: Hlc(hlc as u64),
        channel: ChannelName::new(&channel).map_err(|_| corrupt("channel"))?,
        kind,
        payload,
        users: match users {
            Some(text) => Some(serde_json::from_str(&text).map_err(|_| corrupt("users"))?),
            None => None,
        },
        ephemeral: false,
    })
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
