//! The backplane conformance suite: the same scenarios run against every Backplane
//! implementation, with nodes started in-process on port 0.
//!
//! - an event published on one node reaches every node's log and a subscriber on another node
//!   exactly once;
//! - a node that was down while events were published catches up after it restarts;
//! - a node that was down for longer than its peers keep history catches up from a snapshot:
//!   the same comments, the same history window, the same position;
//! - every node reports ready once its backplane can deliver;
//! - across nodes: typing indicators (ephemeral) are delivered, broadcast stats count
//!   cluster-wide listeners, `/api/cluster` lists the peers, and with `replication = 2` a
//!   publish is acknowledged by another node (and says `replicated: false` once it is alone).
//!
//! `local` is the single-node case of the same scenarios. The redis runs start their own
//! `redis-server` (see `redis_support`) and are skipped, saying so, when it is not installed.

mod redis_support;

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use futures_util::StreamExt;
use herald::config::{BackplaneKind, Config, DEV_API_KEY, DEV_JWT_SECRET};
use herald::server::Server;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);

struct Topology {
    kind: BackplaneKind,
    configs: Vec<Config>,
    nodes: Vec<Option<Server>>,
    _redis: Option<redis_support::RedisServer>,
    _dir: tempfile::TempDir,
}

impl Topology {
    /// `None` when the backplane needs a Redis and redis-server is not installed.
    async fn start(kind: BackplaneKind, count: usize) -> Option<Self> {
        Self::start_with(kind, count, |_| {}).await
    }

    async fn start_with(
        kind: BackplaneKind,
        count: usize,
        customize: impl Fn(&mut Config),
    ) -> Option<Self> {
        if std::env::var_os("HERALD_TEST_LOG").is_some() {
            herald::telemetry::init_logging();
        }
        let redis = match kind {
            BackplaneKind::Redis => Some(redis_support::RedisServer::started(&format!(
                "backplane conformance ({count} redis nodes)"
            ))?),
            _ => None,
        };
        let dir = tempfile::tempdir().unwrap();
        let gossip: Vec<SocketAddr> = (0..count)
            .map(|_| {
                UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
            })
            .collect();
        let configs: Vec<Config> = (0..count)
            .map(|index| {
                let mut config = Config::for_tests(dir.path().join(format!("n{index}")));
                config.node_id = herald::event::NodeId::new(&format!("n{index}")).unwrap();
                config.backplane = kind;
                config.gossip = gossip[index];
                config.seeds = gossip.iter().map(ToString::to_string).collect();
                config.cluster_secret = "conformance-secret".into();
                config.shutdown_grace = Duration::from_secs(2);
                config.redis_url = redis.as_ref().map(|redis| redis.url().into());
                customize(&mut config);
                config
            })
            .collect();
        let mut topology = Self {
            kind,
            nodes: (0..count).map(|_| None).collect(),
            configs,
            _redis: redis,
            _dir: dir,
        };
        for index in 0..count {
            topology.start_node(index).await;
        }
        Some(topology)
    }

    async fn start_node(&mut self, index: usize) {
        let server = Server::start(self.configs[index].clone())
            .await
            .expect("start node");
        self.nodes[index] = Some(server);
    }

    async fn stop_node(&mut self, index: usize) {
        if let Some(server) = self.nodes[index].take() {
            server.shutdown().await;
        }
    }

    fn addr(&self, index: usize) -> SocketAddr {
        self.nodes[index].as_ref().expect("running").http_addr()
    }

