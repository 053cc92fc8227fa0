//! The storeless floor: a bare WebSocket fan-out server that herald's figures are compared
//! against, and `herald bench SCENARIO --compare-bare`, which loads it and a herald node in
//! one invocation.
//!
//! The floor speaks herald's generic-channel protocol as far as the bench uses it
//! (`GET /ws?channel=..` answers `{"type":"connected"}`, then every published `data` object;
//! `POST /api/publish {channel, data}`), with the same socket settings (herald's read buffer,
//! batched writes, one writer task per connection), and nothing else: no store, no fsync, no
//! auth, no cursors, no replication. What the bench measures against it is what this machine
//! costs for the sockets alone. It runs as this executable's hidden `bench-floor` command
//! (and as `cargo run --release --example bare_fanout`), on 127.0.0.1 port 0, printing
//! `bench floor listening http=ADDR pid=PID`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::nodes::Node;

type Registry = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Utf8Bytes>>>>>;

/// Deliveries queued per connection before the floor drops a slow one.
const QUEUE: usize = 1024;
/// Most deliveries written before one flush.
const WRITE_BATCH: usize = 64;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves the floor on 127.0.0.1 port 0 until the process is stopped.
pub async fn serve() -> anyhow::Result<()> {
    let registry: Registry = Arc::default();
    let app = Router::new()
        .route("/ws", get(socket))
        .route("/api/publish", post(publish))
        .with_state(registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "bench floor listening http={} pid={}",
        listener.local_addr()?,
        std::process::id()
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// The floor started as a child of this executable; killed when dropped.
pub struct SpawnedFloor {
    pub node: Node,
    _child: Child,
}

/// Starts the floor (`herald bench-floor`) and waits for its address.
pub async fn spawn() -> anyhow::Result<SpawnedFloor> {
    let exe = std::env::current_exe().context("cannot find the herald executable")?;
    let mut child = Command::new(exe)
        .arg("bench-floor")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the bench floor")?;
    let stdout = child.stdout.take().context("the floor has no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(READY_TIMEOUT, lines.next_line())
        .await
        .context("the bench floor did not start in time")??
        .context("the bench floor exited before listening")?;
    let Some(http) = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http="))
    else {
        bail!("unexpected line from the bench floor: {line}");
    };
    let http: SocketAddr = http
        .parse()
        .with_context(|| format!("bad address from the bench floor: {http}"))?;
    Ok(SpawnedFloor {
        node: Node {
            id: "floor".into(),
            http,
            pid: child.id(),
        },
        _child: child,
    })
}

async fn publish(State(registry): State<Registry>, Json(body): Json<Value>) -> Json<Value> {
    let channel = body["channel"].as_str().unwrap_or_default().to_string();
    let text = Utf8Bytes::from(body["data"].to_string());
    let mut registry = registry.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(subscribers) = registry.get_mut(&channel) {
        subscribers.retain(|queue| queue.try_send(text.clone()).is_ok());
    }
    Json(serde_json::json!({"status": "success"}))
}

async fn socket(
    State(registry): State<Registry>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let channel = query.get("channel").cloned().unwrap_or_default();
    upgrade
        .read_buffer_size(crate::api::ws::READ_BUFFER_BYTES)
        .on_upgrade(move |socket| connection(socket, registry, channel))
}

async fn connection(socket: WebSocket, registry: Registry, channel: String) {
    let (queue, mut deliveries) = mpsc::channel::<Utf8Bytes>(QUEUE);
    registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(channel)
        .or_default()
        .push(queue);
    let (mut sink, mut stream) = socket.split();
    if sink
        .send(Message::Text(r#"{"type":"connected"}"#.into()))
        .await
        .is_err()
    {
        return;
    }
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while deliveries.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        for text in batch.drain(..) {
            if sink.feed(Message::Text(text)).await.is_err() {
                reader.abort();
                return;
            }
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    reader.abort();
}

/// `--compare-bare`: the same load on the floor, then on herald (spawned as the other flags
/// say), one after the other in this invocation; prints both reports and the ratios.
pub async fn compare(args: &super::BenchArgs) -> anyhow::Result<()> {
    if !args.http.is_empty() {
        bail!("--compare-bare starts its own floor and nodes: leave out --http");
    }
    let floor = spawn().await?;
    let floor_report = tokio::select! {
        report = super::measure(args, std::slice::from_ref(&floor.node), super::Routing::Cluster) => report?,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    };
    drop(floor);
    let herald_report = super::load_nodes_and_measure(args).await?;
    let comparison = Comparison::of(&herald_report, &floor_report);
    if args.json {
        let both = serde_json::json!({
            "floor": floor_report,
            "herald": herald_report,
            "comparison": comparison,
        });
        println!("{}", serde_json::to_string_pretty(&both)?);
    } else {
        println!("== the storeless floor (no store, auth, cursors or replication)");
        print!("{}", floor_report.table());
        println!();
        println!("== herald");
        print!("{}", herald_report.table());
        println!();
        print!("{}", comparison.table());
    }
    super::check(&floor_report).context("on the floor")?;
    super::check(&herald_report)
}

/// herald against the floor, as ratios (herald / floor).
#[derive(Debug, serde::Serialize)]
struct Comparison {
    server_us_per_delivery: (Option<f64>, Option<f64>),
    server_cpu_ratio: Option<f64>,
    p50_ms: (Option<f64>, Option<f64>),
    p99_ms: (Option<f64>, Option<f64>),
    deliveries_per_second: (f64, f64),
}

impl Comparison {
    fn of(herald: &super::Report, floor: &super::Report) -> Self {
        let cpu = (
            herald.cpu.server_us_per_delivery,
            floor.cpu.server_us_per_delivery,
        );
        Self {
            server_us_per_delivery: cpu,
            server_cpu_ratio: match cpu {
                (Some(h), Some(f)) if f > 0.0 => Some(h / f),
                _ => None,
            },
            p50_ms: (
                herald.latency_ms.map(|l| l.p50),
                floor.latency_ms.map(|l| l.p50),
            ),
            p99_ms: (
                herald.latency_ms.map(|l| l.p99),
                floor.latency_ms.map(|l| l.p99),
            ),
            deliveries_per_second: (herald.deliveries.per_second, floor.deliveries.per_second),
        }
    }

    fn table(&self) -> String {
        let number = |value: Option<f64>, unit: &str| match value {
            Some(value) => format!("{value:.2} {unit}"),
            None => "-".into(),
        };
        let ratio = |(h, f): (Option<f64>, Option<f64>)| match (h, f) {
            (Some(h), Some(f)) if f > 0.0 => format!("{:.2}x", h / f),
            _ => "-".into(),
        };
        let mut out =
            String::from("  herald against the floor     herald        floor         ratio\n");
        for (name, pair, unit) in [
            ("server CPU per delivery", self.server_us_per_delivery, "us"),
            ("latency p50", self.p50_ms, "ms"),
            ("latency p99", self.p99_ms, "ms"),
        ] {
            out.push_str(&format!(
                "  {name:<28} {:<13} {:<13} {}\n",
                number(pair.0, unit),
                number(pair.1, unit),
                ratio(pair)
            ));
        }
        let (h, f) = self.deliveries_per_second;
        out.push_str(&format!(
            "  {:<28} {:<13} {:<13} {}\n",
            "deliveries per second",
            format!("{h:.0}"),
            format!("{f:.0}"),
            ratio((Some(h), Some(f)))
        ));
        out
    }
}
