//! Which channels this node has local subscribers of: its *interest*, for the backplane to
//! announce to peers (see `crate::backplane::mesh_interest`), so that ephemeral events (typing
//! indicators) cross the mesh only to nodes that deliver them.
//!
//! It owns a count of local subscriptions per exact channel and per channel-name prefix, and
//! the set of keys whose presence changed since the backplane last looked. A key appears when
//! its first subscription arrives and disappears when its last one goes; a connection that
//! subscribes and leaves between two looks leaves only a removal to announce (of a key the
//! peers never heard of, which changes nothing there).
//!
//! It is updated on subscribe and unsubscribe only, under its own lock: the hub's delivery
//! path never touches it. Everything is bounded: past [`MAX_ANNOUNCED_KEYS`] distinct keys (or
//! with a prefix that no key can name) the node announces "everything" instead of a list, and
//! past [`MAX_PENDING_CHANGES`] changed keys between two looks the backplane is told to send a
//! fresh snapshot instead of a delta.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::SubscriptionSpec;
use crate::event::ChannelName;

/// Most distinct keys announced as a list; beyond, the node announces "everything".
pub const MAX_ANNOUNCED_KEYS: usize = 100_000;
/// Most changed keys remembered between two looks; beyond, a snapshot replaces the delta.
pub const MAX_PENDING_CHANGES: usize = 10_000;

/// One unit of interest: an exact channel, or a channel-name prefix (`forum:thread:`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum InterestKey {
    Channel(ChannelName),
    Prefix(ChannelName),
}

impl InterestKey {
    /// Whether an event on `channel` is covered by this key.
    pub fn covers(&self, channel: &str) -> bool {
        match self {
            Self::Channel(name) => name.as_str() == channel,
            Self::Prefix(prefix) => channel.starts_with(prefix.as_str()),
        }
    }
}

/// What changed since the last look.
#[derive(Debug, PartialEq, Eq)]
pub enum InterestChanges {
    /// Keys that appeared and keys that disappeared (each at most once, sorted).
    Delta {
        added: Vec<InterestKey>,
        removed: Vec<InterestKey>,
    },
    /// Too much changed, or the node switched between a list and "everything": send a
    /// snapshot.
    Reset,
}

impl InterestChanges {
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Delta { added, removed } if added.is_empty() && removed.is_empty())
    }
}

/// The whole interest at one instant.
#[derive(Debug, PartialEq, Eq)]
pub struct InterestSnapshot {
    /// Every channel is of interest (too many keys, or an unnameable prefix).
    pub everything: bool,
    /// Sorted; empty when `everything`.
    pub keys: Vec<InterestKey>,
}

#[derive(Default)]
struct State {
    counts: HashMap<InterestKey, u32>,
    /// Subscriptions with a prefix that is not a valid channel name (say, empty): they match
    /// every channel, so the node announces everything while one exists.
    wildcards: u32,
    touched: HashSet<InterestKey>,
    reset: bool,
}

impl State {
    fn everything(&self) -> bool {
        self.wildcards > 0 || self.counts.len() > MAX_ANNOUNCED_KEYS
    }

    fn touch(&mut self, key: &InterestKey) {
        if self.reset || self.everything() {
            return;
        }
        if self.touched.len() >= MAX_PENDING_CHANGES && !self.touched.contains(key) {
            self.touched.clear();
            self.reset = true;
            return;
        }
        self.touched.insert(key.clone());
    }
}

/// The node's local interest; see the module docs.
#[derive(Default)]
pub struct LocalInterest {
    state: Mutex<State>,
    changed: Notify,
}

impl LocalInterest {
    /// Counts the channels and prefixes of a new subscription.
    pub fn add(&self, spec: &SubscriptionSpec) {
        self.update(spec, true);
    }

    /// Forgets a subscription counted by [`Self::add`].
    pub fn remove(&self, spec: &SubscriptionSpec) {
        self.update(spec, false);
    }

    fn update(&self, spec: &SubscriptionSpec, add: bool) {
        let mut changed = false;
        {
            let mut state = self.lock();
            let everything_before = state.everything();
            let keys = spec
                .channels
                .iter()
                .map(|channel| Some(InterestKey::Channel(channel.clone())))
                .chain(
                    spec.prefixes
                        .iter()
                        .map(|prefix| ChannelName::new(prefix).ok().map(InterestKey::Prefix)),
                );
            for key in keys {
                let Some(key) = key else {
                    state.wildcards = if add {
                        state.wildcards + 1
                    } else {
                        state.wildcards.saturating_sub(1)
                    };
                    continue;
                };
                let appeared_or_went = if add {
                    let count = state.counts.entry(key.clone()).or_insert(0);
                    *count += 1;
                    *count == 1
                } else {
                    match state.counts.get_mut(&key) {
                        Some(count) if *count > 1 => {
                            *count -= 1;
                            false
                        }
                        Some(_) => {
                            state.counts.remove(&key);
                            true
                        }
                        None => false,
                    }
                };
                if appeared_or_went {
                    state.touch(&key);
                    changed = true;
                }
            }
            if state.everything() != everything_before {
                state.touched.clear();
                state.reset = true;
                changed = true;
            }
        }
        if changed {
            self.changed.notify_one();
        }
    }

    /// Takes what changed since the last call: the presence of each touched key now.
    pub fn take_changes(&self) -> InterestChanges {
        let mut state = self.lock();
        if std::mem::take(&mut state.reset) {
            state.touched.clear();
            return InterestChanges::Reset;
        }
        let touched = std::mem::take(&mut state.touched);
        let (mut added, mut removed): (Vec<_>, Vec<_>) = touched
            .into_iter()
            .partition(|key| state.counts.contains_key(key));
        added.sort();
        removed.sort();
        InterestChanges::Delta { added, removed }
    }

