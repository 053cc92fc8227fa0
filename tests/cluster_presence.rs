//! Presence across three real nodes (issue 13): who is on a channel is the same on every
//! node, a user on two nodes counts once, a SIGKILLed node's users are gone everywhere within
//! 2 s with exactly one `presence_leave` per user to each subscriber, a restarted node's users
//! come back, a partition heals to the right set, and churn leaves no ghosts.
//!
//! `HERALD_PRESENCE_KILLS=N` repeats the kill N times (default 3) and prints the time from
//! SIGKILL to the last ghost gone on every survivor (BENCHMARKS.md, presence).

mod cluster_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cluster_support::client::{self, Socket};
use cluster_support::firewall::{self, Firewall};
use cluster_support::{API_KEY, TestCluster, wait_for, wait_until_every};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CHANNEL: &str = "track:7";
const WAIT: Duration = Duration::from_secs(30);
/// How soon a join or leave must show in every node's API.
const SPREAD_BOUND: Duration = Duration::from_secs(1);
/// How soon after a SIGKILL the node's users must be gone everywhere.
const KILL_BOUND: Duration = Duration::from_secs(2);

/// The user ids node `index` lists on `channel`.
async fn listed(cluster: &TestCluster, index: usize, channel: &str) -> BTreeMap<String, u64> {
    let answer = cluster
        .get(index, &format!("/api/channels/{channel}/presence"), API_KEY)
        .await;
    answer["users"]
        .as_array()
        .unwrap_or_else(|| panic!("no users in {answer}"))
        .iter()
        .map(|user| {
            (
                user["user_id"].as_str().unwrap_or_default().to_string(),
                user["connections"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

async fn count(cluster: &TestCluster, index: usize, channel: &str) -> u64 {
    let answer = cluster
        .get(
            index,
            &format!("/api/channels/{channel}/presence/count"),
            API_KEY,
        )
        .await;
    answer["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("{answer}"))
}

/// Waits until every node in `nodes` lists exactly `users` on `channel` (looking every 20 ms,
/// so that the times measured are close); answers how long.
async fn wait_listed_everywhere(
    cluster: &TestCluster,
    nodes: &[usize],
    channel: &str,
    users: &[&str],
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    let want: BTreeSet<String> = users.iter().map(|u| u.to_string()).collect();
    wait_until_every(timeout, Duration::from_millis(20), || async {
        for &index in nodes {
            let got: BTreeSet<String> = listed(cluster, index, channel).await.into_keys().collect();
            if got != want {
                return false;
            }
        }
        true
    })
    .await;
    started.elapsed()
}

/// A socket of `user` on `channel` at node `index` (with `query` appended).
async fn join(cluster: &TestCluster, index: usize, user: &str, query: &str) -> Socket {
    let token = cluster.token(user, &[]);
    client::open(
        cluster,
        index,
        &format!("/ws?channel={CHANNEL}{query}"),
        &token,
    )
    .await
}

/// A subscriber of the channel on each of `nodes` that does not announce itself.
async fn watchers(cluster: &TestCluster, nodes: &[usize]) -> Vec<Socket> {
    let mut sockets = Vec::new();
    for &index in nodes {
        let user = format!("watcher{index}");
        sockets.push(join(cluster, index, &user, "&presence=false").await);
    }
    sockets
}

/// Presence events read from `socket` until the committed event `marker` arrives.
async fn presence_events_until(socket: &mut Socket, marker: &str) -> Vec<(String, String)> {
    let mut events = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .expect("timed out waiting for the marker")
            .expect("socket ended")
            .expect("socket error");
        let Message::Text(text) = message else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).expect("json");
        match value["type"].as_str() {
            Some("presence_join" | "presence_leave") => {
                assert!(
                    value.get("cursor").is_none(),
                    "presence carries no cursor: {value}"
                );
                assert_eq!(value["channel"], CHANNEL);
                events.push((
                    value["type"].as_str().unwrap_or_default().to_string(),
                    value["user"]["user_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ));
            }
            Some("new_comment") if value["comment"]["content"] == marker => return events,
            _ => {}
        }
    }
}

/// A comment on the track as a marker: committed, so it reaches every subscriber after what
/// the node delivered before it.
async fn publish_marker(cluster: &TestCluster, index: usize, name: &str) {
    let token = cluster.token("marker", &[]);
    let path = format!(
        "/api/tracks/{}/comments",
        CHANNEL.trim_start_matches("track:")
    );
    let (status, answer) = cluster
        .post(index, &path, &token, json!({ "content": name }))
        .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_the_same_on_every_node_and_a_user_on_two_nodes_counts_once() {
    let cluster = TestCluster::start_linked(3).await;
    let all = [0, 1, 2];
    let mut watcher = join(&cluster, 2, "watcher", "&presence=false").await;
    let _ann = join(&cluster, 0, "ann", "").await;
    let spread = wait_listed_everywhere(&cluster, &all, CHANNEL, &["ann"], SPREAD_BOUND).await;
    println!("a join showed on every node in {spread:?}");
    let bob_here = join(&cluster, 1, "bob", "").await;
    let bob_there = join(&cluster, 2, "bob", "").await;
    wait_listed_everywhere(&cluster, &all, CHANNEL, &["ann", "bob"], SPREAD_BOUND).await;
    // Listed once one of bob's joins arrived: the other may still be on its way.
    wait_for("bob's two sockets everywhere", SPREAD_BOUND, || async {
        let mut ok = true;
        for index in all {
            ok &= listed(&cluster, index, CHANNEL).await.get("bob") == Some(&2);
        }
        ok
    })
    .await;
    for index in all {
        let users = listed(&cluster, index, CHANNEL).await;
        assert_eq!(users["bob"], 2, "bob's two sockets, on node {index}");
        assert_eq!(count(&cluster, index, CHANNEL).await, 2, "node {index}");
    }
    drop(bob_here);
    wait_for(
        "bob down to one connection everywhere",
        SPREAD_BOUND,
        || async {
            let mut ok = true;
            for index in all {
                ok &= listed(&cluster, index, CHANNEL).await.get("bob") == Some(&1);
            }
            ok
        },
    )
    .await;
    drop(bob_there);
    let spread = wait_listed_everywhere(&cluster, &all, CHANNEL, &["ann"], SPREAD_BOUND).await;
    println!("a leave showed on every node in {spread:?}");
    publish_marker(&cluster, 0, "end").await;
    let events = presence_events_until(&mut watcher, "end").await;
    assert_eq!(
        events,
        [
            ("presence_join".to_string(), "ann".to_string()),
            ("presence_join".to_string(), "bob".to_string()),
            ("presence_leave".to_string(), "bob".to_string()),
        ],
        "one join per user however many sockets, one leave with the last; the watcher \
         (presence=false) never announced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_are_gone_everywhere_within_two_seconds_and_come_back() {
    let kills: usize = std::env::var("HERALD_PRESENCE_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let mut cluster = TestCluster::start_linked(3).await;
    let survivors = [0, 1];
    let mut watchers = watchers(&cluster, &survivors).await;
    // A user on a survivor too, who must stay.
    let _stays = join(&cluster, 0, "stays", "").await;
    let mut times = Vec::new();
    for round in 0..kills {
        let users: Vec<String> = (0..5).map(|n| format!("r{round}u{n}")).collect();
        let mut sockets = Vec::new();
        for user in &users {
            sockets.push(join(&cluster, 2, user, "").await);
        }
        let mut expected: Vec<&str> = users.iter().map(String::as_str).collect();
        expected.push("stays");
        wait_listed_everywhere(&cluster, &[0, 1, 2], CHANNEL, &expected, SPREAD_BOUND).await;

        let killed = Instant::now();
        cluster.kill(2);
        wait_listed_everywhere(&cluster, &survivors, CHANNEL, &["stays"], WAIT).await;
        let gone = killed.elapsed();
        println!("round {round}: SIGKILL to the last ghost gone on every survivor: {gone:?}");
        assert!(
            gone <= KILL_BOUND,
            "ghosts lasted {gone:?} after the kill (bound {KILL_BOUND:?})"
        );
        times.push(gone);
        drop(sockets);

        let marker = format!("after-kill-{round}");
        publish_marker(&cluster, 0, &marker).await;
        for watcher in &mut watchers {
            let events = presence_events_until(watcher, &marker).await;
            let leaves: Vec<&String> = events
                .iter()
                .filter(|(kind, _)| kind == "presence_leave")
                .map(|(_, user)| user)
                .collect();
            let mut leaves_sorted: Vec<&String> = leaves.clone();
            leaves_sorted.sort();
            assert_eq!(
                leaves_sorted,
                users.iter().collect::<Vec<_>>(),
                "exactly one leave per user of the killed node: {events:?}"
            );
        }

        cluster.start_node(2);
        cluster.wait_linked(2, 2, WAIT).await;
        // The restarted node's users reconnect to it, and show everywhere again.
        let mut back = Vec::new();
        for user in &users[..2] {
            back.push(join(&cluster, 2, user, "").await);
        }
        let expected = [users[0].as_str(), users[1].as_str(), "stays"];
        wait_listed_everywhere(&cluster, &[0, 1, 2], CHANNEL, &expected, SPREAD_BOUND * 2).await;
        drop(back);
        wait_listed_everywhere(&cluster, &[0, 1, 2], CHANNEL, &["stays"], SPREAD_BOUND * 2).await;
        let marker = format!("end-of-round-{round}");
        publish_marker(&cluster, 0, &marker).await;
        for watcher in &mut watchers {
            let events = presence_events_until(watcher, &marker).await;
            assert_eq!(
                events.len(),
                4,
                "the two who came back joined and left: {events:?}"
            );
        }
    }
    times.sort();
    println!(
        "SIGKILL to the last ghost gone, over {kills} kills: p50 {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_no_ghosts() {
    let cluster = TestCluster::start_linked(3).await;
    let all = [0, 1, 2];
    let addrs: Vec<SocketAddr> = all.iter().map(|&i| cluster.http(i)).collect();
    let tokens: Vec<String> = (0..30)
        .map(|n| cluster.token(&format!("c{n}"), &[]))
        .collect();
    let mut watchers = watchers(&cluster, &all).await;
    let _stays = join(&cluster, 1, "stays", "").await;
    let started = Instant::now();
    let churn = Duration::from_secs(4);
    let mut tasks = Vec::new();
    for worker in 0..12usize {
        let addrs = addrs.clone();
        let tokens = tokens.clone();
        tasks.push(tokio::spawn(async move {
            let mut cycles = 0u64;
            let mut n = worker;
            while started.elapsed() < churn {
                let addr = addrs[n % addrs.len()];
                let token = &tokens[n % tokens.len()];
                let url = format!("ws://{addr}/ws?channel={CHANNEL}&token={token}");
                if let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await {
                    // Half the sockets say goodbye, half just vanish.
                    if n % 2 == 0 {
                        let _ = socket.close(None).await;
                    }
                    cycles += 1;
                }
                n += 7;
            }
            cycles
        }));
    }
    let mut cycles = 0;
    for task in tasks {
        cycles += task.await.expect("churn task");
    }
    let rate = cycles as f64 / started.elapsed().as_secs_f64();
    println!("churn: {cycles} connects and disconnects ({rate:.0}/s)");
    assert!(
        rate >= 100.0,
        "the churn was too slow to mean much: {rate:.0}/s"
    );
    let settled = wait_listed_everywhere(&cluster, &all, CHANNEL, &["stays"], WAIT).await;
    println!("no ghosts {settled:?} after the churn stopped");
    for index in all {
        assert_eq!(count(&cluster, index, CHANNEL).await, 1, "node {index}");
    }
    // Every subscriber saw each user's joins and leaves alternate, ending with a leave: no
    // event twice, none lost, whichever node the sockets were on.
    publish_marker(&cluster, 0, "churn-over").await;
    for (index, watcher) in watchers.iter_mut().enumerate() {
        let events = presence_events_until(watcher, "churn-over").await;
        let mut present: BTreeMap<String, bool> = BTreeMap::new();
        for (kind, user) in &events {
            let was = present
                .insert(user.clone(), kind == "presence_join")
                .unwrap_or(false);
            assert_ne!(
                was,
                kind == "presence_join",
                "watcher on node {index}: {kind} of {user} twice in a row"
            );
        }
        let ghosts: Vec<&String> = present
            .iter()
            .filter(|(user, here)| **here && *user != "stays")
            .map(|(user, _)| user)
            .collect();
        assert!(
            ghosts.is_empty(),
            "watcher on node {index} still has {ghosts:?}"
        );
        println!(
            "watcher on node {index}: {} presence events, balanced",
            events.len()
        );
    }
    // And it stays that way: nothing late brings a ghost back.
    cluster_support::holds_for(Duration::from_secs(1), "no ghosts", || async {
        let mut ok = true;
        for index in all {
            ok &= count(&cluster, index, CHANNEL).await == 1;
        }
        ok
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_to_the_right_set() {
    if firewall::skip_unless_available("a_partition_heals_to_the_right_set") {
        return;
    }
    let cluster = TestCluster::start_linked(3).await;
    let all = [0, 1, 2];
    let _ann = join(&cluster, 0, "ann", "").await;
    let _bob = join(&cluster, 2, "bob", "").await;
    wait_listed_everywhere(&cluster, &all, CHANNEL, &["ann", "bob"], SPREAD_BOUND).await;

    let majority: Vec<u16> = [cluster.ports(0).await, cluster.ports(1).await].concat();
    let minority = cluster.ports(2).await;
    let firewall = Firewall::new();
    firewall.drop_udp(&majority, &minority);
    firewall.drop_udp(&minority, &majority);
    // Each side sees only its own users once the cut is noticed.
    let split = wait_listed_everywhere(&cluster, &[0, 1], CHANNEL, &["ann"], WAIT).await;
    wait_listed_everywhere(&cluster, &[2], CHANNEL, &["bob"], WAIT).await;
    println!("the majority dropped the cut-off node's users after {split:?}");
    // Changes on each side during the cut.
    let carl = join(&cluster, 1, "carl", "").await;
    let _dora = join(&cluster, 2, "dora", "").await;
    drop(carl);
    let _erin = join(&cluster, 0, "erin", "").await;
    wait_listed_everywhere(&cluster, &[0, 1], CHANNEL, &["ann", "erin"], WAIT).await;

    firewall.heal();
    let healed = wait_listed_everywhere(
        &cluster,
        &all,
        CHANNEL,
        &["ann", "bob", "dora", "erin"],
        WAIT,
    )
    .await;
    println!("healed to the right set on every node {healed:?} after the cut ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_traffic_per_join_on_the_mesh() {
    let cluster = TestCluster::start_linked(3).await;
    let before = cluster
        .metric(0, "herald_mesh_presence_bytes_sent_total")
        .await;
    let mut sockets = Vec::new();
    for n in 0..50 {
        sockets.push(join(&cluster, 0, &format!("t{n}"), "").await);
    }
    let users: Vec<String> = (0..50).map(|n| format!("t{n}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    wait_listed_everywhere(&cluster, &[0, 1, 2], CHANNEL, &users, WAIT).await;
    let sent = cluster
        .metric(0, "herald_mesh_presence_bytes_sent_total")
        .await
        - before;
    let per_join = sent / 50.0;
    println!(
        "presence sent by the joining node: {sent} bytes for 50 joins, {per_join:.0} bytes per join to 2 peers"
    );
    assert!(sent > 0.0, "presence went over the mesh");
    // A delta per join per peer, each with the channel, user id and name: far below 1 KiB.
    assert!(per_join < 1024.0, "{per_join} bytes per join");
}
