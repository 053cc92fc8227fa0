//! Subscribers: WebSocket clients, spread over a few client tasks.
//!
//! Each task (a "group") opens its share of the connections, a bounded number at a time, waits
//! for each one's `connected` message, then reads all of them from one
//! [`futures_util::stream::SelectAll`]: one task, one latency histogram and no locks per
//! message, however many connections it holds. Per connection it keeps a
//! [`ClientTracker`]; per group it counts deliveries in an atomic the progress bar reads.
//!
//! The client sockets use a 4 KiB read buffer: tungstenite's default (128 KiB, zero-filled
//! before each read) would cost the load generator both CPU and, at 15,000 idle connections,
//! about 2 GB of memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::stream::{self, SelectAll, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use super::publisher::{micros_histogram, unix_nanos};
use super::scenario::channel_name;
use super::tracker::{ClientTracker, StreamKey};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Connections a group opens at the same time.
const CONNECTS_IN_FLIGHT: usize = 32;
/// Error texts kept per group for the report.
const KEPT_ERRORS: usize = 3;

/// One client to open.
#[derive(Clone, Debug, serde::Serialize, Deserialize)]
pub struct ClientSpec {
    pub node: SocketAddr,
    pub channels: Vec<u32>,
    pub token: String,
    /// The local address to connect from (a worker's own loopback address), or any.
    pub source: Option<IpAddr>,
}

/// Live counts of one group.
#[derive(Debug, Default)]
pub struct GroupCounters {
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    pub received: AtomicU64,
    pub disconnected: AtomicU64,
}

/// One client's result.
pub struct ClientResult {
    pub channels: Vec<u32>,
    pub tracker: ClientTracker,
    /// Set when the server closed the connection or it failed during the run.
    pub ended: Option<String>,
}

/// What one group saw.
pub struct GroupOutcome {
    /// Publish to receive, microseconds.
    pub latency: Histogram<u64>,
    pub received: u64,
    /// Connected clients only.
    pub clients: Vec<ClientResult>,
    pub errors: Vec<String>,
}

/// The fields of a message the bench looks at.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    t: Option<u64>,
    p: Option<u32>,
    c: Option<u32>,
    n: Option<u64>,
}

type Socket = WebSocketStream<super::tls::Stream>;

/// Opens `specs`, reports progress in `counters`, and reads until `stop` turns true.
pub async fn run_group(
    specs: Vec<ClientSpec>,
    counters: Arc<GroupCounters>,
    mut stop: watch::Receiver<bool>,
) -> GroupOutcome {
    let mut outcome = GroupOutcome {
        latency: micros_histogram(),
        received: 0,
        clients: Vec::with_capacity(specs.len()),
        errors: Vec::new(),
    };
    let mut connects = stream::iter(specs.into_iter().map(|spec| async move {
        let socket = tokio::time::timeout(CONNECT_TIMEOUT, connect(&spec))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no connection in {CONNECT_TIMEOUT:?}")));
        (spec, socket)
    }))
    .buffer_unordered(CONNECTS_IN_FLIGHT);
    // Connected sockets are read while the others connect: a client that stayed unread for
    // the whole connect phase (a minute at 57,000 clients) would miss the server's heartbeat
    // pings and be closed as unresponsive.
    let mut sockets = SelectAll::new();
    let mut connecting = true;
    loop {
        let item = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            next = connects.next(), if connecting => {
                match next {
                    Some((spec, socket)) => connected(&mut outcome, &counters, &mut sockets, spec, socket),
                    None => connecting = false,
                }
                continue;
            }
            item = sockets.next(), if !sockets.is_empty() => Some(item),
            // Nothing to connect and nothing to read (every connection gone): wait for the stop.
            _ = std::future::ready(()), if !connecting && sockets.is_empty() => None,
        };
        let Some(item) = item else {
            let _ = stop.wait_for(|stop| *stop).await;
            break;
        };
        let Some((index, message)) = item else {
            continue;
        };
        let ended = match message {
            Some(Ok(Message::Text(text))) => {
                handle_text(&mut outcome, index, text.as_str());
                counters.received.store(outcome.received, Ordering::Relaxed);
                None
            }
            Some(Ok(Message::Close(frame))) => Some(match frame {
                Some(frame) => format!("closed by the server: {} {}", frame.code, frame.reason),
                None => "closed by the server".to_string(),
            }),
            Some(Ok(_)) => None,
            Some(Err(error)) => Some(format!("read failed: {error}")),
            None => Some("connection ended".to_string()),
        };
        if let Some(reason) = ended {
            let client = &mut outcome.clients[index];
            if client.ended.is_none() {
                counters.disconnected.fetch_add(1, Ordering::Relaxed);
                if outcome.errors.len() < KEPT_ERRORS {
                    outcome.errors.push(reason.clone());
                }
                client.ended = Some(reason);
            }
        }
    }
    outcome
}

