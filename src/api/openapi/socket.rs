//! What every WebSocket endpoint shares in the document: the query parameters that
//! [`crate::api::ws::SocketRequest`] reads (besides the token, a security scheme).

use utoipa::IntoParams;

/// The query of every socket request.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SocketQuery {
    /// A cursor (from `connected` or any event): replay what the socket's channels got after
    /// it, on any node, then `recovered`, then the live events.
    pub since: Option<String>,
    /// `false`: the socket does not announce its user in presence (backends, bots).
    pub presence: Option<bool>,
}
