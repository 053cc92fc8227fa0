//! The integration-test harness: an in-process herald node on loopback port 0 with its data
//! in a temporary directory (kept across restarts), REST and WebSocket clients, tokens, and
//! waiting on conditions instead of sleeping.
//!
//! Tests read like the seeds' testing steps:
//!
//! ```ignore
//! let node = TestNode::start().await;
//! let admin = node.admin_token("100");
//! let mut alice = node.broadcast_socket(&node.token("1", "alice", &[])).await;
//! let created = node.create_broadcast(&admin, "hello", "info").await;
//! let message = alice.recv_type("new_broadcast", TIMEOUT).await;
//! ```
//!
//! Every wait has a deadline; nothing sleeps for a fixed time to let the server "catch up".

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use herald::auth::{Authenticator, Claims, Role, User};
use herald::config::Config;
use herald::hub::HubCounts;
use herald::server::Server;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expectation may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The seeds' broadcast socket.
pub const BROADCAST_WS: &str = "/api/creator/broadcast/ws";

type Configure = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// One herald node running inside the test process.
pub struct TestNode {
    data_dir: TempDir,
    configure: Configure,
    server: Option<Server>,
    http_addr: SocketAddr,
    http: reqwest::Client,
    auth: Authenticator,
    jwt_secret: String,
    api_key: String,
}

impl TestNode {
    /// A single node with the test defaults of [`Config::for_tests`].
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A single node whose configuration `configure` adjusts (applied again on restarts).
    pub async fn start_with(configure: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        if std::env::var_os("HERALD_TEST_LOG").is_some() {
            herald::telemetry::init_logging();
        }
        let data_dir = tempfile::tempdir().expect("temporary data dir");
        let configure: Configure = Arc::new(configure);
        let server = launch(&data_dir, &configure).await;
        let config = test_config(&data_dir, &configure);
        Self {
            http_addr: server.http_addr(),
            server: Some(server),
            data_dir,
            http: reqwest::Client::new(),
            auth: Authenticator::new(&config.jwt_secret, &config.api_key),
            jwt_secret: config.jwt_secret,
            api_key: config.api_key,
            configure,
        }
    }

    /// Graceful shutdown, then a new node on the same data directory and node id (on a new
    /// port).
    pub async fn restart(&mut self) {
        self.shutdown().await;
        let server = launch(&self.data_dir, &self.configure).await;
        self.http_addr = server.http_addr();
        self.server = Some(server);
    }

