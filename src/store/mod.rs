//! The event store: each node's SQLite database.
//!
//! It owns the schema, the single writer thread (group commit: many appends in one
//! transaction, each caller answered only after the commit), the per-origin log positions,
//! and the materialized state (active broadcast, acknowledgements) that is updated in the same
//! transaction as the event that changes it, by `materialize::apply`. The same apply code
//! runs for local appends and, later, for events that arrive from other nodes, so state is a
//! pure function of the set of events held.
//!
//! [`Store::append_many`] commits the events of one request (a batch, a publish to several
//! channels) in one transaction, all of them or none, with consecutive seqs in the order given
//! (`writer/batch.rs`). An event may carry an idempotency key, stored with it (nullable
//! `events.idempotency_key`, indexed by `(channel, key)`, schema 5): a draft whose key is held
//! on its channel answers the held event instead of publishing. Keys are not unique in the
//! table on purpose: two nodes may each accept a retry before either holds the other's event,
//! and refusing the second at replication would stop it; lookups answer the first by
//! `(hlc, origin)`, the same on every node once both replicated. Keys go with their event to
//! peers (mesh frames, Redis entries, snapshots) and are pruned with it.
//!
//! The writer numbers this node's own events only while the [`own_fence`] is clear: a
//! database behind what peers hold of its origin (an older backup restored, a lost disk tail)
//! waits until the backplane brought those events back, so that no seq is used twice.
//!
//! Reads (history since a cursor, active broadcast) run on separate read-only connections on
//! tokio's blocking pool; nothing here holds a lock across an `.await`.
//!
//! The store must not know about sockets or peers: after each commit it hands the newly
//! committed events, in log order, to a [`CommitSink`] (the hub and the backplane).
//!
//! The log is bounded by [`retention`] (what each channel keeps): the writer prunes between
//! group commits (`prune.rs`), recording each channel's floor ([`floors`]), and retires origins
//! nothing is left of (`retire.rs`). A node below what its peers keep merges a [`snapshot`]
//! instead of the log it can no longer get.
//!
//! Faults: a write that fails (a full disk: [`StoreError::Full`]) is rolled back and answered
//! to every caller waiting on it; the writer keeps running and the next write tries again, so
//! the store recovers by itself once space is freed, and [`Store::probe_writable`] (readiness)
//! commits a small write to notice. [`Store::open`] refuses a database that fails
//! `PRAGMA quick_check`, naming the file ([`StoreError::CorruptFile`]). A log row that cannot
//! be decoded is skipped where it is read, logged and counted (`log.rs`).

mod broadcasts;
mod comments;
pub mod floors;
mod held_back;
mod log;
mod materialize;
mod oldest;
pub mod own_fence;
mod prune;
mod readers;
pub mod retention;
mod retire;
mod schema;
pub mod snapshot;
mod write_tx;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::event::{EventDraft, HybridClock, NodeId, SharedEvent, VersionVector};

pub use broadcasts::BroadcastRecord;
pub use comments::CommentRecord;
pub use log::{HistoryPage, LogQuery};
use own_fence::OwnSeqFence;
pub use prune::PruneHorizon;
use readers::ReaderPool;
pub use retention::RetentionPolicy;
pub use retire::{LiveMember, LiveOrigins, RetiredOrigins};
pub use writer::{Appended, Applied, BatchAppended};
use writer::{WriteCommand, WriterThread};

/// Receives every batch of committed events, in log order, on the writer thread.
/// Implementations must not block: they hand events on through bounded queues.
pub trait CommitSink: Send + Sync + 'static {
    fn committed(&self, events: &[SharedEvent]);

    /// The log position jumped to `position` past events this node will never hold (a merged
    /// snapshot): nothing in between will be handed on.
    fn jumped(&self, _position: &VersionVector) {}

    /// Origins were retired (gone from the log position) or came back (their position
    /// resumes at the given seq); handed on before any event of a revived origin.
    fn origins_changed(&self, _retired: &[NodeId], _revived: &[(NodeId, u64)]) {}
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store is shut down")]
    Closed,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The disk (or the file system's quota) is full: nothing was written, nothing committed
    /// was lost, and the next write tries again.
    #[error("store full")]
    Full,
    /// This node may not number its own events yet: it has not heard from its peers since it
    /// started, or a peer holds more of its origin than it does (see [`own_fence`]). Nothing
    /// was written.
    #[error("{0}")]
    CatchingUp(own_fence::Fenced),
    /// A write failed for another reason; the transaction was rolled back.
    #[error("store write failed: {0}")]
    Write(String),
    /// Event `index` of a batch names an idempotency key that is held already for a different
    /// event (`existing`), or that another event of the batch names too (`existing: None`):
    /// nothing of the batch was stored.
    #[error("idempotency key {key:?} of event {index} conflicts")]
    IdempotencyConflict {
        index: usize,
        key: String,
        existing: Option<uuid::Uuid>,
    },
    /// The database file fails its integrity check, or is not a database at all.
    #[error(
        "database {} is corrupt ({detail}): restore it from a backup, or move it away and let the node catch up from its peers",
        path.display()
    )]
    CorruptFile { path: PathBuf, detail: String },
}

