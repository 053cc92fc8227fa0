//! Native TLS on the Redis backplane (issue 15, "Running herald for real"): nodes that serve
//! HTTPS say so in their registry record, and a node below the floor fetches its snapshot
//! from such a peer over `https://`, verifying the peer's certificate against `--tls-ca`.
//!
//! n1 serves HTTPS with a certificate from a private CA made here, keeps 5 events of its
//! channel and has its stream trimmed past what it pruned; n2, fresh and trusting that CA,
//! can only catch up from n1's snapshot, and does, over HTTPS. n3, fresh and trusting another
//! CA, refuses the peers' certificates: it takes no snapshot, holds nothing of the pruned
//! history, and logs that the certificate of the peer's https:// address does not verify.
//!
//! The test starts its own `redis-server` and is skipped, saying so, when it is not
//! installed (`HERALD_REQUIRE_REDIS=1` makes that a failure).

#![cfg(feature = "redis")]

mod cluster_support;
mod redis_support;
mod tls_support;

use std::path::Path;
use std::time::Duration;

use cluster_support::{holds_for, wait_for};
use serde_json::{Value, json};
use tls_support::{Node, TestCa};

const API_KEY: &str = "herald-dev-api-key-change-me";
const CLUSTER_SECRET: &str = "redis-peer-tls-cluster-secret";
const WAIT: Duration = Duration::from_secs(30);
const CHANNEL: &str = "ticks";
const PUBLISHED: u64 = 20;
const KEPT: usize = 5;

/// A node on the Redis backplane serving HTTPS with a certificate of `issuer`, trusting the
/// peers' certificates from `trusts`.
fn node(
    dir: &Path,
    name: &str,
    redis: &redis_support::RedisServer,
    issuer: &TestCa,
    trusts: &TestCa,
) -> Node {
    let certificate = issuer.issue(dir, name);
    Node::start(
        &args![
            "--node-id",
            name,
            "--http",
            "127.0.0.1:0",
            "--backplane",
            "redis",
            "--redis-url",
            redis.url(),
            "--store-sync",
            "normal",
            "--history-size",
            KEPT.to_string(),
            "--data",
            dir.join(name),
            "--tls-cert",
            &certificate.cert,
            "--tls-key",
            &certificate.key,
            "--tls-ca",
            &trusts.pem,
        ],
        &[("HERALD_CLUSTER_SECRET", CLUSTER_SECRET)],
    )
}

async fn get(ca: &TestCa, node: &Node, path: &str) -> (u16, String) {
    match ca
        .client()
        .get(format!("{}{path}", node.url()))
        .bearer_auth(API_KEY)
        .send()
        .await
    {
        Ok(response) => (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        ),
        Err(error) => (0, error.to_string()),
    }
}

/// The `n` of every event the node's channel history holds.
async fn ticks(ca: &TestCa, node: &Node) -> Vec<u64> {
    let (_, body) = get(
        ca,
        node,
        &format!("/api/channels/{CHANNEL}/history?limit=100"),
    )
    .await;
    let page: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut ticks: Vec<u64> = page["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["n"].as_u64())
        .collect();
    ticks.sort_unstable();
    ticks
}

/// A metric of the node (summed over its labels; 0 when absent).
async fn metric(ca: &TestCa, node: &Node, name: &str) -> f64 {
    let (_, text) = get(ca, node, "/metrics").await;
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Entries in every origin's log stream.
fn stream_entries(redis: &redis_support::RedisServer) -> u64 {
    let keys = redis.command("KEYS herald:*:log:*");
    keys.lines()
        .filter(|line| line.starts_with("herald:"))
        .map(|key| {
            redis
                .command(&format!("XLEN {key}"))
                .trim()
                .trim_start_matches(':')
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_catches_up_from_a_tls_peer_by_snapshot_and_refuses_a_certificate_it_cannot_verify()
{
    let Some(redis) = redis_support::RedisServer::started("redis peer TLS snapshots") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster-ca");
    let other = TestCa::new(dir.path(), "other-ca");

    let n1 = node(dir.path(), "n1", &redis, &ca, &ca);
    assert_eq!(n1.scheme, "https", "native TLS with the Redis backplane");
    cluster_ready(&ca, &n1).await;
    let client = ca.client();
    for n in 1..=PUBLISHED {
        let response = client
            .post(format!("{}/api/publish", n1.url()))
            .bearer_auth(API_KEY)
            .json(&json!({"channel": CHANNEL, "data": {"type": "tick", "n": n}}))
            .send()
            .await
            .expect("publish over HTTPS");
        assert!(response.status().is_success(), "{}", response.status());
    }
    let kept: Vec<u64> = (PUBLISHED - KEPT as u64 + 1..=PUBLISHED).collect();
    wait_for(
        &format!("n1 keeps the last {KEPT} events"),
        WAIT,
        || async { ticks(&ca, &n1).await == kept },
    )
    .await;
    // Trimmed past the prune point: a fresh node cannot fill its gap from the stream.
    wait_for("n1's stream is trimmed", WAIT, || async {
        stream_entries(&redis) <= KEPT as u64
    })
    .await;

    let n2 = node(dir.path(), "n2", &redis, &ca, &ca);
    wait_for(
        "n2 catches up from n1's snapshot over HTTPS",
        WAIT,
        || async {
            ticks(&ca, &n2).await == kept
                && metric(&ca, &n2, "herald_snapshots_received_total").await >= 1.0
        },
    )
    .await;
    assert!(metric(&ca, &n1, "herald_snapshots_sent_total").await >= 1.0);
    cluster_ready(&ca, &n2).await;

    // n3 trusts another CA: the peers' certificates do not verify, so nothing is fetched.
    let n3 = node(dir.path(), "n3", &redis, &ca, &other);
    let peers = [n1.url(), n2.url()];
    wait_for("n3 logs the certificate it refused", WAIT, || async {
        let logs = n3.logs();
        peers
            .iter()
            .any(|peer| logs.contains(&format!("the certificate of {peer} does not verify")))
    })
    .await;
    assert_eq!(
        metric(&ca, &n3, "herald_snapshots_received_total").await,
        0.0
    );
    assert_eq!(
        ticks(&ca, &n3).await,
        Vec::<u64>::new(),
        "n3 holds nothing behind the gap a snapshot would fill"
    );
    // Below what its peers keep and unable to fetch it, n3 stays not ready, between failed
    // fetches too (a fetch fails in milliseconds; the registry looks every beat).
    holds_for(Duration::from_secs(3), "n3 not ready", || async {
        get(&ca, &n3, "/readyz").await.0 == 503
    })
    .await;
    // n2 still serves the caught-up history.
    assert_eq!(ticks(&ca, &n2).await, kept);
}

async fn cluster_ready(ca: &TestCa, node: &Node) {
    wait_for("ready", WAIT, || async {
        get(ca, node, "/readyz").await.0 == 200
    })
    .await;
}
