//! Hostile or broken peers (issue 10, item 5): a harness that holds the cluster secret links
//! to a real node and sends frames that lie (a range carrying another origin's events, a
//! far-future timestamp, a huge seq, an oversized pull, a claim to hold more of the node's own
//! events than it committed). Each closes the link with code 4 and is counted by reason;
//! nothing it sent is stored, and the cluster keeps replicating.

mod cluster_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster_support::{API_KEY, CLUSTER_SECRET, TestCluster, wait_until};
use herald::event::{ChannelName, Event, Hlc, NodeId, VersionVector};
use herald::mesh::frame::{self, Frame};
use herald::mesh::tls::{ClusterIdentity, SERVER_NAME};
use serde_json::json;

const CLUSTER_ID: &str = "herald";

/// `herald_mesh_peer_violations_total{reason=...}` of node `index`.
async fn violations(cluster: &TestCluster, index: usize, reason: &str) -> f64 {
    let series = format!("herald_mesh_peer_violations_total{{reason=\"{reason}\"}}");
    cluster.metric(index, &series).await
}

async fn mesh_addr(cluster: &TestCluster, index: usize) -> SocketAddr {
    let view = cluster.cluster_view(index).await;
    view["members"]
        .as_array()
        .and_then(|members| members.iter().find(|m| m["is_self"] == true))
        .and_then(|own| own["mesh_addr"].as_str())
        .and_then(|addr| addr.parse().ok())
        .expect("the node's mesh address")
}

/// Links to `addr` as peer `n9` with the cluster secret, says hello, and sends `lie`.
/// Answers what must stay alive meanwhile: the endpoint and the open stream (a finished stream
/// would end the link before the node judges the lie).
async fn link_and_send(
    addr: SocketAddr,
    lie: &Frame,
) -> (quinn::Endpoint, quinn::SendStream, quinn::Connection) {
    let identity = ClusterIdentity::derive(CLUSTER_SECRET, CLUSTER_ID).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(identity.client_config().unwrap());
    let connection = endpoint
        .connect(addr, SERVER_NAME)
        .unwrap()
        .await
        .expect("the harness holds the secret");
    let mut send = connection.open_uni().await.unwrap();
    let hello = frame::encode(&Frame::Hello {
        node_id: NodeId::new("n9").unwrap(),
        cluster_id: CLUSTER_ID.into(),
        generation: 1,
    })
    .unwrap();
    send.write_all(&hello).await.unwrap();
    let _node_stream = connection.accept_uni().await.unwrap();
    send.write_all(&frame::encode(lie).unwrap()).await.unwrap();
    (endpoint, send, connection)
}

async fn closed_with_code(connection: &quinn::Connection) -> u64 {
    let reason = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("the node did not close the link");
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => close.error_code.into_inner(),
        other => panic!("closed for another reason: {other:?}"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn event(origin: &str, seq: u64, hlc: Hlc) -> Arc<Event> {
    Arc::new(Event {
        origin: NodeId::new(origin).unwrap(),
        seq,
        id: uuid::Uuid::new_v4(),
        hlc,
        channel: ChannelName::new("feed").unwrap(),
        kind: "forged".into(),
        payload: "{\"type\":\"forged\"}".into(),
        users: None,
        ephemeral: false,
        idempotency_key: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_peers_are_disconnected_while_the_cluster_keeps_replicating() {
    let cluster = TestCluster::start_linked(2).await;
    cluster
        .publish(0, "feed", json!({"type": "honest"}))
        .await
        .expect("publish on n1");
    let position = cluster.wait_converged(Duration::from_secs(10)).await;
    let n1_origin = position
        .keys()
        .find(|origin| origin.starts_with("n1."))
        .cloned()
        .expect("n1's origin");
    let addr = mesh_addr(&cluster, 0).await;
    let now = Hlc::from_parts(now_ms(), 0);
    let mut claims_too_much = VersionVector::new();
    claims_too_much.advance(&NodeId::new(&n1_origin).unwrap(), 50_000_000);
    let lies = [
        (
            "foreign_event_in_range",
            Frame::Range {
                origin: NodeId::new("n9.aaaa").unwrap(),
                events: vec![event("n9.aaaa", 1, now), event("n2.zzzz", 1, now)],
            },
        ),
        (
            "future_timestamp",
            Frame::Events {
                events: vec![event(
                    "n9.aaaa",
                    1,
                    Hlc::from_parts(now_ms() + 3_600_000, 0),
                )],
            },
        ),
        (
            "seq_out_of_range",
            Frame::Events {
                events: vec![event("n9.aaaa", u64::MAX - 1, now)],
            },
        ),
        (
            "seq_far_ahead",
            Frame::Events {
                events: vec![event(&n1_origin, 40_000_000, now)],
            },
        ),
        (
            "oversized_pull",
            Frame::Pull {
                origin: NodeId::new(&n1_origin).unwrap(),
                after: 0,
                upto: 1_000_000_000,
            },
        ),
        (
            "own_origin_ahead",
            Frame::Position {
                vector: claims_too_much,
            },
        ),
    ];
    for (reason, lie) in &lies {
        let (_endpoint, _stream, connection) = link_and_send(addr, lie).await;
        assert_eq!(closed_with_code(&connection).await, 4, "{reason}");
        wait_until(Duration::from_secs(5), || async {
            violations(&cluster, 0, reason).await >= 1.0
        })
        .await;
        // Between lies, the honest peers still replicate both ways.
        cluster
            .publish(1, "feed", json!({"type": "honest"}))
            .await
            .expect("publish on n2");
        cluster.wait_converged(Duration::from_secs(10)).await;
    }
    // Nothing the liar sent was stored.
    let history = cluster.get(0, "/api/channels/feed/history", API_KEY).await;
    let events = history["events"].as_array().expect("history");
    assert_eq!(events.len(), 1 + lies.len(), "{history}");
    assert!(events.iter().all(|e| e["type"] == "honest"), "{history}");
    let position = cluster.log_position(0).await;
    assert!(
        position.keys().all(|origin| !origin.starts_with("n9.")),
        "{position:?}"
    );
}
