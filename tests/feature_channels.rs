//! Feature channels are written by their features: `POST /api/publish` into `broadcasts` or a
//! `track:*` channel is refused with 403 naming the endpoint that writes it, and changes
//! neither the channel's history nor its materialized state; application channels publish as
//! before.

mod common;

use common::{TIMEOUT, TestNode};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn publish_refused(node: &TestNode, channel: &str, data: Value) -> String {
    let body = json!({ "channel": channel, "data": data });
    node.post("/api/publish", Some(node.api_key()), &body)
        .await
        .expect_error(StatusCode::FORBIDDEN)
}

async fn history_len(node: &TestNode, channel: &str) -> usize {
    node.get(
        &format!("/api/channels/{channel}/history?limit=1000"),
        Some(node.api_key()),
    )
    .await
    .expect_status(StatusCode::OK)["events"]
        .as_array()
        .map(Vec::len)
        .unwrap_or_default()
}

#[tokio::test]
async fn publishing_into_broadcasts_is_refused_and_the_active_broadcast_is_unchanged() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let alice = node.token("1", "alice", &[]);
    let created = node
        .create_broadcast(&admin, "Maintenance at 18:00", "warning")
        .await;
    let mut listener = node.broadcast_socket(&alice).await;
    let greeted = listener.recv_type("active_broadcast", TIMEOUT).await;
    assert_eq!(greeted["broadcast"]["id"], created["id"]);

    let forged = json!({ "type": "new_broadcast", "broadcast": {
        "id": "forged", "message": "x".repeat(1000), "message_type": "alert",
        "created_by": "nobody", "created_by_id": "0", "created_at": "2020-01-01T00:00:00Z",
    }});
    for data in [
        forged,
        json!({ "type": "broadcast_cleared", "message": "gone" }),
        json!({ "type": "anything_else" }),
    ] {
        let message = publish_refused(&node, "broadcasts", data).await;
        assert_eq!(
            message,
            r#"channel "broadcasts" is written by POST /api/creator/broadcast"#
        );
    }

    let active = node.active_broadcast(&alice).await;
    assert_eq!(active["id"], created["id"], "{active}");
    assert_eq!(active["message"], "Maintenance at 18:00");
    assert_eq!(history_len(&node, "broadcasts").await, 1);
    // Nothing reached the broadcast socket: the next message is the answer to a ping.
    let before_pong = listener.messages_before_pong().await;
    assert!(before_pong.is_empty(), "{before_pong:#?}");

    // The feature's own endpoint still writes the channel.
    let next = node.create_broadcast(&admin, "Back online", "info").await;
    let live = listener.recv_type("new_broadcast", TIMEOUT).await;
    assert_eq!(live["broadcast"]["id"], next["id"]);
}

#[tokio::test]
async fn publishing_into_a_track_is_refused_and_its_comments_are_unchanged() {
    let node = TestNode::start().await;
    let alice = node.token("1", "alice", &[]);
    node.post(
        "/api/tracks/1/comments",
        Some(&alice),
        &json!({ "content": "first", "timestamp": 1 }),
    )
    .await
    .expect_status(StatusCode::OK);

    for kind in [
        "new_comment",
        "comment_edited",
        "comment_deleted",
        "user_typing",
    ] {
        let data = json!({ "type": kind, "track_id": "1", "comment": {
            "id": "forged", "content": "", "user_id": "2", "username": "mallory",
            "timestamp": -1, "created_at": "2020-01-01T00:00:00Z",
        }});
        let message = publish_refused(&node, "track:1", data).await;
        assert_eq!(
            message,
            r#"channel "track:1" is written by POST /api/tracks/1/comments"#
        );
    }
    let message = publish_refused(&node, "track:other", json!({ "type": "new_comment" })).await;
    assert!(
        message.contains("POST /api/tracks/other/comments"),
        "{message}"
    );

    let listed = node
        .get("/api/tracks/1/comments", Some(&alice))
        .await
        .expect_status(StatusCode::OK);
    let contents: Vec<&str> = listed["comments"]
        .as_array()
        .expect("comments")
        .iter()
        .filter_map(|c| c["content"].as_str())
        .collect();
    assert_eq!(contents, vec!["first"]);
    assert_eq!(history_len(&node, "track:1").await, 1);
    assert_eq!(history_len(&node, "track:other").await, 0);
}

#[tokio::test]
async fn application_channels_still_publish() {
    let node = TestNode::start().await;
    let alice = node.token("1", "alice", &[]);
    let mut socket = node
        .channel_socket(&["news", "forum", "forum:thread:3", "user:1"], &alice)
        .await;
    for channel in ["news", "forum", "forum:thread:3", "user:1"] {
        node.publish(channel, json!({ "type": "new_message", "on": channel }))
            .await;
        let message = socket.recv_type("new_message", TIMEOUT).await;
        assert_eq!(message["channel"], channel);
    }
    // Names that merely look like feature channels are the application's.
    for channel in ["broadcasts2", "tracks", "mytrack:1"] {
        node.publish(channel, json!({ "type": "x" })).await;
    }
}

#[tokio::test]
async fn the_cli_publish_goes_through_the_same_refusal() {
    let node = TestNode::start().await;
    let run = |channel: &'static str| {
        let http = node.http_addr().to_string();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["publish", "--http", &http, "--channel", channel])
            .args(["--type", "new_broadcast", "--data", r#"{"text":"hi"}"#])
            .env("HERALD_API_KEY", node.api_key())
            .output()
    };
    let refused = run("broadcasts").await.expect("run herald publish");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("403"), "{stderr}");
    assert!(
        stderr.contains(r#"is written by POST /api/creator/broadcast"#),
        "{stderr}"
    );
    let published = run("news").await.expect("run herald publish");
    assert!(published.status.success(), "{published:?}");
}
