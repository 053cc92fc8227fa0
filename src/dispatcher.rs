//! The dispatcher: the task that hands each committed batch, in commit order, to local
//! subscribers (the [`Hub`]) and then to the other nodes (the [`Backplane`]).
//!
//! The store's writer thread gives it batches through a [`CommitForwarder`] (its commit sink)
//! and a bounded queue; the writer waits when the queue is full, so nothing committed is ever
//! dropped between the log and the deliveries.
//!
//! One fault hook lives here, for `herald chaos`'s self-test: with
//! [`DispatchFaults::skip_delivery`] set (`herald serve --fault-skip-delivery N`, hidden), the
//! Nth committed event is silently left out of local delivery, a loss the checker must find.

use std::sync::Arc;

use crate::backplane::Backplane;
use crate::event::{ChannelName, Event, SharedEvent, VersionVector};
use crate::hub::Hub;
use crate::store::CommitSink;

/// `events` with event `index` moved to a channel nobody can subscribe to: the hub counts it
/// as delivered (no gap is held open), yet no subscriber receives it. A silent loss, on
/// purpose.
fn without_subscribers(events: &[SharedEvent], index: usize) -> Vec<SharedEvent> {
    let mut events = events.to_vec();
    let lost = &events[index];
    tracing::warn!(origin = %lost.origin, seq = lost.seq,
        "fault hook: the local delivery of a committed event is skipped");
    let mut void = Event::clone(lost);
    void.channel = ChannelName::new(VOID_CHANNEL).unwrap_or_else(|_| lost.channel.clone());
    events[index] = Arc::new(void);
    events
}

/// Where [`without_subscribers`] moves an event: an internal name no client may subscribe to.
const VOID_CHANNEL: &str = "herald:fault-void";

/// Faults the dispatcher injects on purpose (all off by default).
#[derive(Clone, Copy, Debug, Default)]
pub struct DispatchFaults {
    /// The 1-based count of the committed event whose local delivery is skipped.
    pub skip_delivery: Option<u64>,
}

/// Committed batches waiting for the dispatcher; the writer thread waits when it is full.
pub const DISPATCH_QUEUE_BATCHES: usize = 1024;

/// The store's commit sink: hands each committed batch, in log order, to the dispatcher task.
///
/// The writer thread does not fan out itself: waking a thousand connection tasks from outside
/// the runtime costs a cross-thread unpark each, and would hold up the next group commit. The
/// dispatcher runs on the runtime, so its wake-ups are cheap, and the writer answers publishers
/// as soon as their commit is done.
pub struct CommitForwarder {
    queue: tokio::sync::mpsc::Sender<Dispatch>,
}

/// What the dispatcher hands on, in commit order.
enum Dispatch {
    Events(Vec<SharedEvent>),
    /// The log position jumped past pruned history (a snapshot was merged).
    Jump(VersionVector),
    /// Origins were retired, or came back at a seq.
    Origins {
        retired: Vec<crate::event::NodeId>,
        revived: Vec<(crate::event::NodeId, u64)>,
    },
}

impl CommitSink for CommitForwarder {
    fn committed(&self, events: &[SharedEvent]) {
        if self
            .queue
            .blocking_send(Dispatch::Events(events.to_vec()))
            .is_err()
        {
            tracing::warn!(
                events = events.len(),
                "dispatcher stopped; committed events not delivered live"
            );
        }
    }

    fn jumped(&self, position: &VersionVector) {
        let _ = self.queue.blocking_send(Dispatch::Jump(position.clone()));
    }

    fn origins_changed(
        &self,
        retired: &[crate::event::NodeId],
        revived: &[(crate::event::NodeId, u64)],
    ) {
        let _ = self.queue.blocking_send(Dispatch::Origins {
            retired: retired.to_vec(),
            revived: revived.to_vec(),
        });
    }
}

/// Starts the dispatcher: local subscribers first, then the other nodes, batch by batch in
/// commit order. Answers the sink to give the store.
pub fn start_dispatcher(
    hub: Arc<Hub>,
    backplane: Arc<dyn Backplane>,
    faults: DispatchFaults,
) -> Arc<CommitForwarder> {
    let (queue, mut batches) = tokio::sync::mpsc::channel::<Dispatch>(DISPATCH_QUEUE_BATCHES);
    tokio::spawn(async move {
        let mut committed = 0u64;
        while let Some(dispatch) = batches.recv().await {
            match dispatch {
                Dispatch::Events(events) => {
                    let before = committed;
                    committed += events.len() as u64;
                    match faults
                        .skip_delivery
                        .filter(|&n| n > before && n <= committed)
                    {
                        Some(n) => {
                            hub.dispatch(&without_subscribers(&events, (n - before - 1) as usize))
                        }
                        None => hub.dispatch(&events),
                    }
                    backplane.ship(&events);
                }
                Dispatch::Jump(position) => hub.jump(&position),
                Dispatch::Origins { retired, revived } => hub.origins_changed(&retired, &revived),
            }
        }
    });
    Arc::new(CommitForwarder { queue })
}
