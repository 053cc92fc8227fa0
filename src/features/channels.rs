//! Generic channels, the seeds' `WebSocketManager` for any feature of the application:
//! the `/ws?channel=A&channel=B` socket, `POST /api/publish` for backends, and
//! `GET /api/channels/{channel}/history`. A publish into a channel a feature owns (see
//! [`super::owned`]) is refused with 403 naming the feature's endpoint.
//!
//! The history answer says `"truncated": true` when `since` is older than what the channel
//! still keeps: the client should then reload that channel's state from its source.
//!
//! A publish may name `users`: then only those users' connections on the channel receive it
//! (the seeds' `broadcast(message, target_user_ids)`); `user:{id}` is the seeds' `send_to_user`.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::publish;
use super::socket::FeatureSocket;
use crate::api::ws::{SocketRequest, serve_socket};
use crate::api::{ApiError, ApiKey, AppState, Caller, JsonObject};
use crate::auth::{ChannelAccess, may_subscribe};
use crate::event::{ChannelName, Cursor, VersionVector};
use crate::hub::{SubscriptionSpec, render_event};
use crate::store::LogQuery;
use crate::store::state::channels_lost;

/// Most channels one generic socket may name.
pub const MAX_CHANNELS_PER_SOCKET: usize = 64;
/// Most target users one publish may name.
pub const MAX_TARGET_USERS: usize = 10_000;
const MAX_TYPE_LEN: usize = 128;
const DEFAULT_HISTORY_LIMIT: usize = 100;
const MAX_HISTORY_LIMIT: usize = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ws", get(socket))
        .route("/api/publish", post(publish_route))
        .route("/api/channels/{channel}/history", get(history))
}

// ---- publish ----

#[derive(Deserialize)]
struct PublishBody {
    channel: Option<Value>,
    data: Option<Value>,
    #[serde(default)]
    users: Option<Value>,
}

async fn publish_route(
    State(state): State<AppState>,
    _key: ApiKey,
    body: Result<JsonObject<PublishBody>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let JsonObject(body) = body?;
    let channel = match body.channel {
        Some(Value::String(name)) => {
            ChannelName::new(&name).map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        _ => return Err(ApiError::bad_request("channel is required")),
    };
    if channel.is_internal() {
        return Err(ApiError::Forbidden(format!(
            "channel {channel} is reserved"
        )));
    }
    if let Some(endpoint) = super::owned::written_by(&channel) {
        return Err(ApiError::Forbidden(format!(
            "channel \"{channel}\" is written by {endpoint}"
        )));
    }
    let mut data = match body.data {
        Some(Value::Object(data)) => data,
        _ => return Err(ApiError::bad_request("data must be a JSON object")),
    };
    let kind = match data.get("type") {
        Some(Value::String(kind)) if !kind.is_empty() && kind.len() <= MAX_TYPE_LEN => kind.clone(),
        _ => {
            return Err(ApiError::bad_request(
                "data.type must be a non-empty string",
            ));
        }
    };
    let users = parse_users(body.users)?;
    super::forum::add_thread_id(&channel, &mut data);
    let payload = Value::Object(data).to_string();
    let max = state.config.limits.max_payload_bytes;
    if payload.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "data is {} bytes; the limit is {max}",
            payload.len()
        )));
    }
    let published = publish(&state, channel, &kind, payload, users).await?;
    Ok(Json(json!({
        "status": "success",
        "id": published.id,
        "cursor": published.cursor,
        "replicated": published.replicated,
    })))
}

/// `users`: absent or null for everyone on the channel, else a non-empty list of ids (strings or
/// integers).
fn parse_users(users: Option<Value>) -> Result<Option<Vec<String>>, ApiError> {
    let list = match users {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(ApiError::bad_request("users must be a list of user ids")),
    };
    if list.is_empty() || list.len() > MAX_TARGET_USERS {
        return Err(ApiError::bad_request(format!(
            "users must name 1 to {MAX_TARGET_USERS} user ids"
        )));
    }
    list.into_iter()
        .map(|user| match user {
            Value::String(id) if !id.is_empty() && id.len() <= 128 => Ok(id),
            Value::Number(n) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
            _ => Err(ApiError::bad_request("users must be a list of user ids")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

// ---- history ----

async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let channel = ChannelName::new(&channel).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let user_id = match &caller {
        Caller::Backend => None,
        Caller::User(user) => {
            if let ChannelAccess::Denied(reason) = may_subscribe(user, &channel) {
                return Err(ApiError::Forbidden(reason.into()));
            }
            Some(user.id.clone())
        }
    };
    if channel.is_internal() {
        return Err(ApiError::Forbidden(format!(
            "channel {channel} is reserved"
        )));
    }
    let since = match query_values(&uri, "since")
        .into_iter()
        .next()
        .filter(|s| !s.is_empty())
    {
        Some(text) => Cursor::decode(&text).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => VersionVector::new(),
    };
    let limit = match query_values(&uri, "limit").into_iter().next() {
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_HISTORY_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit must be 1 to {MAX_HISTORY_LIMIT}"))
            })?,
        None => DEFAULT_HISTORY_LIMIT,
    };
    let query = LogQuery {
        channels: vec![channel.clone()],
        prefixes: Vec::new(),
        after: since.clone(),
        upto: VersionVector::new(),
        limit,
    };
    let floor_since = since.clone();
    let floor_channel = channel.clone();
    let (page, lost) = state
        .store
        .read(move |c| {
            let lost = channels_lost(c, std::slice::from_ref(&floor_channel), &[], &floor_since)?;
            Ok((query.run_committed(c)?, !lost.is_empty()))
        })
        .await?;
    let mut position = since;
    let mut events = Vec::with_capacity(page.events.len());
    for event in &page.events {
        position.advance(&event.origin, event.seq);
        if user_id.as_deref().is_some_and(|id| !event.is_for_user(id)) {
            continue;
        }
        let rendered = RawValue::from_string(render_event(event, &position))
            .map_err(|_| ApiError::Internal)?;
        events.push(rendered);
    }
    Ok(Json(json!({
        "status": "success",
        "channel": channel.as_str(),
        "events": events,
        "cursor": Cursor::encode(&position),
        "complete": page.complete,
        "truncated": lost,
    })))
}

/// Every value of `key` in the query string, percent-decoded.
pub fn query_values(uri: &Uri, key: &str) -> Vec<String> {
    let Some(query) = uri.query() else {
        return Vec::new();
    };
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

// ---- the generic socket ----

async fn socket(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
    request: SocketRequest,
    uri: Uri,
) -> Response {
    let names = query_values(&uri, "channel");
    serve_socket(state, upgrade, request, move |user| {
        let mut channels: Vec<ChannelName> = Vec::new();
        for name in &names {
            let channel = ChannelName::new(name).map_err(|_| "invalid channel name")?;
            if let ChannelAccess::Denied(reason) = may_subscribe(user, &channel) {
                return Err(reason);
            }
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        if channels.is_empty() {
            return Err("name at least one channel with ?channel=");
        }
        if channels.len() > MAX_CHANNELS_PER_SOCKET {
            return Err("too many channels");
        }
        let spec = SubscriptionSpec::new(&user.id, channels, Vec::new());
        let names: Vec<&str> = spec.channels.iter().map(ChannelName::as_str).collect();
        let connected = json!({ "channels": names, "user_id": user.id });
        Ok((spec, FeatureSocket::new(connected, None)))
    })
}
