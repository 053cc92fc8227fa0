//! `herald bench retention`: what pruning costs publishers and what it saves on disk, measured
//! in one run.
//!
//! Two single nodes are spawned side by side on the same machine: one keeps everything
//! (`--history-size 0 --history-ttl 0 --history-max-disk 0`), the other keeps
//! `--history-size` events per channel (default 100, so it prunes all the time). The same load
//! goes to both at once: `--rate` publishes per second per node from `--publishers`
//! publishers each, over `--channels` channels, events of `--payload-bytes`, for `--duration`.
//! Every second the bench samples each node's data directory. It reports, per node, the
//! publish latency (request to commit acknowledgement: p50, p99, p99.9, max), the publishes
//! acknowledged, the data directory's size over time, and the events retained; then it opens
//! a socket on the pruning node with a cursor taken before the load and times the resume until
//! `recovered` (which must say `recovered:false`, naming the channels).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::BenchArgs;
use super::http::HttpConnection;
use super::nodes::{self, Node};
use super::publisher::micros_histogram;
use crate::auth::{Authenticator, User};
use crate::config::{DEV_API_KEY, DEV_JWT_SECRET};

const DEFAULT_RATE: f64 = 2000.0;
const DEFAULT_PUBLISHERS: u32 = 16;
const DEFAULT_CHANNELS: u32 = 16;
const DEFAULT_DURATION: Duration = Duration::from_secs(30);
const DEFAULT_KEPT: u64 = 100;
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const RESUME_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if !args.http.is_empty() {
        bail!("invalid --http: retention spawns its own two nodes");
    }
    let kept = args.history_size.unwrap_or(DEFAULT_KEPT);
    if kept == 0 {
        bail!("invalid --history-size: the pruning node must keep a bounded number (1 or more)");
    }
    let flags = move |index: usize| -> Vec<String> {
        let size = if index == 0 { 0 } else { kept };
        vec![
            "--history-size".into(),
            size.to_string(),
            "--history-ttl".into(),
            "0".into(),
            "--history-max-disk".into(),
            "0".into(),
        ]
    };
    let (nodes, spawned) = nodes::spawn_with(2, args.store_sync, false, flags).await?;
    let dirs = [spawned.data_dir(0), spawned.data_dir(1)];
    let outcome = measure(args, &nodes, &dirs, kept).await;
    spawned.stop().await;
    let report = outcome?;
    super::print_json_or(args.json, &report, print_report);
    // Only a run long enough to prune has a floor to resume below.
    let pruned = report["nodes"][1]["pruned_events"].as_f64().unwrap_or(0.0);
    if pruned > 0.0 && report["resume"]["recovered"] != false {
        bail!("the resume below the floor did not say recovered:false");
    }
    Ok(())
}

async fn measure(
    args: &BenchArgs,
    nodes: &[Node],
    dirs: &[std::path::PathBuf; 2],
    kept: u64,
) -> anyhow::Result<Value> {
    let rate = args.rate.unwrap_or(DEFAULT_RATE).max(1.0);
    let publishers = args.publishers.unwrap_or(DEFAULT_PUBLISHERS).max(1);
    let channels = args.channels.unwrap_or(DEFAULT_CHANNELS).clamp(1, 64);
    let duration = args.duration.unwrap_or(DEFAULT_DURATION);
    let payload = "x".repeat(args.payload_bytes);
    let names: Vec<String> = (0..channels).map(|c| format!("bench:{c}")).collect();
    let auth = Authenticator::new(DEV_JWT_SECRET, DEV_API_KEY);
    let token = auth.mint(
        &User {
            id: "bench-resume".into(),
            name: "bench-resume".into(),
            roles: Vec::new(),
            creator_id: None,
        },
        Duration::from_secs(3600),
    );
    // A cursor from before the load, on the pruning node.
    let cursor = connected_cursor(nodes[1].http, &names, &token).await?;

    if !args.json {
        eprintln!(
            "retention: {rate}/s per node for {}s over {channels} channels; node 1 keeps all, node 2 keeps {kept} per channel",
            duration.as_secs()
        );
    }
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        for publisher in 0..publishers {
            let (addr, names, payload) = (node.http, names.clone(), payload.clone());
            let interval = Duration::from_secs_f64(f64::from(publishers) / rate);
            let offset = interval.mul_f64(f64::from(publisher) / f64::from(publishers));
            tasks.push((
                index,
                tokio::spawn(publish(addr, names, payload, start + offset, interval, end)),
            ));
        }
    }
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (dirs, sampling) = (dirs.clone(), Arc::clone(&sampling));
        tokio::spawn(async move {
            let mut samples: Vec<[u64; 2]> = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                samples.push([dir_bytes(&dirs[0]), dir_bytes(&dirs[1])]);
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            samples.push([dir_bytes(&dirs[0]), dir_bytes(&dirs[1])]);
            samples
        })
    };
    let mut latency = [micros_histogram(), micros_histogram()];
    let mut acked = [0u64; 2];
    let mut failed = [0u64; 2];
    for (index, task) in tasks {
        let outcome = task.await.context("a publisher failed")?;
        let _ = latency[index].add(&outcome.0);
        acked[index] += outcome.1;
        failed[index] += outcome.2;
    }
    let elapsed = start.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.await.context("the sampler failed")?;

    let resume_started = Instant::now();
    let recovered = resume(nodes[1].http, &names, &token, &cursor).await?;
    let resume_ms = resume_started.elapsed().as_secs_f64() * 1000.0;

    let mut per_node = Vec::new();
    for index in 0..2 {
        let sizes: Vec<u64> = samples.iter().map(|s| s[index]).collect();
        per_node.push(json!({
            "node": nodes[index].id,
            "keeps": if index == 0 { "everything".to_string() } else { format!("{kept} per channel") },
            "publishes_acked": acked[index],
            "publishes_failed": failed[index],
            "publishes_per_second": acked[index] as f64 / elapsed,
            "ack_ms": latency_json(&latency[index]),
            "data_dir_bytes": {
                "start": sizes.first().copied().unwrap_or(0),
                "end": sizes.last().copied().unwrap_or(0),
                "max": sizes.iter().copied().max().unwrap_or(0),
                "every_second": sizes,
            },
            "log_events": metric(nodes[index].http, "herald_log_events").await,
            "pruned_events": metric(nodes[index].http, "herald_pruned_events_total").await,
        }));
    }
    Ok(json!({
        "scenario": "retention",
        "rate_per_node": rate,
        "publishers_per_node": publishers,
        "channels": channels,
        "payload_bytes": args.payload_bytes,
        "seconds": elapsed,
        "nodes": per_node,
        "resume": {
            "recovered": recovered["recovered"],
            "replayed": recovered["replayed"],
            "channels_lost": recovered["channels_lost"].as_array().map(Vec::len).unwrap_or(0),
            "ms": resume_ms,
        },
    }))
}

