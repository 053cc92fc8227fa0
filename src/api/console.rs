//! The pages herald serves: the web console at `GET /` and `GET /console`
//! (`clients/console/index.html`) and the broadcast banner demo at `GET /demo/broadcast`
//! (`clients/demo/broadcast.html`, the seeds' banner on the JavaScript client, for a user
//! token given as `?token=`), embedded at build time with the client from [`super::assets`];
//! nothing is fetched from a network at run time.
//!
//! The page signs in with the API key (kept in the tab's `sessionStorage`, sent as a header,
//! never in a URL), and trades it for a short-lived admin token at `POST /api/console/token`
//! to open sockets (a live tail) and to read and clear the active broadcast, which take user
//! tokens. Whoever holds the API key may publish anything already; the token gives them no
//! more than that.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiKey, AppState};
use crate::auth::{Role, User};

/// The console page.
pub const CONSOLE_HTML: &str = include_str!("../../clients/console/index.html");
/// The broadcast banner demo.
pub const DEMO_BROADCAST_HTML: &str = include_str!("../../clients/demo/broadcast.html");
/// How long a console token lives; the page asks for a fresh one before every connect.
const CONSOLE_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/console", get(page))
        .route("/demo/broadcast", get(demo_broadcast))
        .route("/api/console/token", post(token))
}

async fn page() -> impl IntoResponse {
    html(CONSOLE_HTML)
}

async fn demo_broadcast() -> impl IntoResponse {
    html(DEMO_BROADCAST_HTML)
}

fn html(body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn token(State(state): State<AppState>, _key: ApiKey) -> Json<Value> {
    let user = User {
        id: "herald-console".into(),
        name: "console".into(),
        roles: vec![Role::Admin],
        creator_id: None,
    };
    Json(json!({
        "status": "success",
        "token": state.auth.mint(&user, CONSOLE_TOKEN_TTL),
        "expires_in": CONSOLE_TOKEN_TTL.as_secs(),
    }))
}
