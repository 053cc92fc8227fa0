//! Cluster security: a node with the wrong cluster secret is never a member (its gossip does
//! not open), no event it sends is accepted and none is sent to it.

mod cluster_support;

use std::time::Duration;

use cluster_support::{API_KEY, TestCluster, wait_until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_secret_exchanges_no_events() {
    let cluster = TestCluster::start_with(3, |index, spec| {
        if index == 2 {
            spec.cluster_secret = "not-the-cluster-secret".into();
        }
    })
    .await;
    cluster.wait_linked(0, 1, WAIT).await;
    cluster
        .publish(0, "feed", json!({"type": "honest"}))
        .await
        .unwrap();
    cluster
        .publish(2, "feed", json!({"type": "intruder"}))
        .await
        .unwrap();
    // Honest nodes converge on the honest event and never store the intruder's.
    wait_until(WAIT, || async {
        cluster.get(1, "/api/channels/feed/history", API_KEY).await["events"]
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .await;
    // Give the mesh every chance: a second honest event also reaches node 2, so links are busy.
    cluster
        .publish(1, "feed", json!({"type": "honest"}))
        .await
        .unwrap();
    wait_until(WAIT, || async {
        cluster.get(0, "/api/channels/feed/history", API_KEY).await["events"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    for node in 0..2 {
        let history = cluster
            .get(node, "/api/channels/feed/history", API_KEY)
            .await;
        assert!(
            history["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["type"] == "honest"),
            "{history}"
        );
        let view = cluster.cluster_view(node).await;
        let members = view["members"].as_array().unwrap();
        assert!(members.iter().all(|m| m["node_id"] != "n3"), "{view}");
    }
    let intruder_history = cluster.get(2, "/api/channels/feed/history", API_KEY).await;
    assert!(
        intruder_history["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "intruder")
    );
    assert!(
        cluster.cluster_view(2).await["links"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // It sees nobody either, and the honest nodes are ready.
    let own = cluster.cluster_view(2).await;
    assert_eq!(own["members"].as_array().unwrap().len(), 1, "{own}");
    let ready = reqwest::get(format!("http://{}/readyz", cluster.http(0)))
        .await
        .unwrap()
        .status();
    assert_eq!(ready.as_u16(), 200);
}
