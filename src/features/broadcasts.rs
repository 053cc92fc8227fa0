//! The admin broadcast banner (the seeds' `broadcast_router.py`): create, clear, acknowledge,
//! the active broadcast, limits, stats, and the `/api/creator/broadcast/ws` socket.
//!
//! State lives in the event log: `new_broadcast` and `broadcast_cleared` on the `broadcasts`
//! channel (last writer wins by hybrid clock), and `broadcast_acknowledged` on the internal
//! `herald:acks` channel (a grow-only set). Materialization is the store's; this module
//! validates, publishes, and reads.
//!
//! The stats' `connected_users` is cluster-wide, from presence (`crate::presence`: the
//! broadcast channel is always counted, never announced); next to it, `unreachable` names the known peers this node cannot reach
//! right now (a partition: their figures may be stale, or missing once gossip marks them dead).

use axum::Json;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::broadcast_answers::{
    AcknowledgeBody, ActiveAnswer, ActiveBroadcast, BroadcastAcknowledged, BroadcastCleared,
    BroadcastCreated, BroadcastLimits, BroadcastStats, BroadcastStatsAnswer, CreateBody,
};
use super::publish;
use crate::api::openapi::schemas::ErrorBody;
use crate::api::openapi::socket::SocketQuery;
use crate::api::ws::{
    Heartbeat, SessionInfo, SocketEndpoint, SocketRequest, error_message, serve_socket,
};
use crate::api::{ApiError, AppState, AuthUser, JsonObject};
use crate::auth::User;
use crate::event::ChannelName;
use crate::hub::SubscriptionSpec;
use crate::store::BroadcastRecord;
use crate::store::state::{self, kinds};

/// Longest broadcast, in Unicode scalar values.
pub const MAX_BROADCAST_CHARS: usize = 280;
const RECOMMENDED_LENGTH: usize = 120;
const MESSAGE_TYPES: &[&str] = &["info", "warning", "alert"];

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(clear))
        .routes(routes!(acknowledge_route))
        .routes(routes!(active))
        .routes(routes!(limits))
        .routes(routes!(stats))
        .routes(routes!(socket))
}

fn broadcasts_channel() -> ChannelName {
    ChannelName::internal(kinds::BROADCASTS_CHANNEL)
}

fn require_creator(user: &User) -> Result<(), ApiError> {
    if user.is_creator_or_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden("creator or admin role required".into()))
    }
}

/// Shows a banner to every connected user (creator or admin).
#[utoipa::path(
    post,
    path = "/api/creator/broadcast",
    operation_id = "broadcast_create",
    tag = "broadcasts",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 200, description = "BroadcastCreated: `new_broadcast` reaches every broadcast socket", body = BroadcastCreated),
        (status = 400, description = "An empty or too long message, or an unknown type", body = ErrorBody),
        (status = 401, description = "No valid user token", body = ErrorBody),
        (status = 403, description = "Neither creator nor admin", body = ErrorBody),
        (status = 503, description = "The store is unavailable or full", body = ErrorBody),
    ),
)]
async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Result<JsonObject<CreateBody>, ApiError>,
) -> Result<Json<BroadcastCreated>, ApiError> {
    require_creator(&user)?;
    let JsonObject(body) = body?;
    let message = match body.message {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.trim().to_string(),
        Some(_) => return Err(ApiError::bad_request("message must be a string")),
    };
    if message.is_empty() {
        return Err(ApiError::bad_request("Broadcast message cannot be empty"));
    }
    let character_count = message.chars().count();
    if character_count > MAX_BROADCAST_CHARS {
        return Err(ApiError::bad_request(format!(
            "Broadcast message too long. Maximum {MAX_BROADCAST_CHARS} characters (got {character_count})"
        )));
    }
    let message_type = match body.message_type {
        None | Some(Value::Null) => "info".to_string(),
        Some(Value::String(kind)) if MESSAGE_TYPES.contains(&kind.as_str()) => kind,
        Some(_) => {
            return Err(ApiError::bad_request(
                "type must be one of info, warning, alert",
            ));
        }
    };
    let id = uuid::Uuid::new_v4().to_string();
    let created_at = now_rfc3339();
    let payload = json!({
        "type": kinds::NEW_BROADCAST,
        "broadcast": {
            "id": id,
            "message": message,
            "message_type": message_type,
            "created_by": user.name,
            "created_by_id": user.id,
            "created_at": created_at,
        }
    });
    let published = publish(
        &state,
        broadcasts_channel(),
        kinds::NEW_BROADCAST,
        payload.to_string(),
        None,
    )
    .await?;
    let sent_to_users = broadcast_listeners(&state);
    tracing::info!(broadcast_id = %id, creator = %user.id, sent_to_users, "broadcast created");
    Ok(Json(BroadcastCreated {
        status: "success",
        id,
        message: format!("Broadcast sent successfully to {sent_to_users} connected users."),
        character_count,
        max_characters: MAX_BROADCAST_CHARS,
        sent_to_users,
        cursor: published.cursor,
    }))
}

