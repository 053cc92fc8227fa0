//! A bare WebSocket fan-out server: the floor herald's figures are compared against.
//!
//! Same client protocol as herald's generic channels as far as `herald bench` uses it
//! (`GET /ws?channel=..` answers `{"type":"connected"}`, then every published `data` object;
//! `POST /api/publish {channel, data}`), the same socket settings (4 KiB read buffer, batched
//! writes, one writer task per connection), and nothing else: no store, no fsync, no auth, no
//! cursors, no replication. What `herald bench` measures against it is what this machine
//! costs for the sockets alone.
//!
//! Run: `cargo run --release --example bare_fanout` (prints its address and pid), then
//! `herald bench fanout --http ADDR --server-pid PID`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;

type Registry = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Utf8Bytes>>>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let registry: Registry = Arc::default();
    let app = Router::new()
        .route("/ws", get(socket))
        .route("/api/publish", post(publish))
        .with_state(registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "bare fan-out listening http={} pid={}",
        listener.local_addr()?,
        std::process::id()
    );
    axum::serve(listener, app).await?;
    Ok(())
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
        .read_buffer_size(4 * 1024)
        .on_upgrade(move |socket| serve(socket, registry, channel))
}

async fn serve(socket: WebSocket, registry: Registry, channel: String) {
    let (queue, mut deliveries) = mpsc::channel::<Utf8Bytes>(1024);
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
    let mut batch = Vec::with_capacity(64);
    while deliveries.recv_many(&mut batch, 64).await > 0 {
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
