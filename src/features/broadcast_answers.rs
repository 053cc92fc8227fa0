//! The JSON answers of the broadcast endpoints (`super::broadcasts`), as types: what the
//! handlers write and what the OpenAPI document describes. Fields are declared in the order
//! the JSON has them (sorted by name).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::store::BroadcastRecord;

/// A broadcast's creation (`POST /api/creator/broadcast`), as the body reads it.
#[derive(Deserialize, ToSchema)]
pub struct CreateBody {
    /// The banner's text: 1 to 280 characters once trimmed.
    #[serde(default)]
    #[schema(value_type = String, required = true, example = "Maintenance at 18:00 UTC")]
    pub message: Option<Value>,
    /// `info` (the default), `warning` or `alert`.
    #[serde(default, rename = "type")]
    #[schema(value_type = Option<MessageType>)]
    pub message_type: Option<Value>,
}

/// What a broadcast's `type` may be.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum MessageType {
    Info,
    Warning,
    Alert,
}

/// An acknowledgement (`POST /api/creator/broadcast/acknowledge`), as the body reads it.
#[derive(Deserialize, ToSchema)]
pub struct AcknowledgeBody {
    /// The acknowledged broadcast's id.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    pub broadcast_id: Option<Value>,
}

/// The answer of `POST /api/creator/broadcast`.
#[derive(Serialize, ToSchema)]
pub struct BroadcastCreated {
    /// The message's length, in Unicode scalar values.
    pub character_count: usize,
    /// The event's position in the log.
    pub cursor: String,
    /// The new broadcast's id.
    pub id: String,
    pub max_characters: usize,
    /// For a person: how many connected users it was sent to.
    pub message: String,
    /// Users on the broadcast socket, cluster-wide.
    pub sent_to_users: u64,
    /// Always `success`.
    #[schema(example = "success")]
    pub status: &'static str,
}

/// The answer of `POST /api/creator/broadcast/clear`.
#[derive(Serialize, ToSchema)]
pub struct BroadcastCleared {
    /// Users on the broadcast socket, cluster-wide.
    pub cleared_for_users: u64,
    /// The event's position in the log.
    pub cursor: String,
    pub message: &'static str,
    /// Always `success`.
    #[schema(example = "success")]
    pub status: &'static str,
}

/// The answer of `POST /api/creator/broadcast/acknowledge`.
#[derive(Serialize, ToSchema)]
pub struct BroadcastAcknowledged {
    pub message: &'static str,
    /// Always `success`.
    #[schema(example = "success")]
    pub status: &'static str,
}

/// The answer of `GET /api/creator/broadcast/active`.
#[derive(Serialize, ToSchema)]
pub struct ActiveAnswer {
    /// The active broadcast, or null when there is none or this user acknowledged it.
    pub broadcast: Option<ActiveBroadcast>,
}

/// The active broadcast, as `GET /api/creator/broadcast/active` shows it.
#[derive(Serialize, ToSchema)]
pub struct ActiveBroadcast {
    /// RFC 3339.
    pub created_at: String,
    /// The creator's user id.
    pub created_by: String,
    pub id: String,
    pub message: String,
    /// `info`, `warning` or `alert`.
    #[serde(rename = "type")]
    #[schema(value_type = MessageType)]
    pub message_type: String,
}

impl From<BroadcastRecord> for ActiveBroadcast {
    fn from(record: BroadcastRecord) -> Self {
        Self {
            created_at: record.created_at,
            created_by: record.created_by,
            id: record.id,
            message: record.message,
            message_type: record.message_type,
        }
    }
}

/// The answer of `GET /api/creator/broadcast/limits`.
#[derive(Serialize, ToSchema)]
pub struct BroadcastLimits {
    /// 1 when a broadcast is active, else 0.
    pub current_active_broadcasts: usize,
    pub max_characters: usize,
    pub recommended_length: usize,
}

/// The answer of `GET /api/creator/broadcast/stats`.
#[derive(Serialize, ToSchema)]
pub struct BroadcastStatsAnswer {
    pub stats: BroadcastStats,
    /// Always `success`.
    #[schema(example = "success")]
    pub status: &'static str,
}

/// The figures of [`BroadcastStatsAnswer`].
#[derive(Serialize, ToSchema)]
pub struct BroadcastStats {
    pub active_broadcast: bool,
    /// This creator's broadcasts since the start of the UTC day.
    pub broadcasts_today: u64,
    /// Users on the broadcast socket, cluster-wide (presence's count).
    pub connected_users: u64,
    /// Users on the broadcast socket of this node.
    pub connected_users_local: u64,
    pub max_characters: usize,
    /// The known peers this node cannot reach (their figures may be stale).
    pub unreachable: Vec<String>,
}