    /// Graceful shutdown: clients are closed with 1001 and the store is flushed.
    pub async fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("the node is running")
    }

    /// Connections and users the node's hub holds right now.
    pub fn hub_counts(&self) -> HubCounts {
        self.server().state().hub.counts()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The HTTP client the helpers use, for requests they do not cover.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.http_addr)
    }

    // ---- credentials ----

    /// A valid user token for an hour.
    pub fn token(&self, id: &str, name: &str, roles: &[Role]) -> String {
        self.auth
            .mint(&user(id, name, roles), Duration::from_secs(3600))
    }

    /// A token for an admin (may create, clear and read stats of broadcasts).
    pub fn admin_token(&self, id: &str) -> String {
        self.token(id, &format!("admin{id}"), &[Role::Admin])
    }

    /// A correctly signed token that expired an hour ago (well past any leeway).
    pub fn expired_token(&self, id: &str) -> String {
        let past = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs()
            - 3600;
        let claims = Claims::from_user(&user(id, id, &[Role::Admin]), past);
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.jwt_secret.as_bytes()),
        )
        .expect("encode token")
    }

    /// A well-formed token signed with a secret this node does not know.
    pub fn foreign_token(&self, id: &str) -> String {
        Authenticator::new("some-other-secret", "some-other-key")
            .mint(&user(id, id, &[Role::Admin]), Duration::from_secs(3600))
    }

    /// The backend API key (`Authorization: Bearer <key>` on publish and history).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    // ---- REST ----

    /// The events `channel` retains (up to 1,000), read with the API key.
    pub async fn history_events(&self, channel: &str) -> Vec<Value> {
        let page = self
            .get(
                &format!("/api/channels/{channel}/history?limit=1000"),
                Some(self.api_key()),
            )
            .await
            .expect_status(StatusCode::OK);
        page["events"].as_array().cloned().unwrap_or_default()
    }

    /// `GET path` with `Authorization: Bearer <bearer>` when given.
    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Reply {
        let mut request = self.http.get(self.http_url(path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        Reply::from(request.send().await.expect("GET request")).await
    }

    /// `POST path` with a JSON body and `Authorization: Bearer <bearer>` when given.
    pub async fn post(&self, path: &str, bearer: Option<&str>, body: &Value) -> Reply {
        let mut request = self.http.post(self.http_url(path)).json(body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        Reply::from(request.send().await.expect("POST request")).await
    }

    /// `POST path` with any body and headers.
    pub async fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut request = self.http.post(self.http_url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Reply::from(request.send().await.expect("POST request")).await
    }

    /// `POST /api/creator/broadcast`, which must succeed.
    pub async fn create_broadcast(&self, token: &str, message: &str, kind: &str) -> Value {
        let body = json!({ "message": message, "type": kind });
        self.post("/api/creator/broadcast", Some(token), &body)
            .await
            .expect_status(StatusCode::OK)
    }

    /// `POST /api/creator/broadcast/clear`, which must succeed.
    pub async fn clear_broadcast(&self, token: &str) -> Value {
        self.post("/api/creator/broadcast/clear", Some(token), &json!({}))
            .await
            .expect_status(StatusCode::OK)
    }

    /// `GET /api/creator/broadcast/active` as `token`'s user: the `broadcast` field.
    pub async fn active_broadcast(&self, token: &str) -> Value {
        self.get("/api/creator/broadcast/active", Some(token))
            .await
            .expect_status(StatusCode::OK)["broadcast"]
            .clone()
    }

    /// `POST /api/publish` with the API key, which must succeed.
    pub async fn publish(&self, channel: &str, data: Value) -> Value {
        self.publish_body(json!({ "channel": channel, "data": data }))
            .await
    }

    /// `POST /api/publish` for the listed users only, which must succeed.
    pub async fn publish_to(&self, channel: &str, data: Value, users: &[&str]) -> Value {
        self.publish_body(json!({ "channel": channel, "data": data, "users": users }))
            .await
    }

    async fn publish_body(&self, body: Value) -> Value {
        self.post("/api/publish", Some(self.api_key()), &body)
            .await
            .expect_status(StatusCode::OK)
    }

    /// The value of a Prometheus counter or gauge without labels (0 when never recorded).
    /// Metrics are process-wide: every node in one test binary adds to the same counters.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(self.http_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once(' '))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.trim().parse().expect("numeric metric"))
            .unwrap_or(0.0)
    }

    // ---- WebSockets ----

    /// Opens `path` (which may carry a query) with `?token=` when a token is given. The
    /// upgrade must succeed; what follows (greeting or a close) is for the test to read.
    pub async fn ws(&self, path: &str, token: Option<&str>) -> WsClient {
        let mut url = self.ws_url(path);
        if let Some(token) = token {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("token=");
            url.push_str(token);
        }
        WsClient::connect(url.into_client_request().expect("ws request")).await
    }

    /// Opens `path` with extra request headers (for `Authorization` or `Cookie`).
    pub async fn ws_with_headers(&self, path: &str, headers: &[(&str, &str)]) -> WsClient {
        let mut request = self.ws_url(path).into_client_request().expect("ws request");
        for (name, value) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName =
                name.parse().expect("header name");
            request
                .headers_mut()
                .insert(name, HeaderValue::from_str(value).expect("header value"));
        }
        WsClient::connect(request).await
    }

    /// The broadcast socket for `token`'s user, after its `connected` message.
    pub async fn broadcast_socket(&self, token: &str) -> WsClient {
        let mut client = self.ws(BROADCAST_WS, Some(token)).await;
        client.recv_type("connected", TIMEOUT).await;
        client
    }

    /// The generic socket on `channels` for `token`'s user, after its `connected` message.
    pub async fn channel_socket(&self, channels: &[&str], token: &str) -> WsClient {
        let mut client = self.ws(&channels_path(channels, None), Some(token)).await;
        client.recv_type("connected", TIMEOUT).await;
        client
    }
}

