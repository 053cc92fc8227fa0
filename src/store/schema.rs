//! Schema and migrations, applied in order by `PRAGMA user_version`.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{StoreError, SyncMode};
use crate::event::NodeId;

const MIGRATIONS: &[&str] = &[
    // 1: the event log, log positions, broadcast state.
    "CREATE TABLE events (
        origin   TEXT    NOT NULL,
        seq      INTEGER NOT NULL,
        id       TEXT    NOT NULL,
        hlc      INTEGER NOT NULL,
        channel  TEXT    NOT NULL,
        kind     TEXT    NOT NULL,
        payload  TEXT    NOT NULL,
        users    TEXT,
        PRIMARY KEY (origin, seq)
    ) WITHOUT ROWID;
    CREATE INDEX events_by_channel ON events (channel, origin, seq);
    CREATE TABLE log_positions (
        origin     TEXT PRIMARY KEY,
        contiguous INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE broadcasts (
        id              TEXT PRIMARY KEY,
        message         TEXT    NOT NULL,
        message_type    TEXT    NOT NULL,
        created_by      TEXT    NOT NULL,
        created_by_name TEXT    NOT NULL,
        created_at      TEXT    NOT NULL,
        created_ms      INTEGER NOT NULL,
        hlc             INTEGER NOT NULL,
        origin          TEXT    NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX broadcasts_by_creator ON broadcasts (created_by, created_ms);
    CREATE TABLE active_broadcast (
        slot         INTEGER PRIMARY KEY CHECK (slot = 0),
        broadcast_id TEXT,
        hlc          INTEGER NOT NULL,
        origin       TEXT    NOT NULL
    );
    CREATE TABLE broadcast_acks (
        broadcast_id TEXT NOT NULL,
        user_id      TEXT NOT NULL,
        PRIMARY KEY (broadcast_id, user_id)
    ) WITHOUT ROWID;",
    // 2: this database's identity as an origin.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;",
    // 3: track comments. A row may be created by an edit or a delete that arrived before the
    // comment itself (from another origin); it is listed once its creation is known.
    "CREATE TABLE comments (
        id             TEXT PRIMARY KEY,
        track_id       TEXT    NOT NULL,
        author_id      TEXT,
        author_name    TEXT,
        created_at     TEXT,
        created_hlc    INTEGER,
        content        TEXT    NOT NULL DEFAULT '',
        position       REAL    NOT NULL DEFAULT 0,
        content_hlc    INTEGER NOT NULL DEFAULT 0,
        content_origin TEXT    NOT NULL DEFAULT '',
        is_edited      INTEGER NOT NULL DEFAULT 0,
        last_edited_at TEXT,
        deleted        INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX comments_by_track ON comments (track_id, position, created_hlc);",
    // 4: retention. Per-channel counts and age (what pruning works from), the floor below
    // which each channel's history is gone (per origin), the highest seq of each origin pruned
    // here, origins retired from version vectors, the hybrid-clock time each piece of
    // materialized state last changed (what a snapshot for a node that was away sends), and
    // deleted comments whose rows were collected.
    "CREATE INDEX events_by_channel_time ON events (channel, hlc);
    CREATE TABLE channel_stats (
        channel    TEXT PRIMARY KEY,
        events     INTEGER NOT NULL,
        bytes      INTEGER NOT NULL,
        oldest_hlc INTEGER NOT NULL,
        expires    INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX channel_stats_by_expiry ON channel_stats (expires);
    CREATE INDEX channel_stats_by_age ON channel_stats (oldest_hlc);
    INSERT INTO channel_stats (channel, events, bytes, oldest_hlc, expires)
        SELECT channel, count(*),
               sum(length(payload) + length(channel) + length(kind) + coalesce(length(users), 0) + 64),
               min(hlc), 9223372036854775807
        FROM events GROUP BY channel;
    CREATE TABLE channel_floors (
        channel TEXT    NOT NULL,
        origin  TEXT    NOT NULL,
        seq     INTEGER NOT NULL,
        PRIMARY KEY (channel, origin)
    ) WITHOUT ROWID;
    ALTER TABLE log_positions ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE log_positions ADD COLUMN position_hlc INTEGER NOT NULL DEFAULT 0;
    UPDATE log_positions SET position_hlc = coalesce((SELECT max(hlc) FROM events
        WHERE events.origin = log_positions.origin AND events.seq <= log_positions.contiguous), 0);
    CREATE TABLE retired_origins (
        origin     TEXT PRIMARY KEY,
        seq        INTEGER NOT NULL,
        retired_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE comments ADD COLUMN touched_hlc INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE comments ADD COLUMN deleted_origin TEXT;
    ALTER TABLE comments ADD COLUMN deleted_seq INTEGER;
    ALTER TABLE comments ADD COLUMN created_origin TEXT;
    ALTER TABLE comments ADD COLUMN created_seq INTEGER;
    UPDATE comments SET touched_hlc = max(coalesce(created_hlc, 0), content_hlc);
    ALTER TABLE broadcast_acks ADD COLUMN hlc INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE active_broadcast ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX comments_tombstones ON comments (id) WHERE deleted = 1;
    CREATE TABLE collected_tombstones (
        id          TEXT PRIMARY KEY,
        track_id    TEXT    NOT NULL,
        deleted_hlc INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX collected_tombstones_by_age ON collected_tombstones (deleted_hlc);",
    // 5: idempotency keys, kept with their event (and pruned with it). Not unique: two nodes
    // may each accept a retry before either holds the other's event; lookups then answer the
    // first by (hlc, origin) on every node.
    "ALTER TABLE events ADD COLUMN idempotency_key TEXT;
    CREATE INDEX events_by_idempotency_key ON events (channel, idempotency_key)
        WHERE idempotency_key IS NOT NULL;",
    // 6: the position a keyed event was first answered with (a cursor), on the node that
    // took it, so that a retry answers the same; not replicated.
    "ALTER TABLE events ADD COLUMN answered_at TEXT;",
    // 7: a channel's oldest events are found per origin through `events_by_channel` (an
    // origin's seq order is its time order): one b-tree less for every insert and delete.
    "DROP INDEX events_by_channel_time;",
];

/// The origin id of this database: `<node_id>.<creation time in base 36>`, created once; and
/// whether it was made now (a new database, of whose origin no peer can hold anything).
pub(super) fn origin_id(
    connection: &Connection,
    node_id: &NodeId,
) -> Result<(NodeId, bool), StoreError> {
    use rusqlite::OptionalExtension;
    let stored: Option<String> = connection
        .query_row("SELECT value FROM meta WHERE key = 'origin'", [], |row| {
            row.get(0)
        })
        .optional()?;
    if let Some(origin) = stored {
        let origin = NodeId::new(&origin).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        return Ok((origin, false));
    }
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let epoch = base36(millis);
    let keep = 64 - epoch.len() - 1;
    let name: String = node_id.as_str().chars().take(keep).collect();
    let origin =
        NodeId::new(&format!("{name}.{epoch}")).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    connection.execute(
        "INSERT INTO meta (key, value) VALUES ('origin', ?1)",
        [origin.as_str()],
    )?;
    Ok((origin, true))
}

fn base36(mut value: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut digits = Vec::new();
    loop {
        digits.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// Whether opening checks the database's integrity first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// `PRAGMA quick_check` (reads every page once: O(size), run once at start-up).
    Quick,
    Skip,
}

/// Most problems `quick_check` reports that are named in the error.
const PROBLEMS_NAMED: usize = 3;

/// Runs `PRAGMA quick_check`; a database with any problem is refused, naming the file.
fn check_integrity(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut statement = connection.prepare(&format!("PRAGMA quick_check({PROBLEMS_NAMED})"))?;
    let problems: Vec<String> = statement
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    let detail = problems
        .iter()
        .map(|problem| super::one_line(problem))
        .collect::<Vec<_>>()
        .join("; ");
    Err(StoreError::CorruptFile {
        path: path.to_path_buf(),
        detail: format!("quick_check: {detail}"),
    })
}

/// How the following commits of `connection` reach the disk (in WAL mode, `NORMAL` commits
/// are made durable by the next `FULL` commit or checkpoint, in order).
pub(super) fn set_synchronous(connection: &Connection, sync: SyncMode) -> Result<(), StoreError> {
    // Prepared once per connection: the writer switches between the two modes as own and
    // replicated commits alternate, hundreds of times a second under load.
    let pragma = match sync {
        SyncMode::Full => "PRAGMA synchronous = FULL",
        SyncMode::Normal => "PRAGMA synchronous = NORMAL",
    };
    connection.prepare_cached(pragma)?.execute([])?;
    Ok(())
}

pub(super) fn open_writer(
    path: &Path,
    sync: SyncMode,
    check: Check,
) -> Result<Connection, StoreError> {
    let mut connection = Connection::open(path)?;
    if check == Check::Quick {
        check_integrity(&connection, path)?;
    }
    let fresh: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if fresh == 0 {
        // Only takes effect while the file is empty: before WAL mode writes its header.
        connection.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    connection.pragma_update(None, "journal_mode", "WAL")?;
    set_synchronous(&connection, sync)?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // After a checkpoint the WAL is cut back to this size instead of keeping its largest.
    connection.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    connection.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    connection.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
    migrate(&mut connection)?;
    let auto_vacuum: i64 = connection.pragma_query_value(None, "auto_vacuum", |row| row.get(0))?;
    if auto_vacuum != INCREMENTAL {
        // A database made before retention: one full rewrite lets freed pages be released.
        tracing::info!(path = %path.display(), "rewriting the database once so that pruned pages can be released");
        connection.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        connection.execute_batch("VACUUM;")?;
    }
    Ok(connection)
}

/// Prepared statements a connection keeps. The writer runs a few dozen distinct ones (appends,
/// pruning, features); fewer than that and every round parses some of them again.
const STATEMENT_CACHE: usize = 128;
/// `PRAGMA auto_vacuum` value of INCREMENTAL.
const INCREMENTAL: i64 = 2;
/// WAL pages written between the writer's automatic checkpoints (16 MiB). A checkpoint copies
/// the latest version of each page once, and the hot pages (log positions, channel counts,
/// the tops of the indexes) change in every commit: SQLite's default of 1,000 copied them
/// four times as often, and its checkpoints were 15% of the writer's time under `/api/batch`
/// (10% at 4,000).
pub(super) const WAL_CHECKPOINT_PAGES: i64 = 4000;
/// The writer's page cache, in KiB (a negative `cache_size`): SQLite's default of 2 MiB left
/// the indexes' working set of a busy log to `pread`s (8 to 14% of the writer's time under
/// `/api/batch`, 3% with 32 MiB). Pages are cached as they are read, so an idle node never
/// holds the whole of it.
const WRITER_CACHE_KIB: i64 = -32 * 1024;
/// Bytes the WAL is truncated to after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let current = current as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this herald ({})",
            MIGRATIONS.len()
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = connection.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_releases_free_pages_without_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let connection =
            open_writer(&dir.path().join("t.db"), SyncMode::Normal, Check::Quick).unwrap();
        let mode: i64 = connection
            .pragma_query_value(None, "auto_vacuum", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, INCREMENTAL);
    }

    #[test]
    fn migrates_a_new_database_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(open_writer(&path, SyncMode::Normal, Check::Quick).unwrap());
        let connection = open_writer(&path, SyncMode::Normal, Check::Quick).unwrap();
        let version: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
    }
}

#[cfg(test)]
mod upgrade_tests {
    use super::*;

    #[test]
    fn a_database_made_before_retention_is_rewritten_once_to_release_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            // As herald made them before: WAL mode, no auto_vacuum, schema version 3.
            let mut connection = Connection::open(&path).unwrap();
            connection
                .pragma_update(None, "journal_mode", "WAL")
                .unwrap();
            let tx = connection.transaction().unwrap();
            for migration in &MIGRATIONS[..3] {
                tx.execute_batch(migration).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.commit().unwrap();
        }
        let mode = |connection: &Connection| -> i64 {
            connection
                .pragma_query_value(None, "auto_vacuum", |row| row.get(0))
                .unwrap()
        };
        let upgraded = open_writer(&path, SyncMode::Normal, Check::Quick).unwrap();
        assert_eq!(mode(&upgraded), INCREMENTAL);
        drop(upgraded);
        let again = open_writer(&path, SyncMode::Normal, Check::Quick).unwrap();
        assert_eq!(mode(&again), INCREMENTAL);
    }
}
