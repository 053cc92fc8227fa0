//! Gossip carries the cluster secret (issue 10, item 1): a node with another secret is never a
//! member; forged, corrupted, random and replayed datagrams change nothing and are counted;
//! gossip alone never closes a live mesh link.

mod cluster_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::{Transport, UdpTransport};
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use cluster_support::{CLUSTER_SECRET, TestCluster, holds_for, wait_until};
use herald::cluster::seal::{GossipKey, Opener, Sealer};
use herald::cluster::sealed_transport::SealedUdpTransport;
use serde_json::{Value, json};

const CLUSTER_ID: &str = "herald";

/// `herald_gossip_rejected_total{reason=...}` of node `index`.
async fn rejected(cluster: &TestCluster, index: usize, reason: &str) -> f64 {
    let series = format!("herald_gossip_rejected_total{{reason=\"{reason}\"}}");
    cluster.metric(index, &series).await
}

/// Every refused datagram of node `index`, whatever the reason.
async fn all_rejected(cluster: &TestCluster, index: usize) -> f64 {
    cluster.metric(index, "herald_gossip_rejected_total").await
}

/// `(node_id, generation, state, linked)` of every member node `index` lists.
async fn members(cluster: &TestCluster, index: usize) -> Vec<(String, u64, String, bool)> {
    let view = cluster.cluster_view(index).await;
    let mut rows: Vec<_> = view["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m: &Value| {
            (
                m["node_id"].as_str().unwrap_or_default().to_string(),
                m["generation"].as_u64().unwrap_or(0),
                m["state"].as_str().unwrap_or_default().to_string(),
                m["linked"] == true,
            )
        })
        .collect();
    rows.sort();
    rows
}

/// A gossiper of the test's own, speaking chitchat on `transport`.
async fn gossiper(
    node_id: &str,
    generation: u64,
    keys: Vec<(String, String)>,
    seeds: Vec<String>,
    transport: &dyn Transport,
) -> ChitchatHandle {
    let addr = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port");
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(node_id.to_string(), generation, addr),
        cluster_id: CLUSTER_ID.into(),
        gossip_interval: Duration::from_millis(100),
        listen_addr: addr,
        seed_nodes: seeds,
        failure_detector_config: FailureDetectorConfig {
            initial_interval: Duration::from_millis(100),
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V0,
    };
    chitchat::spawn_chitchat(config, keys, transport)
        .await
        .expect("gossiper starts")
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64
}

