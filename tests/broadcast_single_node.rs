//! The seeds' "Test 1: Single Replica - Basic Functionality" on the broadcast banner, step by
//! step, plus the REST answers around it (create, active, limits, stats, clear).

mod common;

use common::{TIMEOUT, TestNode};
use herald::auth::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn test_1_connect_broadcast_acknowledge_clear() {
    let node = TestNode::start().await;
    let admin = node.token("100", "boss", &[Role::Admin]);
    let alice = node.token("1", "alice", &[]);

    // 1-2. Connect: the greeting says so and carries a cursor.
    let mut socket = node.ws(common::BROADCAST_WS, Some(&alice)).await;
    let connected = socket.recv_json(TIMEOUT).await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["message"], "Connected to broadcast live updates");
    assert!(connected["cursor"].is_string(), "connected: {connected}");
    assert!(
        socket.messages_before_pong().await.is_empty(),
        "nothing is active yet"
    );

    // 3. Send a broadcast.
    let created = node
        .create_broadcast(&admin, "Test broadcast", "info")
        .await;
    assert_eq!(created["status"], "success");
    assert_eq!(created["character_count"], 14);
    assert_eq!(created["max_characters"], 280);
    assert_eq!(created["sent_to_users"], 1);
    let id = created["id"].as_str().expect("broadcast id").to_string();

    // 4. The socket receives it with the seeds' fields.
    let message = socket.recv_type("new_broadcast", TIMEOUT).await;
    let broadcast = &message["broadcast"];
    assert_eq!(broadcast["id"], id.as_str());
    assert_eq!(broadcast["message"], "Test broadcast");
    assert_eq!(broadcast["message_type"], "info");
    assert_eq!(
        broadcast["created_by"], "boss",
        "created_by is the username"
    );
    let created_at = broadcast["created_at"].as_str().expect("created_at");
    humantime::parse_rfc3339(created_at).expect("created_at is RFC 3339");
    assert_eq!(message["channel"], "broadcasts");
    assert!(message["cursor"].is_string());
    assert_eq!(node.active_broadcast(&alice).await["id"], id.as_str());

    // 5-6. Acknowledge over the socket: confirmed, and stored (the REST view agrees).
    socket
        .send_json(&json!({ "type": "acknowledge_broadcast", "broadcast_id": id }))
        .await;
    let acknowledged = socket.recv_type("broadcast_acknowledged", TIMEOUT).await;
    assert_eq!(acknowledged["broadcast_id"], id.as_str());
    assert_eq!(node.active_broadcast(&alice).await, Value::Null);
    assert_eq!(
        node.active_broadcast(&admin).await["id"],
        id.as_str(),
        "only alice acknowledged"
    );

    // 7-8. Clear: the socket is told.
    let cleared = node.clear_broadcast(&admin).await;
    assert_eq!(cleared["status"], "success");
    let message = socket.recv_type("broadcast_cleared", TIMEOUT).await;
    assert_eq!(message["message"], "Active broadcast has been cleared");
    assert_eq!(node.active_broadcast(&admin).await, Value::Null);
}

#[tokio::test]
async fn the_creator_receives_their_own_broadcast() {
    let node = TestNode::start().await;
    let creator = node.token("7", "carol", &[Role::Creator]);
    let mut own_socket = node.broadcast_socket(&creator).await;

    let created = node.create_broadcast(&creator, "from me", "warning").await;
    assert_eq!(created["sent_to_users"], 1);

    let message = own_socket.recv_type("new_broadcast", TIMEOUT).await;
    assert_eq!(message["broadcast"]["id"], created["id"]);
    assert_eq!(message["broadcast"]["message_type"], "warning");
    assert_eq!(message["broadcast"]["created_by"], "carol");
}

