//! Track comments (the seeds' comment router): create, list, edit (author), delete (author,
//! creator, team or admin), the `/api/ws/track/{track_id}` socket with typing indicators, and
//! `mention` messages to every `@username` in a comment, on every socket of that user, on
//! whichever node.
//!
//! Routing is server-side: comment events live on `track:{track_id}`, so a client watching
//! track A never receives track B's comments. Mentions travel on `mentions:{username}`, a
//! channel each user's track and forum sockets listen to. Content is 1 to
//! [`MAX_COMMENT_CHARS`] characters; `timestamp` (the position in the track, seconds) is a
//! finite number >= 0.

use axum::Json;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::comment_answers::{
    CommentBody, CommentCreated, CommentDeleted, CommentEdited, CommentList,
};
use super::publish;
use super::socket::{FeatureSocket, TypingRoute, mentions_channel, personal_channels};
use crate::api::openapi::schemas::ErrorBody;
use crate::api::openapi::socket::SocketQuery;
use crate::api::ws::{SocketRequest, serve_socket};
use crate::api::{ApiError, AppState, AuthUser};
use crate::auth::User;
use crate::event::ChannelName;
use crate::hub::SubscriptionSpec;
use crate::store::CommentRecord;
use crate::store::state::{self, kinds};

/// Longest comment, in Unicode scalar values.
pub const MAX_COMMENT_CHARS: usize = 2000;
/// Most distinct users one comment notifies with @mentions.
pub const MAX_MENTIONS: usize = 20;
const MAX_LISTED: usize = 5000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(edit, delete))
        .routes(routes!(socket))
}

fn track_channel(track_id: &str) -> Result<ChannelName, ApiError> {
    ChannelName::new(&format!("{}{track_id}", kinds::TRACK_CHANNEL_PREFIX))
        .map_err(|_| ApiError::bad_request("invalid track id: use 1 to 120 of A-Z a-z 0-9 _ . : -"))
}

/// The fields of a JSON object body or a form body.
fn body_fields(headers: &HeaderMap, body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        return Ok(form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        _ => Err(ApiError::bad_request(
            "body must be a JSON object or a form",
        )),
    }
}

fn content_field(fields: &Map<String, Value>) -> Result<String, ApiError> {
    let content = match fields.get("content") {
        Some(Value::String(text)) => text.trim().to_string(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(ApiError::bad_request("content must be a string")),
    };
    if content.is_empty() {
        return Err(ApiError::bad_request("Comment cannot be empty"));
    }
    let chars = content.chars().count();
    if chars > MAX_COMMENT_CHARS {
        return Err(ApiError::bad_request(format!(
            "Comment too long. Maximum {MAX_COMMENT_CHARS} characters (got {chars})"
        )));
    }
    Ok(content)
}

fn timestamp_field(fields: &Map<String, Value>, default: f64) -> Result<f64, ApiError> {
    let value = match fields.get("timestamp") {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(text)) if text.trim().is_empty() => return Ok(default),
        Some(Value::String(text)) => text.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    value
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| ApiError::bad_request("timestamp must be a number >= 0"))
}

