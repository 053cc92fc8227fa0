//! What nodes tell each other about presence, on the mesh and through Redis alike: the
//! messages of the per-link protocol (`crate::backplane::mesh_presence`) and the bounds every
//! receiver checks before it believes one.

use serde::{Deserialize, Serialize};

use crate::event::ChannelName;

/// Most changes in one message; a longer snapshot or delta is split.
pub const MAX_CHANGES_PER_MESSAGE: usize = 1_000;
/// Longest user id (as the token's `sub` is bounded) and name (as herald shortens it).
pub const MAX_USER_ID_BYTES: usize = 128;
pub const MAX_NAME_BYTES: usize = 128;

/// One user's presence on one channel at the sending node, as it stands now (not a difference:
/// applying one twice changes nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresenceChange {
    /// The sender holds `connections` sockets of the user on the channel; 0: none any more.
    User {
        channel: ChannelName,
        user_id: String,
        name: String,
        connections: u32,
    },
    /// How many users of the channel the sender holds beyond the users it lists
    /// (`[presence] max_users_per_channel`): counted, not named.
    Unlisted { channel: ChannelName, users: u32 },
}

impl PresenceChange {
    pub fn channel(&self) -> &ChannelName {
        match self {
            Self::User { channel, .. } | Self::Unlisted { channel, .. } => channel,
        }
    }
}

/// The protocol, per link: a snapshot (numbered parts from 0, the first with `reset`, the
/// last with `complete`) when the link comes up or when asked, then numbered deltas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresenceMessage {
    Update {
        /// The sender's generation (it grows on every restart).
        generation: u64,
        seq: u64,
        /// The first part of a snapshot: what follows replaces what the sender said before.
        reset: bool,
        /// The last part of a snapshot (a delta is always complete).
        complete: bool,
        changes: Vec<PresenceChange>,
    },
    /// Asks for a snapshot: the receiver lost track of the sender's presence.
    Resync,
}

/// Why a received presence message is refused.
pub fn invalid(message: &PresenceMessage) -> Option<String> {
    let PresenceMessage::Update { changes, .. } = message else {
        return None;
    };
    if changes.len() > MAX_CHANGES_PER_MESSAGE {
        return Some(format!(
            "{} presence changes in one message (at most {MAX_CHANGES_PER_MESSAGE})",
            changes.len()
        ));
    }
    for change in changes {
        if let PresenceChange::User { user_id, name, .. } = change {
            if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
                return Some(format!("presence user id of {} bytes", user_id.len()));
            }
            if name.len() > MAX_NAME_BYTES {
                return Some(format!("presence name of {} bytes", name.len()));
            }
        }
    }
    None
}

/// `name` cut to at most [`MAX_NAME_BYTES`], on a character boundary.
pub fn shorten_name(name: &str) -> &str {
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    let mut end = MAX_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, name: &str) -> PresenceChange {
        PresenceChange::User {
            channel: ChannelName::new("track:1").unwrap(),
            user_id: id.into(),
            name: name.into(),
            connections: 1,
        }
    }

    fn update(changes: Vec<PresenceChange>) -> PresenceMessage {
        PresenceMessage::Update {
            generation: 1,
            seq: 0,
            reset: true,
            complete: true,
            changes,
        }
    }

    #[test]
    fn bounds_are_checked() {
        assert_eq!(invalid(&update(vec![user("u1", "Ann")])), None);
        assert!(invalid(&update(vec![user("", "Ann")])).is_some());
        assert!(invalid(&update(vec![user(&"u".repeat(129), "Ann")])).is_some());
        assert!(invalid(&update(vec![user("u1", &"n".repeat(129))])).is_some());
        let many = (0..=MAX_CHANGES_PER_MESSAGE)
            .map(|n| user(&format!("u{n}"), "x"))
            .collect();
        assert!(invalid(&update(many)).is_some());
        assert_eq!(invalid(&PresenceMessage::Resync), None);
    }

    #[test]
    fn names_are_shortened_on_a_character_boundary() {
        assert_eq!(shorten_name("Ann"), "Ann");
        let long = "é".repeat(100);
        let short = shorten_name(&long);
        assert!(short.len() <= MAX_NAME_BYTES);
        assert_eq!(short.chars().count(), 64);
    }
}
