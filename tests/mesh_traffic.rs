//! Each event crosses the mesh once per peer: the node that committed it pushes it to every
//! other node, and nobody pushes on what it stored from a peer (N-1 transfers per event, not
//! N(N-1)). What a node missed it still gets, by pulling (see `cluster_recovery.rs`).

mod cluster_support;

use std::time::Duration;

use cluster_support::TestCluster;
use serde_json::json;

const EVENTS: usize = 200;
const PAYLOAD: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_origin_pushes_its_events() {
    let cluster = TestCluster::start_linked(3).await;
    let sent = |index| cluster.metric(index, "herald_mesh_bytes_sent_total");
    let before = [sent(0).await, sent(1).await, sent(2).await];
    let text = "x".repeat(PAYLOAD);
    for n in 0..EVENTS {
        cluster
            .publish(0, "feed", json!({"type": "item", "n": n, "text": text}))
            .await
            .expect("publish on n1");
    }
    cluster.wait_converged(Duration::from_secs(20)).await;
    let after = [sent(0).await, sent(1).await, sent(2).await];
    let carried = (EVENTS * PAYLOAD) as f64;
    // n1 sent every event to both peers...
    assert!(
        after[0] - before[0] >= 2.0 * carried,
        "{before:?} {after:?}"
    );
    // ...and the others only their positions, far less than one copy of the events.
    for peer in 1..3 {
        assert!(
            after[peer] - before[peer] < carried / 4.0,
            "n{} re-sent events: {before:?} {after:?}",
            peer + 1
        );
    }
}