#[tokio::test]
async fn a_new_connection_gets_the_active_broadcast_and_can_ask_for_it() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let created = node.create_broadcast(&admin, "Maintenance", "alert").await;

    let bob = node.token("2", "bob", &[]);
    let mut socket = node.broadcast_socket(&bob).await;
    let on_connect = socket.messages_before_pong().await;
    assert_eq!(on_connect.len(), 1, "on connect: {on_connect:#?}");
    let active = &on_connect[0];
    assert_eq!(active["type"], "active_broadcast");
    assert_eq!(active["broadcast"]["id"], created["id"]);
    assert_eq!(active["broadcast"]["message"], "Maintenance");
    assert_eq!(active["broadcast"]["message_type"], "alert");

    socket
        .send_json(&json!({ "type": "get_active_broadcast" }))
        .await;
    let again = socket.recv_type("active_broadcast", TIMEOUT).await;
    assert_eq!(again["broadcast"]["id"], created["id"]);

    // The REST view uses the seeds' `type` field.
    let rest = node.active_broadcast(&bob).await;
    assert_eq!(rest["id"], created["id"]);
    assert_eq!(rest["message"], "Maintenance");
    assert_eq!(rest["type"], "alert");
}

#[tokio::test]
async fn a_newer_broadcast_replaces_the_active_one() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    node.create_broadcast(&admin, "first", "info").await;
    let second = node.create_broadcast(&admin, "second", "info").await;

    let viewer = node.token("3", "dave", &[]);
    assert_eq!(node.active_broadcast(&viewer).await["id"], second["id"]);
    assert_eq!(node.active_broadcast(&viewer).await["message"], "second");
}

#[tokio::test]
async fn acknowledge_over_rest() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let alice = node.token("1", "alice", &[]);
    let created = node.create_broadcast(&admin, "read me", "info").await;

    let body = json!({ "broadcast_id": created["id"] });
    let reply = node
        .post("/api/creator/broadcast/acknowledge", Some(&alice), &body)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(reply["status"], "success");
    assert_eq!(node.active_broadcast(&alice).await, Value::Null);

    // Acknowledging twice is harmless.
    node.post("/api/creator/broadcast/acknowledge", Some(&alice), &body)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(node.active_broadcast(&alice).await, Value::Null);
}

#[tokio::test]
async fn limits_and_stats() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let alice = node.token("1", "alice", &[]);

    let limits = node
        .get("/api/creator/broadcast/limits", Some(&alice))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(limits["max_characters"], 280);
    assert_eq!(limits["recommended_length"], 120);
    assert_eq!(limits["current_active_broadcasts"], 0);

    // Two sockets of one user and one of another: two connected users.
    let _first = node.broadcast_socket(&alice).await;
    let _second = node.broadcast_socket(&alice).await;
    let _other = node.broadcast_socket(&node.token("2", "bob", &[])).await;
    node.create_broadcast(&admin, "one", "info").await;
    let created = node.create_broadcast(&admin, "two", "info").await;
    assert_eq!(created["sent_to_users"], 2);

    let stats = node
        .get("/api/creator/broadcast/stats", Some(&admin))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(stats["status"], "success");
    let stats = &stats["stats"];
    assert_eq!(stats["broadcasts_today"], 2);
    assert_eq!(stats["active_broadcast"], true);
    assert_eq!(stats["connected_users"], 2);
    assert_eq!(stats["connected_users_local"], 2);
    assert_eq!(stats["max_characters"], 280);

    let limits = node
        .get("/api/creator/broadcast/limits", Some(&alice))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(limits["current_active_broadcasts"], 1);
}

#[tokio::test]
async fn stats_forget_users_who_disconnect() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let socket = node.broadcast_socket(&node.token("1", "alice", &[])).await;
    let connected_users = || async {
        node.get("/api/creator/broadcast/stats", Some(&admin))
            .await
            .expect_status(StatusCode::OK)["stats"]["connected_users"]
            .as_u64()
            .expect("connected_users")
    };
    assert_eq!(connected_users().await, 1);

    socket.close().await;
    common::wait_until("the user is gone from the stats", TIMEOUT, || async {
        connected_users().await == 0
    })
    .await;
}
