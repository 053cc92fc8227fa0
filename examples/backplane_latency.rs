//! Publish-to-receive latency across nodes, through the QUIC mesh and through Redis, with the
//! same load in one run; then the time from Redis coming back (empty) after an outage to the
//! backlog being delivered on the other nodes.
//!
//! ```text
//! cargo run --release --example backplane_latency [-- --rate 200 --seconds 10]
//! ```
//!
//! Three in-process nodes per backplane on loopback; one publisher posting to node 0 over HTTP
//! at a fixed rate, two WebSocket subscribers on each of nodes 0, 1, 2. The latency of an event
//! is from just before its HTTP publish to its arrival at a subscriber; node 0's subscribers
//! show the local path (commit + hub), nodes 1 and 2 the cross-node path. Needs `redis-server`
//! on the PATH (it starts its own on a free port). A measurement, not a test: nothing asserts.

#[path = "../tests/redis_support/mod.rs"]
mod redis_support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use herald::config::{BackplaneKind, Config, DEV_API_KEY, DEV_JWT_SECRET};
use herald::server::Server;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const NODES: usize = 3;
const SUBSCRIBERS_PER_NODE: usize = 2;
const WAIT: Duration = Duration::from_secs(60);

struct Arrivals {
    /// Per node: (n, latency in microseconds) of every tick received there.
    per_node: Vec<Vec<(u64, u64)>>,
}

fn token(user: &str) -> String {
    let auth = herald::auth::Authenticator::new(DEV_JWT_SECRET, DEV_API_KEY);
    let user = herald::auth::User {
        id: user.into(),
        name: user.into(),
        roles: Vec::new(),
        creator_id: None,
    };
    auth.mint(&user, Duration::from_secs(3600))
}

