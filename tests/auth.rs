//! Authentication and permissions, one row of DESIGN.md section 8 at a time: missing, invalid,
//! foreign and expired tokens (REST 401, socket closed with 1008 and a reason), the three
//! places a token may be, wrong roles (403 / 1008) and other users' private channels.

mod common;

use common::{BROADCAST_WS, TIMEOUT, TestNode, channels_path};
use herald::auth::Role;
use herald::config::DEV_JWT_SECRET;
use reqwest::StatusCode;
use serde_json::json;

/// A token with these claims, signed with the node's secret using `algorithm`.
fn signed(claims: serde_json::Value, algorithm: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(DEV_JWT_SECRET.as_bytes()),
    )
    .expect("encode token")
}

fn in_an_hour() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600
}

/// Every kind of bad credential, with the reason a socket is given.
fn bad_tokens(node: &TestNode) -> Vec<(&'static str, Option<String>, &'static str)> {
    let exp = in_an_hour();
    vec![
        ("missing", None, "missing token"),
        ("garbage", Some("not-a-jwt".to_string()), "invalid token"),
        ("foreign", Some(node.foreign_token("1")), "invalid token"),
        ("expired", Some(node.expired_token("1")), "token expired"),
        (
            "another algorithm",
            Some(signed(
                json!({ "sub": "1", "roles": ["admin"], "exp": exp }),
                jsonwebtoken::Algorithm::HS384,
            )),
            "invalid token",
        ),
        (
            "no expiry",
            Some(signed(
                json!({ "sub": "1", "roles": ["admin"] }),
                jsonwebtoken::Algorithm::HS256,
            )),
            "invalid token",
        ),
        (
            "no subject",
            Some(signed(
                json!({ "roles": ["admin"], "exp": exp }),
                jsonwebtoken::Algorithm::HS256,
            )),
            "invalid token",
        ),
    ]
}

#[tokio::test]
async fn numeric_user_ids_are_accepted() {
    let node = TestNode::start().await;
    // The seeds' user ids are integers.
    let token = signed(
        json!({ "sub": 42, "name": "num", "exp": in_an_hour() }),
        jsonwebtoken::Algorithm::HS256,
    );
    let mut socket = node.channel_socket(&["user:42"], &token).await;
    node.publish("user:42", json!({ "type": "mention" })).await;
    assert_eq!(socket.recv_json(TIMEOUT).await["type"], "mention");
    node.get("/api/creator/broadcast/active", Some(&token))
        .await
        .expect_status(StatusCode::OK);
}

