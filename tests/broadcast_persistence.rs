//! The seeds' "Test 6: Acknowledgment Persistence", and the same state surviving a restart of
//! the node (graceful shutdown, then a new process on the same data directory).

mod common;

use common::{TIMEOUT, TestNode};
use herald::auth::Role;
use serde_json::{Value, json};

/// The types of what a fresh broadcast socket is sent on connect.
async fn on_connect_types(node: &TestNode, token: &str) -> Vec<Value> {
    let mut socket = node.broadcast_socket(token).await;
    let messages = socket.messages_before_pong().await;
    socket.close().await;
    messages
}

#[tokio::test]
async fn test_6_an_acknowledged_broadcast_is_not_resent() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let user1 = node.token("1", "one", &[]);
    let user2 = node.token("2", "two", &[]);

    // 1-3. Connect, receive, acknowledge.
    let mut socket = node.broadcast_socket(&user1).await;
    let created = node
        .create_broadcast(&admin, "Acknowledgment test", "info")
        .await;
    let id = created["id"].as_str().expect("id").to_string();
    let received = socket.recv_type("new_broadcast", TIMEOUT).await;
    assert_eq!(received["broadcast"]["id"], id.as_str());
    socket
        .send_json(&json!({ "type": "acknowledge_broadcast", "broadcast_id": id }))
        .await;
    socket.recv_type("broadcast_acknowledged", TIMEOUT).await;

    // 4-6. Disconnect and reconnect the same user: no active broadcast.
    socket.close().await;
    let again = on_connect_types(&node, &user1).await;
    assert!(again.is_empty(), "user 1 got {again:#?}");
    let active = node
        .get("/api/creator/broadcast/active", Some(&user1))
        .await
        .expect_status(reqwest::StatusCode::OK);
    assert_eq!(active, json!({ "broadcast": null }));

    // 7-8. Another user does get it.
    let other = on_connect_types(&node, &user2).await;
    assert_eq!(other.len(), 1, "user 2 got {other:#?}");
    assert_eq!(other[0]["type"], "active_broadcast");
    assert_eq!(other[0]["broadcast"]["id"], id.as_str());
    assert_eq!(node.active_broadcast(&user2).await["id"], id.as_str());
}

#[tokio::test]
async fn acknowledgements_are_per_broadcast() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let user1 = node.token("1", "one", &[]);

    let first = node.create_broadcast(&admin, "first", "info").await;
    let body = json!({ "broadcast_id": first["id"] });
    node.post("/api/creator/broadcast/acknowledge", Some(&user1), &body)
        .await
        .expect_status(reqwest::StatusCode::OK);
    assert_eq!(node.active_broadcast(&user1).await, Value::Null);

    // A new broadcast is active again for the same user.
    let second = node.create_broadcast(&admin, "second", "info").await;
    assert_eq!(node.active_broadcast(&user1).await["id"], second["id"]);
    let on_connect = on_connect_types(&node, &user1).await;
    assert_eq!(on_connect.len(), 1, "{on_connect:#?}");
    assert_eq!(on_connect[0]["broadcast"]["id"], second["id"]);
}

#[tokio::test]
async fn a_restart_keeps_the_active_broadcast_and_the_acknowledgements() {
    let mut node = TestNode::start().await;
    let admin = node.admin_token("100");
    let user1 = node.token("1", "one", &[]);
    let user2 = node.token("2", "two", &[]);

    let created = node
        .create_broadcast(&admin, "Survives restarts", "warning")
        .await;
    let id = created["id"].as_str().expect("id").to_string();
    let mut socket = node.broadcast_socket(&user1).await;
    socket
        .send_json(&json!({ "type": "acknowledge_broadcast", "broadcast_id": id }))
        .await;
    socket.recv_type("broadcast_acknowledged", TIMEOUT).await;

    node.restart().await;
    socket.expect_close(1001, TIMEOUT).await;

    // User 1 acknowledged before the restart: nothing on connect, null over REST.
    let again = on_connect_types(&node, &user1).await;
    assert!(again.is_empty(), "user 1 got {again:#?}");
    assert_eq!(node.active_broadcast(&user1).await, Value::Null);

    // User 2 did not: the active broadcast is still there, unchanged.
    let other = on_connect_types(&node, &user2).await;
    assert_eq!(other.len(), 1, "user 2 got {other:#?}");
    assert_eq!(other[0]["type"], "active_broadcast");
    let broadcast = &other[0]["broadcast"];
    assert_eq!(broadcast["id"], id.as_str());
    assert_eq!(broadcast["message"], "Survives restarts");
    assert_eq!(broadcast["message_type"], "warning");
    let rest = node.active_broadcast(&user2).await;
    assert_eq!(rest["id"], id.as_str());
    assert_eq!(rest["type"], "warning");

    // Acknowledging after the restart still works, and the known id is still known.
    let body = json!({ "broadcast_id": id });
    node.post("/api/creator/broadcast/acknowledge", Some(&user2), &body)
        .await
        .expect_status(reqwest::StatusCode::OK);
    assert_eq!(node.active_broadcast(&user2).await, Value::Null);

    // Stats still count today's broadcast.
    let stats = node
        .get("/api/creator/broadcast/stats", Some(&admin))
        .await
        .expect_status(reqwest::StatusCode::OK);
    assert_eq!(stats["stats"]["broadcasts_today"], 1);
    assert_eq!(stats["stats"]["active_broadcast"], true);
}

#[tokio::test]
async fn a_restart_keeps_a_cleared_banner_cleared() {
    let mut node = TestNode::start().await;
    let admin = node.token("100", "boss", &[Role::Creator]);
    node.create_broadcast(&admin, "short-lived", "info").await;
    node.clear_broadcast(&admin).await;

    node.restart().await;

    assert_eq!(node.active_broadcast(&admin).await, Value::Null);
    let on_connect = on_connect_types(&node, &node.token("5", "eve", &[])).await;
    assert!(on_connect.is_empty(), "{on_connect:#?}");
    let limits = node
        .get("/api/creator/broadcast/limits", Some(&admin))
        .await
        .expect_status(reqwest::StatusCode::OK);
    assert_eq!(limits["current_active_broadcasts"], 0);

    // The log continues after the restart: a new broadcast becomes active and is delivered.
    let mut socket = node.broadcast_socket(&admin).await;
    let created = node.create_broadcast(&admin, "after restart", "info").await;
    let received = socket.recv_type("new_broadcast", TIMEOUT).await;
    assert_eq!(received["broadcast"]["id"], created["id"]);
}
