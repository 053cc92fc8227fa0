//! Pruning: the writer thread removes what the retention policy no longer keeps, a small batch
//! at a time between group commits, so publishes never wait behind a long delete.
//!
//! Each step, in its own transaction, looks at (in this order) channels over their `size` by
//! more than [`size_slack`] (pruned back to `size`) that received events since the last look,
//! channels whose oldest event outlived their `ttl` (an index on each channel's expiry time
//! finds them), and, while the database is over `max_disk`, the channels holding the oldest
//! events. A channel always loses its oldest events
//! first, so what it lost of each origin is a prefix, recorded as its floor
//! ([`super::floors`]). Only events the log holds contiguously are pruned, and, except to stay
//! under `max_disk`, only events every linked peer reported holding (the [`PruneHorizon`] the
//! backplane keeps up to date), so a live peer that is briefly behind never needs a snapshot.
//!
//! After deleting, a step releases a bounded number of free pages (`auto_vacuum =
//! INCREMENTAL`) once more than a few MiB are free; the WAL is cut back after checkpoints
//! (`journal_size_limit`), so the files track what is retained, not what was ever written.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;
use super::floors;
use super::oldest::{self, EVENT_BYTES_SQL};
use super::retention::RetentionPolicy;
use super::write_tx::WriteTx;
use crate::event::{Event, Hlc, NodeId, VersionVector};

/// Most events one step removes.
pub const PRUNE_BATCH: usize = 1000;
/// Pages released per step after deletes, while more than [`FREE_PAGES_KEPT`] are free.
const VACUUM_PAGES: i64 = 512;
/// Free pages kept for the inserts to come (4 MiB of 4 KiB pages): a log at its retention
/// size frees about as many pages as it fills, and releasing them only to grow the file again
/// costs a commit and a truncation per step.
const FREE_PAGES_KEPT: i64 = 1024;
/// A step with nothing left to do waits this long before the next.
pub const IDLE_STEP_EVERY: Duration = Duration::from_millis(250);
/// A step that filled its batch lets this much time pass before the next, so commits go first.
const BUSY_STEP_EVERY: Duration = Duration::from_millis(5);
/// After inserts the next step comes this soon, or after [`BUSY_STEP_EVERY`] once
/// [`STEP_AFTER_EVENTS`] were inserted: a steady trickle of commits pays for at most 20 steps
/// a second, and the log overshoots what it keeps by at most a few hundred events under load.
const AFTER_INSERTS_STEP_EVERY: Duration = Duration::from_millis(50);
/// Events inserted since the last step that make the next one come as soon as a busy one.
const STEP_AFTER_EVENTS: usize = 256;
/// Most channels remembered as changed between steps before a full rescan is cheaper.
const MAX_DIRTY_CHANNELS: usize = 16 * 1024;
/// `expires` of a channel whose events never expire.
const NEVER: i64 = i64::MAX;

/// What the backplane allows pruning: for each origin some linked peer reports, what every
/// peer reporting it holds. An origin no peer reports (one they retired, or never heard of)
/// is not restricted; `None` (single node, or no peer yet) restricts nothing.
#[derive(Default)]
pub struct PruneHorizon(Mutex<Option<VersionVector>>);

impl PruneHorizon {
    pub fn set(&self, horizon: Option<VersionVector>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = horizon;
    }

    fn get(&self) -> Option<VersionVector> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True unless a peer that reports `origin` lacks its event `seq`.
    pub(super) fn allows(&self, origin: &NodeId, seq: u64) -> bool {
        let horizon = self.0.lock().unwrap_or_else(|e| e.into_inner());
        horizon
            .as_ref()
            .is_none_or(|h| h.get(origin) == 0 || h.covers(origin, seq))
    }
}

/// The approximate bytes an event takes in the log (as `channel_stats.bytes` counts them).
pub(super) fn event_bytes(event: &Event) -> i64 {
    let users = event
        .users
        .as_ref()
        .map(|u| u.iter().map(|id| id.len() + 3).sum::<usize>() + 2)
        .unwrap_or(0);
    (event.payload.len() + event.channel.as_str().len() + event.kind.len() + users + 64) as i64
}

/// Retained totals, for the `herald_log_events` and `herald_log_bytes` gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogTotals {
    pub events: i64,
    pub bytes: i64,
}

