//! Presence tables: what each source (this node, or one peer) says it holds per channel, and
//! the cluster view summed over every source. Pure data: no clock, no I/O, no lock.
//!
//! A user is present on a channel while at least one source holds a connection of theirs
//! there; every change to a source is applied to the view at once, so the transitions (the
//! user's first connection anywhere: a join; their last one gone: a leave) come out of the
//! change that caused them, once per node. Removing a source (its node died) leaves exactly
//! the users no other source holds.
//!
//! Bounds: a source lists at most [`SourceTable::MAX_ENTRIES`] users over all its channels, and
//! at most the configured `max_users_per_channel` per channel; a change past either is dropped
//! and counted (`herald_presence_entries_refused_total`). A node announces nothing past its own
//! per-channel limit but a count (`Unlisted`), so this only refuses a peer configured otherwise,
//! or lying.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::wire::PresenceChange;
use crate::event::{ChannelName, NodeId};

/// One user on one channel at one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Arc<str>,
    pub connections: u32,
}

#[derive(Default)]
struct SourceChannel {
    users: HashMap<Arc<str>, Entry>,
    unlisted: u32,
}

/// What one source holds.
#[derive(Default)]
pub struct SourceTable {
    channels: HashMap<ChannelName, SourceChannel>,
    entries: usize,
}

impl SourceTable {
    /// Most users one source may list, over all its channels.
    pub const MAX_ENTRIES: usize = 1_000_000;

    /// A table from a snapshot's changes (later changes of the same key win).
    pub fn from_changes(changes: impl IntoIterator<Item = PresenceChange>, limit: usize) -> Self {
        let mut table = Self::default();
        for change in changes {
            table.set(&change, limit);
        }
        table
    }

    /// Applies one change; answers the user's previous and new connection counts here (for a
    /// `User`), or `None` when the change was refused or counted users only.
    fn set(&mut self, change: &PresenceChange, limit: usize) -> Option<(u32, u32, Arc<str>)> {
        match change {
            PresenceChange::Unlisted { channel, users } => {
                if *users == 0 {
                    if let Some(entry) = self.channels.get_mut(channel) {
                        entry.unlisted = 0;
                        if entry.users.is_empty() {
                            self.channels.remove(channel);
                        }
                    }
                } else {
                    self.channels.entry(channel.clone()).or_default().unlisted = *users;
                }
                None
            }
            PresenceChange::User {
                channel,
                user_id,
                name,
                connections,
            } => {
                if *connections == 0 {
                    let slot = self.channels.get_mut(channel)?;
                    let (user_id, old) = slot.users.remove_entry(user_id.as_str())?;
                    self.entries -= 1;
                    if slot.users.is_empty() && slot.unlisted == 0 {
                        self.channels.remove(channel);
                    }
                    return Some((old.connections, 0, user_id));
                }
                let slot = self.channels.entry(channel.clone()).or_default();
                if let Some((key, entry)) = slot.users.get_key_value(user_id.as_str()) {
                    let key = Arc::clone(key);
                    let old = entry.connections;
                    let entry = slot.users.get_mut(user_id.as_str())?;
                    entry.connections = *connections;
                    return Some((old, *connections, key));
                }
                if slot.users.len() >= limit || self.entries >= Self::MAX_ENTRIES {
                    metrics::counter!("herald_presence_entries_refused_total").increment(1);
                    if slot.users.is_empty() && slot.unlisted == 0 {
                        self.channels.remove(channel);
                    }
                    return None;
                }
                let key: Arc<str> = Arc::from(user_id.as_str());
                slot.users.insert(
                    Arc::clone(&key),
                    Entry {
                        name: Arc::from(name.as_str()),
                        connections: *connections,
                    },
                );
                self.entries += 1;
                Some((0, *connections, key))
            }
        }
    }

    fn entry(&self, channel: &ChannelName, user_id: &str) -> Option<&Entry> {
        self.channels.get(channel)?.users.get(user_id)
    }

