//! The writer thread: the only connection that writes.
//!
//! It drains its queue into batches (group commit), assigns this node's gap-free `seq` and the
//! hybrid-clock timestamp to each appended event, inserts the events and applies them to the
//! materialized state in one transaction, commits, hands the committed events to the sink in
//! log order, and only then answers each caller.

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{CommitSink, StoreError, log, materialize};
use crate::event::{Event, EventDraft, HybridClock, NodeId, SharedEvent, VersionVector};

/// An appended event and the log position right after it: the cursor that covers it.
#[derive(Clone, Debug)]
pub struct Appended {
    pub event: SharedEvent,
    pub position: VersionVector,
}

pub(super) enum WriteCommand {
    Append {
        draft: EventDraft,
        reply: oneshot::Sender<Result<Appended, StoreError>>,
    },
    /// Answer whether a write transaction can begin.
    Probe { reply: oneshot::Sender<bool> },
    /// Commit what is queued before this, checkpoint, and stop.
    Close { reply: oneshot::Sender<()> },
}

pub(super) struct WriterThread {
    connection: Connection,
    node_id: NodeId,
    clock: Arc<HybridClock>,
    sink: Arc<dyn CommitSink>,
    max_batch: usize,
    /// What the log holds: the highest contiguous seq per origin.
    position: VersionVector,
}

type PendingAppend = (EventDraft, oneshot::Sender<Result<Appended, StoreError>>);

impl WriterThread {
    pub(super) fn new(
        connection: Connection,
        node_id: NodeId,
        clock: Arc<HybridClock>,
        sink: Arc<dyn CommitSink>,
        max_batch: usize,
    ) -> Result<Self, StoreError> {
        let position = log::version_vector(&connection)?;
        if let Some(highest) = log::highest_hlc(&connection)? {
            clock.observe(highest);
        }
        Ok(Self {
            connection,
            node_id,
            clock,
            sink,
            max_batch: max_batch.max(1),
            position,
        })
    }

    pub(super) fn run(mut self, mut commands: mpsc::Receiver<WriteCommand>) {
        while let Some(first) = commands.blocking_recv() {
            let mut appends: Vec<PendingAppend> = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    WriteCommand::Append { draft, reply } => appends.push((draft, reply)),
                    WriteCommand::Close { reply } => close = Some(reply),
                    WriteCommand::Probe { reply } => {
                        let _ = reply.send(self.probe());
                    }
                }
                if close.is_none() && appends.len() < self.max_batch {
                    next = commands.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                self.commit_appends(appends);
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

    fn probe(&mut self) -> bool {
        self.connection
            .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .is_ok()
    }

    fn commit_appends(&mut self, appends: Vec<PendingAppend>) {
        let result = self.write_own_events(&appends);
        match result {
            Ok(events) => {
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
                tracing::error!(%error, batch = appends.len(), "store commit failed");
                metrics::counter!("herald_store_commit_failures_total").increment(1);
                let message = error.to_string();
                for (_, reply) in appends {
                    let _ = reply.send(Err(StoreError::Corrupt(message.clone())));
                }
            }
        }
    }

    fn write_own_events(
        &mut self,
        appends: &[PendingAppend],
    ) -> Result<Vec<SharedEvent>, StoreError> {
        let tx = self.connection.transaction()?;
        let mut events = Vec::with_capacity(appends.len());
        let mut seq = self.position.get(&self.node_id);
        for (draft, _) in appends {
            seq += 1;
            let event = Event {
                origin: self.node_id.clone(),
                seq,
                id: Uuid::new_v4(),
                hlc: self.clock.now(),
                channel: draft.channel.clone(),
                kind: draft.kind.clone(),
                payload: draft.payload.clone(),
                users: draft.users.clone(),
                ephemeral: false,
            };
            log::insert_event(&tx, &event)?;
            materialize::apply(&tx, &event)?;
            events.push(Arc::new(event));
        }
        log::set_position(&tx, &self.node_id, seq)?;
        tx.commit()?;
        Ok(events)
    }
}
