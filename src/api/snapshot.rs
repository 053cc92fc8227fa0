//! `GET /api/cluster/snapshot`: a snapshot of this node's state and retained history for a
//! peer that fell below what the cluster keeps (see `crate::backplane::peer_snapshot`). Only a
//! caller holding the cluster secret gets one.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::schemas::ErrorBody;
use super::{ApiError, AppState};
use crate::backplane::peer_snapshot::{self, SNAPSHOT_PATH};
use crate::features::channels::query_values;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(snapshot))
}

/// A snapshot of this node's state and retained history, for a peer catching up.
#[utoipa::path(
    get,
    path = SNAPSHOT_PATH,
    operation_id = "cluster_snapshot",
    tag = "cluster",
    security(("snapshot_token" = [])),
    params(
        ("since" = Option<String>, Query, description = "The peer's cursor: what it holds already"),
        ("since_hlc" = Option<String>, Query, description = "The peer's newest hybrid clock"),
    ),
    responses(
        (status = 200, description = "The snapshot, streamed as herald's binary snapshot items",
            content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "A malformed `since` or `since_hlc`", body = ErrorBody),
        (status = 401, description = "No valid snapshot token", body = ErrorBody),
    ),
)]
async fn snapshot(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let config = &state.config;
    if !peer_snapshot::token_matches(presented, &config.cluster_secret, &config.cluster_id) {
        return Err(ApiError::Unauthorized(
            "a snapshot needs the cluster's snapshot token".into(),
        ));
    }
    let since = query_values(&uri, "since").into_iter().next();
    let since_hlc = query_values(&uri, "since_hlc").into_iter().next();
    let basis = peer_snapshot::parse_basis(since.as_deref(), since_hlc.as_deref())
        .map_err(ApiError::bad_request)?;
    tracing::info!(since = ?basis.since, "serving a snapshot over http");
    let items = state.store.snapshot(basis);
    let body = futures_util::stream::unfold(items, |mut items| async move {
        let item = items.recv().await?;
        let last = matches!(item, crate::store::snapshot::SnapshotItem::End(_));
        if last {
            metrics::counter!("herald_snapshots_sent_total").increment(1);
        }
        let bytes = peer_snapshot::encode_item(item)
            .map(Bytes::from)
            .map_err(std::io::Error::other);
        Some((bytes, items))
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response())
}