impl StoreError {
    /// True when the error says the disk is full (`SQLITE_FULL`, `ENOSPC`, or a shared-memory
    /// file that could not grow).
    pub fn is_full(&self) -> bool {
        match self {
            Self::Full => true,
            Self::Sqlite(error) => sqlite_full(error),
            Self::Io(error) => io_full(error),
            _ => false,
        }
    }

    /// The same failure, for one more caller that waited on the write (an error cannot be
    /// cloned): `Full` stays `Full`, anything else becomes [`StoreError::Write`].
    pub(crate) fn for_waiter(&self) -> StoreError {
        match self {
            _ if self.is_full() => StoreError::Full,
            StoreError::Closed => StoreError::Closed,
            StoreError::CatchingUp(fenced) => StoreError::CatchingUp(*fenced),
            other => StoreError::Write(other.to_string()),
        }
    }

    /// `Full` for a full disk, the error itself otherwise.
    pub(crate) fn classified(self) -> StoreError {
        if self.is_full() {
            StoreError::Full
        } else {
            self
        }
    }

    /// Names `path` when SQLite says the file is damaged or not a database.
    pub(crate) fn naming_file(self, path: &Path) -> StoreError {
        match self {
            StoreError::Sqlite(ref error)
                if matches!(
                    error.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
                ) =>
            {
                StoreError::CorruptFile {
                    path: path.to_path_buf(),
                    detail: one_line(&error.to_string()),
                }
            }
            other => other,
        }
    }
}

fn sqlite_full(error: &rusqlite::Error) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(failure, _) => {
            failure.code == rusqlite::ErrorCode::DiskFull
                || failure.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE
        }
        _ => false,
    }
}

fn io_full(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::StorageFull
        || error.kind() == std::io::ErrorKind::QuotaExceeded
}

/// `text` on one line.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How hard a commit tries to reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fsync the WAL on every commit: survives power loss.
    Full,
    /// fsync at checkpoints only: survives a killed process, not a power cut.
    Normal,
}

impl SyncMode {
    /// The word the flag and metrics use.
    pub fn label(self) -> &'static str {
        match self {
            SyncMode::Full => "full",
            SyncMode::Normal => "normal",
        }
    }
}

#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub path: PathBuf,
    pub sync: SyncMode,
    /// How commits that only store events replicated from peers reach the disk; never more
    /// than [`StoreOptions::sync`]. `Normal` (the default): a replica that loses its last
    /// commits in an OS crash or power cut pulls them again from its peers.
    pub replica_sync: SyncMode,
    /// Most appends folded into one transaction.
    pub max_batch: usize,
    /// Bound of the queue in front of the writer thread.
    pub queue_capacity: usize,
    /// Read-only connections kept open.
    pub readers: usize,
    /// What the log keeps.
    pub retention: RetentionPolicy,
}

impl StoreOptions {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join("herald.db"),
            sync: SyncMode::Full,
            replica_sync: SyncMode::Normal,
            max_batch: 1024,
            queue_capacity: 16 * 1024,
            readers: 4,
            retention: RetentionPolicy::default(),
        }
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    origin: NodeId,
    commands: mpsc::Sender<WriteCommand>,
    readers: Arc<ReaderPool>,
    writer: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
    horizon: Arc<PruneHorizon>,
    retired: Arc<RetiredOrigins>,
    live_origins: Arc<LiveOrigins>,
    fence: Arc<OwnSeqFence>,
}

