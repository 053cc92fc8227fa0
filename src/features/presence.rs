//! The presence endpoints: `GET /api/channels/{channel}/presence` (who, cluster-wide, sorted
//! by user id, at most `[presence] max_users_per_channel` of them) and
//! `GET /api/channels/{channel}/presence/count`. For the API key, or a user allowed on the
//! channel. Every node answers the same, within the time presence takes to reach it (a few
//! milliseconds on the mesh). What presence is and how it spreads: `crate::presence`.
//!
//! Browsers on any origin may call them with a bearer token (CORS allows any origin, `GET`
//! and `Authorization`, without credentials, so a cookie never authorizes a cross-origin read).

use axum::extract::{Path, State};
use axum::http::{Method, header};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tower_http::cors::{Any, CorsLayer};

use crate::api::{ApiError, AppState, Caller};
use crate::auth::{ChannelAccess, may_subscribe};
use crate::event::ChannelName;

pub fn routes() -> Router<AppState> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET])
        .allow_headers([header::AUTHORIZATION]);
    Router::new()
        .route("/api/channels/{channel}/presence", get(presence))
        .route("/api/channels/{channel}/presence/count", get(count))
        .layer(cors)
}

async fn presence(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let channel = presence_channel(&state, &caller, &channel)?;
    let answer = state.presence.channel(&channel);
    Ok(Json(json!({
        "status": "success",
        "channel": answer.channel,
        "count": answer.count,
        "users": answer.users,
        "truncated": answer.truncated,
    })))
}

async fn count(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let channel = presence_channel(&state, &caller, &channel)?;
    Ok(Json(json!({
        "status": "success",
        "channel": channel.as_str(),
        "count": state.presence.count(&channel),
    })))
}

/// The channel named in the path, when it has presence and the caller may see it.
fn presence_channel(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<ChannelName, ApiError> {
    let channel = ChannelName::new(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Caller::User(user) = caller {
        if let ChannelAccess::Denied(reason) = may_subscribe(user, &channel) {
            return Err(ApiError::Forbidden(reason.into()));
        }
    }
    if !state.presence.config().tracks(channel.as_str()) {
        return Err(ApiError::NotFound(format!(
            "channel {channel} has no presence (see [presence] channels)"
        )));
    }
    Ok(channel)
}

/// The `presence` message a socket sends after `connected` (the track socket's "who is
/// listening"): the same answer as the endpoint, with `type`.
pub fn snapshot_message(state: &AppState, channel: &ChannelName) -> String {
    let answer = state.presence.channel(channel);
    json!({
        "type": "presence",
        "channel": answer.channel,
        "count": answer.count,
        "users": answer.users,
        "truncated": answer.truncated,
    })
    .to_string()
}