async fn start_nodes(
    kind: BackplaneKind,
    redis_url: Option<String>,
    dir: &std::path::Path,
) -> Vec<Server> {
    let gossip: Vec<SocketAddr> = (0..NODES)
        .map(|_| {
            UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("udp port")
        })
        .collect();
    let mut nodes = Vec::new();
    for index in 0..NODES {
        let mut config = Config::for_tests(dir.join(format!("{kind:?}-n{index}")));
        config.node_id = herald::event::NodeId::new(&format!("n{index}")).expect("node id");
        config.backplane = kind;
        config.gossip = gossip[index];
        config.seeds = gossip.iter().map(ToString::to_string).collect();
        config.cluster_secret = "latency-secret".into();
        config.redis_url = redis_url.clone().map(Into::into);
        config.shutdown_grace = Duration::from_secs(1);
        nodes.push(Server::start(config).await.expect("start node"));
    }
    let client = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    for node in &nodes {
        loop {
            let ready = client
                .get(format!("http://{}/readyz", node.http_addr()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{kind:?} nodes never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    nodes
}

async fn subscribe(
    addr: SocketAddr,
    node: usize,
    base: Instant,
    arrivals: Arc<Mutex<Arrivals>>,
    connected: tokio::sync::mpsc::Sender<()>,
) {
    let url = format!("ws://{addr}/ws?channel=latency&token={}", token("bench"));
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    while let Some(Ok(message)) = socket.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match value["type"].as_str() {
            Some("connected") => {
                let _ = connected.send(()).await;
            }
            Some("tick") => {
                let now = base.elapsed().as_micros() as u64;
                let sent = value["t"].as_u64().unwrap_or(now);
                let n = value["n"].as_u64().unwrap_or(0);
                arrivals.lock().expect("lock").per_node[node].push((n, now.saturating_sub(sent)));
            }
            _ => {}
        }
    }
}

async fn publish(client: &reqwest::Client, addr: SocketAddr, n: u64, base: Instant) -> bool {
    let body = json!({"channel": "latency", "data": {"type": "tick", "n": n, "t": base.elapsed().as_micros() as u64}});
    client
        .post(format!("http://{addr}/api/publish"))
        .bearer_auth(DEV_API_KEY)
        .json(&body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Waits until every subscriber of nodes 1 and 2 holds ticks `first..=last`.
async fn wait_delivered(arrivals: &Mutex<Arrivals>, first: u64, last: u64) -> bool {
    let deadline = Instant::now() + WAIT;
    let wanted = (last - first + 1) as usize * SUBSCRIBERS_PER_NODE;
    while Instant::now() < deadline {
        let done = {
            let arrivals = arrivals.lock().expect("lock");
            (1..NODES).all(|node| {
                arrivals.per_node[node]
                    .iter()
                    .filter(|(n, _)| (first..=last).contains(n))
                    .count()
                    >= wanted
            })
        };
        if done {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

fn report(kind: BackplaneKind, arrivals: &Arrivals, sent: u64) {
    for (label, nodes) in [("local (node 0)", 0..1), ("cross-node (1, 2)", 1..NODES)] {
        let mut histogram = Histogram::<u64>::new(3).expect("histogram");
        for node in nodes {
            for (_, micros) in &arrivals.per_node[node] {
                let _ = histogram.record(*micros);
            }
        }
        let kind = format!("{kind:?}");
        println!(
            "{kind:<5} {label:<18} {:>6} deliveries of {sent} publishes: p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            histogram.len(),
            histogram.value_at_quantile(0.50) as f64 / 1000.0,
            histogram.value_at_quantile(0.99) as f64 / 1000.0,
            histogram.max() as f64 / 1000.0,
        );
    }
}

fn argument(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rate = argument("--rate", 200);
    let seconds = argument("--seconds", 10);
    let backlog = argument("--backlog", 2000);
    let Some(mut redis) = redis_support::RedisServer::started("backplane_latency") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    println!("{rate} publishes/s for {seconds} s to node 0 of 3; 2 subscribers per node");
    for kind in [BackplaneKind::Mesh, BackplaneKind::Redis] {
        let url = (kind == BackplaneKind::Redis).then(|| redis.url());
        let nodes = start_nodes(kind, url, dir.path()).await;
        let base = Instant::now();
        let arrivals = Arc::new(Mutex::new(Arrivals {
            per_node: vec![Vec::new(); NODES],
        }));
        let (connected, mut connections) = tokio::sync::mpsc::channel(64);
        let mut subscribers = Vec::new();
        for (node, server) in nodes.iter().enumerate() {
            for _ in 0..SUBSCRIBERS_PER_NODE {
                subscribers.push(tokio::spawn(subscribe(
                    server.http_addr(),
                    node,
                    base,
                    Arc::clone(&arrivals),
                    connected.clone(),
                )));
            }
        }
        for _ in 0..NODES * SUBSCRIBERS_PER_NODE {
            connections.recv().await;
        }
        // Mesh links come up shortly after readiness: give replication a warm-up round.
        let client = reqwest::Client::new();
        publish(&client, nodes[0].http_addr(), 0, base).await;
        wait_delivered(&arrivals, 0, 0).await;
        arrivals
            .lock()
            .expect("lock")
            .per_node
            .iter_mut()
            .for_each(Vec::clear);

        let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
        let total = rate * seconds;
        for n in 1..=total {
            pace.tick().await;
            let (client, addr) = (client.clone(), nodes[0].http_addr());
            tokio::spawn(async move { publish(&client, addr, n, base).await });
        }
        let complete = wait_delivered(&arrivals, 1, total).await;
        report(kind, &arrivals.lock().expect("lock"), total);
        if !complete {
            println!("{kind:?}: not every event arrived within {WAIT:?}");
        }

        if kind == BackplaneKind::Redis {
            // An outage: events published meanwhile are delivered locally and shipped when
            // Redis is back (empty).
            redis.kill();
            let first = total + 1;
            let last = total + backlog;
            for n in first..=last {
                publish(&client, nodes[0].http_addr(), n, base).await;
            }
            redis.start();
            let back = Instant::now();
            let delivered = wait_delivered(&arrivals, first, last).await;
            println!(
                "redis back (empty) after an outage with {backlog} events published on node 0: \
                 backlog on every subscriber of nodes 1 and 2 after {} ms{}",
                back.elapsed().as_millis(),
                if delivered { "" } else { " (incomplete)" }
            );
        }
        for subscriber in subscribers {
            subscriber.abort();
        }
        for node in nodes {
            node.shutdown().await;
        }
    }
}
