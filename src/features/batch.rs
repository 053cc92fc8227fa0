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

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::publish_input as input;
use super::{PublishError, publish_many};
use crate::api::{ApiError, ApiKey, AppState, JsonObject};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/batch", post(batch_route))
}

#[derive(Deserialize)]
struct BatchBody {
    events: Option<Value>,
}

async fn batch_route(
    State(state): State<AppState>,
    _key: ApiKey,
    body: Result<JsonObject<BatchBody>, ApiError>,
) -> Result<Json<Value>, ApiError> {
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
