//! Schemas of the document for JSON that types outside the HTTP layer write: the error body
//! (`crate::api::ApiError`), a comment (`crate::store::CommentRecord`), the backplane's health
//! and the quorum (`crate::backplane`), a version vector and a rendered event. Those modules
//! stay free of the document; each schema here is checked against the real type's JSON by the
//! tests of [`super`], so a field added there and not here fails them.

use std::collections::BTreeMap;

use utoipa::ToSchema;

/// Every error answer: a status code and this body, never internals.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// Always `error`.
    #[schema(example = "error")]
    pub status: String,
    /// What went wrong, for a person.
    #[schema(example = "channel \"broadcasts\" is written by POST /api/creator/broadcast")]
    pub message: String,
}

/// A track comment (`crate::store::CommentRecord`).
#[derive(ToSchema)]
pub struct Comment {
    pub id: String,
    pub track_id: String,
    /// The author's user id.
    pub user_id: String,
    /// The author's name.
    pub username: String,
    pub content: String,
    /// The position in the track, in seconds.
    pub timestamp: f64,
    /// RFC 3339.
    pub created_at: String,
    pub is_edited: bool,
    /// RFC 3339, null until edited.
    pub last_edited_at: Option<String>,
}

/// What a node says about its backplane (`crate::backplane::BackplaneHealth`).
#[derive(ToSchema)]
pub struct BackplaneHealth {
    /// `local`, `mesh` or `redis`.
    pub kind: String,
    /// True when this node can deliver across the cluster.
    pub healthy: bool,
    pub detail: String,
}

/// The mesh's quorum (`crate::backplane::mesh_quorum::Quorum`): null for a backplane without
/// the notion.
#[derive(ToSchema)]
pub struct Quorum {
    /// Nodes this one reaches, itself included.
    pub reachable: u64,
    /// Nodes known alive or recently seen.
    pub known: u64,
    /// `reachable * 2 > known`, ties to the side of the smallest node id.
    pub ready: bool,
}

/// A version vector (`crate::event::VersionVector`): per origin node, the highest sequence
/// number held.
#[derive(ToSchema)]
pub struct VersionVector(pub BTreeMap<String, u64>);

/// An event as clients receive it (`crate::hub::render_event`): the published `data` object
/// (with its `type`), plus `channel` (unless the data names one) and `cursor`, the resume
/// point after it.
#[derive(ToSchema)]
pub struct RenderedEvent {
    /// The data's type.
    #[schema(rename = "type")]
    pub kind: String,
    pub channel: String,
    /// Resume here (`?since=`) to get the events after this one.
    pub cursor: String,
}
