//! Interest routing (`backplane/mesh_interest.rs`): a typing indicator crosses the mesh only to
//! nodes with a subscriber of its channel; a node that gains one gets the next indicator; a
//! restarted node's interest is learnt again on its new link.

mod cluster_support;

use std::time::Duration;

use cluster_support::client::{self, Socket};
use cluster_support::{TestCluster, wait_for};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const TRACK: &str = "/api/ws/track/7";

/// A series of node `index`'s metric `name` whose labels contain `label`, summed.
async fn labeled(cluster: &TestCluster, index: usize, name: &str, label: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", cluster.http(index)))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains(label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Ephemeral events node 1 queued for `peer`.
async fn sent_to(cluster: &TestCluster, peer: &str) -> f64 {
    labeled(
        cluster,
        0,
        "herald_mesh_ephemeral_sent_total",
        &format!("peer=\"{peer}\""),
    )
    .await
}

/// Sends one typing indicator and answers whether `listener` got a `user_typing` within a
/// second (typing faster than every 250 ms is dropped by the server, so this also paces).
async fn typed_and_heard(typist: &mut Socket, listener: &mut Socket) -> bool {
    client::send_json(typist, &json!({"type": "typing", "is_typing": true})).await;
    tokio::time::timeout(
        Duration::from_secs(1),
        client::recv_until(listener, WAIT, |m| m["type"] == "user_typing"),
    )
    .await
    .is_ok()
}

/// Types until `listener` hears it, failing the test after [`WAIT`]. (Not `wait_for`: the
/// condition needs the sockets mutably.)
async fn until_heard(typist: &mut Socket, listener: &mut Socket, what: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !typed_and_heard(typist, listener).await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_goes_only_to_nodes_with_subscribers() {
    let mut cluster = TestCluster::start_linked(3).await;
    let tokens: Vec<String> = ["1", "2", "3"]
        .iter()
        .map(|user| cluster.token(user, &[]))
        .collect();
    let token = |user: &str| tokens[user.parse::<usize>().unwrap() - 1].clone();
    let mut on_b = client::open(&cluster, 1, TRACK, &token("2")).await;
    let mut typist = client::open(&cluster, 0, TRACK, &token("1")).await;

    wait_for("n1 knows both peers' interest", WAIT, || async {
        cluster.metric(0, "herald_mesh_interest_known_peers").await == 2.0
    })
    .await;
    // Until n2's "track:7" reaches n1, n1 may route the indicator away from n2: try again.
    until_heard(&mut typist, &mut on_b, "n2 hears n1's typing").await;

    let to_c = sent_to(&cluster, "n3").await;
    let to_b = sent_to(&cluster, "n2").await;
    let received_c = cluster
        .metric(2, "herald_mesh_ephemeral_received_total")
        .await;
    for _ in 0..3 {
        until_heard(&mut typist, &mut on_b, "n2 hears n1's typing").await;
    }
    assert!(sent_to(&cluster, "n2").await >= to_b + 3.0);
    assert_eq!(sent_to(&cluster, "n3").await, to_c, "n1 sent typing to n3");
    assert_eq!(
        cluster
            .metric(2, "herald_mesh_ephemeral_received_total")
            .await,
        received_c,
        "n3 received typing it has no subscriber for"
    );
    assert!(
        cluster
            .metric(0, "herald_mesh_ephemeral_filtered_total")
            .await
            >= 3.0
    );

    // n3 gains a subscriber: the next indicators reach it.
    let mut first_on_c = client::open(&cluster, 2, TRACK, &token("3")).await;
    until_heard(
        &mut typist,
        &mut first_on_c,
        "n3 hears n1's typing once subscribed",
    )
    .await;
    assert!(sent_to(&cluster, "n3").await > to_c);

    // n3 restarts (its subscriber gone with it): n1 routes nothing to it again only once it
    // learnt the new n3's interest on the new link; failing open, or believing the old n3's
    // announcement, it would keep sending...
    cluster.kill(2);
    cluster.start_node(2);
    for index in 0..3 {
        cluster.wait_linked(index, 2, WAIT).await;
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let before = sent_to(&cluster, "n3").await;
        if typed_and_heard(&mut typist, &mut on_b).await && sent_to(&cluster, "n3").await == before
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "n1 still routes typing to the restarted n3 after {WAIT:?}"
        );
    }
    // ...and its new subscriber is heard of and served.
    let mut on_c = client::open(&cluster, 2, TRACK, &token("3")).await;
    until_heard(
        &mut typist,
        &mut on_c,
        "the restarted n3 hears n1's typing once subscribed",
    )
    .await;
}
