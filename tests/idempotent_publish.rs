//! Idempotent publishing: a retry with the same `idempotency_key` answers the original id and a
//! cursor covering it and publishes nothing, on the node that took it, across its restart, and
//! on another node once the event has replicated there.

mod cluster_support;
mod common;

use std::time::Duration;

use cluster_support::{API_KEY, TestCluster, wait_for};
use common::{TIMEOUT, TestNode};
use herald::event::{Cursor, NodeId};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn keyed(channel: &str, n: u64, key: &str) -> Value {
    json!({ "channel": channel, "data": { "type": "item", "n": n }, "idempotency_key": key })
}

/// Whether `cursor` covers event `seq` of `origin`.
fn covers(cursor: &str, origin: &NodeId, seq: u64) -> bool {
    Cursor::decode(cursor).expect("cursor").covers(origin, seq)
}

async fn items(node: &TestNode, channel: &str) -> Vec<Value> {
    node.history_events(channel)
        .await
        .into_iter()
        .filter(|e| e["type"] == "item")
        .collect()
}

#[tokio::test]
async fn a_retry_on_the_same_node_answers_the_original_and_delivers_nothing() {
    let node = TestNode::start().await;
    let origin = node.server().state().store.origin().clone();
    let token = node.token("1", "alice", &[]);
    let mut socket = node.channel_socket(&["room.a"], &token).await;
    let key = node.api_key().to_string();

    let first = node
        .post("/api/publish", Some(&key), &keyed("room.a", 1, "order-1"))
        .await
        .expect_status(StatusCode::OK);
    assert!(first.get("replayed").is_none(), "{first}");
    let retry = node
        .post("/api/publish", Some(&key), &keyed("room.a", 1, "order-1"))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(
        retry["cursor"], first["cursor"],
        "nothing was committed in between"
    );
    assert_eq!(retry["replayed"], true);

    // After other publishes, a retry still answers the original id and cursor.
    node.publish("room.b", json!({ "type": "other" })).await;
    let later = node
        .post("/api/publish", Some(&key), &keyed("room.a", 1, "order-1"))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(later["id"], first["id"]);
    assert_eq!(later["cursor"], first["cursor"], "the original cursor");
    assert!(covers(later["cursor"].as_str().unwrap(), &origin, 1));

    // The same key with another payload is refused, and publishes nothing.
    let message = node
        .post("/api/publish", Some(&key), &keyed("room.a", 2, "order-1"))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(message.contains("already names event"), "{message}");
    // Bad keys are 400.
    for bad in [json!(""), json!("x".repeat(129)), json!("tab\t"), json!(5)] {
        let body =
            json!({ "channel": "room.a", "data": { "type": "item" }, "idempotency_key": bad });
        let message = node
            .post("/api/publish", Some(&key), &body)
            .await
            .expect_error(StatusCode::BAD_REQUEST);
        assert!(message.contains("idempotency_key"), "{message}");
    }

    // A batch retried whole answers the same ids, and publishes only what is new.
    let batch = json!({ "events": [keyed("room.a", 10, "b-10"), keyed("room.a", 11, "b-11")] });
    let first_batch = node
        .post("/api/batch", Some(&key), &batch)
        .await
        .expect_status(StatusCode::OK);
    let bigger = json!({ "events": [
        keyed("room.a", 10, "b-10"), keyed("room.a", 11, "b-11"), keyed("room.a", 12, "b-12")
    ] });
    let retried_batch = node
        .post("/api/batch", Some(&key), &bigger)
        .await
        .expect_status(StatusCode::OK);
    for index in 0..2 {
        assert_eq!(
            retried_batch["events"][index]["id"],
            first_batch["events"][index]["id"]
        );
        assert_eq!(retried_batch["events"][index]["replayed"], true);
    }
    assert!(retried_batch["events"][2].get("replayed").is_none());

    // A multi-channel publish with a key: per channel, the same answer again.
    let multi = json!({ "channels": ["room.a", "room.c"], "data": { "type": "item", "n": 20 },
                        "idempotency_key": "m-20" });
    let first_multi = node
        .post("/api/publish", Some(&key), &multi)
        .await
        .expect_status(StatusCode::OK);
    let retried_multi = node
        .post("/api/publish", Some(&key), &multi)
        .await
        .expect_status(StatusCode::OK);
    for index in 0..2 {
        assert_eq!(
            retried_multi["events"][index]["id"],
            first_multi["events"][index]["id"]
        );
        assert_eq!(retried_multi["events"][index]["replayed"], true);
    }

    node.publish("room.a", json!({ "type": "marker" })).await;
    assert_eq!(
        socket.item_numbers_until("marker", TIMEOUT).await,
        [1, 10, 11, 12, 20],
        "each event delivered once"
    );
    assert_eq!(items(&node, "room.a").await.len(), 5);
}

