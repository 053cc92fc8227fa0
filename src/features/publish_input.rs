//! Checking what a backend publishes, for `POST /api/publish` (one channel or several) and
//! `POST /api/batch`: the same rules for every event, each broken one answered 400 with a
//! message naming it (403 for a channel a feature owns or that is reserved, 413 for a payload
//! over `limits.max_payload_bytes`).
//!
//! An event is `{channel, data: {type, ...}, users?, idempotency_key?}`: a valid channel name
//! that no feature owns, a JSON object with a non-empty string `type`, optional target users,
//! and an optional idempotency key (see [`crate::event::IdempotencyKey`]).

use serde_json::{Map, Value};

use crate::api::ApiError;
use crate::config::Limits;
use crate::event::{ChannelName, EventDraft, IdempotencyKey};
use crate::store::StoreError;

/// Most target users one publish may name.
pub const MAX_TARGET_USERS: usize = 10_000;
const MAX_TYPE_LEN: usize = 128;

/// A channel a backend may publish on: valid, not reserved, not written by a feature.
pub fn channel(value: Option<Value>) -> Result<ChannelName, ApiError> {
    let channel = match value {
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
    Ok(channel)
}

/// `data`: a JSON object with a non-empty string `type`, answered with that type.
pub fn data(value: Option<Value>) -> Result<(Map<String, Value>, String), ApiError> {
    let data = match value {
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
    Ok((data, kind))
}

/// `users`: absent or null for everyone on the channel, else a non-empty list of ids (strings or
/// integers).
pub fn users(users: Option<Value>) -> Result<Option<Vec<String>>, ApiError> {
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

/// `idempotency_key`: absent or null for none, else a valid key.
pub fn idempotency_key(value: Option<Value>) -> Result<Option<IdempotencyKey>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(key)) => IdempotencyKey::new(&key)
            .map(Some)
            .map_err(|e| ApiError::bad_request(e.to_string())),
        Some(_) => Err(ApiError::bad_request("idempotency_key must be a string")),
    }
}

/// The draft of `data` on `channel`: the forum's `thread_id` added, the payload's size checked.
pub fn draft(
    limits: &Limits,
    channel: ChannelName,
    mut data: Map<String, Value>,
    kind: String,
    users: Option<Vec<String>>,
    idempotency_key: Option<IdempotencyKey>,
) -> Result<EventDraft, ApiError> {
    super::forum::add_thread_id(&channel, &mut data);
    // Written straight into bytes (`Display` goes through a formatter, number by number).
    let payload = serde_json::to_string(&data).expect("a JSON object always serializes");
    let max = limits.max_payload_bytes;
    if payload.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "data is {} bytes; the limit is {max}",
            payload.len()
        )));
    }
    Ok(EventDraft {
        channel,
        kind,
        payload,
        users,
        idempotency_key,
    })
}

/// One event object of a batch, checked.
pub fn batch_event(limits: &Limits, value: Value) -> Result<EventDraft, ApiError> {
    let Value::Object(mut event) = value else {
        return Err(ApiError::bad_request("must be a JSON object"));
    };
    if event.contains_key("channels") {
        return Err(ApiError::bad_request(
            "a batch event names one channel (channel), not channels",
        ));
    }
    let channel = channel(event.remove("channel"))?;
    let (data, kind) = data(event.remove("data"))?;
    let users = users(event.remove("users"))?;
    let key = idempotency_key(event.remove("idempotency_key"))?;
    draft(limits, channel, data, kind, users, key)
}

/// The same error, its message prefixed with which event of the request it is about.
pub fn about(what: &str, error: ApiError) -> ApiError {
    match error {
        ApiError::BadRequest(message) => ApiError::BadRequest(format!("{what}: {message}")),
        ApiError::Forbidden(message) => ApiError::Forbidden(format!("{what}: {message}")),
        ApiError::PayloadTooLarge(message) => {
            ApiError::PayloadTooLarge(format!("{what}: {message}"))
        }
        other => other,
    }
}

/// A store error of an append-many: an idempotency conflict is the caller's (422, naming the
/// event with `label`, or not at all when it answers ""), anything else the store's.
pub fn store_error(error: StoreError, label: impl Fn(usize) -> String) -> ApiError {
    let prefix = |index: usize| match label(index) {
        label if label.is_empty() => String::new(),
        label => format!("{label}: "),
    };
    match error {
        StoreError::IdempotencyConflict {
            index,
            key,
            existing: Some(id),
        } => ApiError::Unprocessable(format!(
            "{}idempotency_key {key:?} already names event {id}, published with another type, data or users",
            prefix(index)
        )),
        StoreError::IdempotencyConflict {
            index,
            key,
            existing: None,
        } => ApiError::bad_request(format!(
            "{}idempotency_key {key:?} is given twice for one channel",
            prefix(index)
        )),
        other => other.into(),
    }
}
