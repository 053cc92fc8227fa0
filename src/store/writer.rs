//! The writer thread: the only connection that writes.
//!
//! It drains its queue into batches (group commit). For events published here it assigns this
//! node's gap-free `seq` and the hybrid-clock timestamp; events from other nodes are inserted
//! idempotently on `(origin, seq)`. Every new event is applied to the materialized state in
//! the same transaction. After the commit, the events that became contiguous (this node's own,
//! and any origin whose gap was just filled) go to the sink in per-origin seq order, and only
//! then is each caller answered. An out-of-order event from another node is stored but held
//! back from the sink until the events before it arrive.
//!
//! A failed write (a full disk above all) never ends the thread: the transaction is rolled
//! back, in-memory bookkeeping is left as it was before it (positions advance only after a
//! commit; the pruner's totals are read back), every caller waiting on it gets the error
//! ([`StoreError::Full`] for a full disk), and the next batch simply tries again, so writing
//! resumes by itself once space is freed. Events from peers that failed to store are not
//! held anywhere: the backplanes read or pull them again (the mesh from the positions peers
//! report, Redis from the read offsets that did not advance). The first failure of a run is
//! logged as an error, the rest at debug level until a write succeeds again.

use std::collections::BTreeSet;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

mod batch;

use super::held_back::HeldBack;
use super::own_fence::OwnSeqFence;
use super::prune::Pruner;
use super::retire::{self, LiveOrigins, RetiredOrigins};
use super::snapshot::{self, SnapshotEnd, SnapshotPart};
use super::write_tx::WriteTx;
use super::{CommitSink, StoreError, SyncMode, broadcasts, comments, log, materialize, schema};
use crate::event::{Event, EventDraft, Hlc, HybridClock, NodeId, SharedEvent, VersionVector};

/// An appended event and the log position right after it: the cursor that covers it.
#[derive(Clone, Debug)]
pub struct Appended {
    pub event: SharedEvent,
    pub position: VersionVector,
}

/// One event of an append-many: the event (new, or the one its idempotency key already named)
/// and the log position right after it, which covers it.
#[derive(Clone, Debug)]
pub struct BatchAppended {
    pub event: SharedEvent,
    pub position: VersionVector,
    /// True when the idempotency key named an event held already: nothing new was published.
    pub replayed: bool,
}

/// What applying events from other nodes changed.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    /// Events that were new here.
    pub inserted: usize,
    /// The log position after the apply.
    pub position: VersionVector,
    /// Origins with events held back behind a gap: `(origin, first missing seq, highest held)`.
    pub gaps: Vec<(NodeId, u64, u64)>,
}

