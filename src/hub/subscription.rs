//! One connection's subscription: what it listens to, its bounded queue, and its close
//! signal. Dropping the [`Subscription`] removes it from the hub.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc};

use super::Hub;
use crate::event::{ChannelName, NodeId, VersionVector};

/// What a connection listens to.
#[derive(Clone, Debug)]
pub struct SubscriptionSpec {
    pub user_id: Arc<str>,
    pub channels: Vec<ChannelName>,
    /// Channel-name prefixes (for example `forum:thread:`), matched by `starts_with`.
    pub prefixes: Vec<String>,
}

impl SubscriptionSpec {
    /// `user_id`'s subscription to exact `channels` and channel-name `prefixes`.
    pub fn new(user_id: &str, channels: Vec<ChannelName>, prefixes: Vec<String>) -> Self {
        Self {
            user_id: user_id.into(),
            channels,
            prefixes,
        }
    }

    pub fn matches(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c.as_str() == channel)
            || self
                .prefixes
                .iter()
                .any(|p| channel.starts_with(p.as_str()))
    }
}

/// One event rendered for clients, shared by every local recipient.
#[derive(Debug)]
pub struct Delivery {
    pub origin: NodeId,
    /// 0 for ephemeral events.
    pub seq: u64,
    /// The node's delivered vector after this event: the cursor inside `text`.
    pub cursor: VersionVector,
    pub text: Utf8Bytes,
    /// The event's hybrid-clock milliseconds (0 for ephemeral events), for the delivery lag.
    pub stamp_ms: u64,
}

/// Why the hub wants a connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    None = 0,
    /// The connection's queue was full: a slow client (close code 1013).
    SlowClient = 1,
    /// The node is shutting down (close code 1001).
    Shutdown = 2,
    /// The node is leaving the cluster: reconnect elsewhere (close code 1012).
    Leaving = 3,
    /// The node skipped history it could not get (it caught up from a snapshot): resume with
    /// the cursor, and learn what was lost (close code 1012).
    Resync = 4,
    /// The client answered nothing, not even the protocol ping, for two heartbeat intervals:
    /// its TCP connection is presumably dead (close code 1001, if it still gets through).
    Unresponsive = 5,
}

/// Raised by the hub (or the connection's reader), awaited by the connection's writer.
#[derive(Debug, Default)]
pub struct CloseSignal {
    reason: AtomicU8,
    notify: Notify,
}

impl CloseSignal {
    /// Asks the connection's writer to close; the first reason raised wins.
    pub fn raise(&self, reason: CloseReason) {
        let _ = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.notify.notify_one();
    }

    /// Waits until the hub asks for the connection to close, and says why.
    pub async fn raised(&self) -> CloseReason {
        loop {
            match self.reason.load(Ordering::Acquire) {
                1 => return CloseReason::SlowClient,
                2 => return CloseReason::Shutdown,
                3 => return CloseReason::Leaving,
                4 => return CloseReason::Resync,
                5 => return CloseReason::Unresponsive,
                _ => self.notify.notified().await,
            }
        }
    }
}

/// A registered connection. Receive deliveries from `deliveries`; drop to unsubscribe.
pub struct Subscription {
    pub id: u64,
    pub deliveries: mpsc::Receiver<Arc<Delivery>>,
    pub close_signal: Arc<CloseSignal>,
    /// The hub's delivered vector at registration: events above it arrive on `deliveries`.
    pub delivered_before: VersionVector,
    spec: SubscriptionSpec,
    hub: Arc<Hub>,
}

impl Subscription {
    pub(super) fn new(
        id: u64,
        spec: SubscriptionSpec,
        deliveries: mpsc::Receiver<Arc<Delivery>>,
        close_signal: Arc<CloseSignal>,
        delivered_before: VersionVector,
        hub: Arc<Hub>,
    ) -> Self {
        Self {
            id,
            deliveries,
            close_signal,
            delivered_before,
            spec,
            hub,
        }
    }

    pub fn spec(&self) -> &SubscriptionSpec {
        &self.spec
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id, &self.spec);
    }
}
