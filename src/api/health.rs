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
use serde_json::json;

use super::AppState;
use crate::telemetry;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({
        "status": "ok",
        "node_id": state.config.node_id.as_str(),
        "uptime_secs": state.started.elapsed().as_secs(),
    }))
}

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
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "node_id": state.config.node_id.as_str(),
        "store_writable": store_writable,
        "own_log": own_log(&fence),
        "quorum": quorum,
        "unreachable": unreachable,
        "backplane": backplane,
    });
    (status, Json(body))
}

/// Whether this node may number its own events (`store::own_fence`): `clear`, or why not.
fn own_log(fence: &crate::store::own_fence::FenceState) -> serde_json::Value {
    json!({
        "clear": fence.clear(),
        "heard_from_peers": fence.opened(),
        "held": fence.held,
        "peers_hold": fence.floor,
    })
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
