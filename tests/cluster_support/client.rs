//! A WebSocket test client that records what it receives and can resume on another node.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(url: &str) -> Socket {
    let (socket, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("connect timed out")
    .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    socket
}

/// Reads JSON text messages until `predicate` accepts one; answers it.
pub async fn recv_until(
    socket: &mut Socket,
    timeout: Duration,
    mut predicate: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .expect("timed out waiting for a message")
            .expect("socket ended")
            .expect("socket error");
        if let Message::Text(text) = message {
            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                if predicate(&value) {
                    return value;
                }
            }
        }
    }
}

pub async fn send_json(socket: &mut Socket, value: &Value) {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .expect("send");
}

/// Opens `path` on node `node` with `token` and waits for `connected`.
pub async fn open(cluster: &super::TestCluster, node: usize, path: &str, token: &str) -> Socket {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut socket =
        connect(&cluster.ws_url(node, &format!("{path}{separator}token={token}"))).await;
    recv_until(&mut socket, Duration::from_secs(20), |m| {
        m["type"] == "connected"
    })
    .await;
    socket
}
