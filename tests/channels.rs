//! Generic channels: `POST /api/publish`, the `/ws?channel=...` socket with server-side routing,
//! and `GET /api/channels/{channel}/history`.

mod common;

use common::{TIMEOUT, TestNode, channels_path};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn publish_answers_after_the_commit_with_id_and_cursor() {
    let node = TestNode::start().await;
    let published = node
        .publish("forum", json!({ "type": "new_message", "text": "hi" }))
        .await;
    assert_eq!(published["status"], "success");
    assert!(
        published["id"].as_str().is_some_and(|id| id.len() == 36),
        "{published}"
    );
    assert!(published["cursor"].is_string());
    assert_eq!(published["replicated"], false);

    // Committed: history already has it.
    let history = node
        .get("/api/channels/forum/history", Some(node.api_key()))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(history["events"][0]["text"], "hi");
}

#[tokio::test]
async fn the_generic_socket_greets_with_its_channels() {
    let node = TestNode::start().await;
    let token = node.token("7", "gina", &[]);
    let mut socket = node
        .ws(
            &channels_path(&["forum", "room:9", "forum", "user:7"], None),
            Some(&token),
        )
        .await;
    let connected = socket.recv_json(TIMEOUT).await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["channels"], json!(["forum", "room:9", "user:7"]));
    assert_eq!(connected["user_id"], "7");
    assert!(connected["cursor"].is_string());
}

#[tokio::test]
async fn events_reach_only_the_subscribers_of_their_channel() {
    let node = TestNode::start().await;
    let token = node.token("1", "alice", &[]);
    let mut room1 = node.channel_socket(&["room:1"], &token).await;
    let mut room2 = node.channel_socket(&["room:2"], &token).await;
    let mut both = node
        .channel_socket(&["room:1", "room:2"], &node.token("2", "bob", &[]))
        .await;

    node.publish("room:1", json!({ "type": "new_message", "n": 1 }))
        .await;
    node.publish("room:2", json!({ "type": "new_message", "n": 2 }))
        .await;
    node.publish("room:1", json!({ "type": "new_message", "n": 3 }))
        .await;

    let first = room1.recv_json(TIMEOUT).await;
    assert_eq!(first["n"], 1);
    assert_eq!(first["channel"], "room:1");
    assert_eq!(first["type"], "new_message");
    assert!(first["cursor"].is_string());
    assert_eq!(room1.recv_json(TIMEOUT).await["n"], 3);
    let only = room2.recv_json(TIMEOUT).await;
    assert_eq!(
        (only["n"].clone(), only["channel"].clone()),
        (json!(2), json!("room:2"))
    );
    for n in 1..=3 {
        assert_eq!(both.recv_json(TIMEOUT).await["n"], n);
    }

    // room:2's subscriber saw nothing of room:1: its next event is the next on room:2.
    node.publish("room:2", json!({ "type": "new_message", "n": 4 }))
        .await;
    assert_eq!(room2.recv_json(TIMEOUT).await["n"], 4);
}

#[tokio::test]
async fn a_duplicated_channel_delivers_once() {
    let node = TestNode::start().await;
    let mut socket = node
        .channel_socket(&["forum", "forum"], &node.token("1", "alice", &[]))
        .await;
    node.publish("forum", json!({ "type": "new_message", "n": 1 }))
        .await;
    node.publish("forum", json!({ "type": "new_message", "n": 2 }))
        .await;
    assert_eq!(socket.recv_json(TIMEOUT).await["n"], 1);
    assert_eq!(socket.recv_json(TIMEOUT).await["n"], 2);
}

#[tokio::test]
async fn the_payload_arrives_intact() {
    let node = TestNode::start().await;
    let mut socket = node
        .channel_socket(&["forum:thread:5"], &node.token("1", "alice", &[]))
        .await;
    let data = json!({
        "type": "new_message",
        "thread_id": 5,
        "message": { "id": 10, "content": "héllo \"quoted\" 🎉", "tags": ["a", "b"], "none": null },
    });
    node.publish("forum:thread:5", data.clone()).await;
    let mut received = socket.recv_json(TIMEOUT).await;
    let object = received.as_object_mut().expect("object");
    assert_eq!(object.remove("channel"), Some(json!("forum:thread:5")));
    assert!(object.remove("cursor").is_some_and(|c| c.is_string()));
    assert_eq!(received, data);
}

#[tokio::test]
async fn history_pages_with_since_and_limit() {
    let node = TestNode::start().await;
    for n in 0..5 {
        node.publish("forum", json!({ "type": "new_message", "n": n }))
            .await;
        node.publish("other", json!({ "type": "new_message", "n": 100 + n }))
            .await;
    }
    let ns = |history: &Value| -> Vec<u64> {
        history["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|event| event["n"].as_u64().unwrap_or(999))
            .collect()
    };

    let first = node
        .get("/api/channels/forum/history?limit=3", Some(node.api_key()))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(first["status"], "success");
    assert_eq!(first["channel"], "forum");
    assert_eq!(ns(&first), [0, 1, 2]);
    assert_eq!(first["complete"], false);
    for event in first["events"].as_array().expect("events") {
        assert_eq!(event["channel"], "forum");
    }

    let cursor = first["cursor"].as_str().expect("cursor");
    let rest = node
        .get(
            &format!("/api/channels/forum/history?since={cursor}&limit=3"),
            Some(node.api_key()),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(ns(&rest), [3, 4]);
    assert_eq!(rest["complete"], true);

    let cursor = rest["cursor"].as_str().expect("cursor");
    let none = node
        .get(
            &format!("/api/channels/forum/history?since={cursor}"),
            Some(node.api_key()),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(ns(&none), Vec::<u64>::new());
}

#[tokio::test]
async fn history_for_a_user_leaves_out_events_targeted_at_others() {
    let node = TestNode::start().await;
    node.publish_to(
        "forum",
        json!({ "type": "forum_notification", "n": 1 }),
        &["2"],
    )
    .await;
    node.publish("forum", json!({ "type": "new_message", "n": 2 }))
        .await;
    let count = |body: Value| body["events"].as_array().map(Vec::len).unwrap_or(0);

    let user1 = node.token("1", "one", &[]);
    let user2 = node.token("2", "two", &[]);
    let seen_by_1 = node
        .get("/api/channels/forum/history", Some(&user1))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(count(seen_by_1.clone()), 1);
    assert_eq!(seen_by_1["events"][0]["n"], 2);
    let seen_by_2 = node
        .get("/api/channels/forum/history", Some(&user2))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(count(seen_by_2), 2);
    let seen_by_backend = node
        .get("/api/channels/forum/history", Some(node.api_key()))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(count(seen_by_backend), 2);
}

#[tokio::test]
async fn internal_channels_have_no_history() {
    let node = TestNode::start().await;
    node.get("/api/channels/herald:acks/history", Some(node.api_key()))
        .await
        .expect_error(StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn broadcasts_are_a_channel_too() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let mut generic = node
        .channel_socket(&["broadcasts"], &node.token("1", "alice", &[]))
        .await;
    let created = node.create_broadcast(&admin, "via /ws", "info").await;
    let message = generic.recv_type("new_broadcast", TIMEOUT).await;
    assert_eq!(message["broadcast"]["id"], created["id"]);
    assert_eq!(message["channel"], "broadcasts");
}
