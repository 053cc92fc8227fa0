//! The registry behind the hub's mutex: subscribers by channel and by prefix, users, and the
//! delivered version vector.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::HubCounts;
use super::render::render_event;
use super::subscription::{CloseReason, CloseSignal, Delivery, SubscriptionSpec};
use crate::event::{ChannelName, SharedEvent, VersionVector};

#[derive(Clone)]
struct Subscriber {
    id: u64,
    user_id: Arc<str>,
    queue: mpsc::Sender<Arc<Delivery>>,
    close: Arc<CloseSignal>,
}

pub(super) struct Registry {
    delivered: VersionVector,
    by_channel: HashMap<ChannelName, Vec<Subscriber>>,
    by_prefix: Vec<(String, Subscriber)>,
    /// Connections per connected user.
    users: HashMap<Arc<str>, u32>,
    connections: usize,
}

#[derive(Default)]
pub(super) struct DispatchOutcome {
    pub delivered: u64,
    pub overflowed: u64,
}

impl Registry {
    pub(super) fn new(delivered: VersionVector) -> Self {
        Self {
            delivered,
            by_channel: HashMap::new(),
            by_prefix: Vec::new(),
            users: HashMap::new(),
            connections: 0,
        }
    }

    pub(super) fn delivered(&self) -> &VersionVector {
        &self.delivered
    }

    /// Adds a subscriber and answers the delivered vector at this instant.
    pub(super) fn insert(
        &mut self,
        id: u64,
        spec: &SubscriptionSpec,
        queue: mpsc::Sender<Arc<Delivery>>,
        close: Arc<CloseSignal>,
    ) -> VersionVector {
        let subscriber = Subscriber {
            id,
            user_id: Arc::clone(&spec.user_id),
            queue,
            close,
        };
        for channel in exact_channels(spec) {
            self.by_channel
                .entry(channel.clone())
                .or_default()
                .push(subscriber.clone());
        }
        for prefix in &spec.prefixes {
            self.by_prefix.push((prefix.clone(), subscriber.clone()));
        }
        *self.users.entry(Arc::clone(&spec.user_id)).or_insert(0) += 1;
        self.connections += 1;
        self.delivered.clone()
    }

    pub(super) fn remove(&mut self, id: u64, spec: &SubscriptionSpec) {
        for channel in exact_channels(spec) {
            if let Some(subscribers) = self.by_channel.get_mut(channel) {
                if let Some(index) = subscribers.iter().position(|s| s.id == id) {
                    subscribers.swap_remove(index);
                }
                if subscribers.is_empty() {
                    self.by_channel.remove(channel);
                }
            }
        }
        self.by_prefix.retain(|(_, s)| s.id != id);
        if let Some(count) = self.users.get_mut(&spec.user_id) {
            *count -= 1;
            if *count == 0 {
                self.users.remove(&spec.user_id);
            }
        }
        self.connections = self.connections.saturating_sub(1);
    }

    pub(super) fn dispatch(&mut self, events: &[SharedEvent]) -> DispatchOutcome {
        let mut outcome = DispatchOutcome::default();
        let mut overflowed: Vec<u64> = Vec::new();
        for event in events {
            if !event.ephemeral {
                debug_assert!(
                    event.seq == self.delivered.get(&event.origin) + 1,
                    "hub got {}:{} after {}",
                    event.origin,
                    event.seq,
                    self.delivered.get(&event.origin)
                );
                self.delivered.advance(&event.origin, event.seq);
            }
            if event.channel.is_internal() {
                continue;
            }
            let exact = self
                .by_channel
                .get(&event.channel)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let prefixed = self
                .by_prefix
                .iter()
                .filter(|(prefix, _)| event.channel.as_str().starts_with(prefix.as_str()))
                .map(|(_, s)| s);
            let mut recipients = exact.iter().chain(prefixed).peekable();
            if recipients.peek().is_none() {
                continue;
            }
            let delivery = Arc::new(Delivery {
                origin: event.origin.clone(),
                seq: event.seq,
                cursor: self.delivered.clone(),
                text: Utf8Bytes::from(render_event(event, &self.delivered)),
                stamp_ms: event.hlc.millis(),
            });
            for subscriber in recipients {
                if !event.is_for_user(&subscriber.user_id) {
                    continue;
                }
                match subscriber.queue.try_send(Arc::clone(&delivery)) {
                    Ok(()) => outcome.delivered += 1,
                    Err(TrySendError::Full(_)) => {
                        subscriber.close.raise(CloseReason::SlowClient);
                        overflowed.push(subscriber.id);
                    }
                    Err(TrySendError::Closed(_)) => {}
                }
            }
        }
        if !overflowed.is_empty() {
            outcome.overflowed = overflowed.len() as u64;
            self.drop_subscribers(&overflowed);
        }
        outcome
    }

