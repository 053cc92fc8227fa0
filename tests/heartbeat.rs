//! Keep-alive in both directions: the server's heartbeat after client silence (text `ping` on
//! the broadcast socket, `{"type":"heartbeat"}` elsewhere) and its answers to client pings.

mod common;

use std::time::{Duration, Instant};

use common::{Frame, TIMEOUT, TestNode};
use serde_json::json;

const HEARTBEAT: Duration = Duration::from_millis(300);

async fn node_with_short_heartbeat() -> TestNode {
    TestNode::start_with(|config| config.limits.heartbeat = HEARTBEAT).await
}

#[tokio::test]
async fn the_broadcast_socket_sends_a_text_ping_after_silence() {
    let node = node_with_short_heartbeat().await;
    let mut socket = node.broadcast_socket(&node.token("1", "alice", &[])).await;
    let silent_since = Instant::now();
    let heartbeat = socket.recv_text(TIMEOUT).await;
    assert_eq!(heartbeat, "ping");
    assert!(
        silent_since.elapsed() >= HEARTBEAT / 2,
        "heartbeat came after only {:?}",
        silent_since.elapsed()
    );
    // And it keeps coming while the client stays silent.
    assert_eq!(socket.recv_text(TIMEOUT).await, "ping");
}

#[tokio::test]
async fn the_generic_socket_sends_a_json_heartbeat_after_silence() {
    let node = node_with_short_heartbeat().await;
    let mut socket = node
        .channel_socket(&["forum"], &node.token("1", "alice", &[]))
        .await;
    let heartbeat = socket.recv_json(TIMEOUT).await;
    assert_eq!(heartbeat, json!({ "type": "heartbeat" }));
    assert_eq!(
        socket.recv_json(TIMEOUT).await,
        json!({ "type": "heartbeat" })
    );
}

#[tokio::test]
async fn no_heartbeat_before_the_interval() {
    let node =
        TestNode::start_with(|config| config.limits.heartbeat = Duration::from_secs(60)).await;
    let mut socket = node
        .channel_socket(&["forum"], &node.token("1", "alice", &[]))
        .await;
    // Traffic the client does receive, with no heartbeat in front of it.
    node.publish("forum", json!({ "type": "new_message" }))
        .await;
    let next = socket.recv_json(TIMEOUT).await;
    assert_eq!(next["type"], "new_message", "{next}");
}

#[tokio::test]
async fn text_ping_gets_text_pong_on_every_socket() {
    let node = TestNode::start().await;
    let token = node.token("1", "alice", &[]);
    let mut broadcast = node.broadcast_socket(&token).await;
    let mut generic = node.channel_socket(&["forum"], &token).await;
    for socket in [&mut broadcast, &mut generic] {
        socket.send_text("ping").await;
        match socket.next_frame(TIMEOUT).await {
            Some(Frame::Text(text)) => assert_eq!(text, "pong"),
            other => panic!("expected pong, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn json_ping_gets_json_pong_on_every_socket() {
    let node = TestNode::start().await;
    let token = node.token("1", "alice", &[]);
    let mut broadcast = node.broadcast_socket(&token).await;
    let mut generic = node.channel_socket(&["forum"], &token).await;
    for socket in [&mut broadcast, &mut generic] {
        socket.send_json(&json!({ "type": "ping" })).await;
        assert_eq!(socket.recv_json(TIMEOUT).await, json!({ "type": "pong" }));
    }
}

#[tokio::test]
async fn a_client_answering_the_heartbeat_with_pong_gets_no_error() {
    let node = node_with_short_heartbeat().await;
    let mut socket = node.broadcast_socket(&node.token("1", "alice", &[])).await;
    assert_eq!(socket.recv_text(TIMEOUT).await, "ping");
    // The seeds' clients answer the server's "ping" with "pong".
    socket.send_text("pong").await;
    let replies = socket.messages_before_pong().await;
    assert!(replies.is_empty(), "answers to a pong: {replies:#?}");
}
