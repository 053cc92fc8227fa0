//! Retention on one node: size and ttl per channel with prefix overrides, `truncated` in the
//! history API, resumes below a channel's floor (`recovered:false` naming exactly the lost
//! channels), and state that survives the pruning of the events that made it, across a
//! restart.

mod common;

use std::time::Duration;

use common::{TIMEOUT, TestNode, channels_path, wait_until};
use herald::store::RetentionPolicy;
use herald::store::retention::{ChannelOverride, ChannelRetention};
use serde_json::{Value, json};

fn rule(size: u64, ttl: Duration) -> ChannelRetention {
    ChannelRetention { size, ttl }
}

/// Default: 5 events per channel; `room:` keeps 3; `keep:` keeps everything; `brief:` keeps
/// events for one second.
fn policy() -> RetentionPolicy {
    RetentionPolicy::new(
        rule(5, Duration::ZERO),
        vec![
            ChannelOverride {
                prefix: "room:".into(),
                retention: rule(3, Duration::ZERO),
            },
            ChannelOverride {
                prefix: "keep:".into(),
                retention: rule(0, Duration::ZERO),
            },
            ChannelOverride {
                prefix: "brief:".into(),
                retention: rule(0, Duration::from_secs(1)),
            },
        ],
        0,
    )
}

async fn start() -> TestNode {
    TestNode::start_with(|config| config.history = policy()).await
}

async fn history(node: &TestNode, channel: &str, since: Option<&str>) -> Value {
    let path = match since {
        Some(cursor) => format!("/api/channels/{channel}/history?limit=1000&since={cursor}"),
        None => format!("/api/channels/{channel}/history?limit=1000"),
    };
    node.get(&path, Some(node.api_key()))
        .await
        .expect_status(reqwest::StatusCode::OK)
}

fn ns(history: &Value) -> Vec<u64> {
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["n"].as_u64())
        .collect()
}

async fn publish_n(node: &TestNode, channel: &str, range: std::ops::Range<u64>) -> String {
    let mut cursor = String::new();
    for n in range {
        let answer = node.publish(channel, json!({"type": "item", "n": n})).await;
        cursor = answer["cursor"].as_str().unwrap().to_string();
    }
    cursor
}

async fn wait_kept(node: &TestNode, channel: &str, kept: usize) {
    wait_until("the channel pruned to its size", TIMEOUT, || async {
        history(node, channel, None).await["events"]
            .as_array()
            .map(Vec::len)
            == Some(kept)
    })
    .await;
}

#[tokio::test]
async fn each_channel_keeps_what_its_rule_says_and_history_says_when_it_is_truncated() {
    let node = start().await;
    for channel in ["news", "room:1", "keep:1", "brief:1"] {
        publish_n(&node, channel, 0..8).await;
    }
    wait_kept(&node, "news", 5).await;
    wait_kept(&node, "room:1", 3).await;
    wait_kept(&node, "brief:1", 0).await;
    assert_eq!(ns(&history(&node, "news", None).await), vec![3, 4, 5, 6, 7]);
    assert_eq!(ns(&history(&node, "room:1", None).await), vec![5, 6, 7]);
    assert_eq!(ns(&history(&node, "keep:1", None).await).len(), 8);

    let news = history(&node, "news", None).await;
    assert_eq!(news["truncated"], true, "{news}");
    assert_eq!(history(&node, "keep:1", None).await["truncated"], false);
    assert_eq!(history(&node, "brief:1", None).await["truncated"], true);
    // A `since` at or past the floor is not truncated.
    let cursor = news["events"][0]["cursor"].as_str().unwrap().to_string();
    let after = history(&node, "news", Some(&cursor)).await;
    assert_eq!(after["truncated"], false, "{after}");
    assert_eq!(ns(&after), vec![4, 5, 6, 7]);
}

