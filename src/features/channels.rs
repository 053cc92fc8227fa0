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
//!
//! A publish may name `channels: [...]` instead of `channel`: the same data on each (one event
//! per channel, one transaction), answered with one `{channel, id, cursor}` per channel in
//! order; and an `idempotency_key` (see `crate::store::Store::append_many`): a retry with the
//! same key on the same channel answers the event first published, with `"replayed": true`, and
//! publishes nothing. Many events in one request: `POST /api/batch` (`super::batch`).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::publish_input as input;
use super::socket::FeatureSocket;
use super::{PublishError, publish, publish_many};
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
pub use super::publish_input::MAX_TARGET_USERS;
const DEFAULT_HISTORY_LIMIT: usize = 100;
const MAX_HISTORY_LIMIT: usize = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ws", get(socket))
        .route("/api/publish", post(publish_route))
        .route("/api/channels/{channel}/history", get(history))
        .merge(super::batch::routes())
}

// ---- publish ----

#[derive(Deserialize)]
struct PublishBody {
    channel: Option<Value>,
    #[serde(default)]
    channels: Option<Value>,
    data: Option<Value>,
    #[serde(default)]
    users: Option<Value>,
    #[serde(default)]
    idempotency_key: Option<Value>,
}

/// The answer to a publish on one channel (fields in the order of the other JSON answers).
#[derive(Serialize)]
struct PublishAnswer<'a> {
    cursor: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replayed: bool,
    replicated: bool,
    status: &'static str,
}

async fn publish_route(
    State(state): State<AppState>,
    _key: ApiKey,
    body: Result<JsonObject<PublishBody>, ApiError>,
) -> Result<Response, ApiError> {
    let _timer = super::PublishTimer::start();
    let JsonObject(body) = body?;
    if body.channels.is_some() {
        if body.channel.is_some() {
            return Err(ApiError::bad_request(
                "name either channel or channels, not both",
            ));
        }
        return Ok(publish_channels(&state, body).await?.into_response());
    }
    let channel = input::channel(body.channel)?;
    let (data, kind) = input::data(body.data)?;
    let users = input::users(body.users)?;
    let key = input::idempotency_key(body.idempotency_key)?;
    if key.is_some() {
        let draft = input::draft(&state.config.limits, channel, data, kind, users, key)?;
        let published = publish_many(&state, vec![draft])
            .await
            .map_err(|PublishError::Store(e)| input::store_error(e, |_| String::new()))?;
        let replicated = published.replicated;
        let Some(event) = published.events.into_iter().next() else {
            return Err(ApiError::Internal);
        };
        let answer = PublishAnswer {
            cursor: &event.cursor,
            id: &event.id,
            replayed: event.replayed,
            replicated,
            status: "success",
        };
        return Ok(Json(answer).into_response());
    }
    let draft = input::draft(&state.config.limits, channel, data, kind, users, None)?;
    let published = publish(
        &state,
        draft.channel,
        &draft.kind,
        draft.payload,
        draft.users,
    )
    .await?;
    let answer = PublishAnswer {
        cursor: &published.cursor,
        id: &published.id,
        replayed: false,
        replicated: published.replicated,
        status: "success",
    };
    Ok(Json(answer).into_response())
}

/// `channels: [...]`: the same data on each channel (one event per channel, in the order given,
/// one transaction), answered with `events: [{channel, id, cursor}, ...]` in that order.
async fn publish_channels(state: &AppState, body: PublishBody) -> Result<Json<Value>, ApiError> {
    let max = state.config.limits.max_batch;
    let names = match body.channels {
        Some(Value::Array(names)) if !names.is_empty() && names.len() <= max => names,
        _ => {
            return Err(ApiError::bad_request(format!(
                "channels must be a list of 1 to {max} channel names"
            )));
        }
    };
    let mut channels: Vec<ChannelName> = Vec::with_capacity(names.len());
    for (index, name) in names.into_iter().enumerate() {
        let channel = input::channel(Some(name))
            .map_err(|e| input::about(&format!("channels[{index}]"), e))?;
        if channels.contains(&channel) {
            return Err(ApiError::bad_request(format!(
                "channels[{index}]: channel {channel} is named twice"
            )));
        }
        channels.push(channel);
    }
    let (data, kind) = input::data(body.data)?;
    let users = input::users(body.users)?;
    let key = input::idempotency_key(body.idempotency_key)?;
    let limits = &state.config.limits;
    let drafts = channels
        .iter()
        .map(|channel| {
            input::draft(
                limits,
                channel.clone(),
                data.clone(),
                kind.clone(),
                users.clone(),
                key.clone(),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let published = publish_many(state, drafts)
        .await
        .map_err(|PublishError::Store(e)| input::store_error(e, |i| format!("channels[{i}]")))?;
    Ok(Json(published.answer(Some(&channels))))
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
