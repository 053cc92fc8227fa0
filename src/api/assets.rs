//! Files herald serves from its own binary, embedded at build time: `GET /client/herald.js`,
//! the JavaScript client (`clients/js/herald.js`, an ES module with no dependencies), so that
//! a page served anywhere can `import { HeraldClient } from "http://<node>/client/herald.js"`.
//! Nothing is fetched from a network at run time.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

/// The JavaScript client, as the package ships it.
pub const HERALD_JS: &str = include_str!("../../clients/js/herald.js");
/// Its type declarations.
pub const HERALD_D_TS: &str = include_str!("../../clients/js/herald.d.ts");

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/client/herald.js", get(client))
        .route("/client/herald.d.ts", get(declarations))
}

async fn client() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", HERALD_JS)
}

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
