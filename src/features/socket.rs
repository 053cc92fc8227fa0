//! The socket endpoint most features use, described by data: what `connected` says, where
//! the client's typing indicators go, and which channel's presence it sends after `connected`
//! (the track socket's "who is listening"). Plus the channels every user's sockets share.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::publish_ephemeral;
use crate::api::AppState;
use crate::api::ws::{SessionInfo, SocketEndpoint, error_message};
use crate::auth::User;
use crate::event::ChannelName;

/// Typing indicators faster than this from one connection are dropped.
const TYPING_MIN_INTERVAL: Duration = Duration::from_millis(250);

/// Where a socket's `typing` messages go: a `user_typing` event on `channel`, carrying
/// `context` (for example `track_id`).
pub struct TypingRoute {
    pub channel: ChannelName,
    pub context: (&'static str, Value),
}

pub struct FeatureSocket {
    pub connected: Map<String, Value>,
    pub typing: Option<TypingRoute>,
    /// A channel whose presence is sent after `connected` (`{"type":"presence",...}`).
    pub presence: Option<ChannelName>,
    last_typing: Mutex<Option<Instant>>,
}

impl FeatureSocket {
    pub fn new(connected: Value, typing: Option<TypingRoute>) -> Self {
        Self {
            connected: match connected {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            typing,
            presence: None,
            last_typing: Mutex::new(None),
        }
    }

    /// Sends `channel`'s presence right after `connected`; the socket's own user is in it
    /// (it entered before the greeting), and joins and leaves follow as events.
    pub fn with_presence_snapshot(mut self, channel: ChannelName) -> Self {
        self.presence = Some(channel);
        self
    }

    fn typing_allowed(&self) -> bool {
        let mut last = self.last_typing.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < TYPING_MIN_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }
}

impl SocketEndpoint for FeatureSocket {
    fn connected_fields(&self, _session: &SessionInfo) -> Map<String, Value> {
        self.connected.clone()
    }

    async fn on_connect(&self, state: &AppState, _session: &SessionInfo) -> Vec<String> {
        match &self.presence {
            Some(channel) if state.presence.config().tracks(channel.as_str()) => {
                vec![super::presence::snapshot_message(state, channel)]
            }
            _ => Vec::new(),
        }
    }

    async fn on_client_message(
        &self,
        state: &AppState,
        session: &SessionInfo,
        message: Value,
    ) -> Vec<String> {
        match (message.get("type").and_then(Value::as_str), &self.typing) {
            (Some("typing"), Some(route)) => {
                if self.typing_allowed() {
                    let is_typing = message
                        .get("is_typing")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    let mut payload = json!({
                        "type": "user_typing",
                        "user_id": session.user.id,
                        "username": session.user.name,
                        "is_typing": is_typing,
                    });
                    payload[route.context.0] = route.context.1.clone();
                    publish_ephemeral(
                        state,
                        route.channel.clone(),
                        "user_typing",
                        payload.to_string(),
                    );
                }
                Vec::new()
            }
            _ => vec![error_message("unknown message type")],
        }
    }
}

/// `user:{id}` (the user's own notifications) and `mentions:{name}` (their @mentions), where
/// the id and the lowercased name make valid channel names.
pub fn personal_channels(user: &User) -> Vec<ChannelName> {
    let mut channels = Vec::new();
    if let Ok(channel) = ChannelName::new(&format!("user:{}", user.id)) {
        channels.push(channel);
    }
    if let Some(channel) = mentions_channel(&user.name) {
        channels.push(channel);
    }
    channels
}

/// The channel that carries @mentions of `username`.
pub fn mentions_channel(username: &str) -> Option<ChannelName> {
    ChannelName::new(&format!("mentions:{}", username.to_lowercase())).ok()
}

/// An id from a path, as it should appear in messages: a number when it is one.
pub fn id_value(id: &str) -> Value {
    id.parse::<u64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(id))
}
