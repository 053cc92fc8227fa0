//! The JSON bodies of the comment endpoints (`super::comments`), as types: what the handlers
//! write and what the OpenAPI document describes. Fields are declared in the order the JSON
//! has them (sorted by name).

use serde::Serialize;
use utoipa::ToSchema;

use crate::api::openapi::schemas::Comment;
use crate::store::CommentRecord;

/// A comment's content, as JSON or as a form (`application/x-www-form-urlencoded`).
#[derive(ToSchema)]
pub struct CommentBody {
    /// 1 to 2000 characters once trimmed; `@name` notifies that user.
    #[schema(example = "great drop at 1:02 @bob")]
    pub content: String,
    /// The position in the track, in seconds, a finite number >= 0 (a string in a form).
    /// Creating: 0 when absent; editing: unchanged when absent.
    pub timestamp: Option<f64>,
}

/// The answer of `POST /api/tracks/{track_id}/comments`.
#[derive(Serialize, ToSchema)]
pub struct CommentCreated {
    #[serde(serialize_with = "crate::api::sorted::keys")]
    #[schema(value_type = Comment)]
    pub comment: CommentRecord,
    /// The event's position in the log.
    pub cursor: String,
    /// Always `success`.
    #[schema(example = "success")]
    pub status: &'static str,
}

/// The answer of `GET /api/tracks/{track_id}/comments`.
#[derive(Serialize, ToSchema)]
pub struct CommentList {
    /// The track's comments, oldest first.
    #[serde(serialize_with = "crate::api::sorted::keys")]
    #[schema(value_type = Vec<Comment>)]
    pub comments: Vec<CommentRecord>,
    /// Always `success`.
    #[schema(example = "success")]
    pub status: &'static str,
    pub track_id: String,
}

/// The answer of `PUT /api/comments/{comment_id}`: the `comment_edited` event, with `status`
/// and `cursor`.
#[derive(Serialize, ToSchema)]
pub struct CommentEdited {
    pub comment_id: String,
    pub content: String,
    /// The event's position in the log.
    pub cursor: String,
    /// Always true.
    pub is_edited: bool,
    /// RFC 3339.
    pub last_edited_at: String,
    /// Always `success`.
    #[schema(example = "success")]
    pub status: &'static str,
    pub timestamp: f64,
    pub track_id: String,
    /// Always `comment_edited`.
    #[serde(rename = "type")]
    #[schema(example = "comment_edited")]
    pub kind: &'static str,
}

/// The answer of `DELETE /api/comments/{comment_id}`.
#[derive(Serialize, ToSchema)]
pub struct CommentDeleted {
    pub comment_id: String,
    /// The event's position in the log.
    pub cursor: String,
    /// Always `success`.
    #[schema(example = "success")]
    pub status: &'static str,
}