pub(super) enum WriteCommand {
    Append {
        draft: EventDraft,
        reply: oneshot::Sender<Result<Appended, StoreError>>,
    },
    /// New events from this node, all in one transaction or none (a batch).
    AppendMany {
        drafts: Vec<EventDraft>,
        reply: oneshot::Sender<Result<Vec<BatchAppended>, StoreError>>,
    },
    ApplyRemote {
        events: Vec<SharedEvent>,
        reply: oneshot::Sender<Result<Applied, StoreError>>,
    },
    /// Answer whether a write transaction can begin.
    Probe { reply: oneshot::Sender<bool> },
    /// Wakes an idle writer so that pruning runs.
    Tick,
    /// Merges one part of a peer's snapshot.
    MergeSnapshot {
        part: SnapshotPart,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Ends a snapshot: the position jumps to what the peer held.
    FinishSnapshot {
        end: SnapshotEnd,
        reply: oneshot::Sender<Result<Applied, StoreError>>,
    },
    /// Commit what is queued before this, checkpoint, and stop.
    Close { reply: oneshot::Sender<()> },
}

pub(super) struct WriterThread {
    connection: Connection,
    origin: NodeId,
    clock: Arc<HybridClock>,
    sink: Arc<dyn CommitSink>,
    max_batch: usize,
    /// What the log holds: the highest contiguous seq per origin.
    position: VersionVector,
    pruner: Pruner,
    retired: Arc<RetiredOrigins>,
    live_origins: Arc<LiveOrigins>,
    last_retire: std::time::Instant,
    /// Since when writes have been failing (`None`: the last write succeeded).
    failing_since: Option<std::time::Instant>,
    /// Origins known to hold nothing above their position (no log walk needed).
    held_back: HeldBack,
    durability: Durability,
    /// The connection's `synchronous` setting now.
    current_sync: SyncMode,
    /// Whether this node may number its own events now (`own_fence`).
    fence: Arc<OwnSeqFence>,
}

/// How commits reach the disk: those that store this node's own events (what a publish's
/// acknowledgement promises), and those that only store events replicated from peers.
#[derive(Clone, Copy, Debug)]
pub(super) struct Durability {
    pub own: SyncMode,
    pub replica: SyncMode,
}

/// What the writer keeps the log bounded with: the pruner, and what it needs to retire
/// origins.
pub(super) struct Housekeeping {
    pub pruner: Pruner,
    pub retired: Arc<RetiredOrigins>,
    pub live_origins: Arc<LiveOrigins>,
}

/// This node's origin, and the fence that says when the writer may number its next event.
pub(super) struct OwnOrigin {
    pub origin: NodeId,
    pub fence: Arc<OwnSeqFence>,
}

/// Most deleted comments collected per step.
const TOMBSTONES_PER_STEP: usize = 500;

/// How often origins are looked at for retirement.
const RETIRE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

type PendingAppend = (EventDraft, oneshot::Sender<Result<Appended, StoreError>>);
type PendingBatch = (
    Vec<EventDraft>,
    oneshot::Sender<Result<Vec<BatchAppended>, StoreError>>,
);

/// Events of batches past which no more commands join a transaction, so that one commit stays
/// short whatever the number of batches waiting.
const MAX_BATCH_EVENTS: usize = 16 * 1024;

/// Events read per query while walking a held-back range.
const CONTIGUOUS_WALK_PAGE: usize = 1024;

impl WriterThread {
    pub(super) fn new(
        connection: Connection,
        own: OwnOrigin,
        clock: Arc<HybridClock>,
        sink: Arc<dyn CommitSink>,
        max_batch: usize,
        durability: Durability,
        housekeeping: Housekeeping,
    ) -> Result<Self, StoreError> {
        let OwnOrigin { origin, fence } = own;
        let Housekeeping {
            pruner,
            retired,
            live_origins,
        } = housekeeping;
        let position = log::version_vector(&connection)?;
        fence.set_held(position.get(&origin));
        metrics::gauge!("herald_store_full").set(0.0);
        if let Some(highest) = log::highest_hlc(&connection)? {
            clock.observe(highest);
        }
        Ok(Self {
            connection,
            origin,
            clock,
            sink,
            max_batch: max_batch.max(1),
            position,
            pruner,
            retired,
            live_origins,
            last_retire: std::time::Instant::now(),
            failing_since: None,
            held_back: HeldBack::default(),
            durability,
            // `open_writer` set the connection up for the node's own commits.
            current_sync: durability.own,
            fence,
        })
    }