impl Store {
    /// Opens (creating or migrating) the database and starts the writer thread. A database that
    /// fails `PRAGMA quick_check` (or is not a database) is refused with
    /// [`StoreError::CorruptFile`], naming the file.
    pub fn open(
        options: &StoreOptions,
        node_id: NodeId,
        clock: Arc<HybridClock>,
        sink: Arc<dyn CommitSink>,
    ) -> Result<Self, StoreError> {
        if let Some(parent) = options.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let connection = schema::open_writer(&options.path, options.sync, schema::Check::Quick)
            .map_err(|error| error.naming_file(&options.path))?;
        let (origin, new_database) = schema::origin_id(&connection, &node_id)?;
        // Held is set by the writer once it has read the log position.
        let fence = Arc::new(OwnSeqFence::new(0, new_database));
        let (commands, receiver) = mpsc::channel(options.queue_capacity);
        let horizon = Arc::new(PruneHorizon::default());
        let pruner =
            prune::Pruner::new(&connection, options.retention.clone(), Arc::clone(&horizon))?;
        let retired = RetiredOrigins::load(&connection)?;
        let live_origins = Arc::new(LiveOrigins::default());
        let writer = WriterThread::new(
            connection,
            writer::OwnOrigin {
                origin: origin.clone(),
                fence: Arc::clone(&fence),
            },
            clock,
            sink,
            options.max_batch,
            writer::Durability {
                own: options.sync,
                replica: match options.sync {
                    SyncMode::Normal => SyncMode::Normal,
                    SyncMode::Full => options.replica_sync,
                },
            },
            writer::Housekeeping {
                pruner,
                retired: Arc::clone(&retired),
                live_origins: Arc::clone(&live_origins),
            },
        )?;
        let handle = std::thread::Builder::new()
            .name("herald-store-writer".into())
            .spawn(move || writer.run(receiver))?;
        spawn_housekeeping_ticker(commands.clone())?;
        Ok(Self {
            origin,
            commands,
            readers: Arc::new(ReaderPool::new(options.path.clone(), options.readers)),
            writer: Arc::new(std::sync::Mutex::new(Some(handle))),
            horizon,
            retired,
            live_origins,
            fence,
        })
    }

    /// The log position held in the database at `path` (empty when it does not exist yet):
    /// what a hub starts from, before the writer runs.
    pub fn read_version_vector(path: &Path) -> Result<VersionVector, StoreError> {
        if !path.exists() {
            return Ok(VersionVector::new());
        }
        let read = || {
            let connection = schema::open_writer(path, SyncMode::Normal, schema::Check::Skip)?;
            log::version_vector(&connection)
        };
        read().map_err(|error| error.naming_file(path))
    }

    /// Where the backplane says what every linked peer holds: pruning keeps what is not
    /// covered (except to stay under `max_disk`).
    pub fn set_prune_horizon(&self, horizon: Option<VersionVector>) {
        self.horizon.set(horizon);
    }

    /// Tells the store who the live members are and which origin each publishes under: an
    /// origin none of them publishes under any more, with no events left, is retired (`None`:
    /// not known yet, retire nothing).
    pub fn set_live_origins(&self, live: Option<Vec<LiveMember>>) {
        self.live_origins.set(live);
    }

    /// The origins retired here.
    pub fn retired(&self) -> &Arc<RetiredOrigins> {
        &self.retired
    }

    /// The origin id under which this database's own events are logged: the node id plus the
    /// database's creation time, so that a node whose disk was wiped never reuses a seq.
    pub fn origin(&self) -> &NodeId {
        &self.origin
    }