/// Comments on a track; `@name` mentions notify those users.
#[utoipa::path(
    post,
    path = "/api/tracks/{track_id}/comments",
    operation_id = "comment_create",
    tag = "comments",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(("track_id" = String, Path, description = "The track: 1 to 120 of A-Z a-z 0-9 _ . : -")),
    request_body(content(
        (CommentBody = "application/json"),
        (CommentBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "CommentCreated: `new_comment` reaches the track's sockets", body = CommentCreated),
        (status = 400, description = "An invalid track id, content or timestamp", body = ErrorBody),
        (status = 401, description = "No valid user token", body = ErrorBody),
        (status = 503, description = "The store is unavailable or full", body = ErrorBody),
    ),
)]
async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(track_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CommentCreated>, ApiError> {
    let channel = track_channel(&track_id)?;
    let fields = body_fields(&headers, &body)?;
    let content = content_field(&fields)?;
    let timestamp = timestamp_field(&fields, 0.0)?;
    let comment = CommentRecord {
        id: uuid::Uuid::new_v4().to_string(),
        track_id: track_id.clone(),
        user_id: user.id.clone(),
        username: user.name.clone(),
        content,
        timestamp,
        created_at: now_rfc3339(),
        is_edited: false,
        last_edited_at: None,
    };
    let payload = json!({ "type": kinds::NEW_COMMENT, "track_id": track_id, "comment": comment });
    let published = publish(
        &state,
        channel,
        kinds::NEW_COMMENT,
        payload.to_string(),
        None,
    )
    .await?;
    notify_mentions(&state, &user, &comment).await?;
    Ok(Json(CommentCreated {
        status: "success",
        comment,
        cursor: published.cursor,
    }))
}

/// Publishes a `mention` to each distinct `@username` in the comment (not the author).
async fn notify_mentions(
    state: &AppState,
    author: &User,
    comment: &CommentRecord,
) -> Result<(), ApiError> {
    for name in mentioned_usernames(&comment.content) {
        if name == author.name.to_lowercase() {
            continue;
        }
        let Some(channel) = mentions_channel(&name) else {
            continue;
        };
        let payload = json!({
            "type": "mention",
            "track_id": comment.track_id,
            "comment": comment,
            "from_user": author.name,
        });
        publish(state, channel, "mention", payload.to_string(), None).await?;
    }
    Ok(())
}

/// Distinct lowercased `@name` tokens (`[A-Za-z0-9_.-]`, 1 to 64 characters), at most
/// [`MAX_MENTIONS`].
pub fn mentioned_usernames(content: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut rest = content;
    while let Some(at) = rest.find('@') {
        let after = &rest[at + 1..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            .take(65)
            .collect();
        let name = name.trim_end_matches('.').to_lowercase();
        if !name.is_empty() && name.len() <= 64 && !names.contains(&name) {
            names.push(name);
            if names.len() == MAX_MENTIONS {
                break;
            }
        }
        rest = after;
    }
    names
}

/// A track's comments.
#[utoipa::path(
    get,
    path = "/api/tracks/{track_id}/comments",
    operation_id = "comment_list",
    tag = "comments",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(("track_id" = String, Path, description = "The track: 1 to 120 of A-Z a-z 0-9 _ . : -")),
    responses(
        (status = 200, description = "The comments, at most 5000", body = CommentList),
        (status = 400, description = "An invalid track id", body = ErrorBody),
        (status = 401, description = "No valid user token", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ),
)]
async fn list(
    State(state): State<AppState>,
    AuthUser(_user): AuthUser,
    Path(track_id): Path<String>,
) -> Result<Json<CommentList>, ApiError> {
    track_channel(&track_id)?;
    let id = track_id.clone();
    let comments = state
        .store
        .read(move |c| state::track_comments(c, &id, MAX_LISTED))
        .await?;
    Ok(Json(CommentList {
        status: "success",
        track_id,
        comments,
    }))
}

async fn find_comment(state: &AppState, comment_id: &str) -> Result<CommentRecord, ApiError> {
    let id = comment_id.to_string();
    state
        .store
        .read(move |c| state::comment(c, &id))
        .await?
        .ok_or_else(|| ApiError::NotFound("Comment not found".into()))
}

/// Edits a comment (its author only).
#[utoipa::path(
    put,
    path = "/api/comments/{comment_id}",
    operation_id = "comment_edit",
    tag = "comments",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(("comment_id" = String, Path, description = "The comment")),
    request_body(content(
        (CommentBody = "application/json"),
        (CommentBody = "application/x-www-form-urlencoded"),
    )),
    responses(
        (status = 200, description = "CommentEdited: `comment_edited` reaches the track's sockets", body = CommentEdited),
        (status = 400, description = "An invalid content or timestamp", body = ErrorBody),
        (status = 401, description = "No valid user token", body = ErrorBody),
        (status = 403, description = "Not the comment's author", body = ErrorBody),
        (status = 404, description = "No such comment", body = ErrorBody),
        (status = 503, description = "The store is unavailable or full", body = ErrorBody),
    ),
)]
async fn edit(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(comment_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CommentEdited>, ApiError> {
    let comment = find_comment(&state, &comment_id).await?;
    if comment.user_id != user.id {
        return Err(ApiError::Forbidden(
            "only the author may edit a comment".into(),
        ));
    }
    let fields = body_fields(&headers, &body)?;
    let content = content_field(&fields)?;
    let timestamp = timestamp_field(&fields, comment.timestamp)?;
    let last_edited_at = now_rfc3339();
    let payload = json!({
        "type": kinds::COMMENT_EDITED,
        "track_id": comment.track_id,
        "comment_id": comment.id,
        "content": content,
        "timestamp": timestamp,
        "is_edited": true,
        "last_edited_at": last_edited_at,
    });
    let channel = track_channel(&comment.track_id)?;
    let published = publish(
        &state,
        channel,
        kinds::COMMENT_EDITED,
        payload.to_string(),
        None,
    )
    .await?;
    Ok(Json(CommentEdited {
        comment_id: comment.id,
        content,
        cursor: published.cursor,
        is_edited: true,
        last_edited_at,
        status: "success",
        timestamp,
        track_id: comment.track_id,
        kind: kinds::COMMENT_EDITED,
    }))
}

/// Deletes a comment (its author, a creator, a team member or an admin).
#[utoipa::path(
    delete,
    path = "/api/comments/{comment_id}",
    operation_id = "comment_delete",
    tag = "comments",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(("comment_id" = String, Path, description = "The comment")),
    responses(
        (status = 200, description = "CommentDeleted: `comment_deleted` reaches the track's sockets", body = CommentDeleted),
        (status = 401, description = "No valid user token", body = ErrorBody),
        (status = 403, description = "Neither the author nor staff", body = ErrorBody),
        (status = 404, description = "No such comment", body = ErrorBody),
        (status = 503, description = "The store is unavailable or full", body = ErrorBody),
    ),
)]
async fn delete(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(comment_id): Path<String>,
) -> Result<Json<CommentDeleted>, ApiError> {
    let comment = find_comment(&state, &comment_id).await?;
    if comment.user_id != user.id && !user.is_staff() {
        return Err(ApiError::Forbidden(
            "only the author, a creator, team member or admin may delete a comment".into(),
        ));
    }
    let payload = json!({
        "type": kinds::COMMENT_DELETED,
        "track_id": comment.track_id,
        "comment_id": comment.id,
    });
    let channel = track_channel(&comment.track_id)?;
    let published = publish(
        &state,
        channel,
        kinds::COMMENT_DELETED,
        payload.to_string(),
        None,
    )
    .await?;
    Ok(Json(CommentDeleted {
        status: "success",
        comment_id: comment.id,
        cursor: published.cursor,
    }))
}