/// `/ws?channel=A&channel=B` (and `&since=` when given), percent-encoding each value.
pub fn channels_path(channels: &[&str], since: Option<&str>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for channel in channels {
        query.append_pair("channel", channel);
    }
    if let Some(since) = since {
        query.append_pair("since", since);
    }
    format!("/ws?{}", query.finish())
}

fn user(id: &str, name: &str, roles: &[Role]) -> User {
    User {
        id: id.into(),
        name: name.into(),
        roles: roles.to_vec(),
        creator_id: None,
    }
}

fn test_config(data_dir: &TempDir, configure: &Configure) -> Config {
    let mut config = Config::for_tests(data_dir.path());
    configure(&mut config);
    config
}

async fn launch(data_dir: &TempDir, configure: &Configure) -> Server {
    Server::start(test_config(data_dir, configure))
        .await
        .expect("herald node starts")
}

/// An HTTP answer: its status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let text = response.text().await.expect("response body");
        Self {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// The body, after asserting the status.
    #[track_caller]
    pub fn expect_status(self, status: StatusCode) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self.body
    }

    /// Asserts the status and the `{"status":"error","message":...}` body; answers the message.
    #[track_caller]
    pub fn expect_error(self, status: StatusCode) -> String {
        let body = self.expect_status(status);
        assert_eq!(body["status"], "error", "error body: {body}");
        let message = body["message"].as_str().unwrap_or_default().to_string();
        assert!(!message.is_empty(), "error without a message: {body}");
        message
    }
}

// ---- WebSocket client ----

/// What a client read from its socket.
#[derive(Debug)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame: its code and reason (code 1005 when the frame carried none).
    Close(u16, String),
    /// The connection ended without a close frame.
    Ended,
}

