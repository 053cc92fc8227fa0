//! `/healthz` (the process answers), `/readyz` (this node can deliver across the cluster and
//! its store is writable) and `/metrics` (Prometheus text).

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
    let ready = backplane.healthy && store_writable;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "node_id": state.config.node_id.as_str(),
        "store_writable": store_writable,
        "backplane": backplane,
    });
    (status, Json(body))
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        telemetry::render_metrics(),
    )
}
