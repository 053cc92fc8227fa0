//! Book-request sockets: `/ws/book-requests` for a user's own updates (`request_created`,
//! `status_updated` on `book_requests:user:{id}`), and `/ws/book-requests/admin` for creators
//! and admins (`new_request`, `request_updated` on `book_requests:admin`). The backend
//! publishes through `POST /api/publish`.

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::socket::FeatureSocket;
use crate::api::AppState;
use crate::api::openapi::socket::SocketQuery;
use crate::api::ws::{SocketRequest, serve_socket};
use crate::auth::{ChannelAccess, may_subscribe};
use crate::event::ChannelName;
use crate::hub::SubscriptionSpec;

pub const ADMIN_CHANNEL: &str = "book_requests:admin";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(user_socket))
        .routes(routes!(admin_socket))
}

/// A user's book-request updates.
#[utoipa::path(
    get,
    path = "/ws/book-requests",
    operation_id = "book_requests_socket",
    tag = "book requests",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(SocketQuery),
    responses(
        (status = 101, description = "A WebSocket: `connected`, then `book_requests:user:{id}`'s \
            events (`request_created`, `status_updated`). Refusals close it with 1008 and a reason"),
    ),
)]
async fn user_socket(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
    request: SocketRequest,
) -> Response {
    serve_socket(state, upgrade, request, |user| {
        let channel = ChannelName::new(&format!("book_requests:user:{}", user.id))
            .map_err(|_| "user id cannot name a channel")?;
        let spec = SubscriptionSpec::new(&user.id, vec![channel], Vec::new());
        let connected = json!({ "message": "Connected to book request updates" });
        Ok((spec, FeatureSocket::new(connected, None)))
    })
}

/// Every book request, for creators and admins.
#[utoipa::path(
    get,
    path = "/ws/book-requests/admin",
    operation_id = "book_requests_admin_socket",
    tag = "book requests",
    security(("user_token" = []), ("user_token_query" = []), ("user_token_cookie" = [])),
    params(SocketQuery),
    responses(
        (status = 101, description = "A WebSocket: `connected`, then `book_requests:admin`'s \
            events (`new_request`, `request_updated`). A user who is neither creator nor admin \
            is closed with 1008"),
    ),
)]
async fn admin_socket(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
    request: SocketRequest,
) -> Response {
    serve_socket(state, upgrade, request, |user| {
        let channel = ChannelName::internal(ADMIN_CHANNEL);
        if let ChannelAccess::Denied(reason) = may_subscribe(user, &channel) {
            return Err(reason);
        }
        let spec = SubscriptionSpec::new(&user.id, vec![channel], Vec::new());
        let connected = json!({ "message": "Connected to book request admin updates" });
        Ok((spec, FeatureSocket::new(connected, None)))
    })
}
