//! Three real nodes: the seeds' Test 2 (a broadcast posted on any node reaches every client on
//! every node, once), Test 3 (stats count the whole cluster), an acknowledgement on one node
//! hiding the banner on every node, and a resume with a cursor on another node.

mod cluster_support;

use std::time::Duration;

use cluster_support::client::{connect, recv_until, send_json};
use cluster_support::{API_KEY, TestCluster, wait_until};
use herald::auth::Role;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_every_client_on_every_node_once_and_stats_count_the_cluster() {
    let cluster = TestCluster::start(3).await;
    for index in 0..3 {
        cluster.wait_linked(index, 2, WAIT).await;
    }
    let admin = cluster.token("admin", &[Role::Admin]);

    // Test 3's shape: 2 clients on node 1, 3 on node 2, 1 on node 3.
    let placement = [0, 0, 1, 1, 1, 2];
    let mut clients = Vec::new();
    for (user, &node) in placement.iter().enumerate() {
        let token = cluster.token(&format!("u{user}"), &[]);
        let mut socket =
            connect(&cluster.ws_url(node, &format!("/api/creator/broadcast/ws?token={token}")))
                .await;
        recv_until(&mut socket, WAIT, |m| m["type"] == "connected").await;
        clients.push(socket);
    }

    // Stats: every node counts the whole cluster, and this node alone.
    for (node, local) in [(0, 2), (1, 3), (2, 1)] {
        wait_until(WAIT, || async {
            let stats = cluster
                .get(node, "/api/creator/broadcast/stats", &admin)
                .await;
            stats["stats"]["connected_users"] == 6
                && stats["stats"]["connected_users_local"] == local
        })
        .await;
    }

    // A broadcast from each node reaches all six clients exactly once.
    let mut ids = Vec::new();
    for node in 0..3 {
        let (status, body) = cluster
            .post(
                node,
                "/api/creator/broadcast",
                &admin,
                json!({"message": format!("from node {node}"), "type": "info"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    // A marker published last: everything before it has been delivered once.
    cluster
        .post(2, "/api/creator/broadcast/clear", &admin, json!({}))
        .await;
    for socket in &mut clients {
        let mut seen = Vec::new();
        recv_until(socket, WAIT, |m| {
            if m["type"] == "new_broadcast" {
                seen.push(m["broadcast"]["id"].as_str().unwrap().to_string());
            }
            m["type"] == "broadcast_cleared"
        })
        .await;
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "duplicate delivery: {seen:?}");
        for id in &ids {
            assert!(seen.contains(id), "missing broadcast {id}: saw {seen:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_on_one_node_hides_the_banner_on_every_node() {
    let cluster = TestCluster::start(3).await;
    for index in 0..3 {
        cluster.wait_linked(index, 2, WAIT).await;
    }
    let admin = cluster.token("admin", &[Role::Admin]);
    let reader = cluster.token("reader", &[]);
    let (status, body) = cluster
        .post(
            0,
            "/api/creator/broadcast",
            &admin,
            json!({"message": "maintenance", "type": "warning"}),
        )
        .await;
    assert_eq!(status, 200);
    let id = body["id"].as_str().unwrap().to_string();
    for node in 0..3 {
        wait_until(WAIT, || async {
            cluster
                .get(node, "/api/creator/broadcast/active", &reader)
                .await["broadcast"]["id"]
                == id.as_str()
        })
        .await;
    }
    // Acknowledge over the socket of node 2.
    let mut socket =
        connect(&cluster.ws_url(1, &format!("/api/creator/broadcast/ws?token={reader}"))).await;
    recv_until(&mut socket, WAIT, |m| m["type"] == "active_broadcast").await;
    send_json(
        &mut socket,
        &json!({"type": "acknowledge_broadcast", "broadcast_id": id}),
    )
    .await;
    recv_until(&mut socket, WAIT, |m| m["type"] == "broadcast_acknowledged").await;
    for node in 0..3 {
        wait_until(WAIT, || async {
            cluster
                .get(node, "/api/creator/broadcast/active", &reader)
                .await["broadcast"]
                .is_null()
        })
        .await;
    }
    // Someone else still sees it everywhere.
    let other = cluster.token("other", &[]);
    for node in 0..3 {
        assert_eq!(
            cluster
                .get(node, "/api/creator/broadcast/active", &other)
                .await["broadcast"]["id"],
            id.as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_with_its_cursor() {
    let cluster = TestCluster::start(3).await;
    for index in 0..3 {
        cluster.wait_linked(index, 2, WAIT).await;
    }
    let token = cluster.token("7", &[]);
    let mut socket = connect(&cluster.ws_url(0, &format!("/ws?channel=news&token={token}"))).await;
    recv_until(&mut socket, WAIT, |m| m["type"] == "connected").await;
    cluster
        .publish(1, "news", json!({"type": "item", "n": 1}))
        .await
        .unwrap();
    let first = recv_until(&mut socket, WAIT, |m| m["type"] == "item").await;
    assert_eq!(first["n"], 1);
    let cursor = first["cursor"].as_str().unwrap().to_string();
    drop(socket);

    // Missed while away, published on two different nodes.
    for n in 2..=6 {
        cluster
            .publish(n % 3, "news", json!({"type": "item", "n": n}))
            .await
            .unwrap();
    }
    cluster.wait_converged(WAIT).await;

    let mut socket =
        connect(&cluster.ws_url(2, &format!("/ws?channel=news&token={token}&since={cursor}")))
            .await;
    let mut replayed = Vec::new();
    let recovered = recv_until(&mut socket, WAIT, |m| {
        if m["type"] == "item" {
            replayed.push(m["n"].as_u64().unwrap());
        }
        m["type"] == "recovered"
    })
    .await;
    replayed.sort();
    assert_eq!(replayed, vec![2, 3, 4, 5, 6]);
    assert_eq!(recovered["recovered"], true);
    assert_eq!(recovered["replayed"], 5);

    cluster
        .publish(0, "news", json!({"type": "item", "n": 7}))
        .await
        .unwrap();
    let live: Value = recv_until(&mut socket, WAIT, |m| m["type"] == "item").await;
    assert_eq!(live["n"], 7, "nothing replayed twice, then live events");
    let _ = API_KEY;
}