type Item = (
    usize,
    Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
);

/// Records one connect attempt: a connected socket joins the ones read.
fn connected(
    outcome: &mut GroupOutcome,
    counters: &GroupCounters,
    sockets: &mut SelectAll<stream::BoxStream<'static, Item>>,
    spec: ClientSpec,
    socket: anyhow::Result<Socket>,
) {
    match socket {
        Ok(socket) => {
            let index = outcome.clients.len();
            outcome.clients.push(ClientResult {
                channels: spec.channels,
                tracker: ClientTracker::new(),
                ended: None,
            });
            sockets.push(
                socket
                    .map(move |message| (index, Some(message)))
                    .chain(stream::once(futures_util::future::ready((index, None))))
                    .boxed(),
            );
            counters.connected.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            counters.connect_failed.fetch_add(1, Ordering::Relaxed);
            if outcome.errors.len() < KEPT_ERRORS {
                outcome.errors.push(format!("connect: {error:#}"));
            }
        }
    }
}

fn handle_text(outcome: &mut GroupOutcome, index: usize, text: &str) {
    let Ok(message) = serde_json::from_str::<Incoming>(text) else {
        return;
    };
    if message.kind != "bench" {
        return;
    }
    let (Some(t), Some(p), Some(c), Some(n)) = (message.t, message.p, message.c, message.n) else {
        return;
    };
    let micros = unix_nanos().saturating_sub(t) / 1000;
    outcome.latency.saturating_record(micros.max(1));
    outcome.received += 1;
    outcome.clients[index].tracker.record(
        StreamKey {
            channel: c,
            publisher: p,
        },
        n,
    );
}

/// Opens one client and waits for its `connected` message.
async fn connect(spec: &ClientSpec) -> anyhow::Result<Socket> {
    let stream = match spec.source {
        None => TcpStream::connect(spec.node).await,
        Some(source) => {
            let socket = match source {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(source, 0))?;
            socket.connect(spec.node).await
        }
    }
    .with_context(|| format!("cannot connect to {}", spec.node))?;
    stream.set_nodelay(true)?;
    let stream = super::tls::wrap(stream)
        .await
        .with_context(|| format!("TLS with {}", spec.node))?;
    let mut url = format!("{}://{}/ws?", super::tls::websocket_scheme(), spec.node);
    for channel in &spec.channels {
        url.push_str("channel=");
        url.push_str(&channel_name(*channel));
        url.push('&');
    }
    url.push_str("token=");
    url.push_str(&spec.token);
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(1024 * 1024))
        .max_frame_size(Some(1024 * 1024));
    let (mut socket, _) = client_async_with_config(url, stream, Some(config))
        .await
        .context("websocket handshake failed")?;
    match socket.next().await {
        Some(Ok(Message::Text(text))) => {
            let kind = serde_json::from_str::<Incoming>(text.as_str())
                .map(|m| m.kind.to_string())
                .unwrap_or_default();
            if kind != "connected" {
                bail!("expected a connected message, got {}", text.as_str());
            }
            Ok(socket)
        }
        Some(Ok(Message::Close(frame))) => bail!(
            "closed by the server: {}",
            frame
                .map(|f| format!("{} {}", f.code, f.reason))
                .unwrap_or_default()
        ),
        Some(Ok(other)) => bail!("expected a connected message, got {other:?}"),
        Some(Err(error)) => bail!("read failed: {error}"),
        None => bail!("connection ended before connected"),
    }
}
