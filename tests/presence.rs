//! Presence on one node (issue 13): the endpoints and who may read them, the events and their
//! shape, `?presence=false`, the track socket's "who is listening", the per-channel limit, and
//! the broadcast stats counted by the same mechanism. Across nodes: `cluster_presence.rs`.

mod common;

use std::time::Duration;

use common::TestNode;
use reqwest::StatusCode;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(5);

async fn presence(node: &TestNode, channel: &str) -> Value {
    node.get(
        &format!("/api/channels/{channel}/presence"),
        Some(node.api_key()),
    )
    .await
    .expect_status(StatusCode::OK)
}

#[tokio::test]
async fn the_endpoints_list_and_count_users_for_the_api_key_and_allowed_users() {
    let node = TestNode::start().await;
    let ann = node.token("u1", "Ann", &[]);
    let bob = node.token("u2", "Bob", &[]);
    let _a1 = node.channel_socket(&["forum"], &ann).await;
    let _a2 = node.channel_socket(&["forum"], &ann).await;
    let _b = node.channel_socket(&["forum"], &bob).await;
    let answer = presence(&node, "forum").await;
    assert_eq!(
        answer,
        json!({
            "status": "success",
            "channel": "forum",
            "count": 2,
            "users": [
                {"user_id": "u1", "name": "Ann", "connections": 2},
                {"user_id": "u2", "name": "Bob", "connections": 1},
            ],
            "truncated": false,
        })
    );
    let counted = node
        .get("/api/channels/forum/presence/count", Some(&bob))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        counted,
        json!({"status": "success", "channel": "forum", "count": 2})
    );
    // A user may read presence only where they may subscribe.
    let message = node
        .get("/api/channels/user:u2/presence", Some(&ann))
        .await
        .expect_error(StatusCode::FORBIDDEN);
    assert!(!message.is_empty());
    node.get("/api/channels/forum/presence", None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED);
    let message = node
        .get("/api/channels/orders:1/presence", Some(node.api_key()))
        .await
        .expect_error(StatusCode::NOT_FOUND);
    assert!(message.contains("no presence"), "{message}");
    node.get("/api/channels/bad%20name/presence", Some(node.api_key()))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn browsers_on_another_origin_may_ask_with_a_bearer_token() {
    let node = TestNode::start().await;
    let preflight = node
        .http()
        .request(
            reqwest::Method::OPTIONS,
            node.http_url("/api/channels/forum/presence"),
        )
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let answer = node
        .http()
        .get(node.http_url("/api/channels/forum/presence/count"))
        .header("origin", "https://app.example")
        .bearer_auth(node.token("u1", "Ann", &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["access-control-allow-origin"], "*");
    assert!(
        answer
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
}

#[tokio::test]
async fn joins_and_leaves_reach_subscribers_without_a_cursor_and_are_never_replayed() {
    let node = TestNode::start().await;
    let watcher_token = node.token("w", "Watcher", &[]);
    let mut watcher = node
        .ws(
            "/ws?channel=forum:thread:9&presence=false",
            Some(&watcher_token),
        )
        .await;
    let start = watcher.recv_type("connected", TIMEOUT).await["cursor"]
        .as_str()
        .expect("a cursor")
        .to_string();
    let ann = node.token("u1", "Ann", &[]);
    let socket = node.channel_socket(&["forum:thread:9"], &ann).await;
    let join = watcher.recv_type("presence_join", TIMEOUT).await;
    assert_eq!(
        join,
        json!({"type": "presence_join", "channel": "forum:thread:9", "user": {"user_id": "u1", "name": "Ann"}})
    );
    drop(socket);
    let leave = watcher.recv_type("presence_leave", TIMEOUT).await;
    assert_eq!(leave["user"]["user_id"], "u1");
    assert!(leave.get("cursor").is_none());
    // The watcher (presence=false) was never counted.
    assert_eq!(presence(&node, "forum:thread:9").await["count"], 0);

    // Nothing of it is in the log: a resume from before the join replays the marker only.
    node.publish("forum:thread:9", json!({"type": "marker"}))
        .await;
    let history = node.history_events("forum:thread:9").await;
    assert!(
        history.iter().all(|event| event["type"] == "marker"),
        "{history:?}"
    );
    let mut resumed = node
        .ws(
            &format!("/ws?channel=forum:thread:9&presence=false&since={start}"),
            Some(&watcher_token),
        )
        .await;
    resumed.recv_type("connected", TIMEOUT).await;
    let first = resumed
        .recv_json_until(|m| m["type"] != "heartbeat", TIMEOUT)
        .await;
    assert_eq!(
        first["type"], "marker",
        "only the committed event is replayed: {first}"
    );
}

#[tokio::test]
async fn the_track_socket_says_who_is_listening() {
    let node = TestNode::start().await;
    let ann = node.token("u1", "Ann", &[]);
    let bob = node.token("u2", "Bob", &[]);
    let mut first = node.ws("/api/ws/track/42", Some(&ann)).await;
    first.recv_type("connected", TIMEOUT).await;
    let listening = first.recv_type("presence", TIMEOUT).await;
    assert_eq!(listening["channel"], "track:42");
    assert_eq!(listening["count"], 1, "the socket's own user: {listening}");
    let mut second = node.ws("/api/ws/track/42", Some(&bob)).await;
    second.recv_type("connected", TIMEOUT).await;
    let listening = second.recv_type("presence", TIMEOUT).await;
    assert_eq!(listening["count"], 2, "{listening}");
    let ids: Vec<&str> = listening["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["u1", "u2"]);
    let join = first
        .recv_json_until(
            |m| m["type"] == "presence_join" && m["user"]["user_id"] == "u2",
            TIMEOUT,
        )
        .await;
    assert_eq!(join["user"]["name"], "Bob");
}

#[tokio::test]
async fn past_the_limit_the_count_stays_exact_and_the_list_says_it_is_truncated() {
    let node = TestNode::start_with(|config| {
        config.presence.channels = vec!["*".into()];
        config.presence.max_users_per_channel = 2;
    })
    .await;
    let mut sockets = Vec::new();
    for n in 0..5 {
        let token = node.token(&format!("u{n}"), "x", &[]);
        sockets.push(node.channel_socket(&["room:1"], &token).await);
    }
    let answer = presence(&node, "room:1").await;
    assert_eq!(answer["count"], 5);
    assert_eq!(answer["users"].as_array().unwrap().len(), 2);
    assert_eq!(answer["truncated"], true);
    sockets.truncate(1);
    common::wait_until("the four closed sockets left", TIMEOUT, || async {
        presence(&node, "room:1").await["count"] == 1
    })
    .await;
    let answer = presence(&node, "room:1").await;
    assert_eq!(answer["users"].as_array().unwrap().len(), 1, "{answer}");
    assert_eq!(answer["truncated"], false);
}

#[tokio::test]
async fn broadcast_stats_count_listeners_through_presence() {
    let node = TestNode::start().await;
    let admin = node.admin_token("admin");
    let ann = node.token("u1", "Ann", &[]);
    let _listener = node.broadcast_socket(&ann).await;
    let _again = node.broadcast_socket(&ann).await;
    let mut hidden = node
        .ws(
            "/api/creator/broadcast/ws?presence=false",
            Some(&node.token("bot", "Bot", &[])),
        )
        .await;
    hidden.recv_type("connected", TIMEOUT).await;
    let stats = node
        .get("/api/creator/broadcast/stats", Some(&admin))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(stats["stats"]["connected_users"], 1, "{stats}");
    assert_eq!(stats["stats"]["connected_users_local"], 1, "{stats}");
    assert_eq!(presence(&node, "broadcasts").await["count"], 1);
}