pub(super) struct Pruner {
    policy: RetentionPolicy,
    horizon: Arc<PruneHorizon>,
    dirty: HashSet<String>,
    rescan_all: bool,
    last_step: Instant,
    /// The last step filled its batch: more is waiting.
    more: bool,
    /// Events inserted since the last step.
    inserted: usize,
    totals: LogTotals,
    /// Steps removed events since free pages were last looked at.
    pages_freed: bool,
    last_release: Instant,
}

/// The events one step chose for removal, each once: the size and age rules may both pick a
/// channel's oldest events.
#[derive(Default)]
struct Chosen {
    events: Vec<Doomed>,
    keys: HashSet<(String, u64)>,
    per_channel: HashMap<String, usize>,
}

impl Chosen {
    fn add(&mut self, event: Doomed) {
        if self.keys.insert((event.origin.clone(), event.seq)) {
            *self.per_channel.entry(event.channel.clone()).or_default() += 1;
            self.events.push(event);
        }
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// How many of `channel`'s events were chosen.
    fn of_channel(&self, channel: &str) -> usize {
        self.per_channel.get(channel).copied().unwrap_or(0)
    }
}

/// One event chosen for removal.
struct Doomed {
    origin: String,
    seq: u64,
    channel: String,
    bytes: i64,
}

impl Pruner {
    pub(super) fn new(
        connection: &Connection,
        policy: RetentionPolicy,
        horizon: Arc<PruneHorizon>,
    ) -> Result<Self, StoreError> {
        refresh_expiries(connection, &policy)?;
        let totals = read_totals(connection)?;
        let pruner = Self {
            policy,
            horizon,
            dirty: HashSet::new(),
            rescan_all: true,
            last_step: Instant::now() - IDLE_STEP_EVERY,
            more: true,
            inserted: 0,
            totals,
            pages_freed: true,
            last_release: Instant::now() - IDLE_STEP_EVERY,
        };
        pruner.publish_totals();
        Ok(pruner)
    }

    /// Reads the totals back from the statistics (after a rolled-back transaction whose
    /// events were counted here); the channels a rolled-back step took up are found again by
    /// a rescan.
    pub(super) fn reload_totals(&mut self, connection: &Connection) -> Result<(), StoreError> {
        self.rescan_all = true;
        self.totals = read_totals(connection)?;
        self.publish_totals();
        Ok(())
    }

    /// Counts newly stored events into their channels' statistics (inside the transaction that
    /// stores them).
    pub(super) fn note_inserted<'a>(
        &mut self,
        connection: &Connection,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<(), StoreError> {
        let mut per_channel: HashMap<&str, (i64, i64, u64)> = HashMap::new();
        for event in events {
            let entry = per_channel
                .entry(event.channel.as_str())
                .or_insert((0, 0, u64::MAX));
            entry.0 += 1;
            entry.1 += event_bytes(event);
            entry.2 = entry.2.min(event.hlc.0);
            self.inserted += 1;
        }
        if per_channel.is_empty() {
            return Ok(());
        }
        // Counts and age in separate statements: an UPDATE rewrites the index entries of
        // every column it sets, even to the same value, and the channel's age (what the two
        // `channel_stats` indexes hold) changes only when an older event arrives. One page per
        // commit for the stats instead of three.
        let mut add = connection.prepare_cached(
            "UPDATE channel_stats SET events = events + ?2, bytes = bytes + ?3 WHERE channel = ?1",
        )?;
        let mut older = connection.prepare_cached(
            "UPDATE channel_stats SET oldest_hlc = min(oldest_hlc, ?2), expires = min(expires, ?3)
             WHERE channel = ?1 AND (oldest_hlc > ?2 OR expires > ?3)",
        )?;
        let mut insert = connection.prepare_cached(
            "INSERT INTO channel_stats (channel, events, bytes, oldest_hlc, expires)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (channel, (count, bytes, oldest)) in per_channel {
            let expires = expiry(&self.policy, channel, oldest as i64);
            if add.execute(rusqlite::params![channel, count, bytes])? == 0 {
                insert.execute(rusqlite::params![
                    channel,
                    count,
                    bytes,
                    oldest as i64,
                    expires
                ])?;
            } else {
                older.execute(rusqlite::params![channel, oldest as i64, expires])?;
            }
            self.totals.events += count;
            self.totals.bytes += bytes;
            if self.dirty.len() < MAX_DIRTY_CHANNELS {
                self.dirty.insert(channel.to_string());
            } else {
                self.rescan_all = true;
            }
        }
        self.publish_totals();
        Ok(())
    }

