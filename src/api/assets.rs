//! Files herald serves from its own binary, embedded at build time: `GET /client/herald.js`,
//! the JavaScript client (`clients/js/herald.js`, an ES module with no dependencies), so that
//! a page served anywhere can `import { HeraldClient } from "http://<node>/client/herald.js"`.
//! Nothing is fetched from a network at run time.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// The JavaScript client, as the package ships it.
pub const HERALD_JS: &str = include_str!("../../clients/js/herald.js");
/// Its type declarations.
pub const HERALD_D_TS: &str = include_str!("../../clients/js/herald.d.ts");

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(client))
        .routes(routes!(declarations))
}

/// The JavaScript client, an ES module with no dependencies.
#[utoipa::path(
    get,
    path = "/client/herald.js",
    operation_id = "client_js",
    tag = "console",
    responses((status = 200, description = "The JavaScript client", content_type = "text/javascript", body = String)),
)]
async fn client() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", HERALD_JS)
}

/// The JavaScript client's TypeScript declarations.
#[utoipa::path(
    get,
    path = "/client/herald.d.ts",
    operation_id = "client_declarations",
    tag = "console",
    responses((status = 200, description = "The client's type declarations", content_type = "application/typescript", body = String)),
)]
async fn declarations() -> impl IntoResponse {
    asset("application/typescript; charset=utf-8", HERALD_D_TS)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Pages on other origins (an application's own) import it too.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
}