/// A small deterministic generator for corruptions.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_is_never_a_member() {
    let mut cluster = TestCluster::start_linked(2).await;
    let outsider = cluster.add_node(|spec| {
        spec.cluster_secret = "an-entirely-different-cluster-secret".into();
    });
    // Its datagrams arrive, and are refused.
    wait_until(Duration::from_secs(10), || async {
        rejected(&cluster, 0, "unauthenticated").await >= 3.0
    })
    .await;
    holds_for(
        Duration::from_secs(3),
        "no member with another secret",
        || async {
            let first = members(&cluster, 0).await;
            let second = members(&cluster, 1).await;
            let own = members(&cluster, outsider).await;
            first.iter().all(|m| m.0 != "n3")
                && second.iter().all(|m| m.0 != "n3")
                && own.len() == 1
                && own[0].0 == "n3"
        },
    )
    .await;
    // The real members are untouched: both alive and linked.
    let first = members(&cluster, 0).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|m| m.2 == "alive"), "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_corrupted_random_and_replayed_datagrams_change_nothing_and_are_counted() {
    let mut cluster = TestCluster::start_linked(3).await;
    let gossip: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.spec.gossip).collect();
    // n3 goes; a socket of the test takes its gossip port, which n1 and n2 keep as a seed.
    cluster.kill(2);
    wait_until(Duration::from_secs(10), || async {
        UdpSocket::bind(gossip[2]).is_ok()
    })
    .await;
    let tap = UdpSocket::bind(gossip[2]).expect("n3's gossip port is free");
    tap.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut captured: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while captured.len() < 5 {
        let (len, from) = tap.recv_from(&mut buf).expect("n1 gossips to its seed");
        if from == gossip[0] {
            captured.push(buf[..len].to_vec());
        }
    }
    wait_until(Duration::from_secs(10), || async {
        let gone = |view: Vec<(String, u64, String, bool)>| {
            view.iter().any(|m| m.0 == "n3" && m.2 == "dead" && !m.3)
        };
        gone(members(&cluster, 0).await) && gone(members(&cluster, 1).await)
    })
    .await;
    let before = members(&cluster, 1).await;
    let rejected_before = all_rejected(&cluster, 1).await;

    // Forgeries: a stranger announcing itself, and n2 "leaving" at a higher generation, both
    // speaking plain chitchat.
    let seeds = vec![gossip[0].to_string(), gossip[1].to_string()];
    let ghost = gossiper("ghost", 1, Vec::new(), seeds.clone(), &UdpTransport).await;
    let impostor = gossiper(
        "n2",
        micros_now() + 1_000_000_000,
        vec![("leaving".into(), "1".into())],
        seeds.clone(),
        &UdpTransport,
    )
    .await;

    // Bad datagrams go in small batches, each counted before the next is sent, so that none
    // is lost to a full socket buffer instead of being refused.
    let n2 = gossip[1];
    let mut batches: Vec<(Vec<Vec<u8>>, f64)> = Vec::new();
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    for datagram in &captured {
        // Replays: each may be new to n2 once (n1 sent it to the tap, not to n2), never twice.
        batches.push((vec![datagram.clone(); 10], 9.0));
        // Bit flips anywhere, and truncations.
        let mut corrupted = Vec::new();
        for _ in 0..20 {
            let mut copy = datagram.clone();
            let at = (rng.next() as usize) % copy.len();
            copy[at] ^= 1 << (rng.next() % 8);
            corrupted.push(copy);
        }
        for _ in 0..5 {
            let len = (rng.next() as usize) % datagram.len();
            corrupted.push(datagram[..len].to_vec());
        }
        let count = corrupted.len() as f64;
        batches.push((corrupted, count));
    }
    for _ in 0..8 {
        let noise: Vec<Vec<u8>> = (0..25)
            .map(|_| {
                let len = 1 + (rng.next() as usize) % 1400;
                (0..len).map(|_| rng.next() as u8).collect()
            })
            .collect();
        batches.push((noise, 25.0));
    }
    // A holder of the secret re-stamping a captured datagram ten minutes back: stale.
    let key = GossipKey::derive(CLUSTER_SECRET, CLUSTER_ID);
    let mut opener = Opener::new(key.clone(), Duration::from_secs(60));
    let mut sealer = Sealer::new(&key);
    let mut plain = captured[0].clone();
    let range = opener
        .open(&mut plain)
        .expect("the harness holds the secret");
    let ten_minutes_ago = (micros_now() / 1000) - 600_000;
    let mut stale = Vec::new();
    sealer.seal_at(&plain[range], ten_minutes_ago, &mut stale);
    batches.push((vec![stale], 1.0));

    let mut sent_bad = 0.0;
    for (datagrams, refused) in batches {
        for datagram in &datagrams {
            tap.send_to(datagram, n2).expect("send");
        }
        sent_bad += refused;
        wait_until(Duration::from_secs(10), || async {
            all_rejected(&cluster, 1).await - rejected_before >= sent_bad
        })
        .await;
    }
    assert!(rejected(&cluster, 1, "replayed").await >= 9.0 * captured.len() as f64);
    assert!(rejected(&cluster, 1, "stale").await >= 1.0);
    // Plain chitchat is not even a sealed datagram.
    wait_until(Duration::from_secs(10), || async {
        rejected(&cluster, 0, "malformed").await >= 5.0
    })
    .await;

    // Nothing changed: the same members, n1 and n2 alive and linked, no ghost, n2 not left.
    holds_for(Duration::from_secs(2), "membership unchanged", || async {
        members(&cluster, 1).await == before
            && members(&cluster, 0)
                .await
                .iter()
                .any(|m| m.0 == "n2" && m.2 == "alive" && m.3)
            && members(&cluster, 0).await.iter().all(|m| m.0 != "ghost")
    })
    .await;
    // And events still flow both ways.
    cluster
        .publish(0, "after-forgeries", json!({"type": "item", "n": 1}))
        .await
        .expect("publish on n1");
    cluster
        .publish(1, "after-forgeries", json!({"type": "item", "n": 2}))
        .await
        .expect("publish on n2");
    let position = cluster.wait_converged(Duration::from_secs(10)).await;
    assert!(position.values().sum::<u64>() >= 2, "{position:?}");
    drop((ghost, impostor));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_alone_never_closes_a_live_mesh_link() {
    let cluster = TestCluster::start_linked(2).await;
    let gossip: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.spec.gossip.to_string())
        .collect();
    // A holder of the secret says, in authentic gossip, that n2 left at a newer generation.
    let transport = SealedUdpTransport::new(CLUSTER_SECRET, CLUSTER_ID, Duration::from_secs(60));
    let impostor = gossiper(
        "n2",
        micros_now() + 1_000_000_000,
        vec![("leaving".into(), "1".into())],
        gossip.clone(),
        &transport,
    )
    .await;
    wait_until(Duration::from_secs(10), || async {
        members(&cluster, 0)
            .await
            .iter()
            .any(|m| m.0 == "n2" && m.2 == "left")
    })
    .await;
    // n2 is in fact alive and talking on its link: the link stays.
    holds_for(
        Duration::from_secs(3),
        "the link to n2 stays up",
        || async {
            let view = cluster.cluster_view(0).await;
            view["links"]
                .as_array()
                .is_some_and(|links| links.iter().any(|l| l["peer"] == "n2"))
        },
    )
    .await;
    cluster
        .publish(1, "still-linked", json!({"type": "item", "n": 1}))
        .await
        .expect("publish on n2");
    cluster.wait_converged(Duration::from_secs(5)).await;
    drop(impostor);
}
