//! Applying events to materialized state, inside the transaction that stores them.
//!
//! Every rule here is order-independent, so that the state is a pure function of the set of
//! events held (DESIGN.md section 2, point 4): last-writer-wins by `(hlc, origin)` for the
//! active broadcast, a grow-only set for acknowledgements. An event whose payload does not
//! match its kind changes no state and is logged; it never blocks the log.

use rusqlite::Connection;

use super::{StoreError, broadcasts, comments};
use crate::event::Event;

/// Event kinds with materialized state, by channel.
pub mod kinds {
    pub const BROADCASTS_CHANNEL: &str = "broadcasts";
    pub const NEW_BROADCAST: &str = "new_broadcast";
    pub const BROADCAST_CLEARED: &str = "broadcast_cleared";
    pub const ACKS_CHANNEL: &str = "herald:acks";
    pub const BROADCAST_ACKNOWLEDGED: &str = "broadcast_acknowledged";
    pub const TRACK_CHANNEL_PREFIX: &str = "track:";
    pub const NEW_COMMENT: &str = "new_comment";
    pub const COMMENT_EDITED: &str = "comment_edited";
    pub const COMMENT_DELETED: &str = "comment_deleted";
}

pub(super) fn apply(connection: &Connection, event: &Event) -> Result<(), StoreError> {
    use kinds::*;
    let outcome = match (event.channel.as_str(), event.kind.as_str()) {
        (BROADCASTS_CHANNEL, NEW_BROADCAST) => broadcasts::apply_new_broadcast(connection, event),
        (BROADCASTS_CHANNEL, BROADCAST_CLEARED) => broadcasts::apply_clear(connection, event),
        (ACKS_CHANNEL, BROADCAST_ACKNOWLEDGED) => {
            broadcasts::apply_acknowledgement(connection, event)
        }
        (channel, kind) if channel.starts_with(TRACK_CHANNEL_PREFIX) => match kind {
            NEW_COMMENT => comments::apply_new(connection, event),
            COMMENT_EDITED => comments::apply_edited(connection, event),
            COMMENT_DELETED => comments::apply_deleted(connection, event),
            _ => Ok(()),
        },
        _ => Ok(()),
    };
    match outcome {
        Err(StoreError::Corrupt(reason)) => {
            tracing::warn!(origin = %event.origin, seq = event.seq, kind = %event.kind, %reason,
                "event payload does not match its kind; state unchanged");
            Ok(())
        }
        other => other,
    }
}
