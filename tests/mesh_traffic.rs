//! Each event crosses the mesh once per peer: the node that committed it pushes it to every
//! other node, and nobody pushes on what it stored from a peer (N-1 transfers per event, not
//! N(N-1)). What a node missed it still gets, by pulling (see `cluster_recovery.rs`). A
//! replica acknowledges what it stored at once only to an origin whose publishes wait for it
//! (`--replication 2`); other origins learn its position from its periodic position frame.

mod cluster_support;

use std::time::Duration;

use cluster_support::{TestCluster, wait_for};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_acknowledge_at_once_only_origins_that_wait_for_it() {
    for (replication, waits) in [("1", false), ("2", true)] {
        let cluster = TestCluster::start_with(2, |_, spec| {
            spec.extra_args = vec!["--replication".into(), replication.into()];
        })
        .await;
        cluster.wait_linked(0, 1, Duration::from_secs(20)).await;
        // The origin's announced setting has reached the replica.
        wait_for(
            "n2 sees n1's replication setting",
            Duration::from_secs(20),
            || async {
                let view = cluster.cluster_view(1).await;
                view["members"].as_array().is_some_and(|members| {
                    members
                        .iter()
                        .any(|m| m["replication"] == replication.parse::<u64>().unwrap())
                })
            },
        )
        .await;
        let before = cluster.metric(1, "herald_mesh_acks_sent_total").await;
        for n in 0..20 {
            let answer = cluster
                .publish(0, "feed", json!({"type": "item", "n": n}))
                .await
                .expect("publish on n1");
            assert_eq!(answer["replicated"], waits, "{answer}");
        }
        cluster.wait_converged(Duration::from_secs(20)).await;
        let acks = cluster.metric(1, "herald_mesh_acks_sent_total").await - before;
        if waits {
            assert!(acks >= 20.0, "replication 2: {acks} acks for 20 events");
        } else {
            assert_eq!(acks, 0.0, "replication 1: no ack is needed at once");
        }
    }
}
