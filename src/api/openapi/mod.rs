//! The OpenAPI document of the HTTP API, served at `GET /api/openapi.json`.
//!
//! It is not written by hand: every route is registered with `utoipa_axum`'s `routes!`, which
//! takes the path, the methods and the operation from the handler's `#[utoipa::path]`
//! attribute, and hands the same handler to axum. The router herald serves and this document
//! are the two halves of one [`OpenApiRouter`] ([`crate::api::routes`]), so a route cannot be
//! served undocumented, nor documented unserved. Request and answer bodies are described by
//! the types the handlers read and write (`ToSchema`); the few that other modules own are
//! described in [`schemas`], each checked against the real type's JSON by a unit test.
//!
//! Who may call what is said with security schemes: [`API_KEY`] (the backend's key as a
//! bearer token), [`USER_TOKEN`] (a user JWT as a bearer token, or the same token as
//! `?token=` ([`USER_TOKEN_QUERY`]) or the cookie `herald_token` ([`USER_TOKEN_COOKIE`])) and
//! [`SNAPSHOT_TOKEN`] (peers' snapshot requests). WebSocket endpoints are listed as `GET` with
//! a `101 Switching Protocols` answer.

pub mod schemas;
mod served;
pub mod socket;

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::Modify;
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use served::{documented_routes, served_routes};

use super::AppState;

/// The backend's API key, `Authorization: Bearer <api key>`.
pub const API_KEY: &str = "api_key";
/// A user's JWT, `Authorization: Bearer <token>`.
pub const USER_TOKEN: &str = "user_token";
/// A user's JWT as the query parameter `?token=` (what browsers' sockets use).
pub const USER_TOKEN_QUERY: &str = "user_token_query";
/// A user's JWT as the cookie `herald_token`.
pub const USER_TOKEN_COOKIE: &str = "user_token_cookie";
/// The cluster's snapshot token (derived from the cluster secret), for peers only.
pub const SNAPSHOT_TOKEN: &str = "snapshot_token";

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/api/openapi.json";

/// What the document says before the routes add their paths: info, tags, security schemes and
/// the schemas every path shares.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "herald",
        description = "The HTTP API of herald, a clustered real-time WebSocket server: \
            publishing, history, presence, the features' endpoints (broadcasts, comments), the \
            cluster's state, health, and the WebSocket endpoints (listed as GET with a 101 \
            answer). Every request is bounded: a body over `limits.max_request_body_bytes` \
            is answered 413 and a request slower than `limits.http_request_timeout` 408, both \
            with the error body.",
    ),
    modifiers(&SecuritySchemes),
    components(schemas(schemas::ErrorBody)),
    tags(
        (name = "publish", description = "Backends publish events (API key)"),
        (name = "channels", description = "History and the generic channel socket"),
        (name = "presence", description = "Who is on a channel, cluster-wide"),
        (name = "broadcasts", description = "The admin broadcast banner"),
        (name = "comments", description = "Track comments"),
        (name = "forum", description = "The forum's sockets"),
        (name = "book requests", description = "Book-request sockets"),
        (name = "cluster", description = "Members, links, leave, and peers' snapshots"),
        (name = "console", description = "The web console, the demo and the JavaScript client"),
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "meta", description = "This document"),
    ),
)]
struct ApiDoc;

/// Adds the security schemes of the module docs.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description))
        };
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::Http(
                bearer("The backend's API key (`api_key`, `HERALD_API_KEY`) as a bearer token.")
                    .build(),
            ),
        );
        components.add_security_scheme(
            USER_TOKEN,
            SecurityScheme::Http(
                bearer(
                    "A user's JWT (HS256, signed with `jwt_secret`: `sub`, `name`, `roles`, \
                     `exp`) as a bearer token.",
                )
                .bearer_format("JWT")
                .build(),
            ),
        );
        components.add_security_scheme(
            USER_TOKEN_QUERY,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "A user's JWT as `?token=`, for browsers' sockets, which cannot set headers.",
            ))),
        );
        components.add_security_scheme(
            USER_TOKEN_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "herald_token",
                "A user's JWT as the cookie `herald_token`.",
            ))),
        );
        components.add_security_scheme(
            SNAPSHOT_TOKEN,
            SecurityScheme::Http(
                bearer(
                    "The cluster's snapshot token, derived from `cluster_secret` and \
                     `cluster_id`: for peers catching up, never for clients.",
                )
                .build(),
            ),
        );
    }
}

/// An empty router holding the document's info, tags and security schemes, for
/// [`crate::api::routes`] to add every route to.
pub fn base() -> OpenApiRouter<AppState> {
    let mut base = ApiDoc::openapi();
    base.info.version = env!("CARGO_PKG_VERSION").to_string();
    OpenApiRouter::with_openapi(base).routes(routes!(document))
}

/// The document of every route [`crate::api::routes`] registers.
pub fn openapi() -> OpenApi {
    super::routes().into_openapi()
}

/// The document as served, built once.
static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| openapi().to_json().expect("the document serializes"));

/// This document.
#[utoipa::path(
    get,
    path = DOCUMENT_PATH,
    operation_id = "openapi",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API, with herald's version",
            content_type = "application/json", body = serde_json::Value),
    ),
)]
async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

#[cfg(test)]
mod tests;