    /// Commits a new event from this node; answers after the commit with its identity. A draft
    /// with an idempotency key goes through [`Store::append_many`] (the event it names may be
    /// held already).
    pub async fn append(&self, draft: EventDraft) -> Result<Appended, StoreError> {
        if draft.idempotency_key.is_some() {
            let mut appended = self.append_many(vec![draft]).await?;
            let one = appended.pop().ok_or(StoreError::Closed)?;
            return Ok(Appended {
                event: one.event,
                position: one.position,
            });
        }
        self.wait_for_own_fence().await?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(WriteCommand::Append { draft, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits new events from this node in one transaction, all of them or none, and answers
    /// one [`BatchAppended`] per draft, in order. A draft whose idempotency key names an event
    /// held already on its channel answers that event (`replayed`, with the position this node
    /// first answered it with when it took it) and publishes nothing; a key held for a
    /// different event, or named twice, refuses the whole batch
    /// ([`StoreError::IdempotencyConflict`]).
    pub async fn append_many(
        &self,
        drafts: Vec<EventDraft>,
    ) -> Result<Vec<BatchAppended>, StoreError> {
        self.wait_for_own_fence().await?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(WriteCommand::AppendMany { drafts, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Whether this node may number its own events: opened and floored by the backplane.
    pub fn own_fence(&self) -> &Arc<OwnSeqFence> {
        &self.fence
    }

    /// Waits (up to [`own_fence::APPEND_WAIT`]) until this node may number its own events.
    async fn wait_for_own_fence(&self) -> Result<(), StoreError> {
        self.fence
            .wait_clear(own_fence::APPEND_WAIT)
            .await
            .map_err(StoreError::CatchingUp)
    }

    /// Stores events that other nodes committed (idempotent on `(origin, seq)`), and hands
    /// what became contiguous to the sink.
    pub async fn apply_remote(&self, events: Vec<SharedEvent>) -> Result<Applied, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(WriteCommand::ApplyRemote { events, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// What this node holds, to ask a peer for a snapshot with.
    pub async fn snapshot_basis(&self) -> Result<snapshot::SnapshotBasis, StoreError> {
        self.read(snapshot::basis).await
    }

    /// Reads a snapshot for a node at `basis` on a connection of its own, in bounded parts:
    /// at most a few parts wait in the returned queue while the reader is behind.
    pub fn snapshot(
        &self,
        basis: snapshot::SnapshotBasis,
    ) -> mpsc::Receiver<snapshot::SnapshotItem> {
        let (items, receiver) = mpsc::channel(4);
        let path = self.readers.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let sent = snapshot::read(&path, &basis, |item| items.blocking_send(item).is_ok());
            if let Err(error) = sent {
                tracing::warn!(%error, "reading a snapshot failed");
            }
        });
        receiver
    }

    /// Merges one part of a peer's snapshot (idempotent).
    pub async fn merge_snapshot(&self, part: snapshot::SnapshotPart) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(WriteCommand::MergeSnapshot { part, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Ends a snapshot: the log position jumps to the peer's, and what arrived meanwhile is
    /// handed on.
    pub async fn finish_snapshot(&self, end: snapshot::SnapshotEnd) -> Result<Applied, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(WriteCommand::FinishSnapshot { end, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `query` on a read-only connection on the blocking pool.
    pub async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with_connection(query))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// The highest contiguous seq held per origin.
    pub async fn version_vector(&self) -> Result<VersionVector, StoreError> {
        self.read(log::version_vector).await
    }

    /// True when the writer thread is alive and a write transaction can be begun and rolled back.
    pub async fn probe_writable(&self) -> bool {
        let (reply, answer) = oneshot::channel();
        if self
            .commands
            .send(WriteCommand::Probe { reply })
            .await
            .is_err()
        {
            return false;
        }
        matches!(answer.await, Ok(true))
    }

    /// Stops the writer after it has committed everything queued, and waits for it.
    /// Other clones of the handle see [`StoreError::Closed`] afterwards.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self
            .commands
            .send(WriteCommand::Close { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// Wakes the writer for its housekeeping (pruning, retiring origins, collecting tombstones)
/// while no commands arrive; ends when the store closes.
fn spawn_housekeeping_ticker(commands: mpsc::Sender<WriteCommand>) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("herald-store-tick".into())
        .spawn(move || {
            loop {
                std::thread::sleep(prune::IDLE_STEP_EVERY);
                match commands.try_send(WriteCommand::Tick) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        })?;
    Ok(())
}

/// Read queries on materialized state, for use inside [`Store::read`].
pub mod state {
    pub use super::broadcasts::{
        active_broadcast, broadcast_exists, broadcasts_by_creator_since, is_acknowledged,
    };
    pub use super::comments::{comment, comment_state, track_comments};
    pub use super::floors::{channels_lost, floors_of};
    pub use super::log::range as log_range;
    pub use super::log::range_scanned as log_range_scanned;
    pub use super::materialize::kinds;
    pub use super::prune::pruned_positions;
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod retention_tests;

#[cfg(test)]
mod snapshot_tests;

#[cfg(test)]
mod fault_tests;

#[cfg(test)]
mod batch_tests;

#[cfg(test)]
mod statement_tests;
