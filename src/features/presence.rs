//! The presence endpoints: `GET /api/channels/{channel}/presence` (who, cluster-wide, sorted
//! by user id, at most `[presence] max_users_per_channel` of them) and
//! `GET /api/channels/{channel}/presence/count`. For the API key, or a user allowed on the
//! channel. Every node answers the same, within the time presence takes to reach it (a few
//! milliseconds on the mesh). What presence is and how it spreads: `crate::presence`.
//!
//! Browsers on any origin may call them with a bearer token (CORS allows any origin, `GET`
//! and `Authorization`, without credentials, so a cookie never authorizes a cross-origin read).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, header};
use serde::Serialize;
use serde_json::json;
use tower_http::cors::{Any, CorsLayer};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::openapi::schemas::ErrorBody;
use crate::api::{ApiError, AppState, Caller};
use crate::auth::{ChannelAccess, may_subscribe};
use crate::event::ChannelName;
use crate::presence::PresentUser;

pub fn routes() -> OpenApiRouter<AppState> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET])
        .allow_headers([header::AUTHORIZATION]);
    OpenApiRouter::new()
        .routes(routes!(presence))
        .routes(routes!(count))
        .layer(cors)
}

/// The answer of `GET /api/channels/{channel}/presence` (fields in the order of the JSON).
#[derive(Serialize, ToSchema)]
struct PresenceAnswer {
    channel: String,
    /// Distinct users on the channel, cluster-wide.
    count: u64,
    /// Always `success`.
    #[schema(example = "success")]
    status: &'static str,
    /// True when `users` does not name everyone `count` counts.
    truncated: bool,
    /// Sorted by user id, at most `[presence] max_users_per_channel`.
    #[serde(serialize_with = "crate::api::sorted::keys")]
    users: Vec<PresentUser>,
}

/// The answer of `GET /api/channels/{channel}/presence/count`.
#[derive(Serialize, ToSchema)]
struct PresenceCount {
    channel: String,
    /// Distinct users on the channel, cluster-wide.
    count: u64,
    /// Always `success`.
    #[schema(example = "success")]
    status: &'static str,
}

/// Who is on a channel, cluster-wide.
#[utoipa::path(
    get,
    path = "/api/channels/{channel}/presence",
    operation_id = "presence",
    tag = "presence",
    security(("api_key" = []), ("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(("channel" = String, Path, description = "A channel with presence (`[presence] channels`)")),
    responses(
        (status = 200, description = "The channel's users", body = PresenceAnswer),
        (status = 400, description = "An invalid channel name", body = ErrorBody),
        (status = 401, description = "Neither the API key nor a valid user token", body = ErrorBody),
        (status = 403, description = "The user may not read this channel", body = ErrorBody),
        (status = 404, description = "The channel has no presence", body = ErrorBody),
    ),
)]
async fn presence(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
) -> Result<Json<PresenceAnswer>, ApiError> {
    let channel = presence_channel(&state, &caller, &channel)?;
    let answer = state.presence.channel(&channel);
    Ok(Json(PresenceAnswer {
        status: "success",
        channel: answer.channel,
        count: answer.count,
        users: answer.users,
        truncated: answer.truncated,
    }))
}

/// How many users are on a channel, cluster-wide.
#[utoipa::path(
    get,
    path = "/api/channels/{channel}/presence/count",
    operation_id = "presence_count",
    tag = "presence",
    security(("api_key" = []), ("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(("channel" = String, Path, description = "A channel with presence (`[presence] channels`)")),
    responses(
        (status = 200, description = "The channel's count", body = PresenceCount),
        (status = 400, description = "An invalid channel name", body = ErrorBody),
        (status = 401, description = "Neither the API key nor a valid user token", body = ErrorBody),
        (status = 403, description = "The user may not read this channel", body = ErrorBody),
        (status = 404, description = "The channel has no presence", body = ErrorBody),
    ),
)]
async fn count(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
) -> Result<Json<PresenceCount>, ApiError> {
    let channel = presence_channel(&state, &caller, &channel)?;
    Ok(Json(PresenceCount {
        status: "success",
        channel: channel.as_str().to_string(),
        count: state.presence.count(&channel),
    }))
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
