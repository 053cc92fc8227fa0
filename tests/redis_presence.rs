//! Presence through the Redis backplane, with real `herald serve` processes sharing one
//! `redis-server`:
//! - two users on `track:1`, on nodes 1 and 2 of three, are seen by every node within 2 s;
//!   node 1 is killed with SIGKILL (no goodbye: its heartbeat just stops) and within
//!   `DEAD_AFTER` + 2 s every survivor has dropped its user, each survivor's subscriber having
//!   received exactly one `presence_leave` for them;
//! - Redis killed: each node keeps its peers' presence for a while, then (cut off for
//!   `DEAD_AFTER`) drops it, keeping its own users; Redis back, empty: everyone is back
//!   everywhere.
//!
//! What a node sees is read from its own subscribers: a watcher socket on every node, with
//! `?presence=false` so that it is not present itself, records the `presence_join` and
//! `presence_leave` events its node hands out (every node announces from its own view), and
//! from `GET /api/channels/{channel}/presence` where the build has it.
//!
//! Skipped, saying so, when `redis-server` is not installed (`HERALD_REQUIRE_REDIS=1` turns
//! that into a failure).

#![cfg(feature = "redis")]

mod cluster_support;
mod redis_support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_support::{API_KEY, TestCluster, holds_for, wait_for};
use futures_util::StreamExt;
use herald::backplane::redis::DEAD_AFTER;
use redis_support::RedisServer;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const NODES: usize = 3;
const CHANNEL: &str = "track:1";
const START_WAIT: Duration = Duration::from_secs(30);
/// Every node sees a user this soon after their socket is connected.
const SEEN_WITHIN: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Watched {
    connected: bool,
    /// Every `presence_join` / `presence_leave`, in arrival order.
    events: Vec<Value>,
}

type Shared = Arc<Mutex<Watched>>;

impl Watched {
    fn count(&self, kind: &str, user: &str) -> usize {
        self.events
            .iter()
            .filter(|e| e["type"] == kind && e["user"]["user_id"] == user)
            .count()
    }
}

/// A socket on `track:1` of a node, recording `connected` and presence events until closed.
/// `announce: false` adds `?presence=false`.
async fn socket(addr: SocketAddr, token: String, announce: bool, watched: Shared) {
    let presence = if announce { "" } else { "&presence=false" };
    let url = format!("ws://{addr}/ws?channel={CHANNEL}&token={token}{presence}");
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
        return;
    };
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let mut state = watched.lock().unwrap();
        match value["type"].as_str() {
            Some("connected") => state.connected = true,
            Some("presence_join" | "presence_leave") => state.events.push(value),
            _ => {}
        }
    }
}

async fn connect(cluster: &TestCluster, node: usize, user: &str, announce: bool) -> Shared {
    let watched = Shared::default();
    tokio::spawn(socket(
        cluster.http(node),
        cluster.token(user, &[]),
        announce,
        Arc::clone(&watched),
    ));
    wait_for(
        &format!("{user}'s socket on node {node} connected"),
        START_WAIT,
        || async { watched.lock().unwrap().connected },
    )
    .await;
    watched
}

/// The user ids node `index` lists on `track:1`, when this build has the presence endpoint
/// (`None` otherwise).
async fn listed(
    http: &reqwest::Client,
    cluster: &TestCluster,
    index: usize,
) -> Option<BTreeSet<String>> {
    let response = http
        .get(format!(
            "http://{}/api/channels/{CHANNEL}/presence",
            cluster.http(index)
        ))
        .bearer_auth(API_KEY)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    let users = body["users"].as_array()?;
    Some(
        users
            .iter()
            .filter_map(|user| user["user_id"].as_str().map(str::to_string))
            .collect(),
    )
}

/// `count` nodes on the Redis backplane, ready and seeing each other in the registry.
async fn start(redis: &RedisServer, count: usize) -> TestCluster {
    let url = redis.url();
    let cluster = TestCluster::start_with(count, |_, spec| {
        spec.extra_args = ["--backplane", "redis", "--redis-url", &url]
            .iter()
            .map(ToString::to_string)
            .collect();
    })
    .await;
    for index in 0..count {
        wait_for("ready", START_WAIT, || async {
            cluster.readyz(index).await.0 == 200
        })
        .await;
        cluster.wait_linked(index, count - 1, START_WAIT).await;
    }
    cluster
}

