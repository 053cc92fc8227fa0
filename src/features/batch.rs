//! `POST /api/batch` for backends: `{"events": [{channel, data, users?, idempotency_key?}, ...]}`
//! with 1 to `limits.max_batch` events (default 1,000), committed in one transaction, all or
//! none, and answered with one `{id, cursor}` per event in the order given (each cursor covers
//! its event and every event before it in the batch).
//!
//! Each event follows the rules of `POST /api/publish` (one `channel` each: a batch event does
//! not take `channels`); the first broken one refuses the batch with its status (400, 403, 413)
//! and a message that starts with `events[i]:`, and nothing is stored or delivered. An event
//! whose idempotency key is held already answers the event first published, with
//! `"replayed": true`, and publishes nothing; a key held for a different event refuses the
//! batch with 422, and a key named twice for one channel with 400.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::publish_input as input;
use super::{ManyAnswer, PublishError, publish_many};
use crate::api::openapi::schemas::ErrorBody;
use crate::api::{ApiError, ApiKey, AppState, JsonObject};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(batch_route))
}

/// A batch: its events, each checked by hand so that a wrong one is answered with a message
/// naming it (`events[i]: ...`).
#[derive(Deserialize, ToSchema)]
struct BatchBody {
    /// 1 to `limits.max_batch` events (default 1,000).
    #[schema(value_type = Vec<BatchEvent>, required = true)]
    events: Option<Value>,
}

/// One event of a batch (read by `publish_input::batch_event`): the fields of a publish, with
/// one `channel` (not `channels`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct BatchEvent {
    /// A valid channel name that no feature writes, not `herald:*`.
    #[schema(example = "room:1")]
    channel: String,
    /// A JSON object with a non-empty string `type`.
    #[schema(value_type = Object, example = json!({"type": "new_message", "text": "hi"}))]
    data: Value,
    /// Only these users' connections receive it (strings or integers).
    users: Option<Vec<String>>,
    /// See `POST /api/publish`: a held key answers the first event, `"replayed": true`.
    idempotency_key: Option<String>,
}

/// Publishes several events in one transaction, all or none.
#[utoipa::path(
    post,
    path = "/api/batch",
    operation_id = "batch",
    tag = "publish",
    security(("api_key" = [])),
    request_body(content = BatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Committed: one `{id, cursor}` per event, in order", body = ManyAnswer),
        (status = 400, description = "A wrong batch or event (`events[i]: ...`), or a key named twice for one channel", body = ErrorBody),
        (status = 401, description = "No valid API key", body = ErrorBody),
        (status = 403, description = "An event on a channel a feature writes, or a reserved one", body = ErrorBody),
        (status = 413, description = "An event's `data` over `limits.max_payload_bytes`", body = ErrorBody),
        (status = 422, description = "An idempotency key names another event", body = ErrorBody),
        (status = 503, description = "The store is unavailable or full: nothing was committed", body = ErrorBody),
    ),
)]
async fn batch_route(
    State(state): State<AppState>,
    _key: ApiKey,
    body: Result<JsonObject<BatchBody>, ApiError>,
) -> Result<Json<ManyAnswer>, ApiError> {
    let _timer = super::PublishTimer::start();
    let JsonObject(body) = body?;
    let limits = &state.config.limits;
    let max = limits.max_batch;
    let events = match body.events {
        Some(Value::Array(events)) => events,
        _ => return Err(ApiError::bad_request("events must be a list of events")),
    };
    if events.is_empty() {
        return Err(ApiError::bad_request(format!(
            "events is empty: a batch holds 1 to {max} events"
        )));
    }
    if events.len() > max {
        return Err(ApiError::bad_request(format!(
            "a batch holds at most {max} events (limits.max_batch); this one has {}",
            events.len()
        )));
    }
    let mut drafts = Vec::with_capacity(events.len());
    let mut keys = std::collections::HashSet::new();
    for (index, event) in events.into_iter().enumerate() {
        let draft = input::batch_event(limits, event)
            .map_err(|e| input::about(&format!("events[{index}]"), e))?;
        if let Some(key) = &draft.idempotency_key {
            if !keys.insert((draft.channel.clone(), key.clone())) {
                return Err(ApiError::bad_request(format!(
                    "events[{index}]: idempotency_key {:?} is given twice for channel {}",
                    key.as_str(),
                    draft.channel
                )));
            }
        }
        drafts.push(draft);
    }
    let published = publish_many(&state, drafts)
        .await
        .map_err(|PublishError::Store(e)| input::store_error(e, |i| format!("events[{i}]")))?;
    metrics::counter!("herald_batches_total").increment(1);
    Ok(Json(published.answer(None)))
}