    pub(super) fn horizon(&self) -> &PruneHorizon {
        &self.horizon
    }

    /// True when a step should run now.
    pub(super) fn due(&self) -> bool {
        let wait = if self.more || self.inserted >= STEP_AFTER_EVENTS {
            BUSY_STEP_EVERY
        } else if self.inserted > 0 {
            AFTER_INSERTS_STEP_EVERY
        } else {
            IDLE_STEP_EVERY
        };
        self.policy.prunes() && self.last_step.elapsed() >= wait
    }

    /// Removes up to [`PRUNE_BATCH`] events the policy no longer keeps. `position` is what the
    /// log holds contiguously; nothing above it is touched. Answers how many went.
    pub(super) fn step(
        &mut self,
        connection: &mut Connection,
        position: &VersionVector,
        now: Hlc,
    ) -> Result<usize, StoreError> {
        self.last_step = Instant::now();
        self.inserted = 0;
        let horizon = self.horizon.get();
        let tx = WriteTx::begin(connection)?;
        let mut doomed = Chosen::default();
        let budget = PRUNE_BATCH;
        let keep = |origin: &str, seq: u64, strict: bool| -> bool {
            let Ok(id) = NodeId::new(origin) else {
                return true;
            };
            let behind = |h: &VersionVector| h.get(&id) > 0 && !h.covers(&id, seq);
            !position.covers(&id, seq) || (strict && horizon.as_ref().is_some_and(behind))
        };

        // 1. Channels over their size.
        let dirty: Vec<String> = if std::mem::take(&mut self.rescan_all) {
            self.dirty.clear();
            over_size_channels(&tx, &self.policy)?
        } else {
            self.dirty.drain().collect()
        };
        let mut unfinished: Vec<String> = Vec::new();
        for channel in dirty {
            if doomed.len() >= budget {
                unfinished.push(channel);
                continue;
            }
            let size = self.policy.for_channel(&channel).size;
            if size == 0 {
                continue;
            }
            let count: i64 = tx
                .prepare_cached("SELECT events FROM channel_stats WHERE channel = ?1")?
                .query_row([&channel], |row| row.get(0))
                .optional()?
                .unwrap_or(0);
            if count <= (size + size_slack(size)) as i64 {
                continue;
            }
            let excess = (count - size as i64) as usize;
            let take = excess.min(budget - doomed.len());
            let oldest = oldest_events(&tx, &channel, None, take)?;
            let before = doomed.len();
            // An event kept back (not yet on every peer) keeps its origin's later events too,
            // so each origin still loses a prefix.
            for event in oldest {
                if !keep(&event.origin, event.seq, true) {
                    doomed.add(event);
                }
            }
            if doomed.len() - before < excess {
                unfinished.push(channel);
            }
        }
        for channel in unfinished {
            self.dirty.insert(channel);
        }

        // 2. Channels whose oldest events outlived their ttl.
        if doomed.len() < budget {
            let expired: Vec<String> = {
                let mut statement = tx.prepare_cached(
                    "SELECT channel FROM channel_stats WHERE expires <= ?1 ORDER BY expires LIMIT 64",
                )?;
                let rows = statement.query_map([now.0 as i64], |row| row.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for channel in expired {
                if doomed.len() >= budget {
                    break;
                }
                let Some(ttl) = self.policy.for_channel(&channel).ttl_hlc() else {
                    continue;
                };
                let cutoff = now.0.saturating_sub(ttl) as i64;
                // What the size rule took of this channel comes back first: counted out.
                let take = budget - doomed.len() + doomed.of_channel(&channel);
                for event in oldest_events(&tx, &channel, Some(cutoff), take)? {
                    if !keep(&event.origin, event.seq, true) {
                        doomed.add(event);
                    }
                }
            }
        }

        // 3. Over the disk ceiling: the oldest events anywhere, whatever peers hold.
        if doomed.is_empty() && self.policy.max_disk > 0 && used_bytes(&tx)? > self.policy.max_disk
        {
            let oldest_channels: Vec<String> = {
                let mut statement = tx.prepare_cached(
                    "SELECT channel FROM channel_stats ORDER BY oldest_hlc LIMIT 16",
                )?;
                let rows = statement.query_map([], |row| row.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for channel in oldest_channels {
                let take =
                    (budget - doomed.len()).min(budget / 4).max(1) + doomed.of_channel(&channel);
                for event in oldest_events(&tx, &channel, None, take)? {
                    if !keep(&event.origin, event.seq, false) {
                        doomed.add(event);
                    }
                }
                if doomed.len() >= budget {
                    break;
                }
            }
            if !doomed.is_empty() {
                tracing::debug!(
                    events = doomed.len(),
                    "over history.max_disk: pruning the oldest events"
                );
            }
        }

        let removed = doomed.len();
        if removed > 0 {
            self.remove(&tx, &doomed.events)?;
        }
        tx.commit()?;
        if removed > 0 {
            metrics::counter!("herald_pruned_events_total").increment(removed as u64);
            self.publish_totals();
            self.pages_freed = true;
        }
        // Channels left over their size (budget spent, or events not yet on every peer) are
        // looked at again next step; at full speed only while the budget is being spent.
        self.more = removed >= budget;
        Ok(removed)
    }

    /// True when steps removed events since free pages were last looked at, a while ago.
    pub(super) fn release_due(&self) -> bool {
        self.pages_freed && self.last_release.elapsed() >= IDLE_STEP_EVERY
    }

    /// Releases up to [`VACUUM_PAGES`] free pages to the file system when more than
    /// [`FREE_PAGES_KEPT`] are free (outside any transaction).
    pub(super) fn release_free_pages(&mut self, connection: &Connection) -> Result<(), StoreError> {
        self.pages_freed = false;
        self.last_release = Instant::now();
        let free: i64 = connection.pragma_query_value(None, "freelist_count", |row| row.get(0))?;
        if free > FREE_PAGES_KEPT {
            connection.execute_batch(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES});"))?;
            // More may be left: looked at again at the next release.
            self.pages_freed = true;
        }
        Ok(())
    }

    /// Removes `channel`'s events of `origin` at or below `seq`: a peer's floor, merged from a
    /// snapshot, so that this node keeps the same window.
    pub(super) fn drop_through_floor(
        &mut self,
        tx: &Connection,
        channel: &str,
        origin: &str,
        seq: u64,
    ) -> Result<(), StoreError> {
        let sql = through_floor_sql();
        let doomed: Vec<Doomed> = {
            let mut statement = tx.prepare_cached(&sql)?;
            let rows =
                statement.query_map(rusqlite::params![channel, origin, seq as i64], |row| {
                    Ok(Doomed {
                        origin: origin.to_string(),
                        seq: row.get::<_, i64>(0)? as u64,
                        channel: channel.to_string(),
                        bytes: row.get(1)?,
                    })
                })?;
            rows.collect::<Result<_, _>>()?
        };
        if !doomed.is_empty() {
            self.remove(tx, &doomed)?;
            metrics::counter!("herald_pruned_events_total").increment(doomed.len() as u64);
            self.publish_totals();
        }
        Ok(())
    }

    fn remove(&mut self, tx: &Connection, doomed: &[Doomed]) -> Result<(), StoreError> {
        let mut delete = tx.prepare_cached("DELETE FROM events WHERE origin = ?1 AND seq = ?2")?;
        let mut per_channel: HashMap<&str, (i64, i64)> = HashMap::new();
        let mut floors: HashMap<(&str, &str), u64> = HashMap::new();
        let mut pruned: HashMap<&str, u64> = HashMap::new();
        for event in doomed {
            delete.execute(rusqlite::params![event.origin, event.seq as i64])?;
            let entry = per_channel.entry(&event.channel).or_default();
            entry.0 += 1;
            entry.1 += event.bytes;
            let floor = floors.entry((&event.channel, &event.origin)).or_default();
            *floor = (*floor).max(event.seq);
            let highest = pruned.entry(&event.origin).or_default();
            *highest = (*highest).max(event.seq);
        }
        for ((channel, origin), seq) in floors {
            floors::raise(tx, channel, origin, seq)?;
        }
        let mut raise_pruned = tx.prepare_cached(
            "UPDATE log_positions SET pruned = max(pruned, ?2) WHERE origin = ?1",
        )?;
        for (origin, seq) in pruned {
            raise_pruned.execute(rusqlite::params![origin, seq as i64])?;
        }
        for (channel, (count, bytes)) in per_channel {
            self.totals.events -= count;
            self.totals.bytes -= bytes;
            let oldest = oldest::channel_oldest(tx, channel)?;
            match oldest {
                Some(oldest) => {
                    tx.prepare_cached(
                        "UPDATE channel_stats SET events = events - ?2, bytes = bytes - ?3,
                            oldest_hlc = ?4, expires = ?5 WHERE channel = ?1",
                    )?
                    .execute(rusqlite::params![
                        channel,
                        count,
                        bytes,
                        oldest,
                        expiry(&self.policy, channel, oldest)
                    ])?;
                }
                None => {
                    tx.prepare_cached("DELETE FROM channel_stats WHERE channel = ?1")?
                        .execute([channel])?;
                }
            }
        }
        Ok(())
    }

    fn publish_totals(&self) {
        metrics::gauge!("herald_log_events").set(self.totals.events as f64);
        metrics::gauge!("herald_log_bytes").set(self.totals.bytes as f64);
    }
}

fn read_totals(connection: &Connection) -> Result<LogTotals, StoreError> {
    Ok(connection.query_row(
        "SELECT coalesce(sum(events), 0), coalesce(sum(bytes), 0) FROM channel_stats",
        [],
        |row| {
            Ok(LogTotals {
                events: row.get(0)?,
                bytes: row.get(1)?,
            })
        },
    )?)
}

/// Events a channel of `size` may hold past it before a step prunes it back to `size`: a
/// 64th (none below 64), so that a busy channel is pruned every few dozen publishes, each
/// step's fixed cost (a transaction, its pages written) shared, rather than after every one.
pub(super) fn size_slack(size: u64) -> u64 {
    size / 64
}

/// When the oldest event of `channel`, stamped `oldest`, expires (hybrid-clock units).
fn expiry(policy: &RetentionPolicy, channel: &str, oldest: i64) -> i64 {
    match policy.for_channel(channel).ttl_hlc() {
        Some(ttl) => oldest.saturating_add(ttl as i64),
        None => NEVER,
    }
}

/// Recomputes every channel's expiry under `policy` (the ttl may have changed since the last
/// start).
fn refresh_expiries(connection: &Connection, policy: &RetentionPolicy) -> Result<(), StoreError> {
    let channels: Vec<(String, i64, i64)> = {
        let mut statement =
            connection.prepare("SELECT channel, oldest_hlc, expires FROM channel_stats")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut update =
        connection.prepare_cached("UPDATE channel_stats SET expires = ?2 WHERE channel = ?1")?;
    for (channel, oldest, expires) in channels {
        let wanted = expiry(policy, &channel, oldest);
        if wanted != expires {
            update.execute(rusqlite::params![channel, wanted])?;
        }
    }
    Ok(())
}

/// Channels holding more events than their size rule keeps, with its slack.
fn over_size_channels(
    connection: &Connection,
    policy: &RetentionPolicy,
) -> Result<Vec<String>, StoreError> {
    let mut statement = connection.prepare("SELECT channel, events FROM channel_stats")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut over = Vec::new();
    for row in rows {
        let (channel, events) = row?;
        let size = policy.for_channel(&channel).size;
        if size > 0 && events > (size + size_slack(size)) as i64 {
            over.push(channel);
        }
    }
    Ok(over)
}

/// The oldest events of `channel` (see [`oldest::oldest_events`]), older than `before` if
/// given, as candidates for removal.
fn oldest_events(
    connection: &Connection,
    channel: &str,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<Doomed>, StoreError> {
    let oldest = oldest::oldest_events(connection, channel, before, limit)?;
    Ok(oldest
        .into_iter()
        .map(|event| Doomed {
            origin: event.origin,
            seq: event.seq,
            channel: channel.to_string(),
            bytes: event.bytes,
        })
        .collect())
}

/// A channel's events of one origin up to a seq, with their bytes. The index is named: without
/// statistics SQLite would take the primary key (origin, seq) and read every event of the
/// origin below the floor, in every channel, once for each channel a snapshot names.
fn through_floor_sql() -> String {
    format!(
        "SELECT seq, {EVENT_BYTES_SQL} FROM events INDEXED BY events_by_channel
         WHERE channel = ?1 AND origin = ?2 AND seq <= ?3"
    )
}

/// Bytes of the database in use (pages that are not free).
pub(super) fn used_bytes(connection: &Connection) -> Result<u64, StoreError> {
    // One cached statement (each step asks): a `PRAGMA` is parsed again every time.
    let used: i64 = connection
        .prepare_cached(
            "SELECT max((SELECT page_count FROM pragma_page_count())
                        - (SELECT freelist_count FROM pragma_freelist_count()), 0)
                    * (SELECT page_size FROM pragma_page_size())",
        )?
        .query_row([], |row| row.get(0))?;
    Ok(used as u64)
}

/// The highest seq of each origin pruned here: a pull below it cannot be answered from the log.
pub fn pruned_positions(connection: &Connection) -> Result<VersionVector, StoreError> {
    let rows = super::log::origin_numbers(
        connection,
        "SELECT origin, pruned FROM log_positions WHERE pruned > 0",
    )?;
    Ok(rows.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::retention::ChannelRetention;
    use crate::store::schema::{self, Check};
    use crate::store::{SyncMode, log};

    #[test]
    fn a_channel_is_pruned_back_to_its_size_only_past_its_slack() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        let mut connection = schema::open_writer(&path, SyncMode::Normal, Check::Skip).unwrap();
        let size = 128;
        assert_eq!(size_slack(size), 2);
        assert_eq!(size_slack(63), 0, "small sizes are kept exactly");
        let retention = ChannelRetention {
            size,
            ttl: Duration::ZERO,
        };
        let policy = RetentionPolicy::new(retention, Vec::new(), 0);
        let mut pruner = Pruner::new(&connection, policy, Arc::default()).unwrap();
        let mut position = VersionVector::new();
        let mut append = |connection: &mut Connection, pruner: &mut Pruner, seq: u64| {
            let tx = connection.transaction().unwrap();
            let event = crate::store::tests::remote("n1", seq);
            log::insert_event(&tx, &event).unwrap();
            pruner.note_inserted(&tx, [&event]).unwrap();
            tx.commit().unwrap();
            position.advance(&event.origin, seq);
            position.clone()
        };
        let now = Hlc::from_parts(1_000_000, 0);
        let mut reached = VersionVector::new();
        for seq in 1..=size + 2 {
            reached = append(&mut connection, &mut pruner, seq);
        }
        assert_eq!(pruner.step(&mut connection, &reached, now).unwrap(), 0);
        let reached = append(&mut connection, &mut pruner, size + 3);
        assert_eq!(pruner.step(&mut connection, &reached, now).unwrap(), 3);
        let (kept, oldest): (i64, i64) = connection
            .query_row(
                "SELECT count(*), min(seq) FROM events WHERE channel = 'feed'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!((kept, oldest), (size as i64, 4), "the oldest three went");
    }

    #[test]
    fn a_channel_over_its_size_and_past_its_ttl_loses_each_event_once() {
        // Both rules pick the same oldest events in one step: each is removed and counted once.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        let mut connection = schema::open_writer(&path, SyncMode::Normal, Check::Skip).unwrap();
        let retention = ChannelRetention {
            size: 64,
            ttl: Duration::from_secs(60),
        };
        let policy = RetentionPolicy::new(retention, Vec::new(), 0);
        let ttl_hlc = policy.for_channel("feed").ttl_hlc().unwrap();
        let mut pruner = Pruner::new(&connection, policy, Arc::default()).unwrap();
        let mut position = VersionVector::new();
        let tx = connection.transaction().unwrap();
        let events: Vec<Event> = (1..=100)
            .map(|seq| crate::store::tests::remote("n1", seq))
            .collect();
        for event in &events {
            log::insert_event(&tx, event).unwrap();
            position.advance(&event.origin, event.seq);
        }
        pruner.note_inserted(&tx, events.iter()).unwrap();
        tx.commit().unwrap();
        // Seqs 1 to 80 outlived the ttl; 36 are over the size.
        let now = Hlc(crate::store::tests::remote("n1", 81).hlc.0 + ttl_hlc);
        assert_eq!(pruner.step(&mut connection, &position, now).unwrap(), 80);
        let (kept, counted): (i64, i64) = connection
            .query_row(
                "SELECT (SELECT count(*) FROM events), events FROM channel_stats
                 WHERE channel = 'feed'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!((kept, counted), (20, 20));
        assert_eq!(pruner.totals.events, 20);
    }

    #[test]
    fn a_floor_is_applied_through_the_channel_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        let connection = schema::open_writer(&path, SyncMode::Normal, Check::Skip).unwrap();
        let plan: String = connection
            .query_row(
                &format!("EXPLAIN QUERY PLAN {}", through_floor_sql()),
                rusqlite::params!["feed", "n1", 10],
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains("INDEX events_by_channel"), "{plan}");
    }

    #[test]
    fn channel_stats_count_every_event_and_keep_the_oldest_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        let mut connection = schema::open_writer(&path, SyncMode::Normal, Check::Skip).unwrap();
        let ttl = Duration::from_secs(60);
        let retention = ChannelRetention { size: 0, ttl };
        let policy = RetentionPolicy::new(retention, Vec::new(), 0);
        let ttl_hlc = policy.for_channel("feed").ttl_hlc().unwrap() as i64;
        let mut pruner = Pruner::new(&connection, policy, Arc::default()).unwrap();
        let stats = |connection: &Connection| -> (i64, i64, i64, i64) {
            connection
                .query_row(
                    "SELECT events, bytes, oldest_hlc, expires FROM channel_stats
                     WHERE channel = 'feed'",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )
                .unwrap()
        };
        let mut bytes = 0;
        // Seqs 5, 2 (older: the age goes back), 9 (newer: the age stays), in three commits.
        for seq in [5, 2, 9] {
            let tx = connection.transaction().unwrap();
            let event = crate::store::tests::remote("n1", seq);
            bytes += event_bytes(&event);
            log::insert_event(&tx, &event).unwrap();
            pruner.note_inserted(&tx, [&event]).unwrap();
            tx.commit().unwrap();
        }
        let oldest = crate::store::tests::remote("n1", 2).hlc.0 as i64;
        assert_eq!(stats(&connection), (3, bytes, oldest, oldest + ttl_hlc));
        assert_eq!(pruner.totals.events, 3);
    }

    #[test]
    fn steps_come_soon_after_many_inserts_and_less_often_after_a_few() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.db");
        let mut connection = schema::open_writer(&path, SyncMode::Normal, Check::Skip).unwrap();
        let policy = RetentionPolicy::new(
            ChannelRetention {
                size: 1_000_000,
                ttl: Duration::ZERO,
            },
            Vec::new(),
            0,
        );
        let mut pruner = Pruner::new(&connection, policy, Arc::default()).unwrap();
        let now = Hlc::from_parts(1_000_000, 0);
        let position = VersionVector::new();
        pruner.step(&mut connection, &position, now).unwrap();
        let insert =
            |connection: &mut Connection, pruner: &mut Pruner, seqs: std::ops::Range<u64>| {
                let tx = connection.transaction().unwrap();
                let events: Vec<Event> = seqs
                    .map(|seq| crate::store::tests::remote("n1", seq))
                    .collect();
                for event in &events {
                    log::insert_event(&tx, event).unwrap();
                }
                pruner.note_inserted(&tx, events.iter()).unwrap();
                tx.commit().unwrap();
            };
        // Nothing inserted: the idle pace.
        pruner.last_step = Instant::now() - AFTER_INSERTS_STEP_EVERY;
        assert!(!pruner.due());
        // A few events: due after the short wait, not the busy one.
        insert(&mut connection, &mut pruner, 1..4);
        pruner.last_step = Instant::now() - BUSY_STEP_EVERY * 2;
        assert!(!pruner.due());
        pruner.last_step = Instant::now() - AFTER_INSERTS_STEP_EVERY;
        assert!(pruner.due());
        // Many events: due after the busy wait.
        insert(
            &mut connection,
            &mut pruner,
            4..(4 + STEP_AFTER_EVENTS as u64),
        );
        pruner.last_step = Instant::now() - BUSY_STEP_EVERY * 2;
        assert!(pruner.due());
        // A step starts the count again.
        pruner.step(&mut connection, &position, now).unwrap();
        pruner.last_step = Instant::now() - BUSY_STEP_EVERY * 2;
        assert!(!pruner.due());
    }
}