/// A WebSocket client that reads with deadlines.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// A client over a TCP connection the test opened itself (from a chosen local address).
    pub async fn connect_over(
        tcp: TcpStream,
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Self {
        let (stream, _response) = tokio::time::timeout(
            TIMEOUT,
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)),
        )
        .await
        .expect("websocket handshake in time")
        .expect("websocket handshake");
        Self { stream }
    }

    async fn connect(request: tokio_tungstenite::tungstenite::handshake::client::Request) -> Self {
        let (stream, _response) =
            tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(request))
                .await
                .expect("websocket handshake in time")
                .expect("websocket handshake");
        Self { stream }
    }

    /// The next text, binary or close frame (control pings and pongs are skipped), or `None`
    /// when nothing arrives within `timeout`.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()?;
            let frame = match next {
                None | Some(Err(_)) => Frame::Ended,
                Some(Ok(Message::Text(text))) => Frame::Text(text.to_string()),
                Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes.to_vec()),
                Some(Ok(Message::Close(frame))) => match frame {
                    Some(frame) => Frame::Close(u16::from(frame.code), frame.reason.to_string()),
                    None => Frame::Close(1005, String::new()),
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            };
            return Some(frame);
        }
    }

    /// The next text message, which must arrive within `timeout`.
    #[track_caller]
    pub fn recv_text(&mut self, timeout: Duration) -> impl Future<Output = String> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.next_frame(timeout).await {
                Some(Frame::Text(text)) => text,
                other => panic!("{caller}: expected a text message, got {other:?}"),
            }
        }
    }

    /// The next message, which must be JSON and arrive within `timeout`.
    #[track_caller]
    pub fn recv_json(&mut self, timeout: Duration) -> impl Future<Output = Value> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.next_frame(timeout).await {
                Some(Frame::Text(text)) => serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{caller}: expected JSON, got {text:?}")),
                other => panic!("{caller}: expected a JSON message, got {other:?}"),
            }
        }
    }

    /// Reads until a JSON message satisfies `predicate` and answers it, skipping the others
    /// (and non-JSON texts such as heartbeats). Fails on close or after `timeout`, listing what
    /// was skipped.
    #[track_caller]
    pub fn recv_json_until<'a>(
        &'a mut self,
        predicate: impl Fn(&Value) -> bool + 'a,
        timeout: Duration,
    ) -> impl Future<Output = Value> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = Instant::now() + timeout;
            let mut skipped = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.next_frame(left).await {
                    Some(Frame::Text(text)) => match serde_json::from_str::<Value>(&text) {
                        Ok(value) if predicate(&value) => return value,
                        _ => skipped.push(text),
                    },
                    other => panic!(
                        "{caller}: no matching message (got {other:?}); skipped: {skipped:#?}"
                    ),
                }
            }
        }
    }

    /// Reads until a message of type `marker` and answers the `n` of every `item` message
    /// before it, in arrival order.
    pub async fn item_numbers_until(&mut self, marker: &str, timeout: Duration) -> Vec<u64> {
        let mut items = Vec::new();
        loop {
            let message = self
                .recv_json_until(|m| m["type"] == "item" || m["type"] == marker, timeout)
                .await;
            if message["type"] == marker {
                return items;
            }
            items.push(message["n"].as_u64().expect("an item with its n"));
        }
    }

    /// Reads until a message of type `kind` arrives and answers it.
    #[track_caller]
    pub fn recv_type<'a>(
        &'a mut self,
        kind: &'a str,
        timeout: Duration,
    ) -> impl Future<Output = Value> + 'a {
        self.recv_json_until(move |message| message["type"] == kind, timeout)
    }

    /// Reads until the server closes the connection and asserts the close code; answers the
    /// reason. Messages before the close are skipped.
    #[track_caller]
    pub fn expect_close(
        &mut self,
        code: u16,
        timeout: Duration,
    ) -> impl Future<Output = String> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.next_frame(left).await {
                    Some(Frame::Text(_) | Frame::Binary(_)) => continue,
                    Some(Frame::Close(got, reason)) => {
                        assert_eq!(got, code, "{caller}: close code (reason {reason:?})");
                        return reason;
                    }
                    other => panic!("{caller}: expected a close with {code}, got {other:?}"),
                }
            }
        }
    }

    /// Sends `{"type":"ping"}` and answers every JSON message that arrived before the `pong`.
    ///
    /// The server sends what it owes on connect (greeting, active broadcast, replay) before it
    /// reads anything, so this is an exact barrier for those messages.
    pub async fn messages_before_pong(&mut self) -> Vec<Value> {
        self.send_json(&json!({ "type": "ping" })).await;
        let mut before = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left).await {
                Some(Frame::Text(text)) => match serde_json::from_str::<Value>(&text) {
                    Ok(value) if value["type"] == "pong" => return before,
                    Ok(value) => before.push(value),
                    Err(_) => {}
                },
                other => panic!("expected a pong, got {other:?}; before it: {before:#?}"),
            }
        }
    }

    /// Sends a text message; answers false instead of failing when the connection is gone.
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        matches!(
            tokio::time::timeout(TIMEOUT, self.stream.send(Message::text(text))).await,
            Ok(Ok(()))
        )
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.send(Message::binary(bytes)).await;
    }

    pub async fn send(&mut self, message: Message) {
        tokio::time::timeout(TIMEOUT, self.stream.send(message))
            .await
            .expect("websocket send in time")
            .expect("websocket send");
    }

    /// Closes from the client side and waits for the server to finish the handshake.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, self.stream.next()).await {}
    }
}

/// Polls `condition` until it holds, failing with `what` after `timeout`.
#[track_caller]
pub fn wait_until<'a, F, Fut>(
    what: &'a str,
    timeout: Duration,
    mut condition: F,
) -> impl Future<Output = ()> + 'a
where
    F: FnMut() -> Fut + 'a,
    Fut: Future<Output = bool> + 'a,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = Instant::now() + timeout;
        loop {
            if condition().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{caller}: timed out after {timeout:?} waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