    /// Stops routing to these subscribers; their connections close and then unsubscribe,
    /// which keeps the user and connection counts right.
    fn drop_subscribers(&mut self, ids: &[u64]) {
        for subscribers in self.by_channel.values_mut() {
            subscribers.retain(|s| !ids.contains(&s.id));
        }
        self.by_channel
            .retain(|_, subscribers| !subscribers.is_empty());
        self.by_prefix.retain(|(_, s)| !ids.contains(&s.id));
    }

    pub(super) fn counts(&self) -> HubCounts {
        HubCounts {
            connections: self.connections,
            users: self.users.len(),
        }
    }

    pub(super) fn channel_connections(&self, channel: &str) -> usize {
        let exact = ChannelName::new(channel)
            .ok()
            .and_then(|c| self.by_channel.get(&c).map(Vec::len))
            .unwrap_or(0);
        let prefixed = self
            .by_prefix
            .iter()
            .filter(|(prefix, _)| channel.starts_with(prefix.as_str()))
            .count();
        exact + prefixed
    }

    pub(super) fn channel_users(&self, channel: &str) -> usize {
        let exact = ChannelName::new(channel)
            .ok()
            .and_then(|c| self.by_channel.get(&c));
        let prefixed = self
            .by_prefix
            .iter()
            .filter(|(prefix, _)| channel.starts_with(prefix.as_str()))
            .map(|(_, s)| s);
        let users: std::collections::HashSet<&str> = exact
            .into_iter()
            .flatten()
            .chain(prefixed)
            .map(|s| &*s.user_id)
            .collect();
        users.len()
    }

    /// Raises the delivered vector to `position`, past events that will never be handed on
    /// (pruned everywhere before this node got them), and closes every connection so that its
    /// client resumes and is told what it lost. Answers whether anything was skipped.
    pub(super) fn jump(&mut self, position: &VersionVector) -> bool {
        if self.delivered.dominates(position) {
            return false;
        }
        self.delivered.merge(position);
        self.close_all(CloseReason::Resync);
        let ids: Vec<u64> = self
            .by_channel
            .values()
            .flatten()
            .chain(self.by_prefix.iter().map(|(_, s)| s))
            .map(|s| s.id)
            .collect();
        self.drop_subscribers(&ids);
        true
    }

    pub(super) fn origins_changed(
        &mut self,
        retired: &[crate::event::NodeId],
        revived: &[(crate::event::NodeId, u64)],
    ) {
        for origin in retired {
            self.delivered.remove(origin);
        }
        for (origin, seq) in revived {
            self.delivered.advance(origin, *seq);
        }
    }

    pub(super) fn close_all(&mut self, reason: CloseReason) {
        for subscriber in self.by_channel.values().flatten() {
            subscriber.close.raise(reason);
        }
        for (_, subscriber) in &self.by_prefix {
            subscriber.close.raise(reason);
        }
    }
}

/// The exact channels of a spec, minus those its own prefixes already cover (so that no
/// event reaches a connection twice).
fn exact_channels(spec: &SubscriptionSpec) -> impl Iterator<Item = &ChannelName> {
    spec.channels.iter().filter(|channel| {
        !spec
            .prefixes
            .iter()
            .any(|prefix| channel.as_str().starts_with(prefix.as_str()))
    })
}