#[tokio::test]
async fn keys_hold_across_a_restart() {
    let mut node = TestNode::start().await;
    let key = node.api_key().to_string();
    let first = node
        .post("/api/publish", Some(&key), &keyed("room.a", 1, "survives"))
        .await
        .expect_status(StatusCode::OK);
    let batch = json!({ "events": [keyed("room.b", 2, "survives-too")] });
    let first_batch = node
        .post("/api/batch", Some(&key), &batch)
        .await
        .expect_status(StatusCode::OK);
    node.restart().await;
    let retry = node
        .post("/api/publish", Some(&key), &keyed("room.a", 1, "survives"))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(retry["cursor"], first["cursor"], "the original cursor");
    assert_eq!(retry["replayed"], true);
    let retried_batch = node
        .post("/api/batch", Some(&key), &batch)
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(
        retried_batch["events"][0]["id"],
        first_batch["events"][0]["id"]
    );
    assert_eq!(
        retried_batch["events"][0]["cursor"],
        first_batch["events"][0]["cursor"]
    );
    assert_eq!(items(&node, "room.a").await.len(), 1);
    assert_eq!(items(&node, "room.b").await.len(), 1);
}

/// The `n` of every `item` in a history answer.
fn history_items(history: &Value) -> Vec<u64> {
    history["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["type"] == "item")
        .filter_map(|e| e["n"].as_u64())
        .collect()
}

#[tokio::test]
async fn a_retry_on_another_node_after_replication_answers_the_original() {
    let cluster = TestCluster::start_linked(2).await;
    let (status, first) = cluster
        .post(0, "/api/publish", API_KEY, keyed("room.a", 1, "cross-node"))
        .await;
    assert_eq!(status, 200, "{first}");
    let batch = json!({ "events": [keyed("room.b", 2, "cross-batch"), keyed("room.b", 3, "cross-batch-2")] });
    let (status, first_batch) = cluster.post(0, "/api/batch", API_KEY, batch.clone()).await;
    assert_eq!(status, 200, "{first_batch}");

    let room_a = "/api/channels/room.a/history?limit=100";
    let room_b = "/api/channels/room.b/history?limit=100";
    wait_for("n2 holds the events", Duration::from_secs(20), || async {
        history_items(&cluster.get(1, room_a, API_KEY).await) == [1]
            && history_items(&cluster.get(1, room_b, API_KEY).await) == [2, 3]
    })
    .await;

    let (status, retry) = cluster
        .post(1, "/api/publish", API_KEY, keyed("room.a", 1, "cross-node"))
        .await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["id"], first["id"]);
    assert_eq!(retry["replayed"], true);
    // Its cursor covers the event: resuming from it on n2 replays nothing of room.a.
    let cursor = retry["cursor"].as_str().unwrap();
    let since = format!("{room_a}&since={cursor}");
    assert!(history_items(&cluster.get(1, &since, API_KEY).await).is_empty());

    let (status, retried_batch) = cluster.post(1, "/api/batch", API_KEY, batch).await;
    assert_eq!(status, 200, "{retried_batch}");
    for index in 0..2 {
        assert_eq!(
            retried_batch["events"][index]["id"],
            first_batch["events"][index]["id"]
        );
        assert_eq!(retried_batch["events"][index]["replayed"], true);
    }

    // Nothing new anywhere: each node holds one event per key.
    cluster.wait_converged(Duration::from_secs(20)).await;
    for node in 0..2 {
        assert_eq!(
            history_items(&cluster.get(node, room_a, API_KEY).await),
            [1]
        );
        assert_eq!(
            history_items(&cluster.get(node, room_b, API_KEY).await),
            [2, 3]
        );
    }
}
