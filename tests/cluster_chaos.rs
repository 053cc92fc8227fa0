//! Chaos: three real nodes, publishers and subscribers on all of them, and one node after
//! another killed with SIGKILL mid-stream and restarted, for a bounded time.
//!
//! At the end: every publish that got a success answer is in every node's log; every client
//! received each event of its channel exactly once and per origin in order (clients whose node
//! died resumed on another node with their cursor); the nodes hold identical logs and the same
//! materialized state.

mod cluster_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cluster_support::{API_KEY, TestCluster, wait_until};
use futures_util::StreamExt;
use herald::auth::Role;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const NODES: usize = 3;
const CHAOS_FOR: Duration = Duration::from_secs(12);
const KILL_EVERY: Duration = Duration::from_millis(2500);
const PUBLISH_EVERY: Duration = Duration::from_millis(8);
const SUBSCRIBERS_PER_NODE: usize = 2;
const WAIT: Duration = Duration::from_secs(60);

type Addresses = Arc<RwLock<Vec<Option<SocketAddr>>>>;

#[derive(Default)]
struct Received {
    /// (publisher, n) in arrival order.
    ticks: Vec<(u64, u64)>,
    markers: BTreeSet<u64>,
    cursor: Option<String>,
    resumes: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_nodes_mid_stream_loses_and_duplicates_nothing() {
    // Every acknowledged event must stay in every log to the end: no retention here.
    let mut cluster = TestCluster::start_with(NODES, |_, spec| {
        spec.extra_args
            .extend(["--history-size".to_string(), "0".to_string()]);
    })
    .await;
    for index in 0..NODES {
        cluster.wait_linked(index, NODES - 1, WAIT).await;
    }
    let addresses: Addresses = Arc::new(RwLock::new(
        (0..NODES).map(|i| Some(cluster.http(i))).collect(),
    ));
    let token = cluster.token("watcher", &[]);
    let admin = cluster.token("admin", &[Role::Admin]);

    // Subscribers, each starting on its own node and resuming elsewhere when it dies.
    let mut subscribers = Vec::new();
    for index in 0..NODES * SUBSCRIBERS_PER_NODE {
        let received = Arc::new(Mutex::new(Received::default()));
        let task = tokio::spawn(subscribe(
            index % NODES,
            Arc::clone(&addresses),
            token.clone(),
            Arc::clone(&received),
        ));
        subscribers.push((received, task));
    }
    for (received, _) in &subscribers {
        wait_until(WAIT, || async { received.lock().unwrap().cursor.is_some() }).await;
    }

    // Publishers: publisher p publishes only to node p; acked (p, n) are recorded.
    let publishing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut publishers = Vec::new();
    for p in 0..NODES {
        let (addresses, publishing) = (Arc::clone(&addresses), Arc::clone(&publishing));
        let admin = admin.clone();
        publishers.push(tokio::spawn(async move {
            publish_loop(p, addresses, publishing, admin).await
        }));
    }

    // Chaos: kill -9 one node after another, restart each.
    let started = Instant::now();
    let mut victim = 0;
    let mut kills = 0;
    let mut pace = tokio::time::interval(KILL_EVERY);
    pace.tick().await;
    while started.elapsed() < CHAOS_FOR {
        pace.tick().await;
        addresses.write().unwrap()[victim] = None;
        cluster.kill(victim);
        kills += 1;
        pace.tick().await;
        tokio::task::block_in_place(|| cluster.start_node(victim));
        addresses.write().unwrap()[victim] = Some(cluster.http(victim));
        victim = (victim + 1) % NODES;
    }
    publishing.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut acked: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (p, publisher) in publishers.into_iter().enumerate() {
        acked.insert(p as u64, publisher.await.unwrap());
    }
    let total_acked: usize = acked.values().map(BTreeSet::len).sum();
    assert!(kills >= 3, "the chaos loop killed {kills} nodes");
    assert!(
        total_acked > 300,
        "only {total_acked} publishes were acknowledged"
    );

    // Convergence: identical logs everywhere.
    let position = cluster.wait_converged(WAIT).await;
    assert!(position.values().sum::<u64>() as usize >= total_acked);

    // A marker from every node, published after everything else: once a client has all three
    // markers it has had its chance to receive every acknowledged tick.
    for p in 0..NODES {
        cluster
            .publish(p, "chaos", json!({"type": "marker", "p": p}))
            .await
            .unwrap();
    }
    for (received, _) in &subscribers {
        wait_until(WAIT, || async {
            received.lock().unwrap().markers.len() == NODES
        })
        .await;
    }

    // Every client: each acknowledged event exactly once, each publisher (= origin) in order.
    let mut resumed = 0;
    for (index, (received, task)) in subscribers.into_iter().enumerate() {
        task.abort();
        let received = received.lock().unwrap();
        resumed += received.resumes;
        let mut per_publisher: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for &(p, n) in &received.ticks {
            per_publisher.entry(p).or_default().push(n);
        }
        for (p, ns) in &per_publisher {
            assert!(
                ns.windows(2).all(|w| w[0] < w[1]),
                "client {index}: publisher {p} duplicated or out of order"
            );
        }
        for (p, wanted) in &acked {
            let got: BTreeSet<u64> = per_publisher
                .get(p)
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default();
            let missing: Vec<&u64> = wanted.difference(&got).collect();
            assert!(
                missing.is_empty(),
                "client {index} missed {} acked events of publisher {p}: {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            );
        }
    }
    assert!(
        resumed > 0,
        "no client had to resume, so the test proved little"
    );
    eprintln!(
        "chaos: {kills} kills, {total_acked} acknowledged publishes, {resumed} resumes, log position {position:?}"
    );

    // Every node's log holds every acknowledged event.
    for node in 0..NODES {
        let logged = cluster.history_ticks(node, "chaos").await;
        for (p, wanted) in &acked {
            for n in wanted {
                assert!(
                    logged.contains(&(*p, *n)),
                    "node {node} lacks acked event ({p}, {n})"
                );
            }
        }
    }

    // Identical materialized state: the same active broadcast everywhere.
    let mut actives = Vec::new();
    for node in 0..NODES {
        actives.push(
            cluster
                .get(node, "/api/creator/broadcast/active", &admin)
                .await["broadcast"]["id"]
                .clone(),
        );
    }
    assert!(
        actives.windows(2).all(|w| w[0] == w[1]),
        "active broadcasts differ: {actives:?}"
    );
}

async fn publish_loop(
    p: usize,
    addresses: Addresses,
    publishing: Arc<std::sync::atomic::AtomicBool>,
    admin: String,
) -> BTreeSet<u64> {
    let client = reqwest::Client::new();
    let mut acked = BTreeSet::new();
    let mut pace = tokio::time::interval(PUBLISH_EVERY);
    let mut n = 0u64;
    while publishing.load(std::sync::atomic::Ordering::SeqCst) {
        pace.tick().await;
        let Some(addr) = addresses.read().unwrap()[p] else {
            continue;
        };
        n += 1;
        let body = json!({"channel": "chaos", "data": {"type": "tick", "p": p, "n": n}});
        let sent = client
            .post(format!("http://{addr}/api/publish"))
            .bearer_auth(API_KEY)
            .timeout(Duration::from_secs(2))
            .json(&body)
            .send()
            .await;
        if let Ok(response) = sent {
            if response.status().is_success() {
                acked.insert(n);
            }
        }
        if p == 0 && n % 100 == 0 {
            let _ = client
                .post(format!("http://{addr}/api/creator/broadcast"))
                .bearer_auth(&admin)
                .timeout(Duration::from_secs(2))
                .json(&json!({"message": format!("banner {n}"), "type": "info"}))
                .send()
                .await;
        }
    }
    acked
}

/// One client: connects to `home`, records ticks and the last cursor, and when its node goes
/// away resumes on another live node with `?since=`.
async fn subscribe(
    home: usize,
    addresses: Addresses,
    token: String,
    received: Arc<Mutex<Received>>,
) {
    let mut node = home;
    loop {
        let addr = loop {
            if let Some(addr) = addresses.read().unwrap()[node] {
                break addr;
            }
            node = (node + 1) % NODES;
        };
        let since = received.lock().unwrap().cursor.clone();
        let url = match &since {
            Some(cursor) => format!("ws://{addr}/ws?channel=chaos&token={token}&since={cursor}"),
            None => format!("ws://{addr}/ws?channel=chaos&token={token}"),
        };
        let Ok(Ok((mut socket, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(&url),
        )
        .await
        else {
            node = (node + 1) % NODES;
            continue;
        };
        if since.is_some() {
            received.lock().unwrap().resumes += 1;
        }
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let mut state = received.lock().unwrap();
            match value["type"].as_str() {
                Some("tick") => state
                    .ticks
                    .push((value["p"].as_u64().unwrap(), value["n"].as_u64().unwrap())),
                Some("marker") => {
                    state.markers.insert(value["p"].as_u64().unwrap());
                }
                _ => {}
            }
            if let Some(cursor) = value["cursor"].as_str() {
                state.cursor = Some(cursor.to_string());
            }
        }
        // The node went away: resume on the next one.
        node = (node + 1) % NODES;
    }
}