    pub(super) fn run(mut self, mut commands: mpsc::Receiver<WriteCommand>) {
        while let Some(first) = commands.blocking_recv() {
            let mut appends: Vec<PendingAppend> = Vec::new();
            let mut batches: Vec<PendingBatch> = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            let mut batched = 0usize;
            let mut batch_events = 0usize;
            while let Some(command) = next.take() {
                batched += 1;
                match command {
                    WriteCommand::Append { draft, reply } => appends.push((draft, reply)),
                    WriteCommand::AppendMany { drafts, reply } => {
                        batch_events += drafts.len();
                        batches.push((drafts, reply));
                    }
                    WriteCommand::ApplyRemote { events, reply } => {
                        let started = std::time::Instant::now();
                        let applied = self.apply_remote(events);
                        record_commit(CommitKind::Replica, started);
                        self.fence.set_held(self.position.get(&self.origin));
                        let _ = reply.send(self.outcome("storing replicated events", applied));
                    }
                    WriteCommand::Close { reply } => close = Some(reply),
                    WriteCommand::Probe { reply } => {
                        let _ = reply.send(self.probe());
                    }
                    WriteCommand::Tick => {}
                    WriteCommand::MergeSnapshot { part, reply } => {
                        let merged = self.merge_snapshot(part);
                        let _ = reply.send(self.outcome("merging a snapshot part", merged));
                    }
                    WriteCommand::FinishSnapshot { end, reply } => {
                        let finished = self.finish_snapshot(end);
                        self.fence.set_held(self.position.get(&self.origin));
                        let _ = reply.send(self.outcome("finishing a snapshot", finished));
                    }
                }
                if close.is_none() && batched < self.max_batch && batch_events < MAX_BATCH_EVENTS {
                    next = commands.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                self.commit_appends(appends);
            }
            if !batches.is_empty() {
                self.commit_batches(batches);
            }
            if close.is_none() {
                self.housekeeping();
            }
            if let Some(reply) = close {
                if let Err(error) = self
                    .connection
                    .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                {
                    tracing::warn!(%error, "store checkpoint at close failed");
                }
                let _ = reply.send(());
                return;
            }
        }
    }

    /// A bounded pruning step when one is due, and now and then retiring origins and
    /// collecting tombstones; a failure is logged and retried at the next step.
    ///
    /// None of it needs an fsync of its own: what an OS crash undoes of it is done again, and
    /// the next fsynced commit makes it durable, in order.
    fn housekeeping(&mut self) {
        let prune = self.pruner.due();
        let retire = self.last_retire.elapsed() >= RETIRE_EVERY;
        if !prune && !retire && !self.pruner.release_due() {
            return;
        }
        if let Err(error) = self.use_sync(SyncMode::Normal) {
            tracing::warn!(%error, "setting the housekeeping durability failed");
            return;
        }
        if prune {
            let now = Hlc::from_parts(wall_millis(), 0);
            if let Err(error) = self.pruner.step(&mut self.connection, &self.position, now) {
                self.reload_pruner_totals();
                if !error.is_full() {
                    tracing::warn!(%error, "pruning the log failed");
                }
            }
        }
        if self.pruner.release_due() {
            if let Err(error) = self.pruner.release_free_pages(&self.connection) {
                tracing::debug!(%error, "releasing free pages failed");
            }
        }
        if retire {
            self.last_retire = std::time::Instant::now();
            // While the disk is full these fail too; the publishes say so.
            if let Err(error) = self.retire_idle_origins() {
                if !error.is_full() {
                    tracing::warn!(%error, "retiring idle origins failed");
                }
            }
            if let Err(error) = self.collect_tombstones() {
                if !error.is_full() {
                    tracing::warn!(%error, "collecting comment tombstones failed");
                }
            }
        }
    }

    /// Origins brought back in a committed transaction: no longer retired, and the hub
    /// resumes them (before any of their events reach it).
    fn note_revived(&self, revived: Vec<(NodeId, u64)>) {
        if revived.is_empty() {
            return;
        }
        for (origin, _) in &revived {
            self.retired.revived(origin);
        }
        self.sink.origins_changed(&[], &revived);
    }

    /// Collects deleted comments every live node holds the creation and deletion of (and
    /// forgets collected ones after [`retire::RETIRED_KEPT`]), and the acknowledgements and
    /// broadcasts superseded for good.
    fn collect_tombstones(&mut self) -> Result<(), StoreError> {
        let tx = WriteTx::begin(&self.connection)?;
        let position = &self.position;
        let horizon = self.pruner.horizon();
        let held = |origin: &str, seq: u64| {
            NodeId::new(origin)
                .is_ok_and(|origin| position.covers(&origin, seq) && horizon.allows(&origin, seq))
        };
        let collected = comments::collect_tombstones(&tx, held, TOMBSTONES_PER_STEP)?;
        let superseded =
            broadcasts::collect_superseded(&tx, held, wall_millis(), TOMBSTONES_PER_STEP)?;
        let kept = Hlc::from_parts(
            wall_millis().saturating_sub(retire::RETIRED_KEPT.as_millis() as u64),
            0,
        );
        comments::forget_collected(&tx, kept.0 as i64)?;
        tx.commit()?;
        if collected + superseded > 0 {
            metrics::counter!("herald_tombstones_collected_total")
                .increment((collected + superseded) as u64);
        }
        Ok(())
    }

    fn retire_idle_origins(&mut self) -> Result<(), StoreError> {
        let tx = WriteTx::begin(&self.connection)?;
        let retirement = retire::retire_idle(&tx, &self.origin, &self.live_origins, wall_millis())?;
        tx.commit()?;
        self.retired.apply(&retirement);
        if retirement.retired.is_empty() && retirement.revived.is_empty() {
            return Ok(());
        }
        self.held_back.forget_all();
        let origins: Vec<NodeId> = retirement.retired.iter().map(|(o, _)| o.clone()).collect();
        for origin in &origins {
            self.position.remove(origin);
        }
        for (origin, seq) in &retirement.revived {
            self.position.advance(origin, *seq);
        }
        if !origins.is_empty() {
            tracing::info!(
                ?origins,
                "retired origins no live member publishes under and with no events left"
            );
            metrics::counter!("herald_origins_retired_total").increment(origins.len() as u64);
        }
        self.sink.origins_changed(&origins, &retirement.revived);
        Ok(())
    }

    /// Commits a small write (the time, in `meta`): a store that cannot write, a full disk
    /// included, answers false. Beginning a transaction is not enough, as SQLite touches the
    /// disk only at the commit.
    fn probe(&mut self) -> bool {
        let written = self.write_probe();
        self.outcome("the write probe", written).is_ok()
    }

    fn write_probe(&mut self) -> Result<(), StoreError> {
        let tx = WriteTx::begin(&self.connection)?;
        tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('probe', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?
        .execute([wall_millis().to_string()])?;
        tx.commit()?;
        Ok(())
    }

    /// Books the outcome of a write: a failure is classified (a full disk becomes
    /// [`StoreError::Full`]), counted and logged once per run of failures, and the pruner's
    /// totals are read back from what the rollback left; a success ends a run of failures.
    fn outcome<T>(&mut self, what: &str, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        failing_for = ?since.elapsed(),
                        "the store is writable again"
                    );
                    metrics::gauge!("herald_store_full").set(0.0);
                }
                Ok(value)
            }
            Err(error) => {
                let error = error.classified();
                self.reload_pruner_totals();
                metrics::counter!("herald_store_write_failures_total").increment(1);
                if error.is_full() {
                    metrics::gauge!("herald_store_full").set(1.0);
                }
                if self.failing_since.is_none() {
                    self.failing_since = Some(std::time::Instant::now());
                    tracing::error!(%error, "{what} failed; the store retries with the next write");
                } else {
                    tracing::debug!(%error, "{what} failed");
                }
                Err(error)
            }
        }
    }

    /// Makes the next commits reach the disk as `mode` says (a no-op when they already do).
    fn use_sync(&mut self, mode: SyncMode) -> Result<(), StoreError> {
        if self.current_sync != mode {
            schema::set_synchronous(&self.connection, mode)?;
            self.current_sync = mode;
        }
        Ok(())
    }

    /// After a rollback: the pruner counted events that were not stored.
    fn reload_pruner_totals(&mut self) {
        if let Err(error) = self.pruner.reload_totals(&self.connection) {
            tracing::debug!(%error, "reading the log totals back failed");
        }
    }

    fn commit_appends(&mut self, appends: Vec<PendingAppend>) {
        if let Err(fenced) = self.fence.check() {
            metrics::counter!("herald_store_own_fence_refusals_total")
                .increment(appends.len() as u64);
            for (_, reply) in appends {
                let _ = reply.send(Err(StoreError::CatchingUp(fenced)));
            }
            return;
        }
        let started = std::time::Instant::now();
        let written = self.write_own_events(&appends);
        record_commit(CommitKind::Own, started);
        match self.outcome("committing published events", written) {
            Ok(events) => {
                if let Some(last) = events.last() {
                    // Before peers can hear of it: a peer's report never outruns `held`.
                    self.fence.set_held(last.seq);
                }
                self.sink.committed(&events);
                metrics::counter!("herald_store_commits_total").increment(1);
                metrics::counter!("herald_store_events_appended_total")
                    .increment(events.len() as u64);
                for ((_, reply), event) in appends.into_iter().zip(events) {
                    self.position.advance(&event.origin, event.seq);
                    let position = self.position.clone();
                    let _ = reply.send(Ok(Appended { event, position }));
                }
            }
            Err(error) => {
                metrics::counter!("herald_store_commit_failures_total").increment(1);
                for (_, reply) in appends {
                    let _ = reply.send(Err(error.for_waiter()));
                }
            }
        }
    }

    fn write_own_events(
        &mut self,
        appends: &[PendingAppend],
    ) -> Result<Vec<SharedEvent>, StoreError> {
        self.use_sync(self.durability.own)?;
        let tx = WriteTx::begin(&self.connection)?;
        let mut events = Vec::with_capacity(appends.len());
        let mut seq = self.position.get(&self.origin);
        for (draft, _) in appends {
            seq += 1;
            let event = Self::own_event(&self.origin, &self.clock, draft, seq);
            log::insert_event(&tx, &event)?;
            materialize::apply(&tx, &event)?;
            events.push(Arc::new(event));
        }
        self.pruner
            .note_inserted(&tx, events.iter().map(|e| e.as_ref()))?;
        if let Some(last) = events.last() {
            log::set_position(&tx, &self.origin, seq, last.hlc)?;
        }
        tx.commit()?;
        Ok(events)
    }

    /// This node's (`origin`'s) event `seq` made of `draft`, stamped now.
    fn own_event(origin: &NodeId, clock: &HybridClock, draft: &EventDraft, seq: u64) -> Event {
        Event {
            origin: origin.clone(),
            seq,
            id: Uuid::new_v4(),
            hlc: clock.now(),
            channel: draft.channel.clone(),
            kind: draft.kind.clone(),
            payload: draft.payload.clone(),
            users: draft.users.clone(),
            ephemeral: false,
            idempotency_key: draft.idempotency_key.clone(),
        }
    }

    /// Stores events from other nodes (idempotent), then hands on what became contiguous.
    ///
    /// An event with the next seq of an origin known to hold nothing above its position is
    /// contiguous as it comes (see [`HeldBack`]); only the other origins are walked in the log.
    /// The commit reaches the disk as [`Durability::replica`] says.
    fn apply_remote(&mut self, events: Vec<SharedEvent>) -> Result<Applied, StoreError> {
        self.use_sync(self.durability.replica)?;
        let tx = WriteTx::begin(&self.connection)?;
        let mut inserted = 0;
        let mut walk: BTreeSet<NodeId> = BTreeSet::new();
        let mut in_order: Vec<SharedEvent> = Vec::new();
        let mut reached: Vec<(NodeId, u64, Hlc)> = Vec::new();
        let mut new_events: Vec<&Event> = Vec::new();
        let mut position = self.position.clone();
        let mut revived = Vec::new();
        for event in &events {
            if !admits(&tx, &self.retired, event, &mut position, &mut revived)? {
                if event.origin == self.origin {
                    note_own_seq_conflict(&tx, event)?;
                }
                continue;
            }
            if !log::insert_event(&tx, event)? {
                // Already stored above the position: held back behind a gap.
                walk.insert(event.origin.clone());
                continue;
            }
            materialize::apply(&tx, event)?;
            self.clock.observe(event.hlc);
            inserted += 1;
            new_events.push(event);
            let next = position.get(&event.origin) + 1;
            let revived_now = revived.iter().any(|(origin, _)| origin == &event.origin);
            if event.seq == next
                && !revived_now
                && !walk.contains(&event.origin)
                && self.held_back.is_clean(&event.origin)
            {
                position.advance(&event.origin, event.seq);
                in_order.push(Arc::clone(event));
                match reached
                    .iter_mut()
                    .find(|(origin, _, _)| origin == &event.origin)
                {
                    Some(entry) => (entry.1, entry.2) = (event.seq, event.hlc),
                    None => reached.push((event.origin.clone(), event.seq, event.hlc)),
                }
            } else {
                walk.insert(event.origin.clone());
            }
        }
        self.pruner.note_inserted(&tx, new_events)?;
        for (origin, seq, stamp) in &reached {
            log::set_position(&tx, origin, *seq, *stamp)?;
        }
        let (walked, gaps) = advance_contiguous(&tx, &walk, &mut position)?;
        tx.commit()?;
        metrics::counter!("herald_store_replica_commits_total", "sync" => self.durability.replica.label())
            .increment(1);
        self.position = position;
        for origin in &walk {
            let gap_left = gaps.iter().any(|(gapped, _, _)| gapped == origin);
            self.held_back.walked(origin, gap_left);
        }
        if !revived.is_empty() {
            self.held_back.forget_all();
        }
        self.note_revived(revived);
        let mut contiguous = in_order;
        contiguous.extend(walked);
        if !contiguous.is_empty() {
            self.sink.committed(&contiguous);
        }
        metrics::counter!("herald_store_events_replicated_total").increment(inserted as u64);
        Ok(Applied {
            inserted,
            position: self.position.clone(),
            gaps,
        })
    }
}