#[tokio::test]
async fn rest_refuses_bad_tokens_with_401() {
    let node = TestNode::start().await;
    let body = json!({ "message": "hello", "type": "info" });
    for (what, token, _) in bad_tokens(&node) {
        let token = token.as_deref();
        let message = node
            .post("/api/creator/broadcast", token, &body)
            .await
            .expect_error(StatusCode::UNAUTHORIZED);
        assert!(!message.is_empty(), "{what}");
        node.get("/api/creator/broadcast/active", token)
            .await
            .expect_error(StatusCode::UNAUTHORIZED);
        node.post(
            "/api/creator/broadcast/acknowledge",
            token,
            &json!({ "broadcast_id": "x" }),
        )
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
        node.get("/api/channels/forum/history", token)
            .await
            .expect_error(StatusCode::UNAUTHORIZED);
    }
    let expired = node.expired_token("1");
    let message = node
        .get("/api/creator/broadcast/active", Some(&expired))
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn sockets_with_bad_tokens_are_closed_with_1008_and_a_reason() {
    let node = TestNode::start().await;
    for path in [BROADCAST_WS, "/ws?channel=forum"] {
        for (what, token, reason) in bad_tokens(&node) {
            let mut socket = node.ws(path, token.as_deref()).await;
            let got = socket.expect_close(1008, TIMEOUT).await;
            assert_eq!(got, reason, "{what} token on {path}");
        }
    }
}

#[tokio::test]
async fn a_token_may_come_from_the_header_the_query_or_the_cookie() {
    let node = TestNode::start().await;
    let token = node.token("1", "alice", &[]);

    // REST
    let bearer = node
        .get("/api/creator/broadcast/active", Some(&token))
        .await;
    assert_eq!(bearer.status, StatusCode::OK);
    let query = node
        .get(
            &format!("/api/creator/broadcast/active?token={token}"),
            None,
        )
        .await;
    assert_eq!(query.status, StatusCode::OK);
    let cookie = node
        .http()
        .get(node.http_url("/api/creator/broadcast/active"))
        .header("cookie", format!("theme=dark; herald_token={token}"))
        .send()
        .await
        .expect("request");
    assert_eq!(cookie.status(), StatusCode::OK);

    // Sockets
    let bearer = format!("Bearer {token}");
    let cookie = format!("herald_token={token}");
    for headers in [
        [("authorization", bearer.as_str())],
        [("cookie", cookie.as_str())],
    ] {
        let mut socket = node.ws_with_headers(BROADCAST_WS, &headers).await;
        let connected = socket.recv_json(TIMEOUT).await;
        assert_eq!(connected["type"], "connected", "with {}", headers[0].0);
    }
    let mut socket = node.ws(BROADCAST_WS, Some(&token)).await;
    assert_eq!(socket.recv_json(TIMEOUT).await["type"], "connected");
}

#[tokio::test]
async fn only_creators_and_admins_create_clear_and_read_stats() {
    let node = TestNode::start().await;
    let plain = node.token("1", "viewer", &[]);
    let team = node.token("2", "helper", &[Role::Team]);
    let body = json!({ "message": "hello", "type": "info" });
    for token in [&plain, &team] {
        node.post("/api/creator/broadcast", Some(token), &body)
            .await
            .expect_error(StatusCode::FORBIDDEN);
        node.post("/api/creator/broadcast/clear", Some(token), &json!({}))
            .await
            .expect_error(StatusCode::FORBIDDEN);
        node.get("/api/creator/broadcast/stats", Some(token))
            .await
            .expect_error(StatusCode::FORBIDDEN);
    }
    assert_eq!(
        node.active_broadcast(&plain).await,
        serde_json::Value::Null,
        "a refused create publishes nothing"
    );

    for token in [
        node.token("3", "maker", &[Role::Creator]),
        node.token("4", "root", &[Role::Admin]),
    ] {
        node.create_broadcast(&token, "allowed", "info").await;
        node.clear_broadcast(&token).await;
        node.get("/api/creator/broadcast/stats", Some(&token))
            .await
            .expect_status(StatusCode::OK);
    }
    // Anyone signed in may read the active broadcast and the limits.
    for path in [
        "/api/creator/broadcast/active",
        "/api/creator/broadcast/limits",
    ] {
        node.get(path, Some(&team))
            .await
            .expect_status(StatusCode::OK);
    }
}

#[tokio::test]
async fn private_and_admin_channels_are_refused_with_1008() {
    let node = TestNode::start().await;
    let viewer = node.token("1", "viewer", &[Role::Team]);
    let refused = [
        (vec!["user:2"], "another user's private channel"),
        (
            vec!["book_requests:user:2"],
            "another user's private channel",
        ),
        (
            vec!["book_requests:admin"],
            "creator or admin role required",
        ),
        (vec!["forum", "user:2"], "another user's private channel"),
        (vec!["herald:acks"], "internal channel"),
    ];
    for (channels, reason) in refused {
        let mut socket = node
            .ws(&channels_path(&channels, None), Some(&viewer))
            .await;
        let got = socket.expect_close(1008, TIMEOUT).await;
        assert_eq!(got, reason, "channels {channels:?}");
    }

    // Their own channels, and the admin channel for an admin or a creator.
    let mut own = node
        .ws(
            &channels_path(&["user:1", "book_requests:user:1"], None),
            Some(&viewer),
        )
        .await;
    let connected = own.recv_json(TIMEOUT).await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(
        connected["channels"],
        json!(["user:1", "book_requests:user:1"])
    );
    for roles in [[Role::Admin], [Role::Creator]] {
        let token = node.token("9", "staff", &roles);
        let mut admin = node
            .ws(&channels_path(&["book_requests:admin"], None), Some(&token))
            .await;
        assert_eq!(admin.recv_json(TIMEOUT).await["type"], "connected");
    }
}

#[tokio::test]
async fn history_checks_the_same_permissions() {
    let node = TestNode::start().await;
    node.publish("user:2", json!({ "type": "mention" })).await;
    let viewer = node.token("1", "viewer", &[]);
    node.get("/api/channels/user:2/history", Some(&viewer))
        .await
        .expect_error(StatusCode::FORBIDDEN);
    node.get("/api/channels/book_requests:admin/history", Some(&viewer))
        .await
        .expect_error(StatusCode::FORBIDDEN);
    let own = node.token("2", "owner", &[]);
    let history = node
        .get("/api/channels/user:2/history", Some(&own))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(history["events"].as_array().map(Vec::len), Some(1));
    node.get("/api/channels/user:2/history", Some(node.api_key()))
        .await
        .expect_status(StatusCode::OK);
}

#[tokio::test]
async fn publish_needs_the_api_key() {
    let node = TestNode::start().await;
    let body = json!({ "channel": "forum", "data": { "type": "new_message" } });
    let user = node.token("1", "alice", &[Role::Admin]);
    for bearer in [None, Some("wrong-key"), Some(user.as_str())] {
        node.post("/api/publish", bearer, &body)
            .await
            .expect_error(StatusCode::UNAUTHORIZED);
    }
    node.post("/api/publish", Some(node.api_key()), &body)
        .await
        .expect_status(StatusCode::OK);
}