    /// Every entry as changes (a snapshot of this table).
    pub fn changes(&self) -> Vec<PresenceChange> {
        let mut changes = Vec::with_capacity(self.entries + self.channels.len());
        for (channel, slot) in &self.channels {
            for (user_id, entry) in &slot.users {
                changes.push(PresenceChange::User {
                    channel: channel.clone(),
                    user_id: user_id.to_string(),
                    name: entry.name.to_string(),
                    connections: entry.connections,
                });
            }
            if slot.unlisted > 0 {
                changes.push(PresenceChange::Unlisted {
                    channel: channel.clone(),
                    users: slot.unlisted,
                });
            }
        }
        changes
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    /// The users this source holds on `channel`, listed or not.
    pub fn count(&self, channel: &ChannelName) -> u64 {
        self.channels
            .get(channel)
            .map_or(0, |slot| slot.users.len() as u64 + u64::from(slot.unlisted))
    }
}

/// A user appearing on a channel somewhere in the cluster, or gone from it everywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub joined: bool,
    pub channel: ChannelName,
    pub user_id: Arc<str>,
    pub name: Arc<str>,
}

struct ViewUser {
    name: Arc<str>,
    connections: u64,
}

#[derive(Default)]
struct ViewChannel {
    users: HashMap<Arc<str>, ViewUser>,
    unlisted: u64,
}

/// One user in a presence answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PresentUser {
    pub user_id: String,
    pub name: String,
    pub connections: u64,
}

/// Who is on a channel, cluster-wide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelPresence {
    pub channel: String,
    /// Distinct listed users plus every source's unlisted ones.
    pub count: u64,
    /// Sorted by user id, at most the configured limit.
    pub users: Vec<PresentUser>,
    /// True when `users` does not name everyone `count` counts.
    pub truncated: bool,
}

/// Every source's table and the view summed over them.
pub struct Sources {
    limit: usize,
    tables: HashMap<NodeId, SourceTable>,
    view: HashMap<ChannelName, ViewChannel>,
}

impl Sources {
    /// `limit`: the most users listed per channel per source (and per answer).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            tables: HashMap::new(),
            view: HashMap::new(),
        }
    }

    pub fn has(&self, source: &NodeId) -> bool {
        self.tables.contains_key(source)
    }

    pub fn sources(&self) -> impl Iterator<Item = &NodeId> {
        self.tables.keys()
    }

    pub fn table(&self, source: &NodeId) -> Option<&SourceTable> {
        self.tables.get(source)
    }

    /// Applies `changes` from `source`, pushing the transitions they cause.
    pub fn apply(
        &mut self,
        source: &NodeId,
        changes: impl IntoIterator<Item = PresenceChange>,
        transitions: &mut Vec<Transition>,
    ) {
        let table = self.tables.entry(source.clone()).or_default();
        for change in changes {
            let old_unlisted = unlisted_of(table, change.channel());
            let Some((old, new, user_id)) = table.set(&change, self.limit) else {
                let new_unlisted = unlisted_of(table, change.channel());
                adjust_unlisted(&mut self.view, change.channel(), old_unlisted, new_unlisted);
                continue;
            };
            let name = match &change {
                PresenceChange::User { name, .. } => name.as_str(),
                PresenceChange::Unlisted { .. } => "",
            };
            adjust_user(
                &mut self.view,
                change.channel(),
                &user_id,
                name,
                old,
                new,
                transitions,
            );
        }
    }

    /// Replaces what `source` holds by `table`, pushing the differences as transitions.
    pub fn replace(
        &mut self,
        source: &NodeId,
        table: SourceTable,
        transitions: &mut Vec<Transition>,
    ) {
        let mut changes = Vec::new();
        if let Some(old) = self.tables.get(source) {
            for (channel, slot) in &old.channels {
                for user_id in slot.users.keys() {
                    if table.entry(channel, user_id).is_none() {
                        changes.push(PresenceChange::User {
                            channel: channel.clone(),
                            user_id: user_id.to_string(),
                            name: String::new(),
                            connections: 0,
                        });
                    }
                }
                let kept = table.channels.get(channel).is_some_and(|s| s.unlisted > 0);
                if slot.unlisted > 0 && !kept {
                    changes.push(PresenceChange::Unlisted {
                        channel: channel.clone(),
                        users: 0,
                    });
                }
            }
        }
        changes.extend(table.changes());
        self.apply(source, changes, transitions);
    }

    /// Forgets `source` (its node is gone), pushing a leave for every user no other source
    /// holds.
    pub fn remove(&mut self, source: &NodeId, transitions: &mut Vec<Transition>) {
        if !self.tables.contains_key(source) {
            return;
        }
        self.replace(source, SourceTable::default(), transitions);
        self.tables.remove(source);
    }

    pub fn count(&self, channel: &ChannelName) -> u64 {
        self.view
            .get(channel)
            .map_or(0, |slot| slot.users.len() as u64 + slot.unlisted)
    }

    pub fn channel(&self, channel: &ChannelName) -> ChannelPresence {
        let Some(slot) = self.view.get(channel) else {
            return ChannelPresence {
                channel: channel.to_string(),
                count: 0,
                users: Vec::new(),
                truncated: false,
            };
        };
        let mut users: Vec<(&Arc<str>, &ViewUser)> = slot.users.iter().collect();
        users.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let truncated = users.len() > self.limit || slot.unlisted > 0;
        users.truncate(self.limit);
        ChannelPresence {
            channel: channel.to_string(),
            count: slot.users.len() as u64 + slot.unlisted,
            users: users
                .into_iter()
                .map(|(user_id, user)| PresentUser {
                    user_id: user_id.to_string(),
                    name: user.name.to_string(),
                    connections: user.connections,
                })
                .collect(),
            truncated,
        }
    }

    /// Users listed over every channel and source (for the metrics).
    pub fn entries(&self) -> usize {
        self.tables.values().map(SourceTable::entries).sum()
    }
}