/// Which write transaction `herald_store_commit_duration_seconds` timed.
#[derive(Clone, Copy)]
pub(super) enum CommitKind {
    /// This node's own events (publishes, batches).
    Own,
    /// Events from peers.
    Replica,
}

/// Records how long a write transaction took, from its start to its commit (fsync included).
pub(super) fn record_commit(kind: CommitKind, started: std::time::Instant) {
    use crate::telemetry::catalog::STORE_COMMIT_DURATION;
    let seconds = started.elapsed().as_secs_f64();
    match kind {
        CommitKind::Own => metrics::histogram!(STORE_COMMIT_DURATION, "kind" => "own"),
        CommitKind::Replica => metrics::histogram!(STORE_COMMIT_DURATION, "kind" => "replica"),
    }
    .record(seconds);
}

impl WriterThread {
    fn merge_snapshot(&mut self, part: SnapshotPart) -> Result<(), StoreError> {
        // The events merged here are held back until the snapshot ends.
        self.held_back.forget_all();
        self.use_sync(self.durability.replica)?;
        let tx = WriteTx::begin(&self.connection)?;
        snapshot::merge_state(&tx, &part)?;
        if let SnapshotPart::Floors(rows) = &part {
            for (channel, origin, seq) in rows {
                self.pruner.drop_through_floor(&tx, channel, origin, *seq)?;
            }
        }
        if let Some(events) = snapshot::events_of(&part) {
            let mut new_events = Vec::new();
            for event in events {
                if event.ephemeral
                    || event.seq == 0
                    || self.position.covers(&event.origin, event.seq)
                {
                    continue;
                }
                // A retired origin's event at or below its retired seq is old news.
                if self
                    .retired
                    .retired_at(&event.origin)
                    .is_some_and(|at| event.seq <= at)
                {
                    continue;
                }
                // Stored only: the state parts already carry what these events changed.
                if log::insert_event(&tx, event)? {
                    self.clock.observe(event.hlc);
                    new_events.push(event);
                }
            }
            self.pruner.note_inserted(&tx, new_events)?;
        }
        tx.commit()?;
        metrics::counter!("herald_snapshot_parts_merged_total").increment(1);
        Ok(())
    }