/// Clears the active broadcast (creator or admin).
#[utoipa::path(
    post,
    path = "/api/creator/broadcast/clear",
    operation_id = "broadcast_clear",
    tag = "broadcasts",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    responses(
        (status = 200, description = "BroadcastCleared: `broadcast_cleared` reaches every broadcast socket", body = BroadcastCleared),
        (status = 401, description = "No valid user token", body = ErrorBody),
        (status = 403, description = "Neither creator nor admin", body = ErrorBody),
        (status = 503, description = "The store is unavailable or full", body = ErrorBody),
    ),
)]
async fn clear(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<BroadcastCleared>, ApiError> {
    require_creator(&user)?;
    let payload = json!({
        "type": kinds::BROADCAST_CLEARED,
        "message": "Active broadcast has been cleared",
    });
    let published = publish(
        &state,
        broadcasts_channel(),
        kinds::BROADCAST_CLEARED,
        payload.to_string(),
        None,
    )
    .await?;
    let cleared_for_users = broadcast_listeners(&state);
    tracing::info!(creator = %user.id, "broadcast cleared");
    Ok(Json(BroadcastCleared {
        status: "success",
        message: "Broadcast cleared successfully",
        cleared_for_users,
        cursor: published.cursor,
    }))
}

/// Acknowledges a broadcast: it is no longer shown to this user.
#[utoipa::path(
    post,
    path = "/api/creator/broadcast/acknowledge",
    operation_id = "broadcast_acknowledge",
    tag = "broadcasts",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    request_body(content = AcknowledgeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "BroadcastAcknowledged (again: no change)", body = BroadcastAcknowledged),
        (status = 400, description = "No broadcast id", body = ErrorBody),
        (status = 401, description = "No valid user token", body = ErrorBody),
        (status = 404, description = "No such broadcast is known here", body = ErrorBody),
        (status = 503, description = "The store is unavailable or full", body = ErrorBody),
    ),
)]
async fn acknowledge_route(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    body: Result<JsonObject<AcknowledgeBody>, ApiError>,
) -> Result<Json<BroadcastAcknowledged>, ApiError> {
    let JsonObject(body) = body?;
    let broadcast_id = match body.broadcast_id {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => return Err(ApiError::bad_request("Broadcast ID is required")),
    };
    acknowledge(&state, &user, &broadcast_id).await?;
    Ok(Json(BroadcastAcknowledged {
        status: "success",
        message: "Broadcast acknowledged",
    }))
}

/// Records that `user` acknowledged `broadcast_id`: 404 when no such broadcast is known here;
/// a repeated acknowledgement is a no-op.
async fn acknowledge(state: &AppState, user: &User, broadcast_id: &str) -> Result<(), ApiError> {
    if broadcast_id.len() > 64 {
        return Err(ApiError::NotFound("Broadcast not found".into()));
    }
    let (id, uid) = (broadcast_id.to_string(), user.id.clone());
    let (exists, acknowledged) = state
        .store
        .read(move |c| {
            Ok((
                state::broadcast_exists(c, &id)?,
                state::is_acknowledged(c, &id, &uid)?,
            ))
        })
        .await?;
    if !exists {
        return Err(ApiError::NotFound("Broadcast not found".into()));
    }
    if acknowledged {
        return Ok(());
    }
    let payload = json!({
        "type": kinds::BROADCAST_ACKNOWLEDGED,
        "broadcast_id": broadcast_id,
        "user_id": user.id,
    });
    let channel = ChannelName::internal(kinds::ACKS_CHANNEL);
    publish(
        state,
        channel,
        kinds::BROADCAST_ACKNOWLEDGED,
        payload.to_string(),
        None,
    )
    .await?;
    Ok(())
}

/// The active broadcast unless `user` acknowledged it.
async fn unacknowledged_active(
    state: &AppState,
    user: &User,
) -> Result<Option<BroadcastRecord>, ApiError> {
    let uid = user.id.clone();
    let record = state
        .store
        .read(move |c| match state::active_broadcast(c)? {
            Some(record) if !state::is_acknowledged(c, &record.id, &uid)? => Ok(Some(record)),
            _ => Ok(None),
        })
        .await?;
    Ok(record)
}

/// The active broadcast, unless this user acknowledged it.
#[utoipa::path(
    get,
    path = "/api/creator/broadcast/active",
    operation_id = "broadcast_active",
    tag = "broadcasts",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    responses(
        (status = 200, description = "The active broadcast, or null", body = ActiveAnswer),
        (status = 401, description = "No valid user token", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ),
)]
async fn active(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<ActiveAnswer>, ApiError> {
    let broadcast = unacknowledged_active(&state, &user)
        .await?
        .map(ActiveBroadcast::from);
    Ok(Json(ActiveAnswer { broadcast }))
}

/// The limits of a broadcast.
#[utoipa::path(
    get,
    path = "/api/creator/broadcast/limits",
    operation_id = "broadcast_limits",
    tag = "broadcasts",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    responses(
        (status = 200, description = "The limits, and whether a broadcast is active", body = BroadcastLimits),
        (status = 401, description = "No valid user token", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ),
)]
async fn limits(
    State(state): State<AppState>,
    AuthUser(_user): AuthUser,
) -> Result<Json<BroadcastLimits>, ApiError> {
    let active = state.store.read(state::active_broadcast).await?;
    Ok(Json(BroadcastLimits {
        max_characters: MAX_BROADCAST_CHARS,
        recommended_length: RECOMMENDED_LENGTH,
        current_active_broadcasts: usize::from(active.is_some()),
    }))
}

