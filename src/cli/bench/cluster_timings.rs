//! The cluster timings of DESIGN.md section 7, each on a three-node mesh cluster the bench
//! spawns:
//!
//! - `failover`: SIGKILL one node, then poll the two survivors' `/api/cluster` every 10 ms until
//!   both list it as dead; the time from the kill is the detection time. Repeated `--rounds`
//!   times (the node is restarted between rounds).
//! - `catchup`: SIGKILL one node, publish `--events` events on the others as fast as they are
//!   acknowledged, restart it, and time from its ready line until its log position equals
//!   the others'.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::BenchArgs;
use super::http::HttpConnection;
use super::nodes::{self, Node};
use super::scenario::Scenario;
use crate::auth::{Authenticator, User};
use crate::config::{DEV_API_KEY, DEV_JWT_SECRET};

const NODES: usize = 3;
const POLL: Duration = Duration::from_millis(10);
const LINK_TIMEOUT: Duration = Duration::from_secs(30);
const DETECT_TIMEOUT: Duration = Duration::from_secs(30);
const CATCHUP_TIMEOUT: Duration = Duration::from_secs(300);
const CATCHUP_PUBLISHERS: usize = 64;

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if !args.http.is_empty() {
        bail!(
            "invalid --http: {} spawns its own three-node cluster",
            args.scenario.name()
        );
    }
    let history: Vec<String> = match args.history_size {
        Some(size) => vec!["--history-size".into(), size.to_string()],
        None => Vec::new(),
    };
    let (mut nodes, mut spawned) =
        nodes::spawn_with(NODES, args.store_sync, true, |_| history.clone()).await?;
    wait_linked(&nodes).await?;
    let outcome = match args.scenario {
        Scenario::Failover => failover(args, &mut nodes, &mut spawned).await,
        _ => catchup(args, &mut nodes, &mut spawned).await,
    };
    spawned.stop().await;
    let report = outcome?;
    super::print_json_or(args.json, &report, print_report);
    Ok(())
}