    fn finish_snapshot(&mut self, end: SnapshotEnd) -> Result<Applied, StoreError> {
        self.held_back.forget_all();
        self.use_sync(self.durability.replica)?;
        let tx = WriteTx::begin(&self.connection)?;
        let stamps: std::collections::HashMap<NodeId, u64> = end.upto_hlc.into_iter().collect();
        let mut position = self.position.clone();
        let mut jumped = false;
        let mut revived = Vec::new();
        for (origin, seq) in end.upto.iter() {
            if let Some(at) = self.retired.retired_at(origin) {
                if seq <= at {
                    continue;
                }
                retire::revive(&tx, origin, at)?;
                position.advance(origin, at);
                revived.push((origin.clone(), at));
            }
            if seq > position.get(origin) {
                let stamp = Hlc(stamps.get(origin).copied().unwrap_or(0));
                log::set_position(&tx, origin, seq, stamp)?;
                self.clock.observe(stamp);
                position.advance(origin, seq);
                jumped = true;
            }
        }
        for (origin, seq) in end.pruned.iter() {
            tx.prepare_cached(
                "UPDATE log_positions SET pruned = max(pruned, ?2) WHERE origin = ?1",
            )?
            .execute(rusqlite::params![origin.as_str(), seq as i64])?;
        }
        // The hub jumps to the snapshot's position; what was held back above it follows as
        // events, in order.
        let jumped_to = position.clone();
        let origins: BTreeSet<NodeId> = end.upto.iter().map(|(o, _)| o.clone()).collect();
        let (contiguous, gaps) = advance_contiguous(&tx, &origins, &mut position)?;
        tx.commit()?;
        self.position = position;
        self.note_revived(revived);
        if jumped {
            self.sink.jumped(&jumped_to);
        }
        if !contiguous.is_empty() {
            self.sink.committed(&contiguous);
        }
        Ok(Applied {
            inserted: 0,
            position: self.position.clone(),
            gaps,
        })
    }
}