#[tokio::test]
async fn a_resume_below_the_floor_gets_what_is_kept_then_recovered_false_naming_the_lost_channels()
{
    let node = start().await;
    let token = node.token("7", "viewer", &[]);
    let channels = ["news", "keep:a", "room:9"];
    let mut socket = node.ws(&channels_path(&channels, None), Some(&token)).await;
    let connected = socket.recv_type("connected", TIMEOUT).await;
    let cursor = connected["cursor"].as_str().unwrap().to_string();
    socket.close().await;

    // While the client is away: news gets 8 (keeps 5), keep:a gets 8 (keeps all), room:9
    // gets 2 (keeps them: under its size).
    publish_n(&node, "news", 0..8).await;
    publish_n(&node, "keep:a", 0..8).await;
    publish_n(&node, "room:9", 0..2).await;
    wait_kept(&node, "news", 5).await;

    let mut socket = node
        .ws(&channels_path(&channels, Some(&cursor)), Some(&token))
        .await;
    socket.recv_type("connected", TIMEOUT).await;
    let mut replayed: Vec<(String, u64)> = Vec::new();
    let recovered = loop {
        let message = socket.recv_json(TIMEOUT).await;
        if message["type"] == "recovered" {
            break message;
        }
        replayed.push((
            message["channel"].as_str().unwrap().to_string(),
            message["n"].as_u64().unwrap(),
        ));
    };
    assert_eq!(recovered["recovered"], false, "{recovered}");
    assert_eq!(recovered["channels_lost"], json!(["news"]));
    assert_eq!(recovered["replayed"], 5 + 8 + 2);
    let of = |channel: &str| -> Vec<u64> {
        replayed
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, n)| *n)
            .collect()
    };
    assert_eq!(of("news"), vec![3, 4, 5, 6, 7]);
    assert_eq!(of("keep:a"), (0..8).collect::<Vec<_>>());
    assert_eq!(of("room:9"), vec![0, 1]);

    // Then live events, once.
    node.publish("news", json!({"type": "item", "n": 100}))
        .await;
    let live = socket.recv_type("item", TIMEOUT).await;
    assert_eq!(live["n"], 100);
    let cursor = recovered["cursor"].as_str().unwrap().to_string();
    socket.close().await;

    // A resume that lost nothing still says true, with no channels_lost.
    let mut socket = node
        .ws(&channels_path(&channels, Some(&cursor)), Some(&token))
        .await;
    let recovered = socket.recv_type("recovered", TIMEOUT).await;
    assert_eq!(recovered["recovered"], true, "{recovered}");
    assert_eq!(recovered["replayed"], 1);
    assert!(recovered.get("channels_lost").is_none(), "{recovered}");
}

#[tokio::test]
async fn the_broadcast_acknowledgements_and_comments_outlive_their_events_and_a_restart() {
    // Every channel keeps one event, and the feature channels (which only their features
    // write) keep theirs for a second: the state's events are all pruned.
    let mut node = TestNode::start_with(|config| {
        let brief = rule(0, Duration::from_secs(1));
        config.history = RetentionPolicy::new(
            rule(1, Duration::ZERO),
            vec![
                ChannelOverride {
                    prefix: "broadcasts".into(),
                    retention: brief,
                },
                ChannelOverride {
                    prefix: "track:".into(),
                    retention: brief,
                },
            ],
            0,
        )
    })
    .await;
    let admin = node.admin_token("100");
    let created = node
        .create_broadcast(&admin, "Maintenance at 18:00", "warning")
        .await;
    let broadcast_id = created["id"].as_str().unwrap().to_string();
    let alice = node.token("1", "alice", &[]);
    let bob = node.token("2", "bob", &[]);
    node.post(
        "/api/creator/broadcast/acknowledge",
        Some(&alice),
        &json!({ "broadcast_id": broadcast_id }),
    )
    .await
    .expect_status(reqwest::StatusCode::OK);

    let mut ids = Vec::new();
    for n in 0..4 {
        let reply = node
            .post(
                "/api/tracks/5/comments",
                Some(&alice),
                &json!({"content": format!("comment {n}"), "timestamp": n}),
            )
            .await
            .expect_status(reqwest::StatusCode::OK);
        ids.push(reply["comment"]["id"].as_str().unwrap().to_string());
    }
    let edited = node
        .http()
        .put(node.http_url(&format!("/api/comments/{}", ids[1])))
        .bearer_auth(&alice)
        .json(&json!({"content": "edited"}))
        .send()
        .await
        .unwrap();
    assert!(edited.status().is_success());
    let deleted = node
        .http()
        .delete(node.http_url(&format!("/api/comments/{}", ids[2])))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());

    // Every one of those events leaves its channel: by age on the feature channels, and alice's
    // acknowledgement behind another one.
    let acks_token = node.admin_token("101");
    node.post(
        "/api/creator/broadcast/acknowledge",
        Some(&acks_token),
        &json!({ "broadcast_id": broadcast_id }),
    )
    .await
    .expect_status(reqwest::StatusCode::OK);
    wait_kept(&node, "broadcasts", 0).await;
    wait_kept(&node, "track:5", 0).await;

    for round in ["before restart", "after restart"] {
        let for_bob = node.active_broadcast(&bob).await;
        assert_eq!(for_bob["id"], broadcast_id, "{round}: {for_bob}");
        let for_alice = node.active_broadcast(&alice).await;
        assert!(for_alice["broadcast"].is_null(), "{round}: acknowledged");
        let listed = node
            .get("/api/tracks/5/comments", Some(&alice))
            .await
            .expect_status(reqwest::StatusCode::OK);
        let contents: Vec<&str> = listed["comments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["content"].as_str().unwrap())
            .collect();
        assert_eq!(
            contents,
            vec!["comment 0", "edited", "comment 3"],
            "{round}"
        );
        assert_eq!(history(&node, "track:5", None).await["truncated"], true);
        node.restart().await;
    }
}
