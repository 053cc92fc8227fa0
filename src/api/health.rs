//! `/healthz` (the process answers), `/readyz` (this node can deliver across the cluster and
//! its store is writable) and `/metrics` (Prometheus text; on a listener of its own with
//! `--metrics ADDR`, and then 404 on the main port).
//!
//! `/readyz` answers 200 only while the store is writable, this node may number its own events
//! (`own_log`: it has heard from its peers since it started and holds every seq of its origin
//! they hold; see `store::own_fence`) and the backplane is healthy; for
//! the mesh that means reaching a quorum (`reachable * 2 > known`, ties to the side of the
//! smallest node id; see `backplane::mesh_quorum`) and not catching up from a snapshot. The
//! body shows `quorum: {reachable, known, ready}` and `unreachable: [node ids]`, so the
//! minority side of a partition turns 503 within 2 s of the cut while the majority stays 200.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::openapi::schemas;
use crate::telemetry;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The answer of `/healthz`.
#[derive(Serialize, ToSchema)]
struct Healthz {
    node_id: String,
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
    uptime_secs: u64,
}

/// The process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    responses((status = 200, description = "The process answers", body = Healthz)),
)]
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    Json(Healthz {
        node_id: state.config.node_id.to_string(),
        status: "ok",
        uptime_secs: state.started.elapsed().as_secs(),
    })
}

/// The answer of `/readyz` (the same body for 200 and 503).
#[derive(Serialize, ToSchema)]
struct Readyz {
    #[serde(serialize_with = "crate::api::sorted::keys")]
    #[schema(value_type = schemas::BackplaneHealth)]
    backplane: crate::backplane::BackplaneHealth,
    node_id: String,
    own_log: OwnLog,
    /// Null when the backplane has no notion of a quorum.
    #[schema(value_type = Option<schemas::Quorum>)]
    quorum: serde_json::Value,
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    status: &'static str,
    store_writable: bool,
    /// The known peers this node cannot reach.
    unreachable: Vec<String>,
}

/// Whether this node may number its own events (`store::own_fence`): `clear`, or why not.
#[derive(Serialize, ToSchema)]
struct OwnLog {
    /// It may: it heard from its peers since it started and holds every seq of its origin
    /// they hold.
    clear: bool,
    /// It heard from every live peer since it started (or gave up waiting after 3 s).
    heard_from_peers: bool,
    /// The highest contiguous seq of its own origin it holds.
    held: u64,
    /// The highest seq of its own origin a reachable peer reports holding.
    peers_hold: u64,
}

impl OwnLog {
    fn of(fence: &crate::store::own_fence::FenceState) -> Self {
        Self {
            clear: fence.clear(),
            heard_from_peers: fence.opened(),
            held: fence.held,
            peers_hold: fence.floor,
        }
    }
}

/// Whether this node can deliver across the cluster and its store is writable.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready: the store is writable, own events may be numbered (`own_log`) and the backplane is healthy", body = Readyz),
        (status = 503, description = "Not ready (`status: not_ready`), with the same fields", body = Readyz),
    ),
)]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let backplane = state.backplane.health();
    let store_writable = state.store.probe_writable().await;
    let fence = state.store.own_fence().state();
    let ready = backplane.healthy && store_writable && fence.clear();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let (quorum, unreachable) = partition_fields(&backplane);
    let body = Readyz {
        status: if ready { "ready" } else { "not_ready" },
        node_id: state.config.node_id.to_string(),
        store_writable,
        own_log: OwnLog::of(&fence),
        quorum,
        unreachable,
        backplane,
    };
    (status, Json(body))
}

/// The `quorum` object (null when the backplane has no notion of one) and the `unreachable`
/// node ids, for `/readyz` and `/api/cluster`.
pub(super) fn partition_fields(
    health: &crate::backplane::BackplaneHealth,
) -> (serde_json::Value, Vec<String>) {
    match &health.partition {
        Some(view) => (json!(view.quorum), view.unreachable.clone()),
        None => (serde_json::Value::Null, Vec::new()),
    }
}

/// `/metrics` on the main port: the exposition, unless it has a listener of its own
/// (`--metrics ADDR`), where the main port answers 404.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    responses(
        (status = 200, description = "Every `herald_*` metric, Prometheus text format 0.0.4",
            content_type = "text/plain", body = String),
        (status = 404, description = "Served on a listener of its own (`--metrics ADDR`)"),
    ),
)]
async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    if state.config.metrics.is_some() {
        return StatusCode::NOT_FOUND.into_response();
    }
    exposition(&state).into_response()
}

/// The router of the metrics listener (`--metrics ADDR`): `/metrics` only.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move { exposition(&state) }),
        )
        .with_state(state)
}

/// Samples the gauges read at scrape time (users, the backplane's per-peer series), then
/// renders every metric.
fn exposition(state: &AppState) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    metrics::gauge!(telemetry::catalog::USERS).set(state.hub.counts().users as f64);
    state.backplane.record_metrics();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        telemetry::render_metrics(),
    )
}
