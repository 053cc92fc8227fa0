//! A node's life: health endpoints, and a graceful shutdown that closes every client with 1001
//! and keeps everything that was acknowledged.

mod common;

use common::{BROADCAST_WS, TIMEOUT, TestNode, channels_path};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn health_and_readiness_answer() {
    let node = TestNode::start().await;
    let health = node
        .get("/healthz", None)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["node_id"], "test-node");
    let ready = node
        .get("/readyz", None)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["store_writable"], true);

    node.publish("forum", json!({ "type": "new_message" }))
        .await;
    let metrics = reqwest::get(node.http_url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("herald_publishes_total"),
        "metrics: {metrics}"
    );
}

#[tokio::test]
async fn graceful_shutdown_closes_every_client_with_1001() {
    let mut node = TestNode::start().await;
    let token = node.token("1", "alice", &[]);
    let mut broadcast = node.broadcast_socket(&token).await;
    let mut generic = node.channel_socket(&["forum", "user:1"], &token).await;
    let mut second_user = node.broadcast_socket(&node.token("2", "bob", &[])).await;
    let address = node.http_addr();

    node.shutdown().await;

    for socket in [&mut broadcast, &mut generic, &mut second_user] {
        let reason = socket.expect_close(1001, TIMEOUT).await;
        assert_eq!(reason, "server shutting down");
    }
    // And it no longer accepts anything.
    let refused = tokio_tungstenite::connect_async(format!("ws://{address}{BROADCAST_WS}")).await;
    assert!(refused.is_err(), "a stopped node accepted a socket");
}

#[tokio::test]
async fn what_was_acknowledged_before_a_shutdown_is_there_after_it() {
    let mut node = TestNode::start().await;
    let mut cursor = String::new();
    for n in 0..50 {
        let published = node
            .publish("forum", json!({ "type": "new_message", "n": n }))
            .await;
        assert_eq!(published["status"], "success");
        assert_eq!(published["replicated"], false, "a single node");
        cursor = published["cursor"].as_str().expect("cursor").to_string();
    }

    node.restart().await;

    let history = node
        .get(
            "/api/channels/forum/history?limit=1000",
            Some(node.api_key()),
        )
        .await
        .expect_status(StatusCode::OK);
    let ns: Vec<u64> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["n"].as_u64().unwrap_or(999))
        .collect();
    assert_eq!(ns, (0..50).collect::<Vec<u64>>());
    assert_eq!(history["cursor"], cursor.as_str());

    // New events continue the log after the old ones.
    let token = node.token("1", "alice", &[]);
    let mut socket = node
        .ws(&channels_path(&["forum"], Some(&cursor)), Some(&token))
        .await;
    socket.recv_type("connected", TIMEOUT).await;
    socket.recv_type("recovered", TIMEOUT).await;
    node.publish("forum", json!({ "type": "new_message", "n": 50 }))
        .await;
    assert_eq!(socket.recv_json(TIMEOUT).await["n"], 50);
}
