//! Presence: who is on a channel, cluster-wide, per user (a user with three sockets on two
//! nodes is present once, with three connections).
//!
//! What it owns:
//! - which channels have presence (`[presence] channels`, prefixes or `"*"`; the broadcast
//!   channel is always counted, for the broadcast stats, but announces no joins);
//! - this node's own sockets on those channels ([`local`]), entered by every socket that did
//!   not ask `?presence=false` and left when the socket ends ([`PresenceGuard`]);
//! - what every peer said it holds, and the cluster view summed over them ([`table`]);
//! - the `presence_join` and `presence_leave` events: when a user's first connection on a
//!   channel appears anywhere, or their last one goes (closed, or its node gone), this node
//!   hands the event to its own local subscribers of the channel. Every node does so for its
//!   own subscribers only, from its own view, so each subscriber gets each transition once;
//!   and when a node dies, every survivor removes its entries and tells its own subscribers.
//!   They are ephemeral: never stored, never replayed, without a cursor. A socket enters
//!   before it subscribes, so it is not told of its own user's join.
//!
//! What it does not own: how peers' presence arrives (the backplane: `mesh_presence` on the
//! mesh, `redis::presence` through Redis), and when a peer counts as gone (the backplane
//! calls [`Presence::remove_peer`]).
//!
//! Locking: one mutex, held for in-memory work only; transitions are handed to the hub (whose
//! own lock nests inside this one and never the other way) before it is released, so every
//! subscriber sees a user's joins and leaves in the order they happened.

pub mod local;
pub mod table;
pub mod wire;

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::event::{ChannelName, Event, Hlc, NodeId};
use crate::hub::Hub;
pub use local::LocalChanges;
pub use table::{ChannelPresence, PresentUser, SourceTable, Transition};
pub use wire::{PresenceChange, PresenceMessage};

/// The broadcast banner's channel: counted (the stats' `connected_users`), never announced.
pub const COUNTED_CHANNELS: &[&str] = &["broadcasts"];
/// Default `[presence] channels`.
pub const DEFAULT_CHANNELS: &[&str] = &["track:", "forum:thread:", "forum"];
/// Default `[presence] max_users_per_channel`.
pub const DEFAULT_MAX_USERS_PER_CHANNEL: usize = 10_000;

/// `[presence]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceConfig {
    /// Channel-name prefixes with presence; `"*"` for every channel.
    pub channels: Vec<String>,
    pub max_users_per_channel: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            channels: DEFAULT_CHANNELS.iter().map(|c| c.to_string()).collect(),
            max_users_per_channel: DEFAULT_MAX_USERS_PER_CHANNEL,
        }
    }
}

impl PresenceConfig {
    /// Whether `channel` announces joins and leaves.
    pub fn announces(&self, channel: &str) -> bool {
        self.channels
            .iter()
            .any(|prefix| prefix == "*" || channel.starts_with(prefix.as_str()))
    }

    /// Whether `channel`'s users are tracked (announced, or counted only).
    pub fn tracks(&self, channel: &str) -> bool {
        COUNTED_CHANNELS.contains(&channel) || self.announces(channel)
    }
}

struct State {
    local: local::Local,
    sources: table::Sources,
}

/// The node's presence; see the module docs.
pub struct Presence {
    config: PresenceConfig,
    /// This node, as a source among its peers.
    node: NodeId,
    hub: Arc<Hub>,
    state: Mutex<State>,
    local_changed: Notify,
}

impl Presence {
    pub fn new(config: PresenceConfig, node: NodeId, hub: Arc<Hub>) -> Arc<Self> {
        let limit = config.max_users_per_channel;
        Arc::new(Self {
            config,
            node,
            hub,
            state: Mutex::new(State {
                local: local::Local::new(limit),
                sources: table::Sources::new(limit),
            }),
            local_changed: Notify::new(),
        })
    }

    pub fn config(&self) -> &PresenceConfig {
        &self.config
    }

    /// Enters a socket of `user_id` on the tracked ones of `channels`; the guard leaves them
    /// when dropped. `None` when none is tracked.
    pub fn enter(
        self: &Arc<Self>,
        user_id: &str,
        name: &str,
        channels: &[ChannelName],
    ) -> Option<PresenceGuard> {
        let tracked: Vec<ChannelName> = channels
            .iter()
            .filter(|channel| self.config.tracks(channel.as_str()))
            .cloned()
            .collect();
        if tracked.is_empty() {
            return None;
        }
        let user_id: Arc<str> = Arc::from(user_id);
        let name: Arc<str> = Arc::from(wire::shorten_name(name));
        self.change_local(|local, out| {
            for channel in &tracked {
                local.connect(channel, &user_id, &name, out);
            }
        });
        Some(PresenceGuard {
            presence: Arc::clone(self),
            channels: tracked.into_boxed_slice(),
            user_id,
        })
    }

    fn leave(&self, user_id: &Arc<str>, channels: &[ChannelName]) {
        self.change_local(|local, out| {
            for channel in channels {
                local.disconnect(channel, user_id, out);
            }
        });
    }

