//! Book-request sockets: `/ws/book-requests` for a user's own updates (`request_created`,
//! `status_updated` on `book_requests:user:{id}`), and `/ws/book-requests/admin` for creators
//! and admins (`new_request`, `request_updated` on `book_requests:admin`). The backend
//! publishes through `POST /api/publish`.

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use super::socket::FeatureSocket;
use crate::api::AppState;
use crate::api::ws::{SocketRequest, serve_socket};
use crate::auth::{ChannelAccess, may_subscribe};
use crate::event::ChannelName;
use crate::hub::SubscriptionSpec;

pub const ADMIN_CHANNEL: &str = "book_requests:admin";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ws/book-requests", get(user_socket))
        .route("/ws/book-requests/admin", get(admin_socket))
}

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
