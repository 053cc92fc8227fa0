//! `POST /api/batch` and `POST /api/publish` with `channels` on one node: all or none, order,
//! limits, bad input answered 400 with a message, one payload delivered once per channel, and
//! history that shows it all.

mod common;

use common::{TIMEOUT, TestNode};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn event(channel: &str, n: u64) -> Value {
    json!({ "channel": channel, "data": { "type": "item", "n": n } })
}

async fn batch(node: &TestNode, events: Vec<Value>) -> common::Reply {
    node.post(
        "/api/batch",
        Some(node.api_key()),
        &json!({ "events": events }),
    )
    .await
}

#[tokio::test]
async fn a_batch_is_delivered_in_its_order_and_answered_per_event() {
    let node = TestNode::start().await;
    let token = node.token("1", "alice", &[]);
    let mut socket = node.channel_socket(&["room.a", "room.b"], &token).await;
    let events: Vec<Value> = (1..=50)
        .map(|n| event(if n % 2 == 0 { "room.a" } else { "room.b" }, n))
        .collect();
    let answer = batch(&node, events).await.expect_status(StatusCode::OK);
    assert_eq!(answer["status"], "success");
    let answered = answer["events"].as_array().expect("events").clone();
    assert_eq!(answered.len(), 50);
    let ids: Vec<&str> = answered.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 50, "one id per event");
    assert!(
        answered
            .iter()
            .all(|e| e["cursor"].is_string() && e.get("replayed").is_none())
    );

    node.publish("room.a", json!({ "type": "marker" })).await;
    let delivered = socket.item_numbers_until("marker", TIMEOUT).await;
    assert_eq!(
        delivered,
        (1..=50).collect::<Vec<u64>>(),
        "once each, in batch order"
    );

    // History shows them, each with the cursor the batch answered for it (one origin here, so
    // the cursors are comparable).
    let a = node.history_events("room.a").await;
    let a_items: Vec<&Value> = a.iter().filter(|e| e["type"] == "item").collect();
    assert_eq!(a_items.len(), 25);
    for item in a_items {
        let n = item["n"].as_u64().unwrap() as usize;
        assert_eq!(item["cursor"], answered[n - 1]["cursor"], "{item}");
    }
    assert_eq!(node.history_events("room.b").await.len(), 25);

    // The cursor of the last event covers the whole batch: resuming from it replays nothing
    // of it.
    let last = answered[49]["cursor"].as_str().unwrap();
    let mut resumed = node
        .ws(
            &common::channels_path(&["room.a", "room.b"], Some(last)),
            Some(&token),
        )
        .await;
    let before = resumed.messages_before_pong().await;
    let replayed: Vec<&Value> = before.iter().filter(|m| m["type"] == "item").collect();
    assert!(replayed.is_empty(), "replayed {replayed:?}");
}

#[tokio::test]
async fn a_batch_with_one_bad_event_stores_and_delivers_nothing() {
    let node = TestNode::start().await;
    let token = node.token("1", "alice", &[]);
    let mut socket = node.channel_socket(&["room.a"], &token).await;
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({ "channel": "room.a", "data": { "n": 3 } }),
            StatusCode::BAD_REQUEST,
            "events[2]: data.type",
        ),
        (
            json!({ "channel": "bad name", "data": { "type": "item" } }),
            StatusCode::BAD_REQUEST,
            "events[2]: invalid channel name",
        ),
        (
            json!({ "data": { "type": "item" } }),
            StatusCode::BAD_REQUEST,
            "events[2]: channel is required",
        ),
        (
            json!({ "channel": "room.a", "data": "text" }),
            StatusCode::BAD_REQUEST,
            "events[2]: data must be a JSON object",
        ),
        (
            json!({ "channel": "room.a", "data": { "type": "item" }, "users": [] }),
            StatusCode::BAD_REQUEST,
            "events[2]: users",
        ),
        (
            json!({ "channel": "room.a", "data": { "type": "item" }, "idempotency_key": "" }),
            StatusCode::BAD_REQUEST,
            "events[2]: idempotency_key",
        ),
        (
            json!({ "channels": ["room.a"], "data": { "type": "item" } }),
            StatusCode::BAD_REQUEST,
            "events[2]: a batch event names one channel",
        ),
        (
            json!("not an object"),
            StatusCode::BAD_REQUEST,
            "events[2]: must be a JSON object",
        ),
        (
            json!({ "channel": "broadcasts", "data": { "type": "new_broadcast" } }),
            StatusCode::FORBIDDEN,
            "events[2]: channel \"broadcasts\" is written by",
        ),
        (
            json!({ "channel": "track:1", "data": { "type": "new_comment" } }),
            StatusCode::FORBIDDEN,
            "events[2]: channel \"track:1\"",
        ),
        (
            json!({ "channel": "herald:acks", "data": { "type": "x" } }),
            StatusCode::FORBIDDEN,
            "events[2]: channel herald:acks is reserved",
        ),
        (
            json!({ "channel": "room.a", "data": { "type": "item", "pad": "x".repeat(70_000) } }),
            StatusCode::PAYLOAD_TOO_LARGE,
            "events[2]: data is",
        ),
    ];
    for (bad, status, expected) in cases {
        let events = vec![event("room.a", 1), event("room.a", 2), bad.clone()];
        let message = batch(&node, events).await.expect_error(status);
        assert!(message.starts_with(expected), "{bad}: {message}");
    }
    // A key named twice for one channel refuses the batch too.
    let twice = vec![
        json!({ "channel": "room.a", "data": { "type": "item", "n": 1 }, "idempotency_key": "k" }),
        json!({ "channel": "room.a", "data": { "type": "item", "n": 2 }, "idempotency_key": "k" }),
    ];
    let message = batch(&node, twice)
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(
        message.starts_with("events[1]: idempotency_key \"k\" is given twice"),
        "{message}"
    );

    assert!(
        node.history_events("room.a").await.is_empty(),
        "nothing stored"
    );
    node.publish("room.a", json!({ "type": "marker" })).await;
    assert!(
        socket
            .item_numbers_until("marker", TIMEOUT)
            .await
            .is_empty(),
        "nothing delivered"
    );
}