/// This creator's broadcast figures (creator or admin).
#[utoipa::path(
    get,
    path = "/api/creator/broadcast/stats",
    operation_id = "broadcast_stats",
    tag = "broadcasts",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    responses(
        (status = 200, description = "Broadcasts today, the active one, and who listens", body = BroadcastStatsAnswer),
        (status = 401, description = "No valid user token", body = ErrorBody),
        (status = 403, description = "Neither creator nor admin", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ),
)]
async fn stats(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<Json<BroadcastStatsAnswer>, ApiError> {
    require_creator(&user)?;
    let since_ms = start_of_utc_day_ms();
    let creator = user.id.clone();
    let (broadcasts_today, active) = state
        .store
        .read(move |c| {
            Ok((
                state::broadcasts_by_creator_since(c, &creator, since_ms)?,
                state::active_broadcast(c)?.is_some(),
            ))
        })
        .await?;
    let channel = broadcasts_channel();
    Ok(Json(BroadcastStatsAnswer {
        status: "success",
        stats: BroadcastStats {
            broadcasts_today,
            active_broadcast: active,
            connected_users: broadcast_listeners(&state),
            connected_users_local: state.presence.local_count(&channel),
            unreachable: unreachable_peers(&state),
            max_characters: MAX_BROADCAST_CHARS,
        },
    }))
}

/// Users connected to the broadcast socket across the cluster (presence's count).
fn broadcast_listeners(state: &AppState) -> u64 {
    state.presence.count(&broadcasts_channel())
}

/// The known peers this node cannot reach (see `backplane::mesh_quorum`); empty for a
/// backplane without the notion.
fn unreachable_peers(state: &AppState) -> Vec<String> {
    state
        .backplane
        .health()
        .partition
        .map(|view| view.unreachable)
        .unwrap_or_default()
}

// ---- the socket ----

/// The broadcast banner's socket.
#[utoipa::path(
    get,
    path = "/api/creator/broadcast/ws",
    operation_id = "broadcast_socket",
    tag = "broadcasts",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(SocketQuery),
    responses(
        (status = 101, description = "A WebSocket: `connected`, `active_broadcast` (unless \
            acknowledged), then `new_broadcast` and `broadcast_cleared`; the client may send \
            `acknowledge_broadcast {broadcast_id}` and `get_active_broadcast`; the server pings \
            with the text `ping`. Refusals close it with 1008 and a reason"),
    ),
)]
async fn socket(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
    request: SocketRequest,
) -> Response {
    serve_socket(state, upgrade, request, |user| {
        let spec = SubscriptionSpec::new(&user.id, vec![broadcasts_channel()], Vec::new());
        Ok((spec, BroadcastSocket))
    })
}

struct BroadcastSocket;

impl BroadcastSocket {
    async fn active_message(state: &AppState, user: &User) -> Option<String> {
        let record = unacknowledged_active(state, user).await.ok().flatten()?;
        Some(
            json!({
                "type": "active_broadcast",
                "broadcast": {
                    "id": record.id,
                    "message": record.message,
                    "message_type": record.message_type,
                    "created_by": record.created_by,
                    "created_at": record.created_at,
                }
            })
            .to_string(),
        )
    }
}

impl SocketEndpoint for BroadcastSocket {
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::TextPing
    }

    fn connected_fields(&self, _session: &SessionInfo) -> serde_json::Map<String, Value> {
        let mut fields = serde_json::Map::new();
        fields.insert(
            "message".into(),
            json!("Connected to broadcast live updates"),
        );
        fields
    }

    async fn on_connect(&self, state: &AppState, session: &SessionInfo) -> Vec<String> {
        Self::active_message(state, &session.user)
            .await
            .into_iter()
            .collect()
    }

    async fn on_client_message(
        &self,
        state: &AppState,
        session: &SessionInfo,
        message: Value,
    ) -> Vec<String> {
        match message.get("type").and_then(Value::as_str) {
            Some("acknowledge_broadcast") => {
                let Some(id) = message.get("broadcast_id").and_then(Value::as_str) else {
                    return vec![error_message("Broadcast ID is required")];
                };
                match acknowledge(state, &session.user, id).await {
                    Ok(()) => vec![
                        json!({ "type": "broadcast_acknowledged", "broadcast_id": id }).to_string(),
                    ],
                    Err(error) => vec![error_message(&error.to_string())],
                }
            }
            Some("get_active_broadcast") => Self::active_message(state, &session.user)
                .await
                .into_iter()
                .collect(),
            _ => vec![error_message("unknown message type")],
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn start_of_utc_day_ms() -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    now_ms - now_ms % 86_400_000
}
