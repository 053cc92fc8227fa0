//! A node restored from an older copy of its data directory while the cluster kept running:
//! its peers hold its own events past the copy. A publish it takes right after the restart is
//! numbered after them (its own-seq fence waits for them to be pulled back), so every node ends
//! with the same events: nothing diverges, nothing is lost. On the mesh (pulled from peers) and
//! on the Redis backplane (read back from its own stream).

mod cluster_support;
#[cfg(feature = "redis")]
mod redis_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use cluster_support::{API_KEY, TestCluster};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const CHANNEL: &str = "news";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the data directory") {
        let entry = entry.expect("a directory entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
    }
}

/// The `n` of every event in node `index`'s history of the channel.
async fn numbers(cluster: &TestCluster, index: usize) -> BTreeSet<u64> {
    let mut numbers = BTreeSet::new();
    let mut since = String::new();
    loop {
        let page = cluster
            .get(
                index,
                &format!("/api/channels/{CHANNEL}/history?limit=1000&since={since}"),
                API_KEY,
            )
            .await;
        for event in page["events"].as_array().into_iter().flatten() {
            numbers.insert(event["n"].as_u64().expect("an event with its n"));
        }
        since = page["cursor"].as_str().unwrap_or_default().to_string();
        if page["complete"] == true {
            return numbers;
        }
    }
}

async fn publish(cluster: &TestCluster, index: usize, range: std::ops::Range<u64>) {
    for n in range {
        cluster
            .publish(index, CHANNEL, json!({"type": "item", "n": n}))
            .await
            .unwrap_or_else(|error| panic!("publish {n} on node {index}: {error}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_an_older_copy_publishes_after_what_its_peers_hold() {
    let cluster = TestCluster::start(3).await;
    for index in 0..3 {
        cluster.wait_linked(index, 2, WAIT).await;
    }
    restore_an_older_copy_and_publish(cluster).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_node_restored_from_an_older_copy_publishes_after_what_its_stream_holds() {
    let Some(redis) = redis_support::RedisServer::started("restored copy on redis") else {
        return;
    };
    let url = redis.url();
    let cluster = TestCluster::start_with(3, |_, spec| {
        spec.extra_args = ["--backplane", "redis", "--redis-url", &url]
            .iter()
            .map(ToString::to_string)
            .collect();
    })
    .await;
    cluster_support::wait_for("every node ready on redis", WAIT, || async {
        let mut ready = true;
        for index in 0..3 {
            ready &= cluster.readyz(index).await.0 == 200;
        }
        ready
    })
    .await;
    restore_an_older_copy_and_publish(cluster).await;
}

/// Node 2 publishes, is copied while stopped, publishes more (which every peer holds), is
/// restored from the copy and publishes again at once.
async fn restore_an_older_copy_and_publish(mut cluster: TestCluster) {
    let restored = 2;
    publish(&cluster, restored, 0..40).await;
    cluster.wait_converged(WAIT).await;

    // The copy: taken with the node stopped, as docs/deploy.md describes.
    tokio::task::block_in_place(|| cluster.terminate(restored));
    let data = cluster.nodes[restored].spec.data.clone();
    let backup = cluster.dir.path().join("backup");
    copy_dir(&data, &backup);
    tokio::task::block_in_place(|| cluster.start_node(restored));
    // Events the copy does not have, held by every peer.
    publish(&cluster, restored, 40..70).await;
    cluster.wait_converged(WAIT).await;

    // Restore the older copy and publish at once, before anything was pulled back.
    tokio::task::block_in_place(|| {
        cluster.kill(restored);
        std::fs::remove_dir_all(&data).expect("remove the data directory");
        copy_dir(&backup, &data);
        cluster.start_node(restored);
    });
    publish(&cluster, restored, 70..75).await;

    let position = cluster.wait_converged(WAIT).await;
    let expected: BTreeSet<u64> = (0..75).collect();
    for index in 0..3 {
        assert_eq!(
            numbers(&cluster, index).await,
            expected,
            "node {index} holds every event, the restored node's new ones included"
        );
        assert_eq!(
            cluster
                .metric(index, "herald_store_own_seq_conflicts_total")
                .await,
            0.0,
            "node {index} saw no event under a seq that held another"
        );
    }
    assert_eq!(position.values().sum::<u64>(), 75, "one seq per event");
    let (status, ready) = cluster.readyz(restored).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["own_log"]["clear"], true, "{ready}");
}
