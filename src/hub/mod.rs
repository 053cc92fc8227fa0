//! The hub: this node's registry of WebSocket subscriptions, and server-side routing.
//!
//! It owns which connection listens to which channels (exact names, or name prefixes such as
//! `forum:thread:`), which users are connected, and the node's delivered version vector: the
//! position, per origin, of the last event handed to local subscribers. Events arrive from the
//! store's commit sink in per-origin seq order without gaps; each is rendered to client JSON
//! once per node (with its `channel` and `cursor`) and offered to each matching connection's
//! bounded queue. A connection whose queue is full is dropped from the registry and told to
//! close with 1013: the hub never blocks and never buffers without bound.
//!
//! The hub must not touch sockets or the store. Its lock is a plain mutex held only for
//! in-memory work, never across an `.await`.

pub mod interest;
mod registry;
mod render;
mod subscription;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::event::{SharedEvent, VersionVector};

pub use render::render_event;
pub use subscription::{CloseReason, CloseSignal, Delivery, Subscription, SubscriptionSpec};

use registry::Registry;

/// Counts of what this node holds, for stats and gossip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HubCounts {
    pub connections: usize,
    pub users: usize,
}

pub struct Hub {
    registry: Mutex<Registry>,
    /// Channels with local subscribers, for the backplane (its own lock, off the delivery path).
    interest: interest::LocalInterest,
    queue_capacity: usize,
    next_connection_id: AtomicU64,
}

impl Hub {
    /// `delivered` is the log position already handed out: on start-up, what the store holds.
    pub fn new(delivered: VersionVector, queue_capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            registry: Mutex::new(Registry::new(delivered)),
            interest: interest::LocalInterest::default(),
            queue_capacity: queue_capacity.max(1),
            next_connection_id: AtomicU64::new(1),
        })
    }

    /// Registers a connection. Events dispatched after this call reach its queue; the returned
    /// subscription also says what had been delivered before it, so a resume can replay exactly
    /// the events in between from the store.
    pub fn subscribe(self: &Arc<Self>, spec: SubscriptionSpec) -> Subscription {
        let id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (queue, deliveries) = tokio::sync::mpsc::channel(self.queue_capacity);
        let close_signal = Arc::new(CloseSignal::default());
        let delivered_before = self
            .lock()
            .insert(id, &spec, queue, Arc::clone(&close_signal));
        self.interest.add(&spec);
        Subscription::new(
            id,
            spec,
            deliveries,
            close_signal,
            delivered_before,
            Arc::clone(self),
        )
    }

    pub(crate) fn unsubscribe(&self, id: u64, spec: &SubscriptionSpec) {
        self.lock().remove(id, spec);
        self.interest.remove(spec);
    }

    /// Which channels have local subscribers, and what changed (see [`interest`]).
    pub fn interest(&self) -> &interest::LocalInterest {
        &self.interest
    }

    /// Hands events, in log order, to every matching local subscription.
    pub fn dispatch(&self, events: &[SharedEvent]) {
        let outcome = self.lock().dispatch(events);
        if outcome.delivered > 0 {
            metrics::counter!("herald_deliveries_total").increment(outcome.delivered);
        }
        if outcome.overflowed > 0 {
            metrics::counter!("herald_slow_client_disconnects_total").increment(outcome.overflowed);
        }
    }

    /// Skips past `position` (see the store's snapshots): every connection is closed with 1012
    /// so that its client resumes and learns what it lost.
    pub fn jump(&self, position: &VersionVector) {
        if self.lock().jump(position) {
            tracing::info!("delivered position raised past pruned history; clients told to resume");
        }
    }

    /// Drops retired origins from the delivered vector (so from every cursor rendered after),
    /// and puts back revived ones at the seq they resume from.
    pub fn origins_changed(
        &self,
        retired: &[crate::event::NodeId],
        revived: &[(crate::event::NodeId, u64)],
    ) {
        self.lock().origins_changed(retired, revived);
    }

    pub fn delivered(&self) -> VersionVector {
        self.lock().delivered().clone()
    }

    pub fn counts(&self) -> HubCounts {
        self.lock().counts()
    }

    /// Connections subscribed to `channel` (exactly or by prefix).
    pub fn channel_connections(&self, channel: &str) -> usize {
        self.lock().channel_connections(channel)
    }

    /// Distinct users with a connection subscribed to `channel`.
    pub fn channel_users(&self, channel: &str) -> usize {
        self.lock().channel_users(channel)
    }

    /// Tells every connection to close (shutdown): each one's close_signal signal fires with the
    /// given reason.
    pub fn close_all(&self, reason: CloseReason) {
        self.lock().close_all(reason);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
