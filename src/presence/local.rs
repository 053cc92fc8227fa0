//! This node's own presence: the sockets it holds, per channel and user, which of those users
//! it lists (at most `max_users_per_channel` per channel, first come; a listed user who leaves
//! makes room for an unlisted one), and what changed since its peers were last told.
//!
//! Every change answers the [`PresenceChange`]s of what this node announces (its listed users
//! and its count of unlisted ones), which the caller applies to the cluster view at once and
//! which the announcers ship later from [`Local::take_changes`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::wire::PresenceChange;
use crate::event::ChannelName;

/// Changed keys kept for the announcers; past this, peers get a fresh snapshot instead.
const MAX_PENDING: usize = 100_000;

struct LocalUser {
    name: Arc<str>,
    connections: u32,
    listed: bool,
}

#[derive(Default)]
struct LocalChannel {
    users: HashMap<Arc<str>, LocalUser>,
    listed: usize,
    /// The users not listed, to promote one when a listed user leaves.
    unlisted: HashSet<Arc<str>>,
}

/// What changed locally since the announcers last looked.
#[derive(Debug, PartialEq, Eq)]
pub enum LocalChanges {
    /// Too much to list: every peer needs a snapshot.
    Reset,
    /// The current state of every key that changed (empty: nothing did).
    Delta(Vec<PresenceChange>),
}

pub struct Local {
    limit: usize,
    channels: HashMap<ChannelName, LocalChannel>,
    pending_users: HashSet<(ChannelName, Arc<str>)>,
    pending_unlisted: HashSet<ChannelName>,
    reset: bool,
}

impl Local {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            channels: HashMap::new(),
            pending_users: HashSet::new(),
            pending_unlisted: HashSet::new(),
            reset: false,
        }
    }

    /// One more socket of `user_id` on `channel`.
    pub fn connect(
        &mut self,
        channel: &ChannelName,
        user_id: &Arc<str>,
        name: &Arc<str>,
        out: &mut Vec<PresenceChange>,
    ) {
        let limit = self.limit;
        let slot = self.channels.entry(channel.clone()).or_default();
        if let Some(user) = slot.users.get_mut(user_id) {
            user.connections += 1;
            if user.listed {
                out.push(listed(channel, user_id, user));
                self.mark_user(channel, user_id);
            }
            return;
        }
        let listed_now = slot.listed < limit;
        let user = LocalUser {
            name: Arc::clone(name),
            connections: 1,
            listed: listed_now,
        };
        if listed_now {
            slot.listed += 1;
            out.push(self::listed(channel, user_id, &user));
            slot.users.insert(Arc::clone(user_id), user);
            self.mark_user(channel, user_id);
        } else {
            slot.unlisted.insert(Arc::clone(user_id));
            slot.users.insert(Arc::clone(user_id), user);
            out.push(unlisted(channel, slot));
            self.mark_unlisted(channel);
        }
    }

    /// One socket fewer of `user_id` on `channel`.
    pub fn disconnect(
        &mut self,
        channel: &ChannelName,
        user_id: &Arc<str>,
        out: &mut Vec<PresenceChange>,
    ) {
        let Some(slot) = self.channels.get_mut(channel) else {
            return;
        };
        let Some(user) = slot.users.get_mut(user_id) else {
            return;
        };
        user.connections -= 1;
        if user.connections > 0 {
            if user.listed {
                out.push(listed(channel, user_id, user));
                self.mark_user(channel, user_id);
            }
            return;
        }
        let was_listed = user.listed;
        slot.users.remove(user_id);
        if !was_listed {
            slot.unlisted.remove(user_id);
            out.push(unlisted(channel, slot));
            self.mark_unlisted(channel);
        } else {
            slot.listed -= 1;
            out.push(gone(channel, user_id));
            let promoted = slot.unlisted.iter().next().cloned();
            let mut marks = vec![Arc::clone(user_id)];
            if let Some(next) = promoted {
                slot.unlisted.remove(&next);
                if let Some(user) = slot.users.get_mut(&next) {
                    user.listed = true;
                    slot.listed += 1;
                    out.push(listed(channel, &next, user));
                }
                out.push(unlisted(channel, slot));
                marks.push(next);
                self.pending_unlisted.insert(channel.clone());
            }
            for user_id in marks {
                self.mark_user(channel, &user_id);
            }
        }
        if self
            .channels
            .get(channel)
            .is_some_and(|s| s.users.is_empty())
        {
            self.channels.remove(channel);
        }
    }

    /// What this node announces, whole.
    pub fn snapshot(&self) -> Vec<PresenceChange> {
        let mut changes = Vec::new();
        for (channel, slot) in &self.channels {
            for (user_id, user) in &slot.users {
                if user.listed {
                    changes.push(listed(channel, user_id, user));
                }
            }
            if !slot.unlisted.is_empty() {
                changes.push(unlisted(channel, slot));
            }
        }
        changes
    }

    /// The current state of what changed since the last call.
    pub fn take_changes(&mut self) -> LocalChanges {
        if std::mem::take(&mut self.reset) {
            self.pending_users.clear();
            self.pending_unlisted.clear();
            return LocalChanges::Reset;
        }
        let mut changes = Vec::with_capacity(self.pending_users.len());
        for (channel, user_id) in self.pending_users.drain() {
            let user = self
                .channels
                .get(&channel)
                .and_then(|slot| slot.users.get(&user_id))
                .filter(|user| user.listed);
            changes.push(match user {
                Some(user) => listed(&channel, &user_id, user),
                None => gone(&channel, &user_id),
            });
        }
        for channel in self.pending_unlisted.drain() {
            changes.push(match self.channels.get(&channel) {
                Some(slot) => unlisted(&channel, slot),
                None => PresenceChange::Unlisted { channel, users: 0 },
            });
        }
        LocalChanges::Delta(changes)
    }

    fn mark_user(&mut self, channel: &ChannelName, user_id: &Arc<str>) {
        if self.reset {
            return;
        }
        self.pending_users
            .insert((channel.clone(), Arc::clone(user_id)));
        self.check_pending();
    }

    fn mark_unlisted(&mut self, channel: &ChannelName) {
        if self.reset {
            return;
        }
        self.pending_unlisted.insert(channel.clone());
        self.check_pending();
    }

    fn check_pending(&mut self) {
        if self.pending_users.len() + self.pending_unlisted.len() > MAX_PENDING {
            self.reset = true;
            self.pending_users = HashSet::new();
            self.pending_unlisted = HashSet::new();
        }
    }
}