/// Walks each origin's events stored right after its position, raising the position over
/// those present without a gap. Answers them (to hand on) and the gaps left:
/// `(origin, first missing seq, highest held)`.
#[allow(clippy::type_complexity)]
fn advance_contiguous(
    tx: &Connection,
    origins: &BTreeSet<NodeId>,
    position: &mut VersionVector,
) -> Result<(Vec<SharedEvent>, Vec<(NodeId, u64, u64)>), StoreError> {
    let mut contiguous = Vec::new();
    let mut gaps = Vec::new();
    for origin in origins {
        let before = position.get(origin);
        let walked = log::contiguous_after(tx, origin, before, CONTIGUOUS_WALK_PAGE)?;
        let reached = walked.reached;
        if reached > before {
            log::set_position(tx, origin, reached, walked.stamp.unwrap_or(Hlc(0)))?;
            position.advance(origin, reached);
        }
        contiguous.extend(walked.events.into_iter().map(Arc::new));
        if let Some(highest) = log::highest_seq(tx, origin)? {
            if highest > reached {
                gaps.push((origin.clone(), reached + 1, highest));
            }
        }
    }
    Ok((contiguous, gaps))
}

/// Whether a stored event of another node is new here: not covered by `position` and not of a
/// retired origin at or below its retired seq. An event above that brings the origin back
/// (noted in `revived`; the caller forgets the retirement once the transaction commits).
fn admits(
    tx: &Connection,
    retired: &RetiredOrigins,
    event: &Event,
    position: &mut VersionVector,
    revived: &mut Vec<(NodeId, u64)>,
) -> Result<bool, StoreError> {
    if event.ephemeral || event.seq == 0 {
        return Ok(false);
    }
    if !revived.iter().any(|(origin, _)| origin == &event.origin) {
        if let Some(at) = retired.retired_at(&event.origin) {
            if event.seq <= at {
                return Ok(false);
            }
            retire::revive(tx, &event.origin, at)?;
            position.advance(&event.origin, at);
            revived.push((event.origin.clone(), at));
        }
    }
    Ok(!position.covers(&event.origin, event.seq))
}

/// Logs and counts a peer's event of this node's origin that differs from the one held under
/// its seq: the divergence the own-seq fence (`own_fence`) exists to prevent, which can still
/// happen when a node numbered events while no peer that held more of its origin was
/// reachable. Both events stay where they are; the operator is told.
fn note_own_seq_conflict(tx: &Connection, event: &Event) -> Result<(), StoreError> {
    let held = log::id_at(tx, &event.origin, event.seq)?;
    if let Some(held) = held.filter(|held| *held != event.id) {
        metrics::counter!("herald_store_own_seq_conflicts_total").increment(1);
        tracing::error!(
            origin = %event.origin,
            seq = event.seq,
            held = %held,
            peer_event = %event.id,
            "a peer holds another event under one of this node's seqs: this database was behind what the cluster held of it (a restored backup, or a lost disk tail) while no peer that held more was reachable; the two events stay on their sides"
        );
    }
    Ok(())
}

fn wall_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
