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

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::openapi::schemas::ErrorBody;
use super::{ApiKey, AppState};
use crate::auth::{Role, User};

/// The console page.
pub const CONSOLE_HTML: &str = include_str!("../../clients/console/index.html");
/// The broadcast banner demo.
pub const DEMO_BROADCAST_HTML: &str = include_str!("../../clients/demo/broadcast.html");
/// How long a console token lives; the page asks for a fresh one before every connect.
const CONSOLE_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(root_page))
        .routes(routes!(console_page))
        .routes(routes!(demo_broadcast))
        .routes(routes!(token))
}

/// The web console.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "root_page",
    tag = "console",
    responses((status = 200, description = "The web console", content_type = "text/html", body = String)),
)]
async fn root_page() -> impl IntoResponse {
    html(CONSOLE_HTML)
}

/// The web console (the same page as `/`).
#[utoipa::path(
    get,
    path = "/console",
    operation_id = "console_page",
    tag = "console",
    responses((status = 200, description = "The web console", content_type = "text/html", body = String)),
)]
async fn console_page() -> impl IntoResponse {
    html(CONSOLE_HTML)
}

/// The broadcast banner demo, on the JavaScript client.
#[utoipa::path(
    get,
    path = "/demo/broadcast",
    operation_id = "demo_broadcast",
    tag = "console",
    params(("token" = Option<String>, Query, description = "A user token for the page's sockets")),
    responses((status = 200, description = "The broadcast banner demo", content_type = "text/html", body = String)),
)]
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

/// The answer of `POST /api/console/token`.
#[derive(Serialize, ToSchema)]
struct ConsoleToken {
    /// Seconds the token lives.
    expires_in: u64,
    /// Always `success`.
    status: &'static str,
    /// An admin user token (`herald-console`).
    token: String,
}

/// Trades the API key for a short-lived admin token, for the console's sockets.
#[utoipa::path(
    post,
    path = "/api/console/token",
    operation_id = "console_token",
    tag = "console",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A one-hour admin token", body = ConsoleToken),
        (status = 401, description = "No valid API key", body = ErrorBody),
    ),
)]
async fn token(State(state): State<AppState>, _key: ApiKey) -> Json<ConsoleToken> {
    let user = User {
        id: "herald-console".into(),
        name: "console".into(),
        roles: vec![Role::Admin],
        creator_id: None,
    };
    Json(ConsoleToken {
        status: "success",
        token: state.auth.mint(&user, CONSOLE_TOKEN_TTL),
        expires_in: CONSOLE_TOKEN_TTL.as_secs(),
    })
}