fn listed(channel: &ChannelName, user_id: &Arc<str>, user: &LocalUser) -> PresenceChange {
    PresenceChange::User {
        channel: channel.clone(),
        user_id: user_id.to_string(),
        name: user.name.to_string(),
        connections: user.connections,
    }
}

fn gone(channel: &ChannelName, user_id: &Arc<str>) -> PresenceChange {
    PresenceChange::User {
        channel: channel.clone(),
        user_id: user_id.to_string(),
        name: String::new(),
        connections: 0,
    }
}

fn unlisted(channel: &ChannelName, slot: &LocalChannel) -> PresenceChange {
    PresenceChange::Unlisted {
        channel: channel.clone(),
        users: u32::try_from(slot.unlisted.len()).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> ChannelName {
        ChannelName::new("track:1").unwrap()
    }

    fn id(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    fn delta(local: &mut Local) -> Vec<PresenceChange> {
        match local.take_changes() {
            LocalChanges::Delta(mut changes) => {
                changes.sort_by_key(|c| format!("{c:?}"));
                changes
            }
            LocalChanges::Reset => panic!("unexpected reset"),
        }
    }

    #[test]
    fn sockets_of_one_user_count_as_connections() {
        let mut local = Local::new(10);
        let mut out = Vec::new();
        local.connect(&channel(), &id("u1"), &id("Ann"), &mut out);
        local.connect(&channel(), &id("u1"), &id("Ann"), &mut out);
        assert_eq!(
            delta(&mut local),
            [PresenceChange::User {
                channel: channel(),
                user_id: "u1".into(),
                name: "Ann".into(),
                connections: 2
            }]
        );
        local.disconnect(&channel(), &id("u1"), &mut out);
        local.disconnect(&channel(), &id("u1"), &mut out);
        assert_eq!(delta(&mut local), [gone(&channel(), &id("u1"))]);
        assert!(local.channels.is_empty());
        assert!(local.snapshot().is_empty());
        assert_eq!(delta(&mut local), []);
    }

    #[test]
    fn past_the_limit_users_are_counted_and_promoted_when_room_is_made() {
        let mut local = Local::new(1);
        let mut out = Vec::new();
        local.connect(&channel(), &id("u1"), &id("Ann"), &mut out);
        local.connect(&channel(), &id("u2"), &id("Bo"), &mut out);
        let snapshot = local.snapshot();
        assert!(snapshot.contains(&PresenceChange::Unlisted {
            channel: channel(),
            users: 1
        }));
        assert_eq!(snapshot.len(), 2);
        local.take_changes();
        local.disconnect(&channel(), &id("u1"), &mut out);
        let changes = delta(&mut local);
        assert!(changes.contains(&gone(&channel(), &id("u1"))));
        assert!(changes.contains(&PresenceChange::User {
            channel: channel(),
            user_id: "u2".into(),
            name: "Bo".into(),
            connections: 1
        }));
        assert!(changes.contains(&PresenceChange::Unlisted {
            channel: channel(),
            users: 0
        }));
    }

    #[test]
    fn too_many_pending_changes_become_a_reset() {
        let mut local = Local::new(MAX_PENDING + 10);
        let mut out = Vec::new();
        for n in 0..=MAX_PENDING {
            local.connect(&channel(), &id(&format!("u{n}")), &id("x"), &mut out);
        }
        assert_eq!(local.take_changes(), LocalChanges::Reset);
        assert_eq!(local.snapshot().len(), MAX_PENDING + 1);
        assert_eq!(delta(&mut local), []);
    }
}