/// Waits until every node lists every other node alive and linked.
pub async fn wait_linked(nodes: &[Node]) -> anyhow::Result<()> {
    let deadline = Instant::now() + LINK_TIMEOUT;
    for node in nodes {
        loop {
            let view = cluster_view(node.http).await.unwrap_or(Value::Null);
            let linked = members(&view)
                .filter(|m| m["linked"] == true && m["state"] == "alive")
                .count();
            if linked + 1 >= nodes.len() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} did not link to its peers within {LINK_TIMEOUT:?}",
                    node.id
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

async fn failover(
    args: &BenchArgs,
    nodes: &mut [Node],
    spawned: &mut nodes::Spawned,
) -> anyhow::Result<Value> {
    let victim = NODES - 1;
    let mut detections = Vec::new();
    for round in 0..args.rounds.max(1) {
        if !args.json {
            eprintln!("failover round {}: killing {}", round + 1, nodes[victim].id);
        }
        spawned.kill(victim).await;
        let killed = Instant::now();
        let mut pending: Vec<usize> = (0..NODES).filter(|&i| i != victim).collect();
        while !pending.is_empty() {
            if killed.elapsed() > DETECT_TIMEOUT {
                bail!(
                    "{} was not marked dead within {DETECT_TIMEOUT:?}",
                    nodes[victim].id
                );
            }
            let mut still = Vec::new();
            for &observer in &pending {
                let view = cluster_view(nodes[observer].http)
                    .await
                    .unwrap_or(Value::Null);
                let dead = members(&view)
                    .any(|m| m["node_id"] == nodes[victim].id.as_str() && m["state"] == "dead");
                if !dead {
                    still.push(observer);
                }
            }
            pending = still;
            tokio::time::sleep(POLL).await;
        }
        detections.push(killed.elapsed().as_secs_f64() * 1000.0);
        nodes[victim] = spawned.restart(victim).await?;
        wait_linked(nodes).await?;
    }
    let mut sorted = detections.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(json!({
        "scenario": "failover",
        "nodes": NODES,
        "rounds": detections.len(),
        "detection_ms": detections,
        "median_ms": sorted[sorted.len() / 2],
        "min_ms": sorted[0],
        "max_ms": sorted[sorted.len() - 1],
        "target_ms": 2000,
        "met": sorted[sorted.len() / 2] < 2000.0,
    }))
}

async fn catchup(
    args: &BenchArgs,
    nodes: &mut [Node],
    spawned: &mut nodes::Spawned,
) -> anyhow::Result<Value> {
    let behind = NODES - 1;
    spawned.kill(behind).await;
    let targets: Vec<SocketAddr> = nodes[..behind].iter().map(|n| n.http).collect();
    if !args.json {
        eprintln!(
            "catchup: {} is down; publishing {} events on the others",
            nodes[behind].id, args.events
        );
    }
    let started = Instant::now();
    publish_many(&targets, args.events, args.comments).await?;
    let publish_secs = started.elapsed().as_secs_f64();
    let expected = log_total(targets[0]).await?;

    if args.wipe {
        spawned.wipe(behind);
    }
    let restarted = Instant::now();
    nodes[behind] = spawned.restart(behind).await?;
    let ready_ms = restarted.elapsed().as_secs_f64() * 1000.0;
    let ready_at = Instant::now();
    loop {
        let total = log_total(nodes[behind].http).await.unwrap_or(0);
        if total >= expected {
            break;
        }
        if ready_at.elapsed() > CATCHUP_TIMEOUT {
            bail!(
                "{} held {total} of {expected} events after {CATCHUP_TIMEOUT:?}",
                nodes[behind].id
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let catchup_ms = ready_at.elapsed().as_secs_f64() * 1000.0;
    Ok(json!({
        "scenario": "catchup",
        "nodes": NODES,
        "events_missed": args.events,
        "events_are": if args.comments { "comments" } else { "events" },
        "came_back": if args.wipe { "empty (joining)" } else { "with its data" },
        "snapshots_received": snapshots_received(nodes[behind].http).await,
        "log_total": expected,
        "publish_per_second": args.events as f64 / publish_secs,
        "restart_to_ready_ms": ready_ms,
        "ready_to_caught_up_ms": catchup_ms,
        "events_per_second_caught_up": args.events as f64 / (catchup_ms / 1000.0),
        "target_ms": 5000,
        "met": catchup_ms < 5000.0,
    }))
}

/// Publishes `count` small events over `targets` from many connections, each waiting for its
/// acknowledgement: application events through `POST /api/publish`, or (`--comments`)
/// comments over 1000 tracks through their own endpoint, `POST /api/tracks/{id}/comments`,
/// which alone writes the `track:*` channels.
async fn publish_many(targets: &[SocketAddr], count: u64, comments: bool) -> anyhow::Result<()> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let commenter = Authenticator::new(DEV_JWT_SECRET, DEV_API_KEY).mint(
        &User {
            id: "bench".into(),
            name: "bench".into(),
            roles: Vec::new(),
            creator_id: None,
        },
        Duration::from_secs(4 * 3600),
    );
    let mut tasks = Vec::new();
    for publisher in 0..CATCHUP_PUBLISHERS {
        let addr = targets[publisher % targets.len()];
        let next = std::sync::Arc::clone(&next);
        let bearer = if comments {
            commenter.clone()
        } else {
            DEV_API_KEY.to_string()
        };
        tasks.push(tokio::spawn(async move {
            let mut connection = HttpConnection::new(addr, &bearer);
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                let (path, body) = if comments {
                    (
                        format!("/api/tracks/{}/comments", n % 1000),
                        json!({"content": format!("comment {n}"), "timestamp": n}),
                    )
                } else {
                    (
                        "/api/publish".to_string(),
                        json!({"channel": format!("catchup:{}", n % 16), "data": {"type": "catchup", "n": n}}),
                    )
                };
                let answer = connection.post_json(&path, body.to_string().as_bytes()).await?;
                if answer.status != 200 {
                    bail!("{path} refused with status {}", answer.status);
                }
            }
        }));
    }
    for task in tasks {
        task.await.context("publisher task failed")??;
    }
    Ok(())
}

/// `herald_snapshots_received_total` of the node at `addr` (0 when unreadable).
async fn snapshots_received(addr: SocketAddr) -> f64 {
    let mut connection = HttpConnection::new(addr, DEV_API_KEY);
    let Ok(answer) = connection.get("/metrics").await else {
        return 0.0;
    };
    String::from_utf8_lossy(&answer.body)
        .lines()
        .find_map(|line| line.strip_prefix("herald_snapshots_received_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn cluster_view(addr: SocketAddr) -> anyhow::Result<Value> {
    let mut connection = HttpConnection::new(addr, DEV_API_KEY);
    let answer = connection.get("/api/cluster").await?;
    Ok(serde_json::from_slice(&answer.body)?)
}

fn members(view: &Value) -> impl Iterator<Item = &Value> {
    view["members"].as_array().into_iter().flatten()
}

/// The number of events node `addr` holds, from its own row.
async fn log_total(addr: SocketAddr) -> anyhow::Result<u64> {
    let view = cluster_view(addr).await?;
    members(&view)
        .find(|m| m["is_self"] == true)
        .and_then(|m| m["log_total"].as_u64())
        .context("no log position in /api/cluster")
}

fn print_report(report: &Value) {
    match report["scenario"].as_str() {
        Some("failover") => {
            println!(
                "herald bench failover: {} nodes, {} rounds",
                report["nodes"], report["rounds"]
            );
            println!(
                "  dead node noticed by both peers (ms): {}",
                report["detection_ms"]
            );
            println!(
                "  median {:.0} ms, min {:.0}, max {:.0}   target < 2000 ms: {}",
                report["median_ms"].as_f64().unwrap_or(0.0),
                report["min_ms"].as_f64().unwrap_or(0.0),
                report["max_ms"].as_f64().unwrap_or(0.0),
                if report["met"] == true {
                    "met"
                } else {
                    "MISSED"
                }
            );
        }
        _ => {
            println!(
                "herald bench catchup: {} nodes, one down for {} {}, back {}; snapshots received: {}",
                report["nodes"],
                report["events_missed"],
                report["events_are"].as_str().unwrap_or("events"),
                report["came_back"].as_str().unwrap_or(""),
                report["snapshots_received"]
            );
            println!(
                "  published at {:.0}/s while it was down",
                report["publish_per_second"].as_f64().unwrap_or(0.0)
            );
            println!(
                "  restart to ready: {:.0} ms",
                report["restart_to_ready_ms"].as_f64().unwrap_or(0.0)
            );
            println!(
                "  ready to caught up: {:.0} ms ({:.0} events/s)   target < 5000 ms: {}",
                report["ready_to_caught_up_ms"].as_f64().unwrap_or(0.0),
                report["events_per_second_caught_up"]
                    .as_f64()
                    .unwrap_or(0.0),
                if report["met"] == true {
                    "met"
                } else {
                    "MISSED"
                }
            );
        }
    }
}
