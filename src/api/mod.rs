//! The HTTP and WebSocket surface: routes, the shared application state, errors, auth
//! extractors, and the WebSocket session machinery every socket endpoint runs on.
//!
//! Feature modules (`crate::features`) own what their endpoints mean; this module owns how
//! requests and sockets are handled: authentication, error bodies, bounded queues, heartbeats,
//! resume with `?since=`, close codes, admission of sockets ([`admission`]), and the bounds of
//! every HTTP request: a body limit (413) and a timeout (408) on every route. The timeout ends
//! at the response head, so a WebSocket is bound by it only until its upgrade, and a streamed
//! answer (a snapshot) only until its first byte.
//!
//! Every route is registered with its OpenAPI description ([`routes`]), so the document served
//! at `GET /api/openapi.json` ([`openapi`]) lists exactly what the router serves.

pub mod admission;
pub mod assets;
mod cluster;
mod console;
mod error;
mod extract;
mod health;
pub mod openapi;
mod snapshot;
pub mod sorted;
pub mod tls;
pub mod ws;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::Authenticator;
use crate::backplane::Backplane;
use crate::config::Config;
use crate::hub::Hub;
use crate::store::Store;

pub use error::ApiError;
pub use extract::{ApiKey, AuthUser, Caller, JsonObject, find_user_token};
pub use health::metrics_router;

/// Everything a request handler may use; cheap to clone (one reference count: the router
/// clones it for every request).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The node's parts a request handler may use.
pub struct Services {
    pub config: Arc<Config>,
    pub store: Store,
    pub hub: Arc<Hub>,
    pub auth: Arc<Authenticator>,
    pub backplane: Arc<dyn Backplane>,
    pub started: Instant,
    pub lifecycle: Arc<Lifecycle>,
    pub admission: Arc<admission::Admission>,
    /// Who is on which channel, cluster-wide.
    pub presence: Arc<crate::presence::Presence>,
}

/// Requests that end the node from inside (a graceful leave asked over HTTP).
#[derive(Debug, Default)]
pub struct Lifecycle {
    leave: tokio::sync::Notify,
}

impl Lifecycle {
    pub fn request_leave(&self) {
        self.leave.notify_one();
    }

    pub async fn leave_requested(&self) {
        self.leave.notified().await;
    }
}

/// Every route of the HTTP application with its OpenAPI description: the one list both the
/// router ([`router`]) and the document ([`openapi::openapi`]) are made from.
pub fn routes() -> OpenApiRouter<AppState> {
    openapi::base()
        .merge(health::routes())
        .merge(assets::routes())
        .merge(console::routes())
        .merge(cluster::routes())
        .merge(snapshot::routes())
        .merge(crate::features::broadcasts::routes())
        .merge(crate::features::channels::routes())
        .merge(crate::features::presence::routes())
        .merge(crate::features::comments::routes())
        .merge(crate::features::forum::routes())
        .merge(crate::features::book_requests::routes())
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let limits = state.config.limits.clone();
    let (routes, _document) = routes().split_for_parts();
    routes
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.max_request_body_bytes))
        .layer(RequestBodyLimitLayer::new(limits.max_request_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.http_request_timeout,
        ))
        .layer(axum::middleware::map_response(json_error_bodies))
}

/// Gives the answers of the body limit and the timeout layers (plain text or empty) the JSON
/// error body every other error has.
async fn json_error_bodies(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    match response.status() {
        StatusCode::REQUEST_TIMEOUT if !is_json => ApiError::RequestTimeout.into_response(),
        StatusCode::PAYLOAD_TOO_LARGE if !is_json => {
            ApiError::PayloadTooLarge("request body too large".into()).into_response()
        }
        _ => response,
    }
}
