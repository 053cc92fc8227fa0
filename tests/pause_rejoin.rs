//! A node stopped with SIGSTOP until the others noticed and published 1,000 events past it,
//! must not pass its stale state off as current when it wakes: from SIGCONT on, whenever its
//! `/readyz` answers 200 it already holds everything the others held when it woke
//! (`backplane/mesh_rejoin.rs`). It then converges with them.

mod cluster_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster_support::{API_KEY, TestCluster, wait_for};
use serde_json::json;

/// How far past the paused node the others get before it wakes (about 2 s of load).
const BEHIND_BY: u64 = 1000;
const PUBLISH_EVERY: Duration = Duration::from_millis(4);
const WAIT: Duration = Duration::from_secs(60);

fn covers(position: &HashMap<String, u64>, target: &HashMap<String, u64>) -> bool {
    target
        .iter()
        .all(|(origin, seq)| position.get(origin).copied().unwrap_or(0) >= *seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_is_ready_again_only_once_it_has_caught_up() {
    let cluster = TestCluster::start_linked(3).await;
    let running = Arc::new(AtomicBool::new(true));
    let mut publishers = Vec::new();
    for index in [1, 2] {
        let (addr, running) = (cluster.http(index), Arc::clone(&running));
        publishers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0u64;
            let mut ticker = tokio::time::interval(PUBLISH_EVERY);
            while running.load(Ordering::Relaxed) {
                ticker.tick().await;
                n += 1;
                let _ = client
                    .post(format!("http://{addr}/api/publish"))
                    .bearer_auth(API_KEY)
                    .timeout(Duration::from_secs(5))
                    .json(&json!({"channel": "load", "data": {"type": "tick", "n": n}}))
                    .send()
                    .await;
            }
        }));
    }
    let client = reqwest::Client::new();
    let paused = cluster.http(0);
    let ready = |client: reqwest::Client| async move {
        client
            .get(format!("http://{paused}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200)
    };
    let published = |index: usize| {
        let cluster = &cluster;
        async move { cluster.log_position(index).await.values().sum::<u64>() }
    };
    wait_for("the load is flowing", WAIT, || async {
        published(1).await >= 100
    })
    .await;
    cluster.pause(0, true);
    let paused_at = published(1).await;
    // Held until the others noticed the pause and moved well past what it holds.
    wait_for("the others notice the paused node", WAIT, || async {
        let view = cluster.cluster_view(1).await;
        view["unreachable"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|id| id == "n1"))
    })
    .await;
    wait_for("the others publish 1,000 events past it", WAIT, || async {
        published(1).await >= paused_at + BEHIND_BY
    })
    .await;
    // What the others hold as the paused node wakes.
    let mut target: HashMap<String, u64> = HashMap::new();
    for index in [1, 2] {
        for (origin, seq) in cluster.log_position(index).await {
            let entry = target.entry(origin).or_default();
            *entry = (*entry).max(seq);
        }
    }
    cluster.pause(0, false);
    let woke = Instant::now();
    let mut unready_samples = 0;
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        poll.tick().await;
        assert!(woke.elapsed() < WAIT, "the paused node never became ready");
        if ready(client.clone()).await {
            // Read after the 200: positions only grow, so this is at most what it held then.
            let position = cluster.log_position(0).await;
            assert!(
                covers(&position, &target),
                "ready {:?} after waking while behind: holds {position:?}, the others held \
                 {target:?}",
                woke.elapsed()
            );
            break;
        }
        unready_samples += 1;
    }
    println!(
        "ready {:?} after SIGCONT ({unready_samples} unready answers before)",
        woke.elapsed()
    );
    running.store(false, Ordering::Relaxed);
    for publisher in publishers {
        let _ = publisher.await;
    }
    cluster.wait_converged(WAIT).await;
    wait_for("the woken node stays ready", WAIT, || ready(client.clone())).await;
}
