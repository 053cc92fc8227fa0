//! The HTTP and WebSocket surface: routes, the shared application state, errors, auth
//! extractors, and the WebSocket session machinery every socket endpoint runs on.
//!
//! Feature modules (`crate::features`) own what their endpoints mean; this module owns how
//! requests and sockets are handled: authentication, error bodies, bounded queues, heartbeats,
//! resume with `?since=`, and close codes.

mod cluster;
mod error;
mod extract;
mod health;
mod snapshot;
pub mod ws;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;

use crate::auth::Authenticator;
use crate::backplane::Backplane;
use crate::config::Config;
use crate::hub::Hub;
use crate::store::Store;

pub use error::ApiError;
pub use extract::{ApiKey, AuthUser, Caller, JsonObject, find_user_token};

/// Everything a request handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub hub: Arc<Hub>,
    pub auth: Arc<Authenticator>,
    pub backplane: Arc<dyn Backplane>,
    pub started: Instant,
    pub lifecycle: Arc<Lifecycle>,
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

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(cluster::routes())
        .merge(snapshot::routes())
        .merge(crate::features::broadcasts::routes())
        .merge(crate::features::channels::routes())
        .merge(crate::features::comments::routes())
        .merge(crate::features::forum::routes())
        .merge(crate::features::book_requests::routes())
        .with_state(state)
}
