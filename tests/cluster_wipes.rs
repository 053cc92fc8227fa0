//! Retired origins: fifty wipe-and-restart cycles of one node leave version vectors and
//! cursors bounded by the origins that still hold events. (Its own file: it restarts a node
//! fifty times, and runs alone rather than beside the other cluster tests.)

mod cluster_support;

use std::time::Duration;

use cluster_support::{NodeSpec, TestCluster, wait_until};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn keep(args: &[&str]) -> impl Fn(&mut NodeSpec) + Clone {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    move |spec: &mut NodeSpec| spec.extra_args.extend(args.iter().cloned())
}

/// The origins a cursor names.
fn cursor_origins(cursor: &str) -> usize {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .expect("cursor is base64url");
    let text = String::from_utf8(bytes).expect("utf-8");
    let body = text.strip_prefix("h1|").expect("cursor version");
    body.split(',').filter(|entry| !entry.is_empty()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_wipes_of_one_node_leave_cursors_and_vectors_bounded() {
    const WIPES: u64 = 50;
    let retention = keep(&["--history-size", "5"]);
    let mut cluster = TestCluster::start_with(3, |_, spec| retention(spec)).await;
    for node in 0..3 {
        cluster.wait_linked(node, 2, WAIT).await;
    }
    let mut old_cursor = String::new();
    for cycle in 0..WIPES {
        if cycle == 1 {
            // Names node 1's origin and node 3's first one.
            cluster.wait_converged(WAIT).await;
            old_cursor = connected_cursor(&cluster, 1, None).await;
        }
        // The wiped node publishes under a new origin each time; node 1's publishes then push
        // that origin's events out of the channel.
        cluster
            .publish(2, "w", json!({"type": "tick", "n": cycle}))
            .await
            .unwrap();
        for n in 0..6 {
            cluster
                .publish(0, "w", json!({"type": "tick", "n": n}))
                .await
                .unwrap();
        }
        // Every node holds the new origin's event before the node goes again.
        cluster.wait_converged(WAIT).await;
        cluster.kill(2);
        cluster.wipe(2);
        cluster.start_node(2);
    }
    for n in 0..6 {
        cluster
            .publish(0, "w", json!({"type": "tick", "n": n}))
            .await
            .unwrap();
    }
    // Of the 52 origins the cluster has seen, only those still holding events remain.
    wait_until(WAIT, || async {
        let mut bounded = true;
        for node in 0..3 {
            let view = cluster.cluster_view(node).await;
            for member in view["members"].as_array().into_iter().flatten() {
                let origins = member["log_position"]
                    .as_object()
                    .map(|o| o.len())
                    .unwrap_or(0);
                bounded &= origins <= 2;
            }
        }
        bounded
    })
    .await;
    let position = cluster.wait_converged(WAIT).await;
    assert!(position.len() <= 2, "{position:?}");
    let _ = position;
    let retired: f64 = cluster.metric(0, "herald_origins_retired_total").await;
    assert!(
        retired >= (WIPES - 2) as f64,
        "node 1 retired {retired} origins"
    );

    // A client's cursor names only those origins; an old cursor naming retired ones is still
    // accepted, and the cursor it gets back drops them.
    let fresh = connected_cursor(&cluster, 1, None).await;
    assert!(cursor_origins(&fresh) <= 2, "{fresh}");
    let (resumed, recovered) = resume_cursor(&cluster, 1, &old_cursor).await;
    assert!(
        cursor_origins(&old_cursor) >= 2,
        "the old cursor names the first origins"
    );
    assert!(cursor_origins(&resumed) <= 2, "{recovered}");
    assert!(!resumed.is_empty());
}

async fn connected_cursor(cluster: &TestCluster, node: usize, _since: Option<&str>) -> String {
    let token = cluster.token("watcher", &[]);
    let url = cluster.ws_url(node, &format!("/ws?channel=w&token={token}"));
    let mut socket = cluster_support::client::connect(&url).await;
    let connected =
        cluster_support::client::recv_until(&mut socket, WAIT, |m| m["type"] == "connected").await;
    connected["cursor"].as_str().unwrap().to_string()
}

/// Resumes with `since` on `node`: answers the cursor of `recovered`, and the message.
async fn resume_cursor(cluster: &TestCluster, node: usize, since: &str) -> (String, Value) {
    let token = cluster.token("watcher", &[]);
    let url = cluster.ws_url(node, &format!("/ws?channel=w&since={since}&token={token}"));
    let mut socket = cluster_support::client::connect(&url).await;
    let recovered =
        cluster_support::client::recv_until(&mut socket, WAIT, |m| m["type"] == "recovered").await;
    (recovered["cursor"].as_str().unwrap().to_string(), recovered)
}
