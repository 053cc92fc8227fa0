//! Append-many on the writer thread: the events of one batch (`POST /api/batch`, a publish to
//! several channels) are stored in one transaction, all of them or none.
//!
//! Batches that arrive together share one transaction (group commit, like single appends), but
//! each stands or falls alone on its idempotency keys: before anything of a batch is inserted,
//! each key is looked up on its channel. A key that names an event held already answers that
//! event (`replayed`: nothing new is published for it); one that names an event with another
//! type, payload or target users, or that appears twice in the batch, refuses the whole batch
//! with [`StoreError::IdempotencyConflict`] and stores none of it, while the other batches of
//! the transaction go on. The lookup runs inside the transaction, so it also sees what earlier
//! batches of the same transaction inserted: two concurrent retries on one node publish once.
//!
//! A new keyed event also keeps the position it is answered with (`answered_at`), so that a
//! retry on this node answers the same cursor as the first time; elsewhere a retry answers
//! that node's position, which covers the event too.
//!
//! A write failure (a full disk) rolls the transaction back and answers every batch in it with
//! the error, as for single appends.

use std::collections::HashSet;
use std::sync::Arc;

use super::{BatchAppended, PendingBatch, WriterThread};
use crate::event::{ChannelName, Event, EventDraft, IdempotencyKey, SharedEvent, VersionVector};
use crate::store::write_tx::WriteTx;
use crate::store::{StoreError, log, materialize};

/// What one batch of the transaction became: per draft, the new event's index in the
/// transaction's new events, or the event its key named already.
enum Slot {
    New(usize),
    /// The event, and the position this node first answered it with (if it took it).
    Replayed(SharedEvent, Option<VersionVector>),
}

impl WriterThread {
    pub(in crate::store) fn commit_batches(&mut self, batches: Vec<PendingBatch>) {
        if let Err(fenced) = self.fence.check() {
            metrics::counter!("herald_store_own_fence_refusals_total")
                .increment(batches.len() as u64);
            for (_, reply) in batches {
                let _ = reply.send(Err(StoreError::CatchingUp(fenced)));
            }
            return;
        }
        let started = std::time::Instant::now();
        let written = self.write_batches(&batches);
        super::record_commit(super::CommitKind::Own, started);
        match self.outcome("committing published batches", written) {
            Ok((events, outcomes)) => {
                if let Some(last) = events.last() {
                    // Before peers can hear of it: a peer's report never outruns `held`.
                    self.fence.set_held(last.seq);
                }
                if !events.is_empty() {
                    self.sink.committed(&events);
                    metrics::counter!("herald_store_commits_total").increment(1);
                    metrics::counter!("herald_store_events_appended_total")
                        .increment(events.len() as u64);
                }
                for ((_, reply), outcome) in batches.into_iter().zip(outcomes) {
                    let answer = outcome.map(|slots| {
                        slots
                            .into_iter()
                            .map(|slot| match slot {
                                Slot::New(index) => {
                                    let event = Arc::clone(&events[index]);
                                    self.position.advance(&event.origin, event.seq);
                                    BatchAppended {
                                        event,
                                        position: self.position.clone(),
                                        replayed: false,
                                    }
                                }
                                Slot::Replayed(event, answered) => BatchAppended {
                                    event,
                                    position: answered.unwrap_or_else(|| self.position.clone()),
                                    replayed: true,
                                },
                            })
                            .collect()
                    });
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                metrics::counter!("herald_store_commit_failures_total").increment(1);
                for (_, reply) in batches {
                    let _ = reply.send(Err(error.for_waiter()));
                }
            }
        }
    }

    /// Inserts every batch that passes its key checks, in one transaction. Answers the new
    /// events in log order and, per batch, its slots or why it was refused.
    #[allow(clippy::type_complexity)]
    fn write_batches(
        &mut self,
        batches: &[PendingBatch],
    ) -> Result<(Vec<SharedEvent>, Vec<Result<Vec<Slot>, StoreError>>), StoreError> {
        // Acknowledged like single appends: as durable as the node's own commits.
        self.use_sync(self.durability.own)?;
        let tx = WriteTx::begin(&self.connection)?;
        let mut events: Vec<SharedEvent> = Vec::new();
        let mut outcomes = Vec::with_capacity(batches.len());
        let mut seq = self.position.get(&self.origin);
        for (drafts, _) in batches {
            let held = match held_events(&tx, drafts)? {
                Ok(held) => held,
                Err(conflict) => {
                    outcomes.push(Err(conflict));
                    continue;
                }
            };
            let mut slots = Vec::with_capacity(drafts.len());
            for (draft, held) in drafts.iter().zip(held) {
                if let Some(event) = held {
                    let answered = log::answered_at(&tx, &event.origin, event.seq)?;
                    slots.push(Slot::Replayed(Arc::new(event), answered));
                    continue;
                }
                seq += 1;
                let event = Self::own_event(&self.origin, &self.clock, draft, seq);
                log::insert_event(&tx, &event)?;
                if event.idempotency_key.is_some() {
                    // What `commit_batches` answers: the position once this event is in.
                    let mut answered = self.position.clone();
                    answered.advance(&self.origin, seq);
                    log::set_answered_at(&tx, &self.origin, seq, &answered)?;
                }
                materialize::apply(&tx, &event)?;
                slots.push(Slot::New(events.len()));
                events.push(Arc::new(event));
            }
            outcomes.push(Ok(slots));
        }
        self.pruner
            .note_inserted(&tx, events.iter().map(|e| e.as_ref()))?;
        if let Some(last) = events.last() {
            log::set_position(&tx, &self.origin, seq, last.hlc)?;
        }
        tx.commit()?;
        Ok((events, outcomes))
    }
}

/// Per draft of a batch, the event its idempotency key names already (if any); or the
/// conflict that refuses the batch.
#[allow(clippy::type_complexity)]
fn held_events(
    tx: &rusqlite::Connection,
    drafts: &[EventDraft],
) -> Result<Result<Vec<Option<Event>>, StoreError>, StoreError> {
    let mut seen: HashSet<(&ChannelName, &IdempotencyKey)> = HashSet::new();
    let mut held = Vec::with_capacity(drafts.len());
    for (index, draft) in drafts.iter().enumerate() {
        let Some(key) = &draft.idempotency_key else {
            held.push(None);
            continue;
        };
        if !seen.insert((&draft.channel, key)) {
            return Ok(Err(StoreError::IdempotencyConflict {
                index,
                key: key.to_string(),
                existing: None,
            }));
        }
        let found = log::by_idempotency_key(tx, &draft.channel, key)?;
        if let Some(event) = &found {
            let same = event.kind == draft.kind
                && event.payload == draft.payload
                && event.users == draft.users;
            if !same {
                return Ok(Err(StoreError::IdempotencyConflict {
                    index,
                    key: key.to_string(),
                    existing: Some(event.id),
                }));
            }
        }
        held.push(found);
    }
    Ok(Ok(held))
}