    fn change_local(&self, change: impl FnOnce(&mut local::Local, &mut Vec<PresenceChange>)) {
        let mut changes = Vec::new();
        let mut transitions = Vec::new();
        {
            let mut state = self.lock();
            let state = &mut *state;
            change(&mut state.local, &mut changes);
            state.sources.apply(&self.node, changes, &mut transitions);
            self.announce(&transitions);
        }
        self.local_changed.notify_one();
    }

    /// Who is on `channel`, cluster-wide, as this node sees it.
    pub fn channel(&self, channel: &ChannelName) -> ChannelPresence {
        self.lock().sources.channel(channel)
    }

    /// How many users are on `channel`, cluster-wide.
    pub fn count(&self, channel: &ChannelName) -> u64 {
        self.lock().sources.count(channel)
    }

    /// How many users this node itself holds on `channel` (listed or not).
    pub fn local_count(&self, channel: &ChannelName) -> u64 {
        self.lock()
            .sources
            .table(&self.node)
            .map_or(0, |table| table.count(channel))
    }

    // ---- for the backplanes ----

    /// Replaces what `peer` holds by a complete snapshot.
    pub fn replace_peer(&self, peer: &NodeId, snapshot: Vec<PresenceChange>) {
        if peer == &self.node {
            return;
        }
        let table = SourceTable::from_changes(snapshot, self.config.max_users_per_channel);
        let mut transitions = Vec::new();
        let mut state = self.lock();
        state.sources.replace(peer, table, &mut transitions);
        self.announce(&transitions);
        self.record(&state);
    }

    /// Applies a delta from `peer`.
    pub fn apply_peer(&self, peer: &NodeId, changes: Vec<PresenceChange>) {
        if peer == &self.node {
            return;
        }
        let mut transitions = Vec::new();
        let mut state = self.lock();
        state.sources.apply(peer, changes, &mut transitions);
        self.announce(&transitions);
        self.record(&state);
    }

    /// Forgets `peer` (dead, or out of reach): a leave for each of its users nobody else holds.
    pub fn remove_peer(&self, peer: &NodeId) {
        if peer == &self.node {
            return;
        }
        let mut transitions = Vec::new();
        let mut state = self.lock();
        if !state.sources.has(peer) {
            return;
        }
        state.sources.remove(peer, &mut transitions);
        if !transitions.is_empty() {
            tracing::info!(peer = %peer, users = transitions.len(), "peer's presence removed");
        }
        self.announce(&transitions);
        self.record(&state);
    }

    /// The peers whose presence this node holds.
    pub fn peers(&self) -> Vec<NodeId> {
        let state = self.lock();
        state
            .sources
            .sources()
            .filter(|source| *source != &self.node)
            .cloned()
            .collect()
    }

    /// What this node announces, whole (for a snapshot to a peer). A change made between
    /// [`Self::take_local_changes`] and this call is in both; applying it twice is harmless.
    pub fn local_snapshot(&self) -> Vec<PresenceChange> {
        self.lock().local.snapshot()
    }

    /// What changed locally since the last call.
    pub fn take_local_changes(&self) -> LocalChanges {
        self.lock().local.take_changes()
    }

    /// Resolves when the local presence changed since the last wait.
    pub async fn local_changed(&self) {
        self.local_changed.notified().await;
    }

    /// Hands transitions on announced channels to the local subscribers, in order.
    fn announce(&self, transitions: &[Transition]) {
        let events: Vec<Arc<Event>> = transitions
            .iter()
            .filter(|t| self.config.announces(t.channel.as_str()))
            .map(|t| Arc::new(self.event(t)))
            .collect();
        if events.is_empty() {
            return;
        }
        let (joins, leaves) =
            transitions.iter().fold(
                (0u64, 0u64),
                |(j, l), t| {
                    if t.joined { (j + 1, l) } else { (j, l + 1) }
                },
            );
        metrics::counter!("herald_presence_joins_total").increment(joins);
        metrics::counter!("herald_presence_leaves_total").increment(leaves);
        self.hub.dispatch(&events);
    }

    fn event(&self, transition: &Transition) -> Event {
        let kind = if transition.joined {
            "presence_join"
        } else {
            "presence_leave"
        };
        let payload = serde_json::json!({
            "type": kind,
            "channel": transition.channel.as_str(),
            "user": { "user_id": &*transition.user_id, "name": &*transition.name },
        });
        Event {
            origin: self.node.clone(),
            seq: 0,
            id: uuid::Uuid::nil(),
            hlc: Hlc::default(),
            channel: transition.channel.clone(),
            kind: kind.into(),
            payload: payload.to_string(),
            users: None,
            ephemeral: true,
            idempotency_key: None,
        }
    }

    fn record(&self, state: &State) {
        metrics::gauge!("herald_presence_entries").set(state.sources.entries() as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A socket's presence: leaves its channels when dropped.
pub struct PresenceGuard {
    presence: Arc<Presence>,
    channels: Box<[ChannelName]>,
    user_id: Arc<str>,
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        self.presence.leave(&self.user_id, &self.channels);
    }
}

#[cfg(test)]
mod tests;
