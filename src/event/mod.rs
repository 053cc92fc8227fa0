//! The event: the unit that herald stores, replicates and delivers.
//!
//! This module owns the event type and the small value types every other module speaks in:
//! node ids, channel names, the hybrid logical clock, version vectors and client cursors.
//! It does no I/O.

mod channel;
mod cursor;
mod hlc;
mod idempotency;
mod node_id;
mod version_vector;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use channel::{ChannelError, ChannelName, INTERNAL_PREFIX};
pub use cursor::{Cursor, CursorError};
pub use hlc::{Hlc, HybridClock};
pub use idempotency::{IdempotencyKey, IdempotencyKeyError, MAX_KEY_BYTES};
pub use node_id::{NodeId, NodeIdError};
pub use version_vector::VersionVector;

/// One published thing, as stored in every node's log.
///
/// `(origin, seq)` identifies it in the cluster: `seq` is gap-free per origin and assigned when
/// the origin commits the event. Ephemeral events (typing indicators) have `seq == 0`, are never
/// stored, and carry no cursor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub origin: NodeId,
    pub seq: u64,
    pub id: Uuid,
    pub hlc: Hlc,
    pub channel: ChannelName,
    /// The message type, `data.type` of the publish body.
    pub kind: String,
    /// The client-facing JSON object, as text; always an object with a string `type`.
    pub payload: String,
    /// When set, only these users' connections receive the event.
    pub users: Option<Vec<String>>,
    pub ephemeral: bool,
    /// The publisher's idempotency key, when it gave one: a retry with the same key on the
    /// same channel answers this event instead of publishing another.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// What a publisher hands to the store: everything but the identity the origin assigns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventDraft {
    pub channel: ChannelName,
    pub kind: String,
    pub payload: String,
    pub users: Option<Vec<String>>,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Event {
    /// True when `user_id` may receive this event (no target list, or listed in it).
    pub fn is_for_user(&self, user_id: &str) -> bool {
        match &self.users {
            None => true,
            Some(users) => users.iter().any(|u| u == user_id),
        }
    }
}

/// Events are shared between the store, the hub and the backplane without copying.
pub type SharedEvent = Arc<Event>;