/// One publisher: a publish every `interval` from `first` until `end`, one in flight.
/// Answers its acknowledgement latencies, acknowledged and failed counts.
async fn publish(
    addr: SocketAddr,
    channels: Vec<String>,
    payload: String,
    first: Instant,
    interval: Duration,
    end: Instant,
) -> (Histogram<u64>, u64, u64) {
    let mut connection = HttpConnection::new(addr, DEV_API_KEY);
    let mut latency = micros_histogram();
    let (mut acked, mut failed) = (0u64, 0u64);
    let mut due = first;
    let mut n = 0u64;
    while due < end {
        tokio::time::sleep_until(due).await;
        let channel = &channels[(n as usize) % channels.len()];
        let body = json!({"channel": channel, "data": {"type": "bench", "n": n, "pad": payload}});
        let sent = Instant::now();
        match connection
            .post_json("/api/publish", body.to_string().as_bytes())
            .await
        {
            Ok(answer) if answer.status == 200 => {
                acked += 1;
                let _ = latency.record(sent.elapsed().as_micros().max(1) as u64);
            }
            _ => failed += 1,
        }
        n += 1;
        due += interval;
    }
    (latency, acked, failed)
}

fn latency_json(histogram: &Histogram<u64>) -> Value {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "p50": ms(0.5),
        "p99": ms(0.99),
        "p999": ms(0.999),
        "max": histogram.max() as f64 / 1000.0,
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let mut connection = HttpConnection::new(addr, DEV_API_KEY);
    let Ok(answer) = connection.get("/metrics").await else {
        return 0.0;
    };
    String::from_utf8_lossy(&answer.body)
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0
}

fn socket_url(addr: SocketAddr, channels: &[String], token: &str, since: Option<&str>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for channel in channels {
        query.append_pair("channel", channel);
    }
    query.append_pair("token", token);
    if let Some(since) = since {
        query.append_pair("since", since);
    }
    format!("ws://{addr}/ws?{}", query.finish())
}

/// Reads text messages until one whose `type` is `kind`.
async fn until_type(url: &str, kind: &str) -> anyhow::Result<Value> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("cannot open the resume socket")?;
    let deadline = Instant::now() + RESUME_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .with_context(|| format!("no {kind} within {RESUME_TIMEOUT:?}"))?;
        let Some(message) = next else {
            bail!("the socket closed before {kind}");
        };
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message? {
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if value["type"] == kind {
                return Ok(value);
            }
        }
    }
}

async fn connected_cursor(
    addr: SocketAddr,
    channels: &[String],
    token: &str,
) -> anyhow::Result<String> {
    let connected = until_type(&socket_url(addr, channels, token, None), "connected").await?;
    Ok(connected["cursor"].as_str().unwrap_or_default().to_string())
}

async fn resume(
    addr: SocketAddr,
    channels: &[String],
    token: &str,
    cursor: &str,
) -> anyhow::Result<Value> {
    until_type(
        &socket_url(addr, channels, token, Some(cursor)),
        "recovered",
    )
    .await
}

fn print_report(report: &Value) {
    println!(
        "retention: {} publishes/s per node, {} channels, {} B events, {:.0} s",
        report["rate_per_node"], report["channels"], report["payload_bytes"], report["seconds"]
    );
    println!(
        "{:<10} {:<18} {:>9} {:>8} {:>8} {:>8} {:>8} {:>12} {:>12} {:>10}",
        "node",
        "keeps",
        "acked",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "dir end MB",
        "dir max MB",
        "retained"
    );
    for node in report["nodes"].as_array().into_iter().flatten() {
        let mb = |v: &Value| v.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0);
        println!(
            "{:<10} {:<18} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>12.1} {:>12.1} {:>10}",
            node["node"].as_str().unwrap_or(""),
            node["keeps"].as_str().unwrap_or(""),
            node["publishes_acked"],
            node["ack_ms"]["p50"].as_f64().unwrap_or(0.0),
            node["ack_ms"]["p99"].as_f64().unwrap_or(0.0),
            node["ack_ms"]["p999"].as_f64().unwrap_or(0.0),
            node["ack_ms"]["max"].as_f64().unwrap_or(0.0),
            mb(&node["data_dir_bytes"]["end"]),
            mb(&node["data_dir_bytes"]["max"]),
            node["log_events"],
        );
    }
    let resume = &report["resume"];
    println!(
        "resume below the floor on node 2: recovered={} replayed={} channels_lost={} in {:.1} ms",
        resume["recovered"],
        resume["replayed"],
        resume["channels_lost"],
        resume["ms"].as_f64().unwrap_or(0.0)
    );
}