/// A track's socket: its comments, who is listening, and typing indicators.
#[utoipa::path(
    get,
    path = "/api/ws/track/{track_id}",
    operation_id = "track_socket",
    tag = "comments",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(("track_id" = String, Path, description = "The track"), SocketQuery),
    responses(
        (status = 101, description = "A WebSocket: `connected` with `track_id`, `presence` (when \
            the track has presence), then `new_comment`, `comment_edited`, `comment_deleted`, \
            `user_typing` (send `{\"type\":\"typing\",\"is_typing\":true}`), and the user's \
            `mention`s. Refusals close it with 1008 and a reason"),
    ),
)]
async fn socket(
    State(state): State<AppState>,
    Path(track_id): Path<String>,
    upgrade: WebSocketUpgrade,
    request: SocketRequest,
) -> Response {
    serve_socket(state, upgrade, request, move |user| {
        let channel = track_channel(&track_id).map_err(|_| "invalid track id")?;
        let mut channels = vec![channel.clone()];
        channels.extend(personal_channels(user));
        let spec = SubscriptionSpec::new(&user.id, channels, Vec::new());
        let connected = json!({ "track_id": track_id, "message": "Connected to comment updates" });
        let typing = TypingRoute {
            channel: channel.clone(),
            context: ("track_id", Value::String(track_id.clone())),
        };
        let socket = FeatureSocket::new(connected, Some(typing)).with_presence_snapshot(channel);
        Ok((spec, socket))
    })
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_distinct_mentions() {
        assert_eq!(
            mentioned_usernames("hi @Bob and @alice, @bob again"),
            vec!["bob", "alice"]
        );
        assert_eq!(mentioned_usernames("mail a@b.c."), vec!["b.c"]);
        assert!(mentioned_usernames("no mentions @ all").is_empty());
        let many: String = (0..50).map(|i| format!("@u{i} ")).collect();
        assert_eq!(mentioned_usernames(&many).len(), MAX_MENTIONS);
    }
}