fn users(ids: &[&str]) -> Option<BTreeSet<String>> {
    Some(ids.iter().map(|id| id.to_string()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_leave_everywhere_once() {
    let test = "a_killed_nodes_users_leave_everywhere_once";
    let Some(redis) = RedisServer::started(test) else {
        return;
    };
    let mut cluster = start(&redis, NODES).await;
    let http = reqwest::Client::new();
    let endpoint = listed(&http, &cluster, 0).await.is_some();
    eprintln!(
        "presence endpoint {}",
        if endpoint {
            "present: checked too"
        } else {
            "absent in this build: subscribers only"
        }
    );

    let mut watchers = Vec::new();
    for node in 0..NODES {
        watchers.push(connect(&cluster, node, &format!("watcher{node}"), false).await);
    }
    let _user1 = connect(&cluster, 0, "u1", true).await;
    let _user2 = connect(&cluster, 1, "u2", true).await;
    let connected = Instant::now();

    wait_for("every node announces both users", SEEN_WITHIN, || async {
        let announced = watchers.iter().all(|watched| {
            let watched = watched.lock().unwrap();
            watched.count("presence_join", "u1") == 1 && watched.count("presence_join", "u2") == 1
        });
        if !announced || !endpoint {
            return announced;
        }
        for index in 0..NODES {
            let wanted: BTreeSet<String> = ["u1".to_string(), "u2".to_string()].into();
            if listed(&http, &cluster, index).await != Some(wanted) {
                return false;
            }
        }
        true
    })
    .await;
    eprintln!(
        "every node saw both users {} ms after they connected",
        connected.elapsed().as_millis()
    );
    for watched in &watchers {
        let watched = watched.lock().unwrap();
        assert!(
            watched.events.iter().all(|e| e["type"] == "presence_join"),
            "a leave before the kill: {:?}",
            watched.events
        );
    }

    // SIGKILL the node holding u1: no `left` record, no last snapshot; its heartbeat stops.
    cluster.kill(0);
    let killed = Instant::now();
    let survivors = [1, 2];
    let gone_within = DEAD_AFTER + Duration::from_secs(2);
    wait_for("every survivor drops u1", gone_within, || async {
        let left = survivors
            .iter()
            .all(|&node| watchers[node].lock().unwrap().count("presence_leave", "u1") >= 1);
        if !left || !endpoint {
            return left;
        }
        for &index in &survivors {
            let wanted: BTreeSet<String> = ["u2".to_string()].into();
            if listed(&http, &cluster, index).await != Some(wanted) {
                return false;
            }
        }
        true
    })
    .await;
    eprintln!(
        "survivors dropped u1 {} ms after its node was killed (DEAD_AFTER {} ms)",
        killed.elapsed().as_millis(),
        DEAD_AFTER.as_millis()
    );

    // Exactly one leave, in the documented shape, and nothing else changes for a while.
    for &node in &survivors {
        let watched = watchers[node].lock().unwrap();
        let leave = watched
            .events
            .iter()
            .find(|e| e["type"] == "presence_leave")
            .expect("a leave")
            .clone();
        assert_eq!(
            leave,
            serde_json::json!({
                "type": "presence_leave",
                "channel": CHANNEL,
                "user": {"user_id": "u1", "name": "useru1"},
            }),
            "node {node}: the leave as sent (no cursor: presence is ephemeral)"
        );
    }
    holds_for(
        Duration::from_secs(1),
        "one leave for u1 and none for u2 at every survivor",
        || async {
            survivors.iter().all(|&node| {
                let watched = watchers[node].lock().unwrap();
                watched.count("presence_leave", "u1") == 1
                    && watched.count("presence_join", "u1") == 1
                    && watched.count("presence_leave", "u2") == 0
                    && watched.count("presence_join", "u2") == 1
            })
        },
    )
    .await;
}

/// Redis SIGKILLed: each node keeps the other's user while its registry round trips have
/// failed for less than `DEAD_AFTER`, then drops it (it cannot know who is there) and keeps its
/// own; Redis back, EMPTY (every presence key and record gone): each node finds its key gone,
/// rewrites it, and both users are back on both nodes, with one leave and one join more each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_from_redis_drops_peers_presence_until_it_returns() {
    let test = "cut_off_from_redis_drops_peers_presence_until_it_returns";
    let Some(mut redis) = RedisServer::started(test) else {
        return;
    };
    let cluster = start(&redis, 2).await;
    let http = reqwest::Client::new();
    let endpoint = listed(&http, &cluster, 0).await.is_some();
    let watchers = [
        connect(&cluster, 0, "watcher0", false).await,
        connect(&cluster, 1, "watcher1", false).await,
    ];
    let _user1 = connect(&cluster, 0, "u1", true).await;
    let _user2 = connect(&cluster, 1, "u2", true).await;
    // (node, its own user, the other node's user)
    let sides = [(0, "u1", "u2"), (1, "u2", "u1")];
    let counts = |kind: &'static str, own: bool| {
        sides.map(|(node, mine, theirs)| {
            watchers[node]
                .lock()
                .unwrap()
                .count(kind, if own { mine } else { theirs })
        })
    };
    wait_for("both nodes announce both users", SEEN_WITHIN, || async {
        counts("presence_join", true) == [1, 1] && counts("presence_join", false) == [1, 1]
    })
    .await;

    redis.kill();
    let killed = Instant::now();
    wait_for(
        "each node, cut off, drops the other's user",
        DEAD_AFTER + Duration::from_secs(2),
        || async {
            let dropped = counts("presence_leave", false) == [1, 1];
            if !dropped || !endpoint {
                return dropped;
            }
            listed(&http, &cluster, 0).await == users(&["u1"])
                && listed(&http, &cluster, 1).await == users(&["u2"])
        },
    )
    .await;
    let dropped_after = killed.elapsed();
    eprintln!(
        "cut off: peers' presence dropped {} ms after redis was killed",
        dropped_after.as_millis()
    );
    // The last successful round trip was at most a tick before the kill.
    assert!(
        dropped_after >= DEAD_AFTER - Duration::from_millis(500),
        "peers' presence dropped after only {dropped_after:?}: a short outage must change nothing"
    );
    assert_eq!(counts("presence_leave", true), [0, 0], "own users stay");

    redis.start();
    let back = Instant::now();
    wait_for(
        "both users back on both nodes",
        Duration::from_secs(15),
        || async {
            let rejoined = counts("presence_join", false) == [2, 2];
            if !rejoined || !endpoint {
                return rejoined;
            }
            for index in 0..2 {
                if listed(&http, &cluster, index).await != users(&["u1", "u2"]) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    eprintln!(
        "redis back (empty): both users everywhere again {} ms later",
        back.elapsed().as_millis()
    );
    holds_for(Duration::from_secs(1), "no more transitions", || async {
        counts("presence_join", false) == [2, 2]
            && counts("presence_leave", false) == [1, 1]
            && counts("presence_join", true) == [1, 1]
            && counts("presence_leave", true) == [0, 0]
    })
    .await;
}