#[tokio::test]
async fn batches_are_bounded_by_max_batch_and_must_not_be_empty() {
    let node = TestNode::start_with(|config| config.limits.max_batch = 10).await;
    let ten: Vec<Value> = (1..=10).map(|n| event("room.a", n)).collect();
    batch(&node, ten).await.expect_status(StatusCode::OK);
    let eleven: Vec<Value> = (1..=11).map(|n| event("room.a", n)).collect();
    let message = batch(&node, eleven)
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(message.contains("at most 10 events"), "{message}");
    let message = batch(&node, Vec::new())
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(message.contains("empty"), "{message}");
    for body in [json!({}), json!({ "events": {} }), json!({ "events": "x" })] {
        let message = node
            .post("/api/batch", Some(node.api_key()), &body)
            .await
            .expect_error(StatusCode::BAD_REQUEST);
        assert!(
            message.contains("events must be a list"),
            "{body}: {message}"
        );
    }
    let message = node
        .post("/api/batch", Some(node.api_key()), &json!([1, 2]))
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(!message.is_empty());
    node.post(
        "/api/batch",
        None,
        &json!({ "events": [event("room.a", 1)] }),
    )
    .await
    .expect_error(StatusCode::UNAUTHORIZED);
    assert_eq!(node.history_events("room.a").await.len(), 10);
}

#[tokio::test]
async fn one_payload_on_several_channels_is_delivered_once_per_channel() {
    let node = TestNode::start().await;
    let token = node.token("1", "alice", &[]);
    let mut both = node.channel_socket(&["room.a", "room.b"], &token).await;
    let mut only_c = node.channel_socket(&["room.c"], &token).await;
    let body = json!({
        "channels": ["room.a", "room.b", "room.c"],
        "data": { "type": "item", "n": 7 },
    });
    let answer = node
        .post("/api/publish", Some(node.api_key()), &body)
        .await
        .expect_status(StatusCode::OK);
    let events = answer["events"].as_array().expect("events");
    let channels: Vec<&str> = events
        .iter()
        .map(|e| e["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["room.a", "room.b", "room.c"]);
    assert!(
        events
            .iter()
            .all(|e| e["id"].is_string() && e["cursor"].is_string())
    );

    node.publish("room.a", json!({ "type": "marker" })).await;
    node.publish("room.c", json!({ "type": "marker" })).await;
    let mut seen = Vec::new();
    loop {
        let message = both
            .recv_json_until(|m| m["type"] == "item" || m["type"] == "marker", TIMEOUT)
            .await;
        if message["type"] == "marker" {
            break;
        }
        seen.push((
            message["channel"].as_str().unwrap().to_string(),
            message["cursor"].clone(),
        ));
    }
    assert_eq!(
        seen,
        vec![
            ("room.a".to_string(), events[0]["cursor"].clone()),
            ("room.b".to_string(), events[1]["cursor"].clone())
        ]
    );
    assert_eq!(only_c.item_numbers_until("marker", TIMEOUT).await, vec![7]);
    for channel in ["room.a", "room.b", "room.c"] {
        let items: Vec<Value> = node
            .history_events(channel)
            .await
            .into_iter()
            .filter(|e| e["type"] == "item")
            .collect();
        assert_eq!(items.len(), 1, "{channel}");
    }

    // Bad channel lists: nothing is stored.
    let refused = [
        (
            json!({ "channels": [], "data": { "type": "item" } }),
            StatusCode::BAD_REQUEST,
            "channels must be a list",
        ),
        (
            json!({ "channels": "room.a", "data": { "type": "item" } }),
            StatusCode::BAD_REQUEST,
            "channels must be a list",
        ),
        (
            json!({ "channels": ["room.x", "room.x"], "data": { "type": "item" } }),
            StatusCode::BAD_REQUEST,
            "channels[1]: channel room.x is named twice",
        ),
        (
            json!({ "channels": ["room.x", "broadcasts"], "data": { "type": "item" } }),
            StatusCode::FORBIDDEN,
            "channels[1]: channel \"broadcasts\"",
        ),
        (
            json!({ "channels": ["room.x", 5], "data": { "type": "item" } }),
            StatusCode::BAD_REQUEST,
            "channels[1]: channel is required",
        ),
        (
            json!({ "channel": "room.x", "channels": ["room.x"], "data": { "type": "item" } }),
            StatusCode::BAD_REQUEST,
            "name either channel or channels",
        ),
        (
            json!({ "channels": ["room.x"], "data": { "n": 1 } }),
            StatusCode::BAD_REQUEST,
            "data.type",
        ),
    ];
    for (body, status, expected) in refused {
        let message = node
            .post("/api/publish", Some(node.api_key()), &body)
            .await
            .expect_error(status);
        assert!(message.starts_with(expected), "{body}: {message}");
    }
    assert!(node.history_events("room.x").await.is_empty());
}

#[tokio::test]
async fn the_single_channel_publish_answers_as_before() {
    let node = TestNode::start().await;
    let answer = node.publish("room.a", json!({ "type": "item" })).await;
    let mut keys: Vec<&str> = answer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["cursor", "id", "replicated", "status"]);
}
