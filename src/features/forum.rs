//! The forum's sockets (the seeds' `ForumConnectionManager`): per thread, global, and v2 (every
//! thread plus global). The application backend keeps the forum's data and publishes through
//! `POST /api/publish`; herald stores, replicates and routes:
//!
//! - thread events (`new_message`, `message_edited`, `message_liked`, ...) on
//!   `forum:thread:{id}` reach that thread's sockets and every v2 socket, with `thread_id`;
//! - global events (`new_thread_created`, `thread_deleted`, `everyone_mention_*`, ...) on
//!   `forum` reach global and v2 sockets;
//! - `forum_notification` and `forum_notification_count` on `user:{id}` reach that user only.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::socket::{FeatureSocket, TypingRoute, id_value, personal_channels};
use crate::api::AppState;
use crate::api::openapi::socket::SocketQuery;
use crate::api::ws::{SocketRequest, serve_socket};
use crate::event::ChannelName;
use crate::hub::SubscriptionSpec;

pub const FORUM_CHANNEL: &str = "forum";
pub const THREAD_PREFIX: &str = "forum:thread:";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(thread_socket))
        .routes(routes!(global_socket))
        .routes(routes!(v2_socket))
}

/// A thread event published without `thread_id` gets it from its channel, so v2 clients can
/// tell threads apart.
pub fn add_thread_id(channel: &ChannelName, data: &mut Map<String, Value>) {
    if let Some(thread_id) = channel.as_str().strip_prefix(THREAD_PREFIX) {
        data.entry("thread_id")
            .or_insert_with(|| id_value(thread_id));
    }
}

/// A thread's socket: its events and the user's own channels; `typing` from the client.
#[utoipa::path(
    get,
    path = "/api/forum/ws/thread/{thread_id}",
    operation_id = "forum_thread_socket",
    tag = "forum",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(("thread_id" = String, Path, description = "The thread"), SocketQuery),
    responses(
        (status = 101, description = "A WebSocket: `connected` with `thread_id`, then \
            `forum:thread:{id}`'s events, `user_typing`, and the user's `user:{id}` and \
            `mentions:{name}`. Refusals close it with 1008 and a reason"),
    ),
)]
async fn thread_socket(
    State(state): State<AppState>,
    Path(thread_id): Path<String>,
    upgrade: WebSocketUpgrade,
    request: SocketRequest,
) -> Response {
    serve_socket(state, upgrade, request, move |user| {
        let channel = ChannelName::new(&format!("{THREAD_PREFIX}{thread_id}"))
            .map_err(|_| "invalid thread id")?;
        let mut channels = vec![channel.clone()];
        channels.extend(personal_channels(user));
        let spec = SubscriptionSpec::new(&user.id, channels, Vec::new());
        let connected =
            json!({ "thread_id": id_value(&thread_id), "message": "Connected to thread updates" });
        let typing = TypingRoute {
            channel,
            context: ("thread_id", id_value(&thread_id)),
        };
        Ok((spec, FeatureSocket::new(connected, Some(typing))))
    })
}

/// The forum's global socket: `forum` and the user's own channels.
#[utoipa::path(
    get,
    path = "/api/forum/ws/global",
    operation_id = "forum_global_socket",
    tag = "forum",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(SocketQuery),
    responses(
        (status = 101, description = "A WebSocket: `connected`, then `forum`'s events and the \
            user's own. Refusals close it with 1008 and a reason"),
    ),
)]
async fn global_socket(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
    request: SocketRequest,
) -> Response {
    serve_socket(state, upgrade, request, |user| {
        let mut channels = vec![ChannelName::internal(FORUM_CHANNEL)];
        channels.extend(personal_channels(user));
        let spec = SubscriptionSpec::new(&user.id, channels, Vec::new());
        let connected = json!({ "message": "Connected to forum updates" });
        Ok((spec, FeatureSocket::new(connected, None)))
    })
}

/// The forum's v2 socket: `forum`, every thread, and the user's own channels.
#[utoipa::path(
    get,
    path = "/api/forum/ws/v2",
    operation_id = "forum_v2_socket",
    tag = "forum",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(SocketQuery),
    responses(
        (status = 101, description = "A WebSocket: `connected` with `version: 2`, then `forum` \
            and every `forum:thread:*` (with `thread_id`) and the user's own channels. \
            Refusals close it with 1008 and a reason"),
    ),
)]
async fn v2_socket(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
    request: SocketRequest,
) -> Response {
    serve_socket(state, upgrade, request, |user| {
        let mut channels = vec![ChannelName::internal(FORUM_CHANNEL)];
        channels.extend(personal_channels(user));
        let spec = SubscriptionSpec::new(&user.id, channels, vec![THREAD_PREFIX.to_string()]);
        let connected = json!({ "message": "Connected to forum updates", "version": 2 });
        Ok((spec, FeatureSocket::new(connected, None)))
    })
}
