//! Retention across a cluster: a node whose position is below what every peer still keeps
//! (a new node joining a cluster that has pruned, a node down for longer than the ttl, a node
//! killed in the middle of its snapshot) catches up through a snapshot and ends with the same
//! state, the same history windows and the same version vector as its peers, then stops
//! asking.

mod cluster_support;

use std::collections::BTreeMap;
use std::time::Duration;

use cluster_support::{API_KEY, NodeSpec, TestCluster, holds_for, wait_until, wait_until_every};
use herald::auth::Role;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const CHANNELS: [&str; 3] = ["news", "track:7", "broadcasts"];

fn keep(args: &[&str]) -> impl Fn(&mut NodeSpec) + Clone {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    move |spec: &mut NodeSpec| spec.extra_args.extend(args.iter().cloned())
}

/// Broadcasts (the last one active, acknowledged by some), comments on track 7 (some edited,
/// one deleted), then filler: with a small history size, the events that made the comments
/// are pruned. Every feature channel is written by its feature only: the filler on
/// `broadcasts` is earlier broadcasts (so the active one's event is the channel's newest), on
/// `track:7` edits that leave an edited comment as it is. Answers the active broadcast's id.
async fn build_state(cluster: &TestCluster, filler: u64) -> String {
    let running = cluster.running();
    let on = |k: usize| running[k % running.len()];
    let admin = cluster.token("admin", &[Role::Admin]);
    // On the node that then creates the active one: its clock orders them.
    for n in 0..filler {
        let (status, reply) = cluster
            .post(
                on(0),
                "/api/creator/broadcast",
                &admin,
                json!({"message": format!("filler {n}"), "type": "info"}),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
    }
    let (status, created) = cluster
        .post(
            on(0),
            "/api/creator/broadcast",
            &admin,
            json!({"message": "Maintenance at 18:00", "type": "warning"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let broadcast_id = created["id"].as_str().unwrap().to_string();
    // Acknowledged on another node: once the broadcast has reached it.
    let viewer = cluster.token("viewer", &[]);
    wait_until(WAIT, || async {
        let active = cluster
            .get(on(1), "/api/creator/broadcast/active", &viewer)
            .await;
        active["broadcast"]["id"] == broadcast_id.as_str()
    })
    .await;
    for user in 0..3 {
        let token = cluster.token(&format!("acker{user}"), &[]);
        let (status, _) = cluster
            .post(
                on(1),
                "/api/creator/broadcast/acknowledge",
                &token,
                json!({ "broadcast_id": broadcast_id }),
            )
            .await;
        assert_eq!(status, 200);
    }
    let author = cluster.token("author", &[]);
    let mut ids = Vec::new();
    for n in 0..12 {
        let (status, reply) = cluster
            .post(
                on(2),
                "/api/tracks/7/comments",
                &author,
                json!({"content": format!("comment {n}")}),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        ids.push(reply["comment"]["id"].as_str().unwrap().to_string());
    }
    let http = reqwest::Client::new();
    for id in ids.iter().step_by(4) {
        let url = format!("http://{}/api/comments/{id}", cluster.http(on(2)));
        let edited = http
            .put(url)
            .bearer_auth(&author)
            .json(&json!({"content": "edited"}))
            .send()
            .await
            .unwrap();
        assert!(edited.status().is_success());
    }
    let url = format!("http://{}/api/comments/{}", cluster.http(on(2)), ids[5]);
    let deleted = http.delete(url).bearer_auth(&author).send().await.unwrap();
    assert!(deleted.status().is_success());
    let edited_again = format!("http://{}/api/comments/{}", cluster.http(on(2)), ids[0]);
    for n in 0..filler {
        cluster
            .publish(on(n as usize), "news", json!({"type": "filler", "n": n}))
            .await
            .unwrap();
        let edited = http
            .put(&edited_again)
            .bearer_auth(&author)
            .json(&json!({"content": "edited"}))
            .send()
            .await
            .unwrap();
        assert!(edited.status().is_success());
    }
    broadcast_id
}

/// What a node shows of its state and history: the active broadcast for a user who did not
/// acknowledge it and for one who did, the comments of track 7, and each channel's retained
/// event ids with the `truncated` flag.
async fn view(cluster: &TestCluster, node: usize) -> Value {
    let viewer = cluster.token("viewer", &[]);
    let acker = cluster.token("acker1", &[]);
    let active = cluster
        .get(node, "/api/creator/broadcast/active", &viewer)
        .await;
    let acked = cluster
        .get(node, "/api/creator/broadcast/active", &acker)
        .await;
    let comments = cluster.get(node, "/api/tracks/7/comments", &viewer).await;
    let mut histories = BTreeMap::new();
    for channel in CHANNELS {
        let page = history(cluster, node, channel).await;
        let ids: Vec<Value> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| json!([e["type"], e["n"], e["cursor"]]))
            .collect();
        histories.insert(channel, json!({"ids": ids, "truncated": page["truncated"]}));
    }
    json!({
        "active": active["broadcast"]["id"],
        "acked_sees": acked["broadcast"],
        "comments": comments["comments"],
        "histories": histories,
    })
}

/// Node `node`'s retained history of `channel`.
async fn history(cluster: &TestCluster, node: usize, channel: &str) -> Value {
    cluster
        .get(
            node,
            &format!("/api/channels/{channel}/history?limit=1000"),
            API_KEY,
        )
        .await
}

/// Waits until every running node's history of every channel is within `size` events.
async fn wait_pruned(cluster: &TestCluster, size: usize) {
    for node in cluster.running() {
        for channel in CHANNELS {
            wait_until(WAIT, || async {
                let page = history(cluster, node, channel).await;
                page["events"].as_array().map(Vec::len).unwrap_or(0) <= size
            })
            .await;
        }
    }
}

/// Waits until every running node shows what node `reference` shows; answers it.
async fn wait_same_view(cluster: &TestCluster, reference: usize) -> Value {
    wait_until(WAIT, || async {
        let wanted = view(cluster, reference).await;
        let mut same = true;
        for node in cluster.running() {
            same &= view(cluster, node).await == wanted;
        }
        same
    })
    .await;
    view(cluster, reference).await
}

/// For three seconds, `node` asks no peer for anything.
async fn assert_stops_pulling(cluster: &TestCluster, node: usize) {
    let pulls = cluster
        .metric(node, "herald_mesh_pulls_requested_total")
        .await;
    holds_for(Duration::from_secs(3), "no pulls", || async {
        cluster
            .metric(node, "herald_mesh_pulls_requested_total")
            .await
            == pulls
    })
    .await;
}

fn check_view(view: &Value, broadcast_id: &str) {
    assert_eq!(view["active"], broadcast_id, "{view}");
    assert!(view["acked_sees"].is_null(), "{view}");
    let comments = view["comments"].as_array().unwrap();
    assert_eq!(comments.len(), 11, "{view}");
    assert_eq!(
        comments.iter().filter(|c| c["content"] == "edited").count(),
        3
    );
    for channel in CHANNELS {
        let history = &view["histories"][channel];
        assert_eq!(history["ids"].as_array().unwrap().len(), 10, "{view}");
        assert_eq!(history["truncated"], true, "{view}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_joins_a_cluster_that_pruned_and_ends_identical() {
    let retention = keep(&["--history-size", "10"]);
    let mut cluster = TestCluster::start_with(3, |_, spec| retention(spec)).await;
    for node in 0..3 {
        cluster.wait_linked(node, 2, WAIT).await;
    }
    let broadcast_id = build_state(&cluster, 40).await;
    wait_pruned(&cluster, 10).await;

    let joined = cluster.add_node(retention.clone());
    let position = cluster.wait_converged(WAIT).await;
    let shown = wait_same_view(&cluster, 0).await;
    check_view(&shown, &broadcast_id);
    assert!(
        cluster
            .metric(joined, "herald_snapshots_received_total")
            .await
            >= 1.0
    );
    let sent: f64 = {
        let mut sent = 0.0;
        for node in 0..3 {
            sent += cluster.metric(node, "herald_snapshots_sent_total").await;
        }
        sent
    };
    assert!(sent >= 1.0);
    assert_eq!(cluster.log_position(joined).await, position);
    assert_stops_pulling(&cluster, joined).await;

    // Live events reach it as to any node.
    cluster
        .publish(0, "news", json!({"type": "filler", "n": 1000}))
        .await
        .unwrap();
    cluster.wait_converged(WAIT).await;
    wait_same_view(&cluster, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_longer_than_the_ttl_catches_up_from_a_snapshot() {
    let retention = keep(&["--history-size", "10", "--history-ttl", "2s"]);
    let mut cluster = TestCluster::start_with(3, |_, spec| retention(spec)).await;
    for node in 0..3 {
        cluster.wait_linked(node, 2, WAIT).await;
    }
    cluster
        .publish(0, "news", json!({"type": "filler", "n": 0}))
        .await
        .unwrap();
    cluster.wait_converged(WAIT).await;
    cluster.kill(2);
    let broadcast_id = build_state(&cluster, 12).await;
    // Everything published while node 3 was down is past the ttl on the live nodes.
    wait_pruned(&cluster, 0).await;
    cluster.start_node(2);
    cluster.wait_converged(WAIT).await;
    let shown = wait_same_view(&cluster, 0).await;
    assert_eq!(shown["active"], broadcast_id.as_str());
    assert_eq!(shown["comments"].as_array().unwrap().len(), 11);
    for channel in CHANNELS {
        assert_eq!(shown["histories"][channel]["truncated"], true, "{shown}");
    }
    assert!(cluster.metric(2, "herald_snapshots_received_total").await >= 1.0);
    assert_stops_pulling(&cluster, 2).await;
}

/// Posts `count` comments of about 1 KiB over `tracks` tracks through the comments endpoint,
/// over the three nodes, 16 at a time.
async fn many_comments(cluster: &TestCluster, count: usize, tracks: usize) {
    let body = "x".repeat(1000);
    let author = cluster.token("bulk", &[]);
    let mut pending = futures_util::stream::FuturesUnordered::new();
    use futures_util::StreamExt;
    for n in 0..count {
        let path = format!("/api/tracks/{}/comments", n % tracks);
        let comment = json!({"content": format!("{n} {body}"), "timestamp": n});
        let author = &author;
        pending.push(async move { cluster.post(n % 3, &path, author, comment).await });
        if pending.len() >= 16 {
            let (status, reply) = pending.next().await.unwrap();
            assert_eq!(status, 200, "{reply}");
        }
    }
    while let Some((status, reply)) = pending.next().await {
        assert_eq!(status, 200, "{reply}");
    }
}

async fn comment_counts(cluster: &TestCluster, node: usize, tracks: usize) -> Vec<usize> {
    let viewer = cluster.token("viewer", &[]);
    let mut counts = Vec::new();
    for track in 0..tracks {
        let listed = cluster
            .get(node, &format!("/api/tracks/{track}/comments"), &viewer)
            .await;
        counts.push(listed["comments"].as_array().map(Vec::len).unwrap_or(0));
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_in_the_middle_of_its_snapshot_finishes_it_after_a_restart() {
    const COMMENTS: usize = 6000;
    const TRACKS: usize = 40;
    let retention = keep(&["--history-size", "10"]);
    let mut cluster = TestCluster::start_with(3, |_, spec| retention(spec)).await;
    for node in 0..3 {
        cluster.wait_linked(node, 2, WAIT).await;
    }
    many_comments(&cluster, COMMENTS, TRACKS).await;
    cluster.wait_converged(WAIT).await;
    let expected = comment_counts(&cluster, 0, TRACKS).await;
    assert_eq!(expected.iter().sum::<usize>(), COMMENTS);
    // Pruning runs a bounded batch at a time: a node that joined before it ended could pull
    // the log instead of taking a snapshot.
    for node in cluster.running() {
        for track in 0..TRACKS {
            wait_until(WAIT, || async {
                let page = history(&cluster, node, &format!("track:{track}")).await;
                page["events"].as_array().map(Vec::len).unwrap_or(0) <= 10
            })
            .await;
        }
    }

    let joined = cluster.add_node(retention.clone());
    // Kill it -9 once it has merged part of its snapshot and before it has the end.
    wait_until_every(WAIT, Duration::from_millis(5), || async {
        cluster
            .metric(joined, "herald_snapshot_parts_merged_total")
            .await
            >= 1.0
    })
    .await;
    let finished = cluster
        .metric(joined, "herald_snapshots_received_total")
        .await;
    cluster.kill(joined);
    assert_eq!(
        finished, 0.0,
        "the snapshot finished before the kill: make it larger"
    );

    cluster.start_node(joined);
    cluster.wait_converged(WAIT).await;
    wait_until(WAIT, || async {
        comment_counts(&cluster, joined, TRACKS).await == expected
    })
    .await;
    assert!(
        cluster
            .metric(joined, "herald_snapshots_received_total")
            .await
            >= 1.0
    );
    wait_same_view(&cluster, 0).await;
    assert_stops_pulling(&cluster, joined).await;
}