    /// The interest right now.
    pub fn snapshot(&self) -> InterestSnapshot {
        let state = self.lock();
        if state.everything() {
            return InterestSnapshot {
                everything: true,
                keys: Vec::new(),
            };
        }
        let mut keys: Vec<InterestKey> = state.counts.keys().cloned().collect();
        keys.sort();
        InterestSnapshot {
            everything: false,
            keys,
        }
    }

    /// Distinct keys with local subscribers.
    pub fn len(&self) -> usize {
        self.lock().counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether an event on `channel` has a local subscriber (by channel or prefix).
    pub fn covers(&self, channel: &str) -> bool {
        let state = self.lock();
        state.wildcards > 0 || state.counts.keys().any(|key| key.covers(channel))
    }

    /// Resolves after the interest changed since the previous wait (a change made while
    /// nobody waits is kept as one permit).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> InterestKey {
        InterestKey::Channel(ChannelName::new(name).unwrap())
    }

    fn prefix(name: &str) -> InterestKey {
        InterestKey::Prefix(ChannelName::new(name).unwrap())
    }

    fn spec(channels: &[&str], prefixes: &[&str]) -> SubscriptionSpec {
        SubscriptionSpec::new(
            "u",
            channels
                .iter()
                .map(|c| ChannelName::new(c).unwrap())
                .collect(),
            prefixes.iter().map(|p| p.to_string()).collect(),
        )
    }

    fn delta(added: &[InterestKey], removed: &[InterestKey]) -> InterestChanges {
        InterestChanges::Delta {
            added: added.to_vec(),
            removed: removed.to_vec(),
        }
    }

    #[test]
    fn first_subscriber_adds_and_last_removes() {
        let interest = LocalInterest::default();
        let a = spec(&["track:1", "user:1"], &[]);
        let b = spec(&["track:1"], &[]);
        interest.add(&a);
        assert_eq!(
            interest.take_changes(),
            delta(&[channel("track:1"), channel("user:1")], &[])
        );
        interest.add(&b);
        assert!(
            interest.take_changes().is_empty(),
            "track:1 was there already"
        );
        interest.remove(&a);
        assert_eq!(interest.take_changes(), delta(&[], &[channel("user:1")]));
        assert!(interest.covers("track:1"));
        interest.remove(&b);
        assert_eq!(interest.take_changes(), delta(&[], &[channel("track:1")]));
        assert!(interest.is_empty());
        assert!(!interest.covers("track:1"));
    }

    #[test]
    fn a_subscription_that_comes_and_goes_between_looks_leaves_only_a_removal() {
        let interest = LocalInterest::default();
        let a = spec(&["forum"], &[]);
        interest.add(&a);
        interest.remove(&a);
        assert_eq!(interest.take_changes(), delta(&[], &[channel("forum")]));
        assert!(interest.take_changes().is_empty());
    }

    #[test]
    fn prefixes_count_like_channels() {
        let interest = LocalInterest::default();
        let v2 = spec(&["forum"], &["forum:thread:"]);
        interest.add(&v2);
        assert!(interest.covers("forum:thread:9"));
        assert!(!interest.covers("track:9"));
        assert_eq!(
            interest.snapshot(),
            InterestSnapshot {
                everything: false,
                keys: vec![channel("forum"), prefix("forum:thread:")],
            }
        );
        interest.remove(&v2);
        assert!(interest.snapshot().keys.is_empty());
    }

    #[test]
    fn an_unnameable_prefix_means_everything() {
        let interest = LocalInterest::default();
        let wild = spec(&[], &[""]);
        interest.add(&spec(&["x"], &[]));
        let _ = interest.take_changes();
        interest.add(&wild);
        assert_eq!(interest.take_changes(), InterestChanges::Reset);
        assert!(interest.snapshot().everything);
        assert!(interest.covers("anything"));
        interest.remove(&wild);
        assert_eq!(interest.take_changes(), InterestChanges::Reset);
        assert_eq!(interest.snapshot().keys, vec![channel("x")]);
    }

    #[test]
    fn too_many_changes_ask_for_a_snapshot() {
        let interest = LocalInterest::default();
        for n in 0..=MAX_PENDING_CHANGES {
            interest.add(&spec(&[&format!("c{n}")], &[]));
        }
        assert_eq!(interest.take_changes(), InterestChanges::Reset);
        assert!(interest.take_changes().is_empty());
        assert_eq!(interest.len(), MAX_PENDING_CHANGES + 1);
    }

    #[test]
    fn the_hub_counts_every_subscription_until_it_is_dropped() {
        let hub = crate::hub::Hub::new(crate::event::VersionVector::new(), 4);
        let track = hub.subscribe(spec(&["track:1", "user:1"], &[]));
        let forum = hub.subscribe(spec(&["forum"], &["forum:thread:"]));
        assert!(hub.interest().covers("track:1"));
        assert!(hub.interest().covers("forum:thread:3"));
        assert_eq!(hub.interest().len(), 4);
        drop(track);
        assert!(!hub.interest().covers("track:1"));
        drop(forum);
        assert!(hub.interest().is_empty());
    }

    #[test]
    fn removing_what_was_never_added_changes_nothing() {
        let interest = LocalInterest::default();
        interest.remove(&spec(&["ghost"], &["p:"]));
        assert!(interest.take_changes().is_empty());
        assert!(interest.is_empty());
    }
}