fn unlisted_of(table: &SourceTable, channel: &ChannelName) -> u32 {
    table.channels.get(channel).map_or(0, |slot| slot.unlisted)
}

fn adjust_unlisted(
    view: &mut HashMap<ChannelName, ViewChannel>,
    channel: &ChannelName,
    old: u32,
    new: u32,
) {
    if old == new {
        return;
    }
    let slot = view.entry(channel.clone()).or_default();
    slot.unlisted = (slot.unlisted + u64::from(new)).saturating_sub(u64::from(old));
    if slot.users.is_empty() && slot.unlisted == 0 {
        view.remove(channel);
    }
}

fn adjust_user(
    view: &mut HashMap<ChannelName, ViewChannel>,
    channel: &ChannelName,
    user_id: &Arc<str>,
    name: &str,
    old: u32,
    new: u32,
    transitions: &mut Vec<Transition>,
) {
    if old == new {
        return;
    }
    let slot = view.entry(channel.clone()).or_default();
    let before = slot.users.get(user_id).map_or(0, |user| user.connections);
    let after = (before + u64::from(new)).saturating_sub(u64::from(old));
    if after == 0 {
        if let Some(user) = slot.users.remove(user_id) {
            transitions.push(Transition {
                joined: false,
                channel: channel.clone(),
                user_id: Arc::clone(user_id),
                name: user.name,
            });
        }
        if slot.users.is_empty() && slot.unlisted == 0 {
            view.remove(channel);
        }
        return;
    }
    match slot.users.get_mut(user_id) {
        Some(user) => user.connections = after,
        None => {
            let name: Arc<str> = Arc::from(name);
            slot.users.insert(
                Arc::clone(user_id),
                ViewUser {
                    name: Arc::clone(&name),
                    connections: after,
                },
            );
            transitions.push(Transition {
                joined: true,
                channel: channel.clone(),
                user_id: Arc::clone(user_id),
                name,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn channel(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    fn user(user_id: &str, connections: u32) -> PresenceChange {
        PresenceChange::User {
            channel: channel("track:1"),
            user_id: user_id.into(),
            name: format!("name of {user_id}"),
            connections,
        }
    }

    fn summary(transitions: &[Transition]) -> Vec<String> {
        transitions
            .iter()
            .map(|t| format!("{}{}", if t.joined { "+" } else { "-" }, t.user_id))
            .collect()
    }

    #[test]
    fn a_user_on_two_sources_is_present_once_and_leaves_with_the_last() {
        let mut sources = Sources::new(100);
        let mut out = Vec::new();
        sources.apply(&node("a"), [user("u1", 2)], &mut out);
        sources.apply(&node("b"), [user("u1", 1)], &mut out);
        assert_eq!(summary(&out), ["+u1"]);
        let presence = sources.channel(&channel("track:1"));
        assert_eq!(presence.count, 1);
        assert_eq!(presence.users[0].connections, 3);
        assert_eq!(presence.users[0].name, "name of u1");
        out.clear();
        sources.apply(&node("a"), [user("u1", 0)], &mut out);
        assert!(out.is_empty(), "still on b");
        sources.remove(&node("b"), &mut out);
        assert_eq!(summary(&out), ["-u1"]);
        assert_eq!(sources.count(&channel("track:1")), 0);
        assert!(sources.view.is_empty(), "nothing left behind");
    }

    #[test]
    fn applying_a_change_twice_changes_nothing() {
        let mut sources = Sources::new(100);
        let mut out = Vec::new();
        sources.apply(&node("a"), [user("u1", 1), user("u1", 1)], &mut out);
        sources.apply(&node("a"), [user("u2", 0), user("u2", 0)], &mut out);
        assert_eq!(summary(&out), ["+u1"]);
        assert_eq!(sources.channel(&channel("track:1")).users[0].connections, 1);
    }

    #[test]
    fn a_snapshot_replaces_a_source_with_only_the_differences() {
        let mut sources = Sources::new(100);
        let mut out = Vec::new();
        sources.apply(&node("a"), [user("u1", 1), user("u2", 1)], &mut out);
        out.clear();
        let snapshot = SourceTable::from_changes([user("u2", 3), user("u3", 1)], 100);
        sources.replace(&node("a"), snapshot, &mut out);
        let mut got = summary(&out);
        got.sort();
        assert_eq!(got, ["+u3", "-u1"]);
        let presence = sources.channel(&channel("track:1"));
        assert_eq!(presence.count, 2);
        assert_eq!(presence.users[0].connections, 3);
    }

    #[test]
    fn removing_a_dead_source_leaves_each_of_its_users_once() {
        let mut sources = Sources::new(100);
        let mut out = Vec::new();
        sources.apply(&node("a"), [user("u1", 1)], &mut out);
        sources.apply(
            &node("b"),
            [user("u2", 1), user("u3", 1), user("u1", 1)],
            &mut out,
        );
        out.clear();
        sources.remove(&node("b"), &mut out);
        let mut got = summary(&out);
        got.sort();
        assert_eq!(got, ["-u2", "-u3"]);
        sources.remove(&node("b"), &mut out);
        assert_eq!(out.len(), 2, "removing twice emits nothing more");
        assert!(!sources.has(&node("b")));
    }

    #[test]
    fn past_the_limit_users_are_counted_not_listed() {
        let mut sources = Sources::new(2);
        let mut out = Vec::new();
        sources.apply(
            &node("a"),
            [
                user("u1", 1),
                user("u2", 1),
                PresenceChange::Unlisted {
                    channel: channel("track:1"),
                    users: 5,
                },
            ],
            &mut out,
        );
        sources.apply(&node("b"), [user("u3", 1)], &mut out);
        let presence = sources.channel(&channel("track:1"));
        assert_eq!(presence.count, 8);
        assert_eq!(presence.users.len(), 2);
        assert!(presence.truncated);
        // A third listed user from one source is refused (that source overstepped the limit).
        sources.apply(&node("a"), [user("u9", 1)], &mut out);
        assert_eq!(sources.count(&channel("track:1")), 8);
        sources.remove(&node("a"), &mut out);
        let presence = sources.channel(&channel("track:1"));
        assert_eq!((presence.count, presence.truncated), (1, false));
    }

    #[test]
    fn answers_are_sorted_the_same_everywhere() {
        let mut sources = Sources::new(100);
        let mut out = Vec::new();
        sources.apply(&node("b"), [user("u3", 1), user("u1", 1)], &mut out);
        sources.apply(&node("a"), [user("u2", 1)], &mut out);
        let ids: Vec<String> = sources
            .channel(&channel("track:1"))
            .users
            .into_iter()
            .map(|u| u.user_id)
            .collect();
        assert_eq!(ids, ["u1", "u2", "u3"]);
    }
}