    async fn publish(&self, index: usize, channel: &str, data: Value) -> Value {
        reqwest::Client::new()
            .post(format!("http://{}/api/publish", self.addr(index)))
            .bearer_auth(DEV_API_KEY)
            .json(&json!({"channel": channel, "data": data}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `method path` on node `index` as the user of `bearer`, which must succeed.
    async fn feature(
        &self,
        index: usize,
        method: reqwest::Method,
        path: &str,
        bearer: &str,
        body: Value,
    ) -> Value {
        let response = reqwest::Client::new()
            .request(method, format!("http://{}{path}", self.addr(index)))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    async fn history_len(&self, index: usize, channel: &str) -> usize {
        let body: Value = reqwest::Client::new()
            .get(format!(
                "http://{}/api/channels/{channel}/history?limit=1000",
                self.addr(index)
            ))
            .bearer_auth(DEV_API_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["events"].as_array().map(Vec::len).unwrap_or(0)
    }

    async fn ready(&self, index: usize) -> bool {
        reqwest::get(format!("http://{}/readyz", self.addr(index)))
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    }

    async fn shutdown(mut self) {
        for index in 0..self.nodes.len() {
            self.stop_node(index).await;
        }
    }
}

fn token(user: &str) -> String {
    token_with_roles(user, Vec::new())
}

fn token_with_roles(user: &str, roles: Vec<herald::auth::Role>) -> String {
    let auth = herald::auth::Authenticator::new(DEV_JWT_SECRET, DEV_API_KEY);
    let user = herald::auth::User {
        id: user.into(),
        name: user.into(),
        roles,
        creator_id: None,
    };
    auth.mint(&user, Duration::from_secs(600))
}

async fn get_json(url: String, bearer: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn next_json(socket: &mut Socket, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("timed out waiting for a message")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if wanted(&value) {
                return value;
            }
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// ---- the scenarios ----

async fn delivers_to_every_node_exactly_once(kind: BackplaneKind, count: usize) {
    let Some(topology) = Topology::start(kind, count).await else {
        return;
    };
    for index in 0..count {
        common::wait_until("every node is ready", WAIT, || topology.ready(index)).await;
    }
    let last = count - 1;
    let url = format!(
        "ws://{}/ws?channel=conformance&token={}",
        topology.addr(last),
        token("u1")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    for n in 0..20 {
        let answer = topology
            .publish(n % count, "conformance", json!({"type": "item", "n": n}))
            .await;
        assert_eq!(answer["status"], "success", "{answer}");
    }
    for index in 0..count {
        common::wait_until("every node holds all 20 events", WAIT, || async {
            topology.history_len(index, "conformance").await == 20
        })
        .await;
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "item" {
                seen.push(value["n"].as_u64().unwrap());
            }
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..20).collect::<Vec<u64>>(),
        "each event exactly once ({:?})",
        topology.kind
    );
    topology.shutdown().await;
}

async fn catches_up_after_a_restart(kind: BackplaneKind, count: usize) {
    let Some(mut topology) = Topology::start(kind, count).await else {
        return;
    };
    let behind = count - 1;
    for index in 0..count {
        common::wait_until("every node is ready", WAIT, || topology.ready(index)).await;
    }
    if count == 1 {
        // A single node: what was committed before the restart is there after it.
        for n in 0..200 {
            topology
                .publish(0, "catchup", json!({"type": "item", "n": n}))
                .await;
        }
        topology.stop_node(behind).await;
    } else {
        topology.stop_node(behind).await;
        for n in 0..200 {
            topology
                .publish(n % behind, "catchup", json!({"type": "item", "n": n}))
                .await;
        }
    }
    topology.start_node(behind).await;
    common::wait_until("the restarted node holds every event", WAIT, || async {
        topology.history_len(behind, "catchup").await == 200
    })
    .await;
    topology.shutdown().await;
}

async fn works_across_nodes(kind: BackplaneKind) {
    let Some(mut topology) = Topology::start_with(kind, 2, |config| config.replication = 2).await
    else {
        return;
    };
    for index in 0..2 {
        common::wait_until("every node is ready", WAIT, || topology.ready(index)).await;
    }
    // /api/cluster lists the other node, alive and linked.
    common::wait_until("node 0 lists node 1 as alive and linked", WAIT, || async {
        let view = get_json(
            format!("http://{}/api/cluster", topology.addr(0)),
            DEV_API_KEY,
        )
        .await;
        view["members"].as_array().is_some_and(|members| {
            members
                .iter()
                .any(|m| m["node_id"] == "n1" && m["state"] == "alive" && m["linked"] == true)
        })
    })
    .await;

    // replication = 2: acknowledged by the other node.
    let answer = topology
        .publish(0, "replicated", json!({"type": "item"}))
        .await;
    assert_eq!(answer["replicated"], true, "{answer} ({kind:?})");

    // Typing indicators cross nodes without being stored.
    let track = |index: usize, user: &str| {
        format!(
            "ws://{}/api/ws/track/t1?token={}",
            topology.addr(index),
            token(user)
        )
    };
    let (mut listener, _) = tokio_tungstenite::connect_async(track(1, "alice"))
        .await
        .unwrap();
    next_json(&mut listener, |m| m["type"] == "connected").await;
    let (mut typist, _) = tokio_tungstenite::connect_async(track(0, "bob"))
        .await
        .unwrap();
    next_json(&mut typist, |m| m["type"] == "connected").await;
    use futures_util::SinkExt;
    // Typing is best effort: an indicator sent before the listener's node announced its new
    // subscriber to the typist's node (mesh interest routing) may be routed past it. Type
    // again (the server drops typing faster than every 250 ms) until it is heard.
    let deadline = std::time::Instant::now() + WAIT;
    let typing = loop {
        typist
            .send(Message::Text(
                json!({"type": "typing", "is_typing": true})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
        let heard = tokio::time::timeout(
            Duration::from_secs(1),
            next_json(&mut listener, |m| m["type"] == "user_typing"),
        )
        .await;
        if let Ok(typing) = heard {
            break typing;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "typing not heard across nodes ({kind:?})"
        );
    };
    assert_eq!(typing["user_id"], "bob", "{typing}");

    // Broadcast stats count listeners on every node.
    let admin = token_with_roles("admin", vec![herald::auth::Role::Admin]);
    let (mut banner, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/api/creator/broadcast/ws?token={}",
        topology.addr(1),
        token("carol")
    ))
    .await
    .unwrap();
    next_json(&mut banner, |m| m["type"] == "connected").await;
    common::wait_until("node 0 counts the listener on node 1", WAIT, || async {
        let stats = get_json(
            format!("http://{}/api/creator/broadcast/stats", topology.addr(0)),
            &admin,
        )
        .await;
        stats["stats"]["connected_users"] == 1 && stats["stats"]["connected_users_local"] == 0
    })
    .await;

    // Alone, replication = 2 degrades to a local commit and says so.
    drop((listener, typist, banner));
    topology.stop_node(1).await;
    common::wait_until("a lone node answers replicated: false", WAIT, || async {
        topology
            .publish(0, "replicated", json!({"type": "item"}))
            .await["replicated"]
            == false
    })
    .await;
    topology.shutdown().await;
}

/// Node `index`'s position, from its own `/api/cluster` row.
async fn own_position(topology: &Topology, index: usize) -> Value {
    let view = get_json(
        format!("http://{}/api/cluster", topology.addr(index)),
        DEV_API_KEY,
    )
    .await;
    view["members"]
        .as_array()
        .and_then(|members| members.iter().find(|m| m["is_self"] == true))
        .map(|m| m["log_position"].clone())
        .unwrap_or(Value::Null)
}

/// What node `index` shows: track 1's comments and the retained history of `below`.
async fn shown(topology: &Topology, index: usize) -> Value {
    let comments = get_json(
        format!("http://{}/api/tracks/1/comments", topology.addr(index)),
        &token("viewer"),
    )
    .await;
    let history = get_json(
        format!(
            "http://{}/api/channels/track:1/history?limit=1000",
            topology.addr(index)
        ),
        DEV_API_KEY,
    )
    .await;
    let window: Vec<Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!([e["type"], e["n"]]))
        .collect();
    json!({"comments": comments["comments"], "window": window, "truncated": history["truncated"]})
}

/// Entries in every origin's log stream.
fn stream_entries(redis: &redis_support::RedisServer) -> u64 {
    let keys = redis.command("KEYS herald:*:log:*");
    keys.lines()
        .filter(|line| line.starts_with("herald:"))
        .map(|key| {
            let reply = redis.command(&format!("XLEN {key}"));
            reply
                .trim()
                .trim_start_matches(':')
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum()
}

async fn catches_up_below_the_floor(kind: BackplaneKind) {
    let Some(mut topology) = Topology::start_with(kind, 3, |config| {
        config.history = herald::store::RetentionPolicy::new(
            herald::store::retention::ChannelRetention {
                size: 5,
                ttl: Duration::ZERO,
            },
            Vec::new(),
            0,
        );
    })
    .await
    else {
        return;
    };
    for index in 0..3 {
        common::wait_until("every node is ready", WAIT, || topology.ready(index)).await;
    }
    topology.stop_node(2).await;
    // Comments through their feature, on both live nodes; then edits (the author's, on the
    // node that made each comment) that push the comments' own events out of track:1.
    let alice = token("alice");
    let mut ids = Vec::new();
    for n in 0..8 {
        let comment = json!({"content": format!("comment {n}"), "timestamp": n});
        let reply = topology
            .feature(
                n % 2,
                reqwest::Method::POST,
                "/api/tracks/1/comments",
                &alice,
                comment,
            )
            .await;
        ids.push(reply["comment"]["id"].as_str().unwrap().to_string());
    }
    for n in 0..10 {
        let edit = json!({"content": format!("comment {} (edit {n})", n % 2)});
        let path = format!("/api/comments/{}", ids[n % 2]);
        topology
            .feature(n % 2, reqwest::Method::PUT, &path, &alice, edit)
            .await;
    }
    common::wait_until(
        "the live nodes hold the same and pruned track:1",
        WAIT,
        || async {
            own_position(&topology, 0).await == own_position(&topology, 1).await
                && topology.history_len(0, "track:1").await == 5
                && topology.history_len(1, "track:1").await == 5
        },
    )
    .await;
    if let Some(redis) = &topology._redis {
        // The streams are trimmed past the prune points: the returning node cannot fill its
        // gap from them.
        common::wait_until("the streams are trimmed", WAIT, || async {
            stream_entries(redis) < 18
        })
        .await;
    }
    topology.start_node(2).await;
    common::wait_until(
        "the returning node shows what the others show",
        WAIT,
        || async {
            let wanted = shown(&topology, 0).await;
            wanted["window"].as_array().map(Vec::len) == Some(5)
                && shown(&topology, 2).await == wanted
                && shown(&topology, 1).await == wanted
                && own_position(&topology, 2).await == own_position(&topology, 0).await
        },
    )
    .await;
    let view = shown(&topology, 2).await;
    assert_eq!(
        view["comments"].as_array().unwrap().len(),
        8,
        "{view} ({kind:?})"
    );
    assert_eq!(view["window"].as_array().unwrap().len(), 5, "{view}");
    assert_eq!(view["truncated"], true);
    common::wait_until("the returning node is ready", WAIT, || topology.ready(2)).await;
    topology.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_catches_up_below_the_floor() {
    catches_up_below_the_floor(BackplaneKind::Mesh).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_catches_up_below_the_floor() {
    catches_up_below_the_floor(BackplaneKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_works_across_nodes() {
    works_across_nodes(BackplaneKind::Mesh).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_works_across_nodes() {
    works_across_nodes(BackplaneKind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_delivers_to_every_node_exactly_once() {
    delivers_to_every_node_exactly_once(BackplaneKind::Mesh, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_catches_up_after_a_restart() {
    catches_up_after_a_restart(BackplaneKind::Mesh, 3).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_delivers_to_every_node_exactly_once() {
    delivers_to_every_node_exactly_once(BackplaneKind::Redis, 3).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_catches_up_after_a_restart() {
    catches_up_after_a_restart(BackplaneKind::Redis, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_delivers_exactly_once() {
    delivers_to_every_node_exactly_once(BackplaneKind::Local, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_keeps_its_log_across_a_restart() {
    catches_up_after_a_restart(BackplaneKind::Local, 1).await;
}
