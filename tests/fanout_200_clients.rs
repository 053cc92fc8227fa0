//! 200 concurrent clients on the broadcast socket: every one receives the broadcast, and the
//! counts (`sent_to_users`, stats `connected_users`) include every one of them.

mod common;

use common::{TIMEOUT, TestNode, WsClient, channels_path};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

const CLIENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_all_receive_one_broadcast() {
    let node = TestNode::start().await;
    let admin = node.admin_token("admin");

    let tokens: Vec<String> = (0..CLIENTS)
        .map(|n| node.token(&format!("u{n}"), &format!("user{n}"), &[]))
        .collect();
    let mut clients: Vec<WsClient> =
        join_all(tokens.iter().map(|token| node.broadcast_socket(token))).await;
    assert_eq!(node.hub_counts().connections, CLIENTS);

    let stats = node
        .get("/api/creator/broadcast/stats", Some(&admin))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(stats["stats"]["connected_users"], CLIENTS);
    assert_eq!(stats["stats"]["connected_users_local"], CLIENTS);

    let created = node
        .create_broadcast(&admin, "Hello, everyone", "info")
        .await;
    assert_eq!(created["sent_to_users"], CLIENTS);
    assert_eq!(
        created["message"],
        format!("Broadcast sent successfully to {CLIENTS} connected users.")
    );

    let received = join_all(
        clients
            .iter_mut()
            .map(|client| client.recv_type("new_broadcast", TIMEOUT)),
    )
    .await;
    for message in &received {
        assert_eq!(message["broadcast"]["id"], created["id"]);
        assert_eq!(message["broadcast"]["message"], "Hello, everyone");
    }
    assert_eq!(received.len(), CLIENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_on_a_generic_channel_each_receive_every_event_once() {
    const EVENTS: u64 = 20;
    let node = TestNode::start().await;
    let tokens: Vec<String> = (0..CLIENTS)
        .map(|n| node.token(&format!("u{n}"), &format!("user{n}"), &[]))
        .collect();
    // A channel without presence: this is about delivery, not about 200 joins.
    let path = channels_path(&["news"], None);
    let mut clients: Vec<WsClient> = join_all(tokens.iter().map(|token| async {
        let mut client = node.ws(&path, Some(token)).await;
        client.recv_type("connected", TIMEOUT).await;
        client
    }))
    .await;

    for n in 0..EVENTS {
        node.publish("news", json!({ "type": "new_message", "n": n }))
            .await;
    }
    let sequences = join_all(clients.iter_mut().map(|client| async move {
        let mut seen = Vec::new();
        for _ in 0..EVENTS {
            seen.push(client.recv_json(TIMEOUT).await["n"].as_u64().unwrap_or(999));
        }
        seen
    }))
    .await;
    let expected: Vec<u64> = (0..EVENTS).collect();
    for seen in sequences {
        assert_eq!(seen, expected);
    }
}
