//! Resume with `?since=<cursor>`: a client that reconnects gets exactly what it missed, in
//! order, then `recovered`, then live events, never a duplicate. Also `users` targeting,
//! live and replayed.

mod common;

use common::{TIMEOUT, TestNode, channels_path};
use serde_json::{Value, json};

fn cursor_of(message: &Value) -> String {
    message["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("no cursor in {message}"))
        .to_string()
}

/// The replay a resuming socket was sent: the events before `recovered`, and `recovered`.
fn split_replay(mut messages: Vec<Value>) -> (Vec<Value>, Value) {
    let recovered = messages.pop().expect("at least the recovered message");
    assert_eq!(recovered["type"], "recovered", "last: {recovered}");
    assert_eq!(recovered["recovered"], true);
    assert!(recovered["cursor"].is_string(), "{recovered}");
    (messages, recovered)
}

#[tokio::test]
async fn broadcast_socket_replays_exactly_what_was_missed() {
    let node = TestNode::start().await;
    let admin = node.admin_token("100");
    let alice = node.token("1", "alice", &[]);

    let mut socket = node.broadcast_socket(&alice).await;
    let seen = node.create_broadcast(&admin, "seen live", "info").await;
    let live = socket.recv_type("new_broadcast", TIMEOUT).await;
    assert_eq!(live["broadcast"]["id"], seen["id"]);
    let cursor = cursor_of(&live);
    socket.close().await;

    // Missed while away: four broadcasts and a clear.
    let mut missed = Vec::new();
    for n in 1..=4 {
        let created = node
            .create_broadcast(&admin, &format!("missed {n}"), "info")
            .await;
        missed.push(created["id"].as_str().expect("id").to_string());
    }
    node.clear_broadcast(&admin).await;

    let path = format!("{}?since={cursor}", common::BROADCAST_WS);
    let mut socket = node.ws(&path, Some(&alice)).await;
    let connected = socket.recv_json(TIMEOUT).await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["cursor"], cursor.as_str());
    let (replayed, recovered) = split_replay(socket.messages_before_pong().await);
    let kinds: Vec<&str> = replayed
        .iter()
        .map(|m| m["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        [
            "new_broadcast",
            "new_broadcast",
            "new_broadcast",
            "new_broadcast",
            "broadcast_cleared"
        ]
    );
    let ids: Vec<&str> = replayed[..4]
        .iter()
        .map(|m| m["broadcast"]["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, missed);
    assert_eq!(recovered["replayed"], 5);
    for message in &replayed {
        assert_eq!(message["channel"], "broadcasts");
        assert!(message["cursor"].is_string());
    }

    // Then live events, with nothing repeated in between.
    let after = node.create_broadcast(&admin, "live again", "info").await;
    let next = socket.recv_json(TIMEOUT).await;
    assert_eq!(next["type"], "new_broadcast", "{next}");
    assert_eq!(next["broadcast"]["id"], after["id"]);
}

#[tokio::test]
async fn generic_socket_replays_only_its_channels_in_order() {
    let node = TestNode::start().await;
    let alice = node.token("1", "alice", &[]);
    let channels = ["forum", "room:1"];

    let mut socket = node.ws(&channels_path(&channels, None), Some(&alice)).await;
    let connected = socket.recv_type("connected", TIMEOUT).await;
    let cursor = cursor_of(&connected);
    socket.close().await;

    let plan = [
        ("forum", 1),
        ("elsewhere", 2),
        ("room:1", 3),
        ("forum", 4),
        ("room:2", 5),
        ("room:1", 6),
    ];
    for (channel, n) in plan {
        node.publish(channel, json!({ "type": "new_message", "n": n }))
            .await;
    }

    let mut socket = node
        .ws(&channels_path(&channels, Some(&cursor)), Some(&alice))
        .await;
    socket.recv_type("connected", TIMEOUT).await;
    let (replayed, recovered) = split_replay(socket.messages_before_pong().await);
    let got: Vec<(String, u64)> = replayed
        .iter()
        .map(|m| {
            (
                m["channel"].as_str().unwrap_or_default().to_string(),
                m["n"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [("forum", 1), ("room:1", 3), ("forum", 4), ("room:1", 6)]
        .into_iter()
        .map(|(c, n)| (c.to_string(), n))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(recovered["replayed"], 4);

    // Resuming from the cursor of a replayed event gets only what came after it.
    let middle = cursor_of(&replayed[1]);
    let mut from_middle = node
        .ws(&channels_path(&channels, Some(&middle)), Some(&alice))
        .await;
    from_middle.recv_type("connected", TIMEOUT).await;
    let (rest, recovered) = split_replay(from_middle.messages_before_pong().await);
    let ns: Vec<u64> = rest.iter().map(|m| m["n"].as_u64().unwrap_or(0)).collect();
    assert_eq!(ns, [4, 6]);
    assert_eq!(recovered["replayed"], 2);

    // Live events follow on both sockets.
    node.publish("forum", json!({ "type": "new_message", "n": 7 }))
        .await;
    for client in [&mut socket, &mut from_middle] {
        let next = client.recv_json(TIMEOUT).await;
        assert_eq!(next["n"], 7, "{next}");
    }
}

#[tokio::test]
async fn a_cursor_that_covers_everything_replays_nothing() {
    let node = TestNode::start().await;
    let alice = node.token("1", "alice", &[]);
    let published = node
        .publish("forum", json!({ "type": "new_message", "n": 1 }))
        .await;
    let cursor = cursor_of(&published);

    let mut socket = node
        .ws(&channels_path(&["forum"], Some(&cursor)), Some(&alice))
        .await;
    socket.recv_type("connected", TIMEOUT).await;
    let (replayed, recovered) = split_replay(socket.messages_before_pong().await);
    assert!(replayed.is_empty(), "{replayed:#?}");
    assert_eq!(recovered["replayed"], 0);
}

/// A publisher keeps going while the client drops and resumes: across both connections the
/// client sees every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_gap_and_no_duplicate_when_resuming_during_a_stream() {
    const TOTAL: u64 = 200;
    let node = std::sync::Arc::new(TestNode::start().await);
    let alice = node.token("1", "alice", &[]);

    let mut socket = node.channel_socket(&["stream"], &alice).await;
    let publisher = {
        let node = std::sync::Arc::clone(&node);
        tokio::spawn(async move {
            for n in 0..TOTAL {
                node.publish("stream", json!({ "type": "tick", "n": n }))
                    .await;
            }
        })
    };

    let mut seen = Vec::new();
    let mut cursor = String::new();
    while seen.len() < 50 {
        let message = socket.recv_type("tick", TIMEOUT).await;
        seen.push(message["n"].as_u64().expect("n"));
        cursor = cursor_of(&message);
    }
    drop(socket);

    let mut socket = node
        .ws(&channels_path(&["stream"], Some(&cursor)), Some(&alice))
        .await;
    let mut replayed = None;
    while seen.last() != Some(&(TOTAL - 1)) {
        let message = socket
            .recv_json_until(|m| m["type"] == "tick" || m["type"] == "recovered", TIMEOUT)
            .await;
        if message["type"] == "recovered" {
            assert!(replayed.is_none(), "a second recovered message");
            replayed = message["replayed"].as_u64();
            continue;
        }
        seen.push(message["n"].as_u64().expect("n"));
    }
    publisher.await.expect("publisher");

    let expected: Vec<u64> = (0..TOTAL).collect();
    assert_eq!(seen, expected, "every event exactly once, in order");
    assert!(replayed.is_some(), "the resumed socket says it recovered");
}

#[tokio::test]
async fn targeted_events_reach_only_the_listed_users() {
    // A channel without presence, so that the three users do not hear of each other.
    let node = TestNode::start().await;
    let mut user1 = node
        .channel_socket(&["news"], &node.token("1", "one", &[]))
        .await;
    let mut user2 = node
        .channel_socket(&["news"], &node.token("2", "two", &[]))
        .await;
    let mut user3 = node
        .channel_socket(&["news"], &node.token("3", "three", &[]))
        .await;

    node.publish_to(
        "news",
        json!({ "type": "forum_notification", "n": 1 }),
        &["2"],
    )
    .await;
    // Integer ids, as the seeds' user ids are.
    node.post(
        "/api/publish",
        Some(node.api_key()),
        &json!({ "channel": "news", "data": { "type": "forum_notification", "n": 2 }, "users": [3] }),
    )
    .await
    .expect_status(reqwest::StatusCode::OK);
    node.publish("news", json!({ "type": "new_message", "n": 3 }))
        .await;

    // Per channel, events arrive in order: the untargeted one is the barrier.
    assert_eq!(user1.recv_json(TIMEOUT).await["n"], 3);
    assert_eq!(user2.recv_json(TIMEOUT).await["n"], 1);
    assert_eq!(user2.recv_json(TIMEOUT).await["n"], 3);
    assert_eq!(user3.recv_json(TIMEOUT).await["n"], 2);
    assert_eq!(user3.recv_json(TIMEOUT).await["n"], 3);
}

#[tokio::test]
async fn replay_respects_targeting() {
    let node = TestNode::start().await;
    let token1 = node.token("1", "one", &[]);
    let token2 = node.token("2", "two", &[]);
    let start = cursor_of(
        &node
            .publish("forum", json!({ "type": "new_message", "n": 0 }))
            .await,
    );

    node.publish_to(
        "forum",
        json!({ "type": "forum_notification", "n": 1 }),
        &["2"],
    )
    .await;
    node.publish("forum", json!({ "type": "new_message", "n": 2 }))
        .await;

    let replay_for = |token: String| {
        let node = &node;
        let start = start.clone();
        async move {
            let mut socket = node
                .ws(&channels_path(&["forum"], Some(&start)), Some(&token))
                .await;
            socket.recv_type("connected", TIMEOUT).await;
            split_replay(socket.messages_before_pong().await)
        }
    };
    let (events, recovered) = replay_for(token1).await;
    let ns: Vec<u64> = events
        .iter()
        .map(|m| m["n"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(ns, [2], "user 1 never sees user 2's notification");
    assert_eq!(recovered["replayed"], 1);

    let (events, recovered) = replay_for(token2).await;
    let ns: Vec<u64> = events
        .iter()
        .map(|m| m["n"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(ns, [1, 2]);
    assert_eq!(recovered["replayed"], 2);
}

#[tokio::test]
async fn personal_channels_carry_send_to_user() {
    let node = TestNode::start().await;
    let mut mine = node
        .channel_socket(&["user:1"], &node.token("1", "one", &[]))
        .await;
    node.publish("user:1", json!({ "type": "mention", "from": "bob" }))
        .await;
    let message = mine.recv_type("mention", TIMEOUT).await;
    assert_eq!(message["channel"], "user:1");
    assert_eq!(message["from"], "bob");
}

#[tokio::test]
async fn a_cursor_from_before_a_restart_resumes_after_it() {
    let mut node = TestNode::start().await;
    let alice = node.token("1", "alice", &[]);
    let mut socket = node.channel_socket(&["forum"], &alice).await;
    node.publish("forum", json!({ "type": "new_message", "n": 1 }))
        .await;
    let cursor = cursor_of(&socket.recv_type("new_message", TIMEOUT).await);
    node.publish("forum", json!({ "type": "new_message", "n": 2 }))
        .await;

    node.restart().await;
    socket.expect_close(1001, TIMEOUT).await;
    node.publish("forum", json!({ "type": "new_message", "n": 3 }))
        .await;

    let mut socket = node
        .ws(&channels_path(&["forum"], Some(&cursor)), Some(&alice))
        .await;
    socket.recv_type("connected", TIMEOUT).await;
    let (events, recovered) = split_replay(socket.messages_before_pong().await);
    let ns: Vec<u64> = events
        .iter()
        .map(|m| m["n"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(ns, [2, 3]);
    assert_eq!(recovered["replayed"], 2);
}

#[tokio::test]
async fn a_replay_longer_than_one_page_is_complete_and_in_order() {
    let node = TestNode::start_with(|config| config.limits.replay_page = 3).await;
    let alice = node.token("1", "alice", &[]);
    let start = cursor_of(
        &node
            .publish("forum", json!({ "type": "new_message", "n": 0 }))
            .await,
    );
    for n in 1..=10 {
        node.publish("forum", json!({ "type": "new_message", "n": n }))
            .await;
        node.publish("other", json!({ "type": "new_message", "n": 100 + n }))
            .await;
    }

    let mut socket = node
        .ws(&channels_path(&["forum"], Some(&start)), Some(&alice))
        .await;
    socket.recv_type("connected", TIMEOUT).await;
    let (events, recovered) = split_replay(socket.messages_before_pong().await);
    let ns: Vec<u64> = events
        .iter()
        .map(|m| m["n"].as_u64().unwrap_or(999))
        .collect();
    assert_eq!(ns, (1..=10).collect::<Vec<u64>>());
    assert_eq!(recovered["replayed"], 10);
}
