//! Recovery: a node restarted after missing many events converges; a node whose disk was
//! wiped rejoins with a new generation (and a new origin), catches up, and publishes again;
//! `replication = 2` answers only once a peer stored the event; a graceful leave is seen as
//! "left" at once.

mod cluster_support;

use std::time::Duration;

use cluster_support::{API_KEY, TestCluster, wait_for, wait_until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_many_events_catches_up_after_restart() {
    let mut cluster = TestCluster::start(3).await;
    for index in 0..3 {
        cluster.wait_linked(index, 2, WAIT).await;
    }
    cluster.kill(2);
    for n in 0..3000 {
        cluster
            .publish(n % 2, "feed", json!({"type": "item", "n": n}))
            .await
            .unwrap();
    }
    tokio::task::block_in_place(|| cluster.start_node(2));
    let position = cluster.wait_converged(WAIT).await;
    assert_eq!(position.values().sum::<u64>(), 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_with_a_new_generation_and_catches_up() {
    let mut cluster = TestCluster::start(3).await;
    for index in 0..3 {
        cluster.wait_linked(index, 2, WAIT).await;
    }
    for n in 0..500 {
        cluster
            .publish(n % 3, "feed", json!({"type": "item", "n": n}))
            .await
            .unwrap();
    }
    cluster.wait_converged(WAIT).await;
    let before = cluster.cluster_view(0).await;
    let old_generation = before["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == "n3")
        .unwrap()["generation"]
        .clone();
    let old_origin = cluster.cluster_view(2).await["origin"].clone();

    cluster.kill(2);
    cluster.wipe(2);
    tokio::task::block_in_place(|| cluster.start_node(2));
    let new_origin = cluster.cluster_view(2).await["origin"].clone();
    assert_ne!(
        old_origin, new_origin,
        "a wiped node must never reuse its old origin's seqs"
    );

    // It publishes under its new origin while catching up, and everyone converges on all of it.
    for n in 500..600 {
        cluster
            .publish(2, "feed", json!({"type": "item", "n": n}))
            .await
            .unwrap();
    }
    let position = cluster.wait_converged(WAIT).await;
    assert_eq!(position.values().sum::<u64>(), 600);
    wait_until(WAIT, || async {
        let view = cluster.cluster_view(0).await;
        let n3 = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["node_id"] == "n3")
            .cloned()
            .unwrap();
        n3["generation"].as_u64() > old_generation.as_u64() && n3["state"] == "alive"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_two_answers_after_a_peer_stored_the_event() {
    let cluster = TestCluster::start_with(2, |_, spec| {
        spec.extra_args = vec!["--replication".into(), "2".into()];
    })
    .await;
    cluster.wait_linked(0, 1, WAIT).await;
    let answer = cluster
        .publish(0, "feed", json!({"type": "item"}))
        .await
        .unwrap();
    assert_eq!(answer["replicated"], true, "{answer}");
    // The peer committed it before the publisher was answered; its history shows it as soon as
    // its dispatcher has handed the event on.
    wait_until(WAIT, || async {
        let history = cluster.get(1, "/api/channels/feed/history", API_KEY).await;
        history["events"].as_array().map(Vec::len) == Some(1)
    })
    .await;
}

/// A replica fsyncs what it stores only when publishes wait for it (`--replication 2`);
/// otherwise its commits go to the OS and a crash is made good by pulling from peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_commits_are_fsynced_only_with_replication_two() {
    for (replication, fsynced) in [("1", false), ("2", true)] {
        let cluster = TestCluster::start_with(2, |_, spec| {
            spec.extra_args = vec![
                "--replication".into(),
                replication.into(),
                "--store-sync".into(),
                "full".into(),
            ];
        })
        .await;
        cluster.wait_linked(0, 1, WAIT).await;
        for n in 0..5 {
            cluster
                .publish(0, "feed", json!({"type": "item", "n": n}))
                .await
                .unwrap();
        }
        wait_for("the peer stored the events", WAIT, || async {
            cluster.log_position(1).await.values().sum::<u64>() >= 5
        })
        .await;
        let full = cluster
            .metric(1, "herald_store_replica_commits_total{sync=\"full\"}")
            .await;
        let normal = cluster
            .metric(1, "herald_store_replica_commits_total{sync=\"normal\"}")
            .await;
        if fsynced {
            assert!(
                full >= 1.0 && normal == 0.0,
                "replication 2: full {full}, normal {normal}"
            );
        } else {
            assert!(
                normal >= 1.0 && full == 0.0,
                "replication 1: full {full}, normal {normal}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_two_on_a_lone_node_degrades_and_says_so() {
    let mut cluster = TestCluster::start_with(2, |_, spec| {
        spec.extra_args = vec!["--replication".into(), "2".into()];
    })
    .await;
    cluster.wait_linked(0, 1, WAIT).await;
    cluster.kill(1);
    wait_until(WAIT, || async {
        cluster.cluster_view(0).await["links"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    let answer = cluster
        .publish(0, "feed", json!({"type": "item"}))
        .await
        .unwrap();
    assert_eq!(answer["status"], "success");
    assert_eq!(answer["replicated"], false, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_leave_is_seen_as_left_without_waiting_for_the_failure_detector() {
    let mut cluster = TestCluster::start(2).await;
    cluster.wait_linked(0, 1, WAIT).await;
    let token = cluster.token("leaver", &[]);
    let mut socket = cluster_support::client::open(&cluster, 1, "/ws?channel=feed", &token).await;
    let (status, _) = cluster
        .post(1, "/api/cluster/leave", API_KEY, json!({}))
        .await;
    assert_eq!(status, 202);
    // Its clients are told to reconnect elsewhere: 1012, service restart.
    let code = loop {
        let message = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut socket))
            .await
            .expect("a close within the wait");
        match message {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                break frame.map(|f| u16::from(f.code));
            }
            Some(Ok(_)) => continue,
            _ => break None,
        }
    };
    assert_eq!(code, Some(1012));
    wait_until(WAIT, || async {
        let view = cluster.cluster_view(0).await;
        view["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["node_id"] == "n2" && m["state"] == "left")
    })
    .await;
    cluster.terminate(1);
}
