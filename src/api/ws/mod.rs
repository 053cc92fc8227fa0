//! WebSocket sessions: the machinery every socket endpoint runs on.
//!
//! A feature describes its endpoint with [`SocketEndpoint`] (what `connected` says, what to send
//! on connect, how to answer the client's JSON messages) and hands the upgrade to
//! [`serve_socket`], which admits the connection (see [`crate::api::admission`]: a permit held
//! for the connection's life), authenticates (closing with 1008 and a reason when it cannot),
//! subscribes the connection in the hub, replays history for `?since=`, then runs the
//! connection's reader and writer until either side ends. Every socket endpoint goes through
//! [`serve_socket`], so every socket is admitted, rate-limited and kept alive the same way.

pub mod rate;
mod reader;
mod session;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::response::Response;

use super::admission::Refused;
use super::{AppState, find_user_token};
use crate::auth::{AuthError, User};
use crate::event::{Cursor, VersionVector};
use crate::hub::SubscriptionSpec;

/// What tungstenite keeps allocated per connection to read client frames into (a bigger frame,
/// up to `max_client_message_bytes`, grows it while it is read). Clients send little (pings,
/// small JSON), so 1 KiB reads them in one go; every idle connection holds this buffer. (512
/// bytes saved another 0.5 KiB, but a close then left a burst of client messages unread, and
/// the kernel answered the close with a reset that lost the close frame: tests/admission.rs.)
pub const READ_BUFFER_BYTES: usize = 1024;

/// Close codes herald uses (RFC 6455 section 7.4).
pub mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Data inconsistent with the message type, such as a text message that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const SERVICE_RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// What the server sends after a client has been silent for the heartbeat interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// The text frame `ping` (the broadcast socket, as in the seeds).
    TextPing,
    /// `{"type":"heartbeat"}` (every other socket).
    JsonHeartbeat,
}

/// Who is connected and what they listen to.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    pub user: User,
    pub spec: SubscriptionSpec,
    /// Whether the socket enters its user in presence (`?presence=false` does not).
    pub announce: bool,
}

/// One socket endpoint's behaviour.
pub trait SocketEndpoint: Send + Sync + 'static {
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat::JsonHeartbeat
    }

    /// Extra fields of the `connected` message (`type` and `cursor` are added).
    fn connected_fields(&self, session: &SessionInfo)
    -> serde_json::Map<String, serde_json::Value>;

    /// Messages sent right after `connected` (for example the active broadcast).
    fn on_connect(
        &self,
        state: &AppState,
        session: &SessionInfo,
    ) -> impl Future<Output = Vec<String>> + Send;

    /// Answers to a client's JSON message other than `ping`.
    fn on_client_message(
        &self,
        state: &AppState,
        session: &SessionInfo,
        message: serde_json::Value,
    ) -> impl Future<Output = Vec<String>> + Send;
}

/// The credentials and resume point of a socket request: the token from the header, `?token=`
/// or cookie, `?since=`, `?presence=false`, and the peer's address (when the server records
/// it).
pub struct SocketRequest {
    pub token: Option<String>,
    pub since: Option<String>,
    pub peer: Option<IpAddr>,
    /// False with `?presence=false`: the socket does not announce its user (backends, bots).
    pub announce: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for SocketRequest {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = |name: &str| {
            parts.uri.query().and_then(|query| {
                form_urlencoded::parse(query.as_bytes())
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.into_owned())
            })
        };
        let since = query("since");
        let announce = query("presence").is_none_or(|value| value != "false");
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip().to_canonical());
        Ok(Self {
            token: find_user_token(parts),
            since,
            peer,
            announce,
        })
    }
}

/// Why a socket is refused after the upgrade: sent as a 1008 close with this reason.
pub type Refusal = &'static str;

/// Authenticates, then runs the session built by `plan` for the verified user. Every refusal
/// is an accepted socket closed with 1008 and a reason, so browsers can show why.
pub fn serve_socket<E, F>(
    state: AppState,
    upgrade: WebSocketUpgrade,
    request: SocketRequest,
    plan: F,
) -> Response
where
    E: SocketEndpoint,
    F: FnOnce(&User) -> Result<(SubscriptionSpec, E), Refusal> + Send + 'static,
{
    let limits = &state.config.limits;
    let upgrade = upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(limits.max_client_message_bytes)
        .max_frame_size(limits.max_client_message_bytes);
    // The node's (and the address's) places are taken before the upgrade, so a flood of
    // upgrades cannot overshoot them; the permit lives as long as the connection.
    let admitted = state.admission.admit_peer(request.peer);
    upgrade.on_upgrade(move |mut socket| async move {
        let mut permit = match admitted {
            Ok(permit) => permit,
            Err(refused) => return refuse(&mut socket, refused).await,
        };
        let user = match authenticate(&state, request.token.as_deref()) {
            Ok(user) => user,
            Err(reason) => {
                metrics::counter!("herald_connections_refused_total", "reason" => "auth")
                    .increment(1);
                close(&mut socket, close_code::POLICY_VIOLATION, reason).await;
                return;
            }
        };
        if let Err(refused) = state.admission.admit_user(&mut permit, &user.id) {
            return refuse(&mut socket, refused).await;
        }
        let since = match request
            .since
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(Cursor::decode)
        {
            None => None,
            Some(Ok(vector)) => Some(vector),
            Some(Err(_)) => {
                close(&mut socket, close_code::POLICY_VIOLATION, "invalid cursor").await;
                return;
            }
        };
        let (spec, endpoint) = match plan(&user) {
            Ok(planned) => planned,
            Err(reason) => {
                metrics::counter!("herald_connections_refused_total", "reason" => "forbidden")
                    .increment(1);
                close(&mut socket, close_code::POLICY_VIOLATION, reason).await;
                return;
            }
        };
        // The connection runs in a task of its own (see `session::start`): this one, axum's
        // upgrade task, ends here without having written to the socket.
        session::start(
            state,
            socket,
            SessionInfo {
                user,
                spec,
                announce: request.announce,
            },
            since,
            endpoint,
            permit,
        );
    })
}

/// Closes a socket that was not admitted: 1013 when the node is full (try again later,
/// perhaps elsewhere), 1008 when this user or address holds too many sockets.
async fn refuse(socket: &mut WebSocket, refused: Refused) {
    metrics::counter!("herald_connections_refused_total", "reason" => refused.metric_reason())
        .increment(1);
    let (code, reason) = match refused {
        Refused::NodeFull => (close_code::TRY_AGAIN_LATER, "server at connection capacity"),
        Refused::TooManyFromAddress => (
            close_code::POLICY_VIOLATION,
            "too many connections from this address",
        ),
        Refused::TooManyForUser => (close_code::POLICY_VIOLATION, "too many connections"),
    };
    close(socket, code, reason).await;
}

fn authenticate(state: &AppState, token: Option<&str>) -> Result<User, Refusal> {
    let token = token.ok_or("missing token")?;
    state.auth.verify_user(token).map_err(|error| match error {
        AuthError::Expired => "token expired",
        _ => "invalid token",
    })
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// A `{"type":"error","message":...}` message.
pub fn error_message(message: &str) -> String {
    serde_json::json!({ "type": "error", "message": message }).to_string()
}

/// `max(a, b)` per origin.
fn merged(a: &VersionVector, b: &VersionVector) -> VersionVector {
    let mut vector = a.clone();
    vector.merge(b);
    vector
}
