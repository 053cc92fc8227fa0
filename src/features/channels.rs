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

use axum::Json;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::publish_input as input;
use super::socket::FeatureSocket;
use super::{ManyAnswer, PublishError, publish, publish_many};
use crate::api::openapi::schemas::{ErrorBody, RenderedEvent};
use crate::api::openapi::socket::SocketQuery;
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

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(socket))
        .routes(routes!(publish_route))
        .routes(routes!(history))
        .merge(super::batch::routes())
}

// ---- publish ----

/// A publish: `channel` (or `channels`), `data`, and optionally `users` and
/// `idempotency_key`. Each field is checked by hand, so that a wrong one is answered 400 with
/// a message naming it.
#[derive(Deserialize, ToSchema)]
struct PublishBody {
    /// The channel: a valid name that no feature writes (`broadcasts`, `track:*`) and not
    /// `herald:*`. Required unless `channels` is given.
    #[schema(value_type = Option<String>, example = "forum:thread:7")]
    channel: Option<Value>,
    /// Instead of `channel`: 1 to `limits.max_batch` channels, the same data published on
    /// each (one event per channel, one transaction).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    channels: Option<Value>,
    /// The event: a JSON object with a non-empty string `type` (at most 128 bytes), at most
    /// `limits.max_payload_bytes` as JSON.
    #[schema(value_type = Object, required = true, example = json!({"type": "new_message", "text": "hi"}))]
    data: Option<Value>,
    /// Only these users' connections receive it (1 to 10,000 ids, strings or integers); absent
    /// or null for everyone on the channel.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    users: Option<Value>,
    /// A retry with the same key on the same channel answers the event first published, with
    /// `"replayed": true`, and publishes nothing.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    idempotency_key: Option<Value>,
}

/// The answer to a publish on one channel (fields in the order of the other JSON answers).
#[derive(Serialize, ToSchema)]
struct PublishAnswer {
    /// Resume here (`?since=`) to get the events after this one.
    cursor: String,
    id: String,
    /// Present (true) when the idempotency key named an event held already.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    replayed: bool,
    /// True when another node confirmed storing the event before this answer
    /// (`replication = 2`).
    replicated: bool,
    /// Always `success`.
    #[schema(example = "success")]
    status: &'static str,
}

/// The answer to a publish: one event's, or with `channels` one entry per channel.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum Publication {
    One(PublishAnswer),
    Many(ManyAnswer),
}

/// Publishes an event on a channel, or the same data on several, after the commit.
#[utoipa::path(
    post,
    path = "/api/publish",
    operation_id = "publish",
    tag = "publish",
    security(("api_key" = [])),
    request_body(content = PublishBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Committed: on one channel `{status, id, cursor, \
            replicated, replayed?}`; with `channels`, one `{channel, id, cursor}` per channel \
            in order", body = Publication),
        (status = 400, description = "A field is missing or wrong (the message names it)", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "A channel a feature writes (naming its endpoint), or a reserved one", body = ErrorBody),
        (status = 413, description = "`data` over `limits.max_payload_bytes`", body = ErrorBody),
        (status = 422, description = "The idempotency key names another event", body = ErrorBody),
        (status = 503, description = "The store is unavailable or full: nothing was committed", body = ErrorBody),
    ),
)]
async fn publish_route(
    State(state): State<AppState>,
    _key: ApiKey,
    body: Result<JsonObject<PublishBody>, ApiError>,
) -> Result<Json<Publication>, ApiError> {
    let _timer = super::PublishTimer::start();
    let JsonObject(body) = body?;
    if body.channels.is_some() {
        if body.channel.is_some() {
            return Err(ApiError::bad_request(
                "name either channel or channels, not both",
            ));
        }
        let answer = publish_channels(&state, body).await?;
        return Ok(Json(Publication::Many(answer)));
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
            cursor: event.cursor,
            id: event.id,
            replayed: event.replayed,
            replicated,
            status: "success",
        };
        return Ok(Json(Publication::One(answer)));
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
        cursor: published.cursor,
        id: published.id,
        replayed: false,
        replicated: published.replicated,
        status: "success",
    };
    Ok(Json(Publication::One(answer)))
}

/// `channels: [...]`: the same data on each channel (one event per channel, in the order given,
/// one transaction), answered with `events: [{channel, id, cursor}, ...]` in that order.
async fn publish_channels(state: &AppState, body: PublishBody) -> Result<ManyAnswer, ApiError> {
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
    Ok(published.answer(Some(&channels)))
}

// ---- history ----

/// The answer of `GET /api/channels/{channel}/history` (fields in the order of the JSON).
#[derive(Serialize, ToSchema)]
struct History {
    channel: String,
    /// True when this page reaches the newest event; else ask again from `cursor`.
    complete: bool,
    /// Resume here: the position after this page.
    cursor: String,
    /// The events after `since`, oldest first, at most `limit` (a user sees only those
    /// addressed to them).
    #[schema(value_type = Vec<RenderedEvent>)]
    events: Vec<Value>,
    /// Always `success`.
    #[schema(example = "success")]
    status: &'static str,
    /// True when `since` is older than what the channel still keeps: reload the channel's
    /// state from its source.
    truncated: bool,
}

/// A channel's events after a cursor.
#[utoipa::path(
    get,
    path = "/api/channels/{channel}/history",
    operation_id = "history",
    tag = "channels",
    security(("api_key" = []), ("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(
        ("channel" = String, Path, description = "The channel"),
        ("since" = Option<String>, Query, description = "A cursor: the events after it (default: from the start)"),
        ("limit" = Option<usize>, Query, description = "1 to 1000 events (default 100)"),
    ),
    responses(
        (status = 200, description = "A page of events", body = History),
        (status = 400, description = "An invalid channel, cursor or limit", body = ErrorBody),
        (status = 401, description = "Neither the API key nor a valid user token", body = ErrorBody),
        (status = 403, description = "The user may not read this channel, or it is reserved", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ),
)]
async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(channel): Path<String>,
    uri: Uri,
) -> Result<Json<History>, ApiError> {
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
        // A tree, as the answer always had: each event's keys come out sorted.
        let rendered: Value = serde_json::from_str(&render_event(event, &position))
            .map_err(|_| ApiError::Internal)?;
        events.push(rendered);
    }
    Ok(Json(History {
        status: "success",
        channel: channel.as_str().to_string(),
        events,
        cursor: Cursor::encode(&position),
        complete: page.complete,
        truncated: lost,
    }))
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

/// The generic socket: the events of the channels named with `?channel=`.
#[utoipa::path(
    get,
    path = "/ws",
    operation_id = "channels_socket",
    tag = "channels",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(
        ("channel" = Vec<String>, Query, explode = true, description = "A channel to listen to, 1 to 64 of them (`user:{id}` only for one's own id)"),
        SocketQuery,
    ),
    responses(
        (status = 101, description = "A WebSocket: `connected` with `channels`, `user_id` and \
            `cursor`, then the channels' events. Refusals (no channel, a forbidden one, a bad \
            token or cursor) close the socket with 1008 and a reason"),
    ),
)]
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
